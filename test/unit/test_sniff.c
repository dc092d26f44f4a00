/* test_sniff.c - content sniffing: real pickles of every protocol (generated
 * by CPython's pickle) are recognised, text/source/JSON/ELF are not; container
 * magics; the plausibility walk's definite-failure rules; every input is
 * placed right before a PROT_NONE guard page so an overread crashes here. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "containers.h"
#include "t.h"

/* The head-only sniff and the recogniser's answer for a source, as the scan uses them. */
static spa_format ts_sniff(const uint8_t *p, size_t n) { return spc_sniff(p, n, UINT64_MAX); }
static spa_format ts_sniff_src(const spa_src *src) {
    spa_format f;
    return spa_recognise(src, NULL, 0, &f) == SPA_OK ? f : SPA_FMT_UNSCANNABLE;
}

/* ------------------------------------------------------------------ guard page */
static uint8_t *g_base;
static size_t g_len;

static const uint8_t *guarded(const void *p, size_t n) {
    long pg = sysconf(_SC_PAGESIZE);
    if (g_base) munmap(g_base, g_len);
    size_t pages = (n + (size_t)pg - 1) / (size_t)pg + 1;
    g_len = pages * (size_t)pg;
    g_base = mmap(NULL, g_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g_base == MAP_FAILED) { g_base = NULL; abort(); }
    mprotect(g_base + g_len - (size_t)pg, (size_t)pg, PROT_NONE);
    uint8_t *at = g_base + g_len - (size_t)pg - n;
    if (n) memcpy(at, p, n);
    return at;
}

/* ------------------------------------------------------------------ vectors */
typedef struct { const char *b; size_t n; const char *name; } vec;

/* Generated with CPython 3.11: pickle.dumps(x, protocol) */
static const vec pickles[] = {
    {"(dp0\nVa\np1\n(lp2\nI1\naF2.5\naVx\np3\naNaI01\nasVb\np4\nc_codecs\nencode\np5\n(Vxy\np6\nVlatin1\np7\ntp8\nRp9\nsVod\np10\nccollections\nOrderedDict\np11\n(tRp12\nVk\np13\nI1\nssVs\np14\nc__builtin__\nset\np15\n((lp16\nI3\natp17\nRp18\ns.", 201, "dict proto 0"},
    {"}q\x00(X\x01\x00\x00\x00""aq\x01]q\x02(K\x01G@\x04\x00\x00\x00\x00\x00\x00X\x01\x00\x00\x00xq\x03NI01\neX\x01\x00\x00\x00""bq\x04""c_codecs\nencode\nq\x05(X\x02\x00\x00\x00xyq\x06X\x06\x00\x00\x00latin1q\x07tq\x08Rq\x09X\x02\x00\x00\x00odq\nccollections\nOrderedDict\nq\x0b)Rq\x0cX\x01\x00\x00\x00kq\x0dK\x01sX\x01\x00\x00\x00sq\x0e""c__builtin__\nset\nq\x0f(]q\x10K\x03""atq\x11Rq\x12u.", 189, "dict proto 1"},
    {"\x80\x02}q\x00(X\x01\x00\x00\x00""aq\x01]q\x02(K\x01G@\x04\x00\x00\x00\x00\x00\x00X\x01\x00\x00\x00xq\x03N\x88""eX\x01\x00\x00\x00""bq\x04""c_codecs\nencode\nq\x05X\x02\x00\x00\x00xyq\x06X\x06\x00\x00\x00latin1q\x07\x86q\x08Rq\x09X\x02\x00\x00\x00odq\nccollections\nOrderedDict\nq\x0b)Rq\x0cX\x01\x00\x00\x00kq\x0dK\x01sX\x01\x00\x00\x00sq\x0e""c__builtin__\nset\nq\x0f]q\x10K\x03""a\x85q\x11Rq\x12u.", 186, "dict proto 2"},
    {"\x80\x03}q\x00(X\x01\x00\x00\x00""aq\x01]q\x02(K\x01G@\x04\x00\x00\x00\x00\x00\x00X\x01\x00\x00\x00xq\x03N\x88""eX\x01\x00\x00\x00""bq\x04""C\x02xyq\x05X\x02\x00\x00\x00odq\x06""ccollections\nOrderedDict\nq\x07)Rq\x08X\x01\x00\x00\x00kq\x09K\x01sX\x01\x00\x00\x00sq\ncbuiltins\nset\nq\x0b]q\x0cK\x03""a\x85q\x0dRq\x0eu.", 143, "dict proto 3"},
    {"\x80\x04\x95^\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01""a\x94]\x94(K\x01G@\x04\x00\x00\x00\x00\x00\x00\x8c\x01x\x94N\x88""e\x8c\x01""b\x94""C\x02xy\x94\x8c\x02od\x94\x8c\x0b""collections\x94\x8c\x0bOrderedDict\x94\x93\x94)R\x94\x8c\x01k\x94K\x01s\x8c\x01s\x94\x8f\x94(K\x03\x90u.", 105, "dict proto 4"},
    {"\x80\x05\x95^\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01""a\x94]\x94(K\x01G@\x04\x00\x00\x00\x00\x00\x00\x8c\x01x\x94N\x88""e\x8c\x01""b\x94""C\x02xy\x94\x8c\x02od\x94\x8c\x0b""collections\x94\x8c\x0bOrderedDict\x94\x93\x94)R\x94\x8c\x01k\x94K\x01s\x8c\x01s\x94\x8f\x94(K\x03\x90u.", 105, "dict proto 5"},
    {"I01\n.", 5, "True p0"},
    {"F1.5\n.", 6, "float p0"},
    {"Vs\np0\n.", 7, "str p0"},
    {"c_codecs\nencode\np0\n(Vx\np1\nVlatin1\np2\ntp3\nRp4\n.", 46, "bytes p0"},
    {"cfractions\nFraction\np0\n(I1\nI3\ntp1\nRp2\n.", 39, "Fraction p0"},
    {"cfractions\nFraction\nq\x00(K\x01K\x03tq\x01Rq\x02.", 34, "Fraction p1"},
    {"]q\x00.", 4, "list p1"},
    {").", 2, "tuple p1"},
    {"N.", 2, "None p0"},
    {"L12345678901234567890L\n.", 24, "long p0"},
    {"c__builtin__\nset\np0\n((lp1\nI1\naI2\natp2\nRp3\n.", 43, "set p0"},
    {"(lp0\n(lp1\nI1\naa(lp2\nI2\na(lp3\nI3\naaa.", 36, "nested list p0"},
    /* what the C unpickler accepts that a strict parser may not */
    {"I 12\n.", 6, "INT with leading space (strtol)"},
    {"I0x10\n.", 7, "INT base 0 hex"},
    {"I-7\n.", 5, "negative INT"},
    {"L0x1fL\n.", 8, "LONG hex with L"},
    {"Finf\n.", 6, "FLOAT inf"},
    {"S\"dq\"\n.", 7, "STRING double quotes"},
    {"(I1\nI2\nl.", 10, "LIST of ints"},
    {"]\x94(K\x01K\x02" "e.", 9, "MEMOIZE then APPENDS"},
    {"\x80\x02K\x01\x94h\x00\x86.", 9, "MEMOIZE then BINGET"},
    {"cos\nsystem\n(S'echo x'\ntR.", 25, "protocol 0 payload"},
    {"cos\nsystem\n", 11, "truncated after GLOBAL (the import already ran)"},
    {"\x80\x05\x95\x03\x00\x00\x00\x00\x00\x00\x00N\x85.", 14, "FRAME"},
    {"(\x8c\x01" "a\x8c\x01" "b\x93.", 9, "STACK_GLOBAL operands (short)"},
    {"(S'x'\ni__builtin__\nexec\n.", 26, "'(S' is also a valid zlib header: the pickle wins"},
    {"c\xc3\xa9t\xc3\xa9\nf\n.", 10, "GLOBAL with UTF-8 names"},
    {"\x80\x03" "cnumpy.", 9, "module line cut by EOF: pure Python imports 'numpy'"},
    {"cos\nsys", 7, "name line cut by EOF: the module is imported first"},
    {"cdatetime\ntime@elta\n.", 21, "any UTF-8 attribute name: the import comes first"},
};

static const vec not_pickles[] = {
    {"Now is the time for all good men\n", 33, "text"},
    {"Hello, world!\n", 14, "text 2"},
    {"I am a line of text\n", 20, "INT-looking text"},
    {"Some text\nmore\n", 15, "STRING-looking text"},
    {"Version 1.0\nSecond line\n", 24, "UNICODE-looking text"},
    {"import os\nprint(os.getcwd())\n", 29, "python source"},
    {"def f(x):\n    return x\n", 23, "python def"},
    {"#!/bin/sh\necho hi\n", 18, "shell"},
    {"{\"a\": 1, \"b\": [1, 2]}", 20, "JSON object"},
    {"[1, 2, 3]\n", 10, "JSON array"},
    {"\x7f" "ELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00", 16, "ELF"},
    {"a,b,c\n1,2,3\n", 12, "CSV"},
    {"<html><body></body></html>", 26, "HTML"},
    {"(hello world)\n", 14, "parenthesised text"},
    {"cat file.txt\n", 13, "GLOBAL with a space"},
    {"Xylophone music is nice to hear\n", 32, "BINUNICODE length past the end"},
    {"N", 1, "NONE then EOF"},
    {"cmod\n\xf8\n", 7, "GLOBAL name not UTF-8: fails before importing"},
    {"\x82\x05R.", 4, "EXT1 of an unregistered code, called"},
    {".", 1, "STOP on an empty stack"},
    {"\x80\x06N.", 4, "PROTO 6"},
    {"a", 1, "APPEND on nothing"},
    {"", 0, "empty"},
};

static void test_real_pickles_are_pickles(void) {
    for (size_t i = 0; i < sizeof pickles / sizeof pickles[0]; i++) {
        const uint8_t *p = guarded(pickles[i].b, pickles[i].n);
        T_CHECK_MSG(ts_sniff(p, pickles[i].n) == SPA_FMT_PICKLE, "%s", pickles[i].name);
        T_CHECK_MSG(spc_sniff(p, pickles[i].n, pickles[i].n) == SPA_FMT_PICKLE, "%s (size known)", pickles[i].name);
    }
}

static void test_not_pickles(void) {
    for (size_t i = 0; i < sizeof not_pickles / sizeof not_pickles[0]; i++) {
        const uint8_t *p = guarded(not_pickles[i].b, not_pickles[i].n);
        T_CHECK_MSG(spc_sniff(p, not_pickles[i].n, not_pickles[i].n) == SPA_FMT_NONE, "%s", not_pickles[i].name);
    }
}

/* Every prefix of every pickle: no overread, and a complete prefix that ends
 * in STOP is YES. With the size unknown a prefix is never NO unless the
 * loader would fail on its bytes alone. */
static void test_prefixes_never_overread(void) {
    for (size_t i = 0; i < sizeof pickles / sizeof pickles[0]; i++) {
        for (size_t k = 0; k <= pickles[i].n; k++) {
            const uint8_t *p = guarded(pickles[i].b, k);
            spc_pk a = spc_pickle_plausible(p, k, UINT64_MAX);
            (void)spc_pickle_plausible(p, k, k);
            (void)ts_sniff(p, k);
            if (k > 0) T_CHECK_MSG(a != SPC_PK_NO, "%s prefix %zu", pickles[i].name, k);
        }
    }
}

static void test_walk_definite_failures(void) {
    spc_walk_info wi;
    /* an undefined memo key before any import: harmless, not a pickle */
    T_EQ_INT(spc_pickle_walk((const uint8_t *)"h\x05.", 3, 3, &wi), SPC_PK_NO);
    /* the same failure after an import: the import ran, so it is a pickle */
    T_EQ_INT(spc_pickle_walk((const uint8_t *)"cos\nsystem\nh\x05.", 14, 14, &wi), SPC_PK_YES);
    T_CHECK(wi.effect && wi.failed);
    /* SETITEMS with an odd count fails */
    T_EQ_INT(spc_pickle_plausible((const uint8_t *)"}(K\x01u.", 6, 6), SPC_PK_NO);
    /* POP may pop a mark (C unpickler) */
    T_EQ_INT(spc_pickle_plausible((const uint8_t *)"N(0.", 4, 4), SPC_PK_YES);
    /* a length that runs past a known end fails; with the end unknown it may continue */
    T_EQ_INT(spc_pickle_plausible((const uint8_t *)"X\xff\x00\x00\x00" "ab", 7, 7), SPC_PK_NO);
    T_EQ_INT(spc_pickle_plausible((const uint8_t *)"X\xff\x00\x00\x00" "ab", 7, UINT64_MAX), SPC_PK_MAYBE);
    /* STOP reached: where */
    T_EQ_INT(spc_pickle_walk((const uint8_t *)"N.garbage", 9, 9, &wi), SPC_PK_YES);
    T_CHECK(wi.stopped && wi.end == 2);
}

static void test_container_magics(void) {
    static const struct { const char *b; size_t n; spa_format f; } m[] = {
        {"PK\x03\x04\x14\x00", 6, SPA_FMT_ZIP},
        {"PK\x05\x06\x00\x00", 6, SPA_FMT_ZIP},
        {"\x93NUMPY\x01\x00", 8, SPA_FMT_NPY},
        {"\x1f\x8b\x08\x00", 4, SPA_FMT_GZIP},
        {"BZh91AY&SY", 10, SPA_FMT_BZ2},
        {"\xfd" "7zXZ\x00\x00", 7, SPA_FMT_XZ},
        {"\x5d\x00\x00\x80\x00", 5, SPA_FMT_XZ},
        {"\x28\xb5\x2f\xfd\x00", 5, SPA_FMT_ZSTD},
        {"\x04\x22\x4d\x18\x60", 5, SPA_FMT_LZ4},
        {"x\x9c\x01\x02", 4, SPA_FMT_ZLIB},
        {"x\x01\x01\x02", 4, SPA_FMT_ZLIB},
        {"ZF0x1f             ", 20, SPA_FMT_JOBLIB},
        {"7z\xbc\xaf\x27\x1c\x00", 7, SPA_FMT_UNSCANNABLE},
        {"Rar!\x1a\x07\x00", 7, SPA_FMT_UNSCANNABLE},
        {"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.", 15, SPA_FMT_TORCH_LEGACY},
        {"\x80\x04\x95\x0d\x00\x00\x00\x00\x00\x00\x00\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.", 24,
         SPA_FMT_TORCH_LEGACY},
        {"L119547037146038801333356L\n.", 28, SPA_FMT_TORCH_LEGACY},
        {"x\x9d\x01", 3, SPA_FMT_NONE}, /* zlib header check fails */
    };
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) {
        const uint8_t *p = guarded(m[i].b, m[i].n);
        T_CHECK_MSG(ts_sniff(p, m[i].n) == m[i].f, "vector %zu: got %s", i, spa_format_name(ts_sniff(p, m[i].n)));
    }
    /* a ustar header block with a valid checksum */
    uint8_t h[512];
    memset(h, 0, sizeof h);
    memcpy(h, "storages", 8);
    memcpy(h + 100, "0000644", 7);
    memcpy(h + 124, "00000000012", 11);
    h[156] = '0';
    memcpy(h + 257, "ustar\x00" "00", 8);
    unsigned sum = 0;
    memset(h + 148, ' ', 8);
    for (size_t i = 0; i < 512; i++) sum += h[i];
    snprintf((char *)h + 148, 8, "%06o", sum);
    T_EQ_INT(ts_sniff(guarded(h, sizeof h), sizeof h), SPA_FMT_TAR);
    /* v7 (no magic) with a valid checksum, and a corrupt one */
    memset(h + 257, 0, 8);
    memset(h + 148, ' ', 8);
    sum = 0;
    for (size_t i = 0; i < 512; i++) sum += h[i];
    snprintf((char *)h + 148, 8, "%06o", sum);
    T_EQ_INT(ts_sniff(guarded(h, sizeof h), sizeof h), SPA_FMT_TAR);
    h[148] = '7';
    T_CHECK(ts_sniff(guarded(h, sizeof h), sizeof h) != SPA_FMT_TAR);
}

/* the recogniser: head, wider head for a plausible pickle, zip end record at the tail */
static void test_sniff_src(void) {
    spa_src src;
    static const char pk[] = "cos\nsystem\n(S'echo x'\ntR.";
    spa_src_mem(&src, (const uint8_t *)pk, sizeof pk - 1);
    T_EQ_INT(ts_sniff_src(&src), SPA_FMT_PICKLE);
    static uint8_t junkzip[600];
    memset(junkzip, 'j', sizeof junkzip);
    memcpy(junkzip + sizeof junkzip - 22, "PK\x05\x06", 4);
    memset(junkzip + sizeof junkzip - 18, 0, 18);
    spa_src_mem(&src, junkzip, sizeof junkzip);
    T_EQ_INT(ts_sniff_src(&src), SPA_FMT_ZIP);
    junkzip[sizeof junkzip - 1] = 1; /* a comment length with no comment: zipfile still opens it */
    T_EQ_INT(ts_sniff_src(&src), SPA_FMT_ZIP);
    /* an end record followed by a comment: zipfile searches the last 64 KiB + 22 bytes */
    static uint8_t commented[70000];
    memset(commented, 'j', sizeof commented);
    memcpy(commented + 1000, "PK\x05\x06", 4);
    memset(commented + 1004, 0, 18);
    spa_src_mem(&src, commented, sizeof commented);
    T_EQ_INT(ts_sniff_src(&src), SPA_FMT_NONE); /* too far from the end */
    memcpy(commented + sizeof commented - 60000, "PK\x05\x06", 4);
    memset(commented + sizeof commented - 59996, 0, 18);
    T_EQ_INT(ts_sniff_src(&src), SPA_FMT_ZIP);
    memset(commented + sizeof commented - 60000, 'j', 4);
    memcpy(commented + sizeof commented - 10, "PK\x05\x06", 4); /* no whole record after it */
    T_EQ_INT(ts_sniff_src(&src), SPA_FMT_NONE);
    static const char txt[] = "just some text\n";
    spa_src_mem(&src, (const uint8_t *)txt, sizeof txt - 1);
    T_EQ_INT(ts_sniff_src(&src), SPA_FMT_NONE);
}

/* Random bytes: never a crash, and "not a pickle" almost always. */
static void test_random_bytes(void) {
    uint32_t x = 12345;
    uint8_t b[256];
    int pick = 0;
    for (int r = 0; r < 2000; r++) {
        for (size_t i = 0; i < sizeof b; i++) { x = x * 1103515245u + 12345u; b[i] = (uint8_t)(x >> 16); }
        const uint8_t *p = guarded(b, sizeof b);
        if (spc_sniff(p, sizeof b, sizeof b) == SPA_FMT_PICKLE) pick++;
    }
    T_CHECK_MSG(pick < 40, "%d of 2000 random buffers sniffed as pickle", pick);
}

/* The first-byte filter of spc_sniff_alt skips only magics that say no:
 * over every first byte, with tails that complete each format's magic,
 * zeros, 0xff and pseudo-random bytes (lengths 1 to 600, so tar's 512 is
 * crossed), every magic outside spc_sniff_first(c) answers SPC_M_NO, and
 * spc_sniff_alt answers exactly what running every magic in order does. */
typedef int (*magic_fn)(const uint8_t *, size_t, uint64_t);
static const magic_fn all_magics[] = {
#define SPA_FMT(id, name, tag, magic, reader) magic,
#include "formats.def"
#undef SPA_FMT
};

static spa_format sniff_every_magic(const uint8_t *p, size_t n, uint64_t total, spa_format *alt) {
    spa_format weak = SPA_FMT_NONE;
    for (size_t i = 0; i < sizeof all_magics / sizeof all_magics[0]; i++) {
        if (!all_magics[i]) continue;
        int m = all_magics[i](p, n, total);
        if (m == SPC_M_YES) { *alt = weak; return (spa_format)i; }
        if (m == SPC_M_WEAK && weak == SPA_FMT_NONE) weak = (spa_format)i;
    }
    *alt = weak;
    return SPA_FMT_NONE;
}

static void test_first_byte_filter(void) {
    static const char *const tails[] = {
        "K\x03\x04", "K\x05\x06", "NUMPY\x01", "\x8b\x08", "Zh9", "7zXZ\x00", "ZIP",
        "\x00\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00\x00", "\xb5\x2f\xfd", "\x2a\x4d\x18",
        "\x22\x4d\x18", "F0000000000000000001", "z\xbc\xaf\x27\x1c", "ar!\x1a\x07",
        "\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19", "119547037146038801333356L\n",
        "\x9c", "\x01", "os\nsystem\n.", "\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00.",
    };
    static const size_t lens[] = {1, 2, 3, 4, 5, 6, 7, 13, 15, 20, 64, 511, 512, 600};
    static uint8_t b[600];
    uint32_t x = 777;
    long skipped = 0, first_fail = 0, pickle_only = 0, surely_none = 0;
    for (unsigned c = 0; c < 256; c++) {
        uint32_t may = spc_sniff_first((uint8_t)c);
        for (size_t t = 0; t < sizeof tails / sizeof tails[0] + 3 + 8; t++) {
            memset(b, 0, sizeof b);
            if (t < sizeof tails / sizeof tails[0]) memcpy(b + 1, tails[t], strlen(tails[t]));
            else if (t == sizeof tails / sizeof tails[0] + 1) memset(b + 1, 0xff, sizeof b - 1);
            else if (t >= sizeof tails / sizeof tails[0] + 2)
                for (size_t i = 1; i < sizeof b; i++) { x = x * 1103515245u + 12345u; b[i] = (uint8_t)(x >> 16); }
            b[0] = (uint8_t)c;
            for (size_t l = 0; l < sizeof lens / sizeof lens[0]; l++) {
                size_t n = lens[l];
                for (int k = 0; k < 2; k++) {
                    uint64_t total = k ? n : UINT64_MAX;
                    for (size_t f = 0; f < sizeof all_magics / sizeof all_magics[0]; f++) {
                        if (!all_magics[f] || (may >> f & 1)) continue;
                        skipped++;
                        T_CHECK_MSG(all_magics[f](b, n, total) == SPC_M_NO, "format %zu accepts first byte 0x%02x", f, c);
                    }
                    spa_format alt1, alt2;
                    spa_format f1 = spc_sniff_alt(b, n, total, false, &alt1);
                    spa_format f2 = sniff_every_magic(b, n, total, &alt2);
                    T_CHECK_MSG(f1 == f2 && alt1 == alt2, "byte 0x%02x len %zu: %d/%d vs %d/%d", c, n, f1, alt1, f2, alt2);
                    /* the walk's first-byte shortcut reports what the full walk does */
                    spc_walk_info w1, w2;
                    spc_pk r1 = spc_pickle_walk(b, n, total, &w1), r2 = spc_pickle_walk_full(b, n, total, &w2);
                    T_CHECK_MSG(r1 == r2 && memcmp(&w1, &w2, sizeof w1) == 0, "walk of byte 0x%02x len %zu", c, n);
                    if (r1 == SPC_PK_NO && w1.failed && w1.ops == 0) first_fail++;
                    /* nested.c's cheap "no" */
                    if (spc_sniff_surely_none(b, n)) {
                        surely_none++;
                        T_CHECK_MSG(f1 == SPA_FMT_NONE && alt1 == SPA_FMT_NONE && r2 == SPC_PK_NO,
                                    "surely-none byte 0x%02x len %zu", c, n);
                    }
                    /* nested.c skips the sniff where only the walk can answer */
                    if (spc_sniff_pickle_only(b, n)) {
                        pickle_only++;
                        T_CHECK_MSG(alt1 == SPA_FMT_NONE && (f1 == SPA_FMT_PICKLE) == (r2 != SPC_PK_NO),
                                    "pickle-only byte 0x%02x len %zu", c, n);
                    }
                }
            }
        }
    }
    T_CHECK(skipped > 100000); /* the filter does skip */
    T_CHECK_MSG(first_fail > 10000 && pickle_only > 10000 && surely_none > 5000, "%ld %ld %ld", first_fail, pickle_only, surely_none); /* the shortcuts do apply */
    /* text that is also a tar header ("ustar" at 257) is not left to the walk */
    memset(b, 'x', sizeof b);
    b[0] = 't';
    memcpy(b + 257, "ustar", 5);
    T_CHECK(spc_sniff_pickle_only(b, 511) && !spc_sniff_pickle_only(b, 512));
    T_CHECK(spc_sniff(b, 512, 512) == SPA_FMT_TAR);
}

/* The raw reading at 0 beside a container's (spc_sniff_also_pickle), and the walk's
 * line rules it relies on: PERSID's id must be ASCII, GLOBAL's lines UTF-8, decided
 * before the newline when the window already shows the bad byte. */
static void test_also_pickle(void) {
    uint8_t b[4096];
    static const char pk[] = "cposix\nsystem\n(S'echo x'\ntR.";
    /* zip local header + "\n": PERSID "K\3\4", then the payload */
    memset(b, 0, sizeof b);
    memcpy(b, "PK\x03\x04\n", 5);
    memcpy(b + 5, pk, sizeof pk - 1);
    T_CHECK(ts_sniff(b, 600) == SPA_FMT_ZIP);
    T_CHECK(spc_sniff_also_pickle(SPA_FMT_ZIP, b, 600, UINT64_MAX));
    T_CHECK(!spc_sniff_also_pickle(SPA_FMT_PICKLE, b, 600, UINT64_MAX));
    T_CHECK(!spc_sniff_also_pickle(SPA_FMT_NONE, b, 600, UINT64_MAX));
    T_CHECK(!spc_sniff_also_pickle(SPA_FMT_TORCH_LEGACY, b, 600, UINT64_MAX));
    /* torch.save's local header: zeros, name length 16, the name, then binary: the id is not ASCII */
    memset(b, 0, sizeof b);
    memcpy(b, "PK\x03\x04\0\0\x08\x08", 8);
    b[26] = 16;
    memcpy(b + 30, "archive/data.pklFB\x0c\0ZZZZZZZZZZZZ\x80\x02}q\0", 38);
    for (size_t i = 68; i < sizeof b; i++) b[i] = (uint8_t)(i * 7 + 11) == '\n' ? 'x' : (uint8_t)(i * 7 + 11);
    T_CHECK(!spc_sniff_also_pickle(SPA_FMT_ZIP, b, sizeof b, UINT64_MAX));
    T_EQ_INT(spc_pickle_walk(b, sizeof b, UINT64_MAX, NULL), SPC_PK_NO);
    /* all-ASCII id without a newline in the window: undecided (MAYBE), so read */
    memset(b, 'a', sizeof b);
    memcpy(b, "PK\x03\x04", 4);
    T_EQ_INT(spc_pickle_walk(b, sizeof b, UINT64_MAX, NULL), SPC_PK_MAYBE);
    T_CHECK(spc_sniff_also_pickle(SPA_FMT_ZIP, b, sizeof b, UINT64_MAX));
    T_EQ_INT(spc_pickle_plausible((const uint8_t *)"P\xc3\xa9\n.", 5, 5), SPC_PK_NO);
    T_EQ_INT(spc_pickle_plausible((const uint8_t *)"Pabc\n.", 6, 6), SPC_PK_YES);
    /* GLOBAL: a module line that is not UTF-8 fails before its newline; a cut sequence waits */
    memset(b, 'a', sizeof b);
    b[0] = 'c'; b[100] = 0xff;
    T_EQ_INT(spc_pickle_walk(b, sizeof b, UINT64_MAX, NULL), SPC_PK_NO);
    b[100] = 'a'; b[sizeof b - 1] = 0xe2;
    T_EQ_INT(spc_pickle_walk(b, sizeof b, UINT64_MAX, NULL), SPC_PK_MAYBE);
    b[sizeof b - 2] = 0xe2; /* a lead followed by a lead: bad */
    T_EQ_INT(spc_pickle_walk(b, sizeof b, UINT64_MAX, NULL), SPC_PK_NO);
    /* int()/float() lines and STRING are decided before their newline too (a
     * safetensors length's low byte then zeros and JSON); text that can still be
     * a number, or a quoted string, waits */
    for (const char *op = "ILFgpS"; *op; op++) {
        memset(b, '1', sizeof b);
        b[0] = (uint8_t)*op;
        b[1] = *op == 'S' ? '\'' : '1';
        T_CHECK_MSG(spc_pickle_walk(b, sizeof b, UINT64_MAX, NULL) == SPC_PK_MAYBE, "%c", *op);
        b[1] = 0x01;
        T_CHECK_MSG(spc_pickle_walk(b, sizeof b, UINT64_MAX, NULL) == SPC_PK_NO, "%c", *op);
    }
    /* bz2: 'B' BINBYTES of >= 389 MB: undecided when the size is unknown or large, no when small */
    memset(b, 0x5a, sizeof b);
    memcpy(b, "BZh91AY&SY", 10);
    T_CHECK(ts_sniff(b, 512) == SPA_FMT_BZ2);
    T_CHECK(spc_sniff_also_pickle(SPA_FMT_BZ2, b, 512, UINT64_MAX));
    T_CHECK(spc_sniff_also_pickle(SPA_FMT_BZ2, b, 512, 1ull << 32));
    T_CHECK(!spc_sniff_also_pickle(SPA_FMT_BZ2, b, 512, 512));
    /* magics whose first byte cannot start a pickle that gets anywhere */
    static const struct { const char *m; size_t n; spa_format f; } no[] = {
        {"\x1f\x8b\x08\x00", 4, SPA_FMT_GZIP}, {"\x93NUMPY\x01\x00", 8, SPA_FMT_NPY},
        {"\xfd" "7zXZ\x00", 6, SPA_FMT_XZ}, {"\x5d\x00\x00\x80\x00", 5, SPA_FMT_XZ},
        {"LZIP\x01", 5, SPA_FMT_XZ}, {"\x28\xb5\x2f\xfd", 4, SPA_FMT_ZSTD},
        {"\x04\x22\x4d\x18", 4, SPA_FMT_LZ4}, {"ZF0x000000000000000", 19, SPA_FMT_JOBLIB},
        {"7z\xbc\xaf\x27\x1c", 6, SPA_FMT_UNSCANNABLE}, {"Rar!\x1a\x07", 6, SPA_FMT_UNSCANNABLE},
    };
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
        memset(b, '\n', 64);
        memcpy(b, no[i].m, no[i].n);
        T_CHECK_MSG(!spc_sniff_also_pickle(no[i].f, b, 64, UINT64_MAX), "%zu", i);
    }
    /* a zstd skippable frame starting with 'V' (UNICODE line) is one */
    memset(b, 0, 64);
    memcpy(b, "V\x2a\x4d\x18\x20\0\0\0x\n", 10);
    memcpy(b + 10, pk, sizeof pk - 1);
    T_CHECK(ts_sniff(b, 64) == SPA_FMT_ZSTD && spc_sniff_also_pickle(SPA_FMT_ZSTD, b, 64, UINT64_MAX));
}

T_MAIN("sniff", T_CASE(test_real_pickles_are_pickles), T_CASE(test_not_pickles),
       T_CASE(test_prefixes_never_overread), T_CASE(test_walk_definite_failures),
       T_CASE(test_container_magics), T_CASE(test_sniff_src), T_CASE(test_random_bytes),
       T_CASE(test_first_byte_filter), T_CASE(test_also_pickle))
