/* pya_pool.c - the head of a multiprocessing.Pool message, read without
 * unpickling anything: the job and index that a refused task is answered
 * with (pya_bytes.c, "a refused Pool task"). Fuzzed by test/fuzz/fuzz_poolhead.c,
 * checked against the real pickler by test/integration/test_pool_head.py. */
#include "pya_pool.h"

#include "opcodes.h"

static uint64_t pyp_le(const uint8_t *p, size_t w) {
    uint64_t x = 0;
    for (size_t i = w; i-- > 0;) x = (x << 8) | p[i];
    return x;
}

/* An int opcode (BININT1/BININT2/BININT) at p[*pos], or NONE when none_ok. */
static bool pyp_head_int(const uint8_t *p, size_t n, size_t *pos, bool none_ok, long long *v, bool *none) {
    size_t i = *pos, w;
    if (i >= n) return false;
    *none = false;
    switch (p[i]) {
    case SPA_OP_BININT1: w = 1; break;
    case SPA_OP_BININT2: w = 2; break;
    case SPA_OP_BININT: w = 4; break;
    case SPA_OP_NONE:
        if (!none_ok) return false;
        *none = true;
        *pos = i + 1;
        return true;
    default: return false;
    }
    if (w > n - i - 1) return false;
    uint64_t u = pyp_le(p + i + 1, w);
    *v = w == 4 ? (long long)(int32_t)(uint32_t)u : (long long)u;
    *pos = i + 1 + w;
    return true;
}

bool pya_pool_head(const uint8_t *p, size_t n, long long *job, long long *idx, bool *idx_none) {
    bool none;
    if (n < 2 || p[0] != SPA_OP_PROTO) return false;
    size_t pos = 2;
    if (pos < n && p[pos] == SPA_OP_FRAME) {
        if (n - pos < 9) return false;
        pos += 9; /* FRAME + 8-byte length */
    }
    if (pos < n && p[pos] == SPA_OP_MARK) pos++;
    return pyp_head_int(p, n, &pos, false, job, &none) && pyp_head_int(p, n, &pos, true, idx, idx_none);
}
