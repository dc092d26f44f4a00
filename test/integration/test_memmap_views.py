"""test_memmap_views.py - joblib's memmap views sent to workers (`@mapview`).

joblib ships an array backed by a memmap to its workers as
_strided_from_memmap(filename, dtype, mode, offset, order, shape, strides,
total_buffer_len, unlink_on_gc_collect) (joblib/_memmapping_reducer.py): the worker maps
the file again. What that reaches depends on its arguments (analyzer/classify.c,
cl_mapview_risk): a read-only or private mapping is data; a writable one ("w+", which it
turns into "r+", "r+", "readwrite") hands the program a shared mapping of a file the
bytes name and grows a shorter file, and numpy's "write" creates or truncates it
(file_write); strides make numpy's as_strided view, which never checks bounds (native
unless every constant proves it inside the mapping). Each refused shape is shown to act
without the preload."""
import os
import subprocess
import textwrap

import pytest

import spgen
from conftest import CLI, LIB, PYTHON, clean_env

pytestmark = pytest.mark.skipif(not os.path.exists(LIB), reason="libsafepickle.so not built")

MAKE = textwrap.dedent("""
    import copyreg, io, pickle, sys, numpy as np
    from joblib._memmapping_reducer import _reduce_memmap_backed, _get_backing_memmap
    path, mode = sys.argv[1], sys.argv[2]
    w = np.memmap(path, dtype='float64', mode='w+', shape=(100,))
    w[:] = np.arange(100.0)
    w.flush()
    m = np.memmap(path, dtype='float64', mode=mode, shape=(100,))
    views = [m, m[::2], np.asarray(m)[10:20], m.reshape(10, 10)[:, 3], m.reshape(10, 10).T[2:5]]
    buf = io.BytesIO()
    p = pickle.Pickler(buf, protocol=5)
    p.dispatch_table = copyreg.dispatch_table.copy()
    p.dispatch_table[np.memmap] = p.dispatch_table[np.ndarray] = lambda a: _reduce_memmap_backed(a, _get_backing_memmap(a))
    p.dump([(v, v.tolist()) for v in views])
    sys.stdout.buffer.write(buf.getvalue())
""")

LOAD = textwrap.dedent("""
    import pickle, sys
    try:
        out = pickle.loads(sys.stdin.buffer.read())
        print('LOADED', all(v.tolist() == want for v, want in out) if isinstance(out, list) else type(out).__name__)
    except Exception as e:
        print('REFUSED', type(e).__name__, e)
""")


def _run(code, data=None, preload=False, args=()):
    e = clean_env()
    if preload:
        e["LD_PRELOAD"] = LIB
    return subprocess.run([PYTHON, "-c", code, *args], input=data, env=e, capture_output=True, timeout=120)


def _scan(tmp_path, data):
    p = tmp_path / "x.pkl"
    p.write_bytes(data)
    return subprocess.run([CLI, "scan", "-v", str(p)], env=clean_env(), capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("mode", ["r", "c"])
def test_read_only_views_load(tmp_path, mode):
    data = _run(MAKE, args=(str(tmp_path / "a.mmap"), mode)).stdout
    assert data.startswith(b"\x80"), "no pickle made"
    r = _run(LOAD, data)
    assert r.stdout.strip() == b"LOADED True", r
    r = _run(LOAD, data, preload=True)
    assert r.stdout.strip() == b"LOADED True", (r.stdout, r.stderr[-2000:])
    assert b"safepickle: blocked" not in r.stderr
    s = _scan(tmp_path, data)
    assert s.returncode == 0 and "1 safe" in s.stdout, s.stdout


def _view(path, mode, shape, strides=None, total=None, unlink=False, dtype="f8", offset=0):
    a = spgen.Asm(4).global_("joblib._memmapping_reducer", "_strided_from_memmap").mark().push(str(path))
    a.global_("numpy", "dtype").mark().push(dtype).push(False).push(True).tuple_().reduce()
    a.mark().push(3).push("<").none().none().none().push(-1).push(-1).push(0).tuple_().build()
    a.push(mode).push(offset).push("C")
    a.mark()
    for n in shape:
        a.push(n)
    a.tuple_()
    if strides is None:
        a.none()
    else:
        a.mark()
        for s in strides:
            a.push(s)
        a.tuple_()
    return a.push(total).push(unlink).tuple_().reduce().stop()


PROBE = textwrap.dedent("""
    import os, pickle, sys, numpy as np
    path = sys.argv[1]
    before = os.path.getsize(path) if os.path.exists(path) else -1
    try:
        v = pickle.loads(sys.stdin.buffer.read())
        lo, hi = np.byte_bounds(v)
        base = v
        while getattr(base, 'base', None) is not None and not isinstance(base, np.memmap):
            base = base.base
        b_lo, b_hi = np.byte_bounds(base)
        print('LOADED outside=%d' % (lo < b_lo or hi > b_hi))
    except Exception as e:
        print('REFUSED', type(e).__name__, e)
    print('SIZE', before, os.path.getsize(path) if os.path.exists(path) else -1)
""")


def test_writing_and_unbounded_views_refused(tmp_path):
    small = tmp_path / "small.bin"
    cases = {
        # numpy's "write" is w+: the file is created (truncated if it exists)
        "write_creates": (tmp_path / "created.bin", lambda p: _view(p, "write", [4]),
                          lambda out: b"SIZE -1 32" in out),
        # "r+" and "w+" (turned into r+) map an existing file writable and grow a shorter one
        "rplus_grows": (small, lambda p: _view(p, "r+", [1000]), lambda out: b"SIZE 8 8000" in out),
        "wplus_grows": (small, lambda p: _view(p, "w+", [1000]), lambda out: b"SIZE 8 8000" in out),
        # a strided view past the mapping: as_strided reaches the process's memory
        "strided_outside": (small, lambda p: _view(p, "r", [10], strides=[4096], total=1),
                            lambda out: b"LOADED outside=1" in out),
    }
    for name, (path, make, acted) in cases.items():
        for p in (small, tmp_path / "created.bin"):
            if p.exists():
                p.unlink()
        small.write_bytes(b"\0" * 8)
        data = make(path)
        r = _run(PROBE, data, args=(str(path),))
        assert acted(r.stdout), (name, r.stdout, r.stderr[-1500:])   # it really acts
        for p in (small, tmp_path / "created.bin"):
            if p.exists():
                p.unlink()
        small.write_bytes(b"\0" * 8)
        r = _run(PROBE, data, preload=True, args=(str(path),))
        assert r.stdout.startswith(b"REFUSED") and b"safepickle: blocked" in r.stderr, (name, r.stdout, r.stderr[-1500:])
        size = b"SIZE -1 -1" if name == "write_creates" else b"SIZE 8 8"
        assert size in r.stdout, (name, r.stdout)
        assert _scan(tmp_path, data).returncode == 1, name


def test_view_judgement(tmp_path):
    """The judgement alone, for the shapes whose effect is not a file (the scan)."""
    f = tmp_path / "f.bin"
    f.write_bytes(b"\0" * 800)
    inside = [
        _view(f, "r", [50], strides=[16], total=99),            # a[::2] of 100 float64
        _view(f, "r", [10, 3], strides=[80, 8], total=93),       # a[:, 3:6] of a (10, 10)
        _view(f, "c", [34], strides=[-24], total=100),           # negative strides start at the base: outside
        _view(f, "readonly", [0], strides=[10 ** 9], total=0),   # empty
    ]
    want = [0, 0, 1, 0]
    for data, rc in zip(inside, want):
        s = _scan(tmp_path, data)
        assert s.returncode == rc, s.stdout
    refused = [
        _view(f, "r", [4], strides=[8], total=4, dtype="O8"),     # itemsize not provable
        _view(f, "r", [51], strides=[16], total=99),              # one item past the end
        _view(f, "readwrite", [4]),
    ]
    for data in refused:
        assert _scan(tmp_path, data).returncode == 1
