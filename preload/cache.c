/* cache.c - the verdict cache, keyed by file identity (device, inode, size,
 * mtime, ctime), so repeated opens and DataLoader workers cost one fstat.
 * A fixed open-addressing table (no allocation), one mutex, fork-safe through
 * the atfork handlers registered by init.c. Any change to the file changes
 * its key, so a rewritten file is judged again. */
#include "spp.h"

#include <pthread.h>
#include <string.h>

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

bool spp_cache_get(const spp_key *k, spp_cached *out) {
    pthread_mutex_lock(&spp_cache_mu);
    spp_slot *s = spp_find(k);
    if (s) *out = s->val;
    pthread_mutex_unlock(&spp_cache_mu);
    return s != NULL;
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
    dst->key = *k;
    dst->val = *v;
    dst->used = 1;
    pthread_mutex_unlock(&spp_cache_mu);
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
