/* joblib.c - joblib's NumpyArrayWrapper (joblib/numpy_pickle.py): after the
 * BUILD of a wrapper, joblib's unpickler reads the raw array bytes inline
 * (one padding-length byte and padding when numpy_array_alignment_bytes is
 * set, then prod(shape) * itemsize bytes). This VM hook computes exactly how
 * many bytes to skip; an object dtype means a complete nested pickle follows
 * (joblib calls pickle.load); impossible arithmetic means resynchronise. */
#include <string.h>

#include "containers.h"

#define SPC_JOBLIB_MAX_DIMS 64u /* numpy allows 32 (64 since 2.0) */

static bool jb_streq(const spa_val *v, const char *s) {
    if (!v || (v->kind != SPA_V_STR && v->kind != SPA_V_BYTES)) return false;
    size_t n = strlen(s);
    return v->u.s.len == n && v->u.s.kept == n && memcmp(v->u.s.p, s, n) == 0;
}

static bool jb_is_wrapper_cls(const spa_val *g) {
    if (!g || g->kind != SPA_V_GLOBAL || !g->u.g.name || !g->u.g.module) return false;
    if (strcmp(g->u.g.name, "NumpyArrayWrapper") != 0) return false;
    const char *m = g->u.g.module;
    size_t n = strlen(m);
    return n >= 12 && strcmp(m + n - 12, "numpy_pickle") == 0; /* joblib.numpy_pickle, sklearn.externals.joblib... */
}

/* The wrapper: NEWOBJ(cls) under protocol >= 2, copyreg._reconstructor(cls, object, None) below. */
static bool jb_is_wrapper(const spa_val *t) {
    if (!t || t->kind != SPA_V_CALL) return false;
    const spa_val *callee = t->u.call.callee;
    if (jb_is_wrapper_cls(callee)) return true;
    const spa_val *a = t->u.call.args;
    if (callee && callee->kind == SPA_V_GLOBAL && callee->u.g.name &&
        strcmp(callee->u.g.name, "_reconstructor") == 0 && a && a->kind == SPA_V_TUPLE && a->n >= 1)
        return jb_is_wrapper_cls(a->u.seq.items[0]);
    return false;
}

static const spa_val *jb_get(const spa_val *d, const char *key, bool *present) {
    *present = false;
    if (!d || d->kind != SPA_V_DICT) return NULL;
    for (uint32_t i = 0; i + 1 < d->n; i += 2) {
        if (jb_streq(d->u.seq.items[i], key)) {
            *present = true;
            return d->u.seq.items[i + 1];
        }
    }
    return NULL;
}

/* numpy's dtype reduce gives "%c%d" of kind and element size (U counts
 * 4-byte characters); 'O' is an object dtype. */
bool spc_joblib_itemsize(const char *descr, size_t n, uint64_t *itemsize, bool *object) {
    *object = false;
    *itemsize = 0;
    size_t i = 0;
    if (i < n && (descr[i] == '<' || descr[i] == '>' || descr[i] == '|' || descr[i] == '=')) i++;
    if (i >= n) return false;
    char kind = descr[i++];
    uint64_t sz = 0;
    size_t digits = 0;
    for (; i < n; i++, digits++) {
        if (descr[i] < '0' || descr[i] > '9' || sz > (UINT64_MAX - 9) / 10) return false;
        sz = sz * 10 + (uint64_t)(descr[i] - '0');
    }
    if (kind == 'O') { *object = true; *itemsize = 8; return true; }
    if (!digits) {
        switch (kind) { /* single-character type codes */
        case '?': case 'b': case 'B': sz = 1; break;
        case 'h': case 'H': case 'e': sz = 2; break;
        case 'i': case 'I': case 'f': sz = 4; break;
        case 'l': case 'L': case 'q': case 'Q': case 'd': case 'g': sz = 8; break;
        default: return false;
        }
        *itemsize = sz;
        return true;
    }
    switch (kind) {
    case 'b': case 'i': case 'u': case 'f': case 'c': case 'S': case 'V': case 'M': case 'm': case 'a':
        break;
    case 'U':
        if (sz > UINT64_MAX / 4) return false;
        sz *= 4;
        break;
    default:
        return false;
    }
    *itemsize = sz;
    return true;
}

spa_build_act spc_joblib_after_build(void *ud, spa_scan_ctx *sc, const spa_val *target,
                                     const spa_val *state, uint64_t *skip) {
    spc_scan *s = ud;
    if (!jb_is_wrapper(target)) return SPA_BUILD_NONE;
    s->pickle_bearing = true;
    const char *why = NULL;
    bool pres;
    const spa_val *shape = jb_get(state, "shape", &pres);
    const spa_val *dtype = jb_get(state, "dtype", &pres);
    const spa_val *align = jb_get(state, "numpy_array_alignment_bytes", &pres);
    bool has_align = pres && align && align->kind == SPA_V_INT && align->u.i > 0;
    uint64_t itemsize = 0, count = 1;
    bool object = false;
    /* dtype: numpy.dtype('f8', False, True) */
    const spa_val *da = (dtype && dtype->kind == SPA_V_CALL) ? dtype->u.call.args : NULL;
    const spa_val *d0 = (da && da->kind == SPA_V_TUPLE && da->n >= 1) ? da->u.seq.items[0] : NULL;
    if (!d0 || (d0->kind != SPA_V_STR && d0->kind != SPA_V_BYTES) || d0->u.s.kept != d0->u.s.len)
        why = "joblib array: dtype not a numpy.dtype call with a type string";
    else if (!spc_joblib_itemsize((const char *)d0->u.s.p, (size_t)d0->u.s.kept, &itemsize, &object))
        why = "joblib array: dtype string not understood";
    if (!why && object) return SPA_BUILD_NESTED;
    if (!why && (d0->u.s.p[0] == 'V' || (d0->u.s.kept > 1 && d0->u.s.p[1] == 'V'))) {
        /* a structured dtype may hold object fields (its BUILD state says so,
         * which the value does not keep): joblib then unpickles what follows.
         * Treat what follows as a nested pickle unless it cannot be one. */
        const uint8_t *p;
        size_t got;
        if (s->cur_in && spc_peek(s, s->cur_in, SPC_HEAD, &p, &got) == SPA_OK &&
            spc_pickle_plausible(p, got, UINT64_MAX) != SPC_PK_NO)
            return SPA_BUILD_NESTED;
    }
    if (!why) {
        if (!shape || shape->kind != SPA_V_TUPLE || (shape->flags & SPA_VF_TRUNC) ||
            shape->u.seq.count > SPC_JOBLIB_MAX_DIMS || shape->n != shape->u.seq.count)
            why = "joblib array: shape not a tuple of integers";
        for (uint32_t i = 0; !why && i < shape->n; i++) {
            const spa_val *d = shape->u.seq.items[i];
            if (!d || (d->kind != SPA_V_INT && d->kind != SPA_V_BOOL) || d->u.i < 0) {
                why = "joblib array: shape not a tuple of integers";
                break;
            }
            uint64_t k = (uint64_t)d->u.i;
            if (k && count > UINT64_MAX / k) { why = "joblib array: size overflows"; break; }
            count *= k;
        }
    }
    uint64_t bytes = 0;
    if (!why) {
        if (itemsize && count > UINT64_MAX / itemsize) why = "joblib array: size overflows";
        else bytes = count * itemsize;
    }
    uint64_t pad = 0;
    if (!why && has_align) {
        /* one byte holds the padding length, then that many 0xff bytes */
        const uint8_t *p;
        size_t got;
        if (!s->cur_in || spc_peek(s, s->cur_in, 1, &p, &got) != SPA_OK || got < 1)
            why = "joblib array: padding byte missing";
        else
            pad = 1u + p[0];
    }
    if (!why && bytes > UINT64_MAX - pad) why = "joblib array: size overflows";
    if (why) {
        spa_err e = {SPA_E_FORMAT, why, target->off};
        spa_ctx_note(sc, SPA_NOTE_RESYNC, s->cur_loc, e, SPA_LIM_COUNT,
                     "raw array size not computable: resynchronising to the next plausible opcode");
        return SPA_BUILD_RESYNC;
    }
    *skip = pad + bytes;
    return SPA_BUILD_SKIP;
}
