/* test_policy.c - JSON policies: the embedded default, the shipped strict/audit values,
 * broken, hostile and huge documents (a clear error with a byte position, no crash, never
 * a fallback to a weaker policy), pattern rules, trust and the action for a result. */
#include <errno.h>
#include <stdlib.h>

#include "t.h"
#include "verdict.h"

static spa_policy *parse_ok(const char *js) {
    spa_policy *p = NULL;
    spa_err e = {SPA_OK, NULL, 0};
    spa_code c = spa_policy_parse(js, strlen(js), "test", &p, &e);
    T_CHECK_MSG(c == SPA_OK && p, "%s at %llu", e.msg ? e.msg : "?", (unsigned long long)e.off);
    return p;
}

/* Expect an error; returns its offset. */
static uint64_t parse_err(const char *js, size_t n, const char *msg_part) {
    spa_policy *p = (spa_policy *)1;
    spa_err e = {SPA_OK, NULL, 0};
    spa_code c = spa_policy_parse(js, n, "test", &p, &e);
    T_CHECK_MSG(c != SPA_OK, "accepted: %.60s", js);
    T_CHECK(p == NULL); /* never a policy on failure */
    T_CHECK(e.msg != NULL);
    if (msg_part && e.msg) T_CHECK_MSG(strstr(e.msg, msg_part) != NULL, "msg '%s' lacks '%s'", e.msg, msg_part);
    if (c == SPA_OK) spa_policy_free(p);
    return e.off;
}

static void test_default(void) {
    spa_policy *p = NULL;
    T_EQ_INT(spa_policy_default(&p), SPA_OK);
    T_EQ_STR(p->name, "default");
    T_EQ_STR(p->source, "<embedded default>");
    T_EQ_INT(p->mode, SPA_MODE_ENFORCE);
    T_EQ_INT(p->on_verdict[SPA_VERDICT_SAFE], SPA_ACT_ALLOW);
    T_EQ_INT(p->on_verdict[SPA_VERDICT_SUSPICIOUS], SPA_ACT_WARN);
    T_EQ_INT(p->on_verdict[SPA_VERDICT_MALICIOUS], SPA_ACT_BLOCK);
    T_EQ_INT(p->on_verdict[SPA_VERDICT_UNSCANNABLE], SPA_ACT_BLOCK);
    T_EQ_INT(p->on_limit, SPA_ACT_BLOCK);
    T_EQ_INT(p->on_error, SPA_ACT_BLOCK);
    T_EQ_INT(p->block_errno, EACCES);
    T_CHECK(p->layer_file && p->layer_audit_hook && p->runtime_behaviour);
    T_CHECK(p->targets.n >= 1);
    spa_limits d;
    spa_limits_default(&d);
    T_CHECK(memcmp(&d, &p->limits, sizeof d) == 0);
    spa_policy_free(p);
    size_t n = 0;
    const char *j = spa_policy_default_json(&n);
    T_CHECK(n > 100 && j[n] == '\0' && strstr(j, "\"malicious\": \"block\""));
}

static void test_full_document(void) {
    spa_policy *p = parse_ok(
        "{\"schema\":1,\"name\":\"x\",\"description\":\"d\",\"mode\":\"audit\","
        "\"actions\":{\"suspicious\":\"block\"},\"on_limit\":\"warn\",\"fail_mode\":\"allow\","
        "\"globals\":{\"allow\":[\"mypkg.*\"],\"deny\":[\"torch.hub\"]},"
        "\"trusted\":{\"paths\":[\"/models/*.pt\"],\"sha256\":[\"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\"]},"
        "\"limits\":{\"max_ops\":1000},\"audit_log\":\"/var/log/sp.jsonl\",\"targets\":[\"python3*\"],"
        "\"errno\":\"EPERM\",\"layers\":{\"file_hooks\":true,\"audit_hook\":false,\"runtime_behaviour\":false},"
        "\"runtime\":{\"allow_imports\":[\"numpy\"]}}");
    if (!p) return;
    T_EQ_STR(p->name, "x");
    T_EQ_INT(p->mode, SPA_MODE_AUDIT);
    T_EQ_INT(p->on_verdict[SPA_VERDICT_SUSPICIOUS], SPA_ACT_BLOCK);
    T_EQ_INT(p->on_verdict[SPA_VERDICT_MALICIOUS], SPA_ACT_BLOCK); /* untouched keys keep the default */
    T_EQ_INT(p->on_limit, SPA_ACT_WARN);
    T_EQ_INT(p->on_error, SPA_ACT_ALLOW);
    T_EQ_INT(p->limits.v[SPA_LIM_OPS], 1000);
    T_EQ_STR(p->audit_log, "/var/log/sp.jsonl");
    T_EQ_INT(p->block_errno, EPERM);
    T_CHECK(p->layer_file && !p->layer_audit_hook && !p->runtime_behaviour);
    T_EQ_INT(p->runtime_allow_imports.n, 1);
    T_EQ_INT(p->n_trusted_sha256, 1);
    uint8_t d[32];
    spa_sha256 s;
    spa_sha256_init(&s);
    spa_sha256_final(&s, d); /* sha256("") */
    T_CHECK(spa_policy_trusts_digest(p, d));
    d[0] ^= 1;
    T_CHECK(!spa_policy_trusts_digest(p, d));
    T_CHECK(spa_policy_trusts_path(p, "/models/a.pt"));
    T_CHECK(!spa_policy_trusts_path(p, "/tmp/a.pt"));
    T_CHECK(!spa_policy_trusts_path(p, "models/a.pt"));
    T_EQ_INT(spa_policy_global_rule(p, "mypkg.models", "Net"), 1);
    T_EQ_INT(spa_policy_global_rule(p, "torch.hub", "load"), -1);
    T_EQ_INT(spa_policy_global_rule(p, "torch", "hub.load"), -1); /* dotted path, same global */
    T_EQ_INT(spa_policy_global_rule(p, "torch.hubx", "load"), 0);  /* component boundary */
    T_EQ_INT(spa_policy_global_rule(p, "os", "system"), 0);
    spa_policy_free(p);
    /* null audit log, numeric errno */
    p = parse_ok("{\"schema\":1,\"audit_log\":null,\"errno\":1}");
    if (p) { T_CHECK(p->audit_log == NULL); T_EQ_INT(p->block_errno, 1); spa_policy_free(p); }
}

static void test_errors_with_positions(void) {
    uint64_t off;
    const char *js;
    js = "{\"schema\":1,\"mode\":\"enforce\",\"acions\":{}}";            /* typo in a key */
    off = parse_err(js, strlen(js), "unknown key");
    T_EQ_INT(off, strstr(js, "\"acions\"") - js);
    js = "{\"schema\":1,\x1a\"acions\":{\x01}}";          /* cJSON skips control bytes as whitespace */
    off = parse_err(js, strlen(js), "unknown key");
    T_EQ_INT(off, strstr(js, "\"acions\"") - js);
    js = "{\"schema\":1,\"actions\":{\"malicous\":\"allow\"}}";           /* typo nested */
    off = parse_err(js, strlen(js), "unknown key");
    T_EQ_INT(off, strstr(js, "\"malicous\"") - js);
    js = "{\"schema\":1,\"actions\":{\"malicious\":\"alow\"}}";           /* bad value */
    off = parse_err(js, strlen(js), "action");
    T_EQ_INT(off, strstr(js, "\"alow\"") - js);
    js = "{\"schema\":1,\"mode\":\"enforce\",\"mode\":\"off\"}";          /* duplicate: no silent override */
    off = parse_err(js, strlen(js), "duplicate");
    T_EQ_INT(off, strrchr(js, 'm') - js - 1);
    js = "{\"schema\":1,\"globals\":{\"deny\":[\"a\", 3]}}";
    off = parse_err(js, strlen(js), "string");
    T_EQ_INT(off, strstr(js, "3]") - js);
    js = "{\"schema\":1,\"limits\":{\"max_opz\":5}}";
    off = parse_err(js, strlen(js), "limit");
    T_EQ_INT(off, strstr(js, "\"max_opz\"") - js);
    js = "{\"schema\":1,\"limits\":{\"max_ops\":-5}}";
    parse_err(js, strlen(js), "positive");
    js = "{\"schema\":1,\"limits\":{\"max_ops\":1.5}}";
    parse_err(js, strlen(js), "positive");
    js = "{\"schema\":1,\"trusted\":{\"sha256\":[\"abc\"]}}";
    parse_err(js, strlen(js), "hex");
    js = "{\"schema\":1,\"trusted\":{\"paths\":[\"relative/*\"]}}";
    parse_err(js, strlen(js), "absolute");
    js = "{\"schema\":1,\"audit_log\":\"relative.log\"}";
    parse_err(js, strlen(js), "audit_log");
    js = "{\"schema\":1,\"errno\":\"EWHAT\"}";
    parse_err(js, strlen(js), "errno");
    js = "{\"schema\":1,\"layers\":{\"file_hooks\":\"yes\"}}";
    parse_err(js, strlen(js), "true or false");
    js = "{\"mode\":\"enforce\"}";
    parse_err(js, strlen(js), "schema");
    js = "{\"schema\":2}";
    parse_err(js, strlen(js), "schema");
    js = "[1,2]";
    parse_err(js, strlen(js), "object");
    js = "{\"schema\":1,\"mode\":\"enforce\"";                           /* truncated */
    off = parse_err(js, strlen(js), "JSON");
    T_CHECK(off <= strlen(js));
    js = "{\"schema\":1,,}";
    off = parse_err(js, strlen(js), "JSON");
    T_CHECK(off >= 11 && off <= 13); /* at the second comma (cJSON's error pointer) */
    js = "{\"schema\":1} {\"mode\":\"off\"}";                            /* trailing document */
    off = parse_err(js, strlen(js), "trailing");
    T_EQ_INT(off, 13);
    static const char nul[] = "{\"schema\":1}\0{}";
    off = parse_err(nul, sizeof nul - 1, "NUL");
    T_EQ_INT(off, 12);
    parse_err("", 0, "JSON");
}

static void test_hostile_and_huge(void) {
    /* deep nesting: rejected by the JSON parser's nesting limit or as a bad value, no crash */
    size_t depth = 200000;
    char *deep = malloc(2 * depth + 64);
    size_t k = (size_t)sprintf(deep, "{\"schema\":1,\"name\":");
    for (size_t i = 0; i < depth; i++) deep[k++] = '[';
    for (size_t i = 0; i < depth; i++) deep[k++] = ']';
    deep[k++] = '}';
    parse_err(deep, k, NULL);
    free(deep);
    /* larger than the 1 MiB cap */
    size_t big = (1u << 20) + 10;
    char *huge = malloc(big);
    memset(huge, ' ', big);
    memcpy(huge, "{\"schema\":1}", 12);
    parse_err(huge, big, "1 MiB");
    /* a very long list of patterns within the cap still parses */
    size_t n = (size_t)sprintf(huge, "{\"schema\":1,\"globals\":{\"deny\":[");
    for (int i = 0; i < 4000; i++) n += (size_t)sprintf(huge + n, "%s\"m%d.*\"", i ? "," : "", i);
    n += (size_t)sprintf(huge + n, "]}}");
    spa_policy *p = NULL;
    spa_err e;
    T_EQ_INT(spa_policy_parse(huge, n, "t", &p, &e), SPA_OK);
    if (p) { T_EQ_INT(p->deny_globals.n, 4000); T_EQ_INT(spa_policy_global_rule(p, "m3999", "x"), -1); spa_policy_free(p); }
    /* over the list cap */
    n = (size_t)sprintf(huge, "{\"schema\":1,\"targets\":[");
    for (int i = 0; i < 5000; i++) n += (size_t)sprintf(huge + n, "%s\"p\"", i ? "," : "");
    n += (size_t)sprintf(huge + n, "]}");
    parse_err(huge, n, "too long");
    /* every prefix of a valid document fails cleanly or parses (no crash, no leak) */
    size_t dn;
    const char *def = spa_policy_default_json(&dn);
    for (size_t i = 0; i < dn; i += 7) {
        p = NULL;
        spa_code c = spa_policy_parse(def, i, "t", &p, &e);
        T_CHECK(c == SPA_OK ? p != NULL : (p == NULL && e.off <= i));
        spa_policy_free(p);
    }
    /* invalid UTF-8 and control bytes inside strings */
    static const char bad8[] = "{\"schema\":1,\"name\":\"\xff\xfe\x01\"}";
    p = NULL;
    spa_code c = spa_policy_parse(bad8, sizeof bad8 - 1, "t", &p, &e);
    T_CHECK(c == SPA_OK || p == NULL);
    spa_policy_free(p);
    free(huge);
}

static void test_load_errors(void) {
    spa_policy *p = (spa_policy *)1;
    spa_err e;
    T_EQ_INT(spa_policy_load("/nonexistent/policy.json", &p, &e), SPA_E_IO);
    T_CHECK(p == NULL);
    p = (spa_policy *)1;
    T_EQ_INT(spa_policy_load("/", &p, &e), SPA_E_IO); /* a directory */
    T_CHECK(p == NULL);
}

static void test_decide(void) {
    spa_policy *p = NULL;
    T_EQ_INT(spa_policy_default(&p), SPA_OK);
    spa_result r;
    memset(&r, 0, sizeof r);
    r.classified = true;
    r.verdict = SPA_VERDICT_MALICIOUS;
    T_EQ_INT(spa_policy_decide(p, &r), SPA_ACT_BLOCK);
    r.verdict = SPA_VERDICT_SUSPICIOUS;
    T_EQ_INT(spa_policy_decide(p, &r), SPA_ACT_WARN);
    r.verdict = SPA_VERDICT_SAFE;
    T_EQ_INT(spa_policy_decide(p, &r), SPA_ACT_ALLOW);
    r.classified = false; /* internal error: fail mode */
    T_EQ_INT(spa_policy_decide(p, &r), SPA_ACT_BLOCK);
    r.classified = true;
    /* unscannable only because of a limit: on_limit */
    spa_reason lim = {SPA_VERDICT_UNSCANNABLE, "scan.limit", "limit", "x", 0};
    r.verdict = SPA_VERDICT_UNSCANNABLE;
    r.reasons = &lim;
    r.n_reasons = 1;
    p->on_limit = SPA_ACT_WARN;
    T_EQ_INT(spa_policy_decide(p, &r), SPA_ACT_WARN);
    spa_reason other = {SPA_VERDICT_UNSCANNABLE, "scan.unscannable", "7z", "x", 0};
    r.reasons = &other;
    T_EQ_INT(spa_policy_decide(p, &r), SPA_ACT_BLOCK);
    /* audit never blocks, off allows */
    p->mode = SPA_MODE_AUDIT;
    r.verdict = SPA_VERDICT_MALICIOUS;
    T_EQ_INT(spa_policy_decide(p, &r), SPA_ACT_WARN);
    p->mode = SPA_MODE_OFF;
    T_EQ_INT(spa_policy_decide(p, &r), SPA_ACT_ALLOW);
    /* no policy: the default actions */
    T_EQ_INT(spa_policy_decide(NULL, &r), SPA_ACT_BLOCK);
    spa_policy_free(p);
    T_EQ_STR(spa_mode_name(SPA_MODE_AUDIT), "audit");
    T_EQ_STR(spa_action_name(SPA_ACT_BLOCK), "block");
}

static void test_sha256_vectors(void) {
    static const struct { const char *in, *hex; } v[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        uint8_t want[32], got[32];
        T_CHECK(spa_sha256_parse(v[i].hex, want));
        spa_sha256 s;
        spa_sha256_init(&s);
        for (const char *c = v[i].in; *c; c++) spa_sha256_update(&s, c, 1); /* byte at a time */
        spa_sha256_final(&s, got);
        T_CHECK(memcmp(want, got, 32) == 0);
    }
    uint8_t d[32];
    T_CHECK(!spa_sha256_parse("zz", d));
}

T_MAIN("policy", T_CASE(test_default), T_CASE(test_full_document), T_CASE(test_errors_with_positions),
       T_CASE(test_hostile_and_huge), T_CASE(test_load_errors), T_CASE(test_decide), T_CASE(test_sha256_vectors))
