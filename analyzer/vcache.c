/* vcache.c - where the persistent verdict cache lives and when it may be
 * trusted: one fact for the preload (preload/pcache.c, which reads and writes
 * entries) and the CLI (`safepickle cache stats|clear`). The directory must be
 * owned by the effective user and writable by nobody else; each entry file
 * must be a regular file of that user, mode 0600 or stricter, one link. */
#include "spa.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

bool spa_vcache_dir(char *out, size_t n, const char **why) {
    const char *v = getenv("SAFEPICKLE_CACHE");
    *why = NULL;
    if (v && *v) {
        if (!strcmp(v, "off")) { *why = "disabled (SAFEPICKLE_CACHE=off)"; return false; }
        if (v[0] != '/') { *why = "SAFEPICKLE_CACHE is not an absolute path"; return false; }
        return snprintf(out, n, "%s", v) < (int)n || (*why = "path too long", false);
    }
    const char *x = getenv("XDG_CACHE_HOME");
    if (x && x[0] == '/')
        return snprintf(out, n, "%s/safepickle", x) < (int)n || (*why = "path too long", false);
    const char *h = getenv("HOME");
    if (h && h[0] == '/')
        return snprintf(out, n, "%s/.cache/safepickle", h) < (int)n || (*why = "path too long", false);
    *why = "no HOME, XDG_CACHE_HOME or SAFEPICKLE_CACHE";
    return false;
}

/* Is this directory one only the effective user can write? */
static const char *spa_vcache_dir_ok(int fd) {
    struct stat st;
    if (fstat(fd, &st) != 0) return "cannot stat the cache directory";
    if (!S_ISDIR(st.st_mode)) return "the cache path is not a directory";
    if (st.st_uid != geteuid()) return "the cache directory belongs to another user";
    if (st.st_mode & 022) return "the cache directory is writable by group or others";
    return NULL;
}

int spa_vcache_open_dir(const char *dir, bool create, const char **why) {
    *why = NULL;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0 && errno == ENOENT && create) {
        char parent[4096];
        snprintf(parent, sizeof parent, "%s", dir);
        char *slash = strrchr(parent, '/');
        if (slash && slash != parent) {
            *slash = '\0';
            (void)mkdir(parent, 0700); /* e.g. ~/.cache; an existing one is left alone */
        }
        if (mkdir(dir, 0700) != 0 && errno != EEXIST) { *why = "cannot create the cache directory"; return -1; }
        fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    }
    if (fd < 0) { *why = errno == ENOENT ? "no cache directory" : "cannot open the cache directory (or it is a symlink)"; return -1; }
    if ((*why = spa_vcache_dir_ok(fd)) != NULL) { close(fd); return -1; }
    return fd;
}

int spa_vcache_open_entry(int dirfd, const char *name, uint64_t max_size) {
    int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return -1;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077) ||
        st.st_nlink != 1 || (uint64_t)st.st_size > max_size) {
        close(fd);
        return -1;
    }
    return fd;
}
