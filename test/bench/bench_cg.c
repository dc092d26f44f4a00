/* bench_cg.c - helper of bench_verify.sh: preloaded into a Python process run
 * under valgrind's callgrind (started with --instr-atstart=no), it lets the
 * script count the instructions of the load alone:
 *     lib = ctypes.CDLL(path); lib.cg_start(); load(); lib.cg_stop()
 * cg_stop dumps the counts ("load") into <callgrind-out-file>.1.
 * It also answers libhwy's timer calibration (pulled in by torch's
 * dependencies, run when the library loads): that uses rdtscp, which
 * valgrind 3.19 does not emulate on a CPU that does not announce it (this VM),
 * and the process would die of SIGILL before torch is imported. Nothing a
 * load does depends on that timer. Never preloaded outside callgrind runs. */
#include <stdint.h>
#include <valgrind/callgrind.h>

void cg_start(void);
void cg_stop(void);
uint64_t _ZN3hwy8platform15TimerResolutionEv(void); /* hwy::platform::TimerResolution() */

void cg_start(void) {
    CALLGRIND_ZERO_STATS;
    CALLGRIND_START_INSTRUMENTATION;
}

void cg_stop(void) {
    CALLGRIND_STOP_INSTRUMENTATION;
    CALLGRIND_DUMP_STATS_AT("load");
}

uint64_t _ZN3hwy8platform15TimerResolutionEv(void) { return 1; }
