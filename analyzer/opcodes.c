/* opcodes.c - the opcode table as data (from opcodes.def, stack effects as
 * numbers generated from it) with a byte-indexed lookup built at compile time. */
#include <stddef.h>

#include "opcodes.h"
#include "opcodes_stack.inc" /* SPA_OPSTK_<NAME>: generated from opcodes.def */

const spa_opinfo spa_op_tab[] = {
#define OP(name, byte, kind, argname, proto, before, after) \
    { #name, byte, kind, proto, argname, before, after, SPA_OPSTK_##name },
#include "opcodes.def"
#undef OP
};

enum spa_opidx {
#define OP(name, byte, kind, argname, proto, before, after) SPA_OPI_##name,
#include "opcodes.def"
#undef OP
    SPA_OPI_COUNT
};

/* byte -> table index + 1 (0 = not an opcode) */
const uint8_t spa_op_index[256] = {
#define OP(name, byte, kind, argname, proto, before, after) [byte] = SPA_OPI_##name + 1,
#include "opcodes.def"
#undef OP
};

const spa_opinfo *spa_op_table(size_t *n) {
    *n = SPA_OPI_COUNT;
    return spa_op_tab;
}
