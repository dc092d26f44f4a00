/* init.c - resolution of the real functions, the constructor and the lazy,
 * reentrancy-safe init-once, policy loading (SAFEPICKLE_POLICY or the embedded
 * default, plus SAFEPICKLE_MODE / SAFEPICKLE_TARGETS overrides) and process
 * targeting (the policy's executable globs). */
#include "spp.h"

#include <dlfcn.h>
#include <link.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------ state */
volatile int spp_init_state;
volatile bool spp_active;
SPP_TLS int spp_depth;

#define SPP_INIT_WAIT_YIELDS 200000 /* a thread waiting for another's init gives up after this */
#define SPP_TARGETS_MAX      64     /* globs accepted from SAFEPICKLE_TARGETS */

#define SPP_HOOK(kind, ret, name, params, args) spp_real_##name##_t real_##name;
#include "hooks.def"
#undef SPP_HOOK

static const char *const spp_names[SPP_H_COUNT] = {
#define SPP_HOOK(kind, ret, name, params, args) #name,
#include "hooks.def"
#undef SPP_HOOK
};

static void **const spp_slots[SPP_H_COUNT] = {
#define SPP_HOOK(kind, ret, name, params, args) (void **)&real_##name,
#include "hooks.def"
#undef SPP_HOOK
};

static spa_policy *spp_pol;
static bool spp_pol_broken;
static char spp_pol_err[512];
static char spp_exe_buf[SPP_PATH_MAX];
static char spp_argv_buf[SPP_ARGV_MAX];
static size_t spp_argv_len;
static uintptr_t spp_self_lo, spp_self_hi; /* our PT_LOAD address range */
static bool spp_is_target;

const char *spp_hook_name(int id) {
    return (id >= 0 && id < SPP_H_COUNT) ? spp_names[id] : "?";
}

/* Find the loaded object containing this function and record its PT_LOAD
 * range: a range check is all spp_addr_is_self needs (dladdr scans symbol
 * tables and made every process start ~1 ms slower). */
static int spp_phdr_cb(struct dl_phdr_info *info, size_t size, void *data) {
    uintptr_t me = (uintptr_t)data, lo = UINTPTR_MAX, hi = 0;
    (void)size;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD) continue;
        uintptr_t a = (uintptr_t)info->dlpi_addr + ph->p_vaddr;
        if (a < lo) lo = a;
        if (a + ph->p_memsz > hi) hi = a + ph->p_memsz;
    }
    if (me >= lo && me < hi) {
        spp_self_lo = lo;
        spp_self_hi = hi;
        return 1;
    }
    return 0;
}

static void spp_self_range(void) {
    if (spp_self_hi) return;
    dl_iterate_phdr(spp_phdr_cb, (void *)(uintptr_t)&spp_self_range);
}

bool spp_addr_is_self(const void *addr) {
    uintptr_t a = (uintptr_t)addr;
    return spp_self_hi && a >= spp_self_lo && a < spp_self_hi;
}

/* dlsym(RTLD_NEXT), falling back to RTLD_DEFAULT; a result inside this library
 * is refused (it would recurse). NULL means the wrapper fails with ENOSYS. */
void *spp_resolve_one(int id) {
    if (id < 0 || id >= SPP_H_COUNT) return NULL;
    void *p = *spp_slots[id];
    if (p) return p;
    spp_self_range();
    p = dlsym(RTLD_NEXT, spp_names[id]);
    if (!p || spp_addr_is_self(p)) p = dlsym(RTLD_DEFAULT, spp_names[id]);
    if (p && spp_addr_is_self(p)) p = NULL;
    __atomic_store_n(spp_slots[id], p, __ATOMIC_RELEASE);
    return p;
}

/* ------------------------------------------------------------------ accessors */
const spa_policy *spp_policy(void) { return spp_pol; }
bool spp_policy_broken(void) { return spp_pol_broken; }
const char *spp_policy_error(void) { return spp_pol_err; }
const char *spp_exe(void) { return spp_exe_buf; }
bool spp_targeted_process(void) { return spp_is_target; }
const char *spp_argv(size_t *n) { if (n) *n = spp_argv_len; return spp_argv_buf; }

/* ------------------------------------------------------------------ helpers */
static void spp_read_cmdline(void) {
    int fd = real_open ? real_open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC) : -1;
    if (fd < 0) return;
    size_t got = 0;
    while (got < sizeof spp_argv_buf - 1) {
        ssize_t r = real_read ? real_read(fd, spp_argv_buf + got, sizeof spp_argv_buf - 1 - got) : -1;
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    spp_argv_len = got;
    spp_argv_buf[got] = '\0';
    if (real_close) real_close(fd);
}

static const char *spp_basename(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

/* Does `name` match one of the globs? ("*" is every process; an empty list none.) */
static bool spp_match_targets(const char *name, char *const *globs, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (globs[i] && fnmatch(globs[i], name, 0) == 0) return true;
    return false;
}

static bool spp_targeted(const spa_policy *p) {
    const char *exe = spp_basename(spp_exe_buf);
    const char *env = getenv("SAFEPICKLE_TARGETS");
    if (env && *env) { /* empty: as if unset */
        char buf[1024];
        char *globs[SPP_TARGETS_MAX];
        size_t n = 0;
        snprintf(buf, sizeof buf, "%s", env);
        for (char *save = NULL, *t = strtok_r(buf, ",:", &save); t && n < SPP_TARGETS_MAX;
             t = strtok_r(NULL, ",:", &save))
            globs[n++] = t;
        return spp_match_targets(exe, globs, n);
    }
    return spp_match_targets(exe, p->targets.v, p->targets.n);
}

void spp_write_stderr(const char *s, size_t n) {
    int saved = errno;
    while (n > 0) {
        ssize_t w = write(2, s, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        s += w;
        n -= (size_t)w;
    }
    errno = saved;
}

static void spp_atfork_prepare(void) { spp_cache_atfork_prepare(); }
static void spp_atfork_parent(void) { spp_cache_atfork_parent(); }
static void spp_atfork_child(void) { spp_cache_atfork_child(); }

/* ------------------------------------------------------------------ init */
static void spp_load_policy(void) {
    const char *path = getenv("SAFEPICKLE_POLICY");
    if (path && *path) {
        spa_err err = {0};
        spa_policy *p = NULL;
        if (spa_policy_load(path, &p, &err) == SPA_OK && p) {
            spp_pol = p;
        } else {
            spp_pol_broken = true;
            snprintf(spp_pol_err, sizeof spp_pol_err, "cannot load policy %s: %s (at byte %llu)", path,
                     err.msg ? err.msg : "error", (unsigned long long)err.off);
        }
    }
    if (!spp_pol) {
        spa_policy *p = NULL;
        if (spa_policy_default(&p) == SPA_OK && p) {
            spp_pol = p;
        } else {
            spp_pol_broken = true;
            if (!spp_pol_err[0]) snprintf(spp_pol_err, sizeof spp_pol_err, "cannot load the embedded default policy");
        }
    }
    const char *mode = getenv("SAFEPICKLE_MODE");
    if (spp_pol && mode && *mode) {
        if (!strcmp(mode, "enforce")) spp_pol->mode = SPA_MODE_ENFORCE;
        else if (!strcmp(mode, "audit")) spp_pol->mode = SPA_MODE_AUDIT;
        else if (!strcmp(mode, "off")) spp_pol->mode = SPA_MODE_OFF;
        else {
            char line[256];
            int n = snprintf(line, sizeof line, "safepickle: ignoring SAFEPICKLE_MODE=%s (want enforce, audit or off)\n", mode);
            if (n > 0) spp_write_stderr(line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
        }
    }
}

static void spp_do_init(void) {
    for (int i = 0; i < SPP_H_COUNT; i++) spp_resolve_one(i);
    ssize_t n = readlink("/proc/self/exe", spp_exe_buf, sizeof spp_exe_buf - 1);
    spp_exe_buf[n > 0 ? n : 0] = '\0';
    spp_read_cmdline();
    spp_cache_init();
    spp_load_policy();
    bool targeted;
    if (spp_pol) {
        targeted = spp_targeted(spp_pol);
    } else {
        /* No policy at all: act in Python (fail closed there), pass elsewhere. */
        static char py[] = "python*";
        char *g[1] = { py };
        targeted = spp_match_targets(spp_basename(spp_exe_buf), g, 1);
    }
    bool on = spp_pol ? (spp_pol->mode != SPA_MODE_OFF && spp_pol->layer_file) : true;
    spp_audit_init();
    pthread_atfork(spp_atfork_prepare, spp_atfork_parent, spp_atfork_child);
    if (targeted && spp_pol_broken) {
        char line[SPP_LINE_MAX];
        int k = snprintf(line, sizeof line, "safepickle: %s; every pickle-bearing file will be refused\n", spp_pol_err);
        if (k > 0) spp_write_stderr(line, (size_t)k < sizeof line ? (size_t)k : sizeof line - 1);
    }
    spp_is_target = targeted;
    spp_active = targeted && on;
}

void spp_init(void) {
    if (__atomic_load_n(&spp_init_state, __ATOMIC_ACQUIRE) == 2) return;
    int expected = 0;
    if (__atomic_compare_exchange_n(&spp_init_state, &expected, 1, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        int saved = errno;
        spp_depth++;
        spp_do_init();
        spp_depth--;
        __atomic_store_n(&spp_init_state, 2, __ATOMIC_RELEASE);
        /* Layer 2 after the policy is loaded (it may call hooked functions). */
        if (spp_pyaudit_init) {
            spp_depth++;
            spp_pyaudit_init();
            spp_depth--;
        }
        errno = saved;
        return;
    }
    if (spp_depth > 0) return; /* nested inside our own init: pass through */
    for (int i = 0; i < SPP_INIT_WAIT_YIELDS && __atomic_load_n(&spp_init_state, __ATOMIC_ACQUIRE) != 2; i++)
        sched_yield();
}

bool spp_enter(void) {
    if (__builtin_expect(__atomic_load_n(&spp_init_state, __ATOMIC_ACQUIRE) == 2, 1))
        return spp_active && spp_depth == 0;
    if (spp_depth > 0) return false;
    spp_init();
    return __atomic_load_n(&spp_init_state, __ATOMIC_ACQUIRE) == 2 && spp_active && spp_depth == 0;
}

__attribute__((constructor)) static void spp_ctor(void) {
    spp_init();
}
