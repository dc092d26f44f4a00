/* deploy.h - install-layout helpers shared by the deployment commands
 * (jupyter, doctor, trust): where the preload library and the shipped
 * policies are relative to the running CLI. Implemented in deploy.c. */
#ifndef SP_CLI_DEPLOY_H
#define SP_CLI_DEPLOY_H
#include <stdbool.h>
#include <stddef.h>

/* The checked kernel launcher `jupyter install` writes next to kernel.json (its argv[1]). */
#define DEP_KERNEL_LAUNCHER "safepickle_kernel.py"

/* True when p names an existing regular file (stat follows symlinks). */
bool dep_is_file(const char *p);

/* Absolute path of libsafepickle.so for this CLI: next to it (a build tree),
 * or <bindir>/../lib/safepickle/ (an install). Fills buf and returns it, or
 * returns NULL when no candidate exists. */
const char *dep_find_preload(char *buf, size_t n);

/* Resolve a --policy argument: an existing path (made absolute), or a bare
 * name ("strict") looked up as <bindir>/../share/safepickle/policies/NAME.json
 * or policies/NAME.json beside a build tree. NULL (errno set) if not found. */
const char *dep_resolve_policy(const char *arg, char *buf, size_t n);
/* True when arg would be resolved as a shipped policy name, not as a file. */
bool dep_policy_is_name(const char *arg);
/* Every command's --policy: resolve arg (dep_resolve_policy) and load it, or
 * the embedded default when arg is NULL. On failure prints "safepickle CMD:
 * ..." on stderr and returns NULL. `resolved` (may be NULL) gets the path. */
struct spa_policy;
struct spa_policy *dep_load_policy(const char *cmd, const char *arg, char *resolved, size_t n);

/* Write `data` to `path` atomically: a temp file in the same directory,
 * fsync, rename. Keeps the old file's mode when it exists (else `mode`).
 * Returns 0, or -1 with errno set. */
int dep_write_atomic(const char *path, const char *data, size_t len, unsigned mode);

/* Read a whole (small) file into a malloc'd NUL-terminated buffer, at most
 * max bytes. Returns NULL with errno set (EFBIG when larger than max). */
char *dep_read_file(const char *path, size_t max, size_t *len);
#endif
