/* bench_floor.c - the bare-walk floor: read a file and step over its pickle
 * opcodes, nothing else (no values, no stack, no memo). Argument kinds come
 * from analyzer/opcodes.def. A scanner cannot be cheaper than this; bench_scan
 * reports `safepickle scan` as a multiple of it.
 *   bench_floor FILE     prints "OPS BYTES" (stacked streams are walked too) */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "opcodes.h"

static const uint8_t kind[256] = {
#define OP(name, byte, k, argname, proto, before, after) [byte] = (uint8_t)(k + 1),
#include "opcodes.def"
#undef OP
};

static uint64_t le(const uint8_t *p, unsigned n) {
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: bench_floor FILE\n"); return 2; }
    int fd = open(argv[1], O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) { perror(argv[1]); return 2; }
    size_t n = (size_t)st.st_size, got = 0;
    uint8_t *p = malloc(n ? n : 1);
    if (!p) return 2;
    while (got < n) {
        ssize_t r = read(fd, p + got, n - got);
        if (r <= 0) { perror("read"); return 2; }
        got += (size_t)r;
    }
    close(fd);
    size_t i = 0;
    uint64_t ops = 0;
    while (i < n) {
        unsigned k = kind[p[i++]];
        ops++;
        if (!k) break; /* not an opcode */
        k--;
        const uint8_t *nl;
        switch (k) {
        case SPA_ARG_NONE: break;
        case SPA_ARG_LINE2:
            if (!(nl = memchr(p + i, '\n', n - i))) { i = n; break; }
            i = (size_t)(nl - p) + 1;
            /* fall through */
        case SPA_ARG_LINE:
            if (!(nl = memchr(p + i, '\n', n - i))) { i = n; break; }
            i = (size_t)(nl - p) + 1;
            break;
        case SPA_ARG_CNT1: case SPA_ARG_CNT4: case SPA_ARG_CNT4S: case SPA_ARG_CNT8: {
            unsigned w = spa_arg_width(k);
            if (w > n - i) { i = n; break; }
            uint64_t len = le(p + i, w);
            i += w;
            i = len > n - i ? n : i + (size_t)len;
            break;
        }
        default: {
            unsigned w = spa_arg_width(k);
            i = w > n - i ? n : i + w;
            break;
        }
        }
    }
    printf("%llu %zu\n", (unsigned long long)ops, n);
    free(p);
    return 0;
}
