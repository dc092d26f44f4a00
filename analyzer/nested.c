/* nested.c - nested pickles: a str/bytes constant that is, or encodes
 * (base64, hex, latin1 text as built for _codecs.encode(s, 'latin1')), a
 * pickle or a pickle-bearing container is scanned as its own content, with
 * depth + 1 and the parent stream recorded, up to the nesting limit. The VM
 * calls this hook for every such constant, so the common "no" is cheap. */
#include <inttypes.h>
#include <string.h>

#include "containers.h"
#include "decode.h"

#define SPC_NESTED_PROBE  96u  /* encoded characters decoded for a first look */
#define SPC_NESTED_WALK   64u  /* opcodes without a failure that make unknown bytes a pickle */

/* ------------------------------------------------------------------ decoders */
/* The decoders (decode.c) as nb_decoded calls them: the bytes stored (at most cap), 0
 * when the text is not in that encoding. Base64 takes both alphabets (which decoder a
 * loader applies is not known here; urlsafe_b64decode reads both) and needs a quad. */
static size_t nb_b64(const uint8_t *in, size_t n, uint8_t *out, size_t cap) {
    size_t digits, o = spa_dec_b64(in, n, out, cap, "-_", &digits);
    return digits < 4 ? 0 : o < cap ? o : cap;
}

static size_t nb_hex(const uint8_t *in, size_t n, uint8_t *out, size_t cap) {
    size_t o = spa_dec_hex(in, n, out, cap, true);
    return o == SPA_DEC_FAIL ? 0 : o < cap ? o : cap;
}

static size_t nb_latin1(const uint8_t *in, size_t n, uint8_t *out, size_t cap) {
    size_t o = spa_dec_latin1(in, n, out, cap);
    return o == SPA_DEC_FAIL ? 0 : o < cap ? o : cap;
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
    spc_walk_info wi;
    if (spc_sniff_pickle_only(p, n)) /* the sniff would be this walk: walk once */
        return nb_walk_candidate(spc_pickle_walk(p, n, total, &wi), &wi, n);
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
    /* the whole constant: big arguments are skipped in O(1), the walk is
     * bounded by opcodes, so padding in front cannot hide an import */
    spc_pk r = spc_pickle_walk(p, n, total, &wi);
    return nb_walk_candidate(r, &wi, n);
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
    if (spa_dec_b64_digit(p[0]) >= 0) {
        uint8_t pb[SPC_NESTED_PROBE];
        size_t pn = nb_b64(p, n < SPC_NESTED_PROBE ? n : SPC_NESTED_PROBE & ~(size_t)3, pb, sizeof pb);
        if (pn >= 2 && spc_sniff(pb, pn, UINT64_MAX) != SPA_FMT_NONE) return false;
    }
    return true;
}

/* A constant of n >= SPC_NESTED_MIN bytes of kind k (str or bytes) that no
 * reading below accepts, known from its first byte and two words: shorter
 * than 16 bytes (hex and base64 need 16 characters), it fails the pickle
 * walk's first step, and it is bytes or ASCII text (only the latin1 reading
 * of non-ASCII text is left). The common short constant ends here. */
#define NB_SHORT 16u
/* The lengths (from SPC_NESTED_MIN) below which a constant starting with
 * byte c is decided by nb_short_none: NB_SHORT, or none (0). */
static inline size_t nb_short_end(uint8_t c) {
    return spc_sniff_none_first(c) ? NB_SHORT : 0;
}

static inline bool nb_short_none(spa_vkind k, const uint8_t *p, size_t n) {
    _Static_assert(SPC_NESTED_MIN >= 8 && NB_SHORT <= 16, "two words cover 8..15 bytes");
    if (n < SPC_NESTED_MIN || n >= nb_short_end(p[0])) return false;
    uint64_t w0, w1;
    memcpy(&w0, p, 8);
    memcpy(&w1, p + n - 8, 8);
    return k == SPA_V_BYTES || !((w0 | w1) & 0x8080808080808080ull);
}

/* What spc_nested_on_const would scan of a str/bytes constant of kind k
 * (its first kept bytes p, of len; all len at p when whole, SPA_VF_WHOLE):
 * the bytes (and their encoding) when it is nested content, false when not.
 * A whole constant is read raw to its end (zero-copy: a pickle.loads of a
 * pickle over max_str, joblib's reduction of a large array); the decoded
 * readings, which copy, stay on the kept prefix. Its only effects are on the
 * scan arena (a decoded candidate is kept there) and s->fatal. */
static inline bool nb_find(spc_scan *s, spa_vkind k, const uint8_t *p, uint64_t kept, uint64_t len, bool whole,
                           const uint8_t **data, size_t *dn, const char **enc) {
    if ((k != SPA_V_STR && k != SPA_V_BYTES) || !p) return false;
    size_t n = (size_t)kept;
    if (n < SPC_NESTED_MIN) return false;
    bool trunc = kept < len;
    if (whole && len > (uint64_t)SIZE_MAX) whole = false;
    *data = NULL;
    *enc = "const";
    if (nb_short_none(k, p, n)) return false;
    bool none = spc_sniff_surely_none(p, n);
    if (!none && nb_candidate(s, p, whole ? (size_t)len : n, len)) {
        *data = p;
        *dn = whole ? (size_t)len : n;
    }
    if (!*data && k == SPA_V_STR) {
        bool ascii = true;
        size_t i = 0;
        for (; ascii && n - i >= 8; i += 8) { /* a word at a time */
            uint64_t w;
            memcpy(&w, p + i, 8);
            ascii = !(w & 0x8080808080808080ull);
        }
        for (; i < n && ascii; i++) ascii = p[i] < 0x80;
        if (!ascii && nb_decoded(s, p, n, trunc, nb_latin1, SPC_NESTED_PROBE, data, dn))
            *enc = "latin1";
    }
    if (!*data && n >= 16 && spa_dec_hex_digit(p[0]) >= 0 && spa_dec_hexlike(p, n) &&
        nb_decoded(s, p, n, trunc, nb_hex, SPC_NESTED_PROBE & ~(size_t)1, data, dn))
        *enc = "hex";
    if (!*data && n >= 16 && spa_dec_b64_digit(p[0]) >= 0 && spa_dec_mostly_b64(p, n) &&
        nb_decoded(s, p, n, trunc, nb_b64, SPC_NESTED_PROBE & ~(size_t)3, data, dn))
        *enc = "base64";
    return !s->fatal && *data;
}

/* The VM's kinds-only path asks first (with what on_const reads of the
 * value it would be offered): true when spc_nested_on_const would surely
 * scan nothing (no stream, no note, no change to the scan), so the constant
 * need not exist as a value. False (the VM then runs the stream on its
 * general path, which calls spc_nested_on_const) otherwise. */
static __attribute__((noinline)) bool nb_inert(spc_scan *s, spa_vkind k, const uint8_t *p, uint64_t kept,
                                               uint64_t len, bool whole) {
    const uint8_t *data;
    size_t dn = 0;
    const char *enc;
    return !nb_find(s, k, p, kept, len, whole, &data, &dn, &enc) && !s->fatal;
}

bool spc_nested_const_inert(void *ud, spa_vkind k, const uint8_t *p, uint64_t kept, uint64_t len, bool whole) {
    spc_scan *s = ud;
    if ((k == SPA_V_STR || k == SPA_V_BYTES) && p && nb_short_none(k, p, (size_t)kept)) return !s->fatal;
    return nb_inert(s, k, p, kept, len, whole);
}

void spc_nested_gate(uint8_t gate[256]) {
    _Static_assert(NB_SHORT <= UINT8_MAX, "a byte holds the bound");
    for (unsigned c = 0; c < 256; c++) gate[c] = (uint8_t)nb_short_end((uint8_t)c);
}

uint32_t spc_nested_on_const(void *ud, spa_scan_ctx *sc, const spa_val *v, uint32_t depth,
                             uint32_t parent_stream) {
    spc_scan *s = ud;
    const uint8_t *data = NULL;
    size_t dn = 0;
    const char *enc = "const";
    if (!v || !nb_find(s, (spa_vkind)v->kind, v->u.s.p, v->u.s.kept, v->u.s.len, (v->flags & SPA_VF_WHOLE) != 0,
                       &data, &dn, &enc))
        return UINT32_MAX;
    bool trunc = data == v->u.s.p ? dn < v->u.s.len : v->u.s.kept < v->u.s.len; /* read raw, or decoded */

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
