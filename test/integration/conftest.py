"""conftest.py - shared fixtures for safepickle's integration tests.

Every test runs real loaders in a fresh /usr/bin/python3 subprocess, optionally
under the preload, and checks outcomes (marker files, exit codes, values).
SAFEPICKLE_BUILD selects the build directory (default: <repo>/build)."""
import atexit
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


# The preload's persistent verdict cache: one private directory per test session,
# so runs never see each other's verdicts (a test may still set its own).
SESSION_CACHE = tempfile.mkdtemp(prefix="safepickle-cache-")
atexit.register(shutil.rmtree, SESSION_CACHE, True)


def clean_env(**extra):
    """The environment for a child: no inherited preload or safepickle settings."""
    env = {k: v for k, v in os.environ.items()
           if k != "LD_PRELOAD" and not k.startswith("SAFEPICKLE_")}
    env["SAFEPICKLE_CACHE"] = SESSION_CACHE
    env.setdefault("OMP_NUM_THREADS", "1")
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


def run_cli(*args, env=None, timeout=300, input=None):
    e = clean_env(**(env or {}))
    return subprocess.run([CLI, *map(str, args)], env=e, capture_output=True, text=True,
                          timeout=timeout, input=input)


@pytest.fixture
def marker(tmp_path):
    """A path a payload would create. Tests assert it does not exist afterwards."""
    return tmp_path / "PAYLOAD_RAN"
