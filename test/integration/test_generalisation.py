"""test_generalisation.py - the classifier generalises instead of enumerating gadgets.

An independent enumerator (ENUM below, run under /usr/bin/python3) walks every importable
module of sys.stdlib_module_names and the risky ML subpackages (torch.utils, torch.jit,
torch.fx, torch.hub, torch._inductor, torch._dynamo, numpy.testing, numpy.f2py,
numpy.distutils, ...), and keeps each function or method whose own source code directly
calls a primitive that runs code, spawns a process, touches the network or writes files
(exec/eval/compile, os.system/exec*/spawn*/fork, subprocess, socket, open(..., 'w'),
os.remove & co, shutil, urlopen, ctypes, ...). It knows nothing about the knowledge base.
For each one a pickle calling it (with a harmless-looking argument) is built; every one
must be classified malicious and blocked. The suite reports how many were covered and how
many of those the knowledge base names individually (module:name keys) - the rest are
judged by module or component rules alone."""
import json
import os
import re
import subprocess

import pytest

from conftest import PYTHON, clean_env, run_cli
from spgen import Asm

ENUM = r'''
import ast, inspect, importlib, json, pkgutil, sys, textwrap, types, warnings, io, contextlib
warnings.simplefilter("ignore")
SKIP = {"antigravity", "this", "idlelib", "turtledemo", "tkinter", "turtle", "__hello__", "__phello__",
        "_tkinter", "lib2to3", "pydoc_data", "msilib", "_msi", "winreg", "winsound", "msvcrt", "_winapi",
        "_overlapped", "nt", "ntpath", "nturl2path", "_scproxy", "ossaudiodev", "spwd", "nis", "_crypt", "crypt"}
NAME_SINKS = {"exec": "code_exec", "eval": "code_exec", "compile": "code_exec", "__import__": "import",
              "breakpoint": "code_exec"}
ATTR_SINKS = [
    (r"^os\.(system|popen|exec\w*|spawn\w*|posix_spawn\w*|fork\w*|kill|killpg)$", "process"),
    (r"^(subprocess|_posixsubprocess)\.\w+$", "process"),
    (r"^os\.(remove|unlink|rmdir|removedirs|rename|renames|replace|mkdir|makedirs|chmod|chown|symlink|link|truncate|mkfifo|utime)$", "file_write"),
    (r"^shutil\.(copy\w*|move|rmtree|make_archive|unpack_archive)$", "file_write"),
    (r"^(socket\.(socket|create_connection|create_server|socketpair)|http\.client\.\w+Connection|urllib\.request\.(urlopen|urlretrieve)|ftplib\.FTP\w*|smtplib\.SMTP\w*)$", "network"),
    (r"^(ctypes\.(CDLL|PyDLL|cdll|pydll|LibraryLoader)|_ctypes\.\w+)$", "native"),
    (r"^(marshal\.loads|pickle\.loads?|importlib\.import_module|runpy\.run_\w+)$", "code_exec"),
]
WRITE_MODES = set("wax+")
def dotted(n):
    if isinstance(n, ast.Name): return n.id
    if isinstance(n, ast.Attribute):
        b = dotted(n.value)
        return b + "." + n.attr if b else None
    return None
def sinks_of(fn):
    try:
        src = textwrap.dedent(inspect.getsource(fn))
        tree = ast.parse(src)
    except Exception:
        return set()
    body = tree.body[0] if tree.body else None
    if not isinstance(body, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return set()
    found = set()
    for node in ast.walk(body):
        if node is not body and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        if not isinstance(node, ast.Call):
            continue
        d = dotted(node.func)
        if not d:
            continue
        if d in NAME_SINKS:
            found.add(NAME_SINKS[d]); continue
        if d in ("open", "io.open", "os.open"):
            mode = None
            if len(node.args) > 1 and isinstance(node.args[1], ast.Constant): mode = node.args[1].value
            for kw in node.keywords:
                if kw.arg == "mode" and isinstance(kw.value, ast.Constant): mode = kw.value.value
            if isinstance(mode, str) and WRITE_MODES & set(mode):
                found.add("file_write")
            continue
        import re
        for pat, cat in ATTR_SINKS:
            if re.match(pat, d):
                found.add(cat)
    return found
def walk(modname, out, depth):
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            m = importlib.import_module(modname)
    except BaseException:
        return
    for name, obj in list(vars(m).items()):
        if name.startswith("__"):
            continue
        if isinstance(obj, types.FunctionType) and getattr(obj, "__module__", None) == modname:
            s = sinks_of(obj)
            if s: out.append((modname, name, sorted(s)))
        elif isinstance(obj, type) and getattr(obj, "__module__", None) == modname:
            for an, av in list(vars(obj).items()):
                if isinstance(av, (staticmethod, classmethod)): av = av.__func__
                if isinstance(av, types.FunctionType) and not an.startswith("__"):
                    s = sinks_of(av)
                    if s: out.append((modname, name + "." + an, sorted(s)))
    if depth > 0 and hasattr(m, "__path__"):
        for info in pkgutil.iter_modules(m.__path__):
            if info.name.startswith("test") or info.name == "__main__":
                continue
            walk(modname + "." + info.name, out, depth - 1)
out = []
which = sys.argv[1]
if which == "stdlib":
    for mod in sorted(sys.stdlib_module_names):
        if mod in SKIP: continue
        walk(mod, out, 1)
else:
    for mod in ["torch.utils", "torch.jit", "torch.fx", "torch.hub", "torch._inductor", "torch._dynamo",
                "torch.package", "torch.utils.cpp_extension", "torch.utils.collect_env", "numpy.testing",
                "numpy.f2py", "numpy.distutils", "numpy.lib.npyio", "numpy.ctypeslib"]:
        walk(mod, out, 1)
seen = set(); res = []
for m, n, s in out:
    if (m, n) not in seen:
        seen.add((m, n)); res.append({"module": m, "name": n, "sinks": s})
print(json.dumps(res))
'''


def _enumerate(which):
    r = subprocess.run([PYTHON, "-c", ENUM, which], capture_output=True, text=True, timeout=600,
                       env=clean_env(PYTHONWARNINGS="ignore"))
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _check(tmp_path, found, label):
    paths = {}
    for i, f in enumerate(found):
        a = Asm(4).global_(f["module"], f["name"]).mark().str_("x").tuple_().reduce()
        p = tmp_path / ("g%04d.pkl" % i)
        p.write_bytes(a.stop())
        paths[str(p)] = f
    res = {}
    items = list(paths)
    for k in range(0, len(items), 400):
        r = run_cli("scan", "--format", "json", *items[k:k + 400])
        assert r.returncode in (0, 1), r.stderr[-500:]
        res.update({x["path"]: x for x in json.loads(r.stdout)["files"]})
    missed, exact = [], 0
    for p, f in paths.items():
        x = res[p]
        if x["verdict"] != "malicious" or x["action"] != "block":
            missed.append((f["module"], f["name"], f["sinks"], x["verdict"]))
            continue
        keys = re.findall(r"KB ([^\]\)]+)", json.dumps(x["reasons"]))
        if any(":" in k and not k.startswith("@") and not k.startswith("*") for k in keys):
            exact += 1
    cats = {}
    for f in found:
        for s in f["sinks"]:
            cats[s] = cats.get(s, 0) + 1
    print("\n%s: %d dangerous callables enumerated %s; malicious and blocked: %d; "
          "named individually in the KB: %d; judged by module/component rules alone: %d"
          % (label, len(found), json.dumps(cats, sort_keys=True), len(found) - len(missed), exact,
             len(found) - len(missed) - exact))
    return missed, exact


def test_stdlib_dangerous_callables_are_all_malicious(tmp_path):
    found = _enumerate("stdlib")
    assert len(found) >= 200, len(found)  # 239 on CPython 3.11
    mods = {f["module"].split(".")[0] for f in found}
    assert len(mods) >= 60
    missed, exact = _check(tmp_path, found, "stdlib")
    assert not missed, missed[:30]
    assert exact <= len(found) // 20  # generalisation: at most 5% named one by one


def test_ml_risky_subpackages_are_all_malicious(tmp_path):
    found = _enumerate("ml")
    assert len(found) >= 40, len(found)
    missed, exact = _check(tmp_path, found, "ML risky subpackages")
    assert not missed, missed[:30]
    assert exact <= len(found) // 20
