/* bench_smallreads.c - helper of bench_verify.sh: the per-call cost of small
 * reads of one file that is not pickle-bearing (a text file), in ns per call:
 * read() of 256 bytes (back to offset 0 at the end of the file), pread() of
 * 256 bytes at rotating offsets, fread() of 64 bytes (rewind at the end).
 * Under the preload these are the reads that the recheck after a read of a
 * file not judged pickle-bearing (preload/decide.c, spp_recheck_read) costs
 * on; the preload acts only in a process that runs Python, so the script runs
 * a copy of this program named python-*. CPU time (user + sys) of the
 * process, so that other load on the machine counts less than in wall time.
 *     bench_smallreads FILE N     prints "read_ns pread_ns fread_ns" */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: %s FILE N\n", argv[0]); return 2; }
    long n = atol(argv[2]);
    char buf[256];
    struct stat st;
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0 || fstat(fd, &st) != 0 || st.st_size < (off_t)sizeof buf || n < 1) { perror("open"); return 1; }
    long blocks = (long)(st.st_size / (off_t)sizeof buf);
    double t0 = cpu_ns();
    for (long i = 0; i < n; i++) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0) { perror("read"); return 1; }
        if (r == 0 && lseek(fd, 0, SEEK_SET) != 0) { perror("lseek"); return 1; }
    }
    double t1 = cpu_ns();
    for (long i = 0; i < n; i++)
        if (pread(fd, buf, sizeof buf, (off_t)(i % blocks) * (off_t)sizeof buf) < 0) { perror("pread"); return 1; }
    double t2 = cpu_ns();
    close(fd);
    FILE *fp = fopen(argv[1], "rb");
    if (!fp) { perror("fopen"); return 1; }
    double t3 = cpu_ns();
    for (long i = 0; i < n; i++)
        if (fread(buf, 1, 64, fp) == 0) {
            if (ferror(fp)) { perror("fread"); return 1; }
            rewind(fp);
        }
    double t4 = cpu_ns();
    fclose(fp);
    printf("%.1f %.1f %.1f\n", (t1 - t0) / (double)n, (t2 - t1) / (double)n, (t4 - t3) / (double)n);
    return 0;
}
