/* output.c - classified results as text lines and JSON fields (scan output and
 * audit records share spa_reason_json), and the rule table from rules.def. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "output.h"

static const spa_rule_info spa_rules[] = {
#define SPA_RULE(id, title, desc, help, sev, tags) { id, title, desc, help, sev, tags },
#include "rules.def"
#undef SPA_RULE
};

const spa_rule_info *spa_rule_find(const char *id) {
    if (!id) return NULL;
    for (size_t i = 0; i < sizeof spa_rules / sizeof spa_rules[0]; i++)
        if (!strcmp(spa_rules[i].id, id)) return &spa_rules[i];
    return NULL;
}

void spa_verdict_text(FILE *f, const spa_result *r, spa_action act) {
    if (!r) return;
    fprintf(f, "verdict: %s  action: %s\n", spa_verdict_name(r->verdict), spa_action_name(act));
    for (size_t i = 0; i < r->n_reasons; i++) {
        const spa_reason *x = &r->reasons[i];
        fprintf(f, "  [%s] %s at %s+%llu: %s\n", spa_verdict_name(x->severity), x->rule,
                x->loc && x->loc[0] ? x->loc : (r->path ? r->path : "?"), (unsigned long long)x->off, x->msg);
    }
}

void spa_verdict_json(cJSON *obj, const spa_result *r, spa_action act) {
    if (!obj || !r) return;
    cJSON_AddStringToObject(obj, "verdict", spa_verdict_name(r->verdict));
    cJSON_AddStringToObject(obj, "action", spa_action_name(act));
    cJSON *a = cJSON_AddArrayToObject(obj, "reasons");
    for (size_t i = 0; a && i < r->n_reasons; i++) {
        cJSON *o = spa_reason_json(&r->reasons[i]);
        if (!o) break;
        cJSON_AddItemToArray(a, o);
    }
}

/* One reason as JSON, the same shape in scan output and audit records. */
cJSON *spa_reason_json(const spa_reason *x) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "severity", spa_verdict_name(x->severity));
    cJSON_AddStringToObject(o, "rule", x->rule ? x->rule : "");
    cJSON_AddStringToObject(o, "msg", x->msg ? x->msg : "");
    cJSON_AddStringToObject(o, "loc", x->loc ? x->loc : "");
    cJSON_AddNumberToObject(o, "off", (double)x->off);
    return o;
}
