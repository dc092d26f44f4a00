/* nested.c - nested pickles: str/bytes constants that are, or encode (base64,
 * hex, latin1 text as for _codecs.encode), a pickle or a pickle-bearing
 * container are scanned as their own streams, up to the nesting limit. */
#include "containers.h"

uint32_t spc_nested_on_const(void *ud, spa_scan_ctx *sc, const spa_val *v, uint32_t depth,
                             uint32_t parent_stream) {
    (void)ud; (void)sc; (void)v; (void)depth; (void)parent_stream;
    return UINT32_MAX; /* interim: nested pickles not handled yet */
}
