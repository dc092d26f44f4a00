/* cmd_cache.c - `safepickle cache stats|clear`: what the persistent verdict
 * cache shared by this user's processes holds, and emptying it. The location
 * and the rules for trusting it are analyzer/vcache.c's; entries are written
 * and read by the preload (preload/pcache.c). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

static void cache_usage(FILE *f) {
    fprintf(f,
        "usage: safepickle cache stats | clear\n\n"
        "The preload keeps each pickle-bearing file's verdict (and the fingerprint of the bytes\n"
        "judged) in a per-user directory, so another process loading the same unchanged file\n"
        "does not scan it again: $SAFEPICKLE_CACHE (\"off\" disables it), else\n"
        "$XDG_CACHE_HOME/safepickle, else ~/.cache/safepickle.\n"
        "  stats   the directory, whether it can be used, the number of entries and their size\n"
        "  clear   delete every entry (files are judged again on their next load)\n");
}

/* Entry files are e-<hex>; t-* are writes in progress or left by a killed process. */
static bool cache_is_entry(const char *n) { return (n[0] == 'e' || n[0] == 't') && n[1] == '-'; }

int cmd_cache(int argc, char **argv) {
    if (argc < 2 || (strcmp(argv[1], "stats") && strcmp(argv[1], "clear"))) {
        if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) { cache_usage(stdout); return CLI_EXIT_OK; }
        cache_usage(stderr);
        return CLI_EXIT_ERROR;
    }
    bool clear = !strcmp(argv[1], "clear");
    char dir[4096];
    const char *why = NULL;
    if (!spa_vcache_dir(dir, sizeof dir, &why)) {
        printf("cache: %s\n", why);
        return CLI_EXIT_OK;
    }
    int dfd = spa_vcache_open_dir(dir, false, &why);
    if (dfd < 0) {
        printf("directory: %s\nstatus: not used: %s\nentries: 0\n", dir, why);
        return errno == ENOENT || (why && !strcmp(why, "no cache directory")) ? CLI_EXIT_OK : CLI_EXIT_ERROR;
    }
    DIR *d = fdopendir(dfd);
    if (!d) { close(dfd); fprintf(stderr, "safepickle cache: cannot list %s\n", dir); return CLI_EXIT_ERROR; }
    unsigned long long n = 0, bytes = 0, removed = 0, failed = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (!cache_is_entry(e->d_name)) continue;
        struct stat st;
        if (fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
        n++;
        bytes += (unsigned long long)st.st_size;
        if (clear) {
            if (unlinkat(dfd, e->d_name, 0) == 0) removed++; else failed++;
        }
    }
    closedir(d);
    if (clear) {
        printf("directory: %s\nremoved: %llu entries (%llu bytes)\n", dir, removed, bytes);
        if (failed) { fprintf(stderr, "safepickle cache: %llu entries could not be removed\n", failed); return CLI_EXIT_ERROR; }
        return CLI_EXIT_OK;
    }
    printf("directory: %s\nstatus: usable (owned by uid %u, not writable by others)\nentries: %llu\nbytes: %llu\n",
           dir, (unsigned)geteuid(), n, bytes);
    return CLI_EXIT_OK;
}
