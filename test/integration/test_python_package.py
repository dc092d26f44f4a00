"""test_python_package.py - the `safepickle` Python package (issue 17).

From a clean interpreter, `import safepickle; safepickle.scan(path)` gives the CLI's
verdict, action and reasons, under /usr/bin/python3 and every CPython 3.8-3.13 that
pyenv has; loads/load refuse a payload before it runs (marker absent); installed
from a staged `make install` it finds its own libspa.so; `except
safepickle.SafePickleBlocked` catches what the preload raises, whichever was first;
is_protected() is true only when a refusal proves it."""
import json
import os
import pickle
import subprocess

import pytest

from conftest import BUILD, CLI, LIB, PYTHON, REPO, clean_env
import spgen
from test_runtime import _pyenv_pythons

PKG = os.path.join(REPO, "analyzer", "python")
INTERPS = [PYTHON] + _pyenv_pythons(lambda major, minor: major == 3 and 8 <= minor <= 13)


def py(interp, code, *args, pythonpath=PKG, preload=False, env=None, cwd=None):
    e = clean_env(**(env or {}))
    e["PYTHONPATH"] = pythonpath
    if preload:
        e["LD_PRELOAD"] = LIB
    return subprocess.run([interp, "-c", code, *map(str, args)], env=e, cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("pkgfiles")
    md = tmp_path_factory.mktemp("pkgmarkers")
    made = {
        "exec.pkl": spgen.exec_pickle(md / "exec"),
        "system.pkl": spgen.system_pickle(md / "system", proto=0),
        "benign.pkl": spgen.benign_pickle(),
        "text.txt": b"hello\n",
        "reflect.pkl": spgen.call_pickle("builtins", "getattr", ("x", "upper")),
    }
    for n, b in made.items():
        (d / n).write_bytes(b)
    # a real torch checkpoint, benign and with a payload, made by torch itself
    r = subprocess.run([PYTHON, "-c", """
import sys, torch, os, spgen
torch.save({'w': torch.zeros(3)}, sys.argv[1] + '/model.pt')
torch.save({'w': spgen.Reduce(os.system, ['touch ' + sys.argv[2]])}, sys.argv[1] + '/bad_model.pt')
""", str(d), str(md / "torch")], env=clean_env(PYTHONPATH=os.path.dirname(__file__)), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return d, md


def _cli_verdicts(d):
    r = subprocess.run([CLI, "scan", "--format", "json", str(d)], env=clean_env(), capture_output=True, timeout=300)
    doc = json.loads(r.stdout)
    return {os.path.basename(f["path"]): [f["verdict"], f["action"], sorted(x["rule"] for x in f["reasons"])]
            for f in doc["files"] if "verdict" in f}


PKG_VERDICTS = """
import json, os, sys, safepickle
d = sys.argv[1]
out = {}
for n in sorted(os.listdir(d)):
    v = safepickle.scan(os.path.join(d, n))
    out[n] = [v.verdict, v.action, sorted(r["rule"] for r in v.reasons)]
print(json.dumps(out))
"""


@pytest.mark.parametrize("interp", INTERPS)
def test_same_verdict_as_the_cli(files, interp):
    d, _ = files
    want = _cli_verdicts(d)
    assert want["exec.pkl"][0] == "malicious" and want["benign.pkl"][0] == "safe"
    r = py(interp, PKG_VERDICTS, d)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == want


@pytest.mark.parametrize("interp", INTERPS)
def test_loads_and_load_refuse_before_the_payload_runs(files, interp, tmp_path):
    d, _ = files
    marker = tmp_path / "ran"
    bad = spgen.system_pickle(marker)
    (tmp_path / "bad.pkl").write_bytes(bad)
    code = """
import pickle, sys, safepickle
bad = open(sys.argv[1], 'rb').read()
for fn in (lambda: safepickle.loads(bad), lambda: safepickle.load(sys.argv[1]),
           lambda: safepickle.load(open(sys.argv[1], 'rb'))):
    try:
        fn()
        print('NOT REFUSED')
    except safepickle.SafePickleBlocked as e:
        assert isinstance(e, PermissionError) and isinstance(e, pickle.UnpicklingError)
        assert e.verdict.verdict == 'malicious', e.verdict
good = {'a': [1, 2.5, 'x'], 'b': (None, True)}
assert safepickle.loads(pickle.dumps(good, protocol=2)) == good
print('ok')
"""
    r = py(interp, code, tmp_path / "bad.pkl")
    assert r.returncode == 0 and r.stdout.split() == ["ok"], r.stdout + r.stderr
    spgen.assert_marker_absent(marker)


def test_installed_package_finds_its_library(files, tmp_path):
    d, md = files
    stage = tmp_path / "stage"
    r = subprocess.run(["make", "-s", "install", "DESTDIR=" + str(stage), "PREFIX=/usr/local",
                        "BUILD=" + BUILD], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    site = stage / "usr/local/lib/python3.11/dist-packages"
    assert (site / "safepickle" / "__init__.py").exists()
    code = "import safepickle; print(safepickle.library_path()); print(safepickle.scan('model.pt')); " \
           "print(safepickle.scan('bad_model.pt'))"
    r = py(PYTHON, code, pythonpath=str(site), cwd=d)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == str(stage / "usr/local/lib/safepickle/libspa.so")
    assert lines[1].startswith("model.pt: safe (action allow)")
    assert "bad_model.pt: malicious (action block)" in r.stdout
    assert _cli_verdicts(d)["bad_model.pt"][0] == "malicious"
    spgen.assert_marker_absent(md / "torch")


def test_missing_library_is_an_error_not_a_pass(files):
    d, _ = files
    r = py(PYTHON, "import safepickle; safepickle.scan('exec.pkl')", env={"SAFEPICKLE_LIBSPA": "/nonexistent/libspa.so"},
           cwd=d)
    assert r.returncode != 0
    assert "SafePickleError" in r.stderr and "/nonexistent/libspa.so" in r.stderr


@pytest.mark.parametrize("order", ["package_first", "preload_first"])
def test_one_exception_class_with_the_preload(tmp_path, order):
    marker = tmp_path / "ran"
    bad = spgen.system_pickle(marker)
    first = "import safepickle\n" if order == "package_first" else ""
    code = first + """
import pickle, sys
bad = bytes.fromhex(sys.argv[1])
try:
    pickle.loads(bad)
except PermissionError as e:
    cls = type(e)
import safepickle
assert cls is safepickle.SafePickleBlocked, (cls, safepickle.SafePickleBlocked)
try:
    pickle.loads(bad)
except safepickle.SafePickleBlocked:
    print('caught')
"""
    r = py(PYTHON, code, bad.hex(), preload=True)
    assert r.returncode == 0 and r.stdout.split() == ["caught"], r.stdout + r.stderr[-2000:]
    spgen.assert_marker_absent(marker)


def test_is_protected_only_when_a_refusal_proves_it():
    code = "import json, safepickle; print(json.dumps([safepickle.is_protected(), safepickle.protection_status()]))"
    plain = py(PYTHON, code)
    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout.splitlines()[-1]) == [False, {"preload": False, "file_layer": False,
                                                                  "in_memory_layer": False}]
    on = py(PYTHON, code, preload=True)
    assert json.loads(on.stdout.splitlines()[-1])[0] is True, on.stderr[-2000:]
    audit = py(PYTHON, code, preload=True, env={"SAFEPICKLE_POLICY": os.path.join(REPO, "policies", "audit.json")})
    got = json.loads(audit.stdout.splitlines()[-1])
    assert got[0] is False and got[1]["preload"] is True, "an audit-only preload is not protection"
