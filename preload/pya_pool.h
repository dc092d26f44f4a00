/* pya_pool.h - the head of a multiprocessing.Pool message (pya_pool.c): pure
 * bytes, no Python, so that it can be fuzzed and tested on its own. */
#ifndef SPP_PYA_POOL_H
#define SPP_PYA_POOL_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* job and i of a Pool message: PROTO, FRAME?, MARK? (a task's
 * 5-tuple has one, a result's 3-tuple none), an int (BININT1, BININT2,
 * BININT), then an int or None (*idx_none). false: not such a head (nothing
 * past p[n - 1] is read). */
bool pya_pool_head(const uint8_t *p, size_t n, long long *job, long long *idx, bool *idx_none);

#endif
