"""test_benign.py - threats.md D: benign files built with the real libraries at realistic
sizes (a 256 MiB torch file included) must never be blocked under the default policy.

The suite prints the false-positive count (files the default policy would block) and
asserts it is 0; every file is at most `suspicious`. The same files then load with the
real loaders under the preload (LD_PRELOAD=libsafepickle.so, default policy)."""
import json
import os

import pytest

from conftest import LIB, run_cli, run_py
import threatgen


@pytest.fixture(scope="module")
def benign(tmp_path_factory):
    d = tmp_path_factory.mktemp("benign")
    return d, threatgen.all_benign(str(d))


def test_benign_corpus_is_complete(benign):
    d, files = benign
    names = {n for n, _, _, _ in files}
    for want in ("d_torch_state_dict", "d_torch_whole_module", "d_torch_optimizer_object", "d_lightning_checkpoint",
                 "d_sklearn_pipeline_joblib_0", "d_sklearn_pipeline_joblib_lz4", "d_numpy_object_array",
                 "d_pandas_frame_gz", "d_scipy_sparse", "d_numpy_generator_state", "d_function_reference_only",
                 "d_torch_large", "d_tensor_plain_pickle"):
        assert want in names
    assert {"d_stdlib_user_objects_proto%d" % p for p in range(6)} <= names
    big = [p for n, p, _, _ in files if n == "d_torch_large"][0]
    assert os.path.getsize(big) >= 256 << 20


def test_false_positive_count_is_zero(benign):
    d, files = benign
    r = run_cli("scan", "--format", "json", *[p for _, p, _, _ in files])
    assert r.returncode in (0, 1), r.stderr
    res = {f["path"]: f for f in json.loads(r.stdout)["files"]}
    fps, susp = [], []
    for n, p, _, _ in files:
        f = res[p]
        if f["action"] == "block" or f["verdict"] in ("malicious", "unscannable"):
            fps.append((n, f["verdict"], [x["msg"] for x in f["reasons"]][:3]))
        elif f["verdict"] == "suspicious":
            susp.append((n, [x["rule"] for x in f["reasons"]][:3]))
    print("\nbenign files: %d, false positives (blocked): %d, suspicious (warned, loaded): %d"
          % (len(files), len(fps), len(susp)))
    for s in susp:
        print("  suspicious:", s)
    assert not fps, fps
    assert r.returncode == 0


def test_strict_policy_blocks_only_suspicious_ones(benign):
    """strict.json blocks `suspicious` too: it must block exactly the files the default
    policy warns about, and nothing else."""
    d, files = benign
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    paths = [p for _, p, _, _ in files]
    r = run_cli("scan", "--policy", os.path.join(repo, "policies", "strict.json"), "--format", "json", *paths)
    res = json.loads(r.stdout)["files"]
    for f in res:
        assert (f["action"] == "block") == (f["verdict"] != "safe"), f["path"]


@pytest.mark.skipif(not os.path.exists(LIB), reason="libsafepickle.so not built")
def test_benign_files_load_under_the_preload(benign, tmp_path):
    """The file layer with the default policy's actions (the classifier's verdicts).
    The PEP 578 runtime layer is switched off here: it has its own benign tests
    (test_runtime.py); this test isolates the static classifier's false positives."""
    d, files = benign
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    pol = json.load(open(os.path.join(repo, "policies", "default.json")))
    pol["layers"] = {"file_hooks": True, "audit_hook": False, "runtime_behaviour": False}
    pol["name"] = "default-file-layer-only"
    pf = tmp_path / "policy.json"
    pf.write_text(json.dumps(pol))
    items = [(p, ld) for n, p, _, ld in files if n != "d_torch_large"]
    src = "import sys; sys.path.insert(0, %r)\nimport torch, numpy, joblib, pandas\n" % str(d)
    src += threatgen.loader_script(items)
    r = run_py(src, timeout=900, env={"SAFEPICKLE_POLICY": str(pf)})
    assert r.returncode == 0, r.stderr[-3000:]
    errors = [l for l in r.stdout.splitlines() if l.startswith("error")]
    loaded = [l for l in r.stdout.splitlines() if l.startswith("loaded")]
    assert not errors, (errors, r.stderr[-2000:])
    assert len(loaded) == len(items)
