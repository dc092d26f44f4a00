/* test_nested.c - nested pickles (raw bytes, base64, hex, latin1 text) are
 * scanned as child streams with depth and parent; the nesting limit is a
 * reported limit; harmless strings are not; joblib's dtype arithmetic and a
 * hand-built joblib stream whose payload sits after the raw array bytes. */
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "containers.h"
#include "t.h"

static const char PAYLOAD[] = "cos\nsystem\n(S'echo x'\ntR.";
#define PAYLOAD_N (sizeof PAYLOAD - 1)

static spa_result *scan_buf(const uint8_t *p, size_t n, const spa_limits *lim) {
    spa_scan_opts o;
    spa_scan_opts_default(&o);
    if (lim) o.limits = *lim;
    o.name = "n.pkl";
    spa_result *r = NULL;
    spa_err e;
    if (spa_scan_mem(&o, p, n, &r, &e) != SPA_OK) return NULL;
    return r;
}

static const spa_stream *payload_stream(const spa_result *r) {
    for (size_t i = 0; r && i < r->n_streams; i++)
        for (size_t k = 0; k < r->streams[i].n_ir; k++)
            if (r->streams[i].ir[k].kind == SPA_IR_IMPORT && !strcmp(r->streams[i].ir[k].name, "system"))
                return &r->streams[i];
    return NULL;
}

/* protocol 3: BINBYTES (or BINUNICODE for text) of s, then STOP */
static size_t wrap(uint8_t *out, char op, const void *s, size_t n) {
    out[0] = 0x80; out[1] = 3; out[2] = (uint8_t)op;
    out[3] = (uint8_t)n; out[4] = (uint8_t)(n >> 8); out[5] = (uint8_t)(n >> 16); out[6] = (uint8_t)(n >> 24);
    memcpy(out + 7, s, n);
    out[7 + n] = '.';
    return n + 8;
}

static void test_encodings(void) {
    static uint8_t b[4096];
    static char enc[1024];
    static const char b64tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    /* raw bytes */
    size_t n = wrap(b, 'B', PAYLOAD, PAYLOAD_N);
    spa_result *r = scan_buf(b, n, NULL);
    const spa_stream *s = payload_stream(r);
    T_CHECK(s && s->depth == 1 && s->parent == 0 && !strncmp(s->loc, "n.pkl!const@", 12));
    T_CHECK(r && r->n_streams == 2 && r->streams[0].n_ir >= 1 && r->streams[0].ir[0].kind == SPA_IR_NESTED &&
            r->streams[0].ir[0].nested_stream == 1);
    spa_result_free(r);
    /* hex text */
    for (size_t i = 0; i < PAYLOAD_N; i++) snprintf(enc + 2 * i, 3, "%02x", (unsigned char)PAYLOAD[i]);
    n = wrap(b, 'X', enc, 2 * PAYLOAD_N);
    r = scan_buf(b, n, NULL);
    s = payload_stream(r);
    T_CHECK(s && !strncmp(s->loc, "n.pkl!hex@", 10));
    spa_result_free(r);
    /* base64 text */
    size_t o = 0;
    const uint8_t *in = (const uint8_t *)PAYLOAD;
    for (size_t i = 0; i < PAYLOAD_N; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < PAYLOAD_N ? (uint32_t)in[i + 1] << 8 : 0) |
                     (i + 2 < PAYLOAD_N ? in[i + 2] : 0);
        enc[o++] = b64tab[v >> 18 & 63];
        enc[o++] = b64tab[v >> 12 & 63];
        enc[o++] = i + 1 < PAYLOAD_N ? b64tab[v >> 6 & 63] : '=';
        enc[o++] = i + 2 < PAYLOAD_N ? b64tab[v & 63] : '=';
    }
    n = wrap(b, 'X', enc, o);
    r = scan_buf(b, n, NULL);
    s = payload_stream(r);
    T_CHECK(s && !strncmp(s->loc, "n.pkl!base64@", 13));
    spa_result_free(r);
    /* junk bytes that base64.b64decode discards by default do not hide it */
    static char junky[1200];
    size_t j = 0;
    for (size_t i = 0; i < o; i++) { junky[j++] = enc[i]; if (i % 10 == 9) junky[j++] = '!'; }
    n = wrap(b, 'X', junky, j);
    r = scan_buf(b, n, NULL);
    s = payload_stream(r);
    T_CHECK(s && !strncmp(s->loc, "n.pkl!base64@", 13));
    spa_result_free(r);
    /* latin1 text: a protocol-2 payload whose \x80 becomes U+0080 in UTF-8 */
    static const char p2[] = "\x80\x02" "cos\nsystem\nq\x00X\x06\x00\x00\x00" "echo x\x85R.";
    o = 0;
    for (size_t i = 0; i < sizeof p2 - 1; i++) {
        uint8_t c = (uint8_t)p2[i];
        if (c < 0x80) enc[o++] = (char)c;
        else { enc[o++] = (char)(0xc0 | c >> 6); enc[o++] = (char)(0x80 | (c & 0x3f)); }
    }
    n = wrap(b, 'X', enc, o);
    r = scan_buf(b, n, NULL);
    s = payload_stream(r);
    T_CHECK(s && !strncmp(s->loc, "n.pkl!latin1@", 13));
    spa_result_free(r);
}

/* pickle.loads(zlib.decompress(b'x\x9c...')): the compressed constant is
 * decompressed (its weak magic is confirmed by what comes out) and scanned */
static void test_compressed_constant(void) {
    uint8_t z[256], b[512];
    uLongf zn = sizeof z;
    T_CHECK(compress2(z, &zn, (const Bytef *)PAYLOAD, PAYLOAD_N, 9) == Z_OK);
    size_t n = wrap(b, 'B', z, zn);
    spa_result *r = scan_buf(b, n, NULL);
    const spa_stream *s = payload_stream(r);
    T_CHECK(s && !strncmp(s->loc, "n.pkl!const@", 12) && strstr(s->loc, "!zlib@0") != NULL);
    spa_result_free(r);
    /* zlib of plain text is not reported */
    static const char txt[] = "just some text that compresses, just some text that compresses";
    zn = sizeof z;
    T_CHECK(compress2(z, &zn, (const Bytef *)txt, sizeof txt - 1, 9) == Z_OK);
    n = wrap(b, 'B', z, zn);
    r = scan_buf(b, n, NULL);
    T_CHECK(r && r->n_streams == 1 && r->n_notes == 0);
    spa_result_free(r);
}

static void test_harmless_strings_are_not_nested(void) {
    static const char *texts[] = {
        "hello world, this is text", "0123456789abcdef0123", "SGVsbG8gd29ybGQgdGhpcyBpcyB0ZXh0",
        "Now is the time for all good men", "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    };
    static uint8_t b[256];
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        size_t n = wrap(b, 'X', texts[i], strlen(texts[i]));
        spa_result *r = scan_buf(b, n, NULL);
        T_CHECK_MSG(r && r->n_streams == 1, "%s", texts[i]);
        spa_result_free(r);
    }
}

/* Many random ids, hashes, base64 blobs and raw bytes in one list: no
 * nested stream may come out of them (each would be a false report). */
static void test_random_constants_are_not_nested(void) {
    enum { N = 20000 };
    static const char hexd[] = "0123456789abcdef";
    static const char b64tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t cap = (size_t)N * 3 * 80 + 64, n = 0;
    uint8_t *b = malloc(cap);
    uint32_t x = 987654321u;
#define RND() (x = x * 1664525u + 1013904223u, (uint8_t)(x >> 24))
    b[n++] = 0x80; b[n++] = 4; b[n++] = ']'; b[n++] = '(';
    for (int i = 0; i < N; i++) {
        b[n++] = 0x8c; b[n++] = 32;                       /* 32 hex digits */
        for (int k = 0; k < 32; k++) b[n++] = (uint8_t)hexd[RND() & 15];
        b[n++] = 0x8c; b[n++] = 32;                       /* 32 base64 chars */
        for (int k = 0; k < 32; k++) b[n++] = (uint8_t)b64tab[RND() & 63];
        b[n++] = 'C'; b[n++] = 48;                        /* 48 random bytes */
        for (int k = 0; k < 48; k++) b[n++] = RND();
    }
#undef RND
    b[n++] = 'e'; b[n++] = '.';
    spa_result *r = scan_buf(b, n, NULL);
    T_CHECK(r && r->streams[0].complete);
    T_CHECK_MSG(r && r->n_streams == 1, "%zu nested streams from random constants", r ? r->n_streams - 1 : 0);
    T_CHECK(r && r->n_notes == 0);
    spa_result_free(r);
    free(b);
}

/* The payload behind 10 KB of padding inside the constant is still found. */
static void test_padding_does_not_hide(void) {
    size_t pad = 10000;
    size_t in_n = 2 + 5 + pad + 1 + sizeof PAYLOAD - 1;
    uint8_t *in = malloc(in_n), *b = malloc(in_n + 16);
    size_t k = 0;
    in[k++] = 0x80; in[k++] = 4;
    in[k++] = 'X'; in[k++] = (uint8_t)pad; in[k++] = (uint8_t)(pad >> 8); in[k++] = 0; in[k++] = 0;
    memset(in + k, 'a', pad); k += pad;
    in[k++] = '0';
    memcpy(in + k, PAYLOAD, sizeof PAYLOAD - 1); k += sizeof PAYLOAD - 1;
    size_t n = wrap(b, 'B', in, k);
    spa_result *r = scan_buf(b, n, NULL);
    const spa_stream *s = payload_stream(r);
    T_CHECK(s && s->depth == 1);
    spa_result_free(r);
    free(in);
    free(b);
}

static void test_depth_limit(void) {
    /* 30 levels of bytes-in-pickle around the payload */
    size_t cap = PAYLOAD_N + 30 * 8 + 16;
    uint8_t *a = malloc(cap), *b = malloc(cap);
    memcpy(a, PAYLOAD, PAYLOAD_N);
    size_t n = PAYLOAD_N;
    for (int i = 0; i < 30; i++) {
        n = wrap(b, 'B', a, n);
        uint8_t *t = a; a = b; b = t;
    }
    spa_limits l;
    spa_limits_default(&l);
    l.v[SPA_LIM_NEST] = 8;
    spa_result *r = scan_buf(a, n, &l);
    T_CHECK(r && r->pickle_bearing);
    int lim = 0;
    for (size_t i = 0; r && i < r->n_notes; i++) lim += r->notes[i].kind == SPA_NOTE_LIMIT && r->notes[i].limit == SPA_LIM_NEST;
    T_EQ_INT(lim, 1);
    T_CHECK(r && r->n_streams == 9);
    spa_result_free(r);
    free(a);
    free(b);
}


static void test_joblib_itemsize(void) {
    static const struct { const char *d; uint64_t sz; bool obj, ok; } t[] = {
        {"f8", 8, false, true}, {"<i4", 4, false, true}, {"U5", 20, false, true}, {"S3", 3, false, true},
        {"V16", 16, false, true}, {"b1", 1, false, true}, {"c16", 16, false, true}, {"M8", 8, false, true},
        {"O8", 8, true, true}, {"O", 8, true, true}, {"d", 8, false, true}, {"?", 1, false, true},
        {"x4", 0, false, false}, {"f99999999999999999999999", 0, false, false}, {"", 0, false, false},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        uint64_t sz;
        bool obj;
        bool ok = spc_joblib_itemsize(t[i].d, strlen(t[i].d), &sz, &obj);
        T_CHECK_MSG(ok == t[i].ok && (!ok || (sz == t[i].sz && obj == t[i].obj)), "%s", t[i].d);
    }
}

/* A joblib-like stream by hand: NumpyArrayWrapper with shape (3,) and dtype
 * f8, BUILD, then 1 padding-length byte + padding + 24 raw bytes that are not
 * a pickle, then the payload still in the same stream. */
static void test_joblib_skip(void) {
    static const char head[] =
        "\x80\x02" "cjoblib.numpy_pickle\nNumpyArrayWrapper\n)\x81}(X\x05\x00\x00\x00" "shapeK\x03\x85"
        "X\x05\x00\x00\x00" "dtypecnumpy\ndtype\nX\x02\x00\x00\x00" "f8\x89\x88\x87R"
        "X\x1b\x00\x00\x00" "numpy_array_alignment_bytesK\x10ub";
    uint8_t b[512];
    size_t n = sizeof head - 1;
    memcpy(b, head, n);
    size_t pad = 16 - ((n + 1) % 16);
    b[n++] = (uint8_t)pad;
    memset(b + n, 0xff, pad);
    n += pad;
    memset(b + n, 'x', 24); /* 'x' is not an opcode: a strict parser would stop here */
    n += 24;
    b[n++] = '0'; /* POP the array, then the payload */
    memcpy(b + n, PAYLOAD, PAYLOAD_N);
    n += PAYLOAD_N;
    spa_result *r = scan_buf(b, n, NULL);
    const spa_stream *s = payload_stream(r);
    T_CHECK(s && s == &r->streams[0]);
    T_CHECK(r && r->n_notes == 0);
    spa_result_free(r);
    /* a wrong shape: resync, and say so */
    uint8_t c[512];
    memcpy(c, b, n);
    uint8_t *sh = memmem(c, n, "shapeK\x03\x85", 8);
    T_CHECK(sh != NULL);
    if (sh) { sh[5] = 'N'; sh[6] = 0x88; sh[7] = 0x86; } /* shape = (None, True): not integers */
    r = scan_buf(c, n, NULL);
    int resync = 0;
    for (size_t i = 0; r && i < r->n_notes; i++) resync += r->notes[i].kind == SPA_NOTE_RESYNC;
    T_CHECK(resync >= 1);
    spa_result_free(r);
}

/* ------------------------------------------------------------ opaque bytes */
static uint32_t rnd_x = 12345u;
static void rnd_fill(uint8_t *b, size_t n) {
    for (size_t i = 0; i < n; i++) { rnd_x = rnd_x * 1664525u + 1013904223u; b[i] = (uint8_t)(rnd_x >> 24); }
}

/* The VM's opaque hook: binary data nothing could read as nested content is
 * opaque; text, container magics, a pickle that imports, base64 of a pickle,
 * or a head whose verdict needs bytes past it are not. */
static void test_opaque_judgement(void) {
    static uint8_t b[4096];
    const uint64_t len = 1u << 20;
    rnd_fill(b, sizeof b);
    T_CHECK(spc_nested_opaque(NULL, b, sizeof b, len));
    memset(b, 'a', sizeof b);                                   /* text: code-like tests need it all */
    T_CHECK(!spc_nested_opaque(NULL, b, sizeof b, len));
    rnd_fill(b, sizeof b); memcpy(b, "PK\x03\x04", 4);          /* a zip */
    T_CHECK(!spc_nested_opaque(NULL, b, sizeof b, len));
    rnd_fill(b, sizeof b); memcpy(b, "\x1f\x8b\x08", 3);        /* gzip: decided by decompressing */
    T_CHECK(!spc_nested_opaque(NULL, b, sizeof b, len));
    rnd_fill(b, sizeof b); memcpy(b, PAYLOAD, PAYLOAD_N);       /* imports, calls, stops, then junk */
    T_CHECK(!spc_nested_opaque(NULL, b, sizeof b, len));
    rnd_fill(b, sizeof b);                                      /* BINUNICODE longer than the constant */
    memcpy(b, "X\xff\xff\xff\x7f", 5);
    T_CHECK(spc_nested_opaque(NULL, b, sizeof b, len));
    rnd_fill(b, sizeof b);                                      /* ... inside it but past the head: undecided */
    memcpy(b, "X\x00\x00\x01\x00", 5);
    T_CHECK(!spc_nested_opaque(NULL, b, sizeof b, len));
    static const char b64tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    rnd_fill(b, sizeof b);                                      /* base64 of a pickle, then junk */
    const uint8_t *in = (const uint8_t *)PAYLOAD;
    size_t o = 0;
    for (size_t i = 0; i + 3 <= PAYLOAD_N; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        b[o++] = (uint8_t)b64tab[v >> 18 & 63]; b[o++] = (uint8_t)b64tab[v >> 12 & 63];
        b[o++] = (uint8_t)b64tab[v >> 6 & 63]; b[o++] = (uint8_t)b64tab[v & 63];
    }
    T_CHECK(!spc_nested_opaque(NULL, b, sizeof b, len));
}

typedef struct { size_t bytes; } count_alloc;
static void *ca_alloc(void *ctx, size_t n) { ((count_alloc *)ctx)->bytes += n; return malloc(n); }
static void ca_free(void *ctx, void *p) { (void)ctx; free(p); }
typedef struct { const uint8_t *p; size_t n; } memfile;
static ssize_t mf_pread(void *ctx, void *buf, size_t len, uint64_t off) {
    const memfile *f = ctx;
    if (off >= f->n) return 0;
    size_t k = f->n - off < len ? (size_t)(f->n - off) : len;
    memcpy(buf, f->p + off, k);
    return (ssize_t)k;
}

/* 64 array payloads of 256 KiB read through a file-like (pread) source: the
 * scan keeps SPA_VM_KEEP_OPAQUE bytes of each, so its arena stays a small
 * fraction of the data (it held every byte of each before), and none of them
 * is taken for a nested pickle. */
static void test_opaque_payloads_are_not_kept(void) {
    enum { K = 64, SZ = 256 * 1024 };
    size_t cap = (size_t)K * (SZ + 5) + 16, n = 0;
    uint8_t *b = malloc(cap);
    b[n++] = 0x80; b[n++] = 4; b[n++] = ']'; b[n++] = '(';
    for (int i = 0; i < K; i++) {
        b[n++] = 'B'; b[n++] = 0; b[n++] = 0; b[n++] = SZ >> 16; b[n++] = 0;
        rnd_fill(b + n, SZ);
        n += SZ;
    }
    b[n++] = 'e'; b[n++] = '.';
    memfile mf = { b, n };
    spa_src src = { mf_pread, &mf, n, NULL };
    count_alloc ca = { 0 };
    spa_scan_opts o;
    spa_scan_opts_default(&o);
    spa_alloc al = { ca_alloc, ca_free, &ca };
    o.alloc = &al;
    spa_result *r = NULL;
    spa_err e;
    T_EQ_INT(spa_scan_src(&o, &src, &r, &e), SPA_OK);
    T_CHECK(r && r->n_streams == 1 && r->streams[0].complete);
    T_CHECK_MSG(ca.bytes < (size_t)K * SZ / 8, "the scan allocated %zu bytes for %zu of array data", ca.bytes,
                (size_t)K * SZ);
    spa_result_free(r);
    free(b);
}

/* ------------------------------------------------------------ the VM's gate */
/* spc_nested_gate (the VM's spa_vm_hooks.const_short) speaks for
 * spc_nested_const_inert: every bytes constant, and every all-ASCII text
 * constant, of SPC_NESTED_MIN to gate[c] - 1 bytes starting with byte c is
 * inert, over every first byte with tails that complete a format's magic, a
 * pickle that imports, base64- and hex-like text, zeros, 0xff and random
 * bytes. The gate does apply (most text), and not where a short nested
 * pickle can start: "cos\nsystem\n." (12 bytes) is not inert. */
static void test_const_short_gate(void) {
    static const char *const tails[] = {
        "K\x03\x04", "NUMPY\x01", "\x8b\x08", "Zh9", "7zXZ\x00", "ZIP", "\xb5\x2f\xfd", "\x2a\x4d\x18",
        "\x22\x4d\x18", "F0000000000000", "z\xbc\xaf\x27\x1c", "ar!\x1a\x07", "\x02\x8a\x0a\x6c\xfc\x9c",
        "19547037146038", "\x9c", "os\nsystem\n.", "\x04\x95\x10\x00\x00.", "N.", "K\x01.", "AJjb3MKc3lzdGVt",
        "0a0b0c0d0e0f0a0b", "\x00", "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
    };
    spa_scan_opts o;
    spa_scan_opts_default(&o);
    spa_scan_ctx *sc = spa_ctx_create(&o);
    uint8_t b[32];
    spa_src src;
    spa_src_mem(&src, b, sizeof b);
    spc_scan s;
    spc_scan_init(&s, sc, &src, NULL, NULL);
    uint8_t gate[256];
    spc_nested_gate(gate);
    uint32_t x = 4242;
    long gated = 0, checked = 0;
    for (unsigned c = 0; c < 256; c++) {
        T_CHECK_MSG(gate[c] == 0 || gate[c] > SPC_NESTED_MIN, "gate[0x%02x] = %u", c, gate[c]);
        gated += gate[c] > SPC_NESTED_MIN;
        for (size_t t = 0; t < sizeof tails / sizeof tails[0] + 8; t++) {
            memset(b, 0, sizeof b);
            if (t < sizeof tails / sizeof tails[0]) memcpy(b + 1, tails[t], strlen(tails[t]));
            else
                for (size_t i = 1; i < sizeof b; i++) {
                    x = x * 1103515245u + 12345u;
                    b[i] = (uint8_t)(t % 2 ? x >> 16 : 'a' + (x >> 16) % 26); /* bytes, or ASCII text */
                }
            b[0] = (uint8_t)c;
            for (size_t n = SPC_NESTED_MIN; n < gate[c]; n++) {
                bool ascii = true;
                for (size_t i = 0; i < n; i++) ascii = ascii && b[i] < 0x80;
                T_CHECK_MSG(spc_nested_const_inert(&s, SPA_V_BYTES, b, n, n, true), "bytes 0x%02x tail %zu len %zu", c, t, n);
                if (ascii)
                    T_CHECK_MSG(spc_nested_const_inert(&s, SPA_V_STR, b, n, n, true), "str 0x%02x tail %zu len %zu", c, t, n);
                checked++;
            }
        }
    }
    T_CHECK_MSG(gated > 100 && gate['t'] && gate['a'], "%ld first bytes gated", gated);
    T_CHECK(checked > 10000);
    static const char imp[] = "cos\nsystem\n.";
    T_CHECK(!gate['c'] && !spc_nested_const_inert(&s, SPA_V_STR, (const uint8_t *)imp, sizeof imp - 1, sizeof imp - 1, true));
    spa_ctx_destroy(sc);
}

T_MAIN("nested", T_CASE(test_encodings), T_CASE(test_compressed_constant), T_CASE(test_harmless_strings_are_not_nested),
       T_CASE(test_random_constants_are_not_nested), T_CASE(test_padding_does_not_hide), T_CASE(test_depth_limit),
       T_CASE(test_joblib_itemsize), T_CASE(test_joblib_skip),
       T_CASE(test_opaque_judgement), T_CASE(test_opaque_payloads_are_not_kept), T_CASE(test_const_short_gate))
