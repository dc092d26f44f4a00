/* scan.c - the container layer's entry points (spa_scan_src/mem/path) and its
 * dispatch: recognises each piece of content by its bytes and runs the reader of
 * its format (formats.def). The readers build on content.c, never on this file; they
 * hand what they find back through spc_dispatch. Reads only through src->pread, in
 * bounded windows; never mmaps, never slurps a file whole. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "containers.h"

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

/* The raw pickle reading at offset 0 of content the dispatch reads as a
 * container too (spc_sniff_also_pickle). A random-access content gets a
 * second reader from 0; a sequential one (a decompressor's output, a tar
 * member) is read through a tee that the container's reader then replays
 * (c->in is replaced). Its streams are named <loc>!pickle@0. */
static spa_code sc_also_pickle(spc_scan *s, spc_content *c) {
    spc_content pc = *c;
    pc.loc = spa_ctx_loc(s->sc, "%s!%s@0", c->loc, spc_fmt_tag(SPA_FMT_PICKLE));
    if (!pc.loc) { spc_fail(s, SPA_E_NOMEM, "out of memory", 0); return SPA_E_NOMEM; }
    if (c->src && !c->in) {
        pc.in = NULL; /* a reader of its own from 0 */
        return spc_pickle_reader(s, &pc, SPA_FMT_PICKLE, NULL);
    }
    spc_tee *t;
    pc.in = spc_tee_open(s, c->in, &t);
    if (!pc.in) { spc_fail(s, SPA_E_NOMEM, "out of memory", 0); return SPA_E_NOMEM; }
    spa_code rc = spc_pickles(s, pc.in, c->size, pc.loc, c->depth, c->parent, 0, NULL);
    if (rc != SPA_OK || s->fatal) return rc;
    if (spc_tee_over(t))
        spc_note(s, SPA_NOTE_UNSCANNABLE, pc.loc, SPA_E_LIMIT,
                 "a raw pickle at 0 of a container read past the replay buffer: not examined whole", 0,
                 SPA_LIM_COUNT, NULL);
    c->in = spc_tee_replay(s, t);
    if (!c->in) { spc_fail(s, SPA_E_NOMEM, "out of memory", 0); return SPA_E_NOMEM; }
    return SPA_OK;
}

/* The dispatch of content by its bytes (content.h's spc_dispatch calls it). */
static spa_code sc_dispatch(spc_scan *s, spc_content *c, uint32_t *first_stream) {
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
    if (sc_is_safetensors(s, c, p, got)) {
        /* its length's bytes may also start a pickle whose arguments run into the
         * JSON (BINUNICODE 'X' as the low byte, cJSON takes raw newlines in
         * strings): pickle.load reads that stream whatever the header says */
        if (p && got && spc_pickle_walk(p, got, c->size, NULL) != SPC_PK_NO) return sc_also_pickle(s, c);
        return SPA_OK;
    }
    fmt = sc_settle(s, fmt, alt, p, got);
    if (s->fatal) return s->fatal_err.code;
    if (fmt == SPA_FMT_NONE && also_zip) {
        fmt = SPA_FMT_ZIP;
        also_zip = false;
    }
    if (c->depth == 0) s->top_fmt = fmt;
    spa_code rc;
    if (spc_sniff_also_pickle(fmt, p, got, c->size)) {
        /* a container whose head is also a plausible pickle: an unpickler
         * reads the raw stream at 0 whatever the container's loader makes
         * of the bytes; both readings are examined (sniff.c) */
        rc = sc_also_pickle(s, c);
        if (rc != SPA_OK || s->fatal) return s->fatal ? s->fatal_err.code : rc;
    }
    rc = spc_read_as(s, c, fmt, first_stream);
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
    o->vm_path = 0;
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
    spc_scan_init(&s, sc, src, o->alloc, sc_dispatch);
    spa_vm_hooks *h = spa_arena_calloc(s.ar, sizeof *h);
    uint8_t *gate = spa_arena_alloc(s.ar, 256);
    if (!h || !gate) {
        spa_ctx_destroy(sc);
        return sc_err(err, SPA_E_NOMEM, "out of memory");
    }
    h->after_build = spc_joblib_after_build;
    h->on_const = spc_nested_on_const;
    h->opaque = spc_nested_opaque;
    h->on_const_min = SPC_NESTED_MIN;
    h->const_inert = spc_nested_const_inert;
    spc_nested_gate(gate);
    h->const_short = gate;
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
        sc_dispatch(&s, &c, NULL);
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
    r->opens_judged = o->opens_judged;
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
