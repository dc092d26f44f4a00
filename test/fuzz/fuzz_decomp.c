/* fuzz_decomp.c - libFuzzer harness for the bounded decompression path. The
 * first byte picks the format (zlib, gzip, bz2, xz/lzma, zstd, lz4, joblib
 * zfile); the rest is the compressed input. Small size limits keep runs fast. */
#include <stdint.h>
#include <stddef.h>

#include "containers.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const spa_format fmts[] = {SPA_FMT_ZLIB, SPA_FMT_GZIP, SPA_FMT_BZ2, SPA_FMT_XZ,
                                      SPA_FMT_ZSTD, SPA_FMT_LZ4, SPA_FMT_JOBLIB};
    if (size < 1) return 0;
    spa_scan_opts o;
    spa_scan_opts_default(&o);
    o.name = "fuzz";
    o.limits.v[SPA_LIM_DECOMP_BYTES] = 8u << 20;
    o.limits.v[SPA_LIM_OPS] = 1u << 20;
    spa_result *r = NULL;
    if (spc_scan_as(&o, data + 1, size - 1, fmts[data[0] % (sizeof fmts / sizeof fmts[0])], &r) == SPA_OK)
        spa_result_free(r);
    return 0;
}
