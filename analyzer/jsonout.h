/* jsonout.h - every JSON document safepickle writes (scan --format json/sarif,
 * audit records) goes through here, so that it is always strict UTF-8. */
#ifndef SPA_JSONOUT_H
#define SPA_JSONOUT_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cjson/cJSON.h>

/* Make every string in the tree strict UTF-8, losslessly: a string value that is
 * not valid UTF-8 has each offending byte replaced by U+FFFD and, when it is an
 * object member and raw_siblings is true, its exact bytes are added beside it as
 * "<key>_hex" (lowercase hex). Keys are ours and always ASCII. Returns the number
 * of strings repaired (0 for a clean tree). */
size_t spa_json_make_utf8(cJSON *root, bool raw_siblings);

/* The tree repaired as above and printed (formatted or not). The caller frees
 * the result with free(); NULL on OOM. */
char *spa_json_print(cJSON *root, bool formatted, bool raw_siblings);
#endif
