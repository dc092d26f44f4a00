"""test_pcache.py - the persistent verdict cache shared by a user's processes
(preload/pcache.c, analyzer/vcache.c) and "the same file is never judged twice".

Scans are counted with SAFEPICKLE_DEBUG_SCANS (one line per full scan); payloads
with marker files. Every test uses its own cache directory."""
import os
import pickle
import stat

import pytest

from conftest import run_cli, run_py

LOAD = r"""
import os, pickle, sys
out = []
for p in sys.argv[1:]:
    try:
        with open(p, "rb") as f: out.append(type(pickle.load(f)).__name__)
    except PermissionError: out.append("refused")
    except OSError as e: out.append("errno%d" % e.errno)
print(" ".join(out), len(os.listdir("/proc/self/fd")))
"""


def _bad(d, marker):
    return b"cposix\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."


@pytest.fixture
def files(tmp_path):
    good = tmp_path / "good.pkl"
    good.write_bytes(pickle.dumps({"k": list(range(50000))}, protocol=4))
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(_bad(tmp_path, tmp_path / "ran"))
    cache = tmp_path / "cache"
    return good, bad, cache, tmp_path / "scans"


def _run(cache, scans, *paths, extra=None):
    env = {"SAFEPICKLE_CACHE": str(cache), "SAFEPICKLE_DEBUG_SCANS": str(scans), "SAFEPICKLE_LOG": "none"}
    env.update(extra or {})
    r = run_py(LOAD, env=env, args=[str(p) for p in paths])
    assert r.returncode == 0, r.stderr[-2000:]
    return r


def _scans(scans):
    return scans.read_text().splitlines() if scans.exists() else []


def test_second_process_does_not_scan_again(files):
    """Allowances and refusals are kept for the next process: one scan each in
    total, the same outcomes, the refusal reported again, no payload, no fd left."""
    good, bad, cache, scans = files
    r1 = _run(cache, scans, good, bad)
    r2 = _run(cache, scans, good, bad)
    assert r1.stdout.split()[:2] == ["dict", "refused"]
    assert r2.stdout.split()[:2] == ["dict", "refused"]
    assert r1.stdout.split()[2] == r2.stdout.split()[2]     # fds open: no entry left open
    assert _scans(scans) == [str(good), str(bad)]
    assert "blocked" in r2.stderr and "os.system" in r2.stderr
    assert not (good.parent / "ran").exists()
    mode = stat.S_IMODE(os.stat(cache).st_mode)
    assert mode == 0o700, oct(mode)
    for e in os.listdir(cache):
        assert stat.S_IMODE(os.stat(cache / e).st_mode) == 0o600


def test_refused_file_opened_100_times_is_scanned_once(files):
    good, bad, cache, scans = files
    r = _run(cache, scans, *([bad] * 100), extra={"SAFEPICKLE_CACHE": "off"})
    assert r.stdout.split()[:100] == ["refused"] * 100
    assert r.stderr.count("safepickle: blocked") == 100     # reported at every open
    assert _scans(scans) == [str(bad)]


def test_changed_file_is_judged_again(files):
    """A new version of the file is a new identity: judged again, new verdict."""
    good, bad, cache, scans = files
    _run(cache, scans, good)
    data = bad.read_bytes()
    good.write_bytes(data)                                   # same inode, new content
    r = _run(cache, scans, good)
    assert r.stdout.split()[0] == "refused"
    assert _scans(scans) == [str(good), str(good)]


def test_other_policy_other_entries(files, tmp_path):
    good, bad, cache, scans = files
    pol = tmp_path / "p.json"
    pol.write_text('{"schema": 1, "name": "other", "targets": ["python*"], "actions": {"malicious": "warn"}, "layers": {"audit_hook": false, "runtime_behaviour": false}}')
    _run(cache, scans, bad)
    r = _run(cache, scans, bad, extra={"SAFEPICKLE_POLICY": str(pol)})
    assert len(_scans(scans)) == 2
    assert (tmp_path / "ran").exists()                     # warn only: that policy let it run
    (tmp_path / "ran").unlink()
    r = _run(cache, scans, bad)                              # the default policy's entry: still refused
    assert r.stdout.split()[0] == "refused" and not (tmp_path / "ran").exists()
    assert len(_scans(scans)) == 2


def _prime(files):
    good, bad, cache, scans = files
    _run(cache, scans, good, bad)
    assert len(_scans(scans)) == 2
    return [cache / e for e in os.listdir(cache) if e.startswith("e-")]


def test_forged_or_tampered_entries_are_not_trusted(files):
    """Whoever controls a file's bytes cannot forge an entry: an entry whose
    MAC does not match (one byte flipped, or copied from another file's entry
    so that the malicious file would inherit an allowance) is a miss."""
    good, bad, cache, scans = files
    entries = _prime(files)
    assert len(entries) == 2
    sizes = {e: e.stat().st_size for e in entries}
    small, big = sorted(entries, key=lambda e: sizes[e])       # the refusal's is the small one
    data = bytearray(small.read_bytes())
    data[100] ^= 1                                           # tamper with the refusal's entry
    small.write_bytes(bytes(data))
    r = _run(cache, scans, good, bad)
    assert r.stdout.split()[:2] == ["dict", "refused"]
    assert len(_scans(scans)) == 3                           # the tampered one was judged again
    # the good file's entry copied over the bad file's name: a different identity
    small.write_bytes(big.read_bytes())
    r = _run(cache, scans, bad)
    assert r.stdout.split()[0] == "refused" and not (bad.parent / "ran").exists()


@pytest.mark.parametrize("how", ["dir_mode", "entry_mode", "dir_symlink", "entry_symlink", "entry_owner"])
def test_untrusted_cache_is_not_used(files, tmp_path, how):
    """A directory others can write, a symlink, an entry readable by others or
    owned by another user: the preload scans again rather than trust it."""
    good, bad, cache, scans = files
    entries = _prime(files)
    if how == "dir_mode":
        os.chmod(cache, 0o777)
    elif how == "entry_mode":
        for e in entries:
            os.chmod(e, 0o644)
    elif how == "dir_symlink":
        os.rename(cache, tmp_path / "real")
        os.symlink(tmp_path / "real", cache)
    elif how == "entry_symlink":
        for e in entries:
            os.rename(e, str(e) + ".x")
            os.symlink(str(e) + ".x", e)
    elif how == "entry_owner":
        if os.geteuid() != 0:
            pytest.skip("needs root to give a file away")
        for e in entries:
            os.chown(e, 65534, 65534)
    r = _run(cache, scans, good, bad)
    assert r.stdout.split()[:2] == ["dict", "refused"]
    assert len(_scans(scans)) == 4, how


def test_cache_stats_and_clear(files):
    good, bad, cache, scans = files
    _prime(files)
    env = {"SAFEPICKLE_CACHE": str(cache)}
    r = run_cli("cache", "stats", env=env)
    assert r.returncode == 0 and "entries: 2" in r.stdout and "usable" in r.stdout, r.stdout
    r = run_cli("cache", "clear", env=env)
    assert r.returncode == 0 and "removed: 2" in r.stdout, r.stdout
    assert "entries: 0" in run_cli("cache", "stats", env=env).stdout
    _run(cache, scans, good, bad)
    assert len(_scans(scans)) == 4                           # judged again after clear
    os.chmod(cache, 0o777)
    r = run_cli("cache", "stats", env=env)
    assert r.returncode == 2 and "writable by group or others" in r.stdout


def test_cache_off(files):
    good, bad, cache, scans = files
    for _ in range(2):
        _run(cache, scans, good, extra={"SAFEPICKLE_CACHE": "off"})
    assert len(_scans(scans)) == 2 and not cache.exists()
