/* test_preload_verify.c - unit tests of the fingerprint of judged bytes and
 * the check of later reads against it (preload/verify.c, compiled into this
 * test): the keyed hash, which blocks a scan's reads record, a block read twice
 * with other bytes, and reads that match, differ, straddle blocks, fall outside
 * the judged ranges or past the judged size. */
#include <stddef.h>
static unsigned long tv_hashed;     /* bytes verify.c hashed (its test hook) */
#define SPP_FP_HASH_NOTE(n) (tv_hashed += (n))
#include "../../preload/verify.c"

#include <fcntl.h>
#include <stdio.h>

#include "t.h"

spp_real_pread64_t real_pread64; /* NULL: verify.c reads with the raw syscall; tv_count: counted */

static unsigned long tv_preads;     /* preads verify.c issued while counted */
static ssize_t tv_count_pread(int fd, void *buf, size_t n, off64_t off) {
    tv_preads++;
    return (ssize_t)syscall(SYS_pread64, fd, buf, n, off);
}

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

/* spp_fp_hash is NH as defined (the comment above it): the sum over 16-byte
 * steps, the zero-padded last step, the length term; for every length a block
 * can have (its loop is unrolled: any step it skipped or took twice shows). */
static spp_h128 tv_nh_definition(const uint8_t *p, size_t n) {
    unsigned __int128 acc = 0;
    for (size_t i = 0, w = 0; i < n; i += 16, w += 2) {
        uint8_t t[16] = {0};
        memcpy(t, p + i, n - i < 16 ? n - i : 16);
        acc += (unsigned __int128)(spp_ld64(t) + spp_nh_key[w]) * (spp_ld64(t + 8) + spp_nh_key[w + 1]);
    }
    acc += (unsigned __int128)((uint64_t)n + spp_nh_key[SPP_FP_KEYW - 2]) * spp_nh_key[SPP_FP_KEYW - 1];
    spp_h128 h = { (uint64_t)acc, (uint64_t)(acc >> 64) };
    return h;
}

static void test_hash_is_nh_definition(void) {
    static uint8_t b[SPP_FP_BLOCK];
    uint64_t x = 0x9e3779b97f4a7c15u;
    for (size_t i = 0; i < sizeof b; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        b[i] = (uint8_t)x;
    }
    (void)spp_fp_hash(b, 0); /* the key */
    for (size_t n = 0; n <= SPP_FP_BLOCK; n++)
        T_CHECK_MSG(spp_h_eq(spp_fp_hash(b, n), tv_nh_definition(b, n)), "length %zu", n);
}

/* A torch checkpoint's storages are not judged (only data.pkl and the zip
 * records are): a read of them is one range lookup, no hashing and no pread;
 * a read that returns judged blocks whole hashes those blocks and nothing
 * else. Counted through verify.c's test hook, not timed. */
static void test_reads_outside_judged_do_no_hashing(void) {
    static uint8_t content[TV_SIZE];
    int fd = tv_file(content);
    const uint64_t reads[][2] = { { 0, 30 }, { 5 * SPP_FP_BLOCK + 10, 20 }, { TV_SIZE - 50, 50 } };
    spp_fp *fp = tv_judge(fd, reads, 3);
    T_CHECK(fp && fp->n_blocks == 3);    /* blocks 0, 5, 10 */
    bool touched = false;
    uint64_t bad = 0;
    real_pread64 = tv_count_pread;
    tv_preads = 0;
    tv_hashed = 0;
    /* the storages: blocks 1-4 and 6-9, in one read each, and in pieces */
    T_EQ_INT(spp_fp_check(fp, fd, content + SPP_FP_BLOCK, 4 * SPP_FP_BLOCK, SPP_FP_BLOCK, &touched, &bad), 0);
    T_EQ_INT(spp_fp_check(fp, fd, content + 6 * SPP_FP_BLOCK, 4 * SPP_FP_BLOCK, 6 * SPP_FP_BLOCK, &touched, &bad), 0);
    for (uint64_t off = SPP_FP_BLOCK + 7; off + 1000 < 5 * SPP_FP_BLOCK; off += 1000)
        T_EQ_INT(spp_fp_check(fp, fd, content + off, 1000, off, &touched, &bad), 0);
    T_CHECK(!touched);
    T_EQ_INT(tv_hashed, 0);
    T_EQ_INT(tv_preads, 0);
    /* blocks 0-9 whole: block 0 and block 5 hashed from the loader's buffer, no pread */
    T_EQ_INT(spp_fp_check(fp, fd, content, 10 * SPP_FP_BLOCK, 0, &touched, &bad), 0);
    T_CHECK(touched);
    T_EQ_INT(tv_hashed, 2 * SPP_FP_BLOCK);
    T_EQ_INT(tv_preads, 0);
    real_pread64 = NULL;
    spp_fp_unref(fp);
    close(fd);
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

/* A loader reading forward in pieces that do not fall on block boundaries (a
 * FILE buffer, a reader that asks for 4 KiB at odd offsets): each block is
 * read from the file and hashed about once, not twice per read (the rest of
 * both straddled blocks): the thread keeps a verified copy of the blocks. */
static void test_unaligned_reads_read_each_block_once(void) {
    static uint8_t content[TV_SIZE];
    int fd = tv_file(content);
    const uint64_t reads[][2] = { { 0, TV_SIZE } };
    spp_fp *fp = tv_judge(fd, reads, 1);
    T_CHECK(fp && fp->n_blocks == 11);
    bool touched = false;
    uint64_t bad = 0;
    real_pread64 = tv_count_pread;
    tv_preads = 0;
    int rc = 0;
    for (uint64_t off = 0, n = 17; off < TV_SIZE; off += n, n = SPP_FP_BLOCK)
        rc |= spp_fp_check(fp, fd, content + off, TV_SIZE - off < n ? (size_t)(TV_SIZE - off) : (size_t)n, off,
                           &touched, &bad);
    real_pread64 = NULL;
    T_EQ_INT(rc, 0);
    /* 12 reads over 11 blocks: the first block, then the rest of the run at once */
    T_CHECK_MSG(tv_preads <= 3, "%lu preads for 12 reads", tv_preads);
    spp_fp_unref(fp);
    close(fd);
}

/* The copy is the judged bytes, and the loader's bytes are compared with it:
 * a file rewritten after the copy was made is caught in the bytes the loader
 * gets; the copy of one fingerprint never answers for another (also when the
 * other has the freed one's address); a nested check goes without it. */
static void test_verified_copy_is_sound(void) {
    static uint8_t content[TV_SIZE], other[TV_SIZE];
    int fd = tv_file(content);
    const uint64_t reads[][2] = { { 0, TV_SIZE } };
    spp_fp *fp = tv_judge(fd, reads, 1);
    bool touched = false;
    uint64_t bad = 0;
    /* reading forward: blocks 1.. are copied and verified */
    T_EQ_INT(spp_fp_check(fp, fd, content + 4000, 200, 4000, &touched, &bad), 0);
    T_EQ_INT(spp_fp_check(fp, fd, content + 4200, 4096, 4200, &touched, &bad), 0);
    T_CHECK(spp_vt && spp_vt->gen == fp->gen && spp_vt->n > 3);
    /* the file is rewritten in block 3; the loader reads the new bytes */
    uint64_t x = 3 * SPP_FP_BLOCK + 100;
    tv_poke(fd, x, (uint8_t)(content[x] ^ 0x40));
    uint8_t piece[300];
    memcpy(piece, content + x - 50, sizeof piece);
    piece[50] ^= 0x40;
    T_EQ_INT(spp_fp_check(fp, fd, piece, sizeof piece, x - 50, &touched, &bad), 1);
    T_EQ_INT(bad, x - 50);
    /* the loader's bytes are the judged ones (read before the rewrite): they pass */
    T_EQ_INT(spp_fp_check(fp, fd, content + x - 50, sizeof piece, x - 50, &touched, &bad), 0);
    /* a nested check (the copy busy) reads the rest of the block from the
     * file, which holds the rewritten byte: fails (earlier than needed, but safe) */
    spp_vt->busy = true;
    T_EQ_INT(spp_fp_check(fp, fd, content + x + 50, 100, x + 50, &touched, &bad), 1);
    spp_vt->busy = false;
    T_EQ_INT(spp_fp_check(fp, fd, content + x + 50, 100, x + 50, &touched, &bad), 0);
    tv_poke(fd, x, content[x]);
    /* another fingerprint, made after this one is freed (maybe at its address),
     * of other content at the same offsets */
    spp_fp_unref(fp);
    int fd2 = tv_file(other);
    for (size_t i = 0; i < TV_SIZE; i++) other[i] = (uint8_t)(content[i] + 1);
    T_CHECK(pwrite(fd2, other, TV_SIZE, 0) == TV_SIZE);
    spp_fp *fp2 = tv_judge(fd2, reads, 1);
    T_EQ_INT(spp_fp_check(fp2, fd2, content + x - 50, sizeof piece, x - 50, &touched, &bad), 1);
    T_EQ_INT(spp_fp_check(fp2, fd2, other + x - 50, sizeof piece, x - 50, &touched, &bad), 0);
    T_EQ_INT(spp_fp_check(fp2, fd2, content + x + 50, 100, x + 50, &touched, &bad), 1);
    /* a block changed in the file before the copy reaches it is not copied:
     * reading it fails even with the judged bytes (the rest of its block differs) */
    tv_poke(fd2, 7 * SPP_FP_BLOCK + 5, (uint8_t)(other[7 * SPP_FP_BLOCK + 5] ^ 1));
    T_EQ_INT(spp_fp_check(fp2, fd2, other + 5 * SPP_FP_BLOCK + 10, 100, 5 * SPP_FP_BLOCK + 10, &touched, &bad), 0);
    T_EQ_INT(spp_fp_check(fp2, fd2, other + 5 * SPP_FP_BLOCK + 110, 9000, 5 * SPP_FP_BLOCK + 110, &touched, &bad), 1);
    T_EQ_INT(bad, 7 * SPP_FP_BLOCK);
    spp_fp_unref(fp2);
    close(fd);
    close(fd2);
}

/* The recogniser's reads (soft mode, decide.c: a "not pickle-bearing"
 * judgement is fingerprinted by them): never failed, but a block that cannot
 * be read whole (the file is shorter than its size: a sysfs file) or that is
 * read twice with other bytes is noted; clean, they give the fingerprint of
 * the head and tail blocks, against which a later read of a byte changed
 * there (a shared mapping's write, same identity) fails; and the strict scan
 * that follows must see the bytes the recogniser saw. */
static void test_soft_recogniser_reads(void) {
    static uint8_t content[TV_SIZE];
    int fd = tv_file(content);
    struct stat st;
    T_CHECK(fstat(fd, &st) == 0);
    uint8_t buf[2 * SPP_FP_BLOCK];
    spp_fpb b;
    /* head and tail, as spa_recognise reads them: blocks 0, 9, 10, each request
     * one pread (a part of a block is read as the whole block, no second pread
     * completes it), and the bytes returned are the file's */
    spp_fpb_init(&b, fd, (uint64_t)st.st_size);
    b.soft = true;
    real_pread64 = tv_count_pread;
    tv_preads = 0;
    T_CHECK(spp_fpb_pread(&b, buf, 512, 0) == 512);
    T_CHECK(memcmp(buf, content, 512) == 0);
    T_CHECK(spp_fpb_pread(&b, buf, 22, TV_SIZE - 22) == 22);
    T_CHECK(memcmp(buf, content + TV_SIZE - 22, 22) == 0);
    T_EQ_INT(tv_preads, 2);
    T_CHECK(spp_fpb_pread(&b, buf, 4000, TV_SIZE - 4000) == 4000);   /* part of block 9, all of 10 */
    T_CHECK(memcmp(buf, content + TV_SIZE - 4000, 4000) == 0);
    T_EQ_INT(tv_preads, 4);
    real_pread64 = NULL;
    T_CHECK(!b.shortf && !b.volat && !b.changed);
    spp_fp *fp = spp_fpb_finish(&b, &st);
    spp_fpb_free(&b);
    T_CHECK(fp && fp->n_blocks == 3 && fp->n_runs == 2);
    bool touched = false;
    uint64_t bad = 0;
    T_EQ_INT(spp_fp_check(fp, fd, content, TV_SIZE, 0, &touched, &bad), 0);
    touched = false;   /* the middle is not what the judgement read */
    T_EQ_INT(spp_fp_check(fp, fd, content + 4 * SPP_FP_BLOCK, 100, 4 * SPP_FP_BLOCK, &touched, &bad), 0);
    T_CHECK(!touched);
    uint64_t x = TV_SIZE - 3000;      /* the tail changes under the same size */
    tv_poke(fd, x, (uint8_t)(content[x] ^ 1));
    content[x] ^= 1;
    T_EQ_INT(spp_fp_check(fp, fd, content + x - 10, 20, x - 10, &touched, &bad), 1);
    T_EQ_INT(spp_fp_check(fp, fd, content, TV_SIZE, 0, &touched, &bad), 1);
    spp_fp_unref(fp);

    /* a block read twice with other bytes: noted (volat), not failed; the
     * strict reads after it compare with the first bytes seen */
    spp_fpb_init(&b, fd, (uint64_t)st.st_size);
    b.soft = true;
    T_CHECK(spp_fpb_pread(&b, buf, 512, 0) == 512);
    tv_poke(fd, 1000, (uint8_t)(content[1000] ^ 2));
    content[1000] ^= 2;
    T_CHECK(spp_fpb_pread(&b, buf, 100, 2000) == 100);
    T_CHECK(b.volat && !b.changed && !b.shortf);
    b.soft = false;
    T_CHECK(spp_fpb_pread(&b, buf, 512, 0) == -1);
    T_CHECK(b.changed);
    spp_fpb_free(&b);

    /* a whole file read from 0 (a small file's tail is all of it): whole blocks, one pread */
    spp_fpb_init(&b, fd, (uint64_t)st.st_size);
    b.soft = true;
    static uint8_t all[TV_SIZE];
    T_CHECK(spp_fpb_pread(&b, all, TV_SIZE, 0) == TV_SIZE);
    T_CHECK(memcmp(all, content, TV_SIZE) == 0 && b.n == 11 && !b.shortf);
    spp_fpb_free(&b);

    /* shorter than its size says (a pseudo file): noted (shortf), bytes returned */
    spp_fpb_init(&b, fd, (uint64_t)st.st_size + 3 * SPP_FP_BLOCK);
    b.soft = true;
    T_CHECK(spp_fpb_pread(&b, buf, 22, TV_SIZE + 100) == 0);
    T_CHECK(spp_fpb_pread(&b, buf, 200, TV_SIZE - 100) == 100);
    T_CHECK(b.shortf && !b.changed);
    spp_fpb_free(&b);
    close(fd);
}

T_MAIN("preload_verify", T_CASE(test_hash_keyed_and_length_bound), T_CASE(test_hash_is_nh_definition),
       T_CASE(test_reads_outside_judged_do_no_hashing), T_CASE(test_records_only_blocks_read),
       T_CASE(test_block_reread_with_other_bytes), T_CASE(test_fd_table_refs),
       T_CASE(test_unaligned_reads_read_each_block_once), T_CASE(test_verified_copy_is_sound),
       T_CASE(test_soft_recogniser_reads))
