/* pcache.c - the persistent verdict cache shared by a user's processes: one
 * file per judged pickle-bearing file, in the directory analyzer/vcache.c
 * names and vets, holding the verdict, what it said, and the fingerprint of the
 * bytes judged, keyed by the file's identity (stat + birth time + generation),
 * the policy's digest (with the environment index's identity: a rebuilt index is
 * another key) and the engine's (version + build id, which covers the
 * analyzer code and the embedded knowledge base). Each entry carries an
 * HMAC-SHA256 under a per-user secret (`key`, 0600), so whoever controls a
 * file's bytes cannot forge one. Any doubt (missing, foreign, malformed, wrong
 * MAC, other identity) is a miss: the file is scanned again. No lock, no fd
 * kept open, nothing that blocks (O_NONBLOCK opens of vetted regular files). */
#include "spp.h"

#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kb.h"
#include "sha256.h"

#define PC_MAGIC     "SPVC0001"
#define PC_MAX_ENTRY (64u << 20)   /* largest entry read (a fingerprint of ~16 GiB judged) */
#define PC_KEY_BYTES 32

static bool pc_on;
static char pc_dir[SPP_PATH_MAX];
static uint8_t pc_secret[PC_KEY_BYTES];
static uint8_t pc_engine[32], pc_policy[32];

/* ------------------------------------------------------------------ digests */
static void pc_hmac(const uint8_t *msg, size_t n, uint8_t out[32]) {
    uint8_t k[64] = {0}, pad[64], inner[32];
    memcpy(k, pc_secret, sizeof pc_secret);
    spa_sha256 h;
    for (int i = 0; i < 64; i++) pad[i] = k[i] ^ 0x36;
    spa_sha256_init(&h);
    spa_sha256_update(&h, pad, 64);
    spa_sha256_update(&h, msg, n);
    spa_sha256_final(&h, inner);
    for (int i = 0; i < 64; i++) pad[i] = k[i] ^ 0x5c;
    spa_sha256_init(&h);
    spa_sha256_update(&h, pad, 64);
    spa_sha256_update(&h, inner, 32);
    spa_sha256_final(&h, out);
}

/* The GNU build id of the object holding this code (changes with any change
 * to the analyzer, the knowledge base or the preload). */
static int pc_note_cb(struct dl_phdr_info *info, size_t size, void *data) {
    spa_sha256 *h = data;
    uintptr_t me = (uintptr_t)&pc_note_cb;
    (void)size;
    bool mine = false;
    for (int i = 0; i < info->dlpi_phnum && !mine; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t a = (uintptr_t)info->dlpi_addr + ph->p_vaddr;
        mine = ph->p_type == PT_LOAD && me >= a && me < a + ph->p_memsz;
    }
    if (!mine) return 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_NOTE) continue;
        const uint8_t *p = (const uint8_t *)(info->dlpi_addr + ph->p_vaddr), *end = p + ph->p_memsz;
        while (p + sizeof(ElfW(Nhdr)) <= end) {
            const ElfW(Nhdr) *nh = (const ElfW(Nhdr) *)p;
            const uint8_t *desc = p + sizeof *nh + ((nh->n_namesz + 3u) & ~3u);
            if (desc + nh->n_descsz > end) break;
            if (nh->n_type == NT_GNU_BUILD_ID && nh->n_descsz >= 8) {
                spa_sha256_update(h, desc, nh->n_descsz);
                return 1;
            }
            p = desc + ((nh->n_descsz + 3u) & ~3u);
        }
    }
    return 2;
}

static bool pc_engine_digest(void) {
    spa_sha256 h;
    spa_sha256_init(&h);
    spa_sha256_update(&h, PC_MAGIC, 8);
    spa_sha256_update(&h, SPA_VERSION, sizeof SPA_VERSION);
    if (dl_iterate_phdr(pc_note_cb, &h) != 1) return false; /* no build id: no persistent cache */
    spa_sha256_final(&h, pc_engine);
    return true;
}

static bool pc_policy_digest(const spa_policy *pol) {
    spa_sha256 h;
    uint8_t d[32];
    spa_sha256_init(&h);
    const char *path = getenv("SAFEPICKLE_POLICY");
    if (path && *path) {
        spa_err err = {0};
        if (spa_sha256_file(path, d, &err) != SPA_OK) return false;
        spa_sha256_update(&h, d, sizeof d);
    } else {
        size_t n = 0;
        const char *j = spa_policy_default_json(&n);
        if (!j) return false;
        spa_sha256_update(&h, j, n);
    }
    uint8_t mode = (uint8_t)pol->mode;   /* SAFEPICKLE_MODE overrides the text */
    spa_sha256_update(&h, &mode, 1);
    spa_kb_index_digest(d);              /* the environment index judges too: a rebuilt one is another key */
    spa_sha256_update(&h, d, sizeof d);
    spa_sha256_final(&h, pc_policy);
    return true;
}

/* ------------------------------------------------------------------ the secret */
static bool pc_read_all(int fd, uint8_t *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        got += (size_t)r;
    }
    return true;
}

static bool pc_write_all(int fd, const uint8_t *buf, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        buf += w;
        n -= (size_t)w;
    }
    return true;
}

/* The per-user secret: read from `key`, or made (written to a private name,
 * then linked into place, so a reader never sees half of it). */
static bool pc_secret_load(int dirfd) {
    for (int attempt = 0; attempt < 2; attempt++) {
        int fd = spa_vcache_open_entry(dirfd, "key", PC_KEY_BYTES);
        if (fd >= 0) {
            struct stat st;
            bool ok = fstat(fd, &st) == 0 && st.st_size == PC_KEY_BYTES && pc_read_all(fd, pc_secret, PC_KEY_BYTES);
            close(fd);
            return ok;
        }
        if (attempt) break;
        uint8_t k[PC_KEY_BYTES];
        if (syscall(SYS_getrandom, k, sizeof k, 0) != (long)sizeof k) return false;
        char tmp[64];
        snprintf(tmp, sizeof tmp, "k-%d", (int)getpid());
        int w = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (w < 0) return false;
        bool ok = pc_write_all(w, k, sizeof k);
        close(w);
        if (ok) (void)linkat(dirfd, tmp, dirfd, "key", 0);  /* loses to a concurrent maker: fine */
        unlinkat(dirfd, tmp, 0);
    }
    return false;
}

void spp_pcache_init(void) {
    const char *why = NULL;
    const spa_policy *pol = spp_policy();
    if (!pol || spp_policy_broken()) return;
    if (!spa_vcache_dir(pc_dir, sizeof pc_dir, &why)) return;
    int dirfd = spa_vcache_open_dir(pc_dir, true, &why);
    if (dirfd < 0) return;
    bool ok = pc_secret_load(dirfd);
    close(dirfd);
    if (!ok || !pc_engine_digest() || !pc_policy_digest(pol)) return;
    /* fingerprints in entries must mean the same in every process of the user */
    spa_sha256 h;
    uint8_t seed[32];
    spa_sha256_init(&h);
    spa_sha256_update(&h, "nh-key", 6);
    spa_sha256_update(&h, pc_secret, sizeof pc_secret);
    spa_sha256_final(&h, seed);
    spp_fp_seed(seed);
    pc_on = true;
}

/* ------------------------------------------------------------------ entry format */
typedef struct pc_buf { uint8_t *p; size_t n, cap; bool bad; } pc_buf;

static void pc_put(pc_buf *b, const void *v, size_t n) {
    if (b->bad) return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->n + n) cap *= 2;
        uint8_t *q = realloc(b->p, cap);
        if (!q) { b->bad = true; return; }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, v, n);
    b->n += n;
}
static void pc_u8(pc_buf *b, uint8_t v) { pc_put(b, &v, 1); }
static void pc_u32(pc_buf *b, uint32_t v) { pc_put(b, &v, 4); }
static void pc_u64(pc_buf *b, uint64_t v) { pc_put(b, &v, 8); }
static void pc_str(pc_buf *b, const char *s) {
    uint32_t n = s ? (uint32_t)strlen(s) : UINT32_MAX;
    pc_u32(b, n);
    if (s) pc_put(b, s, n);
}

typedef struct pc_cur { const uint8_t *p; size_t n, pos; bool bad; } pc_cur;
static const uint8_t *pc_get(pc_cur *c, size_t n) {
    if (c->bad || n > c->n - c->pos) { c->bad = true; return NULL; }
    const uint8_t *r = c->p + c->pos;
    c->pos += n;
    return r;
}
static uint8_t pc_g8(pc_cur *c) { const uint8_t *p = pc_get(c, 1); return p ? *p : 0; }
static uint32_t pc_g32(pc_cur *c) { uint32_t v = 0; const uint8_t *p = pc_get(c, 4); if (p) memcpy(&v, p, 4); return v; }
static uint64_t pc_g64(pc_cur *c) { uint64_t v = 0; const uint8_t *p = pc_get(c, 8); if (p) memcpy(&v, p, 8); return v; }
/* A string as a pointer into the entry (NUL-free, copied out by spp_expl_make). */
static char *pc_gstr(pc_cur *c, char *store, size_t cap, size_t *used) {
    uint32_t n = pc_g32(c);
    if (n == UINT32_MAX || c->bad) return NULL;
    const uint8_t *p = pc_get(c, n);
    if (!p || *used + n + 1 > cap || memchr(p, 0, n)) { c->bad = true; return NULL; }
    char *s = store + *used;
    memcpy(s, p, n);
    s[n] = '\0';
    *used += n + 1;
    return s;
}

static void pc_key(pc_buf *b, const spp_key *k, const spp_strong *s) {
    pc_put(b, PC_MAGIC, 8);
    pc_put(b, pc_engine, 32);
    pc_put(b, pc_policy, 32);
    uint64_t f[7] = { k->dev, k->ino, k->size, (uint64_t)k->mtime_s, (uint64_t)k->mtime_ns,
                      (uint64_t)k->ctime_s, (uint64_t)k->ctime_ns };
    pc_put(b, f, sizeof f);
    pc_u64(b, (uint64_t)s->btime_s);
    pc_u32(b, s->btime_ns);
    pc_u32(b, s->gen);
    pc_u8(b, s->have);
}

/* The entry's file name: by file (dev, inode) and policy, so a new version of
 * a file replaces the old one's entry. */
static void pc_name(const spp_key *k, char out[40]) {
    spa_sha256 h;
    uint8_t d[32];
    spa_sha256_init(&h);
    spa_sha256_update(&h, pc_secret, sizeof pc_secret);
    spa_sha256_update(&h, &k->dev, sizeof k->dev);
    spa_sha256_update(&h, &k->ino, sizeof k->ino);
    spa_sha256_update(&h, pc_policy, sizeof pc_policy);
    spa_sha256_final(&h, d);
    out[0] = 'e';
    out[1] = '-';
    for (int i = 0; i < 16; i++) snprintf(out + 2 + 2 * i, 3, "%02x", d[i]);
}

/* ------------------------------------------------------------------ put */
void spp_pcache_put(const spp_key *k, const spp_cached *c) {
    if (!pc_on || !c->bearing) return;
    pc_buf b = {0};
    pc_key(&b, k, &c->strong);
    pc_u8(&b, c->verdict);
    pc_u8(&b, c->action);
    pc_u8(&b, c->bearing);
    const spp_fp *fp = c->fp;
    pc_u32(&b, fp ? fp->n_runs : UINT32_MAX);
    if (fp) {
        pc_u64(&b, fp->size);
        pc_u32(&b, fp->n_blocks);
        for (uint32_t i = 0; i < fp->n_runs; i++) {
            pc_u64(&b, fp->runs[i].first);
            pc_u32(&b, fp->runs[i].n);
        }
        pc_put(&b, fp->h, fp->n_blocks * sizeof *fp->h);
    }
    const spp_expl *x = c->ex;
    pc_u8(&b, x ? 1 : 0);
    if (x) {
        pc_u8(&b, x->format);
        pc_u8(&b, x->trusted);
        pc_str(&b, x->detail);
        pc_u32(&b, (uint32_t)x->n_reasons);
        for (size_t i = 0; i < x->n_reasons; i++) {
            pc_u8(&b, (uint8_t)x->reasons[i].severity);
            pc_u64(&b, x->reasons[i].off);
            pc_str(&b, x->reasons[i].rule);
            pc_str(&b, x->reasons[i].msg);
            pc_str(&b, x->reasons[i].loc);
        }
    }
    uint8_t mac[32];
    if (!b.bad) {
        pc_hmac(b.p, b.n, mac);
        pc_put(&b, mac, sizeof mac);
    }
    const char *why = NULL;
    int dirfd = b.bad || b.n > PC_MAX_ENTRY ? -1 : spa_vcache_open_dir(pc_dir, false, &why);
    if (dirfd >= 0) {
        char name[40], tmp[64];
        pc_name(k, name);
        uint64_t r = 0;
        (void)syscall(SYS_getrandom, &r, sizeof r, 0);
        snprintf(tmp, sizeof tmp, "t-%d-%016llx", (int)getpid(), (unsigned long long)r);
        int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0600);
        if (fd >= 0) {
            bool ok = pc_write_all(fd, b.p, b.n);
            close(fd);
            if (!ok || renameat(dirfd, tmp, dirfd, name) != 0) unlinkat(dirfd, tmp, 0);
        }
        close(dirfd);
    }
    free(b.p);
}

/* ------------------------------------------------------------------ get */
/* Parse the verdict, fingerprint and explanation after the key (c->bad on any
 * inconsistency); fills *out with new references. */
static void pc_parse(pc_cur *c, const spp_key *k, spp_cached *out) {
    out->verdict = pc_g8(c);
    out->action = pc_g8(c);
    out->bearing = pc_g8(c);
    if (out->verdict >= SPA_VERDICT_COUNT || out->action > SPA_ACT_BLOCK || !out->bearing || out->bearing > 2)
        c->bad = true;
    uint32_t n_runs = pc_g32(c);
    if (n_runs != UINT32_MAX && !c->bad) {
        uint64_t size = pc_g64(c);
        uint32_t n_blocks = pc_g32(c);
        if (size != k->size || n_runs > n_blocks || (uint64_t)n_blocks * SPP_FP_BLOCK > size + SPP_FP_BLOCK ||
            (size_t)n_runs * 12 + (size_t)n_blocks * 16 > c->n - c->pos) { c->bad = true; return; }
        spp_fp_run *runs = malloc((n_runs ? n_runs : 1) * sizeof *runs);
        if (!runs) { c->bad = true; return; }
        uint64_t next = 0, total = 0;
        for (uint32_t i = 0; i < n_runs && !c->bad; i++) {
            runs[i].first = pc_g64(c);
            runs[i].n = pc_g32(c);
            runs[i].hix = (uint32_t)total;
            total += runs[i].n;
            if (runs[i].n == 0 || runs[i].first < next || (i && runs[i].first == next) ||
                runs[i].first + runs[i].n > (size + SPP_FP_BLOCK - 1) / SPP_FP_BLOCK) c->bad = true;
            next = runs[i].first + runs[i].n;
        }
        const uint8_t *h = total == n_blocks ? pc_get(c, (size_t)n_blocks * 16) : NULL;
        if (!h) c->bad = true;
        if (!c->bad) {
            spp_h128 *hh = malloc((n_blocks ? n_blocks : 1) * sizeof *hh);
            if (hh) memcpy(hh, h, (size_t)n_blocks * 16);
            out->fp = hh ? spp_fp_make(k->dev, k->ino, size, runs, n_runs, hh, n_blocks) : NULL;
            free(hh);
            if (!out->fp) c->bad = true;
        }
        free(runs);
    }
    if (pc_g8(c) && !c->bad) {
        size_t used = 0, cap = c->n;  /* the strings, NUL-terminated, fit in the entry's size */
        char *store = malloc(cap);    /* copied out by spp_expl_make */
        if (!store) { c->bad = true; return; }
        uint8_t fmt = pc_g8(c), trusted = pc_g8(c);
        const char *detail = pc_gstr(c, store, cap, &used);
        uint32_t n = pc_g32(c);
        spa_reason *rs = n <= 4096 && !c->bad ? calloc(n ? n : 1, sizeof *rs) : NULL;
        if (!rs) { c->bad = true; free(store); return; }
        for (uint32_t i = 0; i < n && !c->bad; i++) {
            rs[i].severity = (spa_verdict)pc_g8(c);
            rs[i].off = pc_g64(c);
            rs[i].rule = pc_gstr(c, store, cap, &used);
            rs[i].msg = pc_gstr(c, store, cap, &used);
            rs[i].loc = pc_gstr(c, store, cap, &used);
            if (rs[i].severity >= SPA_VERDICT_COUNT) c->bad = true;
        }
        spp_event ev = { .format = fmt < SPA_FMT_COUNT ? spa_format_name((spa_format)fmt) : NULL,
                         .trusted = trusted != 0, .detail = detail, .reasons = rs, .n_reasons = n };
        if (!c->bad && !(out->ex = spp_expl_make(&ev))) c->bad = true;
        free(rs);
        free(store);
    }
}

bool spp_pcache_get(int fd, const spp_key *k, spp_cached *out) {
    if (!pc_on) return false;
    memset(out, 0, sizeof *out);
    spp_strong_of_fd(fd, &out->strong);
    const char *why = NULL;
    int dirfd = spa_vcache_open_dir(pc_dir, false, &why);
    if (dirfd < 0) return false;
    char name[40];
    pc_name(k, name);
    int efd = spa_vcache_open_entry(dirfd, name, PC_MAX_ENTRY);
    close(dirfd);
    if (efd < 0) return false;
    struct stat st;
    uint8_t *buf = NULL;
    bool ok = fstat(efd, &st) == 0 && st.st_size > 32 && (buf = malloc((size_t)st.st_size)) &&
              pc_read_all(efd, buf, (size_t)st.st_size);
    close(efd);
    if (!ok) { free(buf); return false; }
    size_t n = (size_t)st.st_size - 32;
    uint8_t mac[32];
    pc_hmac(buf, n, mac);
    pc_buf want = {0};
    pc_key(&want, k, &out->strong);
    /* a forged entry fails the MAC; a genuine one for another version, engine
     * or policy fails the key comparison (both in constant shape) */
    unsigned diff = 0;
    for (int i = 0; i < 32; i++) diff |= (unsigned)(mac[i] ^ buf[n + (size_t)i]);
    ok = !diff && !want.bad && want.n <= n && memcmp(buf, want.p, want.n) == 0;
    if (ok) {
        pc_cur c = { buf, n, want.n, false };
        pc_parse(&c, k, out);
        ok = !c.bad && c.pos == n && (out->action == SPA_ACT_BLOCK || out->fp);
    }
    free(want.p);
    free(buf);
    if (!ok) spp_cached_release(out);
    return ok;
}
