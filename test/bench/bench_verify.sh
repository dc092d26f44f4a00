#!/usr/bin/env bash
# bench_verify.sh - the cost of verifying reads against the bytes judged, on its
# own, and of a second process loading an already-judged file (persistent
# cache warm). Side by side in one run, interleaved, fresh process per sample,
# CPU time (user + sys, time.process_time) of the load measured inside the
# process, so that other load on the machine counts less than in wall time;
# medians, ratios of medians and the spread (min-max) of the paired ratios:
#   plain     no preload
#   noverify  this preload built with -DSPP_BENCH_NO_VERIFY (no fingerprint, no
#             check: the preload as it was before verification), cache off
#   preload   this build, persistent cache off (every process scans)
#   warm      this build, persistent cache warm (another process judged the file)
# Files: a 1 GiB torch zip checkpoint (target: preload/noverify < 1.01) and a
# 30 MB opcode-dense protocol-4 pickle, 1.3 M memoised tuples (target < 1.03);
# warm/plain target <= 1.01.
# Usage: test/bench/bench_verify.sh [RUNS]   (BUILD selects the build dir)
# Writes its section of test/bench/results.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
RUNS=${1:-${RUNS:-5}}
LIB=$(realpath "$BUILD/libsafepickle.so")
NV_BUILD=${NV_BUILD:-build-bench-noverify}
make --no-print-directory BUILD="$NV_BUILD" CFLAGS="-O2 -g -DSPP_BENCH_NO_VERIFY" "$NV_BUILD/libsafepickle.so" >/dev/null
NV=$(realpath "$NV_BUILD/libsafepickle.so")
make --no-print-directory BUILD="$BUILD" "$BUILD/libspa.a" >/dev/null
PY=/usr/bin/python3
work=$(mktemp -d /tmp/sp-bench-verify.XXXXXX)
trap 'rm -rf "$work"' EXIT

"$PY" - "$work" <<'PYEOF'
import os, pickle, sys, torch
d = sys.argv[1]
torch.manual_seed(0)
# 1 GiB of float32 weights in 16 tensors, default zip format
torch.save({"layer%d.weight" % i: torch.randn(4096, 4096) for i in range(16)}, os.path.join(d, "big.pt"))
rows = [(i, i * 0.5, "r%d" % (i % 5000)) for i in range(1_300_000)]
with open(os.path.join(d, "dense.pkl"), "wb") as f:
    pickle.dump(rows, f, protocol=4)
PYEOF
cc -O2 -std=gnu11 -D_GNU_SOURCE -Ianalyzer -Ipreload -I"$BUILD/gen" -DSPA_VERSION=\"bench\" -o "$work/bench_fp" \
  test/bench/bench_fp.c "$BUILD/libspa.a" -lcjson -lz -llzma -lbz2 -lzstd -llz4 -lm

"$PY" - "$LIB" "$NV" "$RUNS" "$work" <<'PYEOF'
import os, re, shutil, statistics, subprocess, sys
lib, nv, runs, work = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
PY = "/usr/bin/python3"
base = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("SAFEPICKLE_")}
base["OMP_NUM_THREADS"] = "1"
warm_dir = os.path.join(work, "cache")
envs = {
    "plain": base,
    "noverify": dict(base, LD_PRELOAD=nv, SAFEPICKLE_CACHE="off"),
    "preload": dict(base, LD_PRELOAD=lib, SAFEPICKLE_CACHE="off"),
    "warm": dict(base, LD_PRELOAD=lib, SAFEPICKLE_CACHE=warm_dir),
}
CODE = {
    "torch": "import sys, time, torch\nt = time.process_time()\nsd = torch.load(sys.argv[1])\nprint(time.process_time() - t)\n",
    "pickle": "import sys, time, pickle\nt = time.process_time()\nwith open(sys.argv[1], 'rb') as f: x = pickle.load(f)\nprint(time.process_time() - t)\n",
}
cases = [("torch.load of a 1 GiB checkpoint", "torch", os.path.join(work, "big.pt")),
         ("pickle.load of a 30 MB opcode-dense pickle", "pickle", os.path.join(work, "dense.pkl"))]

def sample(kind, path, env):
    r = subprocess.run([PY, "-c", CODE[kind], path], env=env, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit("failed under %s: %s" % (env.get("LD_PRELOAD"), r.stderr[-2000:]))
    return float(r.stdout.split()[-1])

lines = ["runs per side: %d; load average at start: %s; CPU seconds of the load" % (runs, open("/proc/loadavg").read().split()[0]), "",
         "| case | plain | noverify | preload | warm | preload/noverify (fingerprint cost) | paired spread | preload/plain | warm/plain | paired spread |",
         "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
for name, kind, path in cases:
    for e in envs.values():       # warm the page cache; the first "warm" sample primes the cache dir
        sample(kind, path, e)
    t = {k: [] for k in envs}
    for _ in range(runs):
        for k, e in envs.items():
            t[k].append(sample(kind, path, e))
    med = {k: statistics.median(v) for k, v in t.items()}
    fp = [c / n for c, n in zip(t["preload"], t["noverify"])]
    wp = [w / p for w, p in zip(t["warm"], t["plain"])]
    lines.append("| %s | %.3f s | %.3f s | %.3f s | %.3f s | **%.3fx** | %.3f-%.3f | %.3fx | **%.3fx** | %.3f-%.3f |" % (
        name, med["plain"], med["noverify"], med["preload"], med["warm"], med["preload"] / med["noverify"],
        min(fp), max(fp), med["preload"] / med["plain"], med["warm"] / med["plain"], min(wp), max(wp)))
    if kind == "pickle":
        plain_pickle = med["plain"]
# the fingerprint's own work, alone (bench_fp.c): hashing while the analyzer
# reads, and checking the loader's reads, 4 KiB-aligned as BufferedReader reads
# (64 KiB) and, worst case, 4 KiB reads at unaligned offsets (every read returns
# part of two blocks: answered from the thread's verified copy, made by reading
# each block from the file once more); CPU time, and user-space instructions
# of the check alone under callgrind (kernel work, the copy's preads, is not in
# that count but is in the CPU time)
dense = os.path.join(work, "dense.pkl")
patterns = (("64 KiB, aligned (BufferedReader)", "65536", "4096"), ("4 KiB at unaligned offsets (worst case)", "4096", "4113"))
fp = [[float(x) for x in subprocess.run([os.path.join(work, "bench_fp"), dense, rd, "9", first],
                                        capture_output=True, text=True, check=True).stdout.split()]
      for _, rd, first in patterns]

def check_instructions(rd, first):
    if not shutil.which("valgrind"):
        return "n/a (no valgrind)"
    r = subprocess.run(["valgrind", "--tool=callgrind", "--toggle-collect=spp_fp_check",
                        "--callgrind-out-file=" + os.path.join(work, "cg.out"),
                        os.path.join(work, "bench_fp"), dense, rd, "1", first], capture_output=True, text=True)
    m = re.search(r"I\s+refs:\s+([\d,]+)", r.stderr)
    n = int(m.group(1).replace(",", "")) if m else 0
    return "%.1f M (%.2f per byte)" % (n / 1e6, n / os.path.getsize(dense)) if n else "n/a"

lines += ["", "fingerprint work alone on the 30 MB pickle (bench_fp.c, CPU ms, medians of 9; instructions: callgrind, one pass):", "",
          "| reads | hashing while the analyzer reads | checking the loader's reads | total | share of plain pickle.load (%.0f ms) | instructions of the check |" % (plain_pickle * 1e3),
          "| --- | --- | --- | --- | --- | --- |"]
for (label, rd, first), v in zip(patterns, fp):
    tot = (v[1] - v[0]) + v[2]
    lines.append("| %s | %.1f ms | %.1f ms | %.1f ms | %.1f%% | %s |" % (label, v[1] - v[0], v[2], tot, tot / (plain_pickle * 1e3) * 100,
                                                                 check_instructions(rd, first)))
ents = [os.path.getsize(os.path.join(warm_dir, e)) for e in os.listdir(warm_dir) if e.startswith("e-")]
lines += ["", "fingerprint memory: 16 bytes per 4 KiB judged; persistent cache entries for these two files: %s bytes"
          % ", ".join(str(x) for x in sorted(ents))]
out = "\n".join(lines)
print(out)
res = os.path.join("test", "bench", "results.md")
text = open(res).read() if os.path.exists(res) else "# Benchmark results\n\nEach section is written by the script named in its marker.\n"
sec = "<!-- bench:verify -->\n## bench_verify.sh\n\n" + out + "\n<!-- /bench:verify -->"
if "<!-- bench:verify -->" in text:
    text = re.sub(r"<!-- bench:verify -->.*?<!-- /bench:verify -->", lambda m: sec, text, flags=re.S)
else:
    text = text.rstrip("\n") + "\n\n" + sec + "\n"
open(res, "w").write(text)
PYEOF
