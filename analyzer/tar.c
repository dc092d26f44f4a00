/* tar.c - the tar reader (PyTorch's legacy tar checkpoints: members
 * `storages`, `tensors` and `pickle`, each holding pickles; any other tar).
 * Reads headers sequentially (ustar, GNU long names, pax path/size records),
 * dispatches every regular member by content and skips the rest. In the
 * legacy `storages`/`tensors` members, pickles alternate with raw records
 * whose sizes come from the bytes themselves; those are skipped exactly. */
#include <inttypes.h>
#include <string.h>

#include "containers.h"

#define SPC_TAR_BLOCK     512u
#define SPC_TAR_META_MAX  (1u << 20) /* pax / GNU long-name payload we read */

static bool tar_zero(const uint8_t *p) {
    for (size_t i = 0; i < SPC_TAR_BLOCK; i++) if (p[i]) return false;
    return true;
}

/* tarfile's nti(): 0x80 / 0xff lead base-256 (0xff: negative); otherwise
 * the text up to the first NUL, ASCII only, stripped, read by int(s, 8)
 * ("" is 0). Whatever tarfile accepts, this accepts. */
bool spc_tar_nti(const uint8_t *f, size_t n, int64_t *out) {
    if (n && (f[0] == 0x80 || f[0] == 0xff)) {
        uint64_t v = 0;
        for (size_t i = 1; i < n; i++) {
            if (v > (UINT64_MAX >> 8)) return false;
            v = (v << 8) | f[i];
        }
        if (f[0] == 0x80) {
            if (v > (uint64_t)INT64_MAX) return false;
            *out = (int64_t)v;
        } else {
            /* -(256**(n-1) - v) */
            if (n - 1 >= 8) return false;
            uint64_t m = 1ull << (8 * (n - 1));
            *out = -(int64_t)(m - v);
        }
        return true;
    }
    const uint8_t *z = memchr(f, 0, n);
    size_t len = z ? (size_t)(z - f) : n;
    for (size_t i = 0; i < len; i++) if (f[i] >= 0x80) return false; /* ascii, strict */
    size_t a = 0, b = len;
    while (a < b && (f[a] == ' ' || (f[a] >= '\t' && f[a] <= '\r') || (f[a] >= 0x1c && f[a] <= 0x1f))) a++;
    while (b > a && (f[b - 1] == ' ' || (f[b - 1] >= '\t' && f[b - 1] <= '\r') || (f[b - 1] >= 0x1c && f[b - 1] <= 0x1f))) b--;
    if (a == b) { *out = 0; return true; }
    return spc_py_int(f + a, b - a, 8, true, out);
}

/* tarfile's frombuf(): the checksum field (nti) is one of calc_chksums() -
 * 256 plus the sum of every other byte, unsigned or signed. The magic and
 * everything else are not checked. */
bool spc_tar_header_ok(const uint8_t *h) {
    int64_t want;
    if (!spc_tar_nti(h + 148, 8, &want)) return false;
    int64_t u = 256, sgn = 256;
    for (size_t k = 0; k < SPC_TAR_BLOCK; k++) {
        if (k >= 148 && k < 156) continue;
        u += h[k];
        sgn += (int8_t)h[k];
    }
    return want == u || want == sgn;
}

/* A size field: tarfile takes nti() of it; a negative size is refused here. */
static bool tar_size(const uint8_t *f, size_t n, uint64_t *out) {
    int64_t v;
    if (!spc_tar_nti(f, n, &v) || v < 0) return false;
    *out = (uint64_t)v;
    return true;
}

/* pax records "LEN key=value\n": pick path and size */
static void tar_pax(spc_scan *s, const uint8_t *p, size_t n, const char **path, uint64_t *size, bool *has_size) {
    size_t i = 0;
    while (i < n) {
        size_t len = 0, j = i;
        while (j < n && p[j] >= '0' && p[j] <= '9') { len = len * 10 + (size_t)(p[j] - '0'); j++; if (len > n) return; }
        if (j >= n || p[j] != ' ' || len == 0 || i + len > n) return;
        const uint8_t *kv = p + j + 1, *end = p + i + len - 1; /* end at the '\n' */
        const uint8_t *eq = memchr(kv, '=', (size_t)(end - kv));
        if (eq) {
            size_t kl = (size_t)(eq - kv), vl = (size_t)(end - eq - 1);
            if (kl == 4 && memcmp(kv, "path", 4) == 0) *path = spa_arena_strndup(s->ar, (const char *)eq + 1, vl);
            if (kl == 4 && memcmp(kv, "size", 4) == 0) {
                uint64_t v = 0;
                for (size_t k = 0; k < vl; k++) {
                    uint8_t c = eq[1 + k];
                    if (c < '0' || c > '9' || v > UINT64_MAX / 10 - 9) break;
                    v = v * 10 + (uint64_t)(c - '0');
                }
                *size = v;
                *has_size = true;
            }
        }
        i += len;
    }
}

/* Read a member's payload (pax header, GNU long name) into the arena. */
static const uint8_t *tar_meta(spc_scan *s, spa_in *in, uint64_t size, size_t *n) {
    if (size > SPC_TAR_META_MAX) return NULL;
    const uint8_t *p;
    size_t got;
    if (spc_peek(s, in, (size_t)size, &p, &got) != SPA_OK || got < size) return NULL;
    uint8_t *cp = spa_arena_alloc(s->ar, (size_t)size + 1);
    if (!cp) return NULL;
    memcpy(cp, p, (size_t)size);
    cp[size] = 0;
    *n = (size_t)size;
    return cp;
}

/* Provenance-safe name */
static const char *tar_loc(spc_scan *s, const char *parent, const char *name) {
    size_t n = strlen(name);
    char *b = spa_arena_alloc(s->ar, n + 1);
    if (!b) return NULL;
    for (size_t i = 0; i < n; i++) b[i] = ((uint8_t)name[i] < 0x20 || name[i] == 0x7f) ? '?' : name[i];
    b[n] = 0;
    return spa_ctx_loc(s->sc, "%s!%s", parent, b);
}

/* ------------------------------------------------------------------ legacy torch */
/* Element size of a torch storage type name (torch.FloatStorage -> 4). */
static uint64_t tar_elem_size(const char *name) {
    static const struct { const char *n; uint64_t sz; } t[] = {
        {"ComplexDouble", 16}, {"ComplexFloat", 8}, {"BFloat16", 2}, {"Double", 8}, {"Float", 4},
        {"Half", 2}, {"Long", 8}, {"Int", 4}, {"Short", 2}, {"Char", 1}, {"Byte", 1}, {"Bool", 1},
        {"QUInt8", 1}, {"QInt8", 1}, {"QInt32", 4}, {"QUInt4x2", 1}, {"QUInt2x4", 1},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        size_t k = strlen(t[i].n);
        if (strncmp(name, t[i].n, k) == 0 && strcmp(name + k, "Storage") == 0) return t[i].sz;
    }
    return 0;
}

static uint64_t tar_le(const uint8_t *p, unsigned k) {
    uint64_t v = 0;
    for (unsigned i = 0; i < k; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* `storages`: count, then per storage (key, location, storage_type) and the raw
 * storage (int64 element count, then the elements); then the views list.
 * `tensors`: count, then per tensor (key, storage_id, type) and a raw record
 * (int32 ndim, 4 bytes, ndim int64 sizes, ndim int64 strides, int64 offset).
 * We run each pickle and skip each raw record by its own length fields. */
static spa_code tar_legacy_member(spc_scan *s, spa_in *in, uint64_t size, const char *loc, uint32_t depth,
                                  uint32_t parent, bool storages) {
    uint32_t last = UINT32_MAX;
    for (uint32_t i = 0;; i++) {
        uint64_t at = spa_in_pos(in);
        if (at >= size) return SPA_OK;
        const uint8_t *p;
        size_t got;
        if (spc_peek(s, in, SPC_HEAD, &p, &got) != SPA_OK || got == 0) return SPA_OK;
        if (spc_pickle_plausible(p, got, size - at) == SPC_PK_NO) {
            /* a raw record */
            if (i == 0) return SPA_OK;
            uint64_t skip;
            if (storages) {
                /* the element size comes from the previous pickle's storage type import */
                uint64_t es = 0;
                const spa_stream *st = last != UINT32_MAX ? spa_ctx_stream(s->sc, last) : NULL;
                for (size_t k = 0; st && k < st->n_ir && !es; k++)
                    if (st->ir[k].kind == SPA_IR_IMPORT && st->ir[k].name) es = tar_elem_size(st->ir[k].name);
                if (got < 8 || es == 0) goto resync;
                uint64_t numel = tar_le(p, 8);
                if (numel > (size - at) / es) goto resync;
                skip = 8 + numel * es;
            } else {
                if (got < 8) goto resync;
                uint64_t ndim = tar_le(p, 4);
                if (ndim > 64) goto resync;
                skip = 8 + 16 * ndim + 8;
            }
            if (skip > size - at || spa_in_skip(in, skip) != SPA_OK) return SPA_OK;
            continue;
        resync:
            spc_note(s, SPA_NOTE_RESYNC, loc, SPA_E_FORMAT,
                     "legacy torch raw record not understood: rest of the member not scanned", at,
                     SPA_LIM_COUNT, NULL);
            s->pickle_bearing = true;
            return SPA_OK;
        }
        last = UINT32_MAX;
        const char *sloc = at ? spa_ctx_loc(s->sc, "%s!stream@%" PRIu64, loc, at) : loc;
        spa_code rc = spc_pickles(s, in, size, sloc ? sloc : loc, depth, parent, 1, &last);
        if (rc != SPA_OK) return rc;
        if (spa_in_pos(in) == at || last == UINT32_MAX) return SPA_OK;
        const spa_stream *st = spa_ctx_stream(s->sc, last);
        if (!st || !st->complete) return SPA_OK;
    }
}

/* One regular member at content offset `data` (the reader `in` is there). */
static spa_code tar_member(spc_scan *s, spc_content *c, spa_in *in, spc_content *child, const char *mname,
                           uint64_t data, uint64_t size) {
    bool legacy_st = strcmp(mname, "storages") == 0, legacy_te = strcmp(mname, "tensors") == 0;
    spa_code rc = SPA_OK;
    const uint8_t *q;
    size_t g;
    if (legacy_st || legacy_te) {
        spa_src *r = c->src ? spc_src_range(s, c->src, data, size) : NULL;
        spa_in *sub = c->src ? (r ? spa_in_from_src(spc_rd(s), r, 0, size) : NULL) : spc_in_sub(s, in, size);
        if (!sub) { spc_fail(s, SPA_E_NOMEM, "out of memory", data); return SPA_E_NOMEM; }
        rc = tar_legacy_member(s, sub, size, child->loc, child->depth, c->parent, legacy_st);
        if (!c->src) /* consume what the member reader did not */
            while (spc_peek(s, sub, SPC_HEAD, &q, &g) == SPA_OK && g) if (spa_in_skip(sub, g) != SPA_OK) break;
    } else if (c->src) {
        child->src = spc_src_range(s, c->src, data, size);
        if (!child->src) { spc_fail(s, SPA_E_NOMEM, "out of memory", data); return SPA_E_NOMEM; }
        rc = spc_dispatch(s, child, NULL);
    } else {
        child->in = spc_in_sub(s, in, size);
        if (!child->in) { spc_fail(s, SPA_E_NOMEM, "out of memory", data); return SPA_E_NOMEM; }
        rc = spc_dispatch(s, child, NULL);
        while (spc_peek(s, child->in, SPC_HEAD, &q, &g) == SPA_OK && g) if (spa_in_skip(child->in, g) != SPA_OK) break;
    }
    return rc;
}

/* ------------------------------------------------------------------ reader */
spa_code spc_tar(spc_scan *s, spc_content *c, spa_format fmt, uint32_t *first_stream) {
    (void)fmt;
    (void)first_stream;
    spa_in *in = spc_content_in(s, c);
    if (!in) return SPA_E_NOMEM;
    const char *longname = NULL, *paxpath = NULL;
    uint64_t paxsize = 0;
    bool has_paxsize = false;
    uint64_t nmem = 0;
    for (;;) {
        const uint8_t *h;
        size_t got;
        uint64_t hoff = spa_in_pos(in);
        if (spc_peek(s, in, SPC_TAR_BLOCK, &h, &got) != SPA_OK) { spc_fail(s, SPA_E_IO, "read error", hoff); return SPA_E_IO; }
        if (got < SPC_TAR_BLOCK) {
            if (got) spc_note(s, SPA_NOTE_ERROR, c->loc, SPA_E_TRUNCATED, "tar truncated", hoff, SPA_LIM_COUNT, NULL);
            break;
        }
        if (tar_zero(h)) break;
        if (!spc_tar_header_ok(h)) {
            spc_note(s, SPA_NOTE_ERROR, c->loc, SPA_E_FORMAT, "tar header checksum wrong: tarfile stops here",
                     hoff, SPA_LIM_COUNT, NULL);
            break;
        }
        uint64_t size;
        if (!tar_size(h + 124, 12, &size)) {
            spc_note(s, SPA_NOTE_ERROR, c->loc, SPA_E_FORMAT, "tar size field invalid", hoff, SPA_LIM_COUNT, NULL);
            break;
        }
        char type = (char)h[156];
        char name[256 + 2];
        size_t nl = strnlen((const char *)h, 100);
        size_t pl = memcmp(h + 257, "ustar", 5) == 0 ? strnlen((const char *)h + 345, 155) : 0;
        size_t k = 0;
        if (pl) { memcpy(name, h + 345, pl); k = pl; name[k++] = '/'; }
        memcpy(name + k, h, nl);
        name[k + nl] = 0;
        if (spa_in_skip(in, SPC_TAR_BLOCK) != SPA_OK) break;
        uint64_t padded = (size + SPC_TAR_BLOCK - 1) / SPC_TAR_BLOCK * SPC_TAR_BLOCK;
        if (type == 'x' || type == 'g' || type == 'L') {
            size_t mn = 0;
            const uint8_t *m = tar_meta(s, in, size, &mn);
            if (m && type == 'x') tar_pax(s, m, mn, &paxpath, &paxsize, &has_paxsize);
            if (m && type == 'L') longname = spa_arena_strndup(s->ar, (const char *)m, strnlen((const char *)m, mn));
            if (spa_in_skip(in, padded) != SPA_OK) break;
            continue;
        }
        if (has_paxsize) size = paxsize;
        padded = (size + SPC_TAR_BLOCK - 1) / SPC_TAR_BLOCK * SPC_TAR_BLOCK;
        const char *mname = paxpath ? paxpath : (longname ? longname : name);
        longname = paxpath = NULL;
        has_paxsize = false;
        if (type != '0' && type != '\0' && type != '7') { /* directories, links, devices: no content */
            if (type != '5' && spa_in_skip(in, padded) != SPA_OK) break;
            continue;
        }
        if (++s->members > s->lim->v[SPA_LIM_MEMBERS]) {
            spc_note(s, SPA_NOTE_LIMIT, c->loc, SPA_E_LIMIT, "too many archive members: rest not examined",
                     hoff, SPA_LIM_MEMBERS, NULL);
            break;
        }
        nmem++;
        const char *mloc = tar_loc(s, c->loc, mname);
        if (!mloc) { spc_fail(s, SPA_E_NOMEM, "out of memory", hoff); return SPA_E_NOMEM; }
        uint64_t data = spa_in_pos(in);
        spc_content child;
        memset(&child, 0, sizeof child);
        child.loc = mloc;
        child.depth = c->depth + 1;
        child.parent = c->parent;
        child.size = size;
        if (c->src && (data > c->src->size || size > c->src->size - data)) {
            spc_note(s, SPA_NOTE_ERROR, mloc, SPA_E_TRUNCATED, "tar member runs past the end", data, SPA_LIM_COUNT, NULL);
            break;
        }
        spa_arena *saved, *scratch = spc_scratch_begin(s, &saved);
        spa_code rc = tar_member(s, c, in, &child, mname, data, size);
        spc_scratch_end(s, scratch, saved);
        if (rc != SPA_OK || s->fatal) return s->fatal ? s->fatal_err.code : rc;
        /* to the next header */
        uint64_t now = spa_in_pos(in);
        uint64_t next = data + padded;
        if (now < next && spa_in_skip(in, next - now) != SPA_OK) break;
    }
    (void)nmem;
    return SPA_OK;
}
