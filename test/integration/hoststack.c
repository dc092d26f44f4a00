/* hoststack.c - how deep the preload's hooks reach into the calling thread's stack.
 * A thread on a painted stack opens, reads, fopens/freads, mmaps and closes the
 * files named in argv (refusals included); the depth below the thread's first
 * frame that was ever written is printed. Built and run by test_audit.py. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define STK (256 * 1024)
static char **files;
static int nfiles;
static volatile uintptr_t top;
static int refused;

static void *work(void *a) {
    volatile char anchor = 0;
    top = (uintptr_t)&anchor;
    char buf[64];
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < nfiles; i++) {
            int fd = open(files[i], O_RDONLY);
            if (fd < 0) { refused++; continue; }
            if (read(fd, buf, sizeof buf) < 0) refused++;
            if (pread(fd, buf, sizeof buf, 0) < 0) refused++;
            void *m = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, fd, 0);
            if (m != MAP_FAILED) munmap(m, 4096);
            int fd2 = dup(fd);
            if (fd2 >= 0 && read(fd2, buf, 1) < 0) refused++;
            if (fd2 >= 0) close(fd2);
            close(fd);
            FILE *f = fopen(files[i], "rb");
            if (!f) { refused++; continue; }
            if (fread(buf, 1, sizeof buf, f) == 0) refused++;
            fclose(f);
        }
    return a;
}

int main(int argc, char **argv) {
    files = argv + 1;
    nfiles = argc - 1;
    unsigned char *stk = mmap(NULL, STK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(stk, 0xA5, STK);
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setstack(&at, stk, STK);
    pthread_t t;
    if (pthread_create(&t, &at, work, NULL) != 0) return 2;
    pthread_join(t, NULL);
    size_t low = 0;
    while (low < STK && stk[low] == 0xA5) low++;
    printf("depth %ld refused %d\n", (long)(top - (uintptr_t)(stk + low)), refused);
    return 0;
}
