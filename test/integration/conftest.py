"""conftest.py - shared fixtures for safepickle's integration tests.

Every test runs real loaders in a fresh /usr/bin/python3 subprocess, optionally
under the preload, and checks outcomes (marker files, exit codes, values).
SAFEPICKLE_BUILD selects the build directory (default: <repo>/build)."""
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile

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
