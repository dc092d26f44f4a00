/* cmd_scan.c - `safepickle scan [--format text|json] [--limit NAME=N] PATH...`:
 * scans each file and prints its streams and their IR (one function prints
 * one file's result). Exit 0, or 2 on a usage or I/O error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "report.h"

typedef enum { SCAN_TEXT = 0, SCAN_JSON } scan_fmt;

typedef struct scan_cli {
    scan_fmt fmt;
    spa_scan_opts opts;
    int nfiles;       /* files printed so far (JSON separators) */
    int rc;           /* exit code so far */
} scan_cli;

static void scan_usage(FILE *f) {
    fprintf(f,
            "usage: safepickle scan [--format text|json] [--limit NAME=N]... PATH...\n"
            "\n"
            "Scan each file for pickle streams (raw, zip, tar, npy, joblib, compressed)\n"
            "and print every stream with its IR: imports, calls, BUILDs, mutations,\n"
            "discarded results, persistent ids, nested pickles; errors with offsets.\n"
            "\n"
            "  --format text|json   output format (default text); the JSON shape is\n"
            "                       documented in the README (section analyzer)\n"
            "  --limit NAME=N       override a named limit, e.g. --limit max_ops=1000\n"
            "  -h, --help           this help\n"
            "\n"
            "Exit status: 0 scanned, 2 usage or I/O error.\n");
}

static bool scan_set_limit(scan_cli *c, const char *arg) {
    const char *eq = strchr(arg, '=');
    if (!eq) return false;
    for (int i = 0; i < SPA_LIM_COUNT; i++) {
        const char *n = spa_limit_name((spa_limit_id)i);
        if (strlen(n) == (size_t)(eq - arg) && !strncmp(n, arg, (size_t)(eq - arg))) {
            char *end;
            unsigned long long v = strtoull(eq + 1, &end, 0);
            if (end == eq + 1 || *end) return false;
            c->opts.limits.v[i] = v;
            return true;
        }
    }
    return false;
}

/* Print one file's result (or its I/O error). */
static void scan_print(scan_cli *c, const char *path, const spa_result *r, const spa_err *err) {
    if (c->fmt == SCAN_JSON) {
        cJSON *o;
        if (r) {
            o = spa_report_json(r);
        } else {
            o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "path", path);
            cJSON *e = cJSON_AddObjectToObject(o, "io_error");
            cJSON_AddStringToObject(e, "code", spa_code_name(err->code));
            cJSON_AddStringToObject(e, "msg", err->msg ? err->msg : "");
        }
        char *s = o ? cJSON_PrintUnformatted(o) : NULL;
        printf("%s%s", c->nfiles ? ",\n" : "", s ? s : "{}");
        free(s);
        cJSON_Delete(o);
    } else if (r) {
        spa_report_text(stdout, r);
    } else {
        printf("%s: error: %s (%s)\n", path, err->msg ? err->msg : "", spa_code_name(err->code));
    }
    c->nfiles++;
}

static void scan_file(scan_cli *c, const char *path) {
    spa_result *r = NULL;
    spa_err err = { SPA_OK, NULL, 0 };
    c->opts.name = path;
    spa_code rc = spa_scan_path(&c->opts, path, &r, &err);
    if (rc != SPA_OK || !r) {
        if (err.code == SPA_OK) err = (spa_err){ rc, "scan failed", 0 };
        fprintf(stderr, "safepickle scan: %s: %s\n", path, err.msg ? err.msg : spa_code_name(err.code));
        c->rc = CLI_EXIT_ERROR;
        scan_print(c, path, NULL, &err);
        return;
    }
    scan_print(c, path, r, NULL);
    spa_result_free(r);
}

int cmd_scan(int argc, char **argv) {
    scan_cli c;
    memset(&c, 0, sizeof c);
    spa_scan_opts_default(&c.opts);
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { scan_usage(stdout); return CLI_EXIT_OK; }
        if (!strcmp(a, "--")) { i++; break; }
        if (!strcmp(a, "--format") || !strncmp(a, "--format=", 9)) {
            const char *v = a[8] == '=' ? a + 9 : (i + 1 < argc ? argv[++i] : NULL);
            if (v && !strcmp(v, "json")) c.fmt = SCAN_JSON;
            else if (v && !strcmp(v, "text")) c.fmt = SCAN_TEXT;
            else { fprintf(stderr, "safepickle scan: --format takes text or json\n"); return CLI_EXIT_ERROR; }
            continue;
        }
        if (!strcmp(a, "--limit") || !strncmp(a, "--limit=", 8)) {
            const char *v = a[7] == '=' ? a + 8 : (i + 1 < argc ? argv[++i] : NULL);
            if (!v || !scan_set_limit(&c, v)) {
                fprintf(stderr, "safepickle scan: --limit takes NAME=N with a limit name (see README)\n");
                return CLI_EXIT_ERROR;
            }
            continue;
        }
        if (a[0] == '-' && a[1]) { fprintf(stderr, "safepickle scan: unknown option '%s'\n", a); scan_usage(stderr); return CLI_EXIT_ERROR; }
        break;
    }
    if (i >= argc) { scan_usage(stderr); return CLI_EXIT_ERROR; }
    if (c.fmt == SCAN_JSON) printf("{\"files\":[\n");
    for (; i < argc; i++) scan_file(&c, argv[i]);
    if (c.fmt == SCAN_JSON) printf("\n]}\n");
    return c.rc;
}
