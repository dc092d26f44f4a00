/* classify.c - the semantic classifier: turns the IR of every stream of a scan into a
 * verdict (safe / suspicious / malicious / unscannable) with reasons. It judges what
 * each call would DO: callees are resolved through reflection (resolve.c) and judged by
 * the knowledge base (kb.c); structural rules catch what no name list can (BUILD on a
 * global, dynamic STACK_GLOBAL, code objects, extension registry, code-like arguments,
 * nested pickles judged by their own verdict, discarded payload calls). */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "containers.h"
#include "opcodes.h"
#include "decode.h"
#include "kb.h"
#include "resolve.h"
#include "strfmt.h"
#include "vm.h"


/* ------------------------------------------------------------------ limits */
#define CL_MAX_REASONS 200      /* reasons kept per result (the verdict counts all) */
#define CL_MAX_MSG 240          /* one reason line */
#define CL_ARG_SCAN_DEPTH 4     /* container depth searched for code-like strings */
#define CL_ARG_SCAN_ITEMS 256   /* items searched per call */
#define CL_CACHE 256            /* judged-callee cache slots */
#define CL_MAX_NEST 8           /* nested content scanned by the classifier itself */
#define CL_NESTED_MAX (64u << 20) /* bytes of a decoded nested payload */
#define CL_MAX_KB_LOOKUPS 4096  /* max_kb_lookups: distinct globals judged per result; beyond it
                                   the rest is unexamined and the result unscannable (scan.limit) */

typedef struct cl_hent {
    uint64_t hash;
    const char *m, *n;      /* strings owned by the scan (IR) or the arena */
    spa_kbcat cat;
    spa_kbhow how;
    bool stdlib;
    char key[64];
} cl_hent;

typedef struct cl_cache_ent {
    const spa_val *v;
    spa_kbcat cat;
    spa_kbhow how;
    bool stdlib;
    char key[96];
} cl_cache_ent;

typedef struct cl_ctx {
    spa_result *r;
    const spa_policy *p;
    spa_arena *ar;
    uint8_t *sstate;     /* per stream: 0 todo, 1 running, 2 done */
    spa_verdict *sverd;  /* per stream own verdict */
    size_t cap;
    size_t dropped;      /* reasons not kept (CL_MAX_REASONS) */
    spa_verdict worst;   /* over all reasons, kept or not */
    bool unscannable;
    int nest;            /* classifier-initiated nested scans */
    cl_cache_ent cache[CL_CACHE];
    cl_hent *ht;         /* judged (module, name) pairs, open addressing */
    size_t htcap;
    size_t lookups;      /* distinct pairs judged */
    bool kb_limit;       /* CL_MAX_KB_LOOKUPS reached */
    /* current stream */
    uint32_t si;
    const spa_stream *s;
    uint8_t *callsev;    /* per IR entry: severity of that call + 1 (0 = not judged) */
    /* @tblineno rebuilders (tblib): the stream whose BUILD states are indexed, the
     * lines and frames its rebuilds judged so far compile, the dearest one's lines */
    const spa_stream *tb_s;
    struct cl_tbent *tb_idx; /* BUILD states by target */
    size_t tb_n;
    uint64_t tb_spent, tb_max, tb_steps;
} cl_ctx;

typedef struct cl_judgement {
    spa_verdict sev;
    const char *rule;
    char msg[CL_MAX_MSG];
} cl_judgement;

static spa_verdict cl_max(spa_verdict a, spa_verdict b) {
    /* unscannable ranks above safe/suspicious, below malicious for the final verdict */
    static const int rank[SPA_VERDICT_COUNT] = {0, 1, 3, 2};
    return rank[b] > rank[a] ? b : a;
}

/* ------------------------------------------------------------------ reasons */
static void cl_reason(cl_ctx *c, spa_verdict sev, const char *rule, const char *msg,
                      const char *loc, uint64_t off) {
    spa_result *r = c->r;
    if (sev == SPA_VERDICT_UNSCANNABLE) c->unscannable = true;
    else c->worst = cl_max(c->worst, sev);
    for (size_t i = 0; i < r->n_reasons; i++) /* one line per distinct finding */
        if (r->reasons[i].rule == rule && !strcmp(r->reasons[i].msg, msg) &&
            r->reasons[i].loc == loc)
            return;
    if (r->n_reasons >= CL_MAX_REASONS) { c->dropped++; return; }
    if (r->n_reasons == c->cap) {
        size_t nc = c->cap ? c->cap * 2 : 8;
        spa_reason *nr = spa_arena_alloc(c->ar, nc * sizeof *nr);
        if (!nr) { c->dropped++; return; }
        if (r->n_reasons) memcpy(nr, r->reasons, r->n_reasons * sizeof *nr);
        r->reasons = nr;
        c->cap = nc;
    }
    char *m = spa_arena_strndup(c->ar, msg, strlen(msg));
    spa_reason *x = &r->reasons[r->n_reasons++];
    x->severity = sev;
    x->rule = rule;
    x->msg = m ? m : "(out of memory)";
    x->loc = loc ? loc : "";
    x->off = off;
}

static void cl_add(cl_ctx *c, const cl_judgement *j, uint64_t off) {
    if (j->sev == SPA_VERDICT_SAFE || !j->rule) return;
    cl_reason(c, j->sev, j->rule, j->msg, c->s ? c->s->loc : "", off);
}

static void cl_set(cl_judgement *j, spa_verdict sev, const char *rule, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void cl_set(cl_judgement *j, spa_verdict sev, const char *rule, const char *fmt, ...) {
    j->sev = sev;
    j->rule = rule;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(j->msg, sizeof j->msg, fmt, ap);
    va_end(ap);
}

/* Raise j to `o` when o is worse. */
static void cl_merge(cl_judgement *j, const cl_judgement *o) {
    if (cl_max(j->sev, o->sev) != j->sev || (!j->rule && o->rule)) *j = *o;
}

/* ------------------------------------------------------------------ rendering */
static void cl_render_str(char *out, size_t n, const uint8_t *p, uint64_t kept, uint64_t len,
                          bool bytes) {
    size_t k = 0;
    if (n < 8) { if (n) out[0] = '\0'; return; }
    if (bytes) out[k++] = 'b';
    out[k++] = '\'';
    uint64_t i;
    for (i = 0; i < kept && k + 6 < n && i < 60; i++) {
        uint8_t ch = p[i];
        if (ch == '\'' || ch == '\\') { out[k++] = '\\'; out[k++] = (char)ch; }
        else if (ch >= 0x20 && ch < 0x7f) out[k++] = (char)ch;
        else if (ch >= 0x80 && !bytes) out[k++] = (char)ch; /* UTF-8 passes through */
        else k += (size_t)spa_fmt(out + k, n - k, "\\x%02x", ch);
    }
    if (i < len && k + 4 < n) { out[k++] = '.'; out[k++] = '.'; out[k++] = '.'; }
    if (k + 1 < n) out[k++] = '\'';
    out[k] = '\0';
}

static void cl_render_val(char *out, size_t n, const spa_val *v, int depth) {
    if (!n) return;
    if (!v) { spa_fmt(out, n, "?"); return; }
    switch (v->kind) {
    case SPA_V_NONE: spa_fmt(out, n, "None"); return;
    case SPA_V_BOOL: spa_fmt(out, n, "%s", v->u.i ? "True" : "False"); return;
    case SPA_V_INT: spa_fmt(out, n, "%lld", (long long)v->u.i); return;
    case SPA_V_FLOAT: spa_fmt(out, n, "%g", v->u.f); return;
    case SPA_V_STR: cl_render_str(out, n, v->u.s.p, v->u.s.kept, v->u.s.len, false); return;
    case SPA_V_BYTES: cl_render_str(out, n, v->u.s.p, v->u.s.kept, v->u.s.len, true); return;
    case SPA_V_GLOBAL:
        spa_fmt(out, n, "%s.%s", v->u.g.module ? v->u.g.module : "?", v->u.g.name ? v->u.g.name : "?");
        return;
    case SPA_V_CALL: {
        char cal[120];
        cl_render_val(cal, sizeof cal, v->u.call.callee, depth + 1);
        spa_fmt(out, n, "%s(...)", cal);
        return;
    }
    case SPA_V_TUPLE: case SPA_V_LIST: case SPA_V_DICT: case SPA_V_SET: case SPA_V_FROZENSET: {
        static const char *const open[] = {[SPA_V_TUPLE] = "(", [SPA_V_LIST] = "[",
            [SPA_V_DICT] = "{", [SPA_V_SET] = "{", [SPA_V_FROZENSET] = "frozenset({"};
        static const char *const close[] = {[SPA_V_TUPLE] = ")", [SPA_V_LIST] = "]",
            [SPA_V_DICT] = "}", [SPA_V_SET] = "}", [SPA_V_FROZENSET] = "})"};
        if (depth > 2) { spa_fmt(out, n, "%s...%s", open[v->kind], close[v->kind]); return; }
        size_t k = (size_t)spa_fmt(out, n, "%s", open[v->kind]);
        bool dict = v->kind == SPA_V_DICT;
        for (uint32_t i = 0; i < v->n && i < (dict ? 4u : 3u) && k + 8 < n; i++) {
            char item[100];
            cl_render_val(item, sizeof item, v->u.seq.items ? v->u.seq.items[i] : NULL, depth + 1);
            k += (size_t)spa_fmt(out + k, n - k, "%s%s", i ? (dict && (i & 1) ? ": " : ", ") : "", item);
        }
        if ((v->n > 3 || v->u.seq.count > v->n) && k + 5 < n)
            k += (size_t)spa_fmt(out + k, n - k, ", ...");
        if (k + 3 < n) spa_fmt(out + k, n - k, "%s", close[v->kind]);
        return;
    }
    default: spa_fmt(out, n, "<%s>", v->kind == SPA_V_PERSID ? "persistent id" : "value"); return;
    }
}

/* "module.name(arg, arg, ...)" for a call */
static void cl_render_call(char *out, size_t n, const char *callee, const spa_val *args) {
    size_t k = (size_t)spa_fmt(out, n, "%s(", callee);
    if (k >= n) return;
    if (args && (args->kind == SPA_V_TUPLE || args->kind == SPA_V_LIST)) {
        for (uint32_t i = 0; i < args->n && i < 3 && k + 8 < n; i++) {
            char item[120];
            cl_render_val(item, sizeof item, args->u.seq.items ? args->u.seq.items[i] : NULL, 1);
            k += (size_t)spa_fmt(out + k, n - k, "%s%s", i ? ", " : "", item);
        }
        if (args->n > 3 && k + 5 < n) k += (size_t)spa_fmt(out + k, n - k, ", ...");
    } else if (args) {
        k += (size_t)spa_fmt(out + k, n - k, "*?");
    }
    if (k + 2 < n) spa_fmt(out + k, n - k, ")");
}

static void cl_target_str(char *out, size_t n, const spa_target *t) {
    switch (t->kind) {
    case SPA_T_GLOBAL: case SPA_T_METHOD: case SPA_T_OBJECT:
        spa_fmt(out, n, "%s%s%s", t->module, t->name[0] ? "." : "", t->name);
        return;
    case SPA_T_MODULE: spa_fmt(out, n, "<module %s>", t->module); return;
    case SPA_T_SYSMODULES: spa_fmt(out, n, "sys.modules"); return;
    case SPA_T_GETTER: spa_fmt(out, n, "<%s %s>", t->itemgetter ? "itemgetter" : "attrgetter", t->aux); return;
    case SPA_T_METHODCALLER: spa_fmt(out, n, "<methodcaller %s>", t->aux); return;
    case SPA_T_DYNAMIC: spa_fmt(out, n, "<unresolved>"); return;
    default: spa_fmt(out, n, "<value>"); return;
    }
}

/* ------------------------------------------------------------------ code-like strings */
static const char *const cl_code_tokens[] = {
    "__import__", "import os", "import subprocess", "import socket", "import sys", "import pty",
    "import shutil", "import base64", "import ctypes", "from os", "from subprocess", "exec(",
    "eval(", "compile(", "os.system", "os.popen", "os.exec", "subprocess.", "__builtins__",
    "__globals__", "__subclasses__", "__code__", "__reduce__", "open(", "pty.spawn",
    "socket.socket", "b64decode(", "getattr(", "lambda ", "marshal.loads", "pickle.loads",
};
static const char *const cl_shell_starts[] = {
    "sh ", "bash ", "zsh ", "/bin/", "/usr/bin/", "/usr/local/bin/", "curl ", "wget ", "nc ",
    "ncat ", "rm ", "touch ", "chmod ", "chown ", "echo ", "cat ", "python -c", "python3 -c",
    "perl -e", "ruby -e", "powershell", "cmd.exe", "cmd /c", "mkfifo ", "env ", "sudo ",
    "id", "whoami", "uname", "ls ", "cp ", "mv ", "dd ", "kill ", "pkill ", "nohup ",
    "xterm", "telnet ", "ssh ", "scp ", "base64 ", "crontab ", "useradd ", "eval ", "exec ",
};
static const char *const cl_shell_tokens[] = {
    "| sh", "|sh", "| bash", "|bash", "$(", "`", "&&", "||", ";", "> /", ">/", "2>&1",
    "/dev/tcp/", "/etc/passwd", "/etc/shadow", "rm -rf", "| nc ", "bash -i", "sh -i",
};

/* 0: not code-like; 1: shell-like (command word or shell punctuation); 2: code or a
 * complete command. Binary-looking content (non-printable bytes) is never code-like. */
static int cl_code_like(const uint8_t *p, size_t n) {
    if (n < 2) return 0;
    size_t np = 0;
    for (size_t i = 0; i < n; i++)
        if ((p[i] < 0x20 && p[i] != '\n' && p[i] != '\t' && p[i] != '\r') || p[i] == 0x7f) np++;
    if (np) return 0;
    char buf[1024];
    size_t k = n < sizeof buf - 1 ? n : sizeof buf - 1;
    memcpy(buf, p, k);
    buf[k] = '\0';
    for (size_t i = 0; i < sizeof cl_code_tokens / sizeof *cl_code_tokens; i++)
        if (strstr(buf, cl_code_tokens[i])) return 2;
    const char *s = buf;
    while (*s == ' ' || *s == '\t') s++;
    int shell = 0;
    for (size_t i = 0; i < sizeof cl_shell_starts / sizeof *cl_shell_starts; i++) {
        size_t l = strlen(cl_shell_starts[i]);
        if (!strncmp(s, cl_shell_starts[i], l) &&
            (s[l] == '\0' || s[l] == ' ' || cl_shell_starts[i][l - 1] == ' ' || cl_shell_starts[i][l - 1] == '/'
             || s[l] == ';' || s[l] == '|'))
            shell = 2;
    }
    if (!shell)
        for (size_t i = 0; i < sizeof cl_shell_tokens / sizeof *cl_shell_tokens; i++)
            if (strstr(buf, cl_shell_tokens[i])) { shell = 1; break; }
    return shell;
}

/* out = a + sep + b, truncated as spa_fmt("%s%s%s") would (sep may be ""): the
 * cached lookups below run once per global and call, so no vsnprintf there. */
static void cl_cat(char *out, size_t n, const char *a, const char *sep, const char *b) {
    if (!n) return;
    size_t k = 0;
    for (const char *parts[3] = {a, sep, b}, **q = parts; q < parts + 3; q++)
        for (const char *s = *q; *s && k + 1 < n; s++) out[k++] = *s;
    out[k] = '\0';
}

/* Judge module.name through a per-result cache of distinct pairs (hostile files repeat or
 * multiply globals; each KB lookup scans the tables). Past CL_MAX_KB_LOOKUPS distinct
 * pairs nothing more is judged: the result becomes unscannable (limit max_kb_lookups). */
static spa_kbcat cl_judge_name(cl_ctx *c, const char *m, const char *n, spa_kbhit *h) {
    if (!m || !n) return spa_kb_judge(m, n, h);
    uint64_t hv = 1469598103934665603ull;
    for (const char *q = m; *q; q++) hv = (hv ^ (uint8_t)*q) * 1099511628211ull;
    hv = (hv ^ 1u) * 1099511628211ull;
    for (const char *q = n; *q; q++) hv = (hv ^ (uint8_t)*q) * 1099511628211ull;
    if (!c->ht || (c->lookups + 1) * 2 > c->htcap) {
        /* start small (most files judge a handful of names) and double at half
         * full; an old table stays in the arena (at most the size of the last) */
        size_t nc = c->ht ? 2 * c->htcap : 64;
        cl_hent *nt = spa_arena_calloc(c->ar, nc * sizeof *nt);
        if (nt) {
            for (size_t k = 0; c->ht && k < c->htcap; k++) {
                if (!c->ht[k].m) continue;
                size_t i = (size_t)c->ht[k].hash & (nc - 1);
                while (nt[i].m) i = (i + 1) & (nc - 1);
                nt[i] = c->ht[k];
            }
            c->ht = nt;
            c->htcap = nc;
        }
    }
    if (c->ht) {
        for (size_t i = (size_t)hv & (c->htcap - 1);; i = (i + 1) & (c->htcap - 1)) {
            cl_hent *e = &c->ht[i];
            if (!e->m) break;
            if (e->hash == hv && !strcmp(e->m, m) && !strcmp(e->n, n)) {
                memset(h, 0, sizeof *h);
                h->cat = e->cat; h->how = e->how; h->stdlib = e->stdlib;
                cl_cat(h->key, sizeof h->key, e->key, "", "");
                cl_cat(h->path, sizeof h->path, m, ".", n);
                return e->cat;
            }
        }
    }
    if (c->lookups >= CL_MAX_KB_LOOKUPS) {
        c->kb_limit = true;
        memset(h, 0, sizeof *h);
        spa_fmt(h->key, sizeof h->key, "(max_kb_lookups)");
        return h->cat = SPA_KB_UNKNOWN;
    }
    spa_kbcat cat = spa_kb_judge(m, n, h);
    c->lookups++;
    if (c->ht && c->lookups * 2 <= c->htcap) {   /* never fuller than half (a failed growth skips caching) */
        size_t i = (size_t)hv & (c->htcap - 1);
        while (c->ht[i].m) i = (i + 1) & (c->htcap - 1);
        const char *mc = spa_arena_strndup(c->ar, m, strlen(m)), *nc = spa_arena_strndup(c->ar, n, strlen(n));
        if (!mc || !nc) return cat;
        cl_hent *e = &c->ht[i];
        e->hash = hv; e->m = mc; e->n = nc; e->cat = cat; e->how = h->how; e->stdlib = h->stdlib;
        spa_fmt(e->key, sizeof e->key, "%s", h->key);
    }
    return cat;
}

typedef struct cl_argscan {
    int code;                 /* best cl_code_like */
    const spa_val *code_val;
    const spa_val *danger;    /* a dangerous global passed as an argument */
    spa_kbcat danger_cat;
    size_t seen;
} cl_argscan;

/* Is a callable of this category dangerous where it is handed over without being called
 * (bound by a partial, an argument of a constructor, a task a worker calls later)? One
 * rule for all of them: the categories that act; stdlib_other (math.sqrt, time.sleep,
 * builtins.len: the KB's uncurated stdlib remainder, whose acting modules are curated) and
 * unknown third-party functions are judged where they are called, as references are. */
static bool cl_cat_binds_danger(spa_kbcat cat) {
    return cat != SPA_KB_DATA && cat != SPA_KB_UNKNOWN && cat != SPA_KB_STDLIB_OTHER;
}

static void cl_scan_args(cl_ctx *c, const spa_val *v, int depth, cl_argscan *a) {
    if (!v || depth > CL_ARG_SCAN_DEPTH || a->seen++ > CL_ARG_SCAN_ITEMS) return;
    switch (v->kind) {
    case SPA_V_STR: case SPA_V_BYTES: {
        int k = cl_code_like(v->u.s.p, (size_t)v->u.s.kept);
        if (k > a->code) { a->code = k; a->code_val = v; }
        return;
    }
    case SPA_V_GLOBAL: {
        if (!v->u.g.module || !v->u.g.name || v->u.g.module[0] == '<') return;
        spa_kbhit h;
        spa_kbcat cat = cl_judge_name(c, v->u.g.module, v->u.g.name, &h);
        if (cl_cat_binds_danger(cat) && !a->danger &&
            spa_policy_global_rule(c->p, v->u.g.module, v->u.g.name) <= 0) {
            a->danger = v;
            a->danger_cat = cat;
        }
        return;
    }
    case SPA_V_TUPLE: case SPA_V_LIST: case SPA_V_DICT: case SPA_V_SET: case SPA_V_FROZENSET:
        for (uint32_t i = 0; i < v->n && v->u.seq.items; i++) cl_scan_args(c, v->u.seq.items[i], depth + 1, a);
        return;
    default:
        return;
    }
}

/* ------------------------------------------------------------------ nested content */
static spa_verdict cl_stream_tree(cl_ctx *c, uint32_t si);
static spa_code cl_classify_nest(spa_result *r, const spa_policy *p, int nest);
static void cl_stream(cl_ctx *c, uint32_t si);

/* Look for a NESTED IR entry of the current stream that scanned value v. */
static uint32_t cl_nested_of(cl_ctx *c, const spa_val *v) {
    if (!v || !c->s) return UINT32_MAX;
    for (size_t i = 0; i < c->s->n_ir; i++) {
        const spa_ir *e = &c->s->ir[i];
        if (e->kind == SPA_IR_NESTED && e->target == v && e->nested_stream < c->r->n_streams)
            return e->nested_stream;
    }
    return UINT32_MAX;
}

/* The altchars of a base64 decoder call as decode.c takes them: NULL for the standard
 * alphabet, "-_" for urlsafe_b64decode, b64decode's constant two-character second
 * argument; false when that argument is not such a constant (not decodable here). */
static bool cl_b64_alt(const spa_target *t, const spa_val *call, const char **alt) {
    *alt = NULL;
    if (strstr(t->name, "urlsafe")) { *alt = "-_"; return true; }
    const spa_val *a1 = spa_target_is(t, "base64", "b64decode") ? spa_val_item(call->u.call.args, 1) : NULL;
    if (!a1 || a1->kind == SPA_V_NONE) return true;
    if ((a1->kind != SPA_V_STR && a1->kind != SPA_V_BYTES) || a1->u.s.len != 2 || a1->u.s.kept < 2) return false;
    *alt = (const char *)a1->u.s.p;
    return true;
}

/* Decode what a data decoder call would produce (decode.c, as Python decodes):
 * codecs.encode(str, 'latin1'), the base64 decoders, binascii.unhexlify /
 * bytes.fromhex. Returns an arena buffer, or NULL where Python's decoder raises or
 * the call is no decoder known here. */
static const uint8_t *cl_decode(cl_ctx *c, const spa_val *call, size_t *outn) {
    if (!call || call->kind != SPA_V_CALL) return NULL;
    spa_target t;
    spa_resolve(call->u.call.callee, &t, 0);
    const spa_val *a0 = spa_val_item(call->u.call.args, 0);
    if (t.kind != SPA_T_GLOBAL || !a0 || (a0->kind != SPA_V_STR && a0->kind != SPA_V_BYTES) ||
        a0->u.s.kept < a0->u.s.len || a0->u.s.len > CL_NESTED_MAX)
        return NULL;
    const uint8_t *p = a0->u.s.p;
    size_t n = (size_t)a0->u.s.len, k;
    uint8_t *o = spa_arena_alloc(c->ar, n + 1);
    const char *alt;
    if (!o) return NULL;
    if (spa_target_is(&t, "codecs", "encode") || spa_target_is(&t, "codecs", "latin_1_encode"))
        k = spa_dec_latin1(p, n, o, n);
    else if ((!strcmp(t.module, "base64") && (strstr(t.name, "64") || !strcmp(t.name, "decodebytes"))) ||
             spa_target_is(&t, "binascii", "a2b_base64"))
        k = cl_b64_alt(&t, call, &alt) ? spa_dec_b64(p, n, o, n, alt, NULL) : SPA_DEC_FAIL;
    else if (spa_target_is(&t, "binascii", "unhexlify") || spa_target_is(&t, "binascii", "a2b_hex") ||
             spa_target_is(&t, "base64", "b16decode"))
        k = spa_dec_hex(p, n, o, n, false);
    else if (spa_target_is(&t, "builtins", "bytes.fromhex"))
        k = spa_dec_hex(p, n, o, n, true);
    else
        return NULL;
    if (k == SPA_DEC_FAIL) return NULL;
    *outn = k;
    return o;
}

/* `@rawload` (pickle.loads): the one nested load judged by its content, when the call
 * is exactly what a pickler writes for an object reduced to loads(dumps(obj)) (joblib's
 * array reducer): called on its own global, no partial, no reflection, one argument,
 * an immutable bytes constant kept whole, or whole in the input's memory (SPA_VF_WHOLE:
 * a result over max_str in layer 2's bytes); not a bytearray (which SETITEM/APPENDS can
 * change before the call), not a Python 2 string (which the loader may decode to str).
 * Those bytes are read as loads reads them, one raw pickle stream from byte 0 (never
 * through the container sniff, which could pick a zip/tar reading of a polyglot).
 * Returns SAFE only when that stream and all nested under it are safe. */
static spa_verdict cl_rawload(cl_ctx *c, const spa_val *args, char *why, size_t whyn) {
    const spa_val *a = spa_val_item(args, 0);
    if (!args || args->kind != SPA_V_TUPLE || args->n != 1 || args->u.seq.count != 1 || !a ||
        a->kind != SPA_V_BYTES || (a->flags & (SPA_VF_BYTEARRAY | SPA_VF_PY2STR)) ||
        (a->opcode & SPA_VOP_OPAQUE) || a->u.s.len > (uint64_t)SIZE_MAX)
        return SPA_VERDICT_MALICIOUS;
    /* the bytes whole: kept whole (max_str), or all of them in the input's memory
     * (SPA_VF_WHOLE: zero-copy, so no bound but the nested scan's own limits) */
    if (!(a->flags & SPA_VF_WHOLE) && (a->u.s.kept < a->u.s.len || a->u.s.len > CL_NESTED_MAX))
        return SPA_VERDICT_MALICIOUS;
    if (c->nest >= CL_MAX_NEST) return SPA_VERDICT_UNSCANNABLE;
    spa_scan_opts o;
    spa_scan_opts_default(&o);
    if (c->p) o.limits = c->p->limits;
    o.name = c->s && c->s->loc ? c->s->loc : "nested";
    o.opens_judged = c->r->opens_judged; /* loaded in the same process */
    spa_result *sub = NULL;
    if (spc_scan_as(&o, a->u.s.p, (size_t)a->u.s.len, SPA_FMT_PICKLE, &sub) != SPA_OK || !sub)
        return SPA_VERDICT_UNSCANNABLE;
    spa_verdict v = SPA_VERDICT_MALICIOUS;
    if (sub->n_streams && cl_classify_nest(sub, c->p, c->nest + 1) == SPA_OK) v = sub->verdict;
    spa_fmt(why, whyn, "its %llu bytes read as one pickle stream, judged %s",
            (unsigned long long)a->u.s.len, spa_verdict_name(v));
    spa_result_free(sub);
    return v;
}

/* Verdict of content that a loader would deserialise. */
static spa_verdict cl_nested_content(cl_ctx *c, const spa_val *arg, char *why, size_t whyn) {
    uint32_t ns = cl_nested_of(c, arg);
    if (ns == UINT32_MAX && arg && arg->kind == SPA_V_CALL)
        ns = cl_nested_of(c, spa_val_item(arg->u.call.args, 0));
    if (ns != UINT32_MAX) {
        spa_fmt(why, whyn, "nested stream %s", c->r->streams[ns].loc ? c->r->streams[ns].loc : "?");
        return cl_stream_tree(c, ns);
    }
    const uint8_t *p = NULL;
    size_t n = 0;
    if (arg && arg->kind == SPA_V_BYTES && (arg->opcode & SPA_VOP_OPAQUE)) {
        /* the VM kept only the head, which no pickle or container can start with */
        spa_fmt(why, whyn, "binary data that starts no pickle or container (%u bytes examined)",
                SPA_VM_KEEP_OPAQUE);
        return SPA_VERDICT_MALICIOUS;
    }
    if (arg && (arg->kind == SPA_V_STR || arg->kind == SPA_V_BYTES)) {
        if (arg->u.s.kept < arg->u.s.len) {
            spa_fmt(why, whyn, "nested content of %llu bytes only partly kept", (unsigned long long)arg->u.s.len);
            return SPA_VERDICT_UNSCANNABLE;
        }
        p = arg->u.s.p;
        n = (size_t)arg->u.s.len;
    } else {
        p = cl_decode(c, arg, &n);
        if (!p) {
            spa_fmt(why, whyn, "content not visible to the analyzer");
            return SPA_VERDICT_MALICIOUS;
        }
    }
    if (c->nest >= CL_MAX_NEST) {
        spa_fmt(why, whyn, "nested content deeper than %d levels", CL_MAX_NEST);
        return SPA_VERDICT_UNSCANNABLE;
    }
    spa_scan_opts o;
    spa_scan_opts_default(&o);
    if (c->p) o.limits = c->p->limits;
    o.name = c->s && c->s->loc ? c->s->loc : "nested";
    o.opens_judged = c->r->opens_judged; /* loaded in the same process */
    spa_result *sub = NULL;
    spa_err e = {SPA_OK, NULL, 0};
    if (spa_scan_mem(&o, p ? p : (const uint8_t *)"", n, &sub, &e) != SPA_OK || !sub) {
        spa_fmt(why, whyn, "nested content could not be scanned (%s)", e.msg ? e.msg : "error");
        return SPA_VERDICT_UNSCANNABLE;
    }
    spa_verdict v;
    if (!sub->n_streams) {
        spa_fmt(why, whyn, "a path or content that is not a visible pickle (second-stage load)");
        v = SPA_VERDICT_MALICIOUS;
    } else {
        cl_classify_nest(sub, c->p, c->nest + 1);
        v = sub->verdict;
        spa_fmt(why, whyn, "decoded nested content (%zu bytes, %zu streams)", n, sub->n_streams);
        for (size_t i = 0; i < sub->n_reasons && i < 4; i++)
            if (sub->reasons[i].severity != SPA_VERDICT_SAFE) {
                size_t l = strlen(why);
                spa_fmt(why + l, whyn - l, "; %s", sub->reasons[i].msg);
                break;
            }
    }
    spa_result_free(sub);
    return v;
}

/* ------------------------------------------------------------------ calls */
static bool cl_classlike(const char *name) {
    const char *last = strrchr(name, '.');
    last = last ? last + 1 : name;
    while (*last == '_') last++;
    return isupper((unsigned char)*last) != 0;
}

static spa_kbcat cl_kb(cl_ctx *c, const spa_target *t, const spa_val *key, spa_kbhit *h) {
    if (key && key->kind == SPA_V_GLOBAL) {
        size_t slot = ((uintptr_t)key >> 4) % CL_CACHE;
        cl_cache_ent *e = &c->cache[slot];
        if (e->v == key) {
            memset(h, 0, sizeof *h);
            h->cat = e->cat; h->how = e->how; h->stdlib = e->stdlib;
            memcpy(h->key, e->key, sizeof h->key);
            cl_cat(h->path, sizeof h->path, t->module, ".", t->name);
            return e->cat;
        }
        spa_kbcat cat = cl_judge_name(c, t->module, t->name, h);
        e->v = key; e->cat = cat; e->how = h->how; e->stdlib = h->stdlib;
        memcpy(e->key, h->key, sizeof e->key);
        return cat;
    }
    return cl_judge_name(c, t->module, t->name, h);
}

static void cl_judge_target_call(cl_ctx *c, const spa_target *t, const spa_val *callee,
                                 const spa_val *args, const spa_val *bound, int opcode,
                                 int depth, cl_judgement *j);

/* Judge calling the value `fn` with `args` (for trampolines that call their argument). */
static void cl_judge_value_call(cl_ctx *c, const spa_val *fn, const spa_val *args, int depth,
                                cl_judgement *j) {
    spa_target t;
    spa_resolve(fn, &t, 0);
    cl_judge_target_call(c, &t, fn, args, NULL, SPA_OP_REDUCE, depth + 1, j);
}

/* Apply the argument rules (code-like strings, dangerous callables as arguments). */
static void cl_args_rules(cl_ctx *c, const spa_target *dt, const spa_val *args, const spa_val *bound,
                          spa_kbcat cat, bool skip_first_global, cl_judgement *j) {
    cl_argscan a = {0};
    char desc[300]; /* the callee (cl_target_str of dt), rendered only for a message */
    if (args) {
        if (skip_first_global && (args->kind == SPA_V_TUPLE || args->kind == SPA_V_LIST)) {
            for (uint32_t i = 1; i < args->n && args->u.seq.items; i++)
                cl_scan_args(c, args->u.seq.items[i], 1, &a);
            const spa_val *a0 = spa_val_item(args, 0);
            if (a0 && a0->kind != SPA_V_GLOBAL) cl_scan_args(c, a0, 1, &a);
        } else {
            cl_scan_args(c, args, 0, &a);
        }
    }
    if (bound) cl_scan_args(c, bound, 0, &a);
    if (a.danger || a.code) cl_target_str(desc, sizeof desc, dt);
    if (a.danger) {
        cl_judgement o;
        cl_set(&o, SPA_VERDICT_MALICIOUS, "args.dangerous_callable",
               "%s receives %s.%s (%s) as an argument", desc, a.danger->u.g.module,
               a.danger->u.g.name, spa_kbcat_name(a.danger_cat));
        cl_merge(j, &o);
    }
    if (a.code) {
        char sv[100];
        cl_render_val(sv, sizeof sv, a.code_val, 0);
        cl_judgement o;
        if (cat == SPA_KB_DATA) {
            if (a.code >= 2)
                cl_set(&o, SPA_VERDICT_SUSPICIOUS, "args.code_like",
                       "data constructor %s receives code-like text %s", desc, sv);
            else
                return;
        } else {
            cl_set(&o, SPA_VERDICT_MALICIOUS, "args.code_like",
                   "%s receives %s text %s", desc, a.code >= 2 ? "code or command" : "shell-like", sv);
        }
        cl_merge(j, &o);
    }
}

static const char *cl_cat_rule(spa_kbcat cat) {
    switch (cat) {
    case SPA_KB_CODE_EXEC: return "callee.code_exec";
    case SPA_KB_PROCESS: return "callee.process";
    case SPA_KB_NETWORK: return "callee.network";
    case SPA_KB_FILE_WRITE: return "callee.file_write";
    case SPA_KB_IMPORT: return "callee.import";
    case SPA_KB_REFLECTION: return "callee.reflection";
    case SPA_KB_DESERIALIZE: return "callee.deserialize";
    case SPA_KB_NATIVE: return "callee.native";
    case SPA_KB_STATE_MUTATION: return "callee.state_mutation";
    case SPA_KB_STDLIB_OTHER: return "callee.stdlib_other";
    default: return "callee.unknown_function";
    }
}

/* A call to one of copyreg's reconstructors, the ones protocol 2+ and
 * object.__reduce_ex__ write to build an instance without calling its class:
 * __newobj__(cls, *args) and __newobj_ex__(cls, args, kwargs) call cls.__new__(cls),
 * _reconstructor(cls, base, state) calls base.__new__(cls, state). *cls is the
 * class of the object built, *base the class whose __new__ builds it (the same
 * class but for _reconstructor). The one reader of these shapes for the rules
 * that ask what class an object is (bound methods, shared objects). */
static bool cl_reconstructor(const spa_val *v, const spa_val **cls, const spa_val **base) {
    if (!v || v->kind != SPA_V_CALL) return false;
    spa_target k;
    spa_resolve(v->u.call.callee, &k, 0);
    const spa_val *a = v->u.call.args;
    if (spa_target_is(&k, "copyreg", "__newobj__") || spa_target_is(&k, "copyreg", "__newobj_ex__")) {
        *cls = *base = spa_val_item(a, 0);
        return true;
    }
    if (spa_target_is(&k, "copyreg", "_reconstructor")) {
        *cls = spa_val_item(a, 0);
        *base = spa_val_item(a, 1);
        return true;
    }
    return false;
}

/* getattr(obj, 'name') (or inspect.getattr_static) where obj is built by a call of a class
 * the knowledge base knows as data, directly or through copyreg's reconstructors
 * (protocol 0-2 objects): the class's module into cm and "Class.name" into nm. */
static bool cl_bound_method(const spa_val *ga, char *cm, size_t cmn, char *nm, size_t nmn) {
    if (!ga || ga->kind != SPA_V_CALL) return false;
    spa_target g;
    spa_resolve(ga->u.call.callee, &g, 0);
    if (!spa_target_is(&g, "builtins", "getattr") && !spa_target_is(&g, "inspect", "getattr_static")) return false;
    const spa_val *obj = spa_val_item(ga->u.call.args, 0), *attr = spa_val_item(ga->u.call.args, 1);
    char a[128];
    if (!obj || obj->kind != SPA_V_CALL || !spa_val_text(attr, a, sizeof a)) return false;
    spa_target k;
    const spa_val *cls, *base;
    spa_resolve(cl_reconstructor(obj, &cls, &base) ? cls : obj->u.call.callee, &k, 0);
    /* a class: a function's result (logging.getLogger(name)) is an object of a class the
     * call does not name, whose methods the KB's module key does not describe */
    if (k.kind != SPA_T_GLOBAL || k.via_reflection || !cl_classlike(k.name)) return false;
    spa_kbhit h;
    if (spa_kb_judge(k.module, k.name, &h) != SPA_KB_DATA || h.how == SPA_KBH_MODULE) return false;
    spa_fmt(cm, cmn, "%s", k.module);
    int w = spa_fmt(nm, nmn, "%s.%s", k.name, a);
    return w > 0 && (size_t)w < nmn;
}

/* Judge a reference to a global-like target that is obtained but not (yet) called. */
static void cl_judge_reference(cl_ctx *c, const spa_target *t, const char *how, cl_judgement *j) {
    char ts[300];
    cl_target_str(ts, sizeof ts, t);
    if (t->kind == SPA_T_MODULE) {
        cl_set(j, SPA_VERDICT_MALICIOUS, "reflect.module", "%s obtains the module object %s", how, t->module);
        return;
    }
    if (t->kind == SPA_T_SYSMODULES) {
        cl_set(j, SPA_VERDICT_MALICIOUS, "reflect.sys_modules", "%s reaches sys.modules", how);
        return;
    }
    if (t->kind == SPA_T_DYNAMIC) {
        cl_set(j, SPA_VERDICT_SUSPICIOUS, "reflect.dynamic", "%s with a name the analyzer cannot see", how);
        return;
    }
    if (t->kind == SPA_T_METHOD) {
        /* a bound method: harmless as such (benign pickles hold obj.method), unless the
         * object is an instance of a class the KB knows as data and the method acts
         * (PosixPath(p).unlink): handed over, it is called by whoever holds it (iter's
         * consumers, BUILD's __setstate__ lookup, a worker running a task) */
        char cm[160], nm[300];
        if (cl_bound_method(t->origin, cm, sizeof cm, nm, sizeof nm)) {
            spa_kbhit h;
            spa_kbcat cat = cl_judge_name(c, cm, nm, &h);
            if (cl_cat_binds_danger(cat) && spa_policy_global_rule(c->p, cm, nm) <= 0) {
                cl_set(j, SPA_VERDICT_MALICIOUS, "reflect.getattr", "%s reaches the bound method %s.%s (%s, via KB %s)",
                       how, cm, nm, spa_kbcat_name(cat), h.key);
                return;
            }
        }
        j->sev = SPA_VERDICT_SAFE;
        j->rule = NULL;
        return;
    }
    if (t->kind != SPA_T_GLOBAL) { j->sev = SPA_VERDICT_SAFE; j->rule = NULL; return; }
    if (!t->from_module) {
        /* an attribute of a class or function (enum members, classmethods): a reference
         * that is judged when called; only dunder traversal is reflection by itself */
        const char *last = strrchr(t->name, '.');
        last = last ? last + 1 : t->name;
        size_t ln = strlen(last);
        if (ln > 4 && !strncmp(last, "__", 2) && !strcmp(last + ln - 2, "__")) {
            cl_set(j, SPA_VERDICT_MALICIOUS, "reflect.dunder", "%s reaches the attribute %s of %s", how, last, ts);
            return;
        }
        j->sev = SPA_VERDICT_SAFE;
        j->rule = NULL;
        return;
    }
    int pr = spa_policy_global_rule(c->p, t->module, t->name);
    if (pr > 0) { j->sev = SPA_VERDICT_SAFE; j->rule = NULL; return; }
    spa_kbhit h;
    spa_kbcat cat = cl_judge_name(c, t->module, t->name, &h);
    if (pr < 0) {
        cl_set(j, SPA_VERDICT_MALICIOUS, "policy.deny", "%s reaches %s, denied by the policy", how, ts);
        return;
    }
    if (cat == SPA_KB_DATA || cat == SPA_KB_UNKNOWN) { j->sev = SPA_VERDICT_SAFE; j->rule = NULL; return; }
    cl_set(j, SPA_VERDICT_MALICIOUS, "reflect.getattr", "%s reaches %s (%s, via KB %s)", how, ts,
           spa_kbcat_name(cat), h.key);
}

/* getattr(Class, 'name') with a class-like Class (CapWords, not a module, no dunder) that
 * is itself safe to build: data, or unknown and class-like (user classes). */
static bool cl_benign_reflective(cl_ctx *c, const spa_target *t) {
    if (t->kind != SPA_T_GLOBAL || t->from_module) return false;
    const char *dot = strchr(t->name, '.');
    if (!dot || strchr(dot + 1, '.') || dot[1] == '_') return false;
    char cls[128];
    size_t n = (size_t)(dot - t->name);
    if (n >= sizeof cls) return false;
    memcpy(cls, t->name, n);
    cls[n] = '\0';
    if (!cl_classlike(cls)) return false;
    spa_kbhit h;
    spa_kbcat cat = cl_judge_name(c, t->module, cls, &h);
    return cat == SPA_KB_DATA || (cat == SPA_KB_UNKNOWN && h.how != SPA_KBH_MODATTR);
}

/* ---- tblib's traceback rebuild (`@tblineno`). unpickle_traceback(frame, lineno, next)
 * walks the chain `next` starts (tb_next attributes) and, for every frame, compiles
 * '\n' * (tb_lineno - 1) + 'raise __traceback_maker' and execs it with a copy of the
 * frame's f_globals: the text is fixed but its length is the line number (a huge one is
 * a memory and time bomb: 70 ns and one byte a line), a cyclic chain never ends, and a
 * global named __traceback_maker (or a __builtins__ holding one) would be raised,
 * instantiating whatever class the pickle put there. The call is data when the chain is
 * read whole from the stream: every element after the first is an object whose
 * attributes come from fully recorded BUILD state dicts (tblib.Traceback's: no
 * __setstate__) or an earlier rebuild's result (a real traceback: its own chain, counted
 * as the dearest earlier rebuild); no cycle; every tb_lineno a constant; every frame's
 * f_globals a fully recorded dict of constant names other than those two; and all the
 * stream's rebuilds together compile at most CL_TB_LINES lines in CL_TB_STEPS frames.
 * Anything else the analyzer cannot read counts as unbounded. */
#define CL_TB_LINES (1u << 22) /* about 0.3 s and 4 MiB transient on the shared machine */
#define CL_TB_STEPS (1u << 16) /* frames compiled per stream */

typedef struct cl_tbent { const spa_val *obj, *state; } cl_tbent;

static int cl_tbent_cmp(const void *a, const void *b) {
    uintptr_t x = (uintptr_t)((const cl_tbent *)a)->obj, y = (uintptr_t)((const cl_tbent *)b)->obj;
    return x < y ? -1 : x > y;
}

static bool cl_str_is(const spa_val *v, const char *s) {
    size_t n = strlen(s);
    return v && v->kind == SPA_V_STR && v->u.s.len == n && v->u.s.kept == n && !memcmp(v->u.s.p, s, n);
}

static bool cl_dict_whole(const spa_val *d) {
    return d && d->kind == SPA_V_DICT && d->n == d->u.seq.count && !(d->flags & SPA_VF_TRUNC);
}

/* The BUILD states of the stream, sorted by target (once per stream). */
static bool cl_tb_index(cl_ctx *c) {
    if (c->tb_s == c->s) return c->tb_idx != NULL || !c->tb_n;
    c->tb_s = c->s;
    c->tb_spent = c->tb_max = c->tb_steps = 0;
    c->tb_n = 0;
    c->tb_idx = NULL;
    for (size_t i = 0; i < c->s->n_ir; i++) c->tb_n += c->s->ir[i].kind == SPA_IR_BUILD;
    if (!c->tb_n) return true;
    c->tb_idx = spa_arena_alloc(c->ar, c->tb_n * sizeof *c->tb_idx);
    if (!c->tb_idx) return false;
    size_t k = 0;
    for (size_t i = 0; i < c->s->n_ir; i++)
        if (c->s->ir[i].kind == SPA_IR_BUILD) c->tb_idx[k++] = (cl_tbent){c->s->ir[i].target, c->s->ir[i].arg};
    qsort(c->tb_idx, c->tb_n, sizeof *c->tb_idx, cl_tbent_cmp);
    return true;
}

/* The attribute `name` an object gets from its BUILD states (the last one that sets it).
 * Returns false when they cannot be read whole; *v NULL when none sets it. */
static bool cl_tb_attr(cl_ctx *c, const spa_val *obj, const char *name, const spa_val **v) {
    *v = NULL;
    cl_tbent key = {obj, NULL};
    cl_tbent *e = c->tb_n ? bsearch(&key, c->tb_idx, c->tb_n, sizeof key, cl_tbent_cmp) : NULL;
    if (!e) return true;
    while (e > c->tb_idx && e[-1].obj == obj) e--;
    for (; e < c->tb_idx + c->tb_n && e->obj == obj; e++) {
        if (!cl_dict_whole(e->state)) return false;
        for (uint32_t x = 0; x + 1 < e->state->n; x += 2) {
            const spa_val *k = e->state->u.seq.items[x];
            if (!k || k->kind != SPA_V_STR || k->u.s.kept != k->u.s.len) return false;
            if (cl_str_is(k, name)) *v = e->state->u.seq.items[x + 1];
        }
    }
    return true;
}

/* A frame's f_globals holds no name `raise __traceback_maker` could reach. */
static bool cl_tb_frame_ok(cl_ctx *c, const spa_val *frame) {
    const spa_val *g;
    if (!cl_tb_attr(c, frame, "f_globals", &g)) return false;
    if (!g) return true;
    if (!cl_dict_whole(g)) return false;
    for (uint32_t y = 0; y + 1 < g->n; y += 2) {
        const spa_val *k = g->u.seq.items[y];
        if (!k || k->kind != SPA_V_STR || k->u.s.kept != k->u.s.len || cl_str_is(k, "__traceback_maker") ||
            cl_str_is(k, "__builtins__"))
            return false;
    }
    return true;
}

static bool cl_tb_lines(const spa_val *v, uint64_t *sum) {
    if (!v || (v->kind != SPA_V_INT && v->kind != SPA_V_BOOL)) return false;
    if (v->u.i > 0) *sum += (uint64_t)v->u.i;
    return *sum <= CL_TB_LINES;
}

static bool cl_tb_bounded(cl_ctx *c, const spa_val *args, char *why, size_t whyn) {
    spa_fmt(why, whyn, "its frames cannot be read whole from the stream");
    if (!cl_tb_index(c)) return false;
    uint64_t cost = 0, tail = 0;
    if (!cl_tb_lines(spa_val_item(args, 1), &cost) || !cl_tb_frame_ok(c, spa_val_item(args, 0))) return false;
    const spa_val *cur = spa_val_item(args, 2);
    uint64_t steps = 1;
    while (cur && cur->kind != SPA_V_NONE) {
        if (++steps > CL_TB_STEPS || c->tb_steps + steps > CL_TB_STEPS) return false; /* a cycle ends here too */
        if (cur->kind != SPA_V_CALL) return false;
        const spa_val *fn = cur->u.call.callee;
        spa_target ft;
        spa_resolve(fn, &ft, 0);
        if (ft.kind == SPA_T_GLOBAL && spa_kb_tblineno(ft.module, ft.name)) { tail = c->tb_max; break; }
        const spa_val *ln, *fr, *nx;
        if (!cl_tb_attr(c, cur, "tb_lineno", &ln) || !ln || !cl_tb_lines(ln, &cost)) return false;
        if (!cl_tb_attr(c, cur, "tb_frame", &fr) || !cl_tb_frame_ok(c, fr)) return false;
        if (!cl_tb_attr(c, cur, "tb_next", &nx)) return false;
        cur = nx;
    }
    cost += tail;
    if (cost > CL_TB_LINES || c->tb_spent + cost > CL_TB_LINES) {
        spa_fmt(why, whyn, "its frames would compile more than %u lines", CL_TB_LINES);
        return false;
    }
    c->tb_spent += cost;
    c->tb_steps += steps;
    if (cost > c->tb_max) c->tb_max = cost;
    return true;
}

/* ---- joblib's view on a file mapping (`@mapview`): _strided_from_memmap(filename, dtype,
 * mode, offset, order, shape, strides, total_buffer_len, unlink_on_gc_collect) maps
 * filename with numpy.memmap (mode "w+" turned into "r+") and, with strides, returns
 * numpy's as_strided view of the first total_buffer_len items. What it reaches:
 *  - mode r, c, readonly, copyonwrite: a read-only or private mapping of a file (data);
 *  - r+, readwrite, w+: a shared writable mapping of a file the bytes name (the loaded
 *    array writes it, a task function given it can overwrite it, and a file shorter
 *    than the shape grows); "write" (numpy's name for w+) and anything else creates or
 *    truncates it: file_write;
 *  - unlink_on_gc_collect (not read: the analyzer keeps 8 plain items of a tuple): the
 *    loky resource tracker then unlinks the file when the array is collected, but only a
 *    file joblib registered there itself (its own temporary memmaps; any other name is a
 *    KeyError in the tracker), so at worst one of those goes early;
 *  - strides: as_strided never checks bounds, so a view past the mapping reads and
 *    writes the process's memory: native, unless every constant proves it inside
 *    (itemsize from the dtype's type code, numpy.dtype('f8', ...)).
 * Returns NULL when it is data, else why (and *cat). */
static int64_t cl_dtype_itemsize(const spa_val *d) {
    const spa_val *code = d;
    if (d && d->kind == SPA_V_CALL) {
        spa_target t;
        spa_resolve(d->u.call.callee, &t, 0);
        if (t.kind != SPA_T_GLOBAL || strncmp(t.module, "numpy", 5) || strcmp(t.name, "dtype")) return 0;
        code = spa_val_item(d->u.call.args, 0);
    }
    if (!code || code->kind != SPA_V_STR || code->u.s.kept != code->u.s.len || code->u.s.len < 2 || code->u.s.len > 3)
        return 0;
    const uint8_t *p = code->u.s.p;
    if (!strchr("biufcMm", p[0]) || !p[0]) return 0; /* fixed-size types: setstate keeps their size */
    int64_t n = 0;
    for (uint64_t i = 1; i < code->u.s.len; i++) {
        if (p[i] < '0' || p[i] > '9') return 0;
        n = n * 10 + (p[i] - '0');
    }
    return n;
}

static bool cl_int_of(const spa_val *v, int64_t *out) {
    if (!v || (v->kind != SPA_V_INT && v->kind != SPA_V_BOOL)) return false;
    *out = v->u.i;
    return true;
}

static bool cl_strided_inside(const spa_val *args) {
    const spa_val *shape = spa_val_item(args, 5), *strides = spa_val_item(args, 6);
    int64_t total, isz = cl_dtype_itemsize(spa_val_item(args, 1));
    if (isz <= 0 || !cl_int_of(spa_val_item(args, 7), &total) || total < 0) return false;
    if (!shape || !strides || shape->kind != SPA_V_TUPLE || strides->kind != SPA_V_TUPLE ||
        shape->n != shape->u.seq.count || strides->n != strides->u.seq.count || shape->n != strides->n || shape->n > 64)
        return false;
    __int128 lo = 0, hi = 0;
    for (uint32_t i = 0; i < shape->n; i++) {
        int64_t n, st;
        if (!cl_int_of(shape->u.seq.items[i], &n) || !cl_int_of(strides->u.seq.items[i], &st) || n < 0) return false;
        if (n == 0) return true; /* an empty view reaches nothing */
        __int128 ext = (__int128)(n - 1) * st;
        if (ext < 0) lo += ext; else hi += ext;
    }
    return lo >= 0 && hi + isz <= (__int128)total * isz;
}

static const char *cl_mapview_risk(const spa_val *args, spa_kbcat *cat) {
    *cat = SPA_KB_FILE_WRITE;
    if (!args || args->kind != SPA_V_TUPLE || args->n < 8 || args->u.seq.count != 9)
        return "with arguments the analyzer cannot read";
    static const char *const ro[] = {"r", "c", "readonly", "copyonwrite"};
    const spa_val *mode = spa_val_item(args, 2);
    bool ok = false;
    for (size_t i = 0; i < sizeof ro / sizeof ro[0]; i++) ok |= cl_str_is(mode, ro[i]);
    if (!ok) return "maps the file it names for writing (the loaded array writes it; a shorter file grows)";
    const spa_val *strides = spa_val_item(args, 6);
    if (strides && strides->kind != SPA_V_NONE && !cl_strided_inside(args)) {
        *cat = SPA_KB_NATIVE;
        return "makes a strided view the analyzer cannot prove inside the mapping (as_strided reaches the process's memory)";
    }
    return NULL;
}

/* ---- joblib's temporary memmap (`@fileload`): load_temporary_memmap(filename, mmap_mode,
 * unlink_on_gc_collect) (joblib/numpy_pickle.py) is joblib.load(filename, mmap_mode), a
 * nested load of a file by path, then a weakref finalizer when unlink is true. joblib's
 * memmapping reducer sends it for an array over max_nbytes, naming a file it dumped as
 * ROOT/joblib_memmapping_folder_<pid>_<id>_<context>/<pid>-<thread id>-<uuid hex>.pkl.
 * What it reaches, argument by argument:
 *  - filename: the file joblib.load opens by name, in the loading process. Its content
 *    is not in these bytes; it is judged where it is opened, by layer 1 (the preload's
 *    open hooks, the full analyzer). So this shape is data only when the caller says the
 *    process judges its opens (r->opens_judged); otherwise callee.deserialize, saying why.
 *    The name must be joblib's: absolute, every component non-empty and not "." or "..",
 *    the parent joblib_memmapping_folder_<[A-Za-z0-9_-]+>, the file <digits>-<digits>-<32
 *    hex>.pkl. ROOT is free (Parallel's temp_folder is the caller's choice: /dev/shm,
 *    $JOBLIB_TEMP_FOLDER, the temp dir or any folder); the name bounds the shape, the
 *    judgement of the file at its open is what guards the load;
 *  - mmap_mode: "r" (joblib's default) and "c" map the arrays read-only or private.
 *    "r+" and "w+" (joblib.load turns it into "r+") map the array data of the file the
 *    bytes name writable and shared: through a symbolic link planted in a folder of that
 *    name (anyone can make one in /dev/shm), a file of the victim's, and the task function
 *    the same message carries, with arguments it chooses, writes it; numpy's "readwrite"
 *    is r+ and its "write" (w+, which joblib passes through) truncates the file:
 *    file_write. Any other value (None reads it into memory, which joblib never sends
 *    here) stays a nested load;
 *  - unlink_on_gc_collect (a bool): the finalizer sends MAYBE_UNLINK to loky's resource
 *    tracker, which unlinks only a name joblib registered there itself (any other is a
 *    KeyError in the tracker's loop), so at worst one of joblib's own temporary files
 *    goes early.
 * Returns NULL when it is data, else why (and *cat). */
static bool cl_fileload_name(const uint8_t *p, uint64_t n) {
    if (n < 2 || n > 4096 || p[0] != '/' || memchr(p, '\0', n)) return false;
    const uint8_t *c[2] = {NULL, NULL}; /* the last two components */
    uint64_t cl[2] = {0, 0};
    for (uint64_t i = 1, st = 1; i <= n; i++) {
        if (i < n && p[i] != '/') continue;
        uint64_t l = i - st;
        if (!l || (l == 1 && p[st] == '.') || (l == 2 && p[st] == '.' && p[st + 1] == '.')) return false;
        c[0] = c[1], cl[0] = cl[1];
        c[1] = p + st, cl[1] = l;
        st = i + 1;
    }
    static const char pre[] = "joblib_memmapping_folder_";
    size_t pl = sizeof pre - 1;
    if (!c[0] || cl[0] <= pl || memcmp(c[0], pre, pl)) return false;
    for (uint64_t i = pl; i < cl[0]; i++)
        if (!isalnum(c[0][i]) && c[0][i] != '_' && c[0][i] != '-') return false;
    /* <digits>-<digits>-<32 hex>.pkl */
    const uint8_t *f = c[1];
    uint64_t fl = cl[1], i = 0;
    for (int part = 0; part < 2; part++) {
        uint64_t d = i;
        while (i < fl && isdigit(f[i])) i++;
        if (i == d || i >= fl || f[i] != '-') return false;
        i++;
    }
    if (fl - i != 36) return false;
    for (uint64_t k = 0; k < 32; k++)
        if (!isxdigit(f[i + k]) || isupper(f[i + k])) return false;
    return !memcmp(f + i + 32, ".pkl", 4);
}

static const char *cl_fileload_risk(const cl_ctx *c, const spa_val *args, spa_kbcat *cat) {
    *cat = SPA_KB_DESERIALIZE;
    const spa_val *fn = spa_val_item(args, 0), *mode = spa_val_item(args, 1), *unlink = spa_val_item(args, 2);
    if (!args || args->kind != SPA_V_TUPLE || args->n != 3 || args->u.seq.count != 3 || !fn ||
        fn->kind != SPA_V_STR || fn->u.s.kept != fn->u.s.len || !unlink || unlink->kind != SPA_V_BOOL)
        return "arguments outside joblib's shape (a constant name, a mode, a bool)";
    if (!cl_fileload_name(fn->u.s.p, fn->u.s.len))
        return "a name not of joblib's temporary memmaps";
    if (cl_str_is(mode, "r+") || cl_str_is(mode, "w+") || cl_str_is(mode, "readwrite") || cl_str_is(mode, "write")) {
        *cat = SPA_KB_FILE_WRITE;
        return "mapped writable (a task given the array writes the file)";
    }
    if (!cl_str_is(mode, "r") && !cl_str_is(mode, "c")) return "a mode other than r or c";
    if (!c->r->opens_judged) return "its content judged only at its open by layer 1, not active here";
    return NULL;
}

/* The text of a call, "module.name(arg, ...)", rendered at its first use: most
 * calls are judged safe and say nothing. */
typedef struct cl_calltxt {
    const spa_target *t;
    const spa_val *args;
    bool done;
    char s[CL_MAX_MSG];
} cl_calltxt;

static const char *cl_calltxt_get(cl_calltxt *x) {
    if (!x->done) {
        char ts[300];
        cl_target_str(ts, sizeof ts, x->t);
        cl_render_call(x->s, sizeof x->s, ts, x->args);
        x->done = true;
    }
    return x->s;
}

static void cl_judge_target_call(cl_ctx *c, const spa_target *t, const spa_val *callee,
                                 const spa_val *args, const spa_val *bound, int opcode,
                                 int depth, cl_judgement *j) {
    memset(j, 0, sizeof *j);
    j->sev = SPA_VERDICT_SAFE;
    cl_calltxt ct = {t, args, false, {0}}; /* the call's text, for messages */
    if (depth > 8) {
        cl_set(j, SPA_VERDICT_MALICIOUS, "call.unresolved", "call chain too deep at %s", cl_calltxt_get(&ct));
        return;
    }
    if (t->aux[0] == 'p' && !strcmp(t->aux, "partial") && t->bound) {
        /* calling a functools.partial: the bound function with bound + given args */
        bound = t->bound;
    }
    switch (t->kind) {
    case SPA_T_DYNAMIC:
        cl_set(j, SPA_VERDICT_MALICIOUS, "call.unresolved",
               "calls a value the analyzer cannot resolve: %s", cl_calltxt_get(&ct));
        return;
    case SPA_T_NONE:
        /* a persistent id is whatever the loader's persistent_load returns for an id
         * the file chooses: calling it calls an object nobody can name from the
         * bytes (the extension registry's codes are the same case); no benign
         * format calls one (torch hands its storages to a rebuild function) */
        if (t->origin && t->origin->kind == SPA_V_PERSID) {
            cl_set(j, SPA_VERDICT_MALICIOUS, "call.unresolved",
                   "calls the object the loader's persistent_load returns for a persistent id: %s",
                   cl_calltxt_get(&ct));
            return;
        }
        return; /* calling a literal raises TypeError before anything runs */
    case SPA_T_MODULE:
        cl_set(j, SPA_VERDICT_MALICIOUS, "reflect.module", "calls the module object %s", t->module);
        return;
    case SPA_T_SYSMODULES:
        cl_set(j, SPA_VERDICT_MALICIOUS, "reflect.sys_modules", "calls sys.modules");
        return;
    case SPA_T_OBJECT:
        cl_set(j, t->via_reflection ? SPA_VERDICT_MALICIOUS : SPA_VERDICT_SUSPICIOUS,
               "call.call_result", "calls the result of another call: %s", cl_calltxt_get(&ct));
        return;
    case SPA_T_GETTER: {
        /* attrgetter(...)(obj) / itemgetter(...)(obj): what it reaches */
        spa_target r;
        const spa_val *callv = NULL;
        (void)callv;
        spa_target base;
        spa_resolve(spa_val_item(args, 0), &base, 0);
        memset(&r, 0, sizeof r);
        if (!t->aux[0]) r.kind = SPA_T_DYNAMIC;
        else if (t->itemgetter) {
            if (base.kind == SPA_T_SYSMODULES) { r.kind = SPA_T_MODULE; spa_kb_canon(t->aux, r.module, sizeof r.module); }
            else if (base.kind == SPA_T_MODULE || base.kind == SPA_T_DYNAMIC) r.kind = SPA_T_DYNAMIC;
            else r.kind = SPA_T_OBJECT;
        } else if (base.kind == SPA_T_MODULE) {
            r.kind = SPA_T_GLOBAL;
            r.from_module = true;
            spa_fmt(r.module, sizeof r.module, "%s", base.module);
            spa_fmt(r.name, sizeof r.name, "%s", t->aux);
        } else if (base.kind == SPA_T_GLOBAL) {
            r = base;
            spa_fmt(r.name, sizeof r.name, "%.120s.%.120s", base.name, t->aux);
        } else if (base.kind == SPA_T_SYSMODULES || base.kind == SPA_T_DYNAMIC) {
            r.kind = SPA_T_DYNAMIC;
        } else {
            r.kind = SPA_T_METHOD;
        }
        cl_judge_reference(c, &r, cl_calltxt_get(&ct), j);
        return;
    }
    case SPA_T_METHODCALLER: {
        /* methodcaller('m', *a)(obj) calls obj.m(*a) */
        spa_target base, m;
        spa_resolve(spa_val_item(args, 0), &base, 0);
        memset(&m, 0, sizeof m);
        if (!t->aux[0] || base.kind == SPA_T_DYNAMIC) {
            cl_set(j, SPA_VERDICT_MALICIOUS, "call.unresolved", "methodcaller on a value the analyzer cannot resolve: %s", cl_calltxt_get(&ct));
            return;
        }
        if (base.kind == SPA_T_MODULE) {
            m.kind = SPA_T_GLOBAL;
            spa_fmt(m.module, sizeof m.module, "%s", base.module);
            spa_fmt(m.name, sizeof m.name, "%s", t->aux);
        } else {
            m = base;
            m.kind = base.kind == SPA_T_GLOBAL ? SPA_T_GLOBAL : SPA_T_METHOD;
            if (base.kind == SPA_T_SYSMODULES) { spa_fmt(m.module, sizeof m.module, "sys"); spa_fmt(m.name, sizeof m.name, "modules"); }
            size_t l = strlen(m.name);
            spa_fmt(m.name + l, sizeof m.name - l, "%s%s", l ? "." : "", t->aux);
        }
        m.via_reflection = true;
        const spa_val *margs = NULL;
        cl_judge_target_call(c, &m, callee, margs, t->bound, SPA_OP_REDUCE, depth + 1, j);
        if (j->sev != SPA_VERDICT_SAFE && j->rule) {
            char tmp[CL_MAX_MSG];
            spa_fmt(tmp, sizeof tmp, "%s via operator.methodcaller", j->msg);
            spa_fmt(j->msg, sizeof j->msg, "%s", tmp);
        }
        return;
    }
    case SPA_T_METHOD:
    case SPA_T_GLOBAL:
        break;
    default:
        return;
    }

    /* explicit policy rules first */
    int pr = spa_policy_global_rule(c->p, t->module, t->name);
    if (pr < 0) {
        cl_set(j, SPA_VERDICT_MALICIOUS, "policy.deny", "calls %s, denied by the policy", cl_calltxt_get(&ct));
        return;
    }
    if (pr > 0) return;

    spa_kbhit h;
    spa_kbcat cat = cl_kb(c, t, t->via_reflection ? NULL : callee, &h);
    bool reflective = t->via_reflection || t->kind == SPA_T_METHOD;

    /* ---- trampolines and reconstructors that call one of their arguments */
    if (!reflective && t->kind == SPA_T_GLOBAL) {
        const spa_val *a0 = spa_val_item(args, 0);
        if (spa_target_is(t, "builtins", "getattr") || spa_target_is(t, "inspect", "getattr_static") ||
            spa_target_is(t, "operator", "getitem") || spa_target_is(t, "numpy.core", "_ufunc_reconstruct") ||
            spa_target_is(t, "numpy._core", "_ufunc_reconstruct")) {
            /* the call yields an attribute or item: judge what it reaches */
            spa_target r;
            spa_val fake;
            memset(&fake, 0, sizeof fake);
            fake.kind = SPA_V_CALL;
            fake.u.call.callee = callee;
            fake.u.call.args = args;
            spa_resolve(&fake, &r, 0);
            cl_judge_reference(c, &r, cl_calltxt_get(&ct), j);
            cl_args_rules(c, t, args, NULL, SPA_KB_DATA, false, j);
            return;
        }
        if (spa_target_is(t, "operator", "attrgetter") || spa_target_is(t, "operator", "itemgetter") ||
            spa_target_is(t, "operator", "methodcaller")) {
            /* building the getter does nothing; calling it is judged where it happens */
            cl_args_rules(c, t, args, NULL, SPA_KB_UNKNOWN, false, j);
            return;
        }
        if (t->kind == SPA_T_GLOBAL && spa_kb_partial(t->module, t->name)) { /* functools.partial and its rebuilders */
            if (args && args->kind == SPA_V_TUPLE && args->n == 0) {
                /* nothing bound (an argument tuple that is not a literal empty one
                 * is judged below as an unresolved binding): NEWOBJ's cls.__new__(cls)
                 * of a binder class (numpy.vectorize) runs none of its code; what its
                 * BUILD state binds is judged there (a dangerous global in it is a
                 * reference, a call in it is judged as one) */
                return;
            }
            spa_target f;
            spa_resolve(a0, &f, 0);
            if (f.kind == SPA_T_GLOBAL || f.kind == SPA_T_METHOD) {
                int fpr = spa_policy_global_rule(c->p, f.module, f.name);
                spa_kbhit fh;
                spa_kbcat fc = fpr > 0 ? SPA_KB_DATA : cl_judge_name(c, f.module, f.name, &fh);
                /* a partial is a reference with bound arguments: it binds a dangerous
                 * callable or it is judged like a reference (a pure stdlib function,
                 * partial(math.sqrt), partial(max, key=len), is fine); calling it is
                 * judged as calling what it binds */
                if (fpr < 0 || cl_cat_binds_danger(fc)) {
                    char fs[300];
                    cl_target_str(fs, sizeof fs, &f);
                    cl_set(j, SPA_VERDICT_MALICIOUS, "partial.dangerous",
                           "%s binds %s (%s)", cl_calltxt_get(&ct), fs, fpr < 0 ? "denied by the policy" : spa_kbcat_name(fc));
                    return;
                }
            } else if (f.kind == SPA_T_DYNAMIC || f.kind == SPA_T_MODULE || f.kind == SPA_T_SYSMODULES) {
                cl_judge_reference(c, &f, cl_calltxt_get(&ct), j);
                if (j->sev == SPA_VERDICT_SAFE) cl_set(j, SPA_VERDICT_SUSPICIOUS, "reflect.dynamic", "%s binds an unresolved callable", cl_calltxt_get(&ct));
                return;
            }
            cl_args_rules(c, t, args, NULL, SPA_KB_UNKNOWN, true, j);
            return;
        }
        uint64_t nargs = args && args->kind == SPA_V_TUPLE ? args->u.seq.count : 0;
        if (spa_target_is(t, "builtins", "iter") && nargs >= 2) {
            /* iter(f, sentinel): every consumer (list, tuple, set, deque, ...) calls f()
             * until it returns the sentinel */
            spa_val none;
            memset(&none, 0, sizeof none);
            none.kind = SPA_V_TUPLE;
            cl_judge_value_call(c, a0, &none, depth, j);
            if (j->sev != SPA_VERDICT_SAFE && j->rule) {
                char tmp[CL_MAX_MSG];
                spa_fmt(tmp, sizeof tmp, "%s, through %s", j->msg, cl_calltxt_get(&ct));
                spa_fmt(j->msg, sizeof j->msg, "%s", tmp);
            }
            return;
        }
        if (spa_target_is(t, "builtins", "type") && nargs != 1 && args && args->kind == SPA_V_TUPLE) {
            /* type(name, bases, namespace) creates a class: the bases' metaclass and
             * __init_subclass__ run, and every callable of the namespace becomes a method
             * the unpickler (__setstate__, extend, add) and the program call */
            cl_set(j, SPA_VERDICT_MALICIOUS, "callee.code_exec",
                   "%s creates a class (its bases' hooks run; its namespace's callables become methods)",
                   cl_calltxt_get(&ct));
            return;
        }
        if (spa_target_is(t, "builtins", "map") || spa_target_is(t, "builtins", "filter") ||
            spa_target_is(t, "itertools", "starmap") || spa_target_is(t, "functools", "reduce") ||
            spa_target_is(t, "concurrent.futures.process", "_process_chunk")) {
            /* the function runs on every item once a consumer (list, tuple, ...) forces it */
            cl_judge_value_call(c, a0, spa_val_item(args, 1), depth, j);
            if (j->sev != SPA_VERDICT_SAFE && j->rule) {
                char tmp[CL_MAX_MSG];
                spa_fmt(tmp, sizeof tmp, "%s, through %s", j->msg, cl_calltxt_get(&ct));
                spa_fmt(j->msg, sizeof j->msg, "%s", tmp);
            }
            return;
        }
        if (spa_target_is(t, "torch._tensor", "_rebuild_from_type_v2") ||
            spa_target_is(t, "torch._tensor", "_rebuild_from_type")) {
            cl_judge_value_call(c, a0, spa_val_item(args, 2), depth, j);
            cl_judgement o = {SPA_VERDICT_SAFE, NULL, {0}};
            cl_args_rules(c, t, args, NULL, SPA_KB_DATA, true, &o);
            cl_merge(j, &o);
            return;
        }
        if (spa_target_is(t, "copyreg", "_reconstructor")) {
            /* object.__new__(cls) then base.__init__(obj, state) unless base is object */
            const spa_val *base = spa_val_item(args, 1);
            spa_target bt;
            spa_resolve(base, &bt, 0);
            cl_judgement o;
            cl_judge_value_call(c, a0, NULL, depth, j);
            if (!(bt.kind == SPA_T_GLOBAL && !strcmp(bt.module, "builtins") && !strcmp(bt.name, "object"))) {
                spa_val tup;
                memset(&tup, 0, sizeof tup);
                cl_judge_value_call(c, base, NULL, depth, &o);
                cl_merge(j, &o);
            }
            return;
        }
        if (spa_kb_apply(t->module, t->name)) {
            /* func(*args) now; the other arguments are data it is given */
            cl_judge_value_call(c, a0, spa_val_item(args, 1), depth, j);
            if (args && (args->kind == SPA_V_TUPLE || args->kind == SPA_V_LIST) && args->n > 2) {
                spa_val rest = *args;
                rest.u.seq.items = args->u.seq.items + 2;
                rest.n = args->n - 2;
                rest.u.seq.count = args->u.seq.count - 2;
                cl_judgement o = {SPA_VERDICT_SAFE, NULL, {0}};
                cl_args_rules(c, t, &rest, NULL, SPA_KB_DATA, false, &o);
                cl_merge(j, &o);
            }
            return;
        }
        if (spa_kb_mapview(t->module, t->name)) {
            spa_kbcat mc;
            const char *why = cl_mapview_risk(args, &mc);
            if (why) {
                cl_set(j, SPA_VERDICT_MALICIOUS, cl_cat_rule(mc), "calls %s, which %s [%s]", cl_calltxt_get(&ct), why,
                       spa_kbcat_name(mc));
                return;
            }
            cl_args_rules(c, t, args, NULL, SPA_KB_DATA, false, j);
            return;
        }
        if (spa_kb_fileload(t->module, t->name)) {
            spa_kbcat fc;
            const char *why = bound ? "with arguments bound by a partial" : cl_fileload_risk(c, args, &fc);
            if (bound) fc = SPA_KB_DESERIALIZE;
            if (why) {
                cl_set(j, SPA_VERDICT_MALICIOUS, cl_cat_rule(fc),
                       "%s loads a file by path: %s [%s]", cl_calltxt_get(&ct), why,
                       spa_kbcat_name(fc));
                return;
            }
            cl_args_rules(c, t, args, NULL, SPA_KB_DATA, false, j);
            return;
        }
        if (spa_kb_tblineno(t->module, t->name)) {
            char why[120];
            if (!cl_tb_bounded(c, args, why, sizeof why)) {
                cl_set(j, SPA_VERDICT_MALICIOUS, "args.resource",
                       "%s rebuilds a traceback by compiling one line per line number, and %s", cl_calltxt_get(&ct), why);
                return;
            }
            cl_args_rules(c, t, args, NULL, SPA_KB_DATA, false, j);
            return;
        }
        if (spa_target_is(t, "copyreg", "__newobj__") || spa_target_is(t, "copyreg", "__newobj_ex__")) {
            cl_judge_value_call(c, a0, NULL, depth, j);
            cl_judgement o = {SPA_VERDICT_SAFE, NULL, {0}};
            cl_args_rules(c, t, args, NULL, SPA_KB_DATA, true, &o);
            cl_merge(j, &o);
            return;
        }
    }

    /* ---- ndarray.__new__(subtype, ...): the subtype's own constructors never run */
    if (cat == SPA_KB_DATA && !reflective && t->kind == SPA_T_GLOBAL && spa_kb_typearg(t->module, t->name)) {
        cl_args_rules(c, t, args, bound, cat, true, j);
        return;
    }

    /* ---- nested deserialisation: judged by the content it loads */
    if (cat == SPA_KB_DESERIALIZE) {
        const spa_val *content = spa_val_item(args, 0);
        if (bound && bound->n > 1) content = spa_val_item(bound, 1);
        char why[200];
        why[0] = '\0';
        if (t->kind == SPA_T_GLOBAL && !reflective && !bound && spa_kb_raw_loader(t->module, t->name) &&
            cl_rawload(c, args, why, sizeof why) == SPA_VERDICT_SAFE)
            return;
        spa_verdict nv = cl_nested_content(c, content, why, sizeof why);
        if (t->kind != SPA_T_GLOBAL || reflective || !spa_kb_nested_loader(t->module, t->name)) {
            /* a nested load the author chose: malicious whatever it loads */
            cl_set(j, SPA_VERDICT_MALICIOUS, "callee.deserialize",
                   "%s is a nested load (content judged %s: %s)", cl_calltxt_get(&ct), spa_verdict_name(nv), why);
            return;
        }
        if (nv == SPA_VERDICT_SAFE) return;
        cl_set(j, nv, nv == SPA_VERDICT_MALICIOUS ? "nested.malicious" :
                      nv == SPA_VERDICT_UNSCANNABLE ? "nested.unscannable" : "nested.suspicious",
               "%s loads nested content judged %s: %s", cl_calltxt_get(&ct), spa_verdict_name(nv), why);
        return;
    }

    /* ---- everything else by category */
    if (cat == SPA_KB_DATA) {
        cl_args_rules(c, t, args, bound, cat, false, j);
        return;
    }
    if (cat == SPA_KB_UNKNOWN) {
        bool cls = cl_classlike(t->name) || opcode == SPA_OP_NEWOBJ || opcode == SPA_OP_NEWOBJ_EX;
        if (reflective) {
            /* the one benign shape: a bound classmethod of a class itself fine to build,
             * getattr(Class, 'from_x')(...) (Class.name, two components, class-like base);
             * anything else reached through reflection is refused by default */
            bool benign = cl_benign_reflective(c, t);
            cl_set(j, benign ? SPA_VERDICT_SUSPICIOUS : SPA_VERDICT_MALICIOUS, "call.reflective_result",
                   "calls %s, reached through reflection (%s)", cl_calltxt_get(&ct),
                   benign ? "a classmethod of a class unknown to the knowledge base"
                          : "not a constructor of a class known to be safe");
        } else if (!cls) {
            cl_set(j, SPA_VERDICT_SUSPICIOUS, "callee.unknown_function",
                   "calls %s, a function unknown to the knowledge base", cl_calltxt_get(&ct));
        }
        cl_args_rules(c, t, args, bound, SPA_KB_UNKNOWN, false, j);
        return;
    }
    cl_set(j, SPA_VERDICT_MALICIOUS, reflective ? "call.reflective_result" : cl_cat_rule(cat),
           "calls %s%s [%s, KB %s]", cl_calltxt_get(&ct), reflective ? " reached through reflection" : "",
           spa_kbcat_name(cat), h.key[0] ? h.key : "-");
}

static void cl_judge_call(cl_ctx *c, const spa_ir *e, cl_judgement *j) {
    const spa_val *callee = e->target;
    spa_target t;
    spa_resolve(callee, &t, 0);
    cl_judge_target_call(c, &t, callee, e->arg, NULL, e->opcode, 0, j);
    if (e->kwargs && j->sev != SPA_VERDICT_MALICIOUS) {
        cl_judgement o = {SPA_VERDICT_SAFE, NULL, {0}};
        spa_kbhit h;
        spa_kbcat cat = t.kind == SPA_T_GLOBAL ? cl_judge_name(c, t.module, t.name, &h) : SPA_KB_UNKNOWN;
        cl_args_rules(c, &t, e->kwargs, NULL, cat, false, &o);
        cl_merge(j, &o);
    }
}

/* ------------------------------------------------------------------ per stream */
static int cl_ptrcmp(const void *a, const void *b) {
    uintptr_t x = (uintptr_t)*(const void *const *)a, y = (uintptr_t)*(const void *const *)b;
    return x < y ? -1 : x > y;
}

static void cl_collect(const spa_val *v, const void **set, size_t *n, size_t cap, int depth) {
    if (!v || *n >= cap || depth > 2) return;
    set[(*n)++] = v;
    if (v->kind == SPA_V_TUPLE || v->kind == SPA_V_LIST)
        for (uint32_t i = 0; i < v->n && v->u.seq.items; i++) cl_collect(v->u.seq.items[i], set, n, cap, depth + 1);
}

/* ---- state that outlives the object being filled. BUILD and the container opcodes
 * normally fill an object the stream has just made; two shapes reach further:
 * - the object is one the process shares (`@shared` in the KB: an enum member, a cached
 *   logger, the class type(x) returns): its change is a change of the program;
 * - the state stores a callable under a name the unpickler itself looks up on the object
 *   (BUILD calls obj.__setstate__(state), APPEND/APPENDS obj.extend or obj.append,
 *   ADDITEMS obj.add): the next such opcode calls it with the stream's arguments. Also one
 *   dict deeper, for classes whose __getattr__ reads a dict of the state (torch's
 *   Module: _modules, _parameters, _buffers). */
static bool cl_shared_callee(const spa_val *callee, char *out, size_t n) {
    spa_target k;
    spa_resolve(callee, &k, 0);
    if (k.kind != SPA_T_GLOBAL || !spa_kb_shared(k.module, k.name)) return false;
    spa_fmt(out, n, "%s.%s", k.module, k.name);
    return true;
}

static bool cl_shared_result(const spa_val *v, char *out, size_t n) {
    if (!v || v->kind != SPA_V_CALL) return false;
    if (cl_shared_callee(v->u.call.callee, out, n)) return true;
    /* a reconstructor calls the base's __new__, which for an enum class returns its
     * existing member */
    const spa_val *cls, *base;
    if (!cl_reconstructor(v, &cls, &base)) return false;
    return cl_shared_callee(base, out, n) || (cls != base && cl_shared_callee(cls, out, n));
}

/* a value that may be called: a global, a bound method or attribute reached through
 * reflection, a getter, a partial, anything unresolved; not a literal, not an instance
 * built by a call */
static bool cl_callable_value(const spa_val *v) {
    if (!v) return false;
    switch (v->kind) {
    case SPA_V_GLOBAL: case SPA_V_UNKNOWN: case SPA_V_PERSID: return true;
    case SPA_V_CALL: {
        spa_target t;
        spa_resolve(v, &t, 0);
        return t.kind != SPA_T_OBJECT && t.kind != SPA_T_NONE;
    }
    default: return false;
    }
}

static const char *cl_planted(const spa_val *st, int depth) {
    static const char *const names[] = {"__setstate__", "extend", "append", "add"};
    if (!st || depth > 2 || !st->u.seq.items) return NULL;
    if (st->kind == SPA_V_TUPLE) { /* (dict state, slot state); a partial's (func, args, kwds, dict):
                                    * partial(Class, extend=f)() stores f as the instance's extend */
        for (uint32_t i = 0; i < st->n && i < 4; i++) {
            const spa_val *x = st->u.seq.items[i];
            const char *r = x && x->kind == SPA_V_DICT ? cl_planted(x, depth + 1) : NULL;
            if (r) return r;
        }
        return NULL;
    }
    if (st->kind != SPA_V_DICT) return NULL;
    for (uint32_t i = 0; i + 1 < st->n; i += 2) {
        const spa_val *k = st->u.seq.items[i], *v = st->u.seq.items[i + 1];
        char key[16];
        if (spa_val_text(k, key, sizeof key)) {
            for (size_t q = 0; q < sizeof names / sizeof *names; q++) {
                if (strcmp(key, names[q])) continue;
                /* no instance dict holds __setstate__; the list names only with a callable */
                if (q == 0 ? (v && (v->kind == SPA_V_CALL || cl_callable_value(v))) : cl_callable_value(v))
                    return names[q];
            }
        }
        if (v && v->kind == SPA_V_DICT && depth < 2) {
            const char *r = cl_planted(v, depth + 1);
            if (r) return r;
        }
    }
    return NULL;
}

/* BUILD and the container opcodes applied to a non-literal target */
static void cl_judge_state(const spa_ir *e, cl_judgement *j) {
    const char *what = e->kind == SPA_IR_BUILD ? "BUILD" : "a container opcode";
    const char *rule = e->kind == SPA_IR_BUILD ? "state.build_global" : "state.mutate_global";
    char sh[300];
    const char *pl;
    spa_target t;
    spa_resolve(e->target, &t, 0);
    if (e->target && e->target->kind == SPA_V_GLOBAL) {
        cl_set(j, SPA_VERDICT_MALICIOUS, rule, "%s modifies the global %s.%s itself (module state poisoning)", what,
               e->target->u.g.module ? e->target->u.g.module : "?", e->target->u.g.name ? e->target->u.g.name : "?");
    } else if (t.kind == SPA_T_MODULE || t.kind == SPA_T_SYSMODULES ||
               (t.via_reflection && (t.kind == SPA_T_GLOBAL || t.kind == SPA_T_METHOD))) {
        char ts[300];
        cl_target_str(ts, sizeof ts, &t);
        cl_set(j, SPA_VERDICT_MALICIOUS, rule, "%s modifies %s, reached through reflection (module state poisoning)",
               what, ts);
    } else if (cl_shared_result(e->target, sh, sizeof sh)) {
        cl_set(j, SPA_VERDICT_MALICIOUS, rule,
               "%s modifies the object %s() returns, which the process shares (an enum member, a "
               "cached object, a class)", what, sh);
    } else if (e->kind == SPA_IR_BUILD && (pl = cl_planted(e->arg, 0)) != NULL) {
        cl_set(j, SPA_VERDICT_MALICIOUS, "state.build_method",
               "BUILD stores a callable as the attribute %s, which the unpickler looks up on the object "
               "and calls with the stream's arguments", pl);
    } else if (e->opcode == SPA_OP_ADDITEMS) {
        /* picklers write ADDITEMS only onto the set EMPTY_SET made: onto anything
         * else it calls that object's add */
        cl_set(j, SPA_VERDICT_MALICIOUS, "state.build_method",
               "ADDITEMS calls the add attribute of an object that is not a set the stream made");
    }
}

static void cl_stream(cl_ctx *c, uint32_t si) {
    if (c->sstate[si]) return;
    c->sstate[si] = 1;
    uint32_t save_si = c->si;
    const spa_stream *save_s = c->s;
    uint8_t *save_cs = c->callsev;
    const spa_stream *s = &c->r->streams[si];
    c->si = si;
    c->s = s;
    c->callsev = s->n_ir ? spa_arena_calloc(c->ar, s->n_ir) : NULL;
    spa_verdict before = c->worst;
    bool unsc_before = c->unscannable;
    c->worst = SPA_VERDICT_SAFE;
    c->unscannable = false;
    char msg[CL_MAX_MSG];

    if (s->err.code == SPA_E_LIMIT) {
        spa_fmt(msg, sizeof msg, "limit %s stopped the scan of this stream at offset %llu",
                 spa_limit_name(s->limit), (unsigned long long)s->err.off);
        cl_reason(c, SPA_VERDICT_UNSCANNABLE, "scan.limit", msg, s->loc, s->err.off);
    } else if (s->err.code == SPA_E_NOMEM || s->err.code == SPA_E_INTERNAL || s->err.code == SPA_E_IO ||
               s->err.code == SPA_E_UNSUPPORTED) {
        spa_fmt(msg, sizeof msg, "stream could not be examined: %s", s->err.msg ? s->err.msg : spa_code_name(s->err.code));
        cl_reason(c, SPA_VERDICT_UNSCANNABLE, "scan.unscannable", msg, s->loc, s->err.off);
    }

    /* values used by calls (callees, arguments), BUILD and MUTATE targets */
    size_t cap = 0;
    for (size_t i = 0; i < s->n_ir; i++) if (s->ir[i].kind != SPA_IR_IMPORT) cap += 16;
    const void **used = cap ? spa_arena_alloc(c->ar, cap * sizeof *used) : NULL;
    size_t nused = 0;

    for (size_t i = 0; i < s->n_ir; i++) {
        const spa_ir *e = &s->ir[i];
        cl_judgement j = {SPA_VERDICT_SAFE, NULL, {0}};
        switch (e->kind) {
        case SPA_IR_IMPORT: {
            if ((e->flags & SPA_IRF_EXT) || e->opcode == SPA_OP_EXT1 || e->opcode == SPA_OP_EXT2 ||
                e->opcode == SPA_OP_EXT4) {
                /* a reference; calling what it fetches is judged as an unresolved call */
                cl_set(&j, SPA_VERDICT_SUSPICIOUS, "opcode.ext_registry",
                       "EXT opcode fetches a global from the copyreg extension registry (%s.%s)",
                       e->module ? e->module : "?", e->name ? e->name : "?");
            } else if ((e->flags & SPA_IRF_DYNAMIC) || !e->module || !e->name || e->module[0] == '<' || e->name[0] == '<') {
                cl_set(&j, SPA_VERDICT_MALICIOUS, "global.dynamic",
                       "STACK_GLOBAL with operands that are not constant strings");
            } else {
                int pr = spa_policy_global_rule(c->p, e->module, e->name);
                spa_kbhit h;
                if (pr < 0)
                    cl_set(&j, SPA_VERDICT_MALICIOUS, "policy.deny", "imports %s.%s, denied by the policy", e->module, e->name);
                else if (pr == 0 && cl_judge_name(c, e->module, e->name, &h) != SPA_KB_UNKNOWN && h.how == SPA_KBH_EFFECT)
                    cl_set(&j, SPA_VERDICT_MALICIOUS, "global.import_effect",
                           "imports %s, whose import alone acts (%s)", e->module, h.key);
            }
            break;
        }
        case SPA_IR_CALL:
            cl_judge_call(c, e, &j);
            if (c->callsev) c->callsev[i] = (uint8_t)(j.sev + 1);
            if (used) {
                cl_collect(e->target, used, &nused, cap, 0);
                cl_collect(e->arg, used, &nused, cap, 0);
            }
            break;
        case SPA_IR_BUILD:
        case SPA_IR_MUTATE:
            if (used) cl_collect(e->target, used, &nused, cap, 0);
            cl_judge_state(e, &j);
            break;
        case SPA_IR_DISCARD: {
            const spa_val *v = e->target;
            if (v && v->kind == SPA_V_CALL && v->u.call.ir < s->n_ir && c->callsev &&
                s->ir[v->u.call.ir].kind == SPA_IR_CALL && c->callsev[v->u.call.ir] > SPA_VERDICT_SAFE + 1) {
                char cs[160];
                cl_render_val(cs, sizeof cs, v, 0);
                cl_set(&j, SPA_VERDICT_MALICIOUS, "call.discarded",
                       "the result of %s is discarded: the call was made for its effect", cs);
            }
            break;
        }
        default:
            break;
        }
        cl_add(c, &j, e->off);
    }

    /* references to dangerous globals that nothing calls or uses */
    if (nused) qsort(used, nused, sizeof *used, cl_ptrcmp);
    for (size_t i = 0; i < s->n_ir; i++) {
        const spa_ir *e = &s->ir[i];
        if (e->kind != SPA_IR_IMPORT || !e->module || !e->name || (e->flags & (SPA_IRF_DYNAMIC | SPA_IRF_EXT))) continue;
        /* a reference counts only where CPython's C unpickler reaches it: not after INST
         * with no MARK or on a line cut by EOF (pure Python imports, then fails), and an
         * empty name is an AttributeError in both loaders (the import's own effect is
         * judged above, by global.import_effect) */
        if ((e->flags & SPA_IRF_PYONLY) || !e->name[0]) continue;
        /* the environment index says the module cannot be imported here: the import fails
         * before anything is handed over (a requirements file "coverage\npytest\n" reads
         * as GLOBAL overage.pytest) */
        if (!spa_kb_importable(e->module)) continue;
        const spa_val *g = e->result ? e->result : e->target;
        if (g && nused && bsearch(&g, used, nused, sizeof *used, cl_ptrcmp)) continue;
        if (spa_policy_global_rule(c->p, e->module, e->name) != 0) continue;
        spa_kbhit h;
        spa_kbcat cat = cl_judge_name(c, e->module, e->name, &h);
        if (cat == SPA_KB_DATA || cat == SPA_KB_UNKNOWN || cat == SPA_KB_STDLIB_OTHER || h.how == SPA_KBH_EFFECT)
            continue;
        /* a type benign pickles name as such (joblib's NumpyArrayWrapper state
         * {'subclass': numpy.memmap}): calling it is judged where it happens */
        if (cat == SPA_KB_FILE_WRITE && spa_kb_typeref(e->module, e->name)) continue;
        /* a dangerous callable handed to the program (it may call it later) is malicious;
         * reflection and state helpers only referenced are suspicious */
        cl_judgement j;
        bool act = h.how == SPA_KBH_MODATTR || (cat != SPA_KB_REFLECTION && cat != SPA_KB_STATE_MUTATION &&
                   !(cat == SPA_KB_DESERIALIZE && spa_kb_nested_loader(e->module, e->name)));
        cl_set(&j, act ? SPA_VERDICT_MALICIOUS : SPA_VERDICT_SUSPICIOUS, "global.reference",
               "references %s.%s (%s, KB %s) without calling it", e->module, e->name,
               spa_kbcat_name(cat), h.key[0] ? h.key : "-");
        cl_add(c, &j, e->off);
    }

    c->sverd[si] = c->unscannable && c->worst != SPA_VERDICT_MALICIOUS ? SPA_VERDICT_UNSCANNABLE : c->worst;
    c->worst = cl_max(before, c->worst);
    c->unscannable = c->unscannable || unsc_before;
    c->sstate[si] = 2;
    c->si = save_si;
    c->s = save_s;
    c->callsev = save_cs;
}

/* Verdict of a stream and every stream nested under it. */
static spa_verdict cl_stream_tree(cl_ctx *c, uint32_t si) {
    if (c->sstate[si] == 1) return SPA_VERDICT_MALICIOUS; /* a stream that loads itself */
    cl_stream(c, si);
    spa_verdict v = c->sverd[si];
    for (uint32_t k = 0; k < c->r->n_streams; k++) {
        uint32_t p = c->r->streams[k].parent, hops = 0;
        while (p != UINT32_MAX && p != si && p < c->r->n_streams && hops++ < 64) p = c->r->streams[p].parent;
        if (p == si && k != si) {
            if (c->sstate[k] == 1) continue;
            cl_stream(c, k);
            v = cl_max(v, c->sverd[k]);
        }
    }
    return v;
}

/* ------------------------------------------------------------------ entry */
static spa_code cl_classify_nest(spa_result *r, const spa_policy *p, int nest) {
    if (!r || !r->arena) return SPA_E_USAGE;
    cl_ctx *c = calloc(1, sizeof *c);
    if (!c) return SPA_E_NOMEM;
    c->nest = nest;
    c->r = r;
    c->p = p;
    c->ar = r->arena;
    r->reasons = NULL;
    r->n_reasons = 0;
    size_t ns = r->n_streams;
    c->sstate = spa_arena_calloc(c->ar, ns + 1);
    c->sverd = spa_arena_calloc(c->ar, (ns + 1) * sizeof *c->sverd);
    if (!c->sstate || !c->sverd) { free(c); return SPA_E_NOMEM; }

    for (size_t i = 0; i < r->n_notes; i++) {
        const spa_note *n = &r->notes[i];
        char msg[CL_MAX_MSG];
        if (n->kind == SPA_NOTE_UNSCANNABLE) {
            spa_fmt(msg, sizeof msg, "content that may bear a pickle could not be examined: %s%s%s",
                     n->err.msg ? n->err.msg : "unscannable", n->detail ? " - " : "", n->detail ? n->detail : "");
            cl_reason(c, SPA_VERDICT_UNSCANNABLE, "scan.unscannable", msg, n->loc, n->err.off);
        } else if (n->kind == SPA_NOTE_LIMIT) {
            spa_fmt(msg, sizeof msg, "limit %s stopped the examination%s%s", spa_limit_name(n->limit),
                     n->detail ? ": " : "", n->detail ? n->detail : "");
            cl_reason(c, SPA_VERDICT_UNSCANNABLE, "scan.limit", msg, n->loc, n->err.off);
        }
    }
    if (ns == 0) { /* a wrapper failed before any stream was found: nothing was examined */
        for (size_t i = 0; i < r->n_notes; i++) {
            const spa_note *n = &r->notes[i];
            if (n->kind != SPA_NOTE_ERROR) continue;
            char msg[CL_MAX_MSG];
            spa_fmt(msg, sizeof msg, "no pickle stream could be examined: %s%s%s (%s)",
                   n->err.msg ? n->err.msg : "error", n->detail ? " - " : "", n->detail ? n->detail : "",
                   spa_format_name(r->format));
            cl_reason(c, SPA_VERDICT_UNSCANNABLE, "scan.error", msg, n->loc, n->err.off);
        }
    }
    for (uint32_t i = 0; i < ns; i++) cl_stream(c, i);
    if (c->kb_limit) {
        char msg[CL_MAX_MSG];
        spa_fmt(msg, sizeof msg, "limit max_kb_lookups (%d distinct globals) stopped the classification; "
               "later globals were not judged", CL_MAX_KB_LOOKUPS);
        cl_reason(c, SPA_VERDICT_UNSCANNABLE, "scan.limit", msg, r->path ? r->path : "", 0);
    }
    r->verdict = c->worst == SPA_VERDICT_MALICIOUS ? SPA_VERDICT_MALICIOUS
               : c->unscannable ? SPA_VERDICT_UNSCANNABLE : c->worst;
    r->classified = true;
    free(c);
    return SPA_OK;
}

spa_code spa_classify(spa_result *r, const spa_policy *p) { return cl_classify_nest(r, p, 0); }

bool spa_result_data_only(const spa_result *r) {
    if (!r || r->verdict == SPA_VERDICT_SAFE) return r != NULL;
    if (r->verdict != SPA_VERDICT_SUSPICIOUS || !r->n_reasons || r->n_reasons >= CL_MAX_REASONS) return false;
    for (size_t i = 0; i < r->n_reasons; i++) {
        const spa_reason *x = &r->reasons[i];
        if (x->severity == SPA_VERDICT_SAFE) continue;
        /* args.code_like at suspicious is only ever a data constructor's (cl_args_rules) */
        if (x->severity != SPA_VERDICT_SUSPICIOUS || !x->rule || strcmp(x->rule, "args.code_like")) return false;
    }
    return true;
}

/* ------------------------------------------------------------------ by name only */
spa_verdict spa_judge_global(const spa_policy *p, const char *module, const char *name,
                             const char **rule, char *msg, size_t msgsz) {
    const char *rl = NULL;
    spa_verdict v = SPA_VERDICT_SAFE;
    char tmp[2];
    if (!msg || !msgsz) { msg = tmp; msgsz = sizeof tmp; }
    msg[0] = '\0';
    if (!module || !name) {
        if (rule) *rule = "global.dynamic";
        spa_fmt(msg, msgsz, "global with no name");
        return SPA_VERDICT_MALICIOUS;
    }
    int pr = spa_policy_global_rule(p, module, name);
    if (pr < 0) {
        if (rule) *rule = "policy.deny";
        spa_fmt(msg, msgsz, "%s.%s is denied by the policy", module, name);
        return SPA_VERDICT_MALICIOUS;
    }
    if (pr > 0) {
        if (rule) *rule = "policy.allow";
        spa_fmt(msg, msgsz, "%s.%s is allowed by the policy", module, name);
        return SPA_VERDICT_SAFE;
    }
    spa_kbhit h;
    spa_kbcat cat = spa_kb_judge(module, name, &h);
    switch (cat) {
    case SPA_KB_DATA:
        rl = "callee.data";
        break;
    case SPA_KB_UNKNOWN:
        if (!cl_classlike(name)) { v = SPA_VERDICT_SUSPICIOUS; rl = "callee.unknown_function"; }
        else rl = "callee.unknown_class";
        break;
    case SPA_KB_REFLECTION: {
        /* trampolines the static classifier resolves; by name alone they are only
         * suspicious (bound methods pickle as builtins.getattr), what they reach is
         * itself looked up through find_class and judged then */
        static const char *const tramp[][2] = {
            {"builtins", "getattr"}, {"operator", "attrgetter"},
            {"operator", "itemgetter"}, {"operator", "methodcaller"}, {"operator", "getitem"},
            {"multiprocessing.pool", "mapstar"}, {"multiprocessing.pool", "starmapstar"},
        };
        char cm[160];
        spa_kb_canon(module, cm, sizeof cm);
        v = SPA_VERDICT_MALICIOUS;
        rl = cl_cat_rule(cat);
        for (size_t i = 0; i < sizeof tramp / sizeof *tramp; i++)
            if (!strcmp(cm, tramp[i][0]) && !strcmp(name, tramp[i][1])) { v = SPA_VERDICT_SUSPICIOUS; rl = "reflect.trampoline"; }
        if (spa_kb_partial(module, name)) { v = SPA_VERDICT_SUSPICIOUS; rl = "reflect.trampoline"; }
        break;
    }
    case SPA_KB_DESERIALIZE:
        /* library reconstructors of their own serialised form (@nested): the nested
         * content is itself unpickled through find_class and judged there; any other
         * deserializer is a nested load chosen by the file's author */
        v = spa_kb_nested_loader(module, name) ? SPA_VERDICT_SUSPICIOUS : SPA_VERDICT_MALICIOUS;
        rl = "callee.deserialize";
        break;
    case SPA_KB_FILE_WRITE:
        if (!spa_kb_typeref(module, name)) goto dangerous;
        /* a type benign pickles hand to a reconstructor (numpy.memmap) */
        __attribute__((fallthrough));
    case SPA_KB_STDLIB_OTHER:
        /* by name it is a reference, not a call: the static classifier flags calls of these,
         * not references (os.path.join handed to the program is harmless) */
        v = SPA_VERDICT_SUSPICIOUS;
        rl = "global.reference";
        break;
    default:
    dangerous:
        v = SPA_VERDICT_MALICIOUS;
        rl = h.how == SPA_KBH_EFFECT ? "global.import_effect" : cl_cat_rule(cat);
        break;
    }
    if (rule) *rule = rl;
    spa_fmt(msg, msgsz, "%s.%s: %s (KB %s)", module, name, spa_kbcat_name(cat), h.key[0] ? h.key : "-");
    return v;
}
