#!/bin/bash
# output_snapshot.sh - the analyzer's output on a fixed regression corpus, to
# prove a change leaves it unchanged:
#   output_snapshot.sh CORPUS_DIR OUT_DIR [SAFEPICKLE]
# CORPUS_DIR is built once (if missing): the differential corpus of diffgen.py
# (real objects at protocols 0-5, threat constructions, 3,117 mutants: 3,694 files, fixed
# seed) plus threatgen.py's malicious files. OUT_DIR gets scan.json (scan
# --format json of every file) and explain.txt; compare two OUT_DIRs with
# `diff -r`. Paths in the output are the corpus's, so use the same CORPUS_DIR.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
corpus=${1:?CORPUS_DIR}
out=${2:?OUT_DIR}
sp=${3:-$repo/build/safepickle}
PY=${PYTHON:-/usr/bin/python3}
if [ ! -f "$corpus/.done" ]; then
    mkdir -p "$corpus/diff" "$corpus/threat" "$corpus/markers"
    "$PY" "$repo/test/integration/diffgen.py" "$corpus/diff" 3117 20261126 >/dev/null 2>&1
    "$PY" "$repo/test/integration/threatgen.py" malicious "$corpus/threat" "$corpus/markers" >/dev/null
    touch "$corpus/.done"
fi
mkdir -p "$out"
list=$(mktemp)
trap 'rm -f "$list"' EXIT
find "$corpus/diff" "$corpus/threat" -type f ! -name recorded.json | LC_ALL=C sort > "$list"
# one process per 500 files (argument lists stay short)
: > "$out/scan.json"; : > "$out/explain.txt"
xargs -d '\n' -n 500 "$sp" scan --format json < "$list" >> "$out/scan.json" || true
xargs -d '\n' -n 500 "$sp" explain < "$list" >> "$out/explain.txt" 2>&1 || true
echo "$(wc -l < "$list") files -> $out ($(wc -c < "$out/scan.json") bytes of JSON, $(wc -c < "$out/explain.txt") of explain)"
