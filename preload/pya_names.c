/* pya_names.c - layer 2: pickle.find_class(module, name) judged with the
 * analyzer's knowledge base and policy (spa_judge_global), cached per name. */
#include "pya.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ================================================================ judge cache */
/* spa_judge_global walks the knowledge base; a model resolves the same few
 * globals over and over (once per GLOBAL opcode without memo), so verdicts are
 * cached by (module, name) for the life of the process (the policy does not
 * change). Two ways per set with a promotion rule, so a flood of one-off names
 * cannot evict the hot ones: a new name enters the set's probation way; a name
 * found again moves to the protected way (the former protected entry drops to
 * probation). One-off names only ever replace each other in probation. The
 * mutex is uncontended under the GIL and keeps free-threaded builds correct. */
#define SPP_PYA_JCACHE_SETS 1024 /* power of two; 2 ways each */
#define SPP_PYA_JKEY_MAX 160      /* longer module+name pairs are not cached */

typedef struct pya_jslot {
    char key[SPP_PYA_JKEY_MAX]; /* module '\0' name '\0', key[0] == 0: empty */
    uint8_t verdict;            /* spa_verdict */
    uint8_t watched;            /* stdlib_other without a deny rule (see find_class) */
} pya_jslot;

typedef struct pya_jset { pya_jslot way[2]; } pya_jset; /* way[0] protected, way[1] probation */

static pya_jset pya_jcache[SPP_PYA_JCACHE_SETS];
static pthread_mutex_t pya_jlock = PTHREAD_MUTEX_INITIALIZER;
/* No pthread_atfork handlers, unlike the preload's other locks: this one is
 * taken only inside an audit hook, with the GIL held, and a child forked while
 * another thread held the GIL cannot run Python again (the GIL itself is
 * the lock it inherits held), so it never reaches this lock. */

static bool pya_jkey(const char *module, const char *name, char *key, size_t *klen, uint32_t *h) {
    size_t a = strlen(module), b = strlen(name);
    if (a == 0 || a + b + 2 > SPP_PYA_JKEY_MAX) return false; /* empty slots are all zero */
    memcpy(key, module, a + 1);
    memcpy(key + a + 1, name, b + 1);
    *klen = a + b + 2;
    uint32_t x = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < *klen; i++) x = (x ^ (uint8_t)key[i]) * 16777619u;
    *h = x;
    return true;
}

/* Look up under the lock; a hit in probation is promoted. */
static bool pya_jget(pya_jset *set, const char *key, size_t klen, spa_verdict *v, bool *watched) {
    for (int w = 0; w < 2; w++) {
        pya_jslot *s = &set->way[w];
        if (memcmp(s->key, key, klen) != 0) continue;
        *v = (spa_verdict)s->verdict;
        *watched = s->watched;
        if (w == 1) {
            pya_jslot t = set->way[0];
            set->way[0] = *s;
            set->way[1] = t;
        }
        return true;
    }
    return false;
}

/* The knowledge base's judgement of a name runs on the preload's own stack
 * (spp_on_altstack), as the bytes' scan does: glibc's fnmatch in the KB's verb
 * patterns alone can need more than a 32 KiB host thread has left. */
typedef struct pya_jarg {
    const spa_policy *p;
    const char *module, *name;
    const char **rule;
    char *msg;
    size_t msgn;
    bool want_watched;
    spa_verdict v;
    bool watched;
} pya_jarg;

static void pya_judge_alt(void *arg) {
    pya_jarg *a = arg;
    a->v = spa_judge_global(a->p, a->module, a->name, a->rule, a->msg, a->msgn);
    a->watched = a->want_watched && a->v == SPA_VERDICT_MALICIOUS && !strchr(a->name, '.') &&
                 spa_kb_lookup(a->module, a->name) == SPA_KB_STDLIB_OTHER &&
                 spa_policy_global_rule(a->p, a->module, a->name) != -1;
}

/* spa_judge_global on the preload's stack; *watched (optional): only "watched". */
static spa_verdict pya_judge_global(const spa_policy *p, const char *module, const char *name,
                                    const char **rule, char *msg, size_t msgn, bool *watched) {
    pya_jarg a = {p, module, name, rule, msg, msgn, watched != NULL, SPA_VERDICT_MALICIOUS, false};
    spp_on_altstack(pya_judge_alt, &a);
    if (watched) *watched = a.watched;
    return a.v;
}

/* The verdict on a name, and whether it is only "watched" (stdlib_other). */
static spa_verdict pya_judge(const spa_policy *p, const char *module, const char *name,
                             bool *watched) {
    char key[SPP_PYA_JKEY_MAX];
    size_t klen;
    uint32_t h;
    bool cacheable = pya_jkey(module, name, key, &klen, &h);
    pya_jset *set = cacheable ? &pya_jcache[h & (SPP_PYA_JCACHE_SETS - 1)] : NULL;
    if (set) {
        spa_verdict v;
        pthread_mutex_lock(&pya_jlock);
        bool hit = pya_jget(set, key, klen, &v, watched);
        pthread_mutex_unlock(&pya_jlock);
        if (hit) return v;
    }
    const char *rule = NULL;
    char msg[8];
    spa_verdict v = pya_judge_global(p, module, name, &rule, msg, sizeof msg, watched);
    if (set) {
        pthread_mutex_lock(&pya_jlock);
        pya_jslot *slot = set->way[0].key[0] ? &set->way[1] : &set->way[0]; /* new names: probation */
        memcpy(slot->key, key, klen);
        slot->verdict = (uint8_t)v;
        slot->watched = *watched;
        pthread_mutex_unlock(&pya_jlock);
    }
    return v;
}

/* ================================================================ find_class */
/* Which verdicts are enforced on a name alone (runtime sees no arguments and
 * cannot tell a reference from a call):
 *  - MALICIOUS takes the policy's action for that verdict: process, code
 *    execution, network, file writes, native code, imports, state mutation,
 *    explicit deny rules, dotted paths through any of them. Even a mere
 *    reference is refused: a reference can be called after the load, e.g.
 *    functools.partial(os.system, cmd) kept in a checkpoint's callbacks.
 *  - except stdlib_other (a stdlib callable outside the data-safe set, e.g.
 *    math.sqrt), which the knowledge base calls malicious only when called
 *    with attacker arguments: while the behaviour veto watches this unpickle,
 *    its resolution passes (threats.md D: a reference to a function loads)
 *    and what the call does is judged by its audit events.
 *  - SUSPICIOUS (reflection such as builtins.getattr for bound methods,
 *    functools.partial, unknown functions) and SAFE pass: a strict policy
 *    blocks those in layer 1, where the arguments are visible.
 *  - unknown classes (user code) pass. */
int pya_on_find_class(const spa_policy *p, spp_pyobj *args) {
    char module[SPP_PYA_NAME_MAX], name[SPP_PYA_NAME_MAX];
    bool exact_m, exact_n;
    if (!pya_utf8x(pya_arg(args, 0), module, sizeof module, &exact_m) ||
        !pya_utf8x(pya_arg(args, 1), name, sizeof name, &exact_n))
        return 0; /* the unpickler itself rejects non-str names */
    /* A refusal another process reports (a Pool, loky or dask worker) pickles
     * by reference: the class resolves here even before our first refusal. */
    if (!strcmp(module, "safepickle") && !strcmp(name, "SafePickleBlocked")) (void)pya_exception();
    if (p->runtime_behaviour) {
        pya_scope_enter();
        pya_scope_note_module(module);
        if (pya_t.ipc) return 0;
    } else {
        spp_pyobj *a = pya_find_anchor();
        bool ipc = a && pya_is_ipc_anchor(a);
        if (a) py_Py_DecRef(a);
        if (ipc) return 0;
    }
    /* The bytes of this load were judged (pya_bytes.c) and allowed: every
     * global was judged there with its arguments, by the same knowledge base. */
    if (spp_l2.in_load && (spp_l2.verdict == SPA_VERDICT_SAFE || spp_l2.verdict == SPA_VERDICT_SUSPICIOUS))
        return 0;
    pya_t.unbound = false;
    pya_trust_bind(module, name, exact_m && exact_n);
    if (!exact_m || !exact_n) {
        /* Longer than SPP_PYA_NAME_MAX or holding control characters: what we
         * could judge is not what the unpickler resolves. A limit is a
         * verdict: the policy's on_limit action (block by default). */
        spa_action act = spa_policy_act(p, p->on_limit);
        if (act == SPA_ACT_ALLOW) return 0;
        char what[2 * SPP_PYA_NAME_MAX + 32], msg[128];
        snprintf(what, sizeof what, "pickle global %s.%s", module, name);
        snprintf(msg, sizeof msg, "global name longer than %d bytes or with control characters: not judgeable",
                 SPP_PYA_NAME_MAX - 1);
        return pya_decide(act, SPA_VERDICT_UNSCANNABLE, what, "pickle.find_class", NULL, "runtime.limit", msg,
                             pya_scope_trusted());
    }
    bool watched;
    spa_verdict v = pya_judge(p, module, name, &watched);
    if (v != SPA_VERDICT_MALICIOUS) return 0;
    if (watched && p->runtime_behaviour && pya_t.anchor)
        return 0; /* its effects meet the behaviour veto */
    spa_action act = spa_policy_act(p, p->on_verdict[v]);
    bool trusted = pya_scope_trusted();
    if (act == SPA_ACT_ALLOW && !trusted) return 0;
    const char *rule = NULL; /* judged again for the message: blocks are rare */
    char msg[256];
    msg[0] = 0;
    pya_judge_global(p, module, name, &rule, msg, sizeof msg, NULL);
    char what[2 * SPP_PYA_NAME_MAX + 32];
    snprintf(what, sizeof what, "pickle global %s.%s", module, name);
    return pya_decide(act, v, what, "pickle.find_class", NULL, rule ? rule : "runtime.global",
                         msg, trusted);
}

