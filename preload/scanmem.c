/* scanmem.c - the memory an in-memory judgement's scan runs in (spp_scan_alloc,
 * handed to the analyzer's arena as its spa_alloc). A scan of a pickle full of
 * calls keeps its values (the classifier needs them): tens of megabytes of
 * fresh pages for a few megabytes of pickle, and inside a host process every
 * fresh 4 KiB page is a fault. Measured on layer 2's 100,000-object load
 * (test/bench/bench_layer2.sh): 25,000 of the preload's ~45,000 faults and
 * most of its cost. The arena's large chunks (>= 1 MiB; it grows them up to
 * 8 MiB as a scan uses more) are therefore mapped 2 MiB-aligned and marked
 * MADV_HUGEPAGE, so the kernel backs them with transparent huge pages where it
 * can (one fault per 2 MiB; where it cannot, or THP is off, they are ordinary
 * pages, as before). Smaller blocks come from malloc. Every block is freed
 * when the scan's arena is (munmap for the large ones): nothing stays mapped,
 * no lock, nothing to reset at fork. */
#include "spp.h"

#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#define SPP_SCANMEM_LARGE (1u << 20) /* blocks from here on are mapped */
#define SPP_SCANMEM_HUGE (2u << 20)  /* x86-64 transparent huge page */
#define SPP_SCANMEM_HDR 16u           /* header: mapped length (0 = malloc), keeps 16-byte alignment */

static void *spp_scanmem_alloc(void *ctx, size_t n) {
    (void)ctx;
    if (n > SIZE_MAX - 2 * SPP_SCANMEM_HUGE) return NULL;
    uint64_t *p;
    if (n + SPP_SCANMEM_HDR < SPP_SCANMEM_LARGE) {
        if (!(p = malloc(n + SPP_SCANMEM_HDR))) return NULL;
        p[0] = 0;
        return (char *)p + SPP_SCANMEM_HDR;
    }
    size_t len = (n + SPP_SCANMEM_HDR + SPP_SCANMEM_HUGE - 1) & ~(size_t)(SPP_SCANMEM_HUGE - 1);
    /* one huge page more than needed, then the unaligned ends are unmapped */
    char *m = mmap(NULL, len + SPP_SCANMEM_HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return NULL;
    char *a = (char *)(((uintptr_t)m + SPP_SCANMEM_HUGE - 1) & ~(uintptr_t)(SPP_SCANMEM_HUGE - 1));
    if (a > m) munmap(m, (size_t)(a - m));
    if (m + len + SPP_SCANMEM_HUGE > a + len) munmap(a + len, (size_t)(m + len + SPP_SCANMEM_HUGE - (a + len)));
    (void)madvise(a, len, MADV_HUGEPAGE); /* advice only: refused, the pages are ordinary ones */
    p = (uint64_t *)(void *)a;
    p[0] = len;
    return a + SPP_SCANMEM_HDR;
}

static void spp_scanmem_free(void *ctx, void *q) {
    (void)ctx;
    if (!q) return;
    uint64_t *p = (uint64_t *)(void *)((char *)q - SPP_SCANMEM_HDR);
    if (p[0]) munmap(p, (size_t)p[0]);
    else free(p);
}

static const spa_alloc spp_scanmem = {spp_scanmem_alloc, spp_scanmem_free, NULL};

const spa_alloc *spp_scan_alloc(void) { return &spp_scanmem; }
