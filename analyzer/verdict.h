/* verdict.h - analyzer-internal interfaces of the classifier: the knowledge base
 * (kb.c), callee resolution (resolve.c), SHA-256 (sha256.c) and SARIF output
 * (sarif.c). The public entry points are in spa.h (spa_classify, spa_kb_lookup,
 * spa_judge_global, spa_policy_*). */
#ifndef SPA_VERDICT_H
#define SPA_VERDICT_H

#include <stdio.h>

#include "spa.h"

/* ------------------------------------------------------------------ knowledge base */
/* Longest accepted module+name path; longer names are judged as reflection. */
#define SPA_KB_MAX_PATH 512

/* How a lookup matched (for messages and for the unknown-callable heuristics). */
typedef enum spa_kbhow {
    SPA_KBH_NONE = 0,   /* nothing matched: third-party module the KB does not know */
    SPA_KBH_EXACT,      /* module:name or module:prefix* entry */
    SPA_KBH_PATTERN,    /* *:pattern entry (third-party reconstructor names) */
    SPA_KBH_MODULE,     /* longest module-prefix key */
    SPA_KBH_VERB,       /* @verb heuristic on an unknown callable */
    SPA_KBH_COMPONENT,  /* a dotted component reached a stdlib module or a dunder */
    SPA_KBH_EFFECT,     /* importing the module already acts (@import_effect, pkg.__main__) */
    SPA_KBH_MODATTR,    /* the name walks through a module-valued attribute (tempfile._os) */
    SPA_KBH_INDEX,      /* the environment index (safepickle kb index) */
    SPA_KBH_TOOLONG
} spa_kbhow;

typedef struct spa_kbhit {
    spa_kbcat cat;
    spa_kbhow how;
    bool stdlib;          /* the module is part of the standard library */
    bool dotted;          /* the name had a dotted attribute path */
    char key[96];         /* the KB key that decided (NUL-terminated, may be truncated) */
    char path[SPA_KB_MAX_PATH]; /* canonical "module.name" judged */
    size_t modlen;        /* length of the canonical module part of path */
} spa_kbhit;

/* Full judgement of a global by name (aliases, dotted walk, exact, patterns, module
 * prefixes, verbs). Never fails; UNKNOWN means a third-party name the KB does not know. */
spa_kbcat spa_kb_judge(const char *module, const char *name, spa_kbhit *hit);
/* Canonical module name (aliases applied) into buf; returns buf. */
const char *spa_kb_canon(const char *module, char *buf, size_t n);
/* Is this (canonical or not) module part of the standard library? */
bool spa_kb_is_stdlib(const char *module);
/* Is module:name an @nested reconstructor (judged by the content it deserialises)? */
bool spa_kb_nested_loader(const char *module, const char *name);
/* `@typearg MODULE:NAME`: a reconstructor whose first argument is a class it instantiates
 * through a base's __new__ (ndarray.__new__(subtype, ...)), never running the class's own
 * constructors: that argument is not a callable handed over (numpy.memmap is fine there). */
bool spa_kb_typearg(const char *module, const char *name);
/* `@typeref MODULE:NAME`: a class benign pickles name only as such a type argument; by
 * name alone (spa_judge_global) it is a reference, not a call. */
bool spa_kb_typeref(const char *module, const char *name);
/* The module MODULE.ATTR is (analyzer/kb/modattr.tsv: tempfile._os -> "os"), or NULL. */
const char *spa_kb_modattr(const char *module, const char *attr);
/* The environment index (`safepickle kb index`, loaded once from $SAFEPICKLE_KB_INDEX or
 * SPA_KB_INDEX_DEFAULT): a one-line status, and whether MODULE's top level is importable
 * (true when there is no index: nothing is known). */
const char *spa_kb_index_status(void);
bool spa_kb_importable(const char *module);
/* Severity of a category when a global of it is called. */
spa_verdict spa_kbcat_call_severity(spa_kbcat c);
/* The embedded KB text (NUL-terminated) for tests and `safepickle policy kb`. */
const char *spa_kb_text(int which, size_t *n); /* 0 = stdlib.tsv, 1 = ml.tsv */
/* Line i of the KB's build-time line table (fields, their lengths, their count,
 * from stdlib.tsv?); false past the end. For tests. */
bool spa_kb_line(size_t i, const char *f[3], size_t fl[3], int *nf, bool *stdlib);

/* ------------------------------------------------------------------ resolution */
/* What a value, used as a callee, really is. Owner: resolve.c. */
typedef enum spa_tkind {
    SPA_T_NONE = 0,   /* a literal or data object that is not callable as such */
    SPA_T_GLOBAL,     /* a global path (module + dotted name) */
    SPA_T_MODULE,     /* a module object (import_module, sys.modules[...]) */
    SPA_T_OBJECT,     /* an instance built by a call (its class path in path, may be empty) */
    SPA_T_METHOD,     /* attribute of an object: path = class path + "." + attr (may be partial) */
    SPA_T_PARTIAL,    /* functools.partial: inner target in path/inner, bound args */
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
    const spa_val *bound;   /* partial/methodcaller bound args (tuple) */
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

/* snprintf that truncates silently (every caller sizes for display, not for data);
 * returns the length written. Defined in strfmt.c. */
int spa_fmt(char *out, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Is the canonical module:name the given trampoline? */
bool spa_target_is(const spa_target *t, const char *module, const char *name);

/* ------------------------------------------------------------------ sha256 */
typedef struct spa_sha256 {
    uint32_t h[8];
    uint64_t len;
    uint8_t buf[64];
    size_t nbuf;
} spa_sha256;
void spa_sha256_init(spa_sha256 *s);
void spa_sha256_update(spa_sha256 *s, const void *p, size_t n);
void spa_sha256_final(spa_sha256 *s, uint8_t out[32]);
/* Hash a whole file by path; SPA_OK or SPA_E_IO. */
spa_code spa_sha256_file(const char *path, uint8_t out[32], spa_err *err);
/* Parse 64 hex digits; false if malformed. */
bool spa_sha256_parse(const char *hex, uint8_t out[32]);

/* ------------------------------------------------------------------ verdict output */
/* Output of classified results (text, JSON fields, SARIF): output.h. */

#endif /* SPA_VERDICT_H */
