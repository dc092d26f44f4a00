#!/usr/bin/env bash
# bench_preload.sh - the preload's overhead, measured side by side in one run
# (runs with and without LD_PRELOAD interleaved, medians and ratios):
#   1. python3 -c 'import torch'                     (target <= 1.02x)
#   2. torch.load of a 64 MiB checkpoint, fresh process (target <= 1.05x)
#   3. per-call cost of a pass-through open+close (and open+read+close), in ns,
#      in an untargeted process and in a targeted one (a copy named python-*).
#   3b. open+read+close of every .py/.pyc file under torch/ (the reads of an
#      import, none pickle-bearing), CPU ns per file inside the process.
#   4. start-up of an untargeted process (/bin/true, 100 execs per sample).
# import torch is also timed in CPU (user + sys of the process, wait4): on the
# shared machine wall time moves with the others' load.
# With BASE=DIR (another build dir, e.g. main's before a change; BASE_LABEL names
# it), 1. and 3. also run that library in the same interleaved rounds and print
# this build's ratio to it (the change's own cost).
# Usage: test/bench/bench_preload.sh [RUNS]   (BUILD selects the build dir)
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
RUNS=${1:-${RUNS:-9}}
LIB=$(realpath "$BUILD/libsafepickle.so")
PY=/usr/bin/python3
work=$(mktemp -d /tmp/sp-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
cc -O2 -o "$work/openclose" test/bench/bench_openclose.c

"$PY" - "$work/ckpt.pt" <<'PYEOF'
import sys, torch
torch.manual_seed(0)
# 64 MiB of float32 weights in a few tensors, saved with the default zip format
sd = {"layer%d.weight" % i: torch.randn(1024, 2048) for i in range(8)}
torch.save(sd, sys.argv[1])
PYEOF
echo "checkpoint: $(stat -c %s "$work/ckpt.pt") bytes; runs per side: $RUNS; load: $(cut -d' ' -f1-3 /proc/loadavg)"

BASE_LIB=${BASE:+$(realpath "$BASE/libsafepickle.so")}
[ -n "$BASE_LIB" ] && echo "base: ${BASE_LABEL:-$BASE}"
"$PY" - "$LIB" "$RUNS" "$work" "$BASE_LIB" <<'PYEOF'
import os, statistics, subprocess, sys, time
lib, runs, work, base_lib = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
PY = "/usr/bin/python3"
base = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("SAFEPICKLE_")}
base["OMP_NUM_THREADS"] = "1"
pre = dict(base, LD_PRELOAD=lib)
old = dict(base, LD_PRELOAD=base_lib) if base_lib else None

def wall(cmd, env):
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t

def wall_cpu(cmd, env):
    """wall time and CPU time (user + sys, from wait4) of a whole process"""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    _, st, ru = os.wait4(p.pid, 0)
    if st:
        raise SystemExit("%s failed: %d" % (cmd, st))
    return time.perf_counter() - t, ru.ru_utime + ru.ru_stime

def inner(cmd, env):
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout.split()
    return [float(x) for x in out]

def report(name, a, b, unit, target=None):
    ma, mb = statistics.median(a), statistics.median(b)
    pair = [y / x for x, y in zip(a, b)]
    line = "%-44s without %9.4f %s  with %9.4f %s  ratio(median) %.3fx  ratio(paired median) %.3fx" % (
        name, ma, unit, mb, unit, mb / ma, statistics.median(pair))
    if target:
        line += "  target <= %.2fx: %s" % (target, "met" if mb / ma <= target else "NOT MET")
    print(line)

def vs_base(name, c, b, unit):
    """this build (b) against the BASE library (c), same rounds"""
    mc, mb = statistics.median(c), statistics.median(b)
    pair = sorted(y / x for x, y in zip(c, b))
    print("  %-42s base %9.4f %s  this %9.4f %s  this/base(median) %.3fx  paired median %.3fx (%.3f-%.3f)" % (
        name, mc, unit, mb, unit, mb / mc, statistics.median(pair), pair[0], pair[-1]))

# 1. import torch (wall and CPU time of the whole process), interleaved
a, b, c, ac, bc, cc = [], [], [], [], [], []
wall([PY, "-c", "import torch"], base); wall([PY, "-c", "import torch"], pre)  # warm the page cache
for _ in range(runs):
    for env, w, u in ((base, a, ac), (pre, b, bc)) + (((old, c, cc),) if old else ()):
        x, y = wall_cpu([PY, "-c", "import torch"], env)
        w.append(x); u.append(y)
report("python3 -c 'import torch' (s)", a, b, "s", 1.02)
report("python3 -c 'import torch', CPU user+sys (s)", ac, bc, "s", 1.02)
if old:
    vs_base("import torch vs base (s)", c, b, "s")
    vs_base("import torch vs base, CPU (s)", cc, bc, "s")

# 2. torch.load of the 64 MiB checkpoint, timed inside a fresh process
code = ("import sys, time, torch\nt = time.perf_counter()\nsd = torch.load(sys.argv[1])\n"
        "print(time.perf_counter() - t)\n")
ck = os.path.join(work, "ckpt.pt")
a, b = [], []
inner([PY, "-c", code, ck], base); inner([PY, "-c", code, ck], pre)
for _ in range(runs):
    a.append(inner([PY, "-c", code, ck], base)[0])
    b.append(inner([PY, "-c", code, ck], pre)[0])
report("torch.load 64 MiB checkpoint, first load (s)", a, b, "s", 1.05)

# 3. per-call cost of open+close / open+read+close on a non-pickle file
small = os.path.join(work, "small.txt")
with open(small, "w") as f:
    f.write("just some text, not a pickle\n" * 4)
oc = os.path.join(work, "openclose")
n = "200000"
# The preload acts only where Python runs: a copy named python-* is acted in by the name rule.
pyoc = os.path.join(work, "python-openclose")
subprocess.run(["cp", oc, pyoc], check=True)
for label, prog, env in (("untargeted process (pure pass-through)", oc, pre),
                         ("targeted process (python-* name)", pyoc, pre)):
    a1, b1, a2, b2, c1, c2 = [], [], [], [], [], []
    for _ in range(max(3, runs // 2)):
        x = inner([prog, small, n], base); y = inner([prog, small, n], env)
        a1.append(x[0]); b1.append(y[0]); a2.append(x[1]); b2.append(y[1])
        if old:
            z = inner([prog, small, n], old)
            c1.append(z[0]); c2.append(z[1])
    report("open+close, " + label + " (ns)", a1, b1, "ns")
    report("open+read+close, " + label + " (ns)", a2, b2, "ns")
    if old:
        vs_base("open+close vs base (ns)", c1, b1, "ns")
        vs_base("open+read+close vs base (ns)", c2, b2, "ns")
    print("  -> added per open+close: %.0f ns" % (statistics.median(b1) - statistics.median(a1)))

# 3b. the reads of an import, alone: open, read whole and close every .py and .pyc
# file under torch/ (none pickle-bearing), CPU time inside the process, ns per file
rd = ("import os, sys, time, torch\nfs = []\n"
      "for dp, dn, fn in os.walk(os.path.dirname(torch.__file__)):\n"
      "    fs += [os.path.join(dp, f) for f in fn if f.endswith(('.py', '.pyc'))]\n"
      "t = time.process_time()\n"
      "for p in fs:\n"
      "    with open(p, 'rb') as f: f.read()\n"
      "print((time.process_time() - t) / len(fs) * 1e9, len(fs))\n")
a, b, c = [], [], []
inner([PY, "-c", rd], base)
for _ in range(runs):
    x = inner([PY, "-c", rd], base); a.append(x[0])
    b.append(inner([PY, "-c", rd], pre)[0])
    if old:
        c.append(inner([PY, "-c", rd], old)[0])
print("read every .py/.pyc under torch/ once: %d files" % x[1])
report("open+read+close of torch's .py/.pyc, CPU (ns per file)", a, b, "ns")
if old:
    vs_base("the same vs base (ns per file)", c, b, "ns")
    print("  -> this change per file: %+.0f ns" % (statistics.median(b) - statistics.median(c)))

# 4. start-up cost in a process the preload does not act in (loading the library
# and its dependencies, resolving the hooks, parsing the policy)
def execs(env, n=100):
    t = time.perf_counter()
    for _ in range(n):
        subprocess.run(["/bin/true"], env=env, check=True)
    return (time.perf_counter() - t) / n * 1e3
a, b = [], []
for _ in range(max(3, runs // 2)):
    a.append(execs(base)); b.append(execs(pre))
report("exec of /bin/true, untargeted (ms per exec)", a, b, "ms")
PYEOF
