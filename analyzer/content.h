/* content.h - the content interface of the container layer (owner: content.c): the
 * scan state, a piece of content, notes, the per-open budget, sources and bounded
 * readers over other content, scratch arenas, stacked pickle streams, and dispatch of
 * what a reader finds inside. The format readers build on this, never on scan.c. */
#ifndef SPA_CONTENT_H
#define SPA_CONTENT_H

#include "internal.h"

#define SPC_HEAD          4096u  /* bytes sniffed at the start of a plausible pickle */
#define SPC_READ_CHUNK    (16u << 10) /* pread size under a decompressor (zip members) */

/* ------------------------------------------------------------------ scan state */
typedef struct spc_scan spc_scan;
typedef struct spc_content spc_content;
typedef spa_code (*spc_dispatch_fn)(spc_scan *s, spc_content *c, uint32_t *first_stream);

struct spc_scan {
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
    spc_dispatch_fn dispatch; /* scan.c's dispatch by content */
};
/* A scan state over the caller's source (wrapped to count bytes read), with the
 * per-open deadline started now. */
void spc_scan_init(spc_scan *s, spa_scan_ctx *sc, const spa_src *src, const spa_alloc *alloc,
                   spc_dispatch_fn dispatch);

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
struct spc_content {
    const spa_src *src;   /* random-access source of exactly this content, or NULL */
    spa_in *in;           /* sequential reader at the content start (made from src if NULL) */
    uint64_t size;        /* bytes in the content, UINT64_MAX when unknown */
    const char *loc;      /* provenance of the content */
    uint32_t depth;       /* container nesting depth (0 = the file itself) */
    uint32_t parent;      /* enclosing stream, UINT32_MAX at top level */
};

/* Dispatch content by its bytes (scan.c's dispatch, reached through the scan
 * state, so that no reader depends on scan.c). Returns SPA_OK unless the scan
 * cannot go on (NOMEM, IO); everything about hostile content goes into notes and
 * streams. *first_stream (may be NULL) receives the first stream index created. */
static inline spa_code spc_dispatch(spc_scan *s, spc_content *c, uint32_t *first_stream) {
    return s->dispatch(s, c, first_stream);
}
/* Run stacked pickle streams from `in`: at most max_streams (0 = the limit);
 * keep going after STOP while what follows is a plausible pickle. */
spa_code spc_pickles(spc_scan *s, spa_in *in, uint64_t total, const char *loc,
                     uint32_t depth, uint32_t parent, uint32_t max_streams,
                     uint32_t *first_stream);
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
/* Two readings of one sequential content (a raw pickle at 0 and a
 * container, spc_sniff_also_pickle): spc_tee_open gives a reader over `in`
 * that keeps what it reads (at most SPC_TEE_MAX bytes; past that it ends,
 * and spc_tee_over says so); spc_tee_replay then gives a reader that reads
 * those bytes again, then the rest of `in`. */
#define SPC_TEE_MAX (16u << 20)
typedef struct spc_tee spc_tee;
spa_in *spc_tee_open(spc_scan *s, spa_in *in, spc_tee **t);
spa_in *spc_tee_replay(spc_scan *s, spc_tee *t);
bool spc_tee_over(const spc_tee *t);
/* Pull all of `in` into an arena buffer of at most max bytes. */
spa_code spc_in_slurp(spc_scan *s, spa_in *in, uint64_t max, const uint8_t **p, size_t *n,
                      bool *over);
/* Run content c as stacked pickle streams (the pickle format's reader). */
spa_code spc_pickle_reader(spc_scan *s, spc_content *c, spa_format fmt, uint32_t *first_stream);
const char *spc_fmt_tag(spa_format f); /* formats.def's tag: "zlib", "gzip", ... for provenance */

#endif /* SPA_CONTENT_H */
