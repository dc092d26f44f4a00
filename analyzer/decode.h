/* decode.h - the text decoders of the analyzer, one owner for the nested-pickle reader
 * (nested.c: which constants may encode a pickle) and the classifier (classify.c: what a
 * decoder call in a pickle hands to a loader). Each decodes as the Python function it
 * names does (Python 3.11), stores at most cap bytes in out, and returns the length the
 * whole decoding produces (so a caller may decode a prefix into a small buffer), or
 * SPA_DEC_FAIL where Python raises. Owner: decode.c. */
#ifndef SPA_DECODE_H
#define SPA_DECODE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SPA_DEC_FAIL SIZE_MAX

/* base64.b64decode(s, altchars) with validate=False (binascii.a2b_base64, not strict):
 * bytes outside the alphabet are discarded, decoding ends at completed padding. alt:
 * NULL for the standard alphabet, or the two altchars ("-_": urlsafe_b64decode), which
 * decode as '+' and '/' do, while '+' and '/' keep decoding as themselves. Never fails:
 * where Python would raise on the leftover bits ("Incorrect padding"), the bytes decoded
 * so far are returned (*digits, if not NULL, counts the alphabet characters decoded). */
size_t spa_dec_b64(const uint8_t *in, size_t n, uint8_t *out, size_t cap, const char *alt, size_t *digits);
/* The base64 digit of c in the urlsafe-or-standard alphabet, or -1. */
int spa_dec_b64_digit(uint8_t c);
/* At most one byte in 8 outside the urlsafe-or-standard alphabet and its padding and
 * white space (junk that b64decode discards), so prose is not taken for base64. */
bool spa_dec_mostly_b64(const uint8_t *p, size_t n);

/* bytes.fromhex(s) (ws: ASCII white space between byte pairs is skipped) or
 * binascii.unhexlify(s) (ws false: hex digits only, an even number of them). */
size_t spa_dec_hex(const uint8_t *in, size_t n, uint8_t *out, size_t cap, bool ws);
/* The value of hex digit c, or -1. */
int spa_dec_hex_digit(uint8_t c);
/* Is every byte a hex digit or ASCII white space? */
bool spa_dec_hexlike(const uint8_t *p, size_t n);

/* codecs.encode(s, 'latin1') of the str whose UTF-8 is in[0..n): every code point must
 * be below 256 (SPA_DEC_FAIL otherwise, and for malformed UTF-8). */
size_t spa_dec_latin1(const uint8_t *in, size_t n, uint8_t *out, size_t cap);
#endif /* SPA_DECODE_H */
