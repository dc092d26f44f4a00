/* decide.c - the decision: sniff the content behind an fd with the real pread
 * (no file offset moves, the bytes judged are the bytes the loader reads), scan
 * and classify pickle-bearing content, apply the policy, cache the verdict by
 * file identity and report warnings and refusals. Internal failures follow the
 * policy's fail mode (on_error); a policy that failed to load refuses every
 * pickle-bearing file. */
#include "spp.h"
#include "sha256.h" /* the digest of a file trusted by the policy */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define SPP_HASH_CHUNK 65536u /* bytes per pread while hashing a file for trusted_sha256 */
#define SPP_JUDGE_TRIES 3      /* judgements of a file whose bytes change under the scan, then fail mode */

/* Is the content behind src one the policy trusts by SHA-256? Hashed through
 * the scan's source, so the fingerprint covers every byte hashed and a file
 * swapped between the scan and the hash is caught; only done when a file
 * would not be allowed. */
static bool spp_trusted_digest(const spa_policy *pol, const spa_src *src) {
    if (!pol || pol->n_trusted_sha256 == 0) return false;
    static SPP_TLS uint8_t *buf;
    if (!buf && !(buf = malloc(SPP_HASH_CHUNK))) return false;
    spa_sha256 h;
    spa_sha256_init(&h);
    uint64_t off = 0;
    while (off < src->size) {
        size_t want = src->size - off < SPP_HASH_CHUNK ? (size_t)(src->size - off) : SPP_HASH_CHUNK;
        ssize_t r = src->pread(src->ctx, buf, want, off);
        if (r <= 0) return false;
        spa_sha256_update(&h, buf, (size_t)r);
        off += (uint64_t)r;
    }
    uint8_t d[32];
    spa_sha256_final(&h, d);
    return spa_policy_trusts_digest(pol, d);
}
static int spp_block_errno(const spa_policy *p) {
    return (p && p->block_errno > 0) ? p->block_errno : EACCES;
}

static void spp_fd_path(int fd, const char *hint, char *out, size_t outsz) {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, out, outsz - 1);
    if (n > 0) { out[n] = '\0'; return; }
    snprintf(out, outsz, "%s", hint ? hint : "<fd>");
}

/* ------------------------------------------------------------------ debug */
/* SAFEPICKLE_DEBUG_SCANS=PATH (tests only): every full scan appends the
 * scanned path and a newline to PATH, so tests can count scans. */
static char spp_debug_scans[SPP_PATH_MAX];

void spp_decide_init(void) {
    const char *d = getenv("SAFEPICKLE_DEBUG_SCANS");
    if (d && *d == '/') snprintf(spp_debug_scans, sizeof spp_debug_scans, "%s", d);
}

static void spp_debug_scan_note(const char *path) {
    if (!spp_debug_scans[0]) return;
    int fd = real_open ? real_open(spp_debug_scans, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600) : -1;
    if (fd < 0) return;
    char line[SPP_PATH_MAX + 2];
    int n = snprintf(line, sizeof line, "%s\n", path);
    if (n > 0 && write(fd, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1) < 0) { /* best effort */ }
    if (real_close) real_close(fd);
}

/* Scan and classify the content of fd; fills *out and reports. `report_allow`
 * asks for an audit record even when the content is allowed (first judgement). */
/* Returns true when the content could not be read: that judgement is not
 * cached (a later open judges again). */
static bool spp_judge_once(int fd, const struct stat *st, const char *hint, int hook, bool report_allow,
                           bool cached, spp_cached *out, spp_fpb *fb) {
    const spa_policy *pol = spp_policy();
    memset(out, 0, sizeof *out);
    out->verdict = SPA_VERDICT_SAFE;
    out->action = SPA_ACT_ALLOW;

    /* THE recogniser, the one `safepickle scan` uses (head and tail), through
     * the fingerprinting source in its soft mode: the blocks it reads are
     * fingerprinted, so a "not pickle-bearing" judgement is verified on the
     * reads that return those bytes (SPP_FD_RECOG), but its reads never fail:
     * a sysfs file shorter than its size is then not fingerprinted (fb->shortf),
     * one whose bytes change between two reads is judged again (fb->volat,
     * spp_judge_full). The scan below
     * recognises again through the same source, strict: every byte the
     * analyzer reads is fingerprinted on its way and must equal what the
     * recogniser saw (verify.c). */
    spa_src src = { .pread = spp_fpb_pread, .ctx = fb, .size = (uint64_t)st->st_size, .mem = NULL };
    static SPP_TLS uint8_t *scratch;
    if (!scratch) scratch = malloc(SPA_RECOG_SCRATCH); /* NULL: the recogniser reads in small chunks */
    spa_format fmt = SPA_FMT_NONE;
    int read_errno = 0;
    bool transient = false;
    fb->soft = true;
    spa_code rc = spa_recognise(&src, scratch, scratch ? SPA_RECOG_SCRATCH : 0, &fmt);
    fb->soft = false;
    if (rc != SPA_OK) {
        /* a read that failed is not "not pickle-bearing": judged as an
         * internal error below (the policy's fail mode), never cached */
        read_errno = errno;
        fmt = SPA_FMT_UNSCANNABLE;
        transient = true;
    }
    if (fmt == SPA_FMT_NONE) return false;

    char path[SPP_PATH_MAX];
    spp_fd_path(fd, hint, path, sizeof path);
    spp_event ev = {
        .layer = "file", .call = spp_hook_name(hook), .path = path, .fd = fd,
        .format = spa_format_name(fmt), .cached = cached,
    };
    out->bearing = 1;

    if (spp_policy_broken() || !pol) {
        out->verdict = SPA_VERDICT_UNSCANNABLE;
        out->action = SPA_ACT_BLOCK;
        ev.verdict = SPA_VERDICT_UNSCANNABLE;
        ev.action = SPA_ACT_BLOCK;
        ev.detail = spp_policy_error();
        spp_report(&ev);
        return transient;
    }

    spa_scan_opts o;
    spa_scan_opts_default(&o);
    o.limits = pol->limits;
    o.name = path;
    o.opens_judged = spp_active; /* this process's opens are judged (layer 1 is this code) */
    if (!transient) spp_debug_scan_note(path);
    spa_result *r = NULL;
    spa_err err = {0};
    spa_code c;
    if (transient) {
        c = SPA_E_IO;
        err.code = SPA_E_IO;
        err.msg = read_errno ? strerror(read_errno) : "read error";
    } else {
        c = spa_scan_src(&o, &src, &r, &err);
    }
    if (c == SPA_OK && r) c = spa_classify(r, pol);
    if ((c != SPA_OK || !r) && fb->changed) { /* the bytes changed under the scan: judged again */
        spa_result_free(r);
        return false;
    }
    if (c != SPA_OK || !r) {
        char detail[256];
        snprintf(detail, sizeof detail, "internal error (%s: %s at byte %llu); fail mode %s",
                 spa_code_name(c), err.msg ? err.msg : "scan failed", (unsigned long long)err.off,
                 spa_action_name(pol->on_error));
        out->verdict = SPA_VERDICT_UNSCANNABLE;
        out->action = (uint8_t)spa_policy_act(pol, pol->on_error);
        if (pol->mode != SPA_MODE_OFF &&
            (spa_policy_trusts_path(pol, path) || spp_trusted_digest(pol, &src))) {
            out->action = SPA_ACT_ALLOW;
            out->bearing = SPP_BEARING_TRUSTED;
            ev.trusted = true;
            spp_trust_put(spp_ident_hash(st), NULL);   /* names unknown: trust not bound */
            strncat(detail, "; allowed: trusted by the policy", sizeof detail - strlen(detail) - 1);
        }
        ev.verdict = SPA_VERDICT_UNSCANNABLE;
        ev.action = (spa_action)out->action;
        ev.detail = detail;
        if (!fb->changed) spp_report(&ev);
        out->ex = spp_expl_make(&ev);
        spa_result_free(r);
        return transient;
    }
    if (!r->pickle_bearing) { /* the sniff was a false alarm: no stream, nothing to judge */
        out->bearing = 0;
        spa_result_free(r);
        return false;
    }
    out->verdict = (uint8_t)r->verdict;
    out->action = (uint8_t)spa_policy_decide(pol, r);
    /* Trust is recorded (fd tag SPP_FD_TRUSTED) whenever the content is not
     * judged safe, so layer 2 can honour it for the unpickle this file feeds. */
    if (r->verdict != SPA_VERDICT_SAFE && pol->mode != SPA_MODE_OFF) {
        if (spa_policy_trusts_path(pol, path)) {
            out->bearing = SPP_BEARING_TRUSTED;
            ev.trusted = true;
            ev.detail = "allowed: the file's path is trusted by the policy";
        } else if (spp_trusted_digest(pol, &src)) {
            out->action = SPA_ACT_ALLOW;
            out->bearing = SPP_BEARING_TRUSTED;
            ev.trusted = true;
            ev.detail = "allowed: the file's sha256 is trusted by the policy";
        }
    }
    if (out->bearing == SPP_BEARING_TRUSTED) spp_trust_put(spp_ident_hash(st), r);
    ev.verdict = r->verdict;
    ev.action = (spa_action)out->action;
    ev.reasons = r->reasons;
    ev.n_reasons = r->n_reasons;
    ev.format = spa_format_name(r->format);
    if (fb->changed) { /* the trusted-digest pass saw other bytes: judged again */
        spa_result_free(r);
        return false;
    }
    out->ex = spp_expl_make(&ev);
    out->persist = 1;
    if (out->action != SPA_ACT_ALLOW) {
        spp_report(&ev);
        out->reported = 1;
    } else if (report_allow) {
        /* Allowed pickle loads are recorded in an audit FILE only: the default
         * destination is stderr, where a line per benign load would be noise. */
        const char *dest = spp_audit_dest();
        if (dest && strcmp(dest, "stderr") != 0 && strcmp(dest, "stdout") != 0) spp_audit_write(&ev);
    }
    spa_result_free(r);
    return false;
}

/* An internal error on content judged at fd: unscannable, the policy's fail mode
 * (on_error) decides; reported, and the explanation replaced by this one. */
static void spp_judge_failmode(int fd, const char *hint, int hook, spp_cached *out, const char *detail) {
    const spa_policy *pol = spp_policy();
    char path[SPP_PATH_MAX];
    spp_fd_path(fd, hint, path, sizeof path);
    out->verdict = SPA_VERDICT_UNSCANNABLE;
    out->action = (uint8_t)(pol ? spa_policy_act(pol, pol->on_error) : SPA_ACT_BLOCK);
    spp_event ev = { .layer = "file", .call = spp_hook_name(hook), .path = path, .fd = fd,
                     .verdict = SPA_VERDICT_UNSCANNABLE, .action = (spa_action)out->action, .detail = detail };
    spp_report(&ev);
    out->reported = 1;
    spp_expl_unref(out->ex);
    out->ex = spp_expl_make(&ev);
}

/* Content judged not pickle-bearing: the fingerprint of the bytes that
 * judgement read (the recogniser's head and tail, or all a scan that found no
 * stream read), so that a change under the same identity (a shared mapping)
 * is seen by the reads that return them (SPP_FD_RECOG). None when nothing was
 * read whole (a file shorter than its size: a pseudo file, or one truncated
 * since its fstat, whose identity then differs); no memory for it: out->fresh,
 * every read is judged again after the call (SPP_FD_FRESH). (Bytes that changed
 * between two of the recogniser's reads are judged again: spp_judge_full.) */
static void spp_none_fp(spp_fpb *fb, const struct stat *st, spp_cached *out) {
    if (fb->shortf || fb->n == 0) return;
    out->fp = spp_fpb_finish(fb, st);
    if (!out->fp) out->fresh = 1;
}

/* Judge the content of fd, fingerprinting the bytes the judgement relied on
 * (out->fp for allowed pickle-bearing content). A file whose bytes change
 * while it is judged is judged again, up to SPP_JUDGE_TRIES times, then the
 * policy's fail mode applies. */
static bool spp_judge_full(int fd, const struct stat *st, const char *hint, int hook, bool report_allow,
                           bool cached, spp_cached *out) {
    for (int t = 0;; t++) {
        spp_fpb fb;
        spp_fpb_init(&fb, fd, (uint64_t)st->st_size);
        bool transient = spp_judge_once(fd, st, hint, hook, report_allow, cached, out, &fb);
        if (transient && !fb.changed) { /* unreadable: judged by the fail mode, not cached */
            spp_fpb_free(&fb);
            return true;
        }
        if (!fb.changed && !transient && !out->bearing && fb.volat && !fb.shortf) {
            /* not pickle-bearing, on bytes that changed between the recogniser's
             * reads: judged again, for a fingerprint of one version; changing
             * at every try, the fail mode (a verdict on a mix of versions with
             * nothing to verify the reads against would let any through) */
            spp_fpb_free(&fb);
            spp_cached_release(out);
            if (t + 1 >= SPP_JUDGE_TRIES) break;
            continue;
        }
        if (!fb.changed) {
            if (!out->bearing && !transient) spp_none_fp(&fb, st, out);
            if (out->bearing) {
                spp_strong_of_fd(fd, &out->strong);
                if (out->action != SPA_ACT_BLOCK) out->fp = spp_fpb_finish(&fb, st);
                /* allowed pickle-bearing content whose fingerprint could not be kept (out
                 * of memory): its reads could not be checked */
                if (out->action != SPA_ACT_BLOCK && !out->fp)
                    spp_judge_failmode(fd, hint, hook, out,
                                       "internal error: no memory for the fingerprint of the bytes judged; "
                                       "fail mode applies");
            }
            spp_fpb_free(&fb);
            return false;
        }
        spp_fpb_free(&fb);
        spp_cached_release(out);
        if (t + 1 >= SPP_JUDGE_TRIES) break;
    }
    /* changing all the time: an internal error under the policy's fail mode */
    memset(out, 0, sizeof *out);
    out->bearing = 1;
    spp_judge_failmode(fd, hint, hook, out,
                       "internal error: the file changed while it was being judged; fail mode applies");
    return false;
}

int spp_judge_fd(int fd, const char *path, int hook, spp_origin origin) {
    return spp_judge_fd_ent(fd, path, hook, origin, NULL);
}

/* Set while the content behind an fd is judged afresh because its bytes no
 * longer match a cached judgement: no cache may answer (spp_verify). */
static SPP_TLS bool spp_judge_afresh;

/* A cached refusal or warning, reported again from what the judgement said
 * (no second scan). */
static void spp_report_cached(int fd, const char *hint, int hook, const spp_cached *c) {
    char path[SPP_PATH_MAX];
    spp_fd_path(fd, hint, path, sizeof path);
    const spp_expl *x = c->ex;
    spp_event ev = {
        .layer = "file", .call = spp_hook_name(hook), .path = path, .fd = fd,
        .verdict = (spa_verdict)c->verdict, .action = (spa_action)c->action, .cached = true,
        .format = x && x->format < SPA_FMT_COUNT ? spa_format_name((spa_format)x->format) : NULL,
        .reasons = x ? x->reasons : NULL, .n_reasons = x ? x->n_reasons : 0,
        .detail = x ? x->detail : NULL, .trusted = x ? x->trusted : false,
    };
    if (c->action != SPA_ACT_ALLOW) {
        spp_report(&ev);
        return;
    }
    /* allowed pickle loads are recorded in an audit FILE only (as at a first judgement) */
    const char *dest = spp_audit_dest();
    if (dest && strcmp(dest, "stderr") != 0 && strcmp(dest, "stdout") != 0) spp_audit_write(&ev);
}

/* A cache hit for pickle-bearing content also needs the rest of the identity
 * (birth time, inode generation) to match: a reused inode number is a new file. */
static bool spp_cache_get_fd(int fd, const spp_key *k, spp_cached *c) {
    if (!spp_cache_get(k, c)) return false;
    if (!c->bearing) return true;
    spp_strong s;
    spp_strong_of_fd(fd, &s);
    if (spp_strong_eq(&s, &c->strong)) return true;
    spp_cached_release(c);
    return false;
}

/* The judgement proper: caches, scan, report. Runs on the preload's own stack
 * (spp_on_altstack): the analyzer, the caches' digests and the report need tens
 * of KiB, and the host thread's stack may be 32 KiB in all. */
typedef struct spp_slow {
    int fd, hook, rc;
    const struct stat *st;
    uint64_t ident;
    const char *path;
    uint64_t *ent;
} spp_slow;

/* Did the file change less than SPP_FRESH_NS ago (or, by its clock, in the
 * future: a file server's)? Then a rewrite within the same timestamp tick
 * would keep its identity (Linux before 6.13, or a file system without
 * multigrain timestamps): SPP_FD_FRESH. */
static bool spp_changed_lately(const struct stat *st) {
    struct timespec now;
    if (clock_gettime(CLOCK_REALTIME, &now) != 0) return true;
    long long d = ((long long)now.tv_sec - (long long)st->st_ctim.tv_sec) * 1000000000ll +
                  ((long long)now.tv_nsec - (long long)st->st_ctim.tv_nsec);
    return d < SPP_FRESH_NS;
}

static void spp_judge_slow(void *arg) {
    spp_slow *x = arg;
    int fd = x->fd, hook = x->hook;
    const char *path = x->path;
    const struct stat *stp = x->st;
    uint64_t ident = x->ident, *ent = x->ent;
    const spa_policy *pol = spp_policy();
    spp_key k;
    spp_key_from_stat(&k, stp);
    spp_cached c = {0};
    bool hit = spp_cache_get_fd(fd, &k, &c), disk = false;
    if (!hit && !spp_judge_afresh && spp_pcache_get(fd, &k, &c)) {   /* judged by another process of this user */
        spp_cache_put(&k, &c);
        hit = disk = true;
    }
    if (!hit) {
        if (!spp_judge_full(fd, stp, path, hook, true, false, &c)) { /* a failed read is never cached */
            spp_cache_put(&k, &c);
            if (c.persist) spp_pcache_put(&k, &c);
        }
    } else if (c.action == SPA_ACT_BLOCK || (c.action == SPA_ACT_WARN && spp_cache_mark_reported(&k))) {
        /* Explain again: a refusal is reported at every refused open. */
        spp_report_cached(fd, path, hook, &c);
    } else if (disk && c.action == SPA_ACT_ALLOW) {
        spp_report_cached(fd, path, hook, &c);      /* this process's record of an allowed load */
    }
    if (c.action == SPA_ACT_BLOCK) {
        spp_cached_release(&c);
        spp_fd_set(fd, ident | SPP_FD_REFUSED);
        spp_fdfp_set(fd, NULL);
        x->rc = spp_block_errno(pol);
        return;
    }
    uint64_t e = ident | (c.bearing == SPP_BEARING_TRUSTED ? SPP_FD_TRUSTED : c.bearing ? SPP_FD_BEARING : 0);
    /* not pickle-bearing: the bytes the judgement read are verified (SPP_FD_RECOG:
     * a change under the same identity, a shared mapping's, is seen there); a file
     * changed lately (or with no memory for a fingerprint) is also judged again
     * after every read (SPP_FD_FRESH): a write of this process
     * within the same timestamp tick is a new version, judged, not a mismatch */
    if (!c.bearing && c.fp && fd < SPP_FD_MAX) e |= SPP_FD_RECOG;
    if (!c.bearing && (c.fresh || spp_changed_lately(stp))) e |= SPP_FD_FRESH;
    spp_fdfp_set(fd, c.fp);
    spp_fd_set(fd, e);
    spp_cached_release(&c);
    if (ent) *ent = e;
    x->rc = 0;
}

int spp_judge_fd_ent(int fd, const char *path, int hook, spp_origin origin, uint64_t *ent) {
    struct stat st;
    if (ent) *ent = 0;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return 0;
    uint64_t ident = spp_ident_hash(&st);
    if (st.st_size <= 0) {               /* nothing to judge: the identity (spp_recheck_read) */
        if (ent) *ent = ident;
        return 0;
    }
    uint64_t seen = spp_fd_get(fd);
    const spa_policy *pol = spp_policy();
    if (origin == SPP_AT_USE && (seen & (SPP_FD_BEARING | SPP_FD_TRUSTED | SPP_FD_CHANGED))) {
        /* Judged pickle-bearing on this fd: its reads are checked against the
         * bytes judged (spp_verify_read), never judged again from offset 0
         * while the same file stays behind the fd. */
        spp_fp *fp = spp_fdfp_get(fd, NULL);
        bool same = fp && fp->dev == (uint64_t)st.st_dev && fp->ino == (uint64_t)st.st_ino;
        spp_fp_unref(fp);
        if (same) {
            if (seen & SPP_FD_CHANGED) return EIO;
            if (ent) *ent = seen;
            return 0;
        }
    }
    if ((seen & ~SPP_FD_TAGS) == ident) {
        if (!(seen & (SPP_FD_REFUSED | SPP_FD_CHANGED))) {              /* judged allowed on this fd */
            if (ent) *ent = seen;
            return 0;
        }
        if (origin == SPP_AT_USE) return spp_block_errno(pol);          /* refused, reported */
    }
    /* An fd opened write-only cannot be read: read, pread, mmap and a stdio
     * stream on it all fail, so nothing reaches the program through it (as at
     * open, spp_after_open). numpy's tofile() (np.save to a path) fdopen()s a
     * dup of its 'wb' file after writing the header: judging it read nothing
     * (EBADF) and the fail mode refused the save. The access mode of an open
     * file description never changes (F_SETFL cannot). */
    long fl = syscall(SYS_fcntl, fd, F_GETFL); /* raw: fcntl is hooked */
    if (fl >= 0 && (fl & O_ACCMODE) == O_WRONLY) return 0;

    spp_slow x = { .fd = fd, .hook = hook, .rc = 0, .st = &st, .ident = ident, .path = path, .ent = ent };
    spp_on_altstack(spp_judge_slow, &x);
    return x.rc;
}

/* ------------------------------------------------------------------ verification */
/* Check what a read returned against the fingerprint of the fd's judgement.
 * seg[i].iov_base NULL: those bytes are read from the file now (a mapping). */
static int spp_check_segs(const spp_fp *fp, int fd, const struct iovec *seg, int cnt, size_t got, uint64_t off,
                          bool *touched, uint64_t *bad) {
    for (int i = 0; i < cnt && got > 0; i++) {
        size_t n = seg[i].iov_len < got ? seg[i].iov_len : got;
        if (spp_fp_check(fp, fd, seg[i].iov_base, n, off, touched, bad)) return 1;
        off += n;
        got -= n;
    }
    return 0;
}

static void spp_scrub(const struct iovec *seg, int cnt, size_t got) {
    for (int i = 0; i < cnt && got > 0; i++) {
        size_t n = seg[i].iov_len < got ? seg[i].iov_len : got;
        if (seg[i].iov_base) memset(seg[i].iov_base, 0, n);
        got -= n;
    }
}

/* The fingerprint for fd: from the fd table, else (an fd past the table) from
 * the cache entry of the file's identity. NULL: none kept. */
static spp_fp *spp_fp_for(int fd, bool *delivered) {
    *delivered = false;
    spp_fp *fp = spp_fdfp_get(fd, delivered);
    if (fp || fd < SPP_FD_MAX) return fp;
    struct stat st;
    spp_key k;
    spp_cached c = {0};
    *delivered = true; /* not tracked: never judged again on a mismatch */
    if (fstat(fd, &st) != 0) return NULL;
    spp_key_from_stat(&k, &st);
    if (!spp_cache_get(&k, &c)) return NULL;
    fp = c.fp;
    c.fp = NULL;
    spp_cached_release(&c);
    return fp;
}

/* A read whose bytes are not the bytes judged: the safepickle: line and an
 * audit record; in block mode the fd is marked (every later read fails), the
 * bytes are zeroed and the read fails with EIO; in audit mode it is said
 * once and the fd is not checked again (0). */
static int spp_changed(int fd, int hook, const struct iovec *seg, int cnt, size_t got, const char *what, uint64_t bad,
                       const char *why) {
    const spa_policy *pol = spp_policy();
    spa_action act = pol ? spa_policy_act(pol, SPA_ACT_BLOCK) : SPA_ACT_BLOCK;
    char path[SPP_PATH_MAX], detail[256];
    spp_fd_path(fd, NULL, path, sizeof path);
    snprintf(detail, sizeof detail, "the file %s: bytes at offset %llu %s", what, (unsigned long long)bad, why);
    spp_event ev = { .layer = "file", .call = spp_hook_name(hook), .path = path, .fd = fd,
                     .verdict = SPA_VERDICT_UNSCANNABLE, .action = act, .detail = detail };
    spp_report(&ev);
    if (act != SPA_ACT_BLOCK) {        /* audit mode: said once, then no more checks on this fd */
        spp_fdfp_set(fd, NULL);
        return 0;
    }
    spp_fd_set(fd, (spp_fd_get(fd) & ~SPP_FD_TAGS) | SPP_FD_CHANGED);
    spp_scrub(seg, cnt, got);
    return EIO;
}

static int spp_verify(int fd, int hook, const struct iovec *seg, int cnt, size_t got, int64_t off) {
#ifdef SPP_BENCH_NO_VERIFY
    return 0; /* test/bench/bench_verify.sh only (see verify.c) */
#endif
    bool deliv = false, touched = false;
    uint64_t bad = 0;
    const char *why = "differ from the bytes judged";
    spp_fp *fp = spp_fp_for(fd, &deliv);
    if (!fp) {
        if (fd < SPP_FD_MAX) return 0; /* allowed without one: reported under the fail mode at judgement */
        why = "cannot be checked (the fingerprint of this fd's file is no longer kept)";
        goto mismatch;
    }
    if (off < 0) {
        off_t cur = lseek(fd, 0, SEEK_CUR);
        if (cur < 0 || (uint64_t)cur < got) { why = "cannot be placed (no file offset)"; goto mismatch; }
        off = (int64_t)((uint64_t)cur - got);
    }
    if (!spp_check_segs(fp, fd, seg, cnt, got, (uint64_t)off, &touched, &bad)) {
        if (touched && !deliv) spp_fdfp_delivered(fd, fp);
        spp_fp_unref(fp);
        return 0;
    }
    if (!deliv) {
        /* No judged byte has reached the loader through this fd yet: the file
         * changed between the judgement and its first use (a cached verdict
         * for a same-identity rewrite). Judge what is there now, from scratch,
         * and check the read against that judgement. */
        struct stat st;
        spp_key k;
        spp_fp_unref(fp);
        fp = NULL;
        if (fstat(fd, &st) == 0) {
            spp_key_from_stat(&k, &st);
            spp_cache_drop(&k);
        }
        spp_fd_set(fd, 0);
        spp_fdfp_set(fd, NULL);
        uint64_t ent = 0;
        spp_judge_afresh = true;
        int e = spp_judge_fd_ent(fd, NULL, hook, SPP_AT_USE, &ent);
        spp_judge_afresh = false;
        if (e) { spp_scrub(seg, cnt, got); return e; }
        fp = spp_fdfp_get(fd, NULL);
        touched = false;
        if (!fp && cnt > 0 && seg[0].iov_base) {
            /* not pickle-bearing now (emptied, or text): the bytes returned must
             * be this version's, else they came from one in between that nobody
             * judged (a malicious pickle written and replaced during the read) */
            if (spp_fd_same_bytes(fd, seg, cnt, got, (uint64_t)off, &bad)) return 0;
            return spp_changed(fd, hook, seg, cnt, got, "changed while it was read", bad,
                               "are not the bytes of the version judged after the read");
        }
        if (!fp || !spp_check_segs(fp, fd, seg, cnt, got, (uint64_t)off, &touched, &bad)) {
            if (fp && touched) spp_fdfp_delivered(fd, fp);
            spp_fp_unref(fp);
            return 0;
        }
    }
mismatch:
    spp_fp_unref(fp);
    return spp_changed(fd, hook, seg, cnt, got, "changed after it was judged", bad, why);
}

/* After a read-family call returned bytes from a regular file that was not
 * judged pickle-bearing (ent: the identity judged just before the call, or
 * the fd's entry, the identity the last check saw; the file empty or not
 * pickle-bearing): those bytes are that judgement's only if the file did not
 * change since (a writer can fill an empty file, or put a pickle in place of a
 * text, between the judgement and the read). Its identity differs now (the
 * caller checked, spp_ident_moved), so the file is judged again as it is:
 * refused, the read fails with the refusal; pickle-bearing now, the bytes are
 * checked against that judgement (spp_verify); not pickle-bearing now, the
 * bytes must be this version's, else they came from a version in between that
 * nobody judged and the read fails with EIO. ent_out: the fd's entry after. */
static int spp_recheck(int fd, int hook, const struct iovec *seg, int cnt, size_t got, int64_t off, bool moved,
                       uint64_t *ent_out) {
    uint64_t now = 0;
    if (!moved) { /* SPP_FD_FRESH, same identity: judged afresh, no cache may answer */
        struct stat st;
        spp_key k;
        if (fstat(fd, &st) == 0) {
            spp_key_from_stat(&k, &st);
            spp_cache_drop(&k);
        }
        spp_fd_set(fd, 0);
        spp_fdfp_set(fd, NULL);
    }
    spp_judge_afresh = !moved;
    int e = spp_judge_fd_ent(fd, NULL, hook, SPP_AT_USE, &now);
    spp_judge_afresh = false;
    if (e) {
        spp_scrub(seg, cnt, got);
        return e;
    }
    *ent_out = now;
    if (now & (SPP_FD_TRUSTED | SPP_FD_BEARING)) return spp_verify(fd, hook, seg, cnt, got, off);
    if (now & SPP_FD_RECOG) { /* the bytes the new judgement read must be the ones returned */
        e = spp_verify(fd, hook, seg, cnt, got, off);
        *ent_out = spp_fd_get(fd);
        if (e || (*ent_out & (SPP_FD_TRUSTED | SPP_FD_BEARING))) return e;
    }
    if (off < 0) {
        off_t cur = lseek(fd, 0, SEEK_CUR);
        if (cur < 0 || (uint64_t)cur < got)
            return spp_changed(fd, hook, seg, cnt, got, "changed while it was read", 0, "cannot be placed (no file offset)");
        off = (int64_t)((uint64_t)cur - got);
    }
    uint64_t bad = 0;
    if (spp_fd_same_bytes(fd, seg, cnt, got, (uint64_t)off, &bad)) return 0;
    return spp_changed(fd, hook, seg, cnt, got, "changed while it was read", bad,
                       "are not the bytes of the version judged after the read");
}

/* spp_verify on the preload's own stack (its refusal path formats a 4 KiB
 * path; the host thread's stack may be 32 KiB in all). */
typedef struct spp_vargs {
    int fd, hook, cnt, rc;
    const struct iovec *seg;
    size_t got;
    int64_t off;
} spp_vargs;

static void spp_verify_cb(void *a) {
    spp_vargs *x = a;
    x->rc = spp_verify(x->fd, x->hook, x->seg, x->cnt, x->got, x->off);
}

static int spp_verify_alt(int fd, int hook, const struct iovec *seg, int cnt, size_t got, int64_t off) {
    spp_vargs x = { .fd = fd, .hook = hook, .cnt = cnt, .rc = 0, .seg = seg, .got = got, .off = off };
    spp_on_altstack(spp_verify_cb, &x);
    return x.rc;
}

int spp_verify_read(int fd, int hook, const struct iovec *iov, int cnt, size_t got, int64_t off) {
    return got ? spp_verify_alt(fd, hook, iov, cnt, got, off) : 0;
}

typedef struct spp_rargs {
    int fd, hook, cnt, rc;
    const struct iovec *seg;
    size_t got;
    int64_t off;
    bool moved;
    uint64_t *ent_out;
} spp_rargs;

static void spp_recheck_cb(void *a) {
    spp_rargs *x = a;
    x->rc = spp_recheck(x->fd, x->hook, x->seg, x->cnt, x->got, x->off, x->moved, x->ent_out);
}

/* Has the regular file behind fd another identity than `ent` (the one judged)?
 * The common answer, no, costs one fstat on the host's stack. */
static inline bool spp_ident_moved(int fd, uint64_t ent) {
    struct stat st;
    return fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && spp_ident_hash(&st) != (ent & ~SPP_FD_TAGS);
}

int spp_recheck_read(int fd, int hook, const struct iovec *iov, int cnt, size_t got, int64_t off, uint64_t *ent) {
#if defined(SPP_BENCH_NO_VERIFY) || defined(SPP_BENCH_NO_RECHECK)
    return 0; /* test/bench/bench_verify.sh only (see verify.c): the recheck's cost on its own */
#endif
    if (!got || !*ent) return 0;    /* nothing read, or not a regular file */
    bool moved = spp_ident_moved(fd, *ent);
    if (!moved && !(*ent & (SPP_FD_FRESH | SPP_FD_RECOG))) return 0; /* unchanged */
    if (!moved && !(*ent & SPP_FD_FRESH)) {
        /* the same identity: the bytes returned from those the "not pickle-bearing"
         * judgement read must be the bytes it read (a shared mapping's writer
         * changes them under the same identity) */
        int e = spp_verify_alt(fd, hook, iov, cnt, got, off);
        *ent = spp_fd_get(fd);
        return e;
    }
    spp_rargs x = { .fd = fd, .hook = hook, .cnt = cnt, .rc = 0, .seg = iov, .got = got, .off = off, .moved = moved,
                    .ent_out = ent };
    spp_on_altstack(spp_recheck_cb, &x);
    return x.rc;
}

/* A mapping is checked once, when it is made, by reading the judged blocks it
 * covers from the file: later changes through the page cache are not seen
 * (preload/README.md, Limits). */
int spp_verify_map(int fd, int hook, uint64_t off, size_t len) {
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size <= 0) return 0;
    uint64_t size = (uint64_t)st.st_size;
    if (off >= size) return 0;
    size_t n = size - off < len ? (size_t)(size - off) : len;
    struct iovec seg = { NULL, n };
    return spp_verify_alt(fd, hook, &seg, 1, n, (int64_t)off);
}

/* The same for a mapping made of a regular file not judged pickle-bearing
 * just before mmap: changed during the call, it is judged again; refused,
 * the mapping fails; pickle-bearing now, the judged blocks it covers are
 * checked (spp_verify_map). */
int spp_recheck_map(int fd, int hook, uint64_t off, size_t len, uint64_t *ent) {
#if defined(SPP_BENCH_NO_VERIFY) || defined(SPP_BENCH_NO_RECHECK)
    return 0; /* test/bench/bench_verify.sh only (see verify.c) */
#endif
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return 0;
    if (spp_ident_hash(&st) == (*ent & ~SPP_FD_TAGS))   /* the same identity: the bytes judged, if any */
        return (*ent & SPP_FD_RECOG) ? spp_verify_map(fd, hook, off, len) : 0;
    uint64_t now = 0;
    int e = spp_judge_fd_ent(fd, NULL, hook, SPP_AT_USE, &now);
    if (e) return e;
    *ent = now;
    return (now & (SPP_FD_TRUSTED | SPP_FD_BEARING | SPP_FD_RECOG)) ? spp_verify_map(fd, hook, off, len) : 0;
}
