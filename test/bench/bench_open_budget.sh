#!/usr/bin/env bash
# bench_open_budget.sh - the worst case of one open under the default per-open
# budget (max_open_ms, max_open_bytes): a ~212 KB torch zip whose ignored
# members are small nested gzip bombs (404 bytes -> 64 MiB of a plausible
# pickle each) in front of its data.pkl, opened by torch.load under the
# preload. Writes its section of test/bench/results.md (see bench_open_budget.py).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${SAFEPICKLE_BUILD:-${BUILD:-$here/../../build}}
echo "== bench_open_budget: worst case of one open under the default budget"
/usr/bin/python3 "$here/bench_open_budget.py" "$build" "$@"
