"""bench_genops.py - helper of bench_genops.sh.

    bench_genops.py gen DIR        write dense.pkl (>= 50 MB, millions of small
                                   objects), dicts.pkl (700k small dicts) and
                                   arrays.pkl (large numpy arrays)
    bench_genops.py genops FILE    scan FILE the way genops-based scanners do
                                   (picklescan: ops = list(pickletools.genops(f))
                                   plus its memo / STACK_GLOBAL tracking, over
                                   every stacked pickle) and print the globals
    bench_genops.py pair N CLI FILE
                                   run `CLI scan --format json FILE` and the
                                   genops scan of FILE N times each, alternately,
                                   and print the medians "wall cpu peak_kb" of
                                   ours, then of genops (CPU = user + sys from
                                   wait4, microsecond resolution)"""
import io
import os
import statistics
import subprocess
import time
import pickle
import pickletools
import sys


def gen(d):
    os.makedirs(d, exist_ok=True)
    # 2.2 million small tuples (int, float, short str): every tuple and string
    # memoised, ~25 bytes of opcodes per object
    rows = [(i, i * 0.5, "r%d" % (i % 5000)) for i in range(2_200_000)]
    with open(os.path.join(d, "dense.pkl"), "wb") as f:
        pickle.dump(rows, f, protocol=4)
    del rows
    # 700,000 small dicts (memoised containers, repeated keys fetched with BINGET)
    rows = [{"id": i, "score": i * 0.5, "name": "n%d" % (i % 977), "tags": ["a", "b"]} for i in range(700_000)]
    with open(os.path.join(d, "dicts.pkl"), "wb") as f:
        pickle.dump(rows, f, protocol=4)
    del rows
    import numpy as np
    arrays = {"layer%d" % i: np.random.default_rng(i).standard_normal((1024, 1024)) for i in range(12)}
    with open(os.path.join(d, "arrays.pkl"), "wb") as f:
        pickle.dump(arrays, f, protocol=4)


def genops_scan(path):
    """picklescan's _list_globals, condensed: the whole op list is materialised."""
    with open(path, "rb") as fh:
        data = io.BytesIO(fh.read())
    globals_ = set()
    while True:
        memo = {}
        try:
            ops = list(pickletools.genops(data))
        except Exception:
            break
        for n, (op, arg, pos) in enumerate(ops):
            name = op.name
            if name in ("MEMOIZE",) and n > 0:
                memo[len(memo)] = ops[n - 1][1]
            elif name in ("PUT", "BINPUT", "LONG_BINPUT") and n > 0:
                memo[arg] = ops[n - 1][1]
            elif name in ("GLOBAL", "INST"):
                globals_.add(tuple(arg.split(" ", 1)))
            elif name == "STACK_GLOBAL":
                values = []
                for i in range(1, n):
                    if ops[n - i][0].name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
                        continue
                    if ops[n - i][0].name in ("GET", "BINGET", "LONG_BINGET"):
                        values.append(memo.get(int(ops[n - i][1])))
                    else:
                        values.append(ops[n - i][1])
                    if len(values) == 2:
                        break
                if len(values) == 2:
                    globals_.add((values[1], values[0]))
        if not data.read(1):
            break
        data.seek(-1, 1)
    return globals_


def _run(cmd):
    """One run: (wall s, user+sys CPU s, peak RSS KiB, exit code)."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    rc = os.waitstatus_to_exitcode(status)
    # scan exits 1 when a verdict would block; only 2 (usage/I/O) or a signal fails
    if rc >= 2 or rc < 0:
        sys.exit("%s failed (%d): %s" % (cmd[0], rc, err))
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss


def pair(n, cli, path):
    ours, gen = [], []
    for _ in range(n):
        ours.append(_run([cli, "scan", "--format", "json", path]))
        gen.append(_run([sys.executable, os.path.abspath(__file__), "genops", path]))
    for runs in (ours, gen):
        print(" ".join("%.6f" % statistics.median(r[i] for r in runs) for i in range(3)), end=" ")
    print()


if __name__ == "__main__":
    if sys.argv[1] == "gen":
        gen(sys.argv[2])
    elif sys.argv[1] == "pair":
        pair(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    else:
        g = genops_scan(sys.argv[2])
        print("%d globals: %s" % (len(g), sorted(map(str, g))[:5]))
