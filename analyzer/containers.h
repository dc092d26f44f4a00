/* containers.h - internal interfaces of the container layer (prefix spc_):
 * sniffing (sniff.c), one reader per wrapper format (zip.c, tar.c, npy.c, decomp.c,
 * joblib.c, nested.c, torch_legacy.c) over the content interface (content.h,
 * content.c), and the dispatch that runs them (scan.c). */
#ifndef SPA_CONTAINERS_H
#define SPA_CONTAINERS_H

#include "content.h"

/* ------------------------------------------------------------------ named constants */
#define SPC_HEAD_SMALL    512u   /* bytes read first from a random-access content */
#define SPC_SNIFF_OPS     512u   /* opcodes the plausibility walk looks at */
#define SPC_NESTED_MIN    8u     /* shorter constants cannot hold a nested payload worth scanning */
#define SPC_SNIFF_MARKS   64u    /* mark depth the plausibility walk tracks exactly */
#define SPC_LEGACY_STREAMS 5u    /* torch legacy: magic, protocol, sys_info, object, keys */
#define SPC_SAFETENSORS_MAX_HEADER (16u << 20) /* a safetensors header we read to rule a pickle out */
#define SPC_ZIP_EOCD      22u    /* zip end of central directory record, no comment */
#define SPC_ZIP_TAIL      (65536u + 22u) /* zipfile searches this much of the tail for it */
#define SPC_RECOG_SCRATCH SPA_RECOG_SCRATCH /* scratch that lets the recogniser read the tail at once */
#define SPC_ZFILE_HEADER  21u    /* joblib < 0.10: "ZF" + 19 bytes of int(x, 16) */
#define SPC_ZIP_MAX_BUFFER (64u << 20) /* a zip found inside a sequential stream is
                                          buffered up to this many bytes (or the
                                          decompression byte limit, if lower) */

/* ------------------------------------------------------------------ sniffing */
/* Result of the raw-pickle plausibility walk. */
typedef enum spc_pk {
    SPC_PK_NO = 0,   /* the loader would fail before doing anything: not a pickle */
    SPC_PK_MAYBE,    /* no definite failure within the bytes examined */
    SPC_PK_YES       /* a complete stream (STOP reached), or a failure after an import */
} spc_pk;

/* Walk opcodes abstractly (stack heights, marks, memo keys) over p[0..n).
 * total: bytes that exist from p on (>= n), or UINT64_MAX when unknown. A
 * definite loader failure before any import (GLOBAL, INST, STACK_GLOBAL of
 * strings) means "not a pickle": the loader fails having done nothing. */
spc_pk spc_pickle_plausible(const uint8_t *p, size_t n, uint64_t total);
/* The same walk, telling how it ended. */
typedef struct spc_walk_info {
    bool effect;    /* an import was seen (GLOBAL, INST, STACK_GLOBAL of strings) */
    unsigned imports, calls; /* imports; REDUCE/BUILD/NEWOBJ(_EX)/OBJ/INST seen */
    bool stopped;   /* STOP reached */
    bool failed;    /* a definite loader failure */
    size_t end;     /* offset after the last opcode examined */
    unsigned ops;   /* opcodes examined */
} spc_walk_info;
spc_pk spc_pickle_walk(const uint8_t *p, size_t n, uint64_t total, spc_walk_info *info);
/* The same without the first-byte shortcut (sn_fails_first): for test_sniff. */
spc_pk spc_pickle_walk_full(const uint8_t *p, size_t n, uint64_t total, spc_walk_info *info);
/* Magic tests of formats.def: NO, YES, or WEAK (yes unless the bytes are
 * also a plausible pickle and do not decompress to pickle-bearing content). */
enum { SPC_M_NO = 0, SPC_M_YES, SPC_M_WEAK };
int spc_magic_zip(const uint8_t *p, size_t n, uint64_t total);
int spc_magic_npy(const uint8_t *p, size_t n, uint64_t total);
int spc_magic_gzip(const uint8_t *p, size_t n, uint64_t total);
int spc_magic_bz2(const uint8_t *p, size_t n, uint64_t total);
int spc_magic_xz(const uint8_t *p, size_t n, uint64_t total);
int spc_magic_zstd(const uint8_t *p, size_t n, uint64_t total);
int spc_magic_lz4(const uint8_t *p, size_t n, uint64_t total);
int spc_magic_zfile(const uint8_t *p, size_t n, uint64_t total);
int spc_magic_unscannable(const uint8_t *p, size_t n, uint64_t total);
int spc_magic_tar(const uint8_t *p, size_t n, uint64_t total);
int spc_magic_torch_legacy(const uint8_t *p, size_t n, uint64_t total);
int spc_magic_zlib(const uint8_t *p, size_t n, uint64_t total);
int spc_magic_pickle(const uint8_t *p, size_t n, uint64_t total);
/* Format of content whose first bytes are p[0..n) (total as above): the
 * first magic of the table that says YES (WEAK ones are not answers). */
spa_format spc_sniff(const uint8_t *p, size_t n, uint64_t total);
/* The same, skipping zip when no_zip; *alt (may be NULL) receives the first
 * WEAK match (NONE if none): it holds only if its first bytes decompress to
 * pickle-bearing content (spc_dec_probe), whatever the answer is. */
spa_format spc_sniff_alt(const uint8_t *p, size_t n, uint64_t total, bool no_zip, spa_format *alt);
/* The formats (bit 1 << spa_format) whose magic may accept content starting
 * with byte c; the others answer SPC_M_NO whatever follows (sniff.c). */
uint32_t spc_sniff_first(uint8_t c);
/* Is the pickle walk the only test spc_sniff_alt can make on p[0..n)? Then it
 * answers SPA_FMT_PICKLE (no alt) exactly when spc_pickle_walk does not say
 * SPC_PK_NO, and a caller that walks anyway may skip it (nested.c). */
bool spc_sniff_pickle_only(const uint8_t *p, size_t n);
/* ... and does that walk fail at its first byte (spc_pickle_walk: SPC_PK_NO)?
 * Then spc_sniff_alt says NONE (no alt) and no walk can find a pickle: the
 * nested-pickle check's cheap "no" for most text. */
bool spc_sniff_surely_none(const uint8_t *p, size_t n);
/* spc_sniff_surely_none holds for every content of 1 to 511 bytes that
 * starts with byte c (and for no content that starts with another). */
bool spc_sniff_none_first(uint8_t c);
/* Must the raw pickle reading at offset 0 be examined too, beside the
 * reading as f (the head's format after weak readings are settled)? Yes
 * when f is a container whose reader does not itself unpickle offset 0
 * (everything but NONE, PICKLE and TORCH_LEGACY) and the head is a
 * plausible pickle by the walk (spc_pickle_walk != SPC_PK_NO): zip's "PK"
 * is PERSID, a tar header starts with any file name, a zstd skippable frame
 * with 'P'/'U'/'V', an .lzma header with LONG1, ... CPython's unpicklers
 * read the same bytes from 0 whatever a container loader makes of them.
 * The walk fails at the first bytes of most containers (gzip, xz, npy,
 * torch zips whose name length is no '\n'), so this costs one short walk. */
bool spc_sniff_also_pickle(spa_format f, const uint8_t *p, size_t n, uint64_t total);
/* What the recogniser found in a random-access content. */
typedef struct spc_recog {
    spa_format fmt;   /* the head's format (NONE: none) */
    spa_format alt;   /* a weak reading the head also allows (NONE: none) */
    bool tail_zip;    /* a zip end record in the tail and the head is not a zip: also a zip */
    size_t got;       /* head bytes read into the caller's buffer */
    uint64_t size;    /* the content's size (smaller than said if reads came up short) */
} spc_recog;
/* THE recogniser (spa_recognise, the preload and spc_dispatch all call it):
 * head (512 bytes, SPC_HEAD for a plausible pickle) into `head` (SPC_HEAD
 * bytes) and the tail's zip end record, read in chunks of `cap` bytes of
 * `scratch` (NULL: 2 KiB on the stack). `file`: src is a whole file (the
 * tail is searched as zipfile does); else a member (last 22 bytes only).
 * SPA_E_IO when a read failed. */
spa_code spc_recognise(const spa_src *src, uint64_t size, bool file, uint8_t *head, uint8_t *scratch, size_t cap,
                       spc_recog *r);
/* Does CPython's int(s, base) accept s[0..n)? (surrounding whitespace,
 * sign, 0x/0o/0b prefix, single underscores between digits). `text`: s was
 * a str (whitespace is then also \x1c-\x1f), else bytes. *v (may be NULL)
 * receives the value (saturated at INT64_MAX/INT64_MIN). */
bool spc_py_int(const uint8_t *s, size_t n, unsigned base, bool text, int64_t *v);
/* A tar header block tarfile accepts: its checksum field (nti: octal text
 * with NULs/spaces, or base-256) equals the unsigned or signed sum. */
bool spc_tar_header_ok(const uint8_t *h);
/* tarfile's nti(): a number field. false when tarfile raises. */
bool spc_tar_nti(const uint8_t *f, size_t n, int64_t *out);
/* Torch legacy magic stream at p? (PROTO n, LONG1 magic, STOP or text LONG) */
bool spc_is_torch_legacy(const uint8_t *p, size_t n);

/* ------------------------------------------------------------------ readers */
/* One per formats.def entry, all of this shape: read content c (its reader
 * or source), dispatch what it holds; fmt is the entry's format;
 * *first_stream (may be NULL) receives the first stream index created. */
spa_code spc_zip(spc_scan *s, spc_content *c, spa_format fmt, uint32_t *first_stream);
spa_code spc_tar(spc_scan *s, spc_content *c, spa_format fmt, uint32_t *first_stream);
spa_code spc_npy(spc_scan *s, spc_content *c, spa_format fmt, uint32_t *first_stream);
/* What an npy header dict h[0..n) (after the length field) says the data is:
 * SPC_NPY_NUMERIC only for the plain spelling of a plain numeric dtype (the
 * data is then never read), SPC_NPY_OBJECT for an object type, else
 * SPC_NPY_UNKNOWN (the data is scanned when it is a plausible pickle). */
enum { SPC_NPY_NUMERIC = 0, SPC_NPY_OBJECT, SPC_NPY_UNKNOWN };
int spc_npy_header_kind(const uint8_t *h, size_t n);
spa_code spc_decomp(spc_scan *s, spc_content *c, spa_format fmt, uint32_t *first_stream);
spa_code spc_torch_legacy(spc_scan *s, spc_content *c, spa_format fmt, uint32_t *first_stream);
spa_code spc_unscannable(spc_scan *s, spc_content *c, spa_format fmt, uint32_t *first_stream);
/* Run the reader of fmt on c (the formats.def dispatch; scan.c). */
spa_code spc_read_as(spc_scan *s, spc_content *c, spa_format fmt, uint32_t *first_stream);
/* Scan memory as if its outermost format were fmt (fuzz harnesses, tests; scan.c). */
spa_code spc_scan_as(const spa_scan_opts *o, const uint8_t *p, size_t n, spa_format fmt, spa_result **out);

/* Private pseudo-formats of the decompressor (beyond spa_format): zip members. */
#define SPC_FMT_DEFLATE  SPA_FMT_ZIP                 /* zip method 8: raw deflate */
#define SPC_FMT_ZIP_LZMA ((int)SPA_FMT_COUNT + 1)     /* zip method 14: header + raw LZMA1 */

/* Decompression as a bounded spa_seq_read producer over compressed input `in`.
 * Stops (EOF) at the named limits and records which one in *limit_hit. */
typedef struct spc_dec spc_dec;
spc_dec *spc_dec_open(spc_scan *s, spa_in *in, spa_format fmt);
ssize_t spc_dec_read(void *dec, void *buf, size_t len);
/* After EOF: SPA_LIM_COUNT if none, else the limit that stopped it. */
spa_limit_id spc_dec_limit(const spc_dec *d);
/* After EOF: SPA_OK or the error that ended the compressed data. */
spa_err spc_dec_error(const spc_dec *d);
uint64_t spc_dec_out(const spc_dec *d);
void spc_dec_close(spc_dec *d);
/* Sniff the first decompressed bytes of p[0..n) in format fmt (NONE if it
 * does not decompress or is not pickle-bearing). Used where magics are weak
 * evidence, i.e. inside str/bytes constants. */
spa_format spc_dec_probe(spc_scan *s, const uint8_t *p, size_t n, spa_format fmt);

/* joblib + nested pickles: VM hooks (joblib.c, nested.c). */
spa_build_act spc_joblib_after_build(void *ud, spa_scan_ctx *sc, const spa_val *target,
                                     const spa_val *state, uint64_t *skip);
uint32_t spc_nested_on_const(void *ud, spa_scan_ctx *sc, const spa_val *v, uint32_t depth,
                             uint32_t parent_stream);
bool spc_nested_opaque(void *ud, const uint8_t *p, size_t n, uint64_t len);
bool spc_nested_const_inert(void *ud, spa_vkind k, const uint8_t *p, uint64_t kept, uint64_t len, bool whole);
/* spa_vm_hooks.const_short of the hooks above: gate[c] is the bound below
 * which spc_nested_const_inert says true, without a call, for every
 * constant of SPC_NESTED_MIN or more bytes starting with byte c that is
 * bytes or all-ASCII text (0: no such length) */
void spc_nested_gate(uint8_t gate[256]);
/* Helpers exposed for unit tests. */
bool spc_joblib_itemsize(const char *descr, size_t n, uint64_t *itemsize, bool *object);

#endif /* SPA_CONTAINERS_H */
