/* fuzz_tar.c - libFuzzer harness for the tar reader (ustar/pax/GNU headers, legacy torch storages/tensors records).
 * The input is handed straight to that reader (no sniffing), with small
 * limits so a run stays fast; every result is freed (leaks are bugs). */
#include "fuzz_container.h"

FUZZ_CONTAINER_MAIN(SPA_FMT_TAR)
