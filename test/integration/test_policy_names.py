"""test_policy_names.py - issue 11 item 6: `--policy NAME` (default, strict, audit)
resolves in every command through one function; `trust` never creates ./NAME,
records the file's name beside its digest and edits nothing else; `scan
--policy P` honours P's trusted digests and paths (a CI gate can accept a
reviewed file)."""
import json
import os
import subprocess

import pytest

from conftest import CLI, PYTHON, clean_env, run_cli
import spgen


@pytest.fixture
def bad(tmp_path, marker):
    p = tmp_path / "model.pkl"
    p.write_bytes(spgen.system_pickle(marker))
    return p


@pytest.mark.parametrize("name", ["default", "strict", "audit"])
def test_every_command_takes_a_policy_name(tmp_path, bad, name):
    r = run_cli("policy", "show", "--policy", name)
    assert r.returncode == 0 and "name: %s\n" % name in r.stdout, r.stderr
    r = run_cli("policy", "show", name)
    assert r.returncode == 0 and "name: %s\n" % name in r.stdout, r.stderr
    r = run_cli("policy", "judge", "--policy", name, "os", "system")
    assert r.returncode == 1 and r.stdout.startswith("malicious"), r.stdout + r.stderr
    r = run_cli("scan", "--policy", name, str(bad))
    assert r.returncode == (0 if name == "audit" else 1), r.stdout + r.stderr
    r = run_cli("run", "--policy", name, "--", PYTHON, "-c",
                "import os; print(os.environ['SAFEPICKLE_POLICY'])")
    assert r.returncode == 0 and r.stdout.strip().endswith("/%s.json" % name), r.stdout + r.stderr


def test_unknown_policy_name_is_a_clear_error(tmp_path, bad):
    for args in (["scan", "--policy", "strcit", str(bad)], ["policy", "show", "strcit"],
                 ["run", "--policy", "strcit", "true"]):
        r = run_cli(*args)
        assert r.returncode == 2 and "no shipped policy of that name" in r.stderr, (args, r.stderr)


def test_trust_never_edits_or_creates_a_shipped_name(tmp_path, bad):
    r = subprocess.run([CLI, "trust", "--policy", "strict", str(bad)], cwd=tmp_path, env=clean_env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "shipped policy" in r.stderr, r.stdout + r.stderr
    assert not (tmp_path / "strict").exists()
    r = subprocess.run([CLI, "trust", "--policy", "typo", str(bad)], cwd=tmp_path, env=clean_env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and not (tmp_path / "typo").exists(), r.stdout + r.stderr


USER_POLICY = """{
    "schema": 1,
    "name": "ci-gate",
    // no comments in JSON: this line is replaced below
    "trusted": {
        "paths": [],
        "sha256": [
            "0000000000000000000000000000000000000000000000000000000000000000  old.pkl"
        ]
    },
    "mode":   "enforce"
}
""".replace('    // no comments in JSON: this line is replaced below\n', '')


def test_trust_edits_minimally_and_scan_honours_it(tmp_path, bad, marker):
    pol = tmp_path / "gate.json"
    pol.write_text(USER_POLICY)
    r = run_cli("scan", "--policy", pol, bad)
    assert r.returncode == 1, r.stdout  # malicious: blocked
    r = run_cli("trust", "--policy", pol, bad)
    assert r.returncode == 0, r.stdout + r.stderr
    import hashlib
    digest = hashlib.sha256(bad.read_bytes()).hexdigest()
    want = USER_POLICY.replace('old.pkl"\n', 'old.pkl",\n            "%s  model.pkl"\n' % digest)
    assert pol.read_text() == want  # every other byte kept
    assert json.loads(pol.read_text())["trusted"]["sha256"][1] == digest + "  model.pkl"
    r = run_cli("scan", "--policy", pol, bad)
    assert r.returncode == 0 and "trusted by the policy" in r.stdout, r.stdout + r.stderr
    r = run_cli("scan", "--format", "json", "--policy", pol, bad)
    assert r.returncode == 0 and json.loads(r.stdout)["files"][0]["trusted"], r.stdout
    r = run_cli("trust", "--policy", pol, bad)  # again: nothing to add, file unchanged
    assert r.returncode == 0 and "already trusted" in r.stdout and pol.read_text() == want
    # the preload honours the same entry
    e = clean_env(SAFEPICKLE_POLICY=str(pol), LD_PRELOAD=os.path.join(os.path.dirname(CLI), "libsafepickle.so"))
    r = subprocess.run([PYTHON, "-c", "import pickle; pickle.load(open(%r, 'rb'))" % str(bad)], env=e,
                       capture_output=True, text=True, timeout=60)
    assert os.path.exists(str(marker)), r.stderr  # trusted: the (reviewed) file loads and runs
    os.unlink(str(marker))


def test_scan_honours_trusted_paths(tmp_path, bad):
    pol = tmp_path / "p.json"
    pol.write_text(json.dumps({"schema": 1, "trusted": {"paths": [str(tmp_path) + "/*.pkl"]}}))
    r = subprocess.run([CLI, "scan", "--policy", str(pol), "model.pkl"], cwd=tmp_path, env=clean_env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "path is trusted" in r.stdout, r.stdout + r.stderr


def test_trust_creates_a_new_json_file(tmp_path, bad):
    pol = tmp_path / "new.json"
    r = run_cli("trust", "--policy", pol, bad)
    assert r.returncode == 0 and "created" in r.stdout, r.stderr
    doc = json.loads(pol.read_text())
    assert doc["trusted"]["sha256"][0].endswith("  model.pkl") and doc["name"] == "default"
