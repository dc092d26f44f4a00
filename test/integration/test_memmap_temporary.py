"""test_memmap_temporary.py - joblib's temporary memmaps sent to workers (`@fileload`).

joblib's memmapping reducer ships an array over max_nbytes to a worker as
load_temporary_memmap(filename, mmap_mode, unlink_on_gc_collect)
(joblib/_memmapping_reducer.py, joblib/numpy_pickle.py): the worker calls
joblib.load(filename, mmap_mode), a nested load of a file by path, which the bytes do not
contain. The analyzer leaves that file to its judgement at its open by layer 1, and only
where layer 1 acts in the loading process (spa_scan_opts.opens_judged, set by the preload
from spp_active) and only in joblib's shape (analyzer/classify.c, cl_fileload_risk): a
constant absolute name .../joblib_memmapping_folder_*/<pid>-<tid>-<32 hex>.pkl with no
'.', '..' or empty component, mode "r" or "c", a bool unlink flag. "r+"/"w+" map the file
writable (file_write); everything else stays a nested load (callee.deserialize); the CLI,
which cannot judge a file at its open, keeps every shape non-safe, and so does a process
whose policy turns layer 1 off.

What each test shows:
- test_parallel_auto_memmapping: joblib.Parallel with loky and multiprocessing, arrays
  over max_nbytes in mode r and c, gives the same results under the preload with no
  refusal (refused on the code before @fileload); r+ gives them plainly and is refused
  under the preload (file_write by design).
- test_argument_space: the shape's argument space, enumerated (roots, name forms, modes,
  unlink flags, arities, reflective and bound calls, other joblib loaders), every nested
  file a real benign joblib dump that loads plainly: under the preload only joblib's shape
  loads, each other refused on the bytes with its rule; the CLI calls every one malicious;
  with layer 1 off by policy even joblib's shape is refused.
- test_malicious_nested_file: a payload file under joblib's very name, on /dev/shm and in
  a temp dir, in every allowed mode and unlink flag: plainly it runs (marker), under the
  preload layer 1 refuses its open (no marker).
- test_writable_mode_writes: r+ and w+ really write the file plainly; under the preload
  they are refused and the file is unchanged.
  The same run maps has_shareable_memory over arrays in the workers (joblib's tests do): a
  predicate, data in a module otherwise judged file_write.
"""
import json
import os
import re
import shutil
import subprocess
import textwrap
import uuid

import pytest

import spgen
from conftest import CLI, LIB, PYTHON, REPO, clean_env, run_bounded

pytestmark = pytest.mark.skipif(not os.path.exists(LIB), reason="libsafepickle.so not built")

HEX = "0123456789abcdef" * 2


def _run(code, data=None, preload=False, args=(), env=None, cwd=None, timeout=180):
    e = clean_env(**(env or {}))
    if preload:
        e["LD_PRELOAD"] = LIB
    # bounded: a hang (loky workers outlive their parent) fails with every process's stacks
    return run_bounded([PYTHON, "-c", code, *args], input=data, env=e, timeout=timeout, cwd=cwd)


MADE = []  # folders made outside tmp_path (/dev/shm): removed after each test


@pytest.fixture(autouse=True)
def _remove_made():
    yield
    while MADE:
        shutil.rmtree(MADE.pop(), ignore_errors=True)


def _folder(root):
    d = os.path.join(str(root), "joblib_memmapping_folder_%d_%s_%s" % (os.getpid(), uuid.uuid4().hex, uuid.uuid4().hex))
    os.makedirs(d)
    MADE.append(d)
    return d


DUMP = textwrap.dedent("""
    import sys, numpy as np, joblib
    for p in sys.argv[1:]:
        joblib.dump(np.arange(100.0), p)
""")


def _dump(*paths):
    r = _run(DUMP, args=[str(p) for p in paths])
    assert r.returncode == 0, r.stderr[-1500:]


def _ltm(path, mode, unlink, extra=(), n=None):
    """load_temporary_memmap(path, mode, unlink, *extra), or with the first n arguments."""
    args = [path, mode, unlink, *extra][:n]
    return spgen.Asm(4).call("joblib.numpy_pickle", "load_temporary_memmap", *args).stop()


PARALLEL = textwrap.dedent("""
    import json, sys, numpy as np
    from joblib import Parallel, delayed
    from joblib._memmapping_reducer import has_shareable_memory
    a = np.arange(20000.0)
    out = {}
    # r+ last: a refused batch breaks the pool (loky starts a new one for the next call)
    for backend in ("loky", "multiprocessing"):
        for mode in ("r", "c", "r+"):
            print("step", backend, mode, file=sys.stderr, flush=True)
            try:
                got = Parallel(n_jobs=2, backend=backend, max_nbytes=1000, mmap_mode=mode)(
                    delayed(np.sum)(a[i:]) for i in range(4))
                out[backend + " " + mode] = 'RESULT %s' % (got == [float(a[i:].sum()) for i in range(4)])
            except Exception as e:
                out[backend + " " + mode] = 'FAILED %s %s' % (type(e).__name__, str(e)[:300])
        try:
            got = Parallel(n_jobs=2, backend=backend, max_nbytes=1000)(
                delayed(has_shareable_memory)(x) for x in (a, a[:10]))
            out[backend + " shareable"] = 'RESULT %s' % (got == [True, False])
        except Exception as e:
            out[backend + " shareable"] = 'FAILED %s %s' % (type(e).__name__, str(e)[:300])
    print(json.dumps(out))
""")


def test_parallel_auto_memmapping():
    """Every backend x mode in one process per run (loky reuses its workers)."""
    plain = _run(PARALLEL, timeout=300)
    want = {"%s %s" % (b, m): "RESULT True" for b in ("loky", "multiprocessing") for m in ("r", "c", "r+", "shareable")}
    assert json.loads(plain.stdout) == want, (plain.stdout, plain.stderr[-1500:])
    pre = _run(PARALLEL, preload=True, timeout=300)
    assert pre.returncode == 0, pre.stderr[-4000:]
    got = json.loads(pre.stdout)
    for k, v in want.items():
        if k.endswith("r+"):
            # file_write by design: the worker refuses the batch
            assert v != got[k], (k, got[k])
        else:
            assert got[k] == v, (k, got[k], pre.stderr[-2000:])
    assert b"load_temporary_memmap" in pre.stderr and b"callee.file_write" in pre.stderr, pre.stderr[-2000:]


LOADS = textwrap.dedent("""
    import json, pickle, sys
    out = {}
    for name, hexdata in json.load(sys.stdin).items():
        try:
            v = pickle.loads(bytes.fromhex(hexdata))
            out[name] = 'LOADED %s' % (v.tolist() == [float(i) for i in range(100)])
        except Exception as e:
            out[name] = 'REFUSED %s %s' % (type(e).__name__, str(e)[:2000])
    print(json.dumps(out))
""")


def _cases(tmp_path):
    """name -> (bytes, allowed under the preload with layer 1, rule when refused)."""
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else str(tmp_path)
    good = {root: os.path.join(_folder(root), "%d-%d-%s.pkl" % (os.getpid(), 140234, HEX))
            for root in (str(tmp_path), shm)}
    g = good[str(tmp_path)]
    gdir, gbase = os.path.dirname(g), os.path.basename(g)
    # the modes, flags and arities get a file of their own: plainly, numpy's "write" (w+)
    # truncates the file it maps
    g2 = os.path.join(gdir, "%d-%d-%s.pkl" % (os.getpid(), 140235, HEX))
    # names outside joblib's shape, each a real benign dump (plainly they all load)
    other = tmp_path / "other"
    other.mkdir()
    bad_names = {
        "plain_file": str(tmp_path / "plain.pkl"),
        "dotdot": os.path.join(gdir, "..", os.path.basename(gdir), gbase),
        "dot": os.path.join(gdir, ".", gbase),
        "double_slash": gdir + "//" + gbase,
        "no_folder_prefix": str(other / gbase),
        "folder_prefix_only": os.path.join(str(tmp_path), "joblib_memmapping_folder_", gbase),
        "folder_odd_char": os.path.join(str(tmp_path), "joblib_memmapping_folder_a.b", gbase),
        "upper_hex": os.path.join(gdir, "%d-%d-%s.pkl" % (os.getpid(), 1, HEX.upper())),
        "short_hex": os.path.join(gdir, "%d-%d-%s.pkl" % (os.getpid(), 1, HEX[:31])),
        "long_hex": os.path.join(gdir, "%d-%d-%s0.pkl" % (os.getpid(), 1, HEX)),
        "not_digits": os.path.join(gdir, "x-1-%s.pkl" % HEX),
        "one_number": os.path.join(gdir, "1-%s.pkl" % HEX),
        "suffix": os.path.join(gdir, "1-1-%s.pkl.bak" % HEX),
        "relative": os.path.relpath(g, REPO),
    }
    for p in list(good.values()) + [v for k, v in bad_names.items() if k != "relative"]:
        if not os.path.exists(os.path.dirname(p)):
            os.makedirs(os.path.dirname(p))
    _dump(g2, *good.values(), *[v for k, v in bad_names.items() if k not in ("relative", "dotdot", "dot", "double_slash")])
    cases = {}
    for root, p in good.items():
        tag = "shm" if root == shm and root != str(tmp_path) else "tmp"
        for mode in ("r", "c"):
            for unlink in (True, False):
                cases["ok_%s_%s_%s" % (tag, mode, unlink)] = (_ltm(p, mode, unlink), True, None)
    for k, p in bad_names.items():
        cases["name_" + k] = (_ltm(p, "r", False), False, "callee.deserialize")
    cases["name_bytes"] = (_ltm(g2.encode(), "r", False), False, "callee.deserialize")
    for mode in ("r+", "w+", "readwrite", "write"):
        cases["mode_" + _tag(mode)] = (_ltm(g2, mode, False), False, "callee.file_write")
    for mode in (None, "readonly", "copyonwrite", "R", "r ", "", 0):
        cases["mode_" + _tag(mode)] = (_ltm(g2, mode, False), False, "callee.deserialize")
    for unlink in (0, 1, None, "yes"):
        cases["unlink_" + _tag(unlink)] = (_ltm(g2, "r", unlink), False, "callee.deserialize")
    cases["arity_2"] = (_ltm(g2, "r", False, n=2), False, "callee.deserialize")
    cases["arity_4"] = (_ltm(g2, "r", False, extra=(0,)), False, "callee.deserialize")
    # reached by reflection: getitem(getattr(joblib.numpy_pickle.load, '__globals__'), name)
    a = spgen.Asm(4).global_("operator", "getitem").mark()
    a.global_("builtins", "getattr").mark().global_("joblib.numpy_pickle", "load").push("__globals__").tuple_().reduce()
    a.push("load_temporary_memmap").tuple_().reduce().mark().push(g).push("r").push(False).tuple_().reduce()
    cases["reflective"] = (a.stop(), False, None)
    cases["other_loader_load"] = (spgen.Asm(4).call("joblib.numpy_pickle", "load", g, "r").stop(), False,
                                  "callee.deserialize")
    # functools.partial binding the name, called with the rest
    a = spgen.Asm(4).global_("functools", "partial").mark().global_("joblib.numpy_pickle", "load_temporary_memmap")
    a.push(g).tuple_().reduce().mark().push("r").push(False).tuple_().reduce()
    cases["partial_bound"] = (a.stop(), False, None)
    return cases


def _tag(v):
    return re.sub(r"[^A-Za-z0-9+]", "_", repr(v))


def _scan_verdicts(tmp_path, cases):
    d = tmp_path / "scan"
    d.mkdir()
    for name, (data, _, _) in cases.items():
        (d / (name + ".pkl")).write_bytes(data)
    r = subprocess.run([CLI, "scan", "--format", "json", str(d)], env=clean_env(), capture_output=True,
                       text=True, timeout=120)
    doc = json.loads(r.stdout)
    return {os.path.basename(f["path"]): f for f in doc["files"]}


def test_argument_space(tmp_path):
    cases = _cases(tmp_path)
    data = json.dumps({k: v[0].hex() for k, v in cases.items()}).encode()
    pre = _run(LOADS, data, preload=True, cwd=REPO)
    got = json.loads(pre.stdout)
    plain = json.loads(_run(LOADS, data, cwd=REPO).stdout)
    for name, (_, allowed, rule) in cases.items():
        if name.startswith(("ok_", "name_")) and name != "name_bytes" or name in ("partial_bound", "reflective"):
            # every refused name is a real benign dump that loads without the preload
            assert plain[name] == "LOADED True", (name, plain[name])
        if allowed:
            assert got[name] == "LOADED True", (name, got[name], pre.stderr[-3000:])
        else:
            assert got[name].startswith("REFUSED"), (name, got[name])
            if rule:
                assert rule in got[name], (name, got[name])
    # the CLI cannot judge the file at its open: every shape is malicious there, with the reason
    verdicts = _scan_verdicts(tmp_path, cases)
    for name in cases:
        f = verdicts[name + ".pkl"]
        assert f["verdict"] == "malicious", (name, f["verdict"])
        if cases[name][1]:
            msgs = " ".join(x["msg"] for x in f["reasons"])
            assert "by layer 1" in msgs and "callee.deserialize" in json.dumps(f["reasons"]), msgs
    # layer 1 off by policy: nothing judges the file at its open, so joblib's shape is refused
    with open(os.path.join(REPO, "policies", "default.json")) as fp:
        pol = json.load(fp)
    pol["name"] = "no-file-hooks"
    pol["layers"] = {"file_hooks": False, "audit_hook": True, "runtime_behaviour": True}
    pfile = tmp_path / "nofile.json"
    pfile.write_text(json.dumps(pol))
    ok = {k: v for k, v in cases.items() if v[1]}
    data = json.dumps({k: v[0].hex() for k, v in ok.items()}).encode()
    off = _run(LOADS, data, preload=True, env={"SAFEPICKLE_POLICY": str(pfile)})
    got = json.loads(off.stdout)
    for name in ok:
        assert got[name].startswith("REFUSED") and "callee.deserialize" in got[name], (name, got[name])
        assert "layer 1" in got[name] or "layer 1" in off.stderr.decode(), (name, got[name])


def _payload_pickle(marker):
    """joblib.load of this runs open(marker, 'w'): only the marker is touched."""
    return spgen.Asm(2).call("builtins", "open", str(marker), "w").stop()


def test_malicious_nested_file(tmp_path):
    roots = [str(tmp_path)]
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        roots.append("/dev/shm")
    made, cases = [], {}
    try:
        for ri, root in enumerate(roots):
            d = _folder(root)
            made.append(d)
            for mode in ("r", "c"):
                for unlink in (False, True):
                    name = "%d_%s_%s" % (ri, mode, unlink)
                    marker = tmp_path / ("PAYLOAD_RAN_" + name)
                    p = os.path.join(d, "%d-%d-%s.pkl" % (os.getpid(), len(cases), HEX))
                    with open(p, "wb") as f:
                        f.write(_payload_pickle(marker))
                    cases[name] = (p, marker, _ltm(p, mode, unlink))
        data = json.dumps({k: v[2].hex() for k, v in cases.items()}).encode()
        pre = _run(LOADS, data, preload=True)
        got = json.loads(pre.stdout)
        for name, (p, marker, _) in cases.items():
            assert not marker.exists(), (name, got[name])
            # refused by layer 1 at the nested file's open (the bytes were allowed)
            assert got[name].startswith("REFUSED PermissionError") and p in got[name], (name, got[name])
            assert ("safepickle: blocked %s" % p).encode() in pre.stderr, pre.stderr[-2000:]
        _run(LOADS, data)
        for name, (p, marker, _) in cases.items():
            assert marker.exists(), ("the payload must run without the preload", name)
    finally:
        for d in made:
            shutil.rmtree(d, ignore_errors=True)


WRITE = textwrap.dedent("""
    import pickle, sys, numpy as np
    try:
        v = pickle.loads(sys.stdin.buffer.read())
        v[:] = 42.0
        v.flush()
        print('WROTE')
    except Exception as e:
        print('REFUSED', type(e).__name__, str(e)[:300])
""")


@pytest.mark.parametrize("mode", ["r+", "w+"])
def test_writable_mode_writes(tmp_path, mode):
    p = os.path.join(_folder(tmp_path), "%d-%d-%s.pkl" % (os.getpid(), 9, HEX))
    _dump(p)
    before = open(p, "rb").read()
    data = _ltm(p, mode, False)
    pre = _run(WRITE, data, preload=True)
    assert pre.stdout.startswith(b"REFUSED") and b"callee.file_write" in pre.stdout, (pre.stdout, pre.stderr[-1500:])
    assert open(p, "rb").read() == before
    plain = _run(WRITE, data)
    assert plain.stdout.strip() == b"WROTE", plain.stdout
    assert open(p, "rb").read() != before, "the writable mapping must write the file plainly"
