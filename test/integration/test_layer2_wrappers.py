"""test_layer2_wrappers.py - a decompressing wrapper over a file, made where the file is not at its start.

Layer 2 takes layer 1's verdict for a load that starts at offset 0 of a
regular file it judged pickle-bearing and allowed, and it finds "the file" and
"offset 0" by asking the object the unpickler reads: fileno() and tell().
Every decompressing file object forwards fileno() to the file it decompresses
and counts tell() in decompressed bytes, from 0. Made over a file positioned
after a header or another stream (f.read(n) or f.seek(n), then
gzip.GzipFile(fileobj=f)), it says "fd of that file, offset 0" while it reads
a stream that starts at offset n, which layer 1 never examined. So a file
that is a benign pickle at 0 followed by a compressed payload had the payload
loaded under the benign pickle's verdict: with a `safe` verdict layer 2 also
skips its name check and its code and file-write vetoes, so a plain
`builtins.exec` payload ran with both layers on (the residual that
preload/README.md described said the names and runtime vetoes still applied).

The class is every wrapper of the stdlib and of joblib's compressor registry
(gzip, bz2, lzma, and joblib's zlib/gzip/bz2/lzma/xz/lz4 files), bare and
under an io.BufferedReader (joblib reads through one), each through
pickle.load, pickle.Unpickler.load and pickle._Unpickler.load:
- test_wrapper_after_stream_refused: benign pickle at 0, compressed payload
  after it, the wrapper made over the file positioned there. Without the
  preload every payload runs (the shape works); with it none runs.
- test_wrapper_after_header_loads_the_same: a text header, then a compressed
  benign pickle (a file layer 1 judges not pickle-bearing): loads the same
  object as without the preload. Before, layer 2 read such a wrapper ahead
  and sought it back to 0, which a decompressing wrapper does by rewinding
  the underlying file to its absolute start: the load failed with
  BadGzipFile (and the like) under the preload only.
- test_joblib_load_of_file_object_after_stream_refused and
  test_library_loaders_over_wrappers: the libraries do it themselves.
  joblib.load(f) and pandas.read_pickle(f, compression=...) of a file object
  standing after a benign pickle wrap f in their own decompressing files: the
  payload ran with both layers on (6 joblib compressors, 3 pandas ones);
  numpy.load of an object array through such a wrapper failed under the
  preload only.
- test_wrapper_from_start_uses_layer1: the common case (a wrapper over a file
  at its start, joblib.load of a compressed file) keeps layer 1's verdict:
  a benign file loads, a malicious one is refused at its open."""
import json
import os
import subprocess

import pytest

from conftest import LIB, PYTHON, clean_env

pytestmark = pytest.mark.skipif(not os.path.exists(LIB), reason="libsafepickle.so not built")

# Builds the files for every wrapper of the class, then loads each through every
# entry point. argv: dir, shape ("after_stream" | "after_header"), mode ("build" | "load").
SCRIPT = r"""
import gzip, bz2, lzma, io, json, os, pickle, sys
d, shape, mode = sys.argv[1], sys.argv[2], sys.argv[3]

def wrappers():
    # the stdlib's decompressing files and joblib's registry: (name, compress(bytes), open(f))
    out = {
        "gzip": (gzip.compress, lambda f: gzip.GzipFile(fileobj=f, mode="rb")),
        "bz2": (bz2.compress, lambda f: bz2.BZ2File(f, "rb")),
        "lzma": (lzma.compress, lambda f: lzma.LZMAFile(f, "rb")),
    }
    try:
        from joblib import compressor as jc
    except ImportError:
        jc = None
    for cname, w in sorted(getattr(jc, "_COMPRESSORS", {}).items()):
        try:
            w._check_versions() if hasattr(w, "_check_versions") else None
        except Exception:
            continue
        def comp(data, w=w):
            b = io.BytesIO()
            with w.compressor_file(b, compresslevel=3) as c:
                c.write(data)
            return b.getvalue()
        out["joblib-" + cname] = (comp, lambda f, w=w: w.decompressor_file(f))
    for k in list(out):
        comp, op = out[k]
        out[k + "+buffered"] = (comp, lambda f, op=op: io.BufferedReader(op(f)))
    return out

class Evil:
    def __init__(self, marker): self.marker = marker
    def __reduce__(self):
        return (exec, ("open(%r, 'w').close()" % self.marker,))

ENTRIES = {"load": lambda w: pickle.load(w), "unpickler": lambda w: pickle.Unpickler(w).load(),
           "pyunpickler": lambda w: pickle._Unpickler(w).load()}
W = wrappers()
if mode == "build":
    for name, (comp, _) in W.items():
        for entry in ENTRIES:
            tag = "%s.%s" % (name, entry)
            if shape == "after_stream":
                head = pickle.dumps({"model": [1, 2, 3]}, protocol=4)
                inner = pickle.dumps(Evil(os.path.join(d, "ran." + tag)), protocol=4)
            else:
                head = b"MYFORMAT v1 rows=3\n"
                inner = pickle.dumps({"hidden": list(range(5)), "s": "x" * 40}, protocol=4)
            with open(os.path.join(d, tag + ".bin"), "wb") as f:
                f.write(head + comp(inner))
            with open(os.path.join(d, tag + ".off"), "w") as f:
                f.write(str(len(head)))
    print(json.dumps(sorted(W)))
    sys.exit(0)
for name, (_, op) in W.items():
    for entry, load in ENTRIES.items():
        tag = "%s.%s" % (name, entry)
        off = int(open(os.path.join(d, tag + ".off")).read())
        try:
            with open(os.path.join(d, tag + ".bin"), "rb") as f:
                f.read(off)               # the file's own header / first stream
                w = op(f)
                v = load(w)
                res = {"loaded": repr(v), "pos": w.tell()}
        except Exception as e:
            res = {"error": type(e).__name__}
        res["tag"] = tag
        print(json.dumps(res))
"""


def _run(tmp, shape, mode, preload):
    e = clean_env()
    if preload:
        e["LD_PRELOAD"] = LIB
    r = subprocess.run([PYTHON, "-c", SCRIPT, str(tmp), shape, mode], env=e, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    if mode == "build":
        return json.loads(r.stdout.strip().splitlines()[-1]), r.stderr
    return {x["tag"]: x for x in map(json.loads, r.stdout.strip().splitlines())}, r.stderr


@pytest.fixture(scope="module")
def after_stream(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wrap_stream")
    names, _ = _run(tmp, "after_stream", "build", False)
    return tmp, names


def test_wrapper_class_is_enumerated(after_stream):
    _, names = after_stream
    # the stdlib's three, joblib's registry (zlib, gzip, bz2, lzma, xz at least), each bare and buffered
    assert {"gzip", "bz2", "lzma", "joblib-zlib", "joblib-gzip", "joblib-xz"} <= set(names), names
    assert len(names) >= 16 and all(n + "+buffered" in names for n in names if "+" not in n), names


def test_wrapper_after_stream_refused(after_stream):
    tmp, names = after_stream
    out, err = _run(tmp, "after_stream", "load", False)
    ran = sorted(p[4:] for p in os.listdir(tmp) if p.startswith("ran."))
    assert len(ran) == len(out) == 3 * len(names), ("control: every payload must run", ran, out, err[-2000:])
    for p in os.listdir(tmp):
        if p.startswith("ran."):
            os.unlink(tmp / p)
    out, err = _run(tmp, "after_stream", "load", True)
    ran = sorted(p[4:] for p in os.listdir(tmp) if p.startswith("ran."))
    assert not ran, ("payload ran under the preload", ran, err[-3000:])
    assert all("error" in x for x in out.values()), out
    # refused by the judgement of the bytes the wrapper hands out, before they are unpickled
    assert err.count("safepickle: blocked") >= len(out), err[-3000:]
    assert "(pickle.find_class;" not in err and "runtime." not in err, err[-3000:]


def test_wrapper_after_header_loads_the_same(tmp_path):
    names, _ = _run(tmp_path, "after_header", "build", False)
    plain, perr = _run(tmp_path, "after_header", "load", False)
    pre, err = _run(tmp_path, "after_header", "load", True)
    assert len(plain) == 3 * len(names) and all("loaded" in x for x in plain.values()), (plain, perr[-2000:])
    diff = {t: (pre.get(t), plain[t]) for t in plain if pre.get(t) != plain[t]}
    assert not diff, (diff, err[-3000:])
    assert "safepickle:" not in err, err[-3000:]


FROM_START = r"""
import gzip, io, json, os, pickle, sys
import joblib
d = sys.argv[1]
out = {}
for tag, fn in (("gzip", lambda p: pickle.load(gzip.open(p, "rb"))),
                ("gzip.fileobj", lambda p: pickle.load(gzip.GzipFile(fileobj=open(p, "rb")))),
                ("joblib", lambda p: joblib.load(p))):
    for kind in ("benign", "evil"):
        p = os.path.join(d, "%s.%s" % (tag.split(".")[0], kind))
        try:
            out[tag + "." + kind] = repr(fn(p))
        except Exception as e:
            out[tag + "." + kind] = "error " + type(e).__name__
print(json.dumps(out))
"""


def test_wrapper_from_start_uses_layer1(tmp_path):
    import gzip
    import pickle

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (exec, ("open(%r, 'w').close()" % str(marker),))

    benign = {"w": [0.5, 1.5], "name": "m"}
    (tmp_path / "gzip.benign").write_bytes(gzip.compress(pickle.dumps(benign, protocol=4)))
    (tmp_path / "gzip.evil").write_bytes(gzip.compress(pickle.dumps(Evil(), protocol=4)))
    dump = ("import joblib, sys; joblib.dump({'w': [0.5, 1.5], 'name': 'm'}, sys.argv[1] + '/joblib.benign', "
            "compress=('zlib', 3))")
    subprocess.run([PYTHON, "-c", dump, str(tmp_path)], env=clean_env(), check=True, timeout=300)
    import zlib
    (tmp_path / "joblib.evil").write_bytes(zlib.compress(pickle.dumps(Evil(), protocol=4)))   # joblib's zlib file
    e = clean_env(LD_PRELOAD=LIB)
    r = subprocess.run([PYTHON, "-c", FROM_START, str(tmp_path)], env=e, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert not marker.exists(), (out, r.stderr[-3000:])
    for tag in ("gzip", "gzip.fileobj", "joblib"):
        assert out[tag + ".benign"] == repr(benign), (tag, out, r.stderr[-2000:])
        assert out[tag + ".evil"].startswith("error"), (tag, out)
    # the benign loads were not judged again by layer 2 (no warning, no refusal), the evil ones were
    # refused by layer 1 at their open
    assert r.stderr.count("safepickle: blocked") >= 3 and "(open" in r.stderr, r.stderr[-3000:]


JOBLIB_AT_OFFSET = r"""
import io, json, os, pickle, sys
import joblib
from joblib import compressor as jc
d, mode = sys.argv[1], sys.argv[2]
class Evil:
    def __init__(self, m): self.m = m
    def __reduce__(self): return (exec, ("open(%r, 'w').close()" % self.m,))
head = pickle.dumps({"model": [1, 2, 3]}, protocol=4)
out = {}
for name in sorted(jc._COMPRESSORS):
    p = os.path.join(d, "joblib." + name)
    if mode == "build":
        b = io.BytesIO()
        try:
            joblib.dump(Evil(os.path.join(d, "ran." + name)), b, compress=(name, 3))
        except Exception as e:     # a compressor whose module is not installed
            continue
        open(p, "wb").write(head + b.getvalue())
        out[name] = "built"
    elif os.path.exists(p):
        try:
            with open(p, "rb") as f:
                pickle.load(f)            # the benign pickle at 0; f now stands at the joblib file
                out[name] = repr(joblib.load(f))
        except Exception as e:
            out[name] = "error " + type(e).__name__
print(json.dumps(out))
"""


def test_joblib_load_of_file_object_after_stream_refused(tmp_path):
    """joblib.load(f) reads from f's position through joblib's own compressor
    file and NumpyUnpickler: a compressed joblib file behind a benign pickle at
    0 ran its payload with both layers on (each compressor joblib has)."""
    def run(mode, preload):
        e = clean_env(LD_PRELOAD=LIB) if preload else clean_env()
        r = subprocess.run([PYTHON, "-c", JOBLIB_AT_OFFSET, str(tmp_path), mode], env=e, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        return json.loads(r.stdout.strip().splitlines()[-1]), r.stderr
    built, _ = run("build", False)
    assert {"zlib", "gzip", "bz2", "lzma", "xz"} <= set(built), built
    out, err = run("load", False)
    ran = sorted(p for p in os.listdir(tmp_path) if p.startswith("ran."))
    assert len(ran) == len(built), ("control: every payload must run", ran, out, err[-2000:])
    for p in ran:
        os.unlink(tmp_path / p)
    out, err = run("load", True)
    ran = sorted(p for p in os.listdir(tmp_path) if p.startswith("ran."))
    assert not ran, ("payload ran under the preload", ran, out, err[-3000:])
    assert all(v.startswith("error") for v in out.values()), out
    assert err.count("safepickle: blocked") >= len(built), err[-3000:]


LIBRARIES = r"""
import bz2, gzip, io, json, lzma, os, pickle, sys
import numpy as np
import pandas as pd
d, mode = sys.argv[1], sys.argv[2]
class Evil:
    def __init__(self, m): self.m = m
    def __reduce__(self): return (exec, ("open(%r, 'w').close()" % self.m,))
head = pickle.dumps({"model": [1, 2, 3]}, protocol=4)
COMP = {"gzip": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}
arr = np.array([{"k": 1}, [1, 2], "s"], dtype=object)
out = {}
for comp, fn in COMP.items():
    p, q = os.path.join(d, "pd." + comp), os.path.join(d, "np." + comp)
    if mode == "build":
        open(p, "wb").write(head + fn(pickle.dumps(Evil(os.path.join(d, "ran.pd." + comp)), protocol=4)))
        b = io.BytesIO(); np.save(b, arr, allow_pickle=True)
        open(q, "wb").write(b"MYFORMAT v1\n" + fn(b.getvalue()))
        continue
    try:   # pandas.read_pickle of a file object standing after a benign pickle: pandas wraps it itself
        with open(p, "rb") as f:
            pickle.load(f)
            out["pd." + comp] = repr(pd.read_pickle(f, compression=comp))
    except Exception as e:
        out["pd." + comp] = "error " + type(e).__name__
    try:   # numpy.load of an object array through a decompressing file made after a header (benign)
        with open(q, "rb") as f:
            f.read(len(b"MYFORMAT v1\n"))
            w = {"gzip": lambda: gzip.GzipFile(fileobj=f), "bz2": lambda: bz2.BZ2File(f),
                 "xz": lambda: lzma.LZMAFile(f)}[comp]()
            out["np." + comp] = repr(np.load(w, allow_pickle=True).tolist())
    except Exception as e:
        out["np." + comp] = "error " + type(e).__name__
print(json.dumps(out))
"""


def test_library_loaders_over_wrappers(tmp_path):
    """pandas.read_pickle(f, compression=...) of a file object standing after a
    benign pickle wraps f in gzip/bz2/lzma itself: the payload ran with both
    layers on. numpy.load of an object array through a decompressing file
    made after a header failed under the preload only (BadGzipFile and the
    like), now it loads the same array."""
    def run(mode, preload):
        e = clean_env(LD_PRELOAD=LIB) if preload else clean_env()
        r = subprocess.run([PYTHON, "-c", LIBRARIES, str(tmp_path), mode], env=e, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        return (json.loads(r.stdout.strip().splitlines()[-1]) if mode == "load" else None), r.stderr
    run("build", False)
    plain, perr = run("load", False)
    ran = sorted(p for p in os.listdir(tmp_path) if p.startswith("ran."))
    assert len(ran) == 3 and all(not plain["np." + c].startswith("error") for c in ("gzip", "bz2", "xz")), \
        (ran, plain, perr[-2000:])
    for p in ran:
        os.unlink(tmp_path / p)
    pre, err = run("load", True)
    ran = sorted(p for p in os.listdir(tmp_path) if p.startswith("ran."))
    assert not ran, ("payload ran under the preload", ran, pre, err[-3000:])
    assert all(pre[k].startswith("error") for k in pre if k.startswith("pd.")), pre
    assert {k: v for k, v in pre.items() if k.startswith("np.")} == \
        {k: v for k, v in plain.items() if k.startswith("np.")}, (pre, plain, err[-2000:])
