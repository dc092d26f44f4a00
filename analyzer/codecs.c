/* codecs.c - the decompression libraries bound at link time (codecs.h): the
 * library, the preload and the tests use this table. The CLI defines
 * spc_codecs_get itself (cli/codecs_dl.c), so the linker never takes this file
 * out of libspa.a for it: keep nothing else in this file. */
#include "codecs.h"

const spc_codecs *spc_codecs_get(spc_codec_id id, const char **why) {
    static const spc_codecs linked = {
#define SPC_CODEC_LINKED(lib, fn) .fn = fn,
        SPC_CODEC_FUNCS(SPC_CODEC_LINKED)
#undef SPC_CODEC_LINKED
    };
    (void)id;
    (void)why;
    return &linked;
}
