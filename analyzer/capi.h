/* capi.h - the analyzer's flat C ABI for callers that cannot use the C structs
 * (the Python package over ctypes). Every function returns a malloc'ed strict
 * UTF-8 JSON document (free it with spa_capi_free), never NULL except on OOM.
 * The document is one file entry of `scan --format json` (scan.schema.json,
 * definitions/file) or {"error": {"code", "msg"}} when the input or the policy
 * cannot be used. These are the only spa_ symbols libspa.so exports. */
#ifndef SPA_CAPI_H
#define SPA_CAPI_H
#include <stddef.h>
#include <stdint.h>

#define SPA_CAPI __attribute__((visibility("default")))

/* Judge n bytes as the content of a file named name (NULL: "<bytes>").
 * policy: NULL for the embedded default, or a policy file path. */
SPA_CAPI char *spa_capi_judge(const uint8_t *p, size_t n, const char *name, const char *policy);
/* Scan and judge the file at path. */
SPA_CAPI char *spa_capi_scan(const char *path, const char *policy);
/* The analyzer's version string (static). */
SPA_CAPI const char *spa_capi_version(void);
SPA_CAPI void spa_capi_free(char *s);
#endif
