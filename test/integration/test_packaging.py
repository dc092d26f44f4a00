"""test_packaging.py - the packages people install (issue 17).

- `make deb` builds a .deb; installed with dpkg on this machine it protects a process by
  the bare name LD_PRELOAD=libsafepickle.so (a torch checkpoint with a payload is refused,
  the marker is absent; the benign one loads), its CLI and Python package work from the
  installed paths, the systemd drop-in verifies against it, and `dpkg --purge` leaves
  nothing behind.
- Its postinst builds the environment index of /usr/bin/python3 in /var/lib/safepickle, which
  the installed programs load (`kb status`, `doctor`) and which satisfies a policy with
  `require_index`; the file trigger on /usr/lib/python3/dist-packages rebuilds it; purge
  removes it and its cache (the dpkg run reuses the build tree's index cache, if an earlier
  `make install` left one, through $SAFEPICKLE_KB_CACHE: the same index, parsed faster).
- The pre-commit hook definition runs with Debian's pre-commit (`try-repo`).
- The Kubernetes recipe's init container writes exactly what the app container reads.
"""
import json
import os
import shutil
import subprocess

import pytest

from conftest import BUILD, PYTHON, REPO, clean_env
import spgen

DEB_NAME = "safepickle"


def _sh(*cmd, check=True, **kw):
    r = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, timeout=kw.pop("timeout", 600), **kw)
    if check:
        assert r.returncode == 0, "%s: %s%s" % (" ".join(map(str, cmd)), r.stdout[-2000:], r.stderr[-2000:])
    return r


def _installed():
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", DEB_NAME], capture_output=True, text=True)
    return "install ok installed" in r.stdout


@pytest.fixture(scope="module")
def deb():
    if os.geteuid() != 0 or not shutil.which("dpkg"):
        pytest.skip("installing a .deb needs root and dpkg")
    if _installed():
        pytest.skip("a safepickle package is already installed on this machine: not touching it")
    _sh("make", "-s", "deb", "BUILD=" + BUILD, cwd=REPO)
    debs = [f for f in os.listdir(BUILD) if f.startswith("safepickle_") and f.endswith(".deb")]
    assert len(debs) == 1, debs
    return os.path.join(BUILD, debs[0])


def test_deb_installs_protects_and_purges(deb, tmp_path):
    info = _sh("dpkg-deb", "-f", deb, "Package", "Version", "Depends").stdout
    assert "Package: safepickle" in info and "libcjson1" in info
    files = [l.split()[5].lstrip(".") for l in _sh("dpkg-deb", "-c", deb).stdout.splitlines()]
    assert "/usr/lib/libsafepickle.so" in files and "/usr/bin/safepickle" in files
    try:
        _sh("dpkg", "-i", deb, env=dict(os.environ, SAFEPICKLE_KB_CACHE=os.path.join(BUILD, "kb-index.cache")))
        assert _installed()
        _index_built_and_used(tmp_path)
        marker = tmp_path / "ran"
        gen = ("import os, sys, torch, spgen\n"
               "torch.save({'w': torch.ones(2)}, sys.argv[1] + '/good.pt')\n"
               "torch.save({'w': spgen.Reduce(os.system, ['touch ' + sys.argv[2]])}, sys.argv[1] + '/bad.pt')\n")
        _sh(PYTHON, "-c", gen, tmp_path, marker, env=clean_env(PYTHONPATH=os.path.dirname(__file__)))
        load = "import sys, torch; print(torch.load(sys.argv[1])['w'].sum().item())"
        env = clean_env(LD_PRELOAD="libsafepickle.so")  # the bare name: ld.so finds the package's copy
        bad = _sh(PYTHON, "-c", load, tmp_path / "bad.pt", env=env, check=False)
        assert bad.returncode != 0 and "PermissionError" in bad.stderr, bad.stderr[-2000:]
        assert "cannot be preloaded" not in bad.stderr
        spgen.assert_marker_absent(marker)
        good = _sh(PYTHON, "-c", load, tmp_path / "good.pt", env=env)
        assert good.stdout.strip() == "2.0"
        # the CLI and the Python package, from the installed paths only
        scan = _sh("/usr/bin/safepickle", "scan", tmp_path / "bad.pt", check=False, env=clean_env())
        assert scan.returncode == 1
        pkg = _sh(PYTHON, "-c", "import safepickle; print(safepickle.library_path()); print(safepickle.scan(__import__('sys').argv[1]).verdict)",
                  tmp_path / "bad.pt", env=clean_env(), cwd=tmp_path)
        assert pkg.stdout.split() == ["/usr/lib/safepickle/libspa.so", "malicious"]
        spgen.assert_marker_absent(marker)
        _systemd_dropin_verifies(tmp_path)
    finally:
        subprocess.run(["dpkg", "--purge", DEB_NAME], capture_output=True, timeout=600)
    assert not _installed()
    left = [f for f in files if f and (os.path.isfile(f) or os.path.islink(f))]
    assert not left, "left behind after purge: %s" % left
    assert not os.path.exists(INDEX) and not os.path.exists(os.path.dirname(INDEX)), "the index outlived the purge"
    assert not os.path.exists("/var/cache/safepickle"), "the index cache outlived the purge"
    env = clean_env(LD_PRELOAD="libsafepickle.so")
    r = _sh(PYTHON, "-c", "pass", env=env, check=False)
    assert "cannot be preloaded" in r.stderr, "the bare name still resolves after purge"


INDEX = "/var/lib/safepickle/kb-index.tsv"


def _index_built_and_used(tmp_path):
    assert os.path.isfile(INDEX), "the postinst built no index"
    r = _sh("/usr/bin/safepickle", "kb", "status", env=clean_env())
    assert r.stdout.startswith("index %s: " % INDEX) and "up to date" in r.stdout, r.stdout
    r = _sh("/usr/bin/safepickle", "doctor", env=clean_env(), check=False)
    assert "index %s: " % INDEX in r.stdout, r.stdout
    policy = tmp_path / "needs-index.json"
    policy.write_text(json.dumps({"schema": 1, "name": "needs-index", "require_index": True}))
    (tmp_path / "plain.pkl").write_bytes(spgen.benign_pickle())
    r = _sh("/usr/bin/safepickle", "scan", "--policy", policy, tmp_path / "plain.pkl", env=clean_env(), check=False)
    assert r.returncode == 0, r.stdout + r.stderr   # the index the package built satisfies the policy
    # a package changing /usr/lib/python3/dist-packages fires the file trigger: a new index
    before = os.stat(INDEX).st_ino
    _sh("dpkg-trigger", "--no-await", "/usr/lib/python3/dist-packages")
    _sh("dpkg", "--triggers-only", DEB_NAME, env=dict(os.environ, SAFEPICKLE_KB_CACHE=os.path.join(BUILD, "kb-index.cache")))
    assert os.stat(INDEX).st_ino != before, "the trigger did not rebuild the index"


def _systemd_dropin_verifies(tmp_path):
    if not shutil.which("systemd-analyze"):
        return
    units = tmp_path / "units"
    (units / "demo.service.d").mkdir(parents=True)
    (units / "demo.service").write_text("[Unit]\nDescription=demo\n[Service]\nExecStart=%s -c pass\n" % PYTHON)
    shutil.copy(os.path.join(REPO, "test/container/safepickle-systemd.conf"), units / "demo.service.d/safepickle.conf")
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(units / "demo.service")], capture_output=True,
                       text=True, timeout=120, env=dict(clean_env(), SYSTEMD_UNIT_PATH=str(units) + ":"))
    noise = [l for l in r.stderr.splitlines() if "demo.service" in l or "safepickle" in l]
    assert r.returncode == 0 and not noise, r.stderr[-2000:]
    # the drop-in really applies: the merged unit carries its settings
    assert "LD_PRELOAD=/usr/lib/safepickle/libsafepickle.so" in open(units / "demo.service.d/safepickle.conf").read()
    assert os.path.exists("/usr/lib/safepickle/libsafepickle.so")  # the path it names is the package's


def test_pre_commit_hook_refuses_a_malicious_pickle(tmp_path):
    if not shutil.which("pre-commit"):
        pytest.skip("pre-commit not installed (test/install-deps.sh installs it)")
    if subprocess.run(["git", "-C", REPO, "ls-files", "--error-unmatch", ".pre-commit-hooks.yaml"],
                      capture_output=True).returncode != 0:
        pytest.skip(".pre-commit-hooks.yaml is not committed (try-repo reads the committed tree)")
    work = tmp_path / "work"
    work.mkdir()
    env = clean_env(PATH=BUILD + ":" + os.environ.get("PATH", "/usr/bin:/bin"), PRE_COMMIT_HOME=str(tmp_path / "pc"),
                    HOME=str(tmp_path), GIT_CONFIG_NOSYSTEM="1")
    _sh("git", "init", "-q", work, env=env)
    marker = tmp_path / "ran"
    (work / "bad.pkl").write_bytes(spgen.system_pickle(marker))
    (work / "good.pkl").write_bytes(spgen.benign_pickle())
    (work / "notes.txt").write_text("hello\n")
    _sh("git", "-C", work, "add", ".", env=env)
    bad = _sh("pre-commit", "try-repo", REPO, "safepickle-scan", "--files", "bad.pkl", "good.pkl", "notes.txt",
              cwd=work, env=env, check=False)
    assert bad.returncode == 1, bad.stdout[-3000:] + bad.stderr[-2000:]
    assert "bad.pkl" in bad.stdout and "Failed" in bad.stdout
    ok = _sh("pre-commit", "try-repo", REPO, "safepickle-scan", "--files", "good.pkl", "notes.txt",
             cwd=work, env=env, check=False)
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-2000:]
    spgen.assert_marker_absent(marker)


def test_kubernetes_recipe_is_consistent():
    yaml = pytest.importorskip("yaml")
    docs = list(yaml.safe_load_all(open(os.path.join(REPO, "test/container/kubernetes.yaml"))))
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    pod = next(d for d in docs if d["kind"] == "Pod")
    policy = json.loads(cm["data"]["policy.json"])
    assert policy["schema"] == 1
    spec = pod["spec"]
    vols = {v["name"]: v for v in spec["volumes"]}
    init = spec["initContainers"][0]
    app = spec["containers"][0]
    env = {e["name"]: e["value"] for e in app["env"]}
    mounts = {m["name"]: m for m in app["volumeMounts"]}
    imounts = {m["name"]: m for m in init["volumeMounts"]}
    shared = "safepickle"
    assert "emptyDir" in vols[shared]
    assert mounts[shared]["readOnly"] is True, "the app must not be able to replace the library"
    root = mounts[shared]["mountPath"]
    assert imounts[shared]["mountPath"] == root and not imounts[shared].get("readOnly")
    script = " ".join(init["args"])
    for var in ("LD_PRELOAD", "SAFEPICKLE_POLICY"):
        assert env[var].startswith(root + "/"), var
        assert env[var] in script, "%s names %s, which the init container never writes" % (var, env[var])
    assert "policy check" in script, "a broken policy must fail the pod at init, not at run time"
    assert app["securityContext"]["runAsNonRoot"] is True


def test_dockerignore_keeps_build_trees_out():
    lines = open(os.path.join(REPO, ".dockerignore")).read().split()
    for d in ("build/", "build-asan/", "build-fuzz/", ".git/"):
        assert d in lines
