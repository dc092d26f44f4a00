/* bytes.h - the analyzer's byte helpers, in one place: little-endian readers and
 * strict UTF-8. Readers over a cursor are in reader.h; these work on a pointer
 * the caller has already bounds-checked. */
#ifndef SPA_BYTES_H
#define SPA_BYTES_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

static inline uint16_t spa_le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t spa_le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t spa_le64(const uint8_t *p) { return spa_le32(p) | (uint64_t)spa_le32(p + 4) << 32; }
/* Little-endian unsigned of n (0..8) bytes. */
static inline uint64_t spa_le_n(const uint8_t *p, unsigned n) {
    uint64_t x = 0;
    while (n--) x = x << 8 | p[n];
    return x;
}

/* Length of the strict UTF-8 sequence starting at p[0..n) (no overlongs, no
 * surrogates, nothing above U+10FFFF), or 0 if none starts there. n > 0. */
size_t spa_utf8_seq(const uint8_t *p, size_t n);
/* Is all of p[0..n) strict UTF-8? */
bool spa_utf8_valid(const uint8_t *p, size_t n);
/* A malloc'ed NUL-terminated strict UTF-8 copy of p[0..n): each byte that does not
 * start a valid sequence becomes U+FFFD. The caller frees it. NULL on OOM. */
char *spa_utf8_sanitize(const uint8_t *p, size_t n);
#endif
