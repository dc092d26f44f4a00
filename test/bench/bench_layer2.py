"""bench_layer2.py - helper of bench_layer2.sh: layer 2 with bytes first, side
by side in one run, configurations interleaved, RUNS fresh /usr/bin/python3
per cell. Reports medians (ms) and the ratio of medians against no preload,
and writes them to test/bench/results.md (section bench:bench_layer2). With a
third argument (BASE: an older libsafepickle.so) that library is a third
configuration, interleaved with the others, and gets its own ratio column.
Workloads:
  loads_100k_objects   pickle.loads of 100 000 small objects (one scan of the bytes)
  import_torch         import torch (thousands of audit events, no unpickle)
  distinct_globals     pickle.loads of 200 000 distinct dotted globals (C.a0 ... C.a199999
                       of a user module): the analyzer's max_kb_lookups stops the judgement
                       and on_limit refuses (time to the refusal), as layer 1 does for a file
  loads_findclass      50 000 un-memoised GLOBAL collections.OrderedDict + REDUCE
  stream_5000_pickles  pickle.load 5 000 times from one io.BytesIO of 5 000 small pickles
                       (each load judges the one pickle it reads)
  loads_same_bytes     the same 10 000-object pickle loaded 20 times in one process
                       (bytes judged and allowed are remembered by digest)
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap

from results import write_section

LIB, RUNS = sys.argv[1], int(sys.argv[2])
BASE = sys.argv[3] if len(sys.argv) > 3 else None
HERE = os.path.dirname(os.path.abspath(__file__))
PY = "/usr/bin/python3"

TIMED = textwrap.dedent("""
    import json, pickle, time
    def timed(f):
        c, t = time.process_time(), time.perf_counter()
        try:
            f(); ok = "loaded"
        except Exception as e:
            ok = type(e).__name__
        return (time.process_time() - c) * 1000, (time.perf_counter() - t) * 1000, ok
""")

WORKLOADS = {
    "loads_100k_objects": TIMED + textwrap.dedent("""
        import datetime, collections
        P = collections.namedtuple("P", "x y")
        data = [{"i": i, "s": str(i), "t": (i, 1.5), "d": datetime.date(2024, 1, 1 + i % 28)} for i in range(100000)]
        blob = pickle.dumps(data, protocol=4)
        print(json.dumps(timed(lambda: pickle.loads(blob))))
    """),
    "import_torch": textwrap.dedent("""
        import json, time
        c, t = time.process_time(), time.perf_counter()
        import torch
        print(json.dumps([(time.process_time() - c) * 1000, (time.perf_counter() - t) * 1000, "imported"]))
    """),
    "distinct_globals": TIMED + textwrap.dedent("""
        import sys
        sys.path.insert(0, DIR)
        import l2many
        blob = bytes(b ^ 0x5A for b in open(DIR + "/distinct.x", "rb").read())
        print(json.dumps(timed(lambda: pickle.loads(blob))))
    """),
    "loads_findclass": TIMED + textwrap.dedent("""
        body = b"(" + b"ccollections\\nOrderedDict\\n)R" * 50000 + b"l."
        print(json.dumps(timed(lambda: pickle.loads(body))))
    """),
    "stream_5000_pickles": TIMED + textwrap.dedent("""
        import io
        buf = io.BytesIO(b"".join(pickle.dumps({"i": i, "s": "x" * 200}, protocol=4) for i in range(5000)))
        def all_of_it():
            for _ in range(5000):
                pickle.load(buf)
        print(json.dumps(timed(all_of_it)))
    """),
    "loads_same_bytes": TIMED + textwrap.dedent("""
        import datetime
        data = [{"i": i, "s": str(i), "t": (i, 1.5), "d": datetime.date(2024, 1, 1 + i % 28)} for i in range(10000)]
        blob = pickle.dumps(data, protocol=4)
        print(json.dumps(timed(lambda: [pickle.loads(blob) for _ in range(20)])))
    """),
}


def make_distinct(d, n=200000):
    with open(os.path.join(d, "l2many.py"), "w") as f:
        f.write("C = type('C', (), {'a%%d' %% i: i for i in range(%d)})\n" % n)
    b = bytearray(b"\x80\x04](")
    for i in range(n):
        m, s = b"l2many", ("C.a%d" % i).encode()
        b += b"\x8c" + bytes([len(m)]) + m + b"\x8c" + bytes([len(s)]) + s + b"\x93"
    b += b"e."
    with open(os.path.join(d, "distinct.x"), "wb") as f:  # masked: no file hook sees a pickle
        f.write(bytes(x ^ 0x5A for x in b))


def main():
    base = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("SAFEPICKLE_")}
    base["OMP_NUM_THREADS"] = "1"
    configs = {"no preload": base, "preload": dict(base, LD_PRELOAD=LIB, SAFEPICKLE_LOG="none")}
    if BASE:
        configs["base"] = dict(base, LD_PRELOAD=BASE, SAFEPICKLE_LOG="none")
    with tempfile.TemporaryDirectory() as d:
        make_distinct(d)
        res = {(w, c): [] for w in WORKLOADS for c in configs}     # (cpu ms, wall ms) per run
        outcome = {}
        for _ in range(RUNS):
            for w, code in WORKLOADS.items():
                for c, env in configs.items():
                    r = subprocess.run([PY, "-c", "DIR = %r\n" % d + code], env=env, capture_output=True,
                                       text=True, timeout=900)
                    if r.returncode != 0:
                        sys.exit("%s / %s failed: %s" % (w, c, r.stderr[-2000:]))
                    cpu, wall, ok = json.loads(r.stdout.strip().splitlines()[-1])
                    res[(w, c)].append((cpu, wall))
                    outcome[(w, c)] = ok
    med = lambda w, c, k: statistics.median(x[k] for x in res[(w, c)])

    def ratio(w, c):
        """median CPU ratio against no preload, the paired per-run spread, and the wall ratio"""
        pairs = [p[0] / q[0] for p, q in zip(res[(w, c)], res[(w, "no preload")])]
        return "**%.2f** (%.2f-%.2f) | %.2f" % (med(w, c, 0) / med(w, "no preload", 0), min(pairs), max(pairs),
                                                  med(w, c, 1) / med(w, "no preload", 1))
    lines = ["runs per cell: %d, interleaved (one process per run); times measured inside the process around "
             "the workload: CPU = time.process_time() (user + sys of every thread), wall = time.perf_counter(); "
             "ratios are medians of CPU time, spread = min-max of the per-run ratios; load average at the end: %s%s" % (
                 RUNS, " ".join(open("/proc/loadavg").read().split()[:3]),
                 "; base: %s" % os.path.basename(os.path.dirname(BASE)) if BASE else ""), ""]
    sides = [c for c in configs if c != "no preload"]
    lines.append("| workload | no preload, CPU ms | " + " | ".join(
        "%s, CPU ms | %s / no preload, CPU (spread) | wall" % (c, c) for c in sides) + " | outcome with the preload |")
    lines.append("| --- " * (3 + 3 * len(sides)) + "|")
    for w in WORKLOADS:
        lines.append("| %s | %.1f | " % (w, med(w, "no preload", 0)) + " | ".join(
            "%.1f | %s" % (med(w, c, 0), ratio(w, c)) for c in sides) + " | %s |" % outcome[(w, "preload")])
    text = "\n".join(lines) + "\n"
    print(text)
    write_section("bench_layer2", text)


if __name__ == "__main__":
    main()
