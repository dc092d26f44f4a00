/* test_limits.c - every named limit is hit as a result (SPA_E_LIMIT with the
 * limit recorded), never a crash; hostile inputs: huge lengths, negative
 * counts, deep nesting, memo bombs, allocation failures. */
#include "t.h"
#include "vmt.h"

#define S0(r) (&(r)->streams[0])

static spa_limits lim_with(spa_limit_id id, uint64_t v) {
    spa_limits l;
    spa_limits_default(&l);
    l.v[id] = v;
    return l;
}

static void expect_limit(const uint8_t *p, size_t n, spa_limit_id id, uint64_t v) {
    spa_limits l = lim_with(id, v);
    spa_result *r = vmt_run_lim(p, n, &l);
    T_CHECK(r && r->n_streams >= 1);
    if (r && r->n_streams) {
        T_EQ_INT(S0(r)->err.code, SPA_E_LIMIT);
        T_EQ_INT(S0(r)->limit, id);
        T_CHECK(!S0(r)->complete);
    }
    spa_result_free(r);
}

static void test_names_and_defaults(void) {
    spa_limits l;
    spa_limits_default(&l);
    for (int i = 0; i < SPA_LIM_COUNT; i++) {
        T_CHECK(strncmp(spa_limit_name((spa_limit_id)i), "max_", 4) == 0);
        T_CHECK(l.v[i] > 0);
        for (int j = 0; j < i; j++) T_CHECK(strcmp(spa_limit_name((spa_limit_id)i), spa_limit_name((spa_limit_id)j)));
    }
    T_EQ_STR(spa_limit_name(SPA_LIM_OPS), "max_ops");
    T_EQ_STR(spa_code_name(SPA_E_LIMIT), "limit");
}

static void test_each_vm_limit(void) {
    expect_limit(B("NNNNNNNNNN."), SPA_LIM_OPS, 5);
    expect_limit(B("NNNNNNNNNN."), SPA_LIM_STACK, 4);
    expect_limit(B("(((((((((N."), SPA_LIM_MARKS, 3);
    expect_limit(B("Np0\np1\np2\np3\n."), SPA_LIM_MEMO, 2);
    expect_limit(B("Nr\x00\x00\x00\x01."), SPA_LIM_MEMO_KEY, 1000);
    expect_limit(B("NNNNNNNNNN."), SPA_LIM_BYTES, 4);
    expect_limit(B("cos\nsystem\ncos\nsystem\ncos\nsystem\n."), SPA_LIM_IR, 2);
    /* max_bytes counts every stream of the file */
    {
        spa_limits lb = lim_with(SPA_LIM_BYTES, 3);
        spa_result *rb = vmt_run_lim(B("N.N.N."), &lb);
        T_CHECK(rb->n_streams == 2 && rb->streams[0].complete);
        T_EQ_INT(rb->streams[1].err.code, SPA_E_LIMIT);
        T_EQ_INT(rb->streams[1].limit, SPA_LIM_BYTES);
        spa_result_free(rb);
    }
    /* max_str is a keep-limit: the constant is truncated, not an error */
    spa_limits l = lim_with(SPA_LIM_STR, 4);
    spa_result *r = vmt_run_lim(B("cbuiltins\nf\n(X\x0a\x00\x00\x00" "0123456789tR."), &l);
    const spa_stream *s = S0(r);
    T_CHECK(s->complete);
    const spa_val *a = s->ir[1].arg->u.seq.items[0];
    T_EQ_INT(a->u.s.len, 10);
    T_EQ_INT(a->u.s.kept, 4);
    T_CHECK(a->flags & SPA_VF_TRUNC);
    spa_result_free(r);
    /* a text line longer than max_str on a windowed reader is a limit; over
     * memory the line is read zero-copy and only its kept prefix stored */
    l = lim_with(SPA_LIM_STR, 4);
    r = vmt_run_lim(B("Vabcdefghij\n."), &l);
    T_CHECK(S0(r)->complete);
    spa_result_free(r);
}

static void test_streams_and_nest_limits(void) {
    spa_scan_opts o;
    memset(&o, 0, sizeof o);
    spa_limits_default(&o.limits);
    o.limits.v[SPA_LIM_STREAMS] = 2;
    o.limits.v[SPA_LIM_NEST] = 1;
    spa_scan_ctx *sc = spa_ctx_create(&o);
    spa_src src;
    static const uint8_t d[] = "N.N.N.N.";
    spa_src_mem(&src, d, 8);
    spa_in *in = spa_in_from_src(spa_ctx_arena(sc), &src, 0, 8);
    uint32_t idx;
    T_EQ_INT(spa_vm_run(sc, in, "a", 0, UINT32_MAX, &idx), SPA_OK);
    T_EQ_INT(spa_vm_run(sc, in, "b", 2, 0, &idx), SPA_OK);      /* too deep */
    T_EQ_INT(spa_ctx_stream(sc, idx)->err.code, SPA_E_LIMIT);
    T_EQ_INT(spa_ctx_stream(sc, idx)->limit, SPA_LIM_NEST);
    T_EQ_INT(spa_vm_run(sc, in, "c", 0, UINT32_MAX, &idx), SPA_OK);
    T_EQ_INT(idx, UINT32_MAX);
    spa_result *r = spa_ctx_finish(sc, SPA_FMT_PICKLE, 8);
    T_EQ_INT(r->n_streams, 2);
    T_CHECK(r->n_notes >= 1 && r->notes[0].kind == SPA_NOTE_LIMIT && r->notes[0].limit == SPA_LIM_STREAMS);
    spa_result_free(r);
}

static void test_hostile_lengths(void) {
    spa_result *r = vmt_run(B("\x8e\xff\xff\xff\xff\xff\xff\xff\x7f" "ab."));     /* BINBYTES8 2^63-1 */
    T_EQ_INT(S0(r)->err.code, SPA_E_TRUNCATED); spa_result_free(r);
    r = vmt_run(B("\x8e\xff\xff\xff\xff\xff\xff\xff\xff" "ab."));                   /* > SSIZE_MAX */
    T_EQ_INT(S0(r)->err.code, SPA_E_BAD_ARG); spa_result_free(r);
    r = vmt_run(B("X\xff\xff\xff\xff" "ab"));
    T_EQ_INT(S0(r)->err.code, SPA_E_TRUNCATED); spa_result_free(r);
    r = vmt_run(B("T\xff\xff\xff\xff" "ab"));                                       /* negative BINSTRING */
    T_EQ_INT(S0(r)->err.code, SPA_E_BAD_ARG); spa_result_free(r);
    r = vmt_run(B("\x8a\xff"));
    T_EQ_INT(S0(r)->err.code, SPA_E_TRUNCATED); spa_result_free(r);
    r = vmt_run(B("\x95\xff\xff\xff\xff\xff\xff\xff\xffN."));                   /* FRAME of 2^64-1 */
    T_CHECK(S0(r)->complete); spa_result_free(r);
    /* every truncation of a real stream ends cleanly (guard page catches overreads) */
    static const uint8_t full[] = "\x80\x04\x95\x30\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system\x94\x93"
                                  "\x94\x8c\x02id\x94\x85\x94R\x94J\x01\x02\x03\x04G\x00\x00\x00\x00\x00\x00\x00\x00"
                                  "\x8a\x02\x01\x02\x88\x89q\x01r\x02\x00\x00\x00h\x01j\x02\x00\x00\x00.";
    for (size_t n = 0; n < sizeof full - 1; n++) {
        r = vmt_run(full, n);
        if (n > 0) T_CHECK(r->n_streams >= 1 && !r->streams[0].complete);
        spa_result_free(r);
    }
}

static void test_deep_nesting(void) {
    /* 200k nested lists, appended into each other, then popped */
    size_t n = 200000;
    uint8_t *b = malloc(2 * n + 4);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) b[k++] = ']';
    for (size_t i = 0; i + 1 < n; i++) b[k++] = 'a';
    b[k++] = '0';
    b[k++] = 'N';
    b[k++] = '.';
    spa_result *r = vmt_run(b, k);
    T_CHECK(S0(r)->complete);
    spa_result_free(r);
    /* 100k open marks */
    for (size_t i = 0; i < n / 2; i++) b[i] = '(';
    b[n / 2] = 'N';
    b[n / 2 + 1] = '.';
    r = vmt_run(b, n / 2 + 2);
    T_CHECK(S0(r)->complete);
    spa_result_free(r);
    free(b);
}

static void test_memo_bomb(void) {
    /* 50k sparse huge LONG_BINPUT keys: a hash map, never an array of 2^32 */
    size_t n = 50000;
    uint8_t *b = malloc(5 * n + 8);
    size_t k = 0;
    b[k++] = 'N';
    for (size_t i = 0; i < n; i++) {
        uint32_t key = 0xffffffffu - (uint32_t)i * 7919u;
        b[k++] = 'r';
        memcpy(b + k, &key, 4);
        k += 4;
    }
    b[k++] = '.';
    spa_result *r = vmt_run(b, k);
    T_CHECK(S0(r)->complete);
    T_CHECK(spa_arena_used(r->arena) < (64u << 20));
    spa_result_free(r);
    free(b);
}

/* allocation failure injection through the pluggable allocator */
typedef struct { int left; } failer;
static void *fail_alloc(void *ctx, size_t n) {
    failer *f = ctx;
    if (f->left-- <= 0) return NULL;
    return malloc(n);
}
static void fail_free(void *ctx, void *p) { (void)ctx; free(p); }

static void test_alloc_failures(void) {
    static const uint8_t d[] = "cos\nsystem\n(S'id'\ntR(K\x01K\x02lb.";
    for (int budget = 0; budget < 12; budget++) {
        failer f = { budget };
        spa_alloc a = { fail_alloc, fail_free, &f };
        spa_scan_opts o;
        memset(&o, 0, sizeof o);
        spa_limits_default(&o.limits);
        o.alloc = &a;
        spa_scan_ctx *sc = spa_ctx_create(&o);
        if (!sc) continue;   /* failed cleanly */
        spa_src src;
        spa_src_mem(&src, d, sizeof d - 1);
        spa_in *in = spa_in_from_src(spa_ctx_arena(sc), &src, 0, sizeof d - 1);
        if (in) {
            uint32_t idx;
            spa_code c = spa_vm_run(sc, in, "t", 0, UINT32_MAX, &idx);
            T_CHECK(c == SPA_OK || c == SPA_E_NOMEM || c == SPA_E_LIMIT);
        }
        spa_result *r = spa_ctx_finish(sc, SPA_FMT_PICKLE, 0);
        spa_result_free(r);
    }
}

T_MAIN("limits", T_CASE(test_names_and_defaults), T_CASE(test_each_vm_limit),
       T_CASE(test_streams_and_nest_limits), T_CASE(test_hostile_lengths), T_CASE(test_deep_nesting),
       T_CASE(test_memo_bomb), T_CASE(test_alloc_failures))
