/* nested.c - nested pickles: a str/bytes constant that is, or encodes
 * (base64, hex, latin1 text as built for _codecs.encode(s, 'latin1')), a
 * pickle or a pickle-bearing container is scanned as its own content, with
 * depth + 1 and the parent stream recorded, up to the nesting limit. The VM
 * calls this hook for every such constant, so the common "no" is cheap. */
#include <inttypes.h>
#include <string.h>

#include "containers.h"

#define SPC_NESTED_PROBE  96u  /* encoded characters decoded for a first look */
#define SPC_NESTED_WALK   64u  /* opcodes without a failure that make unknown bytes a pickle */

/* ------------------------------------------------------------------ decoders */
/* Character classes as data: 1 + the digit's value (base64, standard and
 * URL-safe alphabets; hex), NB_SKIP for separators the decoders tolerate, 0
 * for anything else. */
#define NB_SKIP 0x80
static const uint8_t nb_b64_tab[256] = {
    ['\n'] = NB_SKIP, ['\r'] = NB_SKIP, [' '] = NB_SKIP, ['\t'] = NB_SKIP, ['='] = NB_SKIP,
    ['A'] = 1, ['B'] = 2, ['C'] = 3, ['D'] = 4, ['E'] = 5, ['F'] = 6, ['G'] = 7, ['H'] = 8,
    ['I'] = 9, ['J'] = 10, ['K'] = 11, ['L'] = 12, ['M'] = 13, ['N'] = 14, ['O'] = 15, ['P'] = 16,
    ['Q'] = 17, ['R'] = 18, ['S'] = 19, ['T'] = 20, ['U'] = 21, ['V'] = 22, ['W'] = 23, ['X'] = 24,
    ['Y'] = 25, ['Z'] = 26, ['a'] = 27, ['b'] = 28, ['c'] = 29, ['d'] = 30, ['e'] = 31, ['f'] = 32,
    ['g'] = 33, ['h'] = 34, ['i'] = 35, ['j'] = 36, ['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40,
    ['o'] = 41, ['p'] = 42, ['q'] = 43, ['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47, ['v'] = 48,
    ['w'] = 49, ['x'] = 50, ['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54, ['2'] = 55, ['3'] = 56,
    ['4'] = 57, ['5'] = 58, ['6'] = 59, ['7'] = 60, ['8'] = 61, ['9'] = 62, ['+'] = 63, ['/'] = 64,
    ['-'] = 63, ['_'] = 64,
};
static const uint8_t nb_hex_tab[256] = {
    ['\n'] = NB_SKIP, [' '] = NB_SKIP,
    ['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5, ['5'] = 6, ['6'] = 7, ['7'] = 8,
    ['8'] = 9, ['9'] = 10, ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16,
    ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16,
};

static int nb_b64(uint8_t c) { uint8_t t = nb_b64_tab[c]; return (t && t != NB_SKIP) ? t - 1 : -1; }

/* Feed one 6-bit group to a base64 decoder state; a completed byte is stored
 * when there is room (o counts every byte, so callers see the full length). */
static inline void nb_b64_put(uint32_t *acc, unsigned *bits, size_t *o, uint8_t *out, size_t cap,
                              uint32_t v) {
    *acc = (*acc << 6) | v;
    *bits += 6;
    if (*bits >= 8) {
        *bits -= 8;
        if (*o < cap) out[*o] = (uint8_t)(*acc >> *bits);
        (*o)++;
    }
}

size_t spc_b64_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap) {
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t o = 0, sig = 0;
    bool pad = false;
    for (size_t i = 0; i < n; i++) {
        uint8_t t = nb_b64_tab[in[i]];
        if (t == NB_SKIP) { if (in[i] == '=') pad = true; continue; }
        if (t == 0 || pad) return 0; /* not base64 (or data after padding) */
        sig++;
        nb_b64_put(&acc, &bits, &o, out, cap, (uint32_t)(t - 1));
    }
    if (sig < 4) return 0;
    return o < cap ? o : cap;
}

/* base64.b64decode(s) as Python does it by default (validate=False): bytes
 * outside the alphabet are discarded, decoding ends at completed padding. */
static size_t nb_b64_lenient(const uint8_t *in, size_t n, uint8_t *out, size_t cap) {
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t o = 0, sig = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t t = nb_b64_tab[in[i]];
        if (in[i] == '=') { if (sig % 4 >= 2) break; continue; }
        if (t == 0 || t == NB_SKIP) continue;
        sig++;
        nb_b64_put(&acc, &bits, &o, out, cap, (uint32_t)(t - 1));
    }
    if (sig < 4) return 0;
    return o < cap ? o : cap;
}

/* Mostly base64: at most one byte in 8 outside the alphabet (junk that
 * b64decode discards), so prose is not decoded as base64. */
static bool nb_mostly_b64(const uint8_t *p, size_t n) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        if (nb_b64_tab[p[i]] == 0 && ++bad > n / 8) return false;
    return true;
}

static int nb_hex(uint8_t c) { uint8_t t = nb_hex_tab[c]; return (t && t != NB_SKIP) ? t - 1 : -1; }

size_t spc_hex_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap) {
    size_t o = 0;
    int hi = -1;
    for (size_t i = 0; i < n; i++) {
        uint8_t t = nb_hex_tab[in[i]];
        if (t == NB_SKIP) { if (hi >= 0) return 0; continue; }
        if (t == 0) return 0;
        int v = t - 1;
        if (hi < 0) { hi = v; continue; }
        if (o < cap) out[o] = (uint8_t)(hi << 4 | v);
        o++;
        hi = -1;
    }
    if (hi >= 0 || o == 0) return 0;
    return o < cap ? o : cap;
}

/* UTF-8 text whose code points are all < 256, as latin1 bytes. */
size_t spc_latin1_from_utf8(const uint8_t *in, size_t n, uint8_t *out, size_t cap) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = in[i];
        uint8_t b;
        if (c < 0x80) b = c;
        else if ((c == 0xc2 || c == 0xc3) && i + 1 < n && (in[i + 1] & 0xc0) == 0x80) {
            b = (uint8_t)(((c & 0x03) << 6) | (in[i + 1] & 0x3f));
            i++;
        } else {
            return 0; /* a code point >= 256: latin1 encoding would fail */
        }
        if (o < cap) out[o] = b;
        o++;
    }
    return o < cap ? o : cap;
}

/* ------------------------------------------------------------------ judging */
/* The verdict on a pickle walk over the n bytes of a constant. */
static bool nb_walk_candidate(spc_pk r, const spc_walk_info *wi, size_t n) {
    if (r == SPC_PK_NO) return false;
    if (wi->stopped) {
        if (wi->imports > 0) return true;
        /* exactly one complete stream: what loads() of this constant would
         * read (its data may be loaded again: loads(loads(x))); random data
         * rarely ends in STOP exactly, and an import-free stream reports nothing */
        return wi->end == n && wi->ops >= 2;
    }
    if (wi->failed) return wi->imports > 0 && wi->calls > 0;
    return wi->imports > 0 || wi->ops >= SPC_NESTED_WALK;
}

/* Is p[0..n), the start of `total` bytes (UINT64_MAX: unknown), worth
 * scanning as nested content? The
 * VM offers every str/bytes constant, so random data (ids, hashes, base64
 * blobs) must not pass: a pickle must import something and STOP, or import
 * and call before it breaks, or hold up over a long walk, or be exactly one
 * complete stream (what loads() of the constant reads). A container needs its magic, and a weak
 * magic (zlib, gzip, ...) must decompress to pickle-bearing content. */
static bool nb_candidate(spc_scan *s, const uint8_t *p, size_t n, uint64_t total) {
    if (n < 2) return false;
    spa_format alt;
    spa_format f = spc_sniff_alt(p, n, total, false, &alt);
    if (f == SPA_FMT_NONE && alt != SPA_FMT_NONE) f = alt; /* a weak magic: probed below */
    if (f == SPA_FMT_NONE) return false;
    switch (f) {
    case SPA_FMT_ZLIB: case SPA_FMT_GZIP: case SPA_FMT_BZ2: case SPA_FMT_JOBLIB:
    case SPA_FMT_XZ: case SPA_FMT_ZSTD: case SPA_FMT_LZ4:
        /* weak magics in random data: what comes out must be pickle-bearing */
        return spc_dec_probe(s, p, n, f) != SPA_FMT_NONE;
    case SPA_FMT_TAR:
        return true; /* a valid header checksum */
    case SPA_FMT_PICKLE:
        break;
    default:
        return true; /* zip, npy, torch legacy, 7z: long magics */
    }
    spc_walk_info wi;
    /* the whole constant: big arguments are skipped in O(1), the walk is
     * bounded by opcodes, so padding in front cannot hide an import */
    spc_pk r = spc_pickle_walk(p, n, total, &wi);
    return nb_walk_candidate(r, &wi, n);
}

/* Every byte in the class (separators allowed). */
static bool nb_all(const uint8_t *p, size_t n, const uint8_t *tab) {
    for (size_t i = 0; i < n; i++)
        if (tab[p[i]] == 0) return false;
    return true;
}

typedef size_t (*nb_decoder)(const uint8_t *in, size_t n, uint8_t *out, size_t cap);

/* Decode p[0..n) and judge the result: first a probe of the first `probe`
 * characters, then the whole (on the stack when small; copied into the scan
 * arena only when it is a candidate, since the VM keeps pointers into it). */
static bool nb_decoded(spc_scan *s, const uint8_t *p, size_t n, bool trunc, nb_decoder dec, size_t probe,
                       const uint8_t **data, size_t *dn) {
    uint8_t pb[SPC_NESTED_PROBE];
    bool whole = n <= probe;
    size_t pn = dec(p, whole ? n : probe, pb, sizeof pb);
    if (pn < 2 || spc_sniff(pb, pn, whole && !trunc ? pn : UINT64_MAX) == SPA_FMT_NONE) return false;
    uint8_t small[SPC_HEAD];
    uint8_t *buf = n <= sizeof small ? small : spa_arena_alloc(s->ar, n);
    if (!buf) { spc_fail(s, SPA_E_NOMEM, "out of memory", 0); return false; }
    size_t bn = dec(p, n, buf, n);
    if (!bn || !nb_candidate(s, buf, bn, trunc ? UINT64_MAX : bn)) return false;
    if (buf == small) {
        uint8_t *keep = spa_arena_alloc(s->ar, bn);
        if (!keep) { spc_fail(s, SPA_E_NOMEM, "out of memory", 0); return false; }
        memcpy(keep, small, bn);
        buf = keep;
    }
    *data = buf;
    *dn = bn;
    return true;
}

/* The VM's opaque hook, for a bytes constant longer than the n bytes seen:
 * true only when no reading above could accept it whatever follows, so that
 * keeping n bytes changes nothing: it holds a control byte (no text then; the
 * classifier's code-like test also rejects it, and neither the hex nor the
 * latin1 decoder applies), its head sniffs as no format, and, when it starts
 * like base64, its first characters do not decode to one either (the gate of
 * nb_decoded). Array data is the case this is for. */
bool spc_nested_opaque(void *ud, const uint8_t *p, size_t n, uint64_t len) {
    (void)ud;
    bool ctl = false;
    for (size_t i = 0; i < n && !ctl; i++)
        ctl = (p[i] < 0x20 && p[i] != '\n' && p[i] != '\t' && p[i] != '\r') || p[i] == 0x7f;
    if (!ctl) return false;
    /* a pickle walk that ends inside the head (fails, stops, or hits its
     * opcode bound) reads the same over the whole constant: its verdict
     * stands; one that runs out of the head is undecided */
    spc_walk_info wi;
    spc_pk r = spc_pickle_walk(p, n, len, &wi);
    if (r != SPC_PK_NO && !wi.stopped && !wi.failed && wi.ops < SPC_SNIFF_OPS) return false;
    spa_format f = spc_sniff(p, n, len);
    if (f != SPA_FMT_NONE && (f != SPA_FMT_PICKLE || nb_walk_candidate(r, &wi, SIZE_MAX))) return false;
    if (nb_b64(p[0]) >= 0) {
        uint8_t pb[SPC_NESTED_PROBE];
        size_t pn = nb_b64_lenient(p, n < SPC_NESTED_PROBE ? n : SPC_NESTED_PROBE & ~(size_t)3, pb, sizeof pb);
        if (pn >= 2 && spc_sniff(pb, pn, UINT64_MAX) != SPA_FMT_NONE) return false;
    }
    return true;
}

uint32_t spc_nested_on_const(void *ud, spa_scan_ctx *sc, const spa_val *v, uint32_t depth,
                             uint32_t parent_stream) {
    spc_scan *s = ud;
    if (!v || (v->kind != SPA_V_STR && v->kind != SPA_V_BYTES) || !v->u.s.p) return UINT32_MAX;
    size_t n = (size_t)v->u.s.kept;
    if (n < SPC_NESTED_MIN) return UINT32_MAX;
    const uint8_t *p = v->u.s.p;
    bool trunc = v->u.s.kept < v->u.s.len;
    const uint8_t *data = NULL;
    size_t dn = 0;
    const char *enc = "const";

    if (nb_candidate(s, p, n, v->u.s.len)) {
        data = p;
        dn = n;
    }
    if (!data && v->kind == SPA_V_STR) {
        bool ascii = true;
        for (size_t i = 0; i < n && ascii; i++) ascii = p[i] < 0x80;
        if (!ascii && nb_decoded(s, p, n, trunc, spc_latin1_from_utf8, SPC_NESTED_PROBE, &data, &dn))
            enc = "latin1";
    }
    if (!data && n >= 16 && nb_hex(p[0]) >= 0 && nb_all(p, n, nb_hex_tab) &&
        nb_decoded(s, p, n, trunc, spc_hex_decode, SPC_NESTED_PROBE & ~(size_t)1, &data, &dn))
        enc = "hex";
    if (!data && n >= 16 && nb_b64(p[0]) >= 0 && nb_mostly_b64(p, n) &&
        nb_decoded(s, p, n, trunc, nb_b64_lenient, SPC_NESTED_PROBE & ~(size_t)3, &data, &dn))
        enc = "base64";
    if (s->fatal) return UINT32_MAX;
    if (!data) return UINT32_MAX;

    const spa_stream *ps = parent_stream != UINT32_MAX ? spa_ctx_stream(sc, parent_stream) : NULL;
    const char *ploc = ps && ps->loc ? ps->loc : (s->cur_loc ? s->cur_loc : "<input>");
    const char *loc = spa_ctx_loc(sc, "%s!%s@%" PRIu64, ploc, enc, v->off);
    if (!loc || !*loc) { spc_fail(s, SPA_E_NOMEM, "out of memory", v->off); return UINT32_MAX; }
    s->pickle_bearing = true;
    if ((uint64_t)depth + 1 > s->lim->v[SPA_LIM_NEST]) {
        spc_note(s, SPA_NOTE_LIMIT, loc, SPA_E_LIMIT, "nested pickle deeper than the nesting limit: not scanned",
                 v->off, SPA_LIM_NEST, NULL);
        return UINT32_MAX;
    }
    spa_src *src = spc_src_buf(s, data, dn);
    if (!src) { spc_fail(s, SPA_E_NOMEM, "out of memory", v->off); return UINT32_MAX; }
    spc_content c;
    memset(&c, 0, sizeof c);
    c.src = src;
    c.size = dn;
    c.loc = loc;
    c.depth = depth + 1;
    c.parent = parent_stream;
    uint32_t first = UINT32_MAX;
    spc_dispatch(s, &c, &first);
    if (trunc)
        spc_note(s, SPA_NOTE_LIMIT, loc, SPA_E_LIMIT,
                 "nested pickle longer than the kept string prefix: only the prefix was scanned", v->off,
                 SPA_LIM_STR, NULL);
    return first;
}
