"""test_race.py - the bytes the loader reads are the bytes that were judged.

Short, fixed-count versions of the races in race.py (`make race` runs the long
ones): writers flip a file between a benign and a malicious version while a
loader under the preload loads it, for pickle.load, torch.load, joblib.load and
pd.read_pickle, five ways of writing, with both layers and with layer 1 alone.
Outcomes are marker files written by the payloads, never messages."""
import os
import subprocess

import pytest

from conftest import LIB, PYTHON, clean_env, run_py
import race

SHORT_LOADS = int(os.environ.get("SAFEPICKLE_RACE_SHORT", "20"))


@pytest.fixture(scope="module")
def race_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("race"))


@pytest.mark.parametrize("loader", race.LOADERS)
def test_race_short(race_dir, loader):
    """No payload runs, whatever the writer does: every writer with layer 1
    alone (verification has to hold without layer 2's help), and with both
    layers for pickle.load (`make race` runs every configuration)."""
    bad = []
    for mode in race.MODES:
        for layers in (race.LAYERS if loader == "pickle" else ("file",)):
            r = race.run(loader, mode, layers, SHORT_LOADS, d=race_dir)
            assert r["loads"] == SHORT_LOADS
            if r["payloads"]:
                bad.append(r)
    assert not bad, bad


def test_race_control_without_preload(tmp_path):
    """The harness sees a payload when nothing guards the load: the same race
    without the preload runs payloads (so the zeros above mean something)."""
    r = race.run("pickle", "inplace", "file", 1000, preload=False, d=str(tmp_path))
    assert r["payloads"] > 0, r


SAME_SIZE = r"""
import os, pickle, sys
d = sys.argv[1]
p = os.path.join(d, "f.pkl")
marker = os.path.join(d, "ran")
def blob(tag):
    return pickle.dumps(("v", tag * 5000), protocol=2)
core = b"cposix\nsystem\n(S'touch " + marker.encode() + b"'\ntR."
bad = b"S'" + b"z" * (len(blob("a")) - len(core) - 5) + b"'\n0" + core   # a string, POP, the call
assert len(bad) == len(blob("a")), (len(bad), len(blob("a")))
out = {"new": 0, "old": 0, "eio": 0, "refused": 0}
for i in range(int(sys.argv[2])):
    mode = sys.argv[3]
    first, second = blob("a" if i % 2 else "b"), (blob("b" if i % 2 else "a") if mode == "benign" else bad)
    with open(p, "wb") as f: f.write(first)
    with open(p, "rb") as f: assert pickle.dumps(pickle.load(f), protocol=2) == first
    fd = os.open(p, os.O_WRONLY); os.pwrite(fd, second, 0); os.close(fd)   # same inode, same size
    try:
        with open(p, "rb") as f: v = pickle.load(f)
        if mode == "benign":
            out["new" if pickle.dumps(v, protocol=2) == second else "old"] += 1
    except PermissionError: out["refused"] += 1
    except OSError: out["eio"] += 1
print(out)
"""


def test_replaced_between_opens_loads_new_version(tmp_path):
    """The normal "model was updated" case: a file rewritten (same inode, same
    size, often within the same timestamp tick, so the same stat identity)
    between two separate opens loads the new version, judged again - never a
    false alarm, never the old verdict's bytes."""
    scans = tmp_path / "scans"
    r = run_py(SAME_SIZE, env={"SAFEPICKLE_DEBUG_SCANS": str(scans), "SAFEPICKLE_LOG": "none"},
               args=(str(tmp_path), "200", "benign"))
    assert r.returncode == 0, r.stderr[-2000:]
    out = eval(r.stdout.strip().splitlines()[-1])
    assert out == {"new": 200, "old": 0, "eio": 0, "refused": 0}, (out, r.stderr[-2000:])
    # every version was judged: at least one scan per load (two opens per round)
    assert len(scans.read_text().splitlines()) >= 200


def test_rewrite_to_malicious_between_opens_is_refused(tmp_path):
    """The same, with the second version malicious: each load is refused, and
    no payload runs even when the stat identity did not change."""
    r = run_py(SAME_SIZE, env={"SAFEPICKLE_LOG": "none"}, args=(str(tmp_path), "200", "malicious"))
    assert r.returncode == 0, r.stderr[-2000:]
    out = eval(r.stdout.strip().splitlines()[-1])
    assert not (tmp_path / "ran").exists(), out
    assert out["refused"] == 200, out


MIDSTREAM = r"""
import os, pickle, sys
p, marker = sys.argv[1], sys.argv[2]
big = b"a" * (1 << 20)
good = b"\x80\x02(X" + len(big).to_bytes(4, "little") + big
bad_tail = b"cposix\nsystem\n(S'touch " + marker.encode() + b"'\ntRt."
good_tail = b"S'" + b"z" * (len(bad_tail) - 6) + b"'\nt."
assert len(good_tail) == len(bad_tail)
with open(p, "wb") as f: f.write(good + good_tail)
res = []
for how in ("read", "readinto", "mmap_write", "head_gone"):
    f = open(p, "rb", buffering=0)
    head = f.read(4096)                        # the loader has started: judged bytes delivered
    if how == "mmap_write":
        import mmap
        fd = os.open(p, os.O_RDWR)
        m = mmap.mmap(fd, 0, mmap.MAP_SHARED)
        m[len(good):] = bad_tail; m.flush(); m.close(); os.close(fd)
    else:
        fd = os.open(p, os.O_WRONLY); os.pwrite(fd, bad_tail, len(good))
        if how == "head_gone": os.pwrite(fd, b"NOT A PICKLE ANY MORE", 0)   # judged again: no pickle
        os.close(fd)
    try:
        rest = f.read() if how != "readinto" else (lambda b: bytes(b[:f.readinto(b)]))(bytearray(2 << 20))
        pickle.loads(head + rest)
        res.append("loaded")
    except OSError as e:
        res.append("errno%d" % e.errno)
    f.close()
    with open(p, "wb") as f: f.write(good + good_tail)
print(res)
"""


def test_rewrite_mid_stream_fails_the_read(tmp_path):
    """A file rewritten in place after the loader has read part of it: the next
    read fails with EIO (with a safepickle: line and an audit record), never
    judged again from offset 0 and allowed - also when the bytes change
    through a shared mapping, which leaves size and times alone."""
    log = tmp_path / "audit.log"
    marker = tmp_path / "ran"
    r = run_py(MIDSTREAM, env={"SAFEPICKLE_LOG": str(log)}, args=(str(tmp_path / "f.pkl"), str(marker)))
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "['errno5', 'errno5', 'errno5', 'errno5']", r.stdout + r.stderr[-2000:]
    assert not marker.exists()
    assert r.stderr.count("changed after it was judged") == 4, r.stderr[-2000:]
    recs = [line for line in log.read_text().splitlines() if "changed after it was judged" in line]
    assert len(recs) == 4


STDIO = r"""
import ctypes, os, sys
p = sys.argv[1]
libc = ctypes.CDLL(None, use_errno=True)
libc.fopen.restype = ctypes.c_void_p
libc.fread.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
libc.setvbuf.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_size_t]
fp = libc.fopen(p.encode(), b"rb")
assert fp
libc.setvbuf(fp, None, 0, 4096)              # a small FILE buffer: later freads refill it
buf = ctypes.create_string_buffer(1 << 21)
n1 = libc.fread(buf, 1, 4096, fp)
size = os.path.getsize(p)
fd = os.open(p, os.O_WRONLY); os.pwrite(fd, b"X" * 64, size - 200); os.close(fd)
n2 = libc.fread(buf, 1, 1 << 21, fp)
print(n1, n2, ctypes.get_errno())
libc.fclose(fp)
"""


def test_fread_of_changed_bytes_fails(tmp_path):
    """stdio: bytes fread returns from a judged file that changed underneath are
    refused (0 items, errno EIO)."""
    p = tmp_path / "f.pkl"
    import pickle
    p.write_bytes(pickle.dumps(["x" * 100] * 5000, protocol=2))
    r = run_py(STDIO, args=(str(p),))
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["4096", "0", "5"], r.stdout + r.stderr[-1500:]
    assert "changed after it was judged" in r.stderr


def test_tensor_reads_outside_judged_ranges_pass(tmp_path):
    """Reads of a torch checkpoint's tensor storages are outside the judged
    ranges: rewriting the storage bytes does not fail the load."""
    p = tmp_path / "m.pt"
    code = r"""
import os, sys, torch
p = sys.argv[1]
torch.save({"w": torch.arange(1 << 20, dtype=torch.float32)}, p)
data = open(p, "rb").read()
j = data.index(b"\x00\x00\x80?\x00\x00\x00@")  # the storage: 1.0, 2.0, ...
f = open(p, "rb")
fd = os.open(p, os.O_WRONLY); os.pwrite(fd, b"\x00" * 64, j + (1 << 21)); os.close(fd)  # tensor bytes only
m = torch.load(f)
print(float(m["w"][1]), float(m["w"][(1 << 19) + 8]))
"""
    r = run_py(code, args=(str(p),))
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["1.0", "0.0"], r.stdout   # loaded, with the new storage bytes
