"""conftest.py - shared fixtures for safepickle's integration tests.

Every test runs real loaders in a fresh /usr/bin/python3 subprocess, optionally
under the preload, and checks outcomes (marker files, exit codes, values).
SAFEPICKLE_BUILD selects the build directory (default: <repo>/build)."""
import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("SAFEPICKLE_BUILD", os.path.join(REPO, "build"))
PYTHON = "/usr/bin/python3"
CLI = os.path.join(BUILD, "safepickle")
LIB = os.path.join(BUILD, "libsafepickle.so")
SHARED = os.path.join(os.path.dirname(REPO), "shared")
CORPUS = os.path.join(SHARED, "corpus", "public")
# The public corpus files whose label we disagree with: file -> (our verdict, why). The
# same list, with the same reasons, is analyzer/README.md's table (section classifier);
# test_public_corpus (files) and test_runtime (in memory) fail on any other disagreement.
CORPUS_EXPLAINED = {
    "picklescan/benign_password_protected.zip": (
        "unscannable", "encrypted zip member: no loader can read it without the password and neither can we; "
        "content we cannot examine is reported unscannable, never passed as clean (threats.md A10)"),
    "modelaudit/dill_func.pkl": (
        "malicious", "label is `unknown`: the file rebuilds a function from a code object "
        "(dill._dill._create_code), which is code execution"),
    "picklescan/malicious13b.pkl": (
        "safe", "_pickle.loads of one bytes constant, b'I12345\\n.' (@rawload: judged by the stream it holds): "
        "it loads the integer 12345 and runs nothing"),
}

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


# The preload's persistent verdict cache: one private directory per test session,
# so runs never see each other's verdicts (a test may still set its own).
SESSION_CACHE = tempfile.mkdtemp(prefix="safepickle-cache-")
atexit.register(shutil.rmtree, SESSION_CACHE, True)
# Audit records that children write to the default destination (the user's state directory)
# land here, not in the developer's home; every record found here or in a test's temp dir is
# validated against preload/audit.schema.json when the session ends.
STATE_HOME = tempfile.mkdtemp(prefix="safepickle-state-")
AUDIT_SCHEMA = os.path.join(REPO, "preload", "audit.schema.json")
atexit.register(shutil.rmtree, STATE_HOME, True)


def clean_env(**extra):
    """The environment for a child: no inherited preload or safepickle settings."""
    env = {k: v for k, v in os.environ.items()
           if k != "LD_PRELOAD" and not k.startswith("SAFEPICKLE_")}
    env["SAFEPICKLE_CACHE"] = SESSION_CACHE
    env.setdefault("OMP_NUM_THREADS", "1")
    env["XDG_STATE_HOME"] = STATE_HOME
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_py(code, *, preload=True, cwd=None, env=None, timeout=300, args=()):
    """Run `code` in a fresh /usr/bin/python3, under the preload if asked.
    Returns the CompletedProcess (text mode)."""
    e = clean_env(**(env or {}))
    if preload:
        e["LD_PRELOAD"] = LIB
    return subprocess.run([PYTHON, "-c", code, *args], cwd=cwd, env=e, capture_output=True,
                          text=True, timeout=timeout)


def run_py_file(tmp_path, body, *, name, preload=True, env=None, stdin=None, text=True, timeout=300):
    """Write `body` to tmp_path/name and run it with /usr/bin/python3 in tmp_path, under
    the preload if asked (env: extra variables, stdin: its input, text: str or bytes
    out). Returns the CompletedProcess."""
    script = tmp_path / name
    script.write_text(body)
    e = clean_env(**(env or {}))
    if preload:
        e["LD_PRELOAD"] = LIB
    return subprocess.run([PYTHON, str(script)], cwd=str(tmp_path), env=e, input=stdin, capture_output=True,
                          text=text, timeout=timeout)


class Hung(AssertionError):
    """A child (or one of its descendants) outlived its time: the stacks of every process
    it left are in the message."""


def _session_pids(sid):
    """The processes of session `sid` (the child and every descendant it did not move out)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            fields = open("/proc/%s/stat" % d).read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # stat: pid (comm) state ppid pgrp session
            out.append(int(d))
    return sorted(out)


def _stacks(pid):
    """One process's command line, native stack of every thread (gdb) and, through
    faulthandler on SIGABRT (PYTHONFAULTHANDLER=1), its Python stacks."""
    try:
        cmd = open("/proc/%d/cmdline" % pid, "rb").read().replace(b"\0", b" ").decode("utf-8", "replace")
        cmd = " ".join(cmd.split())[:160]
    except OSError:
        cmd = "?"
    gdb = shutil.which("gdb")
    bt = "(no gdb)"
    if gdb:
        try:
            r = subprocess.run([gdb, "-p", str(pid), "-batch", "-nx", "-ex", "thread apply all bt 40"],
                               capture_output=True, text=True, timeout=60)
            bt = "\n".join(ln for ln in r.stdout.splitlines() if ln.startswith(("#", "Thread ")))
        except (OSError, subprocess.TimeoutExpired) as e:
            bt = "(gdb: %s)" % e
    return "--- pid %d: %s\n%s" % (pid, cmd, bt)


def run_bounded(argv, *, env, input=None, cwd=None, timeout=300):
    """subprocess.run(argv, capture_output=True) in a session of its own, bounded: if the
    child has not ended within `timeout`, or a descendant still holds its pipes then, every
    process of the session is described (native stacks, then Python stacks through
    faulthandler), the session is killed and Hung is raised with that description. A
    plain TimeoutExpired shows neither, and a left descendant holds the pipes open."""
    env = dict(env, PYTHONFAULTHANDLER="1")
    p = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.PIPE if input is not None else None,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = p.communicate(input, timeout=timeout)
        return subprocess.CompletedProcess(argv, p.returncode, out, err)
    except subprocess.TimeoutExpired:
        pass
    pids = _session_pids(p.pid)
    report = [_stacks(pid) for pid in pids]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGABRT)  # faulthandler writes the Python stacks to stderr
        except OSError:
            pass
    time.sleep(3)
    for pid in _session_pids(p.pid) + [p.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    try:
        out, err = p.communicate(timeout=30)
    except subprocess.TimeoutExpired as e:  # a process that left the session holds a pipe
        out, err = e.output or b"", e.stderr or b""
    raise Hung("%s: not ended after %d s; rc %s; its session's processes:\n%s\nstdout tail:\n%s\nstderr tail:\n%s" % (
        argv[:2], timeout, p.returncode, "\n".join(report) or "(none left)",
        out[-2000:].decode("utf-8", "replace"), err[-12000:].decode("utf-8", "replace")))


def run_cli(*args, env=None, timeout=300, input=None):
    e = clean_env(**(env or {}))
    return subprocess.run([CLI, *map(str, args)], env=e, capture_output=True, text=True,
                          timeout=timeout, input=input)


def validate_audit_lines(data):
    """Audit records (bytes, JSON lines): each line strict UTF-8, valid JSON, valid against
    preload/audit.schema.json. Returns the records."""
    import jsonschema
    schema = json.load(open(AUDIT_SCHEMA))
    assert data.endswith(b"\n") or not data, "record not ended by a newline"
    out = []
    for ln in data.split(b"\n")[:-1]:
        rec = json.loads(ln.decode("utf-8", "strict"))
        jsonschema.validate(rec, schema, cls=jsonschema.Draft202012Validator)
        out.append(rec)
    return out


def _audit_logs(root):
    """Files under root holding audit records (JSON lines whose first record has the shape)."""
    # os.walk, not glob's "**": glob follows symlinked directories, and the scan-walk tests
    # leave branching symlink loops behind (2^40 paths: CI ran out of memory here)
    for path in (os.path.join(d, n) for d, _, names in os.walk(root) for n in names):
        try:
            if not os.path.isfile(path) or os.path.islink(path):
                continue
            with open(path, "rb") as f:
                head = f.readline(65536)  # a record is at most 16 KiB; corpora hold GiB files
            if not head.startswith(b"{") or not head.endswith(b"\n"):
                continue
            first = json.loads(head.decode("utf-8", "replace"))
        except (OSError, ValueError):
            continue
        if isinstance(first, dict) and {"layer", "verdict", "pid", "policy"} <= first.keys():
            yield path


def pytest_sessionfinish(session, exitstatus):
    """Every audit record the suite produced in files is valid (issue 17)."""
    roots = [STATE_HOME]
    try:
        roots.append(str(session.config._tmp_path_factory.getbasetemp()))
    except Exception:
        pass
    bad = []
    for root in roots:
        for path in _audit_logs(root):
            try:
                validate_audit_lines(open(path, "rb").read())
            except Exception as e:  # noqa: BLE001 - reported below
                bad.append("%s: %s" % (path, str(e)[:300]))
    if bad:
        sys.stderr.write("\ninvalid audit records:\n  " + "\n  ".join(bad) + "\n")
        session.exitstatus = 1


@pytest.fixture
def marker(tmp_path):
    """A path a payload would create. Tests assert it does not exist afterwards."""
    return tmp_path / "PAYLOAD_RAN"
