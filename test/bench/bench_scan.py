"""bench_scan.py - helper of bench_scan.sh: the scan against the bare-walk
floor, the preload's cost on pickle.load, and scan -j.

    bench_scan.py gen DIR
        vocab.pkl: ~30 MB opcode-dense protocol-4 pickle, 1.1 M (str, int,
        float) tuples (6.6 M opcodes, 2.2 M memo entries); dicts.pkl: 700,000
        small dicts (28 MB), as in bench_genops
    bench_scan.py run RUNS FLOOR CLI LIB DIR [BASE_CLI]
        prints a Markdown report (medians of RUNS alternating runs)"""
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

PY = "/usr/bin/python3"


def gen(d):
    import pickle
    os.makedirs(d, exist_ok=True)
    rows = [("tok%d" % i, i, i * 0.5) for i in range(1_100_000)]
    with open(os.path.join(d, "vocab.pkl"), "wb") as f:
        pickle.dump(rows, f, protocol=4)
    del rows
    rows = [{"id": i, "score": i * 0.5, "name": "n%d" % (i % 977), "tags": ["a", "b"]} for i in range(700_000)]
    with open(os.path.join(d, "dicts.pkl"), "wb") as f:
        pickle.dump(rows, f, protocol=4)
    # the process's own peak RSS (binary, libraries, policy, KB): a scan of a
    # 1-opcode pickle, subtracted to give the scan's own memory
    with open(os.path.join(d, "tiny.pkl"), "wb") as f:
        pickle.dump(None, f, protocol=4)


TIME = "/usr/bin/time"


def run1(cmd, env=None):
    """(user+sys CPU s, peak RSS KiB, stdout) of one process, from wait4.
    The peak RSS comes from GNU time's %M when it is installed: the maxrss
    wait4 reports for a child forked from this Python process starts at this
    process's own RSS (~11 MB), which hid everything below it."""
    rss_file = None
    if os.path.exists(TIME):
        fd, rss_file = tempfile.mkstemp()
        os.close(fd)
        cmd = [TIME, "-f", "%M", "-o", rss_file] + cmd
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    out = p.stdout.read()
    p.stdout.close()
    _, status, ru = os.wait4(p.pid, 0)
    rc = os.waitstatus_to_exitcode(status)
    rss = ru.ru_maxrss
    if rss_file:
        try:
            with open(rss_file) as f:
                rss = int(f.read().split()[-1])
        finally:
            os.unlink(rss_file)
    if rc >= 2 or rc < 0:
        sys.exit("%s failed (%d)" % (" ".join(cmd), rc))
    return ru.ru_utime + ru.ru_stime, rss, out


# CPU time of this process (user + sys: the preload's scan runs in it, at
# open()), from open() to the end of load(); wall time on a shared machine
# moves with its load
LOAD = ("import pickle, resource, sys, time\n"
        "f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "t = time.process_time()\n"
        "with open(sys.argv[1], 'rb') as f:\n"
        "    t1 = time.process_time()\n"
        "    x = pickle.load(f)\n"
        "t2 = time.process_time()\n"
        "print(t2 - t, t1 - t, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)\n")


def instructions(cmd):
    """Instructions executed (valgrind --tool=callgrind): repeatable on a shared machine.
    A scan under valgrind runs ~50x slower: without a larger max_open_ms its
    30 s time budget would cut it short, and the count with it."""
    if len(cmd) > 1 and cmd[1] == "scan":
        cmd = cmd[:2] + ["--limit", "max_open_ms=100000000"] + cmd[2:]
    try:
        p = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"] + cmd,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in p.stderr.splitlines():
        if "refs:" in line:
            return int(line.split("refs:")[1].replace(",", ""))
    return None


def fmt_ins(a, b):
    return "%.0f M / %.0f M = %.1fx" % (a / 1e6, b / 1e6, a / b) if a and b else "n/a"


def med(xs):
    return statistics.median(xs)


def spread(xs):
    return "%.3f-%.3f" % (min(xs), max(xs))


def run(runs, floor, cli, lib, d, base=None):
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("SAFEPICKLE_")}
    pre = dict(env, LD_PRELOAD=lib)
    # the verdict cache judges a file once: a warm cache skips the scan at
    # open(), so the preloaded load is also measured without it (the scan's cost)
    cold = dict(pre, SAFEPICKLE_CACHE="off")
    print("| file | size | opcodes | floor CPU | scan CPU | scan / floor | instructions scan / floor | "
          "scan peak RSS | RSS / size | above a 1-opcode scan (target <= 10%% of size) |%s" % (
              " before CPU | after / before | instructions after / before |" if base else ""))
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |%s" % (" --- | --- | --- |" if base else ""))
    tiny = os.path.join(d, "tiny.pkl")
    loads = {}
    for name in ("vocab.pkl", "dicts.pkl"):
        path = os.path.join(d, name)
        size = os.path.getsize(path)
        fl, sc, rss, bs, rss0 = [], [], [], [], []
        ops = 0
        for _ in range(runs):
            c, _, out = run1([floor, path])
            fl.append(c)
            ops = int(out.split()[0])
            c, m, _ = run1([cli, "scan", "-j", "1", path], env)
            sc.append(c)
            rss.append(m)
            rss0.append(run1([cli, "scan", "-j", "1", tiny], env)[1])
            if base:
                bs.append(run1([base, "scan", path], env)[0])
        i_fl, i_sc = instructions([floor, path]), instructions([cli, "scan", "-j", "1", path])
        own = 100.0 * (med(rss) - med(rss0)) * 1024 / size
        row = "| %s | %.1f MB | %.1f M | %.3f s | %.3f s | **%.2fx** | %s | %.1f MB | %.1f%% | %.1f MB (%.1f MB - %.1f MB), %.1f%% %s |" % (
            name, size / 1e6, ops / 1e6, med(fl), med(sc), med(sc) / med(fl), fmt_ins(i_sc, i_fl),
            med(rss) / 1024, 100.0 * med(rss) * 1024 / size, (med(rss) - med(rss0)) / 1024, med(rss) / 1024,
            med(rss0) / 1024, own, "met" if own <= 10 else "NOT MET")
        if base:
            row += " %.3f s | %.2fx | %s |" % (med(bs), med(sc) / med(bs), fmt_ins(i_sc, instructions([base, "scan", path])))
        print(row)
        # pickle.load in a fresh process, plain and preloaded, interleaved
        a, b, ao, bo, af, bf, c = [], [], [], [], [], [], []
        for _ in range(runs):
            t, to, fl_ = subprocess.run([PY, "-c", LOAD, path], env=env, check=True, capture_output=True,
                                        text=True).stdout.split()
            a.append(float(t)); ao.append(float(to)); af.append(int(fl_))
            t, to, fl_ = subprocess.run([PY, "-c", LOAD, path], env=pre, check=True, capture_output=True,
                                        text=True).stdout.split()
            b.append(float(t)); bo.append(float(to)); bf.append(int(fl_))
            t, to, fl_ = subprocess.run([PY, "-c", LOAD, path], env=cold, check=True, capture_output=True,
                                        text=True).stdout.split()
            c.append(float(t))
        loads[name] = (a, b, ao, bo, af, bf, med(sc), c)
    print()
    print("| file | pickle.load CPU plain | preloaded | ratio (target <= 1.10x) | of which open() | "
          "extra minor faults | scan CPU alone | preloaded, no verdict cache | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, (a, b, ao, bo, af, bf, sc, c) in loads.items():
        print("| %s | %.3f s (%s) | %.3f s (%s) | **%.2fx** %s | %.3f s vs %.3f s | %+d | %.3f s | %.3f s (%s) | "
              "**%.2fx** %s |" % (
                  name, med(a), spread(a), med(b), spread(b), med(b) / med(a),
                  "met" if med(b) / med(a) <= 1.10 else "NOT MET", med(bo), med(ao), int(med(bf) - med(af)), sc,
                  med(c), spread(c), med(c) / med(a), "met" if med(c) / med(a) <= 1.10 else "NOT MET"))
    # scan -j 2 vs -j 1 over the installed Python trees
    trees = [t for t in ("/usr/lib/python3.11", "/usr/lib/python3/dist-packages/numpy") if os.path.isdir(t)]
    w1, w2 = [], []
    for _ in range(max(1, runs // 2)):
        for j, acc in (("1", w1), ("2", w2)):
            t = time.perf_counter()
            subprocess.run([cli, "scan", "-j", j] + trees, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            acc.append(time.perf_counter() - t)
    print()
    print("`scan -j 2` vs `-j 1` of %s (wall time, median of %d): %.2f s vs %.2f s, **%.2fx** "
          "(%d cores; the machine is shared, so wall time moves with its load)" % (
              " and ".join(trees), len(w1), med(w2), med(w1), med(w1) / med(w2), os.cpu_count()))


if __name__ == "__main__":
    if sys.argv[1] == "gen":
        gen(sys.argv[2])
    else:
        run(int(sys.argv[2]), *sys.argv[3:])
