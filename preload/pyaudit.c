/* pyaudit.c - layer 2: a PEP 578 audit hook inside the preload. It judges each
 * pickle.find_class(module, name) with the analyzer's knowledge base, and while
 * an unpickle is in progress on the current thread it vetoes process spawns,
 * code execution, network, native loads, file writes and foreign imports.
 * No Python.h, no libpython link: every C-API function comes from dlsym. */
#include "pyaudit.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pyapi.h"
#include "spa.h"
#include "spp.h"

/* ================================================================ C-API table */
#define PYA_FN_PTR(ret, name, params, req) static ret(*py_##name) params;
SPP_PYAPI_FUNCS(PYA_FN_PTR)
#undef PYA_FN_PTR
#define PYA_DATA_PTR(name, req) static spp_pyobj **py_##name;
SPP_PYAPI_DATA(PYA_DATA_PTR)
#undef PYA_DATA_PTR

static atomic_int pya_state; /* 0 not tried, 1 trying, 2 registered, 3 off */

/* Py_FinalizeEx drops every audit hook (_PySys_ClearAuditHooks), so a program
 * that embeds Python and initialises it again would run unguarded. After the
 * hooks are cleared, Py_FinalizeEx calls the Py_AtExit functions with the
 * runtime no longer initialised: there we add the hook again, exactly as in
 * the constructor, and the next Py_Initialize keeps it. Py_AtExit entries are
 * consumed, so each interpreter life arms it once, from its first event. */
static atomic_int pya_rearm_armed;

/* Resolve the whole table; false when a required function is missing (an
 * interpreter we do not support, or not Python at all). */
static bool pya_resolve(void) {
    bool ok = true;
#define PYA_FN_RES(ret, name, params, req)                              \
    *(void **)(&py_##name) = dlsym(RTLD_DEFAULT, #name);                \
    if ((req) && !py_##name) ok = false;
    SPP_PYAPI_FUNCS(PYA_FN_RES)
#undef PYA_FN_RES
#define PYA_DATA_RES(name, req)                                         \
    py_##name = (spp_pyobj **)dlsym(RTLD_DEFAULT, #name);               \
    if ((req) && !py_##name) ok = false;
    SPP_PYAPI_DATA(PYA_DATA_RES)
#undef PYA_DATA_RES
    return ok;
}

/* ================================================================ per-thread scope */
/* "An unpickle is in progress on this thread" is anchored on the Python frame
 * that called the load (found at the first pickle.find_class) and the
 * instruction it was executing (f_lasti). The scope is live while that frame
 * is still on this thread's frame chain at that same instruction. Frame and
 * code are compared by identity only (no reference is kept, so a finished
 * load never pins its caller's locals). */
typedef struct pya_tls {
    int busy;                      /* re-entrancy: events raised by our own calls pass */
    const spp_pyobj *anchor;       /* frame that called the load, NULL = no scope */
    const spp_pyobj *anchor_code;  /* its code object */
    long anchor_lasti;
    bool ipc;                      /* the load is multiprocessing's own IPC (trusted) */
    bool trusted;                  /* fed from a file the policy trusts (see pya_scope_trusted) */
    uint64_t trust_ident;          /* that file's identity (spp_trust_check) */
    char pending[SPP_PYA_NAME_MAX];/* module of the last find_class (about to be imported) */
    char pkgs[SPP_PYA_MAX_PKGS][SPP_PYA_PKG_MAX]; /* top-level packages resolved in scope */
    unsigned npkgs;
    uint32_t *imports;             /* hashes of imports allowed in this scope (lazy, malloc) */
    unsigned nimports;
    bool unbound;                  /* no scope: this find_class is not the trusted file's */
} pya_tls;

static __thread pya_tls pya_t __attribute__((tls_model("initial-exec")));

/* The exception we raise: safepickle.SafePickleBlocked(PermissionError,
 * pickle.UnpicklingError), created once per interpreter. */
static spp_pyobj *pya_exc;
static void *pya_exc_interp;

/* ================================================================ small helpers */
static void pya_copy(char *dst, size_t n, const char *src) {
    if (!n) return;
    size_t l = src ? strnlen(src, n - 1) : 0;
    if (l) memcpy(dst, src, l);
    dst[l] = 0;
}

static bool pya_ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && memcmp(s + a - b, suf, b) == 0;
}

/* Text of a str (UTF-8) or bytes object into buf, control characters
 * replaced; false (no exception left behind) for any other object. *exact
 * (optional) says whether buf holds the whole text unaltered. */
static bool pya_utf8x(spp_pyobj *o, char *buf, size_t n, bool *exact) {
    buf[0] = 0;
    if (exact) *exact = false;
    if (!o) return false;
    spp_pyssize len = 0;
    bool is_bytes = false;
    const char *s = py_PyUnicode_AsUTF8AndSize(o, &len);
    if (!s) {
        py_PyErr_Clear();
        char *b = NULL;
        if (!py_PyBytes_AsStringAndSize || py_PyBytes_AsStringAndSize(o, &b, &len) != 0 || !b) {
            py_PyErr_Clear();
            return false;
        }
        s = b;
        is_bytes = true;
    }
    size_t l = (size_t)len < n - 1 ? (size_t)len : n - 1;
    bool same = l == (size_t)len;
    if (!same && !is_bytes) /* never cut a UTF-8 sequence: records stay valid UTF-8 */
        while (l > 0 && ((unsigned char)s[l] & 0xC0) == 0x80) l--;
    memcpy(buf, s, l);
    buf[l] = 0;
    for (size_t i = 0; i < l; i++) { /* one line, valid UTF-8 (bytes: ASCII only) */
        unsigned char c = (unsigned char)buf[i];
        if (c < 0x20 || c == 0x7f || (is_bytes && c >= 0x80)) { buf[i] = '?'; same = false; }
    }
    if (exact) *exact = same;
    return true;
}

static bool pya_utf8(spp_pyobj *o, char *buf, size_t n) { return pya_utf8x(o, buf, n, NULL); }

static spp_pyobj *pya_arg(spp_pyobj *args, spp_pyssize i) {
    if (!args || py_PyTuple_Size(args) <= i) { py_PyErr_Clear(); return NULL; }
    spp_pyobj *o = py_PyTuple_GetItem(args, i); /* borrowed */
    if (!o) py_PyErr_Clear();
    return o;
}

static bool pya_is_none(spp_pyobj *o) {
    static spp_pyobj *none;
    if (!none) none = (spp_pyobj *)dlsym(RTLD_DEFAULT, "_Py_NoneStruct");
    return o == none;
}

/* ================================================================ frames */
/* All return new references (or NULL with no exception left behind). */
static spp_pyobj *pya_getattr(spp_pyobj *o, const char *name) {
    spp_pyobj *r = py_PyObject_GetAttrString(o, name);
    if (!r) py_PyErr_Clear();
    return r;
}

static spp_pyobj *pya_back(spp_pyobj *f) {
    spp_pyobj *b = py_PyFrame_GetBack ? py_PyFrame_GetBack(f) : pya_getattr(f, "f_back");
    if (b && pya_is_none(b)) { py_Py_DecRef(b); b = NULL; }
    return b;
}

static spp_pyobj *pya_code(spp_pyobj *f) {
    return py_PyFrame_GetCode ? py_PyFrame_GetCode(f) : pya_getattr(f, "f_code");
}

static long pya_lasti(spp_pyobj *f) {
    if (py_PyFrame_GetLasti) return py_PyFrame_GetLasti(f);
    spp_pyobj *v = pya_getattr(f, "f_lasti");
    if (!v) return -2;
    long l = py_PyLong_AsLong(v);
    if (l == -1 && py_PyErr_Occurred()) { py_PyErr_Clear(); l = -2; }
    py_Py_DecRef(v);
    return l;
}

typedef struct pya_where {
    char file[SPP_PYA_PATH_MAX];
    char func[SPP_PYA_PKG_MAX];
    int line;
} pya_where;

/* File and function of a frame's code; line of the frame. */
static void pya_describe(spp_pyobj *f, pya_where *w) {
    w->file[0] = w->func[0] = 0;
    w->line = 0;
    if (!f) return;
    spp_pyobj *code = pya_code(f);
    if (code) {
        spp_pyobj *s = pya_getattr(code, "co_filename");
        if (s) { pya_utf8(s, w->file, sizeof w->file); py_Py_DecRef(s); }
        s = pya_getattr(code, "co_name");
        if (s) { pya_utf8(s, w->func, sizeof w->func); py_Py_DecRef(s); }
        py_Py_DecRef(code);
    }
    w->line = py_PyFrame_GetLineNumber(f);
}

/* The __name__ of the module a frame's code belongs to (its globals). */
static void pya_frame_module(spp_pyobj *f, char *buf, size_t n) {
    buf[0] = 0;
    spp_pyobj *g = pya_getattr(f, "f_globals");
    if (!g) return;
    spp_pyobj *v = py_PyMapping_GetItemString(g, "__name__");
    if (v) {
        pya_utf8(v, buf, n);
        py_Py_DecRef(v);
    } else {
        py_PyErr_Clear();
    }
    py_Py_DecRef(g);
}

/* Frames of the unpickler itself: a find_class override (torch's, yours) and
 * the pure-Python unpickler of the stdlib module `pickle` (used by joblib and
 * pandas' compat unpickler), recognised by module name, not by file name
 * (pandas/io/pickle.py is the caller, not the unpickler). The frame above them
 * is the one that called load(). */
static bool pya_is_unpickler_frame(spp_pyobj *f, const pya_where *w) {
    if (strcmp(w->func, "find_class") == 0) return true;
    if (!pya_ends_with(w->file, "pickle.py")) return false;
    char mod[SPP_PYA_PKG_MAX];
    pya_frame_module(f, mod, sizeof mod);
    return strcmp(mod, "pickle") == 0;
}

/* Library code (stdlib, site-packages, frozen modules): skipped when naming
 * the user's line that led to the load. */
static bool pya_is_library_file(const char *file) {
    return file[0] == '<' || strstr(file, "/site-packages/") || strstr(file, "/dist-packages/") ||
           strstr(file, "/lib/python3");
}

/* The frame that called the load: walk up from the current frame past the
 * unpickler's own frames. New reference or NULL (no Python frame at all,
 * e.g. a C program calling pickle.loads through the C API). */
static spp_pyobj *pya_find_anchor(void) {
    spp_pyobj *f = py_PyEval_GetFrame(); /* borrowed */
    if (!f) return NULL;
    py_Py_IncRef(f);
    for (int i = 0; f && i < SPP_PYA_MAX_FRAMES; i++) {
        pya_where w;
        pya_describe(f, &w);
        if (!pya_is_unpickler_frame(f, &w)) return f;
        spp_pyobj *b = pya_back(f);
        py_Py_DecRef(f);
        f = b;
    }
    if (f) py_Py_DecRef(f);
    return NULL;
}

/* Is this frame the entry of a real import (importlib's _find_and_load)? */
static bool pya_is_import_frame(const pya_where *w) {
    return strncmp(w->file, "<frozen importlib._bootstrap", 28) == 0 &&
           strcmp(w->func, "_find_and_load") == 0;
}

/* The module a `_find_and_load(name, import_)` frame is importing (its first
 * argument, read from the frame's locals). */
static void pya_import_frame_name(spp_pyobj *f, char *buf, size_t n) {
    buf[0] = 0;
    spp_pyobj *loc = pya_getattr(f, "f_locals"); /* a dict, or a proxy on 3.13 */
    if (!loc) return;
    spp_pyobj *v = py_PyMapping_GetItemString(loc, "name");
    if (v) {
        pya_utf8(v, buf, n);
        py_Py_DecRef(v);
    } else {
        py_PyErr_Clear();
    }
    py_Py_DecRef(loc);
}

/* Walk the current thread's frames up to the anchor. If in_import is given,
 * it is set when an import is executing between the event and the anchor, and
 * imp (SPP_PYA_NAME_MAX bytes) receives the module the innermost one imports:
 * the event belongs to that module's body. Without in_import the walk compares
 * identities only (find_class path). */
static bool pya_scope_live(bool *in_import, char *imp) {
    pya_tls *t = &pya_t;
    bool dummy = true;
    if (!in_import) in_import = &dummy; /* true: never describe frames */
    else *in_import = false;
    if (imp) imp[0] = 0;
    if (!t->anchor) return false;
    spp_pyobj *f = py_PyEval_GetFrame();
    if (!f) return false;
    py_Py_IncRef(f);
    bool live = false;
    for (int i = 0; f && i < SPP_PYA_MAX_FRAMES; i++) {
        if (f == t->anchor) {
            spp_pyobj *code = pya_code(f);
            live = code == t->anchor_code && pya_lasti(f) == t->anchor_lasti;
            if (code) py_Py_DecRef(code);
            break;
        }
        if (!*in_import) {
            pya_where w;
            pya_describe(f, &w);
            if (pya_is_import_frame(&w)) {
                *in_import = true;
                if (imp) pya_import_frame_name(f, imp, SPP_PYA_NAME_MAX);
            }
        }
        spp_pyobj *b = pya_back(f);
        py_Py_DecRef(f);
        f = b;
    }
    if (f) py_Py_DecRef(f);
    if (!live || in_import == &dummy) *in_import = false;
    return live;
}

/* Imports announced in this scope: every module whose `import` audit event
 * was allowed. An event from a module body counts as part of an import only
 * if that module was announced, so importlib.import_module (which raises no
 * `import` event) cannot be used to run a module body unseen. Open
 * addressing over 32-bit FNV-1a hashes (0 = empty). */
static uint32_t pya_hash(const char *s) {
    uint32_t x = 2166136261u;
    for (; *s; s++) x = (x ^ (uint8_t)*s) * 16777619u;
    return x ? x : 1;
}

static pthread_key_t pya_imports_key; /* frees a thread's set when it exits */
static pthread_once_t pya_imports_once = PTHREAD_ONCE_INIT;
static void pya_imports_key_make(void) { (void)pthread_key_create(&pya_imports_key, free); }

static void pya_imports_add(const char *mod) {
    pya_tls *t = &pya_t;
    if (!t->imports) {
        t->imports = calloc(SPP_PYA_IMPORTS_MAX, sizeof *t->imports);
        if (!t->imports) return; /* then nothing counts as announced: strict */
        pthread_once(&pya_imports_once, pya_imports_key_make);
        (void)pthread_setspecific(pya_imports_key, t->imports);
    }
    if (t->nimports >= SPP_PYA_IMPORTS_MAX / 4 * 3) return; /* full: later imports are strict */
    uint32_t h = pya_hash(mod);
    for (uint32_t i = h;; i++) {
        uint32_t *slot = &t->imports[i & (SPP_PYA_IMPORTS_MAX - 1)];
        if (*slot == h) return;
        if (!*slot) { *slot = h; t->nimports++; return; }
    }
}

static bool pya_imports_has(const char *mod);

/* Is `mod` (a module whose body is executing) part of a legitimate import?
 * Either it was announced itself, or it is a submodule of a package that was
 * announced in this unpickle or was already imported before it: libraries
 * load their own submodules lazily through importlib.import_module (scipy's
 * module __getattr__, zstandard's backends), which raises no `import` event.
 * A top-level module nothing announced (importlib.import_module("evil") from
 * a gadget) is not. */
static bool pya_body_announced(const char *mod) {
    if (pya_imports_has(mod)) return true;
    size_t top = strcspn(mod, ".");
    if (top == 0 || !mod[top] || top >= SPP_PYA_PKG_MAX) return false;
    char pkg[SPP_PYA_PKG_MAX];
    memcpy(pkg, mod, top);
    pkg[top] = 0;
    if (pya_imports_has(pkg)) return true;
    spp_pyobj *name = py_PyUnicode_FromString(pkg);
    spp_pyobj *m = name ? py_PyImport_GetModule(name) : NULL; /* sys.modules lookup only */
    if (name) py_Py_DecRef(name);
    bool loaded = m && !pya_is_none(m);
    if (m) py_Py_DecRef(m);
    py_PyErr_Clear();
    return loaded;
}

static bool pya_imports_has(const char *mod) {
    const pya_tls *t = &pya_t;
    if (!t->imports || !mod[0]) return false;
    uint32_t h = pya_hash(mod);
    for (uint32_t i = h;; i++) {
        uint32_t v = t->imports[i & (SPP_PYA_IMPORTS_MAX - 1)];
        if (v == h) return true;
        if (!v) return false;
    }
}

static void pya_scope_clear(void) {
    pya_tls *t = &pya_t;
    t->ipc = false;
    t->trusted = false;
    t->trust_ident = 0;
    spp_feed.scope = false;
    if (t->imports && t->nimports) memset(t->imports, 0, SPP_PYA_IMPORTS_MAX * sizeof *t->imports);
    t->nimports = 0;
    t->anchor = t->anchor_code = NULL;
    t->anchor_lasti = 0;
    t->pending[0] = 0;
    t->npkgs = 0;
}

static void pya_scope_note_module(const char *module) {
    pya_tls *t = &pya_t;
    pya_copy(t->pending, sizeof t->pending, module);
    size_t top = strcspn(module, ".");
    if (top == 0 || top >= SPP_PYA_PKG_MAX) return;
    for (unsigned i = 0; i < t->npkgs; i++)
        if (strlen(t->pkgs[i]) == top && memcmp(t->pkgs[i], module, top) == 0) return;
    if (t->npkgs < SPP_PYA_MAX_PKGS) {
        memcpy(t->pkgs[t->npkgs], module, top);
        t->pkgs[t->npkgs][top] = 0;
        t->npkgs++;
    }
}

/* multiprocessing's own IPC: the parent and its workers exchange pickles of
 * tasks and results (functions by reference such as multiprocessing.pool.
 * mapstar, fds, shared-memory tensors) over pipes the program itself created,
 * and with the spawn and forkserver start methods a child receives its
 * process object from its parent. These loads are made by the stdlib modules
 * below; judging them would break multiprocessing.Pool, concurrent.futures and
 * torch DataLoader workers, so they are trusted (the anchor's module decides).
 * Limit: multiprocessing.connection also serves Listener/Client connections
 * (authenticated with an authkey). */
static const char *const pya_ipc_callers[] = {"multiprocessing.queues", "multiprocessing.connection",
                                              "multiprocessing.spawn", "multiprocessing.forkserver"};

static bool pya_is_ipc_anchor(spp_pyobj *a) {
    char mod[SPP_PYA_PKG_MAX];
    pya_frame_module(a, mod, sizeof mod);
    for (size_t i = 0; i < sizeof pya_ipc_callers / sizeof pya_ipc_callers[0]; i++)
        if (strcmp(mod, pya_ipc_callers[i]) == 0) return true;
    return false;
}

/* Open (or continue) the unpickle scope at a pickle.find_class event. */
static void pya_scope_enter(void) {
    pya_tls *t = &pya_t;
    if (t->anchor && pya_scope_live(NULL, NULL)) return; /* nested load or next global */
    pya_scope_clear();
    spp_pyobj *a = pya_find_anchor();
    if (!a) return; /* no Python frame: find_class enforcement only */
    spp_pyobj *code = pya_code(a);
    t->anchor = a;
    t->anchor_code = code;
    t->anchor_lasti = pya_lasti(a);
    t->ipc = pya_is_ipc_anchor(a);
    /* The scope is fed from a trusted file when this thread read bytes of a
     * file the policy trusts while no scope was set, and that fd still holds
     * that content; the pending source is consumed here, by one scope only. */
    uint64_t fed = spp_feed.ent & ~SPP_FD_TAGS;
    t->trusted = spp_feed_take();
    t->trust_ident = t->trusted ? fed : 0;
    spp_feed.scope = true;
    if (code) py_Py_DecRef(code); /* identity only; the frame keeps it alive */
    py_Py_DecRef(a);              /* the interpreter frame owns the frame object */
}

/* Is the current unpickle fed from a trusted file? With a scope: its flag,
 * dropped for good once non-trusted pickle-bearing bytes were read on this
 * thread since it opened (a nested load of another file). Without a scope
 * (runtime_behaviour off, or no Python frame): a still-valid pending trusted
 * source, not consumed. */
static bool pya_scope_trusted(void) {
    pya_tls *t = &pya_t;
    if (!t->anchor) return !spp_feed.scope && !t->unbound && spp_feed_peek();
    if (t->trusted && spp_feed.taint) t->trusted = false;
    return t->trusted;
}

/* Trust is bound to content: a trusted unpickle may resolve only globals the
 * trusted file's own pickles import (kept when its scan was judged). Any other
 * global means these bytes are not that file's, and the scope's trust ends
 * for good (without a scope, this find_class is judged as untrusted). Where
 * the file's names are not known (spp_trust_check -1) trust is not bound. */
static void pya_trust_bind(const char *module, const char *name, bool exact) {
    pya_tls *t = &pya_t;
    if (!pya_scope_trusted()) return;
    uint64_t ident = t->anchor ? t->trust_ident : (spp_feed.ent & ~SPP_FD_TAGS);
    int c = spp_trust_check(ident, module, name);
    if (c == 1 && !exact) c = 0; /* a name we had to cut is not one the file imports */
    if (c != 0) return;
    if (t->anchor) t->trusted = false;
    else t->unbound = true;
}

/* ================================================================ reporting */
/* Where the load was called from: `from` (the scope's anchor, or for a
 * find_class without a scope the first frame above the unpickler; a new
 * reference, consumed) and the first non-library frame above it. */
static void pya_locate(spp_pyobj *from, pya_where *site, pya_where *user) {
    memset(site, 0, sizeof *site);
    memset(user, 0, sizeof *user);
    spp_pyobj *f = from;
    if (!f) return;
    pya_describe(f, site);
    for (int i = 0; f && i < SPP_PYA_MAX_FRAMES; i++) {
        pya_where w;
        pya_describe(f, &w);
        if (!pya_is_library_file(w.file)) { *user = w; break; }
        spp_pyobj *b = pya_back(f);
        py_Py_DecRef(f);
        f = b;
    }
    if (f) py_Py_DecRef(f);
    if (!user->file[0]) *user = *site;
}

/* The exception class, created lazily under the GIL for this interpreter. */
static spp_pyobj *pya_exception(void) {
    void *interp = py_PyInterpreterState_Get ? py_PyInterpreterState_Get()
                   : py__PyInterpreterState_Get ? py__PyInterpreterState_Get() : NULL;
    if (pya_exc && interp == pya_exc_interp) return pya_exc;
    spp_pyobj *perm = *py_PyExc_PermissionError;
    spp_pyobj *bases = NULL, *unpick = NULL;
    spp_pyobj *name = py_PyUnicode_FromString("_pickle");
    spp_pyobj *mod = name ? py_PyImport_GetModule(name) : NULL; /* no import */
    if (name) py_Py_DecRef(name);
    if (mod && !pya_is_none(mod)) unpick = pya_getattr(mod, "UnpicklingError");
    if (mod) py_Py_DecRef(mod);
    py_PyErr_Clear();
    if (unpick) bases = py_PyTuple_Pack(2, perm, unpick);
    spp_pyobj *cls = py_PyErr_NewException("safepickle.SafePickleBlocked", bases ? bases : perm, NULL);
    if (bases) py_Py_DecRef(bases);
    if (unpick) py_Py_DecRef(unpick);
    if (!cls) { py_PyErr_Clear(); return perm; }
    /* A class made for another interpreter is kept (never freed): a handful of
     * bytes per sub-interpreter, and no object crosses interpreters. */
    pya_exc = cls;
    pya_exc_interp = interp;
    return cls;
}

/* Write the audit record and the stderr line (spp_report, shared with layer
 * 1), and raise the exception when the action is a block. The Python location
 * goes in the event's path ("<python FILE:LINE>", the user's line that led to
 * the load) and detail (the frame that called the unpickler, and the event's
 * argument). Returns the hook's result. */
static int pya_decide(spa_action act, spa_verdict v, const char *what, const char *event,
                         const char *arg, const char *rule, const char *msg, bool trusted) {
    if (trusted) {
        /* A veto skipped for a trusted file: an audit record in a FILE only
         * (stderr stays quiet for a load the user chose to trust). */
        const char *dest = spp_audit_dest();
        if (!dest || !strcmp(dest, "stderr") || !strcmp(dest, "stdout")) return 0;
        act = SPA_ACT_ALLOW;
    } else if (act == SPA_ACT_ALLOW) {
        return 0;
    }
    pya_where site, user, here;
    /* The scope's anchor is on the live chain (just checked), so it may be
     * used as a borrowed frame for the duration of this call. */
    spp_pyobj *from = (spp_pyobj *)pya_t.anchor;
    if (from) py_Py_IncRef(from);
    else from = pya_find_anchor();
    pya_locate(from, &site, &user);
    pya_describe(py_PyEval_GetFrame(), &here);
    char where[SPP_PYA_PATH_MAX + 32], detail[3 * SPP_PYA_PATH_MAX + SPP_PYA_DETAIL_MAX];
    if (user.file[0]) snprintf(where, sizeof where, "<python %s:%d>", user.file, user.line);
    else snprintf(where, sizeof where, "<python: no frame>");
    snprintf(detail, sizeof detail, "%s%s at %s:%d in %s; load called at %s:%d in %s%s%s",
             trusted ? "allowed: the unpickle is fed from a file the policy trusts; " : "", what,
             here.file[0] ? here.file : "?", here.line, here.func[0] ? here.func : "?",
             site.file[0] ? site.file : "?", site.line, site.func[0] ? site.func : "?",
             arg ? "; argument: " : "", arg ? arg : "");
    char loc[SPP_PYA_PATH_MAX + 32];
    pya_copy(loc, sizeof loc, where + 1); /* without the angle brackets */
    loc[strcspn(loc, ">")] = 0;
    spa_reason reason = {.severity = v, .rule = rule, .msg = msg, .loc = loc, .off = 0};
    spp_event ev = {
        .layer = "audit_hook",
        .call = event,
        .path = where,
        .fd = -1,
        .verdict = v,
        .action = act,
        .reasons = &reason,
        .n_reasons = 1,
        .detail = detail,
        .format = "python",
        .cached = false,
        .trusted = trusted,
    };
    if (trusted) {
        spp_audit_write(&ev);
        return 0;
    }
    spp_report(&ev);
    if (act != SPA_ACT_BLOCK) return 0;
    char text[1024];
    snprintf(text, sizeof text, "safepickle: blocked %s (%s)%s%s at %s:%d", what, rule,
             msg && msg[0] ? ": " : "", msg ? msg : "",
             user.file[0] ? user.file : "<no python frame>", user.line);
    py_PyErr_SetString(pya_exception(), text);
    return -1;
}

/* The action the policy takes for a finding of this layer. */
static spa_action pya_action(const spa_policy *p, spa_action want) {
    if (p->mode == SPA_MODE_OFF) return SPA_ACT_ALLOW;
    if (p->mode == SPA_MODE_AUDIT && want == SPA_ACT_BLOCK) return SPA_ACT_WARN;
    return want;
}

/* ================================================================ judge cache */
/* spa_judge_global walks the knowledge base; a model resolves the same few
 * globals over and over (once per GLOBAL opcode without memo), so verdicts are
 * cached by (module, name) for the life of the process (the policy does not
 * change). Direct-mapped; a collision just judges again. The mutex is
 * uncontended under the GIL and keeps free-threaded builds correct. */
#define SPP_PYA_JCACHE_SLOTS 1024 /* power of two */
#define SPP_PYA_JKEY_MAX 160      /* longer module+name pairs are not cached */

typedef struct pya_jslot {
    char key[SPP_PYA_JKEY_MAX]; /* module '\0' name '\0', key[0] == 0: empty */
    uint8_t verdict;            /* spa_verdict */
    uint8_t watched;            /* stdlib_other without a deny rule (see find_class) */
} pya_jslot;

static pya_jslot pya_jcache[SPP_PYA_JCACHE_SLOTS];
static pthread_mutex_t pya_jlock = PTHREAD_MUTEX_INITIALIZER;

static bool pya_jkey(const char *module, const char *name, char *key, size_t *klen, uint32_t *h) {
    size_t a = strlen(module), b = strlen(name);
    if (a == 0 || a + b + 2 > SPP_PYA_JKEY_MAX) return false; /* empty slots are all zero */
    memcpy(key, module, a + 1);
    memcpy(key + a + 1, name, b + 1);
    *klen = a + b + 2;
    uint32_t x = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < *klen; i++) x = (x ^ (uint8_t)key[i]) * 16777619u;
    *h = x;
    return true;
}

/* The verdict on a name, and whether it is only "watched" (stdlib_other). */
static spa_verdict pya_judge(const spa_policy *p, const char *module, const char *name,
                             bool *watched) {
    char key[SPP_PYA_JKEY_MAX];
    size_t klen;
    uint32_t h;
    bool cacheable = pya_jkey(module, name, key, &klen, &h);
    pya_jslot *slot = cacheable ? &pya_jcache[h & (SPP_PYA_JCACHE_SLOTS - 1)] : NULL;
    if (slot) {
        pthread_mutex_lock(&pya_jlock);
        bool hit = memcmp(slot->key, key, klen) == 0;
        spa_verdict v = (spa_verdict)slot->verdict;
        *watched = slot->watched;
        pthread_mutex_unlock(&pya_jlock);
        if (hit) return v;
    }
    const char *rule = NULL;
    char msg[8];
    spa_verdict v = spa_judge_global(p, module, name, &rule, msg, sizeof msg);
    *watched = v == SPA_VERDICT_MALICIOUS && !strchr(name, '.') &&
               spa_kb_lookup(module, name) == SPA_KB_STDLIB_OTHER &&
               spa_policy_global_rule(p, module, name) != -1;
    if (slot) {
        pthread_mutex_lock(&pya_jlock);
        memcpy(slot->key, key, klen);
        slot->verdict = (uint8_t)v;
        slot->watched = *watched;
        pthread_mutex_unlock(&pya_jlock);
    }
    return v;
}

/* ================================================================ find_class */
/* Which verdicts are enforced on a name alone (runtime sees no arguments and
 * cannot tell a reference from a call):
 *  - MALICIOUS takes the policy's action for that verdict: process, code
 *    execution, network, file writes, native code, imports, state mutation,
 *    explicit deny rules, dotted paths through any of them. Even a mere
 *    reference is refused: a reference can be called after the load, e.g.
 *    functools.partial(os.system, cmd) kept in a checkpoint's callbacks.
 *  - except stdlib_other (a stdlib callable outside the data-safe set, e.g.
 *    math.sqrt), which the knowledge base calls malicious only when called
 *    with attacker arguments: while the behaviour veto watches this unpickle,
 *    its resolution passes (threats.md D: a reference to a function loads)
 *    and what the call does is judged by its audit events.
 *  - SUSPICIOUS (reflection such as builtins.getattr for bound methods,
 *    functools.partial, unknown functions) and SAFE pass: a strict policy
 *    blocks those in layer 1, where the arguments are visible.
 *  - unknown classes (user code) pass. */
static int pya_on_find_class(const spa_policy *p, spp_pyobj *args) {
    char module[SPP_PYA_NAME_MAX], name[SPP_PYA_NAME_MAX];
    bool exact_m, exact_n;
    if (!pya_utf8x(pya_arg(args, 0), module, sizeof module, &exact_m) ||
        !pya_utf8x(pya_arg(args, 1), name, sizeof name, &exact_n))
        return 0; /* the unpickler itself rejects non-str names */
    if (p->runtime_behaviour) {
        pya_scope_enter();
        pya_scope_note_module(module);
        if (pya_t.ipc) return 0;
    } else {
        spp_pyobj *a = pya_find_anchor();
        bool ipc = a && pya_is_ipc_anchor(a);
        if (a) py_Py_DecRef(a);
        if (ipc) return 0;
    }
    pya_t.unbound = false;
    pya_trust_bind(module, name, exact_m && exact_n);
    if (!exact_m || !exact_n) {
        /* Longer than SPP_PYA_NAME_MAX or holding control characters: what we
         * could judge is not what the unpickler resolves. A limit is a
         * verdict: the policy's on_limit action (block by default). */
        spa_action act = pya_action(p, p->on_limit);
        if (act == SPA_ACT_ALLOW) return 0;
        char what[2 * SPP_PYA_NAME_MAX + 32], msg[128];
        snprintf(what, sizeof what, "pickle global %s.%s", module, name);
        snprintf(msg, sizeof msg, "global name longer than %d bytes or with control characters: not judgeable",
                 SPP_PYA_NAME_MAX - 1);
        return pya_decide(act, SPA_VERDICT_UNSCANNABLE, what, "pickle.find_class", NULL, "runtime.limit", msg,
                             pya_scope_trusted());
    }
    bool watched;
    spa_verdict v = pya_judge(p, module, name, &watched);
    if (v != SPA_VERDICT_MALICIOUS) return 0;
    if (watched && p->runtime_behaviour && pya_t.anchor)
        return 0; /* its effects meet the behaviour veto */
    spa_action act = pya_action(p, p->on_verdict[v]);
    bool trusted = pya_scope_trusted();
    if (act == SPA_ACT_ALLOW && !trusted) return 0;
    const char *rule = NULL; /* judged again for the message: blocks are rare */
    char msg[256];
    msg[0] = 0;
    spa_judge_global(p, module, name, &rule, msg, sizeof msg);
    char what[2 * SPP_PYA_NAME_MAX + 32];
    snprintf(what, sizeof what, "pickle global %s.%s", module, name);
    return pya_decide(act, v, what, "pickle.find_class", NULL, rule ? rule : "runtime.global",
                         msg, trusted);
}

/* ================================================================ behaviour */
typedef enum pya_cat {
    PYA_PROCESS, PYA_CODE, PYA_NETWORK, PYA_NATIVE, PYA_FILE_WRITE, PYA_OPEN, PYA_IMPORT, PYA_STATE
} pya_cat;

typedef struct pya_evrule {
    const char *event;
    pya_cat cat;
    const char *rule;
} pya_evrule;

/* Audit events vetoed while an unpickle is in progress (data, not code). */
static const pya_evrule pya_events[] = {
    {"os.system", PYA_PROCESS, "runtime.process_spawn"},
    {"os.exec", PYA_PROCESS, "runtime.process_spawn"},
    {"os.posix_spawn", PYA_PROCESS, "runtime.process_spawn"},
    {"os.spawn", PYA_PROCESS, "runtime.process_spawn"},
    {"os.fork", PYA_PROCESS, "runtime.process_spawn"},
    {"os.forkpty", PYA_PROCESS, "runtime.process_spawn"},
    {"os.startfile", PYA_PROCESS, "runtime.process_spawn"},
    {"os.kill", PYA_PROCESS, "runtime.process_signal"},
    {"os.killpg", PYA_PROCESS, "runtime.process_signal"},
    {"subprocess.Popen", PYA_PROCESS, "runtime.process_spawn"},
    {"exec", PYA_CODE, "runtime.code_exec"},
    {"compile", PYA_CODE, "runtime.code_exec"},
    {"code.__new__", PYA_CODE, "runtime.code_exec"},
    {"marshal.loads", PYA_CODE, "runtime.code_exec"},
    {"marshal.load", PYA_CODE, "runtime.code_exec"},
    {"socket.connect", PYA_NETWORK, "runtime.network"},
    {"socket.bind", PYA_NETWORK, "runtime.network"},
    {"socket.sendto", PYA_NETWORK, "runtime.network"},
    {"socket.sendmsg", PYA_NETWORK, "runtime.network"},
    {"socket.getaddrinfo", PYA_NETWORK, "runtime.network"},
    {"socket.gethostbyname", PYA_NETWORK, "runtime.network"},
    {"urllib.Request", PYA_NETWORK, "runtime.network"},
    {"http.client.connect", PYA_NETWORK, "runtime.network"},
    {"ftplib.connect", PYA_NETWORK, "runtime.network"},
    {"smtplib.connect", PYA_NETWORK, "runtime.network"},
    {"webbrowser.open", PYA_NETWORK, "runtime.network"},
    {"ctypes.dlopen", PYA_NATIVE, "runtime.native_load"},
    {"ctypes.dlsym", PYA_NATIVE, "runtime.native_load"},
    {"open", PYA_OPEN, "runtime.file_write"},
    {"os.remove", PYA_FILE_WRITE, "runtime.file_write"},
    {"os.rename", PYA_FILE_WRITE, "runtime.file_write"},
    {"os.rmdir", PYA_FILE_WRITE, "runtime.file_write"},
    {"os.mkdir", PYA_FILE_WRITE, "runtime.file_write"},
    {"os.symlink", PYA_FILE_WRITE, "runtime.file_write"},
    {"os.link", PYA_FILE_WRITE, "runtime.file_write"},
    {"os.truncate", PYA_FILE_WRITE, "runtime.file_write"},
    {"os.chmod", PYA_FILE_WRITE, "runtime.file_write"},
    {"os.chown", PYA_FILE_WRITE, "runtime.file_write"},
    {"shutil.rmtree", PYA_FILE_WRITE, "runtime.file_write"},
    {"shutil.copyfile", PYA_FILE_WRITE, "runtime.file_write"},
    {"shutil.move", PYA_FILE_WRITE, "runtime.file_write"},
    {"shutil.copytree", PYA_FILE_WRITE, "runtime.file_write"},
    {"shutil.chown", PYA_FILE_WRITE, "runtime.file_write"},
    {"shutil.make_archive", PYA_FILE_WRITE, "runtime.file_write"},
    {"shutil.unpack_archive", PYA_FILE_WRITE, "runtime.file_write"},
    {"tempfile.mkstemp", PYA_FILE_WRITE, "runtime.file_write"},
    {"tempfile.mkdtemp", PYA_FILE_WRITE, "runtime.file_write"},
    {"sqlite3.connect", PYA_FILE_WRITE, "runtime.file_write"},
    {"os.utime", PYA_FILE_WRITE, "runtime.file_write"},
    {"os.setxattr", PYA_FILE_WRITE, "runtime.file_write"},
    {"os.removexattr", PYA_FILE_WRITE, "runtime.file_write"},
    {"os.chflags", PYA_FILE_WRITE, "runtime.file_write"},
    {"pdb.Pdb", PYA_CODE, "runtime.code_exec"},
    {"os.chdir", PYA_STATE, "runtime.state_mutation"},
    {"import", PYA_IMPORT, "runtime.import"},
    {"os.putenv", PYA_STATE, "runtime.state_mutation"},
    {"os.unsetenv", PYA_STATE, "runtime.state_mutation"},
    {"sys.settrace", PYA_STATE, "runtime.state_mutation"},
    {"sys.setprofile", PYA_STATE, "runtime.state_mutation"},
    {"sys.addaudithook", PYA_STATE, "runtime.state_mutation"},
};

static const pya_evrule *pya_event_rule(const char *ev) {
    for (size_t i = 0; i < sizeof pya_events / sizeof pya_events[0]; i++)
        if (strcmp(ev, pya_events[i].event) == 0) return &pya_events[i];
    return NULL;
}

/* An "open" audit event: (path, mode-or-None, flags). Returns 0 for a read,
 * 1 for an in-place update of an existing file (O_RDWR or O_WRONLY without
 * O_CREAT/O_TRUNC/O_APPEND; mode "r+"), 2 for anything that creates,
 * truncates or appends (O_CREAT/O_TRUNC/O_APPEND; modes with w, a or x). */
static int pya_open_kind(spp_pyobj *args) {
    spp_pyobj *flags = pya_arg(args, 2);
    if (flags) {
        long fl = py_PyLong_AsLong(flags);
        if (fl == -1 && py_PyErr_Occurred()) py_PyErr_Clear();
        else if (fl & (O_CREAT | O_TRUNC | O_APPEND)) return 2;
        else if (fl & (O_WRONLY | O_RDWR)) return 1;
        else return 0;
    }
    char mode[16];
    if (!pya_utf8(pya_arg(args, 1), mode, sizeof mode)) return 0;
    if (strpbrk(mode, "wax")) return 2;
    return strchr(mode, '+') ? 1 : 0;
}

/* joblib.load(..., mmap_mode="r+") and numpy.load(..., mmap_mode="r+") map the
 * arrays of the file being loaded read-write: numpy's memmap opens an existing
 * file with mode "r+b" from inside the unpickle. That one in-place open is
 * allowed when numpy.memmap's own frame makes it; a pickle cannot reach that
 * frame by name (numpy.memmap, open_memmap and numpy.load are refused at
 * find_class). Creating or truncating a file is never allowed. */
static bool pya_open_is_numpy_memmap(void) {
    pya_where w;
    pya_describe(py_PyEval_GetFrame(), &w);
    return strcmp(w.func, "__new__") == 0 &&
           (pya_ends_with(w.file, "/numpy/core/memmap.py") || pya_ends_with(w.file, "/numpy/_core/memmap.py"));
}

/* "numpy" allows numpy and numpy.*; a pattern with glob characters is an fnmatch. */
static bool pya_module_matches(const char *pat, const char *mod) {
    if (strpbrk(pat, "*?[")) return fnmatch(pat, mod, 0) == 0;
    size_t l = strlen(pat);
    return strncmp(pat, mod, l) == 0 && (mod[l] == 0 || mod[l] == '.');
}

/* Imports the interpreter itself makes while unpickling: codec modules (the
 * unpickler decodes protocol 0-2 strings, e.g. with encoding="latin1", and the
 * codec registry imports encodings.<name> on first use) and the lazy
 * datetime.strptime helper. Stdlib only, nothing a pickle can point elsewhere. */
static const char *const pya_interp_imports[] = {"encodings", "_strptime"};

/* An import during an unpickle is allowed when it is the module a global was
 * just resolved from (or one of its parents), belongs to a top-level package
 * already resolved in this unpickle, is an interpreter import (above), or
 * matches runtime_allow_imports. */
static bool pya_import_allowed(const spa_policy *p, const char *mod) {
    const pya_tls *t = &pya_t;
    for (size_t i = 0; i < sizeof pya_interp_imports / sizeof pya_interp_imports[0]; i++)
        if (pya_module_matches(pya_interp_imports[i], mod)) return true;
    size_t l = strlen(mod);
    if (t->pending[0] && strncmp(t->pending, mod, l) == 0 &&
        (t->pending[l] == 0 || t->pending[l] == '.'))
        return true;
    size_t top = strcspn(mod, ".");
    for (unsigned i = 0; i < t->npkgs; i++)
        if (strlen(t->pkgs[i]) == top && memcmp(t->pkgs[i], mod, top) == 0) return true;
    for (size_t i = 0; i < p->runtime_allow_imports.n; i++)
        if (pya_module_matches(p->runtime_allow_imports.v[i], mod)) return true;
    return false;
}

static int pya_on_behaviour(const spa_policy *p, const pya_evrule *r, const char *ev,
                            spp_pyobj *args) {
    int open_kind = r->cat == PYA_OPEN ? pya_open_kind(args) : 0;
    if (r->cat == PYA_OPEN && open_kind == 0) { /* reads pass */
        /* ...but end a finished scope now, so the bytes this open is about to
         * read count as read between loads (a trusted file's next load). */
        if (!pya_scope_live(NULL, NULL)) pya_scope_clear();
        return 0;
    }
    bool in_import;
    char imp[SPP_PYA_NAME_MAX];
    if (!pya_scope_live(&in_import, imp)) { pya_scope_clear(); return 0; }
    if (pya_t.ipc) return 0;
    bool trusted = pya_scope_trusted();
    if (open_kind == 1 && pya_open_is_numpy_memmap()) return 0;
    char detail[SPP_PYA_DETAIL_MAX];
    detail[0] = 0;
    pya_utf8(pya_arg(args, 0), detail, sizeof detail);
    if (!detail[0] && r->cat == PYA_PROCESS) /* os.system(bytes), Popen(executable=None) */
        pya_utf8(pya_arg(args, 1), detail, sizeof detail);
    /* A module body executing under an announced import: its own imports,
     * opens, execs and native loads are how Python imports work. */
    bool body_of_announced = in_import && pya_body_announced(imp);
    if (r->cat == PYA_IMPORT) {
        if (body_of_announced || pya_import_allowed(p, detail)) {
            pya_imports_add(detail);
            return 0;
        }
    } else if (body_of_announced) {
        return 0;
    }
    char what[SPP_PYA_DETAIL_MAX + 64], msg[SPP_PYA_DETAIL_MAX + 96];
    snprintf(what, sizeof what, "%s during an unpickle", ev);
    snprintf(msg, sizeof msg, "%s(%s) called while a pickle was being loaded", ev,
             detail[0] ? detail : "...");
    if (trusted && r->cat == PYA_IMPORT) pya_imports_add(detail); /* its body is part of the load */
    return pya_decide(pya_action(p, SPA_ACT_BLOCK), SPA_VERDICT_MALICIOUS, what, ev,
                         detail[0] ? detail : NULL, r->rule, msg, trusted);
}

/* ================================================================ the hook */
static int pya_hook(const char *ev, spp_pyobj *args, void *ud);

static void pya_rearm(void) {
    atomic_store(&pya_rearm_armed, 0);
    pya_exc = NULL; /* died with the interpreter */
    pya_exc_interp = NULL;
    if (py_PySys_AddAuditHook(pya_hook, NULL) != 0) atomic_store(&pya_state, 3);
}

static int pya_hook(const char *ev, spp_pyobj *args, void *ud) {
    (void)ud;
    pya_tls *t = &pya_t;
    if (!atomic_load_explicit(&pya_rearm_armed, memory_order_relaxed) && py_Py_AtExit) {
        int no = 0;
        if (atomic_compare_exchange_strong(&pya_rearm_armed, &no, 1) && py_Py_AtExit(pya_rearm) != 0)
            atomic_store(&pya_rearm_armed, 2); /* table full: one life only (documented) */
    }
    /* Fast path: no unpickle on this thread and not a find_class. */
    if (t->busy || !ev) return 0;
    bool fc = ev[0] == 'p' && strcmp(ev, "pickle.find_class") == 0;
    bool teardown = ev[0] == 'c' && strcmp(ev, "cpython._PySys_ClearAuditHooks") == 0;
    if (!fc && !teardown && !t->anchor) return 0;
    const pya_evrule *r = NULL;
    if (!fc && !teardown && !(r = pya_event_rule(ev))) return 0;

    const spa_policy *p = spp_policy();
    if (!p || !p->layer_audit_hook) return 0;
    if (py_PyErr_Occurred()) return 0; /* never clobber a pending exception */
    int saved = errno;
    int rc = 0;
    t->busy = 1;
    if (teardown) {
        /* Interpreter finalising: our class object dies with it. */
        pya_exc = NULL;
        pya_exc_interp = NULL;
        pya_scope_clear();
    } else if (fc) {
        rc = pya_on_find_class(p, args);
    } else if (p->runtime_behaviour) {
        rc = pya_on_behaviour(p, r, ev, args);
    }
    t->busy = 0;
    errno = saved;
    return rc;
}

/* ================================================================ init */
void spp_pyaudit_init(void) {
    int expect = 0;
    if (!atomic_compare_exchange_strong(&pya_state, &expect, 1)) return;
    const spa_policy *p = spp_policy();
    /* Targeting (policy `targets`, SAFEPICKLE_TARGETS) is the preload's decision. */
    if (!p || !p->layer_audit_hook || p->mode == SPA_MODE_OFF || !spp_targeted_process()) {
        atomic_store(&pya_state, 3); /* layer 2 disabled here: nothing happens */
        return;
    }
    if (!dlsym(RTLD_DEFAULT, "PySys_AddAuditHook")) {
        /* Not Python at all: silence. A CPython older than 3.8 (no audit
         * hooks) is told once that in-memory loads are not guarded. */
        if (dlsym(RTLD_DEFAULT, "Py_Initialize")) {
            static const char m[] = "safepickle: layer 2 (audit hook) unavailable: this Python predates "
                                    "PEP 578 (3.8); in-memory loads are not guarded\n";
            spp_write_stderr(m, sizeof m - 1);
        }
        atomic_store(&pya_state, 3);
        return;
    }
    if (!pya_resolve()) {
        static const char m[] = "safepickle: layer 2 (audit hook) off: this Python lacks a C-API function\n";
        spp_write_stderr(m, sizeof m - 1);
        atomic_store(&pya_state, 3);
        return;
    }
    /* Documented safe before Py_Initialize (the normal case: the constructor
     * runs before main), and the runtime keeps the hook. If the interpreter is
     * already running (the library was loaded late), the call runs the other
     * hooks and needs the GIL. */
    int rc;
    if (py_Py_IsInitialized && py_Py_IsInitialized() && py_PyGILState_Ensure && py_PyGILState_Release) {
        int g = py_PyGILState_Ensure();
        rc = py_PySys_AddAuditHook(pya_hook, NULL);
        if (rc != 0) py_PyErr_Clear();
        py_PyGILState_Release(g);
    } else {
        rc = py_PySys_AddAuditHook(pya_hook, NULL);
    }
    if (rc != 0) {
        static const char m[] = "safepickle: layer 2 (audit hook) off: PySys_AddAuditHook failed\n";
        spp_write_stderr(m, sizeof m - 1);
        atomic_store(&pya_state, 3);
        return;
    }
    atomic_store(&pya_state, 2);
}

