/* dechelper.c - test helper for test_decode.py: decodes each input line with the
 * analyzer's decoders (analyzer/decode.c) and prints the result, so the test can
 * compare them with Python's own decoders. A line is "KIND HEX" (KIND: b64, b64url,
 * b64alt:XY with two altchars in hex, hex, fromhex, latin1; HEX: the input in hex); the
 * answer is the output in hex, "-" for empty, or FAIL. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decode.h"

static size_t unhex(const char *s, uint8_t *out) {
    size_t n = 0;
    for (; s[0] && s[1] && s[0] != '\n'; s += 2) {
        unsigned v;
        if (sscanf(s, "%2x", &v) != 1) break;
        out[n++] = (uint8_t)v;
    }
    return n;
}

int main(void) {
    static char line[1 << 16];
    static uint8_t in[1 << 15], out[1 << 15];
    while (fgets(line, sizeof line, stdin)) {
        char *sp = strchr(line, ' ');
        if (!sp) { puts("FAIL"); continue; }
        *sp = '\0';
        size_t n = unhex(sp + 1, in), k;
        char alt[2];
        if (!strcmp(line, "b64")) k = spa_dec_b64(in, n, out, sizeof out, NULL, NULL);
        else if (!strcmp(line, "b64url")) k = spa_dec_b64(in, n, out, sizeof out, "-_", NULL);
        else if (!strncmp(line, "b64alt:", 7) && unhex(line + 7, (uint8_t *)alt) == 2)
            k = spa_dec_b64(in, n, out, sizeof out, alt, NULL);
        else if (!strcmp(line, "hex")) k = spa_dec_hex(in, n, out, sizeof out, false);
        else if (!strcmp(line, "fromhex")) k = spa_dec_hex(in, n, out, sizeof out, true);
        else if (!strcmp(line, "latin1")) k = spa_dec_latin1(in, n, out, sizeof out);
        else k = SPA_DEC_FAIL;
        if (k == SPA_DEC_FAIL) { puts("FAIL"); continue; }
        if (!k) { puts("-"); continue; }
        for (size_t i = 0; i < k && i < sizeof out; i++) printf("%02x", out[i]);
        putchar('\n');
    }
    return 0;
}
