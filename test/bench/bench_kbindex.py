"""bench_kbindex.py - the cost of `safepickle kb index` over the whole environment of
/usr/bin/python3, side by side in one run:

  serial, cold     --jobs 1, no cache (every file parsed in one process)
  parallel, cold   --jobs NCPU, an empty cache (written)
  parallel, warm   --jobs NCPU, the cache just written (nothing changed: nothing parsed)
  before           (only with --before REV) the indexer of git revision REV, which kept
                   every module's AST until the end

For each: CPU time (user + sys of the whole process tree, from wait4), the largest single
process (ru_maxrss of the tree) and the peak of the tree's summed RSS (sampled from /proc
every 50 ms), wall time. One run per configuration (a full index is minutes of CPU on this
shared machine); the outputs are compared line by line below the header, which they must
match exactly. Usage: bench_kbindex.py BUILD [--before REV] [--packages A,B]"""
import os
import resource
import subprocess
import sys
import tempfile
import time

BUILD = os.path.abspath(sys.argv[1])
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
args = sys.argv[2:]
BEFORE = args[args.index("--before") + 1] if "--before" in args else None
PACKAGES = args[args.index("--packages") + 1] if "--packages" in args else None
NCPU = len(os.sched_getaffinity(0))


def tree_rss(root):
    """Summed RSS (KiB) of root and its descendants."""
    kids, rss = {}, {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % p) as f:
                st = f.read().rsplit(")", 1)[1].split()
            kids.setdefault(int(st[1]), []).append(int(p))
            rss[int(p)] = int(st[21]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [root]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo.extend(kids.get(p, []))
    return total


def measure(cmd):
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        peak = max(peak, tree_rss(p.pid))
        time.sleep(0.05)
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit("bench_kbindex: %s failed: %s" % (" ".join(cmd), err[-2000:]))
    # ru: this child and the descendants it waited for (the indexer and its workers)
    return {"cpu": ru.ru_utime + ru.ru_stime, "maxrss": ru.ru_maxrss, "tree": peak,
            "wall": time.monotonic() - t0, "msg": err.strip().splitlines()[-1] if err.strip() else ""}


def body(path):
    with open(path, encoding="utf-8") as f:
        return [ln for ln in f if not ln.startswith("#")]


def same_but_sink_choice(a, b):
    """The number of lines where only the sink category differs, when everything else is the
    same (the same lines in the same order, the same names reaching a sink, the same inert
    names); None otherwise. The indexer before followed callees in set order (string hashing
    is seeded per process), so a name reaching several sinks at the same depth could be given
    any of them; which names reach a sink does not depend on that order."""
    if len(a) != len(b):
        return None
    n = 0
    for x, y in zip(a, b):
        if x == y:
            continue
        kx, cx = x.rstrip("\n").rsplit("\t", 1)
        ky, cy = y.rstrip("\n").rsplit("\t", 1)
        if kx != ky or x.startswith("@") or "data" in (cx, cy):
            return None
        n += 1
    return n


def main():
    d = tempfile.mkdtemp(prefix="bench-kbindex-")
    try:
        run(d)
    finally:
        for f in os.listdir(d):
            os.unlink(os.path.join(d, f))
        os.rmdir(d)


def run(d):
    cli = os.path.join(BUILD, "safepickle")
    extra = ["--packages", PACKAGES] if PACKAGES else []
    cache = os.path.join(d, "cache")
    confs = [("serial, cold", ["--jobs", "1"]),
             ("parallel, cold", ["--jobs", str(NCPU), "--cache", cache]),
             ("parallel, warm", ["--jobs", str(NCPU), "--cache", cache])]
    if BEFORE:
        old = os.path.join(d, "kbindex_before.py")
        with open(old, "wb") as f:
            f.write(subprocess.run(["git", "-C", REPO, "show", BEFORE + ":analyzer/cli/kbindex.py"],
                                   check=True, capture_output=True).stdout)
        wrap = os.path.join(d, "before.sh")   # what the CLI runs as PY -I - ARGS: the old script instead
        with open(wrap, "w") as f:
            f.write("#!/bin/sh\nshift 2\nexec /usr/bin/python3 -I %s \"$@\"\n" % old)
        os.chmod(wrap, 0o755)
        confs.insert(0, ("before (%s)" % BEFORE, ["--python", wrap]))
    rows, outs = [], []
    for name, opts in confs:
        out = os.path.join(d, "idx%d.tsv" % len(outs))
        m = measure([cli, "kb", "index", "--out", out] + extra + opts)
        rows.append((name, m))
        outs.append(out)
        print("%-16s %s" % (name, m["msg"]), file=sys.stderr)
    ref = body(outs[-1])
    print("kb index of %s (%d CPUs%s): %d lines written\n" % (
        "/usr/bin/python3", NCPU, ", --packages " + PACKAGES if PACKAGES else ", the whole environment", len(ref)))
    base = rows[0][1]
    print("| configuration | CPU s | wall s | largest process RSS MiB | process tree RSS MiB (peak) | "
          "CPU vs %s | tree RSS vs %s | same output |" % ((rows[0][0],) * 2))
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    notes = []
    for (name, m), out in zip(rows, outs):
        b = body(out)
        same = "yes" if b == ref else "NO"
        if b != ref and name.startswith("before"):
            n = same_but_sink_choice(b, ref)
            if n is not None:
                same = "yes but %d sink categories" % n
                notes.append("`%s` wrote the same lines except the sink category of %d names that reach several "
                             "sinks at the same depth (it followed callees in hash order; now sorted)." % (name, n))
        print("| %s | %.1f | %.1f | %.0f | %.0f | %.2f | %.3f | %s |" % (
            name, m["cpu"], m["wall"], m["maxrss"] / 1024, m["tree"] / 1024, m["cpu"] / base["cpu"],
            m["tree"] / base["tree"], same))
        if same == "NO":
            sys.exit("bench_kbindex: %s wrote another index" % name)
    for n in notes:
        print("\n" + n)
    print("\nOne run each (a full index is minutes of CPU on this shared machine); CPU is user + sys "
          "of the whole process tree (wait4), the largest process is ru_maxrss, the tree RSS the peak "
          "of the summed RSS of the indexer and its workers sampled every 50 ms.")


main()
