/* containers.h - internal interfaces of the container layer (prefix spc_):
 * content dispatch (scan.c), sniffing (sniff.c) and one reader per wrapper
 * format (zip.c, tar.c, npy.c, decomp.c, joblib.c, nested.c, torch_legacy.c). */
#ifndef SPA_CONTAINERS_H
#define SPA_CONTAINERS_H

#include "internal.h"

/* ------------------------------------------------------------------ named constants */
#define SPC_HEAD          4096u  /* bytes sniffed at the start of a plausible pickle */
#define SPC_HEAD_SMALL    512u   /* bytes read first from a random-access content */
#define SPC_SNIFF_OPS     512u   /* opcodes the plausibility walk looks at */
#define SPC_NESTED_MIN    8u     /* shorter constants cannot hold a nested payload worth scanning */
#define SPC_SNIFF_MARKS   64u    /* mark depth the plausibility walk tracks exactly */
#define SPC_LEGACY_STREAMS 5u    /* torch legacy: magic, protocol, sys_info, object, keys */
#define SPC_READ_CHUNK    (16u << 10) /* pread size under a decompressor (zip members) */
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

/* ------------------------------------------------------------------ scan state */
typedef struct spc_scan {
    spa_scan_ctx *sc;
    spa_arena *ar;
    const spa_limits *lim;
    spa_src top;              /* the caller's source wrapped to count bytes read */
    const spa_src *user;      /* the caller's source */
    uint64_t bytes_read;      /* bytes pulled from the caller's source */
    uint64_t members;         /* archive members examined (SPA_LIM_MEMBERS) */
    bool pickle_bearing;      /* content that bears (or should bear) a pickle was seen */
    bool fatal;               /* NOMEM/IO: stop everything */
    spa_err fatal_err;
    spa_in *cur_in;           /* input of the stream the VM is running (joblib hook) */
    uint32_t cur_depth;       /* container depth of cur_in (nested scans) */
    const char *cur_loc;      /* provenance of cur_in */
    spa_format top_fmt;       /* outermost format */
    const spa_alloc *alloc;   /* the caller's allocator (scratch arenas use it too) */
    spa_arena *rd_ar;         /* scratch arena for readers of the current member, or NULL */
    uint8_t *head;            /* SPC_HEAD bytes reused by every sniff */
    uint8_t *tail;            /* SPC_RECOG_SCRATCH bytes for the recogniser's tail reads */
    /* the per-open budget (max_open_ms, max_open_bytes) over the whole recursion */
    uint64_t spent_bytes;     /* source bytes read + bytes decompressed so far */
    uint64_t decomp_out;      /* bytes every decompressor of this open produced */
    uint64_t decomp_in;       /* compressed bytes they read from stored content (not from
                                 another decompressor) */
    uint64_t deadline_ns;     /* CLOCK_MONOTONIC deadline (0: none) */
    bool budget_hit;          /* spent: every read now ends (EOF), a limit note says so */
} spc_scan;

/* Charge n bytes to the per-open budget and check the clock. true when the
 * budget is spent (noted once as a limit: the result is unscannable, which
 * the policy turns into an action); readers then stop. */
bool spc_budget_charge(spc_scan *s, uint64_t n);
/* max_decomp_ratio applies past this much output, per wrapper and per open:
 * real data reaches high ratios too (bz2 of a zero array: 50,000:1), and
 * below this the work is bounded anyway. */
#define SPC_DEC_RATIO_FLOOR (256ull << 20)
/* Charge n decompressed bytes: to the budget above, and to the open's ratio
 * (all wrappers' output / the compressed bytes they read from stored
 * content, max_decomp_ratio past SPC_DEC_RATIO_FLOOR), which spends the
 * budget when it is exceeded. */
bool spc_budget_charge_out(spc_scan *s, uint64_t n);
static inline bool spc_budget_spent(spc_scan *s) { return s->budget_hit || spc_budget_charge(s, 0); }

/* Reader windows and decompressor state of one archive member live in a
 * scratch arena released when the member is done, so memory stays bounded by
 * the nesting depth, not by the member count. The VM copies what it keeps
 * from such (non-memory) readers into the scan arena. */
static inline spa_arena *spc_rd(spc_scan *s) { return s->rd_ar ? s->rd_ar : s->ar; }
/* Start a scratch arena (NULL on OOM: keep using the current one). */
spa_arena *spc_scratch_begin(spc_scan *s, spa_arena **saved);
void spc_scratch_end(spc_scan *s, spa_arena *scratch, spa_arena *saved);

/* A piece of content to dispatch: random access (src) or sequential (in). */
typedef struct spc_content {
    const spa_src *src;   /* random-access source of exactly this content, or NULL */
    spa_in *in;           /* sequential reader at the content start (made from src if NULL) */
    uint64_t size;        /* bytes in the content, UINT64_MAX when unknown */
    const char *loc;      /* provenance of the content */
    uint32_t depth;       /* container nesting depth (0 = the file itself) */
    uint32_t parent;      /* enclosing stream, UINT32_MAX at top level */
} spc_content;

/* Dispatch content by its bytes. Returns SPA_OK unless the scan cannot go on
 * (NOMEM, IO); everything about hostile content goes into notes and streams.
 * *first_stream (may be NULL) receives the first stream index created. */
spa_code spc_dispatch(spc_scan *s, spc_content *c, uint32_t *first_stream);
/* Run stacked pickle streams from `in`: at most max_streams (0 = the limit);
 * keep going after STOP while what follows is a plausible pickle. */
spa_code spc_pickles(spc_scan *s, spa_in *in, uint64_t total, const char *loc,
                     uint32_t depth, uint32_t parent, uint32_t max_streams,
                     uint32_t *first_stream);
/* Scan memory as if its outermost format were fmt (fuzz harnesses, tests). */
spa_code spc_scan_as(const spa_scan_opts *o, const uint8_t *p, size_t n, spa_format fmt, spa_result **out);
/* spa_in_peek that fails the whole scan on NOMEM/IO (never a silent miss). */
spa_code spc_peek(spc_scan *s, spa_in *in, size_t want, const uint8_t **p, size_t *got);
/* The reader of c (creates it from c->src when needed). NULL on OOM. */
spa_in *spc_content_in(spc_scan *s, spc_content *c);

/* Notes (loc may be NULL for the content's own). */
void spc_note(spc_scan *s, spa_notekind k, const char *loc, spa_code code,
              const char *msg, uint64_t off, spa_limit_id lim, const char *detail);
void spc_fail(spc_scan *s, spa_code code, const char *msg, uint64_t off);

/* Sources: a byte range of another source (zero-copy when it is in memory). */
spa_src *spc_src_range(spc_scan *s, const spa_src *parent, uint64_t off, uint64_t size);
spa_src *spc_src_buf(spc_scan *s, const uint8_t *p, size_t n);
/* Read exactly n bytes at off; SPA_E_TRUNCATED if the source is shorter. */
spa_code spc_pread_full(const spa_src *src, void *buf, size_t n, uint64_t off);
/* A sequential reader over src[off, off+n) that preads SPC_READ_CHUNK at a time. */
spa_in *spc_in_chunked(spc_scan *s, const spa_src *src, uint64_t off, uint64_t n);
/* A bounded sequential view of the next `n` bytes of `in`. */
spa_in *spc_in_sub(spc_scan *s, spa_in *in, uint64_t n);
/* Pull all of `in` into an arena buffer of at most max bytes. */
spa_code spc_in_slurp(spc_scan *s, spa_in *in, uint64_t max, const uint8_t **p, size_t *n,
                      bool *over);

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
spa_code spc_pickle_reader(spc_scan *s, spc_content *c, spa_format fmt, uint32_t *first_stream);
spa_code spc_unscannable(spc_scan *s, spc_content *c, spa_format fmt, uint32_t *first_stream);
/* Run the reader of fmt on c (the formats.def dispatch). */
spa_code spc_read_as(spc_scan *s, spc_content *c, spa_format fmt, uint32_t *first_stream);

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
const char *spc_fmt_tag(spa_format f); /* formats.def's tag: "zlib", "gzip", ... for provenance */
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
/* Helpers exposed for unit tests. */
bool spc_joblib_itemsize(const char *descr, size_t n, uint64_t *itemsize, bool *object);

#endif /* SPA_CONTAINERS_H */
