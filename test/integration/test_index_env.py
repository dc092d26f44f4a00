"""test_index_env.py - the environment index as a build artefact and as a requirement.

A private environment (a venv of /usr/bin/python3 without pip) holds one package, `spidx`,
that the knowledge base has never heard of; the index is built for it with `--python`.

- Cost without a change of content: a parallel build (`--jobs 2`), a build from a cold cache
  and one from the warm cache write byte for byte the index a clean serial build writes;
  after a file is edited (also an edit that keeps size and mtime, caught by the SHA-256 of
  the bytes), the cached build re-reads exactly that file and still equals a clean build.
  A cache others can write is not used.
- `require_index`: with the index missing, unreadable (a directory; an index without an
  environment digest) or stale (a module installed after it was built), `scan` exits 2 with
  the reason and the Python package refuses; the preload says so at start and refuses every
  pickle-bearing file, benign included, and a payload does not run. A fresh index works.
- The persistent verdict cache is keyed by the index too: a pickle that calls a `spidx`
  function allowed (and cached) while the index said it was inert is refused once the
  function reaches os.system and the index is rebuilt - the payload does not run.
"""
import json
import os
import shutil
import stat
import subprocess

import pytest

from conftest import CLI, LIB, PYTHON, clean_env, run_cli
from spgen import Asm, assert_marker_absent, benign_pickle, system_pickle

INERT = "def f(x):\n    return [x]\n"
CALLS = "import os\n\n\ndef f(x):\n    os.system(x)\n    return [x]\n"


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    root = tmp_path_factory.mktemp("venv")
    r = subprocess.run([PYTHON, "-m", "venv", "--without-pip", str(root / "v")], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("no venv module for /usr/bin/python3: %s" % r.stderr[-300:])
    py = str(root / "v" / "bin" / "python")
    site = subprocess.run([py, "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    pkg = os.path.join(site, "spidx")
    os.makedirs(pkg)
    with open(os.path.join(pkg, "__init__.py"), "w") as f:
        f.write("from .mod import f\n")
    with open(os.path.join(pkg, "mod.py"), "w") as f:
        f.write(INERT)
    with open(os.path.join(pkg, "other.py"), "w") as f:
        f.write("import shutil\n\ndef g(p):\n    shutil.rmtree(p)\n\nclass C:\n    def __init__(self):\n"
                "        self.h = g\n")
    return py, site, pkg


def build(py, out, *opts, env=None):
    r = run_cli("kb", "index", "--python", py, "--out", out, "--packages", "spidx", *opts, env=env)
    assert r.returncode == 0, r.stderr
    with open(out, "rb") as f:
        return f.read(), r.stderr


def test_parallel_and_cached_builds_equal_a_clean_serial_build(venv, tmp_path):
    py, site, pkg = venv
    cache = str(tmp_path / "cache")
    serial, _ = build(py, tmp_path / "s.tsv", "--jobs", "1")
    assert b"spidx.other:g\tfile_write" in serial and b"spidx.mod:f\tdata" in serial
    par, _ = build(py, tmp_path / "p.tsv", "--jobs", "2")
    cold, msg = build(py, tmp_path / "c.tsv", "--jobs", "2", "--cache", cache)
    assert "0 from the cache" in msg, msg
    warm, msg = build(py, tmp_path / "w.tsv", "--jobs", "2", "--cache", cache)
    assert "3 parsed, 0 unparsable, 3 from the cache" in msg, msg
    assert par == serial and cold == serial and warm == serial
    # an edit: that file only is read again, and the result is a clean build's
    mod = os.path.join(pkg, "mod.py")
    st = os.stat(mod)
    with open(mod, "w") as f:
        f.write(CALLS)
    try:
        serial2, _ = build(py, tmp_path / "s2.tsv", "--jobs", "1")
        warm2, msg = build(py, tmp_path / "w2.tsv", "--jobs", "2", "--cache", cache)
        assert "2 from the cache" in msg, msg
        assert b"spidx.mod:f\tprocess" in serial2 and warm2 == serial2
        # same size, same mtime, other bytes: the digest of the bytes tells
        same = CALLS.replace("os.system", "os.popen_")
        assert len(same) == len(CALLS)
        st2 = os.stat(mod)
        with open(mod, "w") as f:
            f.write(same)
        os.utime(mod, ns=(st2.st_atime_ns, st2.st_mtime_ns))
        assert os.stat(mod).st_size == st2.st_size
        serial3, _ = build(py, tmp_path / "s3.tsv", "--jobs", "1")
        warm3, msg = build(py, tmp_path / "w3.tsv", "--jobs", "2", "--cache", cache)
        assert "2 from the cache" in msg, msg
        assert b"spidx.mod:f\tdata" in serial3 and warm3 == serial3
    finally:
        with open(mod, "w") as f:
            f.write(INERT)
        os.utime(mod, ns=(st.st_atime_ns, st.st_mtime_ns))
    # a cache anybody may write is not trusted (it could call sink-reaching functions inert)
    os.chmod(cache, 0o666)
    again, msg = build(py, tmp_path / "u.tsv", "--jobs", "1", "--cache", cache)
    assert "not using the cache" in msg and "0 from the cache" in msg, msg
    assert again == serial


# ------------------------------------------------------------------ require_index
def _policy(tmp_path, **keys):
    p = tmp_path / "policy.json"
    p.write_text(json.dumps(dict({"schema": 1, "name": "needs-index", "require_index": True}, **keys)))
    return str(p)


def _files(tmp_path):
    marker = tmp_path / "ran"
    (tmp_path / "bad.pkl").write_bytes(system_pickle(marker))
    (tmp_path / "good.pkl").write_bytes(benign_pickle())
    return marker


LOAD = ("import pickle, sys\nfor p in sys.argv[1:]:\n    try:\n        pickle.load(open(p, 'rb'))\n"
        "        print('LOADED', p)\n    except PermissionError:\n        print('REFUSED', p)\n")


def _preload(py, tmp_path, idx, policy, *paths):
    env = clean_env(LD_PRELOAD=LIB, SAFEPICKLE_POLICY=policy, SAFEPICKLE_KB_INDEX=idx)
    return subprocess.run([py, "-c", LOAD, *map(str, paths)], env=env, capture_output=True, text=True,
                          timeout=300)


def _unmet(py, tmp_path, idx, what):
    policy = _policy(tmp_path)
    marker = _files(tmp_path)
    r = run_cli("scan", "--policy", policy, tmp_path / "good.pkl", env={"SAFEPICKLE_KB_INDEX": idx})
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "requires the environment index (require_index) and it is %s" % what in r.stderr, r.stderr
    assert "nothing scanned" in r.stderr and not r.stdout.strip(), r.stdout
    r = _preload(py, tmp_path, idx, policy, tmp_path / "good.pkl", tmp_path / "bad.pkl")
    assert r.stderr.count("requires the environment index (require_index) and it is %s" % what) >= 1, r.stderr
    assert "every pickle-bearing file will be refused" in r.stderr, r.stderr
    assert r.stdout.split() == ["REFUSED", str(tmp_path / "good.pkl"), "REFUSED", str(tmp_path / "bad.pkl")], \
        r.stdout + r.stderr
    assert_marker_absent(marker)
    # the Python package over the analyzer's library (the same policy): an error, no verdict
    code = ("import sys; sys.path.insert(0, %r)\nimport safepickle\ntry:\n"
            "    print(safepickle.scan(sys.argv[1], policy=sys.argv[2]).verdict)\nexcept Exception as e:\n"
            "    print('ERROR', e)\n" % os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
                os.path.abspath(__file__)))), "analyzer", "python"))
    r = subprocess.run([PYTHON, "-c", code, str(tmp_path / "good.pkl"), policy],
                       env=clean_env(SAFEPICKLE_KB_INDEX=idx, SAFEPICKLE_LIBSPA=os.path.join(os.path.dirname(LIB), "libspa.so")),
                       capture_output=True, text=True, timeout=120)
    assert r.stdout.startswith("ERROR") and "require_index" in r.stdout, r.stdout + r.stderr


def test_require_index_missing_blocks(venv, tmp_path):
    _unmet(venv[0], tmp_path, str(tmp_path / "no-such-index.tsv"), "missing")


def test_require_index_empty_setting_blocks(venv, tmp_path):
    _unmet(venv[0], tmp_path, "", "missing")


def test_require_index_unreadable_blocks(venv, tmp_path):
    d = tmp_path / "a-directory"
    d.mkdir()
    _unmet(venv[0], tmp_path, str(d), "unreadable")


def test_require_index_without_env_digest_blocks(venv, tmp_path):
    py = venv[0]
    idx = tmp_path / "idx.tsv"
    build(py, idx)
    text = [ln for ln in open(idx).read().splitlines(True) if not ln.startswith("# env")]
    old = tmp_path / "old.tsv"
    old.write_text("".join(text))
    _unmet(py, tmp_path, str(old), "unreadable")


def test_require_index_stale_blocks_and_fresh_works(venv, tmp_path):
    py, site, pkg = venv
    idx = str(tmp_path / "idx.tsv")
    build(py, idx)
    policy = _policy(tmp_path)
    marker = _files(tmp_path)
    # fresh: judged as usual
    r = run_cli("scan", "--policy", policy, tmp_path / "good.pkl", env={"SAFEPICKLE_KB_INDEX": idx})
    assert r.returncode == 0, r.stderr
    r = _preload(py, tmp_path, idx, policy, tmp_path / "good.pkl", tmp_path / "bad.pkl")
    assert r.stdout.split() == ["LOADED", str(tmp_path / "good.pkl"), "REFUSED", str(tmp_path / "bad.pkl")], \
        r.stdout + r.stderr
    assert "requires the environment index" not in r.stderr
    r = run_cli("kb", "status", env={"SAFEPICKLE_KB_INDEX": idx})
    assert "up to date" in r.stdout, r.stdout
    # a module installed after the index was built
    extra = os.path.join(site, "spidx_later.py")
    with open(extra, "w") as f:
        f.write("X = 1\n")
    try:
        r = run_cli("kb", "status", env={"SAFEPICKLE_KB_INDEX": idx})
        assert "STALE" in r.stdout, r.stdout
        _unmet(py, tmp_path, idx, "stale")
        # without the requirement a stale index is still used, and said to be stale
        r = run_cli("scan", tmp_path / "good.pkl", env={"SAFEPICKLE_KB_INDEX": idx})
        assert r.returncode == 0, r.stderr
    finally:
        os.unlink(extra)
    assert_marker_absent(marker)


def test_require_index_ignored_in_mode_off(venv, tmp_path):
    marker = _files(tmp_path)
    policy = _policy(tmp_path, mode="off")
    r = run_cli("scan", "--policy", policy, tmp_path / "good.pkl", env={"SAFEPICKLE_KB_INDEX": ""})
    assert r.returncode == 0, r.stderr
    assert not marker.exists()


# ------------------------------------------------------------------ the verdict cache
def test_rebuilt_index_invalidates_cached_verdicts(venv, tmp_path):
    py, site, pkg = venv
    idx = str(tmp_path / "idx.tsv")
    cache = tmp_path / "pcache"
    cache.mkdir(mode=0o700)
    marker = tmp_path / "ran"
    p = tmp_path / "calls_f.pkl"
    p.write_bytes(Asm(2).call("spidx.mod", "f", "touch '%s'" % marker).stop())
    # layer 1 only: the judgement comes from the file scan or its cached verdict
    policy = _policy(tmp_path, require_index=False, layers={"audit_hook": False})
    env = clean_env(LD_PRELOAD=LIB, SAFEPICKLE_POLICY=policy, SAFEPICKLE_KB_INDEX=idx, SAFEPICKLE_CACHE=str(cache))
    mod = os.path.join(pkg, "mod.py")
    st = os.stat(mod)
    build(py, idx)
    try:
        r = subprocess.run([py, "-c", LOAD, str(p)], env=env, capture_output=True, text=True, timeout=300)
        assert r.stdout.split() == ["LOADED", str(p)], r.stdout + r.stderr   # f is inert: allowed
        assert any(n.startswith("e-") for n in os.listdir(cache)), os.listdir(cache)  # and cached
        with open(mod, "w") as f:
            f.write(CALLS)
        out, _ = build(py, idx)
        assert b"spidx.mod:f\tprocess" in out
        r = subprocess.run([py, "-c", LOAD, str(p)], env=env, capture_output=True, text=True, timeout=300)
        assert r.stdout.split() == ["REFUSED", str(p)], r.stdout + r.stderr
        assert_marker_absent(marker)
    finally:
        with open(mod, "w") as f:
            f.write(INERT)
        os.utime(mod, ns=(st.st_atime_ns, st.st_mtime_ns))
