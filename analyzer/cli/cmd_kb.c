/* cmd_kb.c - `safepickle kb index [--python PY] [--out FILE] [--depth N]` builds the
 * environment index (a KB overlay, see analyzer/README.md) by running the embedded
 * analyzer/cli/kbindex.py with the target interpreter (ast only: nothing is imported or
 * executed from the packages it reads); `safepickle kb status` says which index is loaded. */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "kb.h"
#include "sha256.h"

extern const char cli_kbindex_py[], cli_kbindex_py_end[];

#define KB_KEYS_MAX (256u << 10)

static void kb_usage(FILE *f) {
    fprintf(f,
        "usage: safepickle kb index [--python PY] [--out FILE] [--depth N] [--packages A,B]\n"
        "                           [--cache FILE] [--jobs N]\n"
        "       safepickle kb status\n\n"
        "index: reads the source of every module importable by PY (default /usr/bin/python3) with\n"
        "Python's ast (nothing is imported or run) and writes FILE (default %s):\n"
        "the importable modules, every module-valued attribute, and for each function and class of a\n"
        "package the knowledge base does not cover whether it reaches a dangerous sink within N calls\n"
        "(default 3); --packages reads only those top-level packages (the rest are listed as importable).\n"
        "--cache FILE keeps each file's summary, keyed by path, size, mtime and SHA-256, so a rebuild\n"
        "parses only what changed (default: $SAFEPICKLE_KB_CACHE, else none); --jobs N parses in N\n"
        "processes (default: the CPUs this process may run on).\n"
        "The preload and the CLI load it from $SAFEPICKLE_KB_INDEX or the default path.\n"
        "status: prints the index this process loaded.\n", SPA_KB_INDEX_DEFAULT);
}

/* The KB's top-level module names, comma-separated: the indexer leaves those packages to the KB. */
static char *kb_top_keys(void) {
    char *out = malloc(KB_KEYS_MAX);
    if (!out) return NULL;
    size_t k = 0;
    out[0] = '\0';
    const char *f[3];
    size_t fl[3];
    int nf;
    bool std;
    for (size_t i = 0; spa_kb_line(i, f, fl, &nf, &std); i++) {
        if (nf < 2 || f[0][0] == '@' || f[0][0] == '*') continue;
        size_t n = strcspn(f[0], ".:\t");
        if (n > fl[0]) n = fl[0];
        if (k + n + 2 >= KB_KEYS_MAX) break;
        memcpy(out + k, f[0], n);
        k += n;
        out[k++] = ',';
        out[k] = '\0';
    }
    return out;
}

/* The CPUs this process may run on (the indexer's default --jobs). */
static int kb_cpus(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* SHA-256 of the embedded indexer, hex: the cache holds only what this very script wrote. */
static void kb_script_digest(char hex[65]) {
    spa_sha256 s;
    uint8_t d[32];
    spa_sha256_init(&s);
    spa_sha256_update(&s, cli_kbindex_py, (size_t)(cli_kbindex_py_end - cli_kbindex_py) - 1);
    spa_sha256_final(&s, d);
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
}

static int kb_index(int argc, char **argv) {
    const char *py = "/usr/bin/python3", *out = SPA_KB_INDEX_DEFAULT, *depth = "3", *only = "";
    const char *cache = getenv("SAFEPICKLE_KB_CACHE"), *jobs_s = NULL;
    if (!cache) cache = "";
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--python") && i + 1 < argc) py = argv[++i];
        else if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--depth") && i + 1 < argc) depth = argv[++i];
        else if (!strcmp(argv[i], "--packages") && i + 1 < argc) only = argv[++i];
        else if (!strcmp(argv[i], "--cache") && i + 1 < argc) cache = argv[++i];
        else if (!strcmp(argv[i], "--jobs") && i + 1 < argc) jobs_s = argv[++i];
        else { kb_usage(stderr); return CLI_EXIT_ERROR; }
    }
    char *end;
    long d = strtol(depth, &end, 10);
    if (*end || d < 0 || d > 20) { fprintf(stderr, "safepickle kb: --depth wants 0..20\n"); return CLI_EXIT_ERROR; }
    long nj = jobs_s ? strtol(jobs_s, &end, 10) : kb_cpus();
    if ((jobs_s && *end) || nj < 1 || nj > 256) { fprintf(stderr, "safepickle kb: --jobs wants 1..256\n"); return CLI_EXIT_ERROR; }
    char jobs[16], script[65];
    snprintf(jobs, sizeof jobs, "%ld", nj);
    kb_script_digest(script);
    char *keys = kb_top_keys();
    if (!keys) { fprintf(stderr, "safepickle kb: out of memory\n"); return CLI_EXIT_ERROR; }
    int pfd[2];
    if (pipe(pfd)) { free(keys); perror("safepickle kb: pipe"); return CLI_EXIT_ERROR; }
    pid_t pid = fork();
    if (pid < 0) { free(keys); perror("safepickle kb: fork"); return CLI_EXIT_ERROR; }
    if (pid == 0) {
        dup2(pfd[0], 0);
        close(pfd[0]);
        close(pfd[1]);
        unsetenv("LD_PRELOAD");
        setenv("SAFEPICKLE_MODE", "off", 1); /* /etc/ld.so.preload: the indexer only reads source */
        execl(py, py, "-I", "-", out, depth, keys, only, cache, jobs, script, (char *)NULL);
        fprintf(stderr, "safepickle kb: cannot run %s: %s\n", py, strerror(errno));
        _exit(127);
    }
    close(pfd[0]);
    free(keys);
    signal(SIGPIPE, SIG_IGN);
    const char *p = cli_kbindex_py;
    size_t left = (size_t)(cli_kbindex_py_end - cli_kbindex_py) - 1;
    while (left) {
        ssize_t k = write(pfd[1], p, left);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        p += k;
        left -= (size_t)k;
    }
    close(pfd[1]);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    if (left || !WIFEXITED(st) || WEXITSTATUS(st)) {
        fprintf(stderr, "safepickle kb: the indexer failed (%s); no index written to %s\n", py, out);
        return CLI_EXIT_ERROR;
    }
    printf("wrote %s\n", out);
    return CLI_EXIT_OK;
}

int cmd_kb(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "index")) return kb_index(argc - 2, argv + 2);
    if (argc == 2 && !strcmp(argv[1], "status")) {
        printf("%s\n", spa_kb_index_status());
        return CLI_EXIT_OK;
    }
    kb_usage(argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) ? stdout : stderr);
    return argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) ? CLI_EXIT_OK : CLI_EXIT_ERROR;
}
