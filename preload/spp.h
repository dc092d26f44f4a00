/* spp.h - internal interfaces of libsafepickle.so, the interposer (prefix spp_,
 * real_* for the resolved originals). Shared by the hook wrappers, init, fd
 * tracking, the decision, the verdict cache, the audit log and the PEP 578 layer. */
#ifndef SPP_H
#define SPP_H

/* The hook objects must see the plain libc names: fortification and 64-bit
 * file offsets rename open/read/fopen under us (see conventions.md). */
#undef _FORTIFY_SOURCE
#undef _FILE_OFFSET_BITS

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <pthread.h>
#include <spawn.h>
#include <sys/socket.h>

#include "spa.h"

/* stdio.h defines this as a macro when optimising; we hook the function. */
#undef fread_unlocked

#define SPP_EXPORT __attribute__((visibility("default")))
#define SPP_TLS __attribute__((tls_model("initial-exec"))) __thread

/* ------------------------------------------------------------------ limits */
#define SPP_FD_MAX        65536   /* fds tracked in the lock-free fd table; larger fds are judged every time */
#define SPP_CACHE_SLOTS   4096u   /* verdict cache entries (power of two) */
#define SPP_CACHE_PROBE   8u      /* linear-probe length before evicting */
#define SPP_TRUST_FILES   32u     /* trusted files whose imported names are kept (layer 2 binding) */
#define SPP_TRUST_NAMES   1024u   /* names kept per trusted file; more and it is not bound */
#define SPP_PATH_MAX      4096    /* longest path we report */
#define SPP_LINE_MAX      2048    /* longest stderr line */
#define SPP_STACK_FRAMES  8       /* native frames recorded in an audit record */
#define SPP_RECORD_MAX    16384   /* longest audit record written to a regular file (PIPE_BUF elsewhere) */
#define SPP_SYSTEM_LOG_DIR "/var/log/safepickle" /* audit_log "state" for root in a system-wide install */
#define SPP_WRITE_WAIT_MS 2000    /* longest wait for a pipe to take a record or a stderr line */
#define SPP_SYSLOG_PATH   "/dev/log" /* audit_log "syslog": the local syslog/journald socket */
#define SPP_ALTSTACK_SIZE (256u * 1024u) /* the preload's own stack, per thread that judges or reports */
#define SPP_HOST_STACK_BUDGET 2048 /* bytes of the HOST thread's stack a hook may use (test_hoststack) */
#define SPP_ARGV_MAX      8192    /* bytes of /proc/self/cmdline kept for audit records */

/* ------------------------------------------------------------------ hook table */
/* Hook ids, one per line of hooks.def. */
typedef enum spp_hook_id {
#define SPP_HOOK(kind, ret, name, params, args) SPP_H_##name,
#include "hooks.def"
#undef SPP_HOOK
    SPP_H_COUNT
} spp_hook_id;

/* Pointers to the real functions (resolved by init.c, real_<name>). */
#define SPP_HOOK(kind, ret, name, params, args) \
    typedef ret (*spp_real_##name##_t) params; \
    extern spp_real_##name##_t real_##name;
#include "hooks.def"
#undef SPP_HOOK

const char *spp_hook_name(int id);
/* Resolve one hook's real function now (used when a hook runs before init). */
void *spp_resolve_one(int id);

/* ------------------------------------------------------------------ init */
/* 0: not started, 1: running, 2: done. */
extern volatile int spp_init_state;
/* True when the hooks act in this process (targeted, layer_file on, mode not off). */
extern volatile bool spp_active;
/* Thread-local nesting depth: > 0 means we are inside our own code. */
extern SPP_TLS int spp_depth;

/* Init once (called from the constructor and lazily from every hook). Returns
 * true when the calling thread may act (init done, not nested). */
bool spp_enter(void);
/* The same for the open family: in a process not (yet) known to run Python it
 * also looks again whether an interpreter was loaded since (init.c). */
bool spp_enter_open(void);
void spp_init(void);

/* ------------------------------------------------------------------ state (state.c) */
/* Process facts, set by spp_state_init during init; read-only after, except
 * the targeting, decided again once when an interpreter appears later. */
void spp_state_init(void);
/* The loaded policy (the embedded default if SAFEPICKLE_POLICY is unset).
 * NULL, and spp_policy_broken() true, when the requested policy or an
 * environment override could not be read: it is never replaced by another;
 * every pickle-bearing file and every global an unpickle resolves is refused. */
const spa_policy *spp_policy(void);
bool spp_policy_broken(void);
const char *spp_policy_error(void);
/* Executable path and argv (NUL-separated, n bytes) captured at init. */
/* True when we act here: the process runs Python and its executable matches
 * the policy's targets (or SAFEPICKLE_TARGETS); see spa_policy_target. */
bool spp_targeted_process(void);
spa_targeting spp_targeting(void);
/* Does this process run Python now (state.c)? And decide targeting again
 * with that answer (init.c, when objects were loaded since). */
bool spp_detect_python(void);
void spp_state_retarget(bool runs_python);
/* The SAFEPICKLE_MODE note ("" if none) to say once where we act. */
const char *spp_mode_note(void);
const char *spp_exe(void);
const char *spp_argv(size_t *n);
/* The preload's own load address range (frames inside it are skipped). */
bool spp_addr_is_self(const void *addr);


/* ------------------------------------------------------------------ fd table */
/* A per-fd hint: the identity (hash of dev, ino, size, mtime, ctime) of the
 * content last judged allowed on this fd. A read on an fd whose current
 * identity matches passes without a lock; anything else is judged again. */
uint64_t spp_ident_hash(const struct stat *st);
/* Tags in the low bits of an fd table entry (spp_ident_hash leaves them 0). */
#define SPP_FD_REFUSED 1ull  /* refused on this fd, refusal reported */
#define SPP_FD_TRUSTED 2ull  /* pickle-bearing, allowed and trusted by the policy (sha256 or path) */
#define SPP_FD_BEARING 4ull  /* pickle-bearing, allowed, NOT trusted */
#define SPP_FD_CHANGED 8ull  /* its bytes differed from the bytes judged: every read fails (verify.c) */
#define SPP_FD_FRESH   16ull /* judged not pickle-bearing within SPP_FRESH_NS of its last change: a
                              * rewrite in the same timestamp tick keeps the identity, so every read
                              * is judged again after the call (decide.c, spp_recheck_read) */
#define SPP_FD_RECOG   32ull /* judged not pickle-bearing, and the bytes that judgement read (the
                              * recogniser's head and tail, or a scan that found no stream) are
                              * fingerprinted: reads of them are verified like a pickle-bearing fd's
                              * (a shared mapping changes bytes under the same identity) */
#define SPP_FD_TAGS    63ull
#define SPP_FRESH_NS   2000000000ll /* 2 s: the coarsest timestamps met (1 s; FAT 2 s), and a jiffy */
void spp_fd_set(int fd, uint64_t ident);     /* ident 0 forgets */
uint64_t spp_fd_get(int fd);
void spp_fd_forget(int fd);
void spp_fd_forget_range(unsigned lo, unsigned hi);
void spp_fd_owner_reset(void); /* at init and in a forked child: the close/dup hooks act only there */
void spp_fd_dup(int oldfd, int newfd);

/* What fed this thread's unpickler (fdtrack.c; read by layer 2, pyaudit.c).
 * After a read-family hook returned bytes from a judged fd, spp_feed_note gets
 * its table entry: bytes of a trusted file read while no unpickle scope is set
 * on the thread make that fd the thread's pending trusted source; bytes of a
 * non-trusted pickle-bearing file clear it and taint the current scope. Layer
 * 2 takes the pending source when it opens a scope (spp_feed_take): valid only
 * if that fd still holds the same trusted content (not closed, not reused). */
typedef struct spp_feed {
    int fd;          /* pending trusted source, -1 none */
    uint64_t ent;    /* its fd table entry when read */
    bool scope;      /* layer 2 has an unpickle scope set on this thread */
    bool taint;      /* non-trusted pickle-bearing bytes read since the scope opened */
} spp_feed_t;
extern SPP_TLS spp_feed_t spp_feed;
void spp_feed_note(int fd, uint64_t ent);
/* Is the pending trusted source still valid? Clears it and the taint. */
bool spp_feed_take(void);
/* The same test without consuming it (layer 2 with runtime_behaviour off). */
bool spp_feed_peek(void);

/* ------------------------------------------------------------------ verification */
/* The fingerprint of a judgement (verify.c): a keyed 128-bit hash of every
 * 4 KiB block the analyzer read, as runs of consecutive blocks. Immutable once
 * built; shared by reference (the cache, the fd table). */
#define SPP_FP_BLOCK 4096u
typedef struct spp_h128 { uint64_t lo, hi; } spp_h128;
typedef struct spp_fp_run { uint64_t first; uint32_t n, hix; } spp_fp_run;
typedef struct spp_fp {
    int refs;
    uint64_t gen;               /* unique per fingerprint made in this process (verify.c's copy cache) */
    uint64_t dev, ino, size;    /* the file and its size when judged */
    uint32_t n_runs, n_blocks;
    spp_fp_run *runs;           /* sorted, disjoint */
    spp_h128 *h;                /* n_blocks hashes, in run order */
} spp_fp;
/* A fingerprint under construction: the analyzer's pread (spp_fpb_pread, ctx
 * = the builder) records each block it reads. */
typedef struct spp_fpb_ent { uint64_t blk; spp_h128 h; } spp_fpb_ent;
typedef struct spp_fpb {
    int fd;
    uint64_t size, bytes;       /* file size judged; bytes the analyzer read */
    spp_fpb_ent *e;
    size_t n, cap;
    bool changed, oom;          /* a block read twice differed; out of memory */
    bool soft;                  /* the recogniser reads (spp_fpb_pread never fails them, reads whole blocks): */
    bool shortf, volat;         /*   a block could not be read whole; a block read twice differed */
} spp_fpb;
void spp_fp_seed(const uint8_t seed[32]);   /* before the first hash: shared key (pcache.c) */
spp_h128 spp_fp_hash(const uint8_t *p, size_t n);
void spp_fpb_init(spp_fpb *b, int fd, uint64_t size);
ssize_t spp_fpb_pread(void *ctx, void *buf, size_t len, uint64_t off);
spp_fp *spp_fpb_finish(spp_fpb *b, const struct stat *st);  /* NULL if changed or OOM */
void spp_fpb_free(spp_fpb *b);
spp_fp *spp_fp_make(uint64_t dev, uint64_t ino, uint64_t size, const spp_fp_run *runs, uint32_t n_runs,
                    const spp_h128 *h, uint32_t n_blocks);
void spp_fp_ref(spp_fp *fp);
void spp_fp_unref(spp_fp *fp);
/* Check bytes [buf, buf+n) read at file offset off (buf NULL: read them now).
 * Returns 0, or 1 on a mismatch (*bad_off: where). *touched is set when a
 * fingerprinted block was involved. */
int spp_fp_check(const spp_fp *fp, int fd, const void *buf, size_t n, uint64_t off, bool *touched,
                 uint64_t *bad_off);
/* The per-fd fingerprint table (a reference per entry). */
void spp_fdfp_set(int fd, spp_fp *fp);                 /* NULL forgets */
bool spp_fdfp_any(int fd);                             /* the fd has a fingerprint */
spp_fp *spp_fdfp_get(int fd, bool *delivered);         /* a new reference, or NULL */
void spp_fdfp_delivered(int fd, const spp_fp *fp);     /* judged bytes reached the loader */
void spp_fdfp_dup(int oldfd, int newfd);
void spp_fdfp_forget_range(unsigned lo, unsigned hi);
void spp_fp_atfork_prepare(void);
void spp_fp_atfork_parent(void);
void spp_fp_atfork_child(void);
/* After a read-family call on a judged fd returned `got` bytes into iov (off:
 * the file offset of the first byte, -1: the fd's offset now minus got).
 * Returns 0, or the errno the call must fail with (bytes scrubbed). */
int spp_verify_read(int fd, int hook, const struct iovec *iov, int cnt, size_t got, int64_t off);
/* After a read-family call on a regular file whose entry before it (*ent) was
 * not pickle-bearing returned `got` bytes: if the file changed during the
 * call, judge it again and check the bytes (decide.c: spp_recheck). Returns 0
 * (*ent: the entry after), or the errno the call must fail with. */
int spp_recheck_read(int fd, int hook, const struct iovec *iov, int cnt, size_t got, int64_t off, uint64_t *ent);
int spp_recheck_map(int fd, int hook, uint64_t off, size_t len, uint64_t *ent); /* the same for mmap */
/* Do the bytes in seg equal the file's bytes at off now? (*bad: where not) */
bool spp_fd_same_bytes(int fd, const struct iovec *seg, int cnt, size_t got, uint64_t off, uint64_t *bad);
/* After a file mapping of a judged fd: check the judged blocks it covers. */
int spp_verify_map(int fd, int hook, uint64_t off, size_t len);

/* Layer 2's view of the current thread, shared with the libc vetoes
 * (interpose.c): in_load counts the wrapped unpickles in flight (pya_bytes.c),
 * verdict is the worst verdict the analyzer gave their bytes
 * (SPA_VERDICT_COUNT: not judged), tainted marks a thread created while an
 * unpickle was in flight (pthread_create hook): it stays in scope until it
 * ends. resolved: the load raised a `pickle.find_class` event, so its globals
 * come through the interpreter's own import system (an unpickler whose
 * find_class imports from elsewhere, torch.package's, never raises it). */
typedef struct spp_l2 {
    int in_load;
    uint8_t verdict;
    bool tainted;
    bool resolved; /* the outermost load in flight resolved a global through pickle's find_class */
} spp_l2_t;
extern SPP_TLS spp_l2_t spp_l2;
/* Is the calling thread inside an unpickle (or started by one)? */
static inline bool spp_l2_in_scope(void) { return spp_l2.in_load > 0 || spp_l2.tainted; }
/* Effects a scope vetoes at the libc level (interpose.c), and the report. */
typedef enum spp_veto_kind { SPP_VETO_FILE = 0, SPP_VETO_PROCESS, SPP_VETO_NETWORK, SPP_VETO_LOCAL_NET } spp_veto_kind;
/* 0 to let the call run, or the errno of a refusal (reported). */
int spp_l2_veto(spp_veto_kind kind, const char *call, const char *arg);

/* ------------------------------------------------------------------ cache */
typedef struct spp_key {
    uint64_t dev, ino, size;
    int64_t mtime_s, mtime_ns, ctime_s, ctime_ns;
} spp_key;

/* What a refusal or warning said, kept so that a cached verdict is reported
 * again without scanning again (cache.c). Immutable, shared by reference. */
typedef struct spp_expl {
    int refs;
    uint8_t format;         /* spa_format */
    bool trusted;
    const char *detail;     /* may be NULL */
    size_t n_reasons;
    spa_reason *reasons;    /* strings in the same allocation */
} spp_expl;
struct spp_event;
spp_expl *spp_expl_make(const struct spp_event *ev);
void spp_expl_ref(spp_expl *e);
void spp_expl_unref(spp_expl *e);

/* Identity beyond stat: birth time (statx) and the inode generation
 * (FS_IOC_GETVERSION), which tell a new file from a reused inode number. Only
 * fetched for pickle-bearing entries. */
typedef struct spp_strong {
    int64_t btime_s;
    uint32_t btime_ns;
    uint32_t gen;
    uint8_t have;           /* bit 0: btime, bit 1: gen */
} spp_strong;
void spp_strong_of_fd(int fd, spp_strong *s);
bool spp_strong_eq(const spp_strong *a, const spp_strong *b);

typedef struct spp_cached {
    uint8_t verdict;     /* spa_verdict */
    uint8_t action;      /* spa_action */
    uint8_t bearing;     /* pickle-bearing content: 0 no, 1 yes, SPP_BEARING_TRUSTED yes and trusted */
    uint8_t reported;    /* a warning was already written for this identity */
    spp_strong strong;   /* pickle-bearing entries: the rest of the identity */
    spp_fp *fp;          /* allowed content: the bytes judged (a reference); for content not
                          * pickle-bearing, the bytes the recogniser read (SPP_FD_RECOG) */
    spp_expl *ex;        /* pickle-bearing: what the judgement said, to report again (a reference) */
    uint8_t persist;     /* a finished judgement (not an internal error): may be kept on disk */
    uint8_t fresh;       /* not pickle-bearing, but no memory for the fingerprint of the bytes
                          * judged: every read is judged again (SPP_FD_FRESH) */
} spp_cached;
/* Drop the references a spp_cached holds (from spp_cache_get). */
void spp_cached_release(spp_cached *c);

#define SPP_BEARING_TRUSTED 2 /* the policy trusts it (trusted.sha256 or trusted.paths) */

void spp_key_from_stat(spp_key *k, const struct stat *st);
/* get: *out holds new references (spp_cached_release); put: takes its own. */
bool spp_cache_get(const spp_key *k, spp_cached *out);
void spp_cache_put(const spp_key *k, const spp_cached *v);
/* Forget a file's entry (its bytes were found changed). */
void spp_cache_drop(const spp_key *k);

/* The persistent verdict cache shared by the user's processes (pcache.c).
 * init: after the policy is loaded, in a process the hooks act in (also seeds
 * the fingerprint key). get: a vetted entry for fd's file, *out with new
 * references; put: pickle-bearing judgements only. Any doubt is a miss. */
void spp_pcache_init(void);
bool spp_pcache_get(int fd, const spp_key *k, spp_cached *out);
void spp_pcache_put(const spp_key *k, const spp_cached *c);
/* Mark an entry reported; returns true if it was not reported before. */
bool spp_cache_mark_reported(const spp_key *k);
void spp_cache_init(void);
/* The globals a trusted file's pickles import, by file identity (spp_ident_hash):
 * layer 2 lets a trusted unpickle use these and ends its trust at any other.
 * spp_trust_put takes the file's scan; spp_trust_check returns 1 when the
 * name is one of them, 0 when it is not, -1 when that file's names are not
 * known (not recorded, evicted, too many, or computed at run time). */
struct spa_result;
void spp_trust_put(uint64_t ident, const struct spa_result *r);
int spp_trust_check(uint64_t ident, const char *module, const char *name);
void spp_cache_atfork_prepare(void);
void spp_cache_atfork_parent(void);
void spp_cache_atfork_child(void);

/* ------------------------------------------------------------------ decision */
/* Where the decision happens. */
typedef enum spp_origin { SPP_AT_OPEN = 0, SPP_AT_USE = 1 } spp_origin;

/* Judge the content behind fd (a fresh fd from an open hook, or an fd that
 * reached a read/fread/mmap/fdopen). Returns 0 to let the call proceed, or a
 * positive errno to refuse it. `path` may be NULL (derived from /proc/self/fd). */
int spp_judge_fd(int fd, const char *path, int hook, spp_origin origin);
/* The same; *ent (may be NULL) receives the fd table entry of an allowed fd
 * (identity and SPP_FD_* tags), 0 when nothing was judged. */
int spp_judge_fd_ent(int fd, const char *path, int hook, spp_origin origin, uint64_t *ent);
/* The real pread of a judged file (never a hook; O_DIRECT fds through an
 * aligned buffer). verify.c. */
ssize_t spp_fd_pread(int fd, void *buf, size_t len, uint64_t off);
/* Environment read once at init (SAFEPICKLE_DEBUG_SCANS). */
void spp_decide_init(void);

/* ------------------------------------------------------------------ reporting */
/* One event for the stderr line and the audit log; both layers use it. */
typedef struct spp_event {
    const char *layer;      /* "file" (hooks) or "audit_hook" (PEP 578 layer) */
    const char *call;       /* hooked call or audit event, e.g. "open64", "pickle.find_class" */
    const char *path;       /* file path, or a description like "<bytes>" */
    int fd;                 /* -1 if none */
    spa_verdict verdict;
    spa_action action;
    const spa_reason *reasons; /* may be NULL */
    size_t n_reasons;
    const char *detail;     /* extra text (internal error, cache note), may be NULL */
    const char *format;     /* content format name, may be NULL */
    bool cached;            /* verdict came from the cache */
    bool trusted;           /* allowed because the policy trusts the file (or the unpickle it feeds) */
} spp_event;

/* The decisive reason: highest severity, first among equals (NULL if none). */
const spa_reason *spp_decisive(const spa_reason *r, size_t n);
/* Write the one-line `safepickle: ...` message to stderr (write(2), no stdio). */
void spp_block_line(const spp_event *ev);
/* Append a JSON-lines audit record (cJSON) to the configured destination
 * (SAFEPICKLE_LOG, else the policy's audit_log); no-op when none. Records the
 * native call site (backtrace + dladdr). One write per record, never blocks,
 * no fd left open; losses are counted and said once (audit.c). */
void spp_audit_write(const spp_event *ev);
/* Both of the above. */
void spp_report(const spp_event *ev);
/* Audit destination resolved at init: NULL for none. */
const char *spp_audit_dest(void);
void spp_audit_init(void);

/* Run fn(arg) on this thread's private stack of SPP_ALTSTACK_SIZE (stack.c),
 * mapped on first use and unmapped when the thread ends; on the caller's own
 * stack if already there or if no stack can be mapped. Everything that needs
 * more than a few hundred bytes of stack (judging a file, audit records) runs
 * through this, so hooks stay within SPP_HOST_STACK_BUDGET of the host's. */
void spp_on_altstack(void (*fn)(void *), void *arg);

/* The allocator a scan's arena runs on (scanmem.c): large blocks on
 * transparent huge pages, the rest from malloc. */
const spa_alloc *spp_scan_alloc(void);

/* errno-safe, stdio-free stderr write (never blocks: a pipe that does not take
 * data now loses the line; at most PIPE_BUF bytes in one write on a pipe). */
void spp_write_stderr(const char *s, size_t n);

#endif /* SPP_H */
