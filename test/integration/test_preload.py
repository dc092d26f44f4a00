"""test_preload.py - libsafepickle.so inside real /usr/bin/python3 processes.

For every loader (pickle.load, pickle.loads(f.read()), torch.load zip/legacy/file
object, np.load npy/npz, joblib.load plain and each compressor, pd.read_pickle
each compression, torch.jit.load) a malicious file built with the real library
is refused - the load raised, the preload said so on stderr and the payload's
marker file does not exist - and the benign counterpart loads and equals the
original. The same again with an uncommon extension, a disguised name, an
inherited dup'd fd, os.open + os.fdopen and a relative path after chdir. A
control run without the preload proves the malicious files really run code."""
import json
import os
import shutil
import subprocess
import zipfile

import pytest

from conftest import LIB, PYTHON, clean_env
import preload_cases
from spgen import Reduce, touch_cmd

HERE = os.path.dirname(os.path.abspath(__file__))

JOBLIB_COMPRESSORS = ["zlib", "gzip", "bz2", "lzma", "xz", "lz4"]
PANDAS_COMPRESSIONS = [(None, ".pkl"), ("gzip", ".pkl.gz"), ("bz2", ".pkl.bz2"), ("xz", ".pkl.xz"),
                       ("zip", ".pkl.zip"), ("zstd", ".pkl.zst")]


def _payload(markers, cid):
    return Reduce(os.system, (touch_cmd(os.path.join(markers, cid)),))


def _jit_with_pickle(src, dst, data):
    """Copy a TorchScript zip, replacing its data.pkl member with `data`."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            body = zin.read(info.filename)
            if info.filename.endswith("/data.pkl"):
                body = data
            zout.writestr(info, body)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Build every benign and malicious file with the real libraries (no preload).
    Returns (dir, markers dir, benign cases, malicious cases)."""
    import pickle

    import joblib
    import numpy as np
    import pandas as pd
    import torch

    d = str(tmp_path_factory.mktemp("preload"))
    markers = os.path.join(d, "markers")
    os.makedirs(markers)
    sub = os.path.join(d, "sub")
    os.makedirs(sub)
    good, bad = [], []

    def P(name):
        return os.path.join(d, name)

    def add(lst, cid, kind, path, expect=None, **kw):
        c = {"id": cid, "kind": kind, "path": path}
        if expect:
            c["expect"] = expect
        c.update(kw)
        lst.append(c)

    # ---- pickle.load / pickle.loads, protocols 0, 2, 4, 5
    for proto in (0, 2, 4, 5):
        with open(P("good_p%d.pkl" % proto), "wb") as f:
            pickle.dump(preload_cases.build("plain"), f, protocol=proto)
        with open(P("bad_p%d.pkl" % proto), "wb") as f:
            pickle.dump({"w": [1, 2], "x": _payload(markers, "bad_p%d" % proto)}, f, protocol=proto)
        add(good, "good_p%d" % proto, "pickle", P("good_p%d.pkl" % proto), "plain")
        add(bad, "bad_p%d" % proto, "pickle", P("bad_p%d.pkl" % proto))
    add(good, "good_loads", "pickle_loads", P("good_p4.pkl"), "plain")
    with open(P("bad_loads.pkl"), "wb") as f:
        pickle.dump([_payload(markers, "bad_loads")], f, protocol=2)
    add(bad, "bad_loads", "pickle_loads", P("bad_loads.pkl"))

    # ---- torch.load: zip, legacy, file object
    tobj = preload_cases.build("torch")
    torch.save(tobj, P("good.pt"))
    torch.save(tobj, P("good_legacy.pt"), _use_new_zipfile_serialization=False)
    torch.save({"w": torch.ones(3), "x": _payload(markers, "bad_zip")}, P("bad.pt"))
    torch.save({"w": torch.ones(3), "x": _payload(markers, "bad_legacy")}, P("bad_legacy.pt"),
               _use_new_zipfile_serialization=False)
    torch.save({"w": torch.ones(3), "x": _payload(markers, "bad_fileobj")}, P("bad_fileobj.pt"))
    add(good, "good_zip", "torch", P("good.pt"), "torch")
    add(good, "good_legacy", "torch", P("good_legacy.pt"), "torch")
    add(good, "good_fileobj", "torch_fileobj", P("good.pt"), "torch")
    add(bad, "bad_zip", "torch", P("bad.pt"))
    add(bad, "bad_legacy", "torch", P("bad_legacy.pt"))
    add(bad, "bad_fileobj", "torch_fileobj", P("bad_fileobj.pt"))

    # ---- np.load: npy and npz with object arrays
    np.save(P("good.npy"), preload_cases.build("npobj"), allow_pickle=True)
    np.savez(P("good.npz"), a=preload_cases.build("npobj"))
    np.save(P("bad.npy"), np.array([1, _payload(markers, "bad_npy")], dtype=object), allow_pickle=True)
    np.savez(P("bad.npz"), a=np.array([_payload(markers, "bad_npz"), 2], dtype=object))
    add(good, "good_npy", "np", P("good.npy"), "npobj")
    add(good, "good_npz", "np", P("good.npz"), "npz")
    add(bad, "bad_npy", "np", P("bad.npy"))
    add(bad, "bad_npz", "np", P("bad.npz"))

    # ---- joblib: plain and each compressor (payload after the array data)
    jobj = preload_cases.build("joblib")
    for comp in [None] + JOBLIB_COMPRESSORS:
        tag = comp or "plain"
        kw = {"compress": (comp, 3)} if comp else {}
        joblib.dump(jobj, P("good_%s.joblib" % tag), **kw)
        joblib.dump({"arr": np.arange(100, dtype=np.float64), "x": _payload(markers, "bad_joblib_" + tag)},
                    P("bad_%s.joblib" % tag), **kw)
        add(good, "good_joblib_" + tag, "joblib", P("good_%s.joblib" % tag), "joblib")
        add(bad, "bad_joblib_" + tag, "joblib", P("bad_%s.joblib" % tag))

    # ---- pandas.read_pickle: each compression, inferred from the extension
    df = preload_cases.build("pandas")
    for comp, ext in PANDAS_COMPRESSIONS:
        tag = comp or "none"
        df.to_pickle(P("good_df" + ext), compression=comp)
        pd.to_pickle({"df": df, "x": _payload(markers, "bad_pd_" + tag)}, P("bad_df" + ext), compression=comp)
        add(good, "good_pd_" + tag, "pandas", P("good_df" + ext), "pandas")
        add(bad, "bad_pd_" + tag, "pandas", P("bad_df" + ext))

    # ---- torch.jit.load (libtorch reads it with fopen64/fread). torch.jit's own
    # unpickler would not run os.system; the test checks the preload refused it.
    preload_cases.build("jit").save(P("good.jit.pt"))
    bad_pkl = pickle.dumps({"x": _payload(markers, "bad_jit")}, protocol=2)
    _jit_with_pickle(P("good.jit.pt"), P("bad.jit.pt"), bad_pkl)
    add(good, "good_jit", "jit", P("good.jit.pt"), "jit")
    add(bad, "bad_jit", "jit", P("bad.jit.pt"), native=True)

    # ---- variants: uncommon extension, disguised name, relative path after chdir
    shutil.copy(P("good_p4.pkl"), P("good.ckpt7"))
    shutil.copy(P("bad_p4.pkl"), P("bad.ckpt7"))
    shutil.copy(P("good.pt"), P("good_model.weights"))
    shutil.copy(P("bad.pt"), P("bad_model.weights"))
    shutil.copy(P("good_p2.pkl"), P("good_config.json"))
    shutil.copy(P("bad_p2.pkl"), P("bad_config.json"))
    shutil.copy(P("good.pt"), P("good_model.safetensors"))
    shutil.copy(P("bad.pt"), P("bad_model.safetensors"))
    shutil.copy(P("good_gzip.joblib"), P("good_README.txt"))
    shutil.copy(P("bad_gzip.joblib"), P("bad_README.txt"))
    shutil.copy(P("good_df.pkl.gz"), P("good_df_noext"))
    shutil.copy(P("bad_df.pkl.gz"), P("bad_df_noext"))
    for name in ("good_p4.pkl", "bad_p4.pkl", "good.pt", "bad.pt", "good.npy", "bad.npy"):
        shutil.copy(P(name), os.path.join(sub, name))
    add(good, "good_ext_pickle", "pickle", P("good.ckpt7"), "plain")
    add(bad, "bad_ext_pickle", "pickle", P("bad.ckpt7"), payload="bad_p4")
    add(good, "good_ext_torch", "torch", P("good_model.weights"), "torch")
    add(bad, "bad_ext_torch", "torch", P("bad_model.weights"), payload="bad_zip")
    add(good, "good_disguised_json", "pickle", P("good_config.json"), "plain")
    add(bad, "bad_disguised_json", "pickle", P("bad_config.json"), payload="bad_p2")
    add(good, "good_disguised_st", "torch", P("good_model.safetensors"), "torch")
    add(bad, "bad_disguised_st", "torch", P("bad_model.safetensors"), payload="bad_zip")
    add(good, "good_disguised_txt", "joblib", P("good_README.txt"), "joblib")
    add(bad, "bad_disguised_txt", "joblib", P("bad_README.txt"), payload="bad_joblib_gzip")
    add(good, "good_noext_pd", "pandas", P("good_df_noext"), "pandas", compression="gzip")
    add(bad, "bad_noext_pd", "pandas", P("bad_df_noext"), compression="gzip", payload="bad_pd_gzip")
    add(good, "good_osopen", "pickle_osopen", P("good_p2.pkl"), "plain")
    add(bad, "bad_osopen", "pickle_osopen", P("bad_p2.pkl"), payload="bad_p2")
    for kind, name, exp, pay in (("pickle", "p4.pkl", "plain", "bad_p4"), ("torch", "pt", "torch", "bad_zip"),
                                 ("np", "npy", "npobj", "bad_npy")):
        gname = ("good_" + name) if "." in name else ("good." + name)
        bname = ("bad_" + name) if "." in name else ("bad." + name)
        add(good, "good_rel_" + kind, kind, gname, exp, chdir=sub)
        add(bad, "bad_rel_" + kind, kind, bname, chdir=sub, payload=pay)
    return d, markers, good, bad


def _marker(markers, case):
    return os.path.join(markers, case.get("payload", case["id"]))


def _run(d, cases, preload=True, inherit=None, extra_env=None):
    """Run the cases in one fresh /usr/bin/python3 (under the preload if asked).
    `inherit` maps case id -> path to open in this (unpreloaded) process and pass
    as an inherited fd. Returns (results dict, CompletedProcess)."""
    fds = []
    cases = [dict(c) for c in cases]
    for c in cases:
        if inherit and c["id"] in inherit:
            fd = os.open(inherit[c["id"]], os.O_RDONLY)
            fds.append(fd)
            c["fd"] = fd
    cpath = os.path.join(d, "cases_%d.json" % os.getpid())
    rpath = os.path.join(d, "results_%d.json" % os.getpid())
    with open(cpath, "w") as f:
        json.dump(cases, f)
    if os.path.exists(rpath):
        os.unlink(rpath)
    env = clean_env(**(extra_env or {}))
    if preload:
        env["LD_PRELOAD"] = LIB
    try:
        p = subprocess.run([PYTHON, os.path.join(HERE, "preload_cases.py"), cpath, rpath], env=env,
                           capture_output=True, text=True, timeout=600, pass_fds=tuple(fds))
    finally:
        for fd in fds:
            os.close(fd)
    assert os.path.exists(rpath), "child failed: rc=%s\n%s" % (p.returncode, p.stderr[-3000:])
    with open(rpath) as f:
        return json.load(f), p


def _clear(markers):
    for n in os.listdir(markers):
        os.unlink(os.path.join(markers, n))


def _groups(cases):
    """Batch: torch-based loaders in one process, the rest in another."""
    t = [c for c in cases if c["kind"].startswith(("torch", "jit"))]
    o = [c for c in cases if not c["kind"].startswith(("torch", "jit"))]
    return [g for g in (o, t) if g]


def test_control_malicious_files_run_code_without_preload(files):
    """The malicious files are real: without the preload their payloads run."""
    d, markers, good, bad = files
    _clear(markers)
    picks = [c for c in bad if c["id"] in ("bad_p0", "bad_p4", "bad_loads", "bad_zip", "bad_legacy", "bad_npy",
                                            "bad_npz", "bad_joblib_plain", "bad_joblib_gzip", "bad_pd_gzip",
                                            "bad_pd_zstd")]
    res, p = _run(d, picks, preload=False)
    for c in picks:
        assert os.path.exists(_marker(markers, c)), "%s: payload did not run without the preload: %s" % (
            c["id"], res[c["id"]])
    _clear(markers)


def test_malicious_refused(files):
    d, markers, good, bad = files
    _clear(markers)
    log = os.path.join(d, "audit_bad.jsonl")
    for grp in _groups(bad):
        res, p = _run(d, grp, extra_env={"SAFEPICKLE_LOG": log})
        for c in grp:
            r = res[c["id"]]
            assert not os.path.exists(_marker(markers, c)), "%s: payload ran" % c["id"]
            assert r["raised"], "%s: load did not raise: %s" % (c["id"], r)
            name = os.path.basename(c["path"])
            assert any(line.startswith("safepickle: blocked ") and name in line and ": malicious:" in line
                       for line in p.stderr.splitlines()), "%s: no refusal line for %s\n%s" % (
                c["id"], name, p.stderr[-2000:])
            if not c.get("native"):
                assert "PermissionError" in r["exc"] or "Permission denied" in r["exc"], (c["id"], r)
    with open(log) as f:
        recs = [json.loads(line) for line in f]
    blocked = {os.path.basename(r["path"]) for r in recs if r["action"] == "block"}
    for c in bad:
        assert os.path.basename(c["path"]) in blocked, "%s: no audit record" % c["id"]


def test_benign_loads_equal(files):
    d, markers, good, bad = files
    for grp in _groups(good):
        res, p = _run(d, grp)
        for c in grp:
            r = res[c["id"]]
            assert not r["raised"], "%s raised under the preload: %s\n%s" % (c["id"], r["exc"], p.stderr[-2000:])
            assert r["equal"] is True, "%s: loaded object differs from the original" % c["id"]
        assert "safepickle: blocked" not in p.stderr, p.stderr[-2000:]


def test_inherited_dup_fd(files):
    """An fd opened outside the preload (inherited) and dup'd never passes an open
    hook: it is judged lazily at its first read and refused there."""
    d, markers, good, bad = files
    _clear(markers)
    P = lambda n: os.path.join(d, n)  # noqa: E731
    cases = [
        {"id": "bad_fd_pickle", "kind": "pickle_inherited_dup", "payload": "bad_p2"},
        {"id": "good_fd_pickle", "kind": "pickle_inherited_dup", "expect": "plain"},
        {"id": "bad_fd_torch", "kind": "torch_inherited_dup", "payload": "bad_zip"},
        {"id": "good_fd_torch", "kind": "torch_inherited_dup", "expect": "torch"},
    ]
    inherit = {"bad_fd_pickle": P("bad_p2.pkl"), "good_fd_pickle": P("good_p2.pkl"),
               "bad_fd_torch": P("bad.pt"), "good_fd_torch": P("good.pt")}
    res, p = _run(d, cases, inherit=inherit)
    for c in cases:
        r = res[c["id"]]
        if c["id"].startswith("bad"):
            assert r["raised"], (c["id"], r)
            assert not os.path.exists(_marker(markers, c)), "%s: payload ran" % c["id"]
        else:
            assert not r["raised"] and r["equal"] is True, (c["id"], r, p.stderr[-2000:])
    assert "(read; policy" in p.stderr or "(__read_chk; policy" in p.stderr, p.stderr[-2000:]


def test_audit_record_fields(files):
    d, markers, good, bad = files
    _clear(markers)
    log = os.path.join(d, "audit_one.jsonl")
    case = [c for c in bad if c["id"] == "bad_p4"]
    res, p = _run(d, case, extra_env={"SAFEPICKLE_LOG": log})
    assert res["bad_p4"]["raised"]
    with open(log) as f:
        recs = [json.loads(line) for line in f]
    rec = [r for r in recs if r["path"].endswith("bad_p4.pkl")][0]
    assert rec["verdict"] == "malicious" and rec["action"] == "block"
    assert rec["pid"] > 0 and rec["exe"].startswith("/usr/bin/python3")
    assert any("preload_cases.py" in a for a in rec["argv"])
    assert rec["call"] in ("open", "open64", "__open_2", "__open64_2", "openat", "openat64")
    assert rec["reasons"] and all(r["rule"] and r["msg"] for r in rec["reasons"])
    assert rec["policy"]["name"] and rec["policy"]["mode"] == "enforce"
    assert rec["time"].endswith("Z")
    # the native call site of the open: a frame in the interpreter, not in the preload
    assert rec["callsite"]["obj"] and "libsafepickle" not in rec["callsite"]["obj"]
    assert rec["stack"] and all("libsafepickle" not in (fr.get("obj") or "") for fr in rec["stack"])


def test_audit_mode_warns_and_allows(files):
    """SAFEPICKLE_MODE=audit: the payload is reported but not blocked (so it runs)."""
    d, markers, good, bad = files
    _clear(markers)
    case = [c for c in bad if c["id"] == "bad_p2"]
    res, p = _run(d, case, extra_env={"SAFEPICKLE_MODE": "audit"})
    assert "safepickle: warning (not blocked)" in p.stderr
    assert os.path.exists(_marker(markers, case[0])), "audit mode must not block"
    _clear(markers)


def test_broken_policy_fails_closed(files, tmp_path):
    """A policy that cannot be loaded refuses every pickle-bearing file, benign too."""
    d, markers, good, bad = files
    bad_policy = tmp_path / "broken.json"
    bad_policy.write_text("{ this is not json")
    case = [c for c in good if c["id"] == "good_p4"]
    res, p = _run(d, case, extra_env={"SAFEPICKLE_POLICY": str(bad_policy)})
    assert res["good_p4"]["raised"], res
    assert "cannot load policy" in p.stderr


def test_trusted_sha256_allows_exactly_that_file(files, tmp_path):
    """A file whose SHA-256 the policy trusts loads whatever its content (here the
    payload runs: that is what trusting means); a one-byte change is judged again."""
    import hashlib
    from conftest import REPO
    d, markers, good, bad = files
    _clear(markers)
    src = os.path.join(d, "bad_p4.pkl")
    with open(src, "rb") as f:
        data = f.read()
    with open(os.path.join(REPO, "policies", "default.json")) as f:
        pol = json.load(f)
    pol["name"] = "trusting"
    # layer 1 only: the PEP 578 layer judges globals as they are resolved and does
    # not know which file they come from
    pol["layers"] = {"file_hooks": True, "audit_hook": False, "runtime_behaviour": False}
    pol.setdefault("trusted", {})["sha256"] = [hashlib.sha256(data).hexdigest()]
    pfile = tmp_path / "trust.json"
    pfile.write_text(json.dumps(pol))
    changed = tmp_path / "bad_p4_changed.pkl"
    changed.write_bytes(data + b"\n")  # trailing byte after STOP: same payload, new digest
    cases = [{"id": "trusted", "kind": "pickle", "path": src, "payload": "bad_p4"}]
    res, p = _run(d, cases, extra_env={"SAFEPICKLE_POLICY": str(pfile)})
    assert not res["trusted"]["raised"], (res, p.stderr[-2000:])
    assert os.path.exists(_marker(markers, cases[0])), "a trusted file must load untouched"
    _clear(markers)
    cases = [{"id": "changed", "kind": "pickle", "path": str(changed), "payload": "bad_p4"}]
    res, p = _run(d, cases, extra_env={"SAFEPICKLE_POLICY": str(pfile)})
    assert res["changed"]["raised"] and "safepickle: blocked" in p.stderr
    assert not os.path.exists(_marker(markers, cases[0]))


NATIVE_CHILD = r'''
import ctypes, errno, json, mmap, os, sys
bad_fd, good_fd, bad_path, good_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
libc = ctypes.CDLL(None, use_errno=True)
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.fdopen.restype = ctypes.c_void_p
libc.fdopen.argtypes = [ctypes.c_int, ctypes.c_char_p]
libc.fread.restype = ctypes.c_size_t
libc.fread.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
out = {}
def attempt(name, fn):
    try:
        r = fn()
        out[name] = ["ok", r]
    except OSError as e:
        out[name] = ["err", e.errno]
def cfopen(path):
    f = libc.fopen(path.encode(), b"rb")
    if not f:
        raise OSError(ctypes.get_errno(), "fopen")
    buf = ctypes.create_string_buffer(1 << 16)
    n = libc.fread(buf, 1, len(buf), f)
    libc.fclose(f)
    return buf.raw[:n] == open(path, "rb").read()
def cfdopen(fd):
    f = libc.fdopen(os.dup(fd), b"rb")
    if not f:
        raise OSError(ctypes.get_errno(), "fdopen")
    libc.fclose(f)
    return True
attempt("fopen_bad", lambda: cfopen(bad_path))
attempt("fopen_good", lambda: cfopen(good_path))
attempt("fdopen_bad", lambda: cfdopen(bad_fd))
attempt("fdopen_good", lambda: cfdopen(good_fd))
attempt("mmap_bad", lambda: len(mmap.mmap(bad_fd, 0, prot=mmap.PROT_READ)))
attempt("mmap_good", lambda: len(mmap.mmap(good_fd, 0, prot=mmap.PROT_READ)))
attempt("pread_bad", lambda: len(os.pread(bad_fd, 16, 0)))
attempt("pread_good", lambda: len(os.pread(good_fd, 16, 0)))
attempt("readv_bad", lambda: os.readv(os.dup(bad_fd), [bytearray(16)]))
print(json.dumps(out))
'''


def test_native_hooks_fopen_fread_fdopen_mmap_pread(files):
    """The stdio and mapping hooks, driven directly: fopen refuses a malicious
    file and fread returns the exact bytes of a benign one; an inherited fd that
    never passed an open hook is refused at fdopen, mmap, pread and readv."""
    d, markers, good, bad = files
    bad_path, good_path = os.path.join(d, "bad_p2.pkl"), os.path.join(d, "good_p2.pkl")
    bfd, gfd = os.open(bad_path, os.O_RDONLY), os.open(good_path, os.O_RDONLY)
    try:
        env = clean_env(LD_PRELOAD=LIB, SAFEPICKLE_LOG="none")
        p = subprocess.run([PYTHON, "-c", NATIVE_CHILD, str(bfd), str(gfd), bad_path, good_path], env=env,
                           capture_output=True, text=True, timeout=120, pass_fds=(bfd, gfd))
    finally:
        os.close(bfd)
        os.close(gfd)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    import errno
    for name in ("fopen_bad", "fdopen_bad", "mmap_bad", "pread_bad", "readv_bad"):
        assert out[name] == ["err", errno.EACCES], (name, out[name])
    assert out["fopen_good"] == ["ok", True] and out["fdopen_good"] == ["ok", True]
    assert out["mmap_good"][0] == "ok" and out["pread_good"] == ["ok", 16]
    for call in ("fopen", "fdopen"):
        assert "(%s; policy" % call in p.stderr, p.stderr[-2000:]


SEMANTICS_CHILD = r'''
import errno, fcntl, json, mmap, os, stat, sys
d = sys.argv[1]
os.umask(0)
out = {}
p = os.path.join(d, "created_%s" % sys.argv[2])
fd = os.open(p, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o640)           # variadic mode forwarded
out["mode"] = oct(stat.S_IMODE(os.fstat(fd).st_mode))
out["getfl"] = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY  # fcntl int arg forwarded
fd2 = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100)
out["dupfd_min"] = fd2 >= 100
out["setfd"] = fcntl.fcntl(fd2, fcntl.F_GETFD) & fcntl.FD_CLOEXEC == fcntl.FD_CLOEXEC
os.write(fd, b"hello")
os.close(fd); os.close(fd2)
tfd = os.open(d, os.O_TMPFILE | os.O_RDWR, 0o600)
out["tmpfile_mode"] = oct(stat.S_IMODE(os.fstat(tfd).st_mode))
os.close(tfd)
try:
    os.open(os.path.join(d, "does-not-exist"), os.O_RDONLY)
except OSError as e:
    out["enoent"] = e.errno == errno.ENOENT
try:
    os.read(987, 1)
except OSError as e:
    out["ebadf"] = e.errno == errno.EBADF
m = mmap.mmap(-1, 4096); m[:5] = b"abcde"; out["anon_mmap"] = m[:5] == b"abcde"
with open(p, "rb") as f:
    out["read_back"] = f.read() == b"hello"
print(json.dumps(out, sort_keys=True))
'''


def test_hook_semantics_unchanged(tmp_path):
    """Variadic modes, fcntl arguments, errno values and anonymous mappings are
    exactly what libc gives without the preload."""
    outs = []
    for tag, preload in (("plain", False), ("pre", True)):
        env = clean_env()
        if preload:
            env["LD_PRELOAD"] = LIB
        p = subprocess.run([PYTHON, "-c", SEMANTICS_CHILD, str(tmp_path), tag], env=env, capture_output=True,
                           text=True, timeout=60)
        assert p.returncode == 0, p.stderr[-2000:]
        outs.append(json.loads(p.stdout))
    assert outs[0] == outs[1]
    assert outs[1]["mode"] == "0o640" and outs[1]["tmpfile_mode"] == "0o600"
    assert all(v for k, v in outs[1].items() if not k.endswith("mode")), outs[1]


WRITE_ONLY_CHILD = r'''
import ctypes, errno, json, os, pickle, sys
import numpy as np
d, bad, bad_rw_fd = sys.argv[1], sys.argv[2], int(sys.argv[3])
libc = ctypes.CDLL(None, use_errno=True)
libc.fdopen.restype = ctypes.c_void_p
libc.fdopen.argtypes = [ctypes.c_int, ctypes.c_char_p]
libc.fclose.argtypes = [ctypes.c_void_p]
out = {}
def attempt(name, fn):
    try:
        out[name] = ["ok", fn()]
    except OSError as e:
        out[name] = ["err", e.errno]
def cfdopen(fd, mode):
    f = libc.fdopen(os.dup(fd), mode)
    if not f:
        raise OSError(ctypes.get_errno(), "fdopen")
    libc.fclose(f)
    return True
# numpy writes a plain array's data with tofile(), which fdopen()s a dup of the
# 'wb' file after the header was flushed (np.save to a path, format.write_array)
p = os.path.join(d, "written.npy")
attempt("np_save", lambda: np.save(p, np.arange(10.0)) or np.load(p).tolist() == list(np.arange(10.0)))
q = os.path.join(d, "written.bin")
def tofile():
    with open(q, "wb") as f:
        f.write(b"head")
        f.flush()
        np.arange(4, dtype=np.int64).tofile(f)
    return os.path.getsize(q)
attempt("tofile", tofile)
# the malicious file: write-only, nothing can be read through it
wfd = os.open(bad, os.O_WRONLY)
attempt("fdopen_wo_bad", lambda: cfdopen(wfd, b"ab"))
attempt("read_wo_bad", lambda: os.read(wfd, 16))
os.close(wfd)
# readable through an inherited O_RDWR fd: refused, whatever mode the stream has
attempt("fdopen_rw_bad", lambda: cfdopen(bad_rw_fd, b"ab"))
def load():
    with open(bad, "rb") as f:
        return repr(pickle.load(f))
attempt("load_bad", load)
print(json.dumps(out))
'''


def test_write_only_fd_not_judged(files, tmp_path):
    """An fd opened write-only cannot be read, so using it (fdopen) is not judged, as
    at open: np.save to a path and ndarray.tofile() (an fdopen of a dup of the 'wb'
    file, after the header was flushed) work under the preload (they were refused
    by the fail mode: the judgement's read failed with EBADF). A malicious file is
    still refused through an fd that can read it (inherited O_RDWR, any stream
    mode) and by open(); its payload never runs."""
    import errno
    d, markers, good, bad = files
    _clear(markers)
    bad_path = os.path.join(d, "bad_p2.pkl")
    rw = os.open(bad_path, os.O_RDWR)
    try:
        env = clean_env(LD_PRELOAD=LIB, SAFEPICKLE_LOG="none")
        p = subprocess.run([PYTHON, "-c", WRITE_ONLY_CHILD, str(tmp_path), bad_path, str(rw)], env=env,
                           capture_output=True, text=True, timeout=120, pass_fds=(rw,))
    finally:
        os.close(rw)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["np_save"] == ["ok", True], (out, p.stderr[-2000:])
    assert out["tofile"] == ["ok", 4 + 32], (out, p.stderr[-2000:])
    assert out["fdopen_wo_bad"] == ["ok", True], out
    assert out["read_wo_bad"] == ["err", errno.EBADF], out
    assert out["fdopen_rw_bad"] == ["err", errno.EACCES], out
    assert out["load_bad"] == ["err", errno.EACCES], out
    assert not os.listdir(markers), os.listdir(markers)


def test_safepickle_run(files, tmp_path):
    """`safepickle run` execs the command under the preload: the malicious load is
    refused, --audit only warns, --log writes the record, a bad policy or command
    is a clear error with its own exit status."""
    from conftest import run_cli
    d, markers, good, bad = files
    _clear(markers)
    bad_path = os.path.join(d, "bad_p2.pkl")
    code = "import pickle, sys\nwith open(sys.argv[1], 'rb') as f: pickle.load(f)\nprint('LOADED')"
    log = tmp_path / "run.jsonl"
    r = run_cli("run", "--log", str(log), "--", PYTHON, "-c", code, bad_path)
    assert r.returncode != 0 and "LOADED" not in r.stdout
    assert "safepickle: blocked" in r.stderr and "PermissionError" in r.stderr
    assert not os.path.exists(os.path.join(markers, "bad_p2"))
    recs = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(x["action"] == "block" and x["path"] == bad_path for x in recs)
    r = run_cli("run", "--audit", "--", PYTHON, "-c", code, os.path.join(d, "good_p2.pkl"))
    assert r.returncode == 0 and "LOADED" in r.stdout
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    r = run_cli("run", "--policy", str(broken), "--", PYTHON, "-c", "print(1)")
    assert r.returncode == 2 and "policy" in r.stderr
    r = run_cli("run", "--", str(tmp_path / "no-such-command"))
    assert r.returncode == 127
    r = run_cli("run")
    assert r.returncode == 2 and "usage" in r.stderr
