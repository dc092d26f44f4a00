/* fuzz_container.h - the body shared by the container fuzz harnesses: the input goes
 * straight to one reader (no sniffing) and then through the full content dispatch, with
 * small limits so a run stays fast; every result is freed (leaks are bugs). */
#ifndef FUZZ_CONTAINER_H
#define FUZZ_CONTAINER_H
#include <stddef.h>
#include <stdint.h>

#include "containers.h"

static inline int fuzz_container(const uint8_t *data, size_t size, spa_format fmt) {
    spa_scan_opts o;
    spa_scan_opts_default(&o);
    o.name = "fuzz";
    o.limits.v[SPA_LIM_DECOMP_BYTES] = 16u << 20;
    o.limits.v[SPA_LIM_OPS] = 1u << 20;
    o.limits.v[SPA_LIM_MEMBERS] = 1000;
    spa_result *r = NULL;
    if (spc_scan_as(&o, data, size, fmt, &r) == SPA_OK) spa_result_free(r);
    r = NULL;
    if (spa_scan_mem(&o, data, size, &r, NULL) == SPA_OK) spa_result_free(r);
    return 0;
}

#define FUZZ_CONTAINER_MAIN(fmt) \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size); \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_container(data, size, fmt); }
#endif
