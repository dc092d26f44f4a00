/* pya.h - internal interface between the parts of layer 2 (the PEP 578 audit
 * hook), one file per concern:
 *   pyaudit.c     C-API table, hook registration and event dispatch
 *   pya_frames.c  object/frame helpers over the dlsym'd C-API
 *   pya_scope.c   the per-thread unpickle scope and the imports it announced
 *   pya_trust.c   trust inherited from a trusted file (layer 1)
 *   pya_names.c   pickle.find_class: the name judgement and its cache
 *   pya_events.c  the behaviour veto: which audit events, and when
 *   pya_report.c  the decision: record, stderr line, exception
 *   pya_bytes.c   bytes first: the analyzer judges in-memory pickles before they run
 * Nothing here is exported from libsafepickle.so. */
#ifndef SPP_PYA_H
#define SPP_PYA_H

#include <stdbool.h>
#include <stdint.h>

#include "pyapi.h"
#include "pyaudit.h"
#include "spa.h"
#include "spp.h"

/* ---------------------------------------------------------------- C-API table
 * Pointers resolved by pyaudit.c (pya_resolve); py_<name> for each line of
 * pyapi.h. */
#define PYA_FN_DECL(ret, name, params, req) extern ret(*py_##name) params;
SPP_PYAPI_FUNCS(PYA_FN_DECL)
#undef PYA_FN_DECL
#define PYA_DATA_DECL(name, req) extern spp_pyobj **py_##name;
SPP_PYAPI_DATA(PYA_DATA_DECL)
#undef PYA_DATA_DECL
#define PYA_OBJ_DECL(name, req) extern spp_pyobj *py_##name;
SPP_PYAPI_OBJS(PYA_OBJ_DECL)
#undef PYA_OBJ_DECL

/* ---------------------------------------------------------------- helpers (pya_frames.c) */
void pya_copy(char *dst, size_t n, const char *src);
bool pya_ends_with(const char *s, const char *suf);
/* Text of a str (UTF-8) or bytes object into buf, control characters
 * replaced; false (no exception left) for other objects. *exact (optional):
 * buf holds the whole text unaltered. */
bool pya_utf8x(spp_pyobj *o, char *buf, size_t n, bool *exact);
bool pya_utf8(spp_pyobj *o, char *buf, size_t n);
spp_pyobj *pya_arg(spp_pyobj *args, spp_pyssize i); /* borrowed, NULL if absent */
bool pya_is_none(spp_pyobj *o);
/* None itself (borrowed). */
spp_pyobj *pya_none(void);
/* False itself (borrowed). */
spp_pyobj *pya_false(void);
/* New references, or NULL with no exception left behind. */
spp_pyobj *pya_getattr(spp_pyobj *o, const char *name);
spp_pyobj *pya_back(spp_pyobj *f);
spp_pyobj *pya_code(spp_pyobj *f);
long pya_lasti(spp_pyobj *f);

typedef struct pya_where {
    char file[SPP_PYA_PATH_MAX];
    char func[SPP_PYA_PKG_MAX];
    int line;
} pya_where;

void pya_describe(spp_pyobj *f, pya_where *w);
void pya_frame_module(spp_pyobj *f, char *buf, size_t n);
bool pya_is_unpickler_frame(spp_pyobj *f, const pya_where *w);
bool pya_is_library_file(const char *file);
spp_pyobj *pya_find_anchor(void);
bool pya_is_import_frame(const pya_where *w);
void pya_import_frame_name(spp_pyobj *f, char *buf, size_t n);
bool pya_import_by_unpickler(bool import_event);

/* ---------------------------------------------------------------- scope (pya_scope.c) */
typedef struct pya_tls {
    int busy;                      /* re-entrancy: events raised by our own calls pass */
    const spp_pyobj *anchor;       /* frame that called the load, NULL = no scope */
    const spp_pyobj *anchor_code;  /* its code object */
    long anchor_lasti;
    bool ipc;                      /* the load is a child process's bootstrap (pya_is_ipc_anchor) */
    bool trusted;                  /* fed from a file the policy trusts (see pya_scope_trusted) */
    uint64_t trust_ident;          /* that file's identity (spp_trust_check) */
    char pending[SPP_PYA_NAME_MAX];/* module of the last find_class (about to be imported) */
    char pkgs[SPP_PYA_MAX_PKGS][SPP_PYA_PKG_MAX]; /* top-level packages resolved in scope */
    unsigned npkgs;
    uint32_t *imports;             /* hashes of imports allowed in this scope (lazy, malloc) */
    unsigned nimports;
    bool unbound;                  /* no scope: this find_class is not the trusted file's */
} pya_tls;

extern __thread pya_tls pya_t __attribute__((tls_model("initial-exec")));

bool pya_scope_live(bool *in_import, char *imp, char *outer);
void pya_scope_clear(void);
void pya_scope_enter(void);
void pya_scope_note_module(const char *module);
bool pya_is_ipc_anchor(spp_pyobj *a);
void pya_imports_add(const char *mod);
bool pya_body_announced(const char *mod);

/* ---------------------------------------------------------------- trust (pya_trust.c) */
bool pya_scope_trusted(void);
void pya_trust_bind(const char *module, const char *name, bool exact);

/* ---------------------------------------------------------------- names (pya_names.c) */
int pya_on_find_class(const spa_policy *p, spp_pyobj *args);

/* ---------------------------------------------------------------- events (pya_events.c) */
typedef struct pya_evrule pya_evrule;
const pya_evrule *pya_event_rule(const char *ev);
int pya_on_behaviour(const spa_policy *p, const pya_evrule *r, const char *ev, spp_pyobj *args);

/* ---------------------------------------------------------------- bytes (pya_bytes.c) */
/* Wrap _pickle's loads, load and Unpickler.load so the analyzer judges the
 * bytes first. Called at the first `import` of pickle/_pickle (and at a
 * find_class as a last resort); once. */
void pya_bytes_install(const char *trigger); /* "pickle", "_pickle" or NULL */
bool pya_bytes_installed(void);
bool pya_bytes_c_done(void); /* _pickle's entry points are wrapped (or could not be) */
void pya_bytes_python_again(void); /* a later interpreter's `import pickle`: wrap its pickle._Unpickler */
int pya_bytes_python_replaced(void); /* a find_class outside every wrapped load: pickle._Unpickler replaced? */

/* ---------------------------------------------------------------- report (pya_report.c) */
int pya_decide(spa_action act, spa_verdict v, const char *what, const char *event,
               const char *arg, const char *rule, const char *msg, bool trusted);
int pya_report_bytes(spa_action act, spa_verdict v, const char *call, const spa_reason *reasons, size_t n,
                     const char *error, bool trusted, bool quiet);
/* Forget the exception class (the interpreter that owned it is finalising). */
void pya_exception_reset(void);
/* safepickle.SafePickleBlocked (borrowed; made once per interpreter and made
 * importable as a module `safepickle` in sys.modules unless the package is). */
spp_pyobj *pya_exception(void);

#endif /* SPP_PYA_H */
