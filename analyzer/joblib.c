/* joblib.c - joblib's NumpyArrayWrapper: after its BUILD the raw array bytes
 * follow inline in the pickle stream; the VM hook computes exactly how many
 * to skip (or that a nested object-array pickle follows). */
#include "containers.h"

spa_build_act spc_joblib_after_build(void *ud, spa_scan_ctx *sc, const spa_val *target,
                                     const spa_val *state, uint64_t *skip) {
    (void)ud; (void)sc; (void)target; (void)state; (void)skip;
    return SPA_BUILD_NONE; /* interim: joblib arrays not handled yet */
}
