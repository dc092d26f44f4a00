/* audit.c - how a decision is told: the one-line `safepickle:` message on stderr
 * and the JSON-lines audit record (schema: preload/audit.schema.json), written
 * so that it cannot hurt the host: no fd left open, one write per record, never
 * a blocking open or write, records on pipes kept under PIPE_BUF, every lost
 * record counted and the loss said once, fork-safe, run on the preload's own
 * stack (stack.c). Design notes: preload/README.md, "The audit writer". */
#include "spp.h"
#include "bytes.h"

#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ destination */
typedef enum spp_dkind {
    SPP_D_NONE = 0, SPP_D_FD, SPP_D_PATH, SPP_D_STATE, SPP_D_SYSLOG
} spp_dkind;

static spp_dkind spp_dk;
static int spp_dfd = -1;                 /* SPP_D_FD: 1 or 2 */
static char spp_dest[SPP_PATH_MAX + 16]; /* what spp_audit_dest() returns */
static char spp_state_dir[SPP_PATH_MAX]; /* SPP_D_STATE: directory created on first record */
static const char *spp_state_err;        /* SPP_D_STATE: why no directory could be named */

/* Records: one lock for the whole record (stack walk, formatting, write), so
 * that a fork never happens while a lock of ours or of the libraries the
 * writer calls (the unwinder, dladdr) is held by one of our threads. */
static pthread_mutex_t spp_audit_mu = PTHREAD_MUTEX_INITIALIZER;
static char spp_rec[SPP_RECORD_MAX + 1];  /* guarded by spp_audit_mu */
static unsigned long spp_lost;            /* records not written (guarded) */
static int spp_loss_said;                 /* the loss was said on stderr (atomic) */

const char *spp_audit_dest(void) { return spp_dk == SPP_D_NONE ? NULL : spp_dest; }

static void spp_audit_prepare(void) { pthread_mutex_lock(&spp_audit_mu); }
static void spp_audit_parent(void) { pthread_mutex_unlock(&spp_audit_mu); }
static void spp_audit_child(void) { pthread_mutex_init(&spp_audit_mu, NULL); }

static bool spp_abs_dir(const char *d) { return d && d[0] == '/'; }

/* Is this a system-wide install? The library was loaded although LD_PRELOAD
 * does not name it (so from /etc/ld.so.preload), or the process runs as root
 * with no home to keep state in. */
static bool spp_systemwide(const char *home) {
    const char *lp = getenv("LD_PRELOAD");
    if (!lp || !strstr(lp, "libsafepickle")) return true;
    return geteuid() == 0 && !spp_abs_dir(home);
}

/* "state": $XDG_STATE_HOME/safepickle/audit.jsonl, else
 * $HOME/.local/state/safepickle/audit.jsonl; /var/log/safepickle/audit.jsonl
 * for a root process of a system-wide install. Named at init (getenv is not
 * used on the hook path); the directory is created at the first record. */
static void spp_state_dest(void) {
    const char *xdg = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
    int k = -1;
    if (spp_systemwide(home) && geteuid() == 0)
        k = snprintf(spp_state_dir, sizeof spp_state_dir, "%s", SPP_SYSTEM_LOG_DIR);
    else if (spp_abs_dir(xdg))
        k = snprintf(spp_state_dir, sizeof spp_state_dir, "%s/safepickle", xdg);
    else if (spp_abs_dir(home))
        k = snprintf(spp_state_dir, sizeof spp_state_dir, "%s/.local/state/safepickle", home);
    else
        spp_state_err = "neither XDG_STATE_HOME nor HOME is an absolute path";
    if (k >= 0 && (size_t)k + sizeof "/audit.jsonl" > sizeof spp_state_dir) {
        spp_state_err = "the state directory's path is too long";
        k = -1;
    }
    if (k < 0) { spp_state_dir[0] = '\0'; snprintf(spp_dest, sizeof spp_dest, "state"); return; }
    snprintf(spp_dest, sizeof spp_dest, "%s/audit.jsonl", spp_state_dir);
}

void spp_audit_init(void) {
    pthread_atfork(spp_audit_prepare, spp_audit_parent, spp_audit_child);
    const char *d = getenv("SAFEPICKLE_LOG");
    const spa_policy *p = spp_policy();
    if (!d && p) d = p->audit_log;
    if (!d || !*d || !strcmp(d, "none") || !strcmp(d, "off")) return;
    if (!strcmp(d, "stderr") || !strcmp(d, "stdout")) {
        spp_dk = SPP_D_FD;
        spp_dfd = d[3] == 'e' ? 2 : 1;
        snprintf(spp_dest, sizeof spp_dest, "%s", d);
    } else if (!strcmp(d, "syslog")) {
        spp_dk = SPP_D_SYSLOG;
        snprintf(spp_dest, sizeof spp_dest, "syslog");
    } else if (!strcmp(d, "state")) {
        spp_dk = SPP_D_STATE;
        spp_state_dest();
    } else if (d[0] != '/') {
        /* relative: fix it now, the program may chdir later */
        char cwd[SPP_PATH_MAX];
        int k = -1;
        if (getcwd(cwd, sizeof cwd)) k = snprintf(spp_dest, sizeof spp_dest, "%s/%s", cwd, d);
        if (k < 0 || (size_t)k >= sizeof spp_dest) snprintf(spp_dest, sizeof spp_dest, "%s", d);
        spp_dk = SPP_D_PATH;
    } else {
        snprintf(spp_dest, sizeof spp_dest, "%s", d);
        spp_dk = SPP_D_PATH;
    }
}

const spa_reason *spp_decisive(const spa_reason *r, size_t n) {
    const spa_reason *best = NULL;
    for (size_t i = 0; i < n; i++)
        if (!best || r[i].severity > best->severity) best = &r[i];
    return best;
}

/* ------------------------------------------------------------------ stderr */
/* A write on a pipe, FIFO, socket or terminal must not block the host: it is
 * made only when poll says the fd takes data, waiting at most
 * SPP_WRITE_WAIT_MS (a pipe shared by busy writers drains), and not at all
 * once a wait ran out, until a write succeeds again (a pipe nobody reads costs
 * the host one wait, not one per record). A write of at most PIPE_BUF bytes
 * to a pipe with room never blocks and is never split. */
static int spp_stalled; /* atomic */

static bool spp_fd_ready(int fd) {
    struct pollfd pf = { .fd = fd, .events = POLLOUT };
    int r;
    int wait = __atomic_load_n(&spp_stalled, __ATOMIC_RELAXED) ? 0 : SPP_WRITE_WAIT_MS;
    do r = poll(&pf, 1, wait); while (r < 0 && errno == EINTR);
    bool ok = r == 1 && (pf.revents & POLLOUT) && !(pf.revents & (POLLERR | POLLNVAL));
    __atomic_store_n(&spp_stalled, !ok, __ATOMIC_RELAXED);
    return ok;
}

static bool spp_is_regular(int fd) {
    struct stat st;
    return fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
}

/* One write(2) of the whole buffer; true when all of it went out. */
static bool spp_write_once(int fd, const char *s, size_t n, int *err) {
    ssize_t w;
    do w = write(fd, s, n); while (w < 0 && errno == EINTR);
    if (w == (ssize_t)n) return true;
    *err = w < 0 ? errno : EIO;
    return false;
}

void spp_write_stderr(const char *s, size_t n) {
    int saved = errno, e = 0;
    if (n > PIPE_BUF && !spp_is_regular(2)) n = PIPE_BUF; /* one atomic write on a pipe */
    if (spp_is_regular(2) || spp_fd_ready(2)) spp_write_once(2, s, n, &e);
    errno = saved;
}

/* ------------------------------------------------------------------ JSON writer */
/* Records are built in one buffer (no allocation, no cJSON): strings are
 * written as strict UTF-8 JSON, the convention of analyzer/jsonout.h: each byte
 * that does not start a strict UTF-8 sequence (spa_utf8_seq) becomes U+FFFD and
 * the field's raw bytes are kept in hex in a sibling "<field>_hex" (path, exe;
 * argv_hex holds one hex string per argument). No cJSON: it allocates, and a
 * record must fit a fixed buffer. smax caps every string (cut at a
 * character boundary, "\u2026" appended). */
typedef struct spp_jw {
    char *b;
    size_t cap, n, smax;
    bool over, cut;
} spp_jw;

static void jw_put(spp_jw *w, const char *s, size_t k) {
    if (w->over || k > w->cap - w->n) { w->over = true; return; }
    memcpy(w->b + w->n, s, k);
    w->n += k;
}
static void jw_s(spp_jw *w, const char *s) { jw_put(w, s, strlen(s)); }

/* A JSON string; returns true when a byte had to be replaced (not UTF-8). */
static bool jw_strn(spp_jw *w, const char *str, size_t len) {
    const unsigned char *s = (const unsigned char *)(str ? str : "");
    if (!str) len = 0;
    bool lossy = false;
    jw_put(w, "\"", 1);
    size_t out = 0;
    for (size_t i = 0; i < len && !w->over;) {
        if (out >= w->smax) { jw_s(w, "\\u2026"); w->cut = true; break; }
        size_t k = spa_utf8_seq(s + i, len - i); /* the one strict UTF-8 (analyzer/bytes.h) */
        if (k == 0) { jw_s(w, "\\ufffd"); lossy = true; i++; out += 3; continue; }
        unsigned c = s[i];
        if (k > 1) jw_put(w, (const char *)s + i, k);
        else if (c == '"') jw_s(w, "\\\"");
        else if (c == '\\') jw_s(w, "\\\\");
        else if (c == '\n') jw_s(w, "\\n");
        else if (c == '\t') jw_s(w, "\\t");
        else if (c < 0x20 || c == 0x7F) {
            char e[8];
            static const char hx[] = "0123456789abcdef";
            memcpy(e, "\\u00", 4);
            e[4] = hx[c >> 4];
            e[5] = hx[c & 15];
            jw_put(w, e, 6);
        } else jw_put(w, (const char *)s + i, 1);
        i += k;
        out += k;
    }
    jw_put(w, "\"", 1);
    return lossy;
}
static bool jw_str(spp_jw *w, const char *s) { return jw_strn(w, s, s ? strlen(s) : 0); }

static void jw_hex(spp_jw *w, const char *str, size_t len) {
    static const char hx[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)str;
    jw_put(w, "\"", 1);
    for (size_t i = 0; i < len && !w->over; i++) {
        if (2 * i >= w->smax) { w->cut = true; break; }
        char e[2] = { hx[s[i] >> 4], hx[s[i] & 15] };
        jw_put(w, e, 2);
    }
    jw_put(w, "\"", 1);
}

static void jw_key(spp_jw *w, const char *k) {
    if (w->n > 0 && w->b[w->n - 1] != '{' && w->b[w->n - 1] != '[') jw_put(w, ",", 1);
    jw_put(w, "\"", 1);
    jw_s(w, k);
    jw_put(w, "\":", 2);
}
static void jw_kstr(spp_jw *w, const char *k, const char *v) { jw_key(w, k); jw_str(w, v); }
static void jw_knum(spp_jw *w, const char *k, unsigned long long v) {
    char t[32];
    jw_key(w, k);
    jw_put(w, t, (size_t)snprintf(t, sizeof t, "%llu", v));
}
static void jw_kbool(spp_jw *w, const char *k, bool v) { jw_key(w, k); jw_s(w, v ? "true" : "false"); }
static void jw_sep(spp_jw *w) {
    if (w->n > 0 && w->b[w->n - 1] != '[' && w->b[w->n - 1] != '{') jw_put(w, ",", 1);
}

/* ------------------------------------------------------------------ call site */
/* The native frames above the preload, taken with glibc's backtrace() (libgcc's
 * unwinder, the one C++ exceptions use: no fd, no pipe, lock-free lookup of
 * the unwind tables through _dl_find_object) and named with dladdr (the
 * nearest exported symbol). libunwind is not used: it keeps a pipe open for
 * its address checks (issue 11). */
#define SPP_BT_MAX 48 /* frames walked, ours included */

typedef struct spp_frames {
    void *ip[SPP_STACK_FRAMES];
    int n;
} spp_frames;

static void spp_take_stack(spp_frames *f) {
    void *bt[SPP_BT_MAX];
    int n = backtrace(bt, SPP_BT_MAX);
    f->n = 0;
    for (int i = 0; i < n && f->n < SPP_STACK_FRAMES; i++) {
        if (!bt[i] || spp_addr_is_self(bt[i])) continue; /* our own frames */
        f->ip[f->n++] = bt[i];
    }
}

static void jw_frame(spp_jw *w, void *ip) {
    char hex[32];
    jw_put(w, "{", 1);
    snprintf(hex, sizeof hex, "0x%llx", (unsigned long long)(uintptr_t)ip);
    jw_kstr(w, "ip", hex);
    Dl_info di;
    /* ip is a return address: name the call instruction just before it */
    if (dladdr((char *)ip - 1, &di)) {
        if (di.dli_sname && di.dli_saddr) {
            jw_kstr(w, "sym", di.dli_sname);
            jw_knum(w, "off", (unsigned long long)((uintptr_t)ip - (uintptr_t)di.dli_saddr));
        }
        if (di.dli_fname) {
            jw_kstr(w, "obj", di.dli_fname);
            snprintf(hex, sizeof hex, "0x%llx", (unsigned long long)((uintptr_t)ip - (uintptr_t)di.dli_fbase));
            jw_kstr(w, "obj_off", hex);
        }
    }
    jw_put(w, "}", 1);
}

/* ------------------------------------------------------------------ record */
/* UTC from the epoch without gmtime_r (which takes glibc's tz lock). */
static void spp_utc(char *buf, size_t n) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long days = ts.tv_sec / 86400, secs = ts.tv_sec % 86400;
    long long z = days + 719468, era = (z >= 0 ? z : z - 146096) / 146097;
    long long doe = z - era * 146097, yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    long long y = yoe + era * 400, doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;
    long long d = doy - (153 * mp + 2) / 5 + 1, m = mp < 10 ? mp + 3 : mp - 9;
    snprintf(buf, n, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", (int)(y + (m <= 2)) % 10000, (int)m, (int)d,
             (int)(secs / 3600), (int)(secs / 60 % 60), (int)(secs % 60), (int)(ts.tv_nsec / 1000000L) % 1000);
}

static void spp_rec_argv(spp_jw *w) {
    size_t n = 0;
    const char *a = spp_argv(&n);
    bool lossy = false;
    jw_key(w, "argv");
    jw_put(w, "[", 1);
    for (size_t i = 0; i < n;) {
        size_t l = strnlen(a + i, n - i);
        jw_sep(w);
        lossy |= jw_strn(w, a + i, l);
        i += l + 1;
    }
    jw_put(w, "]", 1);
    if (!lossy) return;
    jw_key(w, "argv_hex");
    jw_put(w, "[", 1);
    for (size_t i = 0; i < n;) {
        size_t l = strnlen(a + i, n - i);
        jw_sep(w);
        jw_hex(w, a + i, l);
        i += l + 1;
    }
    jw_put(w, "]", 1);
}

/* A string field that names something on the system: raw bytes kept in hex
 * beside it when they are not UTF-8. */
static void spp_rec_name(spp_jw *w, const char *key, const char *v) {
    char hk[32];
    jw_key(w, key);
    if (!jw_str(w, v)) return;
    snprintf(hk, sizeof hk, "%s_hex", key);
    jw_key(w, hk);
    jw_hex(w, v, strlen(v));
}

/* One record into w: frames (up to nf of f) last, reasons up to nr. */
static void spp_rec_build(spp_jw *w, const spp_event *ev, const spp_frames *f, int nf, size_t nr) {
    const spa_policy *p = spp_policy();
    char t[64];
    jw_put(w, "{", 1);
    spp_utc(t, sizeof t);
    jw_kstr(w, "time", t);
    jw_knum(w, "pid", (unsigned long long)getpid());
    spp_rec_name(w, "exe", spp_exe());
    spp_rec_argv(w);
    jw_kstr(w, "layer", ev->layer ? ev->layer : "file");
    jw_kstr(w, "call", ev->call ? ev->call : "?");
    spp_rec_name(w, "path", ev->path ? ev->path : "?");
    if (ev->fd >= 0) jw_knum(w, "fd", (unsigned long long)ev->fd);
    if (ev->format) jw_kstr(w, "format", ev->format);
    jw_kstr(w, "verdict", spa_verdict_name(ev->verdict));
    jw_kstr(w, "action", spa_action_name(ev->action));
    jw_kbool(w, "cached", ev->cached);
    if (ev->trusted) jw_kbool(w, "trusted", true);
    jw_key(w, "reasons");
    jw_put(w, "[", 1);
    for (size_t i = 0; i < ev->n_reasons && i < nr; i++) {
        const spa_reason *r = &ev->reasons[i];
        jw_sep(w);
        jw_put(w, "{", 1);
        jw_kstr(w, "severity", spa_verdict_name(r->severity));
        jw_kstr(w, "rule", r->rule ? r->rule : "");
        jw_kstr(w, "msg", r->msg ? r->msg : "");
        jw_kstr(w, "loc", r->loc ? r->loc : "");
        jw_knum(w, "off", (unsigned long long)r->off);
        jw_put(w, "}", 1);
    }
    jw_put(w, "]", 1);
    if (ev->n_reasons > nr) { jw_knum(w, "reasons_dropped", ev->n_reasons - nr); w->cut = true; }
    if (ev->detail) jw_kstr(w, "detail", ev->detail);
    jw_key(w, "policy");
    jw_put(w, "{", 1);
    jw_kstr(w, "name", p && p->name ? p->name : "<none>");
    jw_kstr(w, "source", p && p->source ? p->source : "<none>");
    jw_kstr(w, "mode", p ? spa_mode_name(p->mode) : "enforce");
    jw_put(w, "}", 1);
    if (nf > 0) {
        jw_key(w, "callsite");
        jw_frame(w, f->ip[0]);
        jw_key(w, "stack");
        jw_put(w, "[", 1);
        for (int i = 0; i < nf; i++) { jw_sep(w); jw_frame(w, f->ip[i]); }
        jw_put(w, "]", 1);
    }
    if (nf < f->n) w->cut = true;
}

/* Build the record to fit `cap` bytes (newline included): the stack goes
 * first, then long strings and reasons are cut; "truncated": true says so.
 * Returns the length, 0 if even the smallest form does not fit. */
static size_t spp_rec_fit(char *buf, size_t cap, const spp_event *ev, const spp_frames *f) {
    static const struct { int nf; size_t smax, nr; } steps[] = {
        { SPP_STACK_FRAMES, 4096, 64 }, { 1, 4096, 64 }, { 0, 4096, 64 }, { 0, 512, 16 },
        { 0, 128, 4 }, { 0, 48, 1 },
    };
    for (size_t s = 0; s < sizeof steps / sizeof steps[0]; s++) {
        spp_jw w = { .b = buf, .cap = cap - sizeof ",\"truncated\":true}\n", .smax = steps[s].smax };
        spp_rec_build(&w, ev, f, steps[s].nf < f->n ? steps[s].nf : f->n, steps[s].nr);
        if (w.over) continue;
        w.cap = cap;
        if (w.cut) jw_kbool(&w, "truncated", true);
        jw_put(&w, "}\n", 2);
        return w.over ? 0 : w.n;
    }
    return 0;
}

/* ------------------------------------------------------------------ output */
/* Say once on stderr that records are being lost (the count is kept). */
static void spp_loss(const char *what, int err) {
    spp_lost++;
    if (__atomic_exchange_n(&spp_loss_said, 1, __ATOMIC_ACQ_REL)) return;
    char line[SPP_LINE_MAX];
    int n = snprintf(line, sizeof line,
                     "safepickle: cannot write audit records to %s: %s%s%s; lost records are counted "
                     "(SAFEPICKLE_LOG or the policy's audit_log chooses another destination)\n",
                     spp_dest, what, err ? ": " : "", err ? strerrordesc_np(err) : "");
    if (n > 0) spp_write_stderr(line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

static int spp_open_dest(const char *path) {
    int fl = O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK | O_NOCTTY;
    int fd = real_open ? real_open(path, fl, 0600) : (int)syscall(SYS_openat, AT_FDCWD, path, fl, 0600);
    return fd;
}

/* mkdir -p of the state directory (0700 for a user's, 0755 for /var/log). */
static int spp_make_state_dir(void) {
    char d[SPP_PATH_MAX];
    snprintf(d, sizeof d, "%s", spp_state_dir);
    mode_t m = strcmp(d, SPP_SYSTEM_LOG_DIR) ? 0700 : 0755;
    for (char *s = d + 1;; s++) {
        if (*s != '/' && *s) continue;
        char c = *s;
        *s = '\0';
        if (mkdir(d, m) != 0 && errno != EEXIST) return -1;
        *s = c;
        if (!c) return 0;
    }
}

/* A regular file: refuse what RLIMIT_FSIZE would cut (or kill us for with
 * SIGXFSZ); after a short write remove the cut record if it is still the end
 * of the file, else end its line so the next record starts whole. */
static bool spp_write_file(int fd, const char *s, size_t n, int *err) {
    struct stat st;
    struct rlimit rl;
    if (fstat(fd, &st) == 0 && getrlimit(RLIMIT_FSIZE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        (uint64_t)st.st_size + n > (uint64_t)rl.rlim_cur) {
        *err = EFBIG;
        return false;
    }
    ssize_t w;
    do w = write(fd, s, n); while (w < 0 && errno == EINTR);
    if (w == (ssize_t)n) return true;
    *err = w < 0 ? errno : ENOSPC;
    if (w > 0) {
        off_t end = lseek(fd, 0, SEEK_CUR);
        if (end >= w && fstat(fd, &st) == 0 && st.st_size == end && ftruncate(fd, end - w) == 0) return false;
        int e2;
        spp_write_once(fd, "\n", 1, &e2);
    }
    return false;
}

static void spp_send_syslog(const char *rec, size_t n, const spp_event *ev) {
    int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s < 0) { spp_loss("cannot open a socket", errno); return; }
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", SPP_SYSLOG_PATH);
    /* <priority>tag[pid]: record (LOG_USER; warning for refusals, info else) */
    char head[64];
    int h = snprintf(head, sizeof head, "<%d>safepickle[%d]: ", 8 + (ev->action == SPA_ACT_ALLOW ? 6 : 4),
                     (int)getpid());
    struct iovec iov[2] = { { head, (size_t)h }, { (void *)rec, n - 1 } }; /* no newline */
    struct msghdr mh = { .msg_name = &sa, .msg_namelen = sizeof sa, .msg_iov = iov, .msg_iovlen = 2 };
    ssize_t w;
    do w = sendmsg(s, &mh, MSG_NOSIGNAL); while (w < 0 && errno == EINTR);
    if (w < 0) spp_loss("cannot send to " SPP_SYSLOG_PATH, errno);
    close(s);
}

/* Write one built record to the destination (caller holds spp_audit_mu). */
static void spp_emit(const char *rec, size_t n, const spp_event *ev) {
    int err = 0;
    if (spp_dk == SPP_D_SYSLOG) { spp_send_syslog(rec, n, ev); return; }
    if (spp_dk == SPP_D_FD) {
        if (!spp_is_regular(spp_dfd) && !spp_fd_ready(spp_dfd)) { spp_loss("it does not take data now", EAGAIN); return; }
        if (!spp_write_once(spp_dfd, rec, n, &err)) spp_loss("write failed", err);
        return;
    }
    if (spp_dk == SPP_D_STATE && !spp_state_dir[0]) { spp_loss(spp_state_err, 0); return; }
    int fd = spp_open_dest(spp_dest);
    if (fd < 0 && errno == ENOENT && spp_dk == SPP_D_STATE) {
        if (spp_make_state_dir() != 0) { spp_loss("cannot create the directory", errno); return; }
        fd = spp_open_dest(spp_dest);
    }
    if (fd < 0) { spp_loss("cannot open it", errno); return; }
    bool ok;
    if (spp_is_regular(fd)) ok = spp_write_file(fd, rec, n, &err);
    else {
        ok = spp_write_once(fd, rec, n, &err);
        if (!ok && err == EAGAIN && spp_fd_ready(fd)) ok = spp_write_once(fd, rec, n, &err);
    }
    if (!ok) spp_loss("write failed", err);
    if (real_close) real_close(fd); else syscall(SYS_close, fd);
}

/* The record's size limit: PIPE_BUF unless the destination is a regular file
 * (a write of at most PIPE_BUF bytes to a pipe is atomic: records of many
 * processes sharing a pipe never interleave). */
static size_t spp_rec_cap(void) {
    if (spp_dk == SPP_D_FD) return spp_is_regular(spp_dfd) ? SPP_RECORD_MAX : PIPE_BUF;
    if (spp_dk == SPP_D_SYSLOG) return PIPE_BUF - 64;
    struct stat st;
    if (stat(spp_dest, &st) == 0 && !S_ISREG(st.st_mode)) return PIPE_BUF;
    return SPP_RECORD_MAX;
}

static void spp_audit_write_here(void *arg) {
    const spp_event *ev = arg;
    spp_frames f;
    pthread_mutex_lock(&spp_audit_mu);
    spp_take_stack(&f);
    size_t cap = spp_rec_cap();
    size_t n = spp_rec_fit(spp_rec, cap, ev, &f);
    if (n) spp_emit(spp_rec, n, ev);
    else spp_loss("a record does not fit", 0);
    pthread_mutex_unlock(&spp_audit_mu);
}

void spp_audit_write(const spp_event *ev) {
    if (spp_dk == SPP_D_NONE) return;
    int saved = errno;
    spp_depth++;
    spp_on_altstack(spp_audit_write_here, (void *)ev);
    spp_depth--;
    errno = saved;
}

/* ------------------------------------------------------------------ stderr line */
static void spp_block_line_here(void *arg) {
    const spp_event *ev = arg;
    char line[SPP_LINE_MAX];
    const spa_policy *p = spp_policy();
    const char *what = ev->action == SPA_ACT_BLOCK ? "blocked"
                     : ev->action == SPA_ACT_WARN ? "warning (not blocked)" : "allowed";
    const spa_reason *d = spp_decisive(ev->reasons, ev->n_reasons);
    char why[1024];
    if (d)
        snprintf(why, sizeof why, "%s [rule %s, %s@%llu]", d->msg ? d->msg : "?", d->rule ? d->rule : "?",
                 d->loc ? d->loc : "?", (unsigned long long)d->off);
    else
        snprintf(why, sizeof why, "%s", ev->detail ? ev->detail : "no reason given");
    int n = snprintf(line, sizeof line, "safepickle: %s %s: %s: %s (%s; policy %s)\n", what,
                     ev->path ? ev->path : "?", spa_verdict_name(ev->verdict), why,
                     ev->call ? ev->call : "?", p && p->name ? p->name : "<none>");
    if (n < 0) return;
    if ((size_t)n >= sizeof line) { n = (int)sizeof line - 1; line[n - 1] = '\n'; }
    spp_write_stderr(line, (size_t)n);
}

void spp_block_line(const spp_event *ev) {
    int saved = errno;
    spp_on_altstack(spp_block_line_here, (void *)ev);
    errno = saved;
}

void spp_report(const spp_event *ev) {
    if (ev->action != SPA_ACT_ALLOW) spp_block_line(ev);
    spp_audit_write(ev);
}
