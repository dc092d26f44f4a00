"""test_layer2_subinterpreters.py - the pure-Python unpickler of a sub-interpreter.

Layer 2 judges the bytes of a pure-Python unpickle by wrapping
pickle._Unpickler.load. It did so once per process, at the first
`import pickle`; a sub-interpreter (`_xxsubinterpreters`, mod_wsgi's
application groups, PEP 684/734 interpreters) imports a pickle module and a
pickle._Unpickler class of its own, which stayed unwrapped: pickle._loads,
pickle._load, pickle._Unpickler and every subclass of it (joblib's
NumpyUnpickler, pandas' compat Unpickler, torch.package's) ran there judged
by names and behaviour only, and the reflective walk to os.write on a file the
program holds open (no audit event, no libc veto: only the bytes give it
away) wrote into that file with both layers on. The C unpickler's methods are
static and shared, so pickle.loads in the same sub-interpreter was refused.

Each pure-Python entry point, in a fresh sub-interpreter: without the preload
the payload writes (the shape works); with it nothing is written and each
load is refused; a benign pickle loads the same object. The same holds in one
interpreter for a pickle module imported again (test_pickle_imported_again)."""
import os
import subprocess

import pytest

from conftest import LIB, PYTHON, clean_env
from test_layer2_entrypoints import reflective_write_pickle
from test_layer2_escapes import reflective_classes

pytestmark = pytest.mark.skipif(not os.path.exists(LIB), reason="libsafepickle.so not built")

ENTRIES = {
    "_loads": "pickle._loads(blob)",
    "_load": "pickle._load(io.BytesIO(blob))",
    "_Unpickler": "pickle._Unpickler(io.BytesIO(blob)).load()",
    "subclass": "type('Mine', (pickle._Unpickler,), {})(io.BytesIO(blob)).load()",
    "C.loads": "pickle.loads(blob)",
}

SCRIPT = r"""
import os, sys
import _xxsubinterpreters as si
victim, blob, benign = sys.argv[1], bytes.fromhex(sys.argv[2]), bytes.fromhex(sys.argv[3])
fd = os.open(victim, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
os.dup2(fd, 100)
ENTRIES = %(entries)r
for name, call in ENTRIES.items():
    for kind, data in (("evil", blob), ("benign", benign)):
        interp = si.create()
        code = ("import io, pickle\nblob = %%r\ntry:\n    print(%%r, 'loaded', repr(%%s))\n"
                "except Exception as e:\n    print(%%r, 'error', type(e).__name__)\n") %% (data, name + "." + kind, call,
                                                                                  name + "." + kind)
        si.run_string(interp, code)
        si.destroy(interp)
        sys.stdout.flush()
        if kind == "evil":
            print(name + ".wrote", os.fstat(100).st_size > 0)
            os.ftruncate(100, 0)
"""


def _run(tmp_path, preload):
    module, cls, osname = reflective_classes(1)[0]
    blob = bytes(reflective_write_pickle(module, cls, osname, 100, b"PWNED"))
    import pickle
    benign = pickle.dumps({"w": [1.5, 2.5], "name": "m"}, protocol=2)
    e = clean_env(LD_PRELOAD=LIB) if preload else clean_env()
    r = subprocess.run([PYTHON, "-c", SCRIPT % {"entries": ENTRIES}, str(tmp_path / "victim"), blob.hex(),
                        benign.hex()], env=e, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = {}
    for line in r.stdout.splitlines():
        k, _, v = line.partition(" ")
        out[k] = v
    return out, r.stderr


def test_subinterpreter_pure_python_unpickler(tmp_path):
    plain, perr = _run(tmp_path, False)
    assert all(plain[n + ".wrote"] == "True" for n in ENTRIES), ("control: every payload must write", plain, perr)
    pre, err = _run(tmp_path, True)
    wrote = [n for n in ENTRIES if pre.get(n + ".wrote") != "False"]
    assert not wrote, ("payload wrote under the preload", wrote, pre, err[-3000:])
    assert all(pre[n + ".evil"].startswith("error SafePickleBlocked") for n in ENTRIES), pre
    assert all(pre[n + ".benign"] == plain[n + ".benign"] and pre[n + ".benign"].startswith("loaded")
               for n in ENTRIES), (pre, plain)
    assert err.count("safepickle: blocked") >= len(ENTRIES), err[-3000:]


AGAIN = r"""
import os, sys, io
victim, blob = sys.argv[1], bytes.fromhex(sys.argv[2])
fd = os.open(victim, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
os.dup2(fd, 100)
import pickle
del sys.modules["pickle"]
import pickle                      # a second pickle module, with a pickle._Unpickler class of its own
try:
    pickle._Unpickler(io.BytesIO(blob)).load()
    print("loaded")
except Exception as e:
    print("error", type(e).__name__)
print("wrote", os.fstat(100).st_size > 0)
"""


def test_pickle_imported_again(tmp_path):
    """The same class in one interpreter: `del sys.modules['pickle']` and
    `import pickle` again make a new pickle._Unpickler, which ran unwrapped
    (the payload wrote) before the wrap was done at every import of pickle."""
    module, cls, osname = reflective_classes(1)[0]
    blob = bytes(reflective_write_pickle(module, cls, osname, 100, b"PWNED"))
    out = {}
    for preload in (False, True):
        e = clean_env(LD_PRELOAD=LIB) if preload else clean_env()
        r = subprocess.run([PYTHON, "-c", AGAIN, str(tmp_path / "victim"), blob.hex()], env=e, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        out[preload] = (r.stdout.split(), r.stderr)
    assert out[False][0] == ["loaded", "wrote", "True"], out[False]
    assert out[True][0] == ["error", "SafePickleBlocked", "wrote", "False"], out[True]


RELOADED = r"""
import importlib, io, os, pickle, sys
victim, blob = sys.argv[1], bytes.fromhex(sys.argv[2])
fd = os.open(victim, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
os.dup2(fd, 100)
importlib.reload(pickle)            # the module body again: a new pickle._Unpickler, no import event after it
benign = pickle.dumps(["w", 1.5, importlib.import_module("collections").OrderedDict(a=1)], protocol=2)
for what, data in (("evil", blob), ("evil2", blob), ("benign", benign)):
    try:
        pickle._Unpickler(io.BytesIO(data)).load()
        print(what, "loaded")
    except Exception as e:
        print(what, "error", type(e).__name__)
    print(what + ".size", os.fstat(100).st_size)   # 5 more for each payload that wrote (no write of ours here)
"""


def test_pickle_reloaded(tmp_path):
    """importlib.reload(pickle) makes a new pickle._Unpickler with no import event
    after it: it ran unwrapped (the reflective write went through with both layers
    on). Now the first find_class of a load outside every wrapped load wraps the new
    class and refuses that load (its bytes were not judged); later loads are judged
    by their bytes, and a benign one loads."""
    module, cls, osname = reflective_classes(1)[0]
    blob = bytes(reflective_write_pickle(module, cls, osname, 100, b"PWNED"))
    out = {}
    for preload in (False, True):
        e = clean_env(LD_PRELOAD=LIB) if preload else clean_env()
        r = subprocess.run([PYTHON, "-c", RELOADED, str(tmp_path / "victim"), blob.hex()], env=e,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        out[preload] = ({k: v for k, _, v in (ln.partition(" ") for ln in r.stdout.splitlines())}, r.stderr)
    plain, (pre, err) = out[False][0], out[True]
    assert plain == {"evil": "loaded", "evil.size": "5", "evil2": "loaded", "evil2.size": "10",
                     "benign": "loaded", "benign.size": "10"}, plain
    assert pre == {"evil": "error SafePickleBlocked", "evil.size": "0", "evil2": "error SafePickleBlocked",
                   "evil2.size": "0", "benign": "loaded", "benign.size": "0"}, (pre, err[-3000:])
    assert "pickle._Unpickler was replaced" in err, err[-3000:]
