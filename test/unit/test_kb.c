/* test_kb.c - the knowledge base: categories of stdlib and ML globals, aliases, dotted
 * component walks, name patterns, verbs, @nested, and spa_judge_global's by-name answers
 * (what the PEP 578 layer relies on). */
#include <stdlib.h>

#include "t.h"
#include "kb.h"

typedef struct { const char *m, *n; spa_kbcat want; } kb_vec;

static void test_categories(void) {
    static const kb_vec v[] = {
        {"os", "system", SPA_KB_PROCESS},
        {"posix", "system", SPA_KB_PROCESS},          /* alias */
        {"nt", "popen", SPA_KB_PROCESS},
        {"__builtin__", "eval", SPA_KB_CODE_EXEC},    /* py2 alias */
        {"builtins", "exec", SPA_KB_CODE_EXEC},
        {"builtins", "open", SPA_KB_FILE_WRITE},
        {"builtins", "getattr", SPA_KB_REFLECTION},
        {"builtins", "dict", SPA_KB_DATA},
        {"builtins", "dict.get", SPA_KB_STDLIB_OTHER}, /* dotted past a data class */
        {"builtins", "print", SPA_KB_STDLIB_OTHER},
        {"builtins", "KeyError", SPA_KB_DATA},         /* *Error pattern */
        {"_io", "FileIO", SPA_KB_FILE_WRITE},
        {"_pickle", "loads", SPA_KB_DESERIALIZE},
        {"subprocess", "Popen", SPA_KB_PROCESS},
        {"socket", "create_connection", SPA_KB_NETWORK},
        {"socket", "AddressFamily", SPA_KB_DATA},
        {"ctypes", "CDLL", SPA_KB_NATIVE},
        {"importlib", "import_module", SPA_KB_IMPORT},
        {"sys", "modules", SPA_KB_STATE_MUTATION},
        {"marshal", "loads", SPA_KB_CODE_EXEC},
        {"types", "FunctionType", SPA_KB_CODE_EXEC},
        {"types", "SimpleNamespace", SPA_KB_DATA},
        {"runpy", "_run_code", SPA_KB_CODE_EXEC},
        {"timeit", "timeit", SPA_KB_CODE_EXEC},
        {"xdrlib", "Packer", SPA_KB_STDLIB_OTHER},     /* generated section: every stdlib module */
        {"collections", "OrderedDict", SPA_KB_DATA},
        {"collections", "namedtuple", SPA_KB_STDLIB_OTHER},
        {"copyreg", "_reconstructor", SPA_KB_DATA},
        {"copy_reg", "_reconstructor", SPA_KB_DATA},
        {"copyreg", "add_extension", SPA_KB_STATE_MUTATION},
        {"_codecs", "encode", SPA_KB_DATA},
        {"re", "_compile", SPA_KB_DATA},
        {"zoneinfo", "ZoneInfo._unpickle", SPA_KB_DATA},
        {"datetime", "datetime", SPA_KB_DATA},
        {"pathlib", "PosixPath", SPA_KB_DATA},
        {"pathlib", "Path.write_text", SPA_KB_FILE_WRITE},
        {"argparse", "Namespace", SPA_KB_DATA},
        /* dotted components reach other modules */
        {"torch", "serialization.os.system", SPA_KB_PROCESS},
        {"os.path", "os.system", SPA_KB_PROCESS},
        {"numpy", "__builtins__", SPA_KB_REFLECTION},
        {"logging.handlers", "os.system", SPA_KB_PROCESS},
        {"asyncio.unix_events", "_UnixSubprocessTransport._start", SPA_KB_PROCESS},
        /* ML */
        {"torch._utils", "_rebuild_tensor_v2", SPA_KB_DATA},
        {"torch._utils", "_rebuild_parameter", SPA_KB_DATA},
        {"torch", "FloatStorage", SPA_KB_DATA},
        {"torch", "device", SPA_KB_DATA},
        {"torch", "load", SPA_KB_DESERIALIZE},
        {"torch.nn.modules.conv", "Conv2d", SPA_KB_DATA},
        {"torch.fx.graph_module", "_forward_from_src", SPA_KB_CODE_EXEC},
        {"torch.utils.collect_env", "run", SPA_KB_PROCESS},
        {"torch.jit.unsupported_tensor_ops", "execWrapper", SPA_KB_CODE_EXEC},
        {"torch._inductor.codecache", "compile_file", SPA_KB_CODE_EXEC},
        {"torch.hub", "load", SPA_KB_NETWORK},
        {"numpy.core.multiarray", "_reconstruct", SPA_KB_DATA},
        {"numpy", "dtype", SPA_KB_DATA},
        {"numpy", "load", SPA_KB_DESERIALIZE},
        {"numpy.testing._private.utils", "runstring", SPA_KB_CODE_EXEC},
        {"numpy.f2py.crackfortran", "myeval", SPA_KB_CODE_EXEC},
        {"numpy.random._pickle", "__randomstate_ctor", SPA_KB_DATA},
        {"pandas._libs.tslibs.timestamps", "_unpickle_timestamp", SPA_KB_DATA},
        {"pandas.core.computation.eval", "eval", SPA_KB_CODE_EXEC},
        {"pandas", "read_pickle", SPA_KB_DESERIALIZE},
        {"sklearn.tree._tree", "Tree", SPA_KB_DATA},
        {"joblib.numpy_pickle", "NumpyArrayWrapper", SPA_KB_DATA},
        {"dill._dill", "_create_code", SPA_KB_CODE_EXEC},
        /* third-party unknowns: patterns and verbs */
        {"mylib.models", "MyModel", SPA_KB_UNKNOWN},
        {"mylib.models", "_rebuild_thing", SPA_KB_DATA},
        {"mylib.cy", "__pyx_unpickle_Foo", SPA_KB_DATA},
        {"mylib.utils", "run_shell", SPA_KB_PROCESS},
        {"mylib.utils", "system", SPA_KB_PROCESS},
        {"mylib.utils", "helper", SPA_KB_UNKNOWN},
        /* import side effects */
        {"antigravity", "x", SPA_KB_CODE_EXEC},
        {"pip.__main__", "x", SPA_KB_CODE_EXEC},
        {"__main__", "MyClass", SPA_KB_UNKNOWN},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        spa_kbcat c = spa_kb_lookup(v[i].m, v[i].n);
        T_CHECK_MSG(c == v[i].want, "%s.%s: %s, want %s", v[i].m, v[i].n, spa_kbcat_name(c),
                    spa_kbcat_name(v[i].want));
    }
}

static void test_canon_and_stdlib(void) {
    char b[64];
    T_EQ_STR(spa_kb_canon("posix", b, sizeof b), "os");
    T_EQ_STR(spa_kb_canon("_operator", b, sizeof b), "operator");
    T_EQ_STR(spa_kb_canon("copy_reg", b, sizeof b), "copyreg");
    T_EQ_STR(spa_kb_canon("posixpath", b, sizeof b), "posixpath"); /* prefix of a longer name is not an alias */
    T_EQ_STR(spa_kb_canon("torch", b, sizeof b), "torch");
    T_CHECK(spa_kb_is_stdlib("os"));
    T_CHECK(spa_kb_is_stdlib("xml.etree.ElementTree"));
    T_CHECK(spa_kb_is_stdlib("posix"));
    T_CHECK(!spa_kb_is_stdlib("torch"));
    T_CHECK(!spa_kb_is_stdlib("osx")); /* component boundary */
    T_CHECK(spa_kb_nested_loader("torch.storage", "_load_from_bytes"));
    T_CHECK(!spa_kb_nested_loader("pickle", "loads"));
}

static void test_hit_details(void) {
    spa_kbhit h;
    T_EQ_INT(spa_kb_judge("torch", "serialization.os.system", &h), SPA_KB_PROCESS);
    T_EQ_INT(h.how, SPA_KBH_COMPONENT);
    T_EQ_INT(spa_kb_judge("builtins", "exec", &h), SPA_KB_CODE_EXEC);
    T_EQ_INT(h.how, SPA_KBH_EXACT);
    T_EQ_STR(h.key, "builtins:exec");
    T_CHECK(h.stdlib);
    T_EQ_INT(spa_kb_judge("mylib", "do_thing", &h), SPA_KB_UNKNOWN);
    T_CHECK(!h.stdlib);
    /* hostile inputs: NULL, empty, very long */
    T_EQ_INT(spa_kb_judge(NULL, "x", &h), SPA_KB_REFLECTION);
    char longname[2000];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    T_EQ_INT(spa_kb_judge("os", longname, &h), SPA_KB_REFLECTION);
    T_EQ_INT(h.how, SPA_KBH_TOOLONG);
    T_EQ_INT(spa_kb_lookup("", ""), SPA_KB_UNKNOWN);
}

static void test_judge_global_by_name(void) {
    spa_policy *p = NULL;
    T_EQ_INT(spa_policy_default(&p), SPA_OK);
    const char *rule = NULL;
    char msg[256];
    /* what find_class sees during a benign torch / sklearn / pandas load */
    static const char *const safe[][2] = {
        {"torch._utils", "_rebuild_tensor_v2"}, {"collections", "OrderedDict"}, {"torch", "FloatStorage"},
        {"numpy.core.multiarray", "_reconstruct"}, {"numpy", "ndarray"}, {"numpy", "dtype"},
        {"copyreg", "_reconstructor"}, {"argparse", "Namespace"}, {"pathlib", "PosixPath"},
        {"__main__", "MyNet"}, {"sklearn.pipeline", "Pipeline"}, {"builtins", "set"}, {"re", "_compile"},
    };
    for (size_t i = 0; i < sizeof safe / sizeof safe[0]; i++) {
        spa_verdict v = spa_judge_global(p, safe[i][0], safe[i][1], &rule, msg, sizeof msg);
        T_CHECK_MSG(v == SPA_VERDICT_SAFE, "%s.%s: %s (%s)", safe[i][0], safe[i][1], spa_verdict_name(v), msg);
    }
    /* trampolines used by benign pickles: at most suspicious by name */
    T_EQ_INT(spa_judge_global(p, "builtins", "getattr", &rule, msg, sizeof msg), SPA_VERDICT_SUSPICIOUS);
    T_EQ_INT(spa_judge_global(p, "functools", "partial", &rule, msg, sizeof msg), SPA_VERDICT_SUSPICIOUS);
    T_EQ_INT(spa_judge_global(p, "torch.storage", "_load_from_bytes", &rule, msg, sizeof msg), SPA_VERDICT_SUSPICIOUS);
    T_EQ_INT(spa_judge_global(p, "mylib", "helper", &rule, msg, sizeof msg), SPA_VERDICT_SUSPICIOUS);
    static const char *const bad[][2] = {
        {"os", "system"}, {"posix", "system"}, {"builtins", "eval"}, {"subprocess", "check_output"},
        {"pickle", "loads"}, {"builtins", "__import__"}, {"importlib", "import_module"}, {"runpy", "_run_code"},
        {"torch", "serialization.os.system"}, {"builtins", "vars"}, {"webbrowser", "open"}, {"antigravity", "x"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        spa_verdict v = spa_judge_global(p, bad[i][0], bad[i][1], &rule, msg, sizeof msg);
        T_CHECK_MSG(v == SPA_VERDICT_MALICIOUS, "%s.%s: %s", bad[i][0], bad[i][1], spa_verdict_name(v));
        T_CHECK(rule && rule[0]);
    }
    T_EQ_INT(spa_judge_global(p, NULL, "x", &rule, NULL, 0), SPA_VERDICT_MALICIOUS);
    spa_policy_free(p);

    /* explicit policy rules win over the KB */
    static const char js[] = "{\"schema\":1,\"globals\":{\"allow\":[\"os:system\"],\"deny\":[\"mylib.*\"]}}";
    spa_err e;
    T_EQ_INT(spa_policy_parse(js, sizeof js - 1, "t", &p, &e), SPA_OK);
    T_EQ_INT(spa_judge_global(p, "os", "system", &rule, msg, sizeof msg), SPA_VERDICT_SAFE);
    T_EQ_STR(rule, "policy.allow");
    T_EQ_INT(spa_judge_global(p, "posix", "system", &rule, msg, sizeof msg), SPA_VERDICT_SAFE); /* alias */
    T_EQ_INT(spa_judge_global(p, "mylib.sub", "Thing", &rule, msg, sizeof msg), SPA_VERDICT_MALICIOUS);
    T_EQ_STR(rule, "policy.deny");
    spa_policy_free(p);
}

/* The TSV file analyzer/kb/NAME, read from the repository (unit tests run from its
 * root; the candidates cover a run from build/test/ too), NUL-terminated; the caller
 * frees it. */
static char *tk_read_tsv(const char *name, size_t *n) {
    const char *dirs[] = { "analyzer/kb/", "../../analyzer/kb/", "../analyzer/kb/" };
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        char path[256];
        snprintf(path, sizeof path, "%s%s", dirs[i], name);
        FILE *f = fopen(path, "rb");
        if (!f) continue;
        size_t cap = 1 << 20, k;
        char *b = malloc(cap);
        k = b ? fread(b, 1, cap - 1, f) : 0;
        fclose(f);
        if (!b || k == cap - 1) { free(b); return NULL; }
        b[k] = '\0';
        *n = k;
        return b;
    }
    return NULL;
}

/* The build-time line table is the TSV text split as the KB always read it:
 * every line that is neither empty nor a comment, fields on TABs (at most 3,
 * a trailing TAB opens none), stdlib.tsv first. */
static void test_kb_line_table_matches_text(void) {
    size_t i = 0;
    bool same = true;
    for (int which = 0; which < 2; which++) {
        size_t n = 0;
        char *text = tk_read_tsv(which ? "ml.tsv" : "stdlib.tsv", &n);
        T_CHECK_MSG(text != NULL, "cannot read analyzer/kb/%s", which ? "ml.tsv" : "stdlib.tsv");
        if (!text) return;
        T_CHECK(strstr(text, which ? "torch._utils:_rebuild_*" : "@alias\tposix\tos") != NULL);
        const char *p = text, *end = p + n;
        while (p < end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            const char *le = nl ? nl : end, *s = p;
            p = nl ? nl + 1 : end;
            if (le == s || *s == '#') continue;
            const char *f[3] = { 0 }, *tf[3];
            size_t fl[3] = { 0 }, tfl[3];
            int nf = 0, tnf;
            bool std;
            while (s < le && nf < 3) {
                const char *tab = memchr(s, '\t', (size_t)(le - s));
                const char *fe = tab ? tab : le;
                f[nf] = s;
                fl[nf++] = (size_t)(fe - s);
                s = tab ? tab + 1 : le;
            }
            if (!spa_kb_line(i++, tf, tfl, &tnf, &std)) { same = false; break; }
            bool eq = tnf == nf && std == (which == 0);
            for (int k = 0; eq && k < nf; k++) eq = tfl[k] == fl[k] && !memcmp(tf[k], f[k], fl[k]);
            T_CHECK_MSG(eq, "KB line %zu differs from the text: %.*s", i - 1, (int)(le - f[0]), f[0]);
            same &= eq;
        }
        free(text);
    }
    const char *tf[3];
    size_t tfl[3];
    int tnf;
    bool std;
    T_CHECK_MSG(same && !spa_kb_line(i, tf, tfl, &tnf, &std), "the line table has more lines than the text");
    T_CHECK(i > 700);
}

/* Names no import finds, with or without an environment index (a GLOBAL's module line
 * cut from a log line of paths); names an import may find stay importable. */
static void test_importable_syntax(void) {
    const char *never[] = {"", ".os", "os.", "os..path", "compiler/jvmci/T.java containers: 4", "a/b", "json/"};
    for (size_t i = 0; i < sizeof never / sizeof never[0]; i++)
        T_CHECK_MSG(!spa_kb_importable(never[i]), "\"%s\"", never[i]);
    T_CHECK(spa_kb_importable("os"));
    T_CHECK(spa_kb_importable("os.path"));
    T_CHECK(spa_kb_importable(NULL)); /* nothing known */
}

T_MAIN("kb", T_CASE(test_categories), T_CASE(test_canon_and_stdlib), T_CASE(test_hit_details),
       T_CASE(test_importable_syntax),
       T_CASE(test_judge_global_by_name),
       T_CASE(test_kb_line_table_matches_text))
