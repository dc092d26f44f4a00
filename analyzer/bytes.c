/* bytes.c - strict UTF-8 (see bytes.h): the one definition the reports, the JSON
 * writer and the sniffer share. The VM's own check differs on purpose: it follows
 * CPython's "surrogatepass" decoding of pickle strings. */
#include <stdlib.h>
#include <string.h>

#include "bytes.h"

size_t spa_utf8_seq(const uint8_t *p, size_t n) {
    uint8_t c = p[0];
    size_t len = c < 0x80 ? 1 : (c >= 0xc2 && c <= 0xdf) ? 2 : (c >= 0xe0 && c <= 0xef) ? 3 :
                 (c >= 0xf0 && c <= 0xf4) ? 4 : 0;
    if (len == 0 || len > n) return 0;
    for (size_t k = 1; k < len; k++)
        if ((p[k] & 0xc0) != 0x80) return 0;
    if (len == 3 && c == 0xe0 && p[1] < 0xa0) return 0;   /* overlong */
    if (len == 3 && c == 0xed && p[1] >= 0xa0) return 0;  /* surrogate */
    if (len == 4 && c == 0xf0 && p[1] < 0x90) return 0;   /* overlong */
    if (len == 4 && c == 0xf4 && p[1] >= 0x90) return 0;  /* above U+10FFFF */
    return len;
}

bool spa_utf8_valid(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n;) {
        size_t l = spa_utf8_seq(p + i, n - i);
        if (!l) return false;
        i += l;
    }
    return true;
}

char *spa_utf8_sanitize(const uint8_t *p, size_t n) {
    char *o = malloc(n * 3 + 1);
    if (!o) return NULL;
    size_t j = 0;
    for (size_t i = 0; i < n;) {
        size_t l = spa_utf8_seq(p + i, n - i);
        if (!l) { memcpy(o + j, "\xef\xbf\xbd", 3); j += 3; i++; continue; }
        memcpy(o + j, p + i, l);
        j += l;
        i += l;
    }
    o[j] = '\0';
    return o;
}
