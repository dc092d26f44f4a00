/* sniff.c - content sniffing by bytes only: container magics (zip, tar, npy,
 * compressors, 7z) and a strict raw-pickle plausibility walk that accepts
 * every stream the C unpickler accepts (protocol 0 to 5, with or without
 * PROTO) and rejects text, source code, ELF and JSON cheaply. */
#include <string.h>

#include "containers.h"
#include "opcodes.h"

/* ------------------------------------------------------------------ magics */
static bool sn_has(const uint8_t *p, size_t n, const char *m, size_t mn) {
    return n >= mn && memcmp(p, m, mn) == 0;
}

/* A tar header block: ustar magic, or (v7 tar) a valid octal checksum. */
static bool sn_is_tar(const uint8_t *p, size_t n) {
    if (n < 512) return false;
    if (memcmp(p + 257, "ustar", 5) == 0) return true;
    /* v7: checksum field at 148, 8 bytes octal, computed with the field as spaces */
    uint64_t want = 0;
    size_t i = 148;
    while (i < 156 && p[i] == ' ') i++;
    size_t digits = 0;
    for (; i < 156 && p[i] >= '0' && p[i] <= '7'; i++, digits++) want = want * 8 + (uint64_t)(p[i] - '0');
    if (digits == 0) return false;
    for (; i < 156; i++) if (p[i] != ' ' && p[i] != '\0') return false;
    uint64_t sum = 0;
    for (size_t k = 0; k < 512; k++) sum += (k >= 148 && k < 156) ? (uint64_t)' ' : p[k];
    /* the name must be a non-empty printable string, else random data with a lucky sum */
    if (p[0] == 0) return false;
    return sum == want && sum > 8u * ' ';
}

static bool sn_is_zlib(const uint8_t *p, size_t n) {
    if (n < 2) return false;
    if ((p[0] & 0x0f) != 8 || (p[0] >> 4) > 7) return false;
    if (((unsigned)p[0] * 256u + p[1]) % 31u != 0) return false;
    return (p[1] & 0x20) == 0; /* no preset dictionary */
}

bool spc_is_torch_legacy(const uint8_t *p, size_t n) {
    static const uint8_t magic[10] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
    if (n >= 15 && p[0] == 0x80 && p[1] <= 5) {
        size_t i = 2;
        if (p[i] == 0x95) i += 9; /* FRAME (protocol 4+) */
        if (n >= i + 12 && p[i] == 0x8a && p[i + 1] == 10 && memcmp(p + i + 2, magic, 10) == 0) return true;
    }
    /* protocol 0/1: LONG text of 0x1950a86a20f9469cfc6c */
    static const char txt[] = "L119547037146038801333356L\n";
    return sn_has(p, n, txt, sizeof txt - 1);
}

spa_format spc_sniff(const uint8_t *p, size_t n, uint64_t total) {
    if (n == 0) return SPA_FMT_NONE;
    if (sn_has(p, n, "PK\x03\x04", 4) || sn_has(p, n, "PK\x05\x06", 4) ||
        sn_has(p, n, "PK\x07\x08", 4) || sn_has(p, n, "PK\x06\x06", 4))
        return SPA_FMT_ZIP;
    if (sn_has(p, n, "\x93NUMPY", 6)) return SPA_FMT_NPY;
    if (sn_has(p, n, "\x1f\x8b", 2)) return SPA_FMT_GZIP;
    if (n >= 4 && sn_has(p, n, "BZh", 3) && p[3] >= '1' && p[3] <= '9') return SPA_FMT_BZ2;
    if (sn_has(p, n, "\xfd" "7zXZ\x00", 6)) return SPA_FMT_XZ;
    if (sn_has(p, n, "\x5d\x00\x00", 3)) return SPA_FMT_XZ; /* lzma-alone (joblib 'lzma') */
    if (sn_has(p, n, "\x28\xb5\x2f\xfd", 4)) return SPA_FMT_ZSTD;
    if (sn_has(p, n, "\x04\x22\x4d\x18", 4)) return SPA_FMT_LZ4;
    if (sn_has(p, n, "ZF", 2) && n >= 4 && (p[2] == '0' || p[2] == ' ')) return SPA_FMT_JOBLIB; /* joblib < 0.10 zfile */
    if (sn_has(p, n, "7z\xbc\xaf\x27\x1c", 6)) return SPA_FMT_UNSCANNABLE;
    if (sn_has(p, n, "Rar!\x1a\x07", 6)) return SPA_FMT_UNSCANNABLE;
    if (sn_is_tar(p, n)) return SPA_FMT_TAR;
    if (spc_is_torch_legacy(p, n)) return SPA_FMT_TORCH_LEGACY;
    /* zlib's two-byte header is weak: with a small window its first byte can
     * be '(' 'X' 'h' ... ("(S" is a valid zlib header). Real zlib streams
     * start with 'x' (not an opcode); otherwise a plausible pickle wins. */
    spc_pk pk = spc_pickle_plausible(p, n, total);
    if (sn_is_zlib(p, n) && (p[0] == 0x78 || pk == SPC_PK_NO)) return SPA_FMT_ZLIB;
    if (pk != SPC_PK_NO) return SPA_FMT_PICKLE;
    return SPA_FMT_NONE;
}

spa_format spa_sniff(const uint8_t *p, size_t n) {
    if (!p) return SPA_FMT_NONE;
    return spc_sniff(p, n, UINT64_MAX);
}

static size_t sn_pread(const spa_src *src, uint8_t *buf, size_t want, uint64_t off) {
    size_t got = 0;
    while (got < want) {
        ssize_t r = src->pread(src->ctx, buf + got, want - got, off + got);
        if (r <= 0) break;
        got += (size_t)r;
    }
    return got;
}

spa_format spa_sniff_src(const spa_src *src) {
    if (!src || !src->pread || src->size == 0) return SPA_FMT_NONE;
    uint8_t head[SPC_HEAD];
    size_t want = src->size < SPC_HEAD_SMALL ? (size_t)src->size : SPC_HEAD_SMALL;
    size_t got = sn_pread(src, head, want, 0);
    spa_format f = spc_sniff(head, got, got < want ? got : src->size);
    if (f == SPA_FMT_PICKLE && got == want && src->size > got) {
        want = src->size < SPC_HEAD ? (size_t)src->size : SPC_HEAD;
        got += sn_pread(src, head + got, want - got, got);
        f = spc_sniff(head, got, got < want ? got : src->size);
    }
    if (f == SPA_FMT_NONE && src->size >= 22) {
        uint8_t tail[22];
        if (sn_pread(src, tail, sizeof tail, src->size - sizeof tail) == sizeof tail &&
            memcmp(tail, "PK\x05\x06", 4) == 0 && tail[20] == 0 && tail[21] == 0)
            f = SPA_FMT_ZIP;
    }
    return f;
}

/* ------------------------------------------------------------------ pickle walk */
/* An abstract unpickler: it tracks only stack heights, marks and which memo
 * keys exist. It answers "would CPython certainly fail here?" and never
 * rejects what the loader accepts: where unsure it goes on. */

typedef struct sn_walk {
    const uint8_t *p;
    size_t n, pos;
    uint64_t total;
    int64_t h;                       /* stack height */
    int64_t marks[SPC_SNIFF_MARKS];
    uint32_t nmarks;
    bool marks_lost;                 /* deeper than we track: stop judging */
    uint8_t memo[32];                /* keys 0..255 defined */
    uint64_t memo_n;                 /* distinct keys (MEMOIZE uses it) */
    bool memo_unknown;               /* a key we could not track: never reject a GET */
    bool effect;                     /* an import was seen (GLOBAL, INST, STACK_GLOBAL of strings) */
    unsigned imports, calls;         /* imports; REDUCE/BUILD/NEWOBJ(_EX)/OBJ/INST */
    uint8_t tag[SPC_SNIFF_MARKS];    /* per stack slot: SN_T_* (slots above are unknown) */
} sn_walk;

enum { SN_T_UNKNOWN = 0, SN_T_STR, SN_T_OTHER };

static void sn_push(sn_walk *w, uint8_t t) {
    if (w->h >= 0 && w->h < (int64_t)SPC_SNIFF_MARKS) w->tag[w->h] = t;
    w->h++;
}

static uint8_t sn_tag(const sn_walk *w, int64_t depth) {
    int64_t i = w->h - depth;
    return (i >= 0 && i < (int64_t)SPC_SNIFF_MARKS) ? w->tag[i] : SN_T_UNKNOWN;
}

enum { SN_GO = 0, SN_FAIL, SN_WINDOW, SN_STOP };

static int64_t sn_fence(const sn_walk *w) { return w->nmarks ? w->marks[w->nmarks - 1] : 0; }

/* need k values above the fence */
static int sn_need(const sn_walk *w, int64_t k) {
    if (w->marks_lost) return SN_GO;
    return (w->h - sn_fence(w) >= k) ? SN_GO : SN_FAIL;
}

/* n bytes of argument: FAIL if they run past the known end, WINDOW if past n */
static int sn_arg(sn_walk *w, uint64_t k) {
    if (w->total != UINT64_MAX && k > w->total - w->pos) return SN_FAIL;
    if (k > w->n - w->pos) return SN_WINDOW;
    return SN_GO;
}

/* one '\n'-terminated line starting at pos: sets *len (without \n) */
static int sn_line(sn_walk *w, size_t *len) {
    const uint8_t *nl = memchr(w->p + w->pos, '\n', w->n - w->pos);
    if (!nl) return (w->total != UINT64_MAX && w->total <= w->n) ? SN_FAIL : SN_WINDOW;
    *len = (size_t)(nl - (w->p + w->pos));
    return SN_GO;
}

static bool sn_space(uint8_t c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

/* A line CPython's int()/strtol/float parsing could accept: optional
 * surrounding whitespace, no inner whitespace, [0-9A-Za-z_+-.] only, and a
 * digit (or '.', or inf/nan for floats) after an optional sign. */
static bool sn_numeric(const uint8_t *s, size_t n, bool is_float) {
    size_t a = 0, b = n;
    while (a < b && sn_space(s[a])) a++;
    while (b > a && sn_space(s[b - 1])) b--;
    if (a == b) return false;
    for (size_t i = a; i < b; i++) {
        uint8_t c = s[i];
        bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  c == '_' || c == '+' || c == '-' || c == '.';
        if (!ok) return false;
    }
    if (s[a] == '+' || s[a] == '-') a++;
    if (a == b) return false;
    if (s[a] >= '0' && s[a] <= '9') return true;
    if (is_float) {
        uint8_t c = (uint8_t)(s[a] | 0x20);
        return s[a] == '.' || c == 'i' || c == 'n';
    }
    return false;
}

/* Continuation bytes of the strict UTF-8 sequence led by the non-ASCII byte
 * s[i] (1 to 3), or 0 when s[i..n) does not hold a valid sequence. */
static size_t sn_utf8_cont(const uint8_t *s, size_t n, size_t i) {
    uint8_t c = s[i];
    size_t k = (c >= 0xc2 && c <= 0xdf) ? 1 : (c >= 0xe0 && c <= 0xef) ? 2 : (c >= 0xf0 && c <= 0xf4) ? 3 : 0;
    if (k == 0 || k > n - 1 - i) return 0;
    for (size_t j = 1; j <= k; j++)
        if ((s[i + j] & 0xc0) != 0x80) return 0;
    return k;
}

/* A module or attribute name the loader could import: the C unpickler
 * decodes both lines as strict UTF-8 before importing (a bad sequence fails
 * with nothing imported); no whitespace or control bytes. */
static bool sn_name(const uint8_t *s, size_t n) {
    if (n == 0) return false;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c < 0x80) {
            if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == '.'))
                return false;
            continue;
        }
        size_t k = sn_utf8_cont(s, n, i);
        if (k == 0) return false;
        i += k;
    }
    return true;
}

/* Strict UTF-8 (what both loaders decode the name line with). */
static bool sn_utf8(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (s[i] < 0x80) continue;
        size_t k = sn_utf8_cont(s, n, i);
        if (k == 0) return false;
        i += k;
    }
    return true;
}

static void sn_memo_def(sn_walk *w, uint64_t key) {
    if (key < 256) {
        if (!(w->memo[key >> 3] & (1u << (key & 7)))) w->memo_n++;
        w->memo[key >> 3] |= (uint8_t)(1u << (key & 7));
    } else {
        w->memo_unknown = true;
    }
}

static int sn_memo_get(const sn_walk *w, uint64_t key) {
    if (w->memo_unknown) return SN_GO;
    if (key < 256 && (w->memo[key >> 3] & (1u << (key & 7)))) return SN_GO;
    return SN_FAIL;
}

static uint64_t sn_le(const uint8_t *p, unsigned k) {
    uint64_t v = 0;
    for (unsigned i = 0; i < k; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* The argument of an opcode at w->pos, by its kind in the opcode table
 * (opcodes.def): a fixed-width one is skipped and its value put in *k (little-
 * endian; BINFLOAT's value is not used); counted data is skipped with its
 * length field (*k = the length); a text line stays in place, *k = its length
 * without the newline. GLOBAL/INST (two lines) read their own. */
static int sn_skip_arg(sn_walk *w, const spa_opinfo *oi, uint64_t *k) {
    int r;
    size_t len = 0;
    unsigned width = spa_arg_width(oi->kind);
    *k = 0;
    switch (oi->kind) {
    case SPA_ARG_NONE: case SPA_ARG_LINE2:
        return SN_GO;
    case SPA_ARG_LINE:
        if ((r = sn_line(w, &len)) != SN_GO) return r;
        *k = len;
        return SN_GO;
    case SPA_ARG_CNT1: case SPA_ARG_CNT4: case SPA_ARG_CNT4S: case SPA_ARG_CNT8:
        if ((r = sn_arg(w, width)) != SN_GO) return r;
        *k = sn_le(w->p + w->pos, width);
        if (oi->kind == SPA_ARG_CNT4S && (*k & 0x80000000u)) return SN_FAIL; /* negative */
        w->pos += width;
        if ((r = sn_arg(w, *k)) != SN_GO) return r;
        w->pos += (size_t)*k;
        return SN_GO;
    default:
        if ((r = sn_arg(w, width)) != SN_GO) return r;
        *k = sn_le(w->p + w->pos, width);
        w->pos += width;
        return SN_GO;
    }
}

/* The stack effect in the opcode table: take oi->pop values (from above the
 * topmost MARK, then the MARK and oi->below values under it, for
 * SPA_STK_MARK), then leave oi->push values (or a MARK). */
static int sn_effect(sn_walk *w, const spa_opinfo *oi) {
    if (oi->stk & SPA_STK_PUSHMARK) {
        if (w->nmarks == SPC_SNIFF_MARKS) w->marks_lost = true;
        else if (!w->marks_lost) w->marks[w->nmarks++] = w->h;
        return SN_GO;
    }
    if (!(oi->stk & SPA_STK_MARK)) {
        if (sn_need(w, oi->pop) != SN_GO) return SN_FAIL;
        w->h -= oi->pop;
    } else if (w->marks_lost) {
        w->h -= oi->below;
    } else {
        if (!w->nmarks) return SN_FAIL;
        int64_t m = w->marks[w->nmarks - 1];
        if (w->h - m < oi->pop || m < oi->below) return SN_FAIL; /* C: no target below the mark */
        w->nmarks--;
        w->h = m - oi->below;
    }
    for (unsigned i = 0; i < oi->push; i++) sn_push(w, (oi->stk & SPA_STK_STR) ? SN_T_UNKNOWN : SN_T_OTHER);
    return SN_GO;
}

/* GET/PUT with a decimal line of length len at w->pos */
static int sn_memo_line(sn_walk *w, bool get, size_t len) {
    uint64_t key = 0;
    bool ok = len > 0, big = false;
    for (size_t i = 0; i < len; i++) {
        uint8_t c = w->p[w->pos + i];
        if (c < '0' || c > '9') { ok = false; break; }
        if (key > 100000000u) big = true; else key = key * 10 + (uint64_t)(c - '0');
    }
    w->pos += len + 1;
    if (get) {
        if (!ok || big) { w->memo_unknown = true; sn_push(w, SN_T_UNKNOWN); return SN_GO; }
        int r = sn_memo_get(w, key);
        if (r == SN_GO) sn_push(w, SN_T_UNKNOWN);
        return r;
    }
    if (sn_need(w, 1) != SN_GO) return SN_FAIL;
    if (!ok || big) w->memo_unknown = true; else sn_memo_def(w, key);
    return SN_GO;
}

/* GLOBAL / INST: module\nname\n. The module line must be whole and name an
 * importable module. The import happens before the attribute lookup, so the
 * name line only has to decode: and the pure-Python loader (joblib's)
 * imports even when EOF cuts the name line (it takes line[:-1]). */
static int sn_global_lines(sn_walk *w) {
    size_t len = 0;
    int r = sn_line(w, &len);
    if (r == SN_FAIL) {
        /* EOF inside the module line: the pure-Python loader still imports
         * line[:-1] (with an empty name) before it fails */
        size_t rest = w->n - w->pos;
        if (rest >= 2 && sn_name(w->p + w->pos, rest - 1)) { w->effect = true; w->imports++; }
        return SN_FAIL;
    }
    if (r != SN_GO) return r;
    if (!sn_name(w->p + w->pos, len)) return SN_FAIL;
    w->pos += len + 1;
    r = sn_line(w, &len);
    if (r == SN_FAIL) { /* EOF inside the name line: imported, then truncated */
        w->effect = true;
        w->imports++;
        return SN_FAIL;
    }
    if (r != SN_GO) return r;
    if (!sn_utf8(w->p + w->pos, len)) return SN_FAIL;
    w->pos += len + 1;
    w->effect = true;
    w->imports++;
    return SN_GO;
}

/* What an opcode checks of its argument and the stack beyond the table's
 * argument kind and stack effect (line text, memo keys, imports). Returns
 * SN_GO to go on with the table's stack effect, or the step's result. */
static int sn_check(sn_walk *w, uint8_t op, uint64_t k, bool *done) {
    const uint8_t *s = w->p + w->pos;
    size_t len = (size_t)k, b = len;
    *done = true;
    switch (op) {
    case SPA_OP_POP: /* may pop a mark (C unpickler) */
        if (!w->marks_lost && w->nmarks && w->marks[w->nmarks - 1] == w->h) { w->nmarks--; return SN_GO; }
        break;
    case SPA_OP_DUP: /* the copy keeps the value's tag */
        if (sn_need(w, 1) != SN_GO) return SN_FAIL;
        sn_push(w, sn_tag(w, 1));
        return SN_GO;
    case SPA_OP_INT: case SPA_OP_LONG: case SPA_OP_FLOAT:
        if (!sn_numeric(s, (op == SPA_OP_LONG && len && s[len - 1] == 'L') ? len - 1 : len, op == SPA_OP_FLOAT))
            return SN_FAIL;
        w->pos += len + 1;
        break;
    case SPA_OP_STRING: /* quoted; CPython strips trailing whitespace */
        while (b > 0 && sn_space(s[b - 1])) b--;
        if (b < 2 || (s[0] != '\'' && s[0] != '"') || s[b - 1] != s[0]) return SN_FAIL;
        w->pos += len + 1;
        break;
    case SPA_OP_UNICODE: case SPA_OP_PERSID: /* PERSID's result may be a str */
        w->pos += len + 1;
        break;
    case SPA_OP_GET: case SPA_OP_PUT:
        return sn_memo_line(w, op == SPA_OP_GET, len);
    case SPA_OP_BINGET: case SPA_OP_LONG_BINGET: {
        int r = sn_memo_get(w, k);
        if (r == SN_GO) sn_push(w, SN_T_UNKNOWN);
        return r;
    }
    case SPA_OP_BINPUT: case SPA_OP_LONG_BINPUT: case SPA_OP_MEMOIZE: /* the top stays as it is */
        if (sn_need(w, 1) != SN_GO) return SN_FAIL;
        sn_memo_def(w, op == SPA_OP_MEMOIZE ? w->memo_n : k);
        return SN_GO;
    case SPA_OP_PROTO:
        if (k > 5) return SN_FAIL;
        break;
    case SPA_OP_GLOBAL: case SPA_OP_INST: {
        int r = sn_global_lines(w);
        if (r != SN_GO) return r;
        break;
    }
    case SPA_OP_STACK_GLOBAL: /* an import when both operands may be str */
        if (sn_need(w, 2) != SN_GO) return SN_FAIL;
        if (sn_tag(w, 1) != SN_T_OTHER && sn_tag(w, 2) != SN_T_OTHER) { w->effect = true; w->imports++; }
        break;
    case SPA_OP_SETITEMS: /* pairs above the mark */
        if (!w->marks_lost && w->nmarks && ((w->h - w->marks[w->nmarks - 1]) & 1)) return SN_FAIL;
        break;
    }
    *done = false;
    return SN_GO;
}

/* One opcode at w->pos. Returns SN_GO, SN_FAIL, SN_WINDOW or SN_STOP. The
 * argument widths and stack effects are the opcode table's (opcodes.def);
 * sn_check adds what the loader checks beyond them. */
static int sn_step(sn_walk *w) {
    uint8_t op = w->p[w->pos];
    const spa_opinfo *oi = spa_op_info(op);
    if (!oi) return SN_FAIL; /* not an opcode */
    w->pos++;
    uint64_t k;
    bool done;
    int r = sn_skip_arg(w, oi, &k);
    if (r == SN_GO) r = sn_check(w, op, k, &done);
    if (r != SN_GO || done) return r;
    if ((r = sn_effect(w, oi)) != SN_GO) return r;
    switch (op) {
    case SPA_OP_REDUCE: case SPA_OP_BUILD: case SPA_OP_NEWOBJ: case SPA_OP_NEWOBJ_EX:
    case SPA_OP_OBJ: case SPA_OP_INST:
        w->calls++;
        break;
    case SPA_OP_STOP:
        return SN_STOP;
    }
    return SN_GO;
}

spc_pk spc_pickle_walk(const uint8_t *p, size_t n, uint64_t total, spc_walk_info *info) {
    spc_walk_info dummy;
    if (!info) info = &dummy;
    memset(info, 0, sizeof *info);
    if (!p || n == 0) return SPC_PK_NO;
    /* only the scalars and the memo bitmap need zeroing: marks[] is read below
     * nmarks only, tag[] below h only, and both are written on the way up (a
     * full memset of this struct dominated the cost of sniffing short strings) */
    sn_walk w;
    w.pos = 0;
    w.h = 0;
    w.nmarks = 0;
    w.marks_lost = false;
    memset(w.memo, 0, sizeof w.memo);
    w.memo_n = 0;
    w.memo_unknown = false;
    w.effect = false;
    w.imports = w.calls = 0;
    w.p = p;
    w.n = n;
    w.total = total;
    if (total != UINT64_MAX && total < n) w.n = (size_t)total;
    spc_pk res = SPC_PK_MAYBE;
    unsigned ops;
    for (ops = 0; ops < SPC_SNIFF_OPS; ops++) {
        if (w.pos >= w.n) {
            if (w.total != UINT64_MAX && w.pos >= w.total)
                res = w.effect ? SPC_PK_YES : SPC_PK_NO; /* EOF before STOP */
            else
                res = ops >= 1 ? SPC_PK_MAYBE : SPC_PK_NO;
            break;
        }
        int r = sn_step(&w);
        if (r == SN_STOP) { res = SPC_PK_YES; info->stopped = true; break; }
        if (r == SN_FAIL) { res = w.effect ? SPC_PK_YES : SPC_PK_NO; info->failed = true; break; }
        if (r == SN_WINDOW) { res = SPC_PK_MAYBE; break; }
    }
    info->effect = w.effect;
    info->imports = w.imports;
    info->calls = w.calls;
    info->end = w.pos;
    info->ops = ops;
    return res;
}

spc_pk spc_pickle_plausible(const uint8_t *p, size_t n, uint64_t total) {
    return spc_pickle_walk(p, n, total, NULL);
}
