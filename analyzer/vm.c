/* vm.c - the pickle VM emulator (spa_vm_run): executes one pickle stream
 * symbolically, opcode by opcode, as CPython 3.11's C unpickler
 * (Modules/_pickle.c) would, and records an IR of what it would do.
 * Where the C and the pure-Python unpickler differ, the VM takes the more
 * lenient reading so that its IR is a superset of what either would do. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "opcodes.h"
#include "reader.h"
#include "vm.h"

/* ================================================================ constants */
#define VM_KEEP_PLAIN   8u      /* plain items a container keeps (dict: pairs) */
#define VM_MAX_LINE_WIN (64u << 20)
#define VM_NCLS 9               /* byte size classes 16..4096 recycled */
#define VM_HOT static inline __attribute__((always_inline))

/* ================================================================ state */
typedef struct vm_memo {
    spa_val **dense;            /* keys below dlen (dense[dlen..dcap) is not initialised) */
    size_t dcap, dlen;
    uint64_t *keys;             /* hash map for the other keys */
    spa_val **vals;             /* NULL = empty slot */
    size_t cap, hcount;         /* cap is a power of two */
    size_t count;               /* distinct keys (MEMOIZE uses it) */
    /* pruning (spa_vm_getkeys): only keys with a bit in get[] are kept;
     * the others are only counted, as bits in def[] (or VM_MEMO_PRUNED
     * entries of the hash map for keys beyond it) */
    bool prune;
    uint64_t *get, nget;        /* nget bits */
    uint64_t *def, ndef;        /* ndef bits: keys dbase.. (see vm_def_has) */
    uint64_t dbase;             /* every key below it is defined */
    size_t npruned;             /* of count */
} vm_memo;

typedef struct vm {
    spa_scan_ctx *sc;
    spa_arena *ar;
    const spa_limits *lim;
    spa_in *in;
    const spa_vm_hooks *hooks;
    uint32_t idx, depth;
    uint64_t start;             /* content offset of the stream's first byte */
    bool stable;                /* zero-copy input */
    bool general;               /* no fast loop (spa_ctx_set_vm_general) */
    bool nokinds;               /* no kinds-only path (spa_ctx_set_vm_nokinds) */
    bool kbail;                 /* the kinds-only path gave the stream to the general one */
    uint8_t *kst;               /* the kinds-only path's stack (VK_*; m->sp is its depth) */
    size_t kcap;
    const uint8_t *mem_lo, *mem_hi; /* stable input range (to tell zero-copy views) */
    int proto;                  /* current protocol (find_class mapping) */
    int max_proto;
    uint64_t nops;
    spa_val **stack;
    size_t sp, scap;
    size_t *marks;
    size_t nmarks, mcap;
    vm_memo memo;
    spa_ir *ir;
    size_t nir, ircap;
    spa_val *free_vals;
    void *free_cls[VM_NCLS];
    spa_err err;
    spa_limit_id limit;
    bool complete;
    bool fatal;                 /* NOMEM/IO: spa_vm_run returns it */
    bool halt;                  /* err set or complete: vm_fast's one test after each opcode (set
                                   wherever those are: vm_fail, vm_limit, vm_nomem, STOP) */
    /* C file-mode framing: see vm_cf_pre */
    bool cfile;                 /* emulate it (second pass) */
    bool frame_cross;           /* a read ran past a frame's end */
    uint64_t cf_end;            /* content offset where the C unpickler's buffer ends */
    uint64_t lim_stack;         /* copy of max_stack (hot path) */
} vm;

/* ================================================================ allocation */
/* Values live in the scan arena. Values nobody else references (not SHARED)
 * are recycled when dropped, so a long stream of plain data runs in constant
 * memory; byte buffers up to 4 KiB are recycled by size class. */
VM_HOT int vm_cls(size_t n) {
    if (n <= 16) return 0;
    int c = (64 - __builtin_clzll((unsigned long long)(n - 1))) - 4; /* 16 << c >= n */
    return c < VM_NCLS ? c : -1;
}

VM_HOT void *vm_balloc(vm *m, size_t n) {
    int c = vm_cls(n);
    if (c >= 0) {
        void *p = m->free_cls[c];
        if (p) {
            m->free_cls[c] = *(void **)p;
            __builtin_prefetch(m->free_cls[c], 1);   /* the next vm_balloc reads its link */
            return p;
        }
        return spa_arena_alloc(m->ar, (size_t)16 << c);
    }
    return spa_arena_alloc(m->ar, n);
}

VM_HOT void vm_bfree(vm *m, void *p, size_t n) {
    int c = vm_cls(n);
    if (!p || c < 0) return;
    *(void **)p = m->free_cls[c];
    m->free_cls[c] = p;
}

static void vm_nomem(vm *m, uint64_t off) {
    if (m->err.code == SPA_OK) m->err = (spa_err){ SPA_E_NOMEM, "out of memory", off };
    m->fatal = m->halt = true;
}

VM_HOT spa_val *vm_new(vm *m, spa_vkind k, uint8_t op, uint64_t off) {
    spa_val *v = m->free_vals;
    if (v) {
        m->free_vals = (spa_val *)(void *)v->u.seq.items;
        __builtin_prefetch(m->free_vals, 1);   /* the next vm_new reads its link */
    } else if (!(v = spa_arena_alloc(m->ar, sizeof *v))) { vm_nomem(m, off); return NULL; }
    v->kind = (uint8_t)k;
    v->flags = (k == SPA_V_GLOBAL || k == SPA_V_CALL || k == SPA_V_PERSID || k == SPA_V_UNKNOWN ||
                k == SPA_V_BUFFER) ? SPA_VFX_HOT : 0;
    v->opcode = op;
    v->n = 0;
    v->off = off;
    memset(&v->u, 0, sizeof v->u);
    return v;
}

static bool vm_is_seq(const spa_val *v) {
    return v->kind >= SPA_V_TUPLE && v->kind <= SPA_V_FROZENSET;
}

static inline bool vm_owns_bytes(const vm *m, const spa_val *v) {
    if (v->kind != SPA_V_STR && v->kind != SPA_V_BYTES && v->kind != SPA_V_LONG) return false;
    if (!v->u.s.p || (v->opcode & SPA_VOP_BORROWED)) return false;
    if (m->stable && v->u.s.p >= m->mem_lo && v->u.s.p < m->mem_hi) return false;
    return true;
}

/* Drop a value no longer referenced from the stack: recycle it (and its
 * unshared items) unless something else holds it. */
#define VM_DROP_DEPTH 64 /* deeper unshared nests are left to the arena */
static void vm_drop_d(vm *m, spa_val *v, int depth);
VM_HOT void vm_drop_item(vm *m, spa_val *v, int depth);

/* Ask for the first items of a container about to be dropped all at once
 * (they are usually cold: their loads then overlap). */
#define VM_PREFETCH_ITEMS 16u
VM_HOT void vm_prefetch_items(const spa_val *v) {
    uint32_t n = v->n < VM_PREFETCH_ITEMS ? v->n : VM_PREFETCH_ITEMS;
    for (uint32_t i = 0; i < n; i++) __builtin_prefetch(v->u.seq.items[i]);
}

/* Memo bookkeeping of a memoised container (spa_val.u.seq.refs, memo_key). */
#define VM_MEMO_NOKEY UINT32_MAX /* in the memo under several keys, or a key >= 2^32 */
static spa_val **vm_memo_slot(vm *m, uint64_t key);
static spa_val *vm_memo_raw(vm *m, uint64_t key);
static spa_val *vm_memo_summary(spa_vkind k, uint64_t count);

/* A memoised container dropped from the stack or from a parent. Its refs
 * count the stack slots and containers that hold it (one from its creation,
 * one per memo GET; the memo's own is not counted). A plain-data one releases
 * its items at once, so memoised data costs at most one node per object; when
 * its last reference goes and the memo holds it under one known key, the memo
 * keeps a summary (kind, count) instead, as for tuples, and the node is
 * recycled too. Containers holding a global/call/persid (HOT) or referenced
 * from the IR (PINNED) keep everything. */
static void vm_drop_shared(vm *m, spa_val *v, int depth) {
    if (!vm_is_seq(v)) return;
    if (v->u.seq.refs) v->u.seq.refs--;
    if (v->flags & (SPA_VFX_HOT | SPA_VFX_PINNED)) return;
    if (v->u.seq.cap) {
        vm_prefetch_items(v);
        for (uint32_t i = 0; i < v->n; i++) vm_drop_item(m, v->u.seq.items[i], depth + 1);
        vm_bfree(m, v->u.seq.items, (size_t)v->u.seq.cap * sizeof(spa_val *));
        v->u.seq.items = NULL;
        v->u.seq.cap = 0;
        if (v->n) v->flags |= SPA_VF_TRUNC;
        v->n = 0;
    }
    if (v->u.seq.refs || v->u.seq.memo_key == VM_MEMO_NOKEY || v->u.seq.count >= (1ull << 48)) return;
    /* only the memo holds it (if its key still names it: a redefined key
     * left it held by nothing) */
    if (vm_memo_raw(m, v->u.seq.memo_key) == v)
        *vm_memo_slot(m, v->u.seq.memo_key) = vm_memo_summary((spa_vkind)v->kind, v->u.seq.count);
    v->u.seq.items = (spa_val **)(void *)m->free_vals;
    m->free_vals = v;
}

/* An item of a container being dropped: plain scalars straight back (as in
 * vm_drop), anything else one level deeper. */
#define VM_KBIT(k) (1u << (k))
#define VM_PLAIN_SCALAR (VM_KBIT(SPA_V_UNKNOWN) | VM_KBIT(SPA_V_NONE) | VM_KBIT(SPA_V_BOOL) | \
                         VM_KBIT(SPA_V_INT) | VM_KBIT(SPA_V_FLOAT))
VM_HOT void vm_drop_item(vm *m, spa_val *v, int depth) {
    if (!v) return;
    if (!(v->flags & SPA_VFX_SHARED)) {
        uint32_t kb = VM_KBIT(v->kind);
        if (kb & (VM_PLAIN_SCALAR | VM_KBIT(SPA_V_STR) | VM_KBIT(SPA_V_BYTES))) {
            /* (vm_drop_d's str/bytes case, without its checks) */
            if ((kb & (VM_KBIT(SPA_V_STR) | VM_KBIT(SPA_V_BYTES))) && vm_owns_bytes(m, v))
                vm_bfree(m, (void *)v->u.s.p, (size_t)v->u.s.kept ? (size_t)v->u.s.kept : 1);
            v->u.seq.items = (spa_val **)(void *)m->free_vals;
            m->free_vals = v;
            return;
        }
    }
    vm_drop_d(m, v, depth);
}

/* Anything but a plain scalar (vm_drop_item takes those). */
static void vm_drop_d(vm *m, spa_val *v, int depth) {
    if (!v || v->kind == SPA_V_MARK || depth > VM_DROP_DEPTH) return;
    if (v->flags & SPA_VFX_SHARED) { vm_drop_shared(m, v, depth); return; }
    if (vm_is_seq(v)) {
        vm_prefetch_items(v);
        for (uint32_t i = 0; i < v->n; i++) vm_drop_item(m, v->u.seq.items[i], depth + 1);
        vm_bfree(m, v->u.seq.items, (size_t)v->u.seq.cap * sizeof(spa_val *));
    } else if (vm_owns_bytes(m, v)) {
        vm_bfree(m, (void *)v->u.s.p, (size_t)v->u.s.kept ? (size_t)v->u.s.kept : 1);
    }
    v->u.seq.items = (spa_val **)(void *)m->free_vals;
    m->free_vals = v;
}

VM_HOT void vm_drop(vm *m, spa_val *v) {
    if (v) vm_drop_item(m, v, 0);
}

/* vm_drop for vm_fill, whose look-ahead has already asked for v's items. */
VM_HOT void vm_drop_fetched(vm *m, spa_val *v) {
    if (v && vm_is_seq(v) && !(v->flags & SPA_VFX_SHARED)) {
        for (uint32_t i = 0; i < v->n; i++) vm_drop_item(m, v->u.seq.items[i], 1);
        vm_bfree(m, v->u.seq.items, (size_t)v->u.seq.cap * sizeof(spa_val *));
        v->u.seq.items = (spa_val **)(void *)m->free_vals;
        m->free_vals = v;
        return;
    }
    vm_drop(m, v);
}

/* Referenced from the memo: released when dropped (see vm_drop_shared). */
static void vm_share(spa_val *v) { if (v) v->flags |= SPA_VFX_SHARED; }
/* Referenced from the IR or from a second stack slot: kept as it is. */
static void vm_pin(spa_val *v) {
    if (!v) return;
    v->flags |= SPA_VFX_SHARED;
    if (vm_is_seq(v)) v->flags |= SPA_VFX_PINNED;
}

/* ================================================================ errors */
static void vm_fail(vm *m, spa_code c, const char *msg, uint64_t off) {
    if (m->err.code == SPA_OK) m->err = (spa_err){ c, msg, off };
    m->halt = true;
}

static void vm_limit(vm *m, spa_limit_id id, const char *msg, uint64_t off) {
    if (m->err.code == SPA_OK) {
        m->err = (spa_err){ SPA_E_LIMIT, msg, off };
        m->limit = id;
    }
    m->halt = true;
}

/* ================================================================ stack */
VM_HOT bool vm_push(vm *m, spa_val *v, uint64_t off) {
    if (!v) return false;
    if (m->sp >= m->lim_stack) {
        vm_limit(m, SPA_LIM_STACK, "stack depth limit", off);
        vm_drop(m, v);
        return false;
    }
    if (m->sp == m->scap) {
        size_t nc = m->scap ? m->scap * 2 : 256;
        spa_val **ns = realloc(m->stack, nc * sizeof *ns);
        if (!ns) { vm_nomem(m, off); vm_drop(m, v); return false; }
        m->stack = ns;
        m->scap = nc;
    }
    m->stack[m->sp++] = v;
    return true;
}

VM_HOT size_t vm_fence(const vm *m) { return m->nmarks ? m->marks[m->nmarks - 1] : 0; }

/* Pop one value above the fence (C: PDATA_POP / Pdata_pop). */
VM_HOT spa_val *vm_pop(vm *m, uint64_t off) {
    if (m->sp <= vm_fence(m)) {
        vm_fail(m, SPA_E_STACK, m->nmarks ? "unexpected MARK found" : "unpickling stack underflow", off);
        return NULL;
    }
    return m->stack[--m->sp];
}

static spa_val *vm_top(vm *m, uint64_t off) {
    if (m->sp <= vm_fence(m)) {
        vm_fail(m, SPA_E_STACK, m->nmarks ? "unexpected MARK found" : "unpickling stack underflow", off);
        return NULL;
    }
    return m->stack[m->sp - 1];
}

/* Pop the topmost MARK (C: marker()); returns the stack index it marked. */
static bool vm_marker(vm *m, size_t *at, uint64_t off) {
    if (!m->nmarks) { vm_fail(m, SPA_E_MARK, "could not find MARK", off); return false; }
    *at = m->marks[--m->nmarks];
    return true;
}

/* ================================================================ containers */
static bool vm_seq_grow(vm *m, spa_val *c, uint32_t want, uint64_t off) {
    uint32_t nc = c->u.seq.cap ? c->u.seq.cap * 2 : 4;
    while (nc < want) nc *= 2;
    spa_val **ni = vm_balloc(m, (size_t)nc * sizeof *ni);
    if (!ni) { vm_nomem(m, off); return false; }
    if (c->n) memcpy(ni, c->u.seq.items, c->n * sizeof *ni);
    vm_bfree(m, c->u.seq.items, (size_t)c->u.seq.cap * sizeof *ni);
    c->u.seq.items = ni;
    c->u.seq.cap = nc;
    return true;
}

VM_HOT bool vm_seq_reserve(vm *m, spa_val *c, uint32_t want, uint64_t off) {
    return want <= c->u.seq.cap || vm_seq_grow(m, c, want, off);
}

/* Add `k` items (k = 1, or 2 for a dict pair) to container c. Plain items are
 * kept up to VM_KEEP_PLAIN (pairs for dicts); items that hold a global, call
 * or persistent id are always kept. Ownership of the items moves to c. */
VM_HOT void vm_seq_add(vm *m, spa_val *c, spa_val **items, uint32_t k, uint64_t off) {
    bool hot = false;
    for (uint32_t i = 0; i < k; i++) hot |= (items[i]->flags & SPA_VFX_HOT) != 0;
    c->u.seq.count += k;
    uint32_t keep = (c->kind == SPA_V_DICT) ? 2 * VM_KEEP_PLAIN : VM_KEEP_PLAIN;
    if ((hot || c->n < keep) && c->n < UINT32_MAX - 2 && vm_seq_reserve(m, c, c->n + k, off)) {
        for (uint32_t i = 0; i < k; i++) c->u.seq.items[c->n++] = items[i];
        if (hot) c->flags |= SPA_VFX_HOT;
        return;
    }
    c->flags |= SPA_VF_TRUNC;
    for (uint32_t i = 0; i < k; i++) vm_drop(m, items[i]);
}

/* Before adding `k` items to c: reserve at once the room the ones it will
 * keep need (the first items are always kept), instead of growing 4, 8, 16.
 * The capacity reached is the same as growing item by item. */
static void vm_seq_prereserve(vm *m, spa_val *c, size_t k, uint64_t off) {
    uint32_t keep = (c->kind == SPA_V_DICT) ? 2 * VM_KEEP_PLAIN : VM_KEEP_PLAIN;
    if (c->n >= keep) return;
    uint32_t want = c->n + (uint32_t)(k < keep - c->n ? k : keep - c->n);
    if (want > c->u.seq.cap) (void)vm_seq_reserve(m, c, want, off);
}

/* Build a new container of kind k from stack[from..sp) and pop them. */
static spa_val *vm_collect(vm *m, spa_vkind k, uint8_t op, size_t from, uint64_t off) {
    spa_val *c = vm_new(m, k, op, off);
    if (!c) return NULL;
    uint32_t step = k == SPA_V_DICT ? 2 : 1;
    size_t n = (m->sp - from) / step * step;
    if (n && n <= (step == 2 ? 2 * VM_KEEP_PLAIN : VM_KEEP_PLAIN) && vm_seq_reserve(m, c, (uint32_t)n, off)) {
        /* all of them kept (TUPLE1..3, small containers): one copy */
        uint8_t fl = 0;
        for (size_t i = 0; i < n; i++) fl |= (c->u.seq.items[i] = m->stack[from + i])->flags;
        c->n = (uint32_t)n;
        c->u.seq.count = n;
        c->flags |= fl & SPA_VFX_HOT;
        m->sp = from;
        return c;
    }
    if (n) vm_seq_prereserve(m, c, n, off);
    for (size_t i = from; i + step <= m->sp; i += step)
        vm_seq_add(m, c, &m->stack[i], step, off);
    m->sp = from;
    return c;
}

/* ================================================================ IR */
static spa_ir *vm_ir(vm *m, spa_irkind k, uint8_t op, uint64_t off) {
    if (m->nir >= m->lim->v[SPA_LIM_IR]) {
        vm_limit(m, SPA_LIM_IR, "IR entry limit", off);
        return NULL;
    }
    if (m->nir == m->ircap) {
        size_t nc = m->ircap ? m->ircap * 2 : 64;
        spa_ir *ni = realloc(m->ir, nc * sizeof *ni);
        if (!ni) { vm_nomem(m, off); return NULL; }
        m->ir = ni;
        m->ircap = nc;
    }
    spa_ir *e = &m->ir[m->nir++];
    memset(e, 0, sizeof *e);
    e->kind = (uint8_t)k;
    e->opcode = op;
    e->off = off;
    e->nested_stream = UINT32_MAX;
    return e;
}

/* ================================================================ memo */
/* The memo is a dense array for the keys picklers write (0, 1, 2, ...),
 * grown only while a key stays below 2 * entries + VM_MEMO_SLACK, plus a
 * hash map for every other key. A hostile key therefore never makes it grow
 * beyond twice the number of entries; max_memo bounds the entries. */
#define VM_MEMO_SLACK 1024u

static uint64_t vm_hash(uint64_t k) {
    k ^= k >> 30; k *= 0xbf58476d1ce4e5b9ull;
    k ^= k >> 27; k *= 0x94d049bb133111ebull;
    return k ^ (k >> 31);
}

static spa_val **vm_hslot(vm_memo *mm, uint64_t key) {
    size_t mask = mm->cap - 1, i = (size_t)vm_hash(key) & mask;
    while (mm->vals[i] && mm->keys[i] != key) i = (i + 1) & mask;
    mm->keys[i] = key;
    return &mm->vals[i];
}

static spa_val *vm_hget(const vm_memo *mm, uint64_t key) {
    if (!mm->hcount) return NULL;
    size_t mask = mm->cap - 1, i = (size_t)vm_hash(key) & mask;
    while (mm->vals[i]) {
        if (mm->keys[i] == key) return mm->vals[i];
        i = (i + 1) & mask;
    }
    return NULL;
}

/* Memo entries are value pointers, or, for an immutable plain-data container
 * (a tuple or frozenset holding no global/call/persid, referenced nowhere
 * else), a tagged summary (kind, item count) that costs no node: picklers
 * memoise every tuple, and millions of them would otherwise stay alive.
 * A GET of a summary yields a fresh summarised container (items elided). */
#define VM_MEMO_TAG 1u
/* A short str/bytes constant is stored as one tagged word too: bit 63 set,
 * bits 58..60 kind and flags, bits 48..56 the length, bits 0..47 a pointer
 * to the bytes (zero-copy input, or a copy the memo owns) or, with bit 57,
 * up to 6 bytes themselves. */
#define VM_MSTR_BIT (1ull << 63)
#define VM_MSTR_MAX 511u
#define VM_MSTR_INLINE (1ull << 57)

/* Room in the memo's hash map for one more entry (grown at 3/4 full); false
 * (and out of memory reported) when it cannot grow. */
static bool vm_hroom(vm *m, vm_memo *mm, uint64_t off) {
    if ((mm->hcount + 1) * 4 <= mm->cap * 3) return true;
    size_t nc = mm->cap ? mm->cap * 2 : 256;
    vm_memo nm = *mm;
    nm.keys = calloc(nc, sizeof(uint64_t));
    nm.vals = calloc(nc, sizeof(spa_val *));
    nm.cap = nc;
    if (!nm.keys || !nm.vals) { free(nm.keys); free(nm.vals); vm_nomem(m, off); return false; }
    for (size_t i = 0; i < mm->cap; i++)
        if (mm->vals[i]) *vm_hslot(&nm, mm->keys[i]) = mm->vals[i];
    free(mm->keys);
    free(mm->vals);
    *mm = nm;
    return true;
}

/* A pruned key: defined, but no GET reads it back (the hash map's entry). */
#define VM_MEMO_PRUNED ((spa_val *)(uintptr_t)(((uint64_t)0x7f << 1) | VM_MEMO_TAG))

static bool vm_bit(const uint64_t *b, uint64_t nb, uint64_t k) { return k < nb && (b[k / 64] >> (k % 64) & 1); }

static spa_val *vm_memo_summary(spa_vkind k, uint64_t count) {
    return (spa_val *)(uintptr_t)((count << 8) | ((uint64_t)k << 1) | VM_MEMO_TAG);
}

static spa_val *vm_memo_enc(vm *m, spa_val *v, uint64_t key) {
    if ((v->kind == SPA_V_TUPLE || v->kind == SPA_V_FROZENSET) &&
        !(v->flags & (SPA_VFX_HOT | SPA_VFX_PINNED | SPA_VFX_SHARED)) && v->u.seq.count < (1ull << 48))
        return vm_memo_summary((spa_vkind)v->kind, v->u.seq.count);
    if (vm_is_seq(v)) {
        /* first memoised: it is on the stack and nowhere else (only GET and
         * DUP copy a pointer, and DUP pins) */
        if (!(v->flags & SPA_VFX_SHARED)) {
            v->u.seq.refs = 1;
            v->u.seq.memo_key = key < VM_MEMO_NOKEY ? (uint32_t)key : VM_MEMO_NOKEY;
        } else if (v->u.seq.memo_key != key) {
            v->u.seq.memo_key = VM_MEMO_NOKEY;
        }
    }
    if ((v->kind == SPA_V_STR || v->kind == SPA_V_BYTES) && !(v->flags & (SPA_VFX_SHARED | SPA_VF_TRUNC)) &&
        v->u.s.len <= VM_MSTR_MAX && sizeof(uintptr_t) == 8) {
        uint64_t kf0 = (v->kind == SPA_V_BYTES ? 1u : 0u) | ((v->flags & SPA_VF_PY2STR) ? 2u : 0u) |
                       ((v->flags & SPA_VF_BYTEARRAY) ? 4u : 0u);
        if (v->u.s.len <= 6) {
            /* up to 6 bytes live in the word itself (bit 62 marks it) */
            uint64_t w = 0;
            for (uint64_t i = 0; i < v->u.s.len; i++) w |= (uint64_t)v->u.s.p[i] << (8 * i);
            return (spa_val *)(uintptr_t)(VM_MSTR_BIT | VM_MSTR_INLINE | (kf0 << 58) | (v->u.s.len << 48) | w);
        }
        const uint8_t *p = v->u.s.p;
        if (vm_owns_bytes(m, v) || !p) {
            uint8_t *cp = vm_balloc(m, v->u.s.len ? (size_t)v->u.s.len : 1);
            if (!cp) { vm_share(v); return v; }
            if (v->u.s.len) memcpy(cp, v->u.s.p, (size_t)v->u.s.len);
            p = cp;
        }
        uint64_t w = (uint64_t)(uintptr_t)p;
        if (!(w >> 48)) {
            uint64_t kf = (v->kind == SPA_V_BYTES ? 1u : 0u) | ((v->flags & SPA_VF_PY2STR) ? 2u : 0u) |
                          ((v->flags & SPA_VF_BYTEARRAY) ? 4u : 0u);
            return (spa_val *)(uintptr_t)(VM_MSTR_BIT | (kf << 58) | (v->u.s.len << 48) | w);
        }
    }
    vm_share(v);
    return v;
}

static spa_val *vm_memo_raw(vm *m, uint64_t key) {
    vm_memo *mm = &m->memo;
    if (key < mm->dlen && mm->dense[key]) return mm->dense[key];
    return vm_hget(mm, key);
}

/* The slot of a key that is in the memo. */
static spa_val **vm_memo_slot(vm *m, uint64_t key) {
    vm_memo *mm = &m->memo;
    if (key < mm->dlen && mm->dense[key]) return &mm->dense[key];
    return vm_hslot(mm, key);
}

/* A GET of a key the pre-pass did not see: the pre-pass and the VM read
 * the stream differently, which spa_vm_getkeys rules out. Never guessed at:
 * the stream fails as an internal error (the file is not judged safe). */
static bool vm_def_has(const vm_memo *mm, uint64_t key);
static spa_val *vm_memo_pruned(vm *m, uint64_t off) {
    if (m->err.code == SPA_OK) m->err = (spa_err){ SPA_E_INTERNAL, "memo value pruned by the pre-pass", off };
    m->fatal = m->halt = true;
    return NULL;
}

VM_HOT spa_val *vm_memo_get(vm *m, uint64_t key, uint8_t op, uint64_t off) {
    spa_val *v = vm_memo_raw(m, key);
    uint64_t w = (uint64_t)(uintptr_t)v;
    if (!v) return m->memo.prune && vm_def_has(&m->memo, key) ? vm_memo_pruned(m, off) : NULL;
    if (v == VM_MEMO_PRUNED) return vm_memo_pruned(m, off);
    if (w & VM_MSTR_BIT) {
        uint64_t kf = (w >> 58) & 0x7;
        spa_val *c = vm_new(m, (kf & 1) ? SPA_V_BYTES : SPA_V_STR, op, off);
        if (!c) return NULL;
        c->u.s.len = c->u.s.kept = (w >> 48) & 0x1ff;
        if (w & VM_MSTR_INLINE) {
            /* first GET of an inline constant: copy its bytes out once and
             * let the memo own them, so this GET and later ones borrow them */
            uint8_t *cp = vm_balloc(m, 8);
            if (!cp) { vm_nomem(m, off); return NULL; }
            for (int i = 0; i < 6; i++) cp[i] = (uint8_t)(w >> (8 * i));
            c->u.s.p = cp;
            uint64_t pw = (uint64_t)(uintptr_t)cp;
            if (!(pw >> 48)) {
                *vm_memo_slot(m, key) = (spa_val *)(uintptr_t)((w & ~(VM_MSTR_INLINE | ((1ull << 48) - 1))) | pw);
                c->opcode |= SPA_VOP_BORROWED;
            }
        } else {
            c->opcode |= SPA_VOP_BORROWED;   /* the memo owns the bytes */
            c->u.s.p = (const uint8_t *)(uintptr_t)(w & ((1ull << 48) - 1));
        }
        if (kf & 2) c->flags |= SPA_VF_PY2STR;
        if (kf & 4) c->flags |= SPA_VF_BYTEARRAY;
        return c;
    }
    if (!(w & VM_MEMO_TAG)) {
        if (vm_is_seq(v) && (v->flags & SPA_VFX_SHARED)) {   /* one more reference (vm_drop_shared) */
            if (v->u.seq.refs < UINT32_MAX) v->u.seq.refs++;
            else v->u.seq.memo_key = VM_MEMO_NOKEY;
        }
        return v;
    }
    spa_vkind k = (spa_vkind)((w >> 1) & 0x7f);
    spa_val *c = vm_new(m, k, op, off);
    if (!c) return NULL;
    c->u.seq.count = w >> 8;
    if (c->u.seq.count) c->flags |= SPA_VF_TRUNC;
    if (k == SPA_V_LIST || k == SPA_V_DICT || k == SPA_V_SET) {
        /* a released mutable container: the memo holds this node again, so
         * that what is added to it now is seen by later GETs */
        *vm_memo_slot(m, key) = c;
        c->flags |= SPA_VFX_SHARED;
        c->u.seq.refs = 1;
        c->u.seq.memo_key = key < VM_MEMO_NOKEY ? (uint32_t)key : VM_MEMO_NOKEY;
    }
    return c;
}

/* The definitions of a pruned memo (the distinct-key count that MEMOIZE
 * uses): bit k of def is key dbase + k, for keys in [dbase, dbase + ndef),
 * and every key below dbase is defined; keys outside are VM_MEMO_PRUNED
 * entries of the hash map. Kept keys (vm_memo_put) set their bit too, so
 * that the bitmap slides up once its first half is all ones: picklers
 * define keys in order, and a 30 MB pickle's 2 M definitions then take a
 * few hundred bytes instead of 300 KB. */
static bool vm_def_has(const vm_memo *mm, uint64_t key) {
    if (key < mm->dbase) return true;
    uint64_t k = key - mm->dbase;
    if (k < mm->ndef && (mm->def[k / 64] >> (k % 64) & 1)) return true;
    return mm->hcount && vm_hget(mm, key);
}

static void vm_def_slide(vm_memo *mm) {
    size_t nw = (size_t)(mm->ndef / 64), f = 0;
    /* it slides once the first half (words 0 .. ceil(nw / 2) - 1) is all
     * ones: while the last word of that half is not, nothing to scan */
    if (!nw || mm->def[(nw + 1) / 2 - 1] != ~0ull) return;
    while (f < nw && mm->def[f] == ~0ull) f++;
    if (!f || 2 * f < nw) return;
    memmove(mm->def, mm->def + f, (nw - f) * sizeof *mm->def);
    memset(mm->def + (nw - f), 0, f * sizeof *mm->def);
    mm->dbase += 64 * (uint64_t)f;
}

/* Set the bit of a key (>= dbase), growing the bitmap while the key stays
 * below 2 * entries + VM_MEMO_SLACK (so it grows as the dense array would).
 * 1 set, 0 outside the bitmap, -1 out of memory (reported). */
static int vm_def_set(vm *m, vm_memo *mm, uint64_t key, uint64_t off) {
    if (key < mm->dbase) return 1;
    uint64_t k = key - mm->dbase;
    if (k >= mm->ndef) {
        if (key >= 2 * (uint64_t)mm->count + VM_MEMO_SLACK) return 0;
        uint64_t nb = mm->ndef ? mm->ndef : 8192;
        while (nb <= k) nb += nb / 2 + 64;
        nb = (nb + 63) & ~(uint64_t)63;
        uint64_t *nd = realloc(mm->def, (size_t)(nb / 64) * sizeof *nd);
        if (!nd) { vm_nomem(m, off); return -1; }
        memset(nd + mm->ndef / 64, 0, (size_t)((nb - mm->ndef) / 64) * sizeof *nd);
        mm->def = nd;
        mm->ndef = nb;
    }
    mm->def[k / 64] |= 1ull << (k % 64);
    if (mm->def[k / 64] == ~0ull) vm_def_slide(mm);
    return 1;
}

/* memo[key] = v for a key no GET reads: only its definition counts, the
 * value is not kept. */
static void vm_memo_def(vm *m, uint64_t key, uint64_t off) {
    vm_memo *mm = &m->memo;
    if (vm_def_has(mm, key)) return;
    if (mm->count >= m->lim->v[SPA_LIM_MEMO]) { vm_limit(m, SPA_LIM_MEMO, "memo size limit", off); return; }
    int r = vm_def_set(m, mm, key, off);
    if (r < 0) return;
    if (r == 0) {
        if (!vm_hroom(m, mm, off)) return;
        *vm_hslot(mm, key) = VM_MEMO_PRUNED;
        mm->hcount++;
    }
    mm->count++;
    mm->npruned++;
}

/* memo[key] = v (redefinition replaces; the old value stays in the arena). */
static void vm_memo_put(vm *m, uint64_t key, spa_val *v, uint64_t off) {
    vm_memo *mm = &m->memo;
    if (key > m->lim->v[SPA_LIM_MEMO_KEY]) { vm_limit(m, SPA_LIM_MEMO_KEY, "memo key limit", off); return; }
    if (mm->prune && !vm_bit(mm->get, mm->nget, key)) { vm_memo_def(m, key, off); return; }
    spa_val **slot = NULL;
    if (key < mm->dlen && mm->dense[key]) slot = &mm->dense[key];
    else if (mm->hcount && vm_hget(mm, key)) slot = vm_hslot(mm, key);
    if (slot) { *slot = vm_memo_enc(m, v, key); return; }
    if (mm->count >= m->lim->v[SPA_LIM_MEMO]) { vm_limit(m, SPA_LIM_MEMO, "memo size limit", off); return; }
    /* (kept entries only: a few kept keys among millions of pruned ones
     * live in the hash map) */
    if (key >= mm->dcap && key < 2 * (uint64_t)(mm->count - mm->npruned) + VM_MEMO_SLACK) {
        size_t nc = mm->dcap ? mm->dcap : 1024;
        while (nc <= key) nc += nc / 2;
        spa_val **nd = realloc(mm->dense, nc * sizeof *nd);
        if (!nd) { vm_nomem(m, off); return; }
        mm->dense = nd;
        mm->dcap = nc;
    }
    if (key < mm->dcap) {
        if (key >= mm->dlen) {   /* keys come in order: usually nothing to clear */
            if (key > mm->dlen) memset(mm->dense + mm->dlen, 0, (key - mm->dlen) * sizeof *mm->dense);
            mm->dlen = key + 1;
        }
        mm->dense[key] = vm_memo_enc(m, v, key);
    } else {
        if (!vm_hroom(m, mm, off)) return;
        *vm_hslot(mm, key) = vm_memo_enc(m, v, key);
        mm->hcount++;
    }
    mm->count++;
    if (mm->prune) (void)vm_def_set(m, mm, key, off); /* a new key: not below dbase */
}

/* vm_memo_put, with the common case of a pruned memo inline: a key no GET
 * reads, inside the bitmap, under the entry limit. */
VM_HOT void vm_memo_put_hot(vm *m, uint64_t key, spa_val *v, uint64_t off) {
    vm_memo *mm = &m->memo;
    uint64_t k = key - mm->dbase;
    if (mm->prune && key >= mm->dbase && k < mm->ndef && !mm->hcount && !vm_bit(mm->get, mm->nget, key) &&
        mm->count < m->lim->v[SPA_LIM_MEMO] && key <= m->lim->v[SPA_LIM_MEMO_KEY]) {
        uint64_t b = 1ull << (k % 64);
        if (mm->def[k / 64] & b) return;
        mm->def[k / 64] |= b;
        mm->count++;
        mm->npruned++;
        if (mm->def[k / 64] == ~0ull) vm_def_slide(mm);
        return;
    }
    vm_memo_put(m, key, v, off);
}

/* ================================================================ input */
/* Framing as CPython's C unpickler does it when it reads a file object
 * without peek() (io.BytesIO, which torch.load uses for data.pkl; or any
 * frame of >= 128 KiB): FRAME reads the frame into its buffer, and a later
 * read that runs past the buffer's end is served by a fresh read from the
 * file AFTER the frame, silently skipping the rest of the frame. pickle.loads
 * reads linearly and the pure-Python unpickler raises instead. The VM reads
 * linearly and notes a crossing; spa_vm_run then re-runs the stream in
 * `cfile` mode so that the IR covers both readings. */
VM_HOT void vm_cf_pre(vm *m, uint64_t n) {
    uint64_t pos = spa_in_pos_fast(m->in);
    if (pos < m->cf_end && n > m->cf_end - pos) {
        m->frame_cross = true;
        if (m->cfile) spa_in_skip_fast(m->in, m->cf_end - pos);
    }
}

VM_HOT void vm_cf_post(vm *m) {
    uint64_t pos = spa_in_pos_fast(m->in);
    if (pos > m->cf_end) m->cf_end = pos;
}

/* FRAME of length len at the current position. Returns false (with the C
 * unpickler's error) when cfile mode finds fewer than len bytes. */
static bool vm_cf_frame(vm *m, uint64_t len, uint64_t off) {
    uint64_t pos = spa_in_pos_fast(m->in);
    if (pos < m->cf_end && len <= m->cf_end - pos) return true; /* already buffered */
    if (pos < m->cf_end) {
        m->frame_cross = true;
        if (m->cfile) { spa_in_skip_fast(m->in, m->cf_end - pos); pos = m->cf_end; }
    }
    /* a FRAME past EOF: the C unpickler fails right here, the pure-Python
     * one runs what is there (the linear reading) */
    const uint8_t *p;
    size_t got;
    size_t want = len > (1u << 26) ? (1u << 26) : (size_t)len;
    uint64_t left;
    /* a random-access input knows its size: a frame within it is not
     * peeked (which would make the reader's window hold whole frames) */
    if (spa_in_left(m->in, &left) && len <= left) {
        /* not past the end */
    } else if (spa_in_peek_fast(m->in, want, &p, &got) == SPA_OK && got < want) {
        m->frame_cross = true;
        if (m->cfile) {
            vm_fail(m, SPA_E_TRUNCATED, "FRAME runs past the end (C unpickler)", off);
            return false;
        }
    }
    if (pos + len > m->cf_end) m->cf_end = pos + len;
    return true;
}

VM_HOT bool vm_read(vm *m, void *dst, size_t n, uint64_t off) {
    const uint8_t *p;
    size_t got;
    vm_cf_pre(m, n);
    spa_code c = spa_in_peek_fast(m->in, n, &p, &got);
    if (c != SPA_OK) { vm_fail(m, c, "read error", off); m->fatal = true; return false; }
    if (got < n) {
        spa_in_skip_fast(m->in, got);
        vm_fail(m, SPA_E_TRUNCATED, "pickle data was truncated", off);
        return false;
    }
    memcpy(dst, p, n);
    spa_in_skip_fast(m->in, n);
    vm_cf_post(m);
    return true;
}

/* A line longer than the window: does the input end before any newline? Then
 * both loaders read it to EOF and fail there (truncated), and nothing after it
 * can be hidden: no limit is needed. A random-access input is searched through a
 * second reader, in windows (no more kept than one); a sequential one cannot be
 * searched without consuming it, and keeps the limit. A container's head read as
 * a raw pickle (a safetensors length byte 'P'/'V'/'c', a tar or zip of ASCII)
 * often holds such a line. */
static bool vm_no_newline_to_eof(vm *m) {
    spa_in *r = spa_in_reopen(m->ar, m->in, spa_in_pos_fast(m->in));
    if (!r) return false;
    for (;;) {
        const uint8_t *p;
        size_t got;
        if (spa_in_peek(r, 1u << 16, &p, &got) != SPA_OK) return false;
        if (got == 0) return true;
        if (memchr(p, '\n', got)) return false;
        if (spa_in_skip(r, got) != SPA_OK) return false;
    }
}

/* One newline-terminated line. On success (*p, *n) is the line without '\n'
 * (valid until the next read) and the line is consumed. If EOF comes first,
 * (*p, *n) is the remaining input, *nl is false, nothing is consumed and
 * TRUNCATED is returned (the caller decides). */
static spa_code vm_line(vm *m, const uint8_t **p, size_t *n, bool *nl, uint64_t off) {
    size_t want = 256, got = 0;
    size_t maxw = (size_t)(m->lim->v[SPA_LIM_STR] + 65536);
    if (maxw > VM_MAX_LINE_WIN) maxw = VM_MAX_LINE_WIN;
    *nl = false;
    uint64_t pos = spa_in_pos_fast(m->in);
    if (pos < m->cf_end) {
        /* a line that does not end inside the buffered frame crosses it */
        uint64_t rest = m->cf_end - pos;
        size_t w = rest > maxw ? maxw : (size_t)rest;
        spa_code c = spa_in_peek_fast(m->in, w, p, &got);
        if (c == SPA_OK && !memchr(*p, '\n', got < w ? got : w)) {
            m->frame_cross = true;
            if (m->cfile) spa_in_skip_fast(m->in, m->cf_end - pos);
        }
    }
    for (;;) {
        spa_code c = spa_in_peek_fast(m->in, want, p, &got);
        if (c != SPA_OK) { vm_fail(m, c, "read error", off); m->fatal = true; return c; }
        const uint8_t *q = memchr(*p, '\n', got);
        if (q) {
            *n = (size_t)(q - *p);
            *nl = true;
            uint64_t after = spa_in_pos_fast(m->in) + *n + 1;
            if (after > m->cf_end) m->cf_end = after;
            return SPA_OK;
        }
        if (got < want || m->stable) { *n = got; return SPA_E_TRUNCATED; }
        if (want >= maxw) {
            if (vm_no_newline_to_eof(m)) { *n = got; return SPA_E_TRUNCATED; }
            vm_limit(m, SPA_LIM_STR, "text line longer than max_str", off);
            return SPA_E_LIMIT;
        }
        want = want * 4 > maxw ? maxw : want * 4;
    }
}

static bool vm_line_req(vm *m, const uint8_t **p, size_t *n, uint64_t off) {
    bool nl;
    spa_code c = vm_line(m, p, n, &nl, off);
    if (c == SPA_E_TRUNCATED) {
        spa_in_skip_fast(m->in, *n);
        vm_fail(m, SPA_E_TRUNCATED, "pickle data was truncated (no newline)", off);
    }
    return c == SPA_OK;
}

/* A counted str/bytes argument of n bytes: keeps a prefix of at most max_str
 * bytes (zero-copy over memory), skips the rest. */
/* `linear`: the C unpickler reads this payload with _Unpickler_ReadInto
 * (BINBYTES*, SHORT_BINBYTES, BYTEARRAY8), which takes the rest of a frame
 * and continues from the file: no frame skipping for those. These are the
 * bytes opcodes: a long one that the opaque hook judges from its first
 * SPA_VM_KEEP_OPAQUE bytes to be opaque binary (array data) keeps only those,
 * and *opaque says so; array payloads are then neither copied nor kept. */
static bool vm_data(vm *m, uint64_t n, const uint8_t **out, uint64_t *kept, bool *owned, uint64_t off,
                    bool linear, bool *opaque) {
    uint64_t keep = n < m->lim->v[SPA_LIM_STR] ? n : m->lim->v[SPA_LIM_STR];
    if (!m->stable && keep > VM_MAX_LINE_WIN) keep = VM_MAX_LINE_WIN;
    const uint8_t *p;
    size_t got;
    *opaque = false;
    if (!linear) vm_cf_pre(m, n);
    else if (keep > SPA_VM_KEEP_OPAQUE && m->hooks && m->hooks->opaque) {
        spa_code c = spa_in_peek_fast(m->in, SPA_VM_KEEP_OPAQUE, &p, &got);
        if (c == SPA_OK && got >= SPA_VM_KEEP_OPAQUE && m->hooks->opaque(m->hooks->ud, p, SPA_VM_KEEP_OPAQUE, n)) {
            keep = SPA_VM_KEEP_OPAQUE;
            *opaque = true;
        }
    }
    spa_code c = spa_in_peek_fast(m->in, (size_t)keep, &p, &got);
    if (c != SPA_OK) { vm_fail(m, c, "read error", off); m->fatal = true; return false; }
    if (got < keep) {
        spa_in_skip_fast(m->in, got);
        vm_fail(m, SPA_E_TRUNCATED, "pickle data was truncated", off);
        return false;
    }
    if (m->stable) {
        if (got < n) { spa_in_skip_fast(m->in, got); vm_fail(m, SPA_E_TRUNCATED, "pickle data was truncated", off); return false; }
        *out = p;
        *owned = false;
    } else {
        uint8_t *cp = vm_balloc(m, keep ? (size_t)keep : 1);
        if (!cp) { vm_nomem(m, off); return false; }
        if (keep) memcpy(cp, p, (size_t)keep);
        *out = cp;
        *owned = true;
    }
    *kept = keep;
    if (spa_in_skip_fast(m->in, n) != SPA_OK) {
        if (*owned) vm_bfree(m, (void *)*out, keep ? (size_t)keep : 1);
        vm_fail(m, SPA_E_TRUNCATED, "pickle data was truncated", off);
        return false;
    }
    vm_cf_post(m);
    return true;
}

/* Little-endian n-byte integer (n = 1, 2, 4 or 8 take one load each). */
static inline uint64_t vm_le4(const uint8_t *b) {
    return (uint64_t)((uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24);
}
static inline uint64_t vm_le(const uint8_t *b, int n) {
    switch (n) {
    case 1: return b[0];
    case 2: return (uint64_t)b[0] | (uint64_t)b[1] << 8;
    case 4: return vm_le4(b);
    case 8: return vm_le4(b) | vm_le4(b + 4) << 32;
    }
    uint64_t x = 0;
    for (int i = n - 1; i >= 0; i--) x = (x << 8) | b[i];
    return x;
}

/* ================================================================ text decoding */
/* UTF-8 validity as PyUnicode_DecodeUTF8(.., "surrogatepass"); a sequence cut
 * by a kept-prefix boundary is accepted when `partial`. */
static bool vm_utf8_ok(const uint8_t *s, uint64_t n, bool partial) {
    uint64_t i = 0;
    while (i < n) {
        /* ASCII 8 bytes at a time (a memcpy'd word: no alignment assumed) */
        while (n - i >= 8) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ull) break;
            i += 8;
        }
        if (i >= n) break;
        uint8_t c = s[i];
        if (c < 0x80) { i++; continue; }
        int len;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf) { len = 2; cp = c & 0x1f; }
        else if (c >= 0xe0 && c <= 0xef) { len = 3; cp = c & 0x0f; }
        else if (c >= 0xf0 && c <= 0xf4) { len = 4; cp = c & 0x07; }
        else return false;
        if ((uint64_t)len > n - i) {
            if (!partial) return false;
            for (uint64_t j = i + 1; j < n; j++) if ((s[j] & 0xc0) != 0x80) return false;
            return true;
        }
        for (int j = 1; j < len; j++) {
            if ((s[i + j] & 0xc0) != 0x80) return false;
            cp = (cp << 6) | (s[i + j] & 0x3f);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff))) return false;
        i += (uint64_t)len;
    }
    return true;
}

static size_t vm_put_utf8(uint8_t *o, uint32_t cp) {
    if (cp < 0x80) { o[0] = (uint8_t)cp; return 1; }
    if (cp < 0x800) { o[0] = (uint8_t)(0xc0 | (cp >> 6)); o[1] = (uint8_t)(0x80 | (cp & 0x3f)); return 2; }
    if (cp < 0x10000) {
        o[0] = (uint8_t)(0xe0 | (cp >> 12)); o[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (uint8_t)(0x80 | (cp & 0x3f)); return 3;
    }
    o[0] = (uint8_t)(0xf0 | (cp >> 18)); o[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f)); o[3] = (uint8_t)(0x80 | (cp & 0x3f)); return 4;
}

static int vm_hex(uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* PyBytes_DecodeEscape (the STRING opcode). Output <= input length. */
static const char *vm_unescape_bytes(const uint8_t *s, size_t n, uint8_t *o, size_t *on) {
    size_t j = 0;
    for (size_t i = 0; i < n;) {
        if (s[i] != '\\') { o[j++] = s[i++]; continue; }
        if (++i >= n) return "Trailing \\ in string";
        uint8_t c = s[i++];
        switch (c) {
        case '\n': break;
        case '\\': o[j++] = '\\'; break;
        case '\'': o[j++] = '\''; break;
        case '"': o[j++] = '"'; break;
        case 'b': o[j++] = '\b'; break;
        case 'f': o[j++] = '\f'; break;
        case 't': o[j++] = '\t'; break;
        case 'n': o[j++] = '\n'; break;
        case 'r': o[j++] = '\r'; break;
        case 'v': o[j++] = '\v'; break;
        case 'a': o[j++] = '\a'; break;
        case '0': case '1': case '2': case '3': case '4': case '5': case '6': case '7': {
            unsigned v = c - '0';
            for (int k = 0; k < 2 && i < n && s[i] >= '0' && s[i] <= '7'; k++) v = v * 8 + (s[i++] - '0');
            o[j++] = (uint8_t)v;
            break;
        }
        case 'x':
            if (i + 1 < n && vm_hex(s[i]) >= 0 && vm_hex(s[i + 1]) >= 0) {
                o[j++] = (uint8_t)(vm_hex(s[i]) * 16 + vm_hex(s[i + 1]));
                i += 2;
                break;
            }
            return "invalid \\x escape";
        default:
            o[j++] = '\\';
            o[j++] = c;
        }
    }
    *on = j;
    return NULL;
}

/* raw-unicode-escape (the UNICODE opcode) to UTF-8. Output <= 2*n + 4. */
static const char *vm_unescape_raw_unicode(const uint8_t *s, size_t n, uint8_t *o, size_t *on) {
    size_t j = 0;
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i++];
        if (c != '\\' || i >= n || (s[i] != 'u' && s[i] != 'U')) { j += vm_put_utf8(o + j, c); continue; }
        int cnt = s[i] == 'u' ? 4 : 8;
        i++;
        uint32_t cp = 0;
        for (int k = 0; k < cnt; k++) {
            if (i >= n || vm_hex(s[i]) < 0) return cnt == 4 ? "truncated \\uXXXX escape" : "truncated \\UXXXXXXXX escape";
            cp = cp * 16 + (uint32_t)vm_hex(s[i++]);
        }
        if (cp > 0x10ffff) return "\\Uxxxxxxxx out of range";
        j += vm_put_utf8(o + j, cp);
    }
    *on = j;
    return NULL;
}

static bool vm_isspace(uint8_t c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

/* PyLong_FromString(s, NULL, base) validity (base 0 or 10), over a line that
 * may continue past n only with a NUL. */
static bool vm_pylong_ok(const uint8_t *s, size_t n, int base) {
    size_t i = 0;
    while (i < n && vm_isspace(s[i])) i++;
    if (i < n && (s[i] == '+' || s[i] == '-')) i++;
    int b = base;
    bool zero_lead = false;
    if (base == 0) {
        if (i + 1 < n && s[i] == '0' && (s[i + 1] | 0x20) == 'x') { b = 16; i += 2; }
        else if (i + 1 < n && s[i] == '0' && (s[i + 1] | 0x20) == 'o') { b = 8; i += 2; }
        else if (i + 1 < n && s[i] == '0' && (s[i + 1] | 0x20) == 'b') { b = 2; i += 2; }
        else { b = 10; zero_lead = i < n && s[i] == '0'; }
        if (b != 10 && i < n && s[i] == '_') i++;
    }
    size_t nd = 0;
    bool prev_us = false, nonzero = false;
    for (; i < n; i++) {
        uint8_t c = s[i];
        if (c == '_') { if (prev_us || nd == 0) return false; prev_us = true; continue; }
        int d = vm_hex(c);
        if (d < 0 || d >= b) break;
        if (d) nonzero = true;
        prev_us = false;
        nd++;
    }
    if (!nd || prev_us) return false;
    if (zero_lead && nonzero) return false;           /* "010" is not a base-0 literal */
    if (b == 10 && nd > 4300) return false;           /* 3.11 int_max_str_digits */
    while (i < n && vm_isspace(s[i])) i++;
    return i == n || s[i] == '\0';
}

/* Value of a decimal/hex/octal/binary integer text known to be valid; false
 * when it does not fit int64. */
static bool vm_int_value(const uint8_t *s, size_t n, int base, int64_t *out) {
    char buf[96];
    size_t j = 0;
    for (size_t i = 0; i < n && s[i] != '\0'; i++) {
        if (s[i] == '_') continue;
        if (j + 1 >= sizeof buf) return false;
        buf[j++] = (char)s[i];
    }
    buf[j] = '\0';
    char *tail = buf;
    while (*tail && vm_isspace((uint8_t)*tail)) tail++;
    bool neg = *tail == '-';
    if (*tail == '+' || *tail == '-') tail++;
    int b = base;
    if (base == 0) {
        if (tail[0] == '0' && (tail[1] | 0x20) == 'x') { b = 16; tail += 2; }
        else if (tail[0] == '0' && (tail[1] | 0x20) == 'o') { b = 8; tail += 2; }
        else if (tail[0] == '0' && (tail[1] | 0x20) == 'b') { b = 2; tail += 2; }
        else b = 10;
    }
    errno = 0;
    char *end;
    unsigned long long u = strtoull(tail, &end, b);
    if (errno || end == tail) return false;
    if (!neg && u > (unsigned long long)INT64_MAX) return false;
    if (neg && u > (unsigned long long)INT64_MAX + 1ull) return false;
    *out = neg ? (int64_t)(0 - u) : (int64_t)u;
    return true;
}

/* ================================================================ values */
static spa_val *vm_text_val(vm *m, spa_vkind k, uint8_t op, uint64_t off, const uint8_t *p,
                            uint64_t len, uint64_t kept, bool owned) {
    spa_val *v = vm_new(m, k, op, off);
    if (!v) { if (owned) vm_bfree(m, (void *)p, kept ? (size_t)kept : 1); return NULL; }
    v->u.s.p = p;
    v->u.s.len = len;
    v->u.s.kept = kept;
    if (kept < len) v->flags |= SPA_VF_TRUNC;
    return v;
}

/* A str/bytes constant is complete: offer it to the container layer. */
static void vm_on_const(vm *m, spa_val *v) {
    if (!m->hooks || !m->hooks->on_const || !v || v->u.s.kept < m->hooks->on_const_min) return;
    uint32_t ns = m->hooks->on_const(m->hooks->ud, m->sc, v, m->depth, m->idx);
    if (ns == UINT32_MAX) return;
    spa_ir *e = vm_ir(m, SPA_IR_NESTED, (uint8_t)v->opcode, v->off);
    if (!e) return;
    vm_pin(v);
    e->target = v;
    e->nested_stream = ns;
}

/* Copy decoded bytes (a buffer we own) into a kept prefix. */
static spa_val *vm_decoded(vm *m, spa_vkind k, uint8_t op, uint64_t off, const uint8_t *d, size_t dn) {
    uint64_t keep = dn < m->lim->v[SPA_LIM_STR] ? dn : m->lim->v[SPA_LIM_STR];
    uint8_t *cp = vm_balloc(m, keep ? (size_t)keep : 1);
    if (!cp) { vm_nomem(m, off); return NULL; }
    if (keep) memcpy(cp, d, (size_t)keep);
    return vm_text_val(m, k, op, off, cp, dn, keep, true);
}

static const char *vm_cstr(vm *m, const uint8_t *p, size_t n) {
    char *s = spa_arena_strndup(m->ar, (const char *)p, n);
    return s ? s : "";
}

/* A STACK_GLOBAL operand as a C string. Python 2 strings become str through
 * the loader's encoding (ASCII by default; latin-1 / utf-8 where loaders ask
 * for it): valid UTF-8 is kept, anything else is read as latin-1. */
static const char *vm_opstr(vm *m, const spa_val *v) {
    size_t n = (size_t)v->u.s.kept;
    if (v->kind == SPA_V_STR || vm_utf8_ok(v->u.s.p, n, false)) return vm_cstr(m, v->u.s.p, n);
    char *o = spa_arena_alloc(m->ar, 2 * n + 1);
    if (!o) return "";
    size_t j = 0;
    for (size_t i = 0; i < n; i++) j += vm_put_utf8((uint8_t *)o + j, v->u.s.p[i]);
    o[j] = '\0';
    return o;
}

/* ================================================================ globals */
typedef struct { const char *m, *n, *m2, *n2; } vm_name_map;
typedef struct { const char *m, *m2; } vm_import_map;
static const vm_name_map vm_name_maps[] = {
#define NAME_MAP(a, b, c, d) { a, b, c, d },
#define IMPORT_MAP(a, b)
#include "compat2to3.def"
#undef NAME_MAP
#undef IMPORT_MAP
};
static const vm_import_map vm_import_maps[] = {
#define NAME_MAP(a, b, c, d)
#define IMPORT_MAP(a, b) { a, b },
#include "compat2to3.def"
#undef NAME_MAP
#undef IMPORT_MAP
};

/* find_class: the Python 2 compat mapping under protocol < 3, then an
 * IMPORT entry and a GLOBAL value. */
static spa_val *vm_global(vm *m, uint8_t op, uint64_t off, const char *mod, const char *name, uint16_t irflags) {
    const char *rm = mod, *rn = name;
    if (m->proto < 3) {
        bool done = false;
        for (size_t i = 0; i < sizeof vm_name_maps / sizeof vm_name_maps[0]; i++)
            if (!strcmp(vm_name_maps[i].m, mod) && !strcmp(vm_name_maps[i].n, name)) {
                mod = vm_name_maps[i].m2;
                name = vm_name_maps[i].n2;
                done = true;
                break;
            }
        if (!done)
            for (size_t i = 0; i < sizeof vm_import_maps / sizeof vm_import_maps[0]; i++)
                if (!strcmp(vm_import_maps[i].m, mod)) { mod = vm_import_maps[i].m2; break; }
    }
    spa_val *g = vm_new(m, SPA_V_GLOBAL, op, off);
    if (!g) return NULL;
    g->u.g.module = mod;
    g->u.g.name = name;
    g->u.g.raw_module = rm;
    g->u.g.raw_name = rn;
    vm_pin(g);
    spa_ir *e = vm_ir(m, SPA_IR_IMPORT, op, off);
    if (e) {
        e->module = mod;
        e->name = name;
        e->result = g;
        e->flags = irflags;
    }
    return g;
}

static spa_val *vm_call(vm *m, uint8_t op, uint64_t off, spa_val *callee, spa_val *args, spa_val *kw,
                        uint16_t irflags) {
    spa_val *r = vm_new(m, SPA_V_CALL, op, off);
    if (!r) return NULL;
    vm_pin(r); vm_pin(callee); vm_pin(args); vm_pin(kw);
    r->u.call.callee = callee;
    r->u.call.args = args;
    r->u.call.kwargs = kw;
    r->u.call.ir = UINT32_MAX;
    spa_ir *e = vm_ir(m, SPA_IR_CALL, op, off);
    if (e) {
        e->target = callee;
        e->arg = args;
        e->kwargs = kw;
        e->result = r;
        e->flags = irflags;
        r->u.call.ir = (uint32_t)(m->nir - 1);
    }
    return r;
}

static bool vm_holds_call(const spa_val *v) {
    return v->kind == SPA_V_CALL || v->kind == SPA_V_PERSID ||
           (vm_is_seq(v) && (v->flags & SPA_VFX_HOT));
}

/* A value popped and dropped by POP / POP_MARK. */
static void vm_discard(vm *m, spa_val *v, uint8_t op, uint64_t off) {
    if (!v) return;
    if (vm_holds_call(v)) {
        v->flags |= SPA_VF_DISCARDED;
        spa_ir *e = vm_ir(m, SPA_IR_DISCARD, op, off);
        if (e) { vm_pin(v); e->target = v; }
        return;
    }
    vm_drop(m, v);
}

/* Does this value's string content name a module/attribute for STACK_GLOBAL? */
static int vm_str_operand(const spa_val *v) {
    if (v->kind == SPA_V_STR) return 1;
    if (v->kind == SPA_V_BYTES && (v->flags & SPA_VF_PY2STR)) return 1; /* str under the default encoding */
    if (v->kind == SPA_V_GLOBAL || v->kind == SPA_V_CALL || v->kind == SPA_V_UNKNOWN ||
        v->kind == SPA_V_PERSID)
        return 2; /* may be a str at run time: a dynamic import */
    return 0;
}

/* ================================================================ RESYNC */
/* Find the next offset at which VM_RESYNC_RUN opcodes decode structurally
 * (known opcode, lengths inside the input); used when the container layer
 * cannot compute how many raw bytes to skip. Bounded by VM_RESYNC_SCAN. */
#define VM_RESYNC_RUN 6
#define VM_RESYNC_SCAN (64u << 20)
static size_t vm_resync_try(const uint8_t *p, size_t n) {
    size_t i = 0;
    for (int k = 0; k < VM_RESYNC_RUN; k++) {
        if (i >= n) return 0;
        const spa_opinfo *oi = spa_op_info(p[i]);
        if (!oi) return 0;
        uint8_t op = p[i++];
        size_t w = 0;
        uint64_t cnt = 0;
        switch (oi->kind) {
        case SPA_ARG_NONE: break;
        case SPA_ARG_U1: w = 1; break;
        case SPA_ARG_U2: w = 2; break;
        case SPA_ARG_S4: case SPA_ARG_U4: w = 4; break;
        case SPA_ARG_U8: case SPA_ARG_F8: w = 8; break;
        case SPA_ARG_LINE: case SPA_ARG_LINE2:
            for (int l = oi->kind == SPA_ARG_LINE2 ? 2 : 1; l > 0; l--) {
                const uint8_t *q = i < n ? memchr(p + i, '\n', n - i < 256 ? n - i : 256) : NULL;
                if (!q) return 0;
                i = (size_t)(q - p) + 1;
            }
            break;
        case SPA_ARG_CNT1: if (i + 1 > n) return 0; cnt = p[i]; w = 1; break;
        case SPA_ARG_CNT4: case SPA_ARG_CNT4S: if (i + 4 > n) return 0; cnt = vm_le(p + i, 4); w = 4; break;
        case SPA_ARG_CNT8: if (i + 8 > n) return 0; cnt = vm_le(p + i, 8); w = 8; break;
        }
        if (w > n - i) return 0;
        i += w;
        if (cnt > n - i) return 0;
        i += (size_t)cnt;
        if (op == SPA_OP_STOP) return i;
        if (op == SPA_OP_PROTO && k == 0) return 0; /* raw bytes rarely look like a resumed stream start */
    }
    return i;
}

static void vm_resync(vm *m, uint64_t off) {
    const uint8_t *p;
    size_t got;
    uint64_t scanned = 0;
    while (scanned < VM_RESYNC_SCAN) {
        if (spa_in_peek_fast(m->in, 4096, &p, &got) != SPA_OK || got == 0) break;
        size_t lim = got > 4096 ? 4096 : got;
        for (size_t i = 0; i < lim; i++) {
            if (spa_in_peek_fast(m->in, 4096, &p, &got) != SPA_OK) return;
            if (vm_resync_try(p + i, got - i)) {
                spa_in_skip_fast(m->in, i);
                spa_err e = { SPA_OK, "resynchronised after raw bytes", off };
                spa_ctx_note(m->sc, SPA_NOTE_RESYNC, spa_ctx_stream(m->sc, m->idx)->loc, e, SPA_LIM_COUNT, NULL);
                return;
            }
        }
        spa_in_skip_fast(m->in, lim);
        scanned += lim;
    }
    spa_err e = { SPA_E_FORMAT, "could not resynchronise after raw bytes", off };
    spa_ctx_note(m->sc, SPA_NOTE_RESYNC, spa_ctx_stream(m->sc, m->idx)->loc, e, SPA_LIM_COUNT, NULL);
    vm_fail(m, SPA_E_FORMAT, "could not resynchronise after raw bytes", off);
}

/* ================================================================ the loop */
static void vm_exec(vm *m);
static bool vk_try(vm *m, bool cfile);

/* Every stream gets a pre-pass (spa_vm_getkeys) so that the memo keeps
 * only what a GET reads back: a 30 MB data-only pickle memoises millions of
 * values and reads few. The walk costs a tenth of the VM's run, and small
 * streams take it too, so that every test and fuzzer runs the pruned memo.
 * The walk runs on the stream's own reader, which then rewinds (its window
 * is reused: no memory per stream). Not for the C-file-frames re-run (its
 * reads skip), nor for a sequential input (no rewind: the memo keeps
 * everything). */
static void vm_prune_setup(vm *m, bool cfile) {
    if (cfile || m->in->rd) return;
    uint64_t used = *spa_ctx_vm_bytes(m->sc); /* as vm_exec bounds the run */
    uint64_t lim_bytes = used < m->lim->v[SPA_LIM_BYTES] ? m->lim->v[SPA_LIM_BYTES] - used : 0;
    bool ok = spa_vm_getkeys(m->in, m->lim->v[SPA_LIM_OPS], lim_bytes, &m->memo.get, &m->memo.nget);
    if (!spa_in_rewind(m->in, m->start)) {   /* cannot happen: a pread or memory input */
        vm_fail(m, SPA_E_INTERNAL, "reader rewind after the memo pre-pass failed", 0);
        m->fatal = true;
        return;
    }
    m->memo.prune = ok;
}

static spa_code vm_run_mode(spa_scan_ctx *sc, spa_in *in, const char *loc, uint32_t depth,
                            uint32_t parent, uint32_t *idx, bool cfile);

spa_code spa_vm_run(spa_scan_ctx *sc, spa_in *in, const char *loc, uint32_t depth,
                    uint32_t parent, uint32_t *idx) {
    return vm_run_mode(sc, in, loc, depth, parent, idx, false);
}

static spa_code vm_run_mode(spa_scan_ctx *sc, spa_in *in, const char *loc, uint32_t depth,
                            uint32_t parent, uint32_t *idx, bool cfile) {
    spa_stream st;
    memset(&st, 0, sizeof st);
    st.loc = loc ? loc : "";
    st.start = spa_in_pos(in);
    st.end = st.start;
    st.proto = -1;
    st.depth = depth;
    st.parent = parent;
    st.limit = SPA_LIM_COUNT;
    uint32_t id = spa_ctx_add_stream(sc, &st);
    if (idx) *idx = id;
    if (id == UINT32_MAX) return SPA_OK; /* max_streams: the context noted it; *idx says so */

    vm m;
    memset(&m, 0, sizeof m);
    m.sc = sc;
    m.ar = spa_ctx_arena(sc);
    m.lim = spa_ctx_limits(sc);
    m.in = in;
    m.hooks = spa_ctx_hooks(sc);
    m.idx = id;
    m.depth = depth;
    m.start = st.start;
    m.max_proto = -1;
    m.limit = SPA_LIM_COUNT;
    m.cfile = cfile;
    m.lim_stack = m.lim->v[SPA_LIM_STACK];
    m.stable = spa_in_stable(in);
    m.general = spa_ctx_vm_general(sc);
    m.nokinds = spa_ctx_vm_nokinds(sc);
    if (m.stable) {
        const uint8_t *p;
        size_t got;
        if (spa_in_peek(in, 0, &p, &got) == SPA_OK) { m.mem_lo = p; m.mem_hi = p + got; }
        else m.stable = false;
    }
    if (depth > m.lim->v[SPA_LIM_NEST]) vm_limit(&m, SPA_LIM_NEST, "nesting depth limit", 0);
    else if (!vk_try(&m, cfile)) {
        vm_prune_setup(&m, cfile);
        if (!m.fatal) vm_exec(&m);
    }

    /* copy the IR into the arena; free the transient structures */
    spa_ir *ir = NULL;
    if (m.nir) {
        ir = spa_arena_alloc(m.ar, m.nir * sizeof *ir);
        if (ir) memcpy(ir, m.ir, m.nir * sizeof *ir);
        else { m.nir = 0; vm_nomem(&m, 0); }
    }
    free(m.ir);
    free(m.stack);
    free(m.marks);
    free(m.memo.keys);
    free(m.memo.vals);
    free(m.memo.dense);
    free(m.memo.get);
    free(m.memo.def);

    spa_stream *s = spa_ctx_stream(sc, id);
    s->end = spa_in_pos(in);
    *spa_ctx_vm_bytes(sc) += s->end - s->start;
    s->proto = m.max_proto;
    s->nops = m.nops;
    s->ir = ir;
    s->n_ir = m.nir;
    s->err = m.err;
    s->limit = m.err.code == SPA_E_LIMIT ? m.limit : SPA_LIM_COUNT;
    s->complete = m.complete;
    if (m.fatal) return m.err.code == SPA_OK ? SPA_E_INTERNAL : m.err.code;
    if (m.frame_cross && !cfile) {
        /* the C unpickler reading a file would see other bytes: run that
         * reading too, as its own stream nested under this one */
        spa_in *again = spa_in_reopen(m.ar, in, st.start);
        const char *l2 = spa_ctx_loc(sc, "%s#c-file-frames", st.loc);
        if (again) {
            uint32_t j;
            spa_code c2 = vm_run_mode(sc, again, l2, depth, id, &j, true);
            if (c2 == SPA_E_NOMEM || c2 == SPA_E_IO) return c2;
        } else {
            spa_err e = { SPA_E_UNSUPPORTED, "a read crosses a FRAME end; the C file reader's view was not re-run", 0 };
            spa_ctx_note(sc, SPA_NOTE_INFO, st.loc, e, SPA_LIM_COUNT, NULL);
        }
    }
    return SPA_OK;
}

#define PUSH(v) do { if (!vm_push(m, (v), off)) return; } while (0)
#define POP(var) spa_val *var = vm_pop(m, off); if (!var) return

/* ================================================================ opcode handlers
 * One handler per opcode, named after it as in CPython's Modules/_pickle.c
 * (load_<OPCODE>), in the order of opcodes.def; vm_load[] below dispatches
 * to them from the opcode table. Each is entered with the opcode byte
 * consumed (off is its offset) and returns with m->err set to stop.
 * Adding an opcode: one line in opcodes.def and its load_<NAME> here (the
 * table does not compile without it). */
typedef void vm_handler(vm *m, uint8_t op, uint64_t off);

/* The opcodes with a fixed argument that dominate plain data (small ints,
 * floats, memo traffic), run from their argument bytes b: read by vm_read in
 * their handler, or straight from the reader's window in vm_fast. The width
 * of each is its argument kind in the opcode table. */
#define VM_ARGW(name, kind)                                                                  \
    ((SPA_OP_##name == SPA_OP_BININT || SPA_OP_##name == SPA_OP_BININT1 ||                   \
      SPA_OP_##name == SPA_OP_BININT2 || SPA_OP_##name == SPA_OP_BINFLOAT ||                 \
      SPA_OP_##name == SPA_OP_BINPUT || SPA_OP_##name == SPA_OP_LONG_BINPUT ||               \
      SPA_OP_##name == SPA_OP_BINGET || SPA_OP_##name == SPA_OP_LONG_BINGET)                 \
         ? (kind == SPA_ARG_U1 ? 1 : kind == SPA_ARG_U2 ? 2 : kind == SPA_ARG_F8 ? 8 : 4)    \
         : 0)
static const uint8_t vm_argw[256] = {
#define OP(name, byte, kind, argname, proto, before, after) [byte] = VM_ARGW(name, kind),
#include "opcodes.def"
#undef OP
};

/* What vm_fast runs in place, per opcode: 0 stops it; VM_FW_STR is
 * SHORT_BINUNICODE; any other value is 1 + the width of a vm_argw argument,
 * and 1 is an opcode without argument that never touches the input (BUILD's
 * hooks may skip raw data). From the opcode table. */
#define VM_FW_STR 0xffu
static const uint8_t vm_fastw[256] = {
#define OP(name, byte, kind, argname, proto, before, after)                                 \
    [byte] = SPA_OP_##name == SPA_OP_SHORT_BINUNICODE ? VM_FW_STR                            \
           : VM_ARGW(name, kind) ? 1 + VM_ARGW(name, kind)                                   \
           : (kind == SPA_ARG_NONE && SPA_OP_##name != SPA_OP_BUILD) ? 1 : 0,
#include "opcodes.def"
#undef OP
};

/* The vm_argw opcodes from their argument bytes b. */
VM_HOT void vm_step_arg(vm *m, uint8_t op, uint64_t off, const uint8_t *b) {
    switch (op) {
    case SPA_OP_BININT:
    case SPA_OP_BININT1:
    case SPA_OP_BININT2: {
        int w = op == SPA_OP_BININT ? 4 : op == SPA_OP_BININT1 ? 1 : 2;
        spa_val *v = vm_new(m, SPA_V_INT, op, off);
        if (v) v->u.i = w == 4 ? (int64_t)(int32_t)(uint32_t)vm_le(b, 4) : (int64_t)vm_le(b, w);
        PUSH(v);
        return;
    }
    case SPA_OP_BINFLOAT: {
        uint64_t u = 0;
        u = __builtin_bswap64(vm_le(b, 8));   /* big-endian */
        spa_val *v = vm_new(m, SPA_V_FLOAT, op, off);
        if (v) memcpy(&v->u.f, &u, 8);
        PUSH(v);
        return;
    }
    case SPA_OP_BINPUT: case SPA_OP_LONG_BINPUT: {
        spa_val *v = vm_top(m, off);
        if (!v) return;
        vm_memo_put_hot(m, vm_le(b, op == SPA_OP_BINPUT ? 1 : 4), v, off);
        return;
    }
    case SPA_OP_BINGET: case SPA_OP_LONG_BINGET: {
        spa_val *v = vm_memo_get(m, vm_le(b, op == SPA_OP_BINGET ? 1 : 4), op, off);
        if (!v) { vm_fail(m, SPA_E_MEMO, "Memo value not found at index", off); return; }
        PUSH(v);
        return;
    }
    }
}

/* A vm_argw opcode: read its argument, then vm_step_arg. */
VM_HOT void vm_load_fixed(vm *m, uint8_t op, uint64_t off) {
    uint8_t b[8];
    if (vm_read(m, b, vm_argw[op], off)) vm_step_arg(m, op, off, b);
}

/* ------------------------------------------------ integers */
static void load_INT(vm *m, uint8_t op, uint64_t off) {
    const uint8_t *lp;
    size_t ln;
    if (!vm_line_req(m, &lp, &ln, off)) return;
    /* C load_int: strtol(s, &end, 0), then PyLong_FromString(s, NULL, 0);
     * exactly "00"/"01" (3 bytes with the newline) and friends are bools. */
    char buf[128];
    size_t cn = ln < sizeof buf - 1 ? ln : sizeof buf - 1;
    memcpy(buf, lp, cn);
    buf[cn] = '\0';
    if (ln < 1) { spa_in_skip_fast(m->in, ln + 1); vm_fail(m, SPA_E_TRUNCATED, "pickle data was truncated", off); return; }
    errno = 0;
    char *end;
    long x = strtol(buf, &end, 0);
    spa_val *v;
    if (!errno && ln < sizeof buf - 1 && end != buf && *end == '\0') {
        if (ln == 2 && (x == 0 || x == 1)) { v = vm_new(m, SPA_V_BOOL, op, off); if (v) v->u.i = x; }
        else { v = vm_new(m, SPA_V_INT, op, off); if (v) v->u.i = x; }
    } else if (vm_pylong_ok(lp, ln, 0)) {
        int64_t iv;
        if (vm_int_value(lp, ln, 0, &iv)) { v = vm_new(m, SPA_V_INT, op, off); if (v) v->u.i = iv; }
        else v = vm_decoded(m, SPA_V_LONG, op, off, lp, ln);
    } else {
        spa_in_skip_fast(m->in, ln + 1);
        vm_fail(m, SPA_E_BAD_ARG, "could not convert string to int", off);
        return;
    }
    spa_in_skip_fast(m->in, ln + 1);
    PUSH(v);
}

static void load_BININT(vm *m, uint8_t op, uint64_t off) { vm_load_fixed(m, op, off); }
static void load_BININT1(vm *m, uint8_t op, uint64_t off) { vm_load_fixed(m, op, off); }
static void load_BININT2(vm *m, uint8_t op, uint64_t off) { vm_load_fixed(m, op, off); }

static void load_LONG(vm *m, uint8_t op, uint64_t off) {
    const uint8_t *lp;
    size_t ln;
    if (!vm_line_req(m, &lp, &ln, off)) return;
    size_t n = ln;
    if (n >= 1 && lp[n - 1] == 'L') n--;
    if (ln < 1 || !vm_pylong_ok(lp, n, 0)) {
        spa_in_skip_fast(m->in, ln + 1);
        vm_fail(m, SPA_E_BAD_ARG, "invalid literal for int()", off);
        return;
    }
    int64_t iv;
    spa_val *v;
    if (vm_int_value(lp, n, 0, &iv)) { v = vm_new(m, SPA_V_INT, op, off); if (v) v->u.i = iv; }
    else v = vm_decoded(m, SPA_V_LONG, op, off, lp, n);
    spa_in_skip_fast(m->in, ln + 1);
    PUSH(v);
}

/* LONG1/LONG4: n bytes of little-endian two's complement */
static void vm_load_binlong(vm *m, uint8_t op, uint64_t off, uint64_t n) {
    const uint8_t *d;
    uint64_t kept;
    bool owned, opaque;
    if (!vm_data(m, n, &d, &kept, &owned, off, false, &opaque)) return;
    spa_val *v;
    if (n <= 8 && kept == n) {
        uint64_t u = vm_le(d, (int)n);
        if (n && n < 8 && (d[n - 1] & 0x80)) u |= ~0ull << (8 * n);
        if (owned) vm_bfree(m, (void *)d, kept ? (size_t)kept : 1);
        v = vm_new(m, SPA_V_INT, op, off);
        if (v) v->u.i = (int64_t)u;
    } else {
        v = vm_text_val(m, SPA_V_LONG, op, off, d, n, kept, owned);
    }
    PUSH(v);
}

static void load_LONG1(vm *m, uint8_t op, uint64_t off) {
    uint8_t b[1];
    if (vm_read(m, b, 1, off)) vm_load_binlong(m, op, off, b[0]);
}

static void load_LONG4(vm *m, uint8_t op, uint64_t off) {
    uint8_t b[4];
    if (!vm_read(m, b, 4, off)) return;
    int32_t sn = (int32_t)(uint32_t)vm_le(b, 4);
    if (sn < 0) { vm_fail(m, SPA_E_BAD_ARG, "LONG pickle has negative byte count", off); return; }
    vm_load_binlong(m, op, off, (uint64_t)sn);
}

/* ------------------------------------------------ strings and bytes */
static void load_STRING(vm *m, uint8_t op, uint64_t off) {
    const uint8_t *lp;
    size_t ln;
    if (!vm_line_req(m, &lp, &ln, off)) return;
    if (!(ln >= 2 && lp[0] == lp[ln - 1] && (lp[0] == '\'' || lp[0] == '"'))) {
        spa_in_skip_fast(m->in, ln + 1);
        vm_fail(m, SPA_E_BAD_ARG, "the STRING opcode argument must be quoted", off);
        return;
    }
    uint8_t *tmp = malloc(ln ? ln : 1);
    if (!tmp) { vm_nomem(m, off); return; }
    size_t on = 0;
    const char *em = vm_unescape_bytes(lp + 1, ln - 2, tmp, &on);
    spa_in_skip_fast(m->in, ln + 1);
    if (em) { free(tmp); vm_fail(m, SPA_E_BAD_ARG, em, off); return; }
    spa_val *v = vm_decoded(m, SPA_V_BYTES, op, off, tmp, on);
    free(tmp);
    if (v) v->flags |= SPA_VF_PY2STR;
    PUSH(v);
    vm_on_const(m, v);
}

/* The counted str/bytes opcodes: the length (its width and signedness are
 * the argument kind in the opcode table), then the data (vm_data: *d, its
 * length *n, the *kept prefix, *owned, *opaque); false with m->err set. */
static bool vm_counted_arg(vm *m, uint8_t op, uint64_t off, const uint8_t **d, uint64_t *n, uint64_t *kept,
                           bool *owned, bool *opaque) {
    uint8_t b[8];
    const spa_opinfo *oi = spa_op_info(op);
    if (oi->kind == SPA_ARG_CNT1) { if (!vm_read(m, b, 1, off)) return false; *n = b[0]; }
    else if (oi->kind == SPA_ARG_CNT8) {
        if (!vm_read(m, b, 8, off)) return false;
        *n = vm_le(b, 8);
        if (*n > (uint64_t)INT64_MAX) { vm_fail(m, SPA_E_BAD_ARG, "length exceeds system's maximum size", off); return false; }
    } else {
        if (!vm_read(m, b, 4, off)) return false;
        *n = vm_le(b, 4);
        if (oi->kind == SPA_ARG_CNT4S && (*n & 0x80000000u)) {
            vm_fail(m, SPA_E_BAD_ARG, "BINSTRING pickle has negative byte count", off);
            return false;
        }
    }
    bool lin = op == SPA_OP_BINBYTES || op == SPA_OP_SHORT_BINBYTES || op == SPA_OP_BINBYTES8 ||
               op == SPA_OP_BYTEARRAY8;
    if (!vm_data(m, *n, d, kept, owned, off, lin, opaque)) return false;
    bool uni = op == SPA_OP_BINUNICODE || op == SPA_OP_SHORT_BINUNICODE || op == SPA_OP_BINUNICODE8;
    if (uni && !vm_utf8_ok(*d, *kept, *kept < *n)) {
        if (*owned) vm_bfree(m, (void *)*d, *kept ? (size_t)*kept : 1);
        vm_fail(m, SPA_E_BAD_ARG, "invalid UTF-8 in unicode argument", off);
        return false;
    }
    return true;
}

/* A counted str/bytes argument kept in part (kept < n) whose data lies whole
 * in the input's memory: vm_data over a stable input points into it, zero-copy,
 * and has checked that all n bytes are there (SPA_VF_WHOLE; not for an opaque
 * constant, which no nested reading accepts). */
static bool vm_whole(const vm *m, bool owned, bool opaque, uint64_t kept, uint64_t n) {
    return m->stable && !owned && !opaque && kept < n;
}

/* The fields of a counted str/bytes opcode's value past vm_new's (the
 * general path's node and the kinds-only path's probe share them). */
static void vm_counted_set(spa_val *v, uint8_t op, const uint8_t *d, uint64_t n, uint64_t kept, bool opaque) {
    v->u.s.p = d;
    v->u.s.len = n;
    v->u.s.kept = kept;
    if (kept < n) v->flags |= SPA_VF_TRUNC;
    if (op == SPA_OP_BINSTRING || op == SPA_OP_SHORT_BINSTRING) v->flags |= SPA_VF_PY2STR;
    if (op == SPA_OP_BYTEARRAY8) v->flags |= SPA_VF_BYTEARRAY;
    if (opaque) v->opcode |= SPA_VOP_OPAQUE;
}

static spa_vkind vm_counted_kind(uint8_t op) {
    return op == SPA_OP_BINUNICODE || op == SPA_OP_SHORT_BINUNICODE || op == SPA_OP_BINUNICODE8 ? SPA_V_STR
                                                                                                : SPA_V_BYTES;
}

/* The value of a counted str/bytes opcode. */
static spa_val *vm_counted_val(vm *m, uint8_t op, uint64_t off, const uint8_t *d, uint64_t n, uint64_t kept,
                               bool owned, bool opaque) {
    spa_val *v = vm_new(m, vm_counted_kind(op), op, off);
    if (!v) { if (owned) vm_bfree(m, (void *)d, kept ? (size_t)kept : 1); return NULL; }
    vm_counted_set(v, op, d, n, kept, opaque);
    if (vm_whole(m, owned, opaque, kept, n)) v->flags |= SPA_VF_WHOLE;
    return v;
}

static void vm_load_counted(vm *m, uint8_t op, uint64_t off) {
    const uint8_t *d;
    uint64_t n, kept;
    bool owned, opaque;
    if (!vm_counted_arg(m, op, off, &d, &n, &kept, &owned, &opaque)) return;
    spa_val *v = vm_counted_val(m, op, off, d, n, kept, owned, opaque);
    PUSH(v);
    vm_on_const(m, v);
}

static void load_BINSTRING(vm *m, uint8_t op, uint64_t off) { vm_load_counted(m, op, off); }
static void load_SHORT_BINSTRING(vm *m, uint8_t op, uint64_t off) { vm_load_counted(m, op, off); }
static void load_BINBYTES(vm *m, uint8_t op, uint64_t off) { vm_load_counted(m, op, off); }
static void load_SHORT_BINBYTES(vm *m, uint8_t op, uint64_t off) { vm_load_counted(m, op, off); }
static void load_BINBYTES8(vm *m, uint8_t op, uint64_t off) { vm_load_counted(m, op, off); }
static void load_BYTEARRAY8(vm *m, uint8_t op, uint64_t off) { vm_load_counted(m, op, off); }

static void load_NEXT_BUFFER(vm *m, uint8_t op, uint64_t off) {
    /* needs buffers= at load time (an error otherwise); modelled leniently */
    PUSH(vm_new(m, SPA_V_BUFFER, op, off));
}

static void load_READONLY_BUFFER(vm *m, uint8_t op, uint64_t off) {
    spa_val *v = vm_top(m, off);
    if (v) v->flags |= SPA_VF_READONLY;
}

/* ------------------------------------------------ None, bools, text, floats */
static void load_NONE(vm *m, uint8_t op, uint64_t off) { PUSH(vm_new(m, SPA_V_NONE, op, off)); }

static void vm_load_bool(vm *m, uint8_t op, uint64_t off, bool val) {
    spa_val *v = vm_new(m, SPA_V_BOOL, op, off);
    if (v) v->u.i = val;
    PUSH(v);
}
static void load_NEWTRUE(vm *m, uint8_t op, uint64_t off) { vm_load_bool(m, op, off, true); }
static void load_NEWFALSE(vm *m, uint8_t op, uint64_t off) { vm_load_bool(m, op, off, false); }

static void load_UNICODE(vm *m, uint8_t op, uint64_t off) {
    const uint8_t *lp;
    size_t ln;
    if (!vm_line_req(m, &lp, &ln, off)) return;
    uint8_t *tmp = malloc(2 * ln + 8);
    if (!tmp) { vm_nomem(m, off); return; }
    size_t on = 0;
    const char *em = vm_unescape_raw_unicode(lp, ln, tmp, &on);
    spa_in_skip_fast(m->in, ln + 1);
    if (em) { free(tmp); vm_fail(m, SPA_E_BAD_ARG, em, off); return; }
    spa_val *v = vm_decoded(m, SPA_V_STR, op, off, tmp, on);
    free(tmp);
    PUSH(v);
    vm_on_const(m, v);
}

static void load_SHORT_BINUNICODE(vm *m, uint8_t op, uint64_t off) { vm_load_counted(m, op, off); }
static void load_BINUNICODE(vm *m, uint8_t op, uint64_t off) { vm_load_counted(m, op, off); }
static void load_BINUNICODE8(vm *m, uint8_t op, uint64_t off) { vm_load_counted(m, op, off); }

static void load_FLOAT(vm *m, uint8_t op, uint64_t off) {
    const uint8_t *lp;
    size_t ln;
    if (!vm_line_req(m, &lp, &ln, off)) return;
    /* C: PyOS_string_to_double; pure Python: float(text). Accept either. */
    char buf[128];
    size_t j = 0;
    for (size_t i = 0; i < ln && j < sizeof buf - 1; i++) if (lp[i] != '_') buf[j++] = (char)lp[i];
    buf[j] = '\0';
    char *s = buf, *end;
    while (vm_isspace((uint8_t)*s)) s++;
    bool hexish = strchr(s, 'x') || strchr(s, 'X');
    double d = strtod(s, &end);
    while (vm_isspace((uint8_t)*end)) end++;
    spa_in_skip_fast(m->in, ln + 1);
    if (ln >= sizeof buf - 1 || end == s || *end != '\0' || hexish) {
        vm_fail(m, SPA_E_BAD_ARG, "could not convert string to float", off);
        return;
    }
    spa_val *v = vm_new(m, SPA_V_FLOAT, op, off);
    if (v) v->u.f = d;
    PUSH(v);
}

static void load_BINFLOAT(vm *m, uint8_t op, uint64_t off) { vm_load_fixed(m, op, off); }

/* ------------------------------------------------ containers */
VM_HOT void load_EMPTY_LIST(vm *m, uint8_t op, uint64_t off) { PUSH(vm_new(m, SPA_V_LIST, op, off)); }

/* APPEND(S), SETITEM(S), ADDITEMS into a literal container: keep the first
 * items, count the rest and let plain ones go. */
static void vm_fill(vm *m, spa_val *t, size_t x, bool pairs, uint64_t off) {
    uint32_t step = pairs ? 2 : 1;
    uint32_t keep = pairs ? 2 * VM_KEEP_PLAIN : VM_KEEP_PLAIN;
    size_t cnt = (m->sp - x) / step * step;
    if (t->n + cnt <= keep && cnt && vm_seq_reserve(m, t, t->n + (uint32_t)cnt, off)) {
        /* all of them kept (a small literal dict or list filled at once):
         * what vm_seq_add does item by item, in one copy */
        uint8_t fl = 0;
        for (size_t i = 0; i < cnt; i++) fl |= (t->u.seq.items[t->n + i] = m->stack[x + i])->flags;
        t->n += (uint32_t)cnt;
        t->u.seq.count += cnt;
        t->flags |= fl & SPA_VFX_HOT;
        m->sp = x;
        return;
    }
    vm_seq_prereserve(m, t, cnt, off);
    for (size_t i = x; i + step <= m->sp; i += step) {
        spa_val *a = m->stack[i], *b2 = step == 2 ? m->stack[i + 1] : a;
        /* the items are cold by now: fetch a node 8 items ahead, its item
         * array 4 ahead, the items it holds 2 ahead */
        if (i + 8 * step < m->sp) __builtin_prefetch(m->stack[i + 8 * step]);
        if (i + 4 * step < m->sp) {
            const spa_val *ahead = m->stack[i + 4 * step];
            if (vm_is_seq(ahead) && ahead->u.seq.items) __builtin_prefetch(ahead->u.seq.items);
        }
        if (i + 2 * step < m->sp) {
            const spa_val *ahead = m->stack[i + 2 * step];
            if (vm_is_seq(ahead) && ahead->u.seq.items) vm_prefetch_items(ahead);
        }
        if (t->n >= keep && !((a->flags | b2->flags) & SPA_VFX_HOT)) {
            /* full container, plain item: count it and let it go */
            t->u.seq.count += step;
            t->flags |= SPA_VF_TRUNC;
            vm_drop_fetched(m, a);
            if (step == 2) vm_drop_fetched(m, b2);
            continue;
        }
        vm_seq_add(m, t, &m->stack[i], step, off);
    }
    m->sp = x;
}

/* C do_append / do_setitems / load_additems: the target sits right below
 * the items (from x) and above the fence; k items without a MARK (APPEND,
 * SETITEM), from the topmost MARK otherwise (k == 0). */
static void vm_add_items(vm *m, uint8_t op, uint64_t off, size_t k, bool pairs) {
    size_t x;
    if (k) {
        if (m->sp < k || m->sp - k <= vm_fence(m)) { vm_fail(m, SPA_E_STACK, "unpickling stack underflow", off); return; }
        x = m->sp - k;
    } else if (!vm_marker(m, &x, off)) {
        return;
    }
    if (x > m->sp || x <= vm_fence(m)) { vm_fail(m, SPA_E_STACK, "unpickling stack underflow", off); return; }
    if (x == m->sp) return;
    if (pairs && (m->sp - x) % 2) { vm_fail(m, SPA_E_STACK, "odd number of items for SETITEMS", off); return; }
    spa_val *t = m->stack[x - 1];
    spa_vkind want = pairs ? SPA_V_DICT : op == SPA_OP_ADDITEMS ? SPA_V_SET : SPA_V_LIST;
    if (t->kind == want) { vm_fill(m, t, x, pairs, off); return; }
    if (t->kind == SPA_V_BYTES && (t->flags & SPA_VF_BYTEARRAY) && !pairs && op != SPA_OP_ADDITEMS) {
        while (m->sp > x) vm_drop(m, m->stack[--m->sp]); /* bytearray.extend(ints) */
        return;
    }
    /* anything else: the loader calls its append/extend/__setitem__/add */
    spa_val *items = vm_collect(m, pairs ? SPA_V_TUPLE : SPA_V_LIST, op, x, off);
    if (!items) return;
    t->flags |= SPA_VF_MUTATED;
    spa_ir *e = vm_ir(m, SPA_IR_MUTATE, op, off);
    if (e) { vm_pin(t); vm_pin(items); e->target = t; e->arg = items; }
    else vm_drop(m, items);
    if (items->flags & SPA_VFX_HOT) t->flags |= SPA_VFX_HOT;
}

static void load_APPEND(vm *m, uint8_t op, uint64_t off) { vm_add_items(m, op, off, 1, false); }
static void load_APPENDS(vm *m, uint8_t op, uint64_t off) { vm_add_items(m, op, off, 0, false); }

/* TUPLE, LIST, DICT, FROZENSET: the items above the topmost MARK */
static void vm_load_marked(vm *m, uint8_t op, uint64_t off, spa_vkind k) {
    size_t at;
    if (!vm_marker(m, &at, off)) return;
    if (k == SPA_V_DICT && (m->sp - at) % 2) { vm_fail(m, SPA_E_STACK, "odd number of items for DICT", off); return; }
    PUSH(vm_collect(m, k, op, at, off));
}

static void load_LIST(vm *m, uint8_t op, uint64_t off) { vm_load_marked(m, op, off, SPA_V_LIST); }
static void load_EMPTY_TUPLE(vm *m, uint8_t op, uint64_t off) { PUSH(vm_new(m, SPA_V_TUPLE, op, off)); }
static void load_TUPLE(vm *m, uint8_t op, uint64_t off) { vm_load_marked(m, op, off, SPA_V_TUPLE); }

/* TUPLE1/2/3: the top k items */
static void vm_load_tuple_n(vm *m, uint8_t op, uint64_t off, size_t k) {
    if (m->sp < k || m->sp - k < vm_fence(m)) { vm_fail(m, SPA_E_STACK, "unpickling stack underflow", off); return; }
    PUSH(vm_collect(m, SPA_V_TUPLE, op, m->sp - k, off));
}

static void load_TUPLE1(vm *m, uint8_t op, uint64_t off) { vm_load_tuple_n(m, op, off, 1); }
static void load_TUPLE2(vm *m, uint8_t op, uint64_t off) { vm_load_tuple_n(m, op, off, 2); }
static void load_TUPLE3(vm *m, uint8_t op, uint64_t off) { vm_load_tuple_n(m, op, off, 3); }
VM_HOT void load_EMPTY_DICT(vm *m, uint8_t op, uint64_t off) { PUSH(vm_new(m, SPA_V_DICT, op, off)); }
static void load_DICT(vm *m, uint8_t op, uint64_t off) { vm_load_marked(m, op, off, SPA_V_DICT); }
static void load_SETITEM(vm *m, uint8_t op, uint64_t off) { vm_add_items(m, op, off, 2, true); }
static void load_SETITEMS(vm *m, uint8_t op, uint64_t off) { vm_add_items(m, op, off, 0, true); }
static void load_EMPTY_SET(vm *m, uint8_t op, uint64_t off) { PUSH(vm_new(m, SPA_V_SET, op, off)); }
static void load_ADDITEMS(vm *m, uint8_t op, uint64_t off) { vm_add_items(m, op, off, 0, false); }
static void load_FROZENSET(vm *m, uint8_t op, uint64_t off) { vm_load_marked(m, op, off, SPA_V_FROZENSET); }

/* ------------------------------------------------ stack and marks */
static void load_POP(vm *m, uint8_t op, uint64_t off) {
    if (m->nmarks && m->marks[m->nmarks - 1] == m->sp) { m->nmarks--; return; }
    POP(v);
    vm_discard(m, v, op, off);
}

static void load_DUP(vm *m, uint8_t op, uint64_t off) {
    spa_val *v = vm_top(m, off);
    if (!v) return;
    vm_pin(v);
    PUSH(v);
}

VM_HOT void load_MARK(vm *m, uint8_t op, uint64_t off) {
    if (m->nmarks >= m->lim->v[SPA_LIM_MARKS]) { vm_limit(m, SPA_LIM_MARKS, "mark depth limit", off); return; }
    if (m->nmarks == m->mcap) {
        size_t nc = m->mcap ? m->mcap * 2 : 64;
        size_t *nm = realloc(m->marks, nc * sizeof *nm);
        if (!nm) { vm_nomem(m, off); return; }
        m->marks = nm;
        m->mcap = nc;
    }
    m->marks[m->nmarks++] = m->sp;
}

static void load_POP_MARK(vm *m, uint8_t op, uint64_t off) {
    size_t at;
    if (!vm_marker(m, &at, off)) return;
    while (m->sp > at) vm_discard(m, m->stack[--m->sp], op, off);
}

/* ------------------------------------------------ memo */
/* GET/PUT: a decimal key on a text line */
static void vm_load_memo_line(vm *m, uint8_t op, uint64_t off, bool put) {
    const uint8_t *lp;
    size_t ln;
    if (!vm_line_req(m, &lp, &ln, off)) return;
    bool ok = ln >= 1 && vm_pylong_ok(lp, ln, 10);
    int64_t key = -1;
    bool fits = ok && vm_int_value(lp, ln, 10, &key);
    spa_in_skip_fast(m->in, ln + 1);
    if (!ok) { vm_fail(m, SPA_E_BAD_ARG, "invalid memo key", off); return; }
    if (!fits) {   /* beyond Py_ssize_t: OverflowError (PUT) / not found (GET) in CPython */
        vm_fail(m, put ? SPA_E_BAD_ARG : SPA_E_MEMO, "memo key out of range", off);
        return;
    }
    if (put) {
        if (key < 0) { vm_fail(m, SPA_E_BAD_ARG, "negative PUT argument", off); return; }
        spa_val *v = vm_top(m, off);
        if (!v) return;
        vm_memo_put(m, (uint64_t)key, v, off);
        return;
    }
    spa_val *v = key >= 0 ? vm_memo_get(m, (uint64_t)key, op, off) : NULL;
    if (!v) { vm_fail(m, SPA_E_MEMO, "Memo value not found at index", off); return; }
    PUSH(v);
}

static void load_GET(vm *m, uint8_t op, uint64_t off) { vm_load_memo_line(m, op, off, false); }
static void load_BINGET(vm *m, uint8_t op, uint64_t off) { vm_load_fixed(m, op, off); }
static void load_LONG_BINGET(vm *m, uint8_t op, uint64_t off) { vm_load_fixed(m, op, off); }
static void load_PUT(vm *m, uint8_t op, uint64_t off) { vm_load_memo_line(m, op, off, true); }
static void load_BINPUT(vm *m, uint8_t op, uint64_t off) { vm_load_fixed(m, op, off); }
static void load_LONG_BINPUT(vm *m, uint8_t op, uint64_t off) { vm_load_fixed(m, op, off); }

VM_HOT void load_MEMOIZE(vm *m, uint8_t op, uint64_t off) {
    spa_val *v = vm_top(m, off);
    if (v) vm_memo_put_hot(m, m->memo.count, v, off);
}

/* ------------------------------------------------ globals */
/* EXT1/2/4: copyreg's extension registry maps the code to (module, name);
 * it is empty unless the host registered codes, so the target is unknown. */
static void vm_load_ext(vm *m, uint8_t op, uint64_t off, size_t w) {
    uint8_t b[4];
    if (!vm_read(m, b, w, off)) return;
    int64_t code = w == 4 ? (int64_t)(int32_t)(uint32_t)vm_le(b, 4) : (int64_t)vm_le(b, (int)w);
    if (code <= 0) { vm_fail(m, SPA_E_BAD_ARG, "EXT specifies code <= 0", off); return; }
    char nb[32];
    int nn = snprintf(nb, sizeof nb, "<ext:%lld>", (long long)code);
    int oldp = m->proto;
    m->proto = 5; /* no compat mapping of the placeholder */
    spa_val *g = vm_global(m, op, off, "copyreg", vm_cstr(m, (const uint8_t *)nb, (size_t)nn), SPA_IRF_EXT);
    m->proto = oldp;
    PUSH(g);
}

static void load_EXT1(vm *m, uint8_t op, uint64_t off) { vm_load_ext(m, op, off, 1); }
static void load_EXT2(vm *m, uint8_t op, uint64_t off) { vm_load_ext(m, op, off, 2); }
static void load_EXT4(vm *m, uint8_t op, uint64_t off) { vm_load_ext(m, op, off, 4); }

/* GLOBAL and INST: two text lines. At EOF without a newline the pure-Python
 * unpickler still calls find_class(line[:-1]) (it imports the module), so
 * the VM records that import before reporting the truncation. Returns the
 * global, NULL with m->err set. */
static spa_val *vm_global_lines(vm *m, uint8_t op, uint64_t off) {
    const uint8_t *lp;
    size_t ln;
    const char *mod = "", *name = "";
    bool nl, trunc = false;
    spa_code c = vm_line(m, &lp, &ln, &nl, off);
    if (c == SPA_E_TRUNCATED) { mod = vm_cstr(m, lp, ln ? ln - 1 : 0); spa_in_skip_fast(m->in, ln); trunc = true; }
    else if (c != SPA_OK) return NULL;
    else {
        mod = vm_cstr(m, lp, ln);
        spa_in_skip_fast(m->in, ln + 1);
        c = vm_line(m, &lp, &ln, &nl, off);
        if (c == SPA_E_TRUNCATED) { name = vm_cstr(m, lp, ln ? ln - 1 : 0); spa_in_skip_fast(m->in, ln); trunc = true; }
        else if (c != SPA_OK) return NULL;
        else { name = vm_cstr(m, lp, ln); spa_in_skip_fast(m->in, ln + 1); }
    }
    /* the C unpickler's load_inst looks for its MARK before find_class */
    uint16_t gfl = trunc ? SPA_IRF_TRUNCATED | SPA_IRF_PYONLY : 0;
    if (op == SPA_OP_INST && !m->nmarks) gfl |= SPA_IRF_PYONLY;
    spa_val *g = vm_global(m, op, off, mod, name, gfl);
    if (trunc) { vm_fail(m, SPA_E_TRUNCATED, "pickle data was truncated (no newline)", off); return NULL; }
    return g;
}

static void load_GLOBAL(vm *m, uint8_t op, uint64_t off) {
    spa_val *g = vm_global_lines(m, op, off);
    if (g) PUSH(g);
}

static void load_STACK_GLOBAL(vm *m, uint8_t op, uint64_t off) {
    POP(nm);
    POP(md);
    int a = vm_str_operand(md), bb = vm_str_operand(nm);
    if (!a || !bb) { vm_fail(m, SPA_E_STACK, "STACK_GLOBAL requires str", off); return; }
    const char *mod = a == 1 ? vm_opstr(m, md) : "<dynamic>";
    const char *name = bb == 1 ? vm_opstr(m, nm) : "<dynamic>";
    uint16_t fl = (a == 2 || bb == 2) ? SPA_IRF_DYNAMIC : 0;
    size_t nir0 = m->nir;
    spa_val *g = vm_global(m, op, off, mod, name, fl);
    if (g && fl && m->nir > nir0) {
        spa_ir *e = &m->ir[m->nir - 1];
        vm_pin(md); vm_pin(nm);
        e->target = md;
        e->arg = nm;
    } else {
        vm_drop(m, md);
        vm_drop(m, nm);
    }
    PUSH(g);
}

/* ------------------------------------------------ calls */
static void load_REDUCE(vm *m, uint8_t op, uint64_t off) {
    POP(args);
    POP(callee);
    PUSH(vm_call(m, op, off, callee, args, NULL, 0));
}

/* BUILD's container hooks (joblib's raw array data after a NumpyArrayWrapper) */
static void vm_after_build(vm *m, uint64_t off, spa_val *t, spa_val *state) {
    uint64_t skip = 0;
    spa_build_act act = m->hooks->after_build(m->hooks->ud, m->sc, t, state, &skip);
    if (act == SPA_BUILD_SKIP) {
        if (spa_in_skip_fast(m->in, skip) != SPA_OK)
            vm_fail(m, SPA_E_TRUNCATED, "raw array data runs past the end", off);
    } else if (act == SPA_BUILD_NESTED) {
        uint64_t at = spa_in_pos_fast(m->in);
        const char *loc = spa_ctx_loc(m->sc, "%s!stream@%llu", spa_ctx_stream(m->sc, m->idx)->loc,
                                      (unsigned long long)at);
        uint32_t child = UINT32_MAX;
        spa_code c = spa_vm_run(m->sc, m->in, loc, m->depth + 1, m->idx, &child);
        spa_ir *ne = vm_ir(m, SPA_IR_NESTED, SPA_OP_BUILD, off);
        if (ne) { ne->target = t; ne->nested_stream = child; }
        if (c == SPA_E_NOMEM || c == SPA_E_IO) { vm_fail(m, c, "nested stream failed", off); m->fatal = true; return; }
        spa_stream *cs = child != UINT32_MAX ? spa_ctx_stream(m->sc, child) : NULL;
        if (!cs || !cs->complete)
            vm_fail(m, SPA_E_FORMAT, "nested inline stream did not complete", off);
    } else if (act == SPA_BUILD_RESYNC) {
        vm_resync(m, off);
    }
}

static void load_BUILD(vm *m, uint8_t op, uint64_t off) {
    POP(state);
    spa_val *t = vm_top(m, off);
    if (!t) return;
    t->flags |= SPA_VF_MUTATED;
    spa_ir *e = vm_ir(m, SPA_IR_BUILD, op, off);
    if (e) { vm_pin(t); vm_pin(state); e->target = t; e->arg = state; }
    if (state->flags & SPA_VFX_HOT) t->flags |= SPA_VFX_HOT;
    if (m->hooks && m->hooks->after_build) vm_after_build(m, off, t, state);
}

static void load_INST(vm *m, uint8_t op, uint64_t off) {
    /* INST imports before it looks for its MARK, as the pure-Python loader does */
    spa_val *g = vm_global_lines(m, op, off);
    if (!g) return;
    size_t at;
    if (!vm_marker(m, &at, off)) return;
    spa_val *args = vm_collect(m, SPA_V_TUPLE, op, at, off);
    if (!args) return;
    PUSH(vm_call(m, op, off, g, args, NULL, SPA_IRF_INST));
}

static void load_OBJ(vm *m, uint8_t op, uint64_t off) {
    size_t at;
    if (!vm_marker(m, &at, off)) return;
    if (m->sp <= at || at < vm_fence(m)) { vm_fail(m, SPA_E_STACK, "unpickling stack underflow", off); return; }
    spa_val *args = vm_collect(m, SPA_V_TUPLE, op, at + 1, off);
    if (!args) return;
    spa_val *cls = m->stack[--m->sp];
    PUSH(vm_call(m, op, off, cls, args, NULL, SPA_IRF_INST));
}

static void load_NEWOBJ(vm *m, uint8_t op, uint64_t off) {
    POP(args);
    POP(cls);
    PUSH(vm_call(m, op, off, cls, args, NULL, SPA_IRF_NEW));
}

static void load_NEWOBJ_EX(vm *m, uint8_t op, uint64_t off) {
    POP(kw);
    POP(args);
    POP(cls);
    PUSH(vm_call(m, op, off, cls, args, kw, SPA_IRF_NEW));
}

/* ------------------------------------------------ framing, protocol, end */
static void load_PROTO(vm *m, uint8_t op, uint64_t off) {
    uint8_t b[1];
    if (!vm_read(m, b, 1, off)) return;
    if (b[0] > 5) { vm_fail(m, SPA_E_BAD_ARG, "unsupported pickle protocol", off); return; }
    m->proto = b[0];
    if (m->proto > m->max_proto) m->max_proto = m->proto;
}

static void load_STOP(vm *m, uint8_t op, uint64_t off) {
    POP(v);
    (void)v;
    m->complete = m->halt = true;
}

static void load_FRAME(vm *m, uint8_t op, uint64_t off) {
    /* CPython's C unpickler prefetches the frame and fails if it runs past
     * EOF; the pure-Python one executes what is there. Frames are not
     * boundaries for opcodes in either, so the VM only checks the size. */
    uint8_t b[8];
    if (!vm_read(m, b, 8, off)) return;
    vm_cf_frame(m, vm_le(b, 8), off);
}

/* ------------------------------------------------ persistent ids */
static void vm_persid(vm *m, uint8_t op, uint64_t off, spa_val *pid) {
    spa_val *v = vm_new(m, SPA_V_PERSID, op, off);
    if (!v) return;
    vm_pin(pid);
    vm_pin(v);
    v->u.persid.pid = pid;
    spa_ir *e = vm_ir(m, SPA_IR_PERSID, op, off);
    if (e) { e->arg = pid; e->result = v; }
    PUSH(v);
}

static void load_PERSID(vm *m, uint8_t op, uint64_t off) {
    const uint8_t *lp;
    size_t ln;
    if (!vm_line_req(m, &lp, &ln, off)) return;
    spa_val *pid = vm_decoded(m, SPA_V_STR, op, off, lp, ln);
    spa_in_skip_fast(m->in, ln + 1);
    if (pid) vm_persid(m, op, off, pid);
}

static void load_BINPERSID(vm *m, uint8_t op, uint64_t off) {
    POP(pid);
    vm_persid(m, op, off, pid);
}

/* byte -> handler, from the opcode table (NULL: not an opcode) */
static vm_handler *const vm_load[256] = {
#define OP(name, byte, kind, argname, proto, before, after) [byte] = load_##name,
#include "opcodes.def"
#undef OP
};

/* Execute one opcode of the table (the byte is consumed); returns with
 * m->err set to stop. The opcodes that dominate plain data are inlined
 * here without the indirect call. */
VM_HOT void vm_step(vm *m, uint8_t op, uint64_t off) {
    if (vm_argw[op]) { vm_load_fixed(m, op, off); return; }
    switch (op) {
    case SPA_OP_MARK: load_MARK(m, op, off); return;
    case SPA_OP_EMPTY_LIST: load_EMPTY_LIST(m, op, off); return;
    case SPA_OP_EMPTY_DICT: load_EMPTY_DICT(m, op, off); return;
    case SPA_OP_MEMOIZE: load_MEMOIZE(m, op, off); return;
    default: vm_load[op](m, op, off); return;
    }
}

/* The fast loop: while the reader's window holds a whole opcode with its
 * argument, run the fixed-argument hot opcodes and short strings from the
 * window's bytes, and the opcodes that read no input in place. It stops, with
 * nothing of the opcode consumed, at any other opcode, at a limit, where an
 * argument would cross the C unpickler's frame buffer (vm_cf_pre) or where a
 * short string needs the general path (longer than max_str, not UTF-8); and
 * after an opcode that failed or completed the stream. vm_exec then runs the
 * next opcode the general way, which reproduces every one of those cases.
 * Returns the bytes consumed. Nothing it calls reads m->in (vm_on_const's
 * hook scans the constant's own bytes). */
#define VM_FAST_WIN 9u  /* an opcode and its longest fixed argument (BINFLOAT) */
static size_t vm_fast(vm *m, const uint8_t *p, size_t got, uint64_t lim_ops, uint64_t lim_bytes) {
    const uint8_t *q = p, *pe = p + got, *qe = pe - (VM_FAST_WIN - 1);
    const uint64_t cpos = spa_in_pos_fast(m->in), base = cpos - m->start;
    const uint64_t lim_str = m->lim->v[SPA_LIM_STR];
    /* no opcode starting max_bytes or more into the stream (off < lim_bytes
     * below), none past max_ops (checked on entry and after each) */
    if (base >= lim_bytes || m->nops >= lim_ops) return 0;
    if (lim_bytes - base < (uint64_t)(qe - p)) qe = p + (lim_bytes - base);
    while (q < qe) {
        uint8_t op = *q;
        unsigned c = vm_fastw[op];
        if (!c) break;
        uint64_t off = base + (uint64_t)(q - p), w = c - 1u;
        if (c == VM_FW_STR) {
            w = 1u + q[1];
            if (w > (uint64_t)(pe - q - 1) || q[1] > lim_str || !vm_utf8_ok(q + 2, q[1], false)) break;
        }
        if (w) {   /* the argument [a, e): vm_cf_pre, then vm_cf_post */
            uint64_t a = cpos + (off - base) + 1, e = a + w;
            if (a < m->cf_end && e > m->cf_end) break;
            if (e > m->cf_end) m->cf_end = e;
        }
        m->nops++;
        q += 1 + w;
        if (c == VM_FW_STR) {
            const uint8_t *d = q - w + 1;
            size_t n = (size_t)w - 1;
            bool owned = !m->stable;
            if (owned) {
                uint8_t *cp = vm_balloc(m, n ? n : 1);
                if (!cp) { vm_nomem(m, off); break; }
                if (n) memcpy(cp, d, n);
                d = cp;
            }
            spa_val *v = vm_text_val(m, SPA_V_STR, op, off, d, n, n, owned);
            if (vm_push(m, v, off)) vm_on_const(m, v);
        } else if (w) {
            vm_step_arg(m, op, off, q - w);
        } else {
            vm_step(m, op, off);
        }
        if (m->halt || m->nops >= lim_ops) break;
    }
    return (size_t)(q - p);
}

static void vm_exec(vm *m) {
    /* max_bytes is per file: what earlier streams used is already spent */
    uint64_t used = *spa_ctx_vm_bytes(m->sc);
    const uint64_t lim_ops = m->lim->v[SPA_LIM_OPS];
    const uint64_t lim_bytes = used < m->lim->v[SPA_LIM_BYTES] ? m->lim->v[SPA_LIM_BYTES] - used : 0;
    spa_in *in = m->in;
    for (;;) {
        const uint8_t *p;
        size_t got;
        spa_code c = m->general ? SPA_OK : spa_in_peek_fast(in, VM_FAST_WIN, &p, &got);
        if (!m->general && c == SPA_OK && got >= VM_FAST_WIN) {
            size_t k = vm_fast(m, p, got, lim_ops, lim_bytes);
            if (k) spa_in_skip_fast(in, k);
            if (m->err.code != SPA_OK || m->complete) return;
        }
        uint64_t off = spa_in_pos_fast(in) - m->start;
        if (m->nops >= lim_ops) { vm_limit(m, SPA_LIM_OPS, "opcode count limit", off); return; }
        if (off >= lim_bytes) { vm_limit(m, SPA_LIM_BYTES, "byte limit (max_bytes per file)", off); return; }
        c = spa_in_peek_fast(in, 1, &p, &got);
        if (c != SPA_OK) { vm_fail(m, c, "read error", off); m->fatal = true; return; }
        if (!got) { vm_fail(m, SPA_E_TRUNCATED, "pickle data ended without STOP", off); return; }
        uint8_t op = p[0];
        if (!spa_op_known(op)) { vm_fail(m, SPA_E_BAD_OPCODE, "invalid load key", off); return; }
        spa_in_skip_fast(in, 1);
        m->nops++;
        vm_step(m, op, off);
        if (m->err.code != SPA_OK || m->complete) return;
    }
}


/* ================================================================ kinds-only path
 * A stream of plain data (no import, call, BUILD, persistent id, nothing the
 * classifier reads) is judged by what the general path records for it: no
 * IR, where it stops, its protocol and opcode count. None of that needs the
 * values, only their number and, for APPEND(S)/SETITEM(S)/ADDITEMS, whether
 * the target is a literal list/dict/set (anything else is a `mutate`). So
 * every stream first runs here on a stack of kinds (one byte per value, no
 * nodes), with the memo reduced to its definitions (the pruned memo's bits:
 * MEMOIZE's count and a GET's "not found" stay exact; a GET pushes VK_ANY).
 * It gives up (vk_bail) at anything else: an opcode outside the set below
 * (GLOBAL, STACK_GLOBAL, INST, OBJ, REDUCE, NEWOBJ(_EX), BUILD, EXT*,
 * PERSID, BINPERSID, the text opcodes, buffers), an error or limit of any
 * kind, an add onto anything but its literal container, and a str/bytes
 * constant that the nested-content hook would not surely pass over
 * (hooks->const_inert, the decision part of on_const, with no side effect).
 * Then the stream runs again from its start on the general path (the
 * reader rewinds; the memo pre-pass runs then), so a stream it completes is
 * exactly one for which the general path records no IR and no error, and
 * its report is the same. Everything it reads goes through the general
 * path's own reads (vm_read, vm_data, vm_counted_arg) or, in vk_fast, the
 * same window checks as vm_fast (frame crossings, max_str). Tests compare
 * the three paths' reports (spa_ctx_set_vm_nokinds / _general). */
enum { VK_ANY = 0, VK_LIST, VK_DICT, VK_SET, VK_OTHER };

/* What vk_fast does per opcode (cls 0: leave it to vk_step); k: the kind
 * pushed (PUSH, MARKED), the items taken (TUPLEN, ADD) or the target's kind
 * (ADDS); w: the argument's width (vm_argw's, from the opcode table) */
enum { VKC_NO = 0, VKC_PUSH, VKC_PUSHA, VKC_PUT, VKC_MEMOIZE, VKC_GET, VKC_MARK, VKC_TUPLEN, VKC_MARKED,
       VKC_ADD, VKC_ADDS, VKC_SSTR, VKC_POP, VKC_DUP, VKC_STOP };
typedef struct vk_op { uint8_t cls, k, want, w; } vk_op;
static const vk_op vk_ops[256] = {
#define OP(name, byte, kind, argname, proto, before, after)                                  \
    [byte] = { SPA_OP_##name == SPA_OP_NONE || SPA_OP_##name == SPA_OP_NEWTRUE ||             \
               SPA_OP_##name == SPA_OP_NEWFALSE || SPA_OP_##name == SPA_OP_EMPTY_TUPLE ||      \
               SPA_OP_##name == SPA_OP_EMPTY_LIST || SPA_OP_##name == SPA_OP_EMPTY_DICT ||     \
               SPA_OP_##name == SPA_OP_EMPTY_SET ? VKC_PUSH                                    \
             : SPA_OP_##name == SPA_OP_BININT || SPA_OP_##name == SPA_OP_BININT1 ||            \
               SPA_OP_##name == SPA_OP_BININT2 || SPA_OP_##name == SPA_OP_BINFLOAT ? VKC_PUSHA \
             : SPA_OP_##name == SPA_OP_BINPUT || SPA_OP_##name == SPA_OP_LONG_BINPUT ? VKC_PUT \
             : SPA_OP_##name == SPA_OP_MEMOIZE ? VKC_MEMOIZE                                   \
             : SPA_OP_##name == SPA_OP_BINGET || SPA_OP_##name == SPA_OP_LONG_BINGET ? VKC_GET \
             : SPA_OP_##name == SPA_OP_MARK ? VKC_MARK                                         \
             : SPA_OP_##name == SPA_OP_TUPLE1 || SPA_OP_##name == SPA_OP_TUPLE2 ||             \
               SPA_OP_##name == SPA_OP_TUPLE3 ? VKC_TUPLEN                                     \
             : SPA_OP_##name == SPA_OP_TUPLE || SPA_OP_##name == SPA_OP_FROZENSET ||           \
               SPA_OP_##name == SPA_OP_LIST || SPA_OP_##name == SPA_OP_DICT ? VKC_MARKED       \
             : SPA_OP_##name == SPA_OP_APPEND || SPA_OP_##name == SPA_OP_SETITEM ? VKC_ADD     \
             : SPA_OP_##name == SPA_OP_APPENDS || SPA_OP_##name == SPA_OP_SETITEMS ||          \
               SPA_OP_##name == SPA_OP_ADDITEMS ? VKC_ADDS                                     \
             : SPA_OP_##name == SPA_OP_SHORT_BINUNICODE || SPA_OP_##name == SPA_OP_SHORT_BINBYTES || \
               SPA_OP_##name == SPA_OP_SHORT_BINSTRING ? VKC_SSTR                              \
             : SPA_OP_##name == SPA_OP_POP ? VKC_POP                                           \
             : SPA_OP_##name == SPA_OP_DUP ? VKC_DUP                                           \
             : SPA_OP_##name == SPA_OP_STOP ? VKC_STOP : VKC_NO,                               \
               SPA_OP_##name == SPA_OP_EMPTY_LIST || SPA_OP_##name == SPA_OP_LIST ? VK_LIST    \
             : SPA_OP_##name == SPA_OP_EMPTY_DICT || SPA_OP_##name == SPA_OP_DICT ? VK_DICT    \
             : SPA_OP_##name == SPA_OP_EMPTY_SET ? VK_SET                                      \
             : SPA_OP_##name == SPA_OP_TUPLE1 || SPA_OP_##name == SPA_OP_APPEND ||             \
               SPA_OP_##name == SPA_OP_APPENDS || SPA_OP_##name == SPA_OP_ADDITEMS ? 1         \
             : SPA_OP_##name == SPA_OP_TUPLE2 || SPA_OP_##name == SPA_OP_SETITEM ||            \
               SPA_OP_##name == SPA_OP_SETITEMS ? 2                                            \
             : SPA_OP_##name == SPA_OP_TUPLE3 ? 3                                              \
             : SPA_OP_##name == SPA_OP_BINGET || SPA_OP_##name == SPA_OP_LONG_BINGET ? VK_ANY : VK_OTHER, \
               SPA_OP_##name == SPA_OP_APPEND || SPA_OP_##name == SPA_OP_APPENDS ? VK_LIST     \
             : SPA_OP_##name == SPA_OP_SETITEM || SPA_OP_##name == SPA_OP_SETITEMS ? VK_DICT   \
             : SPA_OP_##name == SPA_OP_ADDITEMS ? VK_SET : 0,                                  \
               VM_ARGW(name, kind) },
#include "opcodes.def"
#undef OP
};

static void vk_bail(vm *m) { m->kbail = m->halt = true; }

static bool vk_push(vm *m, uint8_t k) {
    if (m->sp >= m->lim_stack) { vk_bail(m); return false; }
    if (m->sp == m->kcap) {
        size_t nc = m->kcap * 2;
        uint8_t *ns = realloc(m->kst, nc);
        if (!ns) { vk_bail(m); return false; }
        m->kst = ns;
        m->kcap = nc;
    }
    m->kst[m->sp++] = k;
    return true;
}

/* Would on_const pass over this constant (d[0..kept) of n bytes) without a
 * trace? Asked with what it reads of the node the general path would offer
 * (vm_counted_val's kind and bytes). */
VM_HOT bool vk_inert(vm *m, uint8_t op, const uint8_t *d, uint64_t n, uint64_t kept, bool whole) {
    const spa_vm_hooks *h = m->hooks;
    if (!h || !h->on_const || kept < h->on_const_min) return true;
    return h->const_inert && h->const_inert(h->ud, vm_counted_kind(op), d, kept, n, whole);
}

/* A counted str/bytes opcode (not BYTEARRAY8), its reads as vm_load_counted's. */
static void vk_counted(vm *m, uint8_t op, uint64_t off) {
    const uint8_t *d;
    uint64_t n, kept;
    bool owned, opaque;
    if (!vm_counted_arg(m, op, off, &d, &n, &kept, &owned, &opaque)) return;
    bool inert = vk_inert(m, op, d, n, kept, vm_whole(m, owned, opaque, kept, n));
    if (owned) vm_bfree(m, (void *)d, kept ? (size_t)kept : 1);
    if (inert) (void)vk_push(m, VK_OTHER);
    else vk_bail(m);
}

/* APPEND(S), SETITEM(S), ADDITEMS: vm_add_items's checks; only a literal
 * target of the opcode's kind is run here. */
static void vk_add(vm *m, uint8_t op, uint64_t off) {
    const vk_op *o = &vk_ops[op];
    size_t x, k = o->cls == VKC_ADD ? o->k : 0;
    if (k) {
        if (m->sp < k || m->sp - k <= vm_fence(m)) { vk_bail(m); return; }
        x = m->sp - k;
    } else if (!vm_marker(m, &x, off)) {
        return;
    }
    if (x > m->sp || x <= vm_fence(m)) { vk_bail(m); return; }
    if (x == m->sp) return;
    if ((o->want == VK_DICT && (m->sp - x) % 2) || m->kst[x - 1] != o->want) { vk_bail(m); return; }
    m->sp = x;
}

/* One opcode (consumed) with the general path's reads; anything this path
 * does not run, or that would fail, ends in vk_bail (or m->err). */
static void vk_step(vm *m, uint8_t op, uint64_t off) {
    const vk_op *o = &vk_ops[op];
    uint8_t b[8];
    size_t at;
    switch (op) {
    case SPA_OP_PROTO: load_PROTO(m, op, off); return;
    case SPA_OP_FRAME: load_FRAME(m, op, off); return;
    case SPA_OP_MARK: load_MARK(m, op, off); return;
    case SPA_OP_SHORT_BINUNICODE: case SPA_OP_BINUNICODE: case SPA_OP_BINUNICODE8:
    case SPA_OP_SHORT_BINBYTES: case SPA_OP_BINBYTES: case SPA_OP_BINBYTES8:
    case SPA_OP_SHORT_BINSTRING: case SPA_OP_BINSTRING:
        vk_counted(m, op, off);
        return;
    case SPA_OP_LONG1: case SPA_OP_LONG4: {
        int w = op == SPA_OP_LONG1 ? 1 : 4;
        if (!vm_read(m, b, (size_t)w, off)) return;
        int64_t n = w == 1 ? (int64_t)b[0] : (int64_t)(int32_t)(uint32_t)vm_le(b, 4);
        const uint8_t *d;
        uint64_t kept;
        bool owned, opaque;
        if (n < 0) break;
        if (!vm_data(m, (uint64_t)n, &d, &kept, &owned, off, false, &opaque)) return;
        if (owned) vm_bfree(m, (void *)d, kept ? (size_t)kept : 1);
        (void)vk_push(m, VK_OTHER);
        return;
    }
    default: break;
    }
    uint64_t key = 0;
    if (vm_argw[op]) {
        if (!vm_read(m, b, vm_argw[op], off)) return;
        key = vm_le(b, vm_argw[op]);
    }
    switch (o->cls) {
    case VKC_PUSH: case VKC_PUSHA: (void)vk_push(m, o->k); return;
    case VKC_PUT: case VKC_MEMOIZE:
        if (m->sp <= vm_fence(m)) break;
        vm_memo_put_hot(m, o->cls == VKC_PUT ? key : m->memo.count, NULL, off);
        return;
    case VKC_GET:
        if (!vm_def_has(&m->memo, key)) break;
        (void)vk_push(m, VK_ANY);
        return;
    case VKC_TUPLEN:
        if (m->sp < o->k || m->sp - o->k < vm_fence(m)) break;
        m->sp -= o->k;
        (void)vk_push(m, VK_OTHER);
        return;
    case VKC_MARKED:
        if (!vm_marker(m, &at, off)) return;
        if (o->k == VK_DICT && (m->sp - at) % 2) break;
        m->sp = at;
        (void)vk_push(m, o->k);
        return;
    case VKC_ADD: case VKC_ADDS: vk_add(m, op, off); return;
    case VKC_POP:
        if (m->nmarks && m->marks[m->nmarks - 1] == m->sp) { m->nmarks--; return; }
        if (m->sp <= vm_fence(m)) break;
        m->sp--;
        return;
    case VKC_DUP:
        if (m->sp <= vm_fence(m)) break;
        (void)vk_push(m, m->kst[m->sp - 1]);
        return;
    case VKC_STOP:
        if (m->sp <= vm_fence(m)) break;
        m->sp--;
        m->complete = m->halt = true;
        return;
    default: break;   /* POP_MARK below */
    }
    if (op == SPA_OP_POP_MARK) {
        if (vm_marker(m, &at, off)) m->sp = at;
        return;
    }
    vk_bail(m);
}

/* vm_memo_put_hot's common case on the kinds-only path (no key is kept, so
 * no GET bitmap to ask): a new key inside the definition bitmap, under the
 * limits, is one bit; anything else takes vm_memo_put. */
VM_HOT void vk_memo_def(vm *m, uint64_t key, uint64_t lim_memo, uint64_t lim_key, uint64_t off) {
    vm_memo *mm = &m->memo;
    uint64_t k = key - mm->dbase;
    if (key >= mm->dbase && k < mm->ndef && !mm->hcount && mm->count < lim_memo && key <= lim_key) {
        uint64_t b = 1ull << (k % 64), *wd = &mm->def[k / 64];
        if (*wd & b) return;
        *wd |= b;
        mm->count++;
        mm->npruned++;
        if (*wd == ~0ull) vm_def_slide(mm);
        return;
    }
    vm_memo_put(m, key, NULL, off);
}

/* Is s[0..n) ASCII (so UTF-8)? Reads whole words only inside [s, end). */
static const uint64_t vk_hi[17][2] = {   /* the top bits of bytes 0..n-1 of two words */
#define VK_M(k) (0x8080808080808080ull >> (4 * (8 - (k))) >> (4 * (8 - (k))))   /* k of 0..8 bytes */
#define VK_HI(n) { VK_M((n) < 8 ? (n) : 8), VK_M((n) <= 8 ? 0 : (n) - 8) }
    VK_HI(0), VK_HI(1), VK_HI(2), VK_HI(3), VK_HI(4), VK_HI(5), VK_HI(6), VK_HI(7), VK_HI(8),
    VK_HI(9), VK_HI(10), VK_HI(11), VK_HI(12), VK_HI(13), VK_HI(14), VK_HI(15), VK_HI(16),
#undef VK_HI
#undef VK_M
};
VM_HOT bool vk_ascii(const uint8_t *s, size_t n, const uint8_t *end) {
    uint64_t w0, w1;
    if (n > 16 || (size_t)(end - s) < 16) return false;
    memcpy(&w0, s, 8);
    memcpy(&w1, s + 8, 8);
    return !((w0 & vk_hi[n][0]) | (w1 & vk_hi[n][1]));
}

/* vm_fast for the kinds-only path: the opcodes of vk_ops from the reader's
 * window, the stack and its fence in registers. It stops, with nothing of
 * the opcode consumed, where vm_fast would (an argument past the window or
 * across the C unpickler's frame buffer, a short string over max_str, a
 * limit) and at anything vk_step must decide (a MARK that needs room,
 * FRAME, PROTO, long strings, ...); what would fail gives up (vk_bail).
 * Returns the bytes consumed. */
#define VK_ARG(wid)                                                                          \
    do {   /* the argument [a, e) in the window: vm_cf_pre, then vm_cf_post */               \
        uintptr_t a_ = (uintptr_t)q + 1, e_ = a_ + (wid);                                    \
        if (e_ > cfp) {                                                                      \
            if (a_ < cfp) goto out;                                                          \
            cfp = e_;                                                                        \
        }                                                                                    \
    } while (0)
/* vk_fast's memo in registers: the count, and the keys that are one bit of
 * the definition bitmap (VK_MEMO_LOAD); written back (VK_MEMO_SYNC) before
 * anything else reads the memo. They name vk_fast's locals. */
#define VK_MEMO_LOAD()                                                                          \
    do {                                                                                        \
        mcount = mm->count;                                                                     \
        mbase = mm->dbase;                                                                      \
        mdef = mm->def;                                                                         \
        /* keys in [mbase, mbase + mspan): inside the bitmap and <= max_memo_key */             \
        mspan = mm->hcount || lim_key < mbase ? 0 : lim_key - mbase < mm->ndef ? lim_key - mbase + 1 : mm->ndef; \
        /* ... and for MEMOIZE (key = count) under max_memo too */                            \
        mspan_m = lim_memo <= mbase ? 0 : lim_memo - mbase < mspan ? lim_memo - mbase : mspan;  \
    } while (0)
#define VK_MEMO_SYNC()                                                                          \
    do {                                                                                        \
        mm->npruned += mcount - mm->count;                                                      \
        mm->count = mcount;                                                                     \
    } while (0)
/* a definition off the fast case: written back, defined, read again */
#define VK_MEMO_DEF_SLOW(key, off)                                                              \
    do {                                                                                        \
        VK_MEMO_SYNC();                                                                         \
        vk_memo_def(m, key, lim_memo, lim_key, off);                                            \
        VK_MEMO_LOAD();                                                                         \
    } while (0)
/* the bitmap's first word is full: written back, slid, read again */
#define VK_MEMO_SLIDE()                                                                         \
    do {                                                                                        \
        VK_MEMO_SYNC();                                                                         \
        vm_def_slide(mm);                                                                       \
        VK_MEMO_LOAD();                                                                         \
    } while (0)
/* the top mark into x (none: give up), the fence read again */
#define VK_POP_MARK()                                                                           \
    do {                                                                                        \
        if (!m->nmarks) goto bail;                                                              \
        x = m->marks[--m->nmarks];                                                              \
        fence = vm_fence(m);                                                                    \
    } while (0)
/* The MARK-consuming classes, in vk_fast's locals (a macro, not a function:
 * the stack height and fence must stay in registers in the hot loop).
 * Marked containers (LIST, DICT, TUPLE, FROZENSET): the items down to the
 * mark become one of kind k. */
#define VK_MARKED(k_)                                                                           \
    do {                                                                                        \
        uint8_t k = (k_);                                                                       \
        VK_POP_MARK();                                                                          \
        if (k == VK_DICT && (sp - x) % 2) goto bail;                                            \
        sp = x;                                                                                 \
        ks[sp++] = k;                                                                           \
    } while (0)
/* APPENDS, SETITEMS, ADDITEMS: the items down to the mark go into the
 * container below it, which must be of kind want. */
#define VK_ADDS(want_)                                                                          \
    do {                                                                                        \
        uint8_t want = (want_);                                                                 \
        VK_POP_MARK();                                                                          \
        if (x > sp || x <= fence) goto bail;                                                    \
        if (x == sp) break;                                                                     \
        if ((want == VK_DICT && (sp - x) % 2) || ks[x - 1] != want) goto bail;                  \
        sp = x;                                                                                 \
    } while (0)
static const uint8_t vk_nogate[256]; /* no const_short: every constant is asked */
static size_t vk_fast(vm *m, const uint8_t *p, size_t got, uint64_t lim_ops, uint64_t lim_bytes) {
    const uint8_t *q = p, *pe = p + got, *qe = pe - (VM_FAST_WIN - 1);
    const uint64_t cpos = spa_in_pos_fast(m->in), base = cpos - m->start;
    const uint64_t lim_str = m->lim->v[SPA_LIM_STR], lim_marks = m->lim->v[SPA_LIM_MARKS];
    const uint64_t lim_memo = m->lim->v[SPA_LIM_MEMO], lim_key = m->lim->v[SPA_LIM_MEMO_KEY];
    if (base >= lim_bytes || m->nops >= lim_ops) return 0;
    if (lim_bytes - base < (uint64_t)(qe - p)) qe = p + (lim_bytes - base);
    /* an opcode takes a byte at least: no opcode count test inside */
    if (lim_ops - m->nops < (uint64_t)(qe - p)) qe = p + (lim_ops - m->nops);
    size_t sp = m->sp, room = m->kcap < m->lim_stack ? m->kcap : (size_t)m->lim_stack, fence = vm_fence(m);
    uint8_t *ks = m->kst;
    uint64_t nops = m->nops;
    /* the C unpickler's buffer end (m->cf_end) as a window address: one before
     * cpos + 1 acts as cpos + 1 (VK_ARG moves it to the argument's end, as it
     * would), one past the window as pe + 1 (no argument here reaches it) */
    const uint64_t cf0 = m->cf_end > cpos + 1 ? m->cf_end : cpos + 1;
    const uintptr_t cfp0 = cf0 - cpos > got ? (uintptr_t)pe + 1 : (uintptr_t)p + (uintptr_t)(cf0 - cpos);
    uintptr_t cfp = cfp0;
    vm_memo *const mm = &m->memo;
    /* vk_memo_def's fast case in registers (VK_MEMO_LOAD, VK_MEMO_SYNC) */
    uint64_t mcount, mbase, mspan, mspan_m, *mdef;
    VK_MEMO_LOAD();
    /* vk_inert, with the hook's fields at hand */
    const spa_vm_hooks *h = m->hooks;
    bool (*const inert)(void *, spa_vkind, const uint8_t *, uint64_t, uint64_t, bool) = h ? h->const_inert : NULL;
    void *const ud = h ? h->ud : NULL;
    const size_t on_min = h && h->on_const ? h->on_const_min : SIZE_MAX;
    const uint8_t *const gate = inert && h->const_short ? h->const_short : vk_nogate;
    for (;;) {
        /* an opcode takes a byte at least and pushes one kind at most: below
         * qlim the stack has room, without a test per opcode */
        if (q >= qe || sp >= room) break;
        const uint8_t *qlim = room - sp < (size_t)(qe - q) ? q + (room - sp) : qe;
        while (q < qlim) {
            uint8_t op = *q;
            uint64_t w, key;
            size_t x;
            switch (vk_ops[op].cls) {
            default: __builtin_unreachable();
            case VKC_NO: goto out;
            case VKC_PUSHA:
                w = vk_ops[op].w;
                VK_ARG(w);
                ks[sp++] = VK_OTHER;
                q += w;
                break;
            case VKC_PUSH: ks[sp++] = vk_ops[op].k; break;
            case VKC_PUT:
                w = vk_ops[op].w;
                VK_ARG(w);
                if (sp <= fence) goto bail;
                key = vm_le(q + 1, (int)w);
                q += w;
                if (key - mbase < mspan && mcount < lim_memo) goto def;
                VK_MEMO_DEF_SLOW(key, base + (uint64_t)(q - w - p));
                if (m->halt) { q -= w; goto bail; }
                break;
            case VKC_MEMOIZE:
                if (sp <= fence) goto bail;
                key = mcount;
                if (key - mbase >= mspan_m) {
                    VK_MEMO_DEF_SLOW(key, base + (uint64_t)(q - p));
                    if (m->halt) goto bail;
                    break;
                }
            def: {   /* vk_memo_def's fast case: a new key is one bit */
                uint64_t k = key - mbase, b = 1ull << (k % 64), *wd = &mdef[k / 64];
                if (*wd & b) break;
                *wd |= b;
                mcount++;
                if (*wd == ~0ull) VK_MEMO_SLIDE();
                break;
            }
            case VKC_GET:
                w = vk_ops[op].w;
                VK_ARG(w);
                key = vm_le(q + 1, (int)w);
                if (key >= mm->dbase && !vm_def_has(mm, key)) goto bail;
                ks[sp++] = VK_ANY;
                q += w;
                break;
            case VKC_MARK:
                if (m->nmarks >= lim_marks || m->nmarks == m->mcap) goto out;
                m->marks[m->nmarks++] = fence = sp;
                break;
            case VKC_TUPLEN:
                x = vk_ops[op].k;
                if (sp < x || sp - x < fence) goto bail;
                sp -= x;
                ks[sp++] = VK_OTHER;
                break;
            case VKC_MARKED:
                VK_MARKED(vk_ops[op].k);
                break;
            case VKC_ADD: {
                const vk_op o = vk_ops[op];
                if (sp < o.k || sp - o.k <= fence || ks[sp - o.k - 1] != o.want) goto bail;
                sp -= o.k;
                break;
            }
            case VKC_ADDS:
                VK_ADDS(vk_ops[op].want);
                break;
            case VKC_SSTR: {
                size_t n = q[1];
                w = 1u + n;
                if (w > (uint64_t)(pe - q - 1) || n > lim_str) goto out;
                VK_ARG(w);
                bool plain = vm_counted_kind(op) != SPA_V_STR || vk_ascii(q + 2, n, pe);
                if (!plain && !vm_utf8_ok(q + 2, n, false)) goto bail;
                if (n >= on_min && !(plain && n < gate[q[2]]) &&
                    (!inert || !inert(ud, vm_counted_kind(op), q + 2, n, n, false)))
                    goto bail;
                ks[sp++] = VK_OTHER;
                q += w;
                break;
            }
            case VKC_POP:
                if (m->nmarks && fence == sp) { m->nmarks--; fence = vm_fence(m); }
                else if (sp > fence) sp--;
                else goto bail;
                break;
            case VKC_DUP:
                if (sp <= fence) goto bail;
                ks[sp] = ks[sp - 1];
                sp++;
                break;
            case VKC_STOP:
                if (sp <= fence) goto bail;
                sp--;
                m->complete = m->halt = true;
                nops++;
                q++;
                goto out;
            }
            nops++;
            q++;
        }
    }
out:
    VK_MEMO_SYNC();
    m->sp = sp;
    m->nops = nops;
    if (cfp != cfp0) m->cf_end = cpos + (uint64_t)(cfp - (uintptr_t)p);
    return (size_t)(q - p);
bail:
    vk_bail(m);
    goto out;
}
#undef VK_MEMO_LOAD
#undef VK_MEMO_SYNC
#undef VK_MEMO_DEF_SLOW
#undef VK_MEMO_SLIDE
#undef VK_MARKED
#undef VK_ADDS
#undef VK_POP_MARK

/* vm_exec for the kinds-only path: every limit, error or end of input is a
 * vk_bail (the general path then reports it). */
static void vk_exec(vm *m) {
    uint64_t used = *spa_ctx_vm_bytes(m->sc);
    const uint64_t lim_ops = m->lim->v[SPA_LIM_OPS];
    const uint64_t lim_bytes = used < m->lim->v[SPA_LIM_BYTES] ? m->lim->v[SPA_LIM_BYTES] - used : 0;
    spa_in *in = m->in;
    for (;;) {
        const uint8_t *p;
        size_t got;
        spa_code c = spa_in_peek_fast(in, VM_FAST_WIN, &p, &got);
        if (c == SPA_OK && got >= VM_FAST_WIN) {
            size_t k = vk_fast(m, p, got, lim_ops, lim_bytes);
            if (k) spa_in_skip_fast(in, k);
            if (m->halt) return;
        }
        uint64_t off = spa_in_pos_fast(in) - m->start;
        if (m->nops >= lim_ops || off >= lim_bytes) { vk_bail(m); return; }
        c = spa_in_peek_fast(in, 1, &p, &got);
        if (c != SPA_OK || !got) { vk_bail(m); return; }
        uint8_t op = p[0];
        spa_in_skip_fast(in, 1);
        m->nops++;
        vk_step(m, op, off);
        if (m->halt) return;
    }
}

/* Run the stream on the kinds-only path when it can be re-run (not the
 * C-file-frames pass, not a sequential input, not general-only). True when
 * that is the stream's result (it completed without a doubt, or the rewind
 * failed: then an internal error); false: the general path runs it from the
 * start, with the state it would have had. */
static bool vk_try(vm *m, bool cfile) {
    if (cfile || m->general || m->nokinds || m->in->rd) return false;
    m->kst = malloc(256);
    if (!m->kst) return false;
    m->kcap = 256;
    m->memo.prune = true;   /* no GET key kept: every definition only counted */
    vk_exec(m);
    free(m->kst);
    m->kst = NULL;
    m->kcap = 0;
    if (!m->kbail && m->complete && m->err.code == SPA_OK && !m->nir) return true;
    free(m->memo.keys);
    free(m->memo.vals);
    free(m->memo.dense);
    free(m->memo.get);
    free(m->memo.def);
    memset(&m->memo, 0, sizeof m->memo);
    m->sp = m->nmarks = 0;
    m->nops = 0;
    m->proto = 0;
    m->max_proto = -1;
    m->err = (spa_err){ SPA_OK, NULL, 0 };
    m->limit = SPA_LIM_COUNT;
    m->complete = m->fatal = m->halt = m->kbail = false;
    m->cf_end = 0;
    m->frame_cross = false;
    if (!spa_in_rewind(m->in, m->start)) {   /* cannot happen: a pread or memory input */
        vm_fail(m, SPA_E_INTERNAL, "reader rewind after the kinds-only pass failed", 0);
        m->fatal = true;
        return true;
    }
    return false;
}
