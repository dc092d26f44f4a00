/* policy.c - reads safepickle's JSON policies (schema: policies/SCHEMA.md) with cJSON
 * into the plain spa_policy struct, and answers the questions the classifier, CLI and
 * preload ask of it (global rules, trusted paths and digests, the action for a result).
 * Unknown keys, duplicate keys, wrong types and trailing bytes are errors with a byte
 * position; there is never a silent fallback to a weaker policy. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kb.h"
#include "sha256.h"

#define SPA_POLICY_MAX_BYTES (1u << 20)  /* largest policy document accepted */
#define SPA_POLICY_MAX_LIST 4096         /* entries in one pattern/path/digest list */
#define SPA_POLICY_MAX_STR 4096          /* bytes in one string value */
#define PJ_MAX_DEPTH 64                  /* nesting the position finder follows */

extern const char spa_policy_default_blob[], spa_policy_default_blob_end[];

/* ------------------------------------------------------------------ names */
const char *spa_mode_name(spa_mode m) {
    switch (m) {
    case SPA_MODE_ENFORCE: return "enforce";
    case SPA_MODE_AUDIT: return "audit";
    case SPA_MODE_OFF: return "off";
    }
    return "invalid";
}

const char *spa_action_name(spa_action a) {
    switch (a) {
    case SPA_ACT_ALLOW: return "allow";
    case SPA_ACT_WARN: return "warn";
    case SPA_ACT_BLOCK: return "block";
    }
    return "invalid";
}

const char *spa_policy_default_json(size_t *n) {
    if (n) *n = (size_t)(spa_policy_default_blob_end - spa_policy_default_blob) - 1;
    return spa_policy_default_blob;
}

/* ------------------------------------------------------------------ positions */
/* cJSON keeps no offsets, so errors about a value are located by re-walking the raw
 * text along the same path (object keys / array indexes). */
typedef struct pj_step { const char *key; int idx; } pj_step;

static size_t pj_ws(const char *s, size_t n, size_t i) {
    while (i < n && (unsigned char)s[i] <= 32) i++; /* what cJSON skips as whitespace */
    return i;
}

static size_t pj_str_end(const char *s, size_t n, size_t i) { /* i at '"' */
    for (i++; i < n; i++) {
        if (s[i] == '\\') { i++; continue; }
        if (s[i] == '"') return i + 1;
    }
    return n;
}

static size_t pj_value_end(const char *s, size_t n, size_t i, int depth) {
    i = pj_ws(s, n, i);
    if (i >= n || depth > PJ_MAX_DEPTH) return n;
    if (s[i] == '"') return pj_str_end(s, n, i);
    if (s[i] == '{' || s[i] == '[') {
        char close = s[i] == '{' ? '}' : ']';
        i++;
        for (;;) {
            size_t at = i;
            i = pj_ws(s, n, i);
            if (i >= n) return n;
            if (s[i] == close) return i + 1;
            if (s[i] == ',') { i++; continue; }
            if (close == '}') {
                i = pj_str_end(s, n, i);
                i = pj_ws(s, n, i);
                if (i < n && s[i] == ':') i++;
            }
            i = pj_value_end(s, n, i, depth + 1);
            if (i <= at) return n; /* no progress: malformed, give up */
        }
    }
    while (i < n && !strchr(",}] \t\r\n", s[i])) i++;
    return i;
}

/* Offset of the value at path (or of its key when at_key), or `fallback`. */
static size_t pj_locate(const char *s, size_t n, const pj_step *path, int np, bool at_key, size_t fallback) {
    size_t i = pj_ws(s, n, 0);
    for (int k = 0; k < np; k++) {
        if (i >= n) return fallback;
        if (path[k].key) {
            if (s[i] != '{') return fallback;
            i++;
            bool found = false;
            int seen = 0;
            for (;;) {
                size_t at = i;
                i = pj_ws(s, n, i);
                if (i >= n || s[i] == '}') return fallback;
                if (s[i] == ',') { i++; continue; }
                if (s[i] != '"') return fallback;
                size_t ks = i, ke = pj_str_end(s, n, i);
                size_t kl = strlen(path[k].key);
                bool match = ke - ks == kl + 2 && !memcmp(s + ks + 1, path[k].key, kl);
                i = pj_ws(s, n, ke);
                if (i < n && s[i] == ':') i++;
                i = pj_ws(s, n, i);
                if (match && seen++ == path[k].idx) { /* idx: which occurrence of a repeated key */
                    if (k == np - 1 && at_key) return ks;
                    found = true;
                    break;
                }
                i = pj_value_end(s, n, i, 0);
                if (i <= at) return fallback;
            }
            if (!found) return fallback;
        } else {
            if (s[i] != '[') return fallback;
            i++;
            int idx = 0;
            for (;;) {
                i = pj_ws(s, n, i);
                if (i >= n || s[i] == ']') return fallback;
                if (s[i] == ',') { i++; continue; }
                if (idx == path[k].idx) break;
                size_t at = i;
                i = pj_value_end(s, n, i, 0);
                if (i <= at) return fallback;
                idx++;
            }
        }
    }
    return i;
}

/* ------------------------------------------------------------------ parser state */
typedef struct pp {
    const char *json;
    size_t n;
    spa_err *err;
    pj_step path[8];
    int np;
} pp;

static spa_code pp_fail(pp *x, const char *msg, bool at_key) {
    x->err->code = SPA_E_POLICY;
    x->err->msg = msg;
    x->err->off = pj_locate(x->json, x->n, x->path, x->np, at_key, 0);
    return SPA_E_POLICY;
}

static void pp_push(pp *x, const char *key, int idx) {
    if (x->np < 8) { x->path[x->np].key = key; x->path[x->np].idx = idx; }
    x->np++;
}
static void pp_pop(pp *x) { x->np--; }

/* Reject unknown and duplicate keys of an object. */
static spa_code pp_keys(pp *x, const cJSON *obj, const char *const *allowed) {
    if (!cJSON_IsObject(obj)) return pp_fail(x, "expected a JSON object", false);
    for (const cJSON *c = obj->child; c; c = c->next) {
        bool ok = false;
        for (const char *const *a = allowed; *a; a++) if (!strcmp(*a, c->string)) ok = true;
        int nth = 0;
        for (const cJSON *d = obj->child; d != c; d = d->next)
            if (!strcmp(d->string, c->string)) nth++;
        pp_push(x, c->string, nth);
        if (!ok) return pp_fail(x, "unknown key (a typo must never weaken a policy)", true);
        if (nth) return pp_fail(x, "duplicate key", true);
        pp_pop(x);
    }
    return SPA_OK;
}

static spa_code pp_action(pp *x, const cJSON *v, spa_action *out) {
    if (!cJSON_IsString(v)) return pp_fail(x, "expected \"allow\", \"warn\" or \"block\"", false);
    if (!strcmp(v->valuestring, "allow")) *out = SPA_ACT_ALLOW;
    else if (!strcmp(v->valuestring, "warn")) *out = SPA_ACT_WARN;
    else if (!strcmp(v->valuestring, "block")) *out = SPA_ACT_BLOCK;
    else return pp_fail(x, "unknown action: expected \"allow\", \"warn\" or \"block\"", false);
    return SPA_OK;
}

static spa_code pp_bool(pp *x, const cJSON *v, bool *out) {
    if (!cJSON_IsBool(v)) return pp_fail(x, "expected true or false", false);
    *out = cJSON_IsTrue(v);
    return SPA_OK;
}

static void strv_free(spa_strv *s);

/* A list in the user's document replaces the base (default.json) list. */
static spa_code pp_strv(pp *x, const cJSON *v, spa_strv *out, bool nonempty_items) {
    strv_free(out);
    if (!cJSON_IsArray(v)) return pp_fail(x, "expected an array of strings", false);
    int cnt = cJSON_GetArraySize(v);
    if (cnt > SPA_POLICY_MAX_LIST) return pp_fail(x, "list too long (max_list 4096)", false);
    out->v = calloc((size_t)cnt + 1, sizeof *out->v);
    if (!out->v) { x->err->code = SPA_E_NOMEM; x->err->msg = "out of memory"; x->err->off = 0; return SPA_E_NOMEM; }
    int i = 0;
    for (const cJSON *c = v->child; c; c = c->next, i++) {
        pp_push(x, NULL, i);
        if (!cJSON_IsString(c)) return pp_fail(x, "expected a string", false);
        size_t l = strlen(c->valuestring);
        if (nonempty_items && l == 0) return pp_fail(x, "empty pattern", false);
        if (l > SPA_POLICY_MAX_STR) return pp_fail(x, "string too long (max_str 4096)", false);
        out->v[out->n] = strdup(c->valuestring);
        if (!out->v[out->n]) { x->err->code = SPA_E_NOMEM; x->err->msg = "out of memory"; return SPA_E_NOMEM; }
        out->n++;
        pp_pop(x);
    }
    return SPA_OK;
}

static void strv_free(spa_strv *s) {
    for (size_t i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
    s->v = NULL;
    s->n = 0;
}

bool spa_sha256_parse(const char *hex, uint8_t out[32]) {
    if (!hex || strlen(hex) != 64) return false;
    for (int i = 0; i < 32; i++) {
        int v = 0;
        for (int k = 0; k < 2; k++) {
            char ch = hex[2 * i + k];
            int d;
            if (ch >= '0' && ch <= '9') d = ch - '0';
            else if (ch >= 'a' && ch <= 'f') d = ch - 'a' + 10;
            else if (ch >= 'A' && ch <= 'F') d = ch - 'A' + 10;
            else return false;
            v = v * 16 + d;
        }
        out[i] = (uint8_t)v;
    }
    return true;
}

/* ------------------------------------------------------------------ sections */
static const char *const pp_top_keys[] = {
    "schema", "name", "description", "mode", "actions", "on_limit", "fail_mode", "globals",
    "trusted", "limits", "audit_log", "targets", "errno", "layers", "runtime", "require_index", NULL};

/* "name" (policies/SCHEMA.md) */
static spa_code pp_key_name(pp *x, const cJSON *v, spa_policy *p) {
    (void)p;
    pp_push(x, "name", 0);
    if (!cJSON_IsString(v) || strlen(v->valuestring) > 256) return pp_fail(x, "expected a string (max 256 bytes)", false);
    free(p->name);
    p->name = strdup(v->valuestring);
    pp_pop(x);
    return SPA_OK;
}

/* "description" (policies/SCHEMA.md) */
static spa_code pp_key_description(pp *x, const cJSON *v, spa_policy *p) {
    (void)p;
    pp_push(x, "description", 0);
    if (!cJSON_IsString(v)) return pp_fail(x, "expected a string", false);
    pp_pop(x);
    return SPA_OK;
}

/* "mode" (policies/SCHEMA.md) */
static spa_code pp_key_mode(pp *x, const cJSON *v, spa_policy *p) {
    (void)p;
    pp_push(x, "mode", 0);
    if (!cJSON_IsString(v)) return pp_fail(x, "expected \"enforce\", \"audit\" or \"off\"", false);
    if (!strcmp(v->valuestring, "enforce")) p->mode = SPA_MODE_ENFORCE;
    else if (!strcmp(v->valuestring, "audit")) p->mode = SPA_MODE_AUDIT;
    else if (!strcmp(v->valuestring, "off")) p->mode = SPA_MODE_OFF;
    else return pp_fail(x, "unknown mode: expected \"enforce\", \"audit\" or \"off\"", false);
    pp_pop(x);
    return SPA_OK;
}

/* "actions" (policies/SCHEMA.md) */
static spa_code pp_key_actions(pp *x, const cJSON *v, spa_policy *p) {
    spa_code rc;
    (void)p;
    static const char *const k[] = {"safe", "suspicious", "malicious", "unscannable", NULL};
    pp_push(x, "actions", 0);
    if ((rc = pp_keys(x, v, k))) return rc;
    for (int i = 0; i < SPA_VERDICT_COUNT; i++) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(v, k[i]);
        if (!a) continue;
        pp_push(x, k[i], 0);
        if ((rc = pp_action(x, a, &p->on_verdict[i]))) return rc;
        pp_pop(x);
    }
    pp_pop(x);
    return SPA_OK;
}

/* "on_limit" (policies/SCHEMA.md) */
static spa_code pp_key_on_limit(pp *x, const cJSON *v, spa_policy *p) {
    spa_code rc;
    (void)p;
    pp_push(x, "on_limit", 0);
    if ((rc = pp_action(x, v, &p->on_limit))) return rc;
    pp_pop(x);
    return SPA_OK;
}

/* "fail_mode" (policies/SCHEMA.md) */
static spa_code pp_key_fail_mode(pp *x, const cJSON *v, spa_policy *p) {
    spa_code rc;
    (void)p;
    pp_push(x, "fail_mode", 0);
    if ((rc = pp_action(x, v, &p->on_error))) return rc;
    pp_pop(x);
    return SPA_OK;
}

/* "globals" (policies/SCHEMA.md) */
static spa_code pp_key_globals(pp *x, const cJSON *v, spa_policy *p) {
    spa_code rc;
    (void)p;
    static const char *const k[] = {"allow", "deny", NULL};
    pp_push(x, "globals", 0);
    if ((rc = pp_keys(x, v, k))) return rc;
    const cJSON *a;
    if ((a = cJSON_GetObjectItemCaseSensitive(v, "allow"))) {
        pp_push(x, "allow", 0);
        if ((rc = pp_strv(x, a, &p->allow_globals, true))) return rc;
        pp_pop(x);
    }
    if ((a = cJSON_GetObjectItemCaseSensitive(v, "deny"))) {
        pp_push(x, "deny", 0);
        if ((rc = pp_strv(x, a, &p->deny_globals, true))) return rc;
        pp_pop(x);
    }
    pp_pop(x);
    return SPA_OK;
}

/* "trusted" (policies/SCHEMA.md) */
static spa_code pp_key_trusted(pp *x, const cJSON *v, spa_policy *p) {
    spa_code rc;
    (void)p;
    static const char *const k[] = {"paths", "sha256", NULL};
    pp_push(x, "trusted", 0);
    if ((rc = pp_keys(x, v, k))) return rc;
    const cJSON *a;
    if ((a = cJSON_GetObjectItemCaseSensitive(v, "paths"))) {
        pp_push(x, "paths", 0);
        if ((rc = pp_strv(x, a, &p->trusted_paths, true))) return rc;
        for (size_t i = 0; i < p->trusted_paths.n; i++) {
            if (p->trusted_paths.v[i][0] != '/') {
                pp_push(x, NULL, (int)i);
                return pp_fail(x, "trusted path glob must be absolute", false);
            }
        }
        pp_pop(x);
    }
    if ((a = cJSON_GetObjectItemCaseSensitive(v, "sha256"))) {
        pp_push(x, "sha256", 0);
        spa_strv hs = {0};
        if ((rc = pp_strv(x, a, &hs, true))) { strv_free(&hs); return rc; }
        free(p->trusted_sha256);
        p->trusted_sha256 = NULL;
        p->n_trusted_sha256 = 0;
        p->trusted_sha256 = calloc(hs.n + 1, 32);
        if (!p->trusted_sha256) { strv_free(&hs); x->err->code = SPA_E_NOMEM; x->err->msg = "out of memory"; return SPA_E_NOMEM; }
        for (size_t i = 0; i < hs.n; i++) {
            if (!spa_policy_trusted_entry(hs.v[i], p->trusted_sha256[i])) {
                strv_free(&hs);
                pp_push(x, NULL, (int)i);
                return pp_fail(x, "expected 64 hex digits (a SHA-256 digest), optionally followed by "
                                  "two spaces and the file's name", false);
            }
        }
        p->n_trusted_sha256 = hs.n;
        strv_free(&hs);
        pp_pop(x);
    }
    pp_pop(x);
    return SPA_OK;
}

/* "limits" (policies/SCHEMA.md) */
static spa_code pp_key_limits(pp *x, const cJSON *v, spa_policy *p) {
    (void)p;
    pp_push(x, "limits", 0);
    if (!cJSON_IsObject(v)) return pp_fail(x, "expected an object of limit names to numbers", false);
    for (const cJSON *c = v->child; c; c = c->next) {
        int nth = 0;
        for (const cJSON *d = v->child; d != c; d = d->next)
            if (!strcmp(d->string, c->string)) nth++;
        pp_push(x, c->string, nth);
        int id = -1;
        for (int i = 0; i < SPA_LIM_COUNT; i++)
            if (!strcmp(spa_limit_name((spa_limit_id)i), c->string)) id = i;
        if (id < 0) return pp_fail(x, "unknown limit name", true);
        if (nth) return pp_fail(x, "duplicate key", true);
        if (!cJSON_IsNumber(c) || c->valuedouble < 1 || c->valuedouble > 9007199254740992.0 ||
            c->valuedouble != (double)(uint64_t)c->valuedouble)
            return pp_fail(x, "limit must be a positive integer", false);
        p->limits.v[id] = (uint64_t)c->valuedouble;
        pp_pop(x);
    }
    pp_pop(x);
    return SPA_OK;
}

/* "audit_log" (policies/SCHEMA.md) */
static spa_code pp_key_audit_log(pp *x, const cJSON *v, spa_policy *p) {
    (void)p;
    pp_push(x, "audit_log", 0);
    free(p->audit_log);
    p->audit_log = NULL;
    if (cJSON_IsString(v)) {
        const char *s = v->valuestring;
        if (!*s) return pp_fail(x, "empty audit_log (use null for none)", false);
        if (strcmp(s, "state") && strcmp(s, "syslog") && strcmp(s, "stderr") && strcmp(s, "stdout") && s[0] != '/')
            return pp_fail(x, "audit_log must be \"state\", \"syslog\", \"stderr\", \"stdout\", an absolute path or null",
                           false);
        if (strlen(s) > SPA_POLICY_MAX_STR) return pp_fail(x, "string too long", false);
        p->audit_log = strdup(s);
    } else if (!cJSON_IsNull(v)) {
        return pp_fail(x, "audit_log must be a string or null", false);
    }
    pp_pop(x);
    return SPA_OK;
}

/* "targets" (policies/SCHEMA.md) */
static spa_code pp_key_targets(pp *x, const cJSON *v, spa_policy *p) {
    spa_code rc;
    (void)p;
    pp_push(x, "targets", 0);
    if ((rc = pp_strv(x, v, &p->targets, true))) return rc;
    if (!p->targets.n)
        return pp_fail(x, "empty targets would protect no process (use \"mode\": \"off\" to turn "
                          "safepickle off)", false);
    pp_pop(x);
    return SPA_OK;
}

/* "errno" (policies/SCHEMA.md) */
static spa_code pp_key_errno(pp *x, const cJSON *v, spa_policy *p) {
    (void)p;
    static const struct { const char *n; int v; } en[] = {
        {"EACCES", EACCES}, {"EPERM", EPERM}, {"ENOENT", ENOENT}, {"EIO", EIO}, {"EINVAL", EINVAL}};
    pp_push(x, "errno", 0);
    int e = -1;
    if (cJSON_IsString(v)) {
        for (size_t i = 0; i < sizeof en / sizeof *en; i++) if (!strcmp(en[i].n, v->valuestring)) e = en[i].v;
    } else if (cJSON_IsNumber(v) && v->valuedouble >= 1 && v->valuedouble <= 4095 &&
               v->valuedouble == (double)(int)v->valuedouble) {
        e = (int)v->valuedouble;
    }
    if (e < 0) return pp_fail(x, "errno must be EACCES, EPERM, ENOENT, EIO, EINVAL or a number 1-4095", false);
    p->block_errno = e;
    pp_pop(x);
    return SPA_OK;
}

/* "layers" (policies/SCHEMA.md) */
static spa_code pp_key_layers(pp *x, const cJSON *v, spa_policy *p) {
    spa_code rc;
    (void)p;
    static const char *const k[] = {"file_hooks", "audit_hook", "runtime_behaviour", NULL};
    bool *dst[] = {&p->layer_file, &p->layer_audit_hook, &p->runtime_behaviour};
    pp_push(x, "layers", 0);
    if ((rc = pp_keys(x, v, k))) return rc;
    for (int i = 0; k[i]; i++) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(v, k[i]);
        if (!a) continue;
        pp_push(x, k[i], 0);
        if ((rc = pp_bool(x, a, dst[i]))) return rc;
        pp_pop(x);
    }
    pp_pop(x);
    return SPA_OK;
}

/* "runtime" (policies/SCHEMA.md) */
static spa_code pp_key_runtime(pp *x, const cJSON *v, spa_policy *p) {
    spa_code rc;
    (void)p;
    static const char *const k[] = {"allow_imports", NULL};
    pp_push(x, "runtime", 0);
    if ((rc = pp_keys(x, v, k))) return rc;
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(v, "allow_imports");
    if (a) {
        pp_push(x, "allow_imports", 0);
        if ((rc = pp_strv(x, a, &p->runtime_allow_imports, true))) return rc;
        pp_pop(x);
    }
    pp_pop(x);
    return SPA_OK;
}

/* "require_index" (policies/SCHEMA.md) */
static spa_code pp_key_require_index(pp *x, const cJSON *v, spa_policy *p) {
    spa_code rc;
    pp_push(x, "require_index", 0);
    if ((rc = pp_bool(x, v, &p->require_index))) return rc;
    pp_pop(x);
    return SPA_OK;
}

/* Each optional top-level key and its parser, in the order they are applied. */
static const struct { const char *key; spa_code (*parse)(pp *, const cJSON *, spa_policy *); } pp_sections[] = {
    {"name", pp_key_name},
    {"description", pp_key_description},
    {"mode", pp_key_mode},
    {"actions", pp_key_actions},
    {"on_limit", pp_key_on_limit},
    {"fail_mode", pp_key_fail_mode},
    {"globals", pp_key_globals},
    {"trusted", pp_key_trusted},
    {"limits", pp_key_limits},
    {"audit_log", pp_key_audit_log},
    {"targets", pp_key_targets},
    {"errno", pp_key_errno},
    {"layers", pp_key_layers},
    {"runtime", pp_key_runtime},
    {"require_index", pp_key_require_index},
};

static spa_code pp_parse_tree(pp *x, const cJSON *root, spa_policy *p) {
    spa_code rc = pp_keys(x, root, pp_top_keys);
    if (rc) return rc;
    const cJSON *v;
    pp_push(x, "schema", 0);
    v = cJSON_GetObjectItemCaseSensitive(root, "schema");
    if (!v) { x->np = 0; return pp_fail(x, "missing \"schema\": 1", false); }
    if (!cJSON_IsNumber(v) || v->valuedouble != 1.0) return pp_fail(x, "unsupported schema version (expected 1)", false);
    pp_pop(x);

    for (size_t i = 0; i < sizeof pp_sections / sizeof pp_sections[0]; i++) {
        if ((v = cJSON_GetObjectItemCaseSensitive(root, pp_sections[i].key)) && (rc = pp_sections[i].parse(x, v, p)))
            return rc;
    }
    return SPA_OK;
}

/* The values every key starts from ARE policies/default.json (embedded): it is
 * parsed onto a zeroed policy whose limits are the analyzer's, and the user's
 * document is overlaid on the result key by key. Nothing else holds a default. */
static spa_code pp_base(spa_policy *p, spa_err *err) {
    spa_limits_default(&p->limits);
    size_t n;
    const char *j = spa_policy_default_json(&n);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(j, n, &end, false);
    if (!root) { err->code = SPA_E_INTERNAL; err->msg = "the embedded default policy does not parse"; return SPA_E_INTERNAL; }
    pp x = {j, n, err, {{0, 0}}, 0};
    spa_code rc = pp_parse_tree(&x, root, p);
    cJSON_Delete(root);
    if (rc == SPA_E_POLICY) { err->code = SPA_E_INTERNAL; err->msg = "the embedded default policy is invalid"; return SPA_E_INTERNAL; }
    free(p->name); /* a document's name is its own: an unnamed policy is not "default" */
    p->name = NULL;
    return rc;
}

spa_code spa_policy_parse(const char *json, size_t n, const char *source, spa_policy **out, spa_err *err) {
    spa_err dummy;
    if (!err) err = &dummy;
    err->code = SPA_OK; err->msg = NULL; err->off = 0;
    if (!out) { err->code = SPA_E_USAGE; err->msg = "no output"; return SPA_E_USAGE; }
    *out = NULL;
    if (!json) { err->code = SPA_E_USAGE; err->msg = "no policy text"; return SPA_E_USAGE; }
    if (n > SPA_POLICY_MAX_BYTES) {
        err->code = SPA_E_POLICY; err->msg = "policy larger than 1 MiB (max_policy_bytes)"; err->off = SPA_POLICY_MAX_BYTES;
        return SPA_E_POLICY;
    }
    if (memchr(json, '\0', n)) {
        err->code = SPA_E_POLICY; err->msg = "NUL byte in policy text";
        err->off = (uint64_t)((const char *)memchr(json, '\0', n) - json);
        return SPA_E_POLICY;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, n, &end, false);
    if (!root) {
        err->code = SPA_E_POLICY;
        err->msg = "invalid JSON";
        err->off = end && end >= json && end <= json + n ? (uint64_t)(end - json) : 0;
        return SPA_E_POLICY;
    }
    size_t tail = end ? (size_t)(end - json) : n;
    tail = pj_ws(json, n, tail);
    if (tail < n) {
        cJSON_Delete(root);
        err->code = SPA_E_POLICY; err->msg = "trailing bytes after the JSON document"; err->off = tail;
        return SPA_E_POLICY;
    }
    spa_policy *p = calloc(1, sizeof *p);
    if (!p) { cJSON_Delete(root); err->code = SPA_E_NOMEM; err->msg = "out of memory"; return SPA_E_NOMEM; }
    spa_code rc = pp_base(p, err);
    pp x = {json, n, err, {{0, 0}}, 0};
    if (rc == SPA_OK) rc = pp_parse_tree(&x, root, p);
    cJSON_Delete(root);
    if (rc == SPA_OK) {
        if (!p->name) p->name = strdup("unnamed");
        p->source = strdup(source ? source : "<memory>");
        if (!p->name || !p->source) { rc = SPA_E_NOMEM; err->code = SPA_E_NOMEM; err->msg = "out of memory"; }
    }
    if (rc != SPA_OK) { spa_policy_free(p); return rc; }
    *out = p;
    return SPA_OK;
}

spa_code spa_policy_load(const char *path, spa_policy **out, spa_err *err) {
    spa_err dummy;
    if (!err) err = &dummy;
    if (out) *out = NULL;
    if (!path || !out) { err->code = SPA_E_USAGE; err->msg = "no policy path"; err->off = 0; return SPA_E_USAGE; }
    /* O_NONBLOCK: a FIFO (or a device) named as the policy must not hang the
     * process (every preloaded program loads the policy before main); it is
     * refused below as not a regular file. O_NONBLOCK has no effect on reads
     * of a regular file. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) { err->code = SPA_E_IO; err->msg = "cannot open policy file"; err->off = 0; return SPA_E_IO; }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        err->code = SPA_E_IO; err->msg = "policy is not a regular file"; err->off = 0;
        return SPA_E_IO;
    }
    if ((uint64_t)st.st_size > SPA_POLICY_MAX_BYTES) {
        close(fd);
        err->code = SPA_E_POLICY; err->msg = "policy larger than 1 MiB (max_policy_bytes)"; err->off = SPA_POLICY_MAX_BYTES;
        return SPA_E_POLICY;
    }
    size_t cap = (size_t)st.st_size + 1, got = 0;
    char *buf = malloc(cap);
    if (!buf) { close(fd); err->code = SPA_E_NOMEM; err->msg = "out of memory"; err->off = 0; return SPA_E_NOMEM; }
    for (;;) {
        if (got == cap) { /* file grew while reading */
            free(buf); close(fd);
            err->code = SPA_E_POLICY; err->msg = "policy changed while being read"; err->off = got;
            return SPA_E_POLICY;
        }
        ssize_t r = read(fd, buf + got, cap - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) { free(buf); close(fd); err->code = SPA_E_IO; err->msg = "read error"; err->off = got; return SPA_E_IO; }
        if (r == 0) break;
        got += (size_t)r;
    }
    close(fd);
    spa_code rc = spa_policy_parse(buf, got, path, out, err);
    free(buf);
    return rc;
}

spa_code spa_policy_default(spa_policy **out) {
    size_t n;
    const char *j = spa_policy_default_json(&n);
    spa_err e;
    spa_code rc = spa_policy_parse(j, n, "<embedded default>", out, &e);
    return rc == SPA_OK ? SPA_OK : (rc == SPA_E_NOMEM ? SPA_E_NOMEM : SPA_E_INTERNAL);
}

void spa_policy_free(spa_policy *p) {
    if (!p) return;
    free(p->name);
    free(p->source);
    strv_free(&p->allow_globals);
    strv_free(&p->deny_globals);
    strv_free(&p->trusted_paths);
    strv_free(&p->targets);
    strv_free(&p->runtime_allow_imports);
    free(p->trusted_sha256);
    free(p->audit_log);
    free(p);
}

/* ------------------------------------------------------------------ questions */
/* Pattern forms: "module:name" (fnmatch on module:name), or a dotted pattern on
 * module.name ("torch.nn.*", "mypkg"): without a wildcard it is a prefix on dotted
 * components. Module aliases are applied (posix:system matches os:system rules). */
static bool pol_match(const char *pat, const char *module, const char *name) {
    char cm[160], a[600], b[600];
    spa_kb_canon(module, cm, sizeof cm);
    for (int pass = 0; pass < 2; pass++) {
        const char *m = pass ? cm : module;
        if (pass && !strcmp(cm, module)) break;
        if (strchr(pat, ':')) {
            snprintf(a, sizeof a, "%s:%s", m, name);
            if (fnmatch(pat, a, 0) == 0) return true;
        } else {
            snprintf(b, sizeof b, "%s.%s", m, name);
            if (strpbrk(pat, "*?[")) {
                if (fnmatch(pat, b, 0) == 0) return true;
            } else {
                size_t l = strlen(pat);
                if (!strncmp(b, pat, l) && (b[l] == '\0' || b[l] == '.')) return true;
            }
        }
    }
    return false;
}

int spa_policy_global_rule(const spa_policy *p, const char *module, const char *name) {
    if (!p || !module || !name) return 0;
    for (size_t i = 0; i < p->deny_globals.n; i++)
        if (pol_match(p->deny_globals.v[i], module, name)) return -1;
    for (size_t i = 0; i < p->allow_globals.n; i++)
        if (pol_match(p->allow_globals.v[i], module, name)) return 1;
    return 0;
}

bool spa_policy_trusts_path(const spa_policy *p, const char *abspath) {
    if (!p || !abspath || abspath[0] != '/') return false;
    for (size_t i = 0; i < p->trusted_paths.n; i++)
        if (fnmatch(p->trusted_paths.v[i], abspath, 0) == 0) return true;
    return false;
}

bool spa_policy_trusts_digest(const spa_policy *p, const uint8_t sha256[32]) {
    if (!p || !sha256) return false;
    for (size_t i = 0; i < p->n_trusted_sha256; i++)
        if (!memcmp(p->trusted_sha256[i], sha256, 32)) return true;
    return false;
}

bool spa_policy_layer_on(const spa_policy *p, spa_layer l) {
    if (!p) return true;
    if (p->mode == SPA_MODE_OFF) return false;
    switch (l) {
    case SPA_LAYER_FILE: return p->layer_file;
    case SPA_LAYER_AUDIT_HOOK: return p->layer_audit_hook;
    case SPA_LAYER_BEHAVIOUR: return p->layer_audit_hook && p->runtime_behaviour;
    }
    return true;
}

bool spa_policy_index_unmet(const spa_policy *p, char *why, size_t n) {
    if (why && n) why[0] = '\0';
    if (!p || !p->require_index || p->mode == SPA_MODE_OFF) return false;
    spa_kb_index_state st = spa_kb_index_check();
    if (st == SPA_KBIDX_OK) return false;
    static const char *const what[] = { [SPA_KBIDX_MISSING] = "missing", [SPA_KBIDX_UNREADABLE] = "unreadable",
                                        [SPA_KBIDX_STALE] = "stale" };
    if (why && n)
        snprintf(why, n, "policy '%s' requires the environment index (require_index) and it is %s: %s; "
                 "build it with `safepickle kb index`", p->name ? p->name : "?", what[st], spa_kb_index_status());
    return true;
}

spa_action spa_policy_act(const spa_policy *p, spa_action a) {
    if (!p) return a;
    if (p->mode == SPA_MODE_OFF) return SPA_ACT_ALLOW;
    if (p->mode == SPA_MODE_AUDIT && a == SPA_ACT_BLOCK) return SPA_ACT_WARN;
    return a;
}

spa_action spa_policy_decide(const spa_policy *p, const spa_result *r) {
    static const spa_action defaults[SPA_VERDICT_COUNT] = {SPA_ACT_ALLOW, SPA_ACT_WARN, SPA_ACT_BLOCK, SPA_ACT_BLOCK};
    if (p && p->mode == SPA_MODE_OFF) return SPA_ACT_ALLOW;
    if (!r) return p ? p->on_error : SPA_ACT_BLOCK;
    if (p && r->path && spa_policy_trusts_path(p, r->path)) return SPA_ACT_ALLOW;
    spa_action a;
    if (!r->classified) {
        a = p ? p->on_error : SPA_ACT_BLOCK;
    } else {
        spa_verdict v = r->verdict < SPA_VERDICT_COUNT ? r->verdict : SPA_VERDICT_UNSCANNABLE;
        a = p ? p->on_verdict[v] : defaults[v];
        if (v == SPA_VERDICT_UNSCANNABLE) { /* only limits made it unscannable: on_limit */
            bool only_limits = r->n_reasons > 0;
            for (size_t i = 0; i < r->n_reasons; i++)
                if (r->reasons[i].severity == SPA_VERDICT_UNSCANNABLE && strcmp(r->reasons[i].rule, "scan.limit"))
                    only_limits = false;
            if (only_limits) a = p ? p->on_limit : SPA_ACT_BLOCK;
        }
    }
    return spa_policy_act(p, a);
}

/* ------------------------------------------------------------------ trusted entries */
bool spa_policy_trusted_entry(const char *s, uint8_t out[32]) {
    if (!s || strlen(s) < 64) return false;
    char hex[65];
    memcpy(hex, s, 64);
    hex[64] = '\0';
    if (!spa_sha256_parse(hex, out)) return false;
    const char *t = s + 64;
    if (!*t) return true;
    /* sha256sum's line: two spaces (or space and '*') then a name that is not empty */
    return (t[0] == ' ' && (t[1] == ' ' || t[1] == '*') && t[2] != '\0');
}

/* ------------------------------------------------------------------ environment overrides */
bool spa_mode_parse(const char *s, spa_mode *out) {
    if (!s) return false;
    if (!strcmp(s, "enforce")) *out = SPA_MODE_ENFORCE;
    else if (!strcmp(s, "audit")) *out = SPA_MODE_AUDIT;
    else if (!strcmp(s, "off")) *out = SPA_MODE_OFF;
    else return false;
    return true;
}

/* SAFEPICKLE_TARGETS: globs separated by ',' or ':'; empty items are skipped.
 * No fixed buffer: every pattern is kept, or the whole value is an error. */
static spa_code pol_env_targets(spa_policy *p, const char *env, spa_err *err) {
    size_t cnt = 0;
    for (const char *q = env; *q;) {
        size_t l = strcspn(q, ",:");
        if (l) cnt++;
        if (l > SPA_POLICY_MAX_STR) {
            err->code = SPA_E_POLICY; err->off = (uint64_t)(q - env);
            err->msg = "SAFEPICKLE_TARGETS has a pattern longer than 4096 bytes (max_str)";
            return SPA_E_POLICY;
        }
        q += l;
        if (*q) q++;
    }
    if (cnt == 0) {
        err->code = SPA_E_POLICY; err->off = 0;
        err->msg = "SAFEPICKLE_TARGETS names no pattern: it would protect no process";
        return SPA_E_POLICY;
    }
    if (cnt > SPA_POLICY_MAX_LIST) {
        err->code = SPA_E_POLICY; err->off = 0;
        err->msg = "SAFEPICKLE_TARGETS has more than 4096 patterns (max_list)";
        return SPA_E_POLICY;
    }
    spa_strv nv = { calloc(cnt + 1, sizeof(char *)), 0 };
    if (!nv.v) { err->code = SPA_E_NOMEM; err->msg = "out of memory"; return SPA_E_NOMEM; }
    for (const char *q = env; *q;) {
        size_t l = strcspn(q, ",:");
        if (l && !(nv.v[nv.n++] = strndup(q, l))) {
            strv_free(&nv);
            err->code = SPA_E_NOMEM; err->msg = "out of memory";
            return SPA_E_NOMEM;
        }
        q += l;
        if (*q) q++;
    }
    strv_free(&p->targets);
    p->targets = nv;
    return SPA_OK;
}

spa_code spa_policy_apply_env(spa_policy *p, const char *mode_env, const char *targets_env, char *note,
                              size_t note_sz, spa_err *err) {
    spa_err dummy;
    if (!err) err = &dummy;
    err->code = SPA_OK; err->msg = NULL; err->off = 0;
    if (note && note_sz) note[0] = '\0';
    if (!p) { err->code = SPA_E_USAGE; err->msg = "no policy"; return SPA_E_USAGE; }
    if (mode_env && *mode_env) {
        spa_mode m;
        if (spa_mode_parse(mode_env, &m)) {
            p->mode = m;
        } else {
            /* Never weaker on a typo: enforce, and say so (where the caller acts). */
            p->mode = SPA_MODE_ENFORCE;
            if (note && note_sz)
                snprintf(note, note_sz, "SAFEPICKLE_MODE=%.64s%s is not enforce, audit or off: enforcing", mode_env,
                         strlen(mode_env) > 64 ? "..." : "");
        }
    }
    if (targets_env && *targets_env) return pol_env_targets(p, targets_env, err); /* empty: as if unset */
    return SPA_OK;
}

/* ------------------------------------------------------------------ targeting */
/* The names CPython's embedding API exports: a process in which one of them is
 * defined (the executable or a loaded library) runs CPython. */
const char *const spa_python_symbols[] = { "Py_IsInitialized", "_PyRuntime", NULL };

bool spa_exe_name_is_python(const char *base) {
    return base && (fnmatch("python*", base, 0) == 0 || fnmatch("pypy*", base, 0) == 0);
}

bool spa_lib_name_is_python(const char *path) {
    if (!path) return false;
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    return fnmatch("libpython*.so*", b, 0) == 0 || fnmatch("libpypy*-c.so*", b, 0) == 0;
}

spa_targeting spa_policy_target(const spa_policy *p, const char *exe, bool runs_python) {
    const char *base = exe ? strrchr(exe, '/') : NULL;
    base = base ? base + 1 : (exe ? exe : "");
    if (!runs_python && !spa_exe_name_is_python(base)) return SPA_TARGET_NOT_PYTHON;
    if (!p) return SPA_TARGET_ACT; /* no policy: act (and fail closed) */
    for (size_t i = 0; i < p->targets.n; i++)
        if (fnmatch(p->targets.v[i], base, 0) == 0) return SPA_TARGET_ACT;
    return SPA_TARGET_EXCLUDED;
}

const char *spa_target_name(spa_targeting t) {
    switch (t) {
    case SPA_TARGET_ACT: return "protected: a Python process matching the policy's targets";
    case SPA_TARGET_NOT_PYTHON: return "not a Python process: nothing to protect (pass-through)";
    case SPA_TARGET_EXCLUDED: return "a Python process NOT in the policy's targets: NOT protected";
    }
    return "invalid";
}

/* ------------------------------------------------------------------ minimal edits */
/* Append `add` (n bytes) to a growing buffer. */
typedef struct pol_buf { char *p; size_t n, cap; bool oom; } pol_buf;

static void pb_put(pol_buf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t nc = (b->n + n + 1) * 2;
        char *np = realloc(b->p, nc);
        if (!np) { b->oom = true; return; }
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}
static void pb_str(pol_buf *b, const char *s) { pb_put(b, s, strlen(s)); }

/* The JSON string literal of s (cJSON escapes it). */
static void pb_jstr(pol_buf *b, const char *s) {
    cJSON *j = cJSON_CreateString(s);
    char *t = j ? cJSON_PrintUnformatted(j) : NULL;
    if (t) pb_str(b, t);
    else b->oom = true;
    free(t);
    cJSON_Delete(j);
}

/* Indentation (spaces/tabs) of the line holding offset i. */
static size_t pol_indent(const char *s, size_t i, const char **at) {
    size_t ls = i;
    while (ls > 0 && s[ls - 1] != '\n') ls--;
    size_t e = ls;
    while (s[e] == ' ' || s[e] == '\t') e++;
    *at = s + ls;
    return e - ls;
}

spa_code spa_policy_add_trusted(const char *json, size_t n, const char *const *entries, size_t ne, char **out,
                                size_t *outn, spa_err *err) {
    spa_err dummy;
    if (!err) err = &dummy;
    err->code = SPA_OK; err->msg = NULL; err->off = 0;
    *out = NULL;
    spa_policy *chk = NULL;
    spa_code rc = spa_policy_parse(json, n, "<edit>", &chk, err);
    spa_policy_free(chk);
    if (rc != SPA_OK) return rc; /* never edit what we cannot read */
    static const pj_step tp[] = { { "trusted", 0 } }, sp[] = { { "trusted", 0 }, { "sha256", 0 } };
    size_t t = pj_locate(json, n, tp, 1, false, n), a = pj_locate(json, n, sp, 2, false, n);
    size_t at;           /* insertion offset */
    const char *pre, *post;
    pol_buf items = { 0 };
    bool multiline;
    const char *ind;
    size_t il;
    if (a < n && json[a] == '[') {                 /* the list exists: append to it */
        size_t end = pj_value_end(json, n, a, 0);  /* just after ']' */
        at = end - 1;
        while (at > a && (unsigned char)json[at - 1] <= 32) at--; /* after the last item */
        bool empty = at == a + 1;
        multiline = memchr(json + a, '\n', end - a) != NULL;
        size_t first = pj_ws(json, n, a + 1);
        il = pol_indent(json, empty ? a : first, &ind);
        for (size_t i = 0; i < ne; i++) {
            if (i || !empty) pb_str(&items, ",");
            if (multiline) { pb_str(&items, "\n"); pb_put(&items, ind, il); if (empty) pb_str(&items, "  "); }
            else if (i || !empty) pb_str(&items, " ");
            pb_jstr(&items, entries[i]);
        }
        pre = ""; post = "";
    } else {
        /* insert `"sha256": [...]` into trusted, or `"trusted": {...}` at the top */
        bool in_trusted = t < n && json[t] == '{';
        size_t obj = in_trusted ? t : pj_ws(json, n, 0);
        at = obj + 1;
        size_t next = pj_ws(json, n, at);
        bool empty = json[next] == '}';
        multiline = memchr(json + obj, '\n', (in_trusted ? pj_value_end(json, n, obj, 0) : n) - obj) != NULL;
        il = pol_indent(json, empty ? obj : next, &ind);
        if (multiline) { pb_str(&items, "\n"); pb_put(&items, ind, il); if (empty) pb_str(&items, "  "); }
        pb_str(&items, in_trusted ? "\"sha256\": [" : "\"trusted\": {\"sha256\": [");
        for (size_t i = 0; i < ne; i++) {
            if (i) pb_str(&items, ", ");
            pb_jstr(&items, entries[i]);
        }
        pb_str(&items, in_trusted ? "]" : "]}");
        if (!empty) pb_str(&items, ",");
        else if (multiline) { pb_str(&items, "\n"); pb_put(&items, ind, il); }
        pre = ""; post = (!empty && !multiline) ? " " : "";
    }
    pol_buf o = { 0 };
    pb_put(&o, json, at);
    pb_str(&o, pre);
    if (items.p) pb_put(&o, items.p, items.n);
    pb_str(&o, post);
    pb_put(&o, json + at, n - at);
    free(items.p);
    if (o.oom || items.oom) { free(o.p); err->code = SPA_E_NOMEM; err->msg = "out of memory"; return SPA_E_NOMEM; }
    chk = NULL;
    rc = spa_policy_parse(o.p, o.n, "<edited>", &chk, err);
    spa_policy_free(chk);
    if (rc != SPA_OK) { free(o.p); err->code = SPA_E_INTERNAL; err->msg = "the edited policy does not validate"; return SPA_E_INTERNAL; }
    *out = o.p;
    *outn = o.n;
    return SPA_OK;
}
