/* test_preload_cache.c - unit tests of the preload's verdict cache and fd table
 * (preload/cache.c and preload/fdtrack.c, compiled into this test): identity
 * keys, hits and misses on any change, eviction, the reported flag, fork safety
 * of the lock, and the dup/close bookkeeping of the fd table. */
#include "../../preload/cache.c"
#include "../../preload/fdtrack.c"
#include "../../preload/verify.c"

spp_real_pread64_t real_pread64; /* NULL: verify.c reads with the raw syscall */

#include <sys/wait.h>
#include <unistd.h>

#include "t.h"

static struct stat tpc_stat(uint64_t dev, uint64_t ino, off_t size, time_t mt, long mtns, time_t ct) {
    struct stat st;
    memset(&st, 0, sizeof st);
    st.st_dev = (dev_t)dev;
    st.st_ino = (ino_t)ino;
    st.st_size = size;
    st.st_mtim.tv_sec = mt;
    st.st_mtim.tv_nsec = mtns;
    st.st_ctim.tv_sec = ct;
    return st;
}

static void test_hit_and_miss_on_change(void) {
    struct stat st = tpc_stat(1, 100, 4096, 1000, 5, 1000);
    spp_key k;
    spp_key_from_stat(&k, &st);
    spp_cached v = { .verdict = SPA_VERDICT_MALICIOUS, .action = SPA_ACT_BLOCK, .bearing = 1, .reported = 0 }, out = { .verdict = 0, .action = 0, .bearing = 0, .reported = 0 };
    T_CHECK(!spp_cache_get(&k, &out));
    spp_cache_put(&k, &v);
    T_CHECK(spp_cache_get(&k, &out));
    T_EQ_INT(out.verdict, SPA_VERDICT_MALICIOUS);
    T_EQ_INT(out.action, SPA_ACT_BLOCK);
    /* every identity field matters */
    struct stat variants[5] = { tpc_stat(2, 100, 4096, 1000, 5, 1000), tpc_stat(1, 101, 4096, 1000, 5, 1000),
                                tpc_stat(1, 100, 4097, 1000, 5, 1000), tpc_stat(1, 100, 4096, 1000, 6, 1000),
                                tpc_stat(1, 100, 4096, 1000, 5, 1001) };
    for (int i = 0; i < 5; i++) {
        spp_key k2;
        spp_key_from_stat(&k2, &variants[i]);
        T_CHECK_MSG(!spp_cache_get(&k2, &out), "variant %d hit", i);
    }
}

static void test_new_version_replaces_old(void) {
    struct stat a = tpc_stat(3, 7, 10, 1, 0, 1), b = tpc_stat(3, 7, 11, 2, 0, 2);
    spp_key ka, kb;
    spp_key_from_stat(&ka, &a);
    spp_key_from_stat(&kb, &b);
    spp_cached safe = { .verdict = SPA_VERDICT_SAFE, .action = SPA_ACT_ALLOW, .bearing = 1, .reported = 0 }, bad = { .verdict = SPA_VERDICT_MALICIOUS, .action = SPA_ACT_BLOCK, .bearing = 1, .reported = 0 }, out = { .verdict = 0, .action = 0, .bearing = 0, .reported = 0 };
    spp_cache_put(&ka, &safe);
    spp_cache_put(&kb, &bad);
    T_CHECK(!spp_cache_get(&ka, &out)); /* the rewritten file's old verdict is gone */
    T_CHECK(spp_cache_get(&kb, &out) && out.action == SPA_ACT_BLOCK);
}

static void test_eviction_bounded(void) {
    /* far more files than slots: the table stays bounded and recent entries hit */
    spp_cached v = { .verdict = SPA_VERDICT_SAFE, .action = SPA_ACT_ALLOW, .bearing = 0, .reported = 0 }, out = { .verdict = 0, .action = 0, .bearing = 0, .reported = 0 };
    for (uint64_t i = 0; i < 4 * SPP_CACHE_SLOTS; i++) {
        struct stat st = tpc_stat(9, 1000 + i, 1, 1, 0, 1);
        spp_key k;
        spp_key_from_stat(&k, &st);
        spp_cache_put(&k, &v);
    }
    struct stat last = tpc_stat(9, 1000 + 4 * SPP_CACHE_SLOTS - 1, 1, 1, 0, 1);
    spp_key k;
    spp_key_from_stat(&k, &last);
    T_CHECK(spp_cache_get(&k, &out));
}

static void test_reported_once(void) {
    struct stat st = tpc_stat(4, 4, 4, 4, 4, 4);
    spp_key k;
    spp_key_from_stat(&k, &st);
    spp_cached v = { .verdict = SPA_VERDICT_SUSPICIOUS, .action = SPA_ACT_WARN, .bearing = 1, .reported = 0 };
    spp_cache_put(&k, &v);
    T_CHECK(spp_cache_mark_reported(&k));
    T_CHECK(!spp_cache_mark_reported(&k));
}

static void test_fork_with_lock_held(void) {
    /* prepare takes the lock, the child re-initialises it: the child can use the cache */
    spp_cache_atfork_prepare();
    pid_t pid = fork();
    if (pid == 0) {
        spp_cache_atfork_child();
        struct stat st = tpc_stat(5, 5, 5, 5, 5, 5);
        spp_key k;
        spp_key_from_stat(&k, &st);
        spp_cached v = { .verdict = 0, .action = 0, .bearing = 0, .reported = 0 }, out = { .verdict = 0, .action = 0, .bearing = 0, .reported = 0 };
        spp_cache_put(&k, &v);
        _exit(spp_cache_get(&k, &out) ? 0 : 1);
    }
    spp_cache_atfork_parent();
    int status = 0;
    T_CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
    T_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void test_fdtable(void) {
    struct stat a = tpc_stat(1, 2, 3, 4, 5, 6), b = tpc_stat(1, 2, 3, 4, 5, 7);
    uint64_t ha = spp_ident_hash(&a), hb = spp_ident_hash(&b);
    T_CHECK(ha != 0 && (ha & 1) == 0);
    T_CHECK(ha != hb);
    spp_fd_set(5, ha);
    T_CHECK(spp_fd_get(5) == ha);
    spp_fd_dup(5, 9);
    T_CHECK(spp_fd_get(9) == ha);
    spp_fd_forget(5);
    T_CHECK(spp_fd_get(5) == 0 && spp_fd_get(9) == ha);
    spp_fd_set(20, hb | 1);
    spp_fd_set(21, hb);
    spp_fd_forget_range(10, 4000000000u);
    T_CHECK(spp_fd_get(9) == ha && spp_fd_get(20) == 0 && spp_fd_get(21) == 0);
    /* out-of-range fds are never stored (judged every time) */
    spp_fd_set(SPP_FD_MAX + 5, ha);
    T_CHECK(spp_fd_get(SPP_FD_MAX + 5) == 0);
    T_CHECK(spp_fd_get(-1) == 0);
}

/* The names a trusted file imports, for layer 2's binding: raw and mapped
 * names and torch's rename are members, others are not, an unknown file is
 * -1, and a file with a name computed at run time is not bound (-1). */
static spa_result *tpc_scan(const char *src, size_t n) {
    spa_scan_opts o;
    spa_scan_opts_default(&o);
    spa_result *r = NULL;
    spa_err e;
    return spa_scan_mem(&o, (const uint8_t *)src, n, &r, &e) == SPA_OK ? r : NULL;
}

static void test_trust_names(void) {
    static const char p2[] = "c__builtin__\nlen\n(S'x'\ntR"          /* py2 name: builtins.len too */
                             "ctorch.tensor\n_rebuild\n(tR.";         /* torch.load asks torch._tensor */
    spa_result *r = tpc_scan(p2, sizeof p2 - 1);
    T_CHECK(r != NULL);
    spp_trust_put(42, r);
    T_EQ_INT(spp_trust_check(42, "__builtin__", "len"), 1);
    T_EQ_INT(spp_trust_check(42, "builtins", "len"), 1);
    T_EQ_INT(spp_trust_check(42, "torch.tensor", "_rebuild"), 1);
    T_EQ_INT(spp_trust_check(42, "torch._tensor", "_rebuild"), 1);
    T_EQ_INT(spp_trust_check(42, "subprocess", "call"), 0);
    T_EQ_INT(spp_trust_check(42, "builtins", "len2"), 0);
    T_EQ_INT(spp_trust_check(43, "builtins", "len"), -1);     /* never recorded */
    spa_result_free(r);
    /* a dynamic STACK_GLOBAL: the names cannot be listed */
    static const char dyn[] = "\x80\x04\x8c\x02os\x8c\x04path\x93\x8c\x06system\x93.";
    r = tpc_scan(dyn, sizeof dyn - 1);
    spp_trust_put(44, r);
    T_EQ_INT(spp_trust_check(44, "subprocess", "call"), -1);
    spa_result_free(r);
    spp_trust_put(45, NULL);                                  /* scan failed */
    T_EQ_INT(spp_trust_check(45, "x", "y"), -1);
    /* a replaced entry: the file judged again keeps only its new names */
    static const char p3[] = "cos\nsystem\n(S'x'\ntR.";
    r = tpc_scan(p3, sizeof p3 - 1);
    spp_trust_put(42, r);
    T_EQ_INT(spp_trust_check(42, "os", "system"), 1);
    T_EQ_INT(spp_trust_check(42, "__builtin__", "len"), 0);
    spa_result_free(r);
    /* more than SPP_TRUST_FILES files later, the first is forgotten (-1: not bound) */
    for (uint64_t i = 0; i < SPP_TRUST_FILES; i++) spp_trust_put(1000 + i, NULL);
    T_EQ_INT(spp_trust_check(42, "os", "system"), -1);
}

T_MAIN("preload_cache", T_CASE(test_hit_and_miss_on_change), T_CASE(test_new_version_replaces_old),
       T_CASE(test_eviction_bounded), T_CASE(test_reported_once), T_CASE(test_fork_with_lock_held),
       T_CASE(test_fdtable), T_CASE(test_trust_names))
