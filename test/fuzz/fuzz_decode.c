/* fuzz_decode.c - libFuzzer harness for the text decoders (analyzer/decode.c). The
 * first byte picks the decoder (base64 standard, urlsafe, altchars; unhexlify, fromhex;
 * latin-1); the rest is the text. Checks that the returned length does not depend on
 * the output capacity and that a small buffer holds the same prefix as a large one. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "decode.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t fd_run(unsigned which, const uint8_t *p, size_t n, uint8_t *out, size_t cap) {
    switch (which % 6) {
    case 0: return spa_dec_b64(p, n, out, cap, NULL, NULL);
    case 1: return spa_dec_b64(p, n, out, cap, "-_", NULL);
    case 2: return spa_dec_b64(p, n, out, cap, ".,", NULL);
    case 3: return spa_dec_hex(p, n, out, cap, false);
    case 4: return spa_dec_hex(p, n, out, cap, true);
    default: return spa_dec_latin1(p, n, out, cap);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    uint8_t *big = malloc(n + 1), small[7];
    if (!big) return 0;
    size_t a = fd_run(data[0], p, n, big, n + 1);
    size_t b = fd_run(data[0], p, n, small, sizeof small);
    if (a != b) abort();
    if (a != SPA_DEC_FAIL && (a > n || memcmp(big, small, a < sizeof small ? a : sizeof small))) abort();
    free(big);
    return 0;
}
