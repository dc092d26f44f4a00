/* sniff.c - the recogniser: content sniffing by bytes only. The magic test
 * of every format in formats.def (container part) and THE function that
 * says whether a source is pickle-bearing, shared by the preload and every
 * content the scan dispatches (spc_recognise: head and tail reads); then a
 * strict raw-pickle plausibility walk that accepts every stream the C
 * unpickler accepts (protocol 0 to 5, with or without PROTO) and rejects
 * text, source code, ELF and JSON cheaply. */
#include <string.h>

#include "containers.h"
#include "opcodes.h"
#include "opcodes_stack.inc" /* SPA_OPSTK_<NAME>: generated from opcodes.def */

/* ------------------------------------------------------------------ magics */
/* Each says whether content starting with p[0..n) (total bytes, UINT64_MAX
 * if unknown) can be read by the loaders of its format. They follow the
 * real parsers' acceptance, not the writers' habits. */
static bool sn_has(const uint8_t *p, size_t n, const char *m, size_t mn) {
    return n >= mn && memcmp(p, m, mn) == 0;
}

static uint32_t sn_le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int spc_magic_zip(const uint8_t *p, size_t n, uint64_t total) {
    (void)total; /* a random-access content is a zip only with an end record: spc_recognise */
    return (sn_has(p, n, "PK\x03\x04", 4) || sn_has(p, n, "PK\x05\x06", 4) || sn_has(p, n, "PK\x07\x08", 4) ||
            sn_has(p, n, "PK\x06\x06", 4)) ? SPC_M_YES : SPC_M_NO;
}

int spc_magic_npy(const uint8_t *p, size_t n, uint64_t total) {
    (void)total;
    return sn_has(p, n, "\x93NUMPY", 6) ? SPC_M_YES : SPC_M_NO;
}

int spc_magic_gzip(const uint8_t *p, size_t n, uint64_t total) {
    (void)total; /* gzip.py checks the two magic bytes, then the method (decomp.c) */
    return sn_has(p, n, "\x1f\x8b", 2) ? SPC_M_YES : SPC_M_NO;
}

int spc_magic_bz2(const uint8_t *p, size_t n, uint64_t total) {
    (void)total;
    return (n >= 4 && sn_has(p, n, "BZh", 3) && p[3] >= '1' && p[3] <= '9') ? SPC_M_YES : SPC_M_NO;
}

/* liblzma's .lzma (alone) header as its auto decoder reads it (lzma.open,
 * LZMAFile, pandas .xz, joblib 'lzma' all use FORMAT_AUTO, i.e. the "picky"
 * alone decoder): a properties byte with lc+lp <= 4, a dictionary size of
 * 2^n, 2^n + 2^(n-1) or UINT32_MAX (0 passes the same arithmetic), an
 * uncompressed size below 2^38 or unknown (all ones). */
static bool sn_lzma_alone(const uint8_t *p, size_t n, uint64_t total) {
    if (total != UINT64_MAX && total < 13) return false;
    if (n < 1 || p[0] > (4 * 5 + 4) * 9 + 8) return false;
    unsigned b = p[0], pb = b / 45;
    b -= pb * 45;
    unsigned lp = b / 9, lc = b - lp * 9;
    if (lc + lp > 4) return false;
    if (n < 5) return true;
    uint32_t dict = sn_le32(p + 1);
    if (dict != UINT32_MAX) {
        uint32_t d = dict - 1;
        d |= d >> 2; d |= d >> 3; d |= d >> 4; d |= d >> 8; d |= d >> 16;
        if (++d != dict) return false;
    }
    if (n < 13) return true;
    uint64_t usize = (uint64_t)sn_le32(p + 5) | (uint64_t)sn_le32(p + 9) << 32;
    /* an empty stream holds nothing to unpickle */
    return usize == UINT64_MAX || (usize > 0 && usize < (1ull << 38));
}

int spc_magic_xz(const uint8_t *p, size_t n, uint64_t total) {
    if (sn_has(p, n, "\xfd" "7zXZ\x00", 6)) return SPC_M_YES;
    if (sn_has(p, n, "LZIP", 4)) return SPC_M_YES; /* liblzma >= 5.4 auto decoder: lzip */
    if (!sn_lzma_alone(p, n, total)) return SPC_M_NO;
    /* 5d 00 is what every writer emits (joblib's own 'lzma' prefix); any
     * other valid header is weak evidence: its first byte may be an opcode */
    return (p[0] == 0x5d && n >= 2 && p[1] == 0) ? SPC_M_YES : SPC_M_WEAK;
}

int spc_magic_zstd(const uint8_t *p, size_t n, uint64_t total) {
    (void)total;
    if (n < 4) return SPC_M_NO;
    uint32_t m = sn_le32(p);
    if (m == 0xFD2FB528u) return SPC_M_YES;                      /* a zstd frame */
    if ((m & 0xFFFFFFF0u) == 0x184D2A50u) return SPC_M_YES;      /* a skippable frame (any of 16) */
    if (m >= 0xFD2FB51Eu && m <= 0xFD2FB527u) return SPC_M_YES; /* legacy frames v0.1-v0.7 */
    return SPC_M_NO;
}

int spc_magic_lz4(const uint8_t *p, size_t n, uint64_t total) {
    (void)total;
    return sn_has(p, n, "\x04\x22\x4d\x18", 4) ? SPC_M_YES : SPC_M_NO;
}

/* CPython's PyLong_FromString over bytes (Py_ISSPACE) or str (the
 * Unicode whitespace of the ASCII range, which int(str) maps to spaces). */
static bool sn_py_space(uint8_t c, bool text) {
    return c == ' ' || (c >= '\t' && c <= '\r') || (text && c >= 0x1c && c <= 0x1f);
}

static int sn_digit(uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'z') return c - 'a' + 10;
    if (c >= 'A' && c <= 'Z') return c - 'A' + 10;
    return 99;
}

bool spc_py_int(const uint8_t *s, size_t n, unsigned base, bool text, int64_t *v) {
    size_t i = 0;
    while (i < n && sn_py_space(s[i], text)) i++;
    bool neg = false;
    if (i < n && (s[i] == '+' || s[i] == '-')) neg = s[i++] == '-';
    bool prefixed = false;
    if (i + 1 < n && s[i] == '0') {
        uint8_t c = (uint8_t)(s[i + 1] | 0x20);
        if ((base == 16 && c == 'x') || (base == 8 && c == 'o') || (base == 2 && c == 'b')) {
            i += 2;
            prefixed = true;
        }
    }
    uint64_t acc = 0;
    size_t digits = 0;
    bool under = prefixed; /* an underscore may follow the prefix */
    for (; i < n; i++) {
        if (s[i] == '_') {
            if (!under) return false;
            under = false;
            if (i + 1 >= n || sn_digit(s[i + 1]) >= (int)base) return false;
            continue;
        }
        int d = sn_digit(s[i]);
        if (d >= (int)base) break;
        acc = acc > (UINT64_MAX - (unsigned)d) / base ? UINT64_MAX : acc * base + (unsigned)d;
        digits++;
        under = true;
    }
    if (digits == 0) return false;
    while (i < n && sn_py_space(s[i], text)) i++;
    if (i != n) return false;
    if (v) {
        if (acc > (uint64_t)INT64_MAX) *v = neg ? INT64_MIN : INT64_MAX;
        else *v = neg ? -(int64_t)acc : (int64_t)acc;
    }
    return true;
}

/* joblib < 0.10 "ZF" files: joblib's _detect_compressor sees the prefix "ZF",
 * then read_zfile parses the next 19 bytes with int(x, 16): any text
 * CPython's int() accepts in base 16 (spc_py_int). */
int spc_magic_zfile(const uint8_t *p, size_t n, uint64_t total) {
    if (!sn_has(p, n, "ZF", 2)) return SPC_M_NO;
    if (n < SPC_ZFILE_HEADER) return (total != UINT64_MAX && total < SPC_ZFILE_HEADER) ? SPC_M_NO : SPC_M_YES;
    return spc_py_int(p + 2, SPC_ZFILE_HEADER - 2, 16, false, NULL) ? SPC_M_YES : SPC_M_NO;
}

int spc_magic_unscannable(const uint8_t *p, size_t n, uint64_t total) {
    (void)total;
    return (sn_has(p, n, "7z\xbc\xaf\x27\x1c", 6) || sn_has(p, n, "Rar!\x1a\x07", 6)) ? SPC_M_YES : SPC_M_NO;
}

int spc_magic_tar(const uint8_t *p, size_t n, uint64_t total) {
    (void)total;
    if (n < 512) return SPC_M_NO;
    /* tarfile checks only the checksum (nti + calc_chksums), never the magic */
    return (spc_tar_header_ok(p) || memcmp(p + 257, "ustar", 5) == 0) ? SPC_M_YES : SPC_M_NO;
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

int spc_magic_torch_legacy(const uint8_t *p, size_t n, uint64_t total) {
    (void)total;
    return spc_is_torch_legacy(p, n) ? SPC_M_YES : SPC_M_NO;
}

/* zlib's two-byte header is weak: with a small window its first byte can be
 * '(' 'X' 'h' ... ("(S" is a valid zlib header). Real zlib streams start
 * with 'x' (not an opcode); any other is weak evidence. */
int spc_magic_zlib(const uint8_t *p, size_t n, uint64_t total) {
    (void)total;
    if (n < 2 || (p[0] & 0x0f) != 8 || (p[0] >> 4) > 7) return SPC_M_NO;
    if (((unsigned)p[0] * 256u + p[1]) % 31u != 0 || (p[1] & 0x20)) return SPC_M_NO; /* no preset dictionary */
    return p[0] == 0x78 ? SPC_M_YES : SPC_M_WEAK;
}

int spc_magic_pickle(const uint8_t *p, size_t n, uint64_t total) {
    return spc_pickle_plausible(p, n, total) != SPC_PK_NO ? SPC_M_YES : SPC_M_NO;
}

/* The table, in recognition order (index = spa_format). */
typedef int (*sn_magic_fn)(const uint8_t *, size_t, uint64_t);
static const struct { spa_format f; sn_magic_fn magic; } sn_table[] = {
#define SPA_FMT(id, name, tag, magic, reader) {SPA_FMT_##id, magic},
#include "formats.def"
#undef SPA_FMT
};

/* The first bytes each magic above can accept: its first test is on p[0],
 * so a magic outside this set answers SPC_M_NO whatever follows, and
 * spc_sniff_alt skips it. The VM offers every str/bytes constant to the
 * nested-pickle check, which sniffs it: thirteen calls for the common "no"
 * were most of that check's cost. Keep each line next to its magic's first
 * test in mind; test_sniff checks this set against the magics over every
 * first byte and many tails (test_first_byte_filter). */
#define SN_BIT(id) (1u << SPA_FMT_##id)
#define SN_FIRST(c)                                                                            \
    ((c) == 'P' ? SN_BIT(ZIP) : 0u) | ((c) == 0x93 ? SN_BIT(NPY) : 0u) |                        \
    ((c) == 0x1f ? SN_BIT(GZIP) : 0u) | ((c) == 'B' ? SN_BIT(BZ2) : 0u) |                       \
    /* xz, lzip, or an .lzma properties byte with lc + lp <= 4 (sn_lzma_alone) */               \
    ((c) == 0xfd || (c) == 'L' ||                                                              \
     ((c) <= (4 * 5 + 4) * 9 + 8 && ((c) % 45) / 9 + ((c) % 45) % 9 <= 4) ? SN_BIT(XZ) : 0u) |  \
    /* the low byte of a zstd, skippable or legacy frame magic (little-endian) */              \
    ((c) == 0x28 || ((c) & 0xf0) == 0x50 || ((c) >= 0x1e && (c) <= 0x27) ? SN_BIT(ZSTD) : 0u) | \
    ((c) == 0x04 ? SN_BIT(LZ4) : 0u) | ((c) == 'Z' ? SN_BIT(JOBLIB) : 0u) |                     \
    ((c) == '7' || (c) == 'R' ? SN_BIT(UNSCANNABLE) : 0u) |                                    \
    SN_BIT(TAR) /* any first byte: a header checksum, n >= 512 */ |                            \
    ((c) == 0x80 || (c) == 'L' ? SN_BIT(TORCH_LEGACY) : 0u) |                                  \
    (((c) & 0x0f) == 8 && ((c) >> 4) <= 7 ? SN_BIT(ZLIB) : 0u)
#define SN_R4(b) SN_FIRST(b), SN_FIRST((b) + 1), SN_FIRST((b) + 2), SN_FIRST((b) + 3)
#define SN_R16(b) SN_R4(b), SN_R4((b) + 4), SN_R4((b) + 8), SN_R4((b) + 12)
#define SN_R64(b) SN_R16(b), SN_R16((b) + 16), SN_R16((b) + 32), SN_R16((b) + 48)
static const uint16_t sn_first[256] = { SN_R64(0), SN_R64(64), SN_R64(128), SN_R64(192) };
/* a raw pickle starts with an opcode: anything else fails the walk's first
 * step with no effect (sn_step), i.e. SPC_PK_NO */
static const uint8_t sn_first_op[256] = {
#define OP(name, byte, kind, argname, proto, before, after) [byte] = 1,
#include "opcodes.def"
#undef OP
};
_Static_assert(SPA_FMT_COUNT <= 16, "sn_first holds one bit per format");

/* Does a walk fail at its first step from the empty start whatever follows
 * byte c? A byte that is no opcode (sn_ff_op 0), and an opcode without
 * argument that takes a value or a MARK (2; sn_check's cases for those only
 * ask for values too, and sn_effect finds none): most text starts so ('t',
 * 'l', 'e', 's', 'a', ...), and the VM offers every string constant to the
 * nested-pickle check. From the opcode table's stack effects (the numbers
 * opcodes_stack.awk derives); test_sniff compares the walk with
 * spc_pickle_walk_full on every first byte. */
#define SN_FF4(pop, below, push, stk) (((pop) || ((stk) & SPA_STK_MARK)) && !((stk) & SPA_STK_PUSHMARK))
#define SN_FF(stack) SN_FF4(stack)
static const uint8_t sn_ff_op[256] = {
#define OP(name, byte, kind, argname, proto, before, after) \
    [byte] = (uint8_t)(1 + (kind == SPA_ARG_NONE && SN_FF(SPA_OPSTK_##name))),
#include "opcodes.def"
#undef OP
};
static inline bool sn_fails_first(uint8_t c) { return sn_ff_op[c] != 1; }

/* The formats SN_FIRST has a line for. Any other (a formats.def entry added
 * later) is tried whatever the first byte is: the filter may only skip what it
 * knows cannot match, never a format it has not been told about. */
#define SN_LISTED                                                                               \
    (SN_BIT(ZIP) | SN_BIT(NPY) | SN_BIT(GZIP) | SN_BIT(BZ2) | SN_BIT(XZ) | SN_BIT(ZSTD) |       \
     SN_BIT(LZ4) | SN_BIT(JOBLIB) | SN_BIT(UNSCANNABLE) | SN_BIT(TAR) | SN_BIT(TORCH_LEGACY) |   \
     SN_BIT(ZLIB) | SN_BIT(PICKLE))
#define SN_UNLISTED ((((1u << SPA_FMT_COUNT) - 1u) & ~SN_LISTED) & ~SN_BIT(NONE))

uint32_t spc_sniff_first(uint8_t c) {
    return sn_first[c] | (sn_first_op[c] ? SN_BIT(PICKLE) : 0u) | SN_UNLISTED;
}

spa_format spc_sniff_alt(const uint8_t *p, size_t n, uint64_t total, bool no_zip, spa_format *alt) {
    spa_format weak = SPA_FMT_NONE;
    if (alt) *alt = SPA_FMT_NONE;
    if (!p || n == 0) return SPA_FMT_NONE;
    uint32_t todo = spc_sniff_first(p[0]);
    if (n < 512) todo &= ~SN_BIT(TAR); /* spc_magic_tar: n >= 512 */
    if (no_zip) todo &= ~SN_BIT(ZIP);
    while (todo) { /* ascending bits: the table's order */
        size_t i = (size_t)__builtin_ctz(todo);
        todo &= todo - 1;
        if (!sn_table[i].magic) continue;
        int m = sn_table[i].magic(p, n, total);
        if (m == SPC_M_YES) {
            if (alt) *alt = weak;
            return sn_table[i].f;
        }
        if (m == SPC_M_WEAK && weak == SPA_FMT_NONE) weak = sn_table[i].f;
    }
    if (alt) *alt = weak;
    return SPA_FMT_NONE;
}

bool spc_sniff_none_first(uint8_t c) {
    /* spc_sniff_pickle_only below 512 bytes (TAR needs them), with tables */
    return !(sn_first[c] & ~SN_BIT(TAR)) && !SN_UNLISTED && sn_fails_first(c);
}

bool spc_sniff_surely_none(const uint8_t *p, size_t n) {
    return n && n < 512 && spc_sniff_none_first(p[0]);
}

bool spc_sniff_pickle_only(const uint8_t *p, size_t n) {
    if (!p || n == 0) return false;
    uint32_t todo = spc_sniff_first(p[0]) & ~SN_BIT(NONE);
    if (n < 512) todo &= ~SN_BIT(TAR);
    return todo == SN_BIT(PICKLE);
}

bool spc_sniff_also_pickle(spa_format f, const uint8_t *p, size_t n, uint64_t total) {
    /* PICKLE and TORCH_LEGACY readers start with spc_pickles at offset 0 */
    if (f == SPA_FMT_NONE || f == SPA_FMT_PICKLE || f == SPA_FMT_TORCH_LEGACY) return false;
    return p && n && spc_pickle_walk(p, n, total, NULL) != SPC_PK_NO;
}

spa_format spc_sniff(const uint8_t *p, size_t n, uint64_t total) {
    return spc_sniff_alt(p, n, total, false, NULL);
}

/* ------------------------------------------------------------------ recogniser */
/* Read up to want bytes at off; SPA_E_IO on a failed read (short at EOF is fine). */
static spa_code sn_pread(const spa_src *src, uint8_t *buf, size_t want, uint64_t off, size_t *got) {
    *got = 0;
    while (*got < want) {
        ssize_t r = src->pread(src->ctx, buf + *got, want - *got, off + *got);
        if (r < 0) return SPA_E_IO;
        if (r == 0) break;
        *got += (size_t)r;
    }
    return SPA_OK;
}

/* Last "PK\5\6" in buf[0..n) with at least SPC_ZIP_EOCD bytes from it to the
 * end of the file (buf ends `after` bytes before the end). */
static bool sn_find_eocd(const uint8_t *buf, size_t n, uint64_t after, size_t *at) {
    size_t end = n;
    const uint8_t *q;
    while (end && (q = memrchr(buf, 'P', end)) != NULL) {
        size_t i = (size_t)(q - buf);
        if (n - i >= 4 && memcmp(q, "PK\x05\x06", 4) == 0 && (uint64_t)(n - i) + after >= SPC_ZIP_EOCD) {
            *at = i;
            return true;
        }
        end = i;
    }
    return false;
}

/* Is there a zip end record in the tail, as zipfile (last 22 bytes, then
 * the last signature in the last 64 KiB + 22 bytes) and miniz (the last
 * signature with a whole record after it) find it? */
static spa_code sn_tail_zip(const spa_src *src, uint64_t size, uint8_t *scratch, size_t cap, bool whole,
                            bool *zip) {
    *zip = false;
    if (size < SPC_ZIP_EOCD) return SPA_OK;
    uint64_t span = size < SPC_ZIP_TAIL ? size : SPC_ZIP_TAIL;
    uint8_t small[2048];
    if (!scratch || cap < sizeof small) { scratch = small; cap = sizeof small; }
    /* the common case first: a record right at the end is the last one with
     * a whole record after it, whatever its comment length says */
    size_t got;
    if (sn_pread(src, scratch, SPC_ZIP_EOCD, size - SPC_ZIP_EOCD, &got) != SPA_OK) return SPA_E_IO;
    if (got == SPC_ZIP_EOCD && memcmp(scratch, "PK\x05\x06", 4) == 0) { *zip = true; return SPA_OK; }
    if (!whole) return SPA_OK;
    /* backwards in chunks, overlapping by 3 bytes so no signature is split */
    uint64_t end = size;
    while (end > size - span) {
        uint64_t start = end - (size - span) > cap ? end - cap : size - span;
        size_t at;
        if (sn_pread(src, scratch, (size_t)(end - start), start, &got) != SPA_OK) return SPA_E_IO;
        if (got != end - start) return SPA_OK; /* the source is shorter than it said */
        if (sn_find_eocd(scratch, got, size - end, &at)) { *zip = true; return SPA_OK; }
        if (start == size - span) break;
        end = start + 3;
    }
    return SPA_OK;
}

spa_code spc_recognise(const spa_src *src, uint64_t size, bool file, uint8_t *head, uint8_t *scratch, size_t cap,
                       spc_recog *r) {
    memset(r, 0, sizeof *r);
    r->fmt = r->alt = SPA_FMT_NONE;
    r->size = size;
    if (size == 0) return SPA_OK;
    size_t want = size < SPC_HEAD_SMALL ? (size_t)size : SPC_HEAD_SMALL, got;
    if (sn_pread(src, head, want, 0, &got) != SPA_OK) return SPA_E_IO;
    if (got < want) r->size = size = got; /* shorter than it said */
    bool tail = false;
    if (sn_tail_zip(src, size, scratch, cap, file, &tail) != SPA_OK) return SPA_E_IO;
    /* a file is a zip only with an end record (zipfile, miniz); inside a
     * container only the last 22 bytes are looked at (no loader reads a
     * member as a zip with data before it) and a zip magic is enough */
    bool no_zip = file && !tail;
    spa_format f = spc_sniff_alt(head, got, size, no_zip, &r->alt);
    /* a plausible pickle (also one a container's head allows: scan.c reads
     * both, spc_sniff_also_pickle) is walked over SPC_HEAD bytes */
    if ((f == SPA_FMT_PICKLE || r->alt != SPA_FMT_NONE || spc_sniff_also_pickle(f, head, got, size)) &&
        got == SPC_HEAD_SMALL && size > got) {
        size_t more;
        want = size < SPC_HEAD ? (size_t)size : SPC_HEAD;
        if (sn_pread(src, head + got, want - got, got, &more) != SPA_OK) return SPA_E_IO;
        got += more;
        if (got < want) r->size = size = got;
        f = spc_sniff_alt(head, got, size, no_zip, &r->alt);
    }
    r->got = got;
    r->fmt = f;
    /* bytes before a zip (zipfile reads such files): both readings count */
    r->tail_zip = tail && f != SPA_FMT_ZIP;
    return SPA_OK;
}

spa_code spa_recognise(const spa_src *src, uint8_t *scratch, size_t cap, spa_format *fmt) {
    if (fmt) *fmt = SPA_FMT_NONE;
    if (!src || !src->pread || !fmt) return SPA_E_USAGE;
    uint8_t head[SPC_HEAD];
    spc_recog r;
    spa_code rc = spc_recognise(src, src->size, true, head, scratch, cap, &r);
    if (rc != SPA_OK) return rc;
    *fmt = r.fmt != SPA_FMT_NONE ? r.fmt : r.alt != SPA_FMT_NONE ? r.alt : r.tail_zip ? SPA_FMT_ZIP : SPA_FMT_NONE;
    return SPA_OK;
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

/* The part of an unfinished line in the window (no '\n' before w->n):
 * could it still decode once its end arrives? PERSID's line must be ASCII
 * (both loaders: "persistent IDs in protocol 0 must be ASCII strings"),
 * GLOBAL/INST's strict UTF-8 (a sequence cut by the window's end may still
 * complete). A container's head (a zip's "PK" is PERSID, a tar's name may
 * start with 'c') is decided here instead of at its first newline. */
static bool sn_line_prefix_ok(const sn_walk *w, bool ascii) {
    const uint8_t *s = w->p + w->pos;
    size_t n = w->n - w->pos;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < 0x80) continue;
        if (ascii) return false;
        size_t k = sn_utf8_cont(s, n, i);
        if (k == 0) {
            /* a valid lead whose continuation bytes run past the window */
            uint8_t c = s[i];
            size_t want = (c >= 0xc2 && c <= 0xdf) ? 1 : (c >= 0xe0 && c <= 0xef) ? 2 : (c >= 0xf0 && c <= 0xf4) ? 3 : 0;
            if (want == 0 || want <= n - 1 - i) return false;
            for (size_t j = i + 1; j < n; j++)
                if ((s[j] & 0xc0) != 0x80) return false;
            return true;
        }
        i += k;
    }
    return true;
}

/* An unfinished line of a one-line opcode: can the line it starts still be
 * accepted? PERSID: ASCII; INT/LONG/FLOAT/GET/PUT: int()/float() text (the
 * characters sn_numeric allows, and whitespace); STRING: a leading quote. */
static bool sn_open_line_ok(const sn_walk *w, uint8_t op) {
    const uint8_t *s = w->p + w->pos;
    size_t n = w->n - w->pos;
    switch (op) {
    case SPA_OP_PERSID:
        return sn_line_prefix_ok(w, true);
    case SPA_OP_STRING:
        return n == 0 || s[0] == '\'' || s[0] == '"';
    case SPA_OP_INT: case SPA_OP_LONG: case SPA_OP_FLOAT: case SPA_OP_GET: case SPA_OP_PUT:
        for (size_t i = 0; i < n; i++) {
            uint8_t c = s[i];
            if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                  c == '+' || c == '-' || c == '.' || sn_space(c)))
                return false;
        }
        return true;
    default:
        return true;
    }
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

/* GLOBAL / INST: module\nname\n. Both loaders decode both lines as UTF-8
 * (a line that does not decode fails, nothing imported), then call
 * find_class. A module line that names an importable module is an import;
 * one that does not fails in the find_class that imports, but a loader's own
 * find_class (one that maps old names, or returns a stand-in where the import
 * fails) takes it and reads on: no import there, but the walk goes on, so a
 * payload behind it is still seen. The import happens before the attribute
 * lookup, so the name line only has to decode: and the pure-Python loader
 * (joblib's) imports even when EOF cuts the name line (it takes line[:-1]). */
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
    if (r == SN_WINDOW && !sn_line_prefix_ok(w, false)) return SN_FAIL;
    if (r != SN_GO) return r;
    if (!sn_utf8(w->p + w->pos, len)) return SN_FAIL;
    bool named = sn_name(w->p + w->pos, len);
    w->pos += len + 1;
    r = sn_line(w, &len);
    if (r == SN_WINDOW && !sn_line_prefix_ok(w, false)) return SN_FAIL; /* both lines decode before the import */
    if (r == SN_FAIL) { /* EOF inside the name line: imported, then truncated */
        if (named) { w->effect = true; w->imports++; }
        return SN_FAIL;
    }
    if (r != SN_GO) return r;
    if (!sn_utf8(w->p + w->pos, len)) return SN_FAIL;
    w->pos += len + 1;
    if (named) { w->effect = true; w->imports++; }
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
    case SPA_OP_PERSID: /* the id must be ASCII (both loaders); the result may be a str */
        for (size_t i = 0; i < len; i++)
            if (s[i] >= 0x80) return SN_FAIL;
        w->pos += len + 1;
        break;
    case SPA_OP_UNICODE:
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
    if (r == SN_WINDOW && !sn_open_line_ok(w, op)) r = SN_FAIL; /* fails whatever follows */
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
    size_t wn = (total != UINT64_MAX && total < n) ? (size_t)total : n;
    if (p && wn && sn_fails_first(p[0])) {
        /* what sn_step's first step reports: failed, no effect, the opcode
         * byte consumed when it is one */
        if (info) {
            memset(info, 0, sizeof *info);
            info->failed = true;
            info->end = spa_op_known(p[0]) ? 1 : 0;
        }
        return SPC_PK_NO;
    }
    return spc_pickle_walk_full(p, n, total, info);
}

spc_pk spc_pickle_walk_full(const uint8_t *p, size_t n, uint64_t total, spc_walk_info *info) {
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
