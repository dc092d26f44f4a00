/* capi.c - the flat C ABI of libspa.so (see capi.h): scan or judge, then the same
 * JSON entry `scan --format json` prints for one file, through the same writers. */
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "capi.h"
#include "jsonout.h"
#include "output.h"
#include "report.h"
#include "spa.h"

static char *capi_error(const char *code, const char *msg) {
    cJSON *o = cJSON_CreateObject();
    cJSON *e = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(e, "code", code);
    cJSON_AddStringToObject(e, "msg", msg ? msg : "");
    char *s = spa_json_print(o, false, true);
    cJSON_Delete(o);
    return s;
}

static char *capi_policy(const char *policy, spa_policy **out) {
    spa_err e = { SPA_OK, NULL, 0 };
    if (!policy || !*policy) return spa_policy_default(out) == SPA_OK ? NULL : capi_error("policy", "the embedded default policy is invalid");
    char msg[1024];
    if (spa_policy_load(policy, out, &e) == SPA_OK) {
        if (!spa_policy_index_unmet(*out, msg, sizeof msg)) return NULL;
        spa_policy_free(*out);
        *out = NULL;
        return capi_error("policy", msg);
    }
    snprintf(msg, sizeof msg, "policy %s: %s (byte %llu)", policy, e.msg ? e.msg : "invalid", (unsigned long long)e.off);
    return capi_error("policy", msg);
}

/* Classify, decide, and render one result. Consumes r. */
static char *capi_render(spa_result *r, const spa_policy *pol) {
    spa_code crc = spa_classify(r, pol);
    spa_action act = crc == SPA_OK ? spa_policy_decide(pol, r) : pol->on_error;
    cJSON *o = spa_report_json(r);
    spa_verdict_json(o, r, act);
    if (o && crc != SPA_OK) cJSON_AddStringToObject(o, "classify_error", spa_code_name(crc));
    char *s = o ? spa_json_print(o, false, true) : NULL;
    cJSON_Delete(o);
    spa_result_free(r);
    return s;
}

static char *capi_run(const uint8_t *p, size_t n, const char *path, const char *name, const char *policy) {
    spa_policy *pol = NULL;
    char *perr = capi_policy(policy, &pol);
    if (perr) return perr;
    spa_scan_opts o;
    spa_scan_opts_default(&o);
    o.limits = pol->limits;
    o.name = name ? name : path ? path : "<bytes>";
    spa_result *r = NULL;
    spa_err err = { SPA_OK, NULL, 0 };
    spa_code rc = path ? spa_scan_path(&o, path, &r, &err) : spa_scan_mem(&o, p, n, &r, &err);
    char *s;
    if (rc != SPA_OK || !r) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", err.msg ? err.msg : "scan failed");
        s = capi_error(spa_code_name(rc != SPA_OK ? rc : err.code), msg);
    } else {
        s = capi_render(r, pol);
    }
    spa_policy_free(pol);
    return s;
}

char *spa_capi_judge(const uint8_t *p, size_t n, const char *name, const char *policy) {
    if (!p && n) return capi_error("usage", "no bytes");
    return capi_run(p ? p : (const uint8_t *)"", n, NULL, name, policy);
}

char *spa_capi_scan(const char *path, const char *policy) {
    if (!path) return capi_error("usage", "no path");
    return capi_run(NULL, 0, path, NULL, policy);
}

const char *spa_capi_version(void) { return SPA_VERSION; }

void spa_capi_free(char *s) { free(s); }
