/* fuzz_elf.c - libFuzzer harness for spa_elf_defines_python (analyzer/pyexe.c):
 * any bytes, never a read outside them. */
#include <stdint.h>
#include <stddef.h>

#include "spa.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    (void)spa_elf_defines_python(data, size);
    return 0;
}
