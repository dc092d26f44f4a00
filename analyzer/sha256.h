/* sha256.h - SHA-256 of memory and of files (owner: sha256.c), for trust
 * entries, the preload's cache and SARIF fingerprints. */
#ifndef SPA_SHA256_H
#define SPA_SHA256_H

#include "spa.h"

typedef struct spa_sha256 {
    uint32_t h[8];
    uint64_t len;
    uint8_t buf[64];
    size_t nbuf;
} spa_sha256;
void spa_sha256_init(spa_sha256 *s);
void spa_sha256_update(spa_sha256 *s, const void *p, size_t n);
void spa_sha256_final(spa_sha256 *s, uint8_t out[32]);
/* Hash a whole file by path; SPA_OK or SPA_E_IO. */
spa_code spa_sha256_file(const char *path, uint8_t out[32], spa_err *err);
/* Parse 64 hex digits; false if malformed. */
bool spa_sha256_parse(const char *hex, uint8_t out[32]);

#endif /* SPA_SHA256_H */
