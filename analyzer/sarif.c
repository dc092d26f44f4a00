/* sarif.c - output of classifier verdicts: a text block, JSON fields for the scan
 * report, and SARIF 2.1.0 (one rule per reason id, one result per reason, levels
 * error/warning/note by severity) for code-scanning tools. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "verdict.h"

void spa_verdict_text(FILE *f, const spa_result *r, spa_action act) {
    if (!r) return;
    fprintf(f, "verdict: %s  action: %s\n", spa_verdict_name(r->verdict), spa_action_name(act));
    for (size_t i = 0; i < r->n_reasons; i++) {
        const spa_reason *x = &r->reasons[i];
        fprintf(f, "  [%s] %s at %s+%llu: %s\n", spa_verdict_name(x->severity), x->rule,
                x->loc && x->loc[0] ? x->loc : (r->path ? r->path : "?"), (unsigned long long)x->off, x->msg);
    }
}

void spa_verdict_json(cJSON *obj, const spa_result *r, spa_action act) {
    if (!obj || !r) return;
    cJSON_AddStringToObject(obj, "verdict", spa_verdict_name(r->verdict));
    cJSON_AddStringToObject(obj, "action", spa_action_name(act));
    cJSON *a = cJSON_AddArrayToObject(obj, "reasons");
    for (size_t i = 0; a && i < r->n_reasons; i++) {
        cJSON *o = spa_reason_json(&r->reasons[i]);
        if (!o) break;
        cJSON_AddItemToArray(a, o);
    }
}

/* One reason as JSON, the same shape in scan output and audit records. */
cJSON *spa_reason_json(const spa_reason *x) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "severity", spa_verdict_name(x->severity));
    cJSON_AddStringToObject(o, "rule", x->rule ? x->rule : "");
    cJSON_AddStringToObject(o, "msg", x->msg ? x->msg : "");
    cJSON_AddStringToObject(o, "loc", x->loc ? x->loc : "");
    cJSON_AddNumberToObject(o, "off", (double)x->off);
    return o;
}

static const char *sarif_level(spa_verdict v) {
    switch (v) {
    case SPA_VERDICT_MALICIOUS: return "error";
    case SPA_VERDICT_UNSCANNABLE: return "error";
    case SPA_VERDICT_SUSPICIOUS: return "warning";
    default: return "note";
    }
}

cJSON *spa_sarif_new(void) {
    cJSON *log = cJSON_CreateObject();
    if (!log) return NULL;
    cJSON_AddStringToObject(log, "$schema", "https://json.schemastore.org/sarif-2.1.0.json");
    cJSON_AddStringToObject(log, "version", "2.1.0");
    cJSON *runs = cJSON_AddArrayToObject(log, "runs");
    cJSON *run = cJSON_CreateObject();
    cJSON_AddItemToArray(runs, run);
    cJSON *tool = cJSON_AddObjectToObject(run, "tool");
    cJSON *drv = cJSON_AddObjectToObject(tool, "driver");
    cJSON_AddStringToObject(drv, "name", "safepickle");
    cJSON_AddStringToObject(drv, "version", SPA_VERSION);
    cJSON_AddStringToObject(drv, "informationUri", "https://github.com/safepickle/safepickle");
    cJSON_AddArrayToObject(drv, "rules");
    cJSON_AddArrayToObject(run, "results");
    cJSON_AddArrayToObject(run, "invocations");
    cJSON *inv = cJSON_CreateObject();
    cJSON_AddBoolToObject(inv, "executionSuccessful", 1);
    cJSON_AddArrayToObject(inv, "toolExecutionNotifications");
    cJSON_AddItemToArray(cJSON_GetObjectItem(run, "invocations"), inv);
    return log;
}

static cJSON *sarif_run(cJSON *log) {
    return cJSON_GetArrayItem(cJSON_GetObjectItem(log, "runs"), 0);
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
    r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "id", id);
    cJSON_AddStringToObject(r, "name", id);
    cJSON *sd = cJSON_AddObjectToObject(r, "shortDescription");
    char txt[160];
    snprintf(txt, sizeof txt, "safepickle classifier rule %s (see README, section classifier)", id);
    cJSON_AddStringToObject(sd, "text", txt);
    cJSON_AddItemToArray(rules, r);
    return i;
}

static void sarif_location(cJSON *res, const char *path, const char *loc, uint64_t off) {
    cJSON *locs = cJSON_AddArrayToObject(res, "locations");
    cJSON *l = cJSON_CreateObject();
    cJSON_AddItemToArray(locs, l);
    cJSON *pl = cJSON_AddObjectToObject(l, "physicalLocation");
    cJSON *al = cJSON_AddObjectToObject(pl, "artifactLocation");
    cJSON_AddStringToObject(al, "uri", path ? path : "");
    /* offsets are stream-relative: the provenance string says which stream */
    if (loc && path && !strcmp(loc, path)) {
        cJSON *reg = cJSON_AddObjectToObject(pl, "region");
        cJSON_AddNumberToObject(reg, "byteOffset", (double)off);
        cJSON_AddNumberToObject(reg, "byteLength", 1);
    }
    cJSON *ll = cJSON_AddArrayToObject(l, "logicalLocations");
    cJSON *lo = cJSON_CreateObject();
    char fq[512];
    snprintf(fq, sizeof fq, "%s+%llu", loc && loc[0] ? loc : (path ? path : "?"), (unsigned long long)off);
    cJSON_AddStringToObject(lo, "fullyQualifiedName", fq);
    cJSON_AddStringToObject(lo, "kind", "object");
    cJSON_AddItemToArray(ll, lo);
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
        cJSON *m = cJSON_AddObjectToObject(res, "message");
        char txt[640];
        snprintf(txt, sizeof txt, "%s [file verdict %s, action %s]", x->msg, spa_verdict_name(r->verdict),
                 spa_action_name(act));
        cJSON_AddStringToObject(m, "text", txt);
        sarif_location(res, path, x->loc, x->off);
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
    cJSON *m = cJSON_AddObjectToObject(n, "message");
    char txt[512];
    snprintf(txt, sizeof txt, "%s: %s", path ? path : "?", err && err->msg ? err->msg : "error");
    cJSON_AddStringToObject(m, "text", txt);
    cJSON_AddItemToArray(cJSON_GetObjectItem(inv, "toolExecutionNotifications"), n);
}
