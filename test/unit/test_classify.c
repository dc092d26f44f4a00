/* test_classify.c - the classifier on small pickles (scanned by the analyzer) and on
 * hand-built IR: verdicts, rule ids, messages, offsets, reflection, structural rules,
 * nested content, policy rules, unscannable streams. */
#include <stdlib.h>

#include "spa.h"
#include "t.h"

typedef struct { spa_verdict v; const char *rule; } cl_want;

static spa_result *scan_cls(const char *p, size_t n, const spa_policy *pol) {
    spa_scan_opts o;
    spa_scan_opts_default(&o);
    o.name = "t.pkl";
    spa_result *r = NULL;
    spa_err e;
    if (spa_scan_mem(&o, (const uint8_t *)p, n, &r, &e) != SPA_OK || !r) return NULL;
    T_EQ_INT(spa_classify(r, pol), SPA_OK);
    T_CHECK(r->classified);
    return r;
}

static bool has_rule(const spa_result *r, const char *rule, spa_verdict sev) {
    for (size_t i = 0; i < r->n_reasons; i++)
        if (!strcmp(r->reasons[i].rule, rule) && r->reasons[i].severity == sev) return true;
    return false;
}

#define CASE(src, verdict, rule) check(src, sizeof(src) - 1, verdict, rule, __LINE__)
static void check(const char *src, size_t n, spa_verdict v, const char *rule, int line) {
    spa_result *r = scan_cls(src, n, NULL);
    T_CHECK_MSG(r != NULL, "line %d: scan failed", line);
    if (!r) return;
    T_CHECK_MSG(r->verdict == v, "line %d: verdict %s, want %s (%s)", line, spa_verdict_name(r->verdict),
                spa_verdict_name(v), r->n_reasons ? r->reasons[0].msg : "no reasons");
    if (rule) T_CHECK_MSG(has_rule(r, rule, v), "line %d: no reason %s (first: %s)", line, rule,
                          r->n_reasons ? r->reasons[0].rule : "-");
    if (v == SPA_VERDICT_SAFE) T_EQ_INT(r->n_reasons, 0);
    spa_result_free(r);
}

static void test_calls(void) {
    CASE("cos\nsystem\n(S'touch /tmp/x'\ntR.", SPA_VERDICT_MALICIOUS, "callee.process");
    CASE("cposix\nsystem\n(S'id'\ntR.", SPA_VERDICT_MALICIOUS, "callee.process");
    CASE("c__builtin__\neval\n(S'1+1'\ntR.", SPA_VERDICT_MALICIOUS, "callee.code_exec");
    CASE("(dp0\nS'a'\nI1\ns.", SPA_VERDICT_SAFE, NULL);
    CASE("ccollections\nOrderedDict\n)R.", SPA_VERDICT_SAFE, NULL);
    CASE("cmylib.models\nMyModel\n(I3\ntR.", SPA_VERDICT_SAFE, NULL);                 /* unknown class from data */
    CASE("cmylib.utils\nhelper\n(I3\ntR.", SPA_VERDICT_SUSPICIOUS, "callee.unknown_function");
    CASE("cmylib.utils\nhelper\n(S'rm -rf /tmp/x'\ntR.", SPA_VERDICT_MALICIOUS, "args.code_like");
    CASE("cmylib.models\nMyModel\n(S'__import__(\"os\").system(\"id\")'\ntR.", SPA_VERDICT_MALICIOUS, "args.code_like");
    CASE("cmylib.utils\nrun_shell\n(S'x'\ntR.", SPA_VERDICT_MALICIOUS, "callee.process");   /* verb */
    CASE("ccollections\ndefaultdict\n(cos\nsystem\ntR.", SPA_VERDICT_MALICIOUS, "args.dangerous_callable");
    /* a stdlib_other callable handed over is judged where it is called, as in a partial:
     * joblib's loky task batch of delayed(math.sqrt) (BatchedCalls is data) */
    CASE("ccollections\ndefaultdict\n(cmath\nsqrt\ntR.", SPA_VERDICT_SAFE, NULL);
    CASE("ccollections\ndefaultdict\n(cbuiltins\nexec\ntR.", SPA_VERDICT_MALICIOUS, "args.dangerous_callable");
    /* INST and OBJ call whatever they are given */
    CASE("(Vid\nios\nsystem\n.", SPA_VERDICT_MALICIOUS, "callee.process");
}

static void test_reflection(void) {
    /* getattr(importlib.import_module('os'), 'system')('id') */
    CASE("cbuiltins\ngetattr\n(cimportlib\nimport_module\n(S'os'\ntRS'system'\ntR(S'id'\ntR.",
         SPA_VERDICT_MALICIOUS, "call.reflective_result");
    /* getattr(sys.modules['os'] via operator.getitem, 'system') */
    CASE("cbuiltins\ngetattr\n(coperator\ngetitem\n(csys\nmodules\nS'os'\ntRS'system'\ntR.",
         SPA_VERDICT_MALICIOUS, "reflect.module");
    /* bound method of a data object: getattr(OrderedDict(), 'keys'), never called */
    CASE("cbuiltins\ngetattr\n(ccollections\nOrderedDict\n)RS'keys'\ntR.", SPA_VERDICT_SAFE, NULL);
    /* enum member by name: getattr(cls, 'RED') */
    CASE("cbuiltins\ngetattr\n(chttp\nHTTPStatus\nS'OK'\ntR.", SPA_VERDICT_SAFE, NULL);
    CASE("cbuiltins\ngetattr\n(cmylib\nThing\nS'__globals__'\ntR.", SPA_VERDICT_MALICIOUS, "reflect.dunder");
    /* partial of a user function is data; of os.system it is a payload */
    CASE("cfunctools\npartial\n(cmylib\nscale\ntR.", SPA_VERDICT_SAFE, NULL);
    CASE("cfunctools\npartial\n(cos\nsystem\nS'id'\ntR.", SPA_VERDICT_MALICIOUS, "partial.dangerous");
    /* map forced by list */
    CASE("cbuiltins\nlist\n(cbuiltins\nmap\n(cos\nsystem\n(lp0\nS'id'\natRtR.", SPA_VERDICT_MALICIOUS, "callee.process");
    /* pkgutil.resolve_name('os:system')('id') */
    CASE("cpkgutil\nresolve_name\n(S'os:system'\ntR(S'id'\ntR.", SPA_VERDICT_MALICIOUS, "callee.import");
    /* protocol 4 dotted names reach what they name */
    static const char dotted[] = "\x80\x04\x8c\x05torch\x8c\x17serialization.os.system\x93\x8c\x02id\x85R.";
    CASE(dotted, SPA_VERDICT_MALICIOUS, "callee.process");
}

static void test_structural(void) {
    /* BUILD applied to a global */
    CASE("cargparse\nNamespace\n(N(dS'run'\ncos\nsystem\nstb0N.", SPA_VERDICT_MALICIOUS, "state.build_global");
    /* a discarded unknown-function result */
    CASE("cmylib\nhelper\n(I1\ntR0N.", SPA_VERDICT_MALICIOUS, "call.discarded");
    /* a reference to os.system handed to the program */
    CASE("cos\nsystem\n.", SPA_VERDICT_MALICIOUS, "global.reference");
    CASE("cmylib\nscale\n.", SPA_VERDICT_SAFE, NULL);
    CASE("cos.path\njoin\n.", SPA_VERDICT_SAFE, NULL);
    /* STACK_GLOBAL with a module name computed by a call */
    static const char dyn[] = "\x80\x04" "cmylib\nname\n)R\x8c\x06system\x93.";
    CASE(dyn, SPA_VERDICT_MALICIOUS, "global.dynamic");
    /* EXT1: a reference from the extension registry; calling it is unresolved */
    static const char ext[] = "\x80\x02\x82\x05.";
    CASE(ext, SPA_VERDICT_SUSPICIOUS, "opcode.ext_registry");
    static const char extcall[] = "\x80\x02\x82\x05)R.";
    CASE(extcall, SPA_VERDICT_MALICIOUS, "call.unresolved");
    /* calling what persistent_load returns (REDUCE, NEWOBJ, OBJ): unresolved; handing it
     * to a rebuild function (torch's storages) is data */
    static const char pcall[] = "\x80\x02X\x02\x00\x00\x00idQ)R.";
    CASE(pcall, SPA_VERDICT_MALICIOUS, "call.unresolved");
    CASE("Pid\n(S'x'\ntR.", SPA_VERDICT_MALICIOUS, "call.unresolved");
    static const char pnew[] = "\x80\x02X\x02\x00\x00\x00idQ)\x81.";
    CASE(pnew, SPA_VERDICT_MALICIOUS, "call.unresolved");
    CASE("(Pid\no.", SPA_VERDICT_MALICIOUS, "call.unresolved");
    CASE("ctorch._utils\n_rebuild_tensor_v2\n(P0\nI0\n(I4\nt(I1\ntI00\ntR.", SPA_VERDICT_SAFE, NULL);
    /* code objects */
    CASE("ctypes\nFunctionType\n(cmarshal\nloads\n(S'x'\ntR(dtR.", SPA_VERDICT_MALICIOUS, "callee.code_exec");
    /* copyreg._reconstructor of a user class (protocol 0/1 objects) is data, of a process class not */
    CASE("ccopy_reg\n_reconstructor\n(cmylib\nThing\nc__builtin__\nobject\nNtR(dS'a'\nI1\nsb.", SPA_VERDICT_SAFE, NULL);
    CASE("ccopy_reg\n_reconstructor\n(cmylib\nThing\ncsubprocess\nPopen\nS'id'\ntR.", SPA_VERDICT_MALICIOUS, NULL);
}

static void test_nested(void) {
    /* pickle.loads of anything is a nested load chosen by the author: malicious */
    CASE("cpickle\nloads\n(S'I1\\n.'\ntR.", SPA_VERDICT_MALICIOUS, "callee.deserialize");
    /* @rawload: pickle.loads(<bytes constant>) as joblib ships arrays, judged by the raw
     * stream loads reads; any other shape stays a nested load chosen by the author */
    static const char rl_safe[] = "\x80\x03" "c_pickle\nloads\nC\x04I1\n.\x85R.";
    CASE(rl_safe, SPA_VERDICT_SAFE, NULL);
    static const char rl_mal[] = "\x80\x03" "cpickle\nloads\nC\x15" "cos\nsystem\n(S'id'\ntR.\x85R.";
    CASE(rl_mal, SPA_VERDICT_MALICIOUS, "callee.deserialize");
    static const char rl_susp[] = "\x80\x03" "cpickle\nloads\nC\x15" "cmylib\nhelper\n(I1\ntR.\x85R.";
    CASE(rl_susp, SPA_VERDICT_MALICIOUS, "callee.deserialize");
    /* a bytearray (SETITEMS can rewrite it before the call), two arguments, a partial */
    static const char rl_ba[] = "\x80\x05" "cpickle\nloads\n\x96\x04\0\0\0\0\0\0\0I1\n.\x85R.";
    CASE(rl_ba, SPA_VERDICT_MALICIOUS, "callee.deserialize");
    static const char rl_two[] = "\x80\x03" "cpickle\nloads\nC\x04I1\n.C\x04I1\n.\x86R.";
    CASE(rl_two, SPA_VERDICT_MALICIOUS, "callee.deserialize");
    static const char rl_part[] = "\x80\x03" "cfunctools\npartial\ncpickle\nloads\nC\x04I1\n.\x86R)R.";
    CASE(rl_part, SPA_VERDICT_MALICIOUS, NULL);
    /* decoded content: base64 of the same safe stream is still a nested load */
    CASE("cpickle\nloads\n(cbase64\nb64decode\n(S'STEKLg=='\ntRtR.", SPA_VERDICT_MALICIOUS, "callee.deserialize");
    /* a polyglot: a payload stream first (what loads runs), then a gzip a sniff would prefer */
    static const char rl_poly[] = "\x80\x03" "cpickle\nloads\nC\x1f" "cos\nsystem\n(S'id'\ntR.\x1f\x8b\x08\0\0\0\0\0\0\x03\x85R.";
    CASE(rl_poly, SPA_VERDICT_MALICIOUS, "callee.deserialize");
    /* torch.storage._load_from_bytes is judged by its content */
    CASE("ctorch.storage\n_load_from_bytes\n(S'I1\\n.'\ntR.", SPA_VERDICT_SAFE, NULL);
    CASE("ctorch.storage\n_load_from_bytes\n(S'cos\\nsystem\\n(S\\'id\\'\\ntR.'\ntR.", SPA_VERDICT_MALICIOUS, NULL);
    /* a second-stage file */
    CASE("ctorch.storage\n_load_from_bytes\n(S'/tmp/other.bin'\ntR.", SPA_VERDICT_MALICIOUS, "nested.malicious");
    /* long binary content no pickle starts with: the VM kept its head only */
    enum { BIN = 64 * 1024 };
    static const char head[] = "ctorch.storage\n_load_from_bytes\n(B";
    size_t hn = sizeof head - 1;
    char *src = malloc(hn + 4 + BIN + 3);
    memcpy(src, head, hn);
    src[hn] = 0; src[hn + 1] = 0; src[hn + 2] = 1; src[hn + 3] = 0;   /* BIN, little-endian */
    uint32_t x = 7u;
    for (size_t i = 0; i < BIN; i++) { x = x * 1664525u + 1013904223u; src[hn + 4 + i] = (char)(x >> 24); }
    memcpy(src + hn + 4 + BIN, "tR.", 3);
    spa_result *r = scan_cls(src, hn + 4 + BIN + 3, NULL);
    T_CHECK(r && r->verdict == SPA_VERDICT_MALICIOUS && has_rule(r, "nested.malicious", SPA_VERDICT_MALICIOUS));
    T_CHECK(r && r->n_reasons && strstr(r->reasons[0].msg, "binary data that starts no pickle or container"));
    spa_result_free(r);
    free(src);
}

/* @rawload of a pickle over max_str (joblib's reduction of a result array over 1 MiB,
 * pickle.loads(<bytes>)): over an input in memory (layer 2's bytes) the constant lies
 * whole in it (SPA_VF_WHOLE), so the stream loads reads is judged to its end; a payload
 * past the first MiB is still found. Over a pread source (a file) only max_str is kept,
 * and the same bytes stay a nested load nobody judged whole. */
static ssize_t rl_pread(void *ctx, void *buf, size_t len, uint64_t off) {
    const spa_src *m = ctx;
    if (off >= m->size) return 0;
    if (len > m->size - off) len = (size_t)(m->size - off);
    memcpy(buf, m->mem + off, len);
    return (ssize_t)len;
}

static char *rl_outer(size_t pad, bool payload, size_t *n) {
    /* inner: PROTO 4, BINUNICODE of pad 'a', POP, then STOP or os.system('id') */
    static const char evil[] = "cos\nsystem\n(S'id'\ntR.";
    size_t in = 2 + 5 + pad + 1 + (payload ? sizeof evil - 1 : 4);
    char *o = malloc(in + 64);
    size_t k = 0;
    static const char pre[] = "\x80\x04" "c_pickle\nloads\nB";
    memcpy(o, pre, sizeof pre - 1);
    k = sizeof pre - 1;
    for (int i = 0; i < 4; i++) o[k++] = (char)((in >> (8 * i)) & 0xff);
    o[k++] = '\x80'; o[k++] = 4; o[k++] = 'X';
    for (int i = 0; i < 4; i++) o[k++] = (char)((pad >> (8 * i)) & 0xff);
    memset(o + k, 'a', pad);
    k += pad;
    o[k++] = '0';
    if (payload) { memcpy(o + k, evil, sizeof evil - 1); k += sizeof evil - 1; }
    else { memcpy(o + k, "K\x01" "0.", 4); k += 4; }
    memcpy(o + k, "\x85R.", 3);
    *n = k + 3;
    return o;
}

static void test_rawload_whole(void) {
    size_t pad = (3u << 20) / 2, n; /* 1.5 MiB: past max_str */
    char *ok = rl_outer(pad, false, &n);
    spa_result *r = scan_cls(ok, n, NULL);
    T_CHECK_MSG(r && r->verdict == SPA_VERDICT_SAFE, "whole in memory: %s (%s)", r ? spa_verdict_name(r->verdict) : "-",
                r && r->n_reasons ? r->reasons[0].msg : "");
    spa_result_free(r);
    /* a pread source: max_str kept, so not judged whole */
    spa_src mem = {.pread = NULL, .ctx = NULL, .size = n, .mem = (const uint8_t *)ok};
    spa_src src = {.pread = rl_pread, .ctx = &mem, .size = n, .mem = NULL};
    spa_scan_opts o;
    spa_scan_opts_default(&o);
    spa_err e;
    r = NULL;
    T_EQ_INT(spa_scan_src(&o, &src, &r, &e), SPA_OK);
    if (r) {
        T_EQ_INT(spa_classify(r, NULL), SPA_OK);
        T_CHECK(r->verdict == SPA_VERDICT_MALICIOUS && has_rule(r, "callee.deserialize", SPA_VERDICT_MALICIOUS));
        spa_result_free(r);
    }
    free(ok);
    char *bad = rl_outer(pad, true, &n);
    r = scan_cls(bad, n, NULL);
    T_CHECK(r && r->verdict == SPA_VERDICT_MALICIOUS);
    T_CHECK(r && has_rule(r, "callee.deserialize", SPA_VERDICT_MALICIOUS));
    spa_result_free(r);
    free(bad);
}

/* @fileload: joblib's load_temporary_memmap(name, mode, unlink) is data only where the
 * caller says the process judges its opens (the preload's layer 1), in joblib's shape;
 * the same bytes stay callee.deserialize for the CLI, and nested bytes inherit the flag. */
static spa_verdict fileload_verdict(const char *p, size_t n, bool judged, const char **rule) {
    spa_scan_opts o;
    spa_scan_opts_default(&o);
    o.opens_judged = judged;
    spa_result *r = NULL;
    spa_err e;
    if (spa_scan_mem(&o, (const uint8_t *)p, n, &r, &e) != SPA_OK || !r) return SPA_VERDICT_COUNT;
    T_EQ_INT(spa_classify(r, NULL), SPA_OK);
    spa_verdict v = r->verdict;
    static char rl[64];
    snprintf(rl, sizeof rl, "%s", r->n_reasons ? r->reasons[0].rule : "-");
    if (getenv("T_DEBUG")) for (size_t i = 0; i < r->n_reasons; i++) fprintf(stderr, "  %s\n", r->reasons[i].msg);
    *rule = rl;
    spa_result_free(r);
    return v;
}

static void test_fileload(void) {
#define LTM(name, mode, flag) "\x80\x04" "cjoblib.numpy_pickle\nload_temporary_memmap\n(V" name "\nV" mode "\n" flag "tR."
#define GOOD "/dev/shm/joblib_memmapping_folder_12_ab_cd/12-140-0123456789abcdef0123456789abcdef.pkl"
    static const struct { const char *src; size_t n; spa_verdict judged; const char *rule; } cases[] = {
        {LTM(GOOD, "r", "\x88"), sizeof LTM(GOOD, "r", "\x88") - 1, SPA_VERDICT_SAFE, NULL},
        {LTM(GOOD, "c", "\x89"), sizeof LTM(GOOD, "c", "\x89") - 1, SPA_VERDICT_SAFE, NULL},
        {LTM(GOOD, "r+", "\x89"), sizeof LTM(GOOD, "r+", "\x89") - 1, SPA_VERDICT_MALICIOUS, "callee.file_write"},
        {LTM(GOOD, "w+", "\x89"), sizeof LTM(GOOD, "w+", "\x89") - 1, SPA_VERDICT_MALICIOUS, "callee.file_write"},
        {LTM(GOOD, "readonly", "\x89"), sizeof LTM(GOOD, "readonly", "\x89") - 1, SPA_VERDICT_MALICIOUS, "callee.deserialize"},
        {LTM(GOOD, "r", "I1\n"), sizeof LTM(GOOD, "r", "I1\n") - 1, SPA_VERDICT_MALICIOUS, "callee.deserialize"},
        {LTM("/etc/passwd", "r", "\x89"), sizeof LTM("/etc/passwd", "r", "\x89") - 1, SPA_VERDICT_MALICIOUS, "callee.deserialize"},
        {LTM("/dev/shm/joblib_memmapping_folder_1/../12-1-0123456789abcdef0123456789abcdef.pkl", "r", "\x89"),
         sizeof LTM("/dev/shm/joblib_memmapping_folder_1/../12-1-0123456789abcdef0123456789abcdef.pkl", "r", "\x89") - 1,
         SPA_VERDICT_MALICIOUS, "callee.deserialize"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *rule;
        spa_verdict v = fileload_verdict(cases[i].src, cases[i].n, true, &rule);
        T_CHECK_MSG(v == cases[i].judged, "case %zu: %s with opens judged", i, spa_verdict_name(v));
        if (cases[i].rule) T_CHECK_MSG(!strcmp(rule, cases[i].rule), "case %zu: rule %s", i, rule);
        v = fileload_verdict(cases[i].src, cases[i].n, false, &rule);
        T_CHECK_MSG(v == SPA_VERDICT_MALICIOUS, "case %zu: %s without", i, spa_verdict_name(v));
    }
    /* nested under @rawload (pickle.loads of a bytes constant): the same process, the same flag */
    static const char inner[] = LTM(GOOD, "r", "\x89");
    char outer[400];
    size_t in = sizeof inner - 1, on = 0;
    static const char pre[] = "\x80\x03" "c_pickle\nloads\nC";
    memcpy(outer, pre, sizeof pre - 1);
    on = sizeof pre - 1;
    outer[on++] = (char)in;
    memcpy(outer + on, inner, in);
    on += in;
    memcpy(outer + on, "\x85R.", 3);
    on += 3;
    const char *rule;
    T_EQ_INT(fileload_verdict(outer, on, true, &rule), SPA_VERDICT_SAFE);
    T_EQ_INT(fileload_verdict(outer, on, false, &rule), SPA_VERDICT_MALICIOUS);
#undef LTM
#undef GOOD
}

static void test_reason_fields(void) {
    static const char src[] = "(dS'w'\nI1\nscos\nsystem\n(S'touch /tmp/m'\ntR.";
    spa_result *r = scan_cls(src, sizeof src - 1, NULL);
    if (!r) return;
    T_EQ_INT(r->verdict, SPA_VERDICT_MALICIOUS);
    T_CHECK(r->n_reasons >= 1);
    const spa_reason *x = &r->reasons[0];
    T_EQ_STR(x->rule, "callee.process");
    T_CHECK(strstr(x->msg, "os.system") && strstr(x->msg, "touch /tmp/m"));
    T_EQ_STR(x->loc, "t.pkl");
    T_EQ_INT(x->off, strchr(src, 'R') - src); /* the REDUCE that makes the call */
    spa_result_free(r);
}

static void test_policy_rules(void) {
    static const char js[] = "{\"schema\":1,\"globals\":{\"allow\":[\"os:system\"],\"deny\":[\"mylib\"]}}";
    spa_policy *p = NULL;
    spa_err e;
    T_EQ_INT(spa_policy_parse(js, sizeof js - 1, "t", &p, &e), SPA_OK);
    static const char a[] = "cos\nsystem\n(S'id'\ntR.";
    spa_result *r = scan_cls(a, sizeof a - 1, p);
    if (r) { T_EQ_INT(r->verdict, SPA_VERDICT_SAFE); spa_result_free(r); }
    static const char b[] = "cmylib.models\nMyModel\n)R.";
    r = scan_cls(b, sizeof b - 1, p);
    if (r) { T_EQ_INT(r->verdict, SPA_VERDICT_MALICIOUS); T_CHECK(has_rule(r, "policy.deny", SPA_VERDICT_MALICIOUS)); spa_result_free(r); }
    spa_policy_free(p);
}

/* Hand-built IR: one stream calling subprocess.Popen(('ls',)), then one stopped by a limit. */
static void test_hand_built_ir(void) {
    spa_arena *ar = spa_arena_create(NULL);
    spa_result *r = spa_arena_calloc(ar, sizeof *r);
    r->arena = ar;
    r->path = "hand";
    spa_val *g = spa_arena_calloc(ar, sizeof *g);
    g->kind = SPA_V_GLOBAL;
    g->u.g.module = g->u.g.raw_module = "subprocess";
    g->u.g.name = g->u.g.raw_name = "Popen";
    spa_val *s = spa_arena_calloc(ar, sizeof *s);
    s->kind = SPA_V_STR;
    s->u.s.p = (const uint8_t *)"ls";
    s->u.s.len = s->u.s.kept = 2;
    spa_val *tup = spa_arena_calloc(ar, sizeof *tup);
    tup->kind = SPA_V_TUPLE;
    tup->n = 1;
    tup->u.seq.count = 1;
    tup->u.seq.items = spa_arena_calloc(ar, sizeof(spa_val *));
    tup->u.seq.items[0] = s;
    spa_val *call = spa_arena_calloc(ar, sizeof *call);
    call->kind = SPA_V_CALL;
    call->u.call.callee = g;
    call->u.call.args = tup;
    call->u.call.ir = 1;
    r->n_streams = 2;
    r->streams = spa_arena_calloc(ar, 2 * sizeof *r->streams);
    spa_stream *st = &r->streams[0];
    st->loc = "hand!0";
    st->parent = UINT32_MAX;
    st->complete = true;
    st->n_ir = 2;
    st->ir = spa_arena_calloc(ar, 2 * sizeof *st->ir);
    st->ir[0].kind = SPA_IR_IMPORT;
    st->ir[0].module = "subprocess";
    st->ir[0].name = "Popen";
    st->ir[0].result = g;
    st->ir[1].kind = SPA_IR_CALL;
    st->ir[1].off = 42;
    st->ir[1].target = g;
    st->ir[1].arg = tup;
    st->ir[1].result = call;
    spa_stream *st2 = &r->streams[1];
    st2->loc = "hand!1";
    st2->parent = UINT32_MAX;
    st2->err.code = SPA_E_LIMIT;
    st2->err.msg = "limit";
    st2->err.off = 7;
    st2->limit = SPA_LIM_OPS;
    T_EQ_INT(spa_classify(r, NULL), SPA_OK);
    T_EQ_INT(r->verdict, SPA_VERDICT_MALICIOUS); /* malicious outranks unscannable */
    T_CHECK(has_rule(r, "callee.process", SPA_VERDICT_MALICIOUS));
    T_CHECK(has_rule(r, "scan.limit", SPA_VERDICT_UNSCANNABLE));
    bool off_ok = false;
    for (size_t i = 0; i < r->n_reasons; i++)
        if (!strcmp(r->reasons[i].rule, "callee.process")) off_ok = r->reasons[i].off == 42 && !strcmp(r->reasons[i].loc, "hand!0");
    T_CHECK(off_ok);
    /* without the IR only the limit remains: unscannable, on_limit decides */
    st->n_ir = 0;
    T_EQ_INT(spa_classify(r, NULL), SPA_OK);
    T_EQ_INT(r->verdict, SPA_VERDICT_UNSCANNABLE);
    spa_policy *p = NULL;
    T_EQ_INT(spa_policy_default(&p), SPA_OK);
    p->on_limit = SPA_ACT_WARN;
    T_EQ_INT(spa_policy_decide(p, r), SPA_ACT_WARN);
    spa_policy_free(p);
    /* an unscannable note on a result with no stream */
    r->n_streams = 0;
    spa_note note = {SPA_NOTE_UNSCANNABLE, "hand", {SPA_E_UNSUPPORTED, "7z", 0}, SPA_LIM_OPS, NULL};
    r->notes = &note;
    r->n_notes = 1;
    T_EQ_INT(spa_classify(r, NULL), SPA_OK);
    T_EQ_INT(r->verdict, SPA_VERDICT_UNSCANNABLE);
    T_CHECK(has_rule(r, "scan.unscannable", SPA_VERDICT_UNSCANNABLE));
    spa_result_free(r);
    T_EQ_INT(spa_classify(NULL, NULL), SPA_E_USAGE);
}

/* A file with more distinct globals than max_kb_lookups is unscannable (bounded work),
 * and a payload before the limit is still found. */
static void test_lookup_limit(void) {
    size_t cap = 6000 * 32 + 64, n = 0;
    char *buf = malloc(cap);
    n += (size_t)sprintf(buf + n, "cos\nsystem\n(S'id'\ntR0");
    for (int i = 0; i < 6000; i++) n += (size_t)sprintf(buf + n, "cmylib%d\nfn%d\n0", i, i);
    n += (size_t)sprintf(buf + n, "N.");
    spa_result *r = scan_cls(buf, n, NULL);
    if (r) {
        T_EQ_INT(r->verdict, SPA_VERDICT_MALICIOUS);
        T_CHECK(has_rule(r, "scan.limit", SPA_VERDICT_UNSCANNABLE));
        spa_result_free(r);
    }
    n = 0;
    for (int i = 0; i < 6000; i++) n += (size_t)sprintf(buf + n, "cmylib%d\nfn%d\n0", i, i);
    n += (size_t)sprintf(buf + n, "N.");
    r = scan_cls(buf, n, NULL);
    if (r) { T_EQ_INT(r->verdict, SPA_VERDICT_UNSCANNABLE); spa_result_free(r); }
    free(buf);
}

/* A decoder call's content is judged as Python decodes it (analyzer/decode.c):
 * b64decode discards '-' and '_' (not in its alphabet), so a benign pickle's base64 with
 * them mixed in is still that benign pickle, and a malicious one still malicious. */
#define TC_LOAD_B64(fn, len, text) \
    "\x80\x02" "ctorch.storage\n_load_from_bytes\ncbase64\n" fn "\n(X" len "\x00\x00\x00" text "tR\x85R."
static void test_decoder_calls(void) {
    CASE(TC_LOAD_B64("b64decode", "\x26", "gAJ9c-QBYA_QAAAGFxAV1xAihLAUsCSwNlcy4="), SPA_VERDICT_SAFE, NULL);
    CASE(TC_LOAD_B64("urlsafe_b64decode", "\x24", "gAJ9cQBYAQAAAGFxAV1xAihLAUsCSwNlcy4="), SPA_VERDICT_SAFE, NULL);
    CASE(TC_LOAD_B64("b64decode", "\x26", "gAJ-jcG9zaXgKc3lzdGVtClgCAAAAaWSFUi4=_"), SPA_VERDICT_MALICIOUS, "nested.malicious");
}

T_MAIN("classify", T_CASE(test_fileload), T_CASE(test_lookup_limit), T_CASE(test_decoder_calls), T_CASE(test_calls), T_CASE(test_reflection), T_CASE(test_structural), T_CASE(test_nested), T_CASE(test_rawload_whole),
       T_CASE(test_reason_fields), T_CASE(test_policy_rules), T_CASE(test_hand_built_ir))
