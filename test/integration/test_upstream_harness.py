"""test_upstream_harness.py - test/upstream/upstream.py ends in bounded time whatever a suite
does: a test that hangs is failed by pytest-timeout and reported as `timeout`, a suite that
cannot be interrupted is killed at the suite timeout with the test it hung in reported as
`hung` (outcomes are written test by test, so they survive the kill), and every process the
suite started is killed with it."""
import argparse
import os
import sys
import textwrap
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "upstream"))
import upstream  # noqa: E402

import pytest_timeout  # noqa: E402,F401  (python3-pytest-timeout, test/install-deps.sh)

SUITE = textwrap.dedent("""
    import signal, subprocess, sys, time

    def test_a_passes():
        assert True

    def test_b_sleeps_forever():
        time.sleep(1000)

    def test_c_fails():
        assert False

    def test_d_uninterruptible_with_a_child():
        # a worker the suite leaves behind, and SIGALRM (pytest-timeout's signal) blocked
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)"])
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(1000)

    def test_e_never_reached():
        pass
""")


def test_hung_suite_is_bounded_and_reported(tmp_path):
    f = tmp_path / "test_fake_suite.py"
    f.write_text(SUITE)
    out = tmp_path / "out"
    out.mkdir()
    a = argparse.Namespace(test_timeout=3, timeout=25)
    t = time.monotonic()
    run = upstream.run_suite("fake", [str(f)], str(out), None, a)
    assert time.monotonic() - t < 60
    res = {k.rsplit("::", 1)[1]: v for k, v in run.res.items()}
    assert res == {"test_a_passes": "passed", "test_b_sleeps_forever": "timeout", "test_c_fails": "failed",
                   "test_d_uninterruptible_with_a_child": "hung"}, run.res
    why = {k.rsplit("::", 1)[1]: v for (f, k), v in upstream.WHY.items() if f == str(out / "fake.jsonl")}
    assert "assert False" in why["test_c_fails"] and "Timeout" in why["test_b_sleeps_forever"], why
    assert run.timed_out and "killed" in str(run.rc)
    assert run.leftover >= 1                      # the child (and pytest, if it outlived SIGUSR1)
    assert upstream.tagged_pids(run.tag) == []   # nothing of the suite is left running
    assert "test_d_uninterruptible_with_a_child" in open(run.log).read()  # the stacks were dumped
