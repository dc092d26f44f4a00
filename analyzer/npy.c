/* npy.c - NumPy .npy files, format versions 1, 2 and 3. When the header's
 * descr holds an object type ('O', alone or inside a structured dtype), the
 * array data is a pickle that numpy.load(allow_pickle=True) unpickles right
 * after the header: it is scanned as "<loc>!pickle". Numeric data is never read. */
#include <string.h>

#include "containers.h"

#define SPC_NPY_MAX_HEADER (1u << 20) /* numpy itself refuses headers > 10000 bytes
                                         unless max_header_size is raised */

/* Is there a quoted dtype string in the header text whose type code is 'O'?
 * Looks at every quoted token after 'descr': '|O', '<O8', "O", ... A field
 * named "O" makes it answer yes, which only costs a scan of the data. */
static bool npy_has_object(const uint8_t *h, size_t n) {
    const uint8_t *d = NULL;
    for (size_t i = 0; i + 5 <= n; i++)
        if (memcmp(h + i, "descr", 5) == 0) { d = h + i + 5; break; }
    if (!d) return false;
    if (d < h + n && (*d == '\'' || *d == '"')) d++; /* the key's closing quote */
    const uint8_t *end = h + n;
    /* the descr value ends at the next top-level key; scanning all remaining
     * quoted tokens is conservative */
    while (d < end) {
        if (*d == '\'' || *d == '"') {
            uint8_t q = *d++;
            const uint8_t *t = d;
            while (d < end && *d != q) d++;
            size_t tl = (size_t)(d - t);
            size_t a = 0;
            if (tl && (t[0] == '<' || t[0] == '>' || t[0] == '|' || t[0] == '=')) a = 1;
            if (a < tl && t[a] == 'O') {
                bool digits = true;
                for (size_t k = a + 1; k < tl; k++) if (t[k] < '0' || t[k] > '9') digits = false;
                if (digits) return true;
            }
            if (d < end) d++;
        } else {
            d++;
        }
    }
    return false;
}

spa_code spc_npy(spc_scan *s, spc_content *c, uint32_t *first_stream) {
    spa_in *in = spc_content_in(s, c);
    if (!in) return SPA_E_NOMEM;
    const uint8_t *p;
    size_t got;
    if (spc_peek(s, in, 12, &p, &got) != SPA_OK || got < 10) {
        spc_note(s, SPA_NOTE_ERROR, c->loc, SPA_E_TRUNCATED, "npy header truncated", 0, SPA_LIM_COUNT, NULL);
        return SPA_OK;
    }
    uint8_t major = p[6];
    uint64_t hlen, pre;
    if (major == 1) {
        hlen = (uint64_t)p[8] | (uint64_t)p[9] << 8;
        pre = 10;
    } else if (major == 2 || major == 3) {
        if (got < 12) {
            spc_note(s, SPA_NOTE_ERROR, c->loc, SPA_E_TRUNCATED, "npy header truncated", 0, SPA_LIM_COUNT, NULL);
            return SPA_OK;
        }
        hlen = (uint64_t)p[8] | (uint64_t)p[9] << 8 | (uint64_t)p[10] << 16 | (uint64_t)p[11] << 24;
        pre = 12;
    } else {
        spc_note(s, SPA_NOTE_ERROR, c->loc, SPA_E_FORMAT, "npy: unknown format version (numpy refuses it)",
                 6, SPA_LIM_COUNT, NULL);
        return SPA_OK;
    }
    if (hlen > SPC_NPY_MAX_HEADER) {
        /* numpy refuses it by default; we cannot judge the dtype: say so */
        spc_note(s, SPA_NOTE_LIMIT, c->loc, SPA_E_LIMIT, "npy header longer than we examine", pre,
                 SPA_LIM_STR, NULL);
        return SPA_OK;
    }
    if (spc_peek(s, in, (size_t)(pre + hlen), &p, &got) != SPA_OK || got < pre + hlen) {
        spc_note(s, SPA_NOTE_ERROR, c->loc, SPA_E_TRUNCATED, "npy header truncated", pre, SPA_LIM_COUNT, NULL);
        return SPA_OK;
    }
    if (!npy_has_object(p + pre, (size_t)hlen)) return SPA_OK; /* numeric data: nothing to unpickle */
    s->pickle_bearing = true;
    if (spa_in_skip(in, pre + hlen) != SPA_OK) return SPA_OK;
    const char *loc = spa_ctx_loc(s->sc, "%s!pickle", c->loc);
    if (!loc) { spc_fail(s, SPA_E_NOMEM, "out of memory", 0); return SPA_E_NOMEM; }
    /* numpy calls pickle.load once on what follows the header */
    uint64_t total = c->size == UINT64_MAX ? UINT64_MAX : c->size;
    return spc_pickles(s, in, total, loc, c->depth + 1, c->parent, 1, first_stream);
}
