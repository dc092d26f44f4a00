/* test_scan.c - the container entry points under allocation failure and
 * misuse: every allocation of a scan made to fail in turn (through the
 * pluggable allocator, which every decoder uses too) over nested containers
 * (gzip/bz2/xz/zstd/lz4 > npy > pickle > nested constant) gives SPA_E_NOMEM
 * or a result that holds the payload, never a crash or a leak; bad arguments give SPA_E_USAGE; a path that is not
 * a regular file gives SPA_E_IO. */
#include <bzlib.h>
#include <lz4frame.h>
#include <lzma.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include "containers.h"
#include "t.h"

typedef struct {
    long left;   /* allocations that still succeed; < 0: unlimited */
    long live;   /* blocks not yet freed */
} failing;

static void *fa_alloc(void *ctx, size_t n) {
    failing *f = ctx;
    if (f->left == 0) return NULL;
    if (f->left > 0) f->left--;
    void *p = malloc(n);
    if (p) f->live++;
    return p;
}

static void fa_free(void *ctx, void *p) {
    failing *f = ctx;
    if (p) f->live--;
    free(p);
}

/* An npy object array whose pickle holds a nested pickle constant, wrapped
 * by the compressor `fmt`. */
static uint8_t *make_input(spa_format fmt, size_t *n) {
    static const char inner[] = "cos\nsystem\n(S'echo x'\ntR.";
    uint8_t pk[256];
    size_t k = 0;
    pk[k++] = 0x80; pk[k++] = 3; pk[k++] = 'B';
    uint32_t il = sizeof inner - 1;
    memcpy(pk + k, &il, 4); k += 4;
    memcpy(pk + k, inner, il); k += il;
    pk[k++] = '.';
    static const char hdr[] = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }";
    uint8_t npy[512];
    size_t hl = sizeof hdr - 1 + 1;
    memcpy(npy, "\x93NUMPY\x01\x00", 8);
    npy[8] = (uint8_t)hl; npy[9] = 0;
    memcpy(npy + 10, hdr, sizeof hdr - 1);
    npy[10 + hl - 1] = '\n';
    memcpy(npy + 10 + hl, pk, k);
    size_t nn = 10 + hl + k;
    size_t cap = nn * 2 + 1024;
    uint8_t *out = malloc(cap);
    switch (fmt) {
    case SPA_FMT_GZIP: {
        z_stream z;
        memset(&z, 0, sizeof z);
        deflateInit2(&z, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY);
        z.next_in = npy; z.avail_in = (uInt)nn; z.next_out = out; z.avail_out = (uInt)cap;
        deflate(&z, Z_FINISH);
        *n = cap - z.avail_out;
        deflateEnd(&z);
        break;
    }
    case SPA_FMT_BZ2: {
        unsigned dl = (unsigned)cap;
        BZ2_bzBuffToBuffCompress((char *)out, &dl, (char *)npy, (unsigned)nn, 9, 0, 0);
        *n = dl;
        break;
    }
    case SPA_FMT_XZ: {
        size_t pos = 0;
        if (lzma_easy_buffer_encode(1, LZMA_CHECK_CRC32, NULL, npy, nn, out, &pos, cap) != LZMA_OK) abort();
        *n = pos;
        break;
    }
    case SPA_FMT_ZSTD: *n = ZSTD_compress(out, cap, npy, nn, 3); break;
    case SPA_FMT_LZ4: *n = LZ4F_compressFrame(out, cap, npy, nn, NULL); break;
    default: abort();
    }
    return out;
}

static bool found_payload(const spa_result *r) {
    for (size_t i = 0; r && i < r->n_streams; i++)
        for (size_t k = 0; k < r->streams[i].n_ir; k++)
            if (r->streams[i].ir[k].kind == SPA_IR_IMPORT && !strcmp(r->streams[i].ir[k].name, "system") &&
                strstr(r->streams[i].loc, "@0!pickle!const@"))
                return true;
    return false;
}

static void test_allocation_failures(void) {
    static const spa_format fmts[] = {SPA_FMT_GZIP, SPA_FMT_BZ2, SPA_FMT_XZ, SPA_FMT_ZSTD, SPA_FMT_LZ4};
    for (size_t fi = 0; fi < sizeof fmts / sizeof fmts[0]; fi++) {
        size_t n;
        uint8_t *in = make_input(fmts[fi], &n);
        /* first, with no failures: the nested payload is found */
        failing f = {-1, 0};
        spa_alloc a = {fa_alloc, fa_free, &f};
        spa_scan_opts o;
        spa_scan_opts_default(&o);
        o.alloc = &a;
        o.name = "x";
        spa_result *r = NULL;
        spa_err e;
        T_EQ_INT(spa_scan_mem(&o, in, n, &r, &e), SPA_OK);
        T_CHECK_MSG(found_payload(r), "%s", spa_format_name(fmts[fi]));
        spa_result_free(r);
        T_EQ_INT(f.live, 0);
        /* then every allocation in turn fails */
        int nomem = 0, ok = 0;
        for (long fail = 0; fail < 400; fail++) {
            f.left = fail;
            f.live = 0;
            r = NULL;
            spa_code c = spa_scan_mem(&o, in, n, &r, &e);
            T_CHECK(c == SPA_OK || c == SPA_E_NOMEM);
            /* never a silent miss: a result is complete, or the scan says NOMEM */
            if (c == SPA_OK) {
                T_CHECK_MSG(found_payload(r), "%s: allocation %ld failed: result without the payload",
                            spa_format_name(fmts[fi]), fail);
                ok++;
            } else {
                T_CHECK(r == NULL && e.msg);
                nomem++;
            }
            spa_result_free(r);
            T_CHECK_MSG(f.live == 0, "%s: %ld blocks leaked when allocation %ld failed", spa_format_name(fmts[fi]),
                        f.live, fail);
        }
        T_CHECK_MSG(nomem > 0 && ok > 0, "%s: %d nomem, %d ok", spa_format_name(fmts[fi]), nomem, ok);
        free(in);
    }
}

/* safetensors: the header length's low byte is arbitrary (a pickle opcode,
 * 0x78 zlib, ...); a header that parses as safetensors JSON is no pickle.
 * A lookalike whose "header" is not that JSON is still judged as a pickle. */
static void test_safetensors(void) {
    static const char js[] = "{\"__metadata__\":{\"format\":\"pt\"},\"w\":{\"dtype\":\"F32\",\"shape\":[4],"
                             "\"data_offsets\":[0,16]}}";
    static uint8_t b[8 + 0x200 + 16];
    int wrong = 0;
    for (unsigned lo = 0; lo < 256; lo++) {
        uint64_t n = 0x100 + lo;
        memset(b, 0, sizeof b);
        for (int i = 0; i < 8; i++) b[i] = (uint8_t)(n >> (8 * i));
        memcpy(b + 8, js, sizeof js - 1);
        memset(b + 8 + sizeof js - 1, ' ', (size_t)n - (sizeof js - 1));
        spa_scan_opts o;
        spa_scan_opts_default(&o);
        spa_result *r = NULL;
        spa_err e;
        if (spa_scan_mem(&o, b, 8 + (size_t)n + 16, &r, &e) != SPA_OK || r->pickle_bearing || r->n_notes) wrong++;
        spa_result_free(r);
    }
    T_EQ_INT(wrong, 0);
    /* a pickle with '{' at byte 8 and no JSON behind it */
    static const char pk[] = "cos\nsys{tem\n(S'echo x'\ntR.";
    spa_scan_opts o;
    spa_scan_opts_default(&o);
    spa_result *r = NULL;
    spa_err e;
    T_EQ_INT(spa_scan_mem(&o, (const uint8_t *)pk, sizeof pk - 1, &r, &e), SPA_OK);
    T_CHECK(r && r->pickle_bearing && r->n_streams == 1);
    spa_result_free(r);
}

/* A tar whose first member's name is a malicious protocol-0 pickle: tarfile reads
 * the tar, pickle.load reads the name. n: the tar's size (512 + 512 + 1024). */
static uint8_t *tar_polyglot(size_t *n) {
    static const char pk[] = "cposix\nsystem\n(S'echo x'\ntR.";
    uint8_t *t = calloc(1, 2048);
    memcpy(t, pk, sizeof pk - 1);
    memcpy(t + 100, "0000644", 7);
    memcpy(t + 124, "00000000005", 11); /* size 5 */
    memcpy(t + 257, "ustar", 5);
    memset(t + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++) sum += t[i];
    snprintf((char *)t + 148, 8, "%06o", sum);
    memcpy(t + 512, "hello", 5);
    *n = 2048;
    return t;
}

static bool raw_payload(const spa_result *r) {
    for (size_t i = 0; r && i < r->n_streams; i++)
        for (size_t k = 0; k < r->streams[i].n_ir; k++)
            if (r->streams[i].ir[k].kind == SPA_IR_IMPORT && !strcmp(r->streams[i].ir[k].name, "system") &&
                strstr(r->streams[i].loc, "!pickle@0"))
                return true;
    return false;
}

/* A container whose head is also a plausible pickle is read both ways: the raw
 * stream at 0 (random access: a second reader; sequential, inside a gzip: the
 * tee, then the tar reader replays it and still finds the member). */
static void test_polyglot_both_readings(void) {
    size_t n;
    uint8_t *t = tar_polyglot(&n);
    T_CHECK(spc_sniff(t, n, n) == SPA_FMT_TAR);
    spa_scan_opts o;
    spa_scan_opts_default(&o);
    spa_result *r = NULL;
    spa_err e;
    T_EQ_INT(spa_scan_mem(&o, t, n, &r, &e), SPA_OK);
    T_CHECK(r && r->format == SPA_FMT_TAR && raw_payload(r));
    spa_result_free(r);
    /* the same tar gzipped: the decompressed content is sequential */
    uint8_t gz[4096];
    z_stream z;
    memset(&z, 0, sizeof z);
    deflateInit2(&z, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY);
    z.next_in = t; z.avail_in = (uInt)n; z.next_out = gz; z.avail_out = sizeof gz;
    deflate(&z, Z_FINISH);
    size_t gn = sizeof gz - z.avail_out;
    deflateEnd(&z);
    /* a pickle member in the tar after the polyglot header: the replayed reading finds it */
    T_EQ_INT(spa_scan_mem(&o, gz, gn, &r, &e), SPA_OK);
    T_CHECK(r && r->format == SPA_FMT_GZIP && raw_payload(r));
    spa_result_free(r);
    /* a tar with a pickle member behind a polyglot head, gzipped: both streams */
    uint8_t *t2 = calloc(1, 4096);
    memcpy(t2, t, 512);
    static const char inner[] = "cposix\nsystem\n(S'echo y'\ntR.";
    memcpy(t2 + 124, "00000000034", 11); /* 28 bytes */
    memset(t2 + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++) sum += t2[i];
    snprintf((char *)t2 + 148, 8, "%06o", sum);
    memcpy(t2 + 512, inner, sizeof inner - 1);
    memset(&z, 0, sizeof z);
    deflateInit2(&z, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY);
    z.next_in = t2; z.avail_in = 2048; z.next_out = gz; z.avail_out = sizeof gz;
    deflate(&z, Z_FINISH);
    gn = sizeof gz - z.avail_out;
    deflateEnd(&z);
    T_EQ_INT(spa_scan_mem(&o, gz, gn, &r, &e), SPA_OK);
    size_t raw = 0, mem = 0;
    for (size_t i = 0; r && i < r->n_streams; i++) {
        if (strstr(r->streams[i].loc, "!pickle@0")) raw++;
        else if (strstr(r->streams[i].loc, "!gzip@0!cposix")) mem++; /* the member, named by its name */
    }
    T_CHECK_MSG(raw == 1 && mem == 1, "raw %zu member %zu", raw, mem);
    spa_result_free(r);
    free(t2);
    free(t);
}

/* A ustar header for a member of `size` bytes whose name field starts with
 * `name` (nn bytes, raw: it may hold pickle opcodes). */
static void tar_header(uint8_t *h, const void *name, size_t nn, uint64_t size) {
    memset(h, 0, 512);
    memcpy(h, name, nn);
    memcpy(h + 100, "0000644", 7);
    snprintf((char *)h + 124, 12, "%011llo", (unsigned long long)size);
    memcpy(h + 257, "ustar", 5);
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++) sum += h[i];
    snprintf((char *)h + 148, 8, "%06o", sum);
}

/* The sequential polyglot path's cap (content.h SPC_TEE_MAX): a gzipped tar
 * whose head is also a pickle that reads past the replay buffer before any
 * STOP (BINUNICODE of 16 MiB - 1 bytes in the first member's name) cannot be
 * examined whole as a pickle. That is said (an unscannable note on the raw
 * reading, which the default policy blocks), never taken for the end of the
 * stream; and the tar reading, replayed from the kept bytes and then the rest
 * of the decompressor, still finds the (benign) pickle member behind the
 * big one. */
static void test_polyglot_over_replay_cap(void) {
    const uint64_t big = (uint64_t)SPC_TEE_MAX + (1u << 20); /* the first member: 17 MiB of zeros */
    static const char pk[] = "(I1\nI2\nt."; /* benign: the block is the cap's alone */
    size_t n = 512 + (size_t)big + 512 + 512 + 1024;
    uint8_t *t = calloc(1, n);
    T_CHECK(t != NULL);
    if (!t) return;
    static const uint8_t name[] = {'X', 0xff, 0xff, 0xff, 0x00};
    tar_header(t, name, sizeof name, big);
    tar_header(t + 512 + big, "m.pkl", 5, sizeof pk - 1);
    memcpy(t + 512 + big + 512, pk, sizeof pk - 1);
    size_t cap = compressBound((uLong)n) + 64;
    uint8_t *gz = malloc(cap);
    T_CHECK(gz != NULL);
    if (!gz) { free(t); return; }
    z_stream z;
    memset(&z, 0, sizeof z);
    deflateInit2(&z, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY);
    z.next_in = t; z.avail_in = (uInt)n; z.next_out = gz; z.avail_out = (uInt)cap;
    T_EQ_INT(deflate(&z, Z_FINISH), Z_STREAM_END);
    size_t gn = cap - z.avail_out;
    deflateEnd(&z);
    free(t);
    spa_scan_opts o;
    spa_scan_opts_default(&o);
    spa_result *r = NULL;
    spa_err e;
    T_EQ_INT(spa_scan_mem(&o, gz, gn, &r, &e), SPA_OK);
    T_CHECK(r && r->format == SPA_FMT_GZIP);
    size_t over = 0, member = 0;
    for (size_t i = 0; r && i < r->n_notes; i++)
        if (r->notes[i].kind == SPA_NOTE_UNSCANNABLE && r->notes[i].loc && strstr(r->notes[i].loc, "!pickle@0") &&
            r->notes[i].err.msg && strstr(r->notes[i].err.msg, "replay buffer"))
            over++;
    for (size_t i = 0; r && i < r->n_streams; i++)
        if (strstr(r->streams[i].loc, "m.pkl")) member++;
    T_CHECK_MSG(over == 1 && member == 1, "notes over the cap %zu, member streams %zu", over, member);
    spa_policy *pol = NULL;
    T_EQ_INT(spa_policy_default(&pol), SPA_OK);
    if (r && pol) {
        T_EQ_INT(spa_classify(r, pol), SPA_OK);
        T_EQ_INT(spa_policy_decide(pol, r), SPA_ACT_BLOCK);
    }
    spa_policy_free(pol);
    spa_result_free(r);
    free(gz);
}

static void test_misuse(void) {
    spa_scan_opts o;
    spa_scan_opts_default(&o);
    spa_result *r = (spa_result *)1;
    spa_err e;
    T_EQ_INT(spa_scan_src(&o, NULL, &r, &e), SPA_E_USAGE);
    T_CHECK(r == NULL);
    T_EQ_INT(spa_scan_src(NULL, NULL, NULL, NULL), SPA_E_USAGE);
    T_EQ_INT(spa_scan_path(&o, "/", &r, &e), SPA_E_IO);
    T_EQ_INT(spa_scan_path(&o, "/nonexistent/x.pt", &r, &e), SPA_E_IO);
    T_EQ_INT(spa_scan_mem(&o, NULL, 0, &r, &e), SPA_OK);
    T_CHECK(r && !r->pickle_bearing && r->n_streams == 0);
    spa_result_free(r);
    spa_scan_opts_default(NULL);
}

T_MAIN("scan", T_CASE(test_allocation_failures), T_CASE(test_safetensors), T_CASE(test_polyglot_both_readings),
       T_CASE(test_polyglot_over_replay_cap),
       T_CASE(test_misuse))
