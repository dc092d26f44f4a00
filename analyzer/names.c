/* names.c - stable names of the analyzer's enums (used as JSON/policy keys),
 * the default limits, result release and the two stock byte sources. */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "spa.h"

const char *spa_code_name(spa_code c) {
    static const char *const n[SPA_CODE_COUNT] = {
        "ok", "truncated", "bad_opcode", "bad_arg", "stack", "memo", "mark", "format",
        "unsupported", "limit", "nomem", "io", "policy", "usage", "internal",
    };
    return (unsigned)c < SPA_CODE_COUNT ? n[c] : "unknown";
}

const char *spa_limit_name(spa_limit_id id) {
    static const char *const n[SPA_LIM_COUNT] = {
        "max_ops", "max_stack", "max_marks", "max_memo", "max_memo_key", "max_str",
        "max_bytes", "max_streams", "max_nest", "max_decomp_bytes", "max_decomp_ratio",
        "max_members", "max_ir", "max_open_ms", "max_open_bytes",
    };
    return (unsigned)id < SPA_LIM_COUNT ? n[id] : "unknown";
}

/* Defaults: generous enough for multi-GB models, small enough that a hostile
 * file cannot exhaust memory. Documented in README (section analyzer). */
void spa_limits_default(spa_limits *l) {
    l->v[SPA_LIM_OPS] = 1000000000ull;          /* opcodes per stream */
    l->v[SPA_LIM_STACK] = 4000000ull;           /* values on the stack */
    l->v[SPA_LIM_MARKS] = 1000000ull;           /* open MARKs */
    l->v[SPA_LIM_MEMO] = 20000000ull;           /* distinct memo keys */
    l->v[SPA_LIM_MEMO_KEY] = (uint64_t)INT64_MAX; /* largest memo key accepted (CPython: Py_ssize_t) */
    l->v[SPA_LIM_STR] = 1ull << 20;             /* bytes kept of one str/bytes constant */
    l->v[SPA_LIM_BYTES] = 64ull << 30;          /* bytes examined per file */
    l->v[SPA_LIM_STREAMS] = 10000ull;           /* pickle streams per file */
    l->v[SPA_LIM_NEST] = 16ull;                 /* nesting of containers/nested pickles */
    l->v[SPA_LIM_DECOMP_BYTES] = 16ull << 30;   /* decompressed bytes per wrapper */
    l->v[SPA_LIM_DECOMP_RATIO] = 10000ull;      /* decompressed/compressed */
    l->v[SPA_LIM_MEMBERS] = 100000ull;          /* archive members */
    l->v[SPA_LIM_IR] = 8000000ull;              /* IR entries per stream */
    l->v[SPA_LIM_OPEN_MS] = 30000ull;           /* one scan, all of it: 30 s */
    l->v[SPA_LIM_OPEN_BYTES] = 32ull << 30;     /* one scan, all of it: 32 GiB read + decompressed */
}

const char *spa_irkind_name(spa_irkind k) {
    static const char *const n[SPA_IR_KIND_COUNT] = {
        "import", "call", "build", "mutate", "discard", "persid", "nested",
    };
    return (unsigned)k < SPA_IR_KIND_COUNT ? n[k] : "unknown";
}

const char *spa_verdict_name(spa_verdict v) {
    static const char *const n[SPA_VERDICT_COUNT] = { "safe", "suspicious", "malicious", "unscannable" };
    return (unsigned)v < SPA_VERDICT_COUNT ? n[v] : "unknown";
}

const char *spa_format_name(spa_format f) {
    static const char *const n[SPA_FMT_COUNT] = {
#define SPA_FMT(id, name, tag, magic, reader) name,
#include "formats.def"
#undef SPA_FMT
    };
    return (unsigned)f < SPA_FMT_COUNT ? n[f] : "unknown";
}

void spa_result_free(spa_result *r) {
    if (!r) return;
    spa_arena_destroy(r->arena); /* the result struct itself lives in its arena */
}

/* ------------------------------------------------------------------ sources */
static ssize_t spa_mem_pread(void *ctx, void *buf, size_t len, uint64_t off) {
    const spa_src *s = ctx;
    if (off >= s->size) return 0;
    uint64_t left = s->size - off;
    size_t n = len < left ? len : (size_t)left;
    memcpy(buf, s->mem + off, n);
    return (ssize_t)n;
}

void spa_src_mem(spa_src *s, const uint8_t *p, size_t n) {
    s->pread = spa_mem_pread;
    s->ctx = s; /* the struct must stay where it is while in use */
    s->size = n;
    s->mem = p;
}

static ssize_t spa_fd_pread(void *ctx, void *buf, size_t len, uint64_t off) {
    int fd = (int)(intptr_t)ctx;
    for (;;) {
        ssize_t r = pread(fd, buf, len, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        return r;
    }
}

void spa_src_fd(spa_src *s, int fd, uint64_t size) {
    s->pread = spa_fd_pread;
    s->ctx = (void *)(intptr_t)fd;
    s->size = size;
    s->mem = NULL;
}
