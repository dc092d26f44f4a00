/* fuzz_npy.c - libFuzzer harness for the npy header reader and the object-array pickle after it.
 * The input is handed straight to that reader (no sniffing), with small
 * limits so a run stays fast; every result is freed (leaks are bugs). */
#include <stdint.h>
#include <stddef.h>

#include "containers.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    spa_scan_opts o;
    spa_scan_opts_default(&o);
    o.name = "fuzz";
    o.limits.v[SPA_LIM_DECOMP_BYTES] = 16u << 20;
    o.limits.v[SPA_LIM_OPS] = 1u << 20;
    o.limits.v[SPA_LIM_MEMBERS] = 1000;
    spa_result *r = NULL;
    if (spc_scan_as(&o, data, size, SPA_FMT_NPY, &r) == SPA_OK) spa_result_free(r);
    r = NULL;
    if (spa_scan_mem(&o, data, size, &r, NULL) == SPA_OK) spa_result_free(r);
    return 0;
}
