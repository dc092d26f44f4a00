/* state.c - the process facts every part of the preload reads: the policy in
 * force (SAFEPICKLE_POLICY or the embedded default, with the SAFEPICKLE_MODE /
 * SAFEPICKLE_TARGETS overrides read by analyzer/policy.c), the executable and
 * its argv, whether the process runs Python and is targeted (the rule is
 * spa_policy_target's) and the thread's nesting depth. Set by spp_state_init
 * (from init.c); only the targeting may change later, once, when an
 * interpreter is found in a process that had none (spp_state_retarget). */
#include "spp.h"

#include <errno.h>
#include <fcntl.h>
#include <dlfcn.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

SPP_TLS int spp_depth;

static spa_policy *spp_pol;        /* NULL when broken: never replaced by another policy */
static bool spp_pol_broken;
static char spp_pol_err[1024];
static char spp_mode_note_buf[160];     /* SAFEPICKLE_MODE garbage: said once where we act */
static spa_targeting spp_tgt = SPA_TARGET_NOT_PYTHON;
static char spp_exe_buf[SPP_PATH_MAX];
static char spp_argv_buf[SPP_ARGV_MAX];
static size_t spp_argv_len;
static bool spp_is_target;

/* ------------------------------------------------------------------ accessors */
const spa_policy *spp_policy(void) { return spp_pol_broken ? NULL : spp_pol; }
bool spp_policy_broken(void) { return spp_pol_broken; }
const char *spp_policy_error(void) { return spp_pol_err; }
const char *spp_exe(void) { return spp_exe_buf; }
bool spp_targeted_process(void) { return spp_is_target; }
spa_targeting spp_targeting(void) { return spp_tgt; }
const char *spp_mode_note(void) { return spp_mode_note_buf; }
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

/* SAFEPICKLE_POLICY or the embedded default, then the environment overrides.
 * Any failure leaves no policy (spp_pol NULL, broken): both layers refuse. */
static void spp_load_policy(void) {
    const char *path = getenv("SAFEPICKLE_POLICY");
    spa_err err = {0};
    spa_policy *p = NULL;
    if (path && *path) {
        if (spa_policy_load(path, &p, &err) != SPA_OK || !p) {
            snprintf(spp_pol_err, sizeof spp_pol_err, "cannot load policy %s: %s (at byte %llu)", path,
                     err.msg ? err.msg : "error", (unsigned long long)err.off);
            p = NULL;
        }
    } else if (spa_policy_default(&p) != SPA_OK || !p) {
        snprintf(spp_pol_err, sizeof spp_pol_err, "cannot load the embedded default policy");
        p = NULL;
    }
    if (p && spa_policy_apply_env(p, getenv("SAFEPICKLE_MODE"), getenv("SAFEPICKLE_TARGETS"), spp_mode_note_buf,
                                  sizeof spp_mode_note_buf, &err) != SPA_OK) {
        snprintf(spp_pol_err, sizeof spp_pol_err, "%s", err.msg ? err.msg : "bad environment override");
        spa_policy_free(p);
        p = NULL;
    }
    spp_pol = p;
    spp_pol_broken = p == NULL;
}

/* Is a Python interpreter in this process? CPython's embedding symbols in the
 * global scope (the executable, its libraries, RTLD_GLOBAL loads), or a
 * libpython loaded anywhere (also RTLD_LOCAL). */
static int spp_py_cb(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    if (info->dlpi_name && spa_lib_name_is_python(info->dlpi_name)) {
        *(bool *)data = true;
        return 1;
    }
    return 0;
}

bool spp_detect_python(void) {
    for (const char *const *s = spa_python_symbols; *s; s++)
        if (dlsym(RTLD_DEFAULT, *s)) return true;
    bool found = false;
    dl_iterate_phdr(spp_py_cb, &found);
    return found;
}

/* A policy that requires the environment index, in a process it protects, without a usable
 * index: broken (both layers refuse, init.c says why once). Checked only where we act, so
 * other processes never load the index. */
void spp_state_retarget(bool runs_python) {
    spp_tgt = spa_policy_target(spp_pol, spp_exe_buf, runs_python);
    spp_is_target = spp_tgt == SPA_TARGET_ACT;
    if (spp_is_target && spp_pol && !spp_pol_broken && spa_policy_index_unmet(spp_pol, spp_pol_err, sizeof spp_pol_err))
        spp_pol_broken = true;
}

void spp_state_init(void) {
    ssize_t n = readlink("/proc/self/exe", spp_exe_buf, sizeof spp_exe_buf - 1);
    spp_exe_buf[n > 0 ? n : 0] = '\0';
    spp_read_cmdline();
    spp_load_policy();
    spp_state_retarget(spp_detect_python());
}
