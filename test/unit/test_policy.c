/* test_policy.c - JSON policies: the embedded default, the shipped strict/audit values,
 * broken, hostile and huge documents (a clear error with a byte position, no crash, never
 * a fallback to a weaker policy), pattern rules, trust and the action for a result. */
#include <errno.h>
#include <stdlib.h>

#include "t.h"
#include "sha256.h"

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
    T_CHECK(!p->require_index);
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
        "\"runtime\":{\"allow_imports\":[\"numpy\"]},\"require_index\":true}");
    if (!p) return;
    T_CHECK(p->require_index);
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

static bool strv_eq(const spa_strv *a, const spa_strv *b) {
    if (a->n != b->n) return false;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->v[i], b->v[i])) return false;
    return true;
}

/* Every policy fact of a and b (name and source are identities, not facts). */
static void check_same_facts(const spa_policy *a, const spa_policy *b) {
    T_EQ_INT(a->mode, b->mode);
    for (int v = 0; v < SPA_VERDICT_COUNT; v++) T_EQ_INT(a->on_verdict[v], b->on_verdict[v]);
    T_EQ_INT(a->on_limit, b->on_limit);
    T_EQ_INT(a->on_error, b->on_error);
    T_CHECK(strv_eq(&a->allow_globals, &b->allow_globals));
    T_CHECK(strv_eq(&a->deny_globals, &b->deny_globals));
    T_CHECK(strv_eq(&a->trusted_paths, &b->trusted_paths));
    T_EQ_INT(a->n_trusted_sha256, b->n_trusted_sha256);
    if (a->n_trusted_sha256 == b->n_trusted_sha256 && a->n_trusted_sha256)
        T_CHECK(!memcmp(a->trusted_sha256, b->trusted_sha256, 32 * a->n_trusted_sha256));
    T_CHECK(!memcmp(&a->limits, &b->limits, sizeof a->limits));
    T_CHECK_MSG((a->audit_log == NULL) == (b->audit_log == NULL) &&
                (!a->audit_log || !strcmp(a->audit_log, b->audit_log)), "audit_log %s != %s",
                a->audit_log ? a->audit_log : "(none)", b->audit_log ? b->audit_log : "(none)");
    T_CHECK_MSG(strv_eq(&a->targets, &b->targets), "targets: %zu vs %zu", a->targets.n, b->targets.n);
    T_EQ_INT(a->block_errno, b->block_errno);
    T_EQ_INT(a->layer_file, b->layer_file);
    T_EQ_INT(a->layer_audit_hook, b->layer_audit_hook);
    T_EQ_INT(a->runtime_behaviour, b->runtime_behaviour);
    T_CHECK(strv_eq(&a->runtime_allow_imports, &b->runtime_allow_imports));
    T_EQ_INT(a->require_index, b->require_index);
}

/* {"schema":1} is default.json field by field; a partial policy changes only its keys. */
static void test_minimal_is_default(void) {
    spa_policy *d = NULL, *m = parse_ok("{\"schema\":1}");
    T_EQ_INT(spa_policy_default(&d), SPA_OK);
    if (!d || !m) { spa_policy_free(d); spa_policy_free(m); return; }
    check_same_facts(m, d);
    T_EQ_STR(m->name, "unnamed");
    spa_policy_free(m);
    m = parse_ok("{\"schema\":1,\"actions\":{\"suspicious\":\"block\"}}");
    if (m) {
        T_EQ_INT(m->on_verdict[SPA_VERDICT_SUSPICIOUS], SPA_ACT_BLOCK);
        m->on_verdict[SPA_VERDICT_SUSPICIOUS] = d->on_verdict[SPA_VERDICT_SUSPICIOUS];
        check_same_facts(m, d);
        spa_policy_free(m);
    }
    /* a list given replaces the default's; an empty targets list protects nothing: an error */
    m = parse_ok("{\"schema\":1,\"targets\":[\"srv*\"]}");
    if (m) { T_EQ_INT(m->targets.n, 1); T_EQ_STR(m->targets.v[0], "srv*"); spa_policy_free(m); }
    const char *js = "{\"schema\":1,\"targets\":[]}";
    parse_err(js, strlen(js), "protect no process");
    spa_policy_free(d);
}

static void test_env_overrides(void) {
    spa_policy *p = NULL;
    char note[160];
    spa_err e;
    T_EQ_INT(spa_policy_default(&p), SPA_OK);
    if (!p) return;
    T_EQ_INT(spa_policy_apply_env(p, "audit", NULL, note, sizeof note, &e), SPA_OK);
    T_EQ_INT(p->mode, SPA_MODE_AUDIT);
    T_CHECK(note[0] == '\0');
    T_EQ_INT(spa_policy_apply_env(p, "enforcing", NULL, note, sizeof note, &e), SPA_OK);
    T_EQ_INT(p->mode, SPA_MODE_ENFORCE); /* garbage never weakens */
    T_CHECK(strstr(note, "SAFEPICKLE_MODE=enforcing") && strstr(note, "enforcing"));
    p->mode = SPA_MODE_AUDIT;
    T_EQ_INT(spa_policy_apply_env(p, "", "", note, sizeof note, &e), SPA_OK); /* empty: unset */
    T_EQ_INT(p->mode, SPA_MODE_AUDIT);
    /* 300 patterns, 3 KiB: every one kept */
    char big[8192];
    size_t o = 0;
    for (int i = 0; i < 300; i++) o += (size_t)snprintf(big + o, sizeof big - o, "srv-%03d%s", i, i % 2 ? ":" : ",");
    T_EQ_INT(spa_policy_apply_env(p, NULL, big, NULL, 0, &e), SPA_OK);
    T_EQ_INT(p->targets.n, 300);
    if (p->targets.n == 300) { T_EQ_STR(p->targets.v[299], "srv-299"); }
    T_EQ_INT(spa_policy_target(p, "/opt/x/srv-299", true), SPA_TARGET_ACT);
    T_EQ_INT(spa_policy_target(p, "/usr/bin/python3", true), SPA_TARGET_EXCLUDED);
    T_EQ_INT(spa_policy_target(p, "/bin/bash", false), SPA_TARGET_NOT_PYTHON);
    T_CHECK(spa_policy_apply_env(p, NULL, ",::,", NULL, 0, &e) == SPA_E_POLICY && strstr(e.msg, "no pattern"));
    char *huge = malloc(5000);
    if (huge) {
        memset(huge, 'a', 4999);
        huge[4999] = 0;
        T_CHECK(spa_policy_apply_env(p, NULL, huge, NULL, 0, &e) == SPA_E_POLICY);
        free(huge);
    }
    spa_policy_free(p);
}

/* Is `path` an ELF that defines CPython's embedding symbols? (doctor's check) */
static int elf_python(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    static uint8_t buf[64 << 20];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    return spa_elf_defines_python(buf, n);
}

static void test_targeting(void) {
    T_EQ_INT(elf_python("/usr/bin/python3"), 1);          /* libpython linked in, exported */
    T_EQ_INT(elf_python("/bin/bash"), 0);
    T_CHECK(elf_python("build/libsafepickle.so") != 1);   /* names Py_IsInitialized, defines it not */
    T_EQ_INT(elf_python("test/fuzz/corpus/fuzz_elf/py.so"), 1);
    T_EQ_INT(elf_python("test/fuzz/corpus/fuzz_elf/other.so"), 0);
    uint8_t junk[200] = "\177ELF\2\1";
    T_CHECK(!spa_elf_defines_python(junk, sizeof junk));
    T_CHECK(!spa_elf_defines_python(junk, 10));

    spa_policy *p = NULL;
    T_EQ_INT(spa_policy_default(&p), SPA_OK);
    if (!p) return;
    /* the default acts in every process that runs Python, whatever its name */
    T_EQ_INT(spa_policy_target(p, "/srv/mymodelserver", true), SPA_TARGET_ACT);
    T_EQ_INT(spa_policy_target(p, "/usr/bin/python3.11", false), SPA_TARGET_ACT); /* by name, too */
    T_EQ_INT(spa_policy_target(p, "/usr/bin/pypy3", false), SPA_TARGET_ACT);
    T_EQ_INT(spa_policy_target(p, "/bin/bash", false), SPA_TARGET_NOT_PYTHON);
    T_EQ_INT(spa_policy_target(NULL, "/srv/x", true), SPA_TARGET_ACT); /* no policy: act, fail closed */
    T_CHECK(spa_policy_layer_on(p, SPA_LAYER_FILE) && spa_policy_layer_on(p, SPA_LAYER_AUDIT_HOOK) &&
            spa_policy_layer_on(p, SPA_LAYER_BEHAVIOUR));
    T_CHECK(spa_policy_layer_on(NULL, SPA_LAYER_AUDIT_HOOK)); /* broken: every layer, refusing */
    p->layer_audit_hook = false;
    T_CHECK(!spa_policy_layer_on(p, SPA_LAYER_AUDIT_HOOK) && !spa_policy_layer_on(p, SPA_LAYER_BEHAVIOUR));
    p->layer_audit_hook = true;
    p->mode = SPA_MODE_OFF;
    T_CHECK(!spa_policy_layer_on(p, SPA_LAYER_FILE) && spa_policy_act(p, SPA_ACT_BLOCK) == SPA_ACT_ALLOW);
    p->mode = SPA_MODE_AUDIT;
    T_CHECK(spa_policy_layer_on(p, SPA_LAYER_FILE) && spa_policy_act(p, SPA_ACT_BLOCK) == SPA_ACT_WARN);
    T_CHECK(spa_lib_name_is_python("/usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0"));
    T_CHECK(spa_lib_name_is_python("libpython3.8d.so"));
    T_CHECK(!spa_lib_name_is_python("/usr/lib/libpythonic.a"));
    T_CHECK(!spa_lib_name_is_python("/usr/lib/libc.so.6"));
    spa_policy_free(p);
}

/* trust's edit: the entry lands in trusted.sha256, everything else is kept byte for byte. */
static void check_edit(const char *in, const char *want) {
    static const char *const e[] = {"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  m.pt"};
    char *out = NULL;
    size_t n = 0;
    spa_err err;
    spa_code c = spa_policy_add_trusted(in, strlen(in), e, 1, &out, &n, &err);
    T_CHECK_MSG(c == SPA_OK, "%s", err.msg ? err.msg : "?");
    if (c == SPA_OK) T_CHECK_MSG(n == strlen(want) && !strcmp(out, want), "got\n%s\nwant\n%s", out, want);
    free(out);
}

static void test_add_trusted(void) {
    const char *H = "\"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  m.pt\"";
    char want[1024];
    check_edit("{\"schema\":1}", (snprintf(want, sizeof want, "{\"trusted\": {\"sha256\": [%s]}, \"schema\":1}", H), want));
    check_edit("{\n  \"schema\": 1,\n  \"mode\": \"audit\"\n}\n",
               (snprintf(want, sizeof want, "{\n  \"trusted\": {\"sha256\": [%s]},\n  \"schema\": 1,\n  \"mode\": \"audit\"\n}\n", H), want));
    check_edit("{\"schema\":1, \"trusted\": {\"sha256\": []}}",
               (snprintf(want, sizeof want, "{\"schema\":1, \"trusted\": {\"sha256\": [%s]}}", H), want));
    check_edit("{\"schema\":1, \"trusted\": {\"sha256\": [\"" "0000000000000000000000000000000000000000000000000000000000000000" "\"]}}",
               (snprintf(want, sizeof want, "{\"schema\":1, \"trusted\": {\"sha256\": [\"%064d\", %s]}}", 0, H), want));
    check_edit("{\"schema\":1,\n \"trusted\": {\n  \"paths\": [],\n  \"sha256\": [\n   \"" "0000000000000000000000000000000000000000000000000000000000000000" "\"\n  ]\n }\n}",
               (snprintf(want, sizeof want, "{\"schema\":1,\n \"trusted\": {\n  \"paths\": [],\n  \"sha256\": [\n   \"%064d\",\n   %s\n  ]\n }\n}", 0, H), want));
    check_edit("{\"schema\":1,\"trusted\":{\"paths\":[\"/m/*\"]}}",
               (snprintf(want, sizeof want, "{\"schema\":1,\"trusted\":{\"sha256\": [%s], \"paths\":[\"/m/*\"]}}", H), want));
    /* the shipped default as a starting point: only its empty list changes */
    size_t dn;
    const char *d = spa_policy_default_json(&dn);
    const char *at = strstr(d, "\"sha256\": []");
    T_CHECK(at != NULL);
    if (at) {
        int pre = (int)(at - d) + (int)strlen("\"sha256\": [");
        snprintf(want, sizeof want, "%.*s%s%s", pre, d, H, d + pre);
        check_edit(d, want);
    }
    /* a broken policy is not edited */
    char *out = (char *)1;
    size_t n;
    spa_err err;
    static const char *const e[] = {"x"};
    T_CHECK(spa_policy_add_trusted("{\"schema\":1,", 12, e, 1, &out, &n, &err) != SPA_OK && out == NULL);
    /* entries: digest, or digest + two spaces + name */
    uint8_t dg[32];
    T_CHECK(spa_policy_trusted_entry("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", dg));
    T_CHECK(spa_policy_trusted_entry("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  a b.pt", dg));
    T_CHECK(!spa_policy_trusted_entry("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855x", dg));
    T_CHECK(!spa_policy_trusted_entry("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  ", dg));
}

T_MAIN("policy", T_CASE(test_default), T_CASE(test_full_document), T_CASE(test_errors_with_positions),
       T_CASE(test_hostile_and_huge), T_CASE(test_load_errors), T_CASE(test_decide), T_CASE(test_sha256_vectors),
       T_CASE(test_minimal_is_default), T_CASE(test_env_overrides), T_CASE(test_targeting),
       T_CASE(test_add_trusted))
