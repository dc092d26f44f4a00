/* test_reader.c - the bounded reader: zero-copy over memory, a bounded
 * window over pread and sequential sources, skips, EOF and I/O errors, and
 * the VM over each source kind giving the same IR. */
#include "t.h"
#include "vmt.h"
#include "reader.h"

typedef struct { const uint8_t *p; size_t n, pos; size_t chunk; int fail_at; int calls; } seqsrc;

static ssize_t seq_read(void *ctx, void *buf, size_t len) {
    seqsrc *s = ctx;
    if (s->fail_at && ++s->calls >= s->fail_at) return -1;
    size_t k = s->n - s->pos;
    if (k > len) k = len;
    if (k > s->chunk) k = s->chunk;
    memcpy(buf, s->p + s->pos, k);
    s->pos += k;
    return (ssize_t)k;
}

typedef struct { const uint8_t *p; size_t n; int fail; } prsrc;
static ssize_t pr_read(void *ctx, void *buf, size_t len, uint64_t off) {
    prsrc *s = ctx;
    if (s->fail) return -1;
    if (off >= s->n) return 0;
    size_t k = s->n - (size_t)off;
    if (k > len) k = len;
    if (k > 7) k = 7;   /* short reads */
    memcpy(buf, s->p + off, k);
    return (ssize_t)k;
}

static void test_memory_zero_copy(void) {
    spa_arena *ar = spa_arena_create(NULL);
    static const uint8_t d[] = "hello world";
    spa_src s;
    spa_src_mem(&s, d, 11);
    spa_in *in = spa_in_from_src(ar, &s, 2, 9);
    const uint8_t *p;
    size_t got;
    T_EQ_INT(spa_in_peek(in, 3, &p, &got), SPA_OK);
    T_CHECK(p == d + 2 && got == 7);
    T_CHECK(spa_in_stable(in));
    T_EQ_INT(spa_in_skip(in, 5), SPA_OK);
    T_EQ_INT(spa_in_pos(in), 7);
    T_CHECK(!spa_in_eof(in));
    T_EQ_INT(spa_in_skip(in, 5), SPA_E_TRUNCATED);
    T_CHECK(spa_in_eof(in));
    T_EQ_INT(spa_in_pos(in), 9);
    spa_arena_destroy(ar);
}

static void test_pread_window(void) {
    spa_arena *ar = spa_arena_create(NULL);
    uint8_t d[1000];
    for (int i = 0; i < 1000; i++) d[i] = (uint8_t)i;
    prsrc ps = { d, 1000, 0 };
    spa_src s = { pr_read, &ps, 1000, NULL };
    spa_in *in = spa_in_from_src(ar, &s, 10, 1000);
    const uint8_t *p;
    size_t got;
    T_CHECK(!spa_in_stable(in));
    T_EQ_INT(spa_in_peek(in, 100, &p, &got), SPA_OK);
    T_CHECK(got >= 100 && p[0] == 10 && p[99] == 109);
    T_EQ_INT(spa_in_skip(in, 500), SPA_OK);
    T_EQ_INT(spa_in_peek(in, 10, &p, &got), SPA_OK);
    T_CHECK(p[0] == (uint8_t)510);
    T_EQ_INT(spa_in_skip(in, 490), SPA_OK);
    T_CHECK(spa_in_eof(in));
    T_EQ_INT(spa_in_skip(in, 1), SPA_E_TRUNCATED);
    T_CHECK(spa_in_bytes_read(in) <= 1000);
    spa_in *again = spa_in_reopen(ar, in, 10);
    T_EQ_INT(spa_in_peek(again, 1, &p, &got), SPA_OK);
    T_CHECK(p[0] == 10);
    ps.fail = 1;
    spa_in *bad = spa_in_from_src(ar, &s, 0, 1000);
    T_EQ_INT(spa_in_peek(bad, 1, &p, &got), SPA_E_IO);
    spa_arena_destroy(ar);
}

static void test_seq(void) {
    spa_arena *ar = spa_arena_create(NULL);
    uint8_t d[5000];
    for (int i = 0; i < 5000; i++) d[i] = (uint8_t)(i * 7);
    seqsrc ss = { d, 5000, 0, 333, 0, 0 };
    spa_in *in = spa_in_from_seq(ar, seq_read, &ss);
    const uint8_t *p;
    size_t got;
    T_EQ_INT(spa_in_peek(in, 1000, &p, &got), SPA_OK);
    T_CHECK(got >= 1000 && p[999] == (uint8_t)(999 * 7));
    T_EQ_INT(spa_in_skip(in, 4000), SPA_OK);
    T_EQ_INT(spa_in_peek(in, 2000, &p, &got), SPA_OK);
    T_EQ_INT(got, 1000);
    T_CHECK(p[0] == (uint8_t)(4000 * 7));
    T_EQ_INT(spa_in_skip(in, 1001), SPA_E_TRUNCATED);
    T_CHECK(spa_in_reopen(ar, in, 0) == NULL);
    ss = (seqsrc){ d, 5000, 0, 100, 3, 0 };
    in = spa_in_from_seq(ar, seq_read, &ss);
    T_EQ_INT(spa_in_peek(in, 1000, &p, &got), SPA_E_IO);
    spa_arena_destroy(ar);
}

/* The same pickle through memory, a pread window and a sequential source
 * gives the same IR (the windowed VM copies what the zero-copy one points at). */
static size_t ir_sig(spa_result *r, char *out, size_t cap) {
    size_t n = 0;
    out[0] = '\0';
    for (size_t j = 0; j < r->n_streams; j++)
        for (size_t i = 0; i < r->streams[j].n_ir; i++) {
            const spa_ir *e = &r->streams[j].ir[i];
            char v[256];
            spa_val_repr(e->result ? e->result : e->target, v, sizeof v);
            n += (size_t)snprintf(out + n, cap - n, "%s@%llu:%s;", spa_irkind_name((spa_irkind)e->kind),
                                  (unsigned long long)e->off, v);
            if (n >= cap) return cap;
        }
    return n;
}

static spa_result *run_in(const uint8_t *d, size_t n, int mode) {
    spa_scan_opts o;
    memset(&o, 0, sizeof o);
    spa_limits_default(&o.limits);
    spa_scan_ctx *sc = spa_ctx_create(&o);
    static prsrc ps;
    static seqsrc ss;
    spa_src s;
    spa_in *in;
    if (mode == 0) { spa_src_mem(&s, d, n); in = spa_in_from_src(spa_ctx_arena(sc), &s, 0, n); }
    else if (mode == 1) { ps = (prsrc){ d, n, 0 }; s = (spa_src){ pr_read, &ps, n, NULL }; in = spa_in_from_src(spa_ctx_arena(sc), &s, 0, n); }
    else { ss = (seqsrc){ d, n, 0, 5, 0, 0 }; in = spa_in_from_seq(spa_ctx_arena(sc), seq_read, &ss); }
    while (!spa_in_eof(in)) {
        uint32_t idx;
        if (spa_vm_run(sc, in, "t", 0, UINT32_MAX, &idx) != SPA_OK) break;
        spa_stream *st = spa_ctx_stream(sc, idx);
        if (!st || !st->complete) break;
    }
    return spa_ctx_finish(sc, SPA_FMT_PICKLE, n);
}

static void test_same_ir_every_source(void) {
    static const uint8_t d[] = "\x80\x04\x8c\x02os\x94\x8c\x06system\x94\x93\x94X\x05\x00\x00\x00hello\x85R."
                               "cbuiltins\ngetattr\n(Vabc\nS'x\\n'\ntR0N.";
    char a[4096], b[4096], c[4096];
    spa_result *r0 = run_in(d, sizeof d - 1, 0), *r1 = run_in(d, sizeof d - 1, 1), *r2 = run_in(d, sizeof d - 1, 2);
    ir_sig(r0, a, sizeof a);
    ir_sig(r1, b, sizeof b);
    ir_sig(r2, c, sizeof c);
    T_EQ_INT(r0->n_streams, 2);
    const char *pa = a, *pb = b, *pc = c;
    T_EQ_STR(pa, pb);
    T_EQ_STR(pa, pc);
    T_CHECK(strstr(a, "os.system('hello')") != NULL);
    spa_result_free(r0);
    spa_result_free(r1);
    spa_result_free(r2);
}

/* Skipped data is not read: after a skip jumps over unread bytes, a pread
 * window reads ahead 16 KiB, not a whole window; read straight through, it
 * grows back to whole windows. */
static ssize_t whole_read(void *ctx, void *buf, size_t len, uint64_t off) {
    const prsrc *s = ctx;
    if (off >= s->n) return 0;
    size_t k = s->n - (size_t)off < len ? s->n - (size_t)off : len;
    memcpy(buf, s->p + off, k);
    return (ssize_t)k;
}

static void test_pread_skips_are_not_read(void) {
    enum { K = 64, GAP = 260 * 1024 };   /* each skip runs past the 128 KiB window */
    size_t n = (size_t)K * GAP;
    uint8_t *d = calloc(n, 1);
    prsrc ps = { d, n, 0 };
    spa_src s = { whole_read, &ps, n, NULL };
    spa_arena *ar = spa_arena_create(NULL);
    spa_in *in = spa_in_from_src(ar, &s, 0, n);
    const uint8_t *p;
    size_t got;
    for (int i = 0; i < K; i++) {
        T_EQ_INT(spa_in_peek(in, 100, &p, &got), SPA_OK);
        T_CHECK(got >= 100);
        T_EQ_INT(spa_in_skip(in, GAP), SPA_OK);
    }
    T_CHECK_MSG(spa_in_bytes_read(in) < (uint64_t)K * 32 * 1024, "%llu bytes read to skip %zu",
                (unsigned long long)spa_in_bytes_read(in), n);
    /* read through: the read-ahead grows back (few, large reads) */
    in = spa_in_from_src(ar, &s, 0, n);
    T_EQ_INT(spa_in_peek(in, 1, &p, &got), SPA_OK);
    T_EQ_INT(spa_in_skip(in, GAP + 5), SPA_OK);   /* a jump: read-ahead drops */
    uint64_t before = spa_in_bytes_read(in);
    for (int i = 0; i < 64; i++) {
        T_EQ_INT(spa_in_peek(in, 1, &p, &got), SPA_OK);
        T_EQ_INT(spa_in_skip(in, got), SPA_OK);    /* consume what is buffered */
    }
    uint64_t grown = spa_in_bytes_read(in) - before;
    /* 16, 32, 64 KiB, then whole 128 KiB windows */
    T_CHECK_MSG(grown >= 60ull * 128 * 1024, "64 read-through fills pulled only %llu bytes", (unsigned long long)grown);
    spa_arena_destroy(ar);
    free(d);
}

T_MAIN("reader", T_CASE(test_memory_zero_copy), T_CASE(test_pread_window), T_CASE(test_seq),
       T_CASE(test_same_ir_every_source), T_CASE(test_pread_skips_are_not_read))
