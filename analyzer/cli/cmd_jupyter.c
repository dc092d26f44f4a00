/* cmd_jupyter.c - `safepickle jupyter install|uninstall`: writes (or removes)
 * a Jupyter kernelspec that runs the normal IPython kernel
 * (PYTHON -m ipykernel_launcher -f {connection_file}) with LD_PRELOAD and,
 * when asked, SAFEPICKLE_POLICY in its environment. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "deploy.h"
#include "protect.h"

extern char **environ;

/* Named limits and defaults of this file. */
#define JUP_NAME_MAX        64          /* characters of a kernel name */
#define JUP_DEFAULT_NAME    "python3-safepickle"
#define JUP_DEFAULT_DISPLAY "Python 3 (safepickle)"
#define JUP_DEFAULT_PYTHON  "/usr/bin/python3"
#define JUP_MAX_KERNELJSON  (1u << 20)  /* bytes of an existing kernel.json read */
#define JUP_MAX_LOGO        (1u << 20)  /* bytes of one logo file copied */
#define JUP_HOOK_FILE       "safepickle_hook.py" /* the exception handler, next to kernel.json */
#define JUP_LAUNCH_FILE     DEP_KERNEL_LAUNCHER /* the checked kernel launcher, next to kernel.json */

typedef enum { JUP_USER = 0, JUP_SYS_PREFIX, JUP_PREFIX } jup_where;

typedef struct jup_opts {
    const char *name, *display, *policy, *python, *prefix, *log;
    jup_where where;
    bool force, all, display_set;
} jup_opts;

static void jup_usage(FILE *f) {
    fprintf(f,
        "usage: safepickle jupyter install [--name N] [--display-name D] [--policy P] [--log DEST]\n"
        "                                  [--python PY] [--user|--sys-prefix|--prefix DIR] [--force]\n"
        "       safepickle jupyter uninstall [--name N | --all] [--user|--sys-prefix|--prefix DIR] [--force]\n"
        "       safepickle jupyter why FILE\n\n"
        "install writes kernels/N/kernel.json (default N: " JUP_DEFAULT_NAME ") that starts\n"
        "  PY -m ipykernel_launcher -f {connection_file}   (default PY: " JUP_DEFAULT_PYTHON ")\n"
        "with LD_PRELOAD=<absolute path of libsafepickle.so> and, with --policy, SAFEPICKLE_POLICY\n"
        "(a path, or a shipped policy name such as 'strict'); without --policy the kernel uses the\n"
        "embedded default policy. --log sets SAFEPICKLE_LOG (a file of JSON lines, stderr, or\n"
        "stdout): audit records otherwise follow the policy (the default: stderr, i.e. the cell).\n"
        "Where:\n"
        "  --user        $JUPYTER_DATA_DIR, else $XDG_DATA_HOME/jupyter, else ~/.local/share/jupyter (default)\n"
        "  --sys-prefix  <sys.prefix of PY>/share/jupyter\n"
        "  --prefix DIR  DIR/share/jupyter\n"
        "An existing kernelspec of that name that does not use safepickle is kept unless --force.\n"
        "The display name is \"" JUP_DEFAULT_DISPLAY "\", or \"Python 3 (safepickle: N)\" for another --name.\n"
        "The kernel starts through " JUP_LAUNCH_FILE " (next to kernel.json): it checks that the\n"
        "preload is loaded and a canary malicious pickle is refused (only the former under a policy\n"
        "that does not block); otherwise the kernel runs no code and every cell shows why.\n"
        "install writes nothing (exit 2) when ld.so would not load the library or PY cannot be\n"
        "protected (see `safepickle run --help`).\n"
        "uninstall --all removes every kernelspec that preloads safepickle from the location given,\n"
        "or else from the user's data dir, $JUPYTER_PATH, PY's sys.prefix, /usr/local/share/jupyter\n"
        "and /usr/share/jupyter.\n"
        "The kernel also runs " JUP_HOOK_FILE " (IPKernelApp.exec_lines), an exception handler: a cell\n"
        "that fails with PermissionError on a file safepickle blocked shows the reason in its\n"
        "error, from `why`, which prints the preload's reason for FILE under this environment's\n"
        "policy (exit 0 if it is blocked, 1 if not).\n");
}

static int jup_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int jup_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "safepickle jupyter: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return CLI_EXIT_ERROR;
}

static bool jup_name_ok(const char *n) {
    size_t l = strlen(n);
    if (!l || l > JUP_NAME_MAX || n[0] == '.') return false;
    for (size_t i = 0; i < l; i++) {
        char c = n[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* Run PY -c CODE, capture up to outsz-1 bytes of its stdout into out.
 * Returns the exit status (or -1 if it could not run). */
static int jup_run_python(const char *py, const char *code, char *out, size_t outsz) {
    int fds[2];
    if (pipe(fds) != 0) return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    char *argv[] = { (char *)py, (char *)"-c", (char *)code, NULL };
    pid_t pid;
    int rc = posix_spawn(&pid, py, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    if (rc != 0) { close(fds[0]); return -1; }
    size_t used = 0;
    for (;;) {
        char tmp[512];
        ssize_t r = read(fds[0], tmp, sizeof tmp);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        size_t take = (size_t)r;
        if (outsz && used + take > outsz - 1) take = outsz - 1 - used;
        if (out) memcpy(out + used, tmp, take);
        used += take;
    }
    if (out && outsz) {
        out[used] = '\0';
        while (used && (out[used - 1] == '\n' || out[used - 1] == '\r')) out[--used] = '\0';
    }
    close(fds[0]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The kernels/ directory for the chosen location, into buf. */
static int jup_kernels_dir(const jup_opts *o, char *buf, size_t n) {
    const char *base = NULL, *suffix = "";
    char tmp[PATH_MAX];
    switch (o->where) {
    case JUP_USER: {
        const char *jd = getenv("JUPYTER_DATA_DIR"), *xdg = getenv("XDG_DATA_HOME");
        const char *home = getenv("HOME");
        if (jd && *jd) base = jd;
        else if (xdg && *xdg) { base = xdg; suffix = "/jupyter"; }
        else if (home && *home) { base = home; suffix = "/.local/share/jupyter"; }
        else return jup_fail("--user: neither JUPYTER_DATA_DIR, XDG_DATA_HOME nor HOME is set");
        break;
    }
    case JUP_SYS_PREFIX:
        if (jup_run_python(o->python, "import sys; print(sys.prefix)", tmp, sizeof tmp) != 0 || !tmp[0])
            return jup_fail("--sys-prefix: cannot ask %s for its sys.prefix", o->python);
        base = tmp; suffix = "/share/jupyter";
        break;
    case JUP_PREFIX:
        base = o->prefix; suffix = "/share/jupyter";
        break;
    }
    if ((size_t)snprintf(buf, n, "%s%s/kernels", base, suffix) >= n) return jup_fail("path too long");
    return CLI_EXIT_OK;
}

static int jup_mkdirs(char *path) {
    for (char *p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        int r = mkdir(path, 0755);
        *p = '/';
        if (r != 0 && errno != EEXIST) return -1;
    }
    return mkdir(path, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

/* 1 if dir/kernel.json exists and preloads safepickle, 0 if it exists
 * without it, -1 if there is none. */
static int jup_existing(const char *kdir) {
    char path[PATH_MAX];
    if ((size_t)snprintf(path, sizeof path, "%s/kernel.json", kdir) >= sizeof path) return -1;
    size_t len = 0;
    char *txt = dep_read_file(path, JUP_MAX_KERNELJSON, &len);
    if (!txt) return errno == ENOENT ? -1 : 0;
    cJSON *j = cJSON_ParseWithLengthOpts(txt, len, NULL, 0);
    free(txt);
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "env"),
                                                        "LD_PRELOAD");
    int ours = cJSON_IsString(pre) && strstr(pre->valuestring, "libsafepickle") != NULL;
    cJSON_Delete(j);
    return ours;
}

/* jupyter_client expands $VAR in kernelspec env values (string.Template):
 * double every '$' so a path is taken literally. Returns a malloc'd string. */
static char *jup_env_escape(const char *s) {
    size_t n = strlen(s), d = 0;
    for (size_t i = 0; i < n; i++) d += s[i] == '$';
    char *o = malloc(n + d + 1);
    if (!o) return NULL;
    char *w = o;
    for (size_t i = 0; i < n; i++) { if (s[i] == '$') *w++ = '$'; *w++ = s[i]; }
    *w = '\0';
    return o;
}

/* The kernel's logos, copied from ipykernel's resources so the launcher shows
 * the usual Python icon (best effort: a missing logo is not an error). */
static const char *const jup_logos[] = { "logo-32x32.png", "logo-64x64.png", "logo-svg.svg" };

static void jup_copy_logos(const char *resdir, const char *kdir) {
    for (size_t i = 0; i < sizeof jup_logos / sizeof jup_logos[0]; i++) {
        char src[PATH_MAX], dst[PATH_MAX];
        if ((size_t)snprintf(src, sizeof src, "%s/%s", resdir, jup_logos[i]) >= sizeof src ||
            (size_t)snprintf(dst, sizeof dst, "%s/%s", kdir, jup_logos[i]) >= sizeof dst)
            continue;
        size_t len = 0;
        char *data = dep_read_file(src, JUP_MAX_LOGO, &len);
        if (!data) continue;
        if (dep_write_atomic(dst, data, len, 0644) != 0)
            fprintf(stderr, "safepickle jupyter: note: cannot copy %s: %s\n", jup_logos[i], strerror(errno));
        free(data);
    }
}

/* Python run by the kernel at start (IPKernelApp.exec_lines): when a cell ends with an
 * uncaught PermissionError naming a file, ask `safepickle jupyter why FILE` (same analyzer,
 * same policy as the preload) and, if safepickle blocked it, put the reason into the
 * exception's message, so the cell's error says why. Leaves no names in the user namespace;
 * an error already carrying a safepickle message (a layer that raises it) is left as is. */
static const char jup_hook_fmt[] =
    "def _safepickle_hook():\n"
    "    import os, subprocess\n"
    "    cli = %s\n"
    "    def handler(shell, etype, value, tb, tb_offset=None):\n"
    "        try:\n"
    "            fn = getattr(value, 'filename', None)\n"
    "            if fn is not None and 'safepickle' not in str(value):\n"
    "                r = subprocess.run([cli, 'jupyter', 'why', os.fsdecode(fn)], capture_output=True,\n"
    "                                   text=True, timeout=300, env=dict(os.environ, LD_PRELOAD=''))\n"
    "                if r.returncode == 0 and r.stdout.strip():\n"
    "                    value.strerror = '%%s: %%s' %% (value.strerror, r.stdout.strip())\n"
    "        except Exception:\n"
    "            pass\n"
    "        shell.showtraceback((etype, value, tb), tb_offset=tb_offset)\n"
    "    get_ipython().set_custom_exc((PermissionError,), handler)\n"
    "_safepickle_hook()\n"
    "del _safepickle_hook\n";

/* Write the hook (with this CLI's absolute path as a Python literal) to kdir/JUP_HOOK_FILE
 * and return the short argument that runs it: "--IPKernelApp.exec_lines=exec(...)". */
static char *jup_hook_arg(const char *kdir) {
    char self[PATH_MAX], path[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return NULL;
    self[n] = '\0';
    if ((size_t)snprintf(path, sizeof path, "%s/" JUP_HOOK_FILE, kdir) >= sizeof path) return NULL;
    cJSON *a = cJSON_CreateString(self), *b = cJSON_CreateString(path);
    char *qs = a ? cJSON_PrintUnformatted(a) : NULL; /* a JSON string is a valid Python str literal */
    char *qp = b ? cJSON_PrintUnformatted(b) : NULL;
    cJSON_Delete(a);
    cJSON_Delete(b);
    char *src = NULL, *arg = NULL;
    if (qs && qp) {
        size_t need = sizeof jup_hook_fmt + strlen(qs);
        src = malloc(need);
        if (src) snprintf(src, need, jup_hook_fmt, qs);
        need = strlen(qp) * 2 + 96;
        arg = malloc(need);
        if (arg) snprintf(arg, need, "--IPKernelApp.exec_lines=exec(compile(open(%s).read(), %s, 'exec'))", qp, qp);
    }
    if (!src || !arg || dep_write_atomic(path, src, strlen(src), 0644) != 0) { free(arg); arg = NULL; }
    free(src);
    free(qs);
    free(qp);
    return arg;
}

/* The kernel's entry point (argv[1] of kernel.json): checks in the kernel process that the
 * preload is mapped and, when the policy blocks malicious files, that a canary malicious
 * pickle is refused; starts ipykernel only then. Otherwise it starts a kernel that runs no
 * code (no startup files, exec_lines or extensions either) and answers every cell with the
 * reason, so the notebook shows it. Two %s: the kernel name and EXPECT_BLOCK, as Python
 * literals. The text is kept free of other '%' signs. */
static const char jup_launch_fmt[] =
    "# safepickle_kernel.py - written by `safepickle jupyter install` next to kernel.json.\n"
    "# Starts the IPython kernel only when safepickle protects this process: the preload is\n"
    "# mapped and a canary malicious pickle (its payload would create a file in a fresh temp\n"
    "# dir) is refused. Otherwise it starts a kernel that runs no code and says why in every cell.\n"
    "import os\n"
    "import sys\n"
    "import tempfile\n"
    "\n"
    "NAME = %s\n"
    "EXPECT_BLOCK = %s\n"
    "HERE = os.path.dirname(os.path.abspath(__file__))\n"
    "sys.path[:] = [p for p in sys.path if os.path.abspath(p or \".\") != HERE]\n"
    "\n"
    "\n"
    "def _problem():\n"
    "    with open(\"/proc/self/maps\") as f:\n"
    "        maps = [ln.split()[-1] for ln in f if ln.rstrip().endswith(\"/libsafepickle.so\")]\n"
    "    if not maps:\n"
    "        return (\"LD_PRELOAD=\" + os.environ.get(\"LD_PRELOAD\", \"\") + \" was not loaded into this kernel \"\n"
    "                \"(the library is missing or was uninstalled)\")\n"
    "    if not EXPECT_BLOCK:\n"
    "        return None\n"
    "    import pickle\n"
    "    d = tempfile.mkdtemp(prefix=\"safepickle-kernel-check.\")\n"
    "    bad, marker = os.path.join(d, \"canary.pkl\"), os.path.join(d, \"PAYLOAD_RAN\")\n"
    "    try:\n"
    "        with open(bad, \"wb\") as f:\n"
    "            f.write((\"cbuiltins\\nexec\\n(Vopen(\" + repr(marker) + \", 'w').close()\\ntR.\").encode())\n"
    "        try:\n"
    "            with open(bad, \"rb\") as f:\n"
    "                pickle.load(f)\n"
    "        except PermissionError:\n"
    "            if not os.path.exists(marker):\n"
    "                return None\n"
    "        return (\"the preload (\" + maps[0] + \") is loaded but a canary malicious pickle was not refused: \"\n"
    "                \"its policy is not in force (SAFEPICKLE_POLICY=\" + os.environ.get(\"SAFEPICKLE_POLICY\", \"\") +\n"
    "                \", SAFEPICKLE_MODE=\" + os.environ.get(\"SAFEPICKLE_MODE\", \"\") + \")\")\n"
    "    finally:\n"
    "        for p in (bad, marker):\n"
    "            try:\n"
    "                os.unlink(p)\n"
    "            except OSError:\n"
    "                pass\n"
    "        os.rmdir(d)\n"
    "\n"
    "\n"
    "try:\n"
    "    PROBLEM = _problem()\n"
    "except Exception as e:  # a check that cannot run is not a pass\n"
    "    PROBLEM = \"the protection check failed: \" + repr(e)\n"
    "\n"
    "if PROBLEM is None:\n"
    "    from ipykernel import kernelapp\n"
    "    kernelapp.launch_new_instance()\n"
    "else:\n"
    "    MSG = (\"safepickle: this kernel is NOT protected: \" + PROBLEM + \". It runs no code. Check the install \"\n"
    "           \"with `safepickle doctor`, or remove the kernel: safepickle jupyter uninstall --name \" + NAME)\n"
    "    sys.stderr.write(MSG + \"\\n\")\n"
    "    sys.stderr.flush()\n"
    "    from ipykernel.ipkernel import IPythonKernel\n"
    "    from ipykernel.kernelapp import IPKernelApp\n"
    "\n"
    "    class SafePickleUnprotectedKernel(IPythonKernel):\n"
    "        def do_execute(self, code, silent, store_history=True, user_expressions=None, allow_stdin=False,\n"
    "                       **kw):\n"
    "            err = {\"ename\": \"SafePickleUnprotected\", \"evalue\": MSG, \"traceback\": [MSG]}\n"
    "            self.send_response(self.iopub_socket, \"error\", err)\n"
    "            return dict(err, status=\"error\", execution_count=self.execution_count)\n"
    "\n"
    "    class SafePickleUnprotectedApp(IPKernelApp):\n"
    "        def init_code(self):  # no startup files, exec_lines or extensions: no code runs\n"
    "            pass\n"
    "\n"
    "        def init_extensions(self):\n"
    "            pass\n"
    "\n"
    "    SafePickleUnprotectedApp.launch_instance(kernel_class=SafePickleUnprotectedKernel)\n";

/* Write kdir/JUP_LAUNCH_FILE; its path into out. 0 or -1 (errno). */
static int jup_write_launcher(const char *kdir, const char *name, bool expect_block, char *out, size_t n) {
    if ((size_t)snprintf(out, n, "%s/" JUP_LAUNCH_FILE, kdir) >= n) { errno = ENAMETOOLONG; return -1; }
    cJSON *a = cJSON_CreateString(name);
    char *qn = a ? cJSON_PrintUnformatted(a) : NULL; /* a JSON string is a valid Python str literal */
    cJSON_Delete(a);
    if (!qn) { errno = ENOMEM; return -1; }
    size_t need = sizeof jup_launch_fmt + strlen(qn) + 8;
    char *src = malloc(need);
    int rc = -1;
    if (src) {
        snprintf(src, need, jup_launch_fmt, qn, expect_block ? "True" : "False");
        rc = dep_write_atomic(out, src, strlen(src), 0644);
    } else {
        errno = ENOMEM;
    }
    free(src);
    free(qn);
    return rc;
}

/* ------------------------------------------------------------------ why */
/* `safepickle jupyter why FILE`: one line, in the preload's format, when the policy in
 * this environment (SAFEPICKLE_POLICY, SAFEPICKLE_MODE) blocks FILE; exit 1 otherwise. */
static int jup_why(const char *path) {
    const char *pp = getenv("SAFEPICKLE_POLICY");
    spa_policy *pol = NULL;
    spa_err err = { SPA_OK, NULL, 0 }, perr = { SPA_OK, NULL, 0 };
    bool broken = false;
    if (pp && *pp) broken = spa_policy_load(pp, &pol, &perr) != SPA_OK;
    else if (spa_policy_default(&pol) != SPA_OK) return jup_fail("the embedded default policy does not parse");
    /* the preload's own overrides (policy.c): a bad value is as broken as a bad file */
    if (pol && spa_policy_apply_env(pol, getenv("SAFEPICKLE_MODE"), getenv("SAFEPICKLE_TARGETS"), NULL, 0,
                                    &perr) != SPA_OK) {
        spa_policy_free(pol);
        pol = NULL;
        broken = true;
        pp = "from the environment";
    }
    spa_scan_opts o;
    spa_scan_opts_default(&o);
    if (pol) o.limits = pol->limits;
    o.name = path;
    spa_result *r = NULL;
    int rc = 1;
    if (spa_scan_path(&o, path, &r, &err) == SPA_OK && r->pickle_bearing) {
        if (broken) { /* the preload fails closed on every pickle-bearing file */
            printf("safepickle: blocked %s: policy %s is invalid (%s at byte %llu): every pickle is "
                   "blocked until it is fixed\n", path, pp, perr.msg ? perr.msg : "error",
                   (unsigned long long)perr.off);
            rc = CLI_EXIT_OK;
        } else if (spa_classify(r, pol) == SPA_OK && spa_policy_decide(pol, r) == SPA_ACT_BLOCK) {
            const spa_reason *d = NULL;
            for (size_t i = 0; i < r->n_reasons; i++)
                if (!d || r->reasons[i].severity > d->severity) d = &r->reasons[i];
            printf("safepickle: blocked %s: %s: %s [rule %s] (policy %s)\n", path,
                   spa_verdict_name(r->verdict), d && d->msg ? d->msg : "no reason given",
                   d && d->rule ? d->rule : "?", pol->name ? pol->name : "?");
            rc = CLI_EXIT_OK;
        }
    }
    spa_result_free(r);
    spa_policy_free(pol);
    return rc;
}

static int jup_install(const jup_opts *o) {
    if (access(o->python, X_OK) != 0)
        return jup_fail("interpreter %s: %s", o->python, strerror(errno));
    char res[PATH_MAX];
    if (jup_run_python(o->python, "import importlib.util, os, sys\n"
                                  "s = importlib.util.find_spec('ipykernel')\n"
                                  "if not s or not importlib.util.find_spec('ipykernel_launcher'): sys.exit(1)\n"
                                  "print(os.path.join(os.path.dirname(s.origin), 'resources'))",
                       res, sizeof res) != 0)
        return jup_fail("%s cannot import ipykernel (Debian: apt-get install python3-ipykernel)",
                        o->python);
    char lib[PATH_MAX];
    if (!dep_find_preload(lib, sizeof lib))
        return jup_fail("libsafepickle.so not found next to this CLI (%s) nor in ../lib/safepickle/; "
                        "build it or run the installed safepickle", cli_self_dir());
    char why[PATH_MAX + 256];
    if (!prot_preload_loads(lib, why, sizeof why) || !prot_exec_check(o->python, why, sizeof why))
        return jup_fail("a kernel started with LD_PRELOAD=%s would not be protected: %s; no kernelspec "
                        "written", lib, why);
    char pol[PATH_MAX];
    bool expect_block = true;
    if (o->policy) {
        if (!dep_resolve_policy(o->policy, pol, sizeof pol))
            return jup_fail("policy '%s': %s", o->policy, strerror(errno));
        spa_policy *p = NULL;
        spa_err err = { SPA_OK, NULL, 0 };
        if (spa_policy_load(pol, &p, &err) != SPA_OK)
            return jup_fail("policy %s is invalid: %s at byte %llu (a kernel with it would block "
                            "every pickle)", pol, err.msg ? err.msg : spa_code_name(err.code),
                            (unsigned long long)err.off);
        /* an audit policy reports the kernel's canary instead of refusing it: then the kernel
         * only checks that the preload is mapped */
        expect_block = p->mode == SPA_MODE_ENFORCE && p->on_verdict[SPA_VERDICT_MALICIOUS] == SPA_ACT_BLOCK;
        spa_policy_free(p);
    }
    char kdir[PATH_MAX];
    if (jup_kernels_dir(o, kdir, sizeof kdir) != CLI_EXIT_OK) return CLI_EXIT_ERROR;
    size_t kl = strlen(kdir);
    if ((size_t)snprintf(kdir + kl, sizeof kdir - kl, "/%s", o->name) >= sizeof kdir - kl)
        return jup_fail("path too long");
    if (jup_existing(kdir) == 0 && !o->force)
        return jup_fail("%s/kernel.json exists and does not use safepickle; pick another --name or "
                        "pass --force to replace it", kdir);
    if (jup_mkdirs(kdir) != 0) return jup_fail("cannot create %s: %s", kdir, strerror(errno));

    cJSON *j = cJSON_CreateObject(), *argv = cJSON_AddArrayToObject(j, "argv");
    char *hook = jup_hook_arg(kdir);
    if (!hook) { cJSON_Delete(j); return jup_fail("cannot write %s/" JUP_HOOK_FILE ": %s", kdir, strerror(errno)); }
    char launch[PATH_MAX];
    if (jup_write_launcher(kdir, o->name, expect_block, launch, sizeof launch) != 0) {
        int e = errno;
        free(hook);
        cJSON_Delete(j);
        return jup_fail("cannot write %s/" JUP_LAUNCH_FILE ": %s", kdir, strerror(e));
    }
    const char *args[] = { o->python, launch, "-f", "{connection_file}", hook };
    for (size_t i = 0; i < sizeof args / sizeof args[0]; i++)
        cJSON_AddItemToArray(argv, cJSON_CreateString(args[i]));
    free(hook);
    char display[JUP_NAME_MAX + 64];
    if (!o->display_set && strcmp(o->name, JUP_DEFAULT_NAME) != 0) /* one display name per kernel */
        snprintf(display, sizeof display, "Python 3 (safepickle: %s)", o->name);
    else
        snprintf(display, sizeof display, "%s", o->display);
    cJSON_AddStringToObject(j, "display_name", display);
    cJSON_AddStringToObject(j, "language", "python");
    cJSON_AddStringToObject(j, "interrupt_mode", "signal");
    cJSON *env = cJSON_AddObjectToObject(j, "env");
    char *elib = jup_env_escape(lib), *epol = o->policy ? jup_env_escape(pol) : NULL;
    cJSON_AddStringToObject(env, "LD_PRELOAD", elib ? elib : "");
    if (o->policy) cJSON_AddStringToObject(env, "SAFEPICKLE_POLICY", epol ? epol : "");
    if (o->log) cJSON_AddStringToObject(env, "SAFEPICKLE_LOG", o->log);
    cJSON *meta = cJSON_AddObjectToObject(cJSON_AddObjectToObject(j, "metadata"), "safepickle");
    cJSON_AddStringToObject(meta, "version", SPA_VERSION);
    cJSON_AddStringToObject(meta, "policy", o->policy ? pol : "embedded default");
    char *txt = cJSON_Print(j);
    cJSON_Delete(j);
    bool oom = !elib || (o->policy && !epol) || !txt;
    free(elib);
    free(epol);
    if (oom) { free(txt); return jup_fail("out of memory"); }
    char path[PATH_MAX];
    if ((size_t)snprintf(path, sizeof path, "%s/kernel.json", kdir) >= sizeof path) {
        free(txt);
        return jup_fail("path too long");
    }
    size_t tl = strlen(txt);
    txt[tl] = '\n'; /* replaces the NUL: written with its length */
    int wr = dep_write_atomic(path, txt, tl + 1, 0644);
    int e = errno;
    free(txt);
    if (wr != 0) return jup_fail("cannot write %s: %s", path, strerror(e));
    jup_copy_logos(res, kdir);
    printf("installed kernelspec '%s' in %s\n  %s " JUP_LAUNCH_FILE " (checks protection, then ipykernel), LD_PRELOAD=%s\n  policy: %s\n"
           "select \"%s\" as the notebook's kernel; `safepickle doctor` lists it.\n",
           o->name, kdir, o->python, lib, o->policy ? pol : "embedded default", display);
    return CLI_EXIT_OK;
}

/* Remove the kernelspec directory kdir (kernel.json, our files, then the directory). */
static int jup_remove(const char *kdir, const char *name) {
    char path[PATH_MAX];
    if ((size_t)snprintf(path, sizeof path, "%s/kernel.json", kdir) >= sizeof path)
        return jup_fail("path too long");
    if (unlink(path) != 0) return jup_fail("cannot remove %s: %s", path, strerror(errno));
    static const char *const ours[] = { JUP_HOOK_FILE, JUP_LAUNCH_FILE };
    size_t nl = sizeof jup_logos / sizeof jup_logos[0];
    for (size_t i = 0; i < nl + 2; i++) {
        const char *f = i < nl ? jup_logos[i] : ours[i - nl];
        char other[PATH_MAX];
        if ((size_t)snprintf(other, sizeof other, "%s/%s", kdir, f) < sizeof other) unlink(other);
    }
    if (rmdir(kdir) != 0)
        printf("removed %s; %s kept (it holds other files: %s)\n", path, kdir, strerror(errno));
    else
        printf("removed kernelspec '%s' (%s)\n", name, kdir);
    return CLI_EXIT_OK;
}

/* --all in one kernels/ directory: every kernelspec that preloads safepickle. */
static int jup_remove_all_in(const char *kernels, int *found) {
    DIR *d = opendir(kernels);
    if (!d) return CLI_EXIT_OK;
    int rc = CLI_EXIT_OK;
    struct dirent *e;
    while ((e = readdir(d))) {
        char kdir[PATH_MAX];
        if (e->d_name[0] == '.' || (size_t)snprintf(kdir, sizeof kdir, "%s/%s", kernels, e->d_name) >= sizeof kdir)
            continue;
        if (jup_existing(kdir) != 1) continue;
        (*found)++;
        if (jup_remove(kdir, e->d_name) != CLI_EXIT_OK) rc = CLI_EXIT_ERROR;
    }
    closedir(d);
    return rc;
}

/* uninstall --all: the chosen location, or else every place Jupyter looks: the user's data
 * dir, each $JUPYTER_PATH entry, PY's sys.prefix, /usr/local/share and /usr/share. */
static int jup_uninstall_all(const jup_opts *o, bool where_given) {
    int found = 0, rc = CLI_EXIT_OK;
    char dir[PATH_MAX];
    if (where_given) {
        if (jup_kernels_dir(o, dir, sizeof dir) != CLI_EXIT_OK) return CLI_EXIT_ERROR;
        rc = jup_remove_all_in(dir, &found);
    } else {
        jup_opts u = *o;
        u.where = JUP_USER;
        if (jup_kernels_dir(&u, dir, sizeof dir) == CLI_EXIT_OK) rc |= jup_remove_all_in(dir, &found);
        const char *jp = getenv("JUPYTER_PATH");
        for (const char *p = jp; p && *p;) {
            size_t l = strcspn(p, ":");
            if (l && (size_t)snprintf(dir, sizeof dir, "%.*s/kernels", (int)l, p) < sizeof dir)
                rc |= jup_remove_all_in(dir, &found);
            p += l + (p[l] == ':');
        }
        u.where = JUP_SYS_PREFIX;
        if (access(o->python, X_OK) == 0 && jup_kernels_dir(&u, dir, sizeof dir) == CLI_EXIT_OK)
            rc |= jup_remove_all_in(dir, &found);
        rc |= jup_remove_all_in("/usr/local/share/jupyter/kernels", &found);
        rc |= jup_remove_all_in("/usr/share/jupyter/kernels", &found);
    }
    if (!found) printf("no safepickle kernelspec found%s%s\n", where_given ? " in " : "", where_given ? dir : "");
    return rc ? CLI_EXIT_ERROR : CLI_EXIT_OK;
}

static int jup_uninstall(const jup_opts *o) {
    char kdir[PATH_MAX];
    if (jup_kernels_dir(o, kdir, sizeof kdir) != CLI_EXIT_OK) return CLI_EXIT_ERROR;
    size_t kl = strlen(kdir);
    if ((size_t)snprintf(kdir + kl, sizeof kdir - kl, "/%s", o->name) >= sizeof kdir - kl)
        return jup_fail("path too long");
    int ex = jup_existing(kdir);
    if (ex < 0) return jup_fail("no kernelspec '%s' in %.*s", o->name, (int)kl, kdir);
    if (ex == 0 && !o->force)
        return jup_fail("%s does not use safepickle; not removing it without --force", kdir);
    return jup_remove(kdir, o->name);
}

int cmd_jupyter(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        jup_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_EXIT_ERROR : CLI_EXIT_OK;
    }
    const char *sub = argv[1];
    if (!strcmp(sub, "why")) {
        if (argc != 3) { jup_usage(stderr); return CLI_EXIT_ERROR; }
        return jup_why(argv[2]);
    }
    bool inst = !strcmp(sub, "install");
    if (!inst && strcmp(sub, "uninstall") != 0) {
        fprintf(stderr, "safepickle jupyter: unknown subcommand '%s'\n", sub);
        jup_usage(stderr);
        return CLI_EXIT_ERROR;
    }
    jup_opts o = { JUP_DEFAULT_NAME, JUP_DEFAULT_DISPLAY, NULL, JUP_DEFAULT_PYTHON, NULL, NULL, JUP_USER,
                   false, false, false };
    int nwhere = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        bool more = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { jup_usage(stdout); return CLI_EXIT_OK; }
        else if (!strcmp(a, "--name") && more) o.name = argv[++i];
        else if (!strcmp(a, "--display-name") && more && inst) { o.display = argv[++i]; o.display_set = true; }
        else if (!strcmp(a, "--all") && !inst) o.all = true;
        else if (!strcmp(a, "--policy") && more && inst) o.policy = argv[++i];
        else if (!strcmp(a, "--log") && more && inst) o.log = argv[++i];
        else if (!strcmp(a, "--python") && more) o.python = argv[++i];
        else if (!strcmp(a, "--user")) { o.where = JUP_USER; nwhere++; }
        else if (!strcmp(a, "--sys-prefix")) { o.where = JUP_SYS_PREFIX; nwhere++; }
        else if (!strcmp(a, "--prefix") && more) { o.where = JUP_PREFIX; o.prefix = argv[++i]; nwhere++; }
        else if (!strcmp(a, "--force")) o.force = true;
        else {
            fprintf(stderr, "safepickle jupyter %s: unknown or incomplete argument '%s'\n", sub, a);
            jup_usage(stderr);
            return CLI_EXIT_ERROR;
        }
    }
    if (nwhere > 1) return jup_fail("choose one of --user, --sys-prefix, --prefix DIR");
    if (!jup_name_ok(o.name))
        return jup_fail("kernel name '%s': use 1-%d letters, digits, '.', '_' or '-'", o.name, JUP_NAME_MAX);
    if (o.python[0] != '/') return jup_fail("--python wants an absolute path, got '%s'", o.python);
    if (o.all) return jup_uninstall_all(&o, nwhere > 0);
    return inst ? jup_install(&o) : jup_uninstall(&o);
}
