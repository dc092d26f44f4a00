/* protect.c - can a process be protected by the preload? (see protect.h): a
 * probe spawned under an exact LD_PRELOAD value, and the ELF / mode checks that
 * tell whether ld.so will preload anything into a program at all. */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <link.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "protect.h"

extern char **environ;

#define PROT_GREP   "/bin/grep"
#define PROT_LIB    "/libsafepickle.so"
#define PROT_HDR    256   /* bytes of a program's head read: ELF header or #! line */

/* --------------------------------------------------------------- spawning */

static bool prot_env_named(const char *kv, const char *const *extra) {
    for (size_t j = 0; extra && extra[j]; j++) {
        size_t kl = strcspn(extra[j], "=");
        if (!strncmp(kv, extra[j], kl) && kv[kl] == '=') return true;
    }
    return false;
}

/* Read fd to EOF into buf (at most n-1 bytes kept, the rest drained). */
static void prot_slurp(int fd, char *buf, size_t n) {
    size_t used = 0;
    for (;;) {
        char tmp[512];
        ssize_t r = read(fd, tmp, sizeof tmp);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        size_t take = buf && n ? ((size_t)r < n - 1 - used ? (size_t)r : n - 1 - used) : 0;
        if (take) memcpy(buf + used, tmp, take);
        used += take;
    }
    if (buf && n) {
        buf[used] = '\0';
        while (used && buf[used - 1] == '\n') buf[--used] = '\0';
    }
}

int prot_spawn(const char *preload, char *const argv[], const char *const *extra, char *err,
               size_t errsz, char *out, size_t outsz) {
    size_t n = 0, ne = 0;
    while (environ[n]) n++;
    while (extra && extra[ne]) ne++;
    char **env = calloc(n + ne + 2, sizeof *env);
    char *pre = preload ? malloc(strlen(preload) + sizeof "LD_PRELOAD=") : NULL;
    int efd[2] = { -1, -1 }, ofd[2] = { -1, -1 };
    if (!env || (preload && !pre) || pipe2(efd, O_CLOEXEC) != 0 || (out && pipe2(ofd, O_CLOEXEC) != 0)) {
        free(env); free(pre);
        if (efd[0] >= 0) { close(efd[0]); close(efd[1]); }
        return -1;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "LD_PRELOAD=", 11) != 0 && !prot_env_named(environ[i], extra))
            env[k++] = environ[i];
    for (size_t j = 0; j < ne; j++) env[k++] = (char *)extra[j];
    if (pre) { sprintf(pre, "LD_PRELOAD=%s", preload); env[k++] = pre; }
    env[k] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, efd[1], 2);
    if (out) posix_spawn_file_actions_adddup2(&fa, ofd[1], 1);
    else posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, env);
    posix_spawn_file_actions_destroy(&fa);
    close(efd[1]);
    if (out) close(ofd[1]);
    free(env);
    free(pre);
    /* stdout first, then stderr: a probe writes little, so neither pipe fills */
    if (out) { if (rc == 0) prot_slurp(ofd[0], out, outsz); else out[0] = '\0'; close(ofd[0]); }
    if (rc == 0) prot_slurp(efd[0], err, errsz);
    else if (err && errsz) snprintf(err, errsz, "cannot start %s: %s", argv[0], strerror(rc));
    close(efd[0]);
    if (rc != 0) return -1;
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

bool prot_preload_loads(const char *value, char *why, size_t n) {
    char *argv[] = { (char *)PROT_GREP, (char *)"-qF", (char *)PROT_LIB, (char *)"/proc/self/maps", NULL };
    char err[PROT_ERR_MAX];
    if (access(PROT_GREP, X_OK) != 0) {
        snprintf(why, n, "cannot test: %s is missing", PROT_GREP);
        return false;
    }
    int rc = prot_spawn(value, argv, NULL, err, sizeof err, NULL, 0);
    if (rc == 0) return true;
    char *nl = strchr(err, '\n');
    if (nl) *nl = '\0';
    if (rc == 1)
        snprintf(why, n, "ld.so did not load it into a new process%s%s", err[0] ? ": " : "", err);
    else
        snprintf(why, n, "the probe %s failed (status %d)%s%s", PROT_GREP, rc, err[0] ? ": " : "", err);
    return false;
}

/* ---------------------------------------------------------- program checks */

/* cmd as execvp would find it: a path when it has a '/', else the first
 * executable regular file in PATH. */
bool prot_which(const char *cmd, char *out, size_t n) {
    if (strchr(cmd, '/')) {
        if ((size_t)snprintf(out, n, "%s", cmd) >= n) return false;
        return access(out, F_OK) == 0;
    }
    const char *path = getenv("PATH");
    if (!path) path = "/usr/local/bin:/usr/bin:/bin";
    for (const char *p = path;; ) {
        const char *e = strchr(p, ':');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        struct stat st;
        if ((size_t)snprintf(out, n, "%.*s/%s", (int)l, l ? p : ".", cmd) < n &&
            stat(out, &st) == 0 && S_ISREG(st.st_mode) && access(out, X_OK) == 0)
            return true;
        if (!e) break;
        p = e + 1;
    }
    return false;
}

/* This CLI's own e_ident class and e_machine: the library is built alike. */
static bool prot_self_elf(unsigned char *cls, unsigned *mach) {
    ElfW(Ehdr) h;
    int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    bool ok = pread(fd, &h, sizeof h, 0) == (ssize_t)sizeof h;
    close(fd);
    *cls = h.e_ident[EI_CLASS];
    *mach = h.e_machine;
    return ok;
}

/* An ELF file of our class: does it have a PT_INTERP (a dynamic loader runs)? */
static bool prot_elf(int fd, const unsigned char *hd, size_t got, const char *path, char *why, size_t n) {
    unsigned char cls;
    unsigned mach;
    if (!prot_self_elf(&cls, &mach)) { snprintf(why, n, "cannot read this program's own ELF header"); return false; }
    if (got < sizeof(ElfW(Ehdr)) || hd[EI_CLASS] != cls) {
        snprintf(why, n, "%s is a %s-bit program: the %s-bit library cannot be loaded into it", path,
                 hd[EI_CLASS] == ELFCLASS32 ? "32" : hd[EI_CLASS] == ELFCLASS64 ? "64" : "?",
                 cls == ELFCLASS64 ? "64" : "32");
        return false;
    }
    ElfW(Ehdr) h;
    memcpy(&h, hd, sizeof h);
    if (h.e_machine != mach) {
        snprintf(why, n, "%s is built for another machine (ELF e_machine %u, the library's is %u)", path,
                 (unsigned)h.e_machine, mach);
        return false;
    }
    if (h.e_phentsize != sizeof(ElfW(Phdr)) || h.e_phnum == 0 || h.e_phnum > 4096) {
        snprintf(why, n, "%s: unreadable ELF program headers", path);
        return false;
    }
    for (unsigned i = 0; i < h.e_phnum; i++) {
        ElfW(Phdr) ph;
        if (pread(fd, &ph, sizeof ph, (off_t)(h.e_phoff + (ElfW(Off))i * sizeof ph)) != (ssize_t)sizeof ph) {
            snprintf(why, n, "%s: truncated ELF program headers", path);
            return false;
        }
        if (ph.p_type == PT_INTERP) return true;
    }
    snprintf(why, n, "%s is statically linked: no dynamic loader runs, so no preload library is loaded", path);
    return false;
}

/* The interpreter of a "#!" line (and, for /usr/bin/env, the program it runs). */
static bool prot_shebang(const unsigned char *hd, size_t got, const char *path, char *interp, size_t n,
                         char *why, size_t wn) {
    char line[PROT_HDR];
    size_t l = 0;
    for (size_t i = 2; i < got && hd[i] != '\n' && l < sizeof line - 1; i++) line[l++] = (char)hd[i];
    line[l] = '\0';
    char *save = NULL, *w = strtok_r(line, " \t", &save);
    if (!w) { snprintf(why, wn, "%s: empty #! line", path); return false; }
    const char *b = strrchr(w, '/') ? strrchr(w, '/') + 1 : w;
    if (!strcmp(b, "env")) {
        char *prog = NULL;
        for (char *a = strtok_r(NULL, " \t", &save); a && !prog; a = strtok_r(NULL, " \t", &save))
            if (a[0] != '-' && !strchr(a, '=')) prog = a;
        if (prog) {
            if (prot_which(prog, interp, n)) return true;
            snprintf(why, wn, "%s runs %s through env, which is not in PATH", path, prog);
            return false;
        }
    }
    if ((size_t)snprintf(interp, n, "%s", w) >= n) { snprintf(why, wn, "%s: #! path too long", path); return false; }
    return true;
}

bool prot_exec_check(const char *cmd, char *why, size_t n) {
    char path[PATH_MAX];
    if (!prot_which(cmd, path, sizeof path)) {
        snprintf(why, n, "%s: command not found", cmd);
        return false;
    }
    for (int depth = 0; depth <= PROT_MAX_SHEBANG; depth++) {
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
            snprintf(why, n, "%s: %s", path, fd < 0 ? strerror(errno) : "not a regular file");
            if (fd >= 0) close(fd);
            return false;
        }
        const char *secure = NULL;
        if ((st.st_mode & S_ISUID) && st.st_uid != geteuid()) secure = "set-user-ID";
        else if ((st.st_mode & S_ISGID) && (st.st_mode & S_IXGRP) && st.st_gid != getegid()) secure = "set-group-ID";
        else if (fgetxattr(fd, "security.capability", NULL, 0) > 0) secure = "given file capabilities";
        if (secure) {
            close(fd);
            snprintf(why, n, "%s is %s: ld.so runs it in secure mode and ignores LD_PRELOAD", path, secure);
            return false;
        }
        unsigned char hd[PROT_HDR];
        ssize_t got = pread(fd, hd, sizeof hd, 0);
        if (got < 0) got = 0;
        if (got >= 4 && !memcmp(hd, ELFMAG, SELFMAG)) {
            bool ok = prot_elf(fd, hd, (size_t)got, path, why, n);
            close(fd);
            return ok;
        }
        close(fd);
        if (got < 2 || hd[0] != '#' || hd[1] != '!') {
            snprintf(why, n, "%s is neither an ELF program nor a #! script", path);
            return false;
        }
        char interp[PATH_MAX];
        if (!prot_shebang(hd, (size_t)got, path, interp, sizeof interp, why, n)) return false;
        memcpy(path, interp, strlen(interp) + 1);
    }
    snprintf(why, n, "%s: more than %d nested #! interpreters", cmd, PROT_MAX_SHEBANG);
    return false;
}
