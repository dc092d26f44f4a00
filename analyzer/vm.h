/* vm.h - facts about the VM's values and IR shared by vm.c, ir.c, report.c,
 * explain.c and the classifier: IR entry flags, internal value flags and
 * value rendering. */
#ifndef SPA_VM_H
#define SPA_VM_H
#include <stddef.h>
#include "spa.h"

/* spa_ir.flags */
#define SPA_IRF_NEW       0x01u /* NEWOBJ/NEWOBJ_EX: cls.__new__(cls, *args, **kwargs) */
#define SPA_IRF_INST      0x02u /* INST/OBJ: instantiate(cls, args) */
#define SPA_IRF_DYNAMIC   0x04u /* STACK_GLOBAL operand not a constant str: module/name are
                                   "<dynamic>", target/arg hold the operand values */
#define SPA_IRF_EXT       0x08u /* EXT1/2/4: module "copyreg", name "<ext:CODE>" (the
                                   extension registry decides at load time) */
#define SPA_IRF_TRUNCATED 0x10u /* GLOBAL/INST line cut by EOF: the pure-Python loader
                                   still imports line[:-1] */
#define SPA_IRF_PYONLY    0x20u /* only the pure-Python loader reaches this import: INST with
                                   no MARK (the C unpickler looks for the MARK first) or a line
                                   cut by EOF (the C unpickler fails on the read) */

/* spa_val.flags bits used by the VM itself (never set on MARK) */
#define SPA_VFX_HOT    0x40u /* is or contains a global, call, persistent id or unknown */
#define SPA_VFX_SHARED 0x80u /* referenced from the memo, the IR or twice on the stack */
#define SPA_VFX_PINNED 0x20u /* containers only (the bit is PY2STR on bytes): referenced
                                from the IR or twice on the stack, never compacted */

/* spa_val.opcode: the low 8 bits are the opcode byte; bits 8 and 9 are VM flags */
#define SPA_VOP_MASK     0xffu
#define SPA_VOP_BORROWED 0x100u /* str/bytes whose bytes the memo owns */
#define SPA_VOP_OPAQUE   0x200u /* bytes judged opaque binary: only SPA_VM_KEEP_OPAQUE bytes kept */
#define SPA_VM_KEEP_OPAQUE 4096u /* bytes kept (and examined) of a long opaque constant */

/* Bytes of pickle streams the VM has examined in this scan (all streams of
 * the file): max_bytes bounds the total. Owner: ctx.c. */
struct spa_scan_ctx;
uint64_t *spa_ctx_vm_bytes(struct spa_scan_ctx *sc);

/* The pre-pass (memoscan.c): walks a stream from r's position (within the
 * VM's max_ops and max_bytes for it) and sets in
 * *bits (nbits bits; free() it) every memo key a BINGET/LONG_BINGET reads.
 * False when the walk cannot vouch for the VM's reading (the VM then keeps
 * every memo value). */
struct spa_in;
bool spa_vm_getkeys(struct spa_in *r, uint64_t max_ops, uint64_t max_bytes, uint64_t **bits, uint64_t *nbits);

/* Render a value as bounded pseudo-Python into buf (always NUL-terminated
 * when cap > 0). Returns the length written. Containers show their kept
 * items and "..." when summarised; long strings are cut with "...". */
size_t spa_val_repr(const spa_val *v, char *buf, size_t cap);
/* The same, but a call result nested inside v is named "_v<IR index>"
 * (the explain listing binds every call to such a name). */
size_t spa_val_repr_named(const spa_val *v, char *buf, size_t cap);
/* Like spa_val_repr_named, but a call result itself is just its "_v<N>". */
size_t spa_val_ref(const spa_val *v, char *buf, size_t cap);
/* The Python type-ish name of a value kind: "str", "tuple", "global", ... */
const char *spa_vkind_name(spa_vkind k);
#endif
