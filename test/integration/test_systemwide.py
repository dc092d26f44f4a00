"""test_systemwide.py - system-wide mode without Docker or chroot.

A whole shell session runs under the preload, two ways: a wrapper that exports
LD_PRELOAD (what `ENV LD_PRELOAD` does in a container), and a real /etc/ld.so.preload
seen only inside a private mount namespace (an overlay on /etc; the host's /etc is never
changed; skipped where namespaces are not allowed). The session drives a script: bash,
coreutils, tar, git, make, gcc compiling and running a program, then
/usr/bin/python3 loading models. The same script runs without the preload; the
outputs must be identical except for the lines of the blocked load."""
import os
import subprocess

import pytest

from conftest import LIB, clean_env, run_py

# Lines starting with one of these tags are expected to differ between the runs.
DIFFERS = ("MAPPED:", "BLOCKED-LOAD:")

WRAPPER = """#!/bin/sh
# sp-session: a whole shell session under the preload (system-wide mode, simulated)
export LD_PRELOAD="%s"
exec /bin/bash "$@"
"""

SCRIPT = r"""
set -eu
cd "$WORK"
echo "MAPPED: bash=$(grep -c libsafepickle /proc/$$/maps || true)"
# coreutils, text tools
printf 'b\na\nc\na\n' | sort | uniq -c | tr -s ' '
seq 1 100 | awk '{s += $1} END {print "sum", s}'
mkdir -p tree/sub && echo one > tree/a.txt && echo two > tree/sub/b.txt
cp tree/a.txt tree/copy.txt && mv tree/copy.txt tree/moved.txt && ln -s a.txt tree/link
find tree | sort; wc -c tree/a.txt tree/sub/b.txt; head -c 3 tree/sub/b.txt; echo
sha256sum tree/a.txt tree/sub/b.txt
# non-Python programs read pickle files untouched (the policy's targets)
sha256sum models/bad.pt models/bad.pkl models/ok.pt | sed "s|$WORK/||"
cp models/bad.pkl copied.pkl && cmp models/bad.pkl copied.pkl && echo "cp+cmp of a malicious pickle: ok"
od -An -tx1 -N4 models/bad.pkl
# tar
tar czf tree.tgz tree && tar tzf tree.tgz | sort && mkdir un && tar xzf tree.tgz -C un && diff -r tree un/tree && echo "tar roundtrip ok"
tar cf models.tar models && tar tf models.tar | sort
# git
git init -q repo && cd repo
cp ../tree/a.txt . && cp ../models/bad.pkl . && git add a.txt bad.pkl
git -c user.name=t -c user.email=t@example.invalid commit -qm first && git log --format='%H %s'
git show --stat --format=%s HEAD | sed 's/ *|/ |/'; git cat-file -p HEAD:bad.pkl | sha256sum
cd ..
# make + gcc
cat > hello.c <<'EOF'
#include <stdio.h>
int main(void) { FILE *f = fopen("models/bad.pkl", "rb"); int c = f ? fgetc(f) : -1; printf("hello %d\n", c); return 0; }
EOF
printf 'hello: hello.c\n\tgcc -O1 -o hello hello.c\n' > Makefile
make -s && ./hello && sha256sum hello | cut -c1-16 >/dev/null && echo "gcc build ok"
# python loading models
/usr/bin/python3 -c "print('MAPPED: python=%d' % ('libsafepickle' in open('/proc/self/maps').read()))"
/usr/bin/python3 - <<'EOF'
import joblib, pickle, torch
m = torch.load("models/ok.pt")
print("torch ok", [round(float(v.sum()), 3) for v in m.values()])
print("joblib ok", joblib.load("models/ok.joblib").predict([[0.0], [3.0]]).tolist())
print("pickle ok", pickle.load(open("models/ok.pkl", "rb")))
EOF
/usr/bin/python3 - <<'EOF' || true
import os, torch
try:
    torch.load("models/bad.pt")
    print("BLOCKED-LOAD: loaded; payload ran:", os.path.exists(os.environ["MARKER"]))
except Exception as e:
    print("BLOCKED-LOAD: refused", type(e).__name__, "payload ran:", os.path.exists(os.environ["MARKER"]))
EOF
echo "MAPPED: end=$(grep -c libsafepickle /proc/$$/maps || true)"
echo done
"""


def build_models(d, marker):
    code = r"""
import os, pickle, sys, joblib, torch
from sklearn.linear_model import LinearRegression
sys.path.insert(0, %(here)r)
from spgen import Reduce, touch_cmd
d = %(d)r
torch.save({"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(3)}, d + "/ok.pt")
torch.save({"w": torch.ones(1), "x": Reduce(os.system, (touch_cmd(%(marker)r),))}, d + "/bad.pt")
joblib.dump(LinearRegression().fit([[0.0], [1.0], [2.0]], [1.0, 3.0, 5.0]), d + "/ok.joblib")
pickle.dump({"k": [1, 2.5, "x"]}, open(d + "/ok.pkl", "wb"))
pickle.dump(Reduce(os.system, (touch_cmd(%(marker)r),)), open(d + "/bad.pkl", "wb"))
""" % {"here": os.path.dirname(os.path.abspath(__file__)), "d": str(d), "marker": str(marker)}
    r = run_py(code, preload=False)
    assert r.returncode == 0, r.stderr


# /etc/ld.so.preload for real, without touching the host: a private mount namespace whose
# /etc is an overlay (the host's /etc below, a temp dir above) holding the preload line.
ETC_SESSION = """set -e
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$1/upper,workdir=$1/work" /etc
echo "$2" > /etc/ld.so.preload
shift 2
exec /bin/bash "$@"
"""


def etc_preload_argv(tmp_path, lib, *args):
    ov = tmp_path / "etc-overlay"
    (ov / "upper").mkdir(parents=True, exist_ok=True)
    (ov / "work").mkdir(exist_ok=True)
    return ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", ETC_SESSION, "sh",
            str(ov), lib, *map(str, args)]


def etc_preload_available(tmp_path):
    try:
        r = subprocess.run(etc_preload_argv(tmp_path / "probe", "/nonexistent.so", "-c",
                                            "test -s /etc/ld.so.preload"),
                           capture_output=True, text=True, timeout=60)
    except OSError:
        return False
    return r.returncode == 0 and not os.path.exists("/etc/ld.so.preload")


def session(tmp_path, marker, preload):
    """Run the script with preload None (plain), "env" (a wrapper exporting LD_PRELOAD) or
    "etc" (/etc/ld.so.preload in a private mount namespace, no LD_PRELOAD anywhere)."""
    work = tmp_path / (preload or "without")
    (work / "models").mkdir(parents=True)
    for f in (tmp_path / "models").iterdir():
        (work / "models" / f.name).write_bytes(f.read_bytes())
    script = tmp_path / "session.sh"
    script.write_text(SCRIPT)
    env = clean_env(WORK=work, MARKER=marker, HOME=tmp_path, LC_ALL="C", TZ="UTC",
                    GIT_AUTHOR_DATE="2026-01-01T00:00:00Z", GIT_COMMITTER_DATE="2026-01-01T00:00:00Z",
                    GIT_CONFIG_NOSYSTEM="1")
    if preload == "env":
        wrapper = tmp_path / "sp-session"
        wrapper.write_text(WRAPPER % LIB)
        wrapper.chmod(0o755)
        argv = [str(wrapper), str(script)]
    elif preload == "etc":
        argv = etc_preload_argv(tmp_path, LIB, script)
    else:
        argv = ["/bin/bash", str(script)]
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    ran = marker.exists()
    if ran:
        marker.unlink()
    return r.stdout.splitlines(), r.stderr, ran


@pytest.mark.parametrize("mode", ["env", "etc"])
def test_whole_session_identical_except_blocked_load(tmp_path, marker, mode):
    if mode == "etc" and not etc_preload_available(tmp_path):
        pytest.skip("no private mount namespace with an overlay /etc here (needs CAP_SYS_ADMIN)")
    (tmp_path / "models").mkdir()
    build_models(tmp_path / "models", marker)
    plain, plain_err, plain_ran = session(tmp_path, marker, preload=None)
    guarded, guarded_err, guarded_ran = session(tmp_path, marker, preload=mode)

    assert plain_ran, "control failed: without the preload the payload must run"
    assert not guarded_ran, "the payload ran inside the preloaded session"
    assert len(plain) == len(guarded), (plain, guarded)
    same = [(a, b) for a, b in zip(plain, guarded) if not a.startswith(DIFFERS)]
    for a, b in same:
        assert a == b, "output differs under the preload:\n  without: %s\n  with:    %s" % (a, b)
    assert "done" in guarded and "gcc build ok" in guarded and "tar roundtrip ok" in guarded
    tagged = dict(zip(plain, guarded))
    # the preload really was in every process of the session
    assert {"MAPPED: bash=0", "MAPPED: python=0", "MAPPED: end=0"} <= set(plain)
    assert "MAPPED: bash=0" not in guarded and "MAPPED: python=1" in guarded
    blocked = [b for a, b in tagged.items() if a.startswith("BLOCKED-LOAD:")]
    assert [a for a in plain if a.startswith("BLOCKED-LOAD:")] == ["BLOCKED-LOAD: loaded; payload ran: True"]
    assert blocked and blocked[0].startswith("BLOCKED-LOAD: refused") and blocked[0].endswith("payload ran: False")
    # stderr: the only safepickle lines are about the blocked file
    sp_lines = [ln for ln in guarded_err.splitlines() if "safepickle" in ln]
    assert sp_lines and all("bad.pt" in ln for ln in sp_lines), guarded_err
    assert "safepickle" not in plain_err
    assert not os.path.exists("/etc/ld.so.preload")  # the host was never touched
