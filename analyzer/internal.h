/* internal.h - analyzer-internal interfaces between the VM (vm.c, reader.c,
 * ctx.c) and the container layer (scan.c, zip.c, ...). Not installed; the
 * CLI and preload use spa.h only. */
#ifndef SPA_INTERNAL_H
#define SPA_INTERNAL_H

#include "spa.h"

/* ------------------------------------------------------------------ input */
/* A bounded, forward-only, windowed reader. Over a memory source it is
 * zero-copy; over a file or a decompressor it keeps a bounded window, so a
 * large file is never slurped. Owner: analyzer/reader.c. */
typedef struct spa_in spa_in;

/* Sequential producer (a decompressor): returns bytes read, 0 at EOF, -1 error. */
typedef ssize_t (*spa_seq_read)(void *ctx, void *buf, size_t len);

spa_in *spa_in_from_src(spa_arena *ar, const spa_src *src, uint64_t start, uint64_t end);
spa_in *spa_in_from_seq(spa_arena *ar, spa_seq_read rd, void *ctx);
/* Make at least `want` bytes available at the current position (want <= the
 * window size). *p points at them, *got is how many are available (may be
 * < want only at EOF). Returns SPA_OK or SPA_E_IO/SPA_E_NOMEM. */
spa_code spa_in_peek(spa_in *in, size_t want, const uint8_t **p, size_t *got);
spa_code spa_in_skip(spa_in *in, uint64_t n);   /* SPA_E_TRUNCATED if EOF first */
uint64_t spa_in_pos(const spa_in *in);           /* offset in the content */
bool spa_in_eof(spa_in *in);
uint64_t spa_in_bytes_read(const spa_in *in);    /* bytes pulled from the underlying source */
bool spa_in_is_seq(const spa_in *in);            /* reads a producer (e.g. a decompressor), not stored bytes */

/* ------------------------------------------------------------------ scan context */
/* One per scan. Owns the arena and accumulates streams and notes; the VM and
 * every container reader append to it. Owner: analyzer/ctx.c. */
typedef struct spa_scan_ctx spa_scan_ctx;

struct spa_vm_hooks;
spa_scan_ctx *spa_ctx_create(const spa_scan_opts *o);
spa_arena *spa_ctx_arena(spa_scan_ctx *sc);
const spa_limits *spa_ctx_limits(const spa_scan_ctx *sc);
/* Append a stream record; returns its index (or UINT32_MAX on OOM/limit). */
uint32_t spa_ctx_add_stream(spa_scan_ctx *sc, const spa_stream *s);
spa_stream *spa_ctx_stream(spa_scan_ctx *sc, uint32_t idx);
void spa_ctx_note(spa_scan_ctx *sc, spa_notekind k, const char *loc, spa_err err,
                  spa_limit_id lim, const char *detail);
/* printf-style provenance builder: returns an arena string. */
const char *spa_ctx_loc(spa_scan_ctx *sc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void spa_ctx_set_hooks(spa_scan_ctx *sc, const struct spa_vm_hooks *h);
/* For tests: the VM runs every opcode through its general path, without the
 * fast loop, so the two can be checked to give the same result. */
void spa_ctx_set_vm_general(spa_scan_ctx *sc, bool general);
bool spa_ctx_vm_general(const spa_scan_ctx *sc);
/* tests: no kinds-only path (the fast loop stays; see vm.c "kinds") */
void spa_ctx_set_vm_nokinds(spa_scan_ctx *sc, bool nokinds);
bool spa_ctx_vm_nokinds(const spa_scan_ctx *sc);
const struct spa_vm_hooks *spa_ctx_hooks(const spa_scan_ctx *sc);
/* Turn the context into a result (the result takes the arena). */
spa_result *spa_ctx_finish(spa_scan_ctx *sc, spa_format fmt, uint64_t bytes_read);
void spa_ctx_destroy(spa_scan_ctx *sc); /* only when not finished */

/* ------------------------------------------------------------------ VM */
/* Callbacks from the VM to the container layer (joblib arrays, nested pickles). */
typedef enum spa_build_act {
    SPA_BUILD_NONE = 0,   /* continue normally */
    SPA_BUILD_SKIP,       /* skip *skip raw bytes (joblib array data), then continue */
    SPA_BUILD_NESTED,     /* a complete nested pickle stream follows inline (object arrays):
                             run it as its own stream, then continue the outer one */
    SPA_BUILD_RESYNC      /* size not computable: resynchronise to the next plausible opcode */
} spa_build_act;

typedef struct spa_vm_hooks {
    /* After BUILD of `target` with `state`. */
    spa_build_act (*after_build)(void *ud, spa_scan_ctx *sc, const spa_val *target,
                                 const spa_val *state, uint64_t *skip);
    /* A str/bytes constant was created (first kept bytes available); the hook may
     * scan it as a nested pickle and return the new stream index, or UINT32_MAX. */
    uint32_t (*on_const)(void *ud, spa_scan_ctx *sc, const spa_val *v, uint32_t depth,
                         uint32_t parent_stream);
    /* A bytes constant of len > n bytes: true when its first n bytes show
     * opaque binary data that no nested-content reading could accept whatever
     * follows; the VM then keeps only those n bytes (SPA_VOP_OPAQUE). */
    bool (*opaque)(void *ud, const uint8_t *p, size_t n, uint64_t len);
    void *ud;
    size_t on_const_min;  /* constants with fewer kept bytes are not offered to on_const */
    /* The VM's kinds-only path (vm.c): true only when on_const would surely
     * return UINT32_MAX and change nothing for a str/bytes value of kind k,
     * kept bytes p[0..kept) of len, all of them at p when whole (the value
     * would be SPA_VF_WHOLE; all on_const may read of it). NULL: never (that
     * path then leaves every stream with an offered constant to the general
     * one). */
    bool (*const_inert)(void *ud, spa_vkind k, const uint8_t *p, uint64_t kept, uint64_t len, bool whole);
    /* const_inert's answer for short constants, as data the kinds-only
     * path reads without a call (NULL: none): const_inert says true for
     * every constant of n >= on_const_min bytes, starting with byte c, that
     * is bytes or all-ASCII text, when n < const_short[c]. The hook's owner
     * fills it (nested.c, spc_nested_gate). */
    const uint8_t *const_short;
} spa_vm_hooks;

/* Run one pickle stream from the current position of `in` until STOP, error
 * or limit. Appends a stream record (loc, depth, parent) and returns its index
 * in *idx. Leaves `in` positioned after STOP (or where it failed). The return
 * value is SPA_OK unless the scan itself could not proceed (NOMEM, IO). */
spa_code spa_vm_run(spa_scan_ctx *sc, spa_in *in, const char *loc, uint32_t depth,
                    uint32_t parent, uint32_t *idx);

#endif /* SPA_INTERNAL_H */
