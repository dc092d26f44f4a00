/* decode.c - base64, hex and latin-1 decoding as Python's own decoders do it, shared by
 * the nested-pickle reader and the classifier (decode.h). Character classes are data. */
#include "decode.h"

/* ------------------------------------------------------------------ classes */
/* 1 + the digit's value in the urlsafe-or-standard base64 alphabet, 0 otherwise. */
static const uint8_t dec_b64_tab[256] = {
    ['A'] = 1, ['B'] = 2, ['C'] = 3, ['D'] = 4, ['E'] = 5, ['F'] = 6, ['G'] = 7, ['H'] = 8,
    ['I'] = 9, ['J'] = 10, ['K'] = 11, ['L'] = 12, ['M'] = 13, ['N'] = 14, ['O'] = 15, ['P'] = 16,
    ['Q'] = 17, ['R'] = 18, ['S'] = 19, ['T'] = 20, ['U'] = 21, ['V'] = 22, ['W'] = 23, ['X'] = 24,
    ['Y'] = 25, ['Z'] = 26, ['a'] = 27, ['b'] = 28, ['c'] = 29, ['d'] = 30, ['e'] = 31, ['f'] = 32,
    ['g'] = 33, ['h'] = 34, ['i'] = 35, ['j'] = 36, ['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40,
    ['o'] = 41, ['p'] = 42, ['q'] = 43, ['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47, ['v'] = 48,
    ['w'] = 49, ['x'] = 50, ['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54, ['2'] = 55, ['3'] = 56,
    ['4'] = 57, ['5'] = 58, ['6'] = 59, ['7'] = 60, ['8'] = 61, ['9'] = 62, ['+'] = 63, ['/'] = 64,
    ['-'] = 63, ['_'] = 64,
};
/* 1 + the hex digit's value, 0 otherwise. */
static const uint8_t dec_hex_tab[256] = {
    ['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5, ['5'] = 6, ['6'] = 7, ['7'] = 8,
    ['8'] = 9, ['9'] = 10, ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16,
    ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16,
};

/* Python's Py_ISSPACE on ASCII. */
static bool dec_space(uint8_t c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

int spa_dec_b64_digit(uint8_t c) { return dec_b64_tab[c] ? dec_b64_tab[c] - 1 : -1; }
int spa_dec_hex_digit(uint8_t c) { return dec_hex_tab[c] ? dec_hex_tab[c] - 1 : -1; }

bool spa_dec_mostly_b64(const uint8_t *p, size_t n) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        if (!dec_b64_tab[p[i]] && p[i] != '=' && !dec_space(p[i]) && ++bad > n / 8) return false;
    return true;
}

bool spa_dec_hexlike(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!dec_hex_tab[p[i]] && !dec_space(p[i])) return false;
    return true;
}

/* ------------------------------------------------------------------ base64 */
/* binascii.a2b_base64 (strict_mode=False), CPython 3.11: a '=' counts towards ending
 * the quad only once two digits of it are in (quad_pos >= 2), a digit resets the count,
 * and quad_pos + pads >= 4 ends the input; everything outside the alphabet is skipped. */
size_t spa_dec_b64(const uint8_t *in, size_t n, uint8_t *out, size_t cap, const char *alt, size_t *digits) {
    uint32_t acc = 0;
    unsigned quad = 0, pads = 0;
    size_t o = 0, sig = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = in[i];
        int v;
        if (alt && c == (uint8_t)alt[0]) v = 62;
        else if (alt && c == (uint8_t)alt[1]) v = 63;
        else if (c == '=') {
            if (quad >= 2 && quad + ++pads >= 4) break;
            continue;
        } else if (c == '-' || c == '_' || !dec_b64_tab[c]) continue; /* not in the standard alphabet */
        else v = dec_b64_tab[c] - 1;
        pads = 0;
        sig++;
        acc = (acc << 6) | (uint32_t)v;
        if (quad++ == 0) continue;
        /* quads 1, 2, 3 each complete a byte: the top 8 of the 12, 18, 24 bits held */
        unsigned shift = quad == 2 ? 4 : quad == 3 ? 2 : 0;
        if (o < cap) out[o] = (uint8_t)(acc >> shift);
        o++;
        acc &= (1u << shift) - 1;
        quad &= 3;
    }
    if (digits) *digits = sig;
    return o;
}

/* ------------------------------------------------------------------ hex */
size_t spa_dec_hex(const uint8_t *in, size_t n, uint8_t *out, size_t cap, bool ws) {
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        if (ws && dec_space(in[i])) { i++; continue; }
        if (i + 1 >= n || !dec_hex_tab[in[i]] || !dec_hex_tab[in[i + 1]]) return SPA_DEC_FAIL;
        if (o < cap) out[o] = (uint8_t)((dec_hex_tab[in[i]] - 1) << 4 | (dec_hex_tab[in[i + 1]] - 1));
        o++;
        i += 2;
    }
    return o;
}

/* ------------------------------------------------------------------ latin-1 */
size_t spa_dec_latin1(const uint8_t *in, size_t n, uint8_t *out, size_t cap) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = in[i], b;
        if (c < 0x80) b = c;
        else if ((c == 0xc2 || c == 0xc3) && i + 1 < n && (in[i + 1] & 0xc0) == 0x80) {
            b = (uint8_t)(((c & 0x03) << 6) | (in[i + 1] & 0x3f));
            i++;
        } else {
            return SPA_DEC_FAIL; /* a code point >= 256 (or not UTF-8): the encoding raises */
        }
        if (o < cap) out[o] = b;
        o++;
    }
    return o;
}
