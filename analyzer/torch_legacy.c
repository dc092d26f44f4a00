/* torch_legacy.c - PyTorch's legacy (pre-1.6, _use_new_zipfile_serialization=False)
 * format: five stacked pickles (magic number, protocol version, sys_info, the
 * object, the storage keys), then raw storage bytes that nothing unpickles. */
#include "containers.h"

spa_code spc_torch_legacy(spc_scan *s, spc_content *c, spa_format fmt, uint32_t *first_stream) {
    (void)fmt;
    spa_in *in = spc_content_in(s, c);
    if (!in) return SPA_E_NOMEM;
    spa_code rc = spc_pickles(s, in, c->size, c->loc, c->depth, c->parent, SPC_LEGACY_STREAMS,
                              first_stream);
    if (rc != SPA_OK) return rc;
    uint64_t pos = spa_in_pos(in);
    if (c->size != UINT64_MAX && pos < c->size)
        spc_note(s, SPA_NOTE_INFO, c->loc, SPA_OK,
                 "torch legacy: raw storage bytes after the storage keys are not pickles (skipped)",
                 pos, SPA_LIM_COUNT, NULL);
    return SPA_OK;
}
