"""test_bounded_run.py - conftest.run_bounded, the runner for children that may hang.

A hang in CI is seen once and lost: a plain subprocess timeout shows neither where the
child hung nor which descendant kept its pipes open (the loky workers of
test_memmap_temporary did, past the parent's own exit). run_bounded describes every process
of the child's session (native stacks by gdb, Python stacks by faulthandler), kills them
all and raises Hung with that description.
"""
import pytest

from conftest import PYTHON, Hung, clean_env, run_bounded

HANG = r"""
import os, sys, time
def parked_in_the_grandchild():
    time.sleep(600)
def parked_in_the_child():
    time.sleep(600)
print("started", flush=True)
if os.fork() == 0:            # the grandchild keeps stdout and stderr open
    parked_in_the_grandchild()
parked_in_the_child()
"""


def test_hang_is_described_and_killed():
    with pytest.raises(Hung) as e:
        run_bounded([PYTHON, "-c", HANG], env=clean_env(), timeout=5)
    msg = str(e.value)
    assert msg.count("--- pid ") == 2, msg          # the child and the grandchild
    assert "started" in msg, msg                    # what it printed before the hang
    # Python stacks of both (faulthandler on SIGABRT) and a native stack (gdb)
    assert "parked_in_the_grandchild" in msg and "parked_in_the_child" in msg, msg
    assert "#0 " in msg, msg


def test_ended_child_is_a_completed_process():
    r = run_bounded([PYTHON, "-c", "import sys; print(sys.stdin.read()[::-1]); sys.exit(3)"],
                    env=clean_env(), input=b"abc", timeout=60)
    assert (r.returncode, r.stdout) == (3, b"cba\n")
