/* zip.c - the zip reader (torch zip checkpoints, npz, pandas zip). Interim. */
#include "containers.h"
spa_code spc_zip(spc_scan *s, spc_content *c) {
    spc_note(s, SPA_NOTE_UNSCANNABLE, c->loc, SPA_E_UNSUPPORTED, "zip reader not built yet", 0, SPA_LIM_COUNT, NULL);
    return SPA_OK;
}
