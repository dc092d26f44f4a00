/* tar.c - the tar reader (legacy torch tar). Interim. */
#include "containers.h"
spa_code spc_tar(spc_scan *s, spc_content *c) {
    spc_note(s, SPA_NOTE_UNSCANNABLE, c->loc, SPA_E_UNSUPPORTED, "tar reader not built yet", 0, SPA_LIM_COUNT, NULL);
    return SPA_OK;
}
