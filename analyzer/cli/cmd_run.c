/* cmd_run.c - `safepickle run [--policy P] [--audit] [--log DEST] -- CMD ARGS...`:
 * execs CMD with libsafepickle.so (found next to this executable, or in the
 * install's lib/safepickle/) prepended to LD_PRELOAD and the settings passed
 * through the environment the preload reads (SAFEPICKLE_POLICY, _MODE, _LOG). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "protect.h"
#include "deploy.h"

#define RUN_ENV_MAX 8192 /* longest LD_PRELOAD value we build */

static void run_usage(FILE *f) {
    fprintf(f,
            "usage: safepickle run [--policy P] [--audit] [--log DEST] [--allow-unprotected] [--] CMD [ARGS...]\n"
            "\n"
            "Runs CMD with libsafepickle.so preloaded: pickle-bearing files that CMD's Python\n"
            "opens are scanned and malicious ones refused before a single opcode runs.\n"
            "\n"
            "  --policy P     use this JSON policy file or shipped policy name (default, strict,\n"
            "                 audit), validated first, instead of the embedded default\n"
            "  --audit        audit mode: report what would be blocked, block nothing\n"
            "  --log DEST     where audit records go (one JSON object per line; a refusal always\n"
            "                 prints its one `safepickle:` line on stderr): state (the default,\n"
            "                 $XDG_STATE_HOME/safepickle/audit.jsonl, else\n"
            "                 ~/.local/state/safepickle/audit.jsonl), syslog, stderr, stdout,\n"
            "                 none, or a file (a relative path is made absolute here)\n"
            "  --allow-unprotected\n"
            "                 run CMD even when it cannot be protected (with a warning)\n"
            "\n"
            "Before CMD starts, run checks that it can be protected: a new process started\n"
            "with the library in LD_PRELOAD must map it, and CMD (or the #! interpreter of a\n"
            "script) must be a dynamically linked program of the library's ELF class that is\n"
            "not set-user-ID, set-group-ID or given file capabilities (ld.so ignores LD_PRELOAD\n"
            "for those); SAFEPICKLE_MODE=off in the environment also counts as unprotected.\n"
            "Otherwise it says why and exits 2 without running CMD, unless --allow-unprotected.\n"
            "\n"
            "exit status: CMD's, or 2 on a usage error or when CMD cannot be protected,\n"
            "127 if CMD cannot be executed.\n");
}

/* libsafepickle.so next to the CLI (build tree) or in PREFIX/lib/safepickle. */
static int run_find_lib(char *out, size_t n) {
    const char *dir = cli_self_dir();
    const char *cand[] = { "%s/libsafepickle.so", "%s/../lib/safepickle/libsafepickle.so",
                           "%s/../lib/libsafepickle.so" };
    for (size_t i = 0; i < sizeof cand / sizeof cand[0]; i++) {
        char p[PATH_MAX];
        int k = snprintf(p, sizeof p, cand[i], dir);
        if (k < 0 || (size_t)k >= sizeof p) continue;
        if (access(p, R_OK) == 0 && realpath(p, out) && strlen(out) < n) return 0;
    }
    return -1;
}

/* Prepend lib to LD_PRELOAD unless it is already listed. */
static int run_set_preload(const char *lib) {
    const char *old = getenv("LD_PRELOAD");
    char buf[RUN_ENV_MAX];
    if (old && *old) {
        char copy[RUN_ENV_MAX];
        snprintf(copy, sizeof copy, "%s", old);
        for (char *save = NULL, *t = strtok_r(copy, ": ", &save); t; t = strtok_r(NULL, ": ", &save))
            if (!strcmp(t, lib)) return 0;
        int k = snprintf(buf, sizeof buf, "%s:%s", lib, old);
        if (k < 0 || (size_t)k >= sizeof buf) return -1;
    } else {
        snprintf(buf, sizeof buf, "%s", lib);
    }
    return setenv("LD_PRELOAD", buf, 1);
}

/* Can CMD be protected? 0 yes (or the user allowed it: a warning is printed),
 * -1 no (the reason printed). Checked after LD_PRELOAD is set, so the probe
 * runs under the exact value CMD will get. */
static int run_protectable(const char *lib, const char *cmd, int allow) {
    char why[PATH_MAX + 256];
    spa_mode m;
    bool ok = true;
    if (spa_mode_parse(getenv("SAFEPICKLE_MODE"), &m) && m == SPA_MODE_OFF) { /* policy.c's reading */
        snprintf(why, sizeof why, "SAFEPICKLE_MODE=off is set in the environment: the preload would block nothing");
        ok = false;
    } else if (!prot_preload_loads(getenv("LD_PRELOAD"), why, sizeof why)) {
        char tmp[sizeof why];
        memcpy(tmp, why, sizeof tmp);
        snprintf(why, sizeof why, "LD_PRELOAD=%.*s: %.*s", PATH_MAX / 2, lib, (int)(sizeof why) / 3, tmp);
        ok = false;
    } else {
        ok = prot_exec_check(cmd, why, sizeof why);
    }
    if (ok) return 0;
    if (allow) {
        fprintf(stderr, "safepickle run: WARNING: %s runs UNPROTECTED (--allow-unprotected): %s\n", cmd, why);
        return 0;
    }
    fprintf(stderr, "safepickle run: cannot protect %s: %s; not running it: not protected "
                    "(--allow-unprotected runs it anyway)\n", cmd, why);
    return -1;
}

int cmd_run(int argc, char **argv) {
    const char *policy = NULL, *log = NULL;
    int audit = 0, allow_unprotected = 0, i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--")) { i++; break; }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { run_usage(stdout); return CLI_EXIT_OK; }
        if (!strcmp(a, "--audit")) { audit = 1; continue; }
        if (!strcmp(a, "--allow-unprotected")) { allow_unprotected = 1; continue; }
        if (!strcmp(a, "--policy") || !strcmp(a, "--log")) {
            if (i + 1 >= argc) { fprintf(stderr, "safepickle run: %s needs a value\n", a); return CLI_EXIT_ERROR; }
            if (!strcmp(a, "--policy")) policy = argv[++i]; else log = argv[++i];
            continue;
        }
        if (!strncmp(a, "--policy=", 9)) { policy = a + 9; continue; }
        if (!strncmp(a, "--log=", 6)) { log = a + 6; continue; }
        if (a[0] == '-') { fprintf(stderr, "safepickle run: unknown option '%s'\n", a); run_usage(stderr); return CLI_EXIT_ERROR; }
        break; /* first non-option: the command */
    }
    if (i >= argc) { run_usage(stderr); return CLI_EXIT_ERROR; }

    char lib[PATH_MAX];
    if (run_find_lib(lib, sizeof lib) != 0) {
        fprintf(stderr, "safepickle run: libsafepickle.so not found next to %s or in ../lib/safepickle\n", cli_self_dir());
        return CLI_EXIT_ERROR;
    }
    if (policy) {
        /* Resolve and validate now: a broken policy would make the preload refuse every pickle. */
        char abs[PATH_MAX];
        spa_policy *p = dep_load_policy("run", policy, abs, sizeof abs);
        if (!p) return CLI_EXIT_ERROR;
        spa_policy_free(p);
        setenv("SAFEPICKLE_POLICY", abs, 1);
    }
    if (audit) setenv("SAFEPICKLE_MODE", "audit", 1);
    if (log) {
        char abs[PATH_MAX];
        static const char *const kw[] = { "state", "syslog", "stderr", "stdout", "none", "off", NULL };
        bool word = false;
        for (int k = 0; kw[k]; k++) word |= !strcmp(log, kw[k]);
        if (log[0] != '/' && !word && getcwd(abs, sizeof abs)) {
            size_t l = strlen(abs);
            snprintf(abs + l, sizeof abs - l, "/%s", log);
            setenv("SAFEPICKLE_LOG", abs, 1);
        } else {
            setenv("SAFEPICKLE_LOG", log, 1);
        }
    }
    if (run_set_preload(lib) != 0) { fprintf(stderr, "safepickle run: LD_PRELOAD too long\n"); return CLI_EXIT_ERROR; }
    char exe[PATH_MAX];
    if (!prot_which(argv[i], exe, sizeof exe)) { /* as a shell says it: nothing to protect or run */
        fprintf(stderr, "safepickle run: cannot execute %s: command not found\n", argv[i]);
        return 127;
    }
    if (run_protectable(lib, argv[i], allow_unprotected) != 0) return CLI_EXIT_ERROR;
    execvp(argv[i], argv + i);
    fprintf(stderr, "safepickle run: cannot execute %s: %s\n", argv[i], strerror(errno));
    return 127;
}
