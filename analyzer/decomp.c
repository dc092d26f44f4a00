/* decomp.c - decompression. Interim. */
#include "containers.h"
spa_code spc_decomp(spc_scan *s, spc_content *c, spa_format fmt, uint32_t *first_stream) {
    (void)first_stream; (void)fmt;
    spc_note(s, SPA_NOTE_UNSCANNABLE, c->loc, SPA_E_UNSUPPORTED, "decompression not built yet", 0, SPA_LIM_COUNT, NULL);
    return SPA_OK;
}
