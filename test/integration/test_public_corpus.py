"""test_public_corpus.py - safepickle's verdicts on other projects' sample files
(../shared/corpus/public, read in place, never copied) compared with that corpus's own
labels.tsv. Agreement: `malicious` -> blocked by the default policy; `benign` -> not
blocked; `not-a-pickle` -> safe. Every disagreement must be one of conftest's
CORPUS_EXPLAINED (the same list, with the same reasons, is the README's table in section
classifier), so a new
disagreement, or an explained one that went away, fails the test."""
import csv
import json
import os

import pytest

from conftest import CORPUS, run_cli
from conftest import CORPUS_EXPLAINED as EXPLAINED  # file -> (our verdict, why we disagree with the label)


def _rows():
    with open(os.path.join(CORPUS, "labels.tsv")) as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _agrees(label, verdict, action):
    if label == "malicious":
        return action == "block"
    if label == "benign":
        return action != "block"
    if label == "not-a-pickle":
        return verdict == "safe"
    return False  # unknown labels are always listed


@pytest.mark.skipif(not os.path.isdir(CORPUS), reason="shared corpus not present")
def test_public_corpus_matches_labels_or_is_explained():
    rows = _rows()
    paths = [os.path.join(CORPUS, r["file"]) for r in rows]
    r = run_cli("scan", "--format", "json", *paths)
    assert r.returncode in (0, 1), r.stderr[-500:]
    res = {f["path"]: f for f in json.loads(r.stdout)["files"]}
    table, disagree = [], {}
    counts = {}
    for row, p in zip(rows, paths):
        f = res[p]
        v, a = f.get("verdict"), f.get("action")
        ok = _agrees(row["label"], v, a)
        counts[(row["label"], v)] = counts.get((row["label"], v), 0) + 1
        first = f["reasons"][0]["rule"] if f.get("reasons") else "-"
        table.append((row["file"], row["label"], v, a, first, ok))
        if not ok:
            disagree[row["file"]] = v
    print("\n| label | verdict | files |")
    print("| --- | --- | --- |")
    for (lab, v), n in sorted(counts.items()):
        print("| %s | %s | %d |" % (lab, v, n))
    print("agree: %d of %d" % (sum(t[-1] for t in table), len(table)))
    for t in table:
        if not t[-1]:
            print("DISAGREE", t)
    assert set(disagree) == set(EXPLAINED), (set(disagree) ^ set(EXPLAINED))
    for k, (v, _) in EXPLAINED.items():
        assert disagree[k] == v, (k, disagree[k])


@pytest.mark.skipif(not os.path.isdir(CORPUS), reason="shared corpus not present")
def test_public_corpus_malicious_reasons_name_behaviour():
    """Every file labelled malicious and blocked (all but the explained disagreements)
    carries at least one malicious or unscannable reason with a rule id and a message."""
    rows = [r for r in _rows() if r["label"] == "malicious" and r["file"] not in EXPLAINED]
    r = run_cli("scan", "--format", "json", *[os.path.join(CORPUS, x["file"]) for x in rows])
    for f in json.loads(r.stdout)["files"]:
        assert any(x["severity"] in ("malicious", "unscannable") and x["rule"] and x["msg"] for x in f["reasons"]), f["path"]
