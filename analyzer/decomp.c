/* decomp.c - bounded streaming decompression (zlib, gzip, raw deflate for zip
 * members, bz2, xz and lzma-alone, zstd, lz4 frames, joblib's old "ZF" zfile)
 * as spa_seq_read producers. Output is never stored whole: the VM reads it
 * through a bounded window. Two named limits stop a bomb: decompressed bytes
 * per wrapper (max_decomp_bytes) and output/input ratio (max_decomp_ratio,
 * once the output passes SPC_DEC_RATIO_FLOOR). */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "codecs.h" /* the libraries' functions, called through d->cx */
#include "containers.h"

#define SPC_DEC_IN_CHUNK    (16u * 1024u)     /* compressed bytes offered per call */
#define SPC_DEC_OUT_CHUNK   (16u * 1024u)     /* most bytes produced per call: a sniff of a
                                                 member costs one chunk, not a whole window */
#define SPC_XZ_MEMLIMIT     (256ull << 20)    /* largest LZMA dictionary we allocate: a larger
                                                 one is capped (dec_cap_dict) */

struct spc_dec {
    spc_scan *s;
    lzma_allocator lzalloc;  /* the scan's allocator, for liblzma */
    spa_in *in;
    int fmt;               /* a spa_format, or SPC_FMT_DEFLATE / SPC_FMT_ZIP_LZMA (zip members) */
    uint64_t in_bytes, out_bytes;
    uint64_t in_counted;   /* in_bytes already added to the open's decomp_in */
    uint64_t max_out, max_ratio;
    spa_limit_id limit;    /* SPA_LIM_COUNT unless a limit stopped it */
    spa_err err;
    bool done, ended;      /* done: no more output; ended: last member/frame ended cleanly */
    bool live;             /* decoder state initialised */
    bool init_nomem;       /* the decoder could not get memory to start */
    const spc_codecs *cx;  /* the library functions (codecs.h); NULL: its library is unusable */
    const char *cx_why;    /* ... and why */
    uint64_t alone_left;   /* .lzma: uncompressed bytes still to come (UINT64_MAX: unknown) */
    bool capped;           /* an LZMA dictionary was capped at SPC_XZ_MEMLIMIT */
    bool xz_blocks;        /* an xz stream, read block by block (dec_xz_block) */
    bool xz_over;          /* ... whose index was reached: the member ended */
    uint8_t xz_check;      /* its check type (stream flags) */
    uint8_t lz_trailer;    /* lzip: trailer bytes after the LZMA data (12 or 20) */
    lzma_block xzb;        /* the current xz block (liblzma keeps a pointer to it) */
    lzma_filter xzf[LZMA_FILTERS_MAX + 1];
    bool stored;           /* reads stored bytes, not another decompressor's output */
    bool fresh;            /* a member after the first, no output yet: a failure
                              here is trailing data, ignored as the loaders do */
    z_stream z;
    bz_stream bz;
    lzma_stream lz;
    ZSTD_DStream *zs;
    bool zs_fresh;         /* zstd: at a frame's start, no output of it yet */
    LZ4F_dctx *l4;
};

static void dec_error(spc_dec *d, spa_code code, const char *msg) {
    if (d->err.code == SPA_OK) {
        d->err.code = code;
        d->err.msg = msg;
        d->err.off = d->in_bytes;
    }
    d->done = true;
}

/* Every decoder allocates through the scan's pluggable allocator when one is
 * given (tests inject failures there). */
static void *dec_zalloc(void *opaque, unsigned items, unsigned size) {
    const spa_alloc *a = opaque;
    if (size && items > SIZE_MAX / size) return NULL;
    return a->alloc(a->ctx, (size_t)items * size);
}
static void dec_zfree(void *opaque, void *p) {
    const spa_alloc *a = opaque;
    a->free(a->ctx, p);
}
static void *dec_bzalloc(void *opaque, int items, int size) {
    if (items < 0 || size < 0) return NULL;
    return dec_zalloc(opaque, (unsigned)items, (unsigned)size);
}
static void *dec_lzalloc(void *opaque, size_t nmemb, size_t size) {
    const spa_alloc *a = opaque;
    if (size && nmemb > SIZE_MAX / size) return NULL;
    return a->alloc(a->ctx, nmemb * size);
}

/* A fresh lzma stream, allocating through `al` when one is given. */
static void dec_lz_reset(spc_dec *d, const spa_alloc *al) {
    lzma_stream init = LZMA_STREAM_INIT;
    d->lz = init;
    if (al) {
        d->lzalloc.alloc = dec_lzalloc;
        d->lzalloc.free = dec_zfree;
        d->lzalloc.opaque = (void *)(uintptr_t)al;
        d->lz.allocator = &d->lzalloc;
    }
}

static void *dec_salloc(void *opaque, size_t n) {
    const spa_alloc *a = opaque;
    return a->alloc(a->ctx, n);
}

/* Skip n bytes of input; false if it ends first. */
static bool dec_skip(spc_dec *d, uint64_t n) {
    const uint8_t *p;
    size_t got;
    while (n) {
        if (spa_in_peek(d->in, 1, &p, &got) != SPA_OK || got == 0) return false;
        size_t k = got < n ? got : (size_t)n;
        if (spa_in_skip(d->in, k) != SPA_OK) return false;
        d->in_bytes += k;
        n -= k;
    }
    return true;
}

/* Skip a zero-terminated field (FNAME, FCOMMENT): gzip.py reads to NUL or EOF. */
static bool dec_skip_cstr(spc_dec *d) {
    const uint8_t *p;
    size_t got;
    for (;;) {
        if (spa_in_peek(d->in, 1, &p, &got) != SPA_OK || got == 0) return false;
        const uint8_t *z = memchr(p, 0, got);
        size_t k = z ? (size_t)(z - p) + 1 : got;
        if (spa_in_skip(d->in, k) != SPA_OK) return false;
        d->in_bytes += k;
        if (z) return true;
    }
}

/* gzip.py's _read_gzip_header: magic, method 8, flags (reserved bits and
 * the header CRC are not checked), FEXTRA, FNAME, FCOMMENT, FHCRC. */
static bool dec_gzip_header(spc_dec *d) {
    const uint8_t *p;
    size_t got;
    if (spa_in_peek(d->in, 10, &p, &got) != SPA_OK || got < 10) return false;
    if (p[0] != 0x1f || p[1] != 0x8b || p[2] != 8) return false;
    uint8_t flag = p[3];
    if (!dec_skip(d, 10)) return false;
    if (flag & 4) { /* FEXTRA */
        if (spa_in_peek(d->in, 2, &p, &got) != SPA_OK || got < 2) return false;
        uint16_t xl = (uint16_t)(p[0] | p[1] << 8);
        if (!dec_skip(d, 2u + xl)) return false;
    }
    if ((flag & 8) && !dec_skip_cstr(d)) return false;  /* FNAME */
    if ((flag & 16) && !dec_skip_cstr(d)) return false; /* FCOMMENT */
    if ((flag & 2) && !dec_skip(d, 2)) return false;    /* FHCRC, not checked */
    return true;
}

/* liblzma's LZMA decoders allocate the whole dictionary a header names; the
 * loaders' have no memory limit (Python's LZMADecompressor: memlimit=None),
 * so a large dictionary is no reason to refuse a file. No match reaches
 * further back than the output so far, so a dictionary capped at
 * SPC_XZ_MEMLIMIT decodes the first SPC_XZ_MEMLIMIT bytes exactly as the
 * full one does; a data error past that under a capped dictionary may be a
 * distance we cannot reach: reported as a limit, never as corruption. */
static void dec_cap_dict(spc_dec *d, lzma_options_lzma *opt) {
    if (opt && opt->dict_size > SPC_XZ_MEMLIMIT) {
        opt->dict_size = (uint32_t)SPC_XZ_MEMLIMIT;
        d->capped = true;
    }
}

static void dec_lz_free(spc_dec *d, void *p) {
    if (d->lz.allocator) d->lz.allocator->free(d->lz.allocator->opaque, p);
    else free(p);
}

/* One xz variable-length integer (at most 9 bytes). */
static bool dec_vli(spc_dec *d, uint64_t *v) {
    *v = 0;
    for (unsigned i = 0; i < 9; i++) {
        const uint8_t *p;
        size_t got;
        if (spa_in_peek(d->in, 1, &p, &got) != SPA_OK || got == 0) return false;
        uint8_t b = p[0];
        if (!dec_skip(d, 1)) return false;
        *v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) return true;
    }
    return false;
}

/* The index (indicator 0, record count, records, padding, CRC32) and the
 * 12-byte stream footer, skipped: the blocks' output has reached the loader
 * by then, whatever the index says. */
static bool dec_xz_index(spc_dec *d) {
    uint64_t start = d->in_bytes, n, v;
    if (!dec_skip(d, 1) || !dec_vli(d, &n)) return false;
    for (uint64_t i = 0; i < n; i++) {
        if ((i & 4095) == 0 && spc_budget_spent(d->s)) return false;
        if (!dec_vli(d, &v) || !dec_vli(d, &v)) return false;
    }
    uint64_t len = d->in_bytes - start;
    return dec_skip(d, (4 - len % 4) % 4 + 4 + 12);
}

/* The next block of an xz stream: its header is parsed here (liblzma checks
 * it as the stream decoder would) so that the LZMA2 dictionary can be capped;
 * or the index, which ends the stream. 1: a block decoder is ready; 0: the
 * stream ended; -1: bad data; -3: out of memory. */
static int dec_xz_block(spc_dec *d) {
    const uint8_t *p;
    size_t got;
    dec_lz_reset(d, d->s->alloc);
    if (spa_in_peek(d->in, 1, &p, &got) != SPA_OK || got == 0) return -1;
    if (p[0] == 0) return dec_xz_index(d) ? 0 : -1;
    uint32_t hs = lzma_block_header_size_decode(p[0]);
    if (spa_in_peek(d->in, hs, &p, &got) != SPA_OK || got < hs) return -1;
    memset(&d->xzb, 0, sizeof d->xzb);
    d->xzb.version = 1;
    d->xzb.check = (lzma_check)d->xz_check;
    d->xzb.header_size = hs;
    d->xzb.filters = d->xzf;
    lzma_ret r = d->cx->lzma_block_header_decode(&d->xzb, d->lz.allocator, p);
    if (r != LZMA_OK) return r == LZMA_MEM_ERROR ? -3 : -1;
    for (size_t i = 0; d->xzf[i].id != LZMA_VLI_UNKNOWN; i++)
        if (d->xzf[i].id == LZMA_FILTER_LZMA2) dec_cap_dict(d, d->xzf[i].options);
    d->xzb.ignore_check = true; /* output reaches the loader before its check */
    r = d->cx->lzma_block_decoder(&d->lz, &d->xzb);
    for (size_t i = 0; d->xzf[i].id != LZMA_VLI_UNKNOWN; i++) {
        dec_lz_free(d, d->xzf[i].options);
        d->xzf[i].options = NULL;
    }
    if (r != LZMA_OK) return r == LZMA_MEM_ERROR ? -3 : -1;
    if (!dec_skip(d, hs)) { d->cx->lzma_end(&d->lz); return -1; }
    return 1;
}

/* An xz stream header (magic, flags; its CRC is not needed), then the first
 * block. False on a header liblzma refuses. */
static bool dec_xz_start(spc_dec *d, const uint8_t *p, size_t got) {
    if (got < 12 || memcmp(p, "\xfd" "7zXZ\x00", 6) != 0 || p[6] != 0 || p[7] > 0x0f) return false;
    d->xz_check = p[7];
    if (!dec_skip(d, 12)) return false;
    d->xz_blocks = true;
    d->xz_over = false;
    int b = dec_xz_block(d);
    if (b == -3) d->init_nomem = true;
    if (b < 0) return false;
    d->xz_over = b == 0;
    return true;
}

/* An lzip member (liblzma's lzip decoder: versions 0 and 1, dictionary
 * 4 KiB - 512 MiB coded in one byte), read as raw LZMA1 lc=3 lp=0 pb=2 with
 * an end marker and the dictionary capped; its trailer is skipped after it. */
static bool dec_lzip_start(spc_dec *d, const uint8_t *p, size_t got) {
    if (got < 6 || p[4] > 1) return false;
    unsigned b2 = p[5] & 0x1fu, fr = p[5] >> 5;
    if (b2 < 12 || b2 > 29 || (b2 == 12 && fr)) return false;
    lzma_options_lzma opt;
    if (d->cx->lzma_lzma_preset(&opt, 0)) return false;
    opt.dict_size = (1u << b2) - fr * (1u << (b2 - 4));
    opt.lc = 3;
    opt.lp = 0;
    opt.pb = 2;
    dec_cap_dict(d, &opt);
    lzma_filter f[2] = {{LZMA_FILTER_LZMA1, &opt}, {LZMA_VLI_UNKNOWN, NULL}};
    d->lz_trailer = p[4] ? 20 : 12;
    dec_lz_reset(d, d->s->alloc);
    lzma_ret lr = d->cx->lzma_raw_decoder(&d->lz, f);
    if (lr != LZMA_OK) { d->init_nomem = lr == LZMA_MEM_ERROR; return false; }
    if (!dec_skip(d, 6)) { d->cx->lzma_end(&d->lz); return false; }
    return true;
}

/* The library that decodes a format. */
static spc_codec_id dec_codec(int fmt) {
    switch (fmt) {
    case SPA_FMT_BZ2: return SPC_CODEC_BZ2;
    case SPA_FMT_XZ: case SPC_FMT_ZIP_LZMA: return SPC_CODEC_LZMA;
    case SPA_FMT_ZSTD: return SPC_CODEC_ZSTD;
    case SPA_FMT_LZ4: return SPC_CODEC_LZ4;
    default: return SPC_CODEC_ZLIB;
    }
}

static bool dec_init(spc_dec *d) {
    const spa_alloc *al = d->s->alloc;
    if (!d->cx) {
        d->cx = spc_codecs_get(dec_codec(d->fmt), &d->cx_why);
        if (!d->cx) return false;
    }
    switch (d->fmt) {
    case SPA_FMT_GZIP: case SPA_FMT_ZLIB: case SPA_FMT_ZIP: case SPA_FMT_JOBLIB:
        /* gzip: the member header is read as gzip.py reads it (zlib's own
         * parser refuses reserved flag bits and checks the header CRC, which
         * gzip.py does not), then raw deflate */
        if (d->fmt == SPA_FMT_GZIP && !dec_gzip_header(d)) return false;
        memset(&d->z, 0, sizeof d->z);
        if (al) { d->z.zalloc = dec_zalloc; d->z.zfree = dec_zfree; d->z.opaque = (void *)(uintptr_t)al; }
        int zr = d->cx->inflateInit2_(&d->z, (d->fmt == SPA_FMT_ZIP || d->fmt == SPA_FMT_GZIP) ? -15 : 15 + 32,
                                     ZLIB_VERSION, (int)sizeof(z_stream));
        if (zr != Z_OK) { d->init_nomem = zr == Z_MEM_ERROR; return false; }
        break;
    case SPA_FMT_BZ2:
        memset(&d->bz, 0, sizeof d->bz);
        if (al) { d->bz.bzalloc = dec_bzalloc; d->bz.bzfree = dec_zfree; d->bz.opaque = (void *)(uintptr_t)al; }
        int br = d->cx->BZ2_bzDecompressInit(&d->bz, 0, 0);
        if (br != BZ_OK) { d->init_nomem = br == BZ_MEM_ERROR; return false; }
        break;
    case SPA_FMT_XZ: {
        const uint8_t *p;
        size_t got;
        d->alone_left = UINT64_MAX;
        d->xz_blocks = false;
        d->lz_trailer = 0;
        if (spa_in_peek(d->in, 13, &p, &got) != SPA_OK || got < 6) return false;
        if (p[0] == 0xfd) { /* xz: what liblzma's auto decoder reads, block by block */
            if (!dec_xz_start(d, p, got)) return false;
            break;
        }
        if (memcmp(p, "LZIP", 4) == 0) {
            if (!dec_lzip_start(d, p, got)) return false;
            break;
        }
        /* .lzma (alone): what liblzma's auto decoder accepts (spc_magic_xz),
         * decoded as raw LZMA1 with the dictionary capped */
        if (got < 13 || spc_magic_xz(p, got, UINT64_MAX) == SPC_M_NO) return false;
        lzma_filter f[2] = {{LZMA_FILTER_LZMA1, NULL}, {LZMA_VLI_UNKNOWN, NULL}};
        if (d->cx->lzma_properties_decode(&f[0], NULL, p, 5) != LZMA_OK) return false;
        dec_cap_dict(d, f[0].options);
        uint64_t usize = 0;
        for (int i = 12; i >= 5; i--) usize = usize << 8 | p[i];
        dec_lz_reset(d, al);
        lzma_ret lr = d->cx->lzma_raw_decoder(&d->lz, f);
        free(f[0].options);
        if (lr != LZMA_OK) { d->init_nomem = lr == LZMA_MEM_ERROR; return false; }
        if (spa_in_skip(d->in, 13) != SPA_OK) { d->cx->lzma_end(&d->lz); return false; }
        d->in_bytes += 13;
        d->alone_left = usize; /* UINT64_MAX: unknown, an end marker ends it */
        break;
    }
    case SPC_FMT_ZIP_LZMA: {
        /* APPNOTE 5.8.8: 2-byte version, 2-byte properties size (5), properties */
        const uint8_t *p;
        size_t got;
        if (spa_in_peek(d->in, 9, &p, &got) != SPA_OK || got < 9 || (p[2] | p[3] << 8) != 5) return false;
        lzma_filter f[2];
        f[0].id = LZMA_FILTER_LZMA1;
        f[0].options = NULL;
        if (d->cx->lzma_properties_decode(&f[0], NULL, p + 4, 5) != LZMA_OK) return false; /* malloc'd: freed below */
        lzma_options_lzma *opt = f[0].options;
        /* zipfile's decoder takes any dictionary size (it only costs memory) */
        dec_cap_dict(d, opt);
        f[1].id = LZMA_VLI_UNKNOWN;
        f[1].options = NULL;
        dec_lz_reset(d, al);
        lzma_ret r = d->cx->lzma_raw_decoder(&d->lz, f);
        free(f[0].options);
        if (r != LZMA_OK) { d->init_nomem = r == LZMA_MEM_ERROR; return false; }
        if (spa_in_skip(d->in, 9) != SPA_OK) { d->cx->lzma_end(&d->lz); return false; }
        d->in_bytes += 9;
        break;
    }
    case SPA_FMT_ZSTD:
        if (al) {
            ZSTD_customMem cm = {dec_salloc, dec_zfree, (void *)(uintptr_t)al};
            d->zs = d->cx->ZSTD_createDStream_advanced(cm);
        } else {
            d->zs = d->cx->ZSTD_createDStream();
        }
        if (!d->zs) { d->init_nomem = true; return false; }
        if (d->cx->ZSTD_isError(d->cx->ZSTD_initDStream(d->zs))) return false;
        d->zs_fresh = true;
        /* a loader that does not verify a frame's checksum reads on past a
         * wrong one (python-zstandard through pandas did): never stop there */
        d->cx->ZSTD_DCtx_setParameter(d->zs, ZSTD_d_forceIgnoreChecksum, ZSTD_d_ignoreChecksum);
        break;
    case SPA_FMT_LZ4:
        if (al) {
            LZ4F_CustomMem cm = {dec_salloc, NULL, dec_zfree, (void *)(uintptr_t)al};
            d->l4 = d->cx->LZ4F_createDecompressionContext_advanced(cm, LZ4F_VERSION);
            if (!d->l4) { d->init_nomem = true; return false; }
        } else if (d->cx->LZ4F_isError(d->cx->LZ4F_createDecompressionContext(&d->l4, LZ4F_VERSION))) {
            d->init_nomem = true;
            return false;
        }
        break;
    default:
        return false;
    }
    d->live = true;
    return true;
}

static void dec_fini(spc_dec *d) {
    if (!d->live) return;
    switch (d->fmt) {
    case SPA_FMT_GZIP: case SPA_FMT_ZLIB: case SPA_FMT_ZIP: case SPA_FMT_JOBLIB: d->cx->inflateEnd(&d->z); break;
    case SPA_FMT_BZ2: d->cx->BZ2_bzDecompressEnd(&d->bz); break;
    case SPA_FMT_XZ: case SPC_FMT_ZIP_LZMA: d->cx->lzma_end(&d->lz); break;
    case SPA_FMT_ZSTD: d->cx->ZSTD_freeDStream(d->zs); d->zs = NULL; break;
    case SPA_FMT_LZ4: d->cx->LZ4F_freeDecompressionContext(d->l4); d->l4 = NULL; break;
    default: break;
    }
    d->live = false;
}

spc_dec *spc_dec_open(spc_scan *s, spa_in *in, spa_format fmt) {
    spc_dec *d = spa_arena_calloc(spc_rd(s), sizeof *d);
    if (!d) return NULL;
    d->s = s;
    d->in = in;
    d->fmt = (int)fmt;
    d->limit = SPA_LIM_COUNT;
    d->stored = !spa_in_is_seq(in);
    d->max_out = s->lim->v[SPA_LIM_DECOMP_BYTES];
    d->max_ratio = s->lim->v[SPA_LIM_DECOMP_RATIO];
    if (!dec_init(d)) {
        dec_fini(d);
        if (!d->cx) {
            /* a library that will not load: the data cannot be read, which
             * fails the whole open, as running out of memory does */
            dec_error(d, SPA_E_UNSUPPORTED, d->cx_why);
            spc_fail(s, SPA_E_UNSUPPORTED, d->cx_why, 0);
        } else if (d->init_nomem) {
            dec_error(d, SPA_E_NOMEM, "out of memory starting the decompressor");
            spc_fail(s, SPA_E_NOMEM, "out of memory starting the decompressor", 0);
        } else {
            dec_error(d, SPA_E_FORMAT, "cannot start the decompressor (bad header)");
        }
    }
    return d;
}

void spc_dec_close(spc_dec *d) {
    if (d) dec_fini(d);
}

spa_limit_id spc_dec_limit(const spc_dec *d) { return d->limit; }
spa_err spc_dec_error(const spc_dec *d) { return d->err; }
uint64_t spc_dec_out(const spc_dec *d) { return d->out_bytes; }

/* Does the remaining input start another member of the same format? */
/* gzip.py: after a member, its 8-byte trailer (CRC32, ISIZE: a mismatch
 * raises only after the member's data was returned), then NUL padding, then
 * another member or the end. bz2 and lzma (BZ2File, LZMAFile: a new
 * decompressor on whatever follows; an error on its first block is
 * "trailing data" and ignored). */
static bool dec_next_member(spc_dec *d, const uint8_t *p, size_t n) {
    switch (d->fmt) {
    case SPA_FMT_GZIP: {
        if (!dec_skip(d, 8)) return false;
        const uint8_t *q;
        size_t got;
        for (;;) {
            if (spa_in_peek(d->in, 1, &q, &got) != SPA_OK || got == 0) return false;
            size_t z = 0;
            while (z < got && q[z] == 0) z++;
            if (z == 0) break;
            if (!dec_skip(d, z)) return false;
        }
        return true; /* a non-NUL byte: gzip.py reads a header (or raises) */
    }
    case SPA_FMT_XZ: {
        if (d->lz_trailer) { /* lzip: CRC32, data size[, member size] */
            if (!dec_skip(d, d->lz_trailer)) return false;
            d->lz_trailer = 0;
            const uint8_t *q;
            size_t got;
            return spa_in_peek(d->in, 1, &q, &got) == SPA_OK && got > 0;
        }
        return n > 0;
    }
    case SPA_FMT_BZ2:
        (void)p;
        return n > 0;
    default: return false;
    }
}

/* One decoder step over input p[0..n). Sets *used and *made. Returns 1 when
 * the member/frame ended, 2 when an xz block ended, 0 to go on, -1 on a data
 * error, -2 on a decoder memory limit, -3 out of memory. */
static int dec_step(spc_dec *d, const uint8_t *p, size_t n, uint8_t *out, size_t cap, size_t *used,
                    size_t *made) {
    *used = *made = 0;
    switch (d->fmt) {
    case SPA_FMT_GZIP: case SPA_FMT_ZLIB: case SPA_FMT_ZIP: case SPA_FMT_JOBLIB: {
        d->z.next_in = (Bytef *)(uintptr_t)p;
        d->z.avail_in = (uInt)(n > UINT32_MAX ? UINT32_MAX : n);
        d->z.next_out = out;
        d->z.avail_out = (uInt)(cap > UINT32_MAX ? UINT32_MAX : cap);
        uInt ai = d->z.avail_in, ao = d->z.avail_out;
        int r = d->cx->inflate(&d->z, Z_NO_FLUSH);
        *used = ai - d->z.avail_in;
        *made = ao - d->z.avail_out;
        if (r == Z_MEM_ERROR) return -3;
        if (r == Z_STREAM_END) return 1;
        if (r == Z_OK || (r == Z_BUF_ERROR && (*used || *made))) return 0;
        if (r == Z_BUF_ERROR) return n == 0 ? -1 : 0;
        return -1;
    }
    case SPA_FMT_BZ2: {
        d->bz.next_in = (char *)(uintptr_t)p;
        d->bz.avail_in = (unsigned)(n > UINT32_MAX ? UINT32_MAX : n);
        d->bz.next_out = (char *)out;
        d->bz.avail_out = (unsigned)(cap > UINT32_MAX ? UINT32_MAX : cap);
        unsigned ai = d->bz.avail_in, ao = d->bz.avail_out;
        int r = d->cx->BZ2_bzDecompress(&d->bz);
        *used = ai - d->bz.avail_in;
        *made = ao - d->bz.avail_out;
        if (r == BZ_MEM_ERROR) return -3;
        if (r == BZ_STREAM_END) return 1;
        return r == BZ_OK ? 0 : -1;
    }
    case SPA_FMT_XZ: case SPC_FMT_ZIP_LZMA: {
        if (d->xz_blocks && d->xz_over) return 1; /* the stream's index was reached */
        bool sized = d->fmt == SPA_FMT_XZ && d->alone_left != UINT64_MAX;
        if (sized && d->alone_left == 0) return 1; /* .lzma with a known size: that many bytes */
        if (sized && cap > d->alone_left) cap = (size_t)d->alone_left;
        d->lz.next_in = p;
        d->lz.avail_in = n;
        d->lz.next_out = out;
        d->lz.avail_out = cap;
        lzma_ret r = d->cx->lzma_code(&d->lz, n ? LZMA_RUN : LZMA_FINISH);
        *used = n - d->lz.avail_in;
        *made = cap - d->lz.avail_out;
        if (sized) {
            d->alone_left -= *made;
            if (d->alone_left == 0) return 1;
        }
        if (r == LZMA_STREAM_END) return d->xz_blocks ? 2 : 1;
        if (r == LZMA_OK) return 0;
        if (r == LZMA_MEMLIMIT_ERROR) return -2;
        if (r == LZMA_MEM_ERROR) return -3;
        if (r == LZMA_BUF_ERROR && (*used || *made)) return 0;
        return -1;
    }
    case SPA_FMT_ZSTD: {
        /* At a frame's start, ZSTD_decompressStream decodes a whole frame in
         * one pass when the output space holds its declared content size,
         * and that pass refuses a frame whose content differs from the
         * declared size; the block-by-block path does not check it. The
         * loader's reads are as small as the unpickler's (read(1) first), so
         * it takes the lenient path: one byte of room at a frame's start
         * makes us take it too. */
        ZSTD_inBuffer ib = {p, n, 0};
        ZSTD_outBuffer ob = {out, d->zs_fresh && cap > 1 ? 1 : cap, 0};
        size_t r = d->cx->ZSTD_decompressStream(d->zs, &ob, &ib);
        *used = ib.pos;
        *made = ob.pos;
        if (d->cx->ZSTD_isError(r)) return d->cx->ZSTD_getErrorCode(r) == ZSTD_error_memory_allocation ? -3 : -1;
        if (ob.pos) d->zs_fresh = false;
        if (r == 0) d->zs_fresh = true;
        return r == 0 ? 1 : 0; /* 0: a frame is complete (another may follow) */
    }
    case SPA_FMT_LZ4: {
        size_t dst = cap, src = n;
        size_t r = d->cx->LZ4F_decompress(d->l4, out, &dst, p, &src, NULL);
        *used = src;
        *made = dst;
        if (d->cx->LZ4F_isError(r)) return d->cx->LZ4F_getErrorCode(r) == LZ4F_ERROR_allocation_failed ? -3 : -1;
        return r == 0 ? 1 : 0;
    }
    default:
        return -1;
    }
}

ssize_t spc_dec_read(void *vd, void *buf, size_t len) {
    spc_dec *d = vd;
    if (d->done || len == 0) return 0;
    if (d->out_bytes >= d->max_out) {
        d->limit = SPA_LIM_DECOMP_BYTES;
        d->done = true;
        return 0;
    }
    if (len > d->max_out - d->out_bytes) len = (size_t)(d->max_out - d->out_bytes);
    if (len > SPC_DEC_OUT_CHUNK) len = SPC_DEC_OUT_CHUNK;
    size_t produced = 0;
    while (produced == 0 && !d->done) {
        if (spc_budget_spent(d->s)) { d->done = true; break; } /* noted once, by the scan */
        const uint8_t *p;
        size_t got;
        if (spc_peek(d->s, d->in, SPC_DEC_IN_CHUNK, &p, &got) != SPA_OK) {
            dec_error(d, SPA_E_IO, "read error under the decompressor");
            break;
        }
        if (got > SPC_DEC_IN_CHUNK) got = SPC_DEC_IN_CHUNK;
        if (d->ended) { /* between members: another one, or the end */
            if (got && dec_next_member(d, p, got)) {
                dec_fini(d);
                if (!dec_init(d)) {
                    if (d->init_nomem) {
                        dec_error(d, SPA_E_NOMEM, "cannot restart the decompressor");
                        spc_fail(d->s, SPA_E_NOMEM, "out of memory in the decompressor", d->in_bytes);
                    } else if (d->fmt == SPA_FMT_GZIP) {
                        dec_error(d, SPA_E_FORMAT, "data after a gzip member is not a gzip member");
                    }
                    d->done = true;
                    break;
                }
                d->ended = false;
                d->fresh = d->fmt != SPA_FMT_GZIP;
                continue; /* peek again: the header may have moved the input */
            } else {
                d->done = true; /* trailing bytes after the last member are ignored */
                break;
            }
        }
        size_t used, made;
        int r = dec_step(d, p, got, (uint8_t *)buf + produced, len - produced, &used, &made);
        if (used && spa_in_skip(d->in, used) != SPA_OK) {
            dec_error(d, SPA_E_IO, "read error under the decompressor");
            break;
        }
        d->in_bytes += used;
        produced += made;
        if (r == 2) { /* an xz block ended: the next one, or the index */
            d->cx->lzma_end(&d->lz);
            int b = dec_xz_block(d);
            if (b == -3) r = -3;
            else if (b < 0) { dec_error(d, SPA_E_FORMAT, "corrupt xz block header or index"); break; }
            else { d->xz_over = b == 0; continue; }
        }
        if (r == -1 && d->capped && d->out_bytes + produced >= SPC_XZ_MEMLIMIT) r = -2;
        if (r == -2) { dec_error(d, SPA_E_LIMIT, "xz/lzma dictionary larger than the decoder memory limit"); break; }
        if (r == -3) {
            dec_error(d, SPA_E_NOMEM, "out of memory in the decompressor");
            spc_fail(d->s, SPA_E_NOMEM, "out of memory in the decompressor", d->in_bytes);
            break;
        }
        if (made) d->fresh = false;
        if (r < 0 && d->fresh) { d->done = true; break; } /* trailing data: ignored */
        if (r < 0) { dec_error(d, SPA_E_FORMAT, "corrupt compressed data"); break; }
        if (r == 1) {
            d->ended = true;
            if (d->fmt == SPA_FMT_ZSTD || d->fmt == SPA_FMT_LZ4) d->ended = false; /* frames chain by themselves */
            if (d->fmt == SPA_FMT_ZLIB || d->fmt == SPA_FMT_ZIP || d->fmt == SPA_FMT_JOBLIB ||
                d->fmt == SPC_FMT_ZIP_LZMA)
                d->done = true;
            if (d->fmt == SPA_FMT_ZSTD || d->fmt == SPA_FMT_LZ4) {
                /* end of a frame: stop if no input follows */
                const uint8_t *q;
                size_t g2;
                if (spa_in_peek(d->in, 4, &q, &g2) != SPA_OK || g2 == 0) d->done = true;
            }
            continue;
        }
        if (got == 0 && made == 0) {
            bool lz = d->fmt == SPA_FMT_XZ || d->fmt == SPC_FMT_ZIP_LZMA;
            if (!lz || used == 0) { dec_error(d, SPA_E_TRUNCATED, "compressed data truncated"); break; }
        }
        if (used == 0 && made == 0 && got > 0) { dec_error(d, SPA_E_FORMAT, "decompressor made no progress"); break; }
    }
    d->out_bytes += produced;
    if (d->stored) d->s->decomp_in += d->in_bytes - d->in_counted;
    d->in_counted = d->in_bytes;
    spc_budget_charge_out(d->s, produced);
    if (d->out_bytes > SPC_DEC_RATIO_FLOOR && d->max_ratio &&
        d->out_bytes / (d->in_bytes ? d->in_bytes : 1) > d->max_ratio) {
        d->limit = SPA_LIM_DECOMP_RATIO;
        d->done = true;
    }
    return (ssize_t)produced;
}

/* ------------------------------------------------------------------ probe */
/* What does the start of the decompressed content look like? For weak
 * magics (zlib's two bytes, gzip, bz2, lzma-alone, zfile) in places where
 * random data is common (str/bytes constants). NONE when it does not
 * decompress or what comes out is not pickle-bearing. */
spa_format spc_dec_probe(spc_scan *s, const uint8_t *p, size_t n, spa_format fmt) {
    spa_arena *saved, *scratch = spc_scratch_begin(s, &saved);
    if (!scratch) { spc_fail(s, SPA_E_NOMEM, "out of memory", 0); return SPA_FMT_NONE; }
    spa_format out = SPA_FMT_NONE;
    if (fmt == SPA_FMT_JOBLIB) {
        if (n <= SPC_ZFILE_HEADER) goto done;
        p += SPC_ZFILE_HEADER;
        n -= SPC_ZFILE_HEADER;
        if (n > 1 && p[0] == ' ') { p++; n--; } /* joblib <= 0.8.4: one byte wider */
    }
    spa_src *src = spc_src_buf(s, p, n);
    spa_in *in = src ? spa_in_from_src(scratch, src, 0, n) : NULL;
    spc_dec *d = in ? spc_dec_open(s, in, fmt) : NULL;
    if (!d) goto done;
    uint8_t *buf = spa_arena_alloc(scratch, SPC_HEAD);
    size_t got = 0;
    while (buf && got < SPC_HEAD) {
        ssize_t r = spc_dec_read(d, buf + got, SPC_HEAD - got);
        if (r <= 0) break;
        got += (size_t)r;
    }
    /* output made before the data broke off (or went bad) still reaches the
     * loader, which reads as it goes */
    if (buf && got) out = spc_sniff(buf, got, d->done && d->err.code == SPA_OK ? got : UINT64_MAX);
    /* a dictionary over our decoder's memory limit: the loader's decoder has
     * no such limit, so this may well be pickle-bearing (the reader then says
     * unscannable: never "nothing here") */
    if (got == 0 && d->err.code == SPA_E_LIMIT) out = fmt;
    spc_dec_close(d);
done:
    spc_scratch_end(s, scratch, saved);
    return out;
}

/* ------------------------------------------------------------------ container */
spa_code spc_decomp(spc_scan *s, spc_content *c, spa_format fmt, uint32_t *first_stream) {
    spa_in *in = spc_content_in(s, c);
    if (!in) return SPA_E_NOMEM;
    uint64_t start = spa_in_pos(in);
    s->pickle_bearing = s->pickle_bearing || fmt == SPA_FMT_JOBLIB;
    if (fmt == SPA_FMT_JOBLIB) {
        /* read_zfile: "ZF" + 19 bytes, then one optional space (joblib <= 0.8.4
         * wrote a header one byte wider; zlib data never starts with ' ') */
        const uint8_t *q;
        size_t g;
        if (spa_in_skip(in, SPC_ZFILE_HEADER) != SPA_OK) {
            spc_note(s, SPA_NOTE_ERROR, c->loc, SPA_E_TRUNCATED, "joblib zfile header truncated", start,
                     SPA_LIM_COUNT, NULL);
            return SPA_OK;
        }
        if (spc_peek(s, in, 1, &q, &g) == SPA_OK && g >= 1 && q[0] == ' ') spa_in_skip(in, 1);
    }
    spc_dec *d = spc_dec_open(s, in, fmt);
    if (!d) { spc_fail(s, SPA_E_NOMEM, "out of memory", start); return SPA_E_NOMEM; }
    const char *loc = spa_ctx_loc(s->sc, "%s!%s@%" PRIu64, c->loc, spc_fmt_tag(fmt), start);
    spa_in *out = spa_in_from_seq(spc_rd(s), spc_dec_read, d);
    if (!loc || !out) {
        spc_dec_close(d);
        spc_fail(s, SPA_E_NOMEM, "out of memory", start);
        return SPA_E_NOMEM;
    }
    spc_content child;
    memset(&child, 0, sizeof child);
    child.in = out;
    child.size = UINT64_MAX;
    child.loc = loc;
    child.depth = c->depth + 1;
    child.parent = c->parent;
    spa_code rc;
    if (fmt == SPA_FMT_JOBLIB) {
        /* read_zfile's output goes straight to the unpickler (the .npy.z
         * companions hold raw array bytes joblib never unpickles) */
        rc = child.depth > s->lim->v[SPA_LIM_NEST] ? SPA_OK : spc_pickle_reader(s, &child, SPA_FMT_PICKLE, first_stream);
    } else {
        rc = spc_dispatch(s, &child, first_stream);
    }
    if (d->limit != SPA_LIM_COUNT) {
        const char *detail = spa_ctx_loc(s->sc, "%" PRIu64 " bytes out of %" PRIu64 " compressed bytes when stopped",
                                         d->out_bytes, d->in_bytes);
        spc_note(s, SPA_NOTE_LIMIT, loc, SPA_E_LIMIT,
                 d->limit == SPA_LIM_DECOMP_RATIO ? "decompression ratio limit: possible bomb, not followed"
                                                  : "decompressed size limit: not followed further",
                 d->out_bytes, d->limit, detail);
    } else if (d->err.code != SPA_OK) {
        spc_note(s, d->err.code == SPA_E_LIMIT ? SPA_NOTE_LIMIT : SPA_NOTE_ERROR, loc, d->err.code,
                 d->err.msg, d->err.off, d->err.code == SPA_E_LIMIT ? SPA_LIM_DECOMP_BYTES : SPA_LIM_COUNT,
                 NULL);
    }
    spc_dec_close(d);
    return rc;
}
