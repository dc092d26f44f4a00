/* bench_fp.c - the fingerprint's own cost (helper of bench_verify.sh): the work
 * preload/verify.c adds to a load of FILE, measured alone in CPU time: hashing
 * every 4 KiB block while the analyzer reads it (64 KiB preads), then checking
 * a loader's reads against it (READ-byte reads after a FIRST-byte one: at
 * 4 KiB boundaries as BufferedReader reads, or at unaligned offsets, where
 * every read returns part of two blocks). Prints
 * "pread_ms build_ms check_ms bytes" as medians of RUNS (pread_ms: the same
 * preads without hashing, so build_ms - pread_ms is the fingerprint's part).
 *     bench_fp FILE READ RUNS [FIRST]   (FIRST: size of the first read, default READ) */
#include "../../preload/verify.c"

#include <fcntl.h>
#include <stdio.h>
#include <time.h>

spp_real_pread64_t real_pread64;

static double cpu_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: bench_fp FILE READ RUNS\n"); return 2; }
    int fd = open(argv[1], O_RDONLY);
    size_t rd = (size_t)atol(argv[2]);
    int runs = atoi(argv[3]);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || runs < 1 || runs > 99 || rd == 0) return 2;
    size_t size = (size_t)st.st_size;
    uint8_t *buf = malloc(size + 65536);
    double a[99], b[99], c[99];
    for (int r = 0; r < runs; r++) {
        double p0 = cpu_ms();     /* the analyzer's own preads, which happen with or without a fingerprint */
        for (size_t off = 0; off < size; off += 65536)
            if (spp_raw_pread(fd, buf + off, size - off < 65536 ? size - off : 65536, off) <= 0) return 1;
        a[r] = cpu_ms() - p0;
        spp_fpb fb;
        spp_fpb_init(&fb, fd, size);
        double t0 = cpu_ms();
        for (size_t off = 0; off < size; off += 65536)
            if (spp_fpb_pread(&fb, buf + off, size - off < 65536 ? size - off : 65536, off) <= 0) return 1;
        spp_fp *fp = spp_fpb_finish(&fb, &st);
        double t1 = cpu_ms();
        /* the loader's reads: the real read into its buffer is not counted, only the check */
        bool touched = false;
        uint64_t bad = 0;
        size_t off = 0, first = (size_t)atol(argv[4 < argc ? 4 : 2]);   /* FIRST: the first read's size */
        double t2 = cpu_ms();
        for (size_t n = first; off < size; off += n, n = rd)
            if (spp_fp_check(fp, fd, buf + off, size - off < n ? size - off : n, off, &touched, &bad)) return 1;
        double t3 = cpu_ms();
        b[r] = t1 - t0;
        c[r] = t3 - t2;
        spp_fp_unref(fp);
        spp_fpb_free(&fb);
    }
    qsort(a, (size_t)runs, sizeof *a, cmp);
    qsort(b, (size_t)runs, sizeof *b, cmp);
    qsort(c, (size_t)runs, sizeof *c, cmp);
    printf("%.3f %.3f %.3f %zu\n", a[runs / 2], b[runs / 2], c[runs / 2], size);
    return 0;
}
