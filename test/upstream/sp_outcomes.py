"""sp_outcomes.py - pytest plugin of test/upstream/upstream.py (loaded with -p sp_outcomes).

Writes one JSON line per test as the suite runs, flushed at once, to $SP_OUTCOMES:
{"start": ID} before a test runs and {"id": ID, "outcome": O} when it is done, O being
passed / failed / error / skipped (xfail counts as skipped) / timeout (pytest-timeout
fired). A test that has a start line and no outcome line is one the suite hung in when it
was killed: the harness reads the file whatever way the suite ended (junit xml is only
written at the end, so a killed suite had none).

ID is the test's file relative to dist-packages (or "safepickle/<path relative to
test/upstream>" for our own suites) and the rest of pytest's node id, so the ids do not
depend on pytest's rootdir.

SIGUSR1 makes faulthandler dump every thread's stack into $SP_STACKS: the harness sends it
before it kills a suite that ran past its time and appends the dump to the suite's log, so
the log shows where it hung.
"""
import faulthandler
import json
import os
import signal

import pytest

DIST = "/usr/lib/python3/dist-packages"
HERE = os.path.dirname(os.path.abspath(__file__))

_out = None
_stacks = None
_reports = {}


def test_id(item):
    path = str(getattr(item, "path", None) or item.fspath)
    if path.startswith(DIST + os.sep):
        rel = os.path.relpath(path, DIST)
    elif path.startswith(HERE + os.sep):
        rel = "safepickle/" + os.path.relpath(path, HERE)
    else:
        rel = path
    rest = item.nodeid.split("::", 1)
    return rel + ("::" + rest[1] if len(rest) > 1 else "")


def _write(rec):
    if _out is not None:
        _out.write(json.dumps(rec) + "\n")
        _out.flush()


def pytest_configure(config):
    global _out
    path = os.environ.get("SP_OUTCOMES")
    if path and _out is None:
        _out = open(path, "a", buffering=1)
    stacks = os.environ.get("SP_STACKS")
    if stacks and hasattr(signal, "SIGUSR1"):
        # a file of its own: fds 1 and 2 are pytest's capture files while a test runs
        global _stacks
        _stacks = open(stacks, "a")
        faulthandler.register(signal.SIGUSR1, file=_stacks, all_threads=True)


def outcome_of(reports):
    """The junit convention: a failed setup/teardown is an error, a failed call a failure."""
    for r in reports:
        if r.failed:
            text = str(r.longrepr or "")
            if "Timeout >" in text or "Failed: Timeout" in text:
                return "timeout"
            return "failed" if r.when == "call" else "error"
    for r in reports:
        if r.skipped:
            return "skipped"
    return "passed"


def why_of(reports):
    """Why a test did not pass, in one line: the first refusal safepickle printed in the
    test's captured output (so a difference names its rule even when the suite is later
    killed and pytest never prints its summary), else the error pytest reports."""
    for r in reports:
        for _, text in getattr(r, "sections", []):
            for line in text.splitlines():
                if line.startswith("safepickle: blocked") or "SafePickleBlocked:" in line:
                    return line.strip()[:400]
    for r in reports:
        if r.failed:
            crash = getattr(r.longrepr, "reprcrash", None)
            return str(crash.message if crash else r.longrepr)[:400]
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    tid = test_id(item)
    _reports[item.nodeid] = []
    _write({"start": tid})
    yield
    reps = _reports.pop(item.nodeid, [])
    rec = {"id": tid, "outcome": outcome_of(reps)}
    why = why_of(reps)
    if why:
        rec["why"] = why
    _write(rec)


def pytest_runtest_logreport(report):
    _reports.setdefault(report.nodeid, []).append(report)


def pytest_collectreport(report):
    # a module that fails to import is one "error" outcome, as junit reports it
    if report.failed:
        _write({"id": "collect:" + str(report.nodeid), "outcome": "error"})
