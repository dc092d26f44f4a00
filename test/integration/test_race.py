"""test_race.py - the bytes the loader reads are the bytes that were judged.

Short, fixed-count versions of the races in race.py (`make race` runs the long
ones): writers flip a file between a benign and a malicious version while a
loader under the preload loads it, for pickle.load, torch.load, joblib.load and
pd.read_pickle, five ways of writing, with both layers and with layer 1 alone.
Outcomes are marker files written by the payloads, never messages."""
import json
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
    assert r.stdout.strip().splitlines()[-1] == str(["errno5"] * 4), r.stdout + r.stderr[-2000:]
    assert not marker.exists()
    assert r.stderr.count("changed after it was judged") == 4, r.stderr[-2000:]
    recs = [line for line in log.read_text().splitlines() if "changed after it was judged" in line]
    assert len(recs) == 4


# Everything a program does to an fd, or around it, that leaves it open: between two reads
# of a load the file is rewritten in place with a head that is no longer a pickle. The fd's
# fingerprint must survive each, or the next read is judged again from offset 0, finds no
# pickle and is allowed (layer 1 alone here: the payload runs if it is). The fd table and
# its fingerprints are process memory that hooks change: closes, dups, and what runs in a
# vfork child before its exec.
KEPT_OPEN = r"""
import ctypes, os, pickle, subprocess, sys
p, marker = sys.argv[1], sys.argv[2]
libc = ctypes.CDLL(None, use_errno=True)
CLOSE_RANGE_UNSHARE, CLOSE_RANGE_CLOEXEC = 1 << 1, 1 << 2
big = b"a" * (1 << 20)
good = b"\x80\x02(X" + len(big).to_bytes(4, "little") + big
bad_tail = b"cposix\nsystem\n(S'touch " + marker.encode() + b"'\ntRt."
good_tail = b"S'" + b"z" * (len(bad_tail) - 6) + b"'\nt."
def fork_child_closes_all(fd):
    pid = os.fork()
    if pid == 0:
        os.closerange(3, 65536); os._exit(0)
    os.waitpid(pid, 0)
OPS = {
    "nothing": lambda fd: None,
    "subprocess.run": lambda fd: subprocess.run(["true"], check=True),          # vfork + exec
    "subprocess.run(close_fds=False)": lambda fd: subprocess.run(["true"], check=True, close_fds=False),
    "subprocess.run(pass_fds)": lambda fd: subprocess.run(["true"], check=True, pass_fds=(fd,)),
    "os.posix_spawn": lambda fd: os.waitpid(os.posix_spawn("/bin/true", ["true"], os.environ), 0),
    "fork, child closes all": fork_child_closes_all,
    "close_range(CLOEXEC)": lambda fd: libc.close_range(fd, fd, CLOSE_RANGE_CLOEXEC),
    "close_range(UNSHARE) of others": lambda fd: libc.close_range(fd + 1, fd + 64, CLOSE_RANGE_UNSHARE),
    "closerange of others": lambda fd: os.closerange(fd + 1, fd + 64),
    "close(dup)": lambda fd: os.close(os.dup(fd)),
    "dup2 onto itself": lambda fd: os.dup2(fd, fd),
    "set_inheritable": lambda fd: os.set_inheritable(fd, True),
    "fdopen of a dup, fclose": lambda fd: libc.fclose(ctypes.c_void_p(libc.fdopen(os.dup(fd), b"rb"))),
}
libc.fdopen.restype = ctypes.c_void_p
res = {}
for name, op in OPS.items():
    with open(p, "wb") as w: w.write(good + good_tail)
    f = open(p, "rb", buffering=0)
    head = f.read(4096)                        # the loader has started: judged bytes delivered
    op(f.fileno())
    fd = os.open(p, os.O_WRONLY)
    os.pwrite(fd, bad_tail, len(good)); os.pwrite(fd, b"NOT A PICKLE ANY MORE", 0)
    os.close(fd)
    try:
        pickle.loads(head + f.read())
        res[name] = "loaded"
    except OSError as e:
        res[name] = "errno%d" % e.errno
    f.close()
print(res)
"""


def test_fd_kept_open_keeps_its_fingerprint(tmp_path):
    marker = tmp_path / "ran"
    e = clean_env(SAFEPICKLE_POLICY=race.policy_file(str(tmp_path), "file"))
    e["LD_PRELOAD"] = LIB
    r = subprocess.run([PYTHON, "-c", KEPT_OPEN, str(tmp_path / "f.pkl"), str(marker)], env=e,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    res = eval(r.stdout.strip().splitlines()[-1])
    assert len(res) == 13 and set(res.values()) == {"errno5"}, (res, r.stderr[-2000:])
    assert not marker.exists()


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


def test_make_race_resumes_and_shards(tmp_path, monkeypatch, capsys):
    """`make race`'s bookkeeping (the races themselves are test_race_short's):
    counts are kept per chunk in a state file, so a run killed part-way
    resumes without running a finished chunk again; shards split the
    configurations between them, each exactly once; a line cut by a kill and
    counts of another build are not counted; every configuration's counts are
    printed; a payload anywhere makes the exit status 1, a configuration short
    of its loads 2."""
    calls = []

    def fake_run(loader, mode, layers, loads, preload=True, d=None):
        calls.append((loader, mode, layers, loads))
        if len(calls) == crash_at[0]:
            raise KeyboardInterrupt   # the run is stopped here
        pay = 1 if (loader, mode, layers) == payload_cfg[0] else 0
        return {"loader": loader, "mode": mode, "layers": layers, "loads": loads, "ok": loads - pay,
                "refused": 0, "other_errors": 0, "payloads": pay}

    monkeypatch.setattr(race, "run", fake_run)
    state = str(tmp_path / "state.jsonl")
    crash_at, payload_cfg = [0], [None]
    n_cfg = len(race.CONFIGS)
    assert n_cfg == len(race.LOADERS) * len(race.MODES) * len(race.LAYERS)
    # shards: every configuration in exactly one of 3
    parts = [race.shard_of("%d/3" % i) for i in (1, 2, 3)]
    assert sorted(sum(parts, [])) == sorted(race.CONFIGS)
    # shard 1 of 3, 5 loads per configuration in chunks of 2, stopped at the 8th chunk
    crash_at[0] = 8
    with pytest.raises(KeyboardInterrupt):
        race.run_all(5, state, "1/3", chunk=2)
    assert calls[:3] == [parts[0][0] + (2,), parts[0][0] + (2,), parts[0][0] + (1,)]
    with open(state, "a") as f:
        f.write('{"loader": "pickle", "mo')                       # a line cut by the kill
    with open(state, "a") as f:                                    # another build's counts
        f.write('{"lib": "0000", "loader": "%s", "mode": "%s", "layers": "%s", "loads": 99, "ok": 99, '
                '"refused": 0, "other_errors": 0, "payloads": 0}\n' % parts[0][3])
    # resumed: only what is missing runs (7 chunks were recorded: 2 configurations and 2 of 5 loads)
    calls.clear()
    crash_at[0] = 0
    assert race.run_all(5, state, "1/3", chunk=2) == 2         # shards 2 and 3 have not run
    assert calls[0] == parts[0][2] + (2,) and calls[1] == parts[0][2] + (1,)
    assert sum(c[3] for c in calls) == 5 * len(parts[0]) - 12
    out = capsys.readouterr().out
    assert "(short of 5)" in out and out.count("\n") > n_cfg
    # the other shards, one with a payload
    payload_cfg[0] = parts[2][1]
    assert race.run_all(5, state, "2/3", chunk=2) == 2
    assert race.run_all(5, state, "3/3", chunk=5) == 1
    tot = race.read_state(state, race.lib_id())
    assert set(tot) == set(race.CONFIGS) and all(t["loads"] == 5 for t in tot.values())
    assert sum(t["payloads"] for t in tot.values()) == 1
    capsys.readouterr()
    assert race.report(state, 5, race.lib_id()) == 1
    lines = capsys.readouterr().out.splitlines()
    row = [line for line in lines if line.split()[:3] == list(payload_cfg[0])]
    assert len(row) == 1 and row[0].split()[3:] == ["5", "4", "0", "0", "1"], row
    assert "%d racing loads, 1 payloads" % (5 * n_cfg) in lines[-1]


UPDATED = r"""
import io, json, os, pickle, sys
import numpy as np, pandas as pd, joblib, torch
d = sys.argv[1]
def obj(kind, tag):
    s = tag * 3000
    if kind == "torch": return {"s": s, "w": torch.zeros(4)}
    if kind == "joblib": return {"s": s, "a": np.zeros(4)}
    if kind == "pandas": return pd.DataFrame({"s": [s]})
    return {"s": s}
def save(kind, o, p):
    if kind == "torch": torch.save(o, p)
    elif kind == "joblib": joblib.dump(o, p)
    elif kind == "pandas": o.to_pickle(p)
    else:
        with open(p, "wb") as f: pickle.dump(o, f, protocol=4)
def load(kind, p):
    if kind == "torch": return torch.load(p)["s"]
    if kind == "joblib": return joblib.load(p)["s"]
    if kind == "pandas": return pd.read_pickle(p)["s"][0]
    with open(p, "rb") as f: return pickle.load(f)["s"]
import mmap
def ident(p):
    s = os.stat(p)
    return (s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns)
out, same_ident = {}, 0
for kind in ("pickle", "torch", "joblib", "pandas"):
    for way in ("save", "rename", "inplace", "mapped"):
        p = os.path.join(d, "%s-%s.bin" % (kind, way))
        res = out.setdefault(kind + "/" + way, {"new": 0, "old": 0, "error": []})
        for r in range(3):
            tag = "%02d" % r
            if r == 0 or way == "save":
                save(kind, obj(kind, tag), p)            # the library writes over the path (truncates)
            elif way == "rename":
                save(kind, obj(kind, tag), p + ".tmp"); os.replace(p + ".tmp", p)
            else:                                         # same inode, same size, no truncation
                side = os.path.join(d, "side"); os.makedirs(side, exist_ok=True)
                q = os.path.join(side, os.path.basename(p))   # the same name: torch names the archive after it
                save(kind, obj(kind, tag), q)
                data = open(q, "rb").read(); os.unlink(q)
                assert len(data) == os.path.getsize(p), (kind, len(data), os.path.getsize(p))
                before = ident(p)
                if way == "inplace":
                    fd = os.open(p, os.O_WRONLY); os.pwrite(fd, data, 0); os.close(fd)
                else:   # through a shared mapping whose pages are dirty: no time changes, same identity
                    m[:] = data
                same_ident += ident(p) == before
            if way == "mapped" and r == 0:
                mfd = os.open(p, os.O_RDWR)
                m = mmap.mmap(mfd, 0, mmap.MAP_SHARED)
                m[:] = open(p, "rb").read()               # dirty the pages once
            try:
                v = load(kind, p)
                res["new" if v == tag * 3000 else "old"] += 1
            except Exception as e:
                res["error"].append(repr(e)[:200])
        if way == "mapped":
            m.close(); os.close(mfd)
print(json.dumps(out))
print(same_ident)
"""


def test_model_updated_between_opens_real_loaders(tmp_path):
    """The normal "model was updated" case with the real loaders (torch.load,
    joblib.load, pd.read_pickle, pickle.load): the file is replaced between
    two loads by the library saving over the path (truncate and rewrite, same
    inode), by a rename-swap, or rewritten in place at the same size (same
    inode, often the same stat identity): every load returns the new version,
    judged again, with no false alarm. Written through a shared mapping whose
    pages are dirty, the rewrite keeps the stat identity (no time changes), so
    the verdict cache holds the old version's judgement: the first read, which
    no judged byte preceded, finds the change and the file is judged afresh
    (preload/README.md, Verification)."""
    scans = tmp_path / "scans"
    d = tmp_path / "m"
    d.mkdir()
    r = run_py(UPDATED, env={"SAFEPICKLE_DEBUG_SCANS": str(scans)}, args=(str(d),))
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-2])
    assert out == {k: {"new": 3, "old": 0, "error": []} for k in out} and len(out) == 16, out
    assert int(r.stdout.strip().splitlines()[-1]) >= 4, r.stdout   # the same-identity case did arise
    assert "changed after it was judged" not in r.stderr, r.stderr[-2000:]
    judged = [line for line in scans.read_text().splitlines() if line.endswith(".bin") and "/side/" not in line]
    for k in out:   # each of the 3 versions judged
        assert sum(1 for line in judged if line.endswith("/%s.bin" % k.replace("/", "-"))) >= 3, (k, judged)


SWAP_LIB = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
/* Preloaded after libsafepickle.so: its read() is the "real" read the
 * safepickle hook calls, so it runs between the hook's judgement and the read.
 * Once, for the fd that names $SWAP_TARGET: write $SWAP_SRC over the target,
 * do the read, then (if set) write $SWAP_BACK over it. Raw syscalls only. */
static void put(const char *from, const char *to) {
    char b[65536];
    int i = (int)syscall(SYS_openat, AT_FDCWD, from, O_RDONLY), o = (int)syscall(SYS_openat, AT_FDCWD, to, O_WRONLY | (getenv("SWAP_INPLACE") ? 0 : O_TRUNC));
    long n;
    while ((n = syscall(SYS_read, i, b, sizeof b)) > 0) syscall(SYS_write, o, b, n);
    syscall(SYS_close, i);
    syscall(SYS_close, o);
}
/* Does fd name $SWAP_TARGET? */
static int is_target(int fd) {
    const char *t = getenv("SWAP_TARGET");
    char l[64], p[4096];
    snprintf(l, sizeof l, "/proc/self/fd/%d", fd);
    ssize_t k = t ? readlink(l, p, sizeof p - 1) : -1;
    if (k <= 0) return 0;
    p[k] = 0;
    return strcmp(p, t) == 0;
}
static int done;
/* the first call on the target's fd: swap now (1), else 0 */
static int swap_now(int fd) {
    const char *t = getenv("SWAP_TARGET");
    if (getenv("SWAP_FLIP") || getenv("SWAP_CUT")) return 0;   /* pread64 below does the swapping */
    if (done || fd < 0 || !is_target(fd)) return 0;
    done = 1;
    put(getenv("SWAP_SRC"), t);
    return 1;
}
static void swap_back(void) {
    if (getenv("SWAP_BACK")) put(getenv("SWAP_BACK"), getenv("SWAP_TARGET"));
}
/* $SWAP_COARSE: fstat reports whole seconds (a file system with 1 s
 * timestamps, or coarse ones): safepickle's own fstat calls resolve here. */
static void coarse(struct stat *st) {
    if (!getenv("SWAP_COARSE")) return;
    st->st_mtim.tv_nsec = 0;
    st->st_ctim.tv_nsec = 0;
}
int fstat(int fd, struct stat *st) {
    static int (*real)(int, struct stat *);
    if (!real) real = (int (*)(int, struct stat *))dlsym(RTLD_NEXT, "fstat");
    int r = real(fd, st);
    if (r == 0) coarse(st);
    return r;
}
int fstat64(int fd, struct stat64 *st) {
    static int (*real)(int, struct stat64 *);
    if (!real) real = (int (*)(int, struct stat64 *))dlsym(RTLD_NEXT, "fstat64");
    int r = real(fd, st);
    if (r == 0) coarse((struct stat *)st);
    return r;
}
/* $SWAP_FLIP: after every pread64 of the target (safepickle's recogniser
 * reads with the real pread64, which resolves here), write the other of
 * $SWAP_SRC / $SWAP_BACK over it: each of its reads sees another version. */
/* $SWAP_CUT=LEN:K: the K-th (from 0) pread64 of the target whose range
 * reaches past LEN runs with the target cut to LEN bytes (ftruncate), and
 * $SWAP_SRC is written back over it right after (an appending writer's
 * ftruncate and append, both inside one of safepickle's reads); then the
 * file $SWAP_CUT_DONE is created. */
ssize_t pread64(int fd, void *buf, size_t n, off_t off) {
    static ssize_t (*real)(int, void *, size_t, off_t);
    static int flip, cuts;
    if (!real) real = (ssize_t (*)(int, void *, size_t, off_t))dlsym(RTLD_NEXT, "pread64");
    const char *cut = getenv("SWAP_CUT");
    long long len = cut ? atoll(cut) : 0;
    int nth = cut && strchr(cut, ':') ? atoi(strchr(cut, ':') + 1) : 0;
    if (cut && off + (long long)n > len && is_target(fd) && cuts++ == nth) {
        int o = (int)syscall(SYS_openat, AT_FDCWD, getenv("SWAP_TARGET"), O_WRONLY);
        syscall(SYS_ftruncate, o, len);
        syscall(SYS_close, o);
        ssize_t r = real(fd, buf, n, off);
        put(getenv("SWAP_SRC"), getenv("SWAP_TARGET"));
        if (getenv("SWAP_CUT_DONE")) syscall(SYS_close, (int)syscall(SYS_openat, AT_FDCWD, getenv("SWAP_CUT_DONE"), O_WRONLY | O_CREAT, 0600));
        return r;
    }
    ssize_t r = real(fd, buf, n, off);
    if (getenv("SWAP_FLIP") && is_target(fd)) put((flip ^= 1) ? getenv("SWAP_SRC") : getenv("SWAP_BACK"), getenv("SWAP_TARGET"));
    return r;
}
ssize_t read(int fd, void *buf, size_t n) {
    static ssize_t (*real)(int, void *, size_t);
    if (!real) real = (ssize_t (*)(int, void *, size_t))dlsym(RTLD_NEXT, "read");
    if (!swap_now(fd)) return real(fd, buf, n);
    ssize_t r = real(fd, buf, n);
    swap_back();
    return r;
}
size_t fread(void *ptr, size_t size, size_t n, FILE *fp) {
    static size_t (*real)(void *, size_t, size_t, FILE *);
    if (!real) real = (size_t (*)(void *, size_t, size_t, FILE *))dlsym(RTLD_NEXT, "fread");
    if (!swap_now(fileno(fp))) return real(ptr, size, n, fp);
    size_t r = real(ptr, size, n, fp);
    swap_back();
    return r;
}
void *mmap(void *a, size_t len, int prot, int fl, int fd, off_t off) {
    static void *(*real)(void *, size_t, int, int, int, off_t);
    if (!real) real = (void *(*)(void *, size_t, int, int, int, off_t))dlsym(RTLD_NEXT, "mmap");
    if (!swap_now(fd)) return real(a, len, prot, fl, fd, off);
    void *r = real(a, len, prot, fl, fd, off);
    swap_back();
    return r;
}
void *mmap64(void *a, size_t len, int prot, int fl, int fd, off_t off) {
    static void *(*real)(void *, size_t, int, int, int, off_t);
    if (!real) real = (void *(*)(void *, size_t, int, int, int, off_t))dlsym(RTLD_NEXT, "mmap64");
    if (!swap_now(fd)) return real(a, len, prot, fl, fd, off);
    void *r = real(a, len, prot, fl, fd, off);
    swap_back();
    return r;
}
"""

SWAP_LOAD = r"""
import ctypes, mmap, os, pickle, sys
if os.environ.get("SWAP_FRESH"):       # written just before it is opened (same timestamp tick)
    with open(sys.argv[1], "wb") as f: f.write(bytes.fromhex(os.environ["SWAP_FRESH"]))
try:
    if sys.argv[2] == "fread":          # stdio: the swap happens inside fread
        libc = ctypes.CDLL(None, use_errno=True)
        libc.fopen.restype = ctypes.c_void_p
        libc.fread.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p]
        fp = libc.fopen(sys.argv[1].encode(), b"rb")
        buf = ctypes.create_string_buffer(4096)
        n = libc.fread(buf, 1, 4096, fp)
        if n == 0: raise OSError(ctypes.get_errno(), "fread")
        v = pickle.loads(buf.raw[:n])
    else:
        with open(sys.argv[1], "rb") as f:
            if sys.argv[2] == "mmap":       # inside mmap
                v = pickle.loads(mmap.mmap(f.fileno(), 200, access=mmap.ACCESS_READ))
            else:
                v = pickle.load(f) if sys.argv[2] == "pickle" else f.read()
    print("loaded", repr(v)[:60])
except OSError as e:
    print("errno%d" % e.errno)
"""


@pytest.fixture(scope="module")
def swap_lib(tmp_path_factory):
    d = tmp_path_factory.mktemp("swap")
    (d / "swap.c").write_text(SWAP_LIB)
    subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", str(d / "libswap.so"), str(d / "swap.c"), "-ldl"], check=True)
    return str(d / "libswap.so")


@pytest.mark.parametrize("call,before,back,expect", [
    ("pickle", "empty", None, "errno13"),      # empty when judged, a pickle when read
    ("pickle", "text", None, "errno13"),       # text when judged, a pickle when read
    ("pickle", "text", "text", "errno5"),      # text, a pickle during the read, text again after it
    ("fread", "text", None, "errno13"),        # the same through stdio
    ("fread", "text", "text", "errno5"),
    ("mmap", "text", None, "errno13"),         # text when judged, a pickle when mapped
    ("pickle", "benign", "text", "errno5"),    # a benign pickle when judged, the malicious one during the
                                               # first read, text after it (judged afresh: not pickle-bearing)
])
def test_file_changed_between_judgement_and_read(tmp_path, swap_lib, call, before, back, expect):
    """A file judged not pickle-bearing (empty, or text) just before a read
    becomes a malicious pickle between that judgement and the read itself (a
    preloaded library after ours runs there, deterministically): the read is
    refused (judged again: malicious) or fails with EIO (the bytes belong to no
    version judged), with layer 1 alone, and the payload does not run."""
    marker = tmp_path / "ran"
    target, evil, text = tmp_path / "m.pkl", tmp_path / "evil", tmp_path / "text"
    evil.write_bytes(b"cposix\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    text.write_bytes(b"just some text, no pickle at all\n" * 8)
    benign = b"\x80\x02X" + len(b"b" * 40).to_bytes(4, "little") + b"b" * 40 + b"."
    target.write_bytes(b"" if before == "empty" else benign if before == "benign" else text.read_bytes())
    env = {"SAFEPICKLE_POLICY": race.policy_file(str(tmp_path), "file"), "SWAP_TARGET": str(target),
           "SWAP_SRC": str(evil)}
    if back:
        env["SWAP_BACK"] = str(text)
    e = clean_env(**env)
    e["LD_PRELOAD"] = LIB + " " + swap_lib
    r = subprocess.run([PYTHON, "-c", SWAP_LOAD, str(target), call], env=e, capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == expect, r.stdout + r.stderr[-2000:]
    assert not marker.exists()
    assert "safepickle:" in r.stderr


@pytest.mark.parametrize("coarse", [False, True])
def test_file_rewritten_in_place_same_size_same_tick(tmp_path, swap_lib, coarse):
    """A text file written just before it is opened (judged not pickle-bearing)
    is rewritten in place, same size, into a malicious pickle between the
    judgement and the read, within one timestamp tick: with coarse timestamps
    (simulated: fstat reports whole seconds, as on a file system with 1 s
    timestamps or Linux before 6.13's jiffies) the identity (dev, inode, size,
    mtime, ctime) does not change. The file changed less than 2 s before its
    judgement, so its reads are judged again after the call (SPP_FD_FRESH):
    the read is refused with layer 1 alone and the payload does not run."""
    marker = tmp_path / "ran"
    target, evil = tmp_path / "m.txt", tmp_path / "evil"
    text = b"just some text, no pickle at all\n" * 8
    head, tail = b"cposix\nsystem\n(S'touch " + str(marker).encode() + b" #", b"'\ntR."
    evil.write_bytes(head + b"x" * (len(text) - len(head) - len(tail)) + tail)
    assert evil.stat().st_size == len(text)
    env = dict(SAFEPICKLE_POLICY=race.policy_file(str(tmp_path), "file"), SWAP_TARGET=str(target),
               SWAP_SRC=str(evil), SWAP_INPLACE="1", SWAP_FRESH=text.hex())
    if coarse:
        env["SWAP_COARSE"] = "1"
    e = clean_env(**env)
    e["LD_PRELOAD"] = LIB + " " + swap_lib
    r = subprocess.run([PYTHON, "-c", SWAP_LOAD, str(target), "pickle"], env=e, capture_output=True, text=True,
                       timeout=120)
    assert r.stdout.strip() == "errno13", r.stdout + r.stderr[-2000:]
    assert not marker.exists()


def test_fresh_file_read_in_pieces_no_false_alarm(tmp_path, swap_lib):
    """A text file written just before it is read in small pieces (every read
    judged again after the call, SPP_FD_FRESH), with coarse timestamps: the
    bytes are the file's, no refusal, no safepickle: line."""
    target = tmp_path / "fresh.txt"
    code = ("import sys\ndata = b''.join(b'line %d\\n' % i for i in range(500))\n"
            "open(sys.argv[1], 'wb').write(data)\n"
            "with open(sys.argv[1], 'rb', buffering=0) as f:\n"
            "    got = b''.join(iter(lambda: f.read(37), b''))\n"
            "print('same' if got == data else 'differ')\n")
    e = clean_env(SWAP_COARSE="1")
    e["LD_PRELOAD"] = LIB + " " + swap_lib
    r = subprocess.run([PYTHON, "-c", code, str(target)], env=e, capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "same", r.stdout + r.stderr[-2000:]
    assert "safepickle:" not in r.stderr, r.stderr[-2000:]


def test_file_appended_during_read_no_false_alarm(tmp_path, swap_lib):
    """A text file appended to during a read (a log being written): judged
    again after the read, the bytes read are the file's: the read succeeds."""
    target, longer = tmp_path / "log.txt", tmp_path / "longer"
    target.write_bytes(b"line one\n" * 10)
    longer.write_bytes(b"line one\n" * 10 + b"line two\n" * 10)
    e = clean_env(SWAP_TARGET=str(target), SWAP_SRC=str(longer))
    e["LD_PRELOAD"] = LIB + " " + swap_lib
    r = subprocess.run([PYTHON, "-c", SWAP_LOAD, str(target), "text"], env=e, capture_output=True, text=True, timeout=120)
    assert r.stdout.startswith("loaded b'line one"), r.stdout + r.stderr[-2000:]
    assert "safepickle:" not in r.stderr, r.stderr[-2000:]


BETWEEN_LOAD = r"""
import ctypes, os, pickle, sys
path, evil, call = sys.argv[1], bytes.fromhex(sys.argv[2]), sys.argv[3]
def swap():                 # in place, between two calls, from this process
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC); os.write(fd, evil); os.close(fd)
try:
    if call == "fread":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.fopen.restype = ctypes.c_void_p
        libc.fread.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p]
        libc.fseek.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_int]
        fp = libc.fopen(path.encode(), b"rb")
        buf = ctypes.create_string_buffer(4096)
        libc.fread(buf, 1, 8, fp)          # fills the FILE's buffer with the text
        swap()
        libc.fseek(fp, 0, 0)               # drops the buffer: the next fread reads the file
        n = libc.fread(buf, 1, 4096, fp)
        if n == 0: raise OSError(ctypes.get_errno(), "fread")
        v = pickle.loads(buf.raw[:n])
    elif call == "pread":
        fd = os.open(path, os.O_RDONLY)
        os.pread(fd, 8, 0)
        swap()
        v = pickle.loads(os.pread(fd, 4096, 0))
    else:
        with open(path, "rb", buffering=0) as f:
            f.read(8)
            swap()
            f.seek(0)
            v = pickle.load(f)
    print("loaded", repr(v)[:60])
except OSError as e:
    print("errno%d" % e.errno)
"""


@pytest.mark.parametrize("call", ["read", "pread", "fread"])
def test_file_changed_between_reads(tmp_path, call):
    """A file judged not pickle-bearing, read once, then rewritten into a
    malicious pickle between two reads of the same fd (not during a call):
    the second read is refused with layer 1 alone and the payload does not
    run (reads of such an fd are not judged before the call, only checked
    after it: preload/README.md, "A file that was not pickle-bearing when
    judged"). Without the preload the same script runs the payload."""
    marker = tmp_path / "ran"
    target = tmp_path / "notes.txt"
    evil = b"cposix\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    target.write_bytes(b"just some text, no pickle at all\n" * 8)
    args = [PYTHON, "-c", BETWEEN_LOAD, str(target), evil.hex(), call]
    e = clean_env(SAFEPICKLE_POLICY=race.policy_file(str(tmp_path), "file"))
    e["LD_PRELOAD"] = LIB
    r = subprocess.run(args, env=e, capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "errno13", r.stdout + r.stderr[-2000:]
    assert not marker.exists()
    assert "safepickle: blocked" in r.stderr
    target.write_bytes(b"just some text, no pickle at all\n" * 8)
    r = subprocess.run(args, env=clean_env(), capture_output=True, text=True, timeout=120)
    assert r.stdout.startswith("loaded"), r.stdout + r.stderr[-2000:]
    assert marker.exists()



MAPPED = r"""
import json, mmap, os, pickle, sys, time
import io, torch
d, pause = sys.argv[1], float(sys.argv[2])
CASES = [("torch", "buffered"), ("pickle", "buffered"), ("pickle", "raw"), ("pickle", "mmap")]
def versions(kind, marker):
    # (the version judged at open, the version the loader reads): the same size
    if kind == "torch":
        class Evil:
            def __reduce__(self):
                return (os.system, ("touch '%s'" % marker,))
        b = io.BytesIO()
        torch.save({"w": torch.zeros(4), "s": "a" * 300000, "e": Evil()}, b)
        final = b.getvalue()
        eocd = final.rindex(b"PK\x05\x06")
        # torn, as a writer copying it in leaves it: no end record yet (zipfile finds none)
        return final[:eocd] + b"\0" * 4 + final[eocd + 4:], final
    core = b"cposix\nsystem\n(S'touch " + marker.encode() + b"'\ntR."
    judged = b"just some text, no pickle at all\n" * 64
    final = b"S'" + b"z" * (len(judged) - len(core) - 5) + b"'\n0" + core   # a string, POP, the call
    assert len(final) == len(judged)
    return judged, final
maps = []
for i, (kind, call) in enumerate(CASES):
    p = os.path.join(d, "target%d" % i)
    judged, final = versions(kind, os.path.join(d, "ran%d" % i))
    with open(p, "wb") as f:
        f.write(judged)
    m = mmap.mmap(os.open(p, os.O_RDWR), 0, mmap.MAP_SHARED)
    m[:] = judged          # the writer's pages are dirty now: its next writes change no time
    maps.append((p, m, final))
time.sleep(pause)          # older than the 2 s "changed lately" window (SPP_FD_FRESH)
def ident(p):
    s = os.stat(p)
    return (s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns)
out = []
for i, (kind, call) in enumerate(CASES):
    p, m, final = maps[i]
    before = ident(p)
    f = open(p, "rb", buffering=0 if call == "raw" else -1)   # judged here: not pickle-bearing
    m[:] = final           # completed through the shared mapping
    same = ident(p) == before
    try:
        if kind == "torch":
            v = torch.load(f)
        elif call == "mmap":
            v = pickle.loads(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
        else:
            v = pickle.load(f)
        res = "loaded"
    except OSError as e:
        res = "errno%d" % e.errno
    out.append({"case": kind + "/" + call, "res": res, "same_identity": same,
                "ran": os.path.exists(os.path.join(d, "ran%d" % i))})
print(json.dumps(out))
"""


def test_not_bearing_then_changed_through_shared_mapping(tmp_path):
    """A file judged NOT pickle-bearing at open - a torch zip torn by a writer
    mid-copy (no end record yet), or a text - is completed into a malicious
    torch checkpoint / pickle through a shared mapping whose pages were
    already dirty, after the open and before the loader reads (read through
    a buffered file, a raw one, or a mapping): size, mtime and ctime stay the
    same, so the identity does not change (race.py's `torch mmap file`
    payloads). The bytes that judgement read are fingerprinted
    (SPP_FD_RECOG), so each load fails (refused, or EIO) with layer 1 alone
    and no payload runs; without the preload every payload runs."""
    e = clean_env(SAFEPICKLE_POLICY=race.policy_file(str(tmp_path), "file"))
    e["LD_PRELOAD"] = LIB
    r = subprocess.run([PYTHON, "-c", MAPPED, str(tmp_path), "2.2"], env=e, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(out) == 4 and all(o["same_identity"] for o in out), out   # the shape: only the bytes change
    assert not any(o["ran"] for o in out), (out, r.stderr[-2000:])
    assert all(o["res"] in ("errno13", "errno5") for o in out), (out, r.stderr[-2000:])
    assert r.stderr.count("safepickle:") >= 4, r.stderr[-2000:]
    # the control: without the preload the same script runs every payload
    for f in tmp_path.glob("ran*"):
        f.unlink()
    r = subprocess.run([PYTHON, "-c", MAPPED, str(tmp_path), "0"], env=clean_env(), capture_output=True,
                       text=True, timeout=300)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert all(o["ran"] and o["res"] == "loaded" for o in out), (out, r.stderr[-2000:])


def test_own_rewrite_same_tick_no_false_alarm(tmp_path, swap_lib):
    """A process writes a text file, reads it, writes other text of the same
    size over it and reads it back, all within one timestamp tick (coarse
    timestamps simulated: the identity does not change). The second version
    is a new version of a file changed lately, judged again after the read
    (SPP_FD_FRESH), not a mismatch with the first judgement's fingerprint
    (SPP_FD_RECOG): no refusal, no safepickle: line."""
    target = tmp_path / "own.txt"
    code = ("import os, sys\np = sys.argv[1]\nout = []\n"
            "with open(p, 'w+b', buffering=0) as f:\n"
            "    for i in range(5):\n"
            "        f.seek(0); f.write(b'version %d of some text, not a pickle\\n' % i * 50)\n"
            "        f.seek(0); out.append(f.read() == b'version %d of some text, not a pickle\\n' % i * 50)\n"
            "fd = os.open(p, os.O_RDWR)\n"
            "for i in range(5):\n"
            "    t = b'versiox %d of some text, not a pickle\\n' % i * 50   # the same size\n"
            "    os.pwrite(fd, t, 0)\n"
            "    out.append(os.pread(fd, 10000, 0) == t)\n"
            "print(out)\n")
    e = clean_env(SWAP_COARSE="1")
    e["LD_PRELOAD"] = LIB + " " + swap_lib
    r = subprocess.run([PYTHON, "-c", code, str(target)], env=e, capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == str([True] * 10), r.stdout + r.stderr[-2000:]
    assert "safepickle:" not in r.stderr, r.stderr[-2000:]


def test_not_bearing_changing_while_judged_fails_closed(tmp_path, swap_lib):
    """A file whose bytes change between the recogniser's reads (a library
    preloaded after ours writes the other of two texts of the same size over
    it after each of safepickle's preads) would be judged "not pickle-bearing"
    on a mix of versions with nothing to verify later reads against: it is
    judged again, and changing at every try, refused under the fail mode
    (block), like pickle-bearing content that keeps changing."""
    target, a, b = tmp_path / "t.txt", tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"first text, no pickle in it at all\n" * 300)
    b.write_bytes(b"other text, no pickle in it either\n" * 300)
    assert a.stat().st_size == b.stat().st_size > 2 * 4096
    target.write_bytes(a.read_bytes())
    e = clean_env(SAFEPICKLE_POLICY=race.policy_file(str(tmp_path), "file"), SWAP_TARGET=str(target),
                  SWAP_SRC=str(b), SWAP_BACK=str(a), SWAP_INPLACE="1", SWAP_FLIP="1")
    e["LD_PRELOAD"] = LIB + " " + swap_lib
    r = subprocess.run([PYTHON, "-c", SWAP_LOAD, str(target), "text"], env=e, capture_output=True, text=True,
                       timeout=120)
    assert r.stdout.strip() == "errno13", r.stdout + r.stderr[-2000:]
    assert "changed while it was being judged" in r.stderr, r.stderr[-2000:]


MULTI_LOAD = r"""
import os, pickle, sys
try:
    with open(sys.argv[1], "rb") as f:
        out = []
        while True:                     # every stream in the file, as a multi-pickle reader does
            try: out.append(pickle.load(f))
            except EOFError: break
    print("loaded", len(out))
except OSError as e:
    print("errno%d" % e.errno)
"""


@pytest.mark.parametrize("cut", [196668, 200704, 262144])
def test_file_shorter_during_scan_then_appended_again(tmp_path, swap_lib, cut):
    """The append race (race.py pickle append file): a benign pickle with a
    malicious one appended (G+B) is judged, and during one of the scan's reads
    the writer cuts the file back (ftruncate, here to G's end, to a block
    boundary after it, or to G plus part of B ending on a block boundary) and
    appends B again right after. The read returned fewer bytes than the size
    judged, so the analyzer saw the file end inside or before B: judged on
    those bytes alone it was safe, and the loader, reading G+B again, got B
    from blocks no judgement read (the payload ran, cut at G's end, on the
    code before). For each read of the judgement that reaches past the cut in
    turn, the recogniser's and the scan's (every one, whatever the analyzer's
    read pattern is), the payload must not run."""
    marker, done = tmp_path / "ran", tmp_path / "cut"
    g, b = race._raw_pair(str(marker))
    target, full = tmp_path / "t.pkl", tmp_path / "full"
    full.write_bytes(g + b)
    for nth in range(200):
        target.write_bytes(g + b)
        if done.exists():
            done.unlink()
        e = clean_env(SAFEPICKLE_POLICY=race.policy_file(str(tmp_path), "file"), SAFEPICKLE_CACHE="off",
                      SWAP_TARGET=str(target), SWAP_SRC=str(full), SWAP_INPLACE="1", SWAP_CUT="%d:%d" % (cut, nth),
                      SWAP_CUT_DONE=str(done))
        e["LD_PRELOAD"] = LIB + " " + swap_lib
        r = subprocess.run([PYTHON, "-c", MULTI_LOAD, str(target)], env=e, capture_output=True, text=True,
                           timeout=120)
        assert not marker.exists(), (nth, r.stdout, r.stderr[-2000:])
        assert r.stdout.strip() in ("errno13", "errno5"), (nth, r.stdout, r.stderr[-2000:])
        assert "safepickle:" in r.stderr, (nth, r.stderr[-2000:])
        if not done.exists():       # no more reads past the cut: every one was tried
            break
    assert 4 < nth < 199, nth
