/* pya_scope.c - layer 2: "an unpickle is in progress on this thread". The
 * scope is anchored at the first pickle.find_class of a load on the frame that
 * called the unpickler; it also keeps the imports announced inside it. */
#include "pya.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ================================================================ per-thread scope */
/* "An unpickle is in progress on this thread" is anchored on the Python frame
 * that called the load (found at the first pickle.find_class) and the
 * instruction it was executing (f_lasti). The scope is live while that frame
 * is still on this thread's frame chain at that same instruction. Frame and
 * code are compared by identity only (no reference is kept, so a finished
 * load never pins its caller's locals). */

__thread pya_tls pya_t __attribute__((tls_model("initial-exec")));

/* Walk the current thread's frames up to the anchor. If in_import is given,
 * it is set when an import is executing between the event and the anchor, imp
 * (SPP_PYA_NAME_MAX bytes) receives the module the innermost one imports (the
 * event belongs to that module's body) and outer (optional, same size) the
 * module the outermost one imports: the import the unpickle itself started,
 * every other one on the stack running inside it. Without in_import the walk
 * compares identities only (find_class path). */
bool pya_scope_live(bool *in_import, char *imp, char *outer) {
    pya_tls *t = &pya_t;
    bool dummy = true;
    if (!in_import) in_import = &dummy; /* true: never describe frames */
    else *in_import = false;
    bool describe = in_import != &dummy;
    if (imp) imp[0] = 0;
    if (outer) outer[0] = 0;
    if (!t->anchor) return false;
    spp_pyobj *f = py_PyEval_GetFrame();
    if (!f) return false;
    py_Py_IncRef(f);
    bool live = false;
    int i = 0;
    for (; f && i < SPP_PYA_MAX_FRAMES; i++) {
        if (f == t->anchor) {
            spp_pyobj *code = pya_code(f);
            live = code == t->anchor_code && pya_lasti(f) == t->anchor_lasti;
            if (code) py_Py_DecRef(code);
            break;
        }
        if (describe && (!*in_import || outer)) {
            pya_where w;
            pya_describe(f, &w);
            if (pya_is_import_frame(&w)) {
                if (!*in_import && imp) pya_import_frame_name(f, imp, SPP_PYA_NAME_MAX);
                if (outer) pya_import_frame_name(f, outer, SPP_PYA_NAME_MAX);
                *in_import = true;
            }
        }
        spp_pyobj *b = pya_back(f);
        py_Py_DecRef(f);
        f = b;
    }
    if (f && !live) live = true; /* the walk's budget ran out: undetermined is in scope */
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

void pya_imports_add(const char *mod) {
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
bool pya_body_announced(const char *mod) {
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

void pya_scope_clear(void) {
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

void pya_scope_note_module(const char *module) {
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

/* A process's bootstrap: a child started with the spawn or forkserver
 * method (multiprocessing.spawn / multiprocessing.forkserver) or by loky
 * (`python -m joblib.externals.loky.backend.popen_loky_posix --pipe N`, or
 * standalone loky) unpickles its preparation data and its process object from
 * a pipe its parent created before starting it. Those loads are the process
 * start protocol of the program itself (a pickle cannot call these callers:
 * they are `process` by name), so they are not judged. Nothing else is
 * trusted by origin: multiprocessing connections, queues, Listener/Client and
 * every worker's task and result traffic are judged on their bytes. */
static const char *const pya_boot_callers[] = {"multiprocessing.spawn", "multiprocessing.forkserver"};
static const char *const pya_boot_mains[] = {"/loky/backend/popen_loky_posix.py"};

bool pya_is_ipc_anchor(spp_pyobj *a) {
    char mod[SPP_PYA_PKG_MAX];
    pya_frame_module(a, mod, sizeof mod);
    for (size_t i = 0; i < sizeof pya_boot_callers / sizeof pya_boot_callers[0]; i++)
        if (strcmp(mod, pya_boot_callers[i]) == 0) return true;
    if (strcmp(mod, "__main__") != 0) return false;
    pya_where w;
    pya_describe(a, &w);
    if (strcmp(w.func, "<module>") != 0) return false;
    for (size_t i = 0; i < sizeof pya_boot_mains / sizeof pya_boot_mains[0]; i++)
        if (pya_ends_with(w.file, pya_boot_mains[i])) return true;
    return false;
}

/* Open (or continue) the unpickle scope at a pickle.find_class event. */
void pya_scope_enter(void) {
    pya_tls *t = &pya_t;
    if (t->anchor && pya_scope_live(NULL, NULL, NULL)) return; /* nested load or next global */
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
