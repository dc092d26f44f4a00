/* ctx.c - the scan context (spa_ctx_*): one per scan, owns the arena and
 * accumulates the streams and notes that the VM and the container readers
 * append; spa_ctx_finish turns it into a spa_result. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "vm.h"

struct spa_scan_ctx {
    spa_arena *ar;
    spa_limits lim;
    const char *name;
    spa_stream *streams;
    size_t n_streams, cap_streams;
    spa_note *notes;
    size_t n_notes, cap_notes;
    const spa_vm_hooks *hooks;
    bool streams_limited;
    bool vm_general;            /* tests: no VM fast loop (spa_ctx_set_vm_general) */
    bool vm_nokinds;            /* tests: no kinds-only VM path (spa_ctx_set_vm_nokinds) */
    uint64_t vm_bytes;          /* stream bytes examined so far (max_bytes) */
};

uint64_t *spa_ctx_vm_bytes(spa_scan_ctx *sc) { return &sc->vm_bytes; }
void spa_ctx_set_vm_general(spa_scan_ctx *sc, bool general) { sc->vm_general = general; }
bool spa_ctx_vm_general(const spa_scan_ctx *sc) { return sc->vm_general; }
void spa_ctx_set_vm_nokinds(spa_scan_ctx *sc, bool nokinds) { sc->vm_nokinds = nokinds; }
bool spa_ctx_vm_nokinds(const spa_scan_ctx *sc) { return sc->vm_nokinds; }


spa_scan_ctx *spa_ctx_create(const spa_scan_opts *o) {
    spa_arena *ar = spa_arena_create(o ? o->alloc : NULL);
    if (!ar) return NULL;
    spa_scan_ctx *sc = spa_arena_calloc(ar, sizeof *sc);
    if (!sc) { spa_arena_destroy(ar); return NULL; }
    sc->ar = ar;
    if (o) {
        sc->lim = o->limits;
        sc->name = o->name ? spa_arena_strndup(ar, o->name, strlen(o->name)) : NULL;
        sc->vm_general = o->vm_path == SPA_VM_PATH_GENERAL;
        sc->vm_nokinds = o->vm_path != 0;
    } else {
        spa_limits_default(&sc->lim);
    }
    return sc;
}

spa_arena *spa_ctx_arena(spa_scan_ctx *sc) { return sc->ar; }
const spa_limits *spa_ctx_limits(const spa_scan_ctx *sc) { return &sc->lim; }

/* Grow an arena array to hold one more element (doubling; old copy stays in
 * the arena, bounded by 2x the final size). */
static void *spa_ctx_grow(spa_arena *ar, void *old, size_t n, size_t *cap, size_t elt) {
    if (n < *cap) return old;
    size_t nc = *cap ? *cap * 2 : 8;
    void *nw = spa_arena_alloc(ar, nc * elt);
    if (!nw) return NULL;
    if (old && n) memcpy(nw, old, n * elt);
    *cap = nc;
    return nw;
}

uint32_t spa_ctx_add_stream(spa_scan_ctx *sc, const spa_stream *s) {
    if (sc->n_streams >= sc->lim.v[SPA_LIM_STREAMS] || sc->n_streams >= UINT32_MAX - 1) {
        if (!sc->streams_limited) {
            sc->streams_limited = true;
            spa_err e = { SPA_E_LIMIT, "too many pickle streams", s ? s->start : 0 };
            spa_ctx_note(sc, SPA_NOTE_LIMIT, s ? s->loc : NULL, e, SPA_LIM_STREAMS, NULL);
        }
        return UINT32_MAX;
    }
    spa_stream *ns = spa_ctx_grow(sc->ar, sc->streams, sc->n_streams, &sc->cap_streams, sizeof *ns);
    if (!ns) return UINT32_MAX;
    sc->streams = ns;
    sc->streams[sc->n_streams] = *s;
    return (uint32_t)sc->n_streams++;
}

spa_stream *spa_ctx_stream(spa_scan_ctx *sc, uint32_t idx) {
    return idx < sc->n_streams ? &sc->streams[idx] : NULL;
}

void spa_ctx_note(spa_scan_ctx *sc, spa_notekind k, const char *loc, spa_err err,
                  spa_limit_id lim, const char *detail) {
    if (sc->n_notes >= 100000) return; /* notes are bounded too */
    spa_note *nn = spa_ctx_grow(sc->ar, sc->notes, sc->n_notes, &sc->cap_notes, sizeof *nn);
    if (!nn) return;
    sc->notes = nn;
    spa_note *n = &sc->notes[sc->n_notes++];
    n->kind = k;
    n->loc = loc;
    n->err = err;
    n->limit = lim;
    n->detail = detail;
}

const char *spa_ctx_loc(spa_scan_ctx *sc, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return "";
    if ((size_t)n < sizeof tmp) return spa_arena_strndup(sc->ar, tmp, (size_t)n);
    char *p = spa_arena_alloc(sc->ar, (size_t)n + 1);
    if (!p) return "";
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

void spa_ctx_set_hooks(spa_scan_ctx *sc, const spa_vm_hooks *h) { sc->hooks = h; }
const spa_vm_hooks *spa_ctx_hooks(const spa_scan_ctx *sc) { return sc->hooks; }

spa_result *spa_ctx_finish(spa_scan_ctx *sc, spa_format fmt, uint64_t bytes_read) {
    spa_result *r = spa_arena_calloc(sc->ar, sizeof *r);
    if (!r) { spa_arena_destroy(sc->ar); return NULL; }
    r->arena = sc->ar;
    r->path = sc->name;
    r->format = fmt;
    r->streams = sc->streams;
    r->n_streams = sc->n_streams;
    r->notes = sc->notes;
    r->n_notes = sc->n_notes;
    r->bytes_read = bytes_read;
    r->pickle_bearing = sc->n_streams > 0;
    r->verdict = SPA_VERDICT_SAFE;
    return r;
}

void spa_ctx_destroy(spa_scan_ctx *sc) {
    if (sc) spa_arena_destroy(sc->ar);
}
