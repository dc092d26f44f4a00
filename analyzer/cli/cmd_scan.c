/* cmd_scan.c - `safepickle scan [--format text|json] [--limit NAME=N] PATH...`:
 * scans each file and prints its streams and their IR (one function prints
 * one file's result). Exit 0, or 2 on a usage or I/O error. */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "report.h"
#include "verdict.h"

typedef enum { SCAN_TEXT = 0, SCAN_JSON, SCAN_SARIF } scan_fmt;

typedef struct scan_cli {
    scan_fmt fmt;
    spa_scan_opts opts;
    int nfiles;       /* files printed so far (JSON separators) */
    int rc;           /* exit code so far */
    spa_policy *pol;  /* --policy FILE, or the embedded default */
    spa_action act;   /* action for the file being printed */
    cJSON *sarif;     /* --format sarif: the log being built */
    bool progress;    /* directory walk on a terminal: progress line on stderr */
    unsigned long walked;
    /* the summary line (text format): files, pickle-bearing ones per verdict, actions */
    unsigned long n_files, n_pickle, n_verdict[SPA_VERDICT_COUNT], n_block, n_warn, n_error;
} scan_cli;

static void scan_usage(FILE *f) {
    fprintf(f,
            "usage: safepickle scan [--format text|json|sarif] [--policy FILE] [--limit NAME=N]... PATH...\n"
            "\n"
            "Scan each file for pickle streams (raw, zip, tar, npy, joblib, compressed)\n"
            "and print every stream with its IR: imports, calls, BUILDs, mutations,\n"
            "discarded results, persistent ids, nested pickles; errors with offsets.\n"
            "\n"
            "  --format text|json   output format (default text); the JSON shape is\n"
            "                       documented in the README (section analyzer)\n"
            "  --format sarif       SARIF 2.1.0 for code-scanning tools (one result per reason)\n"
            "  --policy FILE        judge with this policy (default: the embedded default.json);\n"
            "                       its limits apply unless --limit follows it\n"
            "  --limit NAME=N       override a named limit, e.g. --limit max_ops=1000\n"
            "  PATH may be a directory: it is walked (regular files, no symlinks followed)\n"
            "  -h, --help           this help\n"
            "\n"
            "Each file gets a verdict (safe, suspicious, malicious, unscannable), the policy's\n"
            "action (allow, warn, block) and its reasons.\n"
            "Exit status: 0 nothing would be blocked, 1 something would be blocked,\n"
            "2 usage or I/O error.\n");
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
    if (c->fmt == SCAN_SARIF) {
        if (r) spa_sarif_add(c->sarif, path, r, c->act);
        else spa_sarif_add_error(c->sarif, path, err);
        c->nfiles++;
        return;
    }
    if (c->fmt == SCAN_JSON) {
        cJSON *o;
        if (r) {
            o = spa_report_json(r);
            spa_verdict_json(o, r, c->act);
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
        spa_verdict_text(stdout, r, c->act);
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
        c->n_files++;
        c->n_error++;
        scan_print(c, path, NULL, &err);
        return;
    }
    spa_code crc = spa_classify(r, c->pol);
    c->act = crc == SPA_OK ? spa_policy_decide(c->pol, r) : c->pol->on_error;
    if (c->act == SPA_ACT_BLOCK && c->rc == CLI_EXIT_OK) c->rc = CLI_EXIT_BLOCK;
    c->n_files++;
    if (r->pickle_bearing) { c->n_pickle++; if (r->verdict < SPA_VERDICT_COUNT) c->n_verdict[r->verdict]++; }
    c->n_block += c->act == SPA_ACT_BLOCK;
    c->n_warn += c->act == SPA_ACT_WARN;
    scan_print(c, path, r, NULL);
    spa_result_free(r);
}

/* Directory arguments: every regular file below, symlinks not followed. */
static scan_cli *scan_walk_cli; /* nftw has no user pointer; the CLI is single-threaded */
static int scan_walk_fn(const char *fpath, const struct stat *sb, int type, struct FTW *ftw) {
    (void)sb; (void)ftw;
    if (type != FTW_F) return 0;
    scan_cli *c = scan_walk_cli;
    c->walked++;
    if (c->progress) fprintf(stderr, "\rscanned %lu files: %.60s\033[K", c->walked, fpath);
    scan_file(c, fpath);
    return 0;
}

static void scan_arg(scan_cli *c, const char *path) {
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        scan_walk_cli = c;
        c->progress = isatty(2) != 0;
        if (nftw(path, scan_walk_fn, 16, FTW_PHYS) != 0) {
            fprintf(stderr, "safepickle scan: %s: cannot walk the directory\n", path);
            c->rc = CLI_EXIT_ERROR;
        }
        if (c->progress) fprintf(stderr, "\rscanned %lu files under %s\033[K\n", c->walked, path);
        return;
    }
    scan_file(c, path);
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
            else if (v && !strcmp(v, "sarif")) c.fmt = SCAN_SARIF;
            else if (v && !strcmp(v, "text")) c.fmt = SCAN_TEXT;
            else { fprintf(stderr, "safepickle scan: --format takes text, json or sarif\n"); return CLI_EXIT_ERROR; }
            continue;
        }
        if (!strcmp(a, "--policy") || !strncmp(a, "--policy=", 9)) {
            const char *v = a[8] == '=' ? a + 9 : (i + 1 < argc ? argv[++i] : NULL);
            spa_err pe = { SPA_OK, NULL, 0 };
            spa_policy_free(c.pol);
            c.pol = NULL;
            if (!v || spa_policy_load(v, &c.pol, &pe) != SPA_OK) {
                fprintf(stderr, "safepickle scan: policy %s: %s (byte %llu); see safepickle policy check\n",
                        v ? v : "(missing)", pe.msg ? pe.msg : "invalid", (unsigned long long)pe.off);
                return CLI_EXIT_ERROR;
            }
            c.opts.limits = c.pol->limits;
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
    if (!c.pol && spa_policy_default(&c.pol) != SPA_OK) {
        fprintf(stderr, "safepickle scan: the embedded default policy is invalid\n");
        return CLI_EXIT_ERROR;
    }
    if (c.fmt == SCAN_SARIF && !(c.sarif = spa_sarif_new())) { spa_policy_free(c.pol); return CLI_EXIT_ERROR; }
    if (c.fmt == SCAN_JSON) printf("{\"files\":[\n");
    for (; i < argc; i++) scan_arg(&c, argv[i]);
    if (c.fmt == SCAN_JSON) printf("\n]}\n");
    if (c.fmt == SCAN_TEXT) /* the last line: what a person reads first */
        printf("summary: %lu file%s, %lu pickle-bearing (%lu safe, %lu suspicious, %lu malicious, "
               "%lu unscannable), %lu without pickles, %lu error%s; %lu would be blocked, %lu warned\n",
               c.n_files, c.n_files == 1 ? "" : "s", c.n_pickle, c.n_verdict[SPA_VERDICT_SAFE],
               c.n_verdict[SPA_VERDICT_SUSPICIOUS], c.n_verdict[SPA_VERDICT_MALICIOUS],
               c.n_verdict[SPA_VERDICT_UNSCANNABLE], c.n_files - c.n_pickle - c.n_error, c.n_error,
               c.n_error == 1 ? "" : "s", c.n_block, c.n_warn);
    if (c.fmt == SCAN_SARIF) {
        char *out = cJSON_Print(c.sarif);
        printf("%s\n", out ? out : "{}");
        free(out);
        cJSON_Delete(c.sarif);
    }
    spa_policy_free(c.pol);
    return c.rc;
}
