"""sp_containers.py - helpers for the container tests: run `safepickle scan
--format json` on files and pick imports, calls and notes out of the result,
and a recording pickle module that learns which globals the REAL loader
resolves (torch.load(pickle_module=...), numpy, joblib and pandas patched to
use it), used as ground truth for the benign originals."""
import json

from conftest import run_cli

# Python source for the generator subprocesses: a pickle module whose
# Unpickler records every (module, name) find_class is asked for, as written
# in the stream (before the Python-2 compat mapping).
RECORDER = r'''
import io, pickle, sys, types
REC = []
class RecUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        REC.append((module, name))
        return super().find_class(module, name)
class PyRecUnpickler(pickle._Unpickler):
    def find_class(self, module, name):
        REC.append((module, name))
        return super().find_class(module, name)
def _load(f, **kw):
    return RecUnpickler(f, **kw).load()
def _loads(b, **kw):
    return RecUnpickler(io.BytesIO(b), **kw).load()
recpickle = types.ModuleType("recpickle")
for _k in dir(pickle):
    if not _k.startswith("__"):
        setattr(recpickle, _k, getattr(pickle, _k))
recpickle.Unpickler = RecUnpickler
recpickle.load = _load
recpickle.loads = _loads
def recorded(fn):
    del REC[:]
    fn()
    return sorted(set(REC))
'''


def scan(path, *extra):
    """The JSON result of one file."""
    r = run_cli("scan", "--format", "json", *extra, str(path))
    assert r.returncode in (0, 1), r.stderr
    d = json.loads(r.stdout)
    files = d["files"] if isinstance(d, dict) else d
    assert len(files) == 1
    return files[0]


def imports(res, raw=False):
    """[(loc, module, name)] of every import, in stream order."""
    out = []
    for s in res["streams"]:
        for e in s["ir"]:
            if e["kind"] == "import":
                if raw:
                    out.append((s["loc"], e.get("raw_module", e["module"]), e.get("raw_name", e["name"])))
                else:
                    out.append((s["loc"], e["module"], e["name"]))
    return out


def import_set(res, raw=True):
    return sorted({(m, n) for _, m, n in imports(res, raw=raw)})


def calls(res):
    """[(loc, callee_module, callee_name)] of calls whose callee is a global."""
    out = []
    for s in res["streams"]:
        for e in s["ir"]:
            if e["kind"] == "call":
                c = e.get("callee") or {}
                if c.get("type") == "global":
                    out.append((s["loc"], c["module"], c["name"]))
    return out


def notes(res, kind=None):
    return [n for n in res["notes"] if kind is None or n["kind"] == kind]


def payload_locs(res, module="builtins", name="exec"):
    """Locations of streams that import AND call module.name."""
    imp = {loc for loc, m, n in imports(res) if (m, n) == (module, name)}
    cal = {loc for loc, m, n in calls(res) if (m, n) == (module, name)}
    return sorted(imp & cal)
