"""test_scan_walk.py - `safepickle scan DIR` sees what loaders see: symlinks are followed
(a Hugging Face cache snapshot is a folder of links into blobs/, and a symlinked directory
argument), loops end and each file is scanned once; FIFOs, sockets and devices are skipped
with a note and never opened (a FIFO in the tree must not hang the scan); an unreadable
subdirectory or file is an error (exit 2), checked as an unprivileged user since root
reads everything."""
import json
import os
import pathlib
import shutil
import socket
import stat
import subprocess
import tempfile

import pytest

from conftest import CLI, clean_env, run_py

HERE = os.path.dirname(os.path.abspath(__file__))
TIMEOUT = 60  # a scan that blocks on a FIFO fails here instead of hanging the suite


def build(code, **kw):
    r = run_py("import os, sys\nsys.path.insert(0, %r)\nfrom spgen import Reduce, touch_cmd\n" % HERE
               + code % kw, preload=False)
    assert r.returncode == 0, r.stderr


def scan(*args, cli=CLI, pre=()):
    return subprocess.run([*pre, cli, "scan", *map(str, args)], capture_output=True, text=True,
                          env=clean_env(), timeout=TIMEOUT)


def scan_json(*args):
    r = scan("--format", "json", *args)
    return r.returncode, json.loads(r.stdout)["files"], r


def verdicts(files):
    """{path: verdict} of the scanned entries of a JSON report."""
    return {f["path"]: f.get("verdict") for f in files if "skipped" not in f and "same_as" not in f}


@pytest.fixture
def hf_cache(tmp_path):
    """~/.cache/huggingface/hub/models--org--tiny as huggingface_hub leaves it: content in
    blobs/<sha256>, refs/main, and snapshots/<rev>/ whose files are relative symlinks."""
    repo = tmp_path / "hub" / "models--org--tiny"
    rev = "0123456789abcdef0123456789abcdef01234567"
    marker = tmp_path / "PAYLOAD_RAN"
    build(r"""
import hashlib, json, torch
repo, rev = %(repo)r, %(rev)r
os.makedirs(repo + "/blobs"); os.makedirs(repo + "/refs"); os.makedirs(repo + "/snapshots/" + rev)
open(repo + "/refs/main", "w").write(rev)
def put(name, data):
    h = hashlib.sha256(data).hexdigest()
    open(repo + "/blobs/" + h, "wb").write(data)
    os.symlink("../../blobs/" + h, repo + "/snapshots/" + rev + "/" + name)
import io
b = io.BytesIO(); torch.save({"w": torch.ones(3)}, b); put("pytorch_model.bin", b.getvalue())
b = io.BytesIO(); torch.save({"step": 1, "hook": Reduce(os.system, (touch_cmd(%(m)r),))}, b)
put("optimizer.pt", b.getvalue())
put("config.json", json.dumps({"hidden_size": 8}).encode())
""", repo=str(repo), rev=rev, m=str(marker))
    return repo, repo / "snapshots" / rev, marker


def test_hf_cache_snapshot_is_scanned_through_its_links(hf_cache, tmp_path):
    repo, snap, marker = hf_cache
    rc, files, r = scan_json(snap)
    assert rc == 1, r.stdout + r.stderr  # the malicious optimizer.pt would be blocked
    v = verdicts(files)
    assert v == {str(snap / "pytorch_model.bin"): "safe", str(snap / "optimizer.pt"): "malicious",
                 str(snap / "config.json"): "safe"}, v
    # each reported under the path given and its target in blobs/
    for f in files:
        assert f["target"] == os.path.realpath(f["path"]) and "/blobs/" in f["target"], f
    # text: the path given, its target, the verdict; and the summary counts the three files
    r = scan("-v", snap)
    assert r.returncode == 1
    assert "%s: symlink to %s" % (snap / "optimizer.pt", os.path.realpath(snap / "optimizer.pt")) in r.stdout
    assert r.stdout.splitlines()[-1].startswith("summary: 3 files, 2 pickle-bearing (1 safe, 0 suspicious, "
                                                "1 malicious"), r.stdout
    # a symlinked directory argument (a "latest" link to the snapshot) is followed too
    latest = tmp_path / "latest"
    os.symlink(snap, latest)
    rc, files, r = scan_json(latest)
    assert rc == 1 and sorted(verdicts(files).values()) == ["malicious", "safe", "safe"], r.stdout
    assert not marker.exists()


def test_whole_cache_each_file_scanned_once(hf_cache):
    repo, snap, _ = hf_cache
    rc, files, r = scan_json(repo)
    assert rc == 1, r.stdout + r.stderr
    scanned = [f for f in files if "verdict" in f and "same_as" not in f]
    again = [f for f in files if "same_as" in f]
    # blobs/ comes first: 3 blobs + refs/main scanned, the 3 snapshot links point at them
    assert len(scanned) == 4 and len(again) == 3, files
    assert sorted(f["path"] for f in again) == sorted(str(snap / n) for n in
                                                      ("config.json", "optimizer.pt", "pytorch_model.bin"))
    bad = [f for f in again if f["path"].endswith("optimizer.pt")][0]
    # the second path to the malicious blob still says what it is
    assert bad["verdict"] == "malicious" and bad["action"] == "block" and "/blobs/" in bad["same_as"]
    r = scan(repo)  # a second name of a blocked file is a finding even without -v
    assert "the same file as %s, scanned once: verdict malicious, action block" % bad["same_as"] in r.stdout
    assert r.stdout.splitlines()[-1].endswith("; 0 skipped (not regular files), 3 linked again (scanned once)")


def test_symlink_loops_end(tmp_path):
    d = tmp_path / "tree"
    (d / "a" / "b").mkdir(parents=True)
    (d / "a" / "b" / "x.pkl").write_bytes(b"(lp0\nI1\na.")
    os.symlink("../..", d / "a" / "b" / "up")        # back to tree/
    os.symlink(str(d / "a"), d / "a" / "b" / "self")  # back to a/ (absolute)
    os.symlink("loop2", d / "loop1")                  # a link cycle that resolves to nothing
    os.symlink("loop1", d / "loop2")
    os.symlink("missing", d / "dangling")
    rc, files, r = scan_json(d)
    assert rc == 0, r.stdout + r.stderr
    assert verdicts(files) == {str(d / "a" / "b" / "x.pkl"): "safe"}
    skipped = {os.path.basename(f["path"]): f["skipped"] for f in files if "skipped" in f}
    assert skipped == {"up": "a directory already walked", "self": "a directory already walked",
                       "loop1": "a symlink loop", "loop2": "a symlink loop", "dangling": "a dangling symlink"}


def test_fifo_socket_device_are_skipped_never_opened(tmp_path):
    d = tmp_path / "tree"
    d.mkdir()
    (d / "ok.pkl").write_bytes(b"(lp0\nI1\na.")
    os.mkfifo(d / "fifo")                              # opening it for reading would block forever
    os.symlink("fifo", d / "link-to-fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(d / "sock"))
    os.mknod(d / "zero", stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero: endless if read
    try:
        rc, files, r = scan_json(d)
        assert rc == 0, r.stdout + r.stderr
        assert verdicts(files) == {str(d / "ok.pkl"): "safe"}
        skipped = {os.path.basename(f["path"]): f["skipped"] for f in files if "skipped" in f}
        assert skipped == {"fifo": "a FIFO", "link-to-fifo": "a FIFO", "sock": "a socket",
                           "zero": "a character device"}, skipped
        r = scan("-v", d)
        assert "%s: skipped: a FIFO (not opened; only regular files are scanned)" % (d / "fifo") in r.stdout
        assert r.stdout.splitlines()[-1].endswith("4 skipped (not regular files), 0 linked again (scanned once)")
        # a FIFO named as an argument is not opened either
        r = scan("-v", d / "fifo")
        assert r.returncode == 0 and "skipped: a FIFO" in r.stdout, r.stdout + r.stderr
    finally:
        sock.close()


def test_spa_scan_path_never_blocks_on_a_fifo(tmp_path):
    """The analyzer's own open (the path a race between the walk's stat and the scan's open
    would take): `explain` opens the FIFO it is given and must fail, not block."""
    os.mkfifo(tmp_path / "fifo")
    r = subprocess.run([CLI, "explain", str(tmp_path / "fifo")], capture_output=True, text=True,
                       env=clean_env(), timeout=TIMEOUT)
    assert r.returncode == 2 and "not a regular file" in r.stdout + r.stderr, r.stdout + r.stderr


@pytest.fixture
def as_nobody():
    """(prefix argv, scratch dir) to run the CLI as uid/gid 65534: root bypasses file
    permissions, so an unreadable directory is only unreadable to someone else."""
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) not installed")
    d = tempfile.mkdtemp(prefix="sp-walk-")
    os.chmod(d, 0o755)
    cli = os.path.join(d, "safepickle")
    shutil.copy(CLI, cli)
    os.chmod(cli, 0o755)
    yield ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"], d, cli
    for root, dirs, _ in os.walk(d):
        for x in dirs:
            os.chmod(os.path.join(root, x), 0o755)
    shutil.rmtree(d)


def test_unreadable_entries_are_errors(as_nobody):
    pre, base, cli = as_nobody
    d = os.path.join(base, "tree")
    os.makedirs(os.path.join(d, "locked"))
    os.makedirs(os.path.join(d, "open"))
    for p in ("locked/hidden.pkl", "open/ok.pkl", "secret.pkl"):
        with open(os.path.join(d, p), "wb") as f:
            f.write(b"(lp0\nI1\na.")
        os.chmod(os.path.join(d, p), 0o644)
    os.chmod(os.path.join(d, "secret.pkl"), 0o600)
    os.chmod(os.path.join(d, "locked"), 0o700)  # root's: nobody cannot list it
    # control: root reads everything and the scan is clean
    r = scan(d)
    assert r.returncode == 0 and "summary: 3 files" in r.stdout, r.stdout + r.stderr
    r = scan(d, cli=cli, pre=pre)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "%s/locked: error: cannot open directory: Permission denied" % d in r.stdout, r.stdout
    assert "%s/secret.pkl: error: cannot open file: Permission denied" % d in r.stdout, r.stdout
    assert r.stdout.splitlines()[-1].startswith("summary: 3 files, 1 pickle-bearing (1 safe") and \
        "2 errors" in r.stdout.splitlines()[-1], r.stdout
    assert "safepickle scan: %s/locked: cannot open directory: Permission denied" % d in r.stderr


def test_session_audit_check_ends_on_symlink_loops():
    """The session-end audit-record check walks the temp tree this module fills with
    branching symlink loops: it must not follow them (glob's "**" did: 2^40 paths, CI OOM).
    Built outside pytest's temp tree, which that check walks: the record is a stand-in."""
    import threading
    from conftest import _audit_logs
    root = pathlib.Path(tempfile.mkdtemp(prefix="safepickle-walk-"))
    try:
        d = root / "tree"
        (d / "a" / "b").mkdir(parents=True)
        os.symlink("../..", d / "a" / "b" / "up")
        os.symlink(str(d / "a"), d / "a" / "b" / "self")
        (d / "a" / "log.jsonl").write_text('{"layer": 1, "verdict": "safe", "pid": 1, "policy": "p"}\n')
        found = []
        t = threading.Thread(target=lambda: found.extend(_audit_logs(str(root))), daemon=True)
        t.start()
        t.join(20)
        assert not t.is_alive(), "the audit-log walk follows symlink loops"
        assert found == [str(d / "a" / "log.jsonl")]
    finally:
        shutil.rmtree(root)
