/* arena.c - the per-scan memory owner (spa_arena_*): a chunked bump allocator
 * over a pluggable allocator (spa_alloc), released by one spa_arena_destroy.
 * Tests inject allocation failures through spa_alloc. */
#include <stdlib.h>
#include <string.h>

#include "spa.h"

#define SPA_ARENA_CHUNK (64u * 1024u)   /* default chunk payload */
#define SPA_ARENA_ALIGN 16u

typedef struct spa_chunk {
    struct spa_chunk *next;
    size_t size, used;
    uint8_t pad[8];                      /* keeps data 16-aligned (header is 32 bytes) */
    _Alignas(16) uint8_t data[];
} spa_chunk;

struct spa_arena {
    spa_alloc a;
    spa_chunk *head;
    size_t total;                         /* bytes handed out */
};

static void *spa_sys_alloc(void *ctx, size_t n) { (void)ctx; return malloc(n); }
static void spa_sys_free(void *ctx, void *p) { (void)ctx; free(p); }

spa_arena *spa_arena_create(const spa_alloc *a) {
    spa_alloc al = { spa_sys_alloc, spa_sys_free, NULL };
    if (a && a->alloc && a->free) al = *a;
    spa_arena *ar = al.alloc(al.ctx, sizeof *ar);
    if (!ar) return NULL;
    memset(ar, 0, sizeof *ar);
    ar->a = al;
    return ar;
}

void *spa_arena_alloc(spa_arena *ar, size_t n) {
    if (!ar) return NULL;
    if (n == 0) n = 1;
    if (n > SIZE_MAX - 2 * SPA_ARENA_ALIGN - sizeof(spa_chunk)) return NULL;
    size_t need = (n + SPA_ARENA_ALIGN - 1) & ~(size_t)(SPA_ARENA_ALIGN - 1);
    spa_chunk *c = ar->head;
    if (!c || c->size - c->used < need) {
        size_t sz = need > SPA_ARENA_CHUNK ? need : SPA_ARENA_CHUNK;
        /* grow chunk size with usage so huge scans do few mallocs */
        if (sz == SPA_ARENA_CHUNK && ar->total > 16u * SPA_ARENA_CHUNK)
            sz = ar->total / 8 > (size_t)8 << 20 ? (size_t)8 << 20 : ar->total / 8;
        if (sz < need) sz = need;
        spa_chunk *nc = ar->a.alloc(ar->a.ctx, sizeof *nc + sz);
        if (!nc) return NULL;
        nc->size = sz;
        nc->used = 0;
        if (c && c->size - c->used > sz - need) {
            /* keep the fuller chunk on top: insert the new one behind it */
            nc->next = c->next;
            c->next = nc;
            nc->used = need;
            ar->total += need;
            return nc->data;
        }
        nc->next = c;
        ar->head = c = nc;
    }
    void *p = c->data + c->used;
    c->used += need;
    ar->total += need;
    return p;
}

void *spa_arena_calloc(spa_arena *ar, size_t n) {
    void *p = spa_arena_alloc(ar, n);
    if (p) memset(p, 0, n ? n : 1);
    return p;
}

char *spa_arena_strndup(spa_arena *ar, const char *s, size_t n) {
    if (n == SIZE_MAX) return NULL;
    char *p = spa_arena_alloc(ar, n + 1);
    if (!p) return NULL;
    if (n) memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

size_t spa_arena_used(const spa_arena *ar) { return ar ? ar->total : 0; }

void spa_arena_destroy(spa_arena *ar) {
    if (!ar) return;
    spa_alloc al = ar->a;
    spa_chunk *c = ar->head;
    while (c) {
        spa_chunk *nx = c->next;
        al.free(al.ctx, c);
        c = nx;
    }
    al.free(al.ctx, ar);
}
