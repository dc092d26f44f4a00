"""bench_open_budget.py - how long can one open take under the default policy?

The file: a torch.save checkpoint rebuilt with N extra stored members in front
of it, each a nested gzip bomb (gzip(gzip(b"N0" * 32 Mi)): 404 bytes that
decompress to 64 MiB which the container layer sees as a plausible pickle and
runs through the VM). torch.load never reads those members; before the
per-open budget the preload examined every one of them (over a minute).

Measured, side by side in one run, median of R runs each (wall clock of one
`open()` of the file under the preload, in a process that has already loaded
the preload and its policy):
  - the bomb file under the default policy (the budget is what bounds it);
  - the bomb file under the default policy with max_open_ms lowered to 5 s
    (shows the bound follows the limit);
  - the same checkpoint without the bomb members (the ordinary cost).
Results go to the bench:open_budget section of test/bench/results.md."""
import gzip
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import zipfile

from results import write_section

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = sys.argv[1]
MEMBERS = int(sys.argv[2]) if len(sys.argv) > 2 else 500
RUNS = int(sys.argv[3]) if len(sys.argv) > 3 else 3
LIB = os.path.join(BUILD, "libsafepickle.so")
DEFAULT_POLICY = os.path.join(HERE, "..", "..", "policies", "default.json")

OPEN_ONE = r'''
import sys, time
t = time.monotonic()
c = time.process_time()
try:
    open(sys.argv[1], "rb").close()
    r = "allowed"
except PermissionError:
    r = "refused"
print("%s %.3f %.3f" % (r, time.monotonic() - t, time.process_time() - c))
'''


def build(d):
    import torch  # noqa: F401  (the real writer)
    b = io.BytesIO()
    torch.save({"w": torch.arange(1000.0), "meta": {"epoch": 3}}, b)
    src = zipfile.ZipFile(io.BytesIO(b.getvalue()))
    bomb = gzip.compress(gzip.compress(b"N0" * (32 << 20), 9), 9)
    bombed, plain = os.path.join(d, "bombed.pt"), os.path.join(d, "plain.pt")
    for path, n in ((bombed, MEMBERS), (plain, 0)):
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
            for i in range(n):
                z.writestr("ckpt/extra/b%03d" % i, bomb)
            for name in src.namelist():
                z.writestr("ckpt/" + name.split("/", 1)[1], src.read(name))
    return bombed, plain, len(bomb)


def one_open(path, policy):
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("SAFEPICKLE_")}
    env["LD_PRELOAD"] = LIB
    env["SAFEPICKLE_POLICY"] = policy
    env["SAFEPICKLE_LOG"] = os.devnull
    env["SAFEPICKLE_CACHE"] = "off"  # every open is judged: no persistent verdict cache
    p = subprocess.run(["/usr/bin/python3", "-c", OPEN_ONE, path], env=env, capture_output=True, text=True,
                       timeout=3600)
    verdict, secs, cpu = p.stdout.split()
    return verdict, float(secs), float(cpu)


def main():
    with tempfile.TemporaryDirectory() as d:
        bombed, plain, bomb_size = build(d)
        pol5 = os.path.join(d, "budget5s.json")
        with open(DEFAULT_POLICY) as f:
            doc = json.load(f)
        doc.setdefault("limits", {})["max_open_ms"] = 5000
        with open(pol5, "w") as f:
            json.dump(doc, f)
        sides = [("bomb file, default policy (max_open_ms 30000)", bombed, DEFAULT_POLICY),
                 ("bomb file, max_open_ms 5000", bombed, pol5),
                 ("same checkpoint without the bombs, default policy", plain, DEFAULT_POLICY)]
        times = {s[0]: [] for s in sides}
        cpus = {s[0]: [] for s in sides}
        verdicts = {}
        for _ in range(RUNS):  # alternate the sides within each round
            for name, path, pol in sides:
                v, t, c = one_open(path, pol)
                times[name].append(t)
                cpus[name].append(c)
                verdicts[name] = v
        size = os.path.getsize(bombed)
        base = statistics.median(times[sides[2][0]])
        rows = []
        for name, path, _ in sides:
            m = statistics.median(times[name])
            rows.append("| %s | %s | %d | %s | %.3f s | %.3f s | %.0fx |" % (
                name, "{:,}".format(os.path.getsize(path)), MEMBERS if path == bombed else 0, verdicts[name], m,
                statistics.median(cpus[name]), m / base if base else 0))
    text = "\n".join([
        "### bench_open_budget: the worst case of one open under the default budget",
        "",
        "One `open()` under the preload (wall clock, median of %d alternating runs, measured inside the" % RUNS,
        "process) of a torch zip whose %d ignored members are nested gzip bombs (%d bytes -> 64 MiB of a" % (
            MEMBERS, bomb_size),
        "plausible pickle each). Before the per-open budget this open took minutes (issue 12); with",
        "the budget alone it took the whole max_open_ms (30 s); the open's decompression ratio",
        "(max_decomp_ratio over all its wrappers) now ends it after 256 MiB of output. CPU is the",
        "process's CPU time during the open (wall clock also counts the machine's other load; load",
        "average when run: %s)." % " ".join("%.1f" % x for x in os.getloadavg()),
        "",
        "| file | size (bytes) | bomb members | result | open() median | CPU median | vs. plain |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ] + rows + [""])
    print(text)
    write_section("open_budget", text)


if __name__ == "__main__":
    main()
