/* test_decomp.c - bounded decompression: a payload pickle wrapped by every
 * compressor (zlib, gzip, bz2, xz, lzma-alone, zstd, lz4, joblib's zfile) is
 * found at "<name>!<fmt>@0"; multi-member gzip; wrappers in wrappers; the
 * size, ratio and nesting limits are reported as limits, never followed;
 * corrupt and truncated data give notes, never crashes. */
#include <bzlib.h>
#include <lz4frame.h>
#include <lzma.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include "containers.h"
#include "t.h"

static const char PAYLOAD[] = "cos\nsystem\n(S'echo x'\ntR.";
#define PAYLOAD_N (sizeof PAYLOAD - 1)

/* Compress in as fmt into a malloc'd buffer. */
static uint8_t *pack(spa_format fmt, const void *in, size_t n, size_t *outn) {
    size_t cap = n + n / 2 + 4096;
    uint8_t *o = malloc(cap);
    if (!o) abort();
    switch (fmt) {
    case SPA_FMT_ZLIB: case SPA_FMT_GZIP: {
        z_stream z;
        memset(&z, 0, sizeof z);
        deflateInit2(&z, 6, Z_DEFLATED, fmt == SPA_FMT_GZIP ? 31 : 15, 8, Z_DEFAULT_STRATEGY);
        z.next_in = (Bytef *)(uintptr_t)in; z.avail_in = (uInt)n;
        z.next_out = o; z.avail_out = (uInt)cap;
        deflate(&z, Z_FINISH);
        *outn = cap - z.avail_out;
        deflateEnd(&z);
        break;
    }
    case SPA_FMT_BZ2: {
        unsigned dl = (unsigned)cap;
        BZ2_bzBuffToBuffCompress((char *)o, &dl, (char *)(uintptr_t)in, (unsigned)n, 9, 0, 0);
        *outn = dl;
        break;
    }
    case SPA_FMT_XZ: {
        size_t pos = 0;
        lzma_easy_buffer_encode(6, LZMA_CHECK_CRC64, NULL, in, n, o, &pos, cap);
        *outn = pos;
        break;
    }
    case SPA_FMT_ZSTD: *outn = ZSTD_compress(o, cap, in, n, 3); break;
    case SPA_FMT_LZ4: *outn = LZ4F_compressFrame(o, cap, in, n, NULL); break;
    default: abort();
    }
    return o;
}

/* lzma-alone (joblib 'lzma'): end marker, unknown size */
static uint8_t *pack_alone(const void *in, size_t n, size_t *outn) {
    size_t cap = n + 4096;
    uint8_t *o = malloc(cap);
    if (!o) abort();
    lzma_options_lzma opt;
    lzma_lzma_preset(&opt, 6);
    lzma_stream s = LZMA_STREAM_INIT;
    if (lzma_alone_encoder(&s, &opt) != LZMA_OK) abort();
    s.next_in = in; s.avail_in = n; s.next_out = o; s.avail_out = cap;
    while (lzma_code(&s, LZMA_FINISH) == LZMA_OK) {}
    *outn = cap - s.avail_out;
    lzma_end(&s);
    return o;
}

static spa_result *scan_buf(const uint8_t *p, size_t n, const spa_limits *lim) {
    spa_scan_opts o;
    spa_scan_opts_default(&o);
    if (lim) o.limits = *lim;
    o.name = "x";
    spa_result *r = NULL;
    spa_err e;
    if (spa_scan_mem(&o, p, n, &r, &e) != SPA_OK) return NULL;
    return r;
}

static bool has_import(const spa_result *r, const char *loc, const char *mod, const char *name) {
    for (size_t i = 0; r && i < r->n_streams; i++) {
        if (loc && strcmp(r->streams[i].loc, loc) != 0) continue;
        for (size_t k = 0; k < r->streams[i].n_ir; k++) {
            const spa_ir *e = &r->streams[i].ir[k];
            if (e->kind == SPA_IR_IMPORT && !strcmp(e->module, mod) && !strcmp(e->name, name)) return true;
        }
    }
    return false;
}

static const spa_note *find_note(const spa_result *r, spa_notekind k) {
    for (size_t i = 0; r && i < r->n_notes; i++) if (r->notes[i].kind == k) return &r->notes[i];
    return NULL;
}

static void test_every_compressor(void) {
    static const struct { spa_format f; const char *loc; } t[] = {
        {SPA_FMT_ZLIB, "x!zlib@0"}, {SPA_FMT_GZIP, "x!gzip@0"}, {SPA_FMT_BZ2, "x!bz2@0"},
        {SPA_FMT_XZ, "x!xz@0"}, {SPA_FMT_ZSTD, "x!zstd@0"}, {SPA_FMT_LZ4, "x!lz4@0"},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        size_t n;
        uint8_t *c = pack(t[i].f, PAYLOAD, PAYLOAD_N, &n);
        spa_result *r = scan_buf(c, n, NULL);
        T_CHECK_MSG(r && r->format == t[i].f, "%s", t[i].loc);
        T_CHECK_MSG(has_import(r, t[i].loc, "os", "system"), "%s", t[i].loc);
        T_CHECK_MSG(r && !find_note(r, SPA_NOTE_ERROR) && !find_note(r, SPA_NOTE_LIMIT), "%s", t[i].loc);
        spa_result_free(r);
        free(c);
    }
    size_t n;
    uint8_t *c = pack_alone(PAYLOAD, PAYLOAD_N, &n);
    spa_result *r = scan_buf(c, n, NULL);
    T_CHECK(has_import(r, "x!xz@0", "os", "system"));
    spa_result_free(r);
    free(c);
    /* joblib < 0.10 zfile: "ZF" + 19-byte hex length + zlib */
    c = pack(SPA_FMT_ZLIB, PAYLOAD, PAYLOAD_N, &n);
    uint8_t *zf = malloc(n + 21);
    memcpy(zf, "ZF0x19               ", 21); /* 2 + 19 bytes (a NUL there: int() refuses it) */
    memcpy(zf + 21, c, n);
    r = scan_buf(zf, n + 21, NULL);
    T_CHECK(has_import(r, "x!zfile@0", "os", "system"));
    spa_result_free(r);
    free(zf);
    free(c);
}

static void test_multi_member_gzip_and_nesting(void) {
    size_t n1, n2;
    uint8_t *a = pack(SPA_FMT_GZIP, "N.", 2, &n1);
    uint8_t *b = pack(SPA_FMT_GZIP, PAYLOAD, PAYLOAD_N, &n2);
    uint8_t *ab = malloc(n1 + n2);
    memcpy(ab, a, n1);
    memcpy(ab + n1, b, n2);
    spa_result *r = scan_buf(ab, n1 + n2, NULL);
    T_CHECK(r && r->n_streams == 2);
    T_CHECK(has_import(r, "x!gzip@0!stream@2", "os", "system"));
    spa_result_free(r);
    /* gzip of xz of the payload */
    size_t nx, ng;
    uint8_t *x = pack(SPA_FMT_XZ, PAYLOAD, PAYLOAD_N, &nx);
    uint8_t *gx = pack(SPA_FMT_GZIP, x, nx, &ng);
    r = scan_buf(gx, ng, NULL);
    T_CHECK(has_import(r, "x!gzip@0!xz@0", "os", "system"));
    spa_result_free(r);
    /* 24 layers of gzip: the nesting limit is reported */
    size_t cn = PAYLOAD_N;
    uint8_t *cur = malloc(cn);
    memcpy(cur, PAYLOAD, cn);
    for (int i = 0; i < 24; i++) {
        size_t nn;
        uint8_t *nx2 = pack(SPA_FMT_GZIP, cur, cn, &nn);
        free(cur);
        cur = nx2;
        cn = nn;
    }
    r = scan_buf(cur, cn, NULL);
    const spa_note *nt = find_note(r, SPA_NOTE_LIMIT);
    T_CHECK(nt && nt->limit == SPA_LIM_NEST);
    T_CHECK(r && r->pickle_bearing && r->n_streams == 0);
    spa_result_free(r);
    free(cur); free(a); free(b); free(ab); free(x); free(gx);
}

/* A pickle carrying 16 MiB of zeros in one BINBYTES: ~16 KiB as zlib. */
static uint8_t *zero_pickle(size_t zeros, size_t *n) {
    uint8_t *p = calloc(1, zeros + 8);
    p[0] = 0x80; p[1] = 4; p[2] = 'B';
    p[3] = (uint8_t)zeros; p[4] = (uint8_t)(zeros >> 8); p[5] = (uint8_t)(zeros >> 16); p[6] = (uint8_t)(zeros >> 24);
    p[7 + zeros] = '.';
    *n = zeros + 8;
    return p;
}

/* A gzip bomb made of members: a pickle header asking for 320 MiB of
 * BINBYTES, 20 members of 16 MiB of zeros each, then STOP: ~1000:1 overall. */
static uint8_t *gzip_bomb(size_t *n) {
    static const size_t part = 16u << 20;
    uint8_t head[7] = {0x80, 4, 'B'};
    uint32_t len = (uint32_t)(20 * part);
    head[3] = (uint8_t)len; head[4] = (uint8_t)(len >> 8); head[5] = (uint8_t)(len >> 16); head[6] = (uint8_t)(len >> 24);
    uint8_t *zeros = calloc(1, part);
    size_t hn, zn, en;
    uint8_t *h = pack(SPA_FMT_GZIP, head, sizeof head, &hn);
    uint8_t *z = pack(SPA_FMT_GZIP, zeros, part, &zn);
    uint8_t *e = pack(SPA_FMT_GZIP, ".", 1, &en);
    uint8_t *out = malloc(hn + 20 * zn + en);
    memcpy(out, h, hn);
    for (int i = 0; i < 20; i++) memcpy(out + hn + (size_t)i * zn, z, zn);
    memcpy(out + hn + 20 * zn, e, en);
    *n = hn + 20 * zn + en;
    free(zeros); free(h); free(z); free(e);
    return out;
}

static void test_limits(void) {
    size_t pn, cn, bn;
    uint8_t *p = zero_pickle(16u << 20, &pn);
    uint8_t *c = pack(SPA_FMT_ZLIB, p, pn, &cn);
    /* ratio: past 256 MiB of output at more than max_decomp_ratio */
    uint8_t *bomb = gzip_bomb(&bn);
    spa_limits l;
    spa_limits_default(&l);
    l.v[SPA_LIM_DECOMP_RATIO] = 100;
    spa_result *r = scan_buf(bomb, bn, &l);
    const spa_note *nt = find_note(r, SPA_NOTE_LIMIT);
    T_CHECK(nt && nt->limit == SPA_LIM_DECOMP_RATIO);
    T_CHECK(r && r->pickle_bearing);
    spa_result_free(r);
    /* the same bomb within the default ratio: followed to its end (bounded work), complete */
    r = scan_buf(bomb, bn, NULL);
    T_CHECK(r && r->n_streams == 1 && r->streams[0].complete && r->n_notes == 0);
    spa_result_free(r);
    /* size */
    spa_limits_default(&l);
    l.v[SPA_LIM_DECOMP_BYTES] = 1u << 20;
    r = scan_buf(c, cn, &l);
    nt = find_note(r, SPA_NOTE_LIMIT);
    T_CHECK(nt && nt->limit == SPA_LIM_DECOMP_BYTES);
    spa_result_free(r);
    /* defaults: the whole thing decompresses, one complete stream, no notes */
    r = scan_buf(c, cn, NULL);
    T_CHECK(r && r->n_streams == 1 && r->streams[0].complete && r->n_notes == 0);
    spa_result_free(r);
    /* real data with a huge ratio is not a bomb: bz2 of 16 MiB of zeros (~50,000:1) */
    free(c);
    c = pack(SPA_FMT_BZ2, p, pn, &cn);
    r = scan_buf(c, cn, NULL);
    T_CHECK_MSG(r && r->n_notes == 0 && r->n_streams == 1 && r->streams[0].complete, "ratio %zu:1",
                cn ? pn / cn : 0);
    spa_result_free(r);
    free(bomb);
    free(p);
    free(c);
}

static void test_corrupt_and_truncated(void) {
    static const spa_format fmts[] = {SPA_FMT_ZLIB, SPA_FMT_GZIP, SPA_FMT_BZ2, SPA_FMT_XZ, SPA_FMT_ZSTD, SPA_FMT_LZ4};
    for (size_t i = 0; i < sizeof fmts / sizeof fmts[0]; i++) {
        size_t n;
        uint8_t *c = pack(fmts[i], PAYLOAD, PAYLOAD_N, &n);
        for (size_t k = 0; k < n; k++) { /* every truncation */
            uint8_t *t = malloc(k ? k : 1);
            memcpy(t, c, k);
            spa_result *r = scan_buf(t, k, NULL);
            T_CHECK(r != NULL);
            spa_result_free(r);
            free(t);
        }
        for (size_t k = 0; k < n; k++) { /* every byte flipped */
            uint8_t *t = malloc(n);
            memcpy(t, c, n);
            t[k] ^= 0x55;
            spa_result *r = scan_buf(t, n, NULL);
            T_CHECK(r != NULL);
            spa_result_free(r);
            free(t);
        }
        /* truncated after the header: an error note (or a truncated stream) */
        spa_result *r = scan_buf(c, n - 4, NULL);
        T_CHECK_MSG(r && (find_note(r, SPA_NOTE_ERROR) || (r->n_streams && !r->streams[0].complete) ||
                          has_import(r, NULL, "os", "system")),
                    "format %s", spa_format_name(fmts[i]));
        spa_result_free(r);
        free(c);
    }
}

T_MAIN("decomp", T_CASE(test_every_compressor), T_CASE(test_multi_member_gzip_and_nesting), T_CASE(test_limits),
       T_CASE(test_corrupt_and_truncated))
