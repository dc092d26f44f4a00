/* sarif.c - SARIF 2.1.0 for code-scanning tools (GitHub code scanning among them):
 * one rule per reason id with the texts of rules.def, one result per non-safe
 * reason with a byte region, a stable partial fingerprint and percent-encoded
 * URIs (file:// when absolute, %SRCROOT%-relative otherwise). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "output.h"
#include "sha256.h"

#define SARIF_SCHEMA "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
#define SARIF_BASE "%SRCROOT%"
#define SARIF_URI_MAX 16384

static const char *sarif_level(spa_verdict v) {
    switch (v) {
    case SPA_VERDICT_MALICIOUS: return "error";
    case SPA_VERDICT_UNSCANNABLE: return "error";
    case SPA_VERDICT_SUSPICIOUS: return "warning";
    default: return "note";
    }
}

bool spa_sarif_uri(const char *path, char *buf, size_t n) {
    static const char hx[] = "0123456789ABCDEF";
    size_t j = 0;
    if (!path || n == 0) return false;
    if (path[0] == '/') {
        if (n < 8) return false;
        memcpy(buf, "file://", 7);
        j = 7;
    }
    for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
        unsigned char c = *p;
        bool keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '.' || c == '_' || c == '~' || c == '/';
        if (j + (keep ? 1 : 3) >= n) return false;
        if (keep) buf[j++] = (char)c;
        else { buf[j++] = '%'; buf[j++] = hx[c >> 4]; buf[j++] = hx[c & 15]; }
    }
    buf[j] = '\0';
    return true;
}

static cJSON *sarif_text(cJSON *parent, const char *key, const char *text) {
    cJSON *o = cJSON_AddObjectToObject(parent, key);
    if (o) cJSON_AddStringToObject(o, "text", text ? text : "");
    return o;
}

static void sarif_tags(cJSON *props, const char *tags) {
    cJSON *a = cJSON_AddArrayToObject(props, "tags");
    for (const char *p = tags; a && p && *p;) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        char t[64];
        if (l && l < sizeof t) {
            memcpy(t, p, l);
            t[l] = '\0';
            cJSON_AddItemToArray(a, cJSON_CreateString(t));
        }
        p = e ? e + 1 : p + l;
    }
}

cJSON *spa_sarif_new(const char *base_dir) {
    cJSON *log = cJSON_CreateObject();
    if (!log) return NULL;
    cJSON_AddStringToObject(log, "$schema", SARIF_SCHEMA);
    cJSON_AddStringToObject(log, "version", "2.1.0");
    cJSON *runs = cJSON_AddArrayToObject(log, "runs");
    cJSON *run = cJSON_CreateObject();
    cJSON_AddItemToArray(runs, run);
    cJSON *tool = cJSON_AddObjectToObject(run, "tool");
    cJSON *drv = cJSON_AddObjectToObject(tool, "driver");
    cJSON_AddStringToObject(drv, "name", "safepickle");
    cJSON_AddStringToObject(drv, "version", SPA_VERSION);
    cJSON_AddStringToObject(drv, "semanticVersion", SPA_VERSION);
    cJSON_AddStringToObject(drv, "informationUri", "https://github.com/safepickle/safepickle");
    cJSON_AddArrayToObject(drv, "rules");
    if (base_dir && base_dir[0] == '/') {
        char uri[SARIF_URI_MAX];
        size_t bl = strlen(base_dir);
        if (spa_sarif_uri(base_dir, uri, sizeof uri - 1) && strlen(uri) + 1 < sizeof uri) {
            if (bl && base_dir[bl - 1] != '/') strcat(uri, "/"); /* a base URI ends with '/' */
            cJSON *bases = cJSON_AddObjectToObject(run, "originalUriBaseIds");
            cJSON *b = cJSON_AddObjectToObject(bases, SARIF_BASE);
            cJSON_AddStringToObject(b, "uri", uri);
        }
    }
    cJSON_AddArrayToObject(run, "results");
    cJSON *invs = cJSON_AddArrayToObject(run, "invocations");
    cJSON *inv = cJSON_CreateObject();
    cJSON_AddBoolToObject(inv, "executionSuccessful", 1);
    cJSON_AddArrayToObject(inv, "toolExecutionNotifications");
    cJSON_AddItemToArray(invs, inv);
    return log;
}

static cJSON *sarif_run(cJSON *log) {
    return cJSON_GetArrayItem(cJSON_GetObjectItem(log, "runs"), 0);
}

/* A reportingDescriptor for rule id, with the texts of rules.def. */
static cJSON *sarif_rule_new(const char *id) {
    const spa_rule_info *ri = spa_rule_find(id);
    cJSON *r = cJSON_CreateObject();
    if (!r) return NULL;
    cJSON_AddStringToObject(r, "id", id);
    cJSON_AddStringToObject(r, "name", id);
    char fallback[256];
    snprintf(fallback, sizeof fallback, "safepickle rule %s", id);
    sarif_text(r, "shortDescription", ri ? ri->title : fallback);
    sarif_text(r, "fullDescription", ri ? ri->description : fallback);
    cJSON *help = sarif_text(r, "help", ri ? ri->help : "See `safepickle explain FILE` for what the file would do.");
    if (help && ri) {
        size_t n = strlen(ri->description) + strlen(ri->help) + 64;
        char *md = malloc(n);
        if (md) {
            snprintf(md, n, "%s\n\n**What to do:** %s", ri->description, ri->help);
            cJSON_AddStringToObject(help, "markdown", md);
            free(md);
        }
    }
    double sev = ri ? strtod(ri->security_severity, NULL) : 7.5;
    cJSON *cfg = cJSON_AddObjectToObject(r, "defaultConfiguration");
    cJSON_AddStringToObject(cfg, "level", sev >= 7.0 ? "error" : sev >= 4.0 ? "warning" : "note");
    cJSON *props = cJSON_AddObjectToObject(r, "properties");
    cJSON_AddStringToObject(props, "security-severity", ri ? ri->security_severity : "7.5");
    cJSON_AddStringToObject(props, "precision", "high");
    cJSON_AddStringToObject(props, "problem.severity", sev >= 7.0 ? "error" : sev >= 4.0 ? "warning" : "recommendation");
    sarif_tags(props, ri ? ri->tags : "security,pickle");
    return r;
}

/* Index of rule id in the driver's rules, adding it when new. */
static int sarif_rule(cJSON *run, const char *id) {
    cJSON *rules = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(run, "tool"), "driver"), "rules");
    int i = 0;
    cJSON *r;
    cJSON_ArrayForEach(r, rules) {
        cJSON *rid = cJSON_GetObjectItem(r, "id");
        if (cJSON_IsString(rid) && !strcmp(rid->valuestring, id)) return i;
        i++;
    }
    r = sarif_rule_new(id);
    if (r) cJSON_AddItemToArray(rules, r);
    return i;
}

/* artifactLocation for path: file:// when absolute, else relative to %SRCROOT%. */
static void sarif_artifact(cJSON *run, cJSON *parent, const char *path) {
    cJSON *al = cJSON_AddObjectToObject(parent, "artifactLocation");
    char uri[SARIF_URI_MAX];
    if (!spa_sarif_uri(path ? path : "", uri, sizeof uri)) snprintf(uri, sizeof uri, "%s", "unrepresentable-path");
    const char *u = uri;
    while (u[0] == '.' && u[1] == '/') u += 2; /* "./x" and "x" are one artifact */
    cJSON_AddStringToObject(al, "uri", u);
    if (path && path[0] != '/' && cJSON_GetObjectItem(run, "originalUriBaseIds"))
        cJSON_AddStringToObject(al, "uriBaseId", SARIF_BASE);
}

static void sarif_location(cJSON *run, cJSON *res, const char *path, const char *loc, uint64_t off) {
    cJSON *locs = cJSON_AddArrayToObject(res, "locations");
    cJSON *l = cJSON_CreateObject();
    cJSON_AddItemToArray(locs, l);
    cJSON *pl = cJSON_AddObjectToObject(l, "physicalLocation");
    sarif_artifact(run, pl, path);
    /* A binary artifact: the region is a byte range. The reason's offset is a file
     * offset when the stream is the file itself; inside a member or a compressed
     * stream it is relative to that stream, which the logical location names. */
    bool in_file = loc && path && !strcmp(loc, path);
    cJSON *reg = cJSON_AddObjectToObject(pl, "region");
    cJSON_AddNumberToObject(reg, "startLine", 1);
    cJSON_AddNumberToObject(reg, "byteOffset", in_file ? (double)off : 0);
    cJSON_AddNumberToObject(reg, "byteLength", in_file ? 1 : 0);
    cJSON *ll = cJSON_AddArrayToObject(l, "logicalLocations");
    cJSON *lo = cJSON_CreateObject();
    char fq[1024];
    snprintf(fq, sizeof fq, "%s+%llu", loc && loc[0] ? loc : (path ? path : "?"), (unsigned long long)off);
    cJSON_AddStringToObject(lo, "fullyQualifiedName", fq);
    cJSON_AddStringToObject(lo, "kind", "object");
    cJSON_AddItemToArray(ll, lo);
}

/* A fingerprint that stays the same across runs and machines for the same finding
 * in the same file: rule, the artifact's URI, the stream inside it and the offset. */
static void sarif_fingerprint(cJSON *res, const char *path, const spa_reason *x) {
    spa_sha256 h;
    uint8_t d[32];
    char hex[65];
    const char *loc = x->loc ? x->loc : "";
    size_t pl = path ? strlen(path) : 0;
    if (path && !strncmp(loc, path, pl)) loc += pl; /* the part of loc inside the file */
    while (path && path[0] == '.' && path[1] == '/') path += 2;
    char offs[32];
    snprintf(offs, sizeof offs, "%llu", (unsigned long long)x->off);
    spa_sha256_init(&h);
    const char *parts[] = { x->rule ? x->rule : "", path ? path : "", loc, offs };
    for (size_t i = 0; i < 4; i++) spa_sha256_update(&h, parts[i], strlen(parts[i]) + 1);
    spa_sha256_final(&h, d);
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
    cJSON *fp = cJSON_AddObjectToObject(res, "partialFingerprints");
    cJSON_AddStringToObject(fp, "safepickleFinding/v1", hex);
}

void spa_sarif_add(cJSON *log, const char *path, const spa_result *r, spa_action act) {
    cJSON *run = sarif_run(log);
    if (!run || !r) return;
    cJSON *results = cJSON_GetObjectItem(run, "results");
    for (size_t i = 0; i < r->n_reasons; i++) {
        const spa_reason *x = &r->reasons[i];
        if (x->severity == SPA_VERDICT_SAFE) continue;
        cJSON *res = cJSON_CreateObject();
        if (!res) return;
        cJSON_AddStringToObject(res, "ruleId", x->rule);
        cJSON_AddNumberToObject(res, "ruleIndex", sarif_rule(run, x->rule));
        cJSON_AddStringToObject(res, "level", sarif_level(x->severity));
        size_t n = strlen(x->msg ? x->msg : "") + 128;
        char *txt = malloc(n);
        if (txt) snprintf(txt, n, "%s [file verdict %s, action %s]", x->msg ? x->msg : "",
                          spa_verdict_name(r->verdict), spa_action_name(act));
        sarif_text(res, "message", txt ? txt : (x->msg ? x->msg : ""));
        free(txt);
        sarif_location(run, res, path, x->loc, x->off);
        sarif_fingerprint(res, path, x);
        cJSON *props = cJSON_AddObjectToObject(res, "properties");
        cJSON_AddStringToObject(props, "severity", spa_verdict_name(x->severity));
        cJSON_AddStringToObject(props, "verdict", spa_verdict_name(r->verdict));
        cJSON_AddStringToObject(props, "action", spa_action_name(act));
        cJSON_AddItemToArray(results, res);
    }
}

void spa_sarif_add_error(cJSON *log, const char *path, const spa_err *err) {
    cJSON *run = sarif_run(log);
    if (!run) return;
    cJSON *inv = cJSON_GetArrayItem(cJSON_GetObjectItem(run, "invocations"), 0);
    cJSON_ReplaceItemInObject(inv, "executionSuccessful", cJSON_CreateBool(0));
    cJSON *n = cJSON_CreateObject();
    cJSON_AddStringToObject(n, "level", "error");
    char txt[1024];
    snprintf(txt, sizeof txt, "%s: %s", path ? path : "?", err && err->msg ? err->msg : "error");
    sarif_text(n, "message", txt);
    cJSON *locs = cJSON_AddArrayToObject(n, "locations");
    cJSON *l = cJSON_CreateObject();
    cJSON_AddItemToArray(locs, l);
    sarif_artifact(run, cJSON_AddObjectToObject(l, "physicalLocation"), path);
    cJSON_AddItemToArray(cJSON_GetObjectItem(inv, "toolExecutionNotifications"), n);
}
