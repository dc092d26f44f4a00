/* opcodes.h - the pickle opcode table (data in opcodes.def): lookup by byte,
 * argument kinds and per-opcode facts used by the VM, the explainer and tests. */
#ifndef SPA_OPCODES_H
#define SPA_OPCODES_H
#include <stdint.h>

typedef enum spa_argkind {
    SPA_ARG_NONE = 0,
    SPA_ARG_U1, SPA_ARG_U2, SPA_ARG_S4, SPA_ARG_U4, SPA_ARG_U8, /* fixed width little-endian */
    SPA_ARG_F8,    /* 8-byte big-endian IEEE double */
    SPA_ARG_LINE,  /* newline-terminated text */
    SPA_ARG_LINE2, /* two newline-terminated lines (module, name) */
    SPA_ARG_CNT1,  /* 1-byte length, then data */
    SPA_ARG_CNT4,  /* unsigned 4-byte length, then data */
    SPA_ARG_CNT4S, /* signed 4-byte length (negative is an error), then data */
    SPA_ARG_CNT8   /* 8-byte length, then data */
} spa_argkind;

enum spa_opbyte {
#define OP(name, byte, kind, argname, proto, before, after) SPA_OP_##name = byte,
#include "opcodes.def"
#undef OP
};

/* Bytes of a fixed-width argument (U1..F8) or of a counted argument's
 * length field (CNT*); 0 for none and for text lines. */
static inline unsigned spa_arg_width(unsigned kind) {
    switch (kind) {
    case SPA_ARG_U1: case SPA_ARG_CNT1: return 1;
    case SPA_ARG_U2: return 2;
    case SPA_ARG_S4: case SPA_ARG_U4: case SPA_ARG_CNT4: case SPA_ARG_CNT4S: return 4;
    case SPA_ARG_U8: case SPA_ARG_F8: case SPA_ARG_CNT8: return 8;
    default: return 0;
    }
}

/* spa_opinfo.stk: the stack effect's shape, derived from the pickletools
 * stack names of opcodes.def at build time (opcodes_stack.awk) */
#define SPA_STK_MARK     0x01u /* pops through the topmost MARK (and the MARK) */
#define SPA_STK_PUSHMARK 0x02u /* pushes a MARK (MARK) */
#define SPA_STK_STR      0x04u /* what it pushes may be a str ("any", "str", "bytes_or_str") */

typedef struct spa_opinfo {
    const char *name;     /* pickletools name, NULL for an unknown byte */
    uint8_t byte;
    uint8_t kind;         /* spa_argkind */
    uint8_t proto;        /* protocol that introduced it */
    const char *argname;  /* pickletools ArgumentDescriptor name or "none" */
    const char *before;   /* stack before, pickletools StackObject names */
    const char *after;    /* stack after */
    /* the same stack effect as numbers: */
    uint8_t pop;          /* values taken from the top (SPA_STK_MARK: from above the MARK) */
    uint8_t below;        /* SPA_STK_MARK: values under the MARK also taken */
    uint8_t push;         /* values left on the stack (a pushed MARK is not counted) */
    uint8_t stk;          /* SPA_STK_* */
} spa_opinfo;

/* byte -> table index + 1, 0 for a byte that is not an opcode */
extern const uint8_t spa_op_index[256];
static inline int spa_op_known(uint8_t byte) { return spa_op_index[byte] != 0; }
/* the table, in opcodes.def order (spa_op_table gives its length) */
extern const spa_opinfo spa_op_tab[];
/* Info for an opcode byte; NULL if CPython's unpickler does not know it. */
static inline const spa_opinfo *spa_op_info(uint8_t byte) {
    unsigned i = spa_op_index[byte];
    return i ? &spa_op_tab[i - 1] : NULL;
}
/* All opcodes in table order; *n receives the count. */
const spa_opinfo *spa_op_table(size_t *n);
#endif
