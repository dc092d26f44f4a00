/* output.h - classified results for people and machines (output.c, sarif.c):
 * the verdict as text lines and JSON fields, SARIF 2.1.0 for code scanning, and
 * the rule table (rules.def) both read. Every JSON document is printed through
 * jsonout.h so that it is strict UTF-8. */
#ifndef SPA_OUTPUT_H
#define SPA_OUTPUT_H
#include <stdio.h>
#include "spa.h"

struct cJSON;

/* One rule of rules.def; NULL for an id that has none (test_rules.py makes sure
 * no id the analyzer produces is in that case). */
typedef struct spa_rule_info {
    const char *id, *title, *description, *help, *security_severity, *tags;
} spa_rule_info;
const spa_rule_info *spa_rule_find(const char *id);

/* Text lines / JSON fields (verdict, action, reasons) for one classified result. */
void spa_verdict_text(FILE *f, const spa_result *r, spa_action act);
void spa_verdict_json(struct cJSON *obj, const spa_result *r, spa_action act);

/* SARIF 2.1.0. spa_sarif_new starts a log whose relative URIs resolve against
 * base_dir (an absolute directory, normally the working directory; NULL: only
 * absolute file:// URIs are written). spa_sarif_add adds one result per
 * non-safe reason; spa_sarif_add_error records a file that could not be read
 * (a tool execution notification; executionSuccessful becomes false). */
struct cJSON *spa_sarif_new(const char *base_dir);
void spa_sarif_add(struct cJSON *log, const char *path, const spa_result *r, spa_action act);
void spa_sarif_add_error(struct cJSON *log, const char *path, const spa_err *err);
/* The URI SARIF uses for path: percent-encoded (RFC 3986: everything but
 * unreserved characters and '/'), file:// for absolute paths. into buf; returns
 * false when it does not fit. */
bool spa_sarif_uri(const char *path, char *buf, size_t n);
#endif
