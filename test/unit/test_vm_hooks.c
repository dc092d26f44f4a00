/* test_vm_hooks.c - the VM's callbacks to the container layer: after_build
 * (SKIP raw bytes, NESTED inline stream, RESYNC) and on_const (a nested
 * pickle recorded as an SPA_IR_NESTED entry), plus the memory bound of a
 * long stream of memoised plain objects. */
#include "t.h"
#include "vmt.h"

typedef struct { spa_build_act act; uint64_t skip; int builds, consts; uint32_t nested_ret; } hk;

static spa_build_act hk_build(void *ud, spa_scan_ctx *sc, const spa_val *t, const spa_val *st, uint64_t *skip) {
    hk *h = ud;
    (void)sc; (void)t; (void)st;
    h->builds++;
    *skip = h->skip;
    return h->act;
}

static uint32_t hk_const(void *ud, spa_scan_ctx *sc, const spa_val *v, uint32_t depth, uint32_t parent) {
    hk *h = ud;
    (void)sc; (void)depth; (void)parent;
    if (v->kind == SPA_V_BYTES && v->u.s.kept >= 4 && !memcmp(v->u.s.p, "NEST", 4)) { h->consts++; return h->nested_ret; }
    return UINT32_MAX;
}

static spa_result *run_hooked(const uint8_t *p, size_t n, hk *h) {
    spa_scan_opts o;
    memset(&o, 0, sizeof o);
    spa_limits_default(&o.limits);
    spa_scan_ctx *sc = spa_ctx_create(&o);
    spa_vm_hooks hooks = { hk_build, hk_const, NULL, h, 0, NULL, NULL };
    spa_ctx_set_hooks(sc, &hooks);
    spa_src src;
    spa_src_mem(&src, p, n);
    spa_in *in = spa_in_from_src(spa_ctx_arena(sc), &src, 0, n);
    uint32_t idx;
    spa_vm_run(sc, in, "t", 0, UINT32_MAX, &idx);
    return spa_ctx_finish(sc, SPA_FMT_PICKLE, n);
}

static void test_skip_raw_bytes(void) {
    /* BUILD, then 5 raw bytes the hook says to skip, then the rest of the stream */
    hk h = { SPA_BUILD_SKIP, 5, 0, 0, UINT32_MAX };
    spa_result *r = run_hooked(B("cnumpy\nW\n)R}b" "\xff\xfe\xfd\xfc\xfb" "0cos\nsystem\n."), &h);
    T_EQ_INT(h.builds, 1);
    T_CHECK(r->streams[0].complete);
    T_CHECK(vmt_has_import(r, "os", "system"));
    spa_result_free(r);
    /* skipping past the end is an error, not an overread */
    hk h2 = { SPA_BUILD_SKIP, 1000, 0, 0, UINT32_MAX };
    r = run_hooked(B("cnumpy\nW\n)R}b" "\xff"), &h2);
    T_EQ_INT(r->streams[0].err.code, SPA_E_TRUNCATED);
    spa_result_free(r);
}

static void test_nested_inline_stream(void) {
    hk h = { SPA_BUILD_NESTED, 0, 0, 0, UINT32_MAX };
    spa_result *r = run_hooked(B("cnumpy\nW\n)R}b" "cos\nsystem\n." "0N."), &h);
    T_EQ_INT(r->n_streams, 2);
    T_CHECK(r->streams[0].complete);
    T_EQ_INT(r->streams[1].parent, 0);
    T_EQ_INT(r->streams[1].depth, 1);
    T_CHECK(r->streams[1].complete);
    T_CHECK(vmt_has_import(r, "os", "system"));
    int i = vmt_find(&r->streams[0], SPA_IR_NESTED, 0);
    T_CHECK(i >= 0 && r->streams[0].ir[i].nested_stream == 1);
    spa_result_free(r);
}

static void test_resync(void) {
    hk h = { SPA_BUILD_RESYNC, 0, 0, 0, UINT32_MAX };
    /* raw bytes that are not opcodes, then a run of valid opcodes */
    spa_result *r = run_hooked(B("cnumpy\nW\n)R}b" "\xff\xfe\xfd\xfc\xfb\xfa" "0cos\nsystem\nN0N0."), &h);
    T_CHECK(vmt_has_import(r, "os", "system"));
    T_CHECK(r->n_notes >= 1 && r->notes[0].kind == SPA_NOTE_RESYNC);
    spa_result_free(r);
}

static void test_on_const_nested(void) {
    hk h = { SPA_BUILD_NONE, 0, 0, 0, 7 };
    spa_result *r = run_hooked(B("\x80\x03" "C\x06NEST.." "0N."), &h);
    T_EQ_INT(h.consts, 1);
    int i = vmt_find(&r->streams[0], SPA_IR_NESTED, 0);
    T_CHECK(i >= 0 && r->streams[0].ir[i].nested_stream == 7 && r->streams[0].ir[i].target->kind == SPA_V_BYTES);
    spa_result_free(r);
}

static void test_memoised_objects_stay_small(void) {
    /* 300,000 memoised (int, str) tuples appended to one list */
    size_t n = 300000;
    uint8_t *b = malloc(n * 16 + 1024);
    size_t k = 0;
    b[k++] = 0x80; b[k++] = 4; b[k++] = ']'; b[k++] = 0x94; b[k++] = '(';
    for (size_t i = 0; i < n; i++) {
        if (i && i % 1000 == 0) { b[k++] = 'e'; b[k++] = '('; }  /* batches, as the pickler writes them */
        b[k++] = 'K'; b[k++] = (uint8_t)i;
        b[k++] = 0x8c; b[k++] = 3; b[k++] = 'a'; b[k++] = 'b'; b[k++] = (uint8_t)('0' + i % 10);
        b[k++] = 0x94; b[k++] = 0x86; b[k++] = 0x94;
    }
    b[k++] = 'e'; b[k++] = '.';
    spa_result *r = vmt_run(b, k);
    T_CHECK(r->streams[0].complete);
    /* well under one 48-byte node per object */
    T_CHECK_MSG(spa_arena_used(r->arena) < n * 16, "arena %zu bytes for %zu objects", spa_arena_used(r->arena), n);
    spa_result_free(r);
    free(b);
}

T_MAIN("vm_hooks", T_CASE(test_skip_raw_bytes), T_CASE(test_nested_inline_stream), T_CASE(test_resync),
       T_CASE(test_on_const_nested), T_CASE(test_memoised_objects_stay_small))
