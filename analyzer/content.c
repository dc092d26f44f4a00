/* content.c - the content interface the format readers build on (content.h): notes
 * and failures, the per-open budget, sources and bounded readers over ranges of
 * other content, scratch arenas, and stacked pickle streams run through the VM.
 * It knows no format reader: a reader hands content back through spc_dispatch,
 * which scan.c's dispatch implements (the one place that calls the readers). */
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <time.h>

#include "containers.h"

/* ------------------------------------------------------------------ notes */
void spc_note(spc_scan *s, spa_notekind k, const char *loc, spa_code code, const char *msg,
              uint64_t off, spa_limit_id lim, const char *detail) {
    spa_err e = {code, msg, off};
    spa_ctx_note(s->sc, k, loc, e, lim, detail);
    if (k == SPA_NOTE_UNSCANNABLE || k == SPA_NOTE_LIMIT) s->pickle_bearing = true;
}

void spc_fail(spc_scan *s, spa_code code, const char *msg, uint64_t off) {
    if (s->fatal) return;
    s->fatal = true;
    s->fatal_err.code = code;
    s->fatal_err.msg = msg;
    s->fatal_err.off = off;
}

/* ------------------------------------------------------------------ budget */
static uint64_t ct_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

bool spc_budget_charge(spc_scan *s, uint64_t n) {
    if (s->budget_hit) return true;
    s->spent_bytes += n;
    spa_limit_id hit = SPA_LIM_COUNT;
    if (s->spent_bytes > s->lim->v[SPA_LIM_OPEN_BYTES]) hit = SPA_LIM_OPEN_BYTES;
    else if (s->deadline_ns && ct_now_ns() > s->deadline_ns) hit = SPA_LIM_OPEN_MS;
    if (hit == SPA_LIM_COUNT) return false;
    s->budget_hit = true;
    spc_note(s, SPA_NOTE_LIMIT, NULL, SPA_E_LIMIT,
             hit == SPA_LIM_OPEN_MS ? "time budget of this open spent: the rest is not examined"
                                    : "byte budget of this open spent: the rest is not examined",
             s->spent_bytes, hit, NULL);
    return true;
}

/* Many small bombs pass every per-wrapper limit (500 members of nested gzip,
 * 64 MiB each: no wrapper reaches the ratio floor) and would keep one open
 * busy for its whole max_open_ms. Their sum does not: everything the open's
 * decompressors produced over the compressed bytes they read from stored
 * content (a nested wrapper's input is another's output: not counted; nor
 * is what is read without decompressing, e.g. a zip's directory). */
bool spc_budget_charge_out(spc_scan *s, uint64_t n) {
    if (s->budget_hit) return true;
    s->decomp_out += n;
    uint64_t ratio = s->lim->v[SPA_LIM_DECOMP_RATIO];
    uint64_t in = s->decomp_in;
    if (ratio && s->decomp_out > SPC_DEC_RATIO_FLOOR && s->decomp_out / (in ? in : 1) > ratio) {
        s->budget_hit = true;
        spc_note(s, SPA_NOTE_LIMIT, NULL, SPA_E_LIMIT,
                 "decompression ratio of this open (all output / bytes read from the file) over max_decomp_ratio: "
                 "possible bomb, the rest is not examined",
                 s->decomp_out, SPA_LIM_DECOMP_RATIO, NULL);
        return true;
    }
    return spc_budget_charge(s, n);
}

/* ------------------------------------------------------------------ sources */
/* Every read of the caller's source goes through here: counted, charged to
 * the budget, and ended (EOF) once the budget is spent. */
static ssize_t ct_count_pread(void *ctx, void *buf, size_t len, uint64_t off) {
    spc_scan *s = ctx;
    if (spc_budget_spent(s)) return 0;
    ssize_t r = s->user->pread(s->user->ctx, buf, len, off);
    if (r > 0) {
        s->bytes_read += (uint64_t)r;
        if (spc_budget_charge(s, (uint64_t)r)) return 0;
    }
    return r;
}

typedef struct ct_range {
    spa_src s;
    const spa_src *parent;
    uint64_t off;
} ct_range;

static ssize_t ct_range_pread(void *ctx, void *buf, size_t len, uint64_t off) {
    ct_range *r = ctx;
    if (off >= r->s.size) return 0;
    if (len > r->s.size - off) len = (size_t)(r->s.size - off);
    return r->parent->pread(r->parent->ctx, buf, len, r->off + off);
}

spa_src *spc_src_range(spc_scan *s, const spa_src *parent, uint64_t off, uint64_t size) {
    ct_range *r = spa_arena_calloc(s->ar, sizeof *r);
    if (!r) return NULL;
    if (off > parent->size) off = parent->size;
    if (size > parent->size - off) size = parent->size - off;
    r->parent = parent;
    r->off = off;
    r->s.pread = ct_range_pread;
    r->s.ctx = r;
    r->s.size = size;
    r->s.mem = parent->mem ? parent->mem + off : NULL;
    return &r->s;
}

typedef struct ct_buf { spa_src s; const uint8_t *p; } ct_buf;

static ssize_t ct_buf_pread(void *ctx, void *buf, size_t len, uint64_t off) {
    ct_buf *b = ctx;
    if (off >= b->s.size) return 0;
    if (len > b->s.size - off) len = (size_t)(b->s.size - off);
    memcpy(buf, b->p + off, len);
    return (ssize_t)len;
}

spa_src *spc_src_buf(spc_scan *s, const uint8_t *p, size_t n) {
    ct_buf *b = spa_arena_calloc(s->ar, sizeof *b);
    if (!b) return NULL;
    b->p = p;
    b->s.pread = ct_buf_pread;
    b->s.ctx = b;
    b->s.size = n;
    b->s.mem = p;
    return &b->s;
}

spa_code spc_pread_full(const spa_src *src, void *buf, size_t n, uint64_t off) {
    size_t done = 0;
    if (off > src->size || n > src->size - off) return SPA_E_TRUNCATED;
    while (done < n) {
        ssize_t r = src->pread(src->ctx, (uint8_t *)buf + done, n - done, off + done);
        if (r < 0) return SPA_E_IO;
        if (r == 0) return SPA_E_TRUNCATED;
        done += (size_t)r;
    }
    return SPA_OK;
}

/* A bounded sequential view of the next n bytes of another reader. */
typedef struct ct_sub {
    spa_in *in;
    uint64_t left;
    bool err;
} ct_sub;

static ssize_t ct_sub_read(void *ctx, void *buf, size_t len) {
    ct_sub *u = ctx;
    if (u->left == 0 || u->err) return u->err ? -1 : 0;
    if (len > u->left) len = (size_t)u->left;
    if (len > SPC_HEAD) len = SPC_HEAD;
    const uint8_t *p;
    size_t got;
    if (spa_in_peek(u->in, len, &p, &got) != SPA_OK) { u->err = true; return -1; }
    if (got == 0) return 0;
    if (got > len) got = len;
    memcpy(buf, p, got);
    if (spa_in_skip(u->in, got) != SPA_OK) { u->err = true; return -1; }
    u->left -= got;
    return (ssize_t)got;
}

spa_in *spc_in_sub(spc_scan *s, spa_in *in, uint64_t n) {
    ct_sub *u = spa_arena_calloc(spc_rd(s), sizeof *u);
    if (!u) return NULL;
    u->in = in;
    u->left = n;
    return spa_in_from_seq(spc_rd(s), ct_sub_read, u);
}

/* Sequential reads of a source range in small preads: a reader over it pulls
 * only what is asked for (a reader straight over the source fills a whole
 * window at once), so sniffing a compressed member reads one small chunk. */
typedef struct ct_chunked {
    const spa_src *src;
    uint64_t off, left;
} ct_chunked;

static ssize_t ct_chunked_read(void *ctx, void *buf, size_t len) {
    ct_chunked *c = ctx;
    if (c->left == 0) return 0;
    if (len > SPC_READ_CHUNK) len = SPC_READ_CHUNK;
    if (len > c->left) len = (size_t)c->left;
    ssize_t r = c->src->pread(c->src->ctx, buf, len, c->off);
    if (r > 0) {
        c->off += (uint64_t)r;
        c->left -= (uint64_t)r;
    }
    return r;
}

spa_in *spc_in_chunked(spc_scan *s, const spa_src *src, uint64_t off, uint64_t n) {
    ct_chunked *c = spa_arena_calloc(spc_rd(s), sizeof *c);
    if (!c) return NULL;
    c->src = src;
    c->off = off;
    c->left = n;
    return spa_in_from_seq(spc_rd(s), ct_chunked_read, c);
}

struct spc_tee {
    spa_in *in;
    spa_arena *ar;
    uint8_t *buf;
    size_t len, cap, rpos;
    bool replay, over;
};

static ssize_t ct_tee_read(void *ctx, void *out, size_t want) {
    spc_tee *t = ctx;
    if (t->replay && t->rpos < t->len) {
        size_t k = t->len - t->rpos < want ? t->len - t->rpos : want;
        memcpy(out, t->buf + t->rpos, k);
        t->rpos += k;
        return (ssize_t)k;
    }
    if (want > SPC_READ_CHUNK) want = SPC_READ_CHUNK;
    const uint8_t *p;
    size_t got;
    if (spa_in_peek(t->in, want, &p, &got) != SPA_OK) return -1;
    if (got > want) got = want;
    if (got == 0) return 0;
    if (!t->replay) {
        if (t->len + got > SPC_TEE_MAX) { t->over = true; return 0; }
        if (t->len + got > t->cap) {
            size_t ncap = t->cap ? t->cap * 2 : 1u << 16;
            while (ncap < t->len + got) ncap *= 2;
            uint8_t *nb = spa_arena_alloc(t->ar, ncap); /* the old block stays in the arena */
            if (!nb) return -1;
            if (t->len) memcpy(nb, t->buf, t->len);
            t->buf = nb;
            t->cap = ncap;
        }
        memcpy(t->buf + t->len, p, got);
        t->len += got;
    }
    memcpy(out, p, got);
    if (spa_in_skip(t->in, got) != SPA_OK) return -1;
    return (ssize_t)got;
}

spa_in *spc_tee_open(spc_scan *s, spa_in *in, spc_tee **out) {
    spc_tee *t = spa_arena_calloc(spc_rd(s), sizeof *t);
    *out = t;
    if (!t) return NULL;
    t->in = in;
    t->ar = spc_rd(s);
    return spa_in_from_seq(spc_rd(s), ct_tee_read, t);
}

spa_in *spc_tee_replay(spc_scan *s, spc_tee *t) {
    t->replay = true;
    t->rpos = 0;
    return spa_in_from_seq(spc_rd(s), ct_tee_read, t);
}

bool spc_tee_over(const spc_tee *t) { return t->over; }

spa_code spc_in_slurp(spc_scan *s, spa_in *in, uint64_t max, const uint8_t **out, size_t *outn,
                      bool *over) {
    size_t cap = 1u << 16, n = 0;
    uint8_t *buf = spa_arena_alloc(s->ar, cap);
    *over = false;
    if (!buf) return SPA_E_NOMEM;
    for (;;) {
        const uint8_t *p;
        size_t got;
        spa_code rc = spc_peek(s, in, SPC_HEAD, &p, &got);
        if (rc != SPA_OK) return rc;
        if (got == 0) break;
        if (n + got > max) { *over = true; break; }
        if (n + got > cap) {
            size_t ncap = cap * 2;
            while (ncap < n + got) ncap *= 2;
            if (ncap > max) ncap = (size_t)max;
            uint8_t *nb = spa_arena_alloc(s->ar, ncap); /* the old block stays in the arena */
            if (!nb) return SPA_E_NOMEM;
            memcpy(nb, buf, n);
            buf = nb;
            cap = ncap;
        }
        memcpy(buf + n, p, got);
        n += got;
        rc = spa_in_skip(in, got);
        if (rc != SPA_OK) return rc;
    }
    *out = buf;
    *outn = n;
    return SPA_OK;
}

spa_arena *spc_scratch_begin(spc_scan *s, spa_arena **saved) {
    *saved = s->rd_ar;
    spa_arena *a = spa_arena_create(s->alloc);
    if (a) s->rd_ar = a;
    return a;
}

void spc_scratch_end(spc_scan *s, spa_arena *scratch, spa_arena *saved) {
    if (!scratch) return;
    s->rd_ar = saved;
    spa_arena_destroy(scratch);
}

spa_code spc_peek(spc_scan *s, spa_in *in, size_t want, const uint8_t **p, size_t *got) {
    spa_code rc = spa_in_peek(in, want, p, got);
    if (rc != SPA_OK) {
        *got = 0;
        spc_fail(s, rc == SPA_E_NOMEM ? SPA_E_NOMEM : SPA_E_IO,
                 rc == SPA_E_NOMEM ? "out of memory reading content" : "read error", spa_in_pos(in));
    }
    return rc;
}

spa_in *spc_content_in(spc_scan *s, spc_content *c) {
    if (!c->in && c->src) c->in = spa_in_from_src(spc_rd(s), c->src, 0, c->src->size);
    if (!c->in) spc_fail(s, SPA_E_NOMEM, "out of memory creating a reader", 0);
    return c->in;
}

/* ------------------------------------------------------------------ pickles */
spa_code spc_pickles(spc_scan *s, spa_in *in, uint64_t total, const char *loc, uint32_t depth,
                     uint32_t parent, uint32_t max_streams, uint32_t *first_stream) {
    uint32_t count = 0;
    for (;;) {
        uint64_t start = spa_in_pos(in);
        const char *sloc = count == 0 ? loc
                                      : spa_ctx_loc(s->sc, "%s!stream@%" PRIu64, loc, start);
        if (!sloc) { spc_fail(s, SPA_E_NOMEM, "out of memory", start); return SPA_E_NOMEM; }
        spa_in *saved_in = s->cur_in;
        const char *saved_loc = s->cur_loc;
        uint32_t saved_depth = s->cur_depth;
        s->cur_in = in;
        s->cur_loc = sloc;
        s->cur_depth = depth;
        uint32_t idx = UINT32_MAX;
        spa_code rc = spa_vm_run(s->sc, in, sloc, depth, parent, &idx);
        s->cur_in = saved_in;
        s->cur_loc = saved_loc;
        s->cur_depth = saved_depth;
        s->pickle_bearing = true;
        if (rc != SPA_OK) {
            spc_fail(s, rc, "pickle scan could not proceed", start);
            return rc;
        }
        if (s->fatal) return s->fatal_err.code;
        if (idx == UINT32_MAX) break; /* the context noted the stream limit */
        if (first_stream && *first_stream == UINT32_MAX) *first_stream = idx;
        count++;
        const spa_stream *st = spa_ctx_stream(s->sc, idx);
        if (!st || !st->complete) break;            /* the loader stops here too */
        if (max_streams && count >= max_streams) break;
        if (spa_in_pos(in) <= start) break;         /* no progress: never loop */
        /* keep going while what follows is a plausible pickle */
        const uint8_t *p;
        size_t got;
        if (spc_peek(s, in, SPC_HEAD, &p, &got) != SPA_OK || got == 0) break;
        uint64_t pos = spa_in_pos(in);
        uint64_t rest = total == UINT64_MAX ? UINT64_MAX : (total > pos ? total - pos : 0);
        if (spc_pickle_plausible(p, got, rest) == SPC_PK_NO) break;
    }
    return SPA_OK;
}

/* ------------------------------------------------------------------ scan state */
void spc_scan_init(spc_scan *s, spa_scan_ctx *sc, const spa_src *src, const spa_alloc *alloc,
                   spc_dispatch_fn dispatch) {
    memset(s, 0, sizeof *s);
    s->sc = sc;
    s->ar = spa_ctx_arena(sc);
    s->lim = spa_ctx_limits(sc);
    s->user = src;
    s->top.pread = ct_count_pread;
    s->top.ctx = s;
    s->top.size = src->size;
    s->top.mem = src->mem;
    s->top_fmt = SPA_FMT_NONE;
    s->alloc = alloc;
    s->dispatch = dispatch;
    uint64_t ms = s->lim->v[SPA_LIM_OPEN_MS];
    s->deadline_ns = ms < UINT64_MAX / 2000000ull ? ct_now_ns() + ms * 1000000ull : 0;
}

/* ------------------------------------------------------------------ formats */
const char *spc_fmt_tag(spa_format f) {
    static const char *const tags[SPA_FMT_COUNT] = {
#define SPA_FMT(id, name, tag, magic, reader) tag,
#include "formats.def"
#undef SPA_FMT
    };
    return (unsigned)f < SPA_FMT_COUNT ? tags[f] : "data";
}

spa_code spc_pickle_reader(spc_scan *s, spc_content *c, spa_format fmt, uint32_t *first_stream) {
    (void)fmt;
    if (!spc_content_in(s, c)) return SPA_E_NOMEM;
    return spc_pickles(s, c->in, c->size, c->loc, c->depth, c->parent, 0, first_stream);
}
