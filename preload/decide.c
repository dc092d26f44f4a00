/* decide.c - the decision: sniff the content behind an fd with the real pread
 * (no file offset moves, the bytes judged are the bytes the loader reads), scan
 * and classify pickle-bearing content, apply the policy, cache the verdict by
 * file identity and report warnings and refusals. Internal failures follow the
 * policy's fail mode (on_error); a policy that failed to load refuses every
 * pickle-bearing file. */
#include "spp.h"
#include "verdict.h" /* spa_sha256_*: the digest of a file trusted by the policy */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The analyzer reads only through this: the REAL pread on the fd, never a hook. */
static ssize_t spp_src_pread(void *ctx, void *buf, size_t len, uint64_t off) {
    int fd = (int)(intptr_t)ctx;
    for (;;) {
        ssize_t r = real_pread64 ? real_pread64(fd, buf, len, (off64_t)off)
                                 : (ssize_t)syscall(SYS_pread64, fd, buf, len, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        return r;
    }
}

#define SPP_HASH_CHUNK 65536u /* bytes per pread while hashing a file for trusted_sha256 */

/* Is the content behind fd one the policy trusts by SHA-256? Hashed through the
 * real pread (offset untouched); only done when a file would not be allowed. */
static bool spp_trusted_digest(const spa_policy *pol, int fd, uint64_t size) {
    if (!pol || pol->n_trusted_sha256 == 0) return false;
    static SPP_TLS uint8_t *buf;
    if (!buf && !(buf = malloc(SPP_HASH_CHUNK))) return false;
    spa_sha256 h;
    spa_sha256_init(&h);
    uint64_t off = 0;
    while (off < size) {
        size_t want = size - off < SPP_HASH_CHUNK ? (size_t)(size - off) : SPP_HASH_CHUNK;
        ssize_t r = spp_src_pread((void *)(intptr_t)fd, buf, want, off);
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

/* Apply the policy's mode to an action computed outside spa_policy_decide. */
static spa_action spp_apply_mode(const spa_policy *p, spa_action a) {
    if (!p) return a;
    if (p->mode == SPA_MODE_OFF) return SPA_ACT_ALLOW;
    if (p->mode == SPA_MODE_AUDIT && a == SPA_ACT_BLOCK) return SPA_ACT_WARN;
    return a;
}

static void spp_fd_path(int fd, const char *hint, char *out, size_t outsz) {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, out, outsz - 1);
    if (n > 0) { out[n] = '\0'; return; }
    snprintf(out, outsz, "%s", hint ? hint : "<fd>");
}

/* Scan and classify the content of fd; fills *out and reports. `report_allow`
 * asks for an audit record even when the content is allowed (first judgement). */
static void spp_judge_full(int fd, const struct stat *st, const char *hint, int hook, bool report_allow,
                           bool cached, spp_cached *out) {
    const spa_policy *pol = spp_policy();
    memset(out, 0, sizeof *out);
    out->verdict = SPA_VERDICT_SAFE;
    out->action = SPA_ACT_ALLOW;

    uint8_t head[SPP_SNIFF_BYTES];
    size_t want = (uint64_t)st->st_size < sizeof head ? (size_t)st->st_size : sizeof head;
    size_t got = 0;
    while (got < want) {
        ssize_t r = spp_src_pread((void *)(intptr_t)fd, head + got, want - got, got);
        if (r <= 0) break;
        got += (size_t)r;
    }
    if (got == 0) return; /* unreadable: the loader will fail to read it too */
    spa_format fmt = spa_sniff(head, got);
    if (fmt == SPA_FMT_NONE) return;

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
        return;
    }

    spa_scan_opts o;
    spa_scan_opts_default(&o);
    o.limits = pol->limits;
    o.name = path;
    spa_src src = { .pread = spp_src_pread, .ctx = (void *)(intptr_t)fd, .size = (uint64_t)st->st_size, .mem = NULL };
    spa_result *r = NULL;
    spa_err err = {0};
    spa_code c = spa_scan_src(&o, &src, &r, &err);
    if (c == SPA_OK && r) c = spa_classify(r, pol);
    if (c != SPA_OK || !r) {
        char detail[256];
        snprintf(detail, sizeof detail, "internal error (%s: %s at byte %llu); fail mode %s",
                 spa_code_name(c), err.msg ? err.msg : "scan failed", (unsigned long long)err.off,
                 spa_action_name(pol->on_error));
        out->verdict = SPA_VERDICT_UNSCANNABLE;
        out->action = (uint8_t)spp_apply_mode(pol, pol->on_error);
        if (pol->mode != SPA_MODE_OFF &&
            (spa_policy_trusts_path(pol, path) || spp_trusted_digest(pol, fd, (uint64_t)st->st_size))) {
            out->action = SPA_ACT_ALLOW;
            out->bearing = SPP_BEARING_TRUSTED;
            ev.trusted = true;
            spp_trust_put(spp_ident_hash(st), NULL);   /* names unknown: trust not bound */
            strncat(detail, "; allowed: trusted by the policy", sizeof detail - strlen(detail) - 1);
        }
        ev.verdict = SPA_VERDICT_UNSCANNABLE;
        ev.action = (spa_action)out->action;
        ev.detail = detail;
        spp_report(&ev);
        spa_result_free(r);
        return;
    }
    if (!r->pickle_bearing) { /* the sniff was a false alarm: no stream, nothing to judge */
        out->bearing = 0;
        spa_result_free(r);
        return;
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
        } else if (spp_trusted_digest(pol, fd, (uint64_t)st->st_size)) {
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
}

int spp_judge_fd(int fd, const char *path, int hook, spp_origin origin) {
    return spp_judge_fd_ent(fd, path, hook, origin, NULL);
}

int spp_judge_fd_ent(int fd, const char *path, int hook, spp_origin origin, uint64_t *ent) {
    struct stat st;
    if (ent) *ent = 0;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0) return 0;
    uint64_t ident = spp_ident_hash(&st);
    uint64_t seen = spp_fd_get(fd);
    const spa_policy *pol = spp_policy();
    if ((seen & ~SPP_FD_TAGS) == ident) {
        if (!(seen & SPP_FD_REFUSED)) {                                  /* judged allowed on this fd */
            if (ent) *ent = seen;
            return 0;
        }
        if (origin == SPP_AT_USE) return spp_block_errno(pol);          /* refused, reported */
    }

    spp_key k;
    spp_key_from_stat(&k, &st);
    spp_cached c;
    bool hit = spp_cache_get(&k, &c);
    if (!hit) {
        spp_judge_full(fd, &st, path, hook, true, false, &c);
        spp_cache_put(&k, &c);
    } else if (c.action == SPA_ACT_BLOCK || (c.action == SPA_ACT_WARN && spp_cache_mark_reported(&k))) {
        /* Explain again: a refusal is reported at every refused open. */
        spp_cached again;
        spp_judge_full(fd, &st, path, hook, false, true, &again);
        if (again.action != c.action) spp_cache_put(&k, &again);
        c = again;
    }
    if (c.action == SPA_ACT_BLOCK) {
        spp_fd_set(fd, ident | SPP_FD_REFUSED);
        return spp_block_errno(pol);
    }
    uint64_t e = ident | (c.bearing == SPP_BEARING_TRUSTED ? SPP_FD_TRUSTED : c.bearing ? SPP_FD_BEARING : 0);
    spp_fd_set(fd, e);
    if (ent) *ent = e;
    return 0;
}
