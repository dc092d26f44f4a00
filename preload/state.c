/* state.c - the process facts every part of the preload reads: the policy in
 * force (SAFEPICKLE_POLICY or the embedded default, with the SAFEPICKLE_MODE
 * override), the executable and its argv, whether the process is targeted
 * (policy `targets` or SAFEPICKLE_TARGETS) and the thread's nesting depth.
 * Set once by spp_state_init (from init.c); read-only afterwards, so audit.c,
 * decide.c and layer 2 depend on this file and not on init.c. */
#include "spp.h"

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SPP_TARGETS_MAX 64 /* globs accepted from SAFEPICKLE_TARGETS */

SPP_TLS int spp_depth;

static spa_policy *spp_pol;
static bool spp_pol_broken;
static char spp_pol_err[512];
static char spp_exe_buf[SPP_PATH_MAX];
static char spp_argv_buf[SPP_ARGV_MAX];
static size_t spp_argv_len;
static bool spp_is_target;

/* ------------------------------------------------------------------ accessors */
const spa_policy *spp_policy(void) { return spp_pol; }
bool spp_policy_broken(void) { return spp_pol_broken; }
const char *spp_policy_error(void) { return spp_pol_err; }
const char *spp_exe(void) { return spp_exe_buf; }
bool spp_targeted_process(void) { return spp_is_target; }
const char *spp_argv(size_t *n) { if (n) *n = spp_argv_len; return spp_argv_buf; }

/* ------------------------------------------------------------------ helpers */
static void spp_read_cmdline(void) {
    int fd = real_open ? real_open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC) : -1;
    if (fd < 0) return;
    size_t got = 0;
    while (got < sizeof spp_argv_buf - 1) {
        ssize_t r = real_read ? real_read(fd, spp_argv_buf + got, sizeof spp_argv_buf - 1 - got) : -1;
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    spp_argv_len = got;
    spp_argv_buf[got] = '\0';
    if (real_close) real_close(fd);
}

static const char *spp_basename(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

/* Does `name` match one of the globs? ("*" is every process; an empty list none.) */
static bool spp_match_targets(const char *name, char *const *globs, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (globs[i] && fnmatch(globs[i], name, 0) == 0) return true;
    return false;
}

static bool spp_targeted(const spa_policy *p) {
    const char *exe = spp_basename(spp_exe_buf);
    const char *env = getenv("SAFEPICKLE_TARGETS");
    if (env && *env) { /* empty: as if unset */
        char buf[1024];
        char *globs[SPP_TARGETS_MAX];
        size_t n = 0;
        snprintf(buf, sizeof buf, "%s", env);
        for (char *save = NULL, *t = strtok_r(buf, ",:", &save); t && n < SPP_TARGETS_MAX;
             t = strtok_r(NULL, ",:", &save))
            globs[n++] = t;
        return spp_match_targets(exe, globs, n);
    }
    return spp_match_targets(exe, p->targets.v, p->targets.n);
}

static void spp_load_policy(void) {
    const char *path = getenv("SAFEPICKLE_POLICY");
    if (path && *path) {
        spa_err err = {0};
        spa_policy *p = NULL;
        if (spa_policy_load(path, &p, &err) == SPA_OK && p) {
            spp_pol = p;
        } else {
            spp_pol_broken = true;
            snprintf(spp_pol_err, sizeof spp_pol_err, "cannot load policy %s: %s (at byte %llu)", path,
                     err.msg ? err.msg : "error", (unsigned long long)err.off);
        }
    }
    if (!spp_pol) {
        spa_policy *p = NULL;
        if (spa_policy_default(&p) == SPA_OK && p) {
            spp_pol = p;
        } else {
            spp_pol_broken = true;
            if (!spp_pol_err[0]) snprintf(spp_pol_err, sizeof spp_pol_err, "cannot load the embedded default policy");
        }
    }
    const char *mode = getenv("SAFEPICKLE_MODE");
    if (spp_pol && mode && *mode) {
        if (!strcmp(mode, "enforce")) spp_pol->mode = SPA_MODE_ENFORCE;
        else if (!strcmp(mode, "audit")) spp_pol->mode = SPA_MODE_AUDIT;
        else if (!strcmp(mode, "off")) spp_pol->mode = SPA_MODE_OFF;
        else {
            char line[256];
            int n = snprintf(line, sizeof line, "safepickle: ignoring SAFEPICKLE_MODE=%s (want enforce, audit or off)\n", mode);
            if (n > 0) spp_write_stderr(line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
        }
    }
}

void spp_state_init(void) {
    ssize_t n = readlink("/proc/self/exe", spp_exe_buf, sizeof spp_exe_buf - 1);
    spp_exe_buf[n > 0 ? n : 0] = '\0';
    spp_read_cmdline();
    spp_load_policy();
    if (spp_pol) {
        spp_is_target = spp_targeted(spp_pol);
    } else {
        /* No policy at all: act in Python (fail closed there), pass elsewhere. */
        static char py[] = "python*";
        char *g[1] = { py };
        spp_is_target = spp_match_targets(spp_basename(spp_exe_buf), g, 1);
    }
}
