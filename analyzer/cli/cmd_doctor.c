/* cmd_doctor.c - `safepickle doctor [--pid PID]`: reports what is installed
 * (CLI, preload library, whether it loads and blocks in a probe python3), which
 * policy is active and whether it is valid, whether the decompression libraries
 * load, Jupyter kernelspecs that use the preload, and whether the preload is
 * mapped in a given process. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "codecs.h"
#include "kb.h"
#include "deploy.h"
#include "protect.h"

extern char **environ;

/* Named limits of this file. */
#define DOC_MAX_MAPS      (64u << 20) /* bytes of /proc/PID/maps read */
#define DOC_MAX_ENVIRON   (1u << 20)  /* bytes of /proc/PID/environ read */
#define DOC_MAX_KERNELJSON (1u << 20) /* bytes of one kernel.json read */
#define DOC_PRELOAD_NAME  "libsafepickle.so"
#define DOC_PROBE_PYTHON  "/usr/bin/python3"
#define DOC_PROBE_OTHER   "/bin/grep"   /* a non-Python program run under the preload */
#define DOC_PROBE_ERR     2048          /* bytes of a probe's stderr kept */
#define DOC_MAX_DESC      1024          /* processes below a non-Python --pid examined */

/* ================================================================ checks */

typedef struct doc_state { int problems; } doc_state;

static void doc_problem(doc_state *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void doc_problem(doc_state *s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("  PROBLEM: ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    s->problems++;
}

/* Load a policy (path or the embedded default) and print its summary.
 * Returns the policy (caller frees) or NULL when invalid. */
static spa_policy *doc_policy(doc_state *s, const char *path, const char *origin) {
    spa_policy *p = NULL;
    spa_err err = { SPA_OK, NULL, 0 };
    if (path) {
        if (spa_policy_load(path, &p, &err) != SPA_OK) {
            doc_problem(s, "policy %s (%s) is invalid: %s at byte %llu: the preload fails closed "
                        "and blocks every pickle-bearing file until it is fixed", path, origin,
                        err.msg ? err.msg : spa_code_name(err.code), (unsigned long long)err.off);
            return NULL;
        }
        printf("  policy      %s (%s): valid\n", path, origin);
    } else {
        if (spa_policy_default(&p) != SPA_OK) {
            doc_problem(s, "the embedded default policy does not parse (broken build)");
            return NULL;
        }
        printf("  policy      embedded default (%s)\n", origin);
    }
    char note[160];
    spa_err eerr = { SPA_OK, NULL, 0 };
    if (spa_policy_apply_env(p, getenv("SAFEPICKLE_MODE"), getenv("SAFEPICKLE_TARGETS"), note, sizeof note,
                             &eerr) != SPA_OK) {
        doc_problem(s, "%s: the preload fails closed and blocks every pickle-bearing file", eerr.msg);
        spa_policy_free(p);
        return NULL;
    }
    if (note[0]) printf("  note        %s\n", note);
    printf("              name \"%s\", mode %s;", p->name ? p->name : "", spa_mode_name(p->mode));
    for (int v = 0; v < SPA_VERDICT_COUNT; v++)
        printf(" %s->%s", spa_verdict_name((spa_verdict)v), spa_action_name(p->on_verdict[v]));
    printf("\n              audit log: %s; trusted digests: %zu, trusted paths: %zu; targets:",
           p->audit_log ? p->audit_log : "none", p->n_trusted_sha256, p->trusted_paths.n);
    for (size_t i = 0; i < p->targets.n; i++) printf(" %s", p->targets.v[i]);
    if (!p->targets.n) printf(" (none)");
    printf("\n");
    char why[1024];
    if (spa_policy_index_unmet(p, why, sizeof why))
        doc_problem(s, "%s: the preload fails closed and blocks every pickle-bearing file", why);
    else
        printf("  kb index    %s%s\n", spa_kb_index_status(), p->require_index ? " (required by the policy)" : "");
    return p;
}

/* The decompression libraries, which the CLI loads at a scan's first use of
 * each (cli/codecs_dl.c): one that does not load makes every file of its
 * format an error of `scan`, found here before a scan meets one. */
static void doc_codecs(doc_state *s) {
    static const char *const soname[SPC_CODEC_COUNT] = {
#define DOC_SONAME(id, so, name) [id] = so,
        SPC_CODEC_LIBS(DOC_SONAME)
#undef DOC_SONAME
    };
    int ok = 0;
    for (int i = 0; i < SPC_CODEC_COUNT; i++) {
        const char *why = NULL;
        if (spc_codecs_get((spc_codec_id)i, &why)) ok++;
        else doc_problem(s, "%s: every file compressed with it is an error of scan", why);
    }
    if (ok == SPC_CODEC_COUNT) {
        printf("  codecs     ");
        for (int i = 0; i < SPC_CODEC_COUNT; i++) printf(" %s", soname[i]);
        printf(": load\n");
    }
}

/* Run argv with LD_PRELOAD=lib (other variables kept; NULL: LD_PRELOAD removed, so
 * only /etc/ld.so.preload applies); its stderr is captured into err. Returns the
 * exit status, 128+signal, or -1 if it could not start. A child process is the
 * only faithful test: the library uses initial-exec TLS, so it loads at process
 * start but cannot be dlopen'ed later. */
static int doc_probe(const char *lib, char *const argv[], const char *const *extra, char *err,
                     size_t errsz) {
    return prot_spawn(lib, argv, extra, err, errsz, NULL, 0);
}

static void doc_library(doc_state *s, char *lib, size_t n) {
    if (!dep_find_preload(lib, n)) {
        lib[0] = '\0';
        doc_problem(s, "%s not found next to the CLI (%s) nor in %s/../lib/safepickle/",
                    DOC_PRELOAD_NAME, cli_self_dir(), cli_self_dir());
        return;
    }
    printf("  library     %s\n", lib);
    char err[DOC_PROBE_ERR];
    /* 1. a non-Python program: the library must load and stay out of the way */
    char *grep[] = { (char *)DOC_PROBE_OTHER, (char *)"-qF", (char *)"/" DOC_PRELOAD_NAME,
                     (char *)"/proc/self/maps", NULL };
    int rc = access(DOC_PROBE_OTHER, X_OK) == 0 ? doc_probe(lib, grep, NULL, err, sizeof err) : -2;
    if (rc == 0 && !err[0])
        printf("  probe       %s under the preload: loaded, mapped, silent (pass-through)\n", DOC_PROBE_OTHER);
    else if (rc != -2)
        doc_problem(s, "%s under LD_PRELOAD=%s: %s%s", DOC_PROBE_OTHER, lib,
                    rc == 0 ? "wrote to stderr: " : "the library is not mapped or the program failed",
                    rc == 0 ? err : (err[0] ? err : ""));
    /* 2. the probe interpreter: the library is mapped where it matters */
    if (access(DOC_PROBE_PYTHON, X_OK) != 0) {
        printf("  probe       %s not found: skipped\n", DOC_PROBE_PYTHON);
        return;
    }
    char *py[] = { (char *)DOC_PROBE_PYTHON, (char *)"-S", (char *)"-c",
                   (char *)"import sys\n"
                           "m = open('/proc/self/maps').read()\n"
                           "sys.exit(0 if '/" DOC_PRELOAD_NAME "' in m else 3)\n",
                   NULL };
    rc = doc_probe(lib, py, NULL, err, sizeof err);
    if (rc == 0)
        printf("  probe       %s under the preload: library mapped%s%s\n", DOC_PROBE_PYTHON,
               err[0] ? "; it said: " : "", err);
    else if (rc == 3)
        doc_problem(s, "%s started with LD_PRELOAD=%s but the library is not mapped: %s", DOC_PROBE_PYTHON,
                    lib, err);
    else
        doc_problem(s, "%s under the preload failed (status %d): %s", DOC_PROBE_PYTHON, rc, err);
}

/* End to end: a /usr/bin/python3 started under an exact preload value loads a
 * benign protocol-0 pickle and is refused a malicious one, the canary: its
 * payload, builtins.exec, would create a marker file in a fresh temp directory,
 * so "refused" is checked by the load failing AND the marker being absent. The
 * probe also prints which libsafepickle.so ld.so mapped (a bare name resolved as
 * ld.so does). The audit record goes to the probe's stderr, not the user's log. */
#define DOC_GOOD_PICKLE "(lp0\nI1\naI2\na."
#define DOC_CANARY_FMT  "cbuiltins\nexec\n(Vopen('%s', 'w').close()\ntR."
#define DOC_CANARY_CODE                                                                     \
    "import os, pickle, sys\n"                                                              \
    "bad, good, marker = sys.argv[1:4]\n"                                                   \
    "m = [l.split()[-1] for l in open('/proc/self/maps') if l.rstrip().endswith('/" DOC_PRELOAD_NAME "')]\n" \
    "print(m[0] if m else '', flush=True)\n"                                                \
    "if pickle.load(open(good, 'rb')) != [1, 2]: sys.exit(5)\n"                             \
    "try:\n    pickle.load(open(bad, 'rb'))\n"                                              \
    "except PermissionError:\n    sys.exit(6 if os.path.exists(marker) else 0)\n"           \
    "sys.exit(4)\n"

static bool doc_write(const char *path, const char *data) {
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return false;
    size_t n = strlen(data);
    bool ok = write(fd, data, n) == (ssize_t)n;
    return close(fd) == 0 && ok;
}

typedef struct doc_canary {
    int rc;                  /* the probe's status: 0 refused, 4 loaded, ... -1 not run */
    bool marker;             /* the payload ran: the marker exists */
    char mapped[PATH_MAX];   /* the libsafepickle.so ld.so mapped, or "" */
    char err[DOC_PROBE_ERR]; /* the probe's stderr, first line */
} doc_canary;

/* Run the canary under `preload` (an LD_PRELOAD value; NULL: none, so only
 * /etc/ld.so.preload). False (with a line printed) when it could not be run. */
static bool doc_run_canary(const char *preload, doc_canary *c) {
    memset(c, 0, sizeof *c);
    c->rc = -1;
    const char *tmpd = getenv("TMPDIR");
    char dir[PATH_MAX], bad[PATH_MAX], good[PATH_MAX], marker[PATH_MAX], canary[PATH_MAX + 64];
    snprintf(dir, sizeof dir, "%s/safepickle-doctor.XXXXXX", tmpd && *tmpd && !strpbrk(tmpd, "'\\\n") ? tmpd : "/tmp");
    if (!mkdtemp(dir)) { /* e.g. a read-only container without a tmpfs: not a fault of the install */
        printf("  probe       canary skipped: cannot create %s (%s); set TMPDIR to a writable place\n",
               dir, strerror(errno));
        return false;
    }
    bool named = (size_t)snprintf(bad, sizeof bad, "%s/malicious.pkl", dir) < sizeof bad &&
                 (size_t)snprintf(good, sizeof good, "%s/benign.pkl", dir) < sizeof good &&
                 (size_t)snprintf(marker, sizeof marker, "%s/PAYLOAD_RAN", dir) < sizeof marker &&
                 (size_t)snprintf(canary, sizeof canary, DOC_CANARY_FMT, marker) < sizeof canary;
    if (named && doc_write(bad, canary) && doc_write(good, DOC_GOOD_PICKLE)) {
        char *py[] = { (char *)DOC_PROBE_PYTHON, (char *)"-S", (char *)"-c", (char *)DOC_CANARY_CODE,
                       bad, good, marker, NULL };
        static const char *const extra[] = { "SAFEPICKLE_LOG=stderr", NULL };
        c->rc = prot_spawn(preload, py, extra, c->err, sizeof c->err, c->mapped, sizeof c->mapped);
        char *nl = strchr(c->err, '\n');
        if (nl) *nl = '\0';
        c->marker = access(marker, F_OK) == 0;
    } else {
        printf("  probe       canary skipped: cannot write test pickles in %s: %s\n", dir, strerror(errno));
    }
    unlink(bad);
    unlink(good);
    unlink(marker);
    rmdir(dir);
    return c->rc != -1;
}

/* The canary under the library this CLI found (the install's own test). */
static void doc_probe_block(doc_state *s, const char *lib, const spa_policy *pol) {
    if (!lib[0] || access(DOC_PROBE_PYTHON, X_OK) != 0) return;
    doc_canary c;
    if (!doc_run_canary(lib, &c)) return;
    bool enforcing = pol && spa_policy_act(pol, pol->on_verdict[SPA_VERDICT_MALICIOUS]) == SPA_ACT_BLOCK;
    if (c.rc == 0)
        printf("  probe       %s under the preload: benign pickle loaded, malicious one refused\n"
               "              it said: %s\n", DOC_PROBE_PYTHON, c.err[0] ? c.err : "(nothing)");
    else if ((c.rc == 4 || c.rc == 6) && !enforcing)
        printf("  probe       %s under the preload: the malicious test pickle was NOT refused "
               "(the active policy does not block malicious files)\n", DOC_PROBE_PYTHON);
    else if (c.rc == 4 || c.rc == 6)
        doc_problem(s, "%s under the preload loaded a malicious test pickle (builtins.exec%s): "
                    "protection is not working; it said: %s", DOC_PROBE_PYTHON,
                    c.marker ? ", its payload ran" : "", c.err[0] ? c.err : "(nothing)");
    else
        doc_problem(s, "%s under the preload could not load a benign test pickle (status %d): %s",
                    DOC_PROBE_PYTHON, c.rc, c.err);
}

/* Proof for what this environment or machine really preloads: the canary under the
 * exact LD_PRELOAD value (what = "LD_PRELOAD", value set) or under
 * /etc/ld.so.preload alone (what = "/etc/ld.so.preload", value NULL). */
static void doc_prove(doc_state *s, const char *what, const char *value, const char *shown) {
    if (access(DOC_PROBE_PYTHON, X_OK) != 0) {
        doc_problem(s, "%s names %s but %s is missing to prove it: protection unverified", what,
                    DOC_PRELOAD_NAME, DOC_PROBE_PYTHON);
        return;
    }
    doc_canary c;
    if (!doc_run_canary(value, &c)) {
        doc_problem(s, "%s names %s but the canary could not run: protection unverified", what, DOC_PRELOAD_NAME);
        return;
    }
    if (!c.mapped[0])
        doc_problem(s, "%s names %s (%s) but ld.so cannot load it: not protected%s%s", what, DOC_PRELOAD_NAME,
                    shown, c.err[0] ? "; ld.so said: " : "", c.err);
    else if (c.rc == 0)
        printf("  protected   %s (%s): ld.so loads %s; a canary malicious pickle was refused in a "
               "probe %s\n", what, shown, c.mapped, DOC_PROBE_PYTHON);
    else if (c.rc == 4 || c.rc == 6)
        doc_problem(s, "%s: ld.so loads %s but a canary malicious pickle was NOT refused%s: not protected; "
                    "it said: %s", what, c.mapped, c.marker ? " (its payload ran)" : "",
                    c.err[0] ? c.err : "(nothing)");
    else
        doc_problem(s, "%s: ld.so loads %s but the probe %s failed (status %d): %s", what, c.mapped,
                    DOC_PROBE_PYTHON, c.rc, c.err);
}

static bool doc_mentions_preload(const char *v) { return v && strstr(v, DOC_PRELOAD_NAME) != NULL; }

static void doc_environment(doc_state *s) {
    static const char *const over[] = { "SAFEPICKLE_MODE", "SAFEPICKLE_LOG", "SAFEPICKLE_TARGETS" };
    for (size_t i = 0; i < sizeof over / sizeof over[0]; i++) {
        const char *v = getenv(over[i]);
        if (v) printf("  override    %s=%s (overrides the policy)\n", over[i], v);
    }
    const char *mode = getenv("SAFEPICKLE_MODE");
    spa_mode m;
    if (mode && *mode && spa_mode_parse(mode, &m) && m != SPA_MODE_ENFORCE)
        doc_problem(s, "SAFEPICKLE_MODE=%s: processes started from this environment block nothing", mode);
    const char *lp = getenv("LD_PRELOAD");
    printf("  LD_PRELOAD  %s\n", !lp || !*lp ? "not set in this environment"
                                 : doc_mentions_preload(lp) ? lp : "set, without safepickle");
    if (lp && doc_mentions_preload(lp)) doc_prove(s, "LD_PRELOAD", lp, lp);
    size_t len = 0;
    char *etc = dep_read_file("/etc/ld.so.preload", 1u << 16, &len);
    if (!etc) printf("  system-wide /etc/ld.so.preload absent: system-wide mode off\n");
    else {
        bool ours = doc_mentions_preload(etc);
        printf("  system-wide /etc/ld.so.preload %s\n", ours
               ? "names libsafepickle.so: every new process on this machine loads it"
               : "exists, without safepickle");
        if (ours) {
            for (char *q = etc; *q; q++) if (*q == '\n' || *q == '\t') *q = ' ';
            doc_prove(s, "/etc/ld.so.preload", NULL, etc);
        }
        free(etc);
    }
}

/* One kernels/ directory: list kernelspecs whose env preloads safepickle. */
static void doc_kernels_in(doc_state *s, const char *dir, int *found) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[PATH_MAX];
        if ((size_t)snprintf(path, sizeof path, "%s/%s/kernel.json", dir, e->d_name) >= sizeof path)
            continue;
        size_t len = 0;
        char *txt = dep_read_file(path, DOC_MAX_KERNELJSON, &len);
        if (!txt) continue;
        cJSON *j = cJSON_ParseWithLengthOpts(txt, len, NULL, 0);
        free(txt);
        if (!j) continue;
        const cJSON *env = cJSON_GetObjectItemCaseSensitive(j, "env");
        const cJSON *pre = cJSON_GetObjectItemCaseSensitive(env, "LD_PRELOAD");
        const cJSON *pol = cJSON_GetObjectItemCaseSensitive(env, "SAFEPICKLE_POLICY");
        if (cJSON_IsString(pre) && doc_mentions_preload(pre->valuestring)) {
            (*found)++;
            printf("  kernelspec  %s/%s (policy: %s)\n", dir, e->d_name,
                   cJSON_IsString(pol) ? pol->valuestring : "embedded default");
            if (!dep_is_file(pre->valuestring))
                doc_problem(s, "kernelspec %s preloads %s, which does not exist", e->d_name,
                            pre->valuestring);
            /* argv[1] must be the checked launcher: a kernelspec written before it existed
             * starts ipykernel directly and runs unprotected when the library is gone */
            const cJSON *a1 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "argv"), 1);
            const char *tail = "/" DEP_KERNEL_LAUNCHER;
            size_t al = cJSON_IsString(a1) ? strlen(a1->valuestring) : 0;
            if (al < strlen(tail) || strcmp(a1->valuestring + al - strlen(tail), tail) != 0 ||
                !dep_is_file(a1->valuestring))
                doc_problem(s, "kernelspec %s starts without safepickle's protection check (%s is not "
                            "its launcher): it would run unprotected if the library went missing; "
                            "reinstall it with `safepickle jupyter install --name %s`", e->d_name,
                            DEP_KERNEL_LAUNCHER, e->d_name);
            if (cJSON_IsString(pol)) {
                spa_policy *p = NULL;
                spa_err err = { SPA_OK, NULL, 0 };
                if (spa_policy_load(pol->valuestring, &p, &err) != SPA_OK)
                    doc_problem(s, "kernelspec %s: policy %s is invalid: %s at byte %llu", e->d_name,
                                pol->valuestring, err.msg ? err.msg : spa_code_name(err.code),
                                (unsigned long long)err.off);
                spa_policy_free(p);
            }
        }
        cJSON_Delete(j);
    }
    closedir(d);
}

static void doc_kernels(doc_state *s) {
    char buf[PATH_MAX];
    int found = 0;
    const char *jd = getenv("JUPYTER_DATA_DIR"), *xdg = getenv("XDG_DATA_HOME"), *home = getenv("HOME");
    if (jd && *jd && (size_t)snprintf(buf, sizeof buf, "%s/kernels", jd) < sizeof buf)
        doc_kernels_in(s, buf, &found);
    if (xdg && *xdg && (size_t)snprintf(buf, sizeof buf, "%s/jupyter/kernels", xdg) < sizeof buf)
        doc_kernels_in(s, buf, &found);
    else if (home && *home && (size_t)snprintf(buf, sizeof buf, "%s/.local/share/jupyter/kernels",
                                               home) < sizeof buf)
        doc_kernels_in(s, buf, &found);
    doc_kernels_in(s, "/usr/local/share/jupyter/kernels", &found);
    doc_kernels_in(s, "/usr/share/jupyter/kernels", &found);
    if (!found) printf("  jupyter     no kernelspec preloads safepickle (see `safepickle jupyter install`)\n");
}

/* Value of NAME in a NUL-separated environ block, or NULL. */
static const char *doc_env_get(const char *blk, size_t len, const char *name) {
    size_t nl = strlen(name);
    for (size_t i = 0; i < len;) {
        const char *e = blk + i;
        size_t el = strnlen(e, len - i);
        if (el > nl && !strncmp(e, name, nl) && e[nl] == '=') return e + nl + 1;
        i += el + 1;
    }
    return NULL;
}

/* Does process pid run Python? A libpython mapped, or its executable defining
 * CPython's embedding symbols (a renamed or embedding interpreter); the name
 * rule is spa_policy_target's. */
static bool doc_runs_python(long pid, const char *maps) {
    for (const char *l = maps; l && *l;) {
        const char *e = strchr(l, '\n'), *sp = strchr(l, '/');
        size_t ll = e ? (size_t)(e - l) : strlen(l);
        if (sp && sp < l + ll) {
            char path[PATH_MAX];
            size_t pl = (size_t)(l + ll - sp) < sizeof path ? (size_t)(l + ll - sp) : sizeof path - 1;
            memcpy(path, sp, pl);
            path[pl] = '\0';
            if (spa_lib_name_is_python(path)) return true;
        }
        l = e ? e + 1 : NULL;
    }
    char exe[64];
    snprintf(exe, sizeof exe, "/proc/%ld/exe", pid);
    int fd = open(exe, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    struct stat st;
    bool py = false;
    if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
        void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m != MAP_FAILED) {
            py = spa_elf_defines_python(m, (size_t)st.st_size);
            munmap(m, (size_t)st.st_size);
        }
    }
    if (fd >= 0) close(fd);
    return py;
}

static void doc_pid(doc_state *s, long pid);

/* The processes below pid (its children, theirs, ...) that run Python, each
 * checked as if named with --pid. None is not a problem: nothing to protect. */
static void doc_descendants(doc_state *s, long root) {
    long kids[DOC_MAX_DESC], n = 0, found = 0;
    kids[n++] = root;
    for (long i = 0; i < n; i++) {
        DIR *d = opendir("/proc");
        if (!d) return;
        struct dirent *e;
        while ((e = readdir(d)) && n < DOC_MAX_DESC) {
            char *end, path[64], buf[512];
            long p = strtol(e->d_name, &end, 10);
            if (*end || p <= 0) continue;
            snprintf(path, sizeof path, "/proc/%ld/stat", p);
            int fd = open(path, O_RDONLY | O_CLOEXEC);
            if (fd < 0) continue;
            ssize_t r = read(fd, buf, sizeof buf - 1);
            close(fd);
            if (r <= 0) continue;
            buf[r] = '\0';
            const char *rp = strrchr(buf, ')'); /* "pid (comm) state ppid ..." */
            long ppid = -1;
            if (!rp || sscanf(rp + 1, " %*c %ld", &ppid) != 1 || ppid != kids[i]) continue;
            kids[n++] = p;
        }
        closedir(d);
    }
    for (long i = 1; i < n; i++) {
        char path[64];
        size_t len = 0;
        snprintf(path, sizeof path, "/proc/%ld/maps", kids[i]);
        char *maps = dep_read_file(path, DOC_MAX_MAPS, &len);
        char exe[PATH_MAX];
        snprintf(path, sizeof path, "/proc/%ld/exe", kids[i]);
        ssize_t el = readlink(path, exe, sizeof exe - 1);
        exe[el > 0 ? el : 0] = '\0';
        bool py = maps && el > 0 && spa_policy_target(NULL, exe, doc_runs_python(kids[i], maps)) == SPA_TARGET_ACT;
        free(maps);
        if (!py) continue;
        found++;
        printf("              its descendant pid %ld runs Python:\n", kids[i]);
        doc_pid(s, kids[i]);
    }
    if (!found) printf("              no process below pid %ld runs Python now: nothing to protect\n", root);
}

static void doc_pid(doc_state *s, long pid) {
    char path[64], exe[PATH_MAX];
    snprintf(path, sizeof path, "/proc/%ld/exe", pid);
    ssize_t el = readlink(path, exe, sizeof exe - 1);
    if (el < 0) snprintf(exe, sizeof exe, "(exe unreadable: %s)", strerror(errno));
    else exe[el] = '\0';
    snprintf(path, sizeof path, "/proc/%ld/maps", pid);
    size_t len = 0;
    char *maps = dep_read_file(path, DOC_MAX_MAPS, &len);
    if (!maps) { doc_problem(s, "cannot read %s: %s", path, strerror(errno)); return; }
    bool py = doc_runs_python(pid, maps);
    if (el > 0 && spa_policy_target(NULL, exe, py) == SPA_TARGET_NOT_PYTHON) {
        /* e.g. PID 1 is an init (tini, dumb-init): the workload is its descendants */
        printf("  pid %-7ld %s: %s\n", pid, exe, spa_target_name(SPA_TARGET_NOT_PYTHON));
        free(maps);
        doc_descendants(s, pid);
        return;
    }
    char *hit = strstr(maps, "/" DOC_PRELOAD_NAME);
    if (!hit) {
        doc_problem(s, "pid %ld (%s): %s is NOT mapped: the process is unprotected", pid, exe,
                    DOC_PRELOAD_NAME);
        free(maps);
        return;
    }
    char *ls = hit;
    while (ls > maps && ls[-1] != ' ') ls--;
    char *le = strchr(hit, '\n');
    if (le) *le = '\0';
    printf("  pid %-7ld %s: preload mapped from %s\n", pid, exe, ls);
    free(maps);
    snprintf(path, sizeof path, "/proc/%ld/environ", pid);
    char *envb = dep_read_file(path, DOC_MAX_ENVIRON, &len);
    if (!envb) {
        printf("              environment unreadable (%s): its policy is unknown\n", strerror(errno));
        return;
    }
    const char *pol = doc_env_get(envb, len, "SAFEPICKLE_POLICY");
    const char *mode = doc_env_get(envb, len, "SAFEPICKLE_MODE");
    const char *tg = doc_env_get(envb, len, "SAFEPICKLE_TARGETS");
    const char *log = doc_env_get(envb, len, "SAFEPICKLE_LOG");
    printf("              its policy: %s\n", pol && *pol ? pol : "embedded default (SAFEPICKLE_POLICY unset)");
    if (mode) printf("              SAFEPICKLE_MODE=%s\n", mode);
    if (log) printf("              SAFEPICKLE_LOG=%s\n", log);
    spa_mode pm;
    if (mode && *mode && spa_mode_parse(mode, &pm) && pm != SPA_MODE_ENFORCE)
        doc_problem(s, "pid %ld runs with SAFEPICKLE_MODE=%s: nothing is blocked", pid, mode);
    spa_policy *p = NULL;
    spa_err err = { SPA_OK, NULL, 0 };
    if (pol && *pol) {
        if (spa_policy_load(pol, &p, &err) != SPA_OK)
            doc_problem(s, "pid %ld: its policy %s is invalid: %s at byte %llu", pid, pol,
                        err.msg ? err.msg : spa_code_name(err.code), (unsigned long long)err.off);
    } else if (spa_policy_default(&p) != SPA_OK) {
        p = NULL;
    }
    char note[160];
    if (p && spa_policy_apply_env(p, mode, tg, note, sizeof note, &err) != SPA_OK) {
        doc_problem(s, "pid %ld: %s: every pickle-bearing file is refused", pid, err.msg);
        spa_policy_free(p);
        p = NULL;
    } else if (p && note[0]) {
        printf("              %s\n", note);
    }
    if (el > 0) {
        spa_targeting t = spa_policy_target(p, exe, py);
        printf("              %s\n", spa_target_name(t));
        if (t == SPA_TARGET_EXCLUDED)
            doc_problem(s, "pid %ld (%s) runs Python but is not in its policy's targets: it is NOT protected", pid,
                        exe);
    }
    spa_policy_free(p);
    free(envb);
}

static void doc_usage(FILE *f) {
    fprintf(f, "usage: safepickle doctor [--pid PID]\n\n"
               "Reports the CLI; the preload library: found, silent in a non-Python program,\n"
               "mapped in a probe " DOC_PROBE_PYTHON " that loads a benign test pickle and is refused a\n"
               "malicious one; the active policy (SAFEPICKLE_POLICY or the embedded default) and\n"
               "whether it is valid; SAFEPICKLE_* overrides; LD_PRELOAD and /etc/ld.so.preload,\n"
               "each proven when it names the library: a probe started under that exact value must\n"
               "refuse a canary malicious pickle (else: not protected);\n"
               "Jupyter kernelspecs that use safepickle; with --pid, whether the preload is mapped\n"
               "in that process, its policy and whether it is a policy target.\n"
               "Exit status: 0 healthy, 1 a problem was found, 2 usage error.\n");
}

int cmd_doctor(int argc, char **argv) {
    long pid = -1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { doc_usage(stdout); return CLI_EXIT_OK; }
        if (!strcmp(argv[i], "--pid") && i + 1 < argc) {
            char *end;
            errno = 0;
            pid = strtol(argv[++i], &end, 10);
            if (errno || *end || pid <= 0) {
                fprintf(stderr, "safepickle doctor: --pid wants a process id, got '%s'\n", argv[i]);
                return CLI_EXIT_ERROR;
            }
            continue;
        }
        fprintf(stderr, "safepickle doctor: unknown argument '%s'\n", argv[i]);
        doc_usage(stderr);
        return CLI_EXIT_ERROR;
    }
    doc_state s = { 0 };
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    self[n > 0 ? n : 0] = '\0';
    printf("safepickle doctor\n  cli         %s (version %s)\n", self, SPA_VERSION);
    char lib[PATH_MAX] = "";
    doc_library(&s, lib, sizeof lib);
    doc_codecs(&s);
    const char *envpol = getenv("SAFEPICKLE_POLICY");
    spa_policy *pol = envpol && *envpol ? doc_policy(&s, envpol, "from SAFEPICKLE_POLICY")
                                        : doc_policy(&s, NULL, "SAFEPICKLE_POLICY unset");
    doc_probe_block(&s, lib, pol);
    doc_environment(&s);
    doc_kernels(&s);
    if (pid > 0) doc_pid(&s, pid);
    spa_policy_free(pol);
    if (s.problems) printf("status: %d problem%s found\n", s.problems, s.problems == 1 ? "" : "s");
    else printf("status: ok\n");
    fflush(stdout);
    return s.problems ? 1 : CLI_EXIT_OK; /* 1: a problem was found */
}
