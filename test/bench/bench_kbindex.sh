#!/usr/bin/env bash
# bench_kbindex.sh - the cost of `safepickle kb index` (serial, parallel, warm cache; with
# SAFEPICKLE_BENCH_BEFORE=REV also the indexer of git revision REV), side by side in one run,
# on four packages, then over the whole environment. Writes its section of
# test/bench/results.md via run.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${SAFEPICKLE_BUILD:-${BUILD:-$here/../../build}}
echo "== bench_kbindex: the environment index, before/after"
# before/after side by side on four packages the KB does not list (the indexer before needs
# minutes of CPU and gigabytes for the whole environment), then the whole environment now
/usr/bin/python3 "$here/bench_kbindex.py" "$build" --packages dask,distributed,pygments,tornado \
  ${SAFEPICKLE_BENCH_BEFORE:+--before "$SAFEPICKLE_BENCH_BEFORE"} "$@"
echo
/usr/bin/python3 "$here/bench_kbindex.py" "$build" "$@"
