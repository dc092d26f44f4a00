/* bench_openclose.c - helper for bench_preload.sh: the per-call cost of an
 * open+close pair (and of open+read+close) on one small file, in ns per pair.
 * Usage: bench_openclose FILE ITERATIONS */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: %s FILE N\n", argv[0]); return 2; }
    long n = atol(argv[2]);
    char buf[256];
    double t0 = now_ns();
    for (long i = 0; i < n; i++) {
        int fd = open(argv[1], O_RDONLY);
        if (fd < 0) { perror("open"); return 1; }
        close(fd);
    }
    double t1 = now_ns();
    for (long i = 0; i < n; i++) {
        int fd = open(argv[1], O_RDONLY);
        if (fd < 0) { perror("open"); return 1; }
        if (read(fd, buf, sizeof buf) < 0) { perror("read"); return 1; }
        close(fd);
    }
    double t2 = now_ns();
    printf("%.1f %.1f\n", (t1 - t0) / (double)n, (t2 - t1) / (double)n);
    return 0;
}
