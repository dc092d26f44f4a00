/* report.h - output of scan results: the stable JSON shape (cJSON), the text
 * listing of streams and IR, and the explain pseudo-Python listing. */
#ifndef SPA_REPORT_H
#define SPA_REPORT_H
#include <stdio.h>
#include <cjson/cJSON.h>
#include "spa.h"

/* One file's result as a JSON object (documented in README, section
 * analyzer). The caller owns the tree (cJSON_Delete). NULL on OOM. */
cJSON *spa_report_json(const spa_result *r);
/* Human-readable listing of one file's streams and IR. */
void spa_report_text(FILE *f, const spa_result *r);
/* Decompiler-like pseudo-Python of what loading the file would do. */
void spa_explain(FILE *f, const spa_result *r);
/* Name of an opcode byte ("REDUCE"), "?" if unknown. */
const char *spa_opname(uint8_t op);
#endif
