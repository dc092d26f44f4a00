#!/usr/bin/env bash
# bench_scan.sh - `safepickle scan` against the bare-walk floor (bench_floor.c:
# read the file and step over its opcodes, nothing else), its peak memory, the
# preload's cost on pickle.load of opcode-dense pickles, and scan -j 2 vs -j 1;
# side by side in one run, medians of RUNS alternating runs. run.sh puts
# what it prints into its section of test/bench/results.md.
#   test/bench/bench_scan.sh [RUNS]    BASE=path/to/older/safepickle adds a
#                                      before/after column (same files, same run)
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${SAFEPICKLE_BUILD:-${BUILD:-build}}
RUNS=${1:-${BENCH_RUNS:-5}}
PY=/usr/bin/python3
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cc -O2 -Ianalyzer -o "$dir/floor" test/bench/bench_floor.c
"$PY" test/bench/bench_scan.py gen "$dir"
report=$("$PY" test/bench/bench_scan.py run "$RUNS" "$dir/floor" "$(realpath "$BUILD/safepickle")" \
         "$(realpath "$BUILD/libsafepickle.so")" "$dir" ${BASE:+"$(realpath "$BASE")"})
section=$(printf '%s\n\n%s\n\n%s\n' \
  "### scan vs the bare-walk floor; pickle.load preloaded vs plain (bench_scan.sh)" \
  "$(date -u +%Y-%m-%d), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), medians of $RUNS alternating runs (CPU = user + sys from wait4; pickle.load = CPU time of a fresh process from open() to the end of load(), the preload's scan included, spread in brackets)." \
  "$report")
echo "$section"
