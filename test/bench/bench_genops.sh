#!/usr/bin/env bash
# bench_genops.sh - safepickle's scan against a genops-based scanner (the way
# picklescan lists globals) on the same files, side by side in one run:
# a >= 50 MB opcode-dense pickle with millions of small objects, a list of
# small dicts, and a pickle holding large numpy arrays. Reports CPU time, wall
# time and peak RSS with ratios.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${SAFEPICKLE_BUILD:-${BUILD:-build}}
PY=${PYTHON:-/usr/bin/python3}
CLI="$BUILD/safepickle"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$PY" test/bench/bench_genops.py gen "$dir"

measure() { # prints "wall_s cpu_s peak_kb"
  local rc=0
  /usr/bin/time -f "%e %U %S %M" -o "$dir/t" "$@" >/dev/null 2>"$dir/err" || rc=$?
  # scan exits 1 when a verdict would block; only 2 (usage/I/O) is a failure
  if [ "$rc" -ge 2 ]; then cat "$dir/err" >&2; return 1; fi
  awk '{printf "%s %.2f %s\n", $1, $2 + $3, $4}' "$dir/t"
}

# CPU time (user+sys) is the comparison: the machine may be shared, which
# inflates wall time for both sides unevenly. Wall time is shown too.
printf '%-7s %6s | %8s %8s | %8s %8s | %8s %9s | %8s %7s\n' file MB "ours cpu" "gen cpu" "ours wall" "gen wall" "ours MB" "genops MB" speedup mem
for f in dense dicts arrays; do
  p="$dir/$f.pkl"
  mb=$(awk -v b="$(stat -c %s "$p")" 'BEGIN{printf "%.1f", b/1048576}')
  read -r ow oc om < <(measure "$CLI" scan --format json "$p")
  read -r gw gc gm < <(measure "$PY" test/bench/bench_genops.py genops "$p")
  awk -v f="$f" -v mb="$mb" -v ow="$ow" -v oc="$oc" -v gw="$gw" -v gc="$gc" -v om="$om" -v gm="$gm" 'BEGIN{
    d = oc < 0.01 ? 0.01 : oc; ge = oc < 0.01 ? ">=" : "";
    printf "%-7s %6s | %8.2f %8.2f | %9.2f %8.2f | %8.1f %9.1f | %4s%3.0fx %6.1f%%\n", f, mb, oc, gc, ow, gw, om/1024, gm/1024, ge, gc/d, 100*om/gm }'
done
echo "(speedup = genops CPU time / ours, '>=' when ours is below the 10 ms timer resolution;"
echo " mem = our peak RSS as a share of genops' peak RSS)"
