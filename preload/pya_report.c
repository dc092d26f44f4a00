/* pya_report.c - layer 2: a finding becomes an audit record, a stderr line
 * (shared writer with layer 1) and, for a block, safepickle.SafePickleBlocked. */
#include "pya.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The exception we raise: safepickle.SafePickleBlocked(PermissionError,
 * pickle.UnpicklingError), created once per interpreter. */
static spp_pyobj *pya_exc;
static void *pya_exc_interp;

void pya_exception_reset(void) {
    pya_exc = NULL;
    pya_exc_interp = NULL;
}

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


/* safepickle.SafePickleBlocked when the Python package is imported (a new
 * reference), else NULL. sys.modules only: never imports. */
static spp_pyobj *pya_package_exception(void) {
    spp_pyobj *name = py_PyUnicode_FromString("safepickle");
    spp_pyobj *mod = name ? py_PyImport_GetModule(name) : NULL;
    if (name) py_Py_DecRef(name);
    spp_pyobj *cls = mod && !pya_is_none(mod) ? pya_getattr(mod, "SafePickleBlocked") : NULL;
    if (mod) py_Py_DecRef(mod);
    py_PyErr_Clear();
    return cls;
}

/* sys.modules["_safepickle_preload"] = a module whose SafePickleBlocked is cls. */
static void pya_publish_exception(spp_pyobj *cls) {
    if (!py_PyImport_GetModuleDict || !py_PyModule_New || !py_PyObject_SetAttrString || !py_PyDict_SetItemString)
        return;
    spp_pyobj *m = py_PyModule_New("_safepickle_preload");
    spp_pyobj *mods = py_PyImport_GetModuleDict(); /* borrowed */
    if (m && mods && py_PyObject_SetAttrString(m, "SafePickleBlocked", cls) == 0)
        py_PyDict_SetItemString(mods, "_safepickle_preload", m);
    if (m) py_Py_DecRef(m);
    py_PyErr_Clear();
}

/* The exception class, created lazily under the GIL for this interpreter. */
spp_pyobj *pya_exception(void) {
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
    /* One class for `except safepickle.SafePickleBlocked`: the Python package's
     * when it is already imported, else ours, published for the package to adopt
     * as sys.modules["_safepickle_preload"].SafePickleBlocked. */
    spp_pyobj *cls = pya_package_exception();
    if (!cls) {
        cls = py_PyErr_NewException("safepickle.SafePickleBlocked", bases ? bases : perm, NULL);
        if (cls) pya_publish_exception(cls);
    }
    if (bases) py_Py_DecRef(bases);
    if (unpick) py_Py_DecRef(unpick);
    if (!cls) { py_PyErr_Clear(); return perm; }
    /* A class made for another interpreter is kept (never freed): a handful of
     * bytes per sub-interpreter, and no object crosses interpreters. */
    pya_exc = cls;
    pya_exc_interp = interp;
    /* `safepickle.SafePickleBlocked` is importable (a module of that name in
     * sys.modules), so a refusal pickles by reference: a worker that reports it
     * to its parent (concurrent.futures, dask) sends a name and a message, not
     * a class rebuilt by value, and the refusal surfaces on the other side. */
    spp_pyobj *m = py_PyImport_AddModule("safepickle"); /* borrowed */
    if (m && py_PyObject_SetAttrString(m, "SafePickleBlocked", cls) != 0) py_PyErr_Clear();
    if (!m) py_PyErr_Clear();
    return cls;
}

/* Write the audit record and the stderr line (spp_report, shared with layer
 * 1), and raise the exception when the action is a block. The Python location
 * goes in the event's path ("<python FILE:LINE>", the user's line that led to
 * the load) and detail (the frame that called the unpickler, and the event's
 * argument). Returns the hook's result. */
int pya_decide(spa_action act, spa_verdict v, const char *what, const char *event,
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

/* A verdict of the analyzer on the bytes of an in-memory unpickle (bytes
 * first, pya_bytes.c): reported with the analyzer's own reasons, exactly as
 * layer 1 reports a file. `trusted`: allowed because a file the policy trusts
 * feeds this thread (recorded in an audit file only). `quiet`: a repeated
 * warning, recorded in an audit file only. Returns -1 with the exception set
 * for a block. */
int pya_report_bytes(spa_action act, spa_verdict v, const char *call, const spa_reason *reasons, size_t n,
                     const char *error, bool trusted, bool quiet) {
    const char *dest = spp_audit_dest();
    bool to_file = dest && strcmp(dest, "stderr") != 0 && strcmp(dest, "stdout") != 0;
    if ((trusted || quiet) && !to_file) return 0;
    if (trusted) act = SPA_ACT_ALLOW;
    spp_pyobj *from = pya_find_anchor();
    pya_where site, user;
    pya_locate(from, &site, &user);
    char where[SPP_PYA_PATH_MAX + 32], detail[2 * SPP_PYA_PATH_MAX + 256];
    if (user.file[0]) snprintf(where, sizeof where, "<python %s:%d>", user.file, user.line);
    else snprintf(where, sizeof where, "<python: no frame>");
    snprintf(detail, sizeof detail, "%sbytes judged before %s ran; load called at %s:%d in %s%s%s",
             trusted ? "allowed: the unpickle is fed from a file the policy trusts; " : "", call,
             site.file[0] ? site.file : "?", site.line, site.func[0] ? site.func : "?",
             error ? "; internal error: " : "", error ? error : "");
    spp_event ev = {
        .layer = "audit_hook", .call = call, .path = where, .fd = -1, .verdict = v, .action = act,
        .reasons = reasons, .n_reasons = n, .detail = detail, .format = "pickle", .trusted = trusted,
    };
    if (trusted || quiet) {
        spp_audit_write(&ev);
        return 0;
    }
    spp_report(&ev);
    if (act != SPA_ACT_BLOCK) return 0;
    const spa_reason *d = spp_decisive(reasons, n);
    char text[1024];
    snprintf(text, sizeof text, "safepickle: blocked %s: %s: %s [rule %s] at %s:%d", call, spa_verdict_name(v),
             d && d->msg ? d->msg : (error ? error : "not judgeable"), d && d->rule ? d->rule : "runtime.bytes",
             user.file[0] ? user.file : "<no python frame>", user.line);
    py_PyErr_SetString(pya_exception(), text);
    return -1;
}
