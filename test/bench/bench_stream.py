"""bench_stream.py - streaming benchmark for the container layer: torch.save
checkpoints with the same structure (4 tensors + metadata) and tensor data of
64 MiB and 1 GiB, and uncompressed joblib files with the same structure (two
arrays + a dict) and array data of the same sizes, scanned by `safepickle
scan`; reports bytes read (from the scan result) and wall time side by side,
with the full-read cost (cat) of the same file as the reference, and the
1 GiB / 64 MiB ratios. The files live in a temp dir deleted at the end."""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

CLI = sys.argv[1]
SIZES_MIB = [int(x) for x in (sys.argv[2:] or ["64", "1024"])]
RUNS = 5


def timed(cmd, keep=True):
    ts = []
    out = None
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # warm-up, not timed
    for _ in range(RUNS):
        t = time.perf_counter()
        r = subprocess.run(cmd, stdout=subprocess.PIPE if keep else subprocess.DEVNULL, stderr=subprocess.PIPE)
        ts.append(time.perf_counter() - t)
        if r.returncode not in (0, 1):
            raise SystemExit("failed: %s\n%s" % (cmd, r.stderr.decode(errors="replace")))
        out = r.stdout.decode() if keep else None
    return statistics.median(ts), out


def make_torch(path, mib):
    import torch
    n = mib * (1 << 20) // 4 // 4  # float32 elements per tensor, 4 tensors
    sd = {"layer%d.weight" % i: torch.zeros(n) for i in range(4)}
    sd["meta"] = {"epoch": 1, "lr": 0.1}
    torch.save(sd, path)


def make_joblib(path, mib):
    import joblib
    import numpy as np
    n = mib * (1 << 20) // 8 // 2  # float64 elements per array, 2 arrays
    joblib.dump({"a": np.zeros(n), "meta": {"k": 1}, "b": np.zeros(n)}, path)


def measure(kind, make, d):
    rows = []
    for mib in SIZES_MIB:
        path = os.path.join(d, "%s_%dMiB" % (kind, mib))
        make(path, mib)
        size = os.path.getsize(path)
        t_scan, out = timed([CLI, "scan", "--format", "json", path])
        res = json.loads(out)["files"][0]
        t_cat, _ = timed(["cat", path], keep=False)
        rows.append((mib, size, res["bytes_read"], t_scan, t_cat, len(res["streams"])))
        os.unlink(path)
    print("%-16s %14s %12s %10s %12s %12s %8s" % (kind, "file bytes", "bytes read", "read/file",
                                                  "scan (ms)", "cat (ms)", "streams"))
    for mib, size, br, ts, tc, ns in rows:
        print("%-16s %14d %12d %10.2e %12.2f %12.2f %8d" % ("%d MiB of data" % mib, size, br, br / size,
                                                              ts * 1e3, tc * 1e3, ns))
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        print("ratio %d MiB / %d MiB: file size %.1fx, bytes read %.3fx, scan time %.2fx, cat time %.1fx" % (
            b[0], a[0], b[1] / a[1], b[2] / a[2], b[3] / a[3], b[4] / a[4]))
        print("scan time / cat time at %d MiB: %.4f" % (b[0], b[3] / b[4]))


def main():
    d = tempfile.mkdtemp(prefix="sp-bench-stream-")
    try:
        measure("torch zip", make_torch, d)
        measure("joblib", make_joblib, d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
