/* cmd_scan.c - `safepickle scan [--format text|json] [--limit NAME=N] PATH...`:
 * scans each file and prints its streams and their IR (one function prints
 * one file's result). Exit 0, or 2 on a usage or I/O error. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "jsonout.h"
#include "output.h"
#include "deploy.h"
#include "report.h"
#include "scan_pool.h"
#include "sha256.h"
#include "walk.h"

typedef enum { SCAN_TEXT = 0, SCAN_JSON, SCAN_SARIF } scan_fmt;

typedef struct scan_cli {
    scan_fmt fmt;
    spa_scan_opts opts;
    int nfiles;       /* files printed so far (JSON separators) */
    int rc;           /* exit code so far */
    spa_policy *pol;  /* --policy FILE, or the embedded default */
    spa_action act;   /* action for the file being printed */
    const char *trusted; /* why the policy trusts that file, or NULL */
    cJSON *sarif;     /* --format sarif: the log being built */
    bool progress;    /* directory walk on a terminal: progress line on stderr */
    scan_pool *pool;  /* -j N > 1: files are scanned by N threads, printed in walk order */
    unsigned long walked;
    /* the summary line (text format): files, pickle-bearing ones per verdict, actions */
    unsigned long n_files, n_pickle, n_verdict[SPA_VERDICT_COUNT], n_block, n_warn, n_error;
    unsigned long n_skipped, n_same;
    /* per file scanned (walk seq): its verdict and action, for a second path to it */
    unsigned char *seen_verdict, *seen_act;
    size_t seen_cap;
    spa_verdict last_verdict; /* of the file scan_file judged last (SPA_VERDICT_COUNT: error) */
    spa_action last_act;
    char extra[96];     /* the summary's tail about skipped and twice-linked entries */
    const char *target; /* the file being scanned is reached through this symlink target */
    int verbosity;      /* text: -1 -q (summary only), 0 findings, 1 -v (every file with its IR) */
    unsigned long total;  /* progress: regular files the arguments hold (counted first) */
    double t0;            /* progress: when scanning started (CLOCK_MONOTONIC seconds) */
    const char *digest; /* JSON: the file's hex sha256 ("" unreadable) when computed by its scan */
} scan_cli;

/* ------------------------------------------------------------------ progress */
static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Erase the progress line before stdout writes on the same terminal. */
static void progress_clear(const scan_cli *c) {
    if (c->progress) { fputs("\r\033[K", stderr); fflush(stderr); }
}

/* "[done/total] 42% ETA 1m05s: path" on stderr, at most ten times a second. */
static void progress_show(scan_cli *c, const char *path) {
    static double last;
    double t = now_s();
    if (t - last < 0.1 && c->walked != c->total) return;
    last = t;
    double el = t - c->t0, left = c->walked && c->total > c->walked ? el / (double)c->walked * (double)(c->total - c->walked) : 0;
    unsigned pct = c->total ? (unsigned)(100.0 * (double)c->walked / (double)c->total) : 0;
    fprintf(stderr, "\r[%lu/%lu] %u%% ETA %um%02us: %.50s\033[K", c->walked, c->total, pct,
            (unsigned)(left / 60), (unsigned)left % 60, path);
    fflush(stderr);
}

static void count_fn(void *ctx, const walk_entry *e) {
    if (e->kind == WALK_FILE) ++*(unsigned long *)ctx;
}

static void scan_usage(FILE *f) {
    fprintf(f,
            "usage: safepickle scan [--format text|json|sarif] [--policy P] [--limit NAME=N]... [-j N] PATH...\n"
            "\n"
            "Scan each file for pickle streams (raw, zip, tar, npy, joblib, compressed) and\n"
            "judge them. Text output lists the findings first, one block per file that is not\n"
            "plainly safe (its verdict, action and reasons), then one summary line.\n"
            "\n"
            "  -v, --verbose        every file, with every stream and its IR: imports, calls,\n"
            "                       BUILDs, mutations, nested pickles, errors with offsets\n"
            "  -q, --quiet          the summary line only (the exit status says the rest)\n"
            "  --format text|json   output format (default text); the JSON shape is\n"
            "                       documented in the README (section analyzer)\n"
            "  --format sarif       SARIF 2.1.0 for code-scanning tools (one result per reason)\n"
            "  --policy P           judge with policy P, a file or a shipped name (default, strict,\n"
            "                       audit; default: the embedded default.json); its limits apply\n"
            "                       unless --limit follows it, its trusted paths and digests too\n"
            "  --limit NAME=N       override a named limit, e.g. --limit max_ops=1000\n"
            "  -j, --jobs N         scan N files at a time (default: the number of cores);\n"
            "                       the output is the same as with -j 1, in the same order\n"
            "  PATH may be a directory: it is walked. Symlinks are followed (a file reached\n"
            "                       twice is scanned once; loops end); FIFOs, sockets and devices\n"
            "                       are skipped with a note and never opened; an entry that cannot\n"
            "                       be read is an error (exit 2)\n"
            "  -h, --help           this help\n"
            "\n"
            "On a terminal, progress (files done of the total, time left) goes to stderr.\n"
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

/* The hex sha256 of a file into hex[65]; false when it cannot be read. */
static bool scan_digest(const char *path, char hex[65]) {
    uint8_t d[32];
    spa_err e = { SPA_OK, NULL, 0 };
    if (spa_sha256_file(path, d, &e) != SPA_OK) return false;
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
    return true;
}

/* "sha256" of the file a JSON entry describes (null when it cannot be read):
 * hex when the scan's worker computed it (-j), else computed here. */
static void scan_json_digest(cJSON *o, const char *path, const char *hex) {
    char buf[65];
    if (!o) return;
    if (!hex) hex = scan_digest(path, buf) ? buf : NULL;
    if (!hex || !hex[0]) { cJSON_AddNullToObject(o, "sha256"); return; }
    cJSON_AddStringToObject(o, "sha256", hex);
}

/* The JSON document's head: tool and policy (name, source, digest of its text). */
static void scan_json_head(const spa_policy *p) {
    cJSON *h = cJSON_CreateObject();
    cJSON *t = cJSON_AddObjectToObject(h, "tool");
    cJSON_AddStringToObject(t, "name", "safepickle");
    cJSON_AddStringToObject(t, "version", SPA_VERSION);
    cJSON *po = cJSON_AddObjectToObject(h, "policy");
    cJSON_AddStringToObject(po, "name", p->name ? p->name : "");
    cJSON_AddStringToObject(po, "source", p->source ? p->source : "");
    uint8_t d[32];
    char hex[65];
    spa_err e = { SPA_OK, NULL, 0 };
    bool ok = false;
    if (p->source && p->source[0] != '<') ok = spa_sha256_file(p->source, d, &e) == SPA_OK;
    if (!ok) {
        size_t n = 0;
        const char *js = spa_policy_default_json(&n);
        spa_sha256 hs;
        spa_sha256_init(&hs);
        spa_sha256_update(&hs, js, n);
        spa_sha256_final(&hs, d);
    }
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
    cJSON_AddStringToObject(po, "sha256", hex);
    char *s = spa_json_print(h, false, true);
    size_t n = s ? strlen(s) : 0;
    /* the object stays open: "files" follows, then "summary" */
    if (n >= 2) printf("%.*s,\"files\":[\n", (int)(n - 1), s);
    else printf("{\"files\":[\n");
    free(s);
    cJSON_Delete(h);
}

/* The JSON document's tail: the same counts as the text summary line. */
static void scan_json_tail(const scan_cli *c) {
    printf("\n],\"summary\":{\"files\":%lu,\"pickle_bearing\":%lu,\"safe\":%lu,\"suspicious\":%lu,"
           "\"malicious\":%lu,\"unscannable\":%lu,\"without_pickles\":%lu,\"errors\":%lu,"
           "\"blocked\":%lu,\"warned\":%lu,\"skipped\":%lu,\"linked_again\":%lu,\"exit\":%d}}\n",
           c->n_files, c->n_pickle, c->n_verdict[SPA_VERDICT_SAFE], c->n_verdict[SPA_VERDICT_SUSPICIOUS],
           c->n_verdict[SPA_VERDICT_MALICIOUS], c->n_verdict[SPA_VERDICT_UNSCANNABLE],
           c->n_files - c->n_pickle - c->n_error, c->n_error, c->n_block, c->n_warn, c->n_skipped, c->n_same, c->rc);
}

/* Default text output: a file that is plainly safe (or holds no pickle) prints
 * nothing; any other gets "PATH: VERDICT, action ACTION" and its reasons. */
static void scan_finding(const scan_cli *c, const char *path, const spa_result *r) {
    if (c->act == SPA_ACT_ALLOW && (!r->pickle_bearing || r->verdict == SPA_VERDICT_SAFE)) return;
    progress_clear(c);
    printf("%s%s%s: %s, action %s\n", path, c->target ? " -> " : "", c->target ? c->target : "",
           spa_verdict_name(r->verdict), spa_action_name(c->act));
    for (size_t i = 0; i < r->n_reasons; i++) {
        const spa_reason *x = &r->reasons[i];
        if (x->severity == SPA_VERDICT_SAFE) continue;
        printf("  [%s] %s at %s+%llu: %s\n", spa_verdict_name(x->severity), x->rule,
               x->loc && x->loc[0] ? x->loc : path, (unsigned long long)x->off, x->msg);
    }
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
            if (o && c->target) cJSON_AddStringToObject(o, "target", c->target);
            if (c->trusted) cJSON_AddStringToObject(o, "trusted", c->trusted);
        } else {
            o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "path", path);
            cJSON *e = cJSON_AddObjectToObject(o, "io_error");
            cJSON_AddStringToObject(e, "code", spa_code_name(err->code));
            cJSON_AddStringToObject(e, "msg", err->msg ? err->msg : "");
        }
        scan_json_digest(o, path, c->digest);
        char *s = o ? spa_json_print(o, false, true) : NULL;
        printf("%s%s", c->nfiles ? ",\n" : "", s ? s : "{}");
        free(s);
        cJSON_Delete(o);
    } else if (c->verbosity < 0) {
        /* -q: the summary line only */
    } else if (r && c->verbosity > 0) {
        if (c->target) printf("%s: symlink to %s\n", path, c->target);
        spa_report_text(stdout, r);
        spa_verdict_text(stdout, r, c->act);
    } else if (r) {
        scan_finding(c, path, r);
    } else {
        printf("%s: error: %s (%s)\n", path, err->msg ? err->msg : "", spa_code_name(err->code));
    }
    c->nfiles++;
}

/* Does the policy trust this file (its absolute path or its SHA-256), as the
 * preload would at load time? Returns why, or NULL. */
static const char *scan_trusted(const spa_policy *p, const char *path) {
    if (p->mode == SPA_MODE_OFF) return NULL;
    char abs[PATH_MAX];
    if (realpath(path, abs) && spa_policy_trusts_path(p, abs)) return "the file's path is trusted by the policy";
    uint8_t d[32];
    spa_err e = { SPA_OK, NULL, 0 };
    if (p->n_trusted_sha256 && spa_sha256_file(path, d, &e) == SPA_OK && spa_policy_trusts_digest(p, d))
        return "the file's sha256 is trusted by the policy";
    return NULL;
}

/* One file's scan, judged: what scan_file prints. */
typedef struct scan_out {
    spa_result *r;  /* NULL: err says why */
    spa_err err;
    spa_action act;
    const char *trusted; /* why the policy trusts the file (a static string), or NULL */
    char msg[256];  /* err.msg with the errno text */
    char hex[65];   /* JSON: the file's sha256 ("" when it cannot be read) */
    bool digested;  /* hex is set */
} scan_out;

/* Scan and judge one file into o. Runs in a -j worker thread: it only reads
 * c (options and policy). */
static void scan_compute(const scan_cli *c, const char *path, scan_out *o) {
    spa_scan_opts opts = c->opts;
    opts.name = path;
    o->r = NULL;
    o->trusted = NULL;
    o->err = (spa_err){ SPA_OK, NULL, 0 };
    errno = 0;
    spa_code rc = spa_scan_path(&opts, path, &o->r, &o->err);
    int e = errno;
    if (rc != SPA_OK || !o->r) {
        if (o->err.code == SPA_OK) o->err = (spa_err){ rc, "scan failed", 0 };
        if (o->err.code == SPA_E_IO && e) { /* say why: "Permission denied" is the user's cue */
            snprintf(o->msg, sizeof o->msg, "%s: %s", o->err.msg ? o->err.msg : "I/O error", strerror(e));
            o->err.msg = o->msg;
        }
        spa_result_free(o->r);
        o->r = NULL;
        return;
    }
    spa_code crc = spa_classify(o->r, c->pol);
    o->act = crc == SPA_OK ? spa_policy_decide(c->pol, o->r) : spa_policy_act(c->pol, c->pol->on_error);
    o->trusted = o->act != SPA_ACT_ALLOW && o->r->pickle_bearing ? scan_trusted(c->pol, path) : NULL;
    if (o->trusted) o->act = SPA_ACT_ALLOW;
    if (c->fmt == SCAN_JSON) { /* hashed here, not in the printing thread */
        if (!scan_digest(path, o->hex)) o->hex[0] = '\0';
        o->digested = true;
    }
}

/* Count and print one file's result (it frees o->r), in walk order. */
static void scan_file(scan_cli *c, const char *path, scan_out *o) {
    c->last_verdict = SPA_VERDICT_COUNT;
    c->last_act = c->pol->on_error;
    if (!o->r) {
        fprintf(stderr, "safepickle scan: %s: %s\n", path, o->err.msg ? o->err.msg : spa_code_name(o->err.code));
        c->rc = CLI_EXIT_ERROR;
        c->n_files++;
        c->n_error++;
        scan_print(c, path, NULL, &o->err);
        return;
    }
    spa_result *r = o->r;
    c->act = o->act;
    const char *trusted = o->trusted;
    c->trusted = trusted;
    if (c->act == SPA_ACT_BLOCK && c->rc == CLI_EXIT_OK) c->rc = CLI_EXIT_BLOCK;
    c->n_files++;
    if (r->pickle_bearing) { c->n_pickle++; if (r->verdict < SPA_VERDICT_COUNT) c->n_verdict[r->verdict]++; }
    c->n_block += c->act == SPA_ACT_BLOCK;
    c->n_warn += c->act == SPA_ACT_WARN;
    c->last_verdict = r->verdict;
    c->last_act = c->act;
    c->digest = o->digested ? o->hex : NULL;
    scan_print(c, path, r, NULL);
    if (trusted && c->fmt == SCAN_TEXT) printf("  allowed: %s\n", trusted);
    c->trusted = NULL;
    c->digest = NULL;
    spa_result_free(r);
    o->r = NULL;
}

/* Remember what file number seq was judged, for a later path to the same file. */
static void scan_remember(scan_cli *c, size_t seq, spa_verdict v, spa_action a) {
    if (seq >= c->seen_cap) {
        size_t nc = c->seen_cap ? c->seen_cap : 256;
        while (nc <= seq) nc *= 2;
        unsigned char *nv = realloc(c->seen_verdict, nc), *na = nv ? realloc(c->seen_act, nc) : NULL;
        if (nv) c->seen_verdict = nv;
        if (!na) return;
        c->seen_act = na;
        memset(c->seen_verdict + c->seen_cap, 0xff, nc - c->seen_cap);
        memset(c->seen_act + c->seen_cap, 0xff, nc - c->seen_cap);
        c->seen_cap = nc;
    }
    c->seen_verdict[seq] = (unsigned char)v;
    c->seen_act[seq] = (unsigned char)a;
}

/* A note about a path that is not scanned (skipped, or the same file again). */
static void scan_note(scan_cli *c, const walk_entry *e, const char *what) {
    if (c->fmt == SCAN_JSON) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "path", e->path);
        if (e->target) cJSON_AddStringToObject(o, "target", e->target);
        if (e->kind == WALK_SAME) {
            cJSON_AddStringToObject(o, "same_as", e->same_as);
            if (e->first < c->seen_cap && c->seen_verdict[e->first] < SPA_VERDICT_COUNT) {
                cJSON_AddStringToObject(o, "verdict", spa_verdict_name((spa_verdict)c->seen_verdict[e->first]));
                cJSON_AddStringToObject(o, "action", spa_action_name((spa_action)c->seen_act[e->first]));
            }
        } else {
            cJSON_AddStringToObject(o, "skipped", e->why);
        }
        char *s = spa_json_print(o, false, true);
        printf("%s%s", c->nfiles ? ",\n" : "", s ? s : "{}");
        free(s);
        cJSON_Delete(o);
        c->nfiles++;
    } else if (c->fmt == SCAN_TEXT) {
        /* by default only a second name of a file that is a finding is worth a line */
        bool finding = e->kind == WALK_SAME && e->first < c->seen_cap && c->seen_act[e->first] != SPA_ACT_ALLOW;
        if (c->verbosity > 0 || (c->verbosity == 0 && finding)) {
            progress_clear(c);
            printf("%s%s%s: %s\n", e->path, e->target ? " -> " : "", e->target ? e->target : "", what);
        }
    }
}

/* Print one walk entry; a file's scan result is in o. */
static void scan_entry(scan_cli *c, const walk_entry *e, scan_out *o) {
    char what[PATH_MAX + 128];
    switch (e->kind) {
    case WALK_FILE:
        c->target = e->target;
        scan_file(c, e->path, o);
        c->target = NULL;
        scan_remember(c, e->seq, c->last_verdict, c->last_act);
        break;
    case WALK_SAME: {
        c->n_same++;
        bool known = e->first < c->seen_cap && c->seen_verdict[e->first] < SPA_VERDICT_COUNT;
        snprintf(what, sizeof what, "the same file as %s, scanned once%s%s%s%s", e->same_as,
                 known ? ": verdict " : "", known ? spa_verdict_name((spa_verdict)c->seen_verdict[e->first]) : "",
                 known ? ", action " : "", known ? spa_action_name((spa_action)c->seen_act[e->first]) : "");
        scan_note(c, e, what);
        break;
    }
    case WALK_SKIP:
        c->n_skipped++;
        snprintf(what, sizeof what, "skipped: %s%s", e->why,
                 !strncmp(e->why, "a directory", 11) || !strncmp(e->why, "a dangling", 10) ||
                 !strncmp(e->why, "a symlink", 9) ? "" : " (not opened; only regular files are scanned)");
        scan_note(c, e, what);
        break;
    case WALK_ERROR: {
        spa_err err = { SPA_E_IO, what, 0 };
        snprintf(what, sizeof what, "%s: %s", e->why, strerror(e->err));
        fprintf(stderr, "safepickle scan: %s: %s\n", e->path, what);
        c->rc = CLI_EXIT_ERROR;
        c->n_files++;
        c->n_error++;
        scan_print(c, e->path, NULL, &err);
        break;
    }
    }
}

/* -j: a walk entry with its strings, queued in the pool, and its file's scan */
typedef struct scan_item {
    walk_entry e;
    scan_out out;
    char strs[];  /* path, target, same_as, why */
} scan_item;

static const char *scan_item_str(char **at, const char *s) {
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *d = memcpy(*at, s, n);
    *at += n;
    return d;
}

static scan_item *scan_item_new(const walk_entry *e) {
    size_t n = 0;
    const char *ss[4] = { e->path, e->target, e->same_as, e->why };
    for (int i = 0; i < 4; i++) n += ss[i] ? strlen(ss[i]) + 1 : 0;
    scan_item *it = calloc(1, sizeof *it + n);
    if (!it) return NULL;
    char *at = it->strs;
    it->e = *e;
    it->e.path = scan_item_str(&at, e->path);
    it->e.target = scan_item_str(&at, e->target);
    it->e.same_as = scan_item_str(&at, e->same_as);
    it->e.why = scan_item_str(&at, e->why);
    return it;
}

static void scan_item_work(void *ud, void *item) {
    scan_item *it = item;
    if (it->e.kind == WALK_FILE) scan_compute(ud, it->e.path, &it->out);
}

static void scan_item_emit(void *ud, void *item) {
    scan_item *it = item;
    scan_entry(ud, &it->e, &it->out);
    free(it);
}

static void scan_walk_fn(void *ctx, const walk_entry *e) {
    scan_cli *c = ctx;
    if (e->kind == WALK_FILE) {
        c->walked++;
        if (c->progress) progress_show(c, e->path);
    }
    scan_item *it = c->pool ? scan_item_new(e) : NULL;
    if (it) { scan_pool_submit(c->pool, it); return; }
    if (c->pool) scan_pool_drain(c->pool); /* out of memory: in-line, after what is queued */
    scan_out o;
    memset(&o, 0, sizeof o);
    if (e->kind == WALK_FILE) scan_compute(c, e->path, &o);
    scan_entry(c, e, &o);
}

/* "; N skipped, M linked again" when any, else "" (the summary line's tail). */
static const char *scan_extra(scan_cli *c) {
    c->extra[0] = '\0';
    if (c->n_skipped || c->n_same)
        snprintf(c->extra, sizeof c->extra, "; %lu skipped (not regular files), %lu linked again (scanned once)",
                 c->n_skipped, c->n_same);
    return c->extra;
}

static void scan_arg(scan_cli *c, walk_state *w, const char *path) {
    struct stat st;
    unsigned long before = c->walked;
    c->progress = stat(path, &st) == 0 && S_ISDIR(st.st_mode) && isatty(2) != 0;
    if (c->progress) { /* the total first: a walk that only counts (no file is opened) */
        walk_state *cw = walk_new();
        unsigned long n = 0;
        if (cw) walk_arg(cw, path, count_fn, &n);
        walk_free(cw);
        c->total = c->walked + n;
        c->t0 = now_s();
    }
    walk_arg(w, path, scan_walk_fn, c);
    if (c->pool && c->progress) scan_pool_drain(c->pool); /* results printed before the line ends */
    if (c->progress) fprintf(stderr, "\r\033[Kscanned %lu files under %s in %.1fs\n", c->walked - before, path,
                             now_s() - c->t0);
}

int cmd_scan(int argc, char **argv) {
    scan_cli c;
    memset(&c, 0, sizeof c);
    spa_scan_opts_default(&c.opts);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned jobs = ncpu > 1 ? (unsigned)(ncpu < 256 ? ncpu : 256) : 1; /* -j default: the cores */
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
            spa_policy_free(c.pol);
            c.pol = NULL;
            if (!v) { fprintf(stderr, "safepickle scan: --policy needs a file or a policy name\n"); return CLI_EXIT_ERROR; }
            if (!(c.pol = dep_load_policy("scan", v, NULL, 0))) return CLI_EXIT_ERROR;
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
        if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) { c.verbosity = 1; continue; }
        if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) { c.verbosity = -1; continue; }
        if (!strcmp(a, "-j") || !strcmp(a, "--jobs") || (!strncmp(a, "-j", 2) && a[2]) || !strncmp(a, "--jobs=", 7)) {
            const char *v = !strncmp(a, "--jobs=", 7) ? a + 7 : a[1] == 'j' && a[2] ? a + 2 : (i + 1 < argc ? argv[++i] : NULL);
            char *end = NULL;
            long n = v ? strtol(v, &end, 10) : 0;
            if (!v || end == v || *end || n < 1 || n > 256) {
                fprintf(stderr, "safepickle scan: -j takes a number of files to scan at a time (1-256)\n");
                return CLI_EXIT_ERROR;
            }
            jobs = (unsigned)n;
            continue;
        }
        if (a[0] == '-' && a[1]) { fprintf(stderr, "safepickle scan: unknown option '%s'\n", a); scan_usage(stderr); return CLI_EXIT_ERROR; }
        break;
    }
    if (i >= argc) { scan_usage(stderr); return CLI_EXIT_ERROR; }
    if (!c.pol && !(c.pol = dep_load_policy("scan", NULL, NULL, 0))) return CLI_EXIT_ERROR;
    char why[1024];
    if (spa_policy_index_unmet(c.pol, why, sizeof why)) { /* judged without it, nothing would be reliable */
        fprintf(stderr, "safepickle scan: %s; nothing scanned\n", why);
        spa_policy_free(c.pol);
        return CLI_EXIT_ERROR;
    }
    if (c.fmt == SCAN_SARIF) {
        char cwd[4096];
        if (!(c.sarif = spa_sarif_new(getcwd(cwd, sizeof cwd)))) { spa_policy_free(c.pol); return CLI_EXIT_ERROR; }
    }
    walk_state *w = walk_new();
    if (!w) { fprintf(stderr, "safepickle scan: out of memory\n"); spa_policy_free(c.pol); cJSON_Delete(c.sarif); return CLI_EXIT_ERROR; }
    if (c.fmt == SCAN_JSON) scan_json_head(c.pol);
    if (jobs > 1) c.pool = scan_pool_new(jobs, scan_item_work, scan_item_emit, &c); /* NULL: in-line */
    for (; i < argc; i++) scan_arg(&c, w, argv[i]);
    scan_pool_finish(c.pool);  /* prints what is still in flight */
    c.pool = NULL;
    walk_free(w);
    free(c.seen_verdict);
    free(c.seen_act);
    if (c.fmt == SCAN_JSON) scan_json_tail(&c);
    if (c.fmt == SCAN_TEXT) /* the last line: what a person reads first */
        printf("summary: %lu file%s, %lu pickle-bearing (%lu safe, %lu suspicious, %lu malicious, "
               "%lu unscannable), %lu without pickles, %lu error%s; %lu would be blocked, %lu warned%s\n",
               c.n_files, c.n_files == 1 ? "" : "s", c.n_pickle, c.n_verdict[SPA_VERDICT_SAFE],
               c.n_verdict[SPA_VERDICT_SUSPICIOUS], c.n_verdict[SPA_VERDICT_MALICIOUS],
               c.n_verdict[SPA_VERDICT_UNSCANNABLE], c.n_files - c.n_pickle - c.n_error, c.n_error,
               c.n_error == 1 ? "" : "s", c.n_block, c.n_warn, scan_extra(&c));

    if (c.fmt == SCAN_SARIF) {
        char *out = spa_json_print(c.sarif, true, false);
        printf("%s\n", out ? out : "{}");
        free(out);
        cJSON_Delete(c.sarif);
    }
    spa_policy_free(c.pol);
    return c.rc;
}
