"""test_reexports.py - a callable bound under a module the knowledge base judges data
wholesale (numpy, numpy.lib, numpy.core, pandas, scipy, sklearn, decimal, ...) but defined
elsewhere is judged as its definition (red team, session 8).

The KB judges a global by the path a pickle writes. `numpy:save` is file_write, but
`numpy.lib` is a data module key, so `numpy.lib.save` (the same function) was data; so
were `numpy.lib.load` (a nested load), `numpy.core.seterr` (numpy's error state),
`pandas.HDFStore` (pandas.io) and 44 more. The generator here does not read the KB's
names: it imports every module under a data module key, takes every callable bound there
whose `__module__`/`__qualname__` name another place, and asks the CLI for the verdict of
a call by each path: where the definition is refused, the re-export must be too.
"""
import json
import os
import struct
import subprocess
import sys

from conftest import LIB, PYTHON, clean_env, run_cli

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from kbgen import data_module_keys  # noqa: E402  (which KB lines are data module keys: one reader)

# Deliberately not test/kbgen.py's reexports(), though the walk is alike: this is the
# oracle that reexport.tsv (which kbgen writes) is checked against. Only the list of data
# module keys, a reading of the KB files, is kbgen's.
ENUM = r'''
import contextlib, importlib, io, json, sys, types, warnings
warnings.simplefilter("ignore")
keys = json.loads(sys.argv[1])
rows = []
for k in keys:
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            m = importlib.import_module(k)
    except BaseException:
        continue
    for a in sorted(dir(m)):
        if a.startswith("_"):
            continue
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                v = getattr(m, a)
            if isinstance(v, types.ModuleType) or not callable(v):
                continue
            cm, cq = v.__module__, v.__qualname__
        except BaseException:
            continue
        if isinstance(cm, str) and isinstance(cq, str) and "<" not in cq and (cm, cq) != (k, a):
            rows.append((k, a, cm, cq))
print(json.dumps(rows))
'''


def _s(x):
    b = x.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _call(mod, name, *args):
    return b"\x80\x04" + _s(mod) + _s(name) + b"\x93(" + b"".join(args) + b"tR."


def _verdicts(paths):
    out = {}
    for i in range(0, len(paths), 400):
        r = run_cli("scan", "--format", "json", *paths[i:i + 400])
        for f in json.loads(r.stdout)["files"]:
            out[f["path"]] = (f["action"], [x["msg"][:100] for x in f["reasons"]][:1])
    return out


def test_reexports_are_judged_as_their_definition(tmp_path):
    keys = data_module_keys()
    r = subprocess.run([PYTHON, "-c", ENUM, json.dumps(keys)], env=clean_env(), capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(rows) > 500, len(rows)
    paths = []
    for k, (mod, name, dm, dq) in enumerate(rows):
        a = tmp_path / ("a_%d.pkl" % k)
        a.write_bytes(_call(mod, name, _s("x")))
        d = tmp_path / ("d_%d.pkl" % k)
        d.write_bytes(_call(dm, dq, _s("x")))
        paths += [str(a), str(d)]
    v = _verdicts(paths)
    bad = [("%s.%s" % (m, n), "%s.%s" % (dm, dq), v[str(tmp_path / ("d_%d.pkl" % k))][1])
           for k, (m, n, dm, dq) in enumerate(rows)
           if v[str(tmp_path / ("a_%d.pkl" % k))][0] != "block" and v[str(tmp_path / ("d_%d.pkl" % k))][0] == "block"]
    print("%d re-exports under %d data module keys; %d allowed where their definition is refused"
          % (len(rows), len(keys), len(bad)))
    assert not bad, bad[:20]


def test_reexported_writer_and_state_setter_run_and_are_refused(tmp_path):
    """numpy.lib.save writes a file and numpy.core.seterr changes numpy's error state under
    the real loader; both are refused under the preload."""
    out = tmp_path / "written"
    arr = b"\x80\x04" + _s("numpy") + _s("array") + b"\x93(](K\x01K\x02et" + b"R"
    save = b"\x80\x04" + _s("numpy.lib") + _s("save") + b"\x93(" + _s(str(out)) + arr[2:] + b"tR."
    p = tmp_path / "save.pkl"
    p.write_bytes(save)
    q = tmp_path / "seterr.pkl"
    q.write_bytes(_call("numpy.core", "seterr", _s("ignore")))
    code = ("import pickle, numpy\nfor p in %r:\n    try:\n        pickle.load(open(p, 'rb'))\n"
            "    except BaseException as e:\n        print(type(e).__name__)\nprint('ERR', numpy.geterr()['divide'])\n"
            % ([str(p), str(q)],))
    plain = subprocess.run([PYTHON, "-c", code], env=clean_env(), capture_output=True, text=True, timeout=300)
    assert os.path.exists(str(out) + ".npy"), plain.stdout + plain.stderr
    assert "ERR ignore" in plain.stdout, plain.stdout + plain.stderr
    os.unlink(str(out) + ".npy")
    env = clean_env()
    env["LD_PRELOAD"] = LIB
    pre = subprocess.run([PYTHON, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert not os.path.exists(str(out) + ".npy"), pre.stderr[-500:]
    assert "ERR warn" in pre.stdout, pre.stdout + pre.stderr[-500:]
    assert "safepickle: blocked" in pre.stderr, pre.stderr[-500:]
