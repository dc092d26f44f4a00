#!/usr/bin/env bash
# Runs each unit-test binary given, sums their "N passed, N failed" lines and
# fails if any binary failed or crashed.
set -u
tp=0; tf=0; bad=0
for b in "$@"; do
  out=$("$b" 2>&1); rc=$?
  printf '%s\n' "$out" | grep -E 'FAIL|passed' | tail -n 40
  line=$(printf '%s\n' "$out" | grep -Eo '[0-9]+ passed, [0-9]+ failed' | tail -n1)
  p=$(echo "${line:-0 passed, 0 failed}" | awk '{print $1}'); f=$(echo "${line:-0 passed, 1 failed}" | awk '{print $3}')
  tp=$((tp + p)); tf=$((tf + f))
  if [ $rc -ne 0 ]; then bad=1; [ "$f" = 0 ] && { echo "$b exited $rc"; tf=$((tf + 1)); }; fi
done
echo "unit: $tp passed, $tf failed"
[ $bad -eq 0 ] && [ $tf -eq 0 ]
