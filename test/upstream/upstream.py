#!/usr/bin/env python3
"""upstream.py - runs the Debian-packaged upstream test suites of joblib, numpy, scipy,
pandas and scikit-learn twice, plainly and under the preload (LD_PRELOAD), and compares
the outcome of every test. Any difference not listed with its reason
in expected.tsv fails the run; so does an expected difference that no longer happens.

    upstream.py [--quick] [--preload build/libsafepickle.so] [--out DIR] [--only NAME]
                [--timeout SECONDS-PER-SUITE] [--test-timeout SECONDS-PER-TEST] [--results FILE]
                [--reuse --out DIR]   (compare an earlier run's outcomes again, run nothing)

--quick runs the fixed subset `make test` runs (a few minutes); the default is every suite.
Every run is bounded: pytest-timeout fails a test that runs past --test-timeout (its stack
goes into the log), and a suite that runs past --timeout is killed with every process it
started (stacks dumped first); the tests that had not finished are reported as hung. The
outcomes come from sp_outcomes.py, written test by test, so a killed suite still has them.
Per-suite counts go into results.md's `bench:upstream` section (--results '' for none).
The preload's audit log (every blocked or warned file) is summarised too: a test can
pass while a load it made was refused, so each refusal is listed with its rule.
"""
import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "bench"))
from results import read_section, write_section  # noqa: E402  (the one writer of results.md)

DIST = "/usr/lib/python3/dist-packages"
PYTHON = "/usr/bin/python3"

# name, quick?, pytest arguments relative to DIST (a -k expression may follow)
SUITES = [
    ("joblib-persistence", True, ["joblib/test/test_numpy_pickle.py"]),
    ("joblib-memory", False, ["joblib/test/test_memory.py", "joblib/test/test_store_backends.py"]),
    # Deselected: the tests that run a script under joblib's own 10 s deadline
    # (check_subprocess_call(timeout=10)) with process workers. The script alone takes 10 s
    # on the shared 2-core machine plainly (10.05 s measured), so they fail, or hang while
    # orphaned loky workers hold the pipe for loky's 300 s idle timeout, without the
    # preload, depending on the load: no ground truth here. They ship functions by value
    # (cloudpickle), which joblib-memory's jupyter tests and
    # test_parallel_with_interactively_defined_functions_default_backend (no deadline) cover.
    ("joblib-parallel", False, ["joblib/test/test_parallel.py", "-k",
                                "not unpicklable_functions_in_args and not "
                                "(interactively_defined_functions and not default_backend)"]),
    ("joblib-memmapping", False, ["joblib/test/test_memmapping.py"]),
    ("numpy-format", False, ["numpy/lib/tests/test_format.py"]),
    ("numpy-io", False, ["numpy/lib/tests/test_io.py"]),
    ("numpy-pickling", True, ["numpy/core/tests", "-k", "pickl"]),
    ("scipy-io", False, ["scipy/io"]),
    # quick: 25 tests, about 15 s a run; it holds the binder class (numpy.vectorize in
    # scipy.stats distributions' __dict__, analyzer/README.md @partial)
    ("scipy-stats-pickling", True, ["scipy/stats/tests", "-k", "pickl"]),
    ("pandas-pickle", False, ["pandas/tests/io/test_pickle.py"]),
    ("sklearn-base", True, ["sklearn/tests/test_base.py"]),
    ("sklearn-pipeline", False, ["sklearn/tests/test_pipeline.py"]),
    ("sklearn-search", False, ["sklearn/model_selection/tests/test_search.py"]),
    # process-parallel scikit-learn (loky, multiprocessing): GridSearchCV inside
    # cross_validate(n_jobs=2), RandomizedSearchCV(n_jobs=2), every joblib backend
    ("sklearn-parallel", False, ["sklearn/model_selection/tests/test_validation.py::test_cross_validate_many_jobs",
                                 "sklearn/linear_model/tests/test_sgd.py", "sklearn/tests/test_config.py",
                                 "-k", "many_jobs or multi_core_gridsearch or for_all_backends or threadsafe_joblib"]),
    # dask's local cluster (worker processes and nannies that unpickle what the client sends)
    ("dask-local-cluster", False, ["distributed/deploy/tests/test_local.py",
                                   "distributed/protocol/tests/test_pickle.py"]),
    # what upstream does not test literally: GridSearchCV(n_jobs=2), dask and joblib on a
    # LocalCluster of processes (test/upstream/test_parallel_real.py, real libraries only)
    ("parallel-real", False, ["safepickle/test_parallel_real.py"]),
]


def pytest_args(spec):
    out = []
    for a in spec:
        if a.startswith("safepickle/"):
            out.append(os.path.join(HERE, a[len("safepickle/"):]))
        elif not a.startswith("-") and "/" in a:
            out.append(os.path.join(DIST, a))
        else:
            out.append(a)
    return out


WHY = {}  # (outcomes file, test id) -> the one-line reason sp_outcomes.py recorded


def outcomes(path):
    """test id -> passed / failed / error / skipped / timeout / hung, from sp_outcomes.py's
    lines: a test that started and never got an outcome line is one the suite hung in."""
    res, started = {}, []
    if not os.path.exists(path):
        return res
    with open(path) as f:
        for line in f:
            try:
                r = json.loads(line)
            except ValueError:
                continue  # a line cut by the kill
            if "start" in r:
                started.append(r["start"])
            elif "id" in r:
                # a parametrised id may repeat when collected twice; keep the worst
                if res.get(r["id"]) not in ("failed", "error", "timeout"):
                    res[r["id"]] = r["outcome"]
                    if r.get("why"):
                        WHY[(path, r["id"])] = r["why"]
    for tid in started:
        res.setdefault(tid, "hung")
    return res


def tagged_pids(tag):
    """Processes (left) from a suite run: every one carries the run's tag in its environment."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/environ" % d, "rb") as f:
                if ("SP_UPSTREAM_TAG=" + tag).encode() in f.read().split(b"\0"):
                    pids.append(int(d))
        except OSError:
            continue
    return pids


def kill_tagged(tag):
    """SIGKILL whatever the suite left (its workers, clusters, pools); returns how many."""
    n = 0
    for _ in range(5):
        pids = [p for p in tagged_pids(tag) if p != os.getpid()]
        if not pids:
            break
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
                n += 1
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    return n


def run_suite(name, spec, out_dir, preload, a):
    """One run of a suite. Bounded: pytest-timeout fails a test after a.test_timeout seconds
    (stack dumped into the log); past a.timeout the whole suite gets SIGUSR1 (faulthandler
    dumps every thread) and then SIGKILL, with every process it started."""
    res = os.path.join(out_dir, name + ".jsonl")
    log = os.path.join(out_dir, name + ".out")
    stacks = os.path.join(out_dir, name + ".stacks")
    for f in (res, log, stacks):
        if os.path.exists(f):
            os.unlink(f)
    tag = "%s-%d-%d" % (name, os.getpid(), time.monotonic_ns())
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    env["PYTHONHASHSEED"] = "0"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONPATH"] = HERE
    env["SP_OUTCOMES"] = res
    env["SP_STACKS"] = stacks
    env["SP_UPSTREAM_TAG"] = tag
    audit = None
    if preload:
        audit = os.path.join(out_dir, name + ".audit.jsonl")
        if os.path.exists(audit):
            os.unlink(audit)
        env["LD_PRELOAD"] = preload
        env["SAFEPICKLE_LOG"] = audit
    cmd = [PYTHON, "-m", "pytest", "-p", "no:cacheprovider", "-p", "sp_outcomes", "-q",
           "--rootdir=" + DIST, "--timeout=%d" % a.test_timeout, "-o", "timeout_method=signal",
           ] + pytest_args(spec)
    cwd = tempfile.mkdtemp(prefix="sp-upstream-")
    t0 = time.monotonic()
    timed_out = False
    with open(log, "w") as f:
        p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT,
                             start_new_session=True)
        try:
            rc = p.wait(timeout=a.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            f.write("\nupstream.py: suite ran past %d s: stacks (SIGUSR1), then SIGKILL\n" % a.timeout)
            f.flush()
            os.kill(p.pid, signal.SIGUSR1)
            try:
                rc = p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                rc = p.wait()
            rc = "killed after %d s" % a.timeout
            if os.path.exists(stacks):
                with open(stacks) as st:
                    f.write(st.read())
    leftover = kill_tagged(tag)
    dt = time.monotonic() - t0
    subprocess.run(["rm", "-rf", cwd])
    with open(os.path.join(out_dir, name + ".meta.json"), "w") as f:
        json.dump({"rc": rc, "secs": dt, "timed_out": timed_out, "leftover": leftover, "tag": tag,
                   "commit": git_head(), "date": time.strftime("%Y-%m-%d", time.gmtime())}, f)
    return Run(outcomes(res), rc, dt, audit, timed_out, leftover, log, tag,
               time.strftime("%Y-%m-%d", time.gmtime()) + " " + git_head())


def reuse_suite(name, out_dir):
    """A run's results as an earlier run left them in out_dir (--reuse: compare again, e.g.
    after expected.tsv changed, without running the suite)."""
    with open(os.path.join(out_dir, name + ".meta.json")) as f:
        m = json.load(f)
    audit = os.path.join(out_dir, name + ".audit.jsonl")
    return Run(outcomes(os.path.join(out_dir, name + ".jsonl")), m["rc"], m["secs"],
               audit if os.path.exists(audit) else None, m["timed_out"], m["leftover"],
               os.path.join(out_dir, name + ".out"), m["tag"], m.get("date", "?") + " " + m.get("commit", "?"))


Run = collections.namedtuple("Run", "res rc secs audit timed_out leftover log tag measured")


def load_expected(path):
    exp = {}
    with open(path) as f:
        for ln, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split("\t")
            if len(parts) < 3 or not parts[2].startswith(("malicious: ", "policy: ", "known-fp: ")):
                sys.exit("%s:%d: want TEST-ID<TAB>PRELOAD-OUTCOME<TAB>malicious: | policy: | known-fp: REASON"
                         % (path, ln))
            exp[parts[0]] = (parts[1], parts[2])
    return exp


def audit_summary(path):
    recs = []
    if path and os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    r = json.loads(line)
                except ValueError:
                    continue
                if r.get("action") in ("block", "warn"):
                    rule = (r.get("reasons") or [{}])[0]
                    recs.append((r.get("action"), r.get("verdict"), r.get("layer"),
                                 rule.get("rule", "-"), rule.get("msg", "-")[:160],
                                 os.path.basename(r.get("path") or "-")))
    return recs


RESULTS = os.path.join(HERE, "..", "bench", "results.md")
COLS = ["suite", "tests", "plain passed/failed/skipped", "differences", "expected (malicious/policy/known-fp)",
        "unexpected", "hung or timed out (plain/preload)", "plain s", "preload s", "measured"]


def write_results(path, rows, a):
    """Rewrites only this script's section of results.md; rows of suites not run this time stay."""
    old = {}
    for line in (read_section("upstream", path) or "").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == len(COLS) and cells[0] not in ("suite", "") and not cells[0].startswith("-"):
            old[cells[0]] = cells
    old.update(rows)
    order = [s[0] for s in SUITES]
    lines = ["", "## Upstream suites, plain and under the preload (`make upstream`, test/upstream/upstream.py)",
             "", "Every test's outcome plainly and under the preload (`tests`: distinct test ids of both runs;",
             "`differences`: tests whose outcome differs; `expected`: those listed in",
             "test/upstream/expected.tsv, `malicious:` a deliberately malicious file, `policy:` code shipped",
             "by value (a code object) that the default policy refuses by design, `known-fp:` a false",
             "positive owned by another area; `unexpected`: the rest, each a failure of the run).",
             "Bounds: %d s per test (pytest-timeout), %d s per suite run (then killed, unfinished tests"
             % (a.test_timeout, a.timeout), "count as hung). Written by upstream.py; `measured`: date and commit.", "",
             "| " + " | ".join(COLS) + " |", "|" + "---|" * len(COLS)]
    for name in sorted(old, key=lambda n: (order.index(n) if n in order else len(order), n)):
        lines.append("| " + " | ".join(old[name]) + " |")
    write_section("upstream", "\n".join(lines) + "\n", path=path)


def git_head():
    r = subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return r.stdout.strip() or "?"


def compare(name, base, pre, expected, seen_expected):
    """(unexpected differences, expected differences that happened as listed) of one suite."""
    diffs, exp_hit = [], collections.Counter()
    for tid in sorted(set(base.res) | set(pre.res)):
        b, p = base.res.get(tid, "absent"), pre.res.get(tid, "absent")
        if tid in expected:
            seen_expected.add(tid)
            want, why = expected[tid]
            if p != want:
                diffs.append("%s: plain %s, preload %s, expected %s (%s)" % (tid, b, p, want, why))
            elif b != p:
                exp_hit[why.split(":")[0]] += 1
            continue
        if b != p:
            why = WHY.get((os.path.join(os.path.dirname(pre.log), name + ".jsonl"), tid))
            diffs.append("%s: plain %s, preload %s%s" % (tid, b, p, "\n      why: " + why if why else ""))
    return diffs, exp_hit


def hung(run):
    return sorted(t for t, o in run.res.items() if o in ("hung", "timeout"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--preload", default=os.path.join(HERE, "..", "..", "build", "libsafepickle.so"))
    ap.add_argument("--out", default=None)
    ap.add_argument("--only", action="append", default=[])
    ap.add_argument("--timeout", type=int, default=2400, help="seconds per suite run")
    ap.add_argument("--test-timeout", type=int, default=180, help="seconds per test (pytest-timeout)")
    ap.add_argument("--expected", default=os.path.join(HERE, "expected.tsv"))
    ap.add_argument("--reuse", action="store_true",
                    help="compare the runs an earlier call left in --out again instead of running")
    ap.add_argument("--results", default=RESULTS, help="results.md to write the counts to ('' = none)")
    a = ap.parse_args()
    preload = os.path.abspath(a.preload)
    if not os.path.exists(preload):
        sys.exit("upstream: no preload at %s (make build)" % preload)
    if subprocess.run([PYTHON, "-c", "import pytest_timeout"]).returncode != 0:
        sys.exit("upstream: pytest-timeout missing (python3-pytest-timeout; make deps)")
    unknown = [n for n in a.only if n not in [s[0] for s in SUITES]]
    if unknown:
        sys.exit("upstream: no suite %s (suites: %s)" % (", ".join(unknown), " ".join(s[0] for s in SUITES)))
    if a.reuse and not a.out:
        sys.exit("upstream: --reuse needs --out DIR of an earlier run")
    out = a.out or tempfile.mkdtemp(prefix="sp-upstream-out-")
    os.makedirs(os.path.join(out, "plain"), exist_ok=True)
    os.makedirs(os.path.join(out, "preload"), exist_ok=True)
    expected = load_expected(a.expected)
    suites = [s for s in SUITES if (not a.quick or s[1]) and (not a.only or s[0] in a.only)]
    bad = 0
    seen_expected = set()
    refusals = []
    rows = {}
    skipped = []
    for name, _, spec in suites:
        if a.reuse:
            if not os.path.exists(os.path.join(out, "preload", name + ".meta.json")):
                skipped.append(name)
                continue
            base, pre = reuse_suite(name, os.path.join(out, "plain")), reuse_suite(name, os.path.join(out, "preload"))
        else:
            base = run_suite(name, spec, os.path.join(out, "plain"), None, a)
            pre = run_suite(name, spec, os.path.join(out, "preload"), preload, a)
        if not base.res or not pre.res:
            print("upstream: %s: no results (plain rc=%s, preload rc=%s; see %s, %s)"
                  % (name, base.rc, pre.rc, base.log, pre.log))
            bad += 1
            continue
        diffs, exp_hit = compare(name, base, pre, expected, seen_expected)
        recs = audit_summary(pre.audit)
        refusals += [(name,) + r for r in recs]
        kinds = collections.Counter(base.res.values())
        print("upstream: %-22s %5d tests, %3d differ (%d expected), %3d refusals/warnings in the audit log, "
              "plain %.0f s, preload %.0f s" % (name, len(set(base.res) | set(pre.res)), len(diffs) + sum(exp_hit.values()),
                                               sum(exp_hit.values()), len(recs), base.secs, pre.secs))
        for d in diffs:
            print("  DIFF " + d)
        for which, run in (("plain", base), ("preload", pre)):
            for t in hung(run):
                print("  HUNG (%s, %s) %s" % (which, run.res[t], t))
            if run.timed_out:
                print("  SUITE KILLED (%s): ran past %d s; %d tests finished; stacks in %s"
                      % (which, a.timeout, sum(1 for o in run.res.values() if o != "hung"), run.log))
                bad += 1
            if run.leftover:
                print("  %d processes left by the %s run, killed" % (run.leftover, which))
        bad += len(diffs)
        rows[name] = [name, str(len(set(base.res) | set(pre.res))),
                      "%d/%d/%d" % (kinds["passed"], kinds["failed"] + kinds["error"], kinds["skipped"]),
                      str(len(diffs) + sum(exp_hit.values())),
                      "%d/%d/%d" % (exp_hit["malicious"], exp_hit["policy"], exp_hit["known-fp"]), str(len(diffs)),
                      "%d/%d%s" % (len(hung(base)), len(hung(pre)),
                                   " (suite killed)" if base.timed_out or pre.timed_out else ""),
                      "%.0f" % base.secs, "%.0f" % pre.secs, pre.measured]
    for tid, (want, why) in sorted(expected.items()):
        if tid not in seen_expected and not a.quick and not a.only and not skipped:
            print("  STALE expected entry (test not run): %s" % tid)
            bad += 1
    if refusals:
        print("upstream: files refused or warned under the preload (suite, action, verdict, layer, rule, message, file):")
        for r in sorted(set(refusals)):
            print("  " + " | ".join(str(x) for x in r))
    for kind, what in (("policy", "REFUSED BY THE POLICY BY DESIGN"), ("known-fp", "KNOWN FALSE POSITIVES still to fix")):
        ts = sorted(t for t in seen_expected if expected[t][1].startswith(kind + ":"))
        if ts:
            print("upstream: %d %s (expected.tsv, %s):" % (len(ts), what, kind))
            for t in ts:
                print("  %s %s: %s" % (kind.upper(), t, expected[t][1]))
    if a.results and rows:
        write_results(a.results, rows, a)
        print("upstream: counts written to %s" % os.path.normpath(a.results))
    print("upstream: %d differences not in %s; results in %s" % (bad, os.path.basename(a.expected), out))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
