/* test_vm.c - the VM emulator, one test per opcode family, with the C
 * unpickler's reading where it differs from pickletools (named per test). */
#include <math.h>

#include "t.h"
#include "vmt.h"

#define S0(r) (&(r)->streams[0])

/* The top value at STOP is not kept, so tests read values through a call:
 * builtins.f(<value>) makes the value the call's single argument. */
static const spa_val *arg0(const spa_result *r) {
    const spa_stream *s = S0(r);
    int k = vmt_count(s, SPA_IR_CALL);
    int c = k ? vmt_find(s, SPA_IR_CALL, k - 1) : -1;   /* the outermost call is the last */
    if (c < 0) return NULL;
    const spa_val *a = s->ir[c].arg;
    return a && a->kind == SPA_V_TUPLE && a->n ? a->u.seq.items[0] : NULL;
}
/* wrap: "cbuiltins\nf\n(" + X + "tR." */
static spa_result *call_with_n(const char *x, size_t xn) {
    char buf[512];
    memcpy(buf, "cbuiltins\nf\n(", 13);
    memcpy(buf + 13, x, xn);
    memcpy(buf + 13 + xn, "tR.", 3);
    return vmt_run((const uint8_t *)buf, 16 + xn);
}
#define call_with(s) call_with_n((s), sizeof(s) - 1)

static void test_int_text_base0(void) {
    /* C load_int uses strtol(s, &end, 0): hex and octal accepted (pickletools rejects both) */
    spa_result *r = call_with("I0x10\n");
    T_EQ_INT(arg0(r)->kind, SPA_V_INT); T_EQ_INT(arg0(r)->u.i, 16); spa_result_free(r);
    r = call_with("I010\n");
    T_EQ_INT(arg0(r)->u.i, 8); spa_result_free(r);
    r = call_with("I00\n");
    T_EQ_INT(arg0(r)->kind, SPA_V_BOOL); T_EQ_INT(arg0(r)->u.i, 0); spa_result_free(r);
    r = call_with("I01\n");
    T_EQ_INT(arg0(r)->kind, SPA_V_BOOL); T_EQ_INT(arg0(r)->u.i, 1); spa_result_free(r);
    r = call_with("I1\n");
    T_EQ_INT(arg0(r)->kind, SPA_V_INT); spa_result_free(r);
    /* strtol fails, PyLong_FromString(base 0) accepts underscores and spaces */
    r = call_with("I1_000 \n");
    T_EQ_INT(arg0(r)->u.i, 1000); spa_result_free(r);
    r = call_with("I123456789012345678901234567890\n");
    T_EQ_INT(arg0(r)->kind, SPA_V_LONG); spa_result_free(r);
    r = call_with("I0b101\n");
    T_EQ_INT(arg0(r)->u.i, 5); spa_result_free(r);
    /* errors: empty, garbage, base-0 leading zero in a long literal */
    r = vmt_run(B("I\n."));
    T_EQ_INT(S0(r)->err.code, SPA_E_TRUNCATED); spa_result_free(r);
    r = vmt_run(B("NIabc\n."));
    T_EQ_INT(S0(r)->err.code, SPA_E_BAD_ARG); T_EQ_INT(S0(r)->err.off, 1); spa_result_free(r);
    r = vmt_run(B("I0100000000000000000000000000000\n."));
    T_EQ_INT(S0(r)->err.code, SPA_E_BAD_ARG); spa_result_free(r);
}

static void test_long_and_float(void) {
    spa_result *r = call_with("L123L\n");
    T_EQ_INT(arg0(r)->u.i, 123); spa_result_free(r);
    r = call_with("L0x1F\n");           /* no L suffix, base 0 */
    T_EQ_INT(arg0(r)->u.i, 31); spa_result_free(r);
    r = call_with("\x8a\x02\xff\x7f");  /* LONG1 */
    T_EQ_INT(arg0(r)->u.i, 32767); spa_result_free(r);
    r = call_with("\x8a\x01\xff");      /* LONG1 -1 */
    T_EQ_INT(arg0(r)->u.i, -1); spa_result_free(r);
    r = vmt_run(B("\x80\x02\x8b\xff\xff\xff\xff."));  /* LONG4 negative count */
    T_EQ_INT(S0(r)->err.code, SPA_E_BAD_ARG); T_EQ_INT(S0(r)->err.off, 2); spa_result_free(r);
    r = call_with("F1.5\n");
    T_CHECK(arg0(r)->kind == SPA_V_FLOAT && arg0(r)->u.f == 1.5); spa_result_free(r);
    r = call_with("F-inf\n");
    T_CHECK(isinf(arg0(r)->u.f)); spa_result_free(r);
    r = vmt_run(B("F1.5x\n."));
    T_EQ_INT(S0(r)->err.code, SPA_E_BAD_ARG); spa_result_free(r);
    r = vmt_run(B("cbuiltins\nf\n(G?\xf8\x00\x00\x00\x00\x00\x00tR."));
    T_CHECK(arg0(r)->u.f == 1.5); spa_result_free(r);
}

static void test_strings(void) {
    /* STRING: quotes required, escapes decoded as PyBytes_DecodeEscape */
    spa_result *r = call_with("S'a\\x41\\101\\n\\q'\n");
    const spa_val *v = arg0(r);
    T_EQ_INT(v->kind, SPA_V_BYTES);
    T_CHECK(v->flags & SPA_VF_PY2STR);
    T_CHECK(v->u.s.len == 6 && !memcmp(v->u.s.p, "aAA\n\\q", 6));
    spa_result_free(r);
    r = vmt_run(B("S'abc\n."));
    T_EQ_INT(S0(r)->err.code, SPA_E_BAD_ARG); spa_result_free(r);
    r = vmt_run(B("S'a\\x4'\n."));
    T_EQ_INT(S0(r)->err.code, SPA_E_BAD_ARG); spa_result_free(r);
    r = vmt_run(B("S'a\\'\n."));          /* trailing backslash */
    T_EQ_INT(S0(r)->err.code, SPA_E_BAD_ARG); spa_result_free(r);
    /* UNICODE: raw-unicode-escape; only \u and \U are escapes */
    r = call_with("Va\\u0041\\n\\U0001F600\n");
    v = arg0(r);
    T_EQ_INT(v->kind, SPA_V_STR);
    T_CHECK(v->u.s.len == 8 && !memcmp(v->u.s.p, "aA\\n\xf0\x9f\x98\x80", 8));
    spa_result_free(r);
    r = vmt_run(B("Va\\u00\n."));
    T_EQ_INT(S0(r)->err.code, SPA_E_BAD_ARG); spa_result_free(r);
    /* BINUNICODE must be UTF-8 (surrogatepass) */
    r = vmt_run(B("X\x02\x00\x00\x00\xc3\x28."));
    T_EQ_INT(S0(r)->err.code, SPA_E_BAD_ARG); spa_result_free(r);
    r = call_with("X\x03\x00\x00\x00\xed\xa0\x80");   /* lone surrogate: accepted */
    T_EQ_INT(arg0(r)->kind, SPA_V_STR); spa_result_free(r);
    /* BINSTRING negative count */
    r = vmt_run(B("T\x00\x00\x00\x80."));
    T_EQ_INT(S0(r)->err.code, SPA_E_BAD_ARG); spa_result_free(r);
    /* bytes family and BYTEARRAY8 */
    r = call_with("C\x02hi");
    T_CHECK(arg0(r)->kind == SPA_V_BYTES && arg0(r)->u.s.len == 2); spa_result_free(r);
    r = call_with("\x96\x03\x00\x00\x00\x00\x00\x00\x00" "abc");
    T_CHECK(arg0(r)->kind == SPA_V_BYTES && (arg0(r)->flags & SPA_VF_BYTEARRAY)); spa_result_free(r);
    r = call_with("\x8e\x01\x00\x00\x00\x00\x00\x00\x00z");
    T_CHECK(arg0(r)->kind == SPA_V_BYTES && arg0(r)->u.s.p[0] == 'z'); spa_result_free(r);
}

static void test_buffers(void) {
    spa_result *r = call_with("\x97\x98");
    T_EQ_INT(arg0(r)->kind, SPA_V_BUFFER);
    T_CHECK(arg0(r)->flags & SPA_VF_READONLY);
    T_CHECK(S0(r)->complete);
    spa_result_free(r);
}

static void test_containers(void) {
    spa_result *r = call_with("K\x01K\x02\x86");
    T_CHECK(arg0(r)->kind == SPA_V_TUPLE && arg0(r)->n == 2); spa_result_free(r);
    r = call_with("](K\x01K\x02K\x03" "e");
    T_CHECK(arg0(r)->kind == SPA_V_LIST && arg0(r)->u.seq.count == 3); spa_result_free(r);
    r = call_with("}(K\x01K\x02K\x03K\x04u");
    T_CHECK(arg0(r)->kind == SPA_V_DICT && arg0(r)->u.seq.count == 4 && arg0(r)->n == 4); spa_result_free(r);
    r = call_with("\x8f(K\x01K\x02\x90");
    T_CHECK(arg0(r)->kind == SPA_V_SET && arg0(r)->u.seq.count == 2); spa_result_free(r);
    r = call_with("(K\x01\x91");
    T_CHECK(arg0(r)->kind == SPA_V_FROZENSET); spa_result_free(r);
    r = vmt_run(B("(K\x01" "d."));            /* odd DICT */
    T_EQ_INT(S0(r)->err.code, SPA_E_STACK); spa_result_free(r);
    /* long plain lists keep 8 items but count all; items holding calls are kept */
    char buf[4096];
    int n = sprintf(buf, "cbuiltins\nf\n(](");
    for (int i = 0; i < 100; i++) n += sprintf(buf + n, "K%c", i);
    n += sprintf(buf + n, "cos\nsystem\n)Re");
    n += sprintf(buf + n, "tR.");
    r = vmt_run((const uint8_t *)buf, (size_t)n);
    const spa_val *l = arg0(r);
    T_CHECK(l && l->kind == SPA_V_LIST);
    if (!l) return;
    T_EQ_INT(l->u.seq.count, 101);
    T_EQ_INT(l->n, 9);
    T_CHECK(l->flags & SPA_VF_TRUNC);
    T_EQ_INT(l->u.seq.items[8]->kind, SPA_V_CALL);
    spa_result_free(r);
}

static void test_marks_and_stack(void) {
    /* POP on a MARK pops the mark (C load_pop) */
    spa_result *r = vmt_run(B("N(0."));
    T_CHECK(S0(r)->complete); spa_result_free(r);
    /* APPEND needs the list above the fence */
    r = vmt_run(B("](Na."));
    T_EQ_INT(S0(r)->err.code, SPA_E_STACK); T_EQ_INT(S0(r)->err.off, 3); spa_result_free(r);
    r = vmt_run(B("t."));
    T_EQ_INT(S0(r)->err.code, SPA_E_MARK); spa_result_free(r);
    r = vmt_run(B("0"));
    T_EQ_INT(S0(r)->err.code, SPA_E_STACK); spa_result_free(r);
    /* STOP with an empty stack above the mark underflows */
    r = vmt_run(B("N(."));
    T_EQ_INT(S0(r)->err.code, SPA_E_STACK); T_CHECK(!S0(r)->complete); spa_result_free(r);
    r = vmt_run(B("N2\x86."));             /* DUP */
    T_CHECK(S0(r)->complete); spa_result_free(r);
}

static void test_memo(void) {
    /* MEMOIZE uses the number of distinct keys (len(memo)), mixed with PUT */
    spa_result *r = vmt_run(B("\x80\x04\x8c\x02os" "p5\n" "\x8c\x06system" "\x94" "0" "h\x05" "h\x01" "\x93."));
    T_CHECK(vmt_has_import(r, "os", "system")); T_CHECK(S0(r)->complete); spa_result_free(r);
    /* redefinition replaces */
    r = vmt_run(B("\x80\x04\x8c\x04json" "q\x00" "\x8c\x02os" "q\x00" "0" "\x8c\x06system" "q\x01" "0" "0" "h\x00h\x01\x93."));
    T_CHECK(vmt_has_import(r, "os", "system")); T_CHECK(!vmt_has_import(r, "json", "system")); spa_result_free(r);
    /* LONG_BINPUT with a huge key, LONG_BINGET of it */
    r = vmt_run(B("\x80\x04\x8c\x02os" "r\xff\xff\xff\xff" "\x8c\x06system" "0j\xff\xff\xff\xff" "\x8c\x06system\x93."));
    T_CHECK(vmt_has_import(r, "os", "system")); spa_result_free(r);
    /* text PUT/GET, base 10 */
    r = vmt_run(B("S'os'\np007\n0g7\nS'system'\n\x93."));
    T_CHECK(vmt_has_import(r, "os", "system")); spa_result_free(r);
    /* text keys beyond 32 bits are fine for the loader (Py_ssize_t) */
    r = vmt_run(B("S'os'\np99999999999\n0g99999999999\nS'system'\n\x93."));
    T_CHECK(vmt_has_import(r, "os", "system")); spa_result_free(r);
    r = vmt_run(B("Np99999999999999999999999\n."));
    T_EQ_INT(S0(r)->err.code, SPA_E_BAD_ARG); spa_result_free(r);
    r = vmt_run(B("Np-1\n."));
    T_EQ_INT(S0(r)->err.code, SPA_E_BAD_ARG); spa_result_free(r);
    r = vmt_run(B("NNh\x09."));
    T_EQ_INT(S0(r)->err.code, SPA_E_MEMO); T_EQ_INT(S0(r)->err.off, 2); spa_result_free(r);
    r = vmt_run(B("\x94."));
    T_EQ_INT(S0(r)->err.code, SPA_E_STACK); spa_result_free(r);
}

static void test_globals_and_compat(void) {
    /* protocol < 3: Python 2 names mapped as _compat_pickle does */
    spa_result *r = vmt_run(B("\x80\x02" "c__builtin__\neval\n."));
    T_CHECK(vmt_has_import(r, "builtins", "eval"));
    const spa_ir *e = &S0(r)->ir[0];
    T_EQ_STR(e->result->u.g.raw_module, "__builtin__");
    spa_result_free(r);
    r = vmt_run(B("ccopy_reg\n_reconstructor\n."));
    T_CHECK(vmt_has_import(r, "copyreg", "_reconstructor")); spa_result_free(r);
    r = vmt_run(B("cexceptions\nOSError\n."));
    T_CHECK(vmt_has_import(r, "builtins", "OSError")); spa_result_free(r);
    r = vmt_run(B("c__builtin__\nxrange\n."));
    T_CHECK(vmt_has_import(r, "builtins", "range")); spa_result_free(r);
    /* protocol 3: no mapping */
    r = vmt_run(B("\x80\x03" "c__builtin__\neval\n."));
    T_CHECK(vmt_has_import(r, "__builtin__", "eval")); spa_result_free(r);
    /* dotted names kept under protocol 4 */
    r = vmt_run(B("\x80\x04\x8c\x05torch\x8c\x17serialization.os.system\x93."));
    T_CHECK(vmt_has_import(r, "torch", "serialization.os.system")); spa_result_free(r);
    /* STACK_GLOBAL from STRING without PROTO (a str under the default encoding) */
    r = vmt_run(B("S'os'\nS'system'\n\x93."));
    T_CHECK(vmt_has_import(r, "os", "system")); spa_result_free(r);
    /* ... from bytes: the loader refuses */
    r = vmt_run(B("\x80\x03" "C\x02osC\x06system\x93."));
    T_EQ_INT(S0(r)->err.code, SPA_E_STACK); spa_result_free(r);
    /* dynamic operand: a global that is a str at run time (os.name) */
    r = vmt_run(B("\x80\x04" "cos\nname\n\x8c\x06system\x93."));
    int i = vmt_find(S0(r), SPA_IR_IMPORT, 1);
    T_CHECK(i >= 0 && (S0(r)->ir[i].flags & SPA_IRF_DYNAMIC));
    spa_result_free(r);
    /* EXT codes: recorded as copyreg <ext:N>; code 0 is an error */
    r = vmt_run(B("\x80\x02\x82\x01\x83\x02\x01\x84\x03\x00\x00\x00."));
    T_CHECK(vmt_has_import(r, "copyreg", "<ext:1>"));
    T_CHECK(vmt_has_import(r, "copyreg", "<ext:258>"));
    T_CHECK(vmt_has_import(r, "copyreg", "<ext:3>"));
    spa_result_free(r);
    r = vmt_run(B("\x80\x02\x82\x00."));
    T_EQ_INT(S0(r)->err.code, SPA_E_BAD_ARG); spa_result_free(r);
}

static void test_calls(void) {
    /* REDUCE; a call of a call result */
    spa_result *r = vmt_run(B("cbuiltins\ngetattr\n(cos\npath\nS'system'\ntR(S'id'\ntR."));
    const spa_stream *s = S0(r);
    T_EQ_INT(vmt_count(s, SPA_IR_CALL), 2);
    int c2 = vmt_find(s, SPA_IR_CALL, 1);
    T_EQ_INT(s->ir[c2].target->kind, SPA_V_CALL);
    T_EQ_STR(vmt_repr(s->ir[c2].result), "builtins.getattr(os.path, 'system')('id')");
    spa_result_free(r);
    /* INST: import, then instantiate with the items after the mark */
    r = vmt_run(B("(S'import os'\nirunpy\n_run_code\n."));
    s = S0(r);
    T_CHECK(vmt_has_import(r, "runpy", "_run_code"));
    int c = vmt_find(s, SPA_IR_CALL, 0);
    T_CHECK(c >= 0 && (s->ir[c].flags & SPA_IRF_INST) && s->ir[c].opcode == 'i');
    spa_result_free(r);
    /* INST with no mark: the pure-Python loader imports first, then fails */
    r = vmt_run(B("ios\nsystem\n."));
    T_CHECK(vmt_has_import(r, "os", "system")); T_EQ_INT(S0(r)->err.code, SPA_E_MARK); spa_result_free(r);
    r = vmt_run(B("(cbdb\nBdb\nS'x'\no."));
    T_EQ_INT(vmt_count(S0(r), SPA_IR_CALL), 1); spa_result_free(r);
    r = vmt_run(B("\x80\x02" "ccode\nInteractiveInterpreter\n)\x81."));
    c = vmt_find(S0(r), SPA_IR_CALL, 0);
    T_CHECK(c >= 0 && (S0(r)->ir[c].flags & SPA_IRF_NEW)); spa_result_free(r);
    r = vmt_run(B("\x80\x04\x8c\x06timeit\x8c\x05Timer\x93)}\x92."));
    c = vmt_find(S0(r), SPA_IR_CALL, 0);
    T_CHECK(c >= 0 && S0(r)->ir[c].kwargs && S0(r)->ir[c].kwargs->kind == SPA_V_DICT); spa_result_free(r);
}

static void test_build_mutate_discard_persid(void) {
    /* BUILD applied to a global */
    spa_result *r = vmt_run(B("ccollections\nOrderedDict\n}S'x'\ncos\nsystem\nsb."));
    const spa_stream *s = S0(r);
    int b = vmt_find(s, SPA_IR_BUILD, 0);
    T_CHECK(b >= 0 && s->ir[b].target->kind == SPA_V_GLOBAL && s->ir[b].arg->kind == SPA_V_DICT);
    spa_result_free(r);
    /* SETITEM on os.environ calls __setitem__ */
    r = vmt_run(B("cos\nenviron\nS'LD_PRELOAD'\nS'/x.so'\ns."));
    s = S0(r);
    int m = vmt_find(s, SPA_IR_MUTATE, 0);
    T_CHECK(m >= 0 && s->ir[m].target->kind == SPA_V_GLOBAL && s->ir[m].arg->n == 2);
    spa_result_free(r);
    /* APPENDS onto a call result */
    r = vmt_run(B("cbuiltins\nlist\n)R(K\x01" "e."));
    T_EQ_INT(vmt_count(S0(r), SPA_IR_MUTATE), 1); spa_result_free(r);
    /* SETITEM on a literal dict is data, not a mutation */
    r = vmt_run(B("}K\x01K\x02s."));
    T_EQ_INT(vmt_count(S0(r), SPA_IR_MUTATE), 0); spa_result_free(r);
    /* a discarded call still ran */
    r = vmt_run(B("cos\nsystem\n(S'id'\ntR0N."));
    s = S0(r);
    int d = vmt_find(s, SPA_IR_DISCARD, 0);
    T_CHECK(d >= 0 && s->ir[d].target->kind == SPA_V_CALL && (s->ir[d].target->flags & SPA_VF_DISCARDED));
    spa_result_free(r);
    r = vmt_run(B("(cos\nsystem\n(S'a'\ntRK\x01" "1N."));   /* POP_MARK */
    T_EQ_INT(vmt_count(S0(r), SPA_IR_DISCARD), 1); spa_result_free(r);
    r = vmt_run(B("K\x01" "0N."));                            /* plain values: no entry */
    T_EQ_INT(vmt_count(S0(r), SPA_IR_DISCARD), 0); spa_result_free(r);
    /* persistent ids */
    r = vmt_run(B("Pfoo\n0\x80\x02U\x03" "barQ."));
    T_EQ_INT(vmt_count(S0(r), SPA_IR_PERSID), 2); T_CHECK(S0(r)->complete); spa_result_free(r);
}

static void test_stream_robustness(void) {
    /* stacked pickles: both streams, the second's offsets stream-relative */
    spa_result *r = vmt_run(B("N.cos\nsystem\n."));
    T_EQ_INT(r->n_streams, 2);
    T_CHECK(r->streams[0].complete && r->streams[1].complete);
    T_EQ_INT(r->streams[1].start, 2);
    T_EQ_INT(r->streams[1].ir[0].off, 0);
    spa_result_free(r);
    /* error after the payload keeps the payload */
    r = vmt_run(B("cos\nsystem\n(S'id'\ntR\xff\xfe"));
    T_CHECK(vmt_has_import(r, "os", "system"));
    T_EQ_INT(vmt_count(S0(r), SPA_IR_CALL), 1);
    T_EQ_INT(S0(r)->err.code, SPA_E_BAD_OPCODE); T_EQ_INT(S0(r)->err.off, 20);
    spa_result_free(r);
    r = vmt_run(B("cos\nsystem\n(S'id'\ntRX\xff\xff\x00\x00" "abc"));
    T_EQ_INT(S0(r)->err.code, SPA_E_TRUNCATED); T_EQ_INT(vmt_count(S0(r), SPA_IR_CALL), 1); spa_result_free(r);
    /* PROTO above HIGHEST_PROTOCOL is rejected */
    r = vmt_run(B("\x80\x06N."));
    T_EQ_INT(S0(r)->err.code, SPA_E_BAD_ARG); T_EQ_INT(S0(r)->err.off, 0); spa_result_free(r);
    r = vmt_run(B("\x80\x05N."));
    T_EQ_INT(S0(r)->proto, 5); T_CHECK(S0(r)->complete); spa_result_free(r);
    /* a GLOBAL line cut by EOF: pure Python imports line[:-1] */
    r = vmt_run(B("cos\nsystem"));
    T_CHECK(vmt_has_import(r, "os", "syste")); T_EQ_INT(S0(r)->err.code, SPA_E_TRUNCATED); spa_result_free(r);
    /* empty input */
    r = vmt_run((const uint8_t *)"", 0);
    T_EQ_INT(r->n_streams, 0); spa_result_free(r);
}

static void test_frames(void) {
    /* FRAME past EOF: C file reader fails at the FRAME, pure Python runs the
     * content: the linear stream has the payload, a second stream the C view */
    spa_result *r = vmt_run(B("\x80\x04\x95\xff\xff\x00\x00\x00\x00\x00\x00\x8c\x02os\x8c\x06system\x93."));
    T_CHECK(vmt_has_import(r, "os", "system"));
    T_CHECK(S0(r)->complete);
    T_EQ_INT(r->n_streams, 2);
    T_EQ_INT(r->streams[1].parent, 0);
    T_EQ_INT(r->streams[1].err.code, SPA_E_TRUNCATED);
    spa_result_free(r);
    /* a line crossing the frame end: the C file reader reads the line after
     * the frame ("ystem"), skipping the frame's tail */
    r = vmt_run(B("\x80\x04\x95\x06\x00\x00\x00\x00\x00\x00\x00" "cos\nsy" "stem\nN." "XXX"));
    T_CHECK(vmt_has_import(r, "os", "system"));
    T_CHECK(vmt_has_import(r, "os", "stem"));
    spa_result_free(r);
    /* BINBYTES payloads are read with _Unpickler_ReadInto: linear across a
     * frame end, so no second reading; a BINUNICODE payload is not */
    r = vmt_run(B("\x80\x04\x95\x04\x00\x00\x00\x00\x00\x00\x00" "C\x05" "ab" "cde0N."));
    T_EQ_INT(r->n_streams, 1); T_CHECK(S0(r)->complete); spa_result_free(r);
    r = vmt_run(B("\x80\x04\x95\x04\x00\x00\x00\x00\x00\x00\x00" "\x8c\x05" "ab" "cde0N."));
    T_EQ_INT(r->n_streams, 2); T_CHECK(S0(r)->complete); spa_result_free(r);
    /* well-formed frames need no second reading */
    r = vmt_run(B("\x80\x04\x95\x02\x00\x00\x00\x00\x00\x00\x00N."));
    T_EQ_INT(r->n_streams, 1); T_CHECK(S0(r)->complete); spa_result_free(r);
}

/* A memoised list or dict that nothing but the memo holds any more becomes a
 * summary in the memo and its node is recycled: 100k memoised dicts, each
 * holding a memoised list, appended in batches of 1000 as pickle writes them,
 * cost no node each. A released container fetched again is held by the memo
 * again, so what is added to it is seen by later GETs, and two GETs give the
 * same object. */
static void test_memo_released_containers(void) {
    enum { N = 100000, BATCH = 1000 };
    uint8_t *b = malloc((size_t)N * 8 + N / BATCH * 2 + 16);
    size_t k = 0;
    b[k++] = 0x80; b[k++] = 4; b[k++] = ']'; b[k++] = 0x94;
    for (int i = 0; i < N; i++) {
        if (i % BATCH == 0) b[k++] = '(';
        /* {1: []} with both memoised */
        b[k++] = '}'; b[k++] = 0x94; b[k++] = 'K'; b[k++] = 1; b[k++] = ']'; b[k++] = 0x94; b[k++] = 's';
        if (i % BATCH == BATCH - 1) b[k++] = 'e';
    }
    b[k++] = '.';
    spa_result *r = vmt_run(b, k);
    T_CHECK(S0(r)->complete);
    T_CHECK_MSG(spa_arena_used(r->arena) < (2u << 20), "%zu arena bytes for %d memoised dicts",
                spa_arena_used(r->arena), N);
    spa_result_free(r);
    free(b);
    /* released (POP), fetched, given a global, released, fetched, passed to f */
    r = vmt_run(B("\x80\x02]q\x00" "0" "h\x00" "cos\nsystem\n" "a0" "cbuiltins\nf\nh\x00\x85R."));
    const spa_val *l = arg0(r);
    T_CHECK(l && l->kind == SPA_V_LIST && l->n == 1 && l->u.seq.items[0]->kind == SPA_V_GLOBAL);
    spa_result_free(r);
    r = vmt_run(B("\x80\x02}q\x00" "0" "cbuiltins\nf\nh\x00h\x00\x86\x85R."));
    const spa_val *t = arg0(r);
    T_CHECK(t && t->kind == SPA_V_TUPLE && t->n == 2 && t->u.seq.items[0] == t->u.seq.items[1] &&
            t->u.seq.items[0]->kind == SPA_V_DICT);
    spa_result_free(r);
}

/* The memo keeps only what a GET reads back (spa_vm_getkeys' pre-pass):
 * 200,000 memoised strings read through a pread source (the VM copies
 * them, as for a file) cost no arena per string; a value memoised first
 * and fetched after all of them is still there, and an import built from
 * memoised operands is still seen. BUILD and text GET make the pre-pass
 * give up: the memo keeps everything and the same IR comes out. */
static ssize_t pr_pread(void *ctx, void *buf, size_t len, uint64_t off) {
    const spa_src *m = ctx;
    if (off >= m->size) return 0;
    if (len > m->size - off) len = (size_t)(m->size - off);
    memcpy(buf, m->mem + off, len);
    return (ssize_t)len;
}

static uint64_t pr_bytes_read;
static spa_result *run_pread_lim(const uint8_t *p, size_t n, const spa_limits *lim) {
    spa_scan_opts o;
    memset(&o, 0, sizeof o);
    if (lim) o.limits = *lim; else spa_limits_default(&o.limits);
    o.name = "t";
    spa_scan_ctx *sc = spa_ctx_create(&o);
    static spa_src mem;
    spa_src_mem(&mem, p, n);
    spa_src src = { pr_pread, &mem, n, NULL };
    spa_in *in = spa_in_from_src(spa_ctx_arena(sc), &src, 0, n);
    uint32_t idx;
    (void)spa_vm_run(sc, in, "t", 0, UINT32_MAX, &idx);
    pr_bytes_read = spa_in_bytes_read(in);
    return spa_ctx_finish(sc, SPA_FMT_PICKLE, n);
}
static spa_result *run_pread(const uint8_t *p, size_t n) { return run_pread_lim(p, n, NULL); }

static size_t pr_build(uint8_t *b, int n, const uint8_t *tail, size_t t) {
    size_t k = 0;
    /* memo 0 = 'os', 1 = 'system' (protocol 4, MEMOIZE), then a list of n strings */
    static const char head[] = "\x80\x04\x8c\x02os\x94\x8c\x06system\x94]\x94";
    memcpy(b + k, head, sizeof head - 1); k += sizeof head - 1;
    for (int i = 0; i < n; i++) {
        if (i % 1000 == 0) b[k++] = '(';
        b[k++] = 0x8c; b[k++] = 10;
        k += (size_t)sprintf((char *)b + k, "tok%07d", i);
        b[k++] = 0x94;
        if (i % 1000 == 999) b[k++] = 'e';
    }
    memcpy(b + k, tail, t);
    return k + t;
}

static void test_memo_pruned(void) {
    enum { N = 200000 };
    uint8_t *b = malloc((size_t)N * 14 + 4096);
    /* pop the list, fetch 'os' and 'system' (LONG_BINGET), import */
    size_t n = pr_build(b, N, B("0j\x00\x00\x00\x00h\x01\x93."));
    spa_result *r = run_pread(b, n);
    T_CHECK(S0(r)->complete);
    T_CHECK(vmt_has_import(r, "os", "system"));
    T_CHECK_MSG(spa_arena_used(r->arena) < (1u << 20), "%zu arena bytes for %d memoised strings",
                spa_arena_used(r->arena), N);
    spa_result_free(r);
    /* key N + 2 (the last string) read back: kept, and its bytes are right */
    n = pr_build(b, N, B("0\x8c\x08" "builtins\x8c\x05print\x93j\x42\x0d\x03\x00\x85R."));
    r = run_pread(b, n);
    T_CHECK(S0(r)->complete);
    T_CHECK(arg0(r) && arg0(r)->kind == SPA_V_STR);
    T_EQ_STR(vmt_repr(arg0(r)), "'tok0199999'");
    spa_result_free(r);
    /* the definitions' bitmap has slid far past key 5 (keys come in order):
     * redefining it does not count as a new key, so MEMOIZE then writes key
     * N + 3 (len(memo)), which a LONG_BINGET reads back */
    n = pr_build(b, N, B("0\x8c\x02osr\x05\x00\x00\x00\x94" "0j\x43\x0d\x03\x00h\x01\x93."));
    r = run_pread(b, n);
    T_CHECK(S0(r)->complete);
    T_CHECK(vmt_has_import(r, "os", "system"));
    spa_result_free(r);
    /* a BUILD anywhere: no pruning, same imports */
    n = pr_build(b, N, B("0j\x00\x00\x00\x00h\x01\x93}b."));
    r = run_pread(b, n);
    T_CHECK(vmt_has_import(r, "os", "system"));
    T_CHECK_MSG(spa_arena_used(r->arena) > (size_t)N * 10, "%zu arena bytes: the memo kept nothing",
                spa_arena_used(r->arena));
    spa_result_free(r);
    /* a text GET: no pruning */
    n = pr_build(b, N, B("0g0\nh\x01\x93."));
    r = run_pread(b, n);
    T_CHECK(vmt_has_import(r, "os", "system"));
    spa_result_free(r);
    /* the pre-pass stops where the VM's limits stop it: max_bytes = 64 KiB
     * of a 2.8 MB stream reads a window's worth, not the stream */
    spa_limits lim;
    spa_limits_default(&lim);
    lim.v[SPA_LIM_BYTES] = 65536;
    n = pr_build(b, N, B("0j\x00\x00\x00\x00h\x01\x93."));
    r = run_pread_lim(b, n, &lim);
    T_EQ_INT(S0(r)->err.code, SPA_E_LIMIT);
    T_CHECK_MSG(pr_bytes_read < n / 4, "%llu of %zu bytes read", (unsigned long long)pr_bytes_read, n);
    spa_result_free(r);
    lim.v[SPA_LIM_BYTES] = UINT64_MAX;
    lim.v[SPA_LIM_OPS] = 1000;
    r = run_pread_lim(b, n, &lim);
    T_EQ_INT(S0(r)->err.code, SPA_E_LIMIT);
    T_CHECK_MSG(pr_bytes_read < n / 4, "%llu of %zu bytes read", (unsigned long long)pr_bytes_read, n);
    spa_result_free(r);
    /* a memo key fetched that no opcode defined: the loader's error */
    n = pr_build(b, 10, B("0j\x40\x00\x00\x00."));
    r = run_pread(b, n);
    T_EQ_INT(S0(r)->err.code, SPA_E_MEMO);
    spa_result_free(r);
    free(b);
}

T_MAIN("vm", T_CASE(test_int_text_base0), T_CASE(test_long_and_float), T_CASE(test_strings),
       T_CASE(test_buffers), T_CASE(test_containers), T_CASE(test_marks_and_stack), T_CASE(test_memo),
       T_CASE(test_globals_and_compat), T_CASE(test_calls), T_CASE(test_build_mutate_discard_persid),
       T_CASE(test_stream_robustness), T_CASE(test_frames), T_CASE(test_memo_released_containers),
       T_CASE(test_memo_pruned))
