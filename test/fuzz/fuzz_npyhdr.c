/* fuzz_npyhdr.c - libFuzzer harness for the npy header lexer (spc_npy_header_kind),
 * which reads numpy's header dict as ast.literal_eval and numpy.dtype() would. Beyond
 * memory safety (an exact-size copy: ASan sees a one-byte overread) it checks:
 * "numeric" (the data is never read) is never said of a header with an escape, and
 * trailing whitespace (which literal_eval ignores) never changes the answer. */
#include <stdlib.h>
#include <string.h>

#include "containers.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An escape could spell an object type ('\\x4f'): a header called numeric
 * has none. (An 'O' elsewhere than in the descr value does not count: numpy
 * refuses a header with other keys or with names literal_eval does not read.) */
static void check_numeric(const uint8_t *h, size_t n) {
    if (memchr(h, '\\', n)) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *h = malloc(size + 2);
    if (!h) return 0;
    if (size) memcpy(h, data, size); /* an exact-size copy: ASan sees an overread */
    int k = spc_npy_header_kind(h, size);
    if (k != SPC_NPY_NUMERIC && k != SPC_NPY_OBJECT && k != SPC_NPY_UNKNOWN) abort();
    if (k == SPC_NPY_NUMERIC) check_numeric(h, size);
    h[size] = ' ';
    h[size + 1] = '\n';
    bool open_str = false; /* inside an unterminated string, the padding is part of it */
    for (size_t i = 0; i < size; i++) if (h[i] == '\'' || h[i] == '"') open_str = !open_str;
    if (!open_str && spc_npy_header_kind(h, size + 2) != k) abort();
    free(h);
    return 0;
}
