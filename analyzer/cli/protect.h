/* protect.h - can a process be protected by the preload? Shared by `run`,
 * `doctor` and `jupyter`: a probe process started under an exact LD_PRELOAD
 * value, and the checks on a program that decide whether ld.so will preload
 * anything into it. Implemented in protect.c. */
#ifndef SP_CLI_PROTECT_H
#define SP_CLI_PROTECT_H
#include <stdbool.h>
#include <stddef.h>

/* Named limits. */
#define PROT_MAX_SHEBANG 4   /* #! interpreters followed from a script */
#define PROT_ERR_MAX 2048    /* bytes of a probe's stderr kept */

/* Spawn argv[0] (an absolute path) with this process's environment, except:
 * LD_PRELOAD is set to `preload` (NULL: removed, so only /etc/ld.so.preload
 * applies) and each "NAME=VALUE" of `extra` (NULL-terminated, or NULL) is set.
 * The child's stderr is captured into err (trailing newlines cut); stdout goes
 * to `out` the same way when out is not NULL, else to /dev/null.
 * Returns its exit status, 128+signal, or -1 if it could not be started. */
int prot_spawn(const char *preload, char *const argv[], const char *const *extra, char *err,
               size_t errsz, char *out, size_t outsz);

/* Does ld.so map a libsafepickle.so into a new process started with
 * LD_PRELOAD=value (a path, a bare name, or a list; NULL: no LD_PRELOAD, only
 * /etc/ld.so.preload)? Runs /bin/grep on its own /proc/self/maps. Returns true,
 * or false with why filled (ld.so's own message when it printed one). */
bool prot_preload_loads(const char *value, char *why, size_t n);

/* Would a process that execs `cmd` (a path, or a name looked up in PATH as
 * execvp does) load an LD_PRELOAD library of this CLI's ELF class? Follows
 * #! interpreters (and `/usr/bin/env NAME`). Refuses: not found or not
 * executable, statically linked (no PT_INTERP), another ELF class or machine,
 * set-user-ID / set-group-ID / file capabilities (ld.so's secure mode ignores
 * LD_PRELOAD paths), not ELF nor a script. Returns true, or false with why. */
bool prot_exec_check(const char *cmd, char *why, size_t n);
/* The executable execvp would run for cmd (searched in PATH when it has no '/'),
 * into out; false when there is none. */
bool prot_which(const char *cmd, char *out, size_t n);
#endif
