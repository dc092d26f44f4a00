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

typedef struct spa_opinfo {
    const char *name;     /* pickletools name, NULL for an unknown byte */
    uint8_t byte;
    uint8_t kind;         /* spa_argkind */
    uint8_t proto;        /* protocol that introduced it */
    const char *argname;  /* pickletools ArgumentDescriptor name or "none" */
    const char *before;   /* stack before, pickletools StackObject names */
    const char *after;    /* stack after */
} spa_opinfo;

/* byte -> table index + 1, 0 for a byte that is not an opcode */
extern const uint8_t spa_op_index[256];
static inline int spa_op_known(uint8_t byte) { return spa_op_index[byte] != 0; }
/* Info for an opcode byte; NULL if CPython's unpickler does not know it. */
const spa_opinfo *spa_op_info(uint8_t byte);
/* All opcodes in table order; *n receives the count. */
const spa_opinfo *spa_op_table(size_t *n);
#endif
