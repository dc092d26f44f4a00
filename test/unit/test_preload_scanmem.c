/* test_preload_scanmem.c - unit tests of the allocator the preload's in-memory
 * scans run on (preload/scanmem.c, compiled into this test): blocks on both
 * sides of the mapped threshold are usable over their whole length, 16-byte
 * aligned as the arena needs, large ones 2 MiB-aligned mappings that are gone
 * after the free, and a whole scan through it gives the verdict the default
 * allocator gives. */
#include "../../preload/scanmem.c"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "t.h"

/* Is [p, p+n) mapped in this process? (/proc/self/maps) */
static int tsm_mapped(const void *p, size_t n) {
    FILE *m = fopen("/proc/self/maps", "re");
    if (!m) return -1;
    uintptr_t a = (uintptr_t)p, b = a + n;
    int hit = 0;
    char line[512];
    while (fgets(line, sizeof line, m)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && a < hi && b > lo) hit = 1;
    }
    fclose(m);
    return hit;
}

static void test_blocks(void) {
    const spa_alloc *al = spp_scan_alloc();
    static const size_t sizes[] = {1, 16, 4096, 65536, SPP_SCANMEM_LARGE - SPP_SCANMEM_HDR - 1,
                                   SPP_SCANMEM_LARGE - SPP_SCANMEM_HDR, SPP_SCANMEM_LARGE, 3u << 20,
                                   (8u << 20) + 1};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i];
        uint8_t *p = al->alloc(al->ctx, n);
        T_CHECK_MSG(p != NULL, "size %zu", n);
        if (!p) continue;
        T_EQ_INT((uintptr_t)p % 16, 0);
        memset(p, 0xA5, n); /* the whole block is writable */
        T_EQ_INT(p[0] + p[n - 1], 2 * 0xA5);
        bool large = n + SPP_SCANMEM_HDR >= SPP_SCANMEM_LARGE;
        if (large) {
            T_EQ_INT(((uintptr_t)p - SPP_SCANMEM_HDR) % SPP_SCANMEM_HUGE, 0);
            T_EQ_INT(tsm_mapped(p, n), 1);
        }
        al->free(al->ctx, p);
        if (large) T_EQ_INT(tsm_mapped(p, n), 0); /* unmapped, not kept */
    }
    al->free(al->ctx, NULL);
    T_CHECK(al->alloc(al->ctx, SIZE_MAX - 4096) == NULL);
}

/* A scan whose arena grows past the mapped threshold: same verdict and
 * reasons as with malloc. */
static void test_scan_same_verdict(void) {
    size_t n = 0, cap = 1u << 20;
    uint8_t *b = malloc(cap);
    T_CHECK(b != NULL);
    if (!b) return;
    static const char head[] = "\x80\x04](", call[] = "cos\nsystem\n(S'x'\ntR";
    memcpy(b, head, 4);
    n = 4;
    while (n + 64 < cap - 64) { /* dicts with a call each: every value is kept */
        static const char d[] = "}(X\x01\x00\x00\x00" "d" "cdatetime\ndate\n(C\x04\x07\xe8\x01\x01tRu";
        memcpy(b + n, d, sizeof d - 1);
        n += sizeof d - 1;
    }
    memcpy(b + n, call, sizeof call - 1);
    n += sizeof call - 1;
    memcpy(b + n, "e.", 2);
    n += 2;
    spa_result *r1 = NULL, *r2 = NULL;
    spa_scan_opts o;
    spa_scan_opts_default(&o);
    spa_err e;
    T_EQ_INT(spa_scan_mem(&o, b, n, &r1, &e), SPA_OK);
    o.alloc = spp_scan_alloc();
    T_EQ_INT(spa_scan_mem(&o, b, n, &r2, &e), SPA_OK);
    spa_policy *p = NULL;
    T_EQ_INT(spa_policy_default(&p), SPA_OK);
    T_CHECK(r1 && r2 && p);
    if (r1 && r2 && p) {
        T_EQ_INT(spa_classify(r1, p), SPA_OK);
        T_EQ_INT(spa_classify(r2, p), SPA_OK);
        T_EQ_INT(r2->verdict, SPA_VERDICT_MALICIOUS);
        T_EQ_INT(r1->verdict, r2->verdict);
        T_EQ_INT(r1->n_reasons, r2->n_reasons);
        for (size_t i = 0; i < r1->n_reasons && i < r2->n_reasons; i++) T_EQ_STR(r1->reasons[i].msg, r2->reasons[i].msg);
    }
    spa_result_free(r1);
    spa_result_free(r2);
    spa_policy_free(p);
    free(b);
}

T_MAIN("preload_scanmem", T_CASE(test_blocks), T_CASE(test_scan_same_verdict))
