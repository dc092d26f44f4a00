/* npy.c - NumPy .npy files, format versions 1, 2 and 3. When the header's
 * descr holds an object type ('O', alone or inside a structured dtype), the
 * array data is a pickle that numpy.load(allow_pickle=True) unpickles right
 * after the header: it is scanned as "<loc>!pickle". Numeric data is never read. */
#include <string.h>

#include "containers.h"

#define SPC_NPY_MAX_HEADER (1u << 20) /* numpy itself refuses headers > 10000 bytes
                                         unless max_header_size is raised */

/* What the header says about the data that follows. numpy reads the header
 * with ast.literal_eval and numpy.dtype(): any Python literal spelling is
 * accepted (escapes, prefixes, implicit concatenation, comments, duplicate
 * keys where the last wins, ...). We read exactly the plain form writers
 * emit; anything else is UNKNOWN, and then the data is scanned whenever it
 * is a plausible pickle (numpy's pickle.load fails at once on anything else). */
enum { NPY_NUMERIC = SPC_NPY_NUMERIC, NPY_OBJECT = SPC_NPY_OBJECT, NPY_UNKNOWN = SPC_NPY_UNKNOWN };

typedef struct npy_lex {
    const uint8_t *p;
    size_t n, i;
} npy_lex;

static void npy_ws(npy_lex *x) {
    while (x->i < x->n && (x->p[x->i] == ' ' || x->p[x->i] == '\t' || x->p[x->i] == '\n' ||
                           x->p[x->i] == '\r' || x->p[x->i] == '\f'))
        x->i++;
}

static bool npy_quote(uint8_t c) { return c == '\'' || c == '"'; }

/* A plain '...' or "..." string (no prefix, no backslash, not triple, not
 * followed by another string): sets [*s, *s + *len); false otherwise. */
static bool npy_str(npy_lex *x, const uint8_t **s, size_t *len) {
    if (x->i >= x->n || !npy_quote(x->p[x->i])) return false;
    uint8_t q = x->p[x->i];
    size_t a = x->i + 1, b = a;
    while (b < x->n && x->p[b] != q) {
        if (x->p[b] == '\\' || x->p[b] == '\n') return false;
        b++;
    }
    if (b >= x->n) return false;
    if (b == a && b + 1 < x->n && x->p[b + 1] == q) return false; /* a triple quote */
    *s = x->p + a;
    *len = b - a;
    x->i = b + 1;
    npy_ws(x);
    if (x->i < x->n && npy_quote(x->p[x->i])) return false; /* implicit concatenation */
    return true;
}

/* numpy's type string of a plain dtype: [<>|=]? kind digits* ([unit] for M/m) */
static int npy_typestr(const uint8_t *t, size_t n) {
    size_t a = 0;
    if (a < n && (t[a] == '<' || t[a] == '>' || t[a] == '|' || t[a] == '=')) a++;
    if (a >= n) return NPY_UNKNOWN;
    if (t[a] == 'O') {
        for (size_t k = a + 1; k < n; k++) if (t[k] < '0' || t[k] > '9') return NPY_UNKNOWN;
        return NPY_OBJECT;
    }
    if (!memchr("?bBhHiIlLqQpPefdgFDGSUVaucMm", t[a], 29)) return NPY_UNKNOWN;
    size_t k = a + 1;
    while (k < n && t[k] >= '0' && t[k] <= '9') k++;
    if (k < n && (t[a] == 'M' || t[a] == 'm') && t[k] == '[' && t[n - 1] == ']') {
        for (size_t u = k + 1; u + 1 < n; u++)
            if (!((t[u] >= 'a' && t[u] <= 'z') || (t[u] >= 'A' && t[u] <= 'Z') || (t[u] >= '0' && t[u] <= '9')))
                return NPY_UNKNOWN;
        return NPY_NUMERIC;
    }
    return k == n ? NPY_NUMERIC : NPY_UNKNOWN;
}

/* Skip the value of another key: balanced brackets over plain tokens. */
static bool npy_skip_value(npy_lex *x) {
    int depth = 0;
    for (;;) {
        npy_ws(x);
        if (x->i >= x->n) return false;
        uint8_t c = x->p[x->i];
        const uint8_t *s;
        size_t len;
        if (npy_quote(c)) {
            if (!npy_str(x, &s, &len)) return false;
            continue;
        }
        if (c == '(' || c == '[' || c == '{') {
            depth++;
        } else if (c == ')' || c == ']' || c == '}') {
            if (depth == 0) return true; /* the dict's own closing brace */
            depth--;
        } else if (c == ',') {
            if (depth == 0) return true;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                     c == '.' || c == '+' || c == '-' || c == ':')) {
            return false;
        }
        x->i++;
    }
}

int spc_npy_header_kind(const uint8_t *h, size_t n) {
    npy_lex x = {h, n, 0};
    npy_ws(&x);
    if (x.i >= n || h[x.i] != '{') return NPY_UNKNOWN;
    x.i++;
    int kind = NPY_UNKNOWN;
    bool seen = false;
    for (;;) {
        npy_ws(&x);
        if (x.i < n && h[x.i] == '}') break;
        const uint8_t *k, *v;
        size_t kl, vl;
        if (!npy_str(&x, &k, &kl)) return NPY_UNKNOWN;
        if (x.i >= n || h[x.i] != ':') return NPY_UNKNOWN;
        x.i++;
        npy_ws(&x);
        if (kl == 5 && memcmp(k, "descr", 5) == 0) {
            if (seen || !npy_str(&x, &v, &vl)) return NPY_UNKNOWN; /* structured, or a second key */
            seen = true;
            kind = npy_typestr(v, vl);
        } else if (!npy_skip_value(&x)) {
            return NPY_UNKNOWN;
        }
        npy_ws(&x);
        if (x.i < n && h[x.i] == ',') { x.i++; continue; }
        if (x.i < n && h[x.i] == '}') break;
        return NPY_UNKNOWN;
    }
    x.i++;
    npy_ws(&x);
    if (x.i != n) return NPY_UNKNOWN; /* numpy pads with spaces and ends with '\n' */
    return seen ? kind : NPY_UNKNOWN;
}

spa_code spc_npy(spc_scan *s, spc_content *c, spa_format fmt, uint32_t *first_stream) {
    (void)fmt;
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
    int kind = spc_npy_header_kind(p + pre, (size_t)hlen);
    if (kind == NPY_NUMERIC) return SPA_OK; /* numeric data: nothing to unpickle */
    if (spa_in_skip(in, pre + hlen) != SPA_OK) return SPA_OK;
    if (kind == NPY_UNKNOWN) {
        /* a spelling or a (structured, nested) dtype we do not read: numpy
         * unpickles the data when the dtype holds an object anywhere */
        uint64_t rest = c->size == UINT64_MAX ? UINT64_MAX : (c->size > pre + hlen ? c->size - pre - hlen : 0);
        if (spc_peek(s, in, SPC_HEAD, &p, &got) != SPA_OK || got == 0 ||
            spc_pickle_plausible(p, got, rest) == SPC_PK_NO)
            return SPA_OK;
    }
    s->pickle_bearing = true;
    const char *loc = spa_ctx_loc(s->sc, "%s!pickle", c->loc);
    if (!loc) { spc_fail(s, SPA_E_NOMEM, "out of memory", 0); return SPA_E_NOMEM; }
    /* numpy calls pickle.load once on what follows the header */
    uint64_t total = c->size == UINT64_MAX ? UINT64_MAX : c->size;
    return spc_pickles(s, in, total, loc, c->depth + 1, c->parent, 1, first_stream);
}
