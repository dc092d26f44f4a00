#!/usr/bin/env bash
# run.sh - runs every test/bench/bench_*.sh in turn (make bench) and writes what each
# prints into its own section of test/bench/results.md (results.sh), the one file the
# READMEs link to for measured figures. A script run alone can do the same:
#   bash bench_x.sh | (source results.sh; bench_results bench_x)
set -uo pipefail
cd "$(dirname "$0")"
source ./results.sh
rc=0
for b in bench_*.sh; do
  echo "== $b"
  out=$(bash "$b" 2>&1 | tee /dev/stderr)
  st=${PIPESTATUS[0]}
  name=${b%.sh}
  if [ "$st" -ne 0 ]; then rc=1; out="$out
(FAILED: exit $st)"; fi
  printf '`%s`\n\n```text\n%s\n```\n' "test/bench/$b" "$out" | bench_results "$name"
done
exit $rc
