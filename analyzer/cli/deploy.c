/* deploy.c - install-layout helpers shared by the deployment commands (jupyter,
 * doctor, trust): where the preload and the shipped policies are relative to the
 * running CLI, and small whole-file read / atomic write helpers. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "deploy.h"

#define DEP_PRELOAD_NAME "libsafepickle.so"

bool dep_is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

const char *dep_find_preload(char *buf, size_t n) {
    static const char *const rel[] = {
        "/" DEP_PRELOAD_NAME,                       /* build tree: next to the CLI */
        "/../lib/safepickle/" DEP_PRELOAD_NAME,     /* make install layout */
        "/../lib/" DEP_PRELOAD_NAME,
    };
    const char *dir = cli_self_dir();
    for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) {
        char cand[PATH_MAX];
        if ((size_t)snprintf(cand, sizeof cand, "%s%s", dir, rel[i]) >= sizeof cand) continue;
        if (!dep_is_file(cand)) continue;
        char real[PATH_MAX];
        if (!realpath(cand, real) || strlen(real) >= n) continue;
        memcpy(buf, real, strlen(real) + 1);
        return buf;
    }
    return NULL;
}

const char *dep_resolve_policy(const char *arg, char *buf, size_t n) {
    char real[PATH_MAX];
    if (strchr(arg, '/') || dep_is_file(arg)) {
        if (!realpath(arg, real)) return NULL;
    } else {
        static const char *const rel[] = { "/../share/safepickle/policies/", "/policies/",
                                           "/../policies/" };
        const char *dir = cli_self_dir();
        bool found = false;
        for (size_t i = 0; i < sizeof rel / sizeof rel[0] && !found; i++) {
            char cand[PATH_MAX];
            if ((size_t)snprintf(cand, sizeof cand, "%s%s%s.json", dir, rel[i], arg) >= sizeof cand)
                continue;
            found = dep_is_file(cand) && realpath(cand, real);
        }
        if (!found) { errno = ENOENT; return NULL; }
    }
    if (strlen(real) >= n) { errno = ENAMETOOLONG; return NULL; }
    memcpy(buf, real, strlen(real) + 1);
    return buf;
}

bool dep_policy_is_name(const char *arg) { return arg && !strchr(arg, '/') && !dep_is_file(arg); }

spa_policy *dep_load_policy(const char *cmd, const char *arg, char *resolved, size_t n) {
    spa_policy *p = NULL;
    spa_err err = { SPA_OK, NULL, 0 };
    char path[PATH_MAX];
    if (!arg) {
        if (spa_policy_default(&p) == SPA_OK) return p;
        fprintf(stderr, "safepickle %s: the embedded default policy does not parse (broken build)\n", cmd);
        return NULL;
    }
    if (!dep_resolve_policy(arg, path, sizeof path)) {
        if (dep_policy_is_name(arg))
            fprintf(stderr, "safepickle %s: policy '%s': no such file, and no shipped policy of that name "
                            "(default, strict, audit)\n", cmd, arg);
        else
            fprintf(stderr, "safepickle %s: policy %s: %s\n", cmd, arg, strerror(errno));
        return NULL;
    }
    if (spa_policy_load(path, &p, &err) != SPA_OK) {
        fprintf(stderr, "safepickle %s: policy %s: %s (byte %llu); see safepickle policy check\n", cmd, path,
                err.msg ? err.msg : spa_code_name(err.code), (unsigned long long)err.off);
        return NULL;
    }
    if (resolved && n) snprintf(resolved, n, "%s", path);
    return p;
}

char *dep_read_file(const char *path, size_t max, size_t *len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    size_t cap = 4096, used = 0;
    char *b = malloc(cap + 1);
    while (b) {
        if (used == cap) {
            if (cap >= max) { free(b); b = NULL; errno = EFBIG; break; }
            size_t ncap = cap * 2 > max ? max : cap * 2;
            char *nb = realloc(b, ncap + 1);
            if (!nb) { free(b); b = NULL; break; }
            b = nb; cap = ncap;
        }
        ssize_t r = read(fd, b + used, cap - used);
        if (r < 0) { if (errno == EINTR) continue; int e = errno; free(b); b = NULL; errno = e; break; }
        if (r == 0) { b[used] = '\0'; if (len) *len = used; break; }
        used += (size_t)r;
    }
    int e = errno;
    close(fd);
    errno = e;
    return b;
}

int dep_write_atomic(const char *path, const char *data, size_t len, unsigned mode) {
    char tmp[PATH_MAX];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    struct stat st;
    if (stat(path, &st) == 0) mode = st.st_mode & 07777;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return -1;
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0) { if (errno == EINTR) continue; goto fail; }
        off += (size_t)w;
    }
    if (fchmod(fd, (mode_t)mode) != 0 || fsync(fd) != 0) goto fail;
    if (close(fd) != 0) { fd = -1; goto fail; }
    fd = -1;
    if (rename(tmp, path) != 0) goto fail;
    return 0;
fail:;
    int e = errno;
    if (fd >= 0) close(fd);
    unlink(tmp);
    errno = e;
    return -1;
}
