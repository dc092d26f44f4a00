#!/usr/bin/env bash
# run.sh - runs every test/bench/bench_*.sh in turn (make bench).
set -euo pipefail
cd "$(dirname "$0")"
rc=0
for b in bench_*.sh; do
  echo "== $b"
  bash "$b" || rc=1
done
exit $rc
