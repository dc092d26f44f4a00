"""bench_audithook.py - helper of bench_audithook.sh: runs each workload in a
fresh /usr/bin/python3 per configuration, interleaved, RUNS times, and prints
the best and the median (ms) of each cell and the ratios of the bests (the
best is the least disturbed by other load on a shared machine). Timing is
taken inside the child around the workload only (start-up excluded); a loads
workload reports its best of 5 loads."""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap

LIB, RUNS = sys.argv[1], int(sys.argv[2])
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PY = "/usr/bin/python3"

WORKLOADS = {
    "loads_small_objects": textwrap.dedent("""
        import datetime, pickle, time, collections
        P = collections.namedtuple("P", "x y")
        data = [{"i": i, "s": str(i), "t": (i, 1.5), "p": P(i, -i), "d": datetime.date(2024, 1, 1 + i % 28)}
                for i in range(100000)]
        blob = pickle.dumps(data, protocol=4)
        best = 1e9
        for _ in range(5):
            t = time.perf_counter()
            pickle.loads(blob)
            best = min(best, time.perf_counter() - t)
        print(json.dumps(best * 1000))
    """),
    "loads_findclass_heavy": textwrap.dedent("""
        import pickle, time
        # 50000 x (GLOBAL collections OrderedDict, EMPTY_TUPLE, REDUCE, APPEND) - no memo
        body = b"(" + b"ccollections\\nOrderedDict\\n)R" * 50000 + b"l."
        best = 1e9
        for _ in range(5):
            t = time.perf_counter()
            pickle.loads(body)
            best = min(best, time.perf_counter() - t)
        print(json.dumps(best * 1000))
    """),
    "import_torch": textwrap.dedent("""
        import time
        t = time.perf_counter()
        import torch
        print(json.dumps((time.perf_counter() - t) * 1000))
    """),
}


def policy(d, hook):
    with open(os.path.join(REPO, "policies", "default.json")) as f:
        doc = json.load(f)
    doc["name"] = "bench-hook-%s" % ("on" if hook else "off")
    doc.setdefault("layers", {})["audit_hook"] = hook
    p = os.path.join(d, doc["name"] + ".json")
    with open(p, "w") as f:
        json.dump(doc, f)
    return p


def main():
    base = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("SAFEPICKLE_")}
    base["OMP_NUM_THREADS"] = "1"
    with tempfile.TemporaryDirectory() as d:
        configs = {
            "no preload": base,
            "hook off": dict(base, LD_PRELOAD=LIB, SAFEPICKLE_POLICY=policy(d, False)),
            "hook on": dict(base, LD_PRELOAD=LIB, SAFEPICKLE_POLICY=policy(d, True)),
        }
        res = {(w, c): [] for w in WORKLOADS for c in configs}
        for _ in range(RUNS):
            for w, code in WORKLOADS.items():
                for c, env in configs.items():
                    r = subprocess.run([PY, "-c", "import json\n" + code], env=env, capture_output=True,
                                       text=True, timeout=600)
                    if r.returncode != 0:
                        sys.exit("%s / %s failed: %s" % (w, c, r.stderr[-2000:]))
                    res[(w, c)].append(json.loads(r.stdout.strip().splitlines()[-1]))
    print("runs per cell: %d; load average: %s" % (RUNS, open("/proc/loadavg").read().split()[:3]))
    print("| workload | no preload, ms best (median) | hook off, ms best (median) | hook on, ms best (median) "
          "| hook on / hook off | hook on / no preload |")
    print("| --- | --- | --- | --- | --- | --- |")
    for w in WORKLOADS:
        b = {c: min(res[(w, c)]) for c in configs}
        m = {c: statistics.median(res[(w, c)]) for c in configs}
        print("| %s | %.1f (%.1f) | %.1f (%.1f) | %.1f (%.1f) | %.3f | %.3f |" % (
            w, b["no preload"], m["no preload"], b["hook off"], m["hook off"], b["hook on"], m["hook on"],
            b["hook on"] / b["hook off"], b["hook on"] / b["no preload"]))


if __name__ == "__main__":
    main()
