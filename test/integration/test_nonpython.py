"""test_nonpython.py - processes that are not Python run unchanged under the
preload: bash, coreutils, tar and git give byte-identical output and exit codes
with and without LD_PRELOAD. Checked twice: with the default targets and with
SAFEPICKLE_TARGETS='*' (targets only narrow the processes that run Python: these
tools do not, so the hooks pass straight through in both, and print nothing)."""
import os
import pickle
import shutil
import subprocess

import pytest

from conftest import LIB, clean_env

GIT = shutil.which("git")
TAR = shutil.which("tar")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    d = tmp_path_factory.mktemp("nonpy")
    (d / "a.txt").write_text("hello\nworld\n" * 50)
    (d / "b.bin").write_bytes(bytes(range(256)) * 40)
    (d / "sub").mkdir()
    (d / "sub" / "c.txt").write_text("zeta\nalpha\nmid\n")
    with open(d / "benign.pkl", "wb") as f:
        pickle.dump({"w": [1, 2, 3]}, f, protocol=2)
    for p in d.rglob("*"):
        os.utime(p, (1700000000, 1700000000))
    return d


SCRIPT = r'''
set -e
cd "$1"
echo "bash $BASH_VERSION" | cut -c1-6
for f in a.txt b.bin sub/c.txt benign.pkl; do wc -c "$f"; done
cat a.txt | sort | uniq -c
sort sub/c.txt
head -c 64 b.bin | od -An -tx1 | head -2
sha256sum a.txt b.bin benign.pkl sub/c.txt
ls -la --time-style=+%s . sub | awk '{print $1, $5, $6, $7}'
cp a.txt "$2/copy.txt" && cmp a.txt "$2/copy.txt" && rm "$2/copy.txt"  # not in the tree: its mtime is listed
find . -type f | sort
x=$(cat sub/c.txt | tr a-z A-Z); echo "$x"
'''

TAR_SCRIPT = r'''
set -e
cd "$1"
tar --sort=name --mtime=@1700000000 --owner=0 --group=0 --numeric-owner -cf "$2/t.tar" a.txt b.bin sub benign.pkl
tar -tvf "$2/t.tar" | awk '{print $1, $2, $3, $6}'
mkdir -p "$2/x" && tar -xf "$2/t.tar" -C "$2/x" && sha256sum "$2/x/a.txt" "$2/x/benign.pkl" | cut -c1-64
tar -czf "$2/t.tgz" --sort=name --mtime=@1700000000 --owner=0 --group=0 a.txt && tar -tzf "$2/t.tgz"
rm -rf "$2/x" "$2/t.tar" "$2/t.tgz"
'''

GIT_SCRIPT = r'''
set -e
rm -rf "$2/repo" && mkdir "$2/repo" && cd "$2/repo"
git init -q -b main .
cp "$1/a.txt" "$1/benign.pkl" . && mkdir sub && cp "$1/sub/c.txt" sub/
git add -A && git commit -q -m "first"
echo more >> a.txt && git commit -qam "second"
git log --format='%H %an %s'
git show --stat HEAD | tail -3
git cat-file -p HEAD^{tree}
git status --porcelain
git diff HEAD~1 --stat
'''

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@e", "GIT_AUTHOR_DATE": "1700000000 +0000",
           "GIT_COMMITTER_DATE": "1700000000 +0000", "GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent",
           "LC_ALL": "C"}


def _both(script, tree, tmp_path, extra=None):
    outs = []
    for preload in (False, True):
        env = clean_env(**GIT_ENV, **(extra or {}))
        if preload:
            env["LD_PRELOAD"] = LIB
        work = tmp_path / ("pre" if preload else "plain")
        work.mkdir(exist_ok=True)
        p = subprocess.run(["bash", "-c", script, "bash", str(tree), str(work)], env=env, capture_output=True,
                           timeout=120)
        outs.append((p.returncode, p.stdout, p.stderr))
    (rc0, out0, err0), (rc1, out1, err1) = outs
    assert rc0 == 0, err0.decode(errors="replace")
    assert (rc1, out1) == (rc0, out0), "output differs under the preload:\n%s\n---\n%s" % (
        out0.decode(errors="replace"), out1.decode(errors="replace"))
    assert b"safepickle:" not in err1, err1
    assert err1 == err0
    return out0


@pytest.mark.parametrize("targets", [None, "*"])
def test_bash_coreutils(tree, tmp_path, targets):
    out = _both(SCRIPT, tree, tmp_path, {"SAFEPICKLE_TARGETS": targets} if targets else None)
    assert b"benign.pkl" in out and b"ZETA" in out


@pytest.mark.skipif(TAR is None, reason="tar not installed")
@pytest.mark.parametrize("targets", [None, "*"])
def test_tar(tree, tmp_path, targets):
    out = _both(TAR_SCRIPT, tree, tmp_path, {"SAFEPICKLE_TARGETS": targets} if targets else None)
    assert b"sub/c.txt" in out


@pytest.mark.skipif(GIT is None, reason="git not installed")
@pytest.mark.parametrize("targets", [None, "*"])
def test_git(tree, tmp_path, targets):
    out = _both(GIT_SCRIPT, tree, tmp_path, {"SAFEPICKLE_TARGETS": targets} if targets else None)
    assert b"second" in out and b"first" in out
