/* test_zip.c - the zip reader on archives built here byte by byte: stored,
 * deflated and bzip2 members, zip64, prepended data, wrong CRCs, local names
 * and sizes that disagree, encrypted and unsupported members, member limits,
 * every truncation (input before a guard page), and that only the directory
 * and the pickle-bearing members are read. */
#include <bzlib.h>
#include <lzma.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

#include "containers.h"
#include "t.h"

static const char PAYLOAD[] = "cos\nsystem\n(S'echo x'\ntR.";
#define PAYLOAD_N (sizeof PAYLOAD - 1)

/* ------------------------------------------------------------------ zip writer */
typedef struct { uint8_t *b; size_t n, cap; } buf;

static void put(buf *o, const void *p, size_t n) {
    if (o->n + n > o->cap) {
        o->cap = (o->n + n) * 2 + 256;
        o->b = realloc(o->b, o->cap);
        if (!o->b) abort();
    }
    memcpy(o->b + o->n, p, n);
    o->n += n;
}
static void p16(buf *o, unsigned v) { uint8_t b[2] = {(uint8_t)v, (uint8_t)(v >> 8)}; put(o, b, 2); }
static void p32(buf *o, uint32_t v) { uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)}; put(o, b, 4); }
static void p64(buf *o, uint64_t v) { p32(o, (uint32_t)v); p32(o, (uint32_t)(v >> 32)); }

typedef struct {
    const char *name;
    const void *data;
    size_t n;
    unsigned method;      /* 0, 8, 12 or anything (raw copy) */
    unsigned flags;
    const char *local_name; /* NULL: same */
    bool zero_local_sizes;
} zent;

typedef struct {
    bool zip64, bad_crc;
    const char *prefix;
    const char *mid; /* bytes between the directory and the end record */
} zopt;

static size_t compress_as(unsigned method, const void *in, size_t n, uint8_t *out, size_t cap) {
    if (method == 8) {
        z_stream z;
        memset(&z, 0, sizeof z);
        deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
        z.next_in = (Bytef *)(uintptr_t)in;
        z.avail_in = (uInt)n;
        z.next_out = out;
        z.avail_out = (uInt)cap;
        deflate(&z, Z_FINISH);
        size_t r = cap - z.avail_out;
        deflateEnd(&z);
        return r;
    }
    if (method == 14) { /* APPNOTE 5.8.8: version, properties size, properties, raw LZMA1 with EOS */
        lzma_options_lzma opt;
        lzma_lzma_preset(&opt, 6);
        lzma_filter f[2] = {{LZMA_FILTER_LZMA1, &opt}, {LZMA_VLI_UNKNOWN, NULL}};
        out[0] = 9; out[1] = 20; out[2] = 5; out[3] = 0;
        if (lzma_properties_encode(&f[0], out + 4) != LZMA_OK) abort();
        size_t pos = 9;
        if (lzma_raw_buffer_encode(f, NULL, in, n, out, &pos, cap) != LZMA_OK) abort();
        return pos;
    }
    if (method == 12) {
        unsigned int dl = (unsigned)cap;
        BZ2_bzBuffToBuffCompress((char *)out, &dl, (char *)(uintptr_t)in, (unsigned)n, 9, 0, 0);
        return dl;
    }
    memcpy(out, in, n);
    return n;
}

static buf zbuild(const zent *e, size_t ne, const zopt *o) {
    buf z = {0}, cd = {0};
    if (o && o->prefix) put(&z, o->prefix, strlen(o->prefix));
    for (size_t i = 0; i < ne; i++) {
        size_t ccap = e[i].n * 2 + 1024;
        uint8_t *comp = malloc(ccap);
        if (!comp) abort();
        size_t cn = compress_as(e[i].method, e[i].data, e[i].n, comp, ccap);
        uint32_t crc = (uint32_t)crc32(0, e[i].data, (uInt)e[i].n) ^ ((o && o->bad_crc) ? 0x5a5a5a5au : 0);
        const char *ln = e[i].local_name ? e[i].local_name : e[i].name;
        uint64_t off = z.n;
        p32(&z, 0x04034b50); p16(&z, 20); p16(&z, e[i].flags); p16(&z, e[i].method); p16(&z, 0); p16(&z, 0x21);
        p32(&z, e[i].zero_local_sizes ? 0 : crc);
        p32(&z, e[i].zero_local_sizes ? 0 : (uint32_t)cn);
        p32(&z, e[i].zero_local_sizes ? 0 : (uint32_t)e[i].n);
        p16(&z, (unsigned)strlen(ln)); p16(&z, 0);
        put(&z, ln, strlen(ln));
        put(&z, comp, cn);
        free(comp);
        bool z64 = o && o->zip64;
        p32(&cd, 0x02014b50); p16(&cd, 45); p16(&cd, 45); p16(&cd, e[i].flags); p16(&cd, e[i].method);
        p16(&cd, 0); p16(&cd, 0x21); p32(&cd, crc);
        p32(&cd, z64 ? 0xffffffffu : (uint32_t)cn);
        p32(&cd, z64 ? 0xffffffffu : (uint32_t)e[i].n);
        p16(&cd, (unsigned)strlen(e[i].name)); p16(&cd, z64 ? 28 : 0); p16(&cd, 0); p16(&cd, 0); p16(&cd, 0);
        p32(&cd, 0);
        p32(&cd, z64 ? 0xffffffffu : (uint32_t)off);
        put(&cd, e[i].name, strlen(e[i].name));
        if (z64) { p16(&cd, 1); p16(&cd, 24); p64(&cd, e[i].n); p64(&cd, cn); p64(&cd, off); }
    }
    uint64_t cdoff = z.n;
    put(&z, cd.b, cd.n);
    if (o && o->mid) put(&z, o->mid, strlen(o->mid));
    if (o && o->zip64) {
        uint64_t e64 = z.n;
        p32(&z, 0x06064b50); p64(&z, 44); p16(&z, 45); p16(&z, 45); p32(&z, 0); p32(&z, 0);
        p64(&z, ne); p64(&z, ne); p64(&z, cd.n); p64(&z, cdoff);
        p32(&z, 0x07064b50); p32(&z, 0); p64(&z, e64); p32(&z, 1);
        p32(&z, 0x06054b50); p16(&z, 0); p16(&z, 0); p16(&z, 0xffff); p16(&z, 0xffff);
        p32(&z, 0xffffffffu); p32(&z, 0xffffffffu); p16(&z, 0);
    } else {
        p32(&z, 0x06054b50); p16(&z, 0); p16(&z, 0); p16(&z, (unsigned)ne); p16(&z, (unsigned)ne);
        p32(&z, (uint32_t)cd.n); p32(&z, (uint32_t)cdoff); p16(&z, 0);
    }
    free(cd.b);
    return z;
}

/* ------------------------------------------------------------------ helpers */
static spa_result *scan_buf(const uint8_t *p, size_t n, const spa_limits *lim) {
    spa_scan_opts o;
    spa_scan_opts_default(&o);
    if (lim) o.limits = *lim;
    o.name = "m.pt";
    spa_result *r = NULL;
    spa_err e;
    if (spa_scan_mem(&o, p, n, &r, &e) != SPA_OK) return NULL;
    return r;
}

static bool has_import(const spa_result *r, const char *loc, const char *mod, const char *name) {
    for (size_t i = 0; i < r->n_streams; i++) {
        if (loc && strcmp(r->streams[i].loc, loc) != 0) continue;
        for (size_t k = 0; k < r->streams[i].n_ir; k++) {
            const spa_ir *e = &r->streams[i].ir[k];
            if (e->kind == SPA_IR_IMPORT && !strcmp(e->module, mod) && !strcmp(e->name, name)) return true;
        }
    }
    return false;
}

static size_t count_notes(const spa_result *r, spa_notekind k) {
    size_t c = 0;
    for (size_t i = 0; i < r->n_notes; i++) c += r->notes[i].kind == k;
    return c;
}

/* ------------------------------------------------------------------ tests */
static void check_payload_in(const zent *e, size_t ne, const zopt *o, const char *loc) {
    buf z = zbuild(e, ne, o);
    spa_result *r = scan_buf(z.b, z.n, NULL);
    T_CHECK(r != NULL);
    if (r) {
        T_EQ_INT(r->format, SPA_FMT_ZIP);
        T_CHECK_MSG(has_import(r, loc, "os", "system"), "payload not found at %s", loc);
        T_CHECK(r->pickle_bearing);
    }
    spa_result_free(r);
    free(z.b);
}

static void test_stored_deflated_bzip2_lzma(void) {
    static const char ver[] = "3\n";
    for (unsigned m = 0; m < 4; m++) {
        unsigned method = m == 0 ? 0 : m == 1 ? 8 : m == 2 ? 12 : 14;
        zent e[] = {
            {"arch/data.pkl", PAYLOAD, PAYLOAD_N, method, 0, NULL, false},
            {"arch/version", ver, 2, 0, 0, NULL, false},
        };
        check_payload_in(e, 2, NULL, "m.pt!arch/data.pkl");
    }
}

static void test_quirks(void) {
    zent e[] = {{"any_folder/data.pkl", PAYLOAD, PAYLOAD_N, 8, 0, "xx/zzzz.pkl", false}};
    zopt crc = {.bad_crc = true};
    check_payload_in(e, 1, &crc, "m.pt!any_folder/data.pkl");      /* bad CRC, other local name */
    zent dd[] = {{"a/data.pkl", PAYLOAD, PAYLOAD_N, 0, 0x08, NULL, true}};
    check_payload_in(dd, 1, NULL, "m.pt!a/data.pkl");               /* data descriptor, zero sizes */
    zopt z64 = {.zip64 = true};
    check_payload_in(dd, 1, &z64, "m.pt!a/data.pkl");               /* zip64 records */
    zopt pre = {.prefix = "#!/bin/sh\nexit 0\n"};
    check_payload_in(e, 1, &pre, "m.pt!any_folder/data.pkl");       /* prepended data */
    zopt mid = {.mid = "junk between the directory and its end record"};
    check_payload_in(e, 1, &mid, "m.pt!any_folder/data.pkl");       /* offsets as written (miniz) */
    zent named[] = {{"data/0", PAYLOAD, PAYLOAD_N, 0, 0, NULL, false}};
    check_payload_in(named, 1, NULL, "m.pt!data/0");                /* any name */
}

static void test_unscannable_members(void) {
    zent e[] = {
        {"a/data.pkl", PAYLOAD, PAYLOAD_N, 0, 0x01, NULL, false}, /* encrypted */
        {"a/other.pkl", PAYLOAD, PAYLOAD_N, 99, 0, NULL, false},  /* AES (method 99): not supported */
    };
    buf z = zbuild(e, 2, NULL);
    spa_result *r = scan_buf(z.b, z.n, NULL);
    T_CHECK(r != NULL);
    if (r) {
        T_EQ_INT(count_notes(r, SPA_NOTE_UNSCANNABLE), 2);
        T_CHECK(r->pickle_bearing);
        T_EQ_INT(r->n_streams, 0);
    }
    spa_result_free(r);
    free(z.b);
}

static void test_numeric_zip_is_not_pickle_and_reads_little(void) {
    static uint8_t big[1 << 20];
    memset(big, 0, sizeof big);
    zent e[] = {{"w.bin", big, sizeof big, 0, 0, NULL, false}};
    buf z = zbuild(e, 1, NULL);
    spa_result *r = scan_buf(z.b, z.n, NULL);
    T_CHECK(r && !r->pickle_bearing && r->n_streams == 0);
    T_CHECK_MSG(r && r->bytes_read < 2048, "read %llu bytes", r ? (unsigned long long)r->bytes_read : 0ull);
    spa_result_free(r);
    free(z.b);
}

static void test_member_limit(void) {
    zent e[40];
    char names[40][16];
    for (int i = 0; i < 40; i++) {
        snprintf(names[i], sizeof names[i], "f%d", i);
        e[i] = (zent){names[i], "x", 1, 0, 0, NULL, false};
    }
    buf z = zbuild(e, 40, NULL);
    spa_limits l;
    spa_limits_default(&l);
    l.v[SPA_LIM_MEMBERS] = 10;
    spa_result *r = scan_buf(z.b, z.n, &l);
    T_CHECK(r && count_notes(r, SPA_NOTE_LIMIT) == 1 && r->pickle_bearing);
    spa_result_free(r);
    free(z.b);
}

/* thousands of deflated members: reader windows and decompressor state are
 * released member by member, so the result's memory does not grow with them */
static void test_many_members_memory_bounded(void) {
    enum { N = 3000 };
    static zent e[N];
    static char names[N][16];
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "m%d", i);
        e[i] = (zent){names[i], "0123456789abcdef", 16, 8, 0, NULL, false};
    }
    buf z = zbuild(e, N, NULL);
    spa_result *r = scan_buf(z.b, z.n, NULL);
    T_CHECK(r && !r->pickle_bearing);
    size_t used = r ? spa_arena_used(r->arena) : 0;
    T_CHECK_MSG(used < (16u << 20), "arena holds %zu bytes after %d members", used, N);
    spa_result_free(r);
    free(z.b);
}

/* every truncation and every single-byte corruption of a small archive,
 * right before a guard page: results only, never a crash */
static void test_truncations_and_flips(void) {
    zent e[] = {
        {"a/data.pkl", PAYLOAD, PAYLOAD_N, 8, 0, NULL, false},
        {"a/x.npy", "\x93NUMPY\x01\x00\x10\x00{'descr': '|O'}", 26, 0, 0, NULL, false},
    };
    zopt z64 = {.zip64 = true};
    buf z = zbuild(e, 2, &z64);
    long pg = sysconf(_SC_PAGESIZE);
    size_t len = ((z.n + (size_t)pg - 1) / (size_t)pg + 1) * (size_t)pg;
    uint8_t *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    T_CHECK(m != MAP_FAILED);
    if (m == MAP_FAILED) return;
    mprotect(m + len - (size_t)pg, (size_t)pg, PROT_NONE);
    int ok = 0;
    for (size_t k = 0; k <= z.n; k++) {
        uint8_t *at = m + len - (size_t)pg - k;
        memcpy(at, z.b, k);
        spa_result *r = scan_buf(at, k, NULL);
        ok += r != NULL;
        spa_result_free(r);
    }
    T_EQ_INT(ok, (int)z.n + 1);
    uint8_t *at = m + len - (size_t)pg - z.n;
    for (size_t k = 0; k < z.n; k++) {
        memcpy(at, z.b, z.n);
        at[k] ^= 0xff;
        spa_result *r = scan_buf(at, z.n, NULL);
        T_CHECK(r != NULL);
        spa_result_free(r);
    }
    munmap(m, len);
    free(z.b);
}

T_MAIN("zip", T_CASE(test_stored_deflated_bzip2_lzma), T_CASE(test_quirks), T_CASE(test_unscannable_members),
       T_CASE(test_numeric_zip_is_not_pickle_and_reads_little), T_CASE(test_member_limit), T_CASE(test_many_members_memory_bounded),
       T_CASE(test_truncations_and_flips))
