"""test_index.py - the environment index (`safepickle kb index`, analyzer/cli/kbindex.py).

Generalisation: the index is built for a package the knowledge base never listed (`py`;
`tornado` too with SAFEPICKLE_FULL=1); every function, method and class the index says
reaches a sink is called from a pickle and must be malicious with the index loaded - no
rule is written for any of them. Every name it proves inert is safe to call (precision).
A requirements file that reads as `GLOBAL overage.pytest` is not a reference once the
index says `overage` cannot be imported. The time the index takes is printed."""
import json
import os
import time

import pytest

from conftest import run_cli, run_py
from spgen import Asm

PACKAGES = ["py"] + (["tornado"] if os.environ.get("SAFEPICKLE_FULL") else [])


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    out = tmp_path_factory.mktemp("idx") / "kb-index.tsv"
    t0 = time.monotonic()
    r = run_cli("kb", "index", "--out", out, "--packages", ",".join(PACKAGES), timeout=1200)
    assert r.returncode == 0, r.stderr
    print("kb index of %s: %.1f s (%s)" % (PACKAGES, time.monotonic() - t0, r.stderr.strip()))
    rows = {}
    for line in open(out):
        if line.startswith(("#", "@")):
            continue
        k, cat = line.rstrip("\n").split("\t")
        rows[k] = cat
    return str(out), rows


def _scan(paths, idx):
    out = {}
    for i in range(0, len(paths), 400):
        r = run_cli("scan", "--format", "json", *paths[i:i + 400], env={"SAFEPICKLE_KB_INDEX": idx})
        for f in json.loads(r.stdout)["files"]:
            out[f["path"]] = f["verdict"]
    return out


def _call(tmp_path, rows, tag):
    paths = []
    for k, key in enumerate(sorted(rows)):
        mod, qual = key.split(":", 1)
        p = tmp_path / ("%s_%d.pkl" % (tag, k))
        p.write_bytes(Asm(4).global_(mod, qual).mark().push("x").tuple_().reduce().stop())
        paths.append((key, str(p)))
    return paths


def test_index_generalises_to_an_unlisted_package(tmp_path, index):
    idx, rows = index
    sinks = {k: c for k, c in rows.items() if c != "data" and k.split(".")[0].split(":")[0] in PACKAGES}
    assert len(sinks) > 30, len(sinks)
    paths = _call(tmp_path, sinks, "sink")
    with_idx = _scan([p for _, p in paths], idx)
    without = _scan([p for _, p in paths], "")
    bad = [k for k, p in paths if with_idx[p] != "malicious"]
    print("index: %d sink-reaching names in %s; malicious with the index: %d, without it: %d"
          % (len(sinks), PACKAGES, len(paths) - len(bad), sum(v == "malicious" for v in without.values())))
    assert not bad, bad[:20]


def test_index_proves_inert_names_safe(tmp_path, index):
    idx, rows = index
    # dunder attributes stay reflection whatever the index says (Class.__init__ called by name)
    inert = {k: c for k, c in rows.items() if c == "data" and k.split(":")[0].split(".")[0] in PACKAGES
             and "__" not in k.split(":")[1]}
    inert = dict(sorted(inert.items())[:400])
    assert len(inert) > 50
    paths = _call(tmp_path, inert, "inert")
    v = _scan([p for _, p in paths], idx)
    bad = [k for k, p in paths if v[p] != "safe"]
    print("index: %d inert names called: %d safe" % (len(paths), len(paths) - len(bad)))
    assert not bad, bad[:20]


def test_requirements_file_is_not_a_reference_with_the_index(tmp_path, index):
    idx, _ = index
    p = tmp_path / "requirements.txt"
    p.write_text("coverage\npytest\n")
    code = ("import pickle, sys\nb = set(sys.modules)\ntry:\n    pickle.load(open(%r, 'rb'))\n"
            "except Exception as e:\n    print('FAILS', type(e).__name__)\n" % str(p))
    r = run_py(code, preload=False)
    assert "FAILS ModuleNotFoundError" in r.stdout, r.stdout   # `import overage` fails
    assert _scan([str(p)], idx)[str(p)] == "safe"
    r = run_cli("kb", "status", env={"SAFEPICKLE_KB_INDEX": idx})
    assert "entries" in r.stdout, r.stdout
