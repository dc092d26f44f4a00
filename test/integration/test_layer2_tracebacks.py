"""test_layer2_tracebacks.py - exceptions with tracebacks sent back by workers (tblib).

dask and joblib workers send an exception with its traceback through tblib:
unpickle_exception(func, args, cause, tb) calls func(*args) (`@apply`: judged as that
call) and unpickle_traceback(frame, lineno, next) rebuilds each frame by compiling
'\\n' * (lineno - 1) + 'raise __traceback_maker' and exec'ing it with the frame's
f_globals (`@tblineno`: judged by every line number and frame global the stream can hand
it, analyzer/classify.c cl_tb_bounded). A real exception pickle is safe, so layer 2 lets
tblib's own compile run (it vetoed it: joblib's multiprocessing error tests timed out, dask's
client failed). The shapes that would reach code or exhaust the loader stay refused: a
__traceback_maker global (raised: its class instantiated), func(*args) with a dangerous
func, a line number past the budget, one the analyzer cannot read, a cyclic chain."""
import os
import pickle
import subprocess
import textwrap

import pytest

import spgen
from conftest import CLI, LIB, PYTHON, clean_env

pytestmark = pytest.mark.skipif(not os.path.exists(LIB), reason="libsafepickle.so not built")

MAKE = textwrap.dedent("""
    import pickle, sys, tblib.pickling_support
    tblib.pickling_support.install()
    def inner(x):
        if x == 0:
            raise ValueError('bad value')
        return inner(x - 1)
    def outer():
        try:
            inner(3)
        except ValueError as e:
            raise KeyError('wrapped') from e
    try:
        outer()
    except Exception as e:
        exc = e
    sys.stdout.buffer.write(pickle.dumps(exc))
""")

LOAD = textwrap.dedent("""
    import pickle, sys, traceback
    sys.path.insert(0, %r)
    data = sys.stdin.buffer.read()
    try:
        e = pickle.loads(data)
        print('LOADED', type(e).__name__, len(traceback.extract_tb(e.__traceback__)),
              type(e.__cause__).__name__)
    except Exception as x:
        print('REFUSED', type(x).__name__, x)
""")


def _run(code, data=None, preload=False, timeout=120):
    e = clean_env()
    if preload:
        e["LD_PRELOAD"] = LIB
    return subprocess.run([PYTHON, "-c", code], input=data, env=e, capture_output=True, timeout=timeout)


def _scan(tmp_path, data):
    p = tmp_path / "x.pkl"
    p.write_bytes(data)
    return subprocess.run([CLI, "scan", str(p)], env=clean_env(), capture_output=True, text=True, timeout=60)


def test_real_worker_exception_loads(tmp_path):
    data = _run(MAKE).stdout
    assert data.startswith(b"\x80"), "no pickle made"
    r = _run(LOAD % str(tmp_path), data)
    assert r.stdout.startswith(b"LOADED KeyError"), r
    plain = r.stdout
    r = _run(LOAD % str(tmp_path), data, preload=True)
    assert r.stdout == plain, (r.stdout, r.stderr[-2000:])    # same frames, same cause
    assert b"safepickle: blocked" not in r.stderr
    s = _scan(tmp_path, data)
    assert s.returncode == 0 and "1 safe" in s.stdout, s.stdout


def _frame(a, filename, f_globals):
    """tblib.Frame as tblib pickles it: NEWOBJ + BUILD of a state dict."""
    a.global_("tblib", "Frame").tuple_(0).op(b"\x81").empty_dict().mark()
    a.push("f_locals").empty_dict().push("f_globals").empty_dict().mark()
    for k, v in f_globals:
        a.push(k)
        v(a)
    a.op(b"u").push("f_code").global_("tblib", "Code").tuple_(0).op(b"\x81").empty_dict().mark()
    a.push("co_filename").push(filename).push("co_name").push("f").op(b"u").build()
    a.push("f_lineno").push(1).op(b"u").build()
    return a


def _traceback_call(frame_globals, lineno, next_=None):
    a = spgen.Asm(4).global_("tblib.pickling_support", "unpickle_traceback").mark()
    _frame(a, "f.py", frame_globals)
    a.push(lineno)
    if next_:
        next_(a)
    else:
        a.none()
    return a.tuple_().reduce()


def test_gadget_shapes_refused(tmp_path):
    marker = tmp_path / "PAYLOAD_RAN"
    (tmp_path / "tbgadget.py").write_text(
        "class Boom(Exception):\n    def __init__(self, *a):\n        open(%r, 'w').write('x')\n" % str(marker))
    boom = lambda a: a.global_("tbgadget", "Boom")   # noqa: E731
    cmd = spgen.touch_cmd(marker)
    payloads = {
        # the frame's globals name __traceback_maker: `raise __traceback_maker` builds it
        "traceback_maker": _traceback_call([("__traceback_maker", boom)], 3).stop(),
        # ... or a __builtins__ mapping that holds it
        "builtins_maker": _traceback_call([("__builtins__", lambda a: a.empty_dict().push("__traceback_maker")
                                            .global_("tbgadget", "Boom").setitem())], 3).stop(),
        # unpickle_exception is func(*args)
        "apply_os_system": spgen.Asm(4).global_("tblib.pickling_support", "unpickle_exception").mark()
        .global_("os", "system").mark().push(cmd).tuple_().none().none().tuple_().reduce().stop(),
    }
    for name, data in payloads.items():
        r = _run(LOAD % str(tmp_path), data)
        assert marker.exists(), (name, r.stdout, r.stderr)   # the payload is real
        marker.unlink()
        r = _run(LOAD % str(tmp_path), data, preload=True)
        assert not marker.exists(), name
        assert r.stdout.startswith(b"REFUSED") and b"safepickle: blocked" in r.stderr, (name, r.stdout, r.stderr[-1500:])
        assert _scan(tmp_path, data).returncode == 1, name


def _self_chain(a):
    # a tblib.Traceback whose tb_next is itself (memo 0): as_traceback never ends
    a.global_("tblib", "Traceback").tuple_(0).op(b"\x81").memoize()
    a.empty_dict().mark().push("tb_frame").none().push("tb_lineno").push(1).push("tb_next").get(0).op(b"u").build()


def test_unbounded_rebuilds_refused(tmp_path):
    """Memory, time and endless loops: refused before tblib runs (not run plainly: a
    10**10-line compile or an endless chain is the damage)."""
    payloads = {
        "huge_lineno": _traceback_call([], 10 ** 10).stop(),
        "huge_in_chain": _traceback_call([], 3, lambda a: a.global_("tblib", "Traceback").tuple_(0).op(b"\x81")
                                         .empty_dict().mark().push("tb_frame").none().push("tb_lineno").push(10 ** 10)
                                         .push("tb_next").none().op(b"u").build()).stop(),
        "computed_lineno": _traceback_call([], 3, lambda a: a.global_("tblib", "Traceback").tuple_(0)
                                           .op(b"\x81").empty_dict().mark().push("tb_frame").none().push("tb_lineno")
                                           .global_("builtins", "int").mark().push("99999999999").tuple_().reduce()
                                           .push("tb_next").none().op(b"u").build()).stop(),
        "cycle": _traceback_call([], 3, _self_chain).stop(),
        "many_rebuilds": pickle.dumps(None),   # replaced below
    }
    # 70 rebuilds of 100,000 lines each: 7,000,000 lines in all, past the 4,194,304 budget
    a = spgen.Asm(4).mark()
    for _ in range(70):
        a.global_("tblib.pickling_support", "unpickle_traceback").mark()
        _frame(a, "f.py", [])
        a.push(100000).none().tuple_().reduce()
    payloads["many_rebuilds"] = a.op(b"l").stop()
    for name, data in payloads.items():
        s = _scan(tmp_path, data)
        assert s.returncode == 1 and "args.resource" in subprocess.run(
            [CLI, "scan", "-v", str(tmp_path / "x.pkl")], env=clean_env(), capture_output=True, text=True).stdout, \
            (name, s.stdout)
        r = _run(LOAD % str(tmp_path), data, preload=True, timeout=60)
        assert r.stdout.startswith(b"REFUSED") and b"safepickle: blocked" in r.stderr, (name, r.stdout, r.stderr[-1500:])
    # the same budget admits 30 such rebuilds (3,000,000 lines)
    a = spgen.Asm(4).mark()
    for _ in range(30):
        a.global_("tblib.pickling_support", "unpickle_traceback").mark()
        _frame(a, "f.py", [])
        a.push(100000).none().tuple_().reduce()
    assert _scan(tmp_path, a.op(b"l").stop()).returncode == 0


def test_code_like_message_with_traceback_loads(tmp_path):
    """A worker error whose message quotes code (a traceback text, as loky's
    _RemoteTraceback and dask's errors carry) is suspicious only through a data
    constructor's argument (args.code_like): it reaches only data-safe callables, so tblib's
    own compile is not vetoed (spa_result_data_only). The same text handed to a function
    that could run it is still refused (test_gadget_shapes_refused: unpickle_exception is
    judged as func(*args))."""
    make = MAKE.replace("raise ValueError('bad value')",
                        "raise ValueError('Traceback (most recent call last):\\n  File \"w.py\", line 3\\n"
                        "    os.system(cmd); exec(code)')")
    data = _run(make).stdout
    assert data.startswith(b"\x80"), "no pickle made"
    s = _scan(tmp_path, data)
    assert "1 suspicious" in s.stdout, s.stdout          # the text is seen
    r = _run(LOAD % str(tmp_path), data)
    assert r.stdout.startswith(b"LOADED KeyError"), r
    plain = r.stdout
    r = _run(LOAD % str(tmp_path), data, preload=True)
    assert r.stdout == plain, (r.stdout, r.stderr[-2000:])
    assert b"safepickle: blocked" not in r.stderr


def test_code_like_message_loads_again_when_allowed(tmp_path):
    """The in-memory verdict cache keeps what the veto saw: under a policy that allows
    suspicious loads, the second load of the same bytes (a cache hit) lets tblib's own
    compile run as the first did (the cache held the raw 'suspicious' and the veto refused
    the second load)."""
    make = MAKE.replace("raise ValueError('bad value')",
                        "raise ValueError('Traceback (most recent call last):\\n  File \"w.py\", line 3\\n"
                        "    os.system(cmd); exec(code)')")
    data = _run(make).stdout
    assert data.startswith(b"\x80"), "no pickle made"
    assert "1 suspicious" in _scan(tmp_path, data).stdout
    pol = tmp_path / "allow.json"
    pol.write_text('{"schema": 1, "actions": {"suspicious": "allow"}}')
    twice = textwrap.dedent("""
        import pickle, sys, traceback
        data = sys.stdin.buffer.read()
        for _ in range(2):
            try:
                e = pickle.loads(data)
                print('LOADED', type(e).__name__, len(traceback.extract_tb(e.__traceback__)))
            except Exception as x:
                print('REFUSED', type(x).__name__, x)
    """)
    e = clean_env()
    r = subprocess.run([PYTHON, "-c", twice], input=data, env=e, capture_output=True, timeout=120)
    lines = r.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith(b"LOADED KeyError") and lines[1] == lines[0], r
    e.update(LD_PRELOAD=LIB, SAFEPICKLE_POLICY=str(pol))
    q = subprocess.run([PYTHON, "-c", twice], input=data, env=e, capture_output=True, timeout=120)
    assert q.stdout == r.stdout, (q.stdout, q.stderr[-2000:])
