"""test_cli_codecs.py - the CLI loads each decompression library at its first
use (analyzer/cli/codecs_dl.c), not at start, so that a scan of plain pickles
maps none of them (analyzer/README.md, "Memory"). This checks that:
  * the CLI does not link them, and dlopens the sonames the preload links;
  * in one CLI process, whatever the first file of a format is (a corrupt
    stream, a payload, a benign file), every file of it is judged as ever,
    one thread or two;
  * a library that does not load, or lacks a function, fails that file loudly
    (an error, exit 2, the reason on stderr), never "no pickle here", and the
    other files of the run are still judged;
  * `safepickle doctor` says whether each library loads."""
import bz2
import gzip
import json
import lzma
import os
import re
import subprocess

import lz4.frame
import pytest
import zstandard

from conftest import CLI, LIB, PYTHON, REPO, run_cli
from spgen import benign_pickle, exec_pickle

# format: (extension, the real library's compress, the loc tag the scan gives it)
CODECS = {
    "zlib": (".pkl.gz", gzip.compress, "gzip"),
    "bz2": (".pkl.bz2", bz2.compress, "bz2"),
    "lzma": (".pkl.xz", lzma.compress, "xz"),
    "zstd": (".pkl.zst", lambda d: zstandard.ZstdCompressor().compress(d), "zstd"),
    "lz4": (".pkl.lz4", lz4.frame.compress, "lz4"),
}
DECOMPRESS = ("import bz2, gzip, lzma, pickle, sys, zstandard, lz4.frame\n"
              "d = open(sys.argv[1], 'rb').read()\n"
              "d = {'gz': gzip.decompress, 'bz2': bz2.decompress, 'xz': lzma.decompress,\n"
              "     'zst': lambda b: zstandard.ZstdDecompressor().decompressobj().decompress(b),\n"
              "     'lz4': lz4.frame.decompress}[sys.argv[1].rsplit('.', 1)[1]](d)\n"
              "pickle.loads(d)\n")


def sonames():
    with open(os.path.join(REPO, "analyzer", "codecs.h")) as f:
        names = re.findall(r'X\(SPC_CODEC_\w+, "([^"]+)"', f.read())
    assert len(names) == len(CODECS), names
    return names


def needed(path):
    out = subprocess.run(["readelf", "-d", path], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out))


def test_cli_links_no_decompression_library_and_dlopens_the_preloads():
    libs = sonames()
    assert not needed(CLI) & set(libs), needed(CLI)
    # the names it dlopens are the ones the linker gives the preload (and ld.so finds)
    assert set(libs) <= needed(LIB), (libs, needed(LIB))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """For every format: a corrupt stream, a payload the real loader runs, a benign file."""
    d = tmp_path_factory.mktemp("codecs")
    out = {}
    for codec, (ext, comp, _) in CODECS.items():
        marker = d / ("ran_" + codec)
        evil = d / ("evil" + ext)
        evil.write_bytes(comp(exec_pickle(marker)))
        r = subprocess.run([PYTHON, "-c", DECOMPRESS, str(evil)], capture_output=True, text=True)
        assert os.path.exists(marker), "the payload does not run: the test would be void " + r.stderr
        benign = d / ("benign" + ext)
        benign.write_bytes(comp(benign_pickle()))
        bad = bytearray(comp(benign_pickle()))
        for i in range(12, len(bad)):  # the header kept, the body damaged
            bad[i] ^= 0x5A
        corrupt = d / ("corrupt" + ext)
        corrupt.write_bytes(bytes(bad))
        r = subprocess.run([PYTHON, "-c", DECOMPRESS, str(corrupt)], capture_output=True, text=True)
        assert r.returncode != 0, "the real library reads the damaged file: " + codec
        out[codec] = {"evil": str(evil), "benign": str(benign), "corrupt": str(corrupt)}
    plain = d / "evil.pkl"
    plain.write_bytes(exec_pickle(d / "ran_plain"))
    out["plain"] = str(plain)
    return out


def judge(res, codec, kind, files):
    """Checks one file's result against what it is."""
    tag = CODECS[codec][2]
    path = files[codec][kind]
    assert res["path"] == path
    if kind == "evil":
        assert res["verdict"] == "malicious" and res["action"] == "block", res
        assert any(r["loc"].startswith(path + "!%s@0" % tag) for r in res["reasons"]), res["reasons"]
    elif kind == "benign":
        assert res["verdict"] == "safe" and res["pickle_bearing"], res
    else:
        assert res["verdict"] == "unscannable" and res["action"] == "block", res
        assert [n["error"]["code"] for n in res["notes"] if n["kind"] == "error"] == ["format"], res["notes"]


@pytest.mark.parametrize("first", ["corrupt", "evil", "benign"])
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_every_format_judged_whatever_comes_first(files, first, jobs):
    """One process: the first file of each format loads its library."""
    order = [first] + [k for k in ("corrupt", "evil", "benign") if k != first]
    args = [(c, k) for c in CODECS for k in order]
    r = run_cli("scan", "-j", jobs, "--format", "json", *[files[c][k] for c, k in args])
    assert r.returncode == 1, r.stderr  # blocked files, no error
    res = json.loads(r.stdout)["files"]
    assert len(res) == len(args)
    for (c, k), one in zip(args, res):
        judge(one, c, k, files)


def fake_library(d, kind):
    """A directory holding a libzstd.so.1 that ld.so finds first: garbage bytes,
    or a real shared object without zstd's functions."""
    d.mkdir()
    lib = d / "libzstd.so.1"
    if kind == "garbage":
        lib.write_bytes(b"not a shared object\n")
    else:
        src = d / "empty.c"
        src.write_text("int spc_not_zstd;\n")
        subprocess.run(["cc", "-shared", "-fPIC", "-Wl,-soname,libzstd.so.1", "-o", str(lib), str(src)], check=True)
    return str(d)


@pytest.mark.parametrize("kind", ["garbage", "no_functions"])
def test_a_library_that_does_not_load_fails_the_file_loudly(files, tmp_path, kind):
    fake = fake_library(tmp_path / "lib", kind)
    paths = [files["plain"], files["zstd"]["benign"], files["zstd"]["evil"], files["lz4"]["evil"]]
    r = run_cli("scan", "--format", "json", *paths, env={"LD_LIBRARY_PATH": fake})
    assert r.returncode == 2, (r.returncode, r.stderr)
    res = json.loads(r.stdout)["files"]
    assert [x["path"] for x in res] == paths
    assert res[0]["verdict"] == "malicious"
    for x in res[1:3]:  # neither judged nor called clean: an error naming the library
        assert "verdict" not in x and x["io_error"]["code"] == "unsupported", x
        assert "libzstd.so.1" in x["io_error"]["msg"], x
        assert "libzstd.so.1" in r.stderr and x["path"] in r.stderr
    judge(res[3], "lz4", "evil", files)  # another library still loads
    assert json.loads(r.stdout)["summary"]["errors"] == 2
    # the same files without the broken library
    r = run_cli("scan", "--format", "json", *paths)
    assert r.returncode == 1 and [x.get("verdict") for x in json.loads(r.stdout)["files"]] == \
        ["malicious", "safe", "malicious", "malicious"], r.stdout


def test_doctor_says_whether_each_library_loads(tmp_path):
    r = run_cli("doctor")
    line = [x for x in r.stdout.splitlines() if x.strip().startswith("codecs ")]
    assert len(line) == 1 and line[0].endswith(": load") and all(s in line[0] for s in sonames()), r.stdout
    r = run_cli("doctor", env={"LD_LIBRARY_PATH": fake_library(tmp_path / "lib", "no_functions")})
    assert r.returncode == 1
    assert "PROBLEM: the zstd library (libzstd.so.1) lacks ZSTD_" in r.stdout, r.stdout
    assert not [x for x in r.stdout.splitlines() if x.strip().startswith("codecs ")]
