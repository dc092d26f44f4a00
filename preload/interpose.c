/* interpose.c - the exported hook wrappers, generated from hooks.def: one body
 * per hook kind (open, fopen, fd read, stdio read, mmap, close, dup...). Every
 * wrapper resolves its real function lazily, passes straight through when the
 * preload is not acting (untargeted process, nested call, during init) and
 * preserves errno; only a refusal changes the outcome of a call. */
#include "spp.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <pthread.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

/* Prototypes for every hook (the fortified and *64 names are not declared by
 * the headers in this build). Identical redeclarations are harmless. */
#define SPP_HOOK(kind, ret, name, params, args) SPP_EXPORT ret name params;
#include "hooks.def"
#undef SPP_HOOK

#define SPP_REAL(name) \
    (real_##name ? real_##name : (spp_real_##name##_t)spp_resolve_one(SPP_H_##name))

/* mode is read only when the flags say a mode was passed (O_CREAT, O_TMPFILE). */
#define SPP_NEEDS_MODE(fl) (((fl) & O_CREAT) != 0 || ((fl) & O_TMPFILE) == O_TMPFILE)

/* After a successful open of `fd`: judge it unless it was opened write-only,
 * as a path or a directory. On refusal the fd is closed and the call fails. */
static int spp_after_open(int fd, const char *path, int flags, int hook) {
    if (fd < 0) return fd;
    if ((flags & O_ACCMODE) == O_WRONLY || (flags & (O_PATH | O_DIRECTORY))) {
        spp_fd_forget(fd);
        return fd;
    }
    int saved = errno;
    spp_depth++;
    int e = spp_judge_fd(fd, path, hook, SPP_AT_OPEN);
    if (e) {
        spp_fd_forget(fd);
        spp_real_close_t c = SPP_REAL(close);
        if (c) c(fd);
    }
    spp_depth--;
    if (e) { errno = e; return -1; }
    errno = saved;
    return fd;
}

/* Does an fopen mode string open for reading? ("r", "r+", "w+", "a+") */
static bool spp_mode_reads(const char *mode) {
    if (!mode) return false;
    if (mode[0] == 'r') return true;
    for (const char *m = mode; *m && *m != ','; m++)
        if (*m == '+') return true;
    return false;
}

static FILE *spp_after_fopen(FILE *f, const char *path, const char *mode, int hook) {
    if (!f || !spp_mode_reads(mode)) return f;
    int saved = errno;
    spp_depth++;
    int fd = fileno(f);
    int e = fd >= 0 ? spp_judge_fd(fd, path, hook, SPP_AT_OPEN) : 0;
    if (e) {
        spp_fd_forget(fd);
        spp_real_fclose_t c = SPP_REAL(fclose);
        if (c) c(f);
    }
    spp_depth--;
    if (e) { errno = e; return NULL; }
    errno = saved;
    return f;
}

/* A read, fread, mmap or fdopen on an fd: judged on first use (and again if
 * the file changed); returns 0 or the errno of a refusal. */
static int spp_use(int fd, int hook, uint64_t *ent) {
    *ent = 0;
    if (fd < 0) return 0;
    int saved = errno;
    spp_depth++;
    int e = spp_judge_fd_ent(fd, NULL, hook, SPP_AT_USE, ent);
    spp_depth--;
    errno = saved;
    return e;
}

/* Before a read-family call on an fd whose entry is an identity judged not
 * pickle-bearing (no tag): nothing is judged before the call. The recheck
 * after it (spp_recheck_read: one fstat) compares the identity then with this
 * one, so a change before the call is caught there as a change during it is:
 * one fstat per read instead of two. false: judge before the call (spp_use). */
static inline bool spp_use_plain(int fd, uint64_t *ent) {
#ifdef SPP_BENCH_NO_RECHECK
    return false; /* test/bench/bench_verify.sh only: the preload as it was before the recheck */
#endif
    uint64_t s = spp_fd_get(fd);
    if (!s || (s & SPP_FD_TAGS & ~SPP_FD_RECOG)) return false;
    *ent = s;
    return true;
}

/* After a read-family call returned bytes from a judged pickle-bearing fd:
 * tell layer 2 what fed this thread (trusted file or not). No errno change. */
#define SPP_FEED(fd, ent, got) \
    do { if ((ent) & (SPP_FD_TRUSTED | SPP_FD_BEARING) && (got)) spp_feed_note((fd), (ent)); } while (0)

/* ------------------------------------------------------------------ bodies per kind */
/* open and openat: params end in "int flags, ..."; mode is read only when flags say so */
#define SPP_WRAP_OPEN(ret, name, params, args) \
    SPP_EXPORT ret name params { \
        mode_t mode = 0; \
        if (SPP_NEEDS_MODE(flags)) { va_list ap; va_start(ap, flags); mode = va_arg(ap, mode_t); va_end(ap); } \
        spp_real_##name##_t f = SPP_REAL(name); \
        if (!f) { errno = ENOSYS; return -1; } \
        if (!spp_enter_open()) return f args; \
        return spp_after_open(f args, path, flags, SPP_H_##name); \
    }
#define SPP_WRAP_OPENAT SPP_WRAP_OPEN

#define SPP_WRAP_OPEN2(ret, name, params, args) \
    SPP_EXPORT int name params { \
        spp_real_##name##_t f = SPP_REAL(name); \
        if (!f) { errno = ENOSYS; return -1; } \
        if (!spp_enter_open()) return f args; \
        return spp_after_open(f args, path, flags, SPP_H_##name); \
    }
#define SPP_WRAP_OPENAT2 SPP_WRAP_OPEN2

#define SPP_WRAP_FOPEN(ret, name, params, args) \
    SPP_EXPORT ret name params { \
        spp_real_##name##_t f = SPP_REAL(name); \
        if (!f) { errno = ENOSYS; return NULL; } \
        if (!spp_enter_open()) return f args; \
        return spp_after_fopen(f args, path, mode, SPP_H_##name); \
    }
#define SPP_WRAP_FREOPEN SPP_WRAP_FOPEN

#define SPP_WRAP_FDOPEN(ret, name, params, args) \
    SPP_EXPORT ret name params { \
        spp_real_##name##_t f = SPP_REAL(name); \
        if (!f) { errno = ENOSYS; return NULL; } \
        uint64_t ent_; \
        if (spp_enter()) { int e_ = spp_use(fd, SPP_H_##name, &ent_); if (e_) { errno = e_; return NULL; } } \
        return f args; \
    }

/* After a read-family call returned `got` bytes from a judged pickle-bearing
 * fd: check them against the bytes judged (spp_verify_read); 0 or an errno. */
static int spp_after_read(int fd, int hook, const struct iovec *iov, int cnt, size_t got, int64_t off) {
    int saved = errno;
    spp_depth++;
    int e = spp_verify_read(fd, hook, iov, cnt, got, off);
    spp_depth--;
    errno = saved;
    return e;
}

#define SPP_VERIFIED(fd, ent) (((ent) & (SPP_FD_TRUSTED | SPP_FD_BEARING)) != 0)

/* After a read-family call returned bytes from a regular file not judged
 * pickle-bearing before it: did it change during the call? (spp_recheck_read) */
static int spp_after_unjudged(int fd, int hook, const struct iovec *iov, int cnt, size_t got, int64_t off,
                              uint64_t *ent) {
    int saved = errno;
    spp_depth++;
    int e = spp_recheck_read(fd, hook, iov, cnt, got, off, ent);
    spp_depth--;
    errno = saved;
    return e;
}

/* SEGS/CNT: where the bytes went; OFF: their file offset (-1: the fd's offset). */
#define SPP_WRAP_FDREAD_BODY(ret, name, params, args, SEGS, CNT, OFF) \
    SPP_EXPORT ret name params { \
        spp_real_##name##_t f = SPP_REAL(name); \
        if (!f) { errno = ENOSYS; return -1; } \
        uint64_t ent_ = 0; \
        if (spp_enter() && !spp_use_plain(fd, &ent_)) { \
            int e_ = spp_use(fd, SPP_H_##name, &ent_); if (e_) { errno = e_; return -1; } } \
        ret r_ = f args; \
        if (r_ > 0 && ent_ && !SPP_VERIFIED(fd, ent_)) { \
            int v_ = spp_after_unjudged(fd, SPP_H_##name, SEGS, CNT, (size_t)r_, OFF, &ent_); \
            if (v_) { errno = v_; return -1; } \
        } else if (r_ > 0 && SPP_VERIFIED(fd, ent_)) { \
            int v_ = spp_after_read(fd, SPP_H_##name, SEGS, CNT, (size_t)r_, OFF); \
            if (v_) { errno = v_; return -1; } \
        } \
        SPP_FEED(fd, ent_, r_ > 0); \
        return r_; \
    }
#define SPP_WRAP_FDREAD(ret, name, params, args) \
    SPP_WRAP_FDREAD_BODY(ret, name, params, args, (&(struct iovec){ buf, n }), 1, -1)
#define SPP_WRAP_FDPREAD(ret, name, params, args) \
    SPP_WRAP_FDREAD_BODY(ret, name, params, args, (&(struct iovec){ buf, n }), 1, (int64_t)off)
#define SPP_WRAP_FDREADV(ret, name, params, args) \
    SPP_WRAP_FDREAD_BODY(ret, name, params, args, iov, cnt, -1)
/* preadv2 with offset -1 reads at (and moves) the fd's offset */
#define SPP_WRAP_FDPREADV(ret, name, params, args) \
    SPP_WRAP_FDREAD_BODY(ret, name, params, args, iov, cnt, (off < 0 ? -1 : (int64_t)off))

/* stdio: the bytes come out of the FILE's buffer, filled by glibc's internal
 * read (no hook sees it): they are checked here, placed by ftello after the
 * call. A mismatch returns 0 items with errno EIO. */
static size_t spp_after_fread(FILE *fp, int fd, int hook, void *ptr, size_t bytes) {
    int saved = errno;
    spp_depth++;
    off_t pos = ftello(fp);
    struct iovec seg = { ptr, bytes };
    int e = pos < 0 || (uint64_t)pos < bytes ? spp_verify_read(fd, hook, &seg, 1, bytes, -1)
                                            : spp_verify_read(fd, hook, &seg, 1, bytes, (int64_t)pos - (int64_t)bytes);
    spp_depth--;
    errno = e ? e : saved;
    return e ? 0 : 1;
}

/* The same for bytes fread returned from a regular file not judged
 * pickle-bearing before the call (spp_recheck_read). */
static size_t spp_after_fread_unjudged(FILE *fp, int fd, int hook, void *ptr, size_t bytes, uint64_t *ent) {
    int saved = errno;
    spp_depth++;
    off_t pos = ftello(fp);
    struct iovec seg = { ptr, bytes };
    int e = spp_recheck_read(fd, hook, &seg, 1, bytes, pos < 0 || (uint64_t)pos < bytes ? -1 : (int64_t)pos - (int64_t)bytes,
                             ent);
    spp_depth--;
    errno = e ? e : saved;
    return e ? 0 : 1;
}

#define SPP_WRAP_FREAD(ret, name, params, args) \
    SPP_EXPORT ret name params { \
        spp_real_##name##_t f = SPP_REAL(name); \
        if (!f) { errno = ENOSYS; return 0; } \
        uint64_t ent_ = 0; int fd_ = -1; \
        if (fp && spp_enter() && !spp_use_plain(fd_ = fileno(fp), &ent_)) { \
            int e_ = spp_use(fd_, SPP_H_##name, &ent_); if (e_) { errno = e_; return 0; } } \
        ret r_ = f args; \
        if (r_ > 0 && SPP_VERIFIED(fd_, ent_) && !spp_after_fread(fp, fd_, SPP_H_##name, ptr, r_ * size)) return 0; \
        if (r_ > 0 && ent_ && !SPP_VERIFIED(fd_, ent_) && !spp_after_fread_unjudged(fp, fd_, SPP_H_##name, ptr, r_ * size, &ent_)) \
            return 0; \
        SPP_FEED(fd_, ent_, r_ > 0); \
        return r_; \
    }

#define SPP_WRAP_MMAP(ret, name, params, args) \
    SPP_EXPORT ret name params { \
        spp_real_##name##_t f = SPP_REAL(name); \
        if (!f) { errno = ENOSYS; return MAP_FAILED; } \
        uint64_t ent_ = 0; \
        if (fd >= 0 && !(mflags & MAP_ANONYMOUS) && spp_enter()) { \
            int e_ = spp_use(fd, SPP_H_##name, &ent_); if (e_) { errno = e_; return MAP_FAILED; } } \
        ret r_ = f args; \
        if (r_ != MAP_FAILED && ent_ && !SPP_VERIFIED(fd, ent_)) { \
            int saved_ = errno; spp_depth++; \
            int v_ = spp_recheck_map(fd, SPP_H_##name, (uint64_t)off, len, &ent_); \
            spp_depth--; \
            if (v_) { munmap(r_, len); errno = v_; return MAP_FAILED; } \
            errno = saved_; \
        } else if (r_ != MAP_FAILED && SPP_VERIFIED(fd, ent_)) { \
            int saved_ = errno; spp_depth++; \
            int v_ = spp_verify_map(fd, SPP_H_##name, (uint64_t)off, len); \
            spp_depth--; \
            if (v_) { munmap(r_, len); errno = v_; return MAP_FAILED; } \
            errno = saved_; } \
        SPP_FEED(fd, ent_, r_ != MAP_FAILED); \
        return r_; \
    }

#define SPP_WRAP_CLOSE(ret, name, params, args) \
    SPP_EXPORT ret name params { \
        spp_real_##name##_t f = SPP_REAL(name); \
        if (!f) { errno = ENOSYS; return -1; } \
        spp_fd_forget(fd); \
        return f args; \
    }

/* close_range forgets only fds it closes in the table every thread shares: with
 * CLOSE_RANGE_CLOEXEC it closes none, with CLOSE_RANGE_UNSHARE it closes them in
 * the caller's private copy while the other threads keep them open. A stale
 * entry costs a fresh judgement; a forgotten fingerprint of an open fd would
 * let its next read be judged again from offset 0 (test_race.py, kept open).
 * As close does, it forgets before the call, not after: an fd number another
 * thread opens in between keeps the entry its open judged. With no flags and
 * lo <= hi the call cannot fail. */
#define SPP_WRAP_CLOSERANGE(ret, name, params, args) \
    SPP_EXPORT ret name params { \
        spp_real_##name##_t f = SPP_REAL(name); \
        if (!f) { errno = ENOSYS; return -1; } \
        if (crflags == 0 && lo <= hi) spp_fd_forget_range(lo, hi); \
        return f args; \
    }

#define SPP_WRAP_FCLOSE(ret, name, params, args) \
    SPP_EXPORT ret name params { \
        spp_real_##name##_t f = SPP_REAL(name); \
        if (!f) { errno = ENOSYS; return EOF; } \
        if (fp) spp_fd_forget(fileno(fp)); \
        return f args; \
    }

#define SPP_WRAP_DUP(ret, name, params, args) \
    SPP_EXPORT ret name params { \
        spp_real_##name##_t f = SPP_REAL(name); \
        if (!f) { errno = ENOSYS; return -1; } \
        int r_ = f args; \
        if (r_ >= 0) spp_fd_dup(fd, r_); \
        return r_; \
    }

#define SPP_WRAP_DUP2(ret, name, params, args) \
    SPP_EXPORT ret name params { \
        spp_real_##name##_t f = SPP_REAL(name); \
        if (!f) { errno = ENOSYS; return -1; } \
        int r_ = f args; \
        if (r_ >= 0 && r_ != fd) spp_fd_dup(fd, r_); \
        return r_; \
    }

/* fcntl's third argument is an int or a pointer: forwarded as a pointer-sized
 * value, as glibc itself does. */
#define SPP_WRAP_FCNTL(ret, name, params, args) \
    SPP_EXPORT int name(int fd, int cmd, ...) { \
        va_list ap; va_start(ap, cmd); void *arg = va_arg(ap, void *); va_end(ap); \
        spp_real_##name##_t f = SPP_REAL(name); \
        if (!f) { errno = ENOSYS; return -1; } \
        int r_ = f args; \
        if (r_ >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)) spp_fd_dup(fd, r_); \
        return r_; \
    }

/* Layer 2's libc vetoes: only inside an unpickle's scope (a thread-local
 * test first, so the pass-through costs one load). */
/* (Not spp_enter: layer 2 acts even when the file hooks are off; only layer 2
 * ever sets the scope, and never from inside the preload's own calls.) */
#define SPP_VETO(kind_, fail_)                                                     \
    if (spp_l2_in_scope() && spp_depth == 0) {                                   \
        int e_ = spp_l2_veto(kind_, __func__, NULL);                             \
        if (e_) { fail_; }                                                       \
    }

#define SPP_WRAP_VETO_FILE(ret, name, params, args) \
    SPP_EXPORT ret name params { \
        spp_real_##name##_t f = SPP_REAL(name); \
        if (!f) { errno = ENOSYS; return -1; } \
        SPP_VETO(SPP_VETO_FILE, errno = e_; return -1); \
        return f args; \
    }
#define SPP_WRAP_VETO_EXEC(ret, name, params, args) \
    SPP_EXPORT ret name params { \
        spp_real_##name##_t f = SPP_REAL(name); \
        if (!f) { errno = ENOSYS; return -1; } \
        SPP_VETO(SPP_VETO_PROCESS, errno = e_; return -1); \
        return f args; \
    }
#define SPP_WRAP_VETO_FORK SPP_WRAP_VETO_EXEC
#define SPP_WRAP_VETO_SPAWN(ret, name, params, args) \
    SPP_EXPORT ret name params { \
        spp_real_##name##_t f = SPP_REAL(name); \
        if (!f) return ENOSYS; \
        SPP_VETO(SPP_VETO_PROCESS, return e_); \
        return f args; \
    }
#define SPP_WRAP_VETO_NET(ret, name, params, args) \
    SPP_EXPORT ret name params { \
        spp_real_##name##_t f = SPP_REAL(name); \
        if (!f) { errno = ENOSYS; return -1; } \
        if (spp_l2_in_scope() && spp_depth == 0) { \
            int e_ = spp_l2_veto(addr && addr->sa_family == AF_UNIX ? SPP_VETO_LOCAL_NET : SPP_VETO_NETWORK, \
                                 __func__, NULL); \
            if (e_) { errno = e_; return -1; } \
        } \
        return f args; \
    }

/* A thread created inside an unpickle's scope inherits it until it ends: the
 * new thread starts in a trampoline that marks it (spp_l2.tainted) with the
 * creator's verdict. Outside a scope this is a straight pass-through. */
typedef struct spp_tramp { void *(*start)(void *); void *arg; uint8_t verdict; bool resolved; } spp_tramp;

static void *spp_thread_tramp(void *p) {
    spp_tramp t = *(spp_tramp *)p;
    free(p);
    spp_l2.tainted = true;
    spp_l2.verdict = t.verdict;
    spp_l2.resolved = t.resolved;
    return t.start(t.arg);
}

#define SPP_WRAP_THREAD(ret, name, params, args) \
    SPP_EXPORT ret name params { \
        spp_real_##name##_t f = SPP_REAL(name); \
        if (!f) return ENOSYS; \
        if (!spp_l2_in_scope()) return f args; \
        spp_tramp *t_ = malloc(sizeof *t_); \
        if (!t_) return EAGAIN; /* never an unscoped thread from inside a scope */ \
        t_->start = start; t_->arg = arg; \
        t_->verdict = spp_l2.verdict; \
        t_->resolved = spp_l2.resolved; \
        int r_ = f(th, ta, spp_thread_tramp, t_); \
        if (r_ != 0) free(t_); \
        return r_; \
    }

#define SPP_HOOK(kind, ret, name, params, args) SPP_WRAP_##kind(ret, name, params, args)
#include "hooks.def"
#undef SPP_HOOK
