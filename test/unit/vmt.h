/* vmt.h - helpers for the VM unit tests: run the VM directly over bytes
 * (stacked streams until EOF, as the container layer does) and query the IR. */
#ifndef SP_VMT_H
#define SP_VMT_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"
#include "vm.h"

#define B(s) (const uint8_t *)(s), (sizeof(s) - 1)

/* Run every stream in p[0..n) with limits lim (NULL = defaults). The input is
 * copied right in front of a PROT_NONE guard page, so any overread faults. */
static inline spa_result *vmt_run_lim(const uint8_t *p, size_t n, const spa_limits *lim) {
    long pg = sysconf(_SC_PAGESIZE);
    size_t span = ((n + (size_t)pg - 1) / (size_t)pg + 1) * (size_t)pg;
    uint8_t *map = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED) return NULL;
    uint8_t *guard = map + span - (size_t)pg;
    mprotect(guard, (size_t)pg, PROT_NONE);
    uint8_t *buf = guard - n;
    if (n) memcpy(buf, p, n);
    spa_scan_opts o;
    memset(&o, 0, sizeof o);
    if (lim) o.limits = *lim; else spa_limits_default(&o.limits);
    o.name = "t";
    spa_scan_ctx *sc = spa_ctx_create(&o);
    spa_src src;
    spa_src_mem(&src, buf, n);
    spa_in *in = spa_in_from_src(spa_ctx_arena(sc), &src, 0, n);
    while (!spa_in_eof(in)) {
        uint32_t idx;
        uint64_t before = spa_in_pos(in);
        if (spa_vm_run(sc, in, "t", 0, UINT32_MAX, &idx) != SPA_OK) break;
        spa_stream *s = spa_ctx_stream(sc, idx);
        if (!s || !s->complete || spa_in_pos(in) == before) break;
    }
    spa_result *r = spa_ctx_finish(sc, SPA_FMT_PICKLE, n);
    /* values may point into buf (zero-copy): keep the mapping for the test's life */
    return r;
}
static inline spa_result *vmt_run(const uint8_t *p, size_t n) { return vmt_run_lim(p, n, NULL); }

/* Index of the k-th IR entry of `kind` in stream s, or -1. */
static inline int vmt_find(const spa_stream *s, spa_irkind kind, int k) {
    for (size_t i = 0; i < s->n_ir; i++)
        if (s->ir[i].kind == kind && k-- == 0) return (int)i;
    return -1;
}
static inline int vmt_count(const spa_stream *s, spa_irkind kind) {
    int c = 0;
    for (size_t i = 0; i < s->n_ir; i++) c += s->ir[i].kind == kind;
    return c;
}
/* Is module.name imported anywhere in the result? */
static inline bool vmt_has_import(const spa_result *r, const char *mod, const char *name) {
    for (size_t j = 0; j < r->n_streams; j++)
        for (size_t i = 0; i < r->streams[j].n_ir; i++) {
            const spa_ir *e = &r->streams[j].ir[i];
            if (e->kind == SPA_IR_IMPORT && !strcmp(e->module, mod) && !strcmp(e->name, name)) return true;
        }
    return false;
}
static inline const char *vmt_repr(const spa_val *v) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    spa_val_repr(v, buf[k], sizeof buf[k]);
    return buf[k];
}
#endif
