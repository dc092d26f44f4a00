/* fuzz_poolhead.c - libFuzzer harness for pya_pool_head (preload/pya_pool.c,
 * compiled into this harness: the reader of a multiprocessing.Pool message's
 * head that layer 2 answers a refused task with): any bytes, never a read
 * outside them; a head it accepts starts with PROTO and, read again from a
 * copy cut just after the index, gives the same job and index. */
#include "../../preload/pya_pool.c"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* an exact-size copy, so that ASan sees a read one byte past the input */
    uint8_t *p = malloc(size ? size : 1);
    if (!p) return 0;
    if (size) memcpy(p, data, size);
    long long job = 0, idx = 0;
    bool none = false;
    if (pya_pool_head(p, size, &job, &idx, &none)) {
        if (size < 4 || p[0] != SPA_OP_PROTO) abort();
        /* the shortest prefix that still reads the same */
        for (size_t n = 2; n <= size; n++) {
            long long j2 = 0, i2 = 0;
            bool n2 = false;
            if (!pya_pool_head(p, n, &j2, &i2, &n2)) continue;
            if (j2 != job || n2 != none || (!none && i2 != idx)) abort();
            break;
        }
        if (job < -2147483648LL || job > 2147483647LL) abort();
    }
    free(p);
    return 0;
}
