#!/usr/bin/env bash
# bench_layer2.sh - cost of layer 2 with bytes first (pickle.loads of 100k objects,
# import torch, 200 000 distinct dotted globals, un-memoised find_class), preloaded
# against plain, side by side in one run; writes test/bench/results.md (bench:bench_layer2).
# Usage: test/bench/bench_layer2.sh [RUNS]   (BUILD selects the build dir;
#   BASE=path/to/an/older/libsafepickle.so adds it as a third configuration)
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
RUNS=${1:-${RUNS:-5}}
exec /usr/bin/python3 test/bench/bench_layer2.py "$(realpath "$BUILD/libsafepickle.so")" "$RUNS" ${BASE:+"$(realpath "$BASE")"}
