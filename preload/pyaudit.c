/* pyaudit.c - layer 2: a PEP 578 audit hook inside the preload. It judges each
 * pickle.find_class(module, name) with the analyzer's knowledge base, and while
 * an unpickle is in progress on the current thread it vetoes process spawns,
 * code execution, network, native loads, file writes and foreign imports.
 * No Python.h, no libpython link: every C-API function comes from dlsym.
 * This file: the C-API table, registration and dispatch; the parts are listed
 * in pya.h. */
#include "pya.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdatomic.h>
#include <string.h>

/* ================================================================ C-API table */
#define PYA_FN_PTR(ret, name, params, req) ret(*py_##name) params;
SPP_PYAPI_FUNCS(PYA_FN_PTR)
#undef PYA_FN_PTR
#define PYA_DATA_PTR(name, req) spp_pyobj **py_##name;
SPP_PYAPI_DATA(PYA_DATA_PTR)
#undef PYA_DATA_PTR
#define PYA_OBJ_PTR(name, req) spp_pyobj *py_##name;
SPP_PYAPI_OBJS(PYA_OBJ_PTR)
#undef PYA_OBJ_PTR

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
#define PYA_OBJ_RES(name, req)                                          \
    py_##name = (spp_pyobj *)dlsym(RTLD_DEFAULT, #name);                \
    if ((req) && !py_##name) ok = false;
    SPP_PYAPI_OBJS(PYA_OBJ_RES)
#undef PYA_OBJ_RES
    return ok;
}


/* ================================================================ the hook */
static int pya_hook(const char *ev, spp_pyobj *args, void *ud);

static void pya_rearm(void) {
    atomic_store(&pya_rearm_armed, 0);
    pya_exception_reset(); /* died with the interpreter */
    if (py_PySys_AddAuditHook(pya_hook, NULL) != 0) atomic_store(&pya_state, 3);
}

/* No policy in force (it failed to load: spp_policy_broken): it is never
 * replaced by another, so every global an unpickle resolves is refused, as
 * layer 1 refuses every pickle-bearing file. */
static int pya_on_broken(spp_pyobj *args) {
    char module[SPP_PYA_NAME_MAX] = "?", name[SPP_PYA_NAME_MAX] = "?", what[2 * SPP_PYA_NAME_MAX + 32];
    bool exact;
    pya_utf8x(pya_arg(args, 0), module, sizeof module, &exact);
    pya_utf8x(pya_arg(args, 1), name, sizeof name, &exact);
    snprintf(what, sizeof what, "pickle global %s.%s", module, name);
    return pya_decide(SPA_ACT_BLOCK, SPA_VERDICT_UNSCANNABLE, what, "pickle.find_class", NULL, "policy.invalid",
                      spp_policy_error(), false);
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
    if (fc && spp_l2.in_load > 0) spp_l2.resolved = true;
    bool teardown = ev[0] == 'c' && strcmp(ev, "cpython._PySys_ClearAuditHooks") == 0;
    if (!pya_bytes_installed() && (fc || (ev[0] == 'i' && strcmp(ev, "import") == 0))) {
        /* Bytes first: wrap _pickle at the first import of pickle or _pickle,
         * before any code can call it (a find_class is the last resort). */
        char mod[16];
        mod[0] = 0;
        bool imp = !fc && pya_utf8(pya_arg(args, 0), mod, sizeof mod);
        /* once _pickle is wrapped, any later import may be the moment the
         * pure-Python pickle._Unpickler exists (pya_bytes_install retries) */
        if (fc || (imp && (!strcmp(mod, "pickle") || !strcmp(mod, "_pickle") || pya_bytes_c_done()))) {
            const spa_policy *pp = spp_policy();
            if (pp && pp->layer_audit_hook && pp->mode != SPA_MODE_OFF && !py_PyErr_Occurred()) {
                int saved = errno;
                t->busy = 1;
                pya_bytes_install(fc ? NULL : mod);
                t->busy = 0;
                errno = saved;
            }
        }
    } else if (fc && spp_l2.in_load == 0) {
        /* pickle._Unpickler replaced after it was wrapped (importlib.reload) */
        const spa_policy *pp = spp_policy();
        if (pp && pp->layer_audit_hook && pp->mode != SPA_MODE_OFF && !py_PyErr_Occurred()) {
            int saved = errno;
            t->busy = 1;
            int rc = pya_bytes_python_replaced();
            t->busy = 0;
            errno = saved;
            if (rc < 0) return -1;
        }
    } else if (!fc && ev[0] == 'i' && strcmp(ev, "import") == 0) {
        /* a sub-interpreter's own pickle module (pya_bytes_python_again) */
        char mod[8];
        const spa_policy *pp = spp_policy();
        if (pya_utf8(pya_arg(args, 0), mod, sizeof mod) && !strcmp(mod, "pickle") && pp && pp->layer_audit_hook &&
            pp->mode != SPA_MODE_OFF && !py_PyErr_Occurred()) {
            int saved = errno;
            t->busy = 1;
            pya_bytes_python_again();
            t->busy = 0;
            errno = saved;
        }
    }
    if (!fc && !teardown && !t->anchor && !spp_l2_in_scope()) return 0;
    const pya_evrule *r = NULL;
    if (!fc && !teardown && !(r = pya_event_rule(ev))) return 0;

    const spa_policy *p = spp_policy(); /* NULL: broken, refuse (pya_on_broken) */
    if (p ? !p->layer_audit_hook : !spp_policy_broken()) return 0;
    if (py_PyErr_Occurred()) return 0; /* never clobber a pending exception */
    int saved = errno;
    int rc = 0;
    t->busy = 1;
    if (teardown) {
        /* Interpreter finalising: our class object dies with it. */
        pya_exception_reset();
        pya_scope_clear();
    } else if (fc) {
        rc = p ? pya_on_find_class(p, args) : pya_on_broken(args);
    } else if (p && p->runtime_behaviour) {
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
    if (!spp_targeted_process() || !spa_policy_layer_on(p, SPA_LAYER_AUDIT_HOOK)) {
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

