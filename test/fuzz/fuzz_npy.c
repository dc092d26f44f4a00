/* fuzz_npy.c - libFuzzer harness for the npy header reader and the object-array pickle after it.
 * The input is handed straight to that reader (no sniffing), with small
 * limits so a run stays fast; every result is freed (leaks are bugs). */
#include "fuzz_container.h"

FUZZ_CONTAINER_MAIN(SPA_FMT_NPY)
