#!/usr/bin/env python3
"""upstream.py - runs the Debian-packaged upstream test suites of joblib, numpy, scipy,
pandas and scikit-learn twice, plainly and under the preload (LD_PRELOAD), and compares
the outcome of every test (pytest junit xml). Any difference not listed with its reason
in expected.tsv fails the run; so does an expected difference that no longer happens.

    upstream.py [--quick] [--preload build/libsafepickle.so] [--out DIR] [--only NAME]

--quick runs the fixed subset `make test` runs (a few minutes); the default is every suite.
The preload's audit log (every blocked or warned file) is summarised too: a test can
pass while a load it made was refused, so each refusal is listed with its rule.
"""
import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
DIST = "/usr/lib/python3/dist-packages"
PYTHON = "/usr/bin/python3"

# name, quick?, pytest arguments relative to DIST (a -k expression may follow)
SUITES = [
    ("joblib-persistence", True, ["joblib/test/test_numpy_pickle.py"]),
    ("joblib-memory", False, ["joblib/test/test_memory.py", "joblib/test/test_store_backends.py"]),
    ("joblib-parallel", False, ["joblib/test/test_parallel.py"]),
    ("joblib-memmapping", False, ["joblib/test/test_memmapping.py"]),
    ("numpy-format", False, ["numpy/lib/tests/test_format.py"]),
    ("numpy-io", False, ["numpy/lib/tests/test_io.py"]),
    ("numpy-pickling", True, ["numpy/core/tests", "-k", "pickl"]),
    ("scipy-io", False, ["scipy/io"]),
    ("scipy-stats-pickling", False, ["scipy/stats/tests", "-k", "pickl"]),
    ("pandas-pickle", False, ["pandas/tests/io/test_pickle.py"]),
    ("sklearn-base", True, ["sklearn/tests/test_base.py"]),
    ("sklearn-pipeline", False, ["sklearn/tests/test_pipeline.py"]),
    ("sklearn-search", False, ["sklearn/model_selection/tests/test_search.py"]),
]


def pytest_args(spec):
    out = []
    for a in spec:
        out.append(os.path.join(DIST, a) if not a.startswith("-") and "/" in a else a)
    return out


def outcomes(xml_path):
    """test id -> passed / failed / error / skipped (xfail counts as skipped)."""
    res = {}
    if not os.path.exists(xml_path):
        return res
    for tc in ET.parse(xml_path).getroot().iter("testcase"):
        tid = "%s::%s" % (tc.get("classname", ""), tc.get("name", ""))
        kind = "passed"
        for child in tc:
            if child.tag in ("failure", "error", "skipped"):
                kind = {"failure": "failed"}.get(child.tag, child.tag)
                break
        # a parametrised id may repeat when collected twice; keep the worst
        if res.get(tid) not in ("failed", "error"):
            res[tid] = kind
    return res


def run_suite(name, spec, out_dir, preload, timeout):
    xml = os.path.join(out_dir, name + ".xml")
    log = os.path.join(out_dir, name + ".out")
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    env["PYTHONHASHSEED"] = "0"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    audit = None
    if preload:
        audit = os.path.join(out_dir, name + ".audit.jsonl")
        env["LD_PRELOAD"] = preload
        env["SAFEPICKLE_LOG"] = audit
    cmd = [PYTHON, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-o", "junit_family=xunit1",
           "--junitxml=" + xml] + pytest_args(spec)
    cwd = tempfile.mkdtemp(prefix="sp-upstream-")
    t0 = time.monotonic()
    with open(log, "w") as f:
        try:
            rc = subprocess.run(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT,
                                timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    dt = time.monotonic() - t0
    subprocess.run(["rm", "-rf", cwd])
    return outcomes(xml), rc, dt, audit


def load_expected(path):
    exp = {}
    with open(path) as f:
        for ln, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split("\t")
            if len(parts) < 3 or not parts[2].startswith(("malicious: ", "known-fp: ")):
                sys.exit("%s:%d: want TEST-ID<TAB>PRELOAD-OUTCOME<TAB>malicious: REASON | known-fp: REASON"
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--preload", default=os.path.join(HERE, "..", "..", "build", "libsafepickle.so"))
    ap.add_argument("--out", default=None)
    ap.add_argument("--only", action="append", default=[])
    ap.add_argument("--timeout", type=int, default=1800)
    ap.add_argument("--expected", default=os.path.join(HERE, "expected.tsv"))
    a = ap.parse_args()
    preload = os.path.abspath(a.preload)
    if not os.path.exists(preload):
        sys.exit("upstream: no preload at %s (make build)" % preload)
    out = a.out or tempfile.mkdtemp(prefix="sp-upstream-out-")
    os.makedirs(os.path.join(out, "plain"), exist_ok=True)
    os.makedirs(os.path.join(out, "preload"), exist_ok=True)
    expected = load_expected(a.expected)
    suites = [s for s in SUITES if (not a.quick or s[1]) and (not a.only or s[0] in a.only)]
    bad = 0
    total = collections.Counter()
    seen_expected = set()
    refusals = []
    for name, _, spec in suites:
        base, rc0, t0, _ = run_suite(name, spec, os.path.join(out, "plain"), None, a.timeout)
        pre, rc1, t1, audit = run_suite(name, spec, os.path.join(out, "preload"), preload, a.timeout)
        if not base or not pre:
            print("upstream: %s: no results (plain rc=%s, preload rc=%s; see %s)" % (name, rc0, rc1, out))
            bad += 1
            continue
        diffs = []
        for tid in sorted(set(base) | set(pre)):
            b, p = base.get(tid, "absent"), pre.get(tid, "absent")
            total[(name, b)] += 1
            if tid in expected:
                seen_expected.add(tid)
                want, why = expected[tid]
                if p != want:
                    diffs.append("%s: plain %s, preload %s, expected %s (%s)" % (tid, b, p, want, why))
                continue
            if b != p:
                diffs.append("%s: plain %s, preload %s" % (tid, b, p))
        recs = audit_summary(audit)
        refusals += [(name,) + r for r in recs]
        print("upstream: %-22s %5d tests, %3d differ, %3d refusals/warnings in the audit log, "
              "plain %.0f s, preload %.0f s" % (name, len(base), len(diffs), len(recs), t0, t1))
        for d in diffs:
            print("  DIFF " + d)
        bad += len(diffs)
    for tid, (want, why) in sorted(expected.items()):
        if tid not in seen_expected and not a.quick and not a.only:
            print("  STALE expected entry (test not run): %s" % tid)
            bad += 1
    if refusals:
        print("upstream: files refused or warned under the preload (suite, action, verdict, layer, rule, message, file):")
        for r in sorted(set(refusals)):
            print("  " + " | ".join(str(x) for x in r))
    fps = sorted(t for t in seen_expected if expected[t][1].startswith("known-fp"))
    if fps:
        print("upstream: %d KNOWN FALSE POSITIVES still to fix (expected.tsv, known-fp):" % len(fps))
        for t in fps:
            print("  KNOWN-FP %s: %s" % (t, expected[t][1]))
    print("upstream: %d differences not in %s; results in %s" % (bad, os.path.basename(a.expected), out))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
