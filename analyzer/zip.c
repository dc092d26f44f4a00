/* zip.c - the zip reader for torch zip checkpoints, npz and pandas zip. It
 * trusts what the loaders trust: the central directory (zip64 too) for the
 * member list, sizes and local-header offsets; the local header only for its
 * signature and its name/extra lengths (miniz and zipfile both do this). CRCs,
 * data-descriptor flags and local names/sizes are ignored. Every member is
 * sniffed by content, whatever its name; stored members are read in place,
 * deflated/bzip2/LZMA ones through the bounded decompressor. */
#include <inttypes.h>
#include <string.h>

#include "containers.h"

#define SPC_ZIP_CDH         46u          /* central directory file header */
#define SPC_ZIP_LFH         30u          /* local file header */
#define SPC_ZIP_NAME_MAX    4096u        /* member name bytes kept for provenance */

static uint16_t z16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t z32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t z64(const uint8_t *p) { return (uint64_t)z32(p) | (uint64_t)z32(p + 4) << 32; }

typedef struct zip_dir {
    uint64_t cd_off, cd_size, entries;
    uint64_t concat; /* bytes prepended to the archive (zipfile's "concat") */
} zip_dir;

/* Find the EOCD (searching back over a comment) and the zip64 records. */
static spa_code zip_find_dir(spc_scan *s, const spa_src *src, zip_dir *zd) {
    uint64_t size = src->size;
    if (size < SPC_ZIP_EOCD) return SPA_E_FORMAT;
    uint64_t tail = size < SPC_ZIP_TAIL ? size : SPC_ZIP_TAIL;
    /* first the common case: no comment */
    uint8_t small[SPC_ZIP_EOCD];
    const uint8_t *t = NULL;
    uint64_t eocd = 0;
    spa_code rc = spc_pread_full(src, small, SPC_ZIP_EOCD, size - SPC_ZIP_EOCD);
    if (rc != SPA_OK) return rc;
    if (memcmp(small, "PK\x05\x06", 4) == 0 && z16(small + 20) == 0) {
        t = small;
        eocd = size - SPC_ZIP_EOCD;
    } else {
        uint8_t *buf = spa_arena_alloc(s->ar, (size_t)tail);
        if (!buf) return SPA_E_NOMEM;
        rc = spc_pread_full(src, buf, (size_t)tail, size - tail);
        if (rc != SPA_OK) return rc;
        for (size_t i = (size_t)tail - SPC_ZIP_EOCD + 1; i-- > 0;) {
            if (memcmp(buf + i, "PK\x05\x06", 4) == 0) {
                t = buf + i;
                eocd = size - tail + i;
                break;
            }
        }
        if (!t) return SPA_E_FORMAT;
    }
    zd->entries = z16(t + 10);
    zd->cd_size = z32(t + 12);
    zd->cd_off = z32(t + 16);
    zd->concat = 0;
    uint64_t dir_end = eocd; /* where the central directory should end */
    /* zip64: locator right before the EOCD */
    if (eocd >= 20) {
        uint8_t loc[20];
        if (spc_pread_full(src, loc, 20, eocd - 20) == SPA_OK && memcmp(loc, "PK\x06\x07", 4) == 0) {
            uint64_t off64 = z64(loc + 8);
            uint8_t rec[56];
            /* the record may sit where the locator says, or be shifted by prepended data */
            uint64_t at = off64;
            bool ok = spc_pread_full(src, rec, 56, at) == SPA_OK && memcmp(rec, "PK\x06\x06", 4) == 0;
            if (!ok && eocd >= 76) {
                at = eocd - 76;
                ok = spc_pread_full(src, rec, 56, at) == SPA_OK && memcmp(rec, "PK\x06\x06", 4) == 0;
            }
            if (ok) {
                zd->entries = z64(rec + 32);
                zd->cd_size = z64(rec + 40);
                zd->cd_off = z64(rec + 48);
                dir_end = at;
            }
        }
    }
    /* prepended data: the directory ends right before dir_end */
    if (zd->cd_size <= dir_end && zd->cd_off + zd->cd_size < dir_end && zd->cd_off <= dir_end - zd->cd_size)
        zd->concat = dir_end - zd->cd_size - zd->cd_off;
    return SPA_OK; /* zip_scan checks which reading holds a directory */
}

/* Member name made safe for a provenance string. */
static const char *zip_name(spc_scan *s, const char *parent, const uint8_t *n, size_t len) {
    if (len > SPC_ZIP_NAME_MAX) len = SPC_ZIP_NAME_MAX;
    char *buf = spa_arena_alloc(s->ar, len + 1);
    if (!buf) return NULL;
    for (size_t i = 0; i < len; i++) buf[i] = (n[i] < 0x20 || n[i] == 0x7f) ? '?' : (char)n[i];
    buf[len] = '\0';
    return spa_ctx_loc(s->sc, "%s!%s", parent, buf);
}

static spa_code zip_member(spc_scan *s, spc_content *c, const spa_src *src, const zip_dir *zd,
                           const char *mloc, uint16_t flags, uint16_t method, uint64_t csize,
                           uint64_t usize, uint64_t lho) {
    if (flags & 0x0001) {
        spc_note(s, SPA_NOTE_UNSCANNABLE, mloc, SPA_E_UNSUPPORTED, "encrypted zip member: not examined",
                 lho, SPA_LIM_COUNT, NULL);
        return SPA_OK;
    }
    uint8_t lh[SPC_ZIP_LFH];
    uint64_t at = lho + zd->concat;
    if (spc_pread_full(src, lh, SPC_ZIP_LFH, at) != SPA_OK || memcmp(lh, "PK\x03\x04", 4) != 0) {
        /* both miniz and zipfile refuse a member without its local header */
        /* no loader unpickles anything from it: information, not an error */
        spc_note(s, SPA_NOTE_INFO, mloc, SPA_E_FORMAT, "zip member has no local header (loaders refuse it)",
                 at, SPA_LIM_COUNT, NULL);
        return SPA_OK;
    }
    uint64_t data = at + SPC_ZIP_LFH + z16(lh + 26) + z16(lh + 28);
    if (data > src->size || csize > src->size - data) {
        spc_note(s, SPA_NOTE_ERROR, mloc, SPA_E_TRUNCATED, "zip member runs past the end of the file",
                 data, SPA_LIM_COUNT, NULL);
        csize = data > src->size ? 0 : src->size - data;
    }
    spa_src *msrc = spc_src_range(s, src, data, csize);
    if (!msrc) return SPA_E_NOMEM;
    spc_content child;
    memset(&child, 0, sizeof child);
    child.loc = mloc;
    child.depth = c->depth + 1;
    child.parent = c->parent;
    if (method == 0) {
        child.src = msrc;
        child.size = csize;
        return spc_dispatch(s, &child, NULL);
    }
    spa_format df;
    if (method == 8) df = SPC_FMT_DEFLATE;
    else if (method == 12) df = SPA_FMT_BZ2;
    else if (method == 14) df = (spa_format)SPC_FMT_ZIP_LZMA;
    else {
        spc_note(s, SPA_NOTE_UNSCANNABLE, mloc, SPA_E_UNSUPPORTED,
                 "zip member compression method not supported: not examined", lho, SPA_LIM_COUNT, NULL);
        return SPA_OK;
    }
    spa_in *raw = spc_in_chunked(s, msrc, 0, csize);
    spc_dec *d = raw ? spc_dec_open(s, raw, df) : NULL;
    spa_in *out = d ? spa_in_from_seq(spc_rd(s), spc_dec_read, d) : NULL;
    if (!out) { spc_dec_close(d); spc_fail(s, SPA_E_NOMEM, "out of memory", lho); return SPA_E_NOMEM; }
    child.in = out;
    child.size = usize; /* the directory's word; the decompressor decides the real end */
    child.size = UINT64_MAX;
    spa_code rc = spc_dispatch(s, &child, NULL);
    if (spc_dec_limit(d) != SPA_LIM_COUNT)
        spc_note(s, SPA_NOTE_LIMIT, mloc, SPA_E_LIMIT, "zip member decompression limit: not followed",
                 spc_dec_out(d), spc_dec_limit(d), NULL);
    else if (spc_dec_error(d).code != SPA_OK)
        spc_note(s, SPA_NOTE_ERROR, mloc, spc_dec_error(d).code, spc_dec_error(d).msg, spc_dec_error(d).off,
                 SPA_LIM_COUNT, NULL);
    spc_dec_close(d);
    (void)usize;
    return rc;
}

/* One reading of the directory: members at their offsets + zd->concat. */
static spa_code zip_scan_view(spc_scan *s, spc_content *c, const spa_src *src, const zip_dir *view) {
    zip_dir zd = *view;
    spa_code rc;
    spa_in *cd = spa_in_from_src(spc_rd(s), src, zd.cd_off + zd.concat, zd.cd_off + zd.concat + zd.cd_size);
    if (!cd) { spc_fail(s, SPA_E_NOMEM, "out of memory", 0); return SPA_E_NOMEM; }
    uint64_t n = 0;
    for (;;) {
        const uint8_t *p;
        size_t got;
        if (spc_peek(s, cd, SPC_ZIP_CDH, &p, &got) != SPA_OK) { spc_fail(s, SPA_E_IO, "read error", 0); return SPA_E_IO; }
        if (got < SPC_ZIP_CDH || memcmp(p, "PK\x01\x02", 4) != 0) break;
        uint16_t flags = z16(p + 8), method = z16(p + 10);
        uint64_t csize = z32(p + 20), usize = z32(p + 24);
        uint16_t nlen = z16(p + 28), xlen = z16(p + 30), clen = z16(p + 32);
        uint64_t lho = z32(p + 42);
        size_t whole = SPC_ZIP_CDH + (size_t)nlen + xlen + clen;
        if (spc_peek(s, cd, whole, &p, &got) != SPA_OK) { spc_fail(s, SPA_E_IO, "read error", 0); return SPA_E_IO; }
        if (got < whole) {
            /* zipfile reads the directory into memory and takes short reads
             * of the name, extra and comment of its last entry as they come:
             * that entry still names a member it may open */
            spc_note(s, SPA_NOTE_INFO, c->loc, SPA_E_TRUNCATED, "zip central directory entry cut by its end",
                     spa_in_pos(cd), SPA_LIM_COUNT, NULL);
            size_t rest = got - SPC_ZIP_CDH;
            if (nlen > rest) nlen = (uint16_t)rest;
            rest -= nlen;
            if (xlen > rest) xlen = (uint16_t)rest;
            whole = got;
        }
        /* zip64 extra field: the 0xffffffff fields, in order */
        const uint8_t *x = p + SPC_ZIP_CDH + nlen, *xe = x + xlen;
        while (x + 4 <= xe) {
            uint16_t id = z16(x), sz = z16(x + 2);
            const uint8_t *v = x + 4, *ve = v + sz;
            if (ve > xe) break;
            if (id == 0x0001) {
                if (usize == 0xffffffffu && v + 8 <= ve) { usize = z64(v); v += 8; }
                if (csize == 0xffffffffu && v + 8 <= ve) { csize = z64(v); v += 8; }
                if (lho == 0xffffffffu && v + 8 <= ve) { lho = z64(v); v += 8; }
            }
            x = ve;
        }
        n++;
        if (++s->members > s->lim->v[SPA_LIM_MEMBERS]) {
            spc_note(s, SPA_NOTE_LIMIT, c->loc, SPA_E_LIMIT, "too many archive members: rest not examined",
                     spa_in_pos(cd), SPA_LIM_MEMBERS, NULL);
            break;
        }
        const char *mloc = zip_name(s, c->loc, p + SPC_ZIP_CDH, nlen);
        if (!mloc) { spc_fail(s, SPA_E_NOMEM, "out of memory", 0); return SPA_E_NOMEM; }
        bool dir = nlen > 0 && p[SPC_ZIP_CDH + nlen - 1] == '/' && usize == 0;
        if (spa_in_skip(cd, whole) != SPA_OK) break;
        if (dir) continue;
        spa_arena *saved, *scratch = spc_scratch_begin(s, &saved);
        rc = zip_member(s, c, src, &zd, mloc, flags, method, csize, usize, lho);
        spc_scratch_end(s, scratch, saved);
        if (rc != SPA_OK || s->fatal) return s->fatal ? s->fatal_err.code : rc;
    }
    if (n == 0 && zd.entries > 0)
        spc_note(s, SPA_NOTE_INFO, c->loc, SPA_E_FORMAT, "zip central directory unreadable (loaders refuse it)",
                 zd.cd_off, SPA_LIM_COUNT, NULL);
    return SPA_OK;
}

static bool zip_cd_at(const spa_src *src, const zip_dir *zd, uint64_t concat) {
    uint8_t sig[4];
    if (zd->cd_off + concat > src->size || zd->cd_size > src->size - (zd->cd_off + concat)) return false;
    return spc_pread_full(src, sig, 4, zd->cd_off + concat) == SPA_OK && memcmp(sig, "PK\x01\x02", 4) == 0;
}

/* miniz (torch) takes the directory offsets as written; zipfile (numpy,
 * pandas) shifts them by the bytes found before the archive. When the two
 * readings differ and both hold a directory, both are scanned. */
static spa_code zip_scan(spc_scan *s, spc_content *c, const spa_src *src) {
    zip_dir zd;
    spa_code rc = zip_find_dir(s, src, &zd);
    if (rc == SPA_E_NOMEM || rc == SPA_E_IO) { spc_fail(s, rc, "cannot read the zip directory", 0); return rc; }
    if (rc != SPA_OK) {
        /* no end record: zipfile raises BadZipFile and miniz fails, so no
         * zip loader unpickles anything from it (a truncated download) */
        spc_note(s, SPA_NOTE_INFO, c->loc, SPA_E_FORMAT,
                 "zip without an end of central directory record: no zip loader opens it", 0, SPA_LIM_COUNT,
                 NULL);
        return SPA_OK;
    }
    uint64_t shift = zd.concat;
    bool as_written = zip_cd_at(src, &zd, 0), shifted = shift && zip_cd_at(src, &zd, shift);
    if (as_written || !shifted) {
        zd.concat = 0;
        rc = zip_scan_view(s, c, src, &zd);
        if (rc != SPA_OK) return rc;
    }
    if (shifted) {
        zd.concat = shift;
        rc = zip_scan_view(s, c, src, &zd);
    }
    return rc;
}

spa_code spc_zip(spc_scan *s, spc_content *c, spa_format fmt, uint32_t *first_stream) {
    (void)fmt;
    (void)first_stream;
    if (c->src) return zip_scan(s, c, c->src);
    /* a zip inside a sequential stream (e.g. compressed): buffer it, bounded */
    uint64_t max = s->lim->v[SPA_LIM_DECOMP_BYTES];
    if (max > SPC_ZIP_MAX_BUFFER) max = SPC_ZIP_MAX_BUFFER;
    const uint8_t *p = NULL;
    size_t n = 0;
    bool over = false;
    spa_code rc = spc_in_slurp(s, c->in, max, &p, &n, &over);
    if (rc != SPA_OK) {
        if (rc == SPA_E_NOMEM) { spc_fail(s, rc, "out of memory", 0); return rc; }
        spc_note(s, SPA_NOTE_ERROR, c->loc, rc, "cannot read the zip", 0, SPA_LIM_COUNT, NULL);
        return SPA_OK;
    }
    if (over) {
        spc_note(s, SPA_NOTE_LIMIT, c->loc, SPA_E_LIMIT, "zip inside a compressed stream is too large to buffer",
                 n, SPA_LIM_DECOMP_BYTES, NULL);
        return SPA_OK;
    }
    spa_src *b = spc_src_buf(s, p, n);
    if (!b) { spc_fail(s, SPA_E_NOMEM, "out of memory", 0); return SPA_E_NOMEM; }
    return zip_scan(s, c, b);
}
