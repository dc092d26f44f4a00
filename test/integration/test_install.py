"""test_install.py - `make install DESTDIR=... PREFIX=/usr` into a temp root, then the
installed CLI, library, policies, man page and pkg-config file are used from there,
and `make uninstall` removes them again."""
import os
import re
import shutil
import subprocess
import time

import pytest

from conftest import BUILD, PYTHON, REPO, clean_env, run_py

PREFIX = "/usr"
SHIPPED = ["bin/safepickle", "lib/safepickle/libsafepickle.so", "lib/libsafepickle.so", "share/man/man1/safepickle.1",
           "lib/pkgconfig/safepickle.pc", "share/safepickle/policies/default.json"]


def make(*targets, **vars_):
    env = clean_env()
    for k in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL"):
        env.pop(k, None)
    args = ["make", "--no-print-directory", "-C", REPO, "BUILD=" + BUILD]
    args += ["%s=%s" % kv for kv in vars_.items()] + list(targets)
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    dest = tmp_path_factory.mktemp("destdir")
    r = make("install", DESTDIR=dest, PREFIX=PREFIX)
    assert r.returncode == 0, r.stdout + r.stderr
    return dest


def inst(root, rel):
    return os.path.join(str(root), PREFIX.lstrip("/"), rel)


def run_installed(root, *args, env=None):
    # an empty home: doctor's kernelspec listing must not depend on the developer's files
    home = os.path.join(str(root), "home")
    os.makedirs(home, exist_ok=True)
    e = clean_env(HOME=home, JUPYTER_DATA_DIR=os.path.join(home, "jupyter"), **(env or {}))
    e.pop("XDG_DATA_HOME", None)
    return subprocess.run([inst(root, "bin/safepickle"), *map(str, args)], env=e,
                          capture_output=True, text=True, timeout=120)


def commands():
    text = open(os.path.join(REPO, "analyzer/cli/commands.def")).read()
    return re.findall(r'^X\("([a-z-]+)"', text, re.M)


def test_files_installed(root):
    for rel in SHIPPED:
        assert os.path.isfile(inst(root, rel)), rel
    assert os.access(inst(root, "bin/safepickle"), os.X_OK)
    for pol in os.listdir(os.path.join(REPO, "policies")):
        if pol.endswith(".json"):
            assert os.path.isfile(inst(root, "share/safepickle/policies/" + pol)), pol
    # nothing was written outside DESTDIR's PREFIX
    assert sorted(os.listdir(str(root))) == [PREFIX.strip("/")]


def test_pkg_config_gives_the_library(root):
    env = dict(clean_env(), PKG_CONFIG_PATH=inst(root, "lib/pkgconfig"))
    r = subprocess.run(["pkg-config", "--variable=preload", "safepickle"], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == PREFIX + "/lib/safepickle/libsafepickle.so"
    # relocated (DESTDIR) view: the path that exists in the temp root
    r = subprocess.run(["pkg-config", "--define-prefix", "--variable=preload", "safepickle"], env=env,
                       capture_output=True, text=True)
    assert os.path.samefile(r.stdout.strip(), inst(root, "lib/safepickle/libsafepickle.so"))
    r = subprocess.run(["pkg-config", "--modversion", "safepickle"], env=env, capture_output=True, text=True)
    ver = run_installed(root, "--version").stdout.split()[-1]
    assert r.stdout.strip() == ver


def test_installed_cli_and_doctor(root):
    r = run_installed(root, "--version")
    assert r.returncode == 0 and r.stdout.startswith("safepickle ")
    r = run_installed(root, "doctor")
    assert r.returncode == 0, r.stdout + r.stderr
    lib = os.path.realpath(inst(root, "lib/safepickle/libsafepickle.so"))
    assert "library     %s\n" % lib in r.stdout
    assert "loaded, mapped, silent (pass-through)" in r.stdout  # a non-Python program
    assert "python3 under the preload: library mapped" in r.stdout and "status: ok" in r.stdout
    # end to end: a benign pickle loads and a malicious one is refused, with the reason shown
    assert "benign pickle loaded, malicious one refused" in r.stdout
    assert re.search(r"it said: safepickle: blocked /\S+/malicious.pkl: malicious: calls builtins.exec", r.stdout)
    # a shipped policy by name resolves inside the installed tree
    r = run_installed(root, "jupyter", "install", "--prefix", inst(root, "local"), "--policy", "strict")
    assert r.returncode == 0, r.stderr
    spec = open(inst(root, "local/share/jupyter/kernels/python3-safepickle/kernel.json")).read()
    assert lib in spec and os.path.realpath(inst(root, "share/safepickle/policies/strict.json")) in spec


def test_help_and_man_page_cover_every_command(root):
    help_text = run_installed(root, "--help").stdout
    man = open(inst(root, "share/man/man1/safepickle.1")).read()
    for c in commands():
        assert re.search(r"^\s+%s\s" % re.escape(c), help_text, re.M), "--help lacks " + c
        assert re.search(r'^\.SS "safepickle %s\b' % re.escape(c), man, re.M), "man page lacks " + c
    r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", inst(root, "share/man/man1/safepickle.1")],
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_installed_library_blocks_and_passes(root, tmp_path, marker):
    lib = inst(root, "lib/safepickle/libsafepickle.so")
    code = r"""
import os, pickle, sys
sys.path.insert(0, %(here)r)
from spgen import Reduce, touch_cmd
pickle.dump(Reduce(os.system, (touch_cmd(%(marker)r),)), open(%(bad)r, "wb"))
pickle.dump({"a": [1, 2, 3]}, open(%(ok)r, "wb"))
""" % {"here": os.path.dirname(os.path.abspath(__file__)), "marker": str(marker),
       "bad": str(tmp_path / "bad.pkl"), "ok": str(tmp_path / "ok.pkl")}
    assert run_py(code, preload=False).returncode == 0
    load = "import pickle, sys\nprint(pickle.load(open(sys.argv[1], 'rb')))"
    r = subprocess.run([PYTHON, "-c", load, str(tmp_path / "ok.pkl")], capture_output=True, text=True,
                       env=clean_env(LD_PRELOAD=lib))
    assert r.returncode == 0 and r.stdout.strip() == "{'a': [1, 2, 3]}", r.stderr
    r = subprocess.run([PYTHON, "-c", load, str(tmp_path / "bad.pkl")], capture_output=True, text=True,
                       env=clean_env(LD_PRELOAD=lib))
    assert r.returncode != 0 and "PermissionError" in r.stderr and "safepickle" in r.stderr, r.stderr
    assert not marker.exists()
    # control: the same file runs its payload without the preload
    subprocess.run([PYTHON, "-c", load, str(tmp_path / "bad.pkl")], capture_output=True,
                   env=clean_env())
    assert marker.exists()


def test_staged_install_prints_the_exact_preload_value(tmp_path):
    """With a DESTDIR (or any prefix ld.so does not search) the bare name cannot be promised:
    install prints the exact LD_PRELOAD value, the one pkg-config gives."""
    for prefix in ("/usr", "/opt/sp"):
        dest = tmp_path / prefix.strip("/")
        r = make("install", DESTDIR=dest, PREFIX=prefix)
        assert r.returncode == 0, r.stderr
        value = re.findall(r"^    LD_PRELOAD=(\S+)$", r.stdout, re.M)
        assert value == [prefix + "/lib/safepickle/libsafepickle.so"], r.stdout
        env = dict(clean_env(), PKG_CONFIG_PATH=str(dest) + prefix + "/lib/pkgconfig")
        pc = subprocess.run(["pkg-config", "--variable=preload", "safepickle"], env=env, capture_output=True,
                            text=True)
        assert pc.stdout.strip() == value[0]
        # the link ld.so finds by name (in PREFIX/lib) points at the same library
        assert os.path.samefile(str(dest) + prefix + "/lib/libsafepickle.so", str(dest) + value[0])


def test_uninstall_removes_everything(root, tmp_path):
    dest = tmp_path / "again"
    assert make("install", DESTDIR=dest, PREFIX=PREFIX).returncode == 0
    r = make("uninstall", DESTDIR=dest, PREFIX=PREFIX)
    assert r.returncode == 0, r.stderr
    left = [os.path.join(d, f) for d, _, fs in os.walk(str(dest)) for f in fs]
    assert left == []
    assert not os.path.exists(inst(dest, "lib/safepickle"))
    assert not os.path.exists(inst(dest, "share/safepickle"))


def test_doctor_policy_and_pid(root, tmp_path):
    lib = inst(root, "lib/safepickle/libsafepickle.so")
    bad = tmp_path / "broken.json"
    bad.write_text('{"mode": "enforce", "no_such_key": 1}')
    r = run_installed(root, "doctor", env={"SAFEPICKLE_POLICY": bad})
    assert r.returncode == 1 and "PROBLEM: policy %s" % bad in r.stdout and "byte" in r.stdout, r.stdout
    strict = inst(root, "share/safepickle/policies/strict.json")
    r = run_installed(root, "doctor", env={"SAFEPICKLE_POLICY": strict})
    assert r.returncode == 0 and "policy      %s (from SAFEPICKLE_POLICY): valid" % strict in r.stdout
    r = run_installed(root, "doctor", env={"SAFEPICKLE_MODE": "off"})
    assert r.returncode == 1 and "SAFEPICKLE_MODE=off" in r.stdout
    assert "malicious test pickle was NOT refused" in r.stdout
    # a python under the installed preload, and one without it
    wait = "import sys; sys.stdin.readline()"
    guarded = subprocess.Popen([PYTHON, "-c", wait], stdin=subprocess.PIPE,
                               env=clean_env(LD_PRELOAD=lib, SAFEPICKLE_POLICY=strict))
    plain = subprocess.Popen([PYTHON, "-c", wait], stdin=subprocess.PIPE, env=clean_env())
    shell = subprocess.Popen(["/bin/sh", "-c", "read x"], stdin=subprocess.PIPE, env=clean_env(LD_PRELOAD=lib))
    try:
        time.sleep(0.5)  # let each process get past exec and its constructors
        r = run_installed(root, "doctor", "--pid", guarded.pid)
        assert r.returncode == 0, r.stdout
        assert "preload mapped from %s" % os.path.realpath(lib) in r.stdout
        assert "its policy: %s" % strict in r.stdout and "protected: a Python process" in r.stdout
        r = run_installed(root, "doctor", "--pid", plain.pid)
        assert r.returncode == 1 and "is NOT mapped" in r.stdout
        r = run_installed(root, "doctor", "--pid", shell.pid)  # an init-like parent: nothing to protect in it
        assert r.returncode == 0 and "not a Python process" in r.stdout and "runs Python now" in r.stdout
        assert run_installed(root, "doctor", "--pid", "x1").returncode == 2
    finally:
        for p in (guarded, plain, shell):
            p.stdin.close()
            p.wait(timeout=30)


def test_doctor_reports_a_broken_library(root, tmp_path):
    """A copy of the install whose library is not a shared object: doctor must say so."""
    copy = tmp_path / "copy"
    shutil.copytree(inst(root, ""), copy, symlinks=True)
    (copy / "lib/safepickle/libsafepickle.so").write_bytes(b"\x7fELF not really")
    r = subprocess.run([str(copy / "bin/safepickle"), "doctor"], capture_output=True, text=True,
                       env=clean_env(HOME=str(tmp_path), JUPYTER_DATA_DIR=str(tmp_path / "j")))
    assert r.returncode == 1, r.stdout
    assert "PROBLEM: /bin/grep under LD_PRELOAD=%s" % os.path.realpath(copy / "lib/safepickle/libsafepickle.so") in r.stdout
    assert "cannot be preloaded" in r.stdout
