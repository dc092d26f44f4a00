/* test_preload_exports.c - the hook table and the preload's version script must
 * agree: every hook in preload/hooks.def is exported by preload/exports.map and
 * the map exports nothing else (adding a hook is one line in each). */
#include <stdlib.h>
#include <string.h>

#include "t.h"

static const char *const tpe_hooks[] = {
#define SPP_HOOK(kind, ret, name, params, args) #name,
#include "../../preload/hooks.def"
#undef SPP_HOOK
};
#define TPE_N (sizeof tpe_hooks / sizeof tpe_hooks[0])
#define TPE_MAP_MAX 65536 /* bytes of exports.map read */

static char tpe_map[TPE_MAP_MAX];

static int tpe_load(void) {
    const char *cands[] = { "preload/exports.map", "../preload/exports.map", "../../preload/exports.map" };
    for (size_t i = 0; i < sizeof cands / sizeof cands[0]; i++) {
        FILE *f = fopen(cands[i], "r");
        if (!f) continue;
        size_t n = fread(tpe_map, 1, sizeof tpe_map - 1, f);
        tpe_map[n] = '\0';
        fclose(f);
        return 1;
    }
    return 0;
}

/* The "name;" entries of the global: block, in order. */
static size_t tpe_exports(char names[][64], size_t max) {
    char *g = strstr(tpe_map, "global:");
    char *l = g ? strstr(g, "local:") : NULL;
    size_t n = 0;
    if (!g || !l) return 0;
    for (char *p = g + 7; p < l && n < max;) {
        while (p < l && (*p == ' ' || *p == '\n' || *p == '\t')) p++;
        char *semi = memchr(p, ';', (size_t)(l - p));
        if (!semi) break;
        size_t k = (size_t)(semi - p);
        if (k > 0 && k < 64) { memcpy(names[n], p, k); names[n][k] = '\0'; n++; }
        p = semi + 1;
    }
    return n;
}

static void test_map_matches_table(void) {
    T_CHECK(tpe_load());
    static char names[256][64];
    size_t n = tpe_exports(names, 256);
    T_EQ_INT(n, TPE_N);
    for (size_t i = 0; i < TPE_N; i++) {
        int found = 0;
        for (size_t j = 0; j < n; j++) found |= !strcmp(names[j], tpe_hooks[i]);
        T_CHECK_MSG(found, "hook %s missing from exports.map", tpe_hooks[i]);
    }
    for (size_t j = 0; j < n; j++) {
        int found = 0;
        for (size_t i = 0; i < TPE_N; i++) found |= !strcmp(names[j], tpe_hooks[i]);
        T_CHECK_MSG(found, "exports.map exports %s, which is not a hook", names[j]);
    }
    T_CHECK(strstr(tpe_map, "local: *;") != NULL);
}

static void test_table_has_families(void) {
    /* the families the issue names: each must be in the table */
    const char *need[] = { "open", "open64", "openat", "openat64", "__open_2", "__open64_2", "__openat_2",
                           "__openat64_2", "fopen", "fopen64", "freopen", "freopen64", "fdopen", "read",
                           "__read_chk", "pread", "pread64", "__pread_chk", "__pread64_chk", "readv", "preadv",
                           "preadv64", "preadv2", "preadv64v2", "fread", "fread_unlocked", "__fread_chk",
                           "__fread_unlocked_chk", "mmap", "mmap64", "close", "fclose", "dup", "dup2", "dup3",
                           "fcntl", "fcntl64" };
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
        int found = 0;
        for (size_t j = 0; j < TPE_N; j++) found |= !strcmp(need[i], tpe_hooks[j]);
        T_CHECK_MSG(found, "%s is not hooked", need[i]);
    }
}

T_MAIN("preload_exports", T_CASE(test_map_matches_table), T_CASE(test_table_has_families))
