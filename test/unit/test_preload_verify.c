/* test_preload_verify.c - unit tests of the fingerprint of judged bytes and
 * the check of later reads against it (preload/verify.c, compiled into this
 * test): the keyed hash, which blocks a scan's reads record, a block read twice
 * with other bytes, and reads that match, differ, straddle blocks, fall outside
 * the judged ranges or past the judged size. */
#include "../../preload/verify.c"

#include <fcntl.h>
#include <stdio.h>

#include "t.h"

spp_real_pread64_t real_pread64; /* NULL: verify.c reads with the raw syscall */

#define TV_SIZE (10 * SPP_FP_BLOCK + 123)

static int tv_file(uint8_t *content) {
    char path[] = "/tmp/spp_verify_XXXXXX";
    int fd = mkstemp(path);
    unlink(path);
    for (size_t i = 0; i < TV_SIZE; i++) content[i] = (uint8_t)(i * 7 + (i >> 12));
    T_CHECK(pwrite(fd, content, TV_SIZE, 0) == TV_SIZE);
    return fd;
}

static void tv_poke(int fd, uint64_t off, uint8_t v) {
    T_CHECK(pwrite(fd, &v, 1, (off_t)off) == 1);
}

static spp_fp *tv_judge(int fd, const uint64_t (*reads)[2], size_t n) {
    spp_fpb b;
    struct stat st;
    T_CHECK(fstat(fd, &st) == 0);
    spp_fpb_init(&b, fd, (uint64_t)st.st_size);
    static uint8_t buf[TV_SIZE];
    for (size_t i = 0; i < n; i++) {
        ssize_t r = spp_fpb_pread(&b, buf, reads[i][1], reads[i][0]);
        T_CHECK(r > 0);
    }
    spp_fp *fp = spp_fpb_finish(&b, &st);
    spp_fpb_free(&b);
    return fp;
}

static void test_hash_keyed_and_length_bound(void) {
    uint8_t a[SPP_FP_BLOCK] = {0}, c[SPP_FP_BLOCK] = {0};
    spp_h128 h1 = spp_fp_hash(a, sizeof a), h2 = spp_fp_hash(c, sizeof c);
    T_CHECK(spp_h_eq(h1, h2));
    for (size_t i = 0; i < sizeof c; i += 509) {   /* any one byte, any position */
        c[i] ^= 1;
        T_CHECK_MSG(!spp_h_eq(spp_fp_hash(c, sizeof c), h1), "flip at %zu", i);
        c[i] ^= 1;
    }
    /* a trailing zero is not the same block as a shorter one */
    T_CHECK(!spp_h_eq(spp_fp_hash(a, 100), spp_fp_hash(a, 101)));
}

static void test_records_only_blocks_read(void) {
    static uint8_t content[TV_SIZE];
    int fd = tv_file(content);
    /* a header at 0, a record straddling blocks 3/4, the tail */
    const uint64_t reads[][2] = { { 0, 30 }, { 3 * SPP_FP_BLOCK + 4000, 200 }, { TV_SIZE - 50, 50 } };
    spp_fp *fp = tv_judge(fd, reads, 3);
    T_CHECK(fp != NULL);
    T_EQ_INT(fp->n_blocks, 4);   /* blocks 0, 3, 4, 10 */
    T_EQ_INT(fp->n_runs, 3);
    bool touched = false;
    uint64_t bad = 0;
    /* the same bytes, read the way a loader reads them: whole, in pieces, straddling */
    T_EQ_INT(spp_fp_check(fp, fd, content, TV_SIZE, 0, &touched, &bad), 0);
    T_CHECK(touched);
    for (uint64_t off = 0; off < TV_SIZE; off += 1000) {
        size_t n = TV_SIZE - off < 3000 ? (size_t)(TV_SIZE - off) : 3000;
        T_EQ_INT(spp_fp_check(fp, fd, content + off, n, off, &touched, &bad), 0);
    }
    /* bytes outside the judged blocks change: reads there pass */
    tv_poke(fd, 6 * SPP_FP_BLOCK + 5, 0xAA);
    content[6 * SPP_FP_BLOCK + 5] = 0xAA;
    touched = false;
    T_EQ_INT(spp_fp_check(fp, fd, content + 6 * SPP_FP_BLOCK, SPP_FP_BLOCK, 6 * SPP_FP_BLOCK, &touched, &bad), 0);
    T_CHECK(!touched);
    /* a byte of a judged block changes, outside the read but inside its block:
     * the read of the unchanged neighbour bytes fails too */
    tv_poke(fd, 3 * SPP_FP_BLOCK + 10, 0x55);
    T_EQ_INT(spp_fp_check(fp, fd, content + 3 * SPP_FP_BLOCK + 4000, 50, 3 * SPP_FP_BLOCK + 4000, &touched, &bad), 1);
    /* the loader's copy differs from the judged bytes, the file is back */
    tv_poke(fd, 3 * SPP_FP_BLOCK + 10, content[3 * SPP_FP_BLOCK + 10]);
    uint8_t copy[100];
    memcpy(copy, content + 4 * SPP_FP_BLOCK, sizeof copy);
    copy[7] ^= 0x20;
    T_EQ_INT(spp_fp_check(fp, fd, copy, sizeof copy, 4 * SPP_FP_BLOCK, &touched, &bad), 1);
    T_EQ_INT(bad, 4 * SPP_FP_BLOCK);
    /* bytes past the size judged (the file grew) */
    T_EQ_INT(spp_fp_check(fp, fd, content, 10, TV_SIZE - 5, &touched, &bad), 1);
    /* a mapping-style check (no buffer): read from the file now */
    T_EQ_INT(spp_fp_check(fp, fd, NULL, TV_SIZE, 0, &touched, &bad), 0);
    T_CHECK(ftruncate(fd, TV_SIZE - 10) == 0);  /* the last judged block is short now */
    T_EQ_INT(spp_fp_check(fp, fd, NULL, TV_SIZE - 10, 0, &touched, &bad), 1);
    spp_fp_unref(fp);
    close(fd);
}

static void test_block_reread_with_other_bytes(void) {
    static uint8_t content[TV_SIZE];
    int fd = tv_file(content);
    struct stat st;
    T_CHECK(fstat(fd, &st) == 0);
    spp_fpb b;
    spp_fpb_init(&b, fd, (uint64_t)st.st_size);
    uint8_t buf[64];
    T_CHECK(spp_fpb_pread(&b, buf, 64, 100) == 64);
    T_CHECK(spp_fpb_pread(&b, buf, 64, 100) == 64);      /* the same bytes again: fine */
    tv_poke(fd, 2000, 0x77);                              /* same block, other bytes */
    T_CHECK(spp_fpb_pread(&b, buf, 64, 3000) == -1);
    T_CHECK(b.changed);
    T_CHECK(spp_fpb_finish(&b, &st) == NULL);            /* never a fingerprint of two versions */
    spp_fpb_free(&b);
    close(fd);
}

static void test_fd_table_refs(void) {
    static uint8_t content[TV_SIZE];
    int fd = tv_file(content);
    const uint64_t reads[][2] = { { 0, 100 } };
    spp_fp *fp = tv_judge(fd, reads, 1);
    spp_fdfp_set(40, fp);
    spp_fdfp_dup(40, 41);
    bool d = true;
    spp_fp *g = spp_fdfp_get(41, &d);
    T_CHECK(g == fp && !d);
    spp_fp_unref(g);
    spp_fdfp_delivered(41, fp);
    g = spp_fdfp_get(41, &d);
    T_CHECK(g == fp && d);
    spp_fp_unref(g);
    T_EQ_INT(fp->refs, 3);                /* ours, fd 40, fd 41 */
    spp_fdfp_forget_range(0, 100);
    T_EQ_INT(fp->refs, 1);
    T_CHECK(spp_fdfp_get(40, NULL) == NULL);
    spp_fp_unref(fp);
    close(fd);
}

T_MAIN("preload_verify", T_CASE(test_hash_keyed_and_length_bound), T_CASE(test_records_only_blocks_read),
       T_CASE(test_block_reread_with_other_bytes), T_CASE(test_fd_table_refs))
