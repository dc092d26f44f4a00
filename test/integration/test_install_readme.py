"""test_install_readme.py - the README's "Install" section followed literally, as root, with
the default PREFIX (/usr/local), in a private mount namespace whose /usr/local and /etc are
overlays on the host's (so `make install`, `ldconfig` and /etc/ld.so.preload are real for
the processes inside and the host is untouched). It must end with a protected process, a
canary malicious pickle refused and its marker absent, for each of: the bare
`LD_PRELOAD=libsafepickle.so`, `safepickle run`, /etc/ld.so.preload, the Jupyter kernel,
and a renamed copy of the interpreter. Then `make uninstall` must leave nothing behind: no
file in /usr/local, no kernelspec, and the bare name no longer loads (and doctor says so)."""
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import BUILD, REPO, clean_env
from test_readme import readme_blocks, split_commands

HERE = os.path.dirname(os.path.abspath(__file__))

# Runs inside the namespace: overlays, then the inner script (argv: tmp dir, inner.py).
NS = """set -e
T=$1
for d in usr-local etc; do mkdir -p "$T/$d/upper" "$T/$d/work"; done
mount -t overlay overlay -o "lowerdir=/usr/local,upperdir=$T/usr-local/upper,workdir=$T/usr-local/work" /usr/local
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$T/etc/upper,workdir=$T/etc/work" /etc
exec /usr/bin/python3 "$2" "$T"
"""

# The inner script: every step's outcome as one JSON object on stdout.
INNER = r'''
import json, os, shutil, subprocess, sys, time
T = sys.argv[1]
cfg = json.load(open(os.path.join(T, "cfg.json")))
work, home = os.path.join(T, "work"), os.path.join(T, "home")
env = dict(cfg["env"], HOME=home, PATH="/usr/local/bin:/usr/bin:/bin", JUPYTER_DATA_DIR=home + "/jupyter")
res = {}

def sh(cmd, cwd=work, **extra):
    r = subprocess.run(cmd, shell=True, cwd=cwd, env=dict(env, **extra), capture_output=True, text=True,
                       timeout=900)
    return {"rc": r.returncode, "out": r.stdout, "err": r.stderr}

def canary(tag, r):
    marker = os.path.join(work, "PAYLOAD_RAN")
    res[tag] = dict(r, marker=os.path.exists(marker))
    if os.path.exists(marker):
        os.unlink(marker)

# 1. the README's Install block, line by line: make in the clone, the rest where the script is
for line in cfg["readme"]:
    cwd = cfg["repo"] if line.startswith("make") else work
    r = sh(line, cwd=cwd)
    if "train.py" in line:
        canary("bare", r)
    else:
        res[line] = r
# 2. the other ways
canary("run", sh("safepickle run -- python3 train.py"))
shutil.copy("/usr/bin/python3", os.path.join(work, "modelserver"))
canary("renamed", sh("LD_PRELOAD=libsafepickle.so ./modelserver train.py"))
with open("/etc/ld.so.preload", "w") as f:
    f.write("libsafepickle.so\n")
canary("etc", sh("python3 train.py"))
res["doctor_etc"] = sh("safepickle doctor")
os.unlink("/etc/ld.so.preload")
res["jupyter_install"] = sh("safepickle jupyter install")
kernel = r"""
import json, os, sys
from jupyter_client.manager import start_new_kernel
km, kc = start_new_kernel(kernel_name="python3-safepickle", startup_timeout=120)
out = []
try:
    r = kc.execute_interactive(open("train.py").read(), timeout=180,
                               output_hook=lambda m: out.append(m["content"].get("text", "")))
    print(json.dumps({"status": r["content"]["status"], "out": "".join(out)}))
finally:
    kc.stop_channels(); km.shutdown_kernel(now=True)
"""
r = sh("/usr/bin/python3 -c '%s'" % kernel.replace("'", "'\\''"))
try:
    k = json.loads(r["out"].strip().splitlines()[-1])
    canary("jupyter", {"rc": 0 if k["status"] == "ok" else 1, "out": k["out"], "err": r["err"]})
except Exception as e:
    canary("jupyter", dict(r, rc=99, out=r["out"] + repr(e)))
res["kernelspec_before"] = os.path.exists(home + "/jupyter/kernels/python3-safepickle/kernel.json")
# 3. uninstall: the same make line with uninstall
res["uninstall"] = sh("make uninstall", cwd=cfg["repo"])
res["kernelspec_after"] = os.path.exists(home + "/jupyter/kernels/python3-safepickle")
res["left"] = sorted(os.path.join(d, f)[len(T):] for d, _, fs in os.walk(os.path.join(T, "usr-local", "upper"))
                     for f in fs)
canary("after", sh("LD_PRELOAD=libsafepickle.so python3 train.py"))
print(json.dumps(res))
'''

TRAIN = """import pickle
try:
    pickle.load(open("canary.pkl", "rb"))
    print("LOADED")
except PermissionError:
    print("REFUSED")
"""


def readme_install_block():
    text = open(os.path.join(REPO, "README.md")).read()
    sec = text[text.index("## Install\n"):]
    sec = sec[:sec.index("\n## ", 1)]
    blocks = list(readme_blocks(sec))
    assert blocks, "no command block in the README's Install section"
    return [ln.strip() for ln in blocks[0] if ln.strip()]


def test_readme_block_shape():
    lines = readme_install_block()
    assert lines[0] == "make install", lines  # the default PREFIX: no variable to get right
    assert any(ln.startswith("LD_PRELOAD=libsafepickle.so ") for ln in lines), lines
    for ln in lines:
        assert split_commands(ln), ln


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    t = tmp_path_factory.mktemp("readme-install")
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("no private mount namespace here (needs CAP_SYS_ADMIN)")
    work = t / "work"
    (t / "home").mkdir()
    work.mkdir()
    (work / "train.py").write_text(TRAIN)
    marker = work / "PAYLOAD_RAN"
    r = subprocess.run([sys.executable, "-c",
                        "import pickle, sys\nsys.path.insert(0, %r)\nfrom spgen import Reduce, touch_cmd\n"
                        "import os\npickle.dump(Reduce(os.system, (touch_cmd(%r),)), open(%r, 'wb'))"
                        % (HERE, str(marker), str(work / "canary.pkl"))], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    env = clean_env()
    for k in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "JUPYTER_PATH", "XDG_DATA_HOME"):
        env.pop(k, None)
    env["BUILD"] = BUILD  # the Makefile's `BUILD ?=`: the tree this test suite built
    (t / "cfg.json").write_text(json.dumps({"readme": readme_install_block(), "repo": REPO, "env": env}))
    (t / "inner.py").write_text(INNER)
    host = [os.path.lexists(p) for p in ("/usr/local/bin/safepickle", "/usr/local/lib/libsafepickle.so",
                                         "/etc/ld.so.preload")]
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", NS, "sh", str(t),
                        str(t / "inner.py")], capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # the host saw none of it
    assert host == [os.path.lexists(p) for p in ("/usr/local/bin/safepickle", "/usr/local/lib/libsafepickle.so",
                                                 "/etc/ld.so.preload")]
    # control: the canary is live without the preload
    subprocess.run(["/usr/bin/python3", "train.py"], cwd=work, env=clean_env(), capture_output=True)
    live = marker.exists()
    return json.loads(r.stdout.strip().splitlines()[-1]), live


def test_make_install_makes_the_bare_name_work(installed):
    res, _ = installed
    r = res["make install"]
    assert r["rc"] == 0, r["out"][-2000:] + r["err"][-2000:]
    assert "installed. ld.so loads /usr/local/lib/safepickle/libsafepickle.so by its bare name: " \
           "LD_PRELOAD=libsafepickle.so" in r["out"], r["out"][-2000:]
    d = res["safepickle doctor"]
    assert d["rc"] == 0 and "status: ok" in d["out"], d["out"]


@pytest.mark.parametrize("how", ["bare", "run", "etc", "jupyter", "renamed"])
def test_protected_after_install(installed, how):
    res, live = installed
    assert live, "control: the canary pickle does not run its payload without the preload"
    r = res[how]
    assert "REFUSED" in r["out"] and not r["marker"], r
    if how == "etc":
        assert "protected   /etc/ld.so.preload (libsafepickle.so ): ld.so loads " \
               "/usr/local/lib/safepickle/libsafepickle.so" in res["doctor_etc"]["out"], res["doctor_etc"]["out"]


def test_make_uninstall_leaves_nothing_that_fails_open(installed):
    res, _ = installed
    assert res["kernelspec_before"] and res["uninstall"]["rc"] == 0, res["uninstall"]
    assert "removed kernelspec 'python3-safepickle'" in res["uninstall"]["out"], res["uninstall"]["out"]
    assert not res["kernelspec_after"]
    assert res["left"] == [], res["left"]
    # the bare name no longer loads: ld.so says so, and nothing pretends to protect
    after = res["after"]
    assert "cannot be preloaded" in after["err"], after
