/* memoscan.c - the VM's pre-pass over a large stream: a bare walk of its
 * opcodes that collects the memo keys a BINGET/LONG_BINGET reads back, so
 * that the VM keeps in its memo only the values some later opcode fetches
 * (picklers memoise every str and container; a data-only pickle reads few
 * of them back). Owner of the result: the caller (free the bitmap). */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "opcodes.h"
#include "vm.h"

#define MS_WIN 64u /* bytes asked for at a time: any fixed argument and a counted length fit */
#define MS_CHUNK (64u << 10) /* bytes walked between two checks of max_ops */

static inline uint64_t ms_le4(const uint8_t *b) {
    return (uint64_t)((uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24);
}
/* Little-endian n-byte integer, n = 1, 4 or 8 (the widths of counted lengths
 * and memo keys). */
static inline uint64_t ms_le(const uint8_t *b, unsigned n) {
    return n == 1 ? b[0] : n == 4 ? ms_le4(b) : ms_le4(b) | ms_le4(b + 4) << 32;
}

/* Set bit `key` of *bits (grown as needed). */
static bool ms_set(uint64_t **bits, uint64_t *nbits, uint64_t key) {
    if (key >= *nbits) {
        uint64_t nb = *nbits ? *nbits : 4096;
        while (nb <= key) nb *= 2;
        uint64_t *n = realloc(*bits, (size_t)(nb / 64) * sizeof *n);
        if (!n) return false;
        memset(n + *nbits / 64, 0, (size_t)((nb - *nbits) / 64) * sizeof *n);
        *bits = n;
        *nbits = nb;
    }
    (*bits)[key / 64] |= 1ull << (key % 64);
    return true;
}

/* Each opcode's class for the walk, from the opcode table: its width
 * (opcode and fixed argument, or opcode and length field) and what the walk
 * does with it. 0: not an opcode. */
enum { MS_FIX = 1, MS_CNT, MS_LINE, MS_DEF, MS_BINGET, MS_STOP, MS_GIVEUP };
#define MS_CLASS(name, kind)                                                                      \
    (SPA_OP_##name == SPA_OP_STOP ? MS_STOP                                                       \
     : SPA_OP_##name == SPA_OP_BUILD || SPA_OP_##name == SPA_OP_GET ? MS_GIVEUP                    \
     : SPA_OP_##name == SPA_OP_BINGET || SPA_OP_##name == SPA_OP_LONG_BINGET ? MS_BINGET           \
     : SPA_OP_##name == SPA_OP_BINPUT || SPA_OP_##name == SPA_OP_LONG_BINPUT ||                     \
       SPA_OP_##name == SPA_OP_MEMOIZE || SPA_OP_##name == SPA_OP_PUT ? MS_DEF                      \
     : kind == SPA_ARG_LINE || kind == SPA_ARG_LINE2 ? MS_LINE                                     \
     : kind == SPA_ARG_CNT1 || kind == SPA_ARG_CNT4 || kind == SPA_ARG_CNT4S || kind == SPA_ARG_CNT8 \
         ? MS_CNT : MS_FIX)
static const uint8_t ms_class[256] = {
#define OP(name, byte, kind, argname, proto, before, after) [byte] = MS_CLASS(name, kind),
#include "opcodes.def"
#undef OP
};
/* 1 + spa_arg_width(kind), as a constant */
#define MS_W(kind)                                                                                \
    (1 + ((kind) == SPA_ARG_U1 || (kind) == SPA_ARG_CNT1 ? 1                                      \
          : (kind) == SPA_ARG_U2 ? 2                                                              \
          : (kind) == SPA_ARG_S4 || (kind) == SPA_ARG_U4 || (kind) == SPA_ARG_CNT4 ||              \
            (kind) == SPA_ARG_CNT4S ? 4                                                           \
          : (kind) == SPA_ARG_U8 || (kind) == SPA_ARG_F8 || (kind) == SPA_ARG_CNT8 ? 8 : 0))
static const uint8_t ms_width[256] = {
#define OP(name, byte, kind, argname, proto, before, after) [byte] = (uint8_t)MS_W(kind),
#include "opcodes.def"
#undef OP
};

/* One opcode with a text line argument (or two) at the reader's position:
 * steps over it. Returns 0 to go on, 1 when the stream ends there. */
static int ms_lines(spa_in *r, int lines) {
    if (spa_in_skip(r, 1) != SPA_OK) return 1;
    for (; lines > 0; lines--) {
        for (;;) {
            const uint8_t *p;
            size_t got;
            if (spa_in_peek(r, MS_WIN, &p, &got) != SPA_OK || !got) return 1;
            const uint8_t *q = memchr(p, '\n', got);
            if (q) { spa_in_skip(r, (uint64_t)(q - p) + 1); break; }
            spa_in_skip(r, got);
        }
    }
    return 0;
}

/* The walk. It follows the opcodes exactly as the VM reads them as long as
 * nothing moves the VM's input but the opcodes' own arguments: BUILD may
 * (its hook skips joblib array data, then may resynchronise), and the
 * C-file framing reading does (the caller never asks for it there); a text
 * GET's key is left to the VM's own parser. So the walk gives up (false: the
 * VM keeps every value) at BUILD and at GET, and stops (true) where the VM
 * must stop too: STOP, an unknown opcode, EOF. A key above every key that
 * could be defined so far (256 + the memo writes seen) also gives up, which
 * bounds the bitmap by the stream's size. Like the VM, it walks no opcode
 * starting max_bytes or more into the stream, and stops within MS_CHUNK
 * bytes after max_ops opcodes. On true, every key the VM can GET
 * has its bit set in *bits (nbits bits, 0 when none). Where the walk reads
 * past a point at which the VM stops (an error, a limit), it only sets more
 * bits than needed. */
bool spa_vm_getkeys(spa_in *r, uint64_t max_ops, uint64_t max_bytes, uint64_t **bits, uint64_t *nbits) {
    *bits = NULL;
    *nbits = 0;
    uint64_t defs = 0, ops = 0;
    const uint64_t start = spa_in_pos(r);
    for (;;) {
        const uint8_t *p;
        size_t got;
        /* the VM runs no opcode at or past its limits (vm_exec) */
        uint64_t at = spa_in_pos(r) - start;
        if (at >= max_bytes || ops >= max_ops) return true;
        if (spa_in_peek(r, MS_WIN, &p, &got) != SPA_OK) goto giveup;
        if (!got) return true;
        /* the common opcodes, while a whole one (and a counted length) is
         * surely in the window and it starts below the byte limit; i may run
         * past the window over a counted payload. max_ops is checked per
         * MS_CHUNK bytes: walking a little further only sets more bits. */
        size_t i = 0, lim = got > 16 ? got - 16 : 0;
        if (max_bytes - at < lim) lim = (size_t)(max_bytes - at);
        if (lim > MS_CHUNK) lim = MS_CHUNK;
        while (i < lim) {
            uint8_t op = p[i], c = ms_class[op], w = ms_width[op];
            ops++;
            if (c == MS_FIX) { i += w; continue; }
            if (c == MS_CNT) {
                uint64_t len = ms_le(p + i + 1, w - 1u);
                if (len > got - i) { ops--; break; }
                i += w + (size_t)len;
                continue;
            }
            if (c == MS_DEF && op != SPA_OP_PUT) { defs++; i += w; continue; }
            if (c == MS_BINGET) {
                uint64_t key = ms_le(p + i + 1, w - 1u);
                if (key < *nbits) (*bits)[key / 64] |= 1ull << (key % 64);
                else if (key >= 256 + defs || !ms_set(bits, nbits, key)) goto giveup;
                i += w;
                continue;
            }
            ops--; /* walked below */
            break;
        }
        if (i) { spa_in_skip(r, i); continue; }
        ops++;
        /* one opcode the general way, from the window's start */
        uint8_t op = p[0], c = ms_class[op], w = ms_width[op];
        switch (c) {
        case 0: case MS_STOP: return true;
        case MS_GIVEUP: goto giveup;
        case MS_LINE:
            if (ms_lines(r, spa_op_info(op)->kind == SPA_ARG_LINE2 ? 2 : 1)) return true;
            continue;
        case MS_DEF:
            if (op == SPA_OP_PUT) {
                defs++;
                if (ms_lines(r, 1)) return true;
                continue;
            }
            defs++;
            break;
        case MS_CNT: {
            if (got < w) return true; /* cut by EOF: the VM stops there */
            uint64_t len = ms_le(p + 1, w - 1u);
            if (spa_in_skip(r, w) != SPA_OK || spa_in_skip(r, len) != SPA_OK) return true;
            continue;
        }
        case MS_BINGET:
            if (got < w) return true;
            {
                uint64_t key = ms_le(p + 1, w - 1u);
                if (key >= 256 + defs || !ms_set(bits, nbits, key)) goto giveup;
            }
            break;
        }
        if (got < w) return true;
        spa_in_skip(r, w);
    }
giveup:
    free(*bits);
    *bits = NULL;
    *nbits = 0;
    return false;
}
