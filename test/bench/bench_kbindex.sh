#!/usr/bin/env bash
# bench_kbindex.sh - the cost of `safepickle kb index` over the whole environment (serial,
# parallel, warm cache; with SAFEPICKLE_BENCH_BEFORE=REV also the indexer of git revision
# REV), side by side in one run. Writes its section of test/bench/results.md via run.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${SAFEPICKLE_BUILD:-${BUILD:-$here/../../build}}
echo "== bench_kbindex: the environment index, before/after"
/usr/bin/python3 "$here/bench_kbindex.py" "$build" ${SAFEPICKLE_BENCH_BEFORE:+--before "$SAFEPICKLE_BENCH_BEFORE"} "$@"
