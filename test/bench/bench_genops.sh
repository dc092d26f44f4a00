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

RUNS=${BENCH_RUNS:-5}

# CPU time (user+sys) is the comparison: the machine may be shared, which
# inflates wall time for both sides unevenly. Each side runs RUNS times,
# alternately, and the medians are compared. Wall time is shown too.
printf '%-7s %6s | %8s %8s | %8s %8s | %8s %9s | %8s %7s\n' file MB "ours cpu" "gen cpu" "ours wall" "gen wall" "ours MB" "genops MB" speedup mem
for f in dense dicts arrays; do
  p="$dir/$f.pkl"
  mb=$(awk -v b="$(stat -c %s "$p")" 'BEGIN{printf "%.1f", b/1048576}')
  out=$("$PY" test/bench/bench_genops.py pair "$RUNS" "$CLI" "$p")
  read -r ow oc om gw gc gm <<<"$out"
  awk -v f="$f" -v mb="$mb" -v ow="$ow" -v oc="$oc" -v gw="$gw" -v gc="$gc" -v om="$om" -v gm="$gm" 'BEGIN{
    printf "%-7s %6s | %8.3f %8.2f | %9.3f %8.2f | %8.1f %9.1f | %7.0fx %6.1f%%\n", f, mb, oc, gc, ow, gw, om/1024, gm/1024, gc/oc, 100*om/gm }'
done
echo "(medians of $RUNS alternating runs each; speedup = genops CPU time / ours;"
echo " mem = our peak RSS as a share of genops' peak RSS)"
