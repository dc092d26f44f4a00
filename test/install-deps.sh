#!/usr/bin/env bash
# Installs, idempotently, the Debian 12 packages safepickle's build, tests and demo need.
# Called by `make deps` (and so by make, make test, make demo). Needs root for apt-get.
set -euo pipefail

PKGS=(
  build-essential clang libclang-rt-14-dev pkg-config
  libcjson-dev libunwind-dev libffi-dev
  zlib1g-dev liblzma-dev libbz2-dev libzstd-dev liblz4-dev
  python3 python3-dev python3-torch python3-numpy python3-joblib python3-sklearn python3-scipy
  python3-pandas python3-pytest python3-ipykernel python3-jupyter-client
  python3-zstandard python3-lz4 bzip2 xz-utils zstd lz4 git tar
  python3-jsonschema python3-yaml pre-commit systemd
  python3-pytest-timeout python3-dask python3-distributed
  valgrind strace  # test/bench/bench_verify.sh: instructions and system calls of a load, counted
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "safepickle deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "safepickle deps: need root to install: ${missing[*]}" >&2; exit 1; fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
