#!/usr/bin/env bash
# bench_stream.sh - the container layer reads only the zip directory and the
# pickle members of a torch checkpoint: bytes read and scan time for 64 MiB
# and 1 GiB of tensor data, side by side (see bench_stream.py). Needs about
# 1 GiB of free space in $TMPDIR for a moment. Args: tensor sizes in MiB.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${SAFEPICKLE_BUILD:-${BUILD:-$here/../../build}}
echo "== bench_stream: torch checkpoint and joblib file, bytes read and time vs data size"
/usr/bin/python3 "$here/bench_stream.py" "$build/safepickle" "$@"
