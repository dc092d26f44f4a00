/* reader.h - reader facts private to the VM (not part of internal.h). */
#ifndef SPA_READER_H
#define SPA_READER_H
#include "internal.h"

/* The reader's state, visible here so the VM's hot path can inline the
 * common cases (owner: reader.c; nothing else may touch the fields). */
struct spa_in {
    spa_arena *ar;
    /* memory mode */
    const uint8_t *mem;     /* base of [start, end) when zero-copy */
    /* pread mode */
    spa_src src;
    uint64_t start, end;    /* content range for src mode */
    /* seq mode */
    spa_seq_read rd;
    void *rctx;
    /* window (pread/seq) */
    uint8_t *buf;
    size_t cap, bpos, blen;
    uint64_t pos;           /* content offset of the current position */
    uint64_t pulled;        /* bytes pulled from the underlying source */
    size_t ra;              /* pread read-ahead per fill (0: SPA_IN_WINDOW) */
    bool jumped;            /* a skip passed the window without reading (pread) */
    bool src_eof;
    bool is_mem;
};

spa_code spa_in_peek_slow(spa_in *in, size_t want, const uint8_t **p, size_t *got);
spa_code spa_in_skip_slow(spa_in *in, uint64_t n);

static inline uint64_t spa_in_pos_fast(const spa_in *in) { return in->pos; }

static inline spa_code spa_in_peek_fast(spa_in *in, size_t want, const uint8_t **p, size_t *got) {
    if (in->is_mem) {
        *p = in->mem + in->pos;
        *got = (size_t)(in->end - in->pos < (uint64_t)SIZE_MAX ? in->end - in->pos : SIZE_MAX);
        return SPA_OK;
    }
    if (in->blen - in->bpos >= want) {
        *p = in->buf + in->bpos;
        *got = in->blen - in->bpos;
        return SPA_OK;
    }
    return spa_in_peek_slow(in, want, p, got);
}

static inline spa_code spa_in_skip_fast(spa_in *in, uint64_t n) {
    if (in->is_mem) {
        if (n > in->end - in->pos) { in->pos = in->end; return SPA_E_TRUNCATED; }
        in->pos += n;
        return SPA_OK;
    }
    if (n < in->blen - in->bpos) {
        in->bpos += (size_t)n;
        in->pos += n;
        return SPA_OK;
    }
    return spa_in_skip_slow(in, n);
}
/* The bytes left before the end of a random-access input (memory or pread:
 * its declared size), without reading them; false for a sequential input. */
static inline bool spa_in_left(const spa_in *in, uint64_t *left) {
    if (in->rd) return false;
    *left = in->pos < in->end ? in->end - in->pos : 0;
    return true;
}
/* True when pointers from spa_in_peek stay valid for the scan's lifetime
 * (an in-memory source): the VM then keeps zero-copy views of constants. */
bool spa_in_stable(const spa_in *in);
/* Move back to content offset `at` (between the reader's start and its
 * position), keeping the window's buffer: false for sequential inputs. The
 * VM's memo pre-pass walks a stream, then rewinds to run it. */
bool spa_in_rewind(spa_in *in, uint64_t at);
/* A second reader over the same source starting at content offset `at`
 * (for a re-run of a stream); NULL for sequential (decompressor) inputs. */
spa_in *spa_in_reopen(spa_arena *ar, const spa_in *in, uint64_t at);
#endif
