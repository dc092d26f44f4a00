"""test_scan_jobs.py - `safepickle scan -j N`: files scanned by N threads are
printed exactly as with -j 1 (same bytes, same order, same stderr, same exit
status) in every format, over a directory walk and explicit paths, with
malicious, benign, non-pickle and missing files, symlinks to scanned files and
directories and a FIFO mixed. The
default (no -j) is the number of cores and gives the same output too."""
import os
import pickle
import subprocess

import pytest

from conftest import PYTHON, run_cli

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    d = tmp_path_factory.mktemp("jobs")
    mal = d / "sub" / "malicious"
    mal.mkdir(parents=True)
    subprocess.run([PYTHON, os.path.join(HERE, "threatgen.py"), "malicious", str(mal), str(d / "markers")],
                   check=True, capture_output=True, timeout=300)
    ben = d / "benign"
    ben.mkdir()
    for i in range(40):   # sizes vary so that threads finish out of order
        obj = {"i": i, "rows": [list(range(i * 50))] * (i % 7), "s": "x" * (i * 997)}
        (ben / ("b%02d.pkl" % i)).write_bytes(pickle.dumps(obj, protocol=i % 6))
    (ben / "big.pkl").write_bytes(pickle.dumps([{"k": j, "v": str(j)} for j in range(150000)], protocol=4))
    (d / "notes.txt").write_text("not a pickle\n" * 100)
    (d / "empty.bin").write_bytes(b"")
    # walk entries that are not scans: a second path to a scanned file (its
    # note names the verdict of the first, which a worker may still be
    # computing), a linked directory, a FIFO (skipped, never opened)
    os.symlink(ben / "b05.pkl", d / "zz_again.pkl")
    os.symlink(mal, d / "zz_dir_again")
    os.mkfifo(d / "zz_fifo")
    return d


def scan(*args):
    p = run_cli("scan", *args)
    return p.returncode, p.stdout, p.stderr


@pytest.mark.parametrize("fmt", ["json", "text", "sarif"])
def test_jobs_output_identical_to_one_job(tree, fmt):
    paths = [str(tree), str(tree / "missing.pkl"), str(tree / "benign" / "b03.pkl")]
    if fmt == "text":
        paths.insert(0, "-v")  # every file's IR, so that any reordering shows
    one = scan("--format", fmt, "-j", "1", *paths)
    assert one[0] in (1, 2) and len(one[1]) > 10000
    assert "missing.pkl" in one[2]               # the I/O error is on stderr, in order
    for j in ("2", "3", "16"):
        assert scan("--format", fmt, "-j", j, *paths) == one, "-j %s differs from -j 1" % j
    assert scan("--format", fmt, "--jobs=2", *paths) == one
    assert scan("--format", fmt, *paths) == one     # default: the number of cores


def test_jobs_sees_every_file_once(tree):
    rc, out, _ = scan("--format", "text", "-v", "-j", "4", str(tree))
    want = sum(1 for r, _, fs in os.walk(tree) for f in fs
               if os.path.isfile(os.path.join(r, f)) and not os.path.islink(os.path.join(r, f)))
    assert ("summary: %d files" % want) in out.splitlines()[-1]
    assert "zz_again.pkl -> " in out and "scanned once: verdict safe" in out


def test_jobs_usage_errors(tree):
    for bad in (["-j", "0"], ["-j", "x"], ["-j"], ["--jobs=-3"], ["-j", "100000"]):
        rc, _, err = scan(*bad, str(tree))
        assert rc == 2 and "-j takes" in err, bad
