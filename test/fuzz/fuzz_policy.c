/* fuzz_policy.c - libFuzzer harness for the JSON policy reader: any input either parses
 * into a policy whose questions can be asked, or fails with an error whose position is
 * inside the input. Never a crash, a leak or a policy on failure. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "spa.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    spa_policy *p = (spa_policy *)1;
    spa_err e = {SPA_OK, NULL, 0};
    spa_code c = spa_policy_parse((const char *)data, size, "fuzz", &p, &e);
    if (c != SPA_OK) {
        if (p != NULL || !e.msg || (e.code == SPA_E_POLICY && e.off > size && size <= (1u << 20))) abort();
        return 0;
    }
    if (!p || !p->name || !p->source) abort();
    (void)spa_policy_global_rule(p, "os", "system");
    (void)spa_policy_global_rule(p, "torch._utils", "_rebuild_tensor_v2");
    (void)spa_policy_trusts_path(p, "/models/a.pt");
    uint8_t d[32] = {0};
    (void)spa_policy_trusts_digest(p, d);
    const char *rule;
    char msg[128];
    (void)spa_judge_global(p, "builtins", "getattr", &rule, msg, sizeof msg);
    spa_result r;
    memset(&r, 0, sizeof r);
    r.classified = true;
    for (int v = 0; v < SPA_VERDICT_COUNT; v++) {
        r.verdict = (spa_verdict)v;
        if (spa_policy_decide(p, &r) > SPA_ACT_BLOCK) abort();
    }
    spa_policy_free(p);
    return 0;
}
