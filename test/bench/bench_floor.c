/* bench_floor.c - the bare-walk floor: read a file and step over its pickle
 * opcodes, nothing else (no values, no stack, no memo). Argument kinds come
 * from analyzer/opcodes.def (spa_arg_width of opcodes.h). A scanner cannot be
 * cheaper than this; bench_scan reports `safepickle scan` as a multiple of it.
 *
 * It reads the way the scan does: sequential reads into one reused buffer
 * (FLOOR_BUF, the size of the reader's pread window), so that it pays the
 * same system calls and copies and no more. An earlier version read the
 * whole file into one malloc'ed block: a page fault for every 4 KiB of the
 * file (~7,500 for 30 MB, most of its CPU time) and a walk over memory that
 * no cache holds, which made the floor cost ~4x the scan in CPU time while
 * executing half its instructions.
 *   bench_floor FILE     prints "OPS BYTES" (stacked streams are walked too) */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "opcodes.h"

#define FLOOR_BUF (128u << 10)
#define FLOOR_ARG 9u /* an opcode and the longest fixed argument or length field */

/* argument kind + 1 by byte, 0 for a byte that is not an opcode */
static const uint8_t kind[256] = {
#define OP(name, byte, k, argname, proto, before, after) [byte] = (uint8_t)(k + 1),
#include "opcodes.def"
#undef OP
};

static int fd = -1, eof;
static uint64_t total;

/* Keep the unread bytes b[i..n) and read more behind them, until `want`
 * (<= FLOOR_BUF) are there or EOF; returns the new n (i becomes 0), or
 * SIZE_MAX on a read error. */
static size_t fill(uint8_t *b, size_t i, size_t n, size_t want) {
    memmove(b, b + i, n - i);
    n -= i;
    while (n < want && !eof) {
        ssize_t k = read(fd, b + n, FLOOR_BUF - n);
        if (k < 0) { perror("read"); return SIZE_MAX; }
        if (k == 0) eof = 1;
        n += (size_t)k;
        total += (uint64_t)k;
    }
    return n;
}

static uint64_t le(const uint8_t *p, unsigned n) {
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: bench_floor FILE\n"); return 2; }
    fd = open(argv[1], O_RDONLY);
    uint8_t *p = malloc(FLOOR_BUF);
    if (fd < 0) { perror(argv[1]); return 2; }
    if (!p) return 2;
    size_t i = 0, n = 0;
    uint64_t ops = 0;
    const uint8_t *nl;
    for (;;) {
        /* below lim, an opcode and its fixed argument are in the buffer
         * (or the file ends): one test per opcode, as over a whole file */
        size_t lim = eof ? n : n >= FLOOR_ARG ? n - FLOOR_ARG + 1 : 0;
        if (i >= lim) {
            if (eof) break;
            if ((n = fill(p, i, n, FLOOR_ARG)) == SIZE_MAX) return 2;
            i = 0;
            continue;
        }
        while (i < lim) {
            unsigned k = kind[p[i++]];
            ops++;
            if (!k) goto end; /* not an opcode */
            k--;
            switch (k) {
            case SPA_ARG_NONE: break;
            case SPA_ARG_LINE2:
            case SPA_ARG_LINE:
                for (unsigned lines = k == SPA_ARG_LINE2 ? 2 : 1; lines; lines--) {
                    while (!(nl = memchr(p + i, '\n', n - i))) { /* read on: the line goes on */
                        if (eof) goto end;
                        if ((n = fill(p, n, n, FLOOR_BUF)) == SIZE_MAX) return 2;
                        i = 0;
                    }
                    i = (size_t)(nl - p) + 1;
                }
                goto next;
            case SPA_ARG_CNT1: case SPA_ARG_CNT4: case SPA_ARG_CNT4S: case SPA_ARG_CNT8: {
                unsigned w = spa_arg_width(k);
                if (w > n - i) goto end;
                uint64_t len = le(p + i, w);
                i += w;
                if (len <= n - i) { i += (size_t)len; break; }
                while (len > n - i) { /* data past the buffer: read on */
                    if (eof) goto end;
                    len -= n - i;
                    if ((n = fill(p, n, n, FLOOR_BUF)) == SIZE_MAX) return 2;
                    i = 0;
                }
                i += (size_t)len;
                goto next;
            }
            default: {
                unsigned w = spa_arg_width(k);
                if (w > n - i) goto end;
                i += w;
                break;
            }
            }
        }
    next:;
    }
end:
    /* the rest of the file is read too (the scan reads to its end) */
    while (!eof)
        if (fill(p, 0, 0, FLOOR_BUF) == SIZE_MAX) return 2;
    close(fd);
    printf("%llu %llu\n", (unsigned long long)ops, (unsigned long long)total);
    free(p);
    return 0;
}
