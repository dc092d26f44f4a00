/* kb.h - the knowledge base's internal interface (owner: kb.c, data in
 * the TSV files in analyzer/kb/). The public lookups are in spa.h (spa_kb_lookup, spa_judge_global). */
#ifndef SPA_KB_H
#define SPA_KB_H

#include "spa.h"

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
/* `@rawload MODULE:NAME`: a deserializer (pickle.loads) judged by its content when its one
 * argument is an immutable bytes constant read as one raw pickle stream (classify.c). */
bool spa_kb_raw_loader(const char *module, const char *name);
/* `@typearg MODULE:NAME`: a reconstructor whose first argument is a class it instantiates
 * through a base's __new__ (ndarray.__new__(subtype, ...)), never running the class's own
 * constructors: that argument is not a callable handed over (numpy.memmap is fine there). */
bool spa_kb_typearg(const char *module, const char *name);
/* `@shared MODULE:NAME`: a data callable whose result is an object the process shares (an
 * enum member, a cached logger, the class type(x) returns): BUILD or a container opcode
 * on that result modifies process state, not a new instance (classify.c). */
bool spa_kb_shared(const char *module, const char *name);
/* `@typeref MODULE:NAME`: a class benign pickles name only as such a type argument; by
 * name alone (spa_judge_global) it is a reference, not a call. */
bool spa_kb_typeref(const char *module, const char *name);
/* `@partial MODULE:NAME`: functools.partial or a reconstructor that returns one
 * (multiprocessing's and loky's _rebuild_partial(func, args, kw)): its first argument is
 * bound, not called; it is judged by what it binds. */
bool spa_kb_partial(const char *module, const char *name);
/* A reconstructor that calls its first argument with its second (a tuple) as the
 * positional arguments (tblib's unpickle_exception(func, args, cause, tb)): judged as
 * that call (`@apply` lines). */
bool spa_kb_apply(const char *module, const char *name);
/* A traceback rebuilder that compiles tb_lineno - 1 newlines before a fixed statement
 * for every frame of the chain it is given (tblib's unpickle_traceback): judged by the
 * line numbers the stream gives it (`@tblineno` lines, classify.c cl_tb_bounded). */
bool spa_kb_tblineno(const char *module, const char *name);
/* joblib's _strided_from_memmap(filename, dtype, mode, offset, order, shape, strides,
 * total_buffer_len, unlink_on_gc_collect): a view on a file mapping, judged by its mode,
 * its strides and its unlink flag (`@mapview` lines, classify.c cl_mapview_risk). */
bool spa_kb_mapview(const char *module, const char *name);
/* joblib's load_temporary_memmap(filename, mmap_mode, unlink_on_gc_collect): a nested load
 * of a file by path (joblib.load), left to the judgement of that file at its open only in
 * a process whose opens are judged (spa_scan_opts.opens_judged) and only in joblib's own
 * shape (`@fileload` lines, classify.c cl_fileload_risk). */
bool spa_kb_fileload(const char *module, const char *name);
/* The module MODULE.ATTR is (analyzer/kb/modattr.tsv: tempfile._os -> "os"), or NULL. */
const char *spa_kb_modattr(const char *module, const char *attr);
/* The environment index (`safepickle kb index`, loaded once from $SAFEPICKLE_KB_INDEX or
 * SPA_KB_INDEX_DEFAULT): a one-line status, and whether MODULE's top level is importable
 * (true when there is no index: nothing is known). Without an index, a name no import
 * can find is still not importable: empty, an empty dotted part (".x", "a..b", "x."),
 * or a '/' (a part is looked up as one directory entry: text such as a log line
 * "compiler/jvmci/T.java ..." read as a GLOBAL's module line). */
const char *spa_kb_index_status(void);
bool spa_kb_importable(const char *module);
/* Whether that index can be relied on (loads it): absent, unreadable (also: no environment
 * digest in its header, or replaced since the process first looked), or stale (its recorded
 * environment digest no longer matches the interpreter and library directories it names). */
typedef enum spa_kb_index_state {
    SPA_KBIDX_OK = 0, SPA_KBIDX_MISSING, SPA_KBIDX_UNREADABLE, SPA_KBIDX_STALE
} spa_kb_index_state;
spa_kb_index_state spa_kb_index_check(void);
/* Identity digest of the index this process uses (path, dev, inode, size, mtime, ctime; a
 * constant when there is none), from one stat: part of the persistent verdict cache's key,
 * so a rebuilt index never reuses verdicts judged under another one. */
void spa_kb_index_digest(uint8_t out[32]);
/* Line i of the KB's build-time line table (fields, their lengths, their count,
 * from stdlib.tsv?); false past the end (`safepickle kb`, and test_kb.c, which checks
 * the table against the TSV files). */
bool spa_kb_line(size_t i, const char *f[3], size_t fl[3], int *nf, bool *stdlib);

#endif /* SPA_KB_H */
