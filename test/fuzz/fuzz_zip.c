/* fuzz_zip.c - libFuzzer harness for the zip reader (central directory, zip64, local headers, members).
 * The input is handed straight to that reader (no sniffing), with small
 * limits so a run stays fast; every result is freed (leaks are bugs). */
#include "fuzz_container.h"

FUZZ_CONTAINER_MAIN(SPA_FMT_ZIP)
