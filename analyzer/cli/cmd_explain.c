/* cmd_explain.c - `safepickle explain PATH...`: a decompiler-like pseudo-Python
 * listing of what loading each file would do. Exit 2 on a usage or I/O error. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "report.h"
#include "output.h"

static void explain_usage(FILE *f) {
    fprintf(f,
            "usage: safepickle explain PATH...\n"
            "\n"
            "Print what loading each file would do, as pseudo-Python: imports, calls\n"
            "bound to _v<N>, __setstate__ (BUILD), mutations, discarded results and\n"
            "nested pickles, each with its byte offset and opcode, then the verdict,\n"
            "the default policy's action and the reasons. Nothing is executed.\n"
            "\n"
            "Exit status: 0 explained, 2 usage or I/O error.\n");
}

int cmd_explain(int argc, char **argv) {
    int i = 1, rc = CLI_EXIT_OK;
    for (; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) { explain_usage(stdout); return CLI_EXIT_OK; }
        if (!strcmp(argv[i], "--")) { i++; break; }
        if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "safepickle explain: unknown option '%s'\n", argv[i]);
            explain_usage(stderr);
            return CLI_EXIT_ERROR;
        }
        break;
    }
    if (i >= argc) { explain_usage(stderr); return CLI_EXIT_ERROR; }
    spa_scan_opts o;
    spa_scan_opts_default(&o);
    for (int first = i; i < argc; i++) {
        spa_result *r = NULL;
        spa_err err = { SPA_OK, NULL, 0 };
        o.name = argv[i];
        if (spa_scan_path(&o, argv[i], &r, &err) != SPA_OK || !r) {
            fprintf(stderr, "safepickle explain: %s: %s\n", argv[i], err.msg ? err.msg : "scan failed");
            rc = CLI_EXIT_ERROR;
            continue;
        }
        if (i > first) putchar('\n');
        spa_explain(stdout, r);
        /* the classifier's reasons next to the listing (embedded default policy) */
        spa_policy *pol = NULL;
        if (spa_policy_default(&pol) == SPA_OK && spa_classify(r, pol) == SPA_OK)
            spa_verdict_text(stdout, r, spa_policy_decide(pol, r));
        spa_policy_free(pol);
        spa_result_free(r);
    }
    return rc;
}
