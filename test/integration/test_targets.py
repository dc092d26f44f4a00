"""test_targets.py - issue 11 items 1, 3 and 7 (policy facts): one owner for every
policy fact and protection in every process that runs CPython.

- the smallest valid policy ({"schema": 1}) and a stricter partial one protect
  (absent keys ARE policies/default.json's values);
- a renamed copy of the interpreter, a C program linked with libpython and one
  that dlopen()s libpython after it started are all protected (the interpreter
  is detected in the process, not guessed from the executable's name);
- a broken policy is never replaced: in-memory loads (layer 2) are refused too;
- garbage in SAFEPICKLE_MODE enforces and says so once, only where we act;
  SAFEPICKLE_TARGETS is never cut, and a value that protects nothing is loud.
Every check loads a real malicious pickle and looks for its marker file."""
import json
import os
import shutil
import subprocess

import pytest

from conftest import LIB, PYTHON, REPO, clean_env
import spgen

PYCONFIG = "/usr/bin/python3-config"


def _env(**extra):
    e = clean_env(**extra)
    e["LD_PRELOAD"] = LIB
    return e


def _files(tmp_path, marker):
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(spgen.system_pickle(marker))
    return bad


# One Python snippet for every host: a file load, an in-memory load, a benign load.
PROBE = ("import pickle, sys\n"
         "res = []\n"
         "for how in ('file', 'bytes'):\n"
         "    try:\n"
         "        if how == 'file':\n"
         "            pickle.load(open(%r, 'rb'))\n"
         "        else:\n"
         "            pickle.loads(%r)\n"
         "        res.append(how + ':ran')\n"
         "    except Exception as e:\n"
         "        res.append(how + ':' + type(e).__name__)\n"
         "res.append('benign:%%r' %% (pickle.loads(pickle.dumps([1, 2])),))\n"
         "print(' '.join(res))\n")


def _probe(bad, marker):
    return PROBE % (str(bad), spgen.system_pickle(marker))


def _refused(out):
    return "file:PermissionError" in out and "bytes:SafePickleBlocked" in out and "benign:[1, 2]" in out


@pytest.mark.parametrize("doc", [{"schema": 1}, {"schema": 1, "actions": {"suspicious": "block"}}],
                         ids=["minimal", "suspicious-block"])
def test_partial_policy_protects(tmp_path, marker, doc):
    """Absent keys take default.json's values (targets and audit_log included)."""
    bad = _files(tmp_path, marker)
    pol = tmp_path / "p.json"
    pol.write_text(json.dumps(doc))
    r = subprocess.run([PYTHON, "-c", _probe(bad, marker)], env=_env(SAFEPICKLE_POLICY=str(pol)),
                       capture_output=True, text=True, timeout=120)
    spgen.assert_marker_absent(marker)
    assert _refused(r.stdout), r.stdout + r.stderr
    assert "safepickle: blocked" in r.stderr  # the default audit_log (stderr) applies too


def test_renamed_interpreter(tmp_path, marker):
    """A copy of /usr/bin/python3 named like a model server is protected."""
    bad = _files(tmp_path, marker)
    exe = tmp_path / "mymodelserver"
    shutil.copy(os.path.realpath(PYTHON), exe)
    r = subprocess.run([str(exe), "-c", _probe(bad, marker)], env=_env(), capture_output=True, text=True,
                       timeout=120)
    spgen.assert_marker_absent(marker)
    assert _refused(r.stdout), r.stdout + r.stderr


EMBED_C = r"""
#include <Python.h>
int main(int argc, char **argv) {
    Py_Initialize();
    int rc = PyRun_SimpleString(argv[1]);
    if (Py_FinalizeEx() < 0) return 2;
    return rc ? 3 : 0;
}
"""

# libpython dlopen'ed after the program started (a plugin host: uWSGI and co).
DLOPEN_C = r"""
#include <dlfcn.h>
#include <stdio.h>
int main(int argc, char **argv) {
    FILE *f = fopen("/etc/hostname", "r"); /* opens before any interpreter exists */
    if (f) fclose(f);
    void *h = dlopen(LIBPY, RTLD_NOW | RTLD_GLOBAL);
    if (!h) { fprintf(stderr, "dlopen: %s\n", dlerror()); return 4; }
    void (*init)(void) = (void (*)(void))dlsym(h, "Py_Initialize");
    int (*run)(const char *) = (int (*)(const char *))dlsym(h, "PyRun_SimpleString");
    int (*fin)(void) = (int (*)(void))dlsym(h, "Py_FinalizeEx");
    if (!init || !run || !fin) return 5;
    init();
    int rc = run(argv[1]);
    return fin() < 0 ? 2 : rc ? 3 : 0;
}
"""


def _pyconfig(*args):
    return subprocess.run([PYCONFIG, *args], capture_output=True, text=True, check=True).stdout.split()


@pytest.fixture(scope="module")
def embed_hosts(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc or not os.path.exists(PYCONFIG):
        pytest.skip("no compiler or python3-dev (test/install-deps.sh installs them)")
    d = tmp_path_factory.mktemp("embed")
    (d / "host.c").write_text(EMBED_C)
    (d / "plugin.c").write_text(DLOPEN_C)
    cflags, ldflags = _pyconfig("--cflags", "--embed"), _pyconfig("--ldflags", "--embed")
    subprocess.run([cc, "-o", str(d / "modelhost"), str(d / "host.c"), *cflags, *ldflags], check=True)
    libdir = subprocess.run([PYTHON, "-c", "import sysconfig as s; print(s.get_config_var('LIBDIR') + '/' + "
                             "s.get_config_var('INSTSONAME'))"], capture_output=True, text=True).stdout.strip()
    subprocess.run([cc, "-o", str(d / "pluginhost"), str(d / "plugin.c"), '-DLIBPY="%s"' % libdir, "-ldl"],
                   check=True)
    return d


@pytest.mark.parametrize("host", ["modelhost", "pluginhost"])
def test_embedded_interpreter(tmp_path, marker, embed_hosts, host):
    """A C program linked with libpython, and one that dlopen()s it after its
    own first opens, are protected under the default policy (no targets set)."""
    bad = _files(tmp_path, marker)
    r = subprocess.run([str(embed_hosts / host), _probe(bad, marker)], env=_env(), capture_output=True,
                       text=True, timeout=120)
    spgen.assert_marker_absent(marker)
    assert r.returncode == 0, r.stderr
    assert _refused(r.stdout), r.stdout + r.stderr


def test_broken_policy_refuses_in_memory_loads(tmp_path, marker):
    """A policy that does not parse is never replaced by the built-in default:
    files are refused and so are in-memory loads (layer 2)."""
    bad = _files(tmp_path, marker)
    pol = tmp_path / "broken.json"
    pol.write_text('{"schema": 1, "mode": "enforce",')
    r = subprocess.run([PYTHON, "-c", _probe(bad, marker)], env=_env(SAFEPICKLE_POLICY=str(pol)),
                       capture_output=True, text=True, timeout=120)
    spgen.assert_marker_absent(marker)
    assert "file:PermissionError" in r.stdout and "bytes:SafePickleBlocked" in r.stdout, r.stdout + r.stderr
    assert "policy.invalid" in r.stderr and "cannot load policy" in r.stderr


def test_garbage_mode(tmp_path, marker):
    """SAFEPICKLE_MODE=garbage: non-Python programs stay silent; Python enforces
    and says so once."""
    r = subprocess.run(["bash", "-c", "cat /etc/hostname >/dev/null; ls / >/dev/null; echo ok"],
                       env=_env(SAFEPICKLE_MODE="enforcing"), capture_output=True, text=True, timeout=60)
    assert r.stdout == "ok\n" and r.stderr == "", r.stderr
    bad = _files(tmp_path, marker)
    r = subprocess.run([PYTHON, "-c", _probe(bad, marker)], env=_env(SAFEPICKLE_MODE="enforcing"),
                       capture_output=True, text=True, timeout=120)
    spgen.assert_marker_absent(marker)
    assert _refused(r.stdout), r.stdout + r.stderr
    assert r.stderr.count("SAFEPICKLE_MODE=enforcing is not enforce, audit or off: enforcing") == 1, r.stderr


def test_targets_env_not_cut(tmp_path, marker):
    """A long SAFEPICKLE_TARGETS (more than 64 patterns, more than 1 KiB) is
    read whole: the pattern that names this process comes last."""
    bad = _files(tmp_path, marker)
    exe = tmp_path / "mymodelserver"
    shutil.copy(os.path.realpath(PYTHON), exe)
    targets = ",".join("other-server-%03d" % i for i in range(200)) + ",mymodel*"
    assert len(targets) > 1024
    r = subprocess.run([str(exe), "-c", _probe(bad, marker)], env=_env(SAFEPICKLE_TARGETS=targets),
                       capture_output=True, text=True, timeout=120)
    spgen.assert_marker_absent(marker)
    assert _refused(r.stdout), r.stdout + r.stderr
    assert "NOT protecting" not in r.stderr


@pytest.mark.parametrize("value", [",", ":,:"])
def test_targets_env_without_pattern_fails_closed(tmp_path, marker, value):
    """A SAFEPICKLE_TARGETS with no pattern would protect nothing: it is an
    error, said once, and every pickle-bearing load is refused."""
    bad = _files(tmp_path, marker)
    r = subprocess.run([PYTHON, "-c", _probe(bad, marker)], env=_env(SAFEPICKLE_TARGETS=value),
                       capture_output=True, text=True, timeout=120)
    spgen.assert_marker_absent(marker)
    assert "file:PermissionError" in r.stdout and "bytes:SafePickleBlocked" in r.stdout, r.stdout + r.stderr
    assert r.stderr.count("SAFEPICKLE_TARGETS names no pattern: it would protect no process; every") == 1, r.stderr


def test_targets_excluding_a_python_process_is_loud(tmp_path):
    """Narrowing targets so that a Python process is left out says so in it
    (a non-Python program stays silent)."""
    r = subprocess.run([PYTHON, "-c", "print('ok')"], env=_env(SAFEPICKLE_TARGETS="mymodelserver"),
                       capture_output=True, text=True, timeout=60)
    assert r.stdout == "ok\n"
    assert "NOT protecting this Python process" in r.stderr, r.stderr
    r = subprocess.run(["bash", "-c", "echo ok"], env=_env(SAFEPICKLE_TARGETS="mymodelserver"),
                       capture_output=True, text=True, timeout=60)
    assert r.stdout == "ok\n" and r.stderr == ""


def test_empty_targets_list_is_an_error(tmp_path):
    pol = tmp_path / "p.json"
    pol.write_text('{"schema": 1, "targets": []}')
    r = subprocess.run([os.path.join(os.path.dirname(LIB), "safepickle"), "policy", "check", str(pol)],
                       env=clean_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "protect no process" in r.stderr, r.stdout + r.stderr


def test_shipped_default_is_the_only_default():
    """policies/default.json names every top-level key of the schema (so an
    absent key in a user policy always has a value to take)."""
    with open(os.path.join(REPO, "policies", "default.json")) as f:
        doc = json.load(f)
    with open(os.path.join(REPO, "policies", "SCHEMA.md")) as f:
        schema = f.read()
    keys = {line.split("`")[1].split(".")[0] for line in schema.splitlines()
            if line.startswith("| `") and ".json" not in line.split("|")[1]}
    keys -= {"schema", "description", "name"}
    assert keys <= set(doc), sorted(keys - set(doc))


def _doctor(pid, **env):
    return subprocess.run([os.path.join(os.path.dirname(LIB), "safepickle"), "doctor", "--pid", str(pid)],
                          env=clean_env(**env), capture_output=True, text=True, timeout=120)


def _ppid(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return int(f.read().rsplit(")", 1)[-1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1  # gone meanwhile


def test_doctor_pid_renamed_interpreter_and_init(tmp_path):
    """doctor --pid: a renamed interpreter under the preload is reported
    protected; an init-like PID (a shell whose child is that interpreter, as
    tini in a container) is not Python itself and its Python child is checked;
    a Python child without the preload is a problem."""
    exe = tmp_path / "mymodelserver"
    shutil.copy(os.path.realpath(PYTHON), exe)
    wait = "import time; time.sleep(120)"  # a background job's stdin is /dev/null
    script = '"%s" -c "%s" & child=$!; read x; kill $child; wait' % (exe, wait)
    init = subprocess.Popen(["/bin/sh", "-c", script], stdin=subprocess.PIPE, env=_env())
    bare = subprocess.Popen(["/bin/sh", "-c", script], stdin=subprocess.PIPE, env=clean_env())
    try:
        import time
        time.sleep(1.0)
        kids = [p for p in map(int, filter(str.isdigit, os.listdir("/proc"))) if _ppid(p) == init.pid]
        assert kids, "no child"
        r = _doctor(kids[0])
        assert "protected: a Python process" in r.stdout and "preload mapped" in r.stdout, r.stdout
        r = _doctor(init.pid)
        assert "not a Python process" in r.stdout and "its descendant pid %d runs Python" % kids[0] in r.stdout, \
            r.stdout
        assert "status: ok" in r.stdout or "NOT" not in r.stdout.split("its descendant")[1], r.stdout
        r = _doctor(bare.pid)
        assert r.returncode == 1 and "is NOT mapped" in r.stdout, r.stdout
        r = _doctor(kids[0], SAFEPICKLE_TARGETS="python*")  # our environment does not matter: its own does
        assert "protected: a Python process" in r.stdout
    finally:
        for p in (init, bare):
            p.stdin.close()
            p.wait(timeout=30)
