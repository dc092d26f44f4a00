"""test_audit.py - the audit writer cannot hurt the host (issue 11, item 7) and is quiet by
default (issue 17): no fd left open or touched, fork-safe, never blocks (FIFO policy, FIFO
log, full pipes), one write per record and records on pipes under PIPE_BUF, losses said once,
hooks within a small stack, records valid strict UTF-8 JSON against preload/audit.schema.json.

Every test runs real /usr/bin/python3 processes under the preload and checks outcomes: marker
files, exit codes, bytes read back, fds, time bounds. SAFEPICKLE_BUILD points at another build
(e.g. the previous main) to see these tests fail there."""
import json
import os
import pickle
import select
import signal
import stat
import subprocess
import sys
import time

import pytest

from conftest import LIB, PYTHON, REPO, clean_env, validate_audit_lines

PIPE_BUF = select.PIPE_BUF


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, ("touch " + self.marker,))


def make_files(d, marker):
    bad = d / "bad.pkl"
    good = d / "good.pkl"
    bad.write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    good.write_bytes(pickle.dumps({"a": [1, 2, 3], "b": "x" * 10}))
    return bad, good


def records(path):
    data = open(path, "rb").read()
    return validate_audit_lines(data)


# ---------------------------------------------------------------- fds
FD_SCRIPT = r"""
import os, sys, pickle
bad, log = sys.argv[1], sys.argv[2]

def fds():
    return {int(f): os.readlink("/proc/self/fd/" + f) for f in os.listdir("/proc/self/fd")
            if os.path.exists("/proc/self/fd/" + f)}

def refuse():
    try:
        pickle.load(open(bad, "rb"))
        print("RAN"); sys.exit(3)
    except PermissionError:
        pass

before = fds()
for _ in range(3):
    refuse()
after = fds()
assert before == after, ("fds changed", before, after)

# The program closes everything it does not know of (daemons, servers before exec do) and
# reuses the lowest fd numbers for its own pipes: nothing of ours may read, write or close them.
os.closerange(3, 1024)
pipes = [os.pipe() for _ in range(4)]
sent = [b"program data %d\n" % i * 40 for i in range(4)]
for (r, w), s in zip(pipes, sent):
    os.write(w, s)
for _ in range(5):
    refuse()
for (r, w), s in zip(pipes, sent):
    os.fstat(r); os.fstat(w)                      # still open
    os.write(w, b"END")
    got = b""
    while not got.endswith(b"END"):
        got += os.read(r, 65536)
    assert got == s + b"END", ("bytes lost or added", len(got), len(s))
print("FDS-OK")
"""


def test_no_fd_left_open_or_touched(tmp_path, marker):
    bad, _ = make_files(tmp_path, marker)
    log = tmp_path / "audit.jsonl"
    r = subprocess.run([PYTHON, "-c", FD_SCRIPT, str(bad), str(log)],
                       env=clean_env(LD_PRELOAD=LIB, SAFEPICKLE_LOG=str(log)),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "FDS-OK" in r.stdout, r.stdout + r.stderr
    assert not marker.exists()
    recs = records(log)
    assert len(recs) == 8 and all(x["action"] == "block" for x in recs)
    assert all(x["callsite"]["obj"] for x in recs)   # the call site is still recorded


# ---------------------------------------------------------------- fork
FORK_SCRIPT = r"""
import os, sys, threading, pickle, time
bad, forks, deadline = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
stop = False

def refuse():
    try:
        pickle.load(open(bad, "rb")); os._exit(3)
    except PermissionError:
        pass

def producer():
    while not stop:
        refuse()

ts = [threading.Thread(target=producer, daemon=True) for _ in range(3)]
for t in ts: t.start()
hung = 0
for i in range(forks):
    pid = os.fork()
    if pid == 0:
        refuse()          # the child's own first record
        os._exit(0)
    limit = time.monotonic() + deadline
    while True:
        p, st = os.waitpid(pid, os.WNOHANG)
        if p:
            assert os.WIFEXITED(st) and os.WEXITSTATUS(st) == 0, st
            break
        if time.monotonic() > limit:
            hung += 1
            os.kill(pid, 9); os.waitpid(pid, 0)
            break
        time.sleep(0.001)
stop = True
print("HUNG", hung)
"""


FORKS = int(os.environ.get("SAFEPICKLE_FORK_STORM", "300"))


def test_fork_storm_no_deadlock(tmp_path, marker):
    """Children forked while other threads write audit records finish their own first
    record (each child gets 10 s; a hung child is killed and counted, so the test fails by
    count, never by hanging). Measured on the libunwind writer: 5 of 1,000 children hung,
    so 300 forks (the default here) catch it with about 78 % probability per run;
    SAFEPICKLE_FORK_STORM=2000 for a long run."""
    bad, _ = make_files(tmp_path, marker)
    log = tmp_path / "audit.jsonl"
    r = subprocess.run([PYTHON, "-W", "ignore", "-c", FORK_SCRIPT, str(bad), str(FORKS), "10"],
                       env=clean_env(LD_PRELOAD=LIB, SAFEPICKLE_LOG=str(log)),
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    assert "HUNG 0" in r.stdout, r.stdout
    assert not marker.exists()
    # the producers write tens of thousands of records: count the writers, then drop the log
    pids = set()
    with open(log, "rb") as f:
        for ln in f:
            pids.add(json.loads(ln)["pid"])
    os.unlink(log)
    assert len(pids) > FORKS


# ---------------------------------------------------------------- never block
def test_fifo_policy_does_not_hang(tmp_path, marker):
    """SAFEPICKLE_POLICY naming a FIFO: every preloaded process still starts (none of them
    hangs before main) and a Python process refuses pickle-bearing files, saying why."""
    fifo = tmp_path / "policy.fifo"
    os.mkfifo(fifo)
    bad, good = make_files(tmp_path, marker)
    env = clean_env(LD_PRELOAD=LIB, SAFEPICKLE_POLICY=str(fifo))
    r = subprocess.run(["/bin/true"], env=env, timeout=20)
    assert r.returncode == 0
    r = subprocess.run(["/bin/sh", "-c", "echo hi"], env=env, capture_output=True, text=True, timeout=20)
    assert r.stdout == "hi\n"
    r = subprocess.run([PYTHON, "-c", "import pickle,sys; pickle.load(open(sys.argv[1],'rb'))", str(good)],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "PermissionError" in r.stderr
    assert "not a regular file" in r.stderr


def test_fifo_log_without_reader_does_not_hang(tmp_path, marker):
    fifo = tmp_path / "log.fifo"
    os.mkfifo(fifo)
    bad, _ = make_files(tmp_path, marker)
    code = ("import pickle,sys\nfor _ in range(3):\n    try: pickle.load(open(sys.argv[1],'rb'))\n"
            "    except PermissionError: pass\nprint('DONE')")
    r = subprocess.run([PYTHON, "-c", code, str(bad)], env=clean_env(LD_PRELOAD=LIB, SAFEPICKLE_LOG=str(fifo)),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "DONE" in r.stdout, r.stderr
    assert not marker.exists()
    # refused three times (three lines), the loss said once
    assert r.stderr.count("safepickle: blocked") == 3
    assert r.stderr.count("cannot write audit records") == 1, r.stderr


def _full_pipe():
    rd, wr = os.pipe()
    os.set_blocking(wr, False)
    try:
        while True:
            os.write(wr, b"x" * 4096)
    except BlockingIOError:
        pass
    os.set_blocking(wr, True)
    return rd, wr


def test_full_pipes_do_not_block(tmp_path, marker):
    """stderr (the refusal line and SAFEPICKLE_LOG=stderr records) and a FIFO log are full
    pipes nobody reads: the program still runs to its end."""
    bad, _ = make_files(tmp_path, marker)
    code = ("import pickle,sys\nfor _ in range(3):\n    try: pickle.load(open(sys.argv[1],'rb'))\n"
            "    except PermissionError: pass\nprint('DONE', flush=True)")
    rd, wr = _full_pipe()
    try:
        for log in ("stderr", "fifo"):
            env = clean_env(LD_PRELOAD=LIB, SAFEPICKLE_LOG="stderr")
            frd = fwr = None
            if log == "fifo":
                fifo = tmp_path / "full.fifo"
                os.mkfifo(fifo)
                frd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)   # a reader that never reads
                fwr = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                try:
                    while True:
                        os.write(fwr, b"y" * 4096)
                except BlockingIOError:
                    pass
                env["SAFEPICKLE_LOG"] = str(fifo)
            p = subprocess.Popen([PYTHON, "-c", code, str(bad)], env=env, stdout=subprocess.PIPE, stderr=wr)
            try:
                out, _ = p.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()
                pytest.fail("blocked on a full pipe (%s)" % log)
            assert p.returncode == 0 and b"DONE" in out
            for fd in (frd, fwr):
                if fd is not None:
                    os.close(fd)
    finally:
        os.close(rd)
        os.close(wr)
    assert not marker.exists()


# ---------------------------------------------------------------- records
def test_records_from_many_processes_on_one_pipe_stay_whole(tmp_path, marker):
    """50 processes share one stderr pipe (a container's): every line read back is a whole,
    valid record or a whole refusal line, although each record would be longer than PIPE_BUF
    (a long argument and a long path)."""
    sub = tmp_path / ("d" * 200)
    sub.mkdir()
    bad, _ = make_files(sub, marker)
    long_arg = "A" * 3000
    code = ("import pickle,sys\ntry: pickle.load(open(sys.argv[1],'rb'))\nexcept PermissionError: pass\n")
    rd, wr = os.pipe()
    env = clean_env(LD_PRELOAD=LIB, SAFEPICKLE_LOG="stderr")
    procs = [subprocess.Popen([PYTHON, "-c", code, str(bad), long_arg], env=env, stdout=subprocess.DEVNULL,
                              stderr=wr) for _ in range(50)]
    os.close(wr)
    data = b""
    while True:
        chunk = os.read(rd, 1 << 16)
        if not chunk:
            break
        data += chunk
    os.close(rd)
    for p in procs:
        assert p.wait(timeout=120) == 0
    lines = data.split(b"\n")
    assert lines[-1] == b""
    stray = [ln[:100] for ln in lines[:-1] if not ln.startswith((b"{", b"safepickle: blocked "))]
    assert not stray
    recs = [ln for ln in lines[:-1] if ln.startswith(b"{")]
    assert len(recs) == 50
    got = validate_audit_lines(b"\n".join(recs) + b"\n")
    assert all(len(json.dumps(x)) < PIPE_BUF for x in got)
    assert all(x.get("truncated") is True and x["argv"][-1].startswith("AAAA") for x in got)
    assert not marker.exists()


def test_failed_writes_are_said_once(tmp_path, marker):
    bad, _ = make_files(tmp_path, marker)
    code = ("import pickle,sys\nfor _ in range(4):\n    try: pickle.load(open(sys.argv[1],'rb'))\n"
            "    except PermissionError: pass\nprint('DONE')")
    r = subprocess.run([PYTHON, "-c", code, str(bad)], env=clean_env(LD_PRELOAD=LIB, SAFEPICKLE_LOG="/dev/full"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "DONE" in r.stdout
    assert r.stderr.count("cannot write audit records to /dev/full") == 1, r.stderr
    assert "No space left" in r.stderr


def test_short_write_leaves_no_cut_record(tmp_path, marker):
    """A file size limit (RLIMIT_FSIZE) cuts the log mid-record: the file holds whole records
    only, the next process's record is not glued to a cut one, the loss is said once."""
    import resource
    bad, _ = make_files(tmp_path, marker)
    log = tmp_path / "audit.jsonl"
    code = ("import pickle,sys\nfor _ in range(3):\n    try: pickle.load(open(sys.argv[1],'rb'))\n"
            "    except PermissionError: pass\nprint('DONE')")
    env = clean_env(LD_PRELOAD=LIB, SAFEPICKLE_LOG=str(log))
    r = subprocess.run([PYTHON, "-c", code, str(bad)], env=env, capture_output=True, text=True, timeout=60)
    one = len(log.read_bytes()) // 3
    limit = 3 * one + one // 2          # room for 3.5 records

    def lim():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    r = subprocess.run([PYTHON, "-c", code, str(bad)], env=env, capture_output=True, text=True, timeout=60,
                       preexec_fn=lim)
    assert r.returncode == 0 and "DONE" in r.stdout, r.stderr
    assert r.stderr.count("cannot write audit records") == 1, r.stderr
    r = subprocess.run([PYTHON, "-c", code, str(bad)], env=env, capture_output=True, text=True, timeout=60)
    recs = records(log)                # every line whole and valid
    assert len(recs) == 6
    assert not marker.exists()


# ---------------------------------------------------------------- stack
STACK_SCRIPT = r"""
import io, os, sys, threading, pickle
import torch, joblib, numpy as np
d = sys.argv[1]
sys.path.insert(0, d)
open(d + "/l2user.py", "w").write("class Thing: pass\ndef run_shell(x): open(x, 'w')\n")
# judged by names (an Unpickler over a pipe): a user class, then a name the knowledge
# base's verb patterns call a process
NAMES = b"(cl2user\nThing\n)Rcl2user\nrun_shell\n(S'" + d.encode() + b"/ran'\ntRl."
threading.stack_size(32768)
res = []
def work():
    def refused(f, *a):
        try:
            f(*a); res.append("RAN")
        except PermissionError:
            res.append("refused")
    refused(lambda: pickle.load(open(d + "/bad.pkl", "rb")))
    refused(lambda: torch.load(d + "/bad.pt"))
    r, w = os.pipe()
    os.write(w, NAMES)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        refused(lambda: pickle.Unpickler(f).load())
    res.append(pickle.load(open(d + "/good.pkl", "rb"))["a"])
    res.append(float(torch.load(d + "/good.pt")["w"].sum()))
    res.append(float(joblib.load(d + "/good.joblib")["a"].sum()))
    res.append(float(np.load(d + "/good.npy").sum()))
    with open(d + "/good.pkl", "rb") as f:
        res.append(len(f.read()))
ts = [threading.Thread(target=work) for _ in range(4)]
for t in ts: t.start()
for t in ts: t.join()
print(res)
"""

MAKE_MODELS = r"""
import os, sys, pickle, torch, joblib, numpy as np
d, marker = sys.argv[1], sys.argv[2]
class P:
    def __reduce__(self): return (os.system, ("touch " + marker,))
torch.save({"w": torch.ones(3)}, d + "/good.pt")
torch.save({"w": torch.ones(3), "p": P()}, d + "/bad.pt")
joblib.dump({"a": np.ones(3)}, d + "/good.joblib", compress=3)
np.save(d + "/good.npy", np.ones(3))
"""


def test_32k_thread_stacks(tmp_path, marker):
    """Threads with 32 KiB stacks open, read and load pickle files (refusals and benign
    loads, torch zip, joblib, npy) and judge a stream's globals by name under the
    preload, as they do without it."""
    make_files(tmp_path, marker)
    subprocess.run([PYTHON, "-c", MAKE_MODELS, str(tmp_path), str(marker)], check=True, timeout=300,
                   env=clean_env())
    log = tmp_path / "audit.jsonl"
    r = subprocess.run([PYTHON, "-c", STACK_SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=300,
                       env=clean_env(LD_PRELOAD=LIB, SAFEPICKLE_LOG=str(log)))
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    res = eval(r.stdout.strip().splitlines()[-1])
    assert res.count("refused") == 12 and "RAN" not in res, res
    assert res.count(3.0) == 12 and res.count([1, 2, 3]) == 4
    assert not marker.exists() and not (tmp_path / "ran").exists()
    records(log)


# ---------------------------------------------------------------- quiet by default, UTF-8
def test_refusal_prints_one_line_and_records_go_to_state_dir(tmp_path, marker):
    bad, _ = make_files(tmp_path, marker)
    state = tmp_path / "state"
    code = "import pickle,sys\ntry: pickle.load(open(sys.argv[1],'rb'))\nexcept PermissionError: print('REFUSED')"
    r = subprocess.run([PYTHON, "-c", code, str(bad)], env=clean_env(LD_PRELOAD=LIB, XDG_STATE_HOME=str(state)),
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "REFUSED"
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("safepickle: blocked "), r.stderr
    log = state / "safepickle" / "audit.jsonl"
    recs = records(log)
    assert len(recs) == 1 and recs[0]["path"] == str(bad)
    assert stat.S_IMODE(os.stat(state / "safepickle").st_mode) == 0o700
    # without XDG_STATE_HOME: ~/.local/state
    home = tmp_path / "home"
    home.mkdir()
    env = clean_env(LD_PRELOAD=LIB, HOME=str(home))
    env.pop("XDG_STATE_HOME", None)
    r = subprocess.run([PYTHON, "-c", code, str(bad)], env=env, capture_output=True, text=True, timeout=60)
    assert len(r.stderr.splitlines()) == 1
    assert len(records(home / ".local/state/safepickle/audit.jsonl")) == 1
    assert not marker.exists()


def test_unwritable_state_dir_is_said_once(tmp_path, marker):
    bad, _ = make_files(tmp_path, marker)
    state = tmp_path / "state"
    state.write_text("a file where the directory should be")
    code = ("import pickle,sys\nfor _ in range(3):\n    try: pickle.load(open(sys.argv[1],'rb'))\n"
            "    except PermissionError: pass\nprint('DONE')")
    r = subprocess.run([PYTHON, "-c", code, str(bad)], env=clean_env(LD_PRELOAD=LIB, XDG_STATE_HOME=str(state)),
                       capture_output=True, text=True, timeout=60)
    assert "DONE" in r.stdout
    assert r.stderr.count("safepickle: blocked") == 3
    assert r.stderr.count("cannot write audit records to %s/safepickle/audit.jsonl" % state) == 1, r.stderr


def test_records_are_strict_utf8_with_raw_bytes_kept(tmp_path, marker):
    """A file name and an argument that are not UTF-8, and a pickle whose names are not:
    the record is strict UTF-8 JSON and keeps the raw bytes in hex."""
    d = bytes(tmp_path) + b"/bad-\xff\xfe-\xed\xa0\x80.pkl"
    body = pickle.dumps(_Payload(marker), protocol=2)
    with open(d, "wb") as f:
        f.write(body)
    log = tmp_path / "audit.jsonl"
    code = ("import pickle,sys,os\ntry: pickle.load(open(os.fsencode(sys.argv[1]),'rb'))\n"
            "except PermissionError: print('REFUSED')")
    r = subprocess.run([PYTHON.encode(), b"-c", code.encode(), d, b"arg-\xc3\x28"],
                       env=clean_env(LD_PRELOAD=LIB, SAFEPICKLE_LOG=str(log)), capture_output=True, timeout=60)
    assert b"REFUSED" in r.stdout, r.stderr
    recs = records(log)
    assert len(recs) == 1
    rec = recs[0]
    assert bytes.fromhex(rec["path_hex"]) == d and "\ufffd" in rec["path"]
    assert bytes.fromhex(rec["argv_hex"][-1]) == b"arg-\xc3\x28"
    assert not marker.exists()


SYSLOG_NS = """set -e
mount -t overlay overlay -o "lowerdir=/dev,upperdir=$1/upper,workdir=$1/work" /dev
shift
exec "$@"
"""

SYSLOG_SERVER = r"""
import os, socket, subprocess, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("/dev/log")
env = dict(os.environ, LD_PRELOAD=sys.argv[1])
r = subprocess.run([sys.executable, "-c", sys.argv[2], sys.argv[3]], env=env, capture_output=True, text=True)
s.settimeout(5)
msgs = []
try:
    while True:
        msgs.append(s.recv(65536).decode("utf-8"))
except socket.timeout:
    pass
print(repr((r.returncode, r.stdout, r.stderr, msgs)))
"""


def test_syslog_destination(tmp_path, marker):
    """audit_log "syslog": one datagram per record to /dev/log (a private /dev here)."""
    bad, _ = make_files(tmp_path, marker)
    ov = tmp_path / "dev-overlay"
    (ov / "upper").mkdir(parents=True)
    (ov / "work").mkdir()
    code = "import pickle,sys\ntry: pickle.load(open(sys.argv[1],'rb'))\nexcept PermissionError: print('REFUSED')"
    env = clean_env(SAFEPICKLE_LOG="syslog")
    try:
        r = subprocess.run(["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", SYSLOG_NS, "sh",
                            str(ov), PYTHON, "-c", SYSLOG_SERVER, LIB, code, str(bad)],
                           env=env, capture_output=True, text=True, timeout=120)
    except OSError:
        pytest.skip("unshare not available")
    if r.returncode != 0 and "mount" in r.stderr:
        pytest.skip("no private mount namespace here: " + r.stderr[-200:])
    rc, out, err, msgs = eval(r.stdout.strip().splitlines()[-1])
    assert "REFUSED" in out and len(err.splitlines()) == 1
    assert len(msgs) == 1 and msgs[0].startswith("<12>safepickle[")
    rec = msgs[0].split(": ", 1)[1]
    validate_audit_lines((rec + "\n").encode())
    assert not marker.exists()


def test_log_option_documented_and_honoured(tmp_path, marker):
    """`run --help` and the man page document --log and its values; `run --log none` and
    `run --log state` do what they say."""
    from conftest import run_cli
    h = run_cli("run", "--help")
    text = h.stdout + h.stderr
    for word in ("--log DEST", "state", "syslog", "none", "audit.jsonl"):
        assert word in text, word
    man = open(os.path.join(REPO, "analyzer", "cli", "safepickle.1")).read()
    assert "\\-\\-log none" in man and "syslog" in man and "XDG_STATE_HOME" in man
    bad, _ = make_files(tmp_path, marker)
    code = "import pickle,sys\ntry: pickle.load(open(sys.argv[1],'rb'))\nexcept PermissionError: print('REFUSED')"
    state = tmp_path / "st"
    for dest in ("none", "state"):
        r = run_cli("run", "--log", dest, "--", PYTHON, "-c", code, bad, env={"XDG_STATE_HOME": state})
        assert r.stdout.strip() == "REFUSED" and len(r.stderr.splitlines()) == 1, r.stderr
        assert (state / "safepickle" / "audit.jsonl").exists() == (dest == "state")
    assert len(records(state / "safepickle" / "audit.jsonl")) == 1
    assert not marker.exists()


def test_hooks_stay_within_host_stack_budget(tmp_path, marker):
    """A C thread on a painted stack opens, reads, mmaps, dups, fopens and freads pickle
    files (a refusal, a benign pickle, a torch zip) in a process the policy targets: the
    preload adds at most SPP_HOST_STACK_BUDGET bytes to the deepest point glibc reaches
    without it (the judgement and the report run on the preload's own stack)."""
    spp_h = open(os.path.join(REPO, "preload", "spp.h")).read()
    budget = int(spp_h.split("#define SPP_HOST_STACK_BUDGET")[1].split()[0])
    assert budget <= 4096
    bad, good = make_files(tmp_path, marker)
    zipf = tmp_path / "good.pt"
    import zipfile
    with zipfile.ZipFile(zipf, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": list(range(100))}, protocol=2))
        z.writestr("archive/version", "3\n")
    exe = tmp_path / "hoststack"
    # linked with libpython so that the preload acts in it (it acts where CPython runs;
    # targets only narrow), though it never starts an interpreter
    ldflags = subprocess.run(["python3-config", "--embed", "--ldflags"], capture_output=True, text=True,
                             check=True, env=dict(os.environ, PATH="/usr/bin:/bin")).stdout.split()
    subprocess.run(["cc", "-O2", "-o", str(exe), os.path.join(os.path.dirname(__file__), "hoststack.c"),
                    "-Wl,--no-as-needed", *ldflags, "-lpthread"], check=True, timeout=120)
    files = [str(bad), str(good), str(zipf)]
    log = tmp_path / "audit.jsonl"

    def depth(preload):
        env = clean_env(SAFEPICKLE_TARGETS="*", SAFEPICKLE_LOG=str(log))
        if preload:
            env["LD_PRELOAD"] = LIB
        r = subprocess.run([str(exe), *files], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        words = r.stdout.split()
        return int(words[1]), int(words[3])

    plain, refused_plain = depth(False)
    hooked, refused = depth(True)
    assert refused_plain == 0 and refused == 2          # the malicious file, twice
    assert hooked - plain <= budget, (plain, hooked)
    assert [x["action"] for x in records(log)].count("block") == 2
    assert not marker.exists()
