/* cmd_policy.c - `safepickle policy check|show|default|judge`: validates a policy file
 * (every error with its byte position, line and column), prints the effective policy or
 * the embedded default, and judges one global by name the way the classifier does. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "deploy.h"

static void pol_usage(FILE *f) {
    fprintf(f,
            "usage: safepickle policy check FILE...       validate policy files\n"
            "       safepickle policy show [[--policy] P] print the effective policy (default: embedded)\n"
            "       safepickle policy default             print the embedded default.json\n"
            "       safepickle policy judge [--policy P] MODULE NAME\n"
            "                                             judge one global by name (knowledge base + policy)\n"
            "\n"
            "Exit status: 0 valid / judged safe or suspicious, 1 invalid / judged malicious,\n"
            "2 usage or I/O error. P is a policy file or a shipped policy name (default, strict,\n"
            "audit). The schema is documented in policies/SCHEMA.md.\n");
}

/* Line and column (1-based) of byte offset off in the file, for messages. */
static void pol_linecol(const char *path, uint64_t off, unsigned long *line, unsigned long *col) {
    *line = 1;
    *col = 1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    char buf[4096];
    uint64_t pos = 0;
    ssize_t r;
    while (pos < off && (r = read(fd, buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < r && pos < off; i++, pos++) {
            if (buf[i] == '\n') { (*line)++; *col = 1; }
            else (*col)++;
        }
    }
    close(fd);
}

static int pol_check(int argc, char **argv) {
    if (argc < 1) { pol_usage(stderr); return CLI_EXIT_ERROR; }
    int rc = CLI_EXIT_OK;
    for (int i = 0; i < argc; i++) {
        spa_policy *p = NULL;
        spa_err e = {SPA_OK, NULL, 0};
        spa_code c = spa_policy_load(argv[i], &p, &e);
        if (c == SPA_OK) {
            printf("%s: ok (policy \"%s\", mode %s, malicious=%s suspicious=%s unscannable=%s)\n", argv[i],
                   p->name, spa_mode_name(p->mode), spa_action_name(p->on_verdict[SPA_VERDICT_MALICIOUS]),
                   spa_action_name(p->on_verdict[SPA_VERDICT_SUSPICIOUS]),
                   spa_action_name(p->on_verdict[SPA_VERDICT_UNSCANNABLE]));
            spa_policy_free(p);
        } else if (c == SPA_E_IO || c == SPA_E_USAGE) {
            fprintf(stderr, "%s: error: %s: %s\n", argv[i], e.msg ? e.msg : "I/O error", strerror(errno));
            rc = CLI_EXIT_ERROR;
        } else {
            unsigned long line, col;
            pol_linecol(argv[i], e.off, &line, &col);
            fprintf(stderr, "%s:%lu:%lu: error: %s (byte %llu)\n", argv[i], line, col,
                    e.msg ? e.msg : spa_code_name(c), (unsigned long long)e.off);
            if (rc == CLI_EXIT_OK) rc = CLI_EXIT_BLOCK;
        }
    }
    return rc;
}

static void pol_print_strv(const char *name, const spa_strv *v) {
    printf("%s:", name);
    if (!v->n) printf(" (none)");
    for (size_t i = 0; i < v->n; i++) printf(" %s", v->v[i]);
    printf("\n");
}

static int pol_show(int argc, char **argv) {
    int i = 0;
    if (argc >= 2 && !strcmp(argv[0], "--policy")) i = 1; /* the same as a bare argument */
    if (argc - i > 1) { pol_usage(stderr); return CLI_EXIT_ERROR; }
    spa_policy *p = dep_load_policy("policy", argc > i ? argv[i] : NULL, NULL, 0);
    if (!p) return CLI_EXIT_ERROR;
    printf("name: %s\nsource: %s\nmode: %s\n", p->name, p->source, spa_mode_name(p->mode));
    for (int v = 0; v < SPA_VERDICT_COUNT; v++)
        printf("action.%s: %s\n", spa_verdict_name((spa_verdict)v), spa_action_name(p->on_verdict[v]));
    printf("on_limit: %s\nfail_mode: %s\n", spa_action_name(p->on_limit), spa_action_name(p->on_error));
    pol_print_strv("globals.allow", &p->allow_globals);
    pol_print_strv("globals.deny", &p->deny_globals);
    pol_print_strv("trusted.paths", &p->trusted_paths);
    printf("trusted.sha256: %zu digest(s)\n", p->n_trusted_sha256);
    for (int l = 0; l < SPA_LIM_COUNT; l++)
        printf("limits.%s: %llu\n", spa_limit_name((spa_limit_id)l), (unsigned long long)p->limits.v[l]);
    printf("audit_log: %s\n", p->audit_log ? p->audit_log : "(none)");
    pol_print_strv("targets", &p->targets);
    printf("errno: %d\nlayers.file_hooks: %s\nlayers.audit_hook: %s\nlayers.runtime_behaviour: %s\n",
           p->block_errno, p->layer_file ? "true" : "false", p->layer_audit_hook ? "true" : "false",
           p->runtime_behaviour ? "true" : "false");
    pol_print_strv("runtime.allow_imports", &p->runtime_allow_imports);
    printf("require_index: %s\n", p->require_index ? "true" : "false");
    spa_policy_free(p);
    return CLI_EXIT_OK;
}

static int pol_judge(int argc, char **argv) {
    const char *pf = NULL;
    int i = 0;
    if (argc >= 2 && !strcmp(argv[0], "--policy")) { pf = argv[1]; i = 2; }
    if (argc - i != 2) { pol_usage(stderr); return CLI_EXIT_ERROR; }
    spa_policy *p = dep_load_policy("policy", pf, NULL, 0);
    if (!p) return CLI_EXIT_ERROR;
    const char *rule = NULL;
    char msg[512];
    spa_verdict v = spa_judge_global(p, argv[i], argv[i + 1], &rule, msg, sizeof msg);
    printf("%s\t%s\t%s\t%s\n", spa_verdict_name(v), spa_kbcat_name(spa_kb_lookup(argv[i], argv[i + 1])),
           rule ? rule : "-", msg);
    spa_policy_free(p);
    return v == SPA_VERDICT_MALICIOUS ? CLI_EXIT_BLOCK : CLI_EXIT_OK;
}

int cmd_policy(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        pol_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_EXIT_ERROR : CLI_EXIT_OK;
    }
    const char *sub = argv[1];
    if (!strcmp(sub, "check")) return pol_check(argc - 2, argv + 2);
    if (!strcmp(sub, "show")) return pol_show(argc - 2, argv + 2);
    if (!strcmp(sub, "judge")) return pol_judge(argc - 2, argv + 2);
    if (!strcmp(sub, "default")) {
        size_t n;
        const char *j = spa_policy_default_json(&n);
        fwrite(j, 1, n, stdout);
        return CLI_EXIT_OK;
    }
    fprintf(stderr, "safepickle policy: unknown subcommand '%s'\n", sub);
    pol_usage(stderr);
    return CLI_EXIT_ERROR;
}
