/* fuzz_joblib.c - libFuzzer harness for joblib streams: the NumpyArrayWrapper hook that skips raw array bytes, nested object-array streams, resync.
 * The input is handed straight to that reader (no sniffing), with small
 * limits so a run stays fast; every result is freed (leaks are bugs). */
#include "fuzz_container.h"

FUZZ_CONTAINER_MAIN(SPA_FMT_PICKLE)
