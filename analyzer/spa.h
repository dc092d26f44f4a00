/* spa.h - the public API of the safepickle analyzer (prefix spa_).
 * Shared by the CLI and the preload. No global state: every call works on
 * objects the caller owns. This header holds the cross-component shapes
 * (errors, limits, sources, values, IR, scan results, verdicts) and the
 * entry points (scan, classify, policy). Each component's internals are in its
 * own header, which includes this one (never the reverse): reader.h, opcodes.h,
 * vm.h, containers.h, kb.h (knowledge base), resolve.h (callee resolution),
 * sha256.h, strfmt.h, output.h (text, JSON fields, SARIF), report.h, jsonout.h,
 * bytes.h, capi.h (the flat ABI of libspa.so). */
#ifndef SPA_H
#define SPA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ errors */
/* Every failure is {code, static message, byte offset}. No allocation on
 * the error path: msg always points to a string literal. */
typedef enum spa_code {
    SPA_OK = 0,
    SPA_E_TRUNCATED,      /* input ended inside an opcode or structure */
    SPA_E_BAD_OPCODE,     /* byte is not an opcode CPython knows */
    SPA_E_BAD_ARG,        /* opcode argument malformed (bad int text, bad escape, ...) */
    SPA_E_STACK,          /* stack underflow / wrong type on stack (loader would raise) */
    SPA_E_MEMO,           /* BINGET/GET of an undefined memo key */
    SPA_E_MARK,           /* MARK missing where required */
    SPA_E_FORMAT,         /* container structure invalid */
    SPA_E_UNSUPPORTED,    /* a wrapper we cannot open (7z, encrypted member) */
    SPA_E_LIMIT,          /* a named limit was hit; see spa_limit_id */
    SPA_E_NOMEM,          /* allocation failed */
    SPA_E_IO,             /* read error from the source */
    SPA_E_POLICY,         /* policy document invalid */
    SPA_E_USAGE,          /* caller passed invalid arguments */
    SPA_E_INTERNAL,
    SPA_CODE_COUNT
} spa_code;

typedef struct spa_err {
    spa_code code;
    const char *msg; /* static string, never freed */
    uint64_t off;    /* byte offset where it happened (stream- or file-relative, documented per API) */
} spa_err;

const char *spa_code_name(spa_code c); /* "truncated", "bad_opcode", ... stable, for JSON */

/* ------------------------------------------------------------------ limits */
/* Every limit has a name (spa_limit_name) and a documented default. Hitting
 * one is a result (SPA_E_LIMIT with the limit recorded), never a crash. */
typedef enum spa_limit_id {
    SPA_LIM_OPS = 0,        /* opcodes executed per stream */
    SPA_LIM_STACK,          /* stack depth (values) */
    SPA_LIM_MARKS,          /* mark-stack depth */
    SPA_LIM_MEMO,           /* number of memo entries */
    SPA_LIM_MEMO_KEY,       /* largest memo key accepted for dense storage */
    SPA_LIM_STR,            /* bytes of one string/bytes argument kept in memory */
    SPA_LIM_BYTES,          /* total bytes of input examined per file */
    SPA_LIM_STREAMS,        /* pickle streams per file */
    SPA_LIM_NEST,           /* nesting depth of containers/compression/nested pickles */
    SPA_LIM_DECOMP_BYTES,   /* decompressed output per wrapper */
    SPA_LIM_DECOMP_RATIO,   /* decompressed/compressed ratio */
    SPA_LIM_MEMBERS,        /* archive members examined */
    SPA_LIM_IR,             /* IR entries per stream */
    SPA_LIM_OPEN_MS,        /* wall-clock milliseconds one scan (one open) may take, whole recursion */
    SPA_LIM_OPEN_BYTES,     /* bytes one scan may pull: source reads + decompressed output, whole recursion */
    SPA_LIM_COUNT
} spa_limit_id;

typedef struct spa_limits {
    uint64_t v[SPA_LIM_COUNT];
} spa_limits;

void spa_limits_default(spa_limits *l);
const char *spa_limit_name(spa_limit_id id); /* "max_ops", "max_stack", ... (policy keys) */

/* ------------------------------------------------------------------ memory */
/* Pluggable allocator so tests can inject failures. NULL means malloc/free. */
typedef struct spa_alloc {
    void *(*alloc)(void *ctx, size_t n);
    void (*free)(void *ctx, void *p);
    void *ctx;
} spa_alloc;

/* One owner per scan: everything a scan produces lives in one arena, released
 * by spa_arena_destroy (or spa_result_free, which calls it). */
typedef struct spa_arena spa_arena;
spa_arena *spa_arena_create(const spa_alloc *a);        /* NULL on OOM */
void *spa_arena_alloc(spa_arena *ar, size_t n);         /* 16-aligned, NULL on OOM */
void *spa_arena_calloc(spa_arena *ar, size_t n);
char *spa_arena_strndup(spa_arena *ar, const char *s, size_t n);
size_t spa_arena_used(const spa_arena *ar);
void spa_arena_destroy(spa_arena *ar);

/* ------------------------------------------------------------------ sources */
/* A random-access byte source (a file, a memory buffer, a zip member).
 * pread must not move any file offset (the preload relies on this). */
typedef struct spa_src {
    /* Read up to len bytes at absolute offset off. Returns bytes read, 0 at EOF,
     * -1 on error. May return short counts. */
    ssize_t (*pread)(void *ctx, void *buf, size_t len, uint64_t off);
    void *ctx;
    uint64_t size;      /* total size in bytes */
    const uint8_t *mem; /* non-NULL when the whole content is in memory (zero-copy) */
} spa_src;

void spa_src_mem(spa_src *s, const uint8_t *p, size_t n);
void spa_src_fd(spa_src *s, int fd, uint64_t size); /* uses pread(2) via the given fn if set */

/* ------------------------------------------------------------------ values */
/* Symbolic values of the emulated unpickler. Owned by the scan's arena. */
typedef enum spa_vkind {
    SPA_V_UNKNOWN = 0, /* something we could not model; never assume it is safe */
    SPA_V_NONE,
    SPA_V_BOOL,
    SPA_V_INT,         /* fits in int64: u.i */
    SPA_V_LONG,        /* big integer: u.s holds its text (decimal or hex) / raw bytes */
    SPA_V_FLOAT,
    SPA_V_STR,         /* unicode text, UTF-8 in u.s */
    SPA_V_BYTES,       /* bytes / bytearray / py2 str (STRING opcodes) */
    SPA_V_TUPLE,
    SPA_V_LIST,
    SPA_V_DICT,        /* items are key,value,key,value... */
    SPA_V_SET,
    SPA_V_FROZENSET,
    SPA_V_GLOBAL,      /* result of GLOBAL/STACK_GLOBAL/INST lookup/EXT: u.g */
    SPA_V_CALL,        /* result of REDUCE/NEWOBJ/NEWOBJ_EX/INST/OBJ: u.call */
    SPA_V_PERSID,      /* result of PERSID/BINPERSID: u.persid */
    SPA_V_BUFFER,      /* NEXT_BUFFER (out-of-band) */
    SPA_V_MARK,        /* only on the emulator's stack */
    SPA_V_KIND_COUNT
} spa_vkind;

/* value flags */
#define SPA_VF_TRUNC     0x01u /* u.s holds only a prefix (kept < len) or items were summarised */
#define SPA_VF_DISCARDED 0x02u /* popped and dropped (POP / POP_MARK) */
#define SPA_VF_MUTATED   0x04u /* BUILD/SETITEM/APPEND applied to it */
#define SPA_VF_READONLY  0x08u /* READONLY_BUFFER applied */
#define SPA_VF_BYTEARRAY 0x10u /* SPA_V_BYTES created by BYTEARRAY8 */
#define SPA_VF_PY2STR    0x20u /* SPA_V_BYTES from STRING/BINSTRING/SHORT_BINSTRING */
#define SPA_VF_WHOLE     0x40u /* a counted str/bytes with kept < len whose p holds all len bytes:
                               * zero-copy over an input in memory (spa_scan_mem, layer 2's
                               * bytes), which outlives the result; never for an opaque constant */

typedef struct spa_val spa_val;
struct spa_val {
    uint8_t kind;   /* spa_vkind */
    uint8_t flags;  /* SPA_VF_* */
    uint16_t opcode;/* the opcode byte that created it */
    uint32_t n;     /* containers: items recorded in u.seq (may be < count if TRUNC) */
    uint64_t off;   /* offset (stream-relative) of the creating opcode */
    union {
        int64_t i;       /* BOOL, INT */
        double f;        /* FLOAT */
        struct {         /* STR, BYTES, LONG */
            const uint8_t *p; /* kept bytes (arena copy or zero-copy pointer into input) */
            uint64_t len;     /* full length in the stream */
            uint64_t kept;    /* bytes available at p (<= len) */
        } s;
        struct {         /* TUPLE, LIST, DICT, SET, FROZENSET */
            spa_val **items;
            uint64_t count;   /* true number of items (dict: 2*pairs) */
            uint32_t cap;
            uint32_t refs;    /* VM bookkeeping: stack/container references of a memoised one */
            uint32_t memo_key;/* VM bookkeeping: its memo key (UINT32_MAX: several or too large) */
        } seq;
        struct {         /* GLOBAL */
            const char *module; /* as the loader resolves it (py2 compat mapping applied) */
            const char *name;   /* may be dotted under protocol >= 4 */
            const char *raw_module, *raw_name; /* as written in the stream */
        } g;
        struct {         /* CALL */
            const spa_val *callee;
            const spa_val *args;   /* tuple (may be UNKNOWN) */
            const spa_val *kwargs; /* NEWOBJ_EX kwargs or NULL */
            uint32_t ir;           /* index of its IR entry */
        } call;
        struct {
            const spa_val *pid; /* BINPERSID: the id value; PERSID: a STR */
        } persid;
    } u;
};

/* ------------------------------------------------------------------ IR */
/* What the stream would do, in execution order. Each entry carries the byte
 * offset of the opcode that does it (stream-relative). */
typedef enum spa_irkind {
    SPA_IR_IMPORT = 0, /* a global resolved (GLOBAL, STACK_GLOBAL, INST, EXT*): module, name */
    SPA_IR_CALL,       /* a call (REDUCE, NEWOBJ, NEWOBJ_EX, INST, OBJ): target=callee, arg=args */
    SPA_IR_BUILD,      /* BUILD: target = object, arg = state (calls __setstate__ or sets attrs) */
    SPA_IR_MUTATE,     /* APPEND(S)/SETITEM(S)/ADDITEMS onto something that is not a literal
                          list/dict/set (a global, a call result): target, arg = item(s) */
    SPA_IR_DISCARD,    /* POP/POP_MARK dropped a value that holds a call: target */
    SPA_IR_PERSID,     /* PERSID/BINPERSID: arg = the pid (calls persistent_load) */
    SPA_IR_NESTED,     /* a constant that is itself (an encoding of) a pickle: target = the constant;
                          nested_stream = index of the stream scanned from it, or -1 */
    SPA_IR_KIND_COUNT
} spa_irkind;

typedef struct spa_ir {
    uint8_t kind;     /* spa_irkind */
    uint8_t opcode;   /* opcode byte */
    uint16_t flags;
    uint32_t nested_stream; /* SPA_IR_NESTED: index into result streams, UINT32_MAX if none */
    uint64_t off;
    const char *module; /* IMPORT */
    const char *name;   /* IMPORT */
    const spa_val *target;
    const spa_val *arg;
    const spa_val *kwargs;
    const spa_val *result;
} spa_ir;

const char *spa_irkind_name(spa_irkind k); /* "import", "call", ... stable, for JSON */

/* ------------------------------------------------------------------ streams */
/* One pickle stream found in the input, with where it came from. */
typedef struct spa_stream {
    const char *loc;     /* provenance: "model.pt!archive/data.pkl", "m.joblib!zlib@0!stream@1234" */
    uint64_t start;      /* offset of the stream's first byte in its immediate container content */
    uint64_t end;        /* offset after STOP or where it ended */
    int proto;           /* highest PROTO seen, -1 if none (protocol 0/1) */
    uint32_t depth;      /* nesting depth (0 = top level) */
    uint32_t parent;     /* index of the enclosing stream for nested ones, UINT32_MAX if none */
    uint64_t nops;       /* opcodes executed */
    spa_ir *ir;
    size_t n_ir;
    spa_err err;         /* SPA_OK when it ended with STOP */
    spa_limit_id limit;  /* valid when err.code == SPA_E_LIMIT */
    bool complete;       /* reached STOP */
} spa_stream;

/* Container-level notes: unscannable wrappers, resync, limits, skipped members. */
typedef enum spa_notekind {
    SPA_NOTE_INFO = 0,
    SPA_NOTE_UNSCANNABLE, /* content that may bear a pickle could not be examined */
    SPA_NOTE_LIMIT,       /* a limit stopped examination */
    SPA_NOTE_RESYNC,      /* fell back to a resynchronising scan */
    SPA_NOTE_ERROR        /* structural error in a wrapper */
} spa_notekind;

typedef struct spa_note {
    spa_notekind kind;
    const char *loc;
    spa_err err;
    spa_limit_id limit;   /* for SPA_NOTE_LIMIT */
    const char *detail;   /* optional arena string */
} spa_note;

/* Content formats the recogniser knows: generated from formats.def (one
 * table: enum, names, tags, magics, readers). NONE = not pickle-bearing. */
typedef enum spa_format {
#define SPA_FMT(id, name, tag, magic, reader) SPA_FMT_##id,
#include "formats.def"
#undef SPA_FMT
    SPA_FMT_COUNT
} spa_format;
const char *spa_format_name(spa_format f);

/* ------------------------------------------------------------------ verdicts */
typedef enum spa_verdict {
    SPA_VERDICT_SAFE = 0,
    SPA_VERDICT_SUSPICIOUS,
    SPA_VERDICT_MALICIOUS,
    SPA_VERDICT_UNSCANNABLE,
    SPA_VERDICT_COUNT
} spa_verdict;
const char *spa_verdict_name(spa_verdict v);

typedef struct spa_reason {
    spa_verdict severity;  /* what this reason alone implies */
    const char *rule;      /* stable rule id, e.g. "callee.process_spawn" */
    const char *msg;       /* one line naming the call and key args */
    const char *loc;       /* stream provenance */
    uint64_t off;          /* byte offset in that stream */
} spa_reason;

/* One reason as a JSON object {severity, rule, msg, loc, off}: the shape of
 * reasons in `scan --format json` and in audit records. Caller owns it. */
struct cJSON;
struct cJSON *spa_reason_json(const spa_reason *x);

/* ------------------------------------------------------------------ results */
typedef struct spa_result {
    spa_arena *arena;     /* owns everything below */
    const char *path;     /* display name */
    spa_format format;    /* outermost format */
    bool pickle_bearing;  /* any stream found, or content that should have one */
    spa_stream *streams;
    size_t n_streams;
    spa_note *notes;
    size_t n_notes;
    uint64_t bytes_read;  /* bytes pulled from the source (for the streaming benchmark) */
    bool opens_judged;    /* spa_scan_opts.opens_judged, read by spa_classify */
    /* set by spa_classify */
    bool classified;
    spa_verdict verdict;
    spa_reason *reasons;
    size_t n_reasons;
} spa_result;

void spa_result_free(spa_result *r); /* NULL-safe; frees the arena */

/* ------------------------------------------------------------------ scanning */
/* Owner: analyzer/scan.c (containers). Scan everything pickle-bearing in a
 * source. On success *out is a result the caller frees with spa_result_free.
 * Returns SPA_OK, or an error code with *err filled (I/O, NOMEM, USAGE); a
 * malformed or hostile input is NOT an error: it is described in the result. */
typedef struct spa_scan_opts {
    spa_limits limits;
    const spa_alloc *alloc; /* NULL: malloc */
    const char *name;       /* display name used as the root of provenance strings */
    /* The process that loads this content judges every file it opens with the full
     * analyzer (the preload's layer 1 acts in it: spp_active, preload/init.c, is the one
     * owner of that fact and the only setter). Then a nested load of a file by path in a
     * proven shape (`@fileload` in the KB, classify.c cl_fileload_risk) is left to that
     * judgement at its open. false (the default; the CLI, the Python package): such a
     * load stays `callee.deserialize`, since nothing will judge the file it names. */
    bool opens_judged;
    int vm_path;            /* tests: 0 = every VM path (default); SPA_VM_PATH_FAST: no kinds-only
                               path; SPA_VM_PATH_GENERAL: neither it nor the fast loop (vm.c) */
} spa_scan_opts;
#define SPA_VM_PATH_FAST    1
#define SPA_VM_PATH_GENERAL 2

void spa_scan_opts_default(spa_scan_opts *o);
spa_code spa_scan_src(const spa_scan_opts *o, const spa_src *src, spa_result **out, spa_err *err);
spa_code spa_scan_mem(const spa_scan_opts *o, const uint8_t *p, size_t n, spa_result **out, spa_err *err);
spa_code spa_scan_path(const spa_scan_opts *o, const char *path, spa_result **out, spa_err *err);
/* THE recogniser (owner: analyzer/sniff.c), shared by the preload and every
 * content spa_scan_src dispatches: is this source pickle-bearing, and as
 * what? It reads a 512-byte head (4 KiB when it may be a pickle) and the
 * tail where a zip's end record sits (searched over the last 64 KiB + 22
 * bytes, as zipfile does), only through src->pread, and allocates nothing.
 * *fmt = SPA_FMT_NONE means no loader could unpickle anything from it.
 * Returns SPA_OK, or SPA_E_IO when a read failed (never treat that as NONE).
 * It may say "pickle-bearing" where spa_scan_src then finds nothing (e.g. a
 * safetensors header); it never says NONE where spa_scan_src would find a
 * stream. */
spa_code spa_recognise(const spa_src *src, uint8_t *scratch, size_t cap, spa_format *fmt);
/* Scratch that lets spa_recognise read the tail in one go (else it reads it
 * in 2 KiB pieces on its stack): the last 64 KiB + 22 bytes. */
#define SPA_RECOG_SCRATCH (65536u + 22u)

/* ------------------------------------------------------------------ policy */
/* Owner: analyzer/policy.c. Parsed from JSON with cJSON into this plain
 * struct; no cJSON tree is kept. Free with spa_policy_free. */
typedef enum spa_mode { SPA_MODE_ENFORCE = 0, SPA_MODE_AUDIT, SPA_MODE_OFF } spa_mode;
typedef enum spa_action { SPA_ACT_ALLOW = 0, SPA_ACT_WARN, SPA_ACT_BLOCK } spa_action;
const char *spa_mode_name(spa_mode m);
const char *spa_action_name(spa_action a);

typedef struct spa_strv { char **v; size_t n; } spa_strv;

typedef struct spa_policy {
    char *name;                 /* policy "name" */
    char *source;               /* file path, or "<embedded default>" */
    spa_mode mode;
    spa_action on_verdict[SPA_VERDICT_COUNT]; /* action per verdict */
    spa_action on_limit;        /* content where a limit stopped the scan */
    spa_action on_error;        /* fail mode: internal error on pickle-bearing content */
    spa_strv allow_globals;     /* patterns "module.prefix.*" or "module:name" (fnmatch) */
    spa_strv deny_globals;
    spa_strv trusted_paths;     /* fnmatch globs on the absolute path */
    uint8_t (*trusted_sha256)[32];
    size_t n_trusted_sha256;
    spa_limits limits;
    char *audit_log;            /* path, "stderr", "stdout", or NULL for none */
    spa_strv targets;           /* executable basename globs the preload acts in, e.g. "python*" */
    int block_errno;            /* errno of a refused open (default EACCES) */
    bool layer_file;            /* layer 1: file hooks */
    bool layer_audit_hook;      /* layer 2: PEP 578 hook */
    bool runtime_behaviour;     /* layer 2: veto os.system & co. during an unpickle */
    spa_strv runtime_allow_imports; /* modules importable during an unpickle */
    bool require_index;         /* the environment index must be present, readable and fresh */
} spa_policy;

spa_code spa_policy_parse(const char *json, size_t n, const char *source,
                          spa_policy **out, spa_err *err); /* err->off = byte position */
spa_code spa_policy_load(const char *path, spa_policy **out, spa_err *err);
spa_code spa_policy_default(spa_policy **out); /* the embedded default.json */
const char *spa_policy_default_json(size_t *n);
void spa_policy_free(spa_policy *p);
/* Is this global allowed/denied by the policy's explicit rules? 1 allow, -1 deny, 0 none. */
int spa_policy_global_rule(const spa_policy *p, const char *module, const char *name);
bool spa_policy_trusts_path(const spa_policy *p, const char *abspath);
bool spa_policy_trusts_digest(const spa_policy *p, const uint8_t sha256[32]);
/* The action for a classified result (mode, verdict, limits, trust applied). */
spa_action spa_policy_decide(const spa_policy *p, const spa_result *r);
/* Is a layer in force? (its switch on and the mode not off; NULL policy: every
 * layer, which then refuses: a broken policy fails closed) */
typedef enum spa_layer { SPA_LAYER_FILE = 0, SPA_LAYER_AUDIT_HOOK, SPA_LAYER_BEHAVIOUR } spa_layer;
bool spa_policy_layer_on(const spa_policy *p, spa_layer l);
/* Does the policy require the environment index (`require_index`, the mode not off) while
 * the index is missing, unreadable or stale? Then true, with why (one line) in `why`: the
 * caller refuses to judge anything (the CLI exits 2, the preload refuses every
 * pickle-bearing file). Loads the index. */
bool spa_policy_index_unmet(const spa_policy *p, char *why, size_t n);
/* An action as the policy's mode lets it stand (off: allow; audit: block -> warn). */
spa_action spa_policy_act(const spa_policy *p, spa_action a);
/* One trusted.sha256 entry: 64 hex digits, optionally "  NAME" (sha256sum's line). */
bool spa_policy_trusted_entry(const char *s, uint8_t out[32]);
/* "enforce" | "audit" | "off"; false for anything else. */
bool spa_mode_parse(const char *s, spa_mode *out);
/* The environment overrides, applied by every reader of the policy (preload,
 * layer 2, doctor): SAFEPICKLE_MODE (garbage means enforce, and `note` says
 * so), SAFEPICKLE_TARGETS (globs separated by ',' or ':'; empty = unset; a
 * value with no pattern or over the list limits is an error, never cut). */
spa_code spa_policy_apply_env(spa_policy *p, const char *mode_env, const char *targets_env, char *note,
                              size_t note_sz, spa_err *err);
/* Targeting: the preload acts in a process that runs Python (CPython's
 * embedding symbols defined in the executable or a loaded library, or a
 * python / pypy executable name) and whose executable basename matches one of
 * `targets` (they only narrow). */
typedef enum spa_targeting { SPA_TARGET_ACT = 0, SPA_TARGET_NOT_PYTHON, SPA_TARGET_EXCLUDED } spa_targeting;
extern const char *const spa_python_symbols[]; /* NULL-terminated */
bool spa_exe_name_is_python(const char *basename);
bool spa_lib_name_is_python(const char *path);  /* libpython3.11.so.1.0, ... */
spa_targeting spa_policy_target(const spa_policy *p, const char *exe, bool runs_python);
const char *spa_target_name(spa_targeting t);
/* Does this ELF file (p, n bytes) define one of spa_python_symbols in its
 * dynamic symbol table? (analyzer/pyexe.c; doctor inspects other processes) */
bool spa_elf_defines_python(const uint8_t *p, size_t n);
/* The policy text with `entries` appended to trusted.sha256 (the list, the key
 * or the object created as needed); every other byte is kept. *out is malloc'd. */
spa_code spa_policy_add_trusted(const char *json, size_t n, const char *const *entries, size_t ne, char **out,
                                size_t *outn, spa_err *err);

/* ------------------------------------------------------------------ classifier */
/* Owner: analyzer/classify.c + analyzer/kb.c. Fills r->verdict and reasons. */
spa_code spa_classify(spa_result *r, const spa_policy *p);
/* Does a classified result reach only callables the knowledge base knows to be data-safe
 * with the arguments they are given? True when it is safe, or suspicious only because
 * data constructors receive code-like text (args.code_like: an exception message quoting
 * a traceback), every reason kept. Layer 2 lets the libraries' own code run unvetoed in
 * such a load (preload/README.md, "A veto that does not misfire"). */
bool spa_result_data_only(const spa_result *r);

typedef enum spa_kbcat {
    SPA_KB_UNKNOWN = 0,     /* not in the knowledge base */
    SPA_KB_DATA,            /* data constructors, ML reconstructors: safe to call */
    SPA_KB_CODE_EXEC,
    SPA_KB_PROCESS,
    SPA_KB_NETWORK,
    SPA_KB_FILE_WRITE,
    SPA_KB_IMPORT,
    SPA_KB_REFLECTION,
    SPA_KB_DESERIALIZE,
    SPA_KB_NATIVE,
    SPA_KB_STATE_MUTATION,
    SPA_KB_STDLIB_OTHER,    /* stdlib callable outside the data-safe set */
    SPA_KB_COUNT
} spa_kbcat;
const char *spa_kbcat_name(spa_kbcat c);
/* Judge one resolved global by name only (used by the PEP 578 layer too). */
spa_kbcat spa_kb_lookup(const char *module, const char *name);
spa_verdict spa_judge_global(const spa_policy *p, const char *module, const char *name,
                             const char **rule, char *msg, size_t msgsz);

#ifdef __cplusplus
}
#endif

/* ------------------------------------------------------------------ verdict cache location */
/* The persistent verdict cache shared by a user's processes (analyzer/vcache.c;
 * entries are written and read by the preload, preload/pcache.c). Directory:
 * $SAFEPICKLE_CACHE ("off" disables it), else $XDG_CACHE_HOME/safepickle, else
 * $HOME/.cache/safepickle. spa_vcache_dir: false (and *why) when disabled.
 * spa_vcache_open_dir: an fd of the directory (created 0700 if asked) only if
 * the effective user owns it and nobody else can write it, else -1 and *why.
 * spa_vcache_open_entry: an fd of a regular file of that user, mode 0600 or
 * stricter, one link, at most max_size bytes (O_NOFOLLOW, O_NONBLOCK), or -1.
 * The caller closes the fds. */
bool spa_vcache_dir(char *out, size_t n, const char **why);
int spa_vcache_open_dir(const char *dir, bool create, const char **why);
int spa_vcache_open_entry(int dirfd, const char *name, uint64_t max_size);

#endif /* SPA_H */
