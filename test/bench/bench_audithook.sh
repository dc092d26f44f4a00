#!/usr/bin/env bash
# bench_audithook.sh - overhead of layer 2 (the PEP 578 audit hook), measured
# side by side in one run, configurations interleaved, medians and ratios:
#   1. pickle.loads of many small objects (memoised classes: few find_class)
#   2. pickle.loads of a stream with one un-memoised GLOBAL per object (the
#      worst case: one pickle.find_class event, judged, per object)
#   3. import torch (thousands of import/open/exec events, outside any unpickle)
# Configurations: no preload; preload with the audit hook off (layer 1 only);
# preload with the audit hook on (both layers). The ratio that isolates the
# hook is "hook on / hook off".
# Usage: test/bench/bench_audithook.sh [RUNS]   (BUILD selects the build dir)
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
RUNS=${1:-${RUNS:-7}}
exec /usr/bin/python3 test/bench/bench_audithook.py "$(realpath "$BUILD/libsafepickle.so")" "$RUNS"
