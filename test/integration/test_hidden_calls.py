"""test_hidden_calls.py - calls and changes of state the IR does not show as a call of a
dangerous name, found by red-teaming the judgement (session 8). Each is a class,
enumerated by a generator over the installed library; each payload is proven to act
under the real loader without the preload, then must be refused by the scan and under it.

- Hidden calls by data callables: a callable the knowledge base treats as data that
  calls a callable it is given (`builtins.iter(f, sentinel)`, whose consumers `list`,
  `tuple`, `set` call f(); `concurrent.futures.process._process_chunk`). Found by
  calling every `data` callable of the KB with a counting callable in every position.
- Names the unpickler looks up on the object it fills (BUILD: `__setstate__`,
  APPEND/APPENDS: `extend`/`append`, ADDITEMS: `add`; read from Lib/pickle.py), planted
  by an earlier BUILD in the instance dict, in the slot state, one dict deeper for a
  class whose `__getattr__` reads its state (torch's Module `_modules`), on the class
  (`type(obj)`), or as a keyword a partial binds for a constructor that stores it
  (`partial(Namespace, extend=f)()`): the next opcode calls the planted callable with the
  stream's arguments.
- Shared objects: a data callable whose result the process shares (an enum member,
  `logging.getLogger`, `type(obj)`): BUILD on it changes the program, not a new object.
  Found by calling every `data` callable of the KB twice and comparing identities.
- Bound methods of objects of data classes that act (`PosixPath(p).unlink`), handed
  over without being called.

All of these were `safe` (allowed, and under layer 2 with the file-write veto off) on
main at 7554981.
"""
import json
import os
import re
import struct
import subprocess

from conftest import LIB, PYTHON, clean_env, run_cli

KB = [os.path.join(os.path.dirname(__file__), "..", "..", "analyzer", "kb", f) for f in ("stdlib.tsv", "ml.tsv")]


# ---------------------------------------------------------------- a protocol-4 assembler
def s_(x):
    b = x.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def g_(mod, name):
    return s_(mod) + s_(name) + b"\x93"


def t_(*items):
    return b"(" + b"".join(items) + b"t"


def call(f, *args):
    return f + t_(*args) + b"R"


def d_(*kv):
    return b"}(" + b"".join(kv) + b"u"


def const(v):
    if v is None:
        return b"N"
    if isinstance(v, bool):
        return b"\x88" if v else b"\x89"
    if isinstance(v, int):
        return b"J" + struct.pack("<i", v)
    if isinstance(v, str):
        return s_(v)
    if isinstance(v, tuple):
        return t_(*map(const, v))
    if isinstance(v, list):
        return b"](" + b"".join(map(const, v)) + b"e"
    raise TypeError(v)


def P(body):
    return b"\x80\x04" + body + b"."


def path_(p):
    return call(g_("pathlib", "PosixPath"), s_(str(p)))


def bound(obj, name):
    return call(g_("builtins", "getattr"), obj, s_(name))


# the two callables every class is tried with: a bound method of a data object that
# deletes a file (the effect proven under the real loader), and a stdlib function that
# acts on nothing but that the KB judges only where it is called (builtins.print)
def unlink_of(p):
    return bound(path_(p), "unlink")


PRINT = g_("builtins", "print")


def _scan(paths, env=None):
    out = {}
    for i in range(0, len(paths), 300):
        r = run_cli("scan", "--format", "json", *paths[i:i + 300], env=env)
        for f in json.loads(r.stdout)["files"]:
            out[f["path"]] = (f["verdict"], f["action"], [x["rule"] for x in f["reasons"]])
    return out


LOADER = r'''
import json, os, pickle, sys
res = {}
for p, check in json.loads(sys.argv[1]):
    try:
        pickle.load(open(p, "rb"))
        err = None
    except BaseException as e:
        err = type(e).__name__
    res[p] = [err, eval(check) if check else None]
print(json.dumps(res))
'''


def _load_all(items, preload, env=None):
    """items: [(path, python expression checked after the load)]: {path: [exception
    name or None, value of the check]}, all loaded in one process."""
    env = clean_env(**(env or {}))
    if preload:
        env["LD_PRELOAD"] = LIB
    r = subprocess.run([PYTHON, "-c", LOADER, json.dumps(items)], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _kb_data_callables():
    rows = []
    for f in KB:
        for line in open(f):
            if line.startswith(("#", "@")) or not line.strip():
                continue
            p = line.rstrip("\n").split("\t")
            if len(p) >= 2 and p[1] == "data" and ":" in p[0] and "*" not in p[0]:
                rows.append(p[0])
    return rows


def _enumerate(script, rows):
    r = subprocess.run([PYTHON, "-c", script, json.dumps(rows)], env=clean_env(), capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


RESOLVE = r'''
import contextlib, importlib, io, json, sys, warnings, itertools, enum
warnings.simplefilter("ignore")
def resolve(key):
    m, n = key.split(":")
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            o = importlib.import_module(m)
        for a in n.split("."):
            o = getattr(o, a)
        return o
    except BaseException:
        return None
def classes(keys):
    """(key, class) for the keys that name a Python class"""
    for key in keys:
        f = resolve(key)
        if isinstance(f, type):
            yield key, f
'''

# every data callable, with a counting callable at each position of 1-3 arguments and
# plain fillers elsewhere, its result forced by iteration: which of them call it?
ENUM_CALLERS = RESOLVE + r'''
FILL = [None, 1, "a", [1], (1,)]
n = [0]
def cb(*a, **k):
    n[0] += 1
    return None if n[0] > 3 else n[0]
out = []
for key in json.loads(sys.argv[1]):
    f = resolve(key)
    if f is None or not callable(f):
        continue
    for arity in range(1, 4):
        for pos in range(arity):
            for fill in FILL:
                args = [fill] * arity
                args[pos] = cb
                n[0] = 0
                try:
                    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                        r = f(*args)
                        if hasattr(r, "__iter__"):
                            list(itertools.islice(iter(r), 5))
                except BaseException:
                    pass
                if n[0]:
                    out.append((key, arity, pos, fill))
                    break
            else:
                continue
            break
        else:
            continue
        break
print(json.dumps(out))
'''

# every data callable called twice with simple arguments (an enum class: its first
# member's value): which return the same object twice, one whose attributes can be set?
ENUM_SHARED = RESOLVE + r'''
CANDS = [(), ("",), ("x",), (0,), (1,), (2,), ("UTC",), ("a", 0), ("float32",), ("cpu",)]
plain = (type(None), bool, int, str)
out = []
for key in json.loads(sys.argv[1]):
    f = resolve(key)
    if f is None or not callable(f):
        continue
    cands = CANDS
    if isinstance(f, type) and issubclass(f, enum.Enum):
        cands = [(m.value,) for m in list(f)[:1]]
    for a in cands:
        if not all(isinstance(x, plain) for x in a):
            continue
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                r1, r2 = f(*a), f(*a)
        except BaseException:
            continue
        if r1 is not r2 or r1 is None or (isinstance(r1, (bool, int, str, bytes, float, tuple, frozenset))
                                          and not isinstance(r1, enum.Enum)):
            continue
        try:
            setattr(r1, "_safepickle_rt", 1)
            delattr(r1, "_safepickle_rt")
        except BaseException:
            continue
        out.append((key, list(a), isinstance(f, type)))
        break
print(json.dumps(out))
'''

# every data class of the KB that is a Python class (its type's attributes can be set)
# and builds from no arguments: type(Class()) is that class
ENUM_CLASSES = RESOLVE + r'''
out = []
for key, f in classes(json.loads(sys.argv[1])):
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            o = f()
        if type(o) is not f or hasattr(f, "__setstate__"):
            continue        # BUILD on the class would call its unbound __setstate__
        setattr(f, "_safepickle_rt", 1)
        delattr(f, "_safepickle_rt")
    except BaseException:
        continue
    out.append(key)
print(json.dumps(out))
'''


def _prove_and_refuse(items, scan_only=(), env=None):
    """items: [(name, path, check)]: check (a Python expression) is true after a plain
    load (the effect happened) and false under the preload; every path (and every
    scan_only one) is blocked by the scan. env: extra variables for the scan and the
    preload's process (an environment index)."""
    victims = [m.group(1) for _, _, c in items for m in [re.match(r"not os\.path\.exists\('(.*)'\)$", c)] if m]
    v = _scan([p for _, p, _ in items] + [p for _, p in scan_only], env=env)
    allowed = [(n, v[p]) for n, p, _ in items if v[p][1] != "block"]
    allowed += [(n, v[p]) for n, p in scan_only if v[p][1] != "block"]
    for x in victims:
        open(x, "w").close()
    plain = _load_all([(p, c) for _, p, c in items], preload=False)
    not_real = [n for n, p, _ in items if not plain[p][1]]
    assert not not_real, ("payloads that do not act under the real loader (broken test)", not_real)
    for x in victims:
        open(x, "w").close()
    pre = _load_all([(p, c) for _, p, c in items], preload=True, env=env)
    ran = [n for n, p, _ in items if pre[p][1]]
    print("%d payloads proven, %d scan-only: %d allowed by the scan, %d acted under the preload"
          % (len(items), len(scan_only), len(allowed), len(ran)))
    assert not allowed, allowed[:20]
    assert not ran, ran[:20]


# ---------------------------------------------------------------- hidden calls
def test_data_callables_that_call_an_argument(tmp_path):
    rows = _enumerate(ENUM_CALLERS, _kb_data_callables())
    print("data callables that call an argument:", rows)
    assert any(r[0] == "builtins:iter" for r in rows), rows     # iter(f, sentinel)
    items, scan_only = [], []
    for k, (key, arity, pos, fill) in enumerate(rows):
        m, n = key.split(":")
        for consumer in ("list", "tuple", "set", "frozenset"):
            victim = tmp_path / ("victim_%d_%s" % (k, consumer))
            for what, fn in (("unlink", unlink_of(victim)), ("print", PRINT)):
                args = [const(fill)] * arity
                args[pos] = fn
                p = tmp_path / ("call_%d_%s_%s.pkl" % (k, consumer, what))
                p.write_bytes(P(call(g_("builtins", consumer), call(g_(m, n), *args))))
                if what == "unlink":
                    items.append(("%s via %s" % (key, consumer), str(p), "not os.path.exists(%r)" % str(victim)))
                else:
                    scan_only.append(("%s(print) via %s" % (key, consumer), str(p)))
    _prove_and_refuse(items, scan_only)


def _pickle_lookups():
    """(opcode byte, name) for every attribute the pure-Python unpickler looks up on the
    object it fills, read from Lib/pickle.py: getattr(inst, "NAME"), X_obj.NAME."""
    src = open(subprocess.run([PYTHON, "-c", "import pickle; print(pickle.__file__)"], capture_output=True,
                              text=True, env=clean_env()).stdout.strip()).read()
    out = set()
    for m in re.finditer(r"\n    def load_(\w+)\(self\):\n(.*?)(?=\n    def |\n    dispatch\[)", src, re.S):
        op, body = m.group(1).upper(), m.group(2)
        names = set(re.findall(r'getattr\(inst, "(\w+)"', body))
        names |= set(re.findall(r"\b\w+_obj\.(\w+)\b", body)) - {"__class__"}
        if op == "ADDITEMS":
            names.discard("update")     # set_obj.update only under isinstance(set_obj, set)
        for nm in names:
            out.add((op, nm))
    return sorted(out)


def _fire(op, nm):
    """the opcode that makes the unpickler call the planted name on the top object"""
    if op == "BUILD":
        return s_("PAYLOAD") + b"b"
    if op == "ADDITEMS":
        return b"(" + s_("PAYLOAD") + b"\x90"
    if op == "APPENDS":
        return b"(" + s_("PAYLOAD") + b"e"
    if op == "APPEND":
        return s_("PAYLOAD") + b"a"
    raise AssertionError(op)


def test_unpickler_lookups_cannot_be_planted(tmp_path):
    lookups = _pickle_lookups()
    print("names the unpickler looks up:", lookups)
    assert {nm for _, nm in lookups} >= {"__setstate__", "append", "extend", "add"}, lookups
    for site in ("dict", "slots", "getattr_dict", "class", "partial_kwargs"):
        # one process per site: a plant on the class stays for the next loads
        _plant_site(tmp_path, lookups, site)


def _plant_site(tmp_path, lookups, site):
    ns = call(g_("argparse", "Namespace"))
    module = call(g_("copyreg", "__newobj__"), g_("torch.nn.modules.module", "Module"))
    items, scan_only = [], []
    for k, (op, nm) in enumerate(lookups):
        if site == "getattr_dict" and nm == "__setstate__":
            continue        # Module defines its own __setstate__
        for what in ("unlink", "print"):
            victim = tmp_path / ("victim_%d_%s" % (k, site))
            fn = unlink_of(victim) if what == "unlink" else PRINT
            if site == "dict":
                body = ns + d_(s_(nm), fn) + b"b"
            elif site == "slots":
                body = ns + t_(b"N", d_(s_(nm), fn)) + b"b"
            elif site == "getattr_dict":
                body = module + d_(s_("_parameters"), b"}", s_("_buffers"), b"}",
                                   s_("_modules"), d_(s_(nm), fn)) + b"b"
            elif site == "partial_kwargs":   # partial(Namespace, NAME=fn)(): Namespace's __init__ sets it
                part = call(g_("functools", "partial"), g_("argparse", "Namespace"))
                body = call(part + t_(g_("argparse", "Namespace"), b")", d_(s_(nm), fn), b"N") + b"b")
            else:   # on the class itself: type(obj), then a fresh instance
                body = (call(g_("builtins", "type"), ns) + t_(b"N", d_(s_(nm), fn)) + b"b" + b"0" + ns)
            p = tmp_path / ("plant_%d_%s_%s.pkl" % (k, site, what))
            p.write_bytes(P(body + _fire(op, nm)))
            if what == "unlink":
                victim.write_text("x")
                items.append(("%s %s via %s" % (op, nm, site), str(p), "not os.path.exists(%r)" % str(victim)))
            else:
                scan_only.append(("%s %s via %s (print)" % (op, nm, site), str(p)))
    _prove_and_refuse(items, scan_only)


# ---------------------------------------------------------------- shared objects
def test_shared_objects_are_not_changed(tmp_path):
    rows = _enumerate(ENUM_SHARED, _kb_data_callables())
    print("data callables returning a shared object:", rows)
    assert len(rows) >= 10, rows            # enum members, logging.getLogger
    items = []
    for k, (key, args, is_class) in enumerate(rows):
        m, n = key.split(":")
        cargs = list(map(const, args))
        makers = [("call", call(g_(m, n), *cargs))]
        if is_class:    # a class's __new__ reached as picklers reach it: the enum's member again
            makers += [("NEWOBJ", g_(m, n) + t_(*cargs) + b"\x81"),
                       ("copyreg.__newobj__", call(g_("copyreg", "__newobj__"), g_(m, n), *cargs)),
                       ("copyreg.__newobj_ex__", call(g_("copyreg", "__newobj_ex__"), g_(m, n), t_(*cargs), b"}")),
                       ("copyreg._reconstructor", call(g_("copyreg", "_reconstructor"), g_(m, n), g_(m, n), *cargs))]
        for how, obj in makers:
            for site, state in (("dict", d_(s_("_safepickle_rt"), const(1))),
                                ("slots", t_(b"N", d_(s_("_safepickle_rt"), const(1))))):
                p = tmp_path / ("shared_%d_%s_%s.pkl" % (k, how, site))
                p.write_bytes(P(obj + state + b"b"))
                check = ("getattr(getattr(__import__(%r, fromlist=['_']), %r)(*%r), '_safepickle_rt', None) == 1"
                         % (m, n, tuple(args)))
                items.append(("%s%r by %s via %s" % (key, tuple(args), how, site), str(p), check))
    # one process per shape: a change made by one load must not answer the next one's check
    for shape in sorted({x[0].split(" by ")[1] for x in items}):
        _prove_and_refuse([x for x in items if x[0].endswith(" by " + shape)])


# every enum class with members that the installed ML packages define, found by importing
# every module of theirs (not the index's reading of their source: the oracle it is checked
# against); a member's value as a pickle writes it (int, str, bool)
ENUM_PACKAGES = ("numpy", "scipy", "sklearn", "pandas", "joblib", "dask", "torch")
ENUM_PACKAGE_ENUMS = r'''
import contextlib, enum, importlib, io, json, pkgutil, sys, warnings
warnings.simplefilter("ignore")
out, seen = [], set()
for top in json.loads(sys.argv[1]):
    try:
        names = [top] + [i.name for i in pkgutil.walk_packages(importlib.import_module(top).__path__, top + ".",
                                                               onerror=lambda n: None)
                         if not {"tests", "test", "testing", "conftest"} & set(i.name.split("."))]
    except BaseException:
        continue
    for n in names:
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                mod = importlib.import_module(n)
        except BaseException:
            continue
        for v in list(vars(mod).values()):
            if not (isinstance(v, type) and issubclass(v, enum.Enum) and list(v)):
                continue
            key = "%s:%s" % (v.__module__, v.__qualname__)   # the name a pickle of a member writes
            value = list(v)[0].value
            if key in seen or "<" in key or "." in v.__qualname__ or not isinstance(value, (bool, int, str)):
                continue
            try:    # a pickle of a member finds the class there (Cython may misname a module)
                if getattr(importlib.import_module(v.__module__), v.__qualname__) is not v:
                    continue
            except BaseException:
                continue
            if isinstance(value, int) and not -2**31 <= value < 2**31:
                continue
            seen.add(key)
            out.append((key, value))
print(json.dumps(sorted(out)))
'''


def test_enum_members_of_every_package_are_not_changed(tmp_path):
    """An enum member is one object the whole process shares: BUILD on Cls(value) changes
    it for the program. The environment index marks every enum class of every package
    `@shared` (kbindex.py reads their bases); those Cython compiles (no source) are the
    KB's own lines. With the index every member of every enum class of the ML packages is
    refused, by the scan and under the preload."""
    rows = _enumerate(ENUM_PACKAGE_ENUMS, list(ENUM_PACKAGES))
    print("enum classes:", len(rows), rows)
    assert len(rows) >= 40, rows
    # the index of every package they are defined in (dask's walk reaches distributed's)
    idx = tmp_path / "kb-index.tsv"
    tops = sorted({key.split(":")[0].split(".")[0] for key, _ in rows})
    r = run_cli("kb", "index", "--out", idx, "--packages", ",".join(tops), timeout=1200)
    assert r.returncode == 0, r.stderr
    items = []
    for k, (key, value) in enumerate(rows):
        m, n = key.split(":")
        p = tmp_path / ("member_%d.pkl" % k)
        p.write_bytes(P(call(g_(m, n), const(value)) + d_(s_("_safepickle_rt"), const(1)) + b"b"))
        check = ("getattr(getattr(__import__(%r, fromlist=['_']), %r)(%r), '_safepickle_rt', None) == 1"
                 % (m, n, value))
        items.append((key, str(p), check))
    _prove_and_refuse(items, env={"SAFEPICKLE_KB_INDEX": str(idx)})


def test_classes_of_data_objects_are_not_changed(tmp_path):
    rows = _enumerate(ENUM_CLASSES, _kb_data_callables())
    print("data classes reachable as type(Class()):", rows)
    assert len(rows) >= 5, rows
    items = []
    for k, key in enumerate(rows):
        m, n = key.split(":")
        p = tmp_path / ("class_%d.pkl" % k)
        p.write_bytes(P(call(g_("builtins", "type"), call(g_(m, n))) + t_(b"N", d_(s_("_safepickle_rt"), const(1)))
                        + b"b"))
        check = "getattr(getattr(__import__(%r, fromlist=['_']), %r), '_safepickle_rt', None) == 1" % (m, n)
        items.append((key, str(p), check))
    _prove_and_refuse(items)


def test_class_creation_is_refused(tmp_path):
    """type(name, bases, namespace) makes a class whose namespace's callables become its
    methods: an instance used as a dict key calls the planted __hash__."""
    victim = tmp_path / "victim"
    cls = call(g_("builtins", "type"), s_("X"), t_(g_("builtins", "object")), d_(s_("__hash__"), unlink_of(victim)))
    p = tmp_path / "type3.pkl"
    p.write_bytes(P(b"}" + call(g_("copyreg", "__newobj__"), cls) + const(1) + b"s"))
    q = tmp_path / "type3_print.pkl"
    q.write_bytes(P(b"}" + call(g_("copyreg", "__newobj__"), call(g_("builtins", "type"), s_("X"),
                    t_(g_("builtins", "object")), d_(s_("__hash__"), PRINT))) + const(1) + b"s"))
    _prove_and_refuse([("type(name, bases, ns) __hash__", str(p), "not os.path.exists(%r)" % str(victim))],
                      [("type(name, bases, ns) __hash__ (print)", str(q))])


# ---------------------------------------------------------------- bound methods that act
# every data class of the KB built from one path-like string, and every public method of
# such an object called with no argument or with one string, in a scratch directory: the
# ones that change the directory act on files
ENUM_FILE_METHODS = RESOLVE + r'''
import os, tempfile, shutil
def tree(d):
    out = set()
    for r, ds, fs in os.walk(d):
        for x in ds + fs:
            q = os.path.join(r, x)
            st = os.lstat(q)
            out.add((q, st.st_size, st.st_mode, st.st_mtime_ns))
    return out
out = []
for key, f in classes(json.loads(sys.argv[1])):
    try:
        names = [n for n in dir(f) if not n.startswith("_") and callable(getattr(f, n, None))]
    except BaseException:
        continue
    for n in names:
        for args in ((), ("x",)):
            d = tempfile.mkdtemp()
            cwd = os.getcwd()
            try:
                os.chdir(d)
                open("f", "w").write("data")
                os.mkdir("e")
                try:
                    o = f("f" if n not in ("rmdir", "iterdir") else "e")
                except BaseException:
                    break
                before = tree(d)
                try:
                    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                        getattr(o, n)(*args)
                except BaseException:
                    pass
                if tree(d) != before:
                    out.append((key, n, len(args)))
                    break
            finally:
                os.chdir(cwd)
                shutil.rmtree(d, True)
print(json.dumps(out))
'''


def test_bound_methods_that_act_are_references(tmp_path):
    rows = _enumerate(ENUM_FILE_METHODS, _kb_data_callables())
    print("methods of data objects that change files:", rows)
    assert len(rows) >= 5, rows          # PosixPath.touch, mkdir, unlink, rmdir, write_text, ...
    paths = []
    for k, (key, meth, _) in enumerate(rows):
        m, n = key.split(":")
        obj = call(g_(m, n), s_(str(tmp_path / "f")))
        for shape in ("state", "default_factory", "partial_kwarg"):
            ref = bound(obj, meth)
            if shape == "state":        # kept in an object's state: whoever holds it calls it
                body = call(g_("argparse", "Namespace")) + d_(s_("cb"), ref) + b"b"
            elif shape == "default_factory":
                body = call(g_("collections", "defaultdict"), ref)
            else:                       # a keyword argument bound by a partial
                body = (call(g_("functools", "partial"), g_("argparse", "Namespace"))
                        + t_(g_("argparse", "Namespace"), b")", d_(s_("cb"), ref), b"N") + b"b")
            p = tmp_path / ("ref_%d_%s.pkl" % (k, shape))
            p.write_bytes(P(body))
            paths.append(("%s.%s in %s" % (key, meth, shape), str(p)))
    v = _scan([p for _, p in paths])
    allowed = [(n, v[p]) for n, p in paths if v[p][1] != "block"]
    print("%d references, %d allowed" % (len(paths), len(allowed)))
    assert not allowed, allowed[:20]


def test_benign_bound_methods_stay_safe(tmp_path):
    """Bound methods the real pickler writes as getattr(obj, 'name'): of a logger (an object
    of a class getLogger does not name) and the reading methods of paths stay safe and
    load under the preload (the bound-method rule above refused them at first)."""
    make = r'''
import collections, logging, pathlib, pickle, sys
objs = {"logger": logging.getLogger("x").info, "exists": pathlib.Path(sys.argv[2]).exists,
        "read_text": pathlib.PosixPath(sys.argv[2]).read_text, "joinpath": pathlib.PurePosixPath("a").joinpath,
        "keys": collections.OrderedDict().keys}
for k, v in objs.items():
    open("%s/%s.pkl" % (sys.argv[1], k), "wb").write(pickle.dumps({"cb": v}, 4))
'''
    r = subprocess.run([PYTHON, "-c", make, str(tmp_path), str(tmp_path / "f")], env=clean_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    paths = sorted(str(p) for p in tmp_path.glob("*.pkl"))
    v = _scan(paths)
    bad = [(os.path.basename(p), v[p]) for p in paths if v[p][0] != "safe"]
    assert not bad, bad
    res = _load_all([(p, "") for p in paths], preload=True)
    assert all(res[p][0] is None for p in paths), res
