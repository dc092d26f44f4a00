/* scan.c - the container layer's entry points (spa_scan_src/mem/path): wraps
 * the caller's source to count bytes read, sniffs each piece of content by
 * its bytes and dispatches it to the reader of its format; runs stacked
 * pickle streams through the VM. Reads only through src->pread, in bounded
 * windows; never mmaps, never slurps a file whole. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

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
static uint64_t sc_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

bool spc_budget_charge(spc_scan *s, uint64_t n) {
    if (s->budget_hit) return true;
    s->spent_bytes += n;
    spa_limit_id hit = SPA_LIM_COUNT;
    if (s->spent_bytes > s->lim->v[SPA_LIM_OPEN_BYTES]) hit = SPA_LIM_OPEN_BYTES;
    else if (s->deadline_ns && sc_now_ns() > s->deadline_ns) hit = SPA_LIM_OPEN_MS;
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
static ssize_t sc_count_pread(void *ctx, void *buf, size_t len, uint64_t off) {
    spc_scan *s = ctx;
    if (spc_budget_spent(s)) return 0;
    ssize_t r = s->user->pread(s->user->ctx, buf, len, off);
    if (r > 0) {
        s->bytes_read += (uint64_t)r;
        if (spc_budget_charge(s, (uint64_t)r)) return 0;
    }
    return r;
}

typedef struct sc_range {
    spa_src s;
    const spa_src *parent;
    uint64_t off;
} sc_range;

static ssize_t sc_range_pread(void *ctx, void *buf, size_t len, uint64_t off) {
    sc_range *r = ctx;
    if (off >= r->s.size) return 0;
    if (len > r->s.size - off) len = (size_t)(r->s.size - off);
    return r->parent->pread(r->parent->ctx, buf, len, r->off + off);
}

spa_src *spc_src_range(spc_scan *s, const spa_src *parent, uint64_t off, uint64_t size) {
    sc_range *r = spa_arena_calloc(s->ar, sizeof *r);
    if (!r) return NULL;
    if (off > parent->size) off = parent->size;
    if (size > parent->size - off) size = parent->size - off;
    r->parent = parent;
    r->off = off;
    r->s.pread = sc_range_pread;
    r->s.ctx = r;
    r->s.size = size;
    r->s.mem = parent->mem ? parent->mem + off : NULL;
    return &r->s;
}

typedef struct sc_buf { spa_src s; const uint8_t *p; } sc_buf;

static ssize_t sc_buf_pread(void *ctx, void *buf, size_t len, uint64_t off) {
    sc_buf *b = ctx;
    if (off >= b->s.size) return 0;
    if (len > b->s.size - off) len = (size_t)(b->s.size - off);
    memcpy(buf, b->p + off, len);
    return (ssize_t)len;
}

spa_src *spc_src_buf(spc_scan *s, const uint8_t *p, size_t n) {
    sc_buf *b = spa_arena_calloc(s->ar, sizeof *b);
    if (!b) return NULL;
    b->p = p;
    b->s.pread = sc_buf_pread;
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
typedef struct sc_sub {
    spa_in *in;
    uint64_t left;
    bool err;
} sc_sub;

static ssize_t sc_sub_read(void *ctx, void *buf, size_t len) {
    sc_sub *u = ctx;
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
    sc_sub *u = spa_arena_calloc(spc_rd(s), sizeof *u);
    if (!u) return NULL;
    u->in = in;
    u->left = n;
    return spa_in_from_seq(spc_rd(s), sc_sub_read, u);
}

/* Sequential reads of a source range in small preads: a reader over it pulls
 * only what is asked for (a reader straight over the source fills a whole
 * window at once), so sniffing a compressed member reads one small chunk. */
typedef struct sc_chunked {
    const spa_src *src;
    uint64_t off, left;
} sc_chunked;

static ssize_t sc_chunked_read(void *ctx, void *buf, size_t len) {
    sc_chunked *c = ctx;
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
    sc_chunked *c = spa_arena_calloc(spc_rd(s), sizeof *c);
    if (!c) return NULL;
    c->src = src;
    c->off = off;
    c->left = n;
    return spa_in_from_seq(spc_rd(s), sc_chunked_read, c);
}

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

/* ------------------------------------------------------------------ safetensors */
/* A safetensors file starts with its header length N (u64 LE) and N bytes of
 * JSON: {"__metadata__": {...}, "name": {"dtype", "shape", "data_offsets"}, ...}.
 * Its first byte is arbitrary, so the pickle walk may find it plausible; a
 * header that parses as that JSON object (whole, trailing spaces only) rules
 * a pickle out: pickle opcodes cannot also be such JSON. */
static bool sc_tensor_entry(const cJSON *e) {
    if (!cJSON_IsObject(e)) return false;
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    return cJSON_IsString(dt) && cJSON_IsArray(sh) && cJSON_IsArray(off) && cJSON_GetArraySize(off) == 2;
}

static bool sc_is_safetensors(spc_scan *s, spc_content *c, const uint8_t *head, size_t got) {
    if (!c->src || got < 9 || head[8] != '{' || c->size == UINT64_MAX) return false;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | head[i];
    if (n < 2 || n > SPC_SAFETENSORS_MAX_HEADER || n > c->size - 8) return false;
    spa_arena *saved, *scratch = spc_scratch_begin(s, &saved);
    if (!scratch) return false;
    bool ok = false;
    char *buf = spa_arena_alloc(scratch, (size_t)n + 1);
    if (buf && spc_pread_full(c->src, buf, (size_t)n, 8) == SPA_OK) {
        buf[n] = '\0';
        const char *end = NULL;
        cJSON *j = cJSON_ParseWithLengthOpts(buf, (size_t)n, &end, 0);
        if (j && cJSON_IsObject(j) && end) {
            ok = true;
            for (const char *q = end; q < buf + n; q++)
                if (*q != ' ' && *q != '\0') ok = false;
            int members = 0;
            for (const cJSON *e = j->child; ok && e; e = e->next, members++) {
                if (e->string && strcmp(e->string, "__metadata__") == 0) ok = cJSON_IsObject(e);
                else ok = sc_tensor_entry(e);
            }
            if (members == 0) ok = false;
        }
        cJSON_Delete(j);
    }
    spc_scratch_end(s, scratch, saved);
    return ok;
}

/* ------------------------------------------------------------------ dispatch */
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

spa_code spc_unscannable(spc_scan *s, spc_content *c, spa_format fmt, uint32_t *first_stream) {
    (void)fmt;
    (void)first_stream;
    spc_note(s, SPA_NOTE_UNSCANNABLE, c->loc, SPA_E_UNSUPPORTED,
             "archive format no pickle loader opens directly (7z/rar): not examined", 0, SPA_LIM_COUNT, NULL);
    return SPA_OK;
}

typedef spa_code (*sc_reader_fn)(spc_scan *, spc_content *, spa_format, uint32_t *);

spa_code spc_read_as(spc_scan *s, spc_content *c, spa_format fmt, uint32_t *first_stream) {
    static const sc_reader_fn readers[SPA_FMT_COUNT] = {
#define SPA_FMT(id, name, tag, magic, reader) reader,
#include "formats.def"
#undef SPA_FMT
    };
    if ((unsigned)fmt >= SPA_FMT_COUNT || !readers[fmt]) return SPA_OK;
    return readers[fmt](s, c, fmt, first_stream);
}

/* A weak magic (formats.def): that reading wins when its first bytes
 * decompress to pickle-bearing content (what the loader of that format
 * would unpickle); else the strong answer stands (a pickle, or nothing:
 * e.g. zeros are a valid .lzma header of an empty stream). */
static spa_format sc_settle(spc_scan *s, spa_format fmt, spa_format alt, const uint8_t *p, size_t got) {
    if (alt == SPA_FMT_NONE || alt == fmt) return fmt;
    return spc_dec_probe(s, p, got, alt) != SPA_FMT_NONE ? alt : fmt;
}

spa_code spc_dispatch(spc_scan *s, spc_content *c, uint32_t *first_stream) {
    if (s->fatal) return s->fatal_err.code;
    if (c->depth > s->lim->v[SPA_LIM_NEST]) {
        spc_note(s, SPA_NOTE_LIMIT, c->loc, SPA_E_LIMIT, "nesting too deep", 0, SPA_LIM_NEST, NULL);
        return SPA_OK;
    }
    if (spc_budget_spent(s)) return SPA_OK;
    const uint8_t *p = NULL;
    size_t got = 0;
    spa_format fmt, alt = SPA_FMT_NONE;
    bool also_zip = false;
    if (c->src) {
        /* the recogniser the preload asks too: head and tail */
        if (!s->head) s->head = spa_arena_alloc(s->ar, SPC_HEAD);
        if (!s->tail) s->tail = spa_arena_alloc(s->ar, SPC_RECOG_SCRATCH);
        if (!s->head || !s->tail) { spc_fail(s, SPA_E_NOMEM, "out of memory", 0); return SPA_E_NOMEM; }
        spc_recog r;
        if (spc_recognise(c->src, c->size, c->depth == 0, s->head, s->tail, SPC_RECOG_SCRATCH, &r) != SPA_OK) {
            spc_fail(s, SPA_E_IO, "read error", 0);
            return SPA_E_IO;
        }
        c->size = r.size;
        p = s->head;
        got = r.got;
        fmt = r.fmt;
        alt = r.alt;
        also_zip = r.tail_zip;
    } else {
        spa_code rc = spc_peek(s, c->in, SPC_HEAD, &p, &got);
        if (rc != SPA_OK) return rc;
        fmt = spc_sniff_alt(p, got, c->size, false, &alt);
    }
    /* a safetensors header first: its length's low bytes can look like a
     * pickle opcode or a weak magic (0x78 zlib, 1f 8b gzip, 5d 00 00 lzma) */
    if (sc_is_safetensors(s, c, p, got)) return SPA_OK;
    fmt = sc_settle(s, fmt, alt, p, got);
    if (s->fatal) return s->fatal_err.code;
    if (fmt == SPA_FMT_NONE && also_zip) {
        fmt = SPA_FMT_ZIP;
        also_zip = false;
    }
    if (c->depth == 0) s->top_fmt = fmt;
    spa_code rc = spc_read_as(s, c, fmt, first_stream);
    if (rc == SPA_OK && !s->fatal && also_zip) {
        /* bytes before a zip: zipfile (numpy, pandas) reads the zip, another
         * loader may read the head's format; both are scanned */
        spc_content z = *c;
        z.in = NULL;
        rc = spc_zip(s, &z, SPA_FMT_ZIP, NULL);
    }
    if (s->fatal) return s->fatal_err.code;
    return rc;
}

/* ------------------------------------------------------------------ API */
/* Fill a caller's error (API-level failures have no meaningful offset) and return its code. */
static spa_code sc_err(spa_err *err, spa_code code, const char *msg) {
    err->code = code;
    err->msg = msg;
    err->off = 0;
    return code;
}

void spa_scan_opts_default(spa_scan_opts *o) {
    if (!o) return;
    memset(o, 0, sizeof *o);
    spa_limits_default(&o->limits);
    o->alloc = NULL;
    o->name = NULL;
}

/* Scan src; force != SPA_FMT_COUNT skips sniffing the outermost content and
 * hands it to that format's reader (fuzz harnesses aim at one reader). */
static spa_code sc_scan(const spa_scan_opts *o, const spa_src *src, spa_format force, spa_result **out,
                        spa_err *err) {
    spa_err dummy;
    if (!err) err = &dummy;
    if (out) *out = NULL;
    if (!o || !src || !src->pread || !out) {
        return sc_err(err, SPA_E_USAGE, "spa_scan_src: missing options, source or output");
    }
    spa_scan_ctx *sc = spa_ctx_create(o);
    if (!sc) {
        return sc_err(err, SPA_E_NOMEM, "out of memory creating the scan context");
    }
    spc_scan s;
    memset(&s, 0, sizeof s);
    s.sc = sc;
    s.ar = spa_ctx_arena(sc);
    s.lim = spa_ctx_limits(sc);
    s.user = src;
    s.top.pread = sc_count_pread;
    s.top.ctx = &s;
    s.top.size = src->size;
    s.top.mem = src->mem;
    s.top_fmt = SPA_FMT_NONE;
    s.alloc = o->alloc;
    uint64_t ms = s.lim->v[SPA_LIM_OPEN_MS];
    s.deadline_ns = ms < UINT64_MAX / 2000000ull ? sc_now_ns() + ms * 1000000ull : 0;
    spa_vm_hooks *h = spa_arena_calloc(s.ar, sizeof *h);
    if (!h) {
        spa_ctx_destroy(sc);
        return sc_err(err, SPA_E_NOMEM, "out of memory");
    }
    h->after_build = spc_joblib_after_build;
    h->on_const = spc_nested_on_const;
    h->opaque = spc_nested_opaque;
    h->on_const_min = SPC_NESTED_MIN;
    h->ud = &s;
    spa_ctx_set_hooks(sc, h);

    spc_content c;
    memset(&c, 0, sizeof c);
    c.src = &s.top;
    c.size = src->size;
    const char *nm = (o->name && *o->name) ? o->name : "<input>";
    c.loc = spa_arena_strndup(s.ar, nm, strlen(nm));
    if (!c.loc) c.loc = "<input>";
    c.depth = 0;
    c.parent = UINT32_MAX;
    if (force == SPA_FMT_COUNT) {
        spc_dispatch(&s, &c, NULL);
    } else {
        s.top_fmt = force;
        spc_read_as(&s, &c, force, NULL);
    }
    if (s.fatal) {
        *err = s.fatal_err;
        spa_ctx_destroy(sc);
        return err->code;
    }
    spa_result *r = spa_ctx_finish(sc, s.top_fmt, s.bytes_read);
    if (!r) {
        return sc_err(err, SPA_E_NOMEM, "out of memory finishing the result");
    }
    r->bytes_read = s.bytes_read;
    r->format = s.top_fmt;
    if (s.pickle_bearing || r->n_streams > 0) r->pickle_bearing = true;
    *out = r;
    return SPA_OK;
}

spa_code spa_scan_src(const spa_scan_opts *o, const spa_src *src, spa_result **out, spa_err *err) {
    return sc_scan(o, src, SPA_FMT_COUNT, out, err);
}

spa_code spc_scan_as(const spa_scan_opts *o, const uint8_t *p, size_t n, spa_format fmt, spa_result **out) {
    spa_src src;
    spa_err err;
    static const uint8_t empty[1] = {0};
    spa_src_mem(&src, p ? p : empty, p ? n : 0);
    return sc_scan(o, &src, fmt, out, &err);
}

spa_code spa_scan_mem(const spa_scan_opts *o, const uint8_t *p, size_t n, spa_result **out,
                      spa_err *err) {
    spa_src src;
    static const uint8_t empty[1] = {0};
    spa_src_mem(&src, p ? p : empty, p ? n : 0);
    return spa_scan_src(o, &src, out, err);
}

/* spa_scan_path opens the file itself; the source reads it with pread(2). */
static ssize_t sc_fd_pread(void *ctx, void *buf, size_t len, uint64_t off) {
    int fd = *(int *)ctx;
    for (;;) {
        ssize_t r = pread(fd, buf, len, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        return r;
    }
}

spa_code spa_scan_path(const spa_scan_opts *o, const char *path, spa_result **out, spa_err *err) {
    spa_err dummy;
    if (!err) err = &dummy;
    if (out) *out = NULL;
    if (!o || !path || !out) {
        return sc_err(err, SPA_E_USAGE, "spa_scan_path: missing options, path or output");
    }
    /* O_NONBLOCK: a FIFO or device named here must not block the caller (it is
     * refused below by its fstat type); on a regular file it changes nothing. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        return sc_err(err, SPA_E_IO, "cannot open file");
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return sc_err(err, SPA_E_IO, "not a regular file");
    }
    spa_src src;
    memset(&src, 0, sizeof src);
    src.pread = sc_fd_pread;
    src.ctx = &fd;
    src.size = (uint64_t)st.st_size;
    spa_scan_opts oo = *o;
    if (!oo.name) oo.name = path;
    spa_code rc = spa_scan_src(&oo, &src, out, err);
    close(fd);
    return rc;
}
