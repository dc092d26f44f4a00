/* verify.c - the bytes the loader reads are the bytes that were judged. While
 * the analyzer scans a file, every byte it consumes passes through its source's
 * pread (spa_src.pread is the analyzer's one reader): that callback records a
 * keyed hash of each 4 KiB block it touched (the fingerprint). Every later read
 * of a judged fd that returns bytes from a fingerprinted block is checked
 * against it before the loader gets the bytes (decide.c: spp_verify_read).
 * The per-fd fingerprint table lives here too. */
#include "spp.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sha256.h"

/* ------------------------------------------------------------------ the keyed hash */
/* NH (Black et al., UMAC): sum over 16-byte steps of (m0 + k0) * (m1 + k1) as a
 * 128-bit value, with 64-bit words added to a secret key modulo 2^64. For two
 * different blocks of the same length the chance of equal hashes is at most
 * 2^-64 over the key, which the attacker who writes the file never sees: it
 * is random per process, or derived from the per-user cache secret when
 * fingerprints are shared through the persistent cache (pcache.c). */
#define SPP_FP_KEYW (SPP_FP_BLOCK / 8 + 4)
static uint64_t spp_nh_key[SPP_FP_KEYW];
static pthread_once_t spp_nh_once = PTHREAD_ONCE_INIT;
static uint8_t spp_nh_seed[32];
static bool spp_nh_seeded;

void spp_fp_seed(const uint8_t seed[32]) {
    memcpy(spp_nh_seed, seed, 32);
    spp_nh_seeded = true;
}

static void spp_nh_init(void) {
    if (!spp_nh_seeded) {
        size_t got = 0;
        while (got < sizeof spp_nh_seed) {
            ssize_t r = (ssize_t)syscall(SYS_getrandom, spp_nh_seed + got, sizeof spp_nh_seed - got, 0);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) break;
            got += (size_t)r;
        }
        /* no entropy at all: the address layout is still secret to a file's writer */
        if (got < sizeof spp_nh_seed) {
            uint64_t v[2] = { (uint64_t)(uintptr_t)&got, (uint64_t)getpid() };
            memcpy(spp_nh_seed, v, sizeof v);
        }
    }
    for (uint32_t c = 0; c * 4 < SPP_FP_KEYW; c++) {
        spa_sha256 h;
        uint8_t d[32];
        spa_sha256_init(&h);
        spa_sha256_update(&h, spp_nh_seed, sizeof spp_nh_seed);
        spa_sha256_update(&h, &c, sizeof c);
        spa_sha256_final(&h, d);
        for (uint32_t i = 0; i < 4 && c * 4 + i < SPP_FP_KEYW; i++) memcpy(&spp_nh_key[c * 4 + i], d + 8 * i, 8);
    }
}

static inline uint64_t spp_ld64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* Test hook (test_preload_verify.c defines it before including this file):
 * told the length of every block hashed, so a test can count the hashing a
 * check does. Nothing in the library. */
#ifndef SPP_FP_HASH_NOTE
#define SPP_FP_HASH_NOTE(n) ((void)0)
#endif

/* One NH step: 16 bytes at p with key words k[0], k[1]. */
#define SPP_NH_STEP(p, k) ((unsigned __int128)(spp_ld64(p) + (k)[0]) * (spp_ld64((p) + 8) + (k)[1]))

spp_h128 spp_fp_hash(const uint8_t *p, size_t n) {
    pthread_once(&spp_nh_once, spp_nh_init);
    if (n > SPP_FP_BLOCK) n = SPP_FP_BLOCK;
    SPP_FP_HASH_NOTE(n);
    const uint64_t *k = spp_nh_key;
    /* 64 bytes per turn: 0.56 instructions per byte instead of 0.75 (the
     * loop's own, once per step); the same sum mod 2^128, so the same hash
     * (test_preload_verify.c checks it against the definition) */
    unsigned __int128 acc = 0;
    size_t i = 0;
    for (; i + 64 <= n; i += 64, k += 8) {
        acc += SPP_NH_STEP(p + i, k);
        acc += SPP_NH_STEP(p + i + 16, k + 2);
        acc += SPP_NH_STEP(p + i + 32, k + 4);
        acc += SPP_NH_STEP(p + i + 48, k + 6);
    }
    for (; i + 16 <= n; i += 16, k += 2)
        acc += SPP_NH_STEP(p + i, k);
    if (i < n) {
        uint8_t t[16] = {0};
        memcpy(t, p + i, n - i);
        acc += (unsigned __int128)(spp_ld64(t) + k[0]) * (spp_ld64(t + 8) + k[1]);
    }
    acc += (unsigned __int128)((uint64_t)n + spp_nh_key[SPP_FP_KEYW - 2]) * spp_nh_key[SPP_FP_KEYW - 1];
    spp_h128 h = { (uint64_t)acc, (uint64_t)(acc >> 64) };
    return h;
}

static inline bool spp_h_eq(spp_h128 a, spp_h128 b) { return a.lo == b.lo && a.hi == b.hi; }

/* ------------------------------------------------------------------ real pread */
static ssize_t spp_plain_pread(int fd, void *buf, size_t len, uint64_t off) {
    for (;;) {
        ssize_t r = real_pread64 ? real_pread64(fd, buf, len, (off64_t)off)
                                 : (ssize_t)syscall(SYS_pread64, fd, buf, len, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        return r;
    }
}

#define SPP_DIRECT_ALIGN 4096u       /* O_DIRECT: buffer, offset and length aligned to this */
#define SPP_DIRECT_MAX   (1u << 20)  /* most bytes one bounced read covers (a short read is fine) */

/* An O_DIRECT fd refuses unaligned reads (EINVAL): read the aligned span
 * around [off, off+len) into an aligned buffer and copy the part asked for. */
static ssize_t spp_direct_pread(int fd, void *buf, size_t len, uint64_t off) {
    static SPP_TLS uint8_t *bounce;
    if (!bounce && posix_memalign((void **)&bounce, SPP_DIRECT_ALIGN, SPP_DIRECT_MAX + SPP_DIRECT_ALIGN) != 0) {
        bounce = NULL;
        errno = ENOMEM;
        return -1;
    }
    uint64_t a = off & ~(uint64_t)(SPP_DIRECT_ALIGN - 1);
    size_t lead = (size_t)(off - a);
    if (len > SPP_DIRECT_MAX - lead) len = SPP_DIRECT_MAX - lead;
    size_t span = (lead + len + SPP_DIRECT_ALIGN - 1) & ~(size_t)(SPP_DIRECT_ALIGN - 1);
    ssize_t r = spp_plain_pread(fd, bounce, span, a);
    if (r <= (ssize_t)lead) return r < 0 ? r : 0;
    size_t n = (size_t)r - lead < len ? (size_t)r - lead : len;
    memcpy(buf, bounce + lead, n);
    return (ssize_t)n;
}

/* Every read of a judged file goes through this: the REAL pread on the fd,
 * never a hook; an fd opened with O_DIRECT (which refuses unaligned reads)
 * is read through an aligned buffer. */
ssize_t spp_fd_pread(int fd, void *buf, size_t len, uint64_t off) {
    ssize_t r = spp_plain_pread(fd, buf, len, off);
    if (r < 0 && errno == EINVAL) {
        long fl = syscall(SYS_fcntl, fd, F_GETFL); /* raw: fcntl is hooked */
        if (fl >= 0 && (fl & O_DIRECT)) return spp_direct_pread(fd, buf, len, off);
        errno = EINVAL;
    }
    return r;
}

static ssize_t spp_raw_pread(int fd, void *buf, size_t len, uint64_t off) {
    return spp_fd_pread(fd, buf, len, off);
}

/* Fill dst[0, n) from the file at off; false if the file has fewer bytes now. */
static bool spp_pread_all(int fd, uint8_t *dst, size_t n, uint64_t off) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = spp_raw_pread(fd, dst + got, n - got, off + got);
        if (r <= 0) return false;
        got += (size_t)r;
    }
    return true;
}

/* Per thread, made at first need and freed when the thread ends: a scratch
 * block (not on the hook's stack), and the copy cache: whole judged blocks
 * this thread read from the file and found equal to the bytes judged (their
 * hash is the fingerprint's), so that a read returning part of such a block
 * is checked by comparing that part with the copy, not by reading and
 * hashing the rest of the block again. Sound whatever the file does later:
 * the copy is the judged bytes, and the loader's bytes are compared with it. */
#define SPP_VC_BLOCKS 16u /* 64 KiB: how far ahead a forward reader's copy reaches */
typedef struct spp_vthr {
    uint64_t gen;   /* the fingerprint (spp_fp.gen) the copy was verified against; 0: none */
    uint64_t first; /* the copy's first block */
    uint32_t n;     /* whole blocks held */
    bool busy;      /* in use: a nested check (a signal handler's read) goes without */
    uint8_t scratch[SPP_FP_BLOCK];
    uint8_t copy[SPP_VC_BLOCKS * SPP_FP_BLOCK];
} spp_vthr;
static SPP_TLS spp_vthr *spp_vt;
static pthread_key_t spp_vt_key;
static pthread_once_t spp_vt_once = PTHREAD_ONCE_INIT;
static bool spp_vt_key_ok;

static void spp_vt_free(void *v) {
    free(v);
    spp_vt = NULL;
}

static void spp_vt_key_make(void) { spp_vt_key_ok = pthread_key_create(&spp_vt_key, spp_vt_free) == 0; }

static spp_vthr *spp_vthr_get(void) {
    if (!spp_vt) {
        pthread_once(&spp_vt_once, spp_vt_key_make);
        spp_vthr *v = calloc(1, sizeof *v);
        if (!v) return NULL;
        if (spp_vt_key_ok) (void)pthread_setspecific(spp_vt_key, v);
        spp_vt = v;
    }
    return spp_vt;
}

static uint8_t *spp_scratch(void) {
    spp_vthr *v = spp_vthr_get();
    return v ? v->scratch : NULL;
}

/* The hash of block b of the file as seen through [p, p+n) at off, the bytes
 * of the block outside that span read now with the real pread (p may be NULL:
 * everything is read). blen is the block's length at judgement. Returns false
 * when the block cannot be read whole (the file is shorter now, or no memory). */
static bool spp_block_hash(int fd, const uint8_t *p, size_t n, uint64_t off, uint64_t b, size_t blen,
                           spp_h128 *out) {
    uint64_t bs = b * SPP_FP_BLOCK, be = bs + blen;
    if (p && bs >= off && be <= off + n) { *out = spp_fp_hash(p + (bs - off), blen); return true; }
    uint8_t *t = spp_scratch();
    if (!t) return false;
    uint64_t lo = p && off > bs ? off : bs, hi = p && off + n < be ? off + n : be; /* from p */
    if (!p || lo >= hi) {
        if (!spp_pread_all(fd, t, blen, bs)) return false;
    } else {
        if (lo > bs && !spp_pread_all(fd, t, (size_t)(lo - bs), bs)) return false;
        memcpy(t + (lo - bs), p + (lo - off), (size_t)(hi - lo));
        if (hi < be && !spp_pread_all(fd, t + (hi - bs), (size_t)(be - hi), hi)) return false;
    }
    *out = spp_fp_hash(t, blen);
    return true;
}

/* ------------------------------------------------------------------ building */
static uint64_t spp_fp_gen_next;

/* Never 0 (an empty copy cache), never reused in this process (a freed
 * fingerprint's address can be reused; its generation cannot). */
static uint64_t spp_fp_new_gen(void) { return __atomic_add_fetch(&spp_fp_gen_next, 1, __ATOMIC_RELAXED); }

void spp_fpb_init(spp_fpb *b, int fd, uint64_t size) {
    memset(b, 0, sizeof *b);
    b->fd = fd;
    b->size = size;
}

void spp_fpb_free(spp_fpb *b) {
    free(b->e);
    b->e = NULL;
    b->n = b->cap = 0;
}

/* Record (or check again) block blk's hash; false when it was recorded before
 * with other bytes: the file changed under the scan. */
static bool spp_fpb_put(spp_fpb *b, uint64_t blk, spp_h128 h) {
    size_t lo = 0, hi = b->n;
    if (b->n && b->e[b->n - 1].blk < blk) lo = b->n; /* the common case: appending */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (b->e[mid].blk < blk) lo = mid + 1; else hi = mid;
    }
    if (lo < b->n && b->e[lo].blk == blk) return spp_h_eq(b->e[lo].h, h);
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        spp_fpb_ent *e = realloc(b->e, cap * sizeof *e);
        if (!e) { b->oom = true; return true; }
        b->e = e;
        b->cap = cap;
    }
    memmove(b->e + lo + 1, b->e + lo, (b->n - lo) * sizeof *b->e);
    b->e[lo].blk = blk;
    b->e[lo].h = h;
    b->n++;
    return true;
}

/* Hash and record whole block blk (bytes p, blen long) in soft mode. */
static void spp_fpb_soft_put(spp_fpb *b, uint64_t blk, const uint8_t *p, size_t blen) {
    if (!spp_fpb_put(b, blk, spp_fp_hash(p, blen))) b->volat = true;
}

/* The recogniser's reads (soft mode): never failed, and read by whole blocks,
 * so no edge is completed by a second pread: a block the request covers only
 * in part is read whole into the thread's scratch and the part asked for is
 * copied out; whole blocks are read straight into buf. Every byte returned is
 * in a block hashed from the same read. A block that cannot be read whole (the
 * file is shorter than its size: a sysfs file) is returned as read, noted
 * (shortf), not hashed; a block read twice with other bytes is noted (volat). */
__attribute__((unused)) /* unused only in the SPP_BENCH_NO_VERIFY bench build */
static ssize_t spp_fpb_soft_pread(spp_fpb *b, uint8_t *buf, size_t len, uint64_t off) {
    uint64_t end = off + len;
    size_t done = 0;
    while (off + done < end) {
        uint64_t pos = off + done, blk = pos / SPP_FP_BLOCK, bs = blk * SPP_FP_BLOCK;
        size_t blen = b->size - bs < SPP_FP_BLOCK ? (size_t)(b->size - bs) : SPP_FP_BLOCK;
        if (pos == bs && bs + blen <= end) {             /* whole blocks from here, straight into buf */
            uint64_t wend = end == b->size ? end : end / SPP_FP_BLOCK * SPP_FP_BLOCK;
            ssize_t r = spp_raw_pread(b->fd, buf + done, (size_t)(wend - pos), pos);
            if (r <= 0) return done ? (ssize_t)done : r;
            size_t k = 0;                                /* the whole blocks in what came back */
            while (k < (size_t)r) {
                size_t l = b->size - (pos + k) < SPP_FP_BLOCK ? (size_t)(b->size - (pos + k)) : SPP_FP_BLOCK;
                if (k + l > (size_t)r) break;
                spp_fpb_soft_put(b, (pos + k) / SPP_FP_BLOCK, buf + done + k, l);
                k += l;
            }
            if (k == 0) { b->shortf = true; return (ssize_t)(done + (size_t)r); } /* shorter than its size */
            done += k;
            continue;
        }
        uint8_t *t = spp_scratch();                      /* part of a block: the whole block, then the part */
        if (!t) b->oom = true;
        size_t got = 0;
        while (t && got < blen) {
            ssize_t r = spp_raw_pread(b->fd, t + got, blen - got, bs + got);
            if (r < 0 && got == 0 && done == 0) return r;
            if (r <= 0) break;
            got += (size_t)r;
        }
        if (!t) {                                        /* no memory: read as asked, nothing recorded */
            ssize_t r = spp_raw_pread(b->fd, buf + done, (size_t)(end - pos), pos);
            return r < 0 && done == 0 ? r : (ssize_t)(done + (r > 0 ? (size_t)r : 0));
        }
        size_t want = (size_t)((end < bs + blen ? end : bs + blen) - pos), have = 0;
        if (got > pos - bs) have = got - (size_t)(pos - bs) < want ? got - (size_t)(pos - bs) : want;
        memcpy(buf + done, t + (pos - bs), have);
        done += have;
        if (got < blen) { b->shortf = true; return (ssize_t)done; }
        spp_fpb_soft_put(b, blk, t, blen);
    }
    return (ssize_t)done;
}

/* The analyzer's pread: the real pread, then every block the bytes fall in is
 * hashed (edges completed by reading the rest of the block). A block read
 * twice with different bytes fails the read: the scan stops and the file is
 * judged again (decide.c), never on a mix of two versions. */
ssize_t spp_fpb_pread(void *ctx, void *buf, size_t len, uint64_t off) {
    spp_fpb *b = ctx;
    if (off >= b->size) return 0;
    if (len > b->size - off) len = (size_t)(b->size - off);
#ifndef SPP_BENCH_NO_VERIFY
    if (b->soft) {
        ssize_t s = spp_fpb_soft_pread(b, buf, len, off);
        if (s > 0) b->bytes += (uint64_t)s;
        return s;
    }
#endif
    ssize_t r = spp_raw_pread(b->fd, buf, len, off);
#ifdef SPP_BENCH_NO_VERIFY
    /* test/bench/bench_verify.sh only: the library without fingerprints, to
     * measure their cost on its own; never a build anyone runs */
    return r;
#endif
    if (r < 0) return r;
    if ((size_t)r < len) {
        /* Fewer bytes than the size judged holds at off: the file is shorter
         * now than at its fstat (cut back, as an appending writer's ftruncate
         * does). Judged on these bytes, the analyzer would see the file end
         * here, and the bytes after them (appended again before the loader
         * reads) would be in no judged block: the file changed under the scan.
         * (A regular file's pread is short only at its end, or from an
         * O_DIRECT bounce: the rest is read on.) */
        if (!spp_pread_all(b->fd, (uint8_t *)buf + r, len - (size_t)r, off + (uint64_t)r)) {
            b->changed = true;
            errno = EIO;
            return -1;
        }
        r = (ssize_t)len;
    }
    if (r == 0) return 0;
    b->bytes += (uint64_t)r;
    uint64_t end = off + (uint64_t)r;
    for (uint64_t blk = off / SPP_FP_BLOCK; blk * SPP_FP_BLOCK < end; blk++) {
        uint64_t bs = blk * SPP_FP_BLOCK;
        size_t blen = b->size - bs < SPP_FP_BLOCK ? (size_t)(b->size - bs) : SPP_FP_BLOCK;
        spp_h128 h;
        if (!spp_block_hash(b->fd, buf, (size_t)r, off, blk, blen, &h) || !spp_fpb_put(b, blk, h)) {
            b->changed = true;
            errno = EIO;
            return -1;
        }
    }
    return r;
}

spp_fp *spp_fpb_finish(spp_fpb *b, const struct stat *st) {
    if (b->oom || b->changed) return NULL;
    size_t runs = 0;
    for (size_t i = 0; i < b->n; i++)
        if (i == 0 || b->e[i].blk != b->e[i - 1].blk + 1) runs++;
    spp_fp *fp = calloc(1, sizeof *fp + runs * sizeof(spp_fp_run) + b->n * sizeof(spp_h128));
    if (!fp) return NULL;
    fp->refs = 1;
    fp->gen = spp_fp_new_gen();
    fp->dev = (uint64_t)st->st_dev;
    fp->ino = (uint64_t)st->st_ino;
    fp->size = b->size;
    fp->n_runs = (uint32_t)runs;
    fp->n_blocks = (uint32_t)b->n;
    fp->runs = (spp_fp_run *)(fp + 1);
    fp->h = (spp_h128 *)(fp->runs + runs);
    size_t r = 0;
    for (size_t i = 0; i < b->n; i++) {
        if (i == 0 || b->e[i].blk != b->e[i - 1].blk + 1) {
            fp->runs[r].first = b->e[i].blk;
            fp->runs[r].n = 0;
            fp->runs[r].hix = (uint32_t)i;
            r++;
        }
        fp->runs[r - 1].n++;
        fp->h[i] = b->e[i].h;
    }
    return fp;
}

/* Build a fingerprint from serialised parts (pcache.c); takes no ownership. */
spp_fp *spp_fp_make(uint64_t dev, uint64_t ino, uint64_t size, const spp_fp_run *runs, uint32_t n_runs,
                    const spp_h128 *h, uint32_t n_blocks) {
    spp_fp *fp = calloc(1, sizeof *fp + n_runs * sizeof(spp_fp_run) + n_blocks * sizeof(spp_h128));
    if (!fp) return NULL;
    fp->refs = 1;
    fp->gen = spp_fp_new_gen();
    fp->dev = dev;
    fp->ino = ino;
    fp->size = size;
    fp->n_runs = n_runs;
    fp->n_blocks = n_blocks;
    fp->runs = (spp_fp_run *)(fp + 1);
    fp->h = (spp_h128 *)(fp->runs + n_runs);
    memcpy(fp->runs, runs, n_runs * sizeof *runs);
    memcpy(fp->h, h, n_blocks * sizeof *h);
    return fp;
}

void spp_fp_ref(spp_fp *fp) {
    if (fp) __atomic_add_fetch(&fp->refs, 1, __ATOMIC_RELAXED);
}

void spp_fp_unref(spp_fp *fp) {
    if (fp && __atomic_sub_fetch(&fp->refs, 1, __ATOMIC_ACQ_REL) == 0) free(fp);
}

/* ------------------------------------------------------------------ checking */
/* The first run that ends after block b (binary search). */
static uint32_t spp_fp_run_at(const spp_fp *fp, uint64_t b) {
    uint32_t lo = 0, hi = fp->n_runs;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (fp->runs[mid].first + fp->runs[mid].n <= b) lo = mid + 1; else hi = mid;
    }
    return lo;
}

/* Fill the copy with judged blocks b, b+1, ... of run (at most want) read
 * from the file now, keeping them up to the first whose hash is not the
 * judged one. False when block b itself is not (or cannot be read whole). */
static bool spp_vt_fill(spp_vthr *v, const spp_fp *fp, int fd, const spp_fp_run *run, uint64_t b, uint32_t want) {
    v->gen = 0;
    v->n = 0;
    if (want > run->first + run->n - b) want = (uint32_t)(run->first + run->n - b);
    uint64_t bs = b * SPP_FP_BLOCK;
    size_t len = fp->size - bs < (uint64_t)want * SPP_FP_BLOCK ? (size_t)(fp->size - bs) : (size_t)want * SPP_FP_BLOCK;
    size_t got = 0;
    while (got < len) {
        ssize_t r = spp_raw_pread(fd, v->copy + got, len - got, bs + got);
        if (r <= 0) break;
        got += (size_t)r;
    }
    uint32_t k = 0;
    for (; k < want; k++) {
        size_t o = (size_t)k * SPP_FP_BLOCK, blen = len - o < SPP_FP_BLOCK ? len - o : SPP_FP_BLOCK;
        if (o + blen > got || !spp_h_eq(spp_fp_hash(v->copy + o, blen), fp->h[run->hix + (b + k - run->first)]))
            break;
    }
    if (k == 0) return false;
    v->gen = fp->gen;
    v->first = b;
    v->n = k;
    return true;
}

/* Part [lo, hi) of judged block b (length blen) is in the loader's buffer p
 * (file offset off): equal to the bytes judged? Compared with the thread's
 * verified copy of the block, made first if it does not hold it (a reader
 * going forward gets the next blocks of the run copied too). */
static bool spp_part_ok(const spp_fp *fp, int fd, const uint8_t *p, size_t n, uint64_t off, const spp_fp_run *run,
                        uint64_t b, size_t blen) {
    uint64_t bs = b * SPP_FP_BLOCK, end = off + n;
    uint64_t lo = off > bs ? off : bs, hi = end < bs + blen ? end : bs + blen;
    spp_vthr *v = spp_vthr_get();
    if (!v || v->busy) {
        spp_h128 h;
        return spp_block_hash(fd, p, n, off, b, blen, &h) && spp_h_eq(h, fp->h[run->hix + (b - run->first)]);
    }
    v->busy = true;
    bool ok = true;
    if (v->gen != fp->gen || b < v->first || b >= v->first + v->n) {
        bool forward = v->gen == fp->gen && b == v->first + v->n;
        ok = spp_vt_fill(v, fp, fd, run, b, forward ? SPP_VC_BLOCKS : 1);
    }
    if (ok) ok = memcmp(p + (lo - off), v->copy + (lo - v->first * SPP_FP_BLOCK), (size_t)(hi - lo)) == 0;
    v->busy = false;
    return ok;
}

int spp_fp_check(const spp_fp *fp, int fd, const void *buf, size_t n, uint64_t off, bool *touched,
                 uint64_t *bad_off) {
    if (n == 0) return 0;
    const uint8_t *p = buf;
    uint64_t end = off + n;
    if (end > fp->size) { /* bytes past the size judged: the file grew after judgement */
        *bad_off = off > fp->size ? off : fp->size;
        return 1;
    }
    uint64_t b = off / SPP_FP_BLOCK, last = (end - 1) / SPP_FP_BLOCK;
    for (uint32_t r = spp_fp_run_at(fp, b); r < fp->n_runs && b <= last; r++) {
        const spp_fp_run *run = &fp->runs[r];
        if (b < run->first) b = run->first;
        for (; b <= last && b < run->first + run->n; b++) {
            uint64_t bs = b * SPP_FP_BLOCK;
            size_t blen = fp->size - bs < SPP_FP_BLOCK ? (size_t)(fp->size - bs) : SPP_FP_BLOCK;
            bool ok;
            *touched = true;
            if (p && (bs < off || bs + blen > end)) { /* part of the block: compared with a verified copy */
                ok = spp_part_ok(fp, fd, p, n, off, run, b, blen);
            } else {                                  /* all of it (or a mapping's: read it now) */
                spp_h128 h;
                ok = spp_block_hash(fd, p, n, off, b, blen, &h) && spp_h_eq(h, fp->h[run->hix + (b - run->first)]);
            }
            if (!ok) {
                *bad_off = bs > off ? bs : off;
                return 1;
            }
        }
    }
    return 0;
}

/* Do the bytes the loader got (seg, got bytes at file offset off) equal the
 * file's bytes there now? Read with the real pread, a block at a time. */
bool spp_fd_same_bytes(int fd, const struct iovec *seg, int cnt, size_t got, uint64_t off, uint64_t *bad) {
    uint8_t *t = spp_scratch();
    if (!t) { *bad = off; return false; }
    for (int i = 0; i < cnt && got > 0; i++) {
        const uint8_t *p = seg[i].iov_base;
        size_t n = seg[i].iov_len < got ? seg[i].iov_len : got;
        for (size_t k = 0; k < n;) {
            size_t c = n - k < SPP_FP_BLOCK ? n - k : SPP_FP_BLOCK;
            if (!spp_pread_all(fd, t, c, off + k) || memcmp(t, p + k, c) != 0) { *bad = off + k; return false; }
            k += c;
        }
        off += n;
        got -= n;
    }
    return true;
}

/* ------------------------------------------------------------------ per-fd table */
/* The fingerprint each judged fd's reads are checked against, and whether the
 * fd has already handed judged bytes to the loader. Entries hold a reference;
 * the mutex is taken only for fds that have one. */
static spp_fp *spp_fdfp[SPP_FD_MAX];
static uint8_t spp_fddeliv[SPP_FD_MAX];
static pthread_mutex_t spp_fp_mu = PTHREAD_MUTEX_INITIALIZER;

void spp_fdfp_set(int fd, spp_fp *fp) {
    if (fd < 0 || fd >= SPP_FD_MAX) return;
    if (!fp && !__atomic_load_n(&spp_fdfp[fd], __ATOMIC_RELAXED)) return;
    spp_fp_ref(fp);
    pthread_mutex_lock(&spp_fp_mu);
    spp_fp *old = spp_fdfp[fd];
    __atomic_store_n(&spp_fdfp[fd], fp, __ATOMIC_RELAXED);
    spp_fddeliv[fd] = 0;
    pthread_mutex_unlock(&spp_fp_mu);
    spp_fp_unref(old);
}

bool spp_fdfp_any(int fd) {
    return fd >= 0 && fd < SPP_FD_MAX && __atomic_load_n(&spp_fdfp[fd], __ATOMIC_RELAXED) != NULL;
}

spp_fp *spp_fdfp_get(int fd, bool *delivered) {
    if (fd < 0 || fd >= SPP_FD_MAX || !__atomic_load_n(&spp_fdfp[fd], __ATOMIC_RELAXED)) return NULL;
    pthread_mutex_lock(&spp_fp_mu);
    spp_fp *fp = spp_fdfp[fd];
    spp_fp_ref(fp);
    if (delivered) *delivered = spp_fddeliv[fd] != 0;
    pthread_mutex_unlock(&spp_fp_mu);
    return fp;
}

void spp_fdfp_delivered(int fd, const spp_fp *fp) {
    if (fd < 0 || fd >= SPP_FD_MAX) return;
    pthread_mutex_lock(&spp_fp_mu);
    if (spp_fdfp[fd] == fp) spp_fddeliv[fd] = 1;
    pthread_mutex_unlock(&spp_fp_mu);
}

void spp_fdfp_dup(int oldfd, int newfd) {
    if (newfd < 0 || newfd >= SPP_FD_MAX) return;
    bool d = false;
    spp_fp *fp = spp_fdfp_get(oldfd, &d);
    spp_fdfp_set(newfd, fp);
    if (fp && d) spp_fdfp_delivered(newfd, fp);
    spp_fp_unref(fp);
}

void spp_fdfp_forget_range(unsigned lo, unsigned hi) {
    if (lo >= (unsigned)SPP_FD_MAX) return;
    if (hi >= (unsigned)SPP_FD_MAX) hi = SPP_FD_MAX - 1;
    for (unsigned i = lo; i <= hi; i++)
        if (__atomic_load_n(&spp_fdfp[i], __ATOMIC_RELAXED)) spp_fdfp_set((int)i, NULL);
}

void spp_fp_atfork_prepare(void) { pthread_mutex_lock(&spp_fp_mu); }
void spp_fp_atfork_parent(void) { pthread_mutex_unlock(&spp_fp_mu); }
void spp_fp_atfork_child(void) { pthread_mutex_init(&spp_fp_mu, NULL); }
