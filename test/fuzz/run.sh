#!/usr/bin/env bash
# Runs each libFuzzer binary for N seconds on its seed corpus (test/fuzz/corpus/NAME,
# copied to a scratch dir so the repo is never written) with its dictionary.
set -euo pipefail
secs=$1; shift
for b in "$@"; do
  name=$(basename "$b")
  work=$(mktemp -d)
  [ -d "test/fuzz/corpus/$name" ] && cp -r "test/fuzz/corpus/$name/." "$work/"
  dict=(); [ -f "test/fuzz/$name.dict" ] && dict=(-dict="test/fuzz/$name.dict")
  echo "fuzz: $name for ${secs}s"
  ASAN_OPTIONS=halt_on_error=1:detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1 \
    "$b" "${dict[@]}" -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=0 "$work" 2>&1 | tail -n 3
  rm -rf "$work"
done
