"""race.py - writer processes race a loader under the preload (issue: the bytes the
loader reads are the bytes that were judged).

A benign file and a malicious file of the same size are built for a loader
(pickle.load, torch.load, joblib.load, pd.read_pickle); a writer process flips
the loaded path between them in one of five ways while a loader process under
the preload loads it again and again:

  inplace   pwrite the other version over the same inode (no truncation)
  truncate  open with O_TRUNC, then write the other version
  rename    write a temporary file, then rename it over the path
  append    the benign file, then the malicious stream appended, then cut back
  mmap      memcpy the other version through a MAP_SHARED mapping (pages stay dirty,
            so no time changes; written back every 2.5 s, after which the next
            write gives the file a new identity)

Every payload appends one line to a marker file, so the marker's line count is
the number of payloads that ran. Without the preload the same races run
payloads (race_control), which shows that the harness can see a success.

    race.py LOADER MODE LAYERS LOADS [--no-preload]
prints one JSON object: {"loads", "ok", "refused", "payloads", ...};
    race.py all [LOADS] [--state FILE] [--shard I/N] [--chunk C]
                              (make race: every configuration, 100000 loads each,
                               resumable from FILE, split into shards)
    race.py report [LOADS] [--state FILE] [--results results.md]
                              (the per-configuration counts so far; make race-report
                               also writes them to test/bench/results.md)"""
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from conftest import BUILD, LIB, PYTHON, clean_env  # noqa: E402

sys.path.insert(0, os.path.join(HERE, "..", "bench"))
from results import lib_digest, write_section  # noqa: E402  (the one writer of results.md)

LOADERS = ("pickle", "torch", "joblib", "pandas")
MODES = ("inplace", "truncate", "rename", "append", "mmap")
LAYERS = ("both", "file")
BIG = 192 * 1024  # a benign prefix larger than one read, so loads read in several calls


def _raw_pair(marker):
    """Two protocol-2 pickles of exactly the same length: a tuple (big string, pad
    string), and a tuple (big string, os.system(cmd)). The part that differs is at
    the end, after the loader has read the big prefix."""
    cmd = ("echo x >> '%s'" % marker).encode()
    head = b"\x80\x02(X" + len(b"a" * BIG).to_bytes(4, "little") + b"a" * BIG
    bad = b"cposix\nsystem\n(S'" + cmd + b"'\ntR"
    pad = len(bad) - len(b"S''\n")
    good = b"S'" + b"z" * pad + b"'\n"
    assert len(good) == len(bad)
    return head + good + b"t.", head + bad + b"t."


def _torch_pair(d, marker):
    """A benign and a malicious torch zip checkpoint, padded to the same size."""
    code = r"""
import os, sys, torch
class Evil:
    def __reduce__(self):
        return (os.system, ("echo x >> '" + sys.argv[2] + "'",))
torch.save({"w": torch.zeros(4), "s": "a" * BIG}, sys.argv[1] + "/good.pt")
torch.save({"w": torch.zeros(4), "s": "a" * BIG, "e": Evil()}, sys.argv[1] + "/bad.pt")
""".replace("BIG", str(BIG))
    subprocess.run([PYTHON, "-c", code, d, marker], check=True, env=clean_env(), timeout=300)
    good = open(os.path.join(d, "good.pt"), "rb").read()
    bad = open(os.path.join(d, "bad.pt"), "rb").read()
    n = max(len(good), len(bad))
    # a zip's end record is found from the end: zeros after it are a comment-less tail
    return good + b"\0" * (n - len(good)), bad + b"\0" * (n - len(bad))


_built = {}


def build(d, loader, marker):
    """The (benign, malicious) pair for a loader, built once per directory."""
    kind = "torch" if loader == "torch" else "raw"
    if (d, kind) not in _built:
        _built[(d, kind)] = _torch_pair(d, marker) if kind == "torch" else _raw_pair(marker)
    return _built[(d, kind)]


WRITER = r"""
import mmap, os, sys, time
path, mode, good, bad, stop = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
g = open(good, "rb").read(); b = open(bad, "rb").read()
m = None
synced = 0.0
parent = os.getppid()
if mode == "mmap":
    fd = os.open(path, os.O_RDWR)
    m = mmap.mmap(fd, len(g), mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
i = 0
while not os.path.exists(stop):
    i += 1
    data = b if i % 2 else g
    if mode == "inplace":
        fd = os.open(path, os.O_WRONLY)
        os.pwrite(fd, data, 0); os.close(fd)
    elif mode == "truncate":
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        os.write(fd, data); os.close(fd)
        time.sleep(0.004 * (i % 3))   # O_TRUNC waits ~4 ms for writeback (ext4) with the file empty: without a pause loads would only ever fail
    elif mode == "rename":
        tmp = path + ".tmp"
        with open(tmp, "wb") as f: f.write(data)
        os.replace(tmp, path)
    elif mode == "append":
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        if i % 2: os.write(fd, b)
        else: os.ftruncate(fd, len(g))
        os.close(fd)
    elif mode == "mmap":
        m[:] = data
        # Every 2.5 s write the pages back (msync): the next write through the
        # mapping then updates mtime and ctime, a new identity that the loader
        # judges afresh, which then stays for 2.5 s, beyond the preload's 2 s
        # "changed lately" window. Without it the identity never changes and
        # the verdict cache answers every open with the verdict of the first
        # version judged: a refusal pins every later load to a refusal.
        if i % 16 == 0 and time.monotonic() - synced > 2.5:
            m.flush(); synced = time.monotonic()
    if i % 64 == 0:
        time.sleep(0.0005)
        if os.getppid() != parent: break   # race.py was killed: no writer left spinning (the loader stops too)
"""

LOADER = r"""
import json, os, pickle, sys
path, loader, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
if loader == "torch":
    import torch
    load = lambda: torch.load(path)
elif loader == "joblib":
    import joblib
    load = lambda: joblib.load(path)
elif loader == "pandas":
    import pandas as pd
    load = lambda: pd.read_pickle(path)
else:
    def load():
        with open(path, "rb") as f:
            out = []
            while True:        # every stream in the file, as a multi-pickle reader does
                try: out.append(pickle.load(f))
                except EOFError: return out
ok = refused = other = 0
errs = {}
parent = os.getppid()
for i in range(n):
    if i % 256 == 0 and os.getppid() != parent:
        sys.exit(3)    # race.py was killed: nobody will read the counts
    try:
        load(); ok += 1
    except (PermissionError, OSError) as e:
        refused += 1; errs[type(e).__name__ + ":" + str(getattr(e, "errno", ""))] = errs.get(type(e).__name__ + ":" + str(getattr(e, "errno", "")), 0) + 1
    except Exception as e:
        other += 1; k = type(e).__name__; errs[k] = errs.get(k, 0) + 1
print(json.dumps({"loads": n, "ok": ok, "refused": refused, "other_errors": other, "errors": errs}))
"""


def policy_file(d, layers):
    p = os.path.join(d, "policy.json")
    with open(p, "w") as f:
        json.dump({"schema": 1, "name": "race-" + layers, "targets": ["python*"],
                   "layers": {"file_hooks": True, "audit_hook": layers == "both",
                              "runtime_behaviour": layers == "both"}}, f)
    return p


def run(loader, mode, layers, loads, preload=True, d=None):
    """One configuration: returns the loader's JSON counts plus "payloads"."""
    own = d is None
    td = tempfile.TemporaryDirectory() if own else None
    d = td.name if own else d
    try:
        marker = os.path.join(d, "payloads")
        good, bad = build(d, loader, marker)
        if os.path.exists(marker):
            os.unlink(marker)
        gp, bp, path = os.path.join(d, "g"), os.path.join(d, "b"), os.path.join(d, "target")
        for p, data in ((gp, good), (bp, bad), (path, good)):
            with open(p, "wb") as f:
                f.write(data)
        stop = os.path.join(d, "stop")
        if os.path.exists(stop):
            os.unlink(stop)
        w = subprocess.Popen([PYTHON, "-c", WRITER, path, mode, gp, bp, stop], env=clean_env())
        env = clean_env(SAFEPICKLE_POLICY=policy_file(d, layers), SAFEPICKLE_LOG="none")
        if preload:
            env["LD_PRELOAD"] = LIB
        try:
            r = subprocess.run([PYTHON, "-c", LOADER, path, loader, str(loads)], env=env,
                               capture_output=True, text=True, timeout=3600)
        finally:
            open(stop, "w").close()
            w.wait(timeout=60)
        try:
            out = json.loads(r.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            raise AssertionError("loader failed: rc=%d\n%s" % (r.returncode, r.stderr[-3000:]))
        out["payloads"] = sum(1 for _ in open(marker)) if os.path.exists(marker) else 0
        out.update(loader=loader, mode=mode, layers=layers, preload=preload)
        return out
    finally:
        if td:
            td.cleanup()


CONFIGS = [(lo, mo, la) for lo in LOADERS for mo in MODES for la in LAYERS]


def lib_id():
    """The library the counts are for: results of another build are not resumed."""
    return lib_digest(LIB)


def _records(path, lib):
    """The state file's records for this library, in order (a line cut by a kill
    is skipped: that chunk runs again)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        for line in f:
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if r.get("lib") == lib:
                yield r


def read_state(path, lib):
    """Per configuration, the sums of the chunks recorded in the state file for
    this library: {(loader, mode, layers): {"loads", "ok", "refused", "other_errors", "payloads"}}."""
    tot = {}
    for r in _records(path, lib):
        t = tot.setdefault((r["loader"], r["mode"], r["layers"]),
                           {"loads": 0, "ok": 0, "refused": 0, "other_errors": 0, "payloads": 0})
        for k in t:
            t[k] += r[k]
    return tot


def recovered(path, lib):
    """{source: loads} of this library's records that carry a `recovered` field:
    counts that were not run against this state file but carried into it from
    an earlier record (a state file lost with its machine, re-entered from the
    results.md section its report wrote). The report names them."""
    out = {}
    for r in _records(path, lib):
        if r.get("recovered"):
            out[r["recovered"]] = out.get(r["recovered"], 0) + r["loads"]
    return out


def append_state(path, rec):
    """One chunk's counts, one line, one write (shards may share the file)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(rec, sort_keys=True) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def shard_of(spec):
    """"I/N" (1-based): this process runs configurations I, I+N, I+2N, ..."""
    i, n = (int(x) for x in spec.split("/"))
    if not 1 <= i <= n:
        raise SystemExit("race.py: bad shard %r (I/N with 1 <= I <= N)" % spec)
    return [c for k, c in enumerate(CONFIGS) if k % n == i - 1]


def report(state, target, lib, results=None):
    """Per-configuration counts from the state file; exit status 1 if any
    payload ran, 2 if a configuration has fewer than target loads. With
    results (a results.md), the counts also become its bench:race section."""
    tot = read_state(state, lib)
    total = bad = short = 0
    md = ["| loader | writer | layers | racing loads | loaded | refused | other errors | payloads |",
          "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    print("%-7s %-9s %-5s %9s %9s %9s %7s %8s" % ("loader", "writer", "layer", "loads", "ok", "refused", "other", "payloads"))
    for c in CONFIGS:
        t = tot.get(c, {"loads": 0, "ok": 0, "refused": 0, "other_errors": 0, "payloads": 0})
        total += t["loads"]
        bad += t["payloads"]
        short += t["loads"] < target
        print("%-7s %-9s %-5s %9d %9d %9d %7d %8d%s" % (c + (t["loads"], t["ok"], t["refused"], t["other_errors"], t["payloads"],
                                                         "" if t["loads"] >= target else "  (short of %d)" % target)))
        md.append("| %s | %s | %s | %d%s | %d | %d | %d | **%d** |" % (
            c + (t["loads"], "" if t["loads"] >= target else " (short of %d)" % target, t["ok"], t["refused"],
                 t["other_errors"], t["payloads"])))
    print("total: %d racing loads, %d payloads; %d of %d configurations short of %d loads (library %s, state %s)" % (
        total, bad, short, len(CONFIGS), target, lib, state))
    carried = recovered(state, lib)
    for src, n in sorted(carried.items()):
        print("  of which %d loads carried from %s" % (n, src))
    note = "".join(" Of these, %d loads were carried into the state file from %s." % (n, src)
                   for src, n in sorted(carried.items()))
    if results:
        write_section("race", "\n".join([
            "## Writers racing loaders (`make race`, then `make race-report`; test/integration/race.py)", "",
            "Each configuration: a writer process flips the file between a benign and a malicious version "
            "of the same size while a loader process under the preload loads it again and again "
            "(test/README.md, \"The race target\"). `payloads`: marker lines the malicious version wrote. "
            "Total: %d racing loads, **%d payloads**; %d of %d configurations short of %d loads. "
            "Library sha256 %s... (the counts of another build are not summed).%s" % (
                total, bad, short, len(CONFIGS), target, lib, note), ""] + md), stamp=True, path=results)
    return 1 if bad else 2 if short else 0


def run_all(loads, state, shard="1/1", chunk=5000):
    """`make race`: each configuration of this shard runs until the state file
    holds `loads` racing loads for it (for this library), in chunks of `chunk`
    recorded as they finish, so a killed run resumes where it stopped and
    shards (other processes or machines, sharing the state file or merging
    theirs) split the work. Prints a line per chunk, then every configuration's
    counts; exit status as report()."""
    lib = lib_id()
    mine = shard_of(shard)
    with tempfile.TemporaryDirectory() as d:
        for c in mine:
            while True:
                done = read_state(state, lib).get(c, {}).get("loads", 0)
                if done >= loads:
                    break
                n = min(chunk, loads - done)
                t0 = time.time()
                r = run(*c, n, d=d)
                rec = {k: r[k] for k in ("loader", "mode", "layers", "loads", "ok", "refused", "other_errors", "payloads")}
                rec["lib"] = lib
                append_state(state, rec)
                print("%-7s %-9s %-5s +%d loads (%d of %d) payloads %d  (%.0f s)" % (
                    c + (n, done + n, loads, r["payloads"], time.time() - t0)), flush=True)
    return report(state, loads, lib)


def main(argv):
    if argv and argv[0] in ("all", "report"):
        import argparse
        ap = argparse.ArgumentParser(prog="race.py " + argv[0])
        ap.add_argument("loads", nargs="?", type=int, default=100000)
        ap.add_argument("--state", default=os.path.join(BUILD, "race-state.jsonl"))
        ap.add_argument("--shard", default="1/1")
        ap.add_argument("--chunk", type=int, default=5000)
        ap.add_argument("--results", default=None, help="report: also write the counts to this results.md")
        a = ap.parse_args(argv[1:])
        if argv[0] == "report":
            return report(a.state, a.loads, lib_id(), a.results)
        return run_all(a.loads, a.state, a.shard, a.chunk)
    loader, mode, layers, loads = argv[0], argv[1], argv[2], int(argv[3])
    res = run(loader, mode, layers, loads, preload="--no-preload" not in argv)
    print(json.dumps(res))
    return 0 if res["payloads"] == 0 or "--no-preload" in argv else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
