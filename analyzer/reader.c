/* reader.c - the bounded, forward-only reader (spa_in_*) under the VM.
 * Over an in-memory source it is zero-copy; over a file (pread) or a
 * decompressor (sequential read) it keeps one bounded, growable window. */
#include <string.h>

#include "internal.h"
#include "reader.h"

#define SPA_IN_WINDOW   (128u * 1024u)      /* initial window for file/seq sources */
#define SPA_IN_MAXWIN   (64u * 1024u * 1024u) /* a peek may never ask for more */
#define SPA_IN_MINRA    (16u * 1024u)       /* read-ahead after a skip jumped over data */
#define SPA_IN_FIRSTRA  (64u * 1024u)       /* first read-ahead (then doubled up to the window) */



spa_in *spa_in_from_src(spa_arena *ar, const spa_src *src, uint64_t start, uint64_t end) {
    if (!src) return NULL;
    spa_in *in = spa_arena_calloc(ar, sizeof *in);
    if (!in) return NULL;
    if (end > src->size) end = src->size;
    if (start > end) start = end;
    in->ar = ar;
    in->src = *src;
    in->start = start;
    in->end = end;
    in->pos = start;
    if (src->mem) {
        in->is_mem = true;
        in->mem = src->mem;
        in->pulled = 0;
    }
    return in;
}

spa_in *spa_in_from_seq(spa_arena *ar, spa_seq_read rd, void *ctx) {
    if (!rd) return NULL;
    spa_in *in = spa_arena_calloc(ar, sizeof *in);
    if (!in) return NULL;
    in->ar = ar;
    in->rd = rd;
    in->rctx = ctx;
    in->end = UINT64_MAX;
    return in;
}

/* Window mode: make `want` bytes available at bpos (or all that remain). The
 * buffer is an arena allocation; it is replaced (never freed) when it must
 * grow, which happens O(log maxwin) times per reader. A pread source reads
 * ahead SPA_IN_FIRSTRA first, doubling up to the window's size while it is
 * read through, and only SPA_IN_MINRA after a skip jumped over unread data
 * (array payloads), so bytes that are skipped are not read either. */
static spa_code spa_in_fill(spa_in *in, size_t want) {
    if (want > SPA_IN_MAXWIN) want = SPA_IN_MAXWIN;
    if (in->blen - in->bpos >= want) return SPA_OK;
    if (!in->buf || want > in->cap) {
        size_t nc = in->cap ? in->cap : SPA_IN_WINDOW;
        while (nc < want) nc *= 2;
        uint8_t *nb = spa_arena_alloc(in->ar, nc);
        if (!nb) return SPA_E_NOMEM;
        if (in->buf) memcpy(nb, in->buf + in->bpos, in->blen - in->bpos);
        in->blen -= in->bpos;
        in->bpos = 0;
        in->buf = nb;
        in->cap = nc;
    } else if (in->bpos) {
        memmove(in->buf, in->buf + in->bpos, in->blen - in->bpos);
        in->blen -= in->bpos;
        in->bpos = 0;
    }
    size_t ahead = in->cap;
    if (!in->rd) {
        size_t ra = !in->ra ? SPA_IN_FIRSTRA : in->jumped ? SPA_IN_MINRA :
                    in->ra < in->cap / 2 ? 2 * in->ra : in->cap;
        in->ra = ra;
        in->jumped = false;
        ahead = want > ra ? want : ra;
        if (ahead > in->cap) ahead = in->cap;
    }
    while (in->blen < want && !in->src_eof) {
        size_t room = (in->blen < ahead ? ahead : want) - in->blen;
        ssize_t r;
        if (in->rd) {
            r = in->rd(in->rctx, in->buf + in->blen, room);
        } else {
            uint64_t at = in->pos + (in->blen - in->bpos);
            if (at >= in->end) { in->src_eof = true; break; }
            uint64_t left = in->end - at;
            if (room > left) room = (size_t)left;
            r = in->src.pread(in->src.ctx, in->buf + in->blen, room, at);
        }
        if (r < 0) return SPA_E_IO;
        if (r == 0) { in->src_eof = true; break; }
        if ((size_t)r > room) return SPA_E_IO;
        in->blen += (size_t)r;
        in->pulled += (uint64_t)r;
    }
    return SPA_OK;
}

spa_code spa_in_peek(spa_in *in, size_t want, const uint8_t **p, size_t *got) {
    return spa_in_peek_fast(in, want, p, got);
}

spa_code spa_in_peek_slow(spa_in *in, size_t want, const uint8_t **p, size_t *got) {
    if (in->is_mem) {
        *p = in->mem + in->pos;
        *got = (size_t)(in->end - in->pos < (uint64_t)SIZE_MAX ? in->end - in->pos : SIZE_MAX);
        return SPA_OK;
    }
    spa_code c = spa_in_fill(in, want);
    if (c != SPA_OK) { *p = NULL; *got = 0; return c; }
    *p = in->buf + in->bpos;
    *got = in->blen - in->bpos;
    return SPA_OK;
}

spa_code spa_in_skip(spa_in *in, uint64_t n) {
    return spa_in_skip_fast(in, n);
}

spa_code spa_in_skip_slow(spa_in *in, uint64_t n) {
    if (in->is_mem) {
        if (n > in->end - in->pos) { in->pos = in->end; return SPA_E_TRUNCATED; }
        in->pos += n;
        return SPA_OK;
    }
    while (n) {
        size_t avail = in->blen - in->bpos;
        if (avail == 0) {
            if (in->src_eof) return SPA_E_TRUNCATED;
            if (!in->rd) {
                /* pread source: jump without reading */
                uint64_t left = in->end - in->pos;
                if (n > left) { in->pos = in->end; in->src_eof = true; return SPA_E_TRUNCATED; }
                in->pos += n;
                in->jumped = true;
                return SPA_OK;
            }
            spa_code c = spa_in_fill(in, n < SPA_IN_WINDOW ? (size_t)n : SPA_IN_WINDOW);
            if (c != SPA_OK) return c;
            avail = in->blen - in->bpos;
            if (avail == 0) return SPA_E_TRUNCATED;
        }
        size_t k = avail < n ? avail : (size_t)n;
        in->bpos += k;
        in->pos += k;
        n -= k;
    }
    if (in->bpos == in->blen) in->bpos = in->blen = 0;
    return SPA_OK;
}

uint64_t spa_in_pos(const spa_in *in) { return spa_in_pos_fast(in); }

bool spa_in_eof(spa_in *in) {
    if (in->is_mem) return in->pos >= in->end;
    if (in->blen > in->bpos) return false;
    if (spa_in_fill(in, 1) != SPA_OK) return true;
    return in->blen == in->bpos;
}

bool spa_in_is_seq(const spa_in *in) { return in->rd != NULL; }

uint64_t spa_in_bytes_read(const spa_in *in) {
    if (in->is_mem) return in->pos - in->start;
    return in->pulled;
}

bool spa_in_stable(const spa_in *in) { return in->is_mem; }

bool spa_in_rewind(spa_in *in, uint64_t at) {
    if (in->rd || (!in->is_mem && !in->src.pread) || at < in->start || at > in->pos) return false;
    /* (the window's bytes before bpos need not precede pos: a skip may
     * have jumped over unread data; so the window is always read again) */
    in->pos = at;
    if (!in->is_mem) {
        in->bpos = in->blen = 0; /* the window is read again from `at` */
        in->src_eof = false;
        in->jumped = false;
    }
    return true;
}

spa_in *spa_in_reopen(spa_arena *ar, const spa_in *in, uint64_t at) {
    if (in->rd || !in->src.pread) return NULL;
    if (in->is_mem) {
        /* the stable memory view needs no pread */
        spa_in *n = spa_arena_calloc(ar, sizeof *n);
        if (!n) return NULL;
        *n = *in;
        n->pos = at < in->start ? in->start : at > in->end ? in->end : at;
        return n;
    }
    return spa_in_from_src(ar, &in->src, at, in->end);
}
