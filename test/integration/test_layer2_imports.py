"""test_layer2_imports.py - layer 2's behaviour veto and the imports an unpickle makes.

Importing a module inside an unpickle runs the import machinery: it unmarshals the
module's cached .pyc (marshal.loads in importlib._bootstrap_external._compile_bytecode)
or compiles its source, then execs the module body. For an import the unpickle announced
(a global's module, its parents, what their bodies import) those events are the import's
own. A library whose import loads another top-level module through
importlib.import_module (no `import` audit event: Debian's distutils shim loads setuptools
so, inside joblib.backports' `import distutils`, in every spawned joblib worker) runs that
module inside the announced import: it passes. A gadget's own marshal.loads/exec and its
importlib.import_module of a module outside any announced import are still refused (the
payloads are proven to run without the preload).

The loads use an Unpickler over a pipe that keeps the pipe among its attributes (as
joblib's does). Until session 10 such a load was judged by names and behaviour only; its
one pickle is now read and judged first like any stream's, so the gadget payloads here
meet the bytes judgement (malicious: refused there) or, judged suspicious (an unknown
function), the behaviour veto (a load whose bytes were judged safe has no code veto)."""
import compileall
import marshal
import os
import subprocess
import textwrap

import pytest

import spgen
from conftest import LIB, PYTHON, clean_env

pytestmark = pytest.mark.skipif(not os.path.exists(LIB), reason="libsafepickle.so not built")

LOAD = textwrap.dedent("""
    import pickle, sys
    sys.path.insert(0, %r)
    class Keeper(pickle.Unpickler):
        def __init__(self, f):
            super().__init__(f)
            self.f = f
    try:
        o = Keeper(sys.stdin.buffer).load()
        print('LOADED', type(o).__name__)
    except Exception as e:
        print('REFUSED', type(e).__name__, e)
""")


def _load(site, data, preload):
    e = clean_env()
    if preload:
        e["LD_PRELOAD"] = LIB
    return subprocess.run([PYTHON, "-c", LOAD % str(site)], input=data, env=e, capture_output=True,
                          timeout=300)


def _site(tmp_path, pyc):
    site = tmp_path / "site"
    (site / "outerlib").mkdir(parents=True)
    # a library whose import loads another top-level module by name, as a plugin
    # loader or Debian's distutils shim does
    (site / "outerlib" / "__init__.py").write_text(
        "import importlib\n_inner = importlib.import_module('innerlib')\n"
        "class Record:\n    def __init__(self, v=None):\n        self.v = v\n")
    (site / "innerlib.py").write_text("import json\nVALUE = json.dumps([1, 2])\n")
    (site / "gadgets.py").write_text(
        "import importlib, marshal\n"
        "def run_code(b):\n    exec(marshal.loads(b))\n"
        "def load_plugin(name):\n    return importlib.import_module(name)\n")
    if pyc:
        assert compileall.compile_dir(str(site), quiet=1)
    return site


@pytest.mark.parametrize("pyc", [True, False], ids=["pyc", "source"])
def test_import_nested_in_announced_import_passes(tmp_path, pyc):
    site = _site(tmp_path, pyc)
    data = spgen.Asm(3).global_("outerlib", "Record").mark().push(7).tuple_().reduce().stop()
    r = _load(site, data, preload=False)
    assert b"LOADED Record" in r.stdout, r.stderr
    r = _load(site, data, preload=True)
    assert b"LOADED Record" in r.stdout, (r.stdout, r.stderr[-2000:])
    assert b"safepickle: blocked" not in r.stderr


@pytest.mark.parametrize("pyc", [True, False], ids=["pyc", "source"])
def test_gadget_code_and_imports_still_refused(tmp_path, pyc):
    site = _site(tmp_path, pyc)
    marker = tmp_path / "PAYLOAD_RAN"
    evil = site / "evilplugin.py"
    evil.write_text("open(%r, 'w').write('x')\n" % str(marker))
    if pyc:
        compileall.compile_file(str(evil), quiet=1)
    code = marshal.dumps(compile("open(%r, 'w').write('x')" % str(marker), "<payload>", "exec"))
    payloads = {
        # the gadget unmarshals and runs code itself (marshal.loads outside any import)
        "marshal_exec": spgen.Asm(3).global_("gadgets", "run_code").mark().push(code).tuple_().reduce().stop(),
        # the gadget imports a top-level module nothing announced: its body runs
        "import_module": spgen.Asm(3).global_("gadgets", "load_plugin").mark().push("evilplugin").tuple_()
        .reduce().stop(),
        # the same after an announced import with a nested import_module (outerlib's) has
        # run: that import's leniency ends with it
        "after_announced": spgen.Asm(3).global_("outerlib", "Record").mark().tuple_().reduce().pop()
        .global_("gadgets", "load_plugin").mark().push("evilplugin").tuple_().reduce().stop(),
    }
    for name, data in payloads.items():
        r = _load(site, data, preload=False)
        assert marker.exists(), (name, r.stdout, r.stderr)   # the payload is real
        marker.unlink()
        r = _load(site, data, preload=True)
        assert not marker.exists(), name
        assert b"REFUSED" in r.stdout and b"safepickle: blocked" in r.stderr, (name, r.stdout, r.stderr[-1500:])


# An unpickler whose find_class override imports the global's module itself, as
# renaming and allow-list unpicklers do, raises no pickle.find_class event: nothing
# announced its import, and the import machinery's marshal.loads/exec of the module
# were refused (a benign load failed under the preload only).
FIND_CLASS_LOAD = textwrap.dedent("""
    import importlib, io, pickle, sys
    sys.path.insert(0, %r)
    how, src = sys.argv[1], sys.argv[2]
    class Own(pickle.Unpickler):
        def find_class(self, module, name):
            if how == "dunder":
                __import__(module)
                return getattr(sys.modules[module], name)
            return getattr(importlib.import_module(module), name)
    class Kept(Own):             # keeps its file (its bytes are judged all the same)
        def __init__(self, f):
            super().__init__(f)
            self.f = f
    try:
        if src == "file":
            with open(sys.argv[3], "rb") as f:
                o = Own(f).load()
        elif src == "bytes":     # read ahead, judged and pinned
            o = Kept(io.BytesIO(sys.stdin.buffer.read())).load()
        else:                    # a pipe it keeps: one pickle read through its STOP and judged
            o = Kept(sys.stdin.buffer).load()
        print('LOADED', type(o).__name__)
    except Exception as e:
        print('REFUSED', type(e).__name__, e)
""")


def _own_load(site, how, src, data, path, preload):
    e = clean_env()
    if preload:
        e["LD_PRELOAD"] = LIB
    return subprocess.run([PYTHON, "-c", FIND_CLASS_LOAD % str(site), how, src, str(path)], input=data, env=e,
                          capture_output=True, timeout=300)


@pytest.mark.parametrize("pyc", [True, False], ids=["pyc", "source"])
@pytest.mark.parametrize("how", ["import_module", "dunder"])
@pytest.mark.parametrize("src", ["file", "bytes", "pipe"])
def test_find_class_override_import_passes(tmp_path, pyc, how, src):
    site = _site(tmp_path, pyc)
    data = spgen.Asm(3).global_("outerlib", "Record").mark().push(7).tuple_().reduce().stop()
    path = tmp_path / "record.pkl"
    path.write_bytes(data)
    r = _own_load(site, how, src, data, path, preload=False)
    assert b"LOADED Record" in r.stdout, r.stderr
    r = _own_load(site, how, src, data, path, preload=True)
    assert b"LOADED Record" in r.stdout, (r.stdout, r.stderr[-2000:])
    assert b"safepickle: blocked" not in r.stderr


@pytest.mark.parametrize("pyc", [True, False], ids=["pyc", "source"])
def test_find_class_of_a_non_unpickler_still_refused(tmp_path, pyc):
    """The leniency is for an unpickler's own find_class (its self an Unpickler): a
    gadget that reaches a method named find_class on any other object and imports a
    module nothing announced is refused as before."""
    site = _site(tmp_path, pyc)
    marker = tmp_path / "PAYLOAD_RAN"
    (site / "evilplugin.py").write_text("open(%r, 'w').write('x')\nx = 1\n" % str(marker))
    (site / "finders.py").write_text(
        "import importlib\n"
        "class Finder:\n    def find_class(self, module, name):\n"
        "        return getattr(importlib.import_module(module), name)\n"
        "def find(module):\n    return Finder().find_class(module, 'x')\n")
    if pyc:
        assert compileall.compile_dir(str(site), quiet=1)
    data = spgen.Asm(3).global_("finders", "find").mark().push("evilplugin").tuple_().reduce().stop()
    r = _load(site, data, preload=False)
    assert marker.exists(), (r.stdout, r.stderr)   # the payload is real
    marker.unlink()
    r = _load(site, data, preload=True)
    assert not marker.exists()
    assert b"REFUSED" in r.stdout and b"safepickle: blocked" in r.stderr, (r.stdout, r.stderr[-1500:])


def test_binary_argument_named_by_size(tmp_path):
    """A refused event whose argument is binary data (marshal.loads' code) names it
    by its size in the message, not as a line of '?'."""
    site = _site(tmp_path, True)
    marker = tmp_path / "PAYLOAD_RAN"
    (site / "blobs.py").write_text("import marshal\ndef value_of(b):\n    return eval(marshal.loads(b))\n")
    code = marshal.dumps(compile("open(%r, 'w').write('x')" % str(marker), "<payload>", "exec"))
    data = spgen.Asm(3).global_("blobs", "value_of").mark().push(code).tuple_().reduce().stop()
    r = _load(site, data, preload=False)
    assert marker.exists(), (r.stdout, r.stderr)   # the payload is real
    marker.unlink()
    r = _load(site, data, preload=True)
    assert not marker.exists()
    assert b"REFUSED" in r.stdout, (r.stdout, r.stderr[-1500:])
    assert b"marshal.loads(<%d bytes>)" % len(code) in r.stderr, r.stderr[-1500:]
