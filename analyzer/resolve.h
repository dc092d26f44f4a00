/* resolve.h - callee resolution: what a value, used as a callee, really invokes
 * (owner: resolve.c), and the constant-value accessors it and the classifier share. */
#ifndef SPA_RESOLVE_H
#define SPA_RESOLVE_H

#include "spa.h"

/* What a value, used as a callee, really is. Owner: resolve.c. */
typedef enum spa_tkind {
    SPA_T_NONE = 0,   /* a literal or data object that is not callable as such */
    SPA_T_GLOBAL,     /* a global path (module + dotted name) */
    SPA_T_MODULE,     /* a module object (import_module, sys.modules[...]) */
    SPA_T_OBJECT,     /* an instance built by a call (its class path in path, may be empty) */
    SPA_T_METHOD,     /* attribute of an object: path = class path + "." + attr (may be partial) */
    SPA_T_GETTER,     /* operator.attrgetter / itemgetter object: attr or key in aux */
    SPA_T_METHODCALLER, /* operator.methodcaller: method name in aux, args in bound */
    SPA_T_SYSMODULES, /* the sys.modules dict */
    SPA_T_DYNAMIC     /* cannot be resolved statically (unknown value, non-constant name) */
} spa_tkind;

typedef struct spa_target {
    spa_tkind kind;
    bool via_reflection;    /* reached through getattr/import/getitem/... */
    bool itemgetter;        /* SPA_T_GETTER: item (true) or attribute (false) */
    bool from_module;       /* SPA_T_GLOBAL reached as an attribute of a module object */
    char module[160];       /* SPA_T_GLOBAL: canonical module; SPA_T_MODULE: module name */
    char name[256];         /* SPA_T_GLOBAL: dotted name */
    char aux[128];          /* getter attribute/key, methodcaller name */
    const spa_val *bound;   /* methodcaller bound args (tuple) */
    const spa_val *origin;  /* the value resolved */
} spa_target;

/* Resolve a callee value (GLOBAL, or a CALL of a reflective function) to what it
 * invokes. depth bounds the recursion (SPA_RESOLVE_MAX_DEPTH). Never fails. */
#define SPA_RESOLVE_MAX_DEPTH 24
void spa_resolve(const spa_val *v, spa_target *t, int depth);
/* Constant text of a STR/BYTES value, NUL-terminated into buf; false if not constant
 * or truncated. */
bool spa_val_text(const spa_val *v, char *buf, size_t n);
/* The i-th item of a tuple/list value, or NULL. */
const spa_val *spa_val_item(const spa_val *v, size_t i);

/* Is the canonical module:name the given trampoline? */
bool spa_target_is(const spa_target *t, const char *module, const char *name);

#endif /* SPA_RESOLVE_H */
