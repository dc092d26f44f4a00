/* init.c - resolution of the real functions, the constructor and the lazy,
 * reentrancy-safe init-once, and the look for an interpreter loaded after
 * start (dl_iterate_phdr's load count). The process facts it sets up (policy
 * in force, exe, argv, targeting, nesting depth) live in state.c. */
#include "spp.h"
#include "pyaudit.h"

#include <dlfcn.h>
#include <link.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------ state */
volatile int spp_init_state;
volatile bool spp_active;

#define SPP_INIT_WAIT_YIELDS 200000 /* a thread waiting for another's init gives up after this */

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

static uintptr_t spp_self_lo, spp_self_hi; /* our PT_LOAD address range */

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



/* spp_write_stderr: audit.c (never blocks on a full pipe). */

static void spp_atfork_prepare(void) { spp_cache_atfork_prepare(); spp_fp_atfork_prepare(); }
static void spp_atfork_parent(void) { spp_fp_atfork_parent(); spp_cache_atfork_parent(); }
static void spp_atfork_child(void) { spp_fd_owner_reset(); spp_fp_atfork_child(); spp_cache_atfork_child(); }

/* ------------------------------------------------------------------ init */
static volatile bool spp_lazy;         /* not Python yet: look again when objects were added */
static unsigned long long spp_dl_adds; /* dl_iterate_phdr's load count at the last look */
static volatile int spp_rechecking;

static void spp_say(const char *fmt, const char *a, const char *b) {
    char line[SPP_LINE_MAX];
    int k = snprintf(line, sizeof line, fmt, a, b ? b : "");
    if (k > 0) spp_write_stderr(line, (size_t)k < sizeof line ? (size_t)k : sizeof line - 1);
}

static int spp_adds_cb(struct dl_phdr_info *info, size_t size, void *data) {
    if (size >= offsetof(struct dl_phdr_info, dlpi_adds) + sizeof info->dlpi_adds)
        *(unsigned long long *)data = info->dlpi_adds;
    return 1; /* the counter is the same in every entry: one is enough */
}

/* After targeting was decided (state.c): whether the hooks act, and what a
 * user must know, said once and only in a Python process. */
static void spp_apply_targeting(void) {
    spa_targeting t = spp_targeting();
    spp_lazy = t == SPA_TARGET_NOT_PYTHON;
    if (t == SPA_TARGET_ACT && spp_policy_broken())
        spp_say("safepickle: %s; every pickle-bearing file will be refused%s\n", spp_policy_error(), "");
    if (t == SPA_TARGET_ACT && spp_mode_note()[0]) spp_say("safepickle: %s\n", spp_mode_note(), NULL);
    if (t == SPA_TARGET_EXCLUDED)
        spp_say("safepickle: NOT protecting this Python process (%s): its executable name is not in the "
                "policy's targets%s\n", spp_exe(),
                getenv("SAFEPICKLE_TARGETS") && *getenv("SAFEPICKLE_TARGETS") ? " (SAFEPICKLE_TARGETS)" : "");
    spp_active = spp_targeted_process() && spa_policy_layer_on(spp_policy(), SPA_LAYER_FILE);
    if (spp_active) spp_pcache_init(); /* at most once: targeting changes at most once */
}

static void spp_do_init(void) {
    for (int i = 0; i < SPP_H_COUNT; i++) spp_resolve_one(i);
    spp_fd_owner_reset();
    spp_cache_init();
    spp_state_init(); /* exe, argv, policy, targeting (state.c) */
    spp_decide_init();
    spp_audit_init();
    pthread_atfork(spp_atfork_prepare, spp_atfork_parent, spp_atfork_child);
    dl_iterate_phdr(spp_adds_cb, &spp_dl_adds);
    spp_apply_targeting();
}

/* Layer 2 after the policy is loaded (it may call hooked functions), only
 * where we act. */
static void spp_layer2(void) {
    if (!spp_targeted_process()) return;
    spp_depth++;
    spp_pyaudit_init();
    spp_depth--;
}

/* An embedded interpreter may be dlopen'ed after start: at an open in a
 * process not (yet) known to run Python, look again when the loader's count
 * of added objects changed. Returns true when the caller may now act. */
static bool spp_recheck(void) {
    unsigned long long adds = 0;
    dl_iterate_phdr(spp_adds_cb, &adds);
    if (adds == __atomic_load_n(&spp_dl_adds, __ATOMIC_ACQUIRE)) return false;
    int no = 0;
    if (!__atomic_compare_exchange_n(&spp_rechecking, &no, 1, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        return false;
    int saved = errno;
    spp_depth++;
    __atomic_store_n(&spp_dl_adds, adds, __ATOMIC_RELEASE);
    bool found = spp_lazy && spp_detect_python();
    if (found) {
        spp_state_retarget(true);
        spp_apply_targeting();
    }
    spp_depth--;
    if (found) spp_layer2();
    __atomic_store_n(&spp_rechecking, 0, __ATOMIC_RELEASE);
    errno = saved;
    return spp_active && spp_depth == 0;
}

bool spp_enter_open(void) {
    if (spp_enter()) return true;
    if (!spp_lazy || spp_depth > 0 || __atomic_load_n(&spp_init_state, __ATOMIC_ACQUIRE) != 2) return false;
    return spp_recheck();
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
        spp_layer2();
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
