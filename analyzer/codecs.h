/* codecs.h - the decompression libraries' functions decomp.c calls, in one table
 * (SPC_CODEC_FUNCS) and behind one getter, spc_codecs_get. The library, the
 * preload and the tests bind them at link time (codecs.c); the CLI loads each
 * library at its first use (cli/codecs_dl.c), so that a scan that meets no
 * compressed data does not map five libraries (analyzer/README.md, "Memory"). */
#ifndef SPA_CODECS_H
#define SPA_CODECS_H

#include <bzlib.h>
#define LZ4F_STATIC_LINKING_ONLY /* LZ4F_createDecompressionContext_advanced: custom allocator */
#include <lz4frame.h>
#include <lzma.h>
#include <zlib.h>
#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_createDStream_advanced: custom allocator */
#include <zstd.h>
#include <zstd_errors.h>

/* Each library: its id, its soname (what -l<name> gives the linker on
 * Debian 12: test_codecs.py checks the list against the preload's NEEDED
 * entries) and a name for messages. */
#define SPC_CODEC_LIBS(X) \
    X(SPC_CODEC_ZLIB, "libz.so.1", "zlib") \
    X(SPC_CODEC_BZ2, "libbz2.so.1.0", "bzip2") \
    X(SPC_CODEC_LZMA, "liblzma.so.5", "xz/lzma") \
    X(SPC_CODEC_ZSTD, "libzstd.so.1", "zstd") \
    X(SPC_CODEC_LZ4, "liblz4.so.1", "lz4")

typedef enum spc_codec_id {
#define SPC_CODEC_ID(id, soname, name) id,
    SPC_CODEC_LIBS(SPC_CODEC_ID)
#undef SPC_CODEC_ID
    SPC_CODEC_COUNT
} spc_codec_id;

/* Every function decomp.c calls, with its library. */
#define SPC_CODEC_FUNCS(X) \
    X(SPC_CODEC_ZLIB, inflateInit2_) \
    X(SPC_CODEC_ZLIB, inflate) \
    X(SPC_CODEC_ZLIB, inflateEnd) \
    X(SPC_CODEC_BZ2, BZ2_bzDecompressInit) \
    X(SPC_CODEC_BZ2, BZ2_bzDecompress) \
    X(SPC_CODEC_BZ2, BZ2_bzDecompressEnd) \
    X(SPC_CODEC_LZMA, lzma_block_header_decode) \
    X(SPC_CODEC_LZMA, lzma_block_decoder) \
    X(SPC_CODEC_LZMA, lzma_lzma_preset) \
    X(SPC_CODEC_LZMA, lzma_properties_decode) \
    X(SPC_CODEC_LZMA, lzma_raw_decoder) \
    X(SPC_CODEC_LZMA, lzma_code) \
    X(SPC_CODEC_LZMA, lzma_end) \
    X(SPC_CODEC_ZSTD, ZSTD_createDStream) \
    X(SPC_CODEC_ZSTD, ZSTD_createDStream_advanced) \
    X(SPC_CODEC_ZSTD, ZSTD_initDStream) \
    X(SPC_CODEC_ZSTD, ZSTD_DCtx_setParameter) \
    X(SPC_CODEC_ZSTD, ZSTD_decompressStream) \
    X(SPC_CODEC_ZSTD, ZSTD_isError) \
    X(SPC_CODEC_ZSTD, ZSTD_getErrorCode) \
    X(SPC_CODEC_ZSTD, ZSTD_freeDStream) \
    X(SPC_CODEC_LZ4, LZ4F_createDecompressionContext) \
    X(SPC_CODEC_LZ4, LZ4F_createDecompressionContext_advanced) \
    X(SPC_CODEC_LZ4, LZ4F_decompress) \
    X(SPC_CODEC_LZ4, LZ4F_isError) \
    X(SPC_CODEC_LZ4, LZ4F_getErrorCode) \
    X(SPC_CODEC_LZ4, LZ4F_freeDecompressionContext)

typedef struct spc_codecs {
#define SPC_CODEC_FIELD(lib, fn) __typeof__(fn) *fn;
    SPC_CODEC_FUNCS(SPC_CODEC_FIELD)
#undef SPC_CODEC_FIELD
} spc_codecs;

/* The table, with at least library `id`'s functions set; NULL when that
 * library cannot be used, with *why (static or process-lifetime text) saying
 * why: the caller must then treat the data as unreadable, never as absent.
 * Thread-safe. */
const spc_codecs *spc_codecs_get(spc_codec_id id, const char **why);

#endif
