"""test_output.py - scan's JSON and SARIF are always valid, for every input (issue 17).

The corpus is everything the other tests feed the analyzer: the threat corpus, the
benign corpus, 3,000 mutants from diffgen's operators, the fuzz seed corpora, the
public corpus, and crafted files whose strings and names are not UTF-8 (a lone
surrogate in a pickle string, a cut GLOBAL name, a file name with a 0xff byte).
Every document must decode as strict UTF-8 and validate against its schema
(analyzer/scan.schema.json; SARIF against what GitHub reads, and the full OASIS
schema when SAFEPICKLE_SARIF_SCHEMA names a copy). Non-UTF-8 names stay lossless:
<key>_hex in JSON, percent-encoding in SARIF URIs."""
import json
import os
import pickle
import random
import re
import shutil
import subprocess
import urllib.parse

import pytest

from conftest import CLI, CORPUS, REPO, clean_env
import diffgen
import threatgen

jsonschema = pytest.importorskip("jsonschema")
HERE = os.path.dirname(os.path.abspath(__file__))
SCAN_SCHEMA = os.path.join(REPO, "analyzer", "scan.schema.json")
SARIF_SCHEMA = os.path.join(HERE, "sarif_github.schema.json")
WEIRD_NAME = b"we\xffird #?%20 name.pkl"


def _crafted(d):
    """Files whose strings reach the report as bytes that are not UTF-8."""
    d = os.fsencode(d)
    # os.system('\ud800...'): the payload's argument is a lone surrogate (surrogatepass)
    lone = b"\x80\x02cos\nsystem\nX\x06\x00\x00\x00\xed\xa0\x80abc\x85R."
    cut = b"\x80\x02cos\nsys\xfftem\n(\x8c\x02hi\x85R."          # a GLOBAL name cut by a bad byte
    latin = b"\x80\x02cbuiltins\neval\nU\x05\xe9\xff\xfe\x80(\x85R."  # SHORT_BINSTRING of non-UTF-8
    inst = b"(S'\xc3('\ni\xfe\xfdmod\n\xffname\n."                  # INST with bad bytes in both lines
    for name, data in ((b"lone.pkl", lone), (b"cut.pkl", cut), (b"latin.pkl", latin),
                       (b"inst.pkl", inst), (WEIRD_NAME, pickle.dumps(eval, protocol=2))):
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("outcorpus")
    md = tmp_path_factory.mktemp("markers")
    for sub in ("threats", "benign", "mutants", "fuzz", "public", "crafted"):
        (root / sub).mkdir()
    for name, data, _needs in threatgen.all_malicious(str(md)):
        (root / "threats" / (name + ".pkl")).write_bytes(data)
    threatgen.all_benign(str(root / "benign"), big_rows=64)
    seeds = []
    for i, o in enumerate(diffgen.benign_objects()):
        for p in (0, 2, 4, 5):
            try:
                seeds.append(("obj%d" % i, pickle.dumps(o, protocol=p)))
            except Exception:
                pass  # not every object pickles at every protocol
    seeds += list(diffgen.threats())
    rng = random.Random(17)
    for i in range(3000):
        _, data = diffgen.mutate(rng, seeds)
        (root / "mutants" / ("m%04d.pkl" % i)).write_bytes(data)
    fz = os.path.join(REPO, "test", "fuzz", "corpus")
    shutil.copytree(fz, root / "fuzz", dirs_exist_ok=True)
    if os.path.isdir(CORPUS):
        for dp, _dn, fn in os.walk(CORPUS):
            for f in fn:
                src = os.path.join(dp, f)
                if os.path.isfile(src) and not os.path.islink(src):
                    dst = root / "public" / os.path.relpath(src, CORPUS)
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, dst)
    _crafted(root / "crafted")
    # what the walk reports without scanning: a second name for a file, and a FIFO
    os.symlink("lone.pkl", root / "crafted" / "again.pkl")
    os.mkfifo(root / "crafted" / "fifo.pkl")
    return root


def _scan(fmt, *paths, cwd=None):
    r = subprocess.run([CLI, "scan", "--format", fmt, *map(str, paths)], capture_output=True,
                       env=clean_env(), cwd=cwd, timeout=900)
    assert r.returncode in (0, 1), r.stderr.decode("utf-8", "replace")[-2000:]
    text = r.stdout.decode("utf-8", "strict")  # raises on any invalid sequence
    return json.loads(text)


def _validator(path):
    schema = json.load(open(path))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _errors(v, doc, limit=10):
    return ["%s at %s" % (e.message[:200], "/".join(map(str, e.absolute_path)))
            for e in list(v.iter_errors(doc))[:limit]]


def test_json_is_strict_utf8_and_valid_over_the_corpus(corpus):
    doc = _scan("json", corpus)
    assert not _errors(_validator(SCAN_SCHEMA), doc)
    files = doc["files"]
    s = doc["summary"]
    assert len(files) > 3000 and s["files"] + s["skipped"] + s["linked_again"] == len(files)
    assert doc["summary"]["malicious"] > 50, "the threat corpus is not judged malicious"
    assert re.fullmatch(r"[0-9a-f]{64}", doc["policy"]["sha256"])
    assert all(f.get("sha256") for f in files if "verdict" in f and "same_as" not in f)


def test_sarif_is_strict_utf8_and_valid_over_the_corpus(corpus):
    doc = _scan("sarif", corpus)
    assert not _errors(_validator(SARIF_SCHEMA), doc)
    official = os.environ.get("SAFEPICKLE_SARIF_SCHEMA")
    if official:  # the OASIS schema is not in Debian; a developer can point at a copy
        assert not _errors(_validator(official), doc)
    run = doc["runs"][0]
    assert len(run["results"]) > 50
    assert {r["ruleId"] for r in run["results"]} <= {r["id"] for r in run["tool"]["driver"]["rules"]}


def test_non_utf8_strings_are_repaired_and_kept(corpus):
    doc = _scan("json", corpus / "crafted")
    by = {os.path.basename(os.fsencode(f["path"]) if "path_hex" not in f else bytes.fromhex(f["path_hex"])): f
          for f in doc["files"]}
    weird = by[WEIRD_NAME]
    assert bytes.fromhex(weird["path_hex"]).endswith(WEIRD_NAME)
    assert "\ufffd" in weird["path"] and weird["verdict"] == "malicious"
    # lone.pkl and its second name again.pkl: one is scanned, the other noted as the same file
    lone = by[b"lone.pkl"] if "same_as" not in by[b"lone.pkl"] else by[b"again.pkl"]
    assert lone["verdict"] == "malicious"
    blob = json.dumps(lone)
    assert "_hex" in blob, "the surrogate's raw bytes were not kept beside the repaired text"
    for name in (b"cut.pkl", b"latin.pkl", b"inst.pkl"):
        assert name in by
    assert by[b"again.pkl"].get("same_as") or by[b"lone.pkl"].get("same_as")
    assert "skipped" in by[b"fifo.pkl"]
    assert not _errors(_validator(SCAN_SCHEMA), doc)


def test_sarif_uris_are_percent_encoded_and_lossless(corpus):
    doc = _scan("sarif", "crafted", cwd=corpus)
    run = doc["runs"][0]
    base = run["originalUriBaseIds"]["%SRCROOT%"]["uri"]
    assert urllib.parse.unquote_to_bytes(base[len("file://"):]) == os.fsencode(str(corpus)) + b"/"
    uris = {urllib.parse.unquote_to_bytes(r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"])
            for r in run["results"]}
    assert b"crafted/" + WEIRD_NAME in uris
    assert all(r["locations"][0]["physicalLocation"]["artifactLocation"].get("uriBaseId") == "%SRCROOT%"
               for r in run["results"])
    absdoc = _scan("sarif", corpus / "crafted")
    absuris = [r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in absdoc["runs"][0]["results"]]
    assert absuris and all(u.startswith("file:///") for u in absuris)


def test_fingerprints_are_stable_across_runs_and_places(corpus, tmp_path):
    a = _scan("sarif", "threats", cwd=corpus)
    b = _scan("sarif", "threats", cwd=corpus)
    shutil.copytree(corpus / "threats", tmp_path / "threats")
    c = _scan("sarif", "threats", cwd=tmp_path)
    fp = lambda d: sorted(r["partialFingerprints"]["safepickleFinding/v1"] for r in d["runs"][0]["results"])
    assert fp(a) == fp(b) == fp(c)
    assert len(set(fp(a))) == len(fp(a)), "two findings share a fingerprint"


def _rules_def():
    text = open(os.path.join(REPO, "analyzer", "rules.def")).read()
    return dict(re.findall(r'SPA_RULE\("([^"]+)",\s*"([^"]+)"', text))


def test_every_rule_the_analyzer_can_produce_is_described():
    """Enumerates the class: every rule id literal in the analyzer's sources (the
    arguments of cl_set/cl_reason, rule assignments and returned ids) has a line in
    rules.def, so no SARIF rule falls back to a generic text."""
    known = _rules_def()
    found = set()
    for dp, _dn, fn in os.walk(os.path.join(REPO, "analyzer")):
        for f in fn:
            if not f.endswith(".c"):
                continue
            src = open(os.path.join(dp, f), errors="replace").read()
            for m in re.finditer(r'(?:cl_set|cl_reason)\s*\(([^;]*)', src):
                found.update(re.findall(r'"([a-z_]+\.[a-z_.]+)"', m.group(1)))
            found.update(re.findall(r'\b(?:rule|rl)\s*=\s*"([a-z_]+\.[a-z_.]+)"', src))
            found.update(re.findall(r'\*rule\s*=\s*"([a-z_]+\.[a-z_.]+)"', src))
            found.update(re.findall(r'return\s+"((?:callee|call|global|reflect|state|scan|nested|policy|args|partial|opcode)\.[a-z_.]+)"', src))
    assert len(found) > 20, "the rule-id extraction found almost nothing: is it broken?"
    missing = sorted(found - set(known))
    assert not missing, "rules without a description in analyzer/rules.def: %s" % missing
