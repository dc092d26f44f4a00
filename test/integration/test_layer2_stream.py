"""test_layer2_stream.py - layer 2, bytes first over an in-memory stream: the
unpickler reads the very bytes that were judged, and the caller's stream is
left exactly where it would be without the preload.

- A stream rewritten during the load. `pickle.load(f)`, `Unpickler(f).load()`
  (and a subclass) and `pickle._Unpickler(f).load()` over a seekable in-memory
  stream (an io.BytesIO, an io.BufferedReader over one, an in-memory
  tempfile.SpooledTemporaryFile) judge the bytes from f's position, then the
  unpickler reads f as it goes. Code holding the stream (another thread, a
  find_class or persistent_load override, a __setstate__ of an earlier
  object) that rewrites it during the load used to make the unpickler read
  bytes nobody judged, under the safe verdict of the bytes before: here the
  program's own audit hook rewrites the tail, at the load's first find_class,
  into a builtins.exec call (through the buffer of the BytesIO, or with
  seek/write). Without the preload the payload runs; with it every read the
  unpickler makes is checked against the bytes judged and the load is refused
  at the first byte that differs. Against the tree before the fix the payload
  ran under the preload in every case.
- The host's stream state. Several pickles in one buffer (protocols 0 to 5,
  frames, out-of-band-size bytes read with readinto, a memo shared by two
  dumps of one Pickler), followed by other bytes, loaded one by one by every
  entry point: the objects, the stream position after each load and the rest
  of the stream are the same with and without the preload; so is joblib.load
  of a BytesIO holding arrays, whose unpickler reads the array bytes from the
  file itself between its pickle opcodes."""
import os
import subprocess
import textwrap

import pytest

from conftest import LIB, PYTHON, clean_env, run_py_file

pytestmark = pytest.mark.skipif(not os.path.exists(LIB), reason="libsafepickle.so not built")


def run(tmp_path, body, *, preload=True):
    return run_py_file(tmp_path, body, name="l2stream.py", preload=preload)


# A protocol-0 list [OrderedDict(), list(<pad>), list(<text>)] and the same
# bytes with the last call turned into builtins.exec(<code>) (same length).
# The rewritten part lies past 200,000 bytes: beyond any read-ahead (the C
# unpickler peeks 128 KiB from a BufferedReader).
ENTRIES = {
    "load": "pickle.load(f)",
    "unpickler": "pickle.Unpickler(f).load()",
    "subclass": "type('Mine', (pickle.Unpickler,), {})(f).load()",
    "pyunpickler": "pickle._Unpickler(f).load()",
}
STREAMS = ("bytesio", "buffered", "spooled")
REWRITES = ("view", "write")

REWRITE = textwrap.dedent("""
    import io, os, pickle, sys, tempfile
    DIR = %(dir)r
    PAD = 200000
    def body(fn, text):
        return b"cbuiltins\\n" + fn + b"\\n(V" + text.encode() + b"\\ntR"
    HEAD = b"(ccollections\\nOrderedDict\\n(tR" + body(b"list", "p" * PAD)
    def code(mark):
        return "open(%%r, 'w').close()" %% mark
    state = {}
    def hook(ev, args):
        if ev == "pickle.find_class" and state.get("armed"):
            state["armed"] = False
            raw, evil = state["raw"], state["evil"]
            if state["how"] == "view":
                raw.getbuffer()[len(HEAD):len(HEAD) + len(evil)] = evil
            else:
                pos = raw.tell(); raw.seek(len(HEAD)); raw.write(evil); raw.seek(pos)
    sys.addaudithook(hook)
    for entry, call in sorted(%(entries)r.items()):
        for stream in %(streams)r:
            for how in %(rewrites)r:
                mark = os.path.join(DIR, "ran_%%s_%%s_%%s" %% (entry, stream, how))
                evil = body(b"exec", code(mark))
                benign = HEAD + body(b"list", "a" * (len(evil) - len(body(b"list", "")))) + b"l."
                assert len(body(b"list", "a" * (len(evil) - len(body(b"list", ""))))) == len(evil)
                raw = io.BytesIO(benign)
                if stream == "buffered":
                    f = io.BufferedReader(raw)
                elif stream == "spooled":
                    f = tempfile.SpooledTemporaryFile(max_size=10 ** 7); f.write(benign); f.seek(0)
                    raw = f._file
                else:
                    f = raw
                state.update(armed=True, raw=raw, evil=evil, how=how)
                try:
                    r = eval(call)
                    out = "loaded %%r" %% (r[-1][:3],)
                except Exception as e:
                    out = "refused %%s" %% type(e).__name__
                print(entry, stream, how, out, os.path.exists(mark))
""")


def test_stream_rewritten_during_load(tmp_path):
    code = REWRITE % {"dir": str(tmp_path), "entries": ENTRIES, "streams": STREAMS, "rewrites": REWRITES}
    cases = ["ran_%s_%s_%s" % (e, s, h) for e in ENTRIES for s in STREAMS for h in REWRITES]
    ctl = run(tmp_path, code, preload=False)
    assert ctl.returncode == 0, ctl.stderr
    missing = [c for c in cases if not (tmp_path / c).exists()]
    assert not missing, "control: the rewritten tail must run without the preload: %s\n%s" % (missing, ctl.stdout)
    for c in cases:
        os.unlink(tmp_path / c)
    r = run(tmp_path, code)
    assert r.returncode == 0, r.stderr[-3000:]
    ran = [c for c in cases if (tmp_path / c).exists()]
    assert not ran, "the unpickler read bytes that were never judged: %s\n%s\n%s" % (ran, r.stdout, r.stderr[-3000:])
    lines = r.stdout.split("\n")
    assert sum("refused SafePickleBlocked False" in line for line in lines) == len(cases), r.stdout + r.stderr[-3000:]
    assert r.stderr.count("changed after its bytes were judged") == len(cases), r.stderr[-3000:]


POSITIONS = textwrap.dedent("""
    import io, pickle, sys, tempfile
    objs = [([1, 2], 0), ({"a": (1, 2.5)}, 2), ("x" * 70000, 4), (b"y" * 300000, 4),
            (bytearray(b"z" * 200000), 5), ({"k": [None, True]}, 3), (list(range(50)), 1)]
    parts = [pickle.dumps(o, protocol=p) for o, p in objs]
    out = io.BytesIO(); pk = pickle.Pickler(out, protocol=2)
    shared = ["s" * 10]
    pk.dump(shared); pk.dump([shared, shared])   # the second refers to the first's memo
    tail = b"not a pickle"
    data = b"".join(parts) + out.getvalue() + tail
    def streams():
        yield "bytesio", io.BytesIO(data)
        yield "buffered", io.BufferedReader(io.BytesIO(data), 4096)
        s = tempfile.SpooledTemporaryFile(max_size=10 ** 8); s.write(data); s.seek(0)
        yield "spooled", s
    def show(o):
        return repr(o)[:24] + "/%d" % len(repr(o))
    for name, f in streams():
        res = [show(pickle.load(f)) + "@%d" % f.tell() for _ in parts]
        for _ in range(2):  # the second needs the first's memo: a load of its own fails
            try:
                res.append(show(pickle.load(f)) + "@%d" % f.tell())
            except Exception as e:
                res.append(type(e).__name__ + "@%d" % f.tell())
        print(name, "load", res, f.read(), getattr(f, "_rolled", None))
    for kind in (pickle.Unpickler, pickle._Unpickler, type("Mine", (pickle.Unpickler,), {})):
        for name, f in streams():
            res = []
            for _ in parts:
                res.append(show(kind(f).load()) + "@%d" % f.tell())
            u = kind(f)
            res += [show(u.load()) + "@%d" % f.tell() for _ in range(2)]
            try:
                u.load()
            except Exception as e:
                res.append(type(e).__name__ + "@%d" % f.tell())
            print(name, kind.__name__, res, f.read(), getattr(f, "_rolled", None))
    import joblib, numpy as np
    b = io.BytesIO()
    joblib.dump({"a": np.arange(1000), "b": [np.ones((20, 30)), "t"], "c": np.array([1, "x"], dtype=object)}, b)
    b.write(b"after")
    b.seek(0)
    d = joblib.load(b)
    print("joblib", d["a"].sum(), d["b"][0].shape, list(d["c"]), b.tell(), b.read())
""")


def test_stream_position_and_objects_unchanged(tmp_path):
    a = run(tmp_path, POSITIONS, preload=False)
    assert a.returncode == 0, a.stderr[-3000:]
    b = run(tmp_path, POSITIONS)
    assert b.returncode == 0, b.stderr[-3000:]
    assert "safepickle" not in b.stderr, b.stderr[-3000:]
    assert a.stdout == b.stdout, (a.stdout, b.stdout)
    assert a.stdout.count("ot a pickle'") == 12, a.stdout


PIPES = textwrap.dedent("""
    import io, os, pickle, threading, types
    objs = [([1, 2], 0), ({"a": (1, 2.5)}, 2), ("x" * 70000, 4), (b"y" * 300000, 4),
            (bytearray(b"z" * 200000), 5), ({"k": [None, True]}, 3), (list(range(50)), 1)]
    parts = [pickle.dumps(o, protocol=p) for o, p in objs]
    out = io.BytesIO(); pk = pickle.Pickler(out, protocol=2)
    shared = ["s" * 10]
    pk.dump(shared); pk.dump([shared, shared])   # the second refers to the first's memo
    data = b"".join(parts) + out.getvalue() + b"not a pickle"
    def pipe(buffering):
        r, w = os.pipe()
        threading.Thread(target=lambda: (os.write(w, data), os.close(w))).start()
        return open(r, "rb", buffering=buffering)
    def show(o):
        return repr(o)[:24] + "/%d" % len(repr(o))
    def functions(f):   # a stream whose read and readline are functions, not methods of a file
        return types.SimpleNamespace(read=lambda *a: f.read(*a), readline=lambda *a: f.readline(*a))
    for kind in (pickle.Unpickler, pickle._Unpickler, type("Mine", (pickle.Unpickler,), {})):
        for buffering in (-1, 1 << 16, "functions"):   # BufferedReaders (they have peek)
            f = pipe(-1 if buffering == "functions" else buffering)
            s = functions(f) if buffering == "functions" else f
            res = [show(kind(s).load()) for _ in parts]
            u = kind(s)
            res += [show(u.load()) for _ in range(2)]
            print(kind.__name__, buffering, res, f.read())
""")


def test_stream_unpickler_over_pipe_unchanged(tmp_path):
    """Unpickler(stream).load() over a pipe reads one pickle, judged, then
    unpickles it: the objects and what is left in the pipe after each load are
    the same as without the preload (several pickles, frames, readinto-sized
    bytes, a memo shared by two loads of one Unpickler)."""
    a = run(tmp_path, PIPES, preload=False)
    assert a.returncode == 0, a.stderr[-3000:]
    b = run(tmp_path, PIPES)
    assert b.returncode == 0, b.stderr[-3000:]
    assert "safepickle" not in b.stderr, b.stderr[-3000:]
    assert a.stdout == b.stdout, (a.stdout, b.stdout)
    assert a.stdout.count("b'not a pickle'") == 9, a.stdout


ONE_BY_ONE = textwrap.dedent("""
    import io, os, pickle, sys
    class Touch:
        def __reduce__(self):
            return (os.system, ("touch " + sys.argv[1],))
    good = pickle.dumps({"first": list(range(10))}, protocol=4)
    data = good + pickle.dumps(Touch(), protocol=2)
    loads = {"load": lambda f: pickle.load(f), "unpickler": lambda f: pickle.Unpickler(f).load(),
             "pyunpickler": lambda f: pickle._Unpickler(f).load()}
    for name, ld in loads.items():
        for kind in ("bytesio", "buffered"):
            f = io.BytesIO(data) if kind == "bytesio" else io.BufferedReader(io.BytesIO(data), 4096)
            out = []
            for _ in range(2):
                try:
                    out.append(repr(ld(f)))
                except Exception as e:
                    out.append(type(e).__name__)
            print("|".join([name, kind, out[0], out[1]]))
""")


def test_stream_judged_one_pickle_at_a_time(tmp_path):
    """A load from an in-memory stream reads one pickle, and that pickle is what
    is judged, not all the rest of the buffer: a benign pickle followed by a
    payload loads as without the preload (it was refused for the payload after
    it, and judging the rest made a buffer of n pickles loaded one by one cost
    n times the buffer), and the payload's own load is refused: the marker is
    never made."""
    marker = tmp_path / "ran"
    script = tmp_path / "one.py"
    script.write_text(ONE_BY_ONE)
    plain = subprocess.run([PYTHON, str(script), str(marker)], cwd=str(tmp_path), env=clean_env(),
                           capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0 and marker.exists(), plain.stderr[-3000:]
    marker.unlink()
    r = subprocess.run([PYTHON, str(script), str(marker)], cwd=str(tmp_path), env=clean_env(LD_PRELOAD=LIB),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not marker.exists(), r.stdout + r.stderr[-3000:]
    first = [line.split("|")[:3] for line in plain.stdout.splitlines()]
    assert [line.split("|")[:3] for line in r.stdout.splitlines()] == first, (plain.stdout, r.stdout, r.stderr[-3000:])
    assert len(first) == 6 and all(f[2] == repr({"first": list(range(10))}) for f in first), plain.stdout
    assert all(line.split("|")[3] == "SafePickleBlocked" for line in r.stdout.splitlines()), r.stdout


# An unpickler that keeps its stream among its attributes (a subclass that stores `self.file`,
# the common way to write one; joblib's NumpyUnpickler, which reads array bytes from its
# file_handle between opcodes) was judged by names and behaviour only over a stream that
# cannot be read ahead and sought back (a pipe, a socket file, an HTTP response): the
# reflective walk to os.write on a file the program holds open, with only harmless-looking
# globals, wrote under the preload through all three. Now the one pickle the load reads is
# read through its STOP and judged, as for any unpickler over such a stream, and the
# unpickler reads those bytes; one whose own reads between opcodes leave that walk no STOP to
# find (joblib's arrays) is refused with a message that says why and what to do.
KEPT = textwrap.dedent("""
    import io, json, os, pickle, sys, threading
    import numpy, joblib
    DIR = sys.argv[1]
    def pipe(data):
        r, w = os.pipe()
        threading.Thread(target=lambda: (os.write(w, data), os.close(w))).start()
        return open(r, "rb")
    class Kept(pickle.Unpickler):
        def __init__(self, f):
            super().__init__(f)
            self.file = f
    class PyKept(pickle._Unpickler):
        def __init__(self, f):
            super().__init__(f)
            self.file = f
    LOADERS = {"Unpickler keeping its file": lambda f: Kept(f).load(),
               "_Unpickler keeping its file": lambda f: PyKept(f).load(),
               "joblib.load": lambda f: joblib.load(f)}
    write = bytes(b ^ 0x5A for b in open(os.path.join(DIR, "write.x"), "rb").read())
    plain = pickle.dumps({"a": list(range(50)), "b": "text"}, protocol=4)
    jb = io.BytesIO(); joblib.dump({"a": list(range(50)), "b": "text"}, jb); plain_joblib = jb.getvalue()
    jb = io.BytesIO(); joblib.dump({"w": numpy.arange(1000.0)}, jb); arrays = jb.getvalue()
    out = {}
    for name, ld in LOADERS.items():
        log = os.open(os.path.join(DIR, "log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(log, 100); os.close(log)   # a file the program holds open
        try:
            ld(pipe(write)); res = "loaded"
        except Exception as e:
            res = type(e).__name__
        os.close(100)
        out[name + " payload"] = [res, open(os.path.join(DIR, "log"), "rb").read().decode()]
        benign = plain_joblib if name == "joblib.load" else plain
        f = pipe(benign + b"AFTER")      # what the load leaves in the pipe is the program's
        try:
            v = ld(f); out[name + " benign"] = [repr(v), f.read().decode()]
        except Exception as e:
            out[name + " benign"] = [type(e).__name__, ""]
        if name == "joblib.load":
            try:
                v = ld(pipe(arrays)); out[name + " arrays"] = ["loaded", float(v["w"].sum())]
            except Exception as e:
                out[name + " arrays"] = [type(e).__name__, str(e)[:400]]
    print(json.dumps(out))
""")


def test_unpickler_keeping_its_pipe(tmp_path):
    from test_layer2_entrypoints import reflective_write_pickle
    from test_layer2_escapes import reflective_classes
    module, cls, osname = reflective_classes(1)[0]
    w = reflective_write_pickle(module, cls, osname, 100, b"PWNED")
    (tmp_path / "write.x").write_bytes(bytes(b ^ 0x5A for b in w))
    e = clean_env()
    a = subprocess.run([PYTHON, "-c", KEPT, str(tmp_path)], env=e, capture_output=True, text=True, timeout=300)
    assert a.returncode == 0, a.stderr[-3000:]
    plain = __import__("json").loads(a.stdout.strip().splitlines()[-1])
    names = ("Unpickler keeping its file", "_Unpickler keeping its file", "joblib.load")
    for n in names:   # the shape acts without the preload, and every benign load works
        assert plain[n + " payload"] == ["loaded", "PWNED"], plain
        assert plain[n + " benign"][1] == "AFTER", plain
    assert plain["joblib.load arrays"] == ["loaded", 499500.0], plain
    e["LD_PRELOAD"] = LIB
    b = subprocess.run([PYTHON, "-c", KEPT, str(tmp_path)], env=e, capture_output=True, text=True, timeout=300)
    assert b.returncode == 0, b.stderr[-3000:]
    pre = __import__("json").loads(b.stdout.strip().splitlines()[-1])
    for n in names:
        assert pre[n + " payload"][1] == "", (n, pre, b.stderr[-3000:])   # nothing written
        assert pre[n + " payload"][0] != "loaded", (n, pre)
        assert pre[n + " benign"] == plain[n + " benign"], (n, pre, b.stderr[-3000:])
    # joblib's arrays are read by its unpickler between opcodes: refused, saying why
    assert pre["joblib.load arrays"][0] != "loaded", pre
    assert "runtime.stream_kept" in b.stderr and "io.BytesIO" in b.stderr, b.stderr[-3000:]
