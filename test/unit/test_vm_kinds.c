/* test_vm_kinds.c - the VM's kinds-only path (vm.c, "kinds-only path"):
 * for streams at every boundary it checks (stack fence, MARKs, add targets,
 * memo definitions, frames, limits), the report of the default VM equals
 * the fast loop's alone (SPA_VM_PATH_FAST) and the general path's
 * (SPA_VM_PATH_GENERAL), over memory and over a pread window served in
 * small pieces; the data-only ones really run on that path (the stream is
 * read once: the general path reads it twice, pre-pass and run); and over
 * the whole scan, a nested pickle or base64 constant inside plain data is
 * still found. */
#include <cjson/cJSON.h>

#include "t.h"
#include "vmt.h"
#include "report.h"

typedef struct { const uint8_t *p; size_t n, piece; } kp_src;

static ssize_t kp_pread(void *ctx, void *buf, size_t len, uint64_t off) {
    kp_src *s = ctx;
    if (off >= s->n) return 0;
    size_t k = s->n - (size_t)off;
    if (k > len) k = len;
    if (k > s->piece) k = s->piece;
    memcpy(buf, s->p + off, k);
    return (ssize_t)k;
}

/* The JSON report of p[0..n) on VM path `path` (stacked streams, as the
 * container layer runs them), over memory (piece 0) or a pread of `piece`
 * bytes at a time; *read = the bytes the input pulled. */
static char *kp_report(const uint8_t *p, size_t n, int path, size_t piece, const spa_limits *lim,
                       uint64_t *read) {
    spa_scan_opts o;
    memset(&o, 0, sizeof o);
    if (lim) o.limits = *lim; else spa_limits_default(&o.limits);
    o.name = "t";
    o.vm_path = path;
    spa_scan_ctx *sc = spa_ctx_create(&o);
    kp_src ks = { p, n, piece };
    spa_src src;
    if (piece) src = (spa_src){ kp_pread, &ks, n, NULL };
    else spa_src_mem(&src, p, n);
    spa_in *in = spa_in_from_src(spa_ctx_arena(sc), &src, 0, n);
    for (int i = 0; i < 16 && !spa_in_eof(in); i++) {
        uint32_t idx;
        uint64_t before = spa_in_pos(in);
        if (spa_vm_run(sc, in, "t", 0, UINT32_MAX, &idx) != SPA_OK) break;
        spa_stream *s = spa_ctx_stream(sc, idx);
        if (!s || !s->complete || spa_in_pos(in) == before) break;
    }
    if (read) *read = spa_in_bytes_read(in);
    spa_result *r = spa_ctx_finish(sc, SPA_FMT_PICKLE, n);
    cJSON *j = r ? spa_report_json(r) : NULL;
    char *txt = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    spa_result_free(r);
    return txt;
}

/* Same report on the three paths and both inputs; returns the bytes the
 * default path read over pread (to tell whether the kinds-only path kept it). */
static uint64_t kp_same1(const uint8_t *p, size_t n, const spa_limits *lim, const char *what) {
    static const size_t pieces[] = { 0, 3, 4096 };
    uint64_t rd = 0;
    for (size_t i = 0; i < sizeof pieces / sizeof pieces[0]; i++) {
        uint64_t r0;
        char *k = kp_report(p, n, 0, pieces[i], lim, &r0);
        char *f = kp_report(p, n, SPA_VM_PATH_FAST, pieces[i], lim, NULL);
        char *g = kp_report(p, n, SPA_VM_PATH_GENERAL, pieces[i], lim, NULL);
        T_CHECK_MSG(k && g && !strcmp(k, g), "%s (piece %zu): kinds-only\n%s\ngeneral\n%s", what, pieces[i],
                    k ? k : "-", g ? g : "-");
        T_CHECK_MSG(f && g && !strcmp(f, g), "%s (piece %zu): fast\n%s\ngeneral\n%s", what, pieces[i],
                    f ? f : "-", g ? g : "-");
        if (pieces[i] == 4096) rd = r0;
        free(k);
        free(f);
        free(g);
    }
    return rd;
}

/* kp_same1 of p, and of p followed by a second stream of 16 bytes: the
 * fast loops need 9 bytes in the window, so only then do p's opcodes run
 * there rather than one at a time. */
static uint64_t kp_same(const uint8_t *p, size_t n, const spa_limits *lim, const char *what) {
    static const char pad[] = "N0N0N0N0N0N0N0N.";
    uint8_t *b = malloc(n + sizeof pad);
    if (!b) return 0;
    memcpy(b, p, n);
    memcpy(b + n, pad, sizeof pad - 1);
    (void)kp_same1(b, n + sizeof pad - 1, lim, what);
    free(b);
    return kp_same1(p, n, lim, what);
}

#define KP(s) (const uint8_t *)(s), (sizeof(s) - 1), (s)

/* Streams the kinds-only path completes: read once */
static void test_data_only_runs_on_kinds(void) {
    static const struct { const uint8_t *p; size_t n; const char *what; } ok[] = {
        { KP("\x80\x04]\x94(K\x01K\x02M\x03\x01J\xff\xff\xff\xffG?\xf0\x00\x00\x00\x00\x00\x00" "e.") },
        { KP("\x80\x02}q\x00(X\x01\x00\x00\x00" "aq\x01K\x01U\x01" "bq\x02h\x01u.") },
        { KP("(]K\x01" "a.") },                          /* the target above the MARK */
        { KP("](e.") },                               /* nothing to add: no target check */
        { KP("K\x01(K\x02K\x03\x86.") },              /* TUPLE2 right above the fence */
        { KP("K\x01\x94h\x00h\x00\x86\x85.") },       /* GETs of a defined key */
        { KP("(\x8f(K\x01\x90(K\x01\x91\x8a\x00\x8a\x02\xff\x7f\x8b\x00\x00\x00\x00N\x88\x89)t.") },
        { KP("K\x01" "2\x86(0N0.") },                    /* DUP, POP of a MARK, POP */
        { KP("(K\x01K\x02\x31N.") },                  /* POP_MARK */
        { KP("\x80\x04\x95\x0b\x00\x00\x00\x00\x00\x00\x00\x8c\x03" "abc\x94" "C\x01\xff\x85.") },
        { KP("K\x01.K\x02.") },                       /* stacked streams */
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        uint64_t rd = kp_same(ok[i].p, ok[i].n, NULL, ok[i].what);
        T_CHECK_MSG(rd == ok[i].n, "%s: %llu of %zu bytes read: not on the kinds-only path", ok[i].what,
                    (unsigned long long)rd, ok[i].n);
    }
}

/* Streams it must leave to the general path (an error, IR, a limit): the
 * same report, the stream read again */
static void test_the_rest_goes_to_the_general_path(void) {
    static const struct { const uint8_t *p; size_t n; const char *what; } bad[] = {
        { KP("](K\x01" "a.") },          /* APPEND's target below the MARK: underflow */
        { KP("](K\x01" "a0.") },         /* the same, and a stream that would complete after it */
        { KP("}(K\x01K\x02s0.") },
        { KP("(e.") },                /* APPENDS with nothing below its MARK */
        { KP("}(K\x01u.") },          /* odd SETITEMS */
        { KP("(K\x01K\x02K\x03\x64.") },  /* odd DICT */
        { KP(")(K\x01" "e.") },          /* APPENDS onto a tuple: mutate */
        { KP(")K\x01\x61.") },        /* APPEND onto a tuple: mutate */
        { KP("]\x94h\x00K\x01" "a.") },  /* APPEND onto a GET: the general path knows it */
        { KP("K\x01(K\x02\x86.") },   /* TUPLE2 across the fence */
        { KP("(K\x01\x87.") },        /* TUPLE3 underflow */
        { KP("(.") },                 /* STOP on a MARK */
        { KP("0.") },                 /* POP underflow */
        { KP("(2.") },                /* DUP on a MARK */
        { KP("K\x01(\x94.") },        /* MEMOIZE on a MARK */
        { KP("(q\x00.") },            /* BINPUT on a MARK */
        { KP("h\x05.") },             /* GET of an undefined key */
        { KP("K\x01q\x03j\x04\x00\x00\x00.") },
        { KP("\x8a\x01") },           /* truncated LONG1 */
        { KP("\x8b\xff\xff\xff\xff.") },  /* LONG4 negative */
        { KP("X\x02\x00\x00\x00\xc3(.") },  /* invalid UTF-8 */
        { KP("\x8c\x02\xc3(.") },
        { KP("\x80\x06.") },          /* protocol 6 */
        { KP("K\x01") },              /* no STOP */
        { KP("cos\nsystem\n.") },     /* an import */
        { KP("]\x8c\x02os\x8c\x06system\x93\x85.") },
        { KP("N(I1\n.") },            /* text opcodes */
        { KP("\x80\x04\x95\x02\x00\x00\x00\x00\x00\x00\x00J\x01\x00\x00\x00\x85.") },  /* crosses a frame */
        { KP("\x80\x04\x95\xff\x00\x00\x00\x00\x00\x00\x00N.") },  /* frame past EOF */
        { KP("K\x01\x01.") },         /* not an opcode */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) kp_same(bad[i].p, bad[i].n, NULL, bad[i].what);
    /* each limit: the general path reports it */
    static const uint8_t lst[] = "\x80\x04](K\x01K\x02K\x03K\x04K\x05K\x06" "e\x94h\x00.";
    spa_limits lim;
    for (int l = 0; l < 4; l++) {
        spa_limits_default(&lim);
        spa_limit_id id = l == 0 ? SPA_LIM_OPS : l == 1 ? SPA_LIM_STACK : l == 2 ? SPA_LIM_MARKS : SPA_LIM_MEMO;
        for (uint64_t v = 0; v < 12; v++) {
            lim.v[id] = v;
            kp_same(lst, sizeof lst - 1, &lim, "limits");
        }
    }
    spa_limits_default(&lim);
    for (uint64_t v = 0; v < 24; v++) {
        lim.v[SPA_LIM_BYTES] = v;
        kp_same(lst, sizeof lst - 1, &lim, "max_bytes");
    }
    lim.v[SPA_LIM_BYTES] = UINT64_MAX;
    lim.v[SPA_LIM_STR] = 2;
    kp_same(B("\x8c\x05" "hello\x94h\x00\x86."), &lim, "max_str");
}

/* The whole scan (nested-content hook on): a pickle, the base64 of one, and
 * a pickle short enough for the fast loop's gate (spa_vm_hooks.const_short,
 * 8 to 15 bytes, as bytes and as text) inside plain data are found, with the
 * same report on every path */
static void test_nested_constants_still_found(void) {
    static const char inner[] = "\x80\x02\x63os\nsystem\nq\x00X\x02\x00\x00\x00idq\x01\x85q\x02Rq\x03.";
    static const char b64[] = "gAJjb3MKc3lzdGVtCnEAWAIAAABpZHEBhXECUnEDLg==";
    static const char shrt[] = "cos\nsystem\n.";
    static const struct { uint8_t op; const char *s; size_t n; } v4[] = {
        { 'C', inner, sizeof inner - 1 }, { 0x8c, b64, sizeof b64 - 1 },
        { 'C', shrt, sizeof shrt - 1 }, { 0x8c, shrt, sizeof shrt - 1 }, { 'U', shrt, sizeof shrt - 1 },
    };
    uint8_t buf[512];
    for (size_t v = 0; v < sizeof v4 / sizeof v4[0]; v++) {
        size_t n = 0;
        memcpy(buf + n, "\x80\x04]\x94(K\x01", 7); n += 7;
        buf[n++] = v4[v].op;
        buf[n++] = (uint8_t)v4[v].n;
        memcpy(buf + n, v4[v].s, v4[v].n);
        n += v4[v].n;
        memcpy(buf + n, "\x94K\x02" "e.", 5); n += 5;
        char *rep[3];
        for (int path = 0; path < 3; path++) {
            spa_scan_opts o;
            spa_scan_opts_default(&o);
            o.vm_path = path;
            spa_result *r = NULL;
            spa_err e;
            T_EQ_INT(spa_scan_mem(&o, buf, n, &r, &e), SPA_OK);
            T_CHECK(r && r->n_streams == 2 && vmt_has_import(r, "os", "system"));
            if (r) r->bytes_read = 0;
            cJSON *j = r ? spa_report_json(r) : NULL;
            rep[path] = j ? cJSON_PrintUnformatted(j) : NULL;
            cJSON_Delete(j);
            spa_result_free(r);
        }
        T_CHECK_MSG(rep[0] && rep[2] && !strcmp(rep[0], rep[2]), "kinds\n%s\ngeneral\n%s", rep[0], rep[2]);
        T_CHECK(rep[1] && rep[2] && !strcmp(rep[1], rep[2]));
        for (int path = 0; path < 3; path++) free(rep[path]);
    }
}

T_MAIN("vm_kinds", T_CASE(test_data_only_runs_on_kinds), T_CASE(test_the_rest_goes_to_the_general_path),
       T_CASE(test_nested_constants_still_found))
