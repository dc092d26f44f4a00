/* npy.c - the npy reader. Interim. */
#include "containers.h"
spa_code spc_npy(spc_scan *s, spc_content *c, uint32_t *first_stream) {
    (void)first_stream;
    spc_note(s, SPA_NOTE_UNSCANNABLE, c->loc, SPA_E_UNSUPPORTED, "npy reader not built yet", 0, SPA_LIM_COUNT, NULL);
    return SPA_OK;
}
