/* fdtrack.c - the fd table: for each fd, the identity of the content last
 * judged on it (a hash of dev, ino, size, mtime, ctime, with tags) and its
 * fingerprint (verify.c), copied by the
 * dup family and fcntl(F_DUPFD*), cleared by close. Lock-free (one atomic word
 * per fd). It is a hint: every use compares the fd's current identity, so a
 * stale entry (an fd closed behind our back, a file rewritten in place) only
 * costs a fresh judgement, never a pass. */
#include "spp.h"

#include <unistd.h>

/* identity | SPP_FD_* tags (refused, trusted, pickle-bearing). */
static uint64_t spp_fdtab[SPP_FD_MAX];

static inline uint64_t spp_mix(uint64_t h, uint64_t v) {
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    h ^= h >> 31;
    h *= 0xbf58476d1ce4e5b9ull;
    return h ^ (h >> 29);
}

uint64_t spp_ident_hash(const struct stat *st) {
    uint64_t h = 0x243f6a8885a308d3ull;
    h = spp_mix(h, (uint64_t)st->st_dev);
    h = spp_mix(h, (uint64_t)st->st_ino);
    h = spp_mix(h, (uint64_t)st->st_size);
    h = spp_mix(h, (uint64_t)st->st_mtim.tv_sec);
    h = spp_mix(h, (uint64_t)st->st_mtim.tv_nsec);
    h = spp_mix(h, (uint64_t)st->st_ctim.tv_sec);
    h = spp_mix(h, (uint64_t)st->st_ctim.tv_nsec);
    h &= ~SPP_FD_TAGS;    /* the low bits are tags (spp.h) */
    return h ? h : SPP_FD_TAGS + 1; /* 0 means "nothing judged" */
}

void spp_fd_set(int fd, uint64_t ident) {
    if (fd >= 0 && fd < SPP_FD_MAX) __atomic_store_n(&spp_fdtab[fd], ident, __ATOMIC_RELAXED);
}

uint64_t spp_fd_get(int fd) {
    if (fd >= 0 && fd < SPP_FD_MAX) return __atomic_load_n(&spp_fdtab[fd], __ATOMIC_RELAXED);
    return 0;
}

/* ------------------------------------------------------------------ owner */
/* The tables belong to one process. A vfork child (CPython's subprocess starts
 * every program so) runs the close and dup hooks between vfork and exec on its
 * parent's memory: its close_range(3, ~0) would clear the parent's whole table,
 * and a file the parent is reading would be judged again from offset 0 at its
 * next read (test_race.py, head_gone_spawn). So the close and dup hooks change
 * the tables only in the process that owns them: set at init, and by the
 * pthread_atfork child handler in a forked child (which has its own copy). A
 * process that changes owner without either (a raw clone) only leaves stale
 * entries, which cost a fresh judgement. getpid is asked only when an entry
 * would change. */
static pid_t spp_fd_owner_pid;

void spp_fd_owner_reset(void) { __atomic_store_n(&spp_fd_owner_pid, getpid(), __ATOMIC_RELAXED); }

static bool spp_fd_owner(void) {
    pid_t o = __atomic_load_n(&spp_fd_owner_pid, __ATOMIC_RELAXED);
    return o == 0 || o == getpid(); /* 0: before init, nothing tracked yet */
}

/* The fingerprint table (verify.c) follows the fd table. */
void spp_fd_forget(int fd) {
    if (!spp_fd_get(fd) && !spp_fdfp_any(fd)) return;
    if (!spp_fd_owner()) return;
    spp_fd_set(fd, 0);
    spp_fdfp_set(fd, NULL);
}

void spp_fd_forget_range(unsigned lo, unsigned hi) {
    if (lo >= (unsigned)SPP_FD_MAX) return;
    if (hi >= (unsigned)SPP_FD_MAX) hi = SPP_FD_MAX - 1;
    if (!spp_fd_owner()) return;
    for (unsigned i = lo; i <= hi; i++) spp_fd_set((int)i, 0);
    spp_fdfp_forget_range(lo, hi);
}

void spp_fd_dup(int oldfd, int newfd) {
    if (!spp_fd_get(oldfd) && !spp_fd_get(newfd) && !spp_fdfp_any(oldfd) && !spp_fdfp_any(newfd)) return;
    if (!spp_fd_owner()) return;
    spp_fd_set(newfd, spp_fd_get(oldfd));
    spp_fdfp_dup(oldfd, newfd);
}

/* ------------------------------------------------------------------ feed */
SPP_TLS spp_feed_t spp_feed = { .fd = -1, .ent = 0, .scope = false, .taint = false };

void spp_feed_note(int fd, uint64_t ent) {
    spp_feed_t *f = &spp_feed;
    if (ent & SPP_FD_TRUSTED) {
        /* Inside a scope the bytes feed that scope: never a pending source for
         * a later one (a trusted load's tail must not bless the next load). */
        if (!f->scope) { f->fd = fd; f->ent = ent; }
    } else if (ent & SPP_FD_BEARING) {
        f->fd = -1;
        f->ent = 0;
        f->taint = true;
    }
}

bool spp_feed_peek(void) {
    const spp_feed_t *f = &spp_feed;
    return f->fd >= 0 && f->ent != 0 && spp_fd_get(f->fd) == f->ent;
}

bool spp_feed_take(void) {
    bool ok = spp_feed_peek();
    spp_feed.fd = -1;
    spp_feed.ent = 0;
    spp_feed.taint = false;
    return ok;
}
