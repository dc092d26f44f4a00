/* pya_trust.c - layer 2: trust inherited from a file layer 1 allowed because
 * the policy trusts it, bound to that file's own globals. */
#include "pya.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Is the current unpickle fed from a trusted file? With a scope: its flag,
 * dropped for good once non-trusted pickle-bearing bytes were read on this
 * thread since it opened (a nested load of another file). Without a scope
 * (runtime_behaviour off, or no Python frame): a still-valid pending trusted
 * source, not consumed. */
bool pya_scope_trusted(void) {
    pya_tls *t = &pya_t;
    if (!t->anchor) return !spp_feed.scope && !t->unbound && spp_feed_peek();
    if (t->trusted && spp_feed.taint) t->trusted = false;
    return t->trusted;
}

/* Trust is bound to content: a trusted unpickle may resolve only globals the
 * trusted file's own pickles import (kept when its scan was judged). Any other
 * global means these bytes are not that file's, and the scope's trust ends
 * for good (without a scope, this find_class is judged as untrusted). Where
 * the file's names are not known (spp_trust_check -1) trust is not bound. */
void pya_trust_bind(const char *module, const char *name, bool exact) {
    pya_tls *t = &pya_t;
    if (!pya_scope_trusted()) return;
    uint64_t ident = t->anchor ? t->trust_ident : (spp_feed.ent & ~SPP_FD_TAGS);
    int c = spp_trust_check(ident, module, name);
    if (c == 1 && !exact) c = 0; /* a name we had to cut is not one the file imports */
    if (c != 0) return;
    if (t->anchor) t->trusted = false;
    else t->unbound = true;
}

