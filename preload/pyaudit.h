/* pyaudit.h - layer 2 of the preload: a PEP 578 audit hook registered from
 * the constructor when the process is a CPython interpreter (3.8-3.13). It
 * judges every pickle.find_class and vetoes dangerous behaviour while an
 * unpickle is in progress on the current thread. See README "runtime". */
#ifndef SPP_PYAUDIT_H
#define SPP_PYAUDIT_H

/* Named limits of the layer (all bound work done inside the hook). */
#define SPP_PYA_MAX_FRAMES (1 << 20) /* frames walked when scoping an event; beyond: in scope */
#define SPP_PYA_NAME_MAX     256 /* module / global name kept for a decision */
#define SPP_PYA_PATH_MAX     512 /* Python source path kept for a location */
#define SPP_PYA_DETAIL_MAX   200 /* event argument quoted in a record */
#define SPP_PYA_MAX_PKGS      32 /* top-level packages remembered per unpickle scope */
#define SPP_PYA_PKG_MAX       64 /* length of one remembered package name */
#define SPP_PYA_IMPORTS_MAX 8192 /* slots of the per-thread set of imports announced in a
                                    scope (power of two; 3/4 usable; beyond: strict) */

/* Register the hook if the policy enables layer 2 and the process exports
 * PySys_AddAuditHook. Called once from the preload's constructor, after the
 * policy is loaded. Idempotent; does nothing in a non-Python process. */
void spp_pyaudit_init(void);

#endif /* SPP_PYAUDIT_H */
