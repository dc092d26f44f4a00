"""test_build_deps.py - the Makefile's dependencies are exact (issue 18).

A scratch copy of the built tree (timestamps kept) is asked, with `make -q` and
`make -n`, what an edit of one file would rebuild: every object and test that
includes the file, and nothing else. This fails when a header is missing from the
dependencies (a stale test binary would run) and when a data file rebuilds the world.
"""
import os, shutil, subprocess, pathlib, time
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def _copy_tree(dst):
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        src = REPO / f
        if src.is_file():
            d = dst / f
            d.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, d)
    shutil.copytree(REPO / "build", dst / "build", symlinks=True)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    dst = tmp_path_factory.mktemp("deps")
    units = sorted("build/test/" + p.stem for p in (REPO / "test/unit").glob("test_*.c"))
    # the tree the suite runs on is built; bring the unit binaries up to date too
    subprocess.run(["make", "-s", "build"] + units, cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL)
    _copy_tree(dst)
    return dst, units


def _rebuilt(dst, path):
    """Targets `make -n build <units>` would remake after `path` is touched."""
    p = dst / path
    st = p.stat()
    # newer than anything built (the sources of a long-lived tree can be hours older
    # than its objects: their own mtime plus an hour would still look older)
    os.utime(p, ns=(st.st_atime_ns, max(st.st_mtime_ns, time.time_ns()) + 10**9 * 3600))
    try:
        out = subprocess.run(["make", "-n", "build"] + [u for u in UNITS], cwd=dst,
                             capture_output=True, text=True, check=True).stdout
    finally:
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    made = set()
    for line in out.splitlines():
        toks = line.split()
        if "-o" in toks:
            made.add(toks[toks.index("-o") + 1])
    return made


UNITS = []


def test_nothing_to_do_when_fresh(tree):
    dst, units = tree
    UNITS[:] = units
    out = subprocess.run(["make", "-q", "build"] + units, cwd=dst)
    assert out.returncode == 0, "a freshly built copy is not up to date: phantom dependency"


def _includers(dst, header):
    """Objects/tests whose compiler-written .d file names `header`."""
    res = set()
    for d in (dst / "build").rglob("*.d"):
        text = d.read_text()
        if header in text.split():
            res.add(str(d.relative_to(dst))[:-2])
    return res


@pytest.mark.parametrize("path", ["preload/cache.c", "test/unit/t.h", "analyzer/reader.h",
                                  "analyzer/opcodes.def", "preload/hooks.def"])
def test_edit_rebuilds_exactly_its_includers(tree, path):
    dst, units = tree
    UNITS[:] = units
    if not (dst / path).exists():
        pytest.skip(path + " is gone")
    made = _rebuilt(dst, path)
    inc = _includers(dst, path)
    assert inc, path + " is in no dependency file: edits to it would not rebuild anything"
    assert inc <= made, "stale after editing %s: %s" % (path, sorted(inc - made))
    stray = {m for m in made if m.endswith(".o")} - inc
    assert not stray, "editing %s also recompiles unrelated objects %s" % (path, sorted(stray))


def test_a_kb_file_rebuilds_only_the_kb(tree):
    dst, units = tree
    UNITS[:] = units
    made = _rebuilt(dst, "analyzer/kb/ml.tsv")
    objs = {m for m in made if m.endswith(".o")}
    assert "build/obj/analyzer/kb.o" in objs
    assert len(objs) <= 2, "touching one KB file recompiles %s" % sorted(objs)


def test_the_default_policy_rebuilds_its_embedding(tree):
    dst, units = tree
    UNITS[:] = units
    made = _rebuilt(dst, "policies/default.json")
    assert "build/obj/analyzer/policy_default.o" in made
    assert "build/libsafepickle.so" in made and "build/safepickle" in made
