/* cache.c - the verdict cache, keyed by file identity (device, inode, size,
 * mtime, ctime), so repeated opens and DataLoader workers cost one fstat.
 * A fixed open-addressing table (no allocation), one mutex, fork-safe through
 * the atfork handlers registered by init.c. Any change to the file changes
 * its key, so a rewritten file is judged again. Beside it, under the same
 * mutex, the names each recently judged trusted file imports (spp_trust_*). */
#include "spp.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "vm.h" /* spa_result, SPA_IRF_* */

typedef struct spp_slot {
    spp_key key;
    spp_cached val;
    uint8_t used;
} spp_slot;

static spp_slot spp_tab[SPP_CACHE_SLOTS];
static pthread_mutex_t spp_cache_mu = PTHREAD_MUTEX_INITIALIZER;

void spp_key_from_stat(spp_key *k, const struct stat *st) {
    memset(k, 0, sizeof *k);
    k->dev = (uint64_t)st->st_dev;
    k->ino = (uint64_t)st->st_ino;
    k->size = (uint64_t)st->st_size;
    k->mtime_s = st->st_mtim.tv_sec;
    k->mtime_ns = st->st_mtim.tv_nsec;
    k->ctime_s = st->st_ctim.tv_sec;
    k->ctime_ns = st->st_ctim.tv_nsec;
}

static bool spp_key_eq(const spp_key *a, const spp_key *b) {
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size && a->mtime_s == b->mtime_s &&
           a->mtime_ns == b->mtime_ns && a->ctime_s == b->ctime_s && a->ctime_ns == b->ctime_ns;
}

/* Slot index depends on (dev, ino) only, so a new version of a file replaces
 * the old one's entry instead of piling up next to it. */
static uint32_t spp_home(const spp_key *k) {
    uint64_t h = k->dev * 0x9e3779b97f4a7c15ull ^ k->ino * 0xc2b2ae3d27d4eb4full;
    h ^= h >> 29;
    return (uint32_t)h & (SPP_CACHE_SLOTS - 1);
}

static spp_slot *spp_find(const spp_key *k) {
    uint32_t h = spp_home(k);
    for (uint32_t i = 0; i < SPP_CACHE_PROBE; i++) {
        spp_slot *s = &spp_tab[(h + i) & (SPP_CACHE_SLOTS - 1)];
        if (s->used && spp_key_eq(&s->key, k)) return s;
    }
    return NULL;
}

/* ------------------------------------------------------------------ references */
void spp_expl_ref(spp_expl *e) {
    if (e) __atomic_add_fetch(&e->refs, 1, __ATOMIC_RELAXED);
}

void spp_expl_unref(spp_expl *e) {
    if (e && __atomic_sub_fetch(&e->refs, 1, __ATOMIC_ACQ_REL) == 0) free(e);
}

static size_t spp_slen(const char *s) { return s ? strlen(s) + 1 : 0; }

static const char *spp_scopy(char **dst, const char *s) {
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    memcpy(*dst, s, n);
    const char *r = *dst;
    *dst += n;
    return r;
}

/* One allocation: the struct, the reasons, then their strings. */
spp_expl *spp_expl_make(const spp_event *ev) {
    size_t n = ev->reasons ? ev->n_reasons : 0, str = spp_slen(ev->detail);
    for (size_t i = 0; i < n; i++)
        str += spp_slen(ev->reasons[i].rule) + spp_slen(ev->reasons[i].msg) + spp_slen(ev->reasons[i].loc);
    spp_expl *e = calloc(1, sizeof *e + n * sizeof(spa_reason) + str);
    if (!e) return NULL;
    e->refs = 1;
    e->format = (uint8_t)SPA_FMT_COUNT;
    for (int f = 0; f < SPA_FMT_COUNT; f++)
        if (ev->format && !strcmp(spa_format_name((spa_format)f), ev->format)) e->format = (uint8_t)f;
    e->trusted = ev->trusted;
    e->n_reasons = n;
    e->reasons = (spa_reason *)(e + 1);
    char *w = (char *)(e->reasons + n);
    e->detail = spp_scopy(&w, ev->detail);
    for (size_t i = 0; i < n; i++) {
        e->reasons[i].severity = ev->reasons[i].severity;
        e->reasons[i].off = ev->reasons[i].off;
        e->reasons[i].rule = spp_scopy(&w, ev->reasons[i].rule);
        e->reasons[i].msg = spp_scopy(&w, ev->reasons[i].msg);
        e->reasons[i].loc = spp_scopy(&w, ev->reasons[i].loc);
    }
    return e;
}

void spp_cached_release(spp_cached *c) {
    spp_fp_unref(c->fp);
    spp_expl_unref(c->ex);
    c->fp = NULL;
    c->ex = NULL;
}

static void spp_cached_take(const spp_cached *c) {
    spp_fp_ref(c->fp);
    spp_expl_ref(c->ex);
}

/* ------------------------------------------------------------------ strong identity */
void spp_strong_of_fd(int fd, spp_strong *s) {
    memset(s, 0, sizeof *s);
#ifdef SYS_statx
    struct statx sx;
    if (syscall(SYS_statx, fd, "", AT_EMPTY_PATH | AT_STATX_SYNC_AS_STAT, STATX_BTIME, &sx) == 0 &&
        (sx.stx_mask & STATX_BTIME)) {
        s->btime_s = sx.stx_btime.tv_sec;
        s->btime_ns = sx.stx_btime.tv_nsec;
        s->have |= 1;
    }
#endif
    int gen = 0;
    if (ioctl(fd, FS_IOC_GETVERSION, &gen) == 0) {
        s->gen = (uint32_t)gen;
        s->have |= 2;
    }
}

bool spp_strong_eq(const spp_strong *a, const spp_strong *b) {
    return a->have == b->have && a->btime_s == b->btime_s && a->btime_ns == b->btime_ns && a->gen == b->gen;
}

bool spp_cache_get(const spp_key *k, spp_cached *out) {
    pthread_mutex_lock(&spp_cache_mu);
    spp_slot *s = spp_find(k);
    if (s) {
        *out = s->val;
        spp_cached_take(out);
    }
    pthread_mutex_unlock(&spp_cache_mu);
    return s != NULL;
}

void spp_cache_drop(const spp_key *k) {
    spp_cached old = {0};
    pthread_mutex_lock(&spp_cache_mu);
    spp_slot *s = spp_find(k);
    if (s) {
        old = s->val;
        memset(s, 0, sizeof *s);
    }
    pthread_mutex_unlock(&spp_cache_mu);
    spp_cached_release(&old);
}

void spp_cache_put(const spp_key *k, const spp_cached *v) {
    pthread_mutex_lock(&spp_cache_mu);
    uint32_t h = spp_home(k);
    spp_slot *dst = NULL;
    for (uint32_t i = 0; i < SPP_CACHE_PROBE && !dst; i++) {
        spp_slot *s = &spp_tab[(h + i) & (SPP_CACHE_SLOTS - 1)];
        /* same file (any version), or a free slot */
        if (!s->used || (s->key.dev == k->dev && s->key.ino == k->ino)) dst = s;
    }
    if (!dst) dst = &spp_tab[h]; /* evict the home slot */
    spp_cached old = dst->used ? dst->val : (spp_cached){0};
    dst->key = *k;
    dst->val = *v;
    spp_cached_take(v);
    dst->used = 1;
    pthread_mutex_unlock(&spp_cache_mu);
    spp_cached_release(&old);
}

/* ------------------------------------------------------------------ trust */
typedef struct spp_trust {
    uint64_t ident;                      /* 0: free */
    bool open;                           /* names unknown: trust is not bound */
    uint32_t n;
    uint32_t h[2 * SPP_TRUST_NAMES];     /* open addressing, 0 = empty */
} spp_trust;

static spp_trust spp_trusts[SPP_TRUST_FILES];
static unsigned spp_trust_next;          /* round-robin replacement */

static uint32_t spp_name_hash(const char *module, const char *name) {
    uint32_t h = 2166136261u;
    for (const char *p = module; *p; p++) h = (h ^ (uint8_t)*p) * 16777619u;
    h = (h ^ 0xffu) * 16777619u;
    for (const char *p = name; *p; p++) h = (h ^ (uint8_t)*p) * 16777619u;
    return h ? h : 1;
}

static void spp_trust_add(spp_trust *t, const char *module, const char *name) {
    if (t->open || !module || !name) return;
    uint32_t h = spp_name_hash(module, name), i = h;
    for (;; i++) {
        uint32_t *s = &t->h[i & (2 * SPP_TRUST_NAMES - 1)];
        if (*s == h) return;
        if (!*s) {
            if (t->n == SPP_TRUST_NAMES) { t->open = true; return; }
            *s = h;
            t->n++;
            return;
        }
    }
}

/* Loaders that rename a module before find_class (so before its audit event):
 * torch.load maps torch.tensor to torch._tensor. */
static const char *const spp_loader_renames[][2] = { { "torch.tensor", "torch._tensor" } };

void spp_trust_put(uint64_t ident, const struct spa_result *r) {
    if (!ident) return;
    pthread_mutex_lock(&spp_cache_mu);
    spp_trust *t = NULL;
    for (unsigned i = 0; i < SPP_TRUST_FILES && !t; i++)
        if (spp_trusts[i].ident == ident) t = &spp_trusts[i];
    if (!t) t = &spp_trusts[spp_trust_next++ % SPP_TRUST_FILES];
    memset(t, 0, sizeof *t);
    t->ident = ident;
    t->open = !r;
    for (size_t s = 0; r && s < r->n_streams; s++) {
        const spa_stream *st = &r->streams[s];
        for (size_t k = 0; k < st->n_ir; k++) {
            const spa_ir *e = &st->ir[k];
            if (e->kind != SPA_IR_IMPORT) continue;
            /* a name computed at run time (dynamic STACK_GLOBAL, an EXT code)
             * cannot be listed: that file's trust stays unbound */
            if ((e->flags & (SPA_IRF_DYNAMIC | SPA_IRF_EXT)) || !e->result) { t->open = true; break; }
            const spa_val *g = e->result;
            spp_trust_add(t, g->u.g.raw_module, g->u.g.raw_name);   /* what find_class is given */
            spp_trust_add(t, e->module, e->name);                   /* after the Python 2 mapping */
            for (size_t m = 0; m < sizeof spp_loader_renames / sizeof spp_loader_renames[0]; m++)
                if (g->u.g.raw_module && !strcmp(g->u.g.raw_module, spp_loader_renames[m][0]))
                    spp_trust_add(t, spp_loader_renames[m][1], g->u.g.raw_name);
        }
    }
    pthread_mutex_unlock(&spp_cache_mu);
}

int spp_trust_check(uint64_t ident, const char *module, const char *name) {
    int res = -1;
    pthread_mutex_lock(&spp_cache_mu);
    for (unsigned i = 0; i < SPP_TRUST_FILES; i++) {
        const spp_trust *t = &spp_trusts[i];
        if (!ident || t->ident != ident) continue;
        if (t->open) break;
        uint32_t h = spp_name_hash(module, name);
        res = 0;
        for (uint32_t j = h;; j++) {
            uint32_t v = t->h[j & (2 * SPP_TRUST_NAMES - 1)];
            if (v == h) { res = 1; break; }
            if (!v) break;
        }
        break;
    }
    pthread_mutex_unlock(&spp_cache_mu);
    return res;
}

bool spp_cache_mark_reported(const spp_key *k) {
    bool first = false;
    pthread_mutex_lock(&spp_cache_mu);
    spp_slot *s = spp_find(k);
    if (s && !s->val.reported) { s->val.reported = 1; first = true; }
    pthread_mutex_unlock(&spp_cache_mu);
    return first;
}

void spp_cache_init(void) {
    /* The table is static and zeroed; nothing to allocate. */
}

void spp_cache_atfork_prepare(void) { pthread_mutex_lock(&spp_cache_mu); }
void spp_cache_atfork_parent(void) { pthread_mutex_unlock(&spp_cache_mu); }
void spp_cache_atfork_child(void) { pthread_mutex_init(&spp_cache_mu, NULL); }
