/* pyexe.c - does an ELF file define one of CPython's embedding symbols in its
 * dynamic symbol table (spa_python_symbols)? Used by `doctor --pid` to tell a
 * renamed or embedding interpreter from another program without running it
 * (the preload asks the dynamic loader instead, init.c). Reads only inside
 * (p, n); ELF64 little-endian only; anything malformed is "no". */
#include <string.h>

#include "spa.h"

#define PX_SHT_DYNSYM 11u
#define PX_EHDR 64u  /* ELF64 header */
#define PX_SHDR 64u  /* ELF64 section header */
#define PX_SYM 24u   /* ELF64 symbol */

static uint64_t px_le(const uint8_t *p, int w) {
    uint64_t v = 0;
    for (int i = w - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* The bytes [off, off+len) when they lie inside the file, else NULL. */
static const uint8_t *px_at(const uint8_t *p, size_t n, uint64_t off, uint64_t len) {
    if (off > n || len > n - off) return NULL;
    return p + off;
}

static bool px_is_python_sym(const uint8_t *str, uint64_t strsz, uint64_t name) {
    if (name >= strsz) return false;
    const char *s = (const char *)str + name;
    size_t max = (size_t)(strsz - name);
    for (const char *const *w = spa_python_symbols; *w; w++) {
        size_t l = strlen(*w);
        if (l < max && !memcmp(s, *w, l) && s[l] == '\0') return true;
    }
    return false;
}

bool spa_elf_defines_python(const uint8_t *p, size_t n) {
    if (!p || n < PX_EHDR || memcmp(p, "\177ELF", 4) || p[4] != 2 || p[5] != 1) return false;
    uint64_t shoff = px_le(p + 0x28, 8), shentsize = px_le(p + 0x3A, 2), shnum = px_le(p + 0x3C, 2);
    if (shentsize < PX_SHDR || !shnum) return false;
    const uint8_t *sh = px_at(p, n, shoff, shentsize * shnum);
    if (!sh) return false;
    for (uint64_t i = 0; i < shnum; i++) {
        const uint8_t *s = sh + i * shentsize;
        if (px_le(s + 4, 4) != PX_SHT_DYNSYM) continue;
        uint64_t off = px_le(s + 0x18, 8), size = px_le(s + 0x20, 8), link = px_le(s + 0x28, 4);
        uint64_t ent = px_le(s + 0x38, 8);
        if (link >= shnum || ent < PX_SYM) continue;
        const uint8_t *ls = sh + link * shentsize;
        uint64_t stroff = px_le(ls + 0x18, 8), strsz = px_le(ls + 0x20, 8);
        const uint8_t *syms = px_at(p, n, off, size), *str = px_at(p, n, stroff, strsz);
        if (!syms || !str) continue;
        for (uint64_t k = 0; k + ent <= size; k += ent) {
            const uint8_t *y = syms + k;
            if (px_le(y + 6, 2) == 0) continue; /* undefined: an import, not an interpreter */
            if (px_is_python_sym(str, strsz, px_le(y, 4))) return true;
        }
    }
    return false;
}
