"""test_protect.py - never silently unprotected: `safepickle run` refuses (exit 2, says why)
to start a command the preload cannot protect (library ld.so will not load, statically
linked program, set-user-ID program, SAFEPICKLE_MODE=off) unless --allow-unprotected, and
`safepickle doctor` proves protection by running a canary malicious pickle under the exact
LD_PRELOAD / /etc/ld.so.preload value it finds (a bare name resolved by ld.so itself),
exiting 1 with "not protected" when the canary is not refused. Every payload only creates
a marker file; each test checks the marker too."""
import os
import re
import shutil
import subprocess
import tempfile

import pytest

from conftest import BUILD, CLI, LIB, PYTHON, REPO, clean_env, run_py
from test_systemwide import etc_preload_argv, etc_preload_available

HERE = os.path.dirname(os.path.abspath(__file__))


def make_bad(path, marker):
    r = run_py("import os, pickle, sys\nsys.path.insert(0, %r)\nfrom spgen import Reduce, touch_cmd\n"
               "pickle.dump(Reduce(os.system, (touch_cmd(%r),)), open(%r, 'wb'))\n"
               % (HERE, str(marker), str(path)), preload=False)
    assert r.returncode == 0, r.stderr


LOAD = "import pickle, sys\ntry:\n    pickle.load(open(sys.argv[1], 'rb'))\n    print('loaded')\n" \
       "except PermissionError:\n    print('refused')\n"


def run(*args, cli=CLI, env=None, pre=()):
    return subprocess.run([*pre, cli, "run", *map(str, args)], capture_output=True, text=True,
                          env=clean_env(**(env or {})), timeout=300)


# ------------------------------------------------------------------ safepickle run

def test_run_protects_python_and_scripts(tmp_path, marker):
    make_bad(tmp_path / "bad.pkl", marker)
    r = run("--", PYTHON, "-c", LOAD, tmp_path / "bad.pkl")
    assert r.returncode == 0 and r.stdout.strip() == "refused", r.stdout + r.stderr
    # a script whose #! is `/usr/bin/env python3` is checked through to python3, then runs
    script = tmp_path / "load.py"
    script.write_text("#!/usr/bin/env python3\n" + LOAD)
    script.chmod(0o755)
    r = run("--", script, tmp_path / "bad.pkl", env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 0 and r.stdout.strip() == "refused", r.stdout + r.stderr
    assert not marker.exists()


@pytest.fixture(scope="module")
def static_prog(tmp_path_factory):
    """A statically linked program that creates the file named by argv[1]."""
    d = tmp_path_factory.mktemp("static")
    (d / "touch.c").write_text('#include <stdio.h>\nint main(int c, char **v) { FILE *f = fopen(v[1], "w");'
                               ' return !(f && !fclose(f)); }\n')
    r = subprocess.run(["gcc", "-static", "-O1", "-o", str(d / "touch-static"), str(d / "touch.c")],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("no static libc to link with: " + r.stderr[-300:])
    return d / "touch-static"


def test_run_refuses_a_static_program(static_prog, tmp_path, marker):
    r = run("--", static_prog, marker)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "safepickle run: cannot protect %s: %s is statically linked" % (static_prog, static_prog) in r.stderr
    assert "not protected" in r.stderr and "--allow-unprotected" in r.stderr
    assert not marker.exists()  # it did not run
    # the same through a #! script whose interpreter is static
    script = tmp_path / "via.sh"
    script.write_text("#!%s\n" % static_prog)
    script.chmod(0o755)
    r = run("--", script)
    assert r.returncode == 2 and "statically linked" in r.stderr, r.stderr
    # asked for: it runs, with a warning
    r = run("--allow-unprotected", "--", static_prog, marker)
    assert r.returncode == 0, r.stderr
    assert "WARNING: %s runs UNPROTECTED (--allow-unprotected)" % static_prog in r.stderr
    assert marker.exists()


@pytest.fixture
def private_copy():
    """The CLI with its own libsafepickle.so in a world-readable temp dir (so uid 65534 can
    run it, and a test can replace the library)."""
    d = tempfile.mkdtemp(prefix="sp-protect-")
    os.chmod(d, 0o755)
    shutil.copy(CLI, d)
    shutil.copy(LIB, d)
    yield d
    shutil.rmtree(d)


def test_run_refuses_when_the_library_does_not_load(private_copy, tmp_path, marker):
    make_bad(tmp_path / "bad.pkl", marker)
    cli = os.path.join(private_copy, "safepickle")
    # control: the copy protects
    r = run("--", PYTHON, "-c", LOAD, tmp_path / "bad.pkl", cli=cli)
    assert r.returncode == 0 and r.stdout.strip() == "refused", r.stdout + r.stderr
    # a library ld.so cannot load (truncated by a broken copy): it would print "ignored" and go on
    with open(os.path.join(private_copy, "libsafepickle.so"), "r+b") as f:
        f.truncate(512)
    r = run("--", PYTHON, "-c", LOAD, tmp_path / "bad.pkl", cli=cli)
    assert r.returncode == 2 and r.stdout == "", r.stdout + r.stderr
    assert re.search(r"cannot protect %s: LD_PRELOAD=\S+/libsafepickle.so: ld.so did not load it into a new "
                     r"process: ERROR: ld.so: object .* cannot be preloaded" % re.escape(PYTHON), r.stderr), r.stderr
    assert not marker.exists()
    # --allow-unprotected: it runs, unprotected, and says so (the payload runs: the control)
    r = run("--allow-unprotected", "--", PYTHON, "-c", LOAD, tmp_path / "bad.pkl", cli=cli)
    assert "runs UNPROTECTED" in r.stderr and r.stdout.strip() == "loaded", r.stdout + r.stderr
    assert marker.exists()


def test_run_refuses_a_setuid_program(private_copy):
    """ld.so's secure mode ignores LD_PRELOAD paths for a set-user-ID program run by another
    user: as uid 65534, a set-user-ID-root copy of python3 cannot be protected."""
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) not installed")
    suid = os.path.join(private_copy, "python3-suid")
    shutil.copy(PYTHON, suid)
    os.chmod(suid, 0o4755)
    pre = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    cli = os.path.join(private_copy, "safepickle")
    r = run("--", suid, "-c", "print('ran')", cli=cli, pre=pre)
    assert r.returncode == 2 and r.stdout == "", r.stdout + r.stderr
    assert "%s is set-user-ID: ld.so runs it in secure mode and ignores LD_PRELOAD" % suid in r.stderr
    # the same program without the bit is fine
    os.chmod(suid, 0o755)
    r = run("--", suid, "-c", "print('ran')", cli=cli, pre=pre)
    assert r.returncode == 0 and r.stdout.strip() == "ran", r.stderr


def test_run_refuses_mode_off_and_missing_commands(tmp_path, marker):
    make_bad(tmp_path / "bad.pkl", marker)
    r = run("--", PYTHON, "-c", LOAD, tmp_path / "bad.pkl", env={"SAFEPICKLE_MODE": "off"})
    assert r.returncode == 2 and "SAFEPICKLE_MODE=off" in r.stderr and r.stdout == "", r.stderr
    assert not marker.exists()
    r = run("--", "no-such-command-xyz")  # nothing to run: a shell's 127, said plainly
    assert r.returncode == 127 and "no-such-command-xyz: command not found" in r.stderr


def test_run_help_and_man_page_document_allow_unprotected():
    r = subprocess.run([CLI, "run", "--help"], capture_output=True, text=True)
    assert "--allow-unprotected" in r.stdout and "dynamically linked" in r.stdout
    man = open(os.path.join(REPO, "analyzer/cli/safepickle.1")).read()
    assert "allow\\-unprotected" in man and "statically linked" in man


# ------------------------------------------------------------------ safepickle doctor

def doctor(env=None, argv=None):
    e = clean_env(HOME=tempfile.gettempdir(), JUPYTER_DATA_DIR="/nonexistent", **(env or {}))
    return subprocess.run(argv or [CLI, "doctor"], capture_output=True, text=True, env=e, timeout=300)


def test_doctor_bare_name_ld_so_cannot_find():
    """The README's headline command with the library where ld.so does not look."""
    r = doctor({"LD_PRELOAD": "libsafepickle.so"})
    assert r.returncode == 1, r.stdout
    assert "PROBLEM: LD_PRELOAD names libsafepickle.so (libsafepickle.so) but ld.so cannot load it: " \
           "not protected; ld.so said: ERROR: ld.so: object 'libsafepickle.so' from LD_PRELOAD cannot be " \
           "preloaded" in r.stdout, r.stdout
    assert "status: 1 problem found" in r.stdout


def test_doctor_bare_name_resolved_as_ld_so_does():
    """A bare name ld.so can find (here through LD_LIBRARY_PATH) is proven by the canary,
    and the report says which file ld.so loaded."""
    r = doctor({"LD_PRELOAD": "libsafepickle.so", "LD_LIBRARY_PATH": BUILD})
    assert r.returncode == 0, r.stdout
    assert "protected   LD_PRELOAD (libsafepickle.so): ld.so loads %s; a canary malicious pickle was " \
           "refused" % os.path.realpath(LIB) in r.stdout, r.stdout


def test_doctor_preload_that_loads_but_does_not_block(tmp_path):
    """The library loads, but the environment's policy lets the canary through."""
    pol = tmp_path / "allow.json"
    # every verdict allowed and layer 2's behaviour veto off: nothing stops the canary
    pol.write_text('{"schema": 1, "mode": "enforce", "actions": {"malicious": "allow", '
                   '"unscannable": "allow", "suspicious": "allow"}, "layers": {"runtime_behaviour": false}}')
    r = doctor({"LD_PRELOAD": LIB, "SAFEPICKLE_POLICY": pol})
    assert r.returncode == 1, r.stdout
    assert "LD_PRELOAD: ld.so loads %s but a canary malicious pickle was NOT refused (its payload ran): " \
           "not protected" % os.path.realpath(LIB) in r.stdout, r.stdout


@pytest.mark.parametrize("line,ok", [("/nonexistent/libsafepickle.so", False), (None, True)])
def test_doctor_proves_etc_ld_so_preload(tmp_path, line, ok):
    if not etc_preload_available(tmp_path):
        pytest.skip("no private mount namespace with an overlay /etc here (needs CAP_SYS_ADMIN)")
    lib = line or os.path.realpath(LIB)
    argv = etc_preload_argv(tmp_path, lib, "-c", 'exec "$0" doctor', CLI)
    r = doctor(argv=argv)
    if ok:
        assert r.returncode == 0, r.stdout
        assert "protected   /etc/ld.so.preload (%s ): ld.so loads %s; a canary malicious pickle was refused" \
               % (lib, lib) in r.stdout, r.stdout
    else:
        assert r.returncode == 1, r.stdout
        assert "PROBLEM: /etc/ld.so.preload names libsafepickle.so (%s ) but ld.so cannot load it: not " \
               "protected" % lib in r.stdout, r.stdout
