/* test_tar.c - the tar reader: ustar members by content, pax path and GNU
 * long names, the legacy torch `storages` member (pickles between raw storage
 * records skipped by their own length), tar inside gzip (sequential), a bad
 * checksum, truncations. */
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "containers.h"
#include "t.h"

static const char PAYLOAD[] = "cos\nsystem\n(S'echo x'\ntR.";
#define PAYLOAD_N (sizeof PAYLOAD - 1)

typedef struct { uint8_t *b; size_t n; } buf;

static void tput(buf *o, const void *p, size_t n) {
    o->b = realloc(o->b, o->n + n);
    if (!o->b) abort();
    memcpy(o->b + o->n, p, n);
    o->n += n;
}

static void member(buf *o, const char *name, char type, const void *data, size_t n) {
    uint8_t h[512];
    memset(h, 0, sizeof h);
    strncpy((char *)h, name, 100);
    memcpy(h + 100, "0000644", 7);
    snprintf((char *)h + 124, 12, "%011o", (unsigned)n);
    h[156] = (uint8_t)type;
    memcpy(h + 257, "ustar\x00" "00", 8);
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (size_t i = 0; i < 512; i++) sum += h[i];
    snprintf((char *)h + 148, 8, "%06o", sum);
    tput(o, h, 512);
    tput(o, data, n);
    static const uint8_t zero[512];
    if (n % 512) tput(o, zero, 512 - n % 512);
}

static void finish(buf *o) {
    static const uint8_t zero[1024];
    tput(o, zero, sizeof zero);
}

static spa_result *scan_buf(const uint8_t *p, size_t n) {
    spa_scan_opts o;
    spa_scan_opts_default(&o);
    o.name = "t.tar";
    spa_result *r = NULL;
    spa_err e;
    if (spa_scan_mem(&o, p, n, &r, &e) != SPA_OK) return NULL;
    return r;
}

static int payloads_at(const spa_result *r, const char *loc_prefix) {
    int c = 0;
    for (size_t i = 0; r && i < r->n_streams; i++) {
        if (strncmp(r->streams[i].loc, loc_prefix, strlen(loc_prefix))) continue;
        for (size_t k = 0; k < r->streams[i].n_ir; k++)
            if (r->streams[i].ir[k].kind == SPA_IR_IMPORT && !strcmp(r->streams[i].ir[k].name, "system")) c++;
    }
    return c;
}

static void test_members_by_content(void) {
    buf t = {0};
    member(&t, "dir/", '5', "", 0);
    member(&t, "readme.txt", '0', "hello\n", 6);
    member(&t, "pickle", '0', PAYLOAD, PAYLOAD_N);
    static const char pax[] = "29 path=a/very/long/name.bin\n";
    member(&t, "PaxHeader", 'x', pax, sizeof pax - 1);
    member(&t, "short", '0', PAYLOAD, PAYLOAD_N);
    member(&t, "././@LongLink", 'L', "gnu/long/name.pkl", 18);
    member(&t, "trunc", '0', PAYLOAD, PAYLOAD_N);
    finish(&t);
    spa_result *r = scan_buf(t.b, t.n);
    T_CHECK(r && r->format == SPA_FMT_TAR);
    T_EQ_INT(payloads_at(r, "t.tar!pickle"), 1);
    T_EQ_INT(payloads_at(r, "t.tar!a/very/long/name.bin"), 1);
    T_EQ_INT(payloads_at(r, "t.tar!gnu/long/name.pkl"), 1);
    T_CHECK(r && r->n_notes == 0);
    spa_result_free(r);
    /* the same tar gzip-compressed: read sequentially */
    uLongf cn = compressBound((uLong)t.n) + 32;
    uint8_t *c = malloc(cn);
    z_stream z;
    memset(&z, 0, sizeof z);
    deflateInit2(&z, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY);
    z.next_in = t.b; z.avail_in = (uInt)t.n; z.next_out = c; z.avail_out = (uInt)cn;
    deflate(&z, Z_FINISH);
    size_t gn = cn - z.avail_out;
    deflateEnd(&z);
    r = scan_buf(c, gn);
    T_EQ_INT(payloads_at(r, "t.tar!gzip@0!pickle"), 1);
    T_EQ_INT(payloads_at(r, "t.tar!gzip@0!gnu/long/name.pkl"), 1);
    spa_result_free(r);
    free(c);
    /* truncations: never a crash */
    for (size_t k = 0; k < t.n; k += 7) {
        r = scan_buf(t.b, k);
        T_CHECK(r != NULL);
        spa_result_free(r);
    }
    free(t.b);
}

static void test_legacy_storages_records(void) {
    /* count=1; (key, location, torch.FloatStorage); int64 numel=3 + 12 bytes; views = payload */
    buf s = {0};
    tput(&s, "K\x01.", 3);
    /* args as a tuple of (str, str, global): MARK str str GLOBAL TUPLE STOP */
    static const char args2[] = "(X\x01\x00\x00\x00" "0X\x03\x00\x00\x00" "cpuctorch\nFloatStorage\nt.";
    tput(&s, args2, sizeof args2 - 1);
    static const uint8_t raw[20] = {3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0x3f, 0, 0, 0, 0x40, 0, 0, 0x40, 0x40};
    tput(&s, raw, sizeof raw);
    tput(&s, PAYLOAD, PAYLOAD_N);
    buf t = {0};
    member(&t, "storages", '0', s.b, s.n);
    member(&t, "tensors", '0', "K\x00.", 3);
    member(&t, "pickle", '0', "}.", 2);
    finish(&t);
    spa_result *r = scan_buf(t.b, t.n);
    T_EQ_INT(payloads_at(r, "t.tar!storages!stream@"), 1);
    T_CHECK(r && r->n_notes == 0);
    spa_result_free(r);
    free(s.b);
    free(t.b);
}

static void test_bad_checksum_stops(void) {
    buf t = {0};
    member(&t, "a", '0', "}.", 2);
    member(&t, "pickle", '0', PAYLOAD, PAYLOAD_N);
    t.b[512 + 512 + 148] ^= 1; /* second header's checksum */
    finish(&t);
    spa_result *r = scan_buf(t.b, t.n);
    T_CHECK(r && r->n_notes == 1 && r->notes[0].kind == SPA_NOTE_ERROR);
    T_EQ_INT(payloads_at(r, "t.tar!pickle"), 0); /* tarfile raises there too */
    spa_result_free(r);
    free(t.b);
}

T_MAIN("tar", T_CASE(test_members_by_content), T_CASE(test_legacy_storages_records), T_CASE(test_bad_checksum_stops))
