"""test_differential.py - the VM against CPython's own unpicklers.

diffgen.py builds >= 10,000 pickles (real objects at every protocol, every
construction class of threats.md B and C, and mutated streams: byte flips,
truncations, splices of payloads into benign streams) and records every
find_class call of the C `_pickle.Unpickler` (over io.BytesIO and over a
buffered file with peek(), which read FRAMEs differently) and the pure-Python
`pickle._Unpickler` (stubbed: nothing real runs). The VM (through the small
vmjson helper, one process for all files, zero-copy and windowed readers)
must report every one of those globals in its IR. Misses are counted and
any miss fails the test."""
import json
import os
import subprocess

import pytest

from conftest import BUILD, PYTHON, REPO

HERE = os.path.dirname(os.path.abspath(__file__))
N_MUTANTS = int(os.environ.get("SP_DIFF_MUTANTS", "10500"))


@pytest.fixture(scope="module")
def vmjson(tmp_path_factory):
    """Build the helper against the analyzer library of this build."""
    out = str(tmp_path_factory.mktemp("vmjson") / "vmjson")
    lib = os.path.join(BUILD, "libspa.a")
    if not os.path.exists(lib):
        pytest.fail("missing %s: run make first" % lib)
    subprocess.run(["cc", "-std=gnu11", "-O1", "-D_GNU_SOURCE", "-I" + os.path.join(REPO, "analyzer"),
                    "-o", out, os.path.join(HERE, "vmjson.c"), lib,
                    "-lcjson", "-lz", "-llzma", "-lbz2", "-lzstd", "-llz4", "-lm"], check=True)
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("diffcorpus"))
    subprocess.run([PYTHON, os.path.join(HERE, "diffgen.py"), d, str(N_MUTANTS), "20261126"],
                   check=True, timeout=900, capture_output=True)
    with open(os.path.join(d, "recorded.json")) as f:
        return d, json.load(f)


def run_vm(vmjson, d, names, fd=False, general=False, nokinds=False, scan=False):
    args = ([vmjson] + (["--fd"] if fd else []) + (["--general"] if general else []) +
            (["--nokinds"] if nokinds else []) + (["--scan"] if scan else []) + ["--list"])
    p = subprocess.run(args, input="\n".join(os.path.join(d, n) for n in names), capture_output=True,
                       text=True, timeout=600, check=True)
    res = {}
    for line in p.stdout.split("\n"):
        if not line:
            continue
        o = json.loads(line)
        res[os.path.basename(o["path"])] = o
    return res


def _cut(s):
    """Names in the IR are C strings: a name with a NUL (which no import can
    resolve: CPython raises 'embedded null character') is compared up to it."""
    return s.split("\x00")[0]


def misses(recorded, ours):
    out = []
    for name, rec in recorded.items():
        have = {(m, n) for m, n, _, _ in ours[name]["imports"]}
        for who in ("c", "cpeek", "py"):
            for m, n in rec[who]:
                if m == "<timeout>":
                    continue
                if (_cut(m), _cut(n)) not in have:
                    out.append((name, who, m, n))
    return out


def test_corpus_is_big_and_varied(corpus):
    d, rec = corpus
    assert sum(1 for n in rec if n.startswith("mut")) >= 10000
    assert sum(1 for n in rec if n.startswith("threat_")) >= 60
    # CPython resolves globals in a good share of the corpus, so the comparison has teeth
    assert sum(1 for r in rec.values() if r["c"]) > 3000
    assert sum(1 for r in rec.values() if r["py"]) > 3000


@pytest.mark.parametrize("fd", [False, True], ids=["zero-copy", "windowed"])
def test_every_global_cpython_resolves_is_in_our_ir(corpus, vmjson, fd):
    d, rec = corpus
    ours = run_vm(vmjson, d, sorted(rec), fd=fd)
    assert set(ours) == set(rec)
    m = misses(rec, ours)
    total = sum(len(r["c"]) + len(r["cpeek"]) + len(r["py"]) for r in rec.values())
    print("globals resolved by CPython: %d, missed by the VM: %d" % (total, len(m)))
    assert not m, "VM missed %d globals, e.g. %r" % (len(m), m[:10])


@pytest.mark.parametrize("fd", [False, True], ids=["zero-copy", "windowed"])
def test_fast_loop_gives_the_general_paths_report(corpus, vmjson, fd):
    """The VM's fast loop (hot opcodes decoded straight from the reader's
    window) and its kinds-only path (data-only streams run on a stack of
    kinds, no values) are optimisations only: over the whole corpus, the full
    report (every IR entry, value, error and offset) of the default VM (both),
    of the fast loop alone and of the general path alone are the same."""
    d, rec = corpus
    kinds = run_vm(vmjson, d, sorted(rec), fd=fd)
    fast = run_vm(vmjson, d, sorted(rec), fd=fd, nokinds=True)
    general = run_vm(vmjson, d, sorted(rec), fd=fd, general=True)
    assert set(kinds) == set(fast) == set(general) == set(rec)
    diff = [n for n in rec if fast[n] != general[n]]
    assert not diff, "fast loop and general path differ on %d files, e.g. %r" % (len(diff), diff[:5])
    diff = [n for n in rec if kinds[n] != general[n]]
    assert not diff, "kinds-only path and general path differ on %d files, e.g. %r" % (len(diff), diff[:5])


def test_kinds_only_path_gives_the_general_paths_scan_report(corpus, vmjson):
    """The same over the whole scan (spa_scan_mem), where the nested-content
    hook runs on every str/bytes constant: the kinds-only path asks its
    decision (const_inert) and leaves a stream with a nested pickle, base64
    or container constant to the general path; the reports (bytes_read left
    out) are the same for every file."""
    d, rec = corpus
    kinds = run_vm(vmjson, d, sorted(rec), scan=True)
    general = run_vm(vmjson, d, sorted(rec), general=True, scan=True)
    assert set(kinds) == set(general) == set(rec)
    diff = [n for n in rec if kinds[n] != general[n]]
    assert not diff, "kinds-only path and general path differ on %d files, e.g. %r" % (len(diff), diff[:5])


def test_threat_constructions_complete_or_fail_like_cpython(corpus, vmjson):
    """Threat files parse to the same end state: where CPython (C) loads to
    STOP, the VM completes the first stream too."""
    d, rec = corpus
    names = sorted(n for n in rec if n.startswith("threat_"))
    ours = run_vm(vmjson, d, names)
    import io
    import pickle
    bad = []
    for n in names:
        data = open(os.path.join(d, n), "rb").read()
        ok = True
        try:
            _Loader(io.BytesIO(data)).load()
        except Exception:
            ok = False
        first = ours[n]["streams"][0] if ours[n]["streams"] else {"complete": False}
        if ok and not first["complete"]:
            bad.append(n)
    assert not bad, bad


class _Loader(__import__("pickle").Unpickler):
    """A stubbed C unpickler (imports nothing)."""
    def __init__(self, f):
        import itertools
        super().__init__(f, encoding="latin1", buffers=itertools.repeat(b"b"))

    def find_class(self, module, name):
        import diffgen
        return diffgen.Stub

    def persistent_load(self, pid):
        return None
