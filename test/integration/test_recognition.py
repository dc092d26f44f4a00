"""test_recognition.py - one test per class of container that a real loader
opens but a recogniser less lenient than that loader would not call
pickle-bearing (issue 12). Each file is built from code with the real
libraries and a payload that creates a marker; each test

  1. loads it WITHOUT the preload: the marker must appear (the loader
     really unpickles the payload from this spelling), then
  2. loads it WITH the preload (file layer only: the audit hook and the
     behaviour veto are off, so the refusal is the recogniser's), and the
     marker must NOT appear and the open must be refused (PermissionError),
  3. and `safepickle scan` calls the same file pickle-bearing and not safe
     (the CLI and the preload ask the same recogniser).

The opposite error is tested too: content no loader could unpickle anything
from (a truncated zip) is not refused, and joblib's own shipped test data all
loads under the preload."""
import glob
import json
import os
import subprocess

import pytest

import rtpolicy
from conftest import LIB, PYTHON, clean_env, run_cli

HERE = os.path.dirname(os.path.abspath(__file__))
pytestmark = pytest.mark.skipif(not os.path.exists(LIB), reason="libsafepickle.so not built")

# ------------------------------------------------------------------ builders
# Run once in a child /usr/bin/python3 (torch, numpy, pandas, joblib). Every
# builder returns (file name, loader code); the loader code reads P.
GEN = r'''
import bz2, builtins, gzip, io, json, lzma, os, pickle, struct, sys, tarfile, zipfile, zlib
sys.path.insert(0, HERE)
from spgen import Reduce, touch_code

OUT = sys.argv[1]
cases = {}

def evil(tag):
    return Reduce(builtins.exec, (touch_code(os.path.join(OUT, "MARK_" + tag)),))

def payload(tag, proto=4):
    return pickle.dumps({"w": [1, 2, 3], "x": evil(tag)}, protocol=proto)

def put(tag, name, data, loader):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
    cases[tag] = {"path": os.path.join(OUT, name), "loader": loader}

PANDAS = "import pandas; pandas.read_pickle(P)"
NUMPY = "import numpy; numpy.load(P, allow_pickle=True)"
JOBLIB = "import joblib; joblib.load(P)"

def zipped(tag, comment=b""):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w") as z:
        z.writestr("x.pkl", payload(tag))
        z.comment = comment
    return b.getvalue()

# zip: bytes before the archive (zipfile finds the end record from the tail)
put("zip_prefix", "zp.zip", b"\x00JUNK" * 120 + zipped("zip_prefix"), PANDAS)
put("zip_prefix_comment", "zpc.zip", b"\x00JUNK" * 120 + zipped("zip_prefix_comment", b"a comment " * 50), PANDAS)
put("zip_comment", "zc.zip", zipped("zip_comment", b"x" * 3000), PANDAS)

# LZMA .lzma (alone) headers other than the default, and lzip (pandas .xz = FORMAT_AUTO)
put("lzma_dict4k", "d4k.pkl.xz", lzma.compress(payload("lzma_dict4k"), format=lzma.FORMAT_ALONE,
    filters=[{"id": lzma.FILTER_LZMA1, "dict_size": 4096}]), PANDAS)
put("lzma_lc1", "lc1.pkl.xz", lzma.compress(payload("lzma_lc1"), format=lzma.FORMAT_ALONE,
    filters=[{"id": lzma.FILTER_LZMA1, "dict_size": 1 << 20, "lc": 1, "lp": 0, "pb": 2}]), PANDAS)
data = payload("lzip")
raw = lzma.compress(data, format=lzma.FORMAT_RAW,
                    filters=[{"id": lzma.FILTER_LZMA1, "dict_size": 1 << 16, "lc": 3, "lp": 0, "pb": 2}])
put("lzip", "lz.pkl.xz", b"LZIP\x01\x10" + raw + struct.pack("<IQQ", zlib.crc32(data), len(data), 26 + len(raw)),
    PANDAS)

# LZMA dictionaries over our decoder's 256 MiB: liblzma allocates what the
# header names (Python's memlimit=None), we cap it (issue 12, differential gaps)
def xz_dict(tag, b):
    x = lzma.compress(payload(tag), format=lzma.FORMAT_XZ)
    bh = bytearray(x[12:24])            # block header: size, flags, LZMA2 id, props size, dict byte, ...
    assert bh[2:4] == b"\x21\x01"
    bh[4] = b
    bh[8:12] = struct.pack("<I", zlib.crc32(bytes(bh[:8])))
    return x[:12] + bytes(bh) + x[24:]
put("xz_dict_1g", "d1g.pkl.xz", xz_dict("xz_dict_1g", 0x24), PANDAS)
put("xz_dict_4g", "d4g.pkl.xz", xz_dict("xz_dict_4g", 0x28), PANDAS)
data = payload("lzip_dict_512m")
raw = lzma.compress(data, format=lzma.FORMAT_RAW,
                    filters=[{"id": lzma.FILTER_LZMA1, "dict_size": 1 << 16, "lc": 3, "lp": 0, "pb": 2}])
put("lzip_dict_512m", "lz512.pkl.xz",
    b"LZIP\x01\x1d" + raw + struct.pack("<IQQ", zlib.crc32(data), len(data), 26 + len(raw)), PANDAS)

# zstd: a skippable frame first; an empty frame first
import zstandard
zc = zstandard.ZstdCompressor().compress
put("zstd_skippable", "sk.pkl.zst", struct.pack("<II", 0x184D2A5E, 6) + b"\x00" * 6 + zc(payload("zstd_skippable")),
    PANDAS)
put("zstd_empty_first", "ef.pkl.zst", zc(b"") + zc(payload("zstd_empty_first")), PANDAS)
# an empty first frame that declares 41 bytes: the one-pass decoder refuses
# the size mismatch, the loader's small reads go block by block and on
e = bytearray(zstandard.ZstdCompressor(write_content_size=True, write_checksum=True).compress(b""))
assert e[4] & 0x20 and e[5] == 0
e[5] = 41
put("zstd_fcs_wrong", "fw.pkl.zst", bytes(e) + zc(payload("zstd_fcs_wrong")), PANDAS)

# gzip: reserved flag bits and a wrong header CRC (gzip.py checks neither)
g = gzip.compress(payload("gzip_flags"))
g = g[:3] + bytes([g[3] | 0xe2]) + g[4:10] + b"\xde\xad" + g[10:]
put("gzip_flags", "gf.pkl.gz", g, PANDAS)

# tar: checksum fields spelled as tarfile's nti() reads them
def tarred(tag, spell):
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w", format=tarfile.USTAR_FORMAT) as t:
        d = payload(tag)
        ti = tarfile.TarInfo("x.pkl"); ti.size = len(d)
        t.addfile(ti, io.BytesIO(d))
    buf = bytearray(b.getvalue())
    h = buf[:512]
    h[257:265] = b"\0" * 8              # no ustar magic: tarfile does not care
    h[148:156] = b" " * 8
    s = 256 + sum(h[:148]) + sum(h[156:])
    h[148:156] = spell(s)
    buf[:512] = h
    return bytes(buf)
put("tar_0o", "t0o.tar", tarred("tar_0o", lambda s: ("0o%05o" % s).encode().ljust(8, b"\0")), PANDAS)
put("tar_sign", "tsg.tar", tarred("tar_sign", lambda s: ("\x1c+%o_" % s).encode()[:-1].ljust(8, b" ")), PANDAS)
put("tar_b256", "t256.tar", tarred("tar_b256", lambda s: b"\x80" + s.to_bytes(7, "big")), PANDAS)

# joblib < 0.10 "ZF" files: the length field parsed by int(x, 16)
d = payload("joblib_zf", 2)
put("joblib_zf", "zf.pkl", b"ZF" + ("+0X_%x" % len(d)).encode().ljust(19) + zlib.compress(d), JOBLIB)
d = payload("joblib_zf_space", 2)
put("joblib_zf_space", "zfs.pkl", b"ZF" + ("0x%x" % len(d)).encode().ljust(19) + b" " + zlib.compress(d), JOBLIB)

# npy: header literals numpy's ast.literal_eval accepts
import numpy as np
def npy(tag, descr):
    b = io.BytesIO()
    np.save(b, np.array([evil(tag), 1], dtype=object), allow_pickle=True)
    raw = b.getvalue()
    hl = raw[8] | raw[9] << 8
    head = raw[10:10 + hl].decode("latin1")
    new = head.replace("'|O'", descr)
    new = new.rstrip("\n").rstrip(" ")
    new = new + " " * (hl - 1 - len(new)) + "\n"
    assert len(new) == hl
    return raw[:10] + new.encode("latin1") + raw[10 + hl:]
put("npy_escape", "esc.npy", npy("npy_escape", r"'|\x4f'"), NUMPY)
put("npy_object_word", "objw.npy", npy("npy_object_word", "'object'"), NUMPY)
put("npy_concat", "cat.npy", npy("npy_concat", "'|' \"O\""), NUMPY)
put("npy_struct_escape", "sesc.npy", npy("npy_struct_escape", r"[('a', '\x4f')]"), NUMPY)

# fds: an O_DIRECT open first (its unaligned sniff failed, "allowed" was cached), then an ordinary one
put("odirect", "od.pkl", payload("odirect"), (
    "import os, pickle\n"
    "try:\n"
    "    os.close(os.open(P, os.O_RDONLY | os.O_DIRECT))\n"
    "except PermissionError:\n"
    "    pass\n"
    "pickle.load(open(P, 'rb'))"))

json.dump(cases, open(os.path.join(OUT, "cases.json"), "w"))
'''


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("recog")
    p = subprocess.run([PYTHON, "-c", "HERE = %r\n" % HERE + GEN, str(d)], env=clean_env(),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    with open(os.path.join(d, "cases.json")) as f:
        cases = json.load(f)
    pol = rtpolicy.write(d, name="recog", layer_file=True, layer_audit_hook=False, runtime_behaviour=False)
    return str(d), cases, pol


RUNNER = r'''
import json, sys, traceback
P = sys.argv[1]
try:
    exec(compile(sys.argv[2], "loader", "exec"))
    print(json.dumps({"raised": None}))
except BaseException as e:
    print(json.dumps({"raised": type(e).__name__, "msg": str(e)[:300]}))
'''


def load(path, loader, *, preload, policy=None, log=None, timeout=300):
    env = clean_env()
    if preload:
        env["LD_PRELOAD"] = LIB
        if policy:
            env["SAFEPICKLE_POLICY"] = policy
        if log:
            env["SAFEPICKLE_LOG"] = str(log)
    p = subprocess.run([PYTHON, "-c", RUNNER, path, loader], env=env, capture_output=True, text=True,
                       timeout=timeout)
    lines = p.stdout.strip().splitlines()
    assert lines, "no result: rc=%d\n%s" % (p.returncode, p.stderr[-2000:])
    return json.loads(lines[-1]), p


CLASSES = ["zip_prefix", "zip_prefix_comment", "zip_comment", "lzma_dict4k", "lzma_lc1", "lzip",
           "zstd_skippable", "zstd_empty_first", "gzip_flags", "tar_0o", "tar_sign", "tar_b256",
           "joblib_zf", "joblib_zf_space", "npy_escape", "npy_object_word", "npy_concat",
           "npy_struct_escape", "odirect"] + [
           "xz_dict_1g", "xz_dict_4g", "lzip_dict_512m", "zstd_fcs_wrong"]
# the loader reads these, so we must read them too: found and judged, not
# merely refused as unscannable (a false positive on a benign file)
READ = ["xz_dict_1g", "xz_dict_4g", "lzip_dict_512m", "zstd_fcs_wrong"]


@pytest.mark.parametrize("tag", CLASSES)
def test_loader_runs_it_preload_refuses_it(built, tag):
    d, cases, pol = built
    c = cases[tag]
    mark = os.path.join(d, "MARK_" + tag)
    if os.path.exists(mark):
        os.unlink(mark)
    res, p = load(c["path"], c["loader"], preload=False)
    assert os.path.exists(mark), "%s: the real loader did not run the payload: %s\n%s" % (tag, res, p.stderr[-1500:])
    os.unlink(mark)
    res, p = load(c["path"], c["loader"], preload=True, policy=pol)
    assert not os.path.exists(mark), "%s: payload ran under the preload: %s\n%s" % (tag, res, p.stderr[-1500:])
    assert res["raised"] == "PermissionError", (tag, res, p.stderr[-1500:])
    assert "safepickle: blocked" in p.stderr, p.stderr[-1500:]
    if tag == "odirect":
        return
    r = run_cli("scan", "--format", "json", c["path"])
    f = json.loads(r.stdout)["files"][0]
    assert f["pickle_bearing"] and f["verdict"] != "safe", (tag, f["verdict"], f.get("notes"))


@pytest.mark.parametrize("tag", READ)
def test_what_the_loader_reads_we_read(built, tag):
    d, cases, pol = built
    c = cases[tag]
    r = run_cli("scan", "--format", "json", c["path"])
    f = json.loads(r.stdout)["files"][0]
    assert f["verdict"] == "malicious", (tag, f["verdict"], f.get("notes"))
    calls = [e for s in f["streams"] for e in s["ir"] if e["kind"] == "call"]
    assert any("exec" in e.get("text", "") for e in calls), (tag, calls)


# ------------------------------------------------------------------ the opposite error
TRUNC = r'''
import io, sys, torch, zipfile
b = io.BytesIO()
torch.save({"w": torch.arange(100.0)}, b)
d = b.getvalue()
open(sys.argv[1], "wb").write(d[:len(d) // 2])
'''


def test_truncated_zip_is_not_refused(tmp_path):
    """A zip cut before its central directory: no zip loader opens it, so it is
    not pickle-bearing; zipfile raises its own error, not PermissionError."""
    path = str(tmp_path / "cut.pt")
    p = subprocess.run([PYTHON, "-c", TRUNC, path], env=clean_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    for pre in (False, True):
        res, q = load(path, "import zipfile; zipfile.ZipFile(P)", preload=pre)
        assert res["raised"] == "BadZipFile", (pre, res, q.stderr[-1500:])
    res, q = load(path, "import torch; torch.load(P)", preload=True)
    assert res["raised"] != "PermissionError", (res, q.stderr[-1500:])
    r = run_cli("scan", "--format", "json", path)
    f = json.loads(r.stdout)["files"][0]
    assert f["verdict"] != "unscannable", f


JOBLIB_DATA = "/usr/lib/python3/dist-packages/joblib/test/data"
JOBLIB_CODE = ("import json, sys, joblib, warnings\nwarnings.simplefilter('ignore')\nout = {}\n"
               "for f in sys.argv[1:]:\n"
               "    try:\n        joblib.load(f); out[f] = None\n"
               "    except BaseException as e:\n        out[f] = type(e).__name__\n"
               "print(json.dumps(out))")


def _joblib_outcomes(policy):
    mains = sorted(f for f in glob.glob(os.path.join(JOBLIB_DATA, "joblib_*"))
                   if not f.endswith((".npy", ".npy.z")))
    assert len(mains) >= 40
    outs = []
    for pre in (False, True):
        env = clean_env()
        if pre:
            env["LD_PRELOAD"] = LIB
            if policy:
                env["SAFEPICKLE_POLICY"] = policy
        p = subprocess.run([PYTHON, "-c", JOBLIB_CODE, *mains], env=env, capture_output=True, text=True, timeout=600)
        outs.append(json.loads(p.stdout.strip().splitlines()[-1]))
    return outs


@pytest.mark.skipif(not os.path.isdir(JOBLIB_DATA), reason="python3-joblib test data not installed")
def test_joblib_shipped_data_loads_under_file_layer(built):
    """Every file of joblib's own test data loads (or fails) the same way with
    the file layer as without the preload: never refused. The 0.8.4 file
    uses the optional byte after the "ZF" header (it was unscannable, i.e.
    blocked); the 0.9.4 .npy.z companions hold raw array bytes."""
    d, cases, pol = built
    plain, pre = _joblib_outcomes(pol)
    refused = [f for f, e in pre.items() if e in ("PermissionError", "SafePickleBlocked")]
    assert not refused, refused
    assert plain == pre
    f084 = os.path.join(JOBLIB_DATA, "joblib_0.8.4_compressed_pickle_py27_np17.gz")
    assert pre[f084] == plain[f084] != "PermissionError"  # joblib's own py2 error, on Python 3


@pytest.mark.skipif(not os.path.isdir(JOBLIB_DATA), reason="python3-joblib test data not installed")
def test_joblib_shipped_data_loads_under_default_policy():
    """Both layers on: numpy's own ast.literal_eval of an npy header inside the unpickle
    of a safe file is not vetoed (layer 2's misfire rule)."""
    plain, pre = _joblib_outcomes(None)
    refused = [f for f, e in pre.items() if e in ("PermissionError", "SafePickleBlocked")]
    assert not refused, refused
    assert plain == pre


# ------------------------------------------------------------------ the per-open budget
BOMB = r'''
import builtins, gzip, io, os, sys, zipfile
sys.path.insert(0, HERE)
from spgen import Reduce, touch_code
import torch
out, n = sys.argv[1], int(sys.argv[2])
b = io.BytesIO()
torch.save({"w": torch.arange(4.0), "x": Reduce(builtins.exec, (touch_code(out + ".MARK"),))}, b)
src = zipfile.ZipFile(io.BytesIO(b.getvalue()))
# a small nested gzip bomb: ~150 bytes that decompress to 16 MiB of a plausible pickle ("N0" ...)
bomb = gzip.compress(gzip.compress(b"N0" * (8 << 20), 9), 9)
with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
    for i in range(n):   # ignored members first: torch.load never reads them
        z.writestr("ckpt/extra/b%03d" % i, bomb)
    for name in src.namelist():
        z.writestr("ckpt/" + name.split("/", 1)[1], src.read(name))
'''


def make_bomb(path, members):
    p = subprocess.run([PYTHON, "-c", "HERE = %r\n" % HERE + BOMB, path, str(members)], env=clean_env(),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]


def policy_with_limits(d, name, **limits):
    path = rtpolicy.write(d, name=name, layer_file=True, layer_audit_hook=False, runtime_behaviour=False)
    with open(path) as f:
        doc = json.load(f)
    doc.setdefault("limits", {}).update(limits)
    with open(path, "w") as f:
        json.dump(doc, f)
    return path


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    d = tmp_path_factory.mktemp("bomb")
    path = str(d / "bomb.pt")
    make_bomb(path, 160)
    return path


@pytest.mark.parametrize("limit,value", [("max_open_ms", 1500), ("max_open_bytes", 256 << 20),
                                         ("max_decomp_ratio", None)])
def test_budget_of_one_open_ends_in_a_refusal(tmp_path, bomb, limit, value):
    """A torch zip whose ignored members are nested gzip bombs (~150 bytes ->
    16 MiB of a plausible pickle each, 160 of them) in front of a payload:
    the per-open budget (time, bytes; a policy limit) ends the examination,
    the result is unscannable, the policy (on_limit: block) refuses the open.
    Under the default limits (value None) it is the open's decompression
    ratio that ends it (no single wrapper reaches the ratio floor; before,
    only max_open_ms did, after 30 s)."""
    path = bomb
    mark = path + ".MARK"
    res, p = load(path, "import torch; torch.load(P)", preload=False)
    assert os.path.exists(mark), (res, p.stderr[-1500:])
    os.unlink(mark)
    # the time and byte budgets are tested alone: the open's decompression ratio, which
    # ends it under the default limits, is lifted (which limit fires first otherwise
    # depends on how fast the scan is: a faster scan met the ratio before 1,500 ms)
    pol = policy_with_limits(tmp_path, "budget",
                             **({limit: value, "max_decomp_ratio": 10 ** 9} if value is not None else {}))
    log = tmp_path / "audit.jsonl"
    res, p = load(path, "import torch; torch.load(P)", preload=True, policy=pol, log=log, timeout=240)
    assert not os.path.exists(mark)
    assert res["raised"] == "PermissionError", (res, p.stderr[-1500:])
    recs = [json.loads(x) for x in log.read_text().splitlines()]
    mine = [r for r in recs if r.get("path") == path and r.get("action") == "block"]
    assert mine, recs
    assert mine[0]["verdict"] == "unscannable"
    assert any(x["rule"] == "scan.limit" and limit in x["msg"] for x in mine[0]["reasons"]), mine[0]["reasons"]


BADCD = r'''
import io, struct, sys, zipfile
b = io.BytesIO()
with zipfile.ZipFile(b, "w") as z:
    z.writestr("a.pkl", b"\x80\x04N.")
d = bytearray(b.getvalue())
i = d.rfind(b"PK\x05\x06")
d[i + 16:i + 20] = struct.pack("<I", 3)   # the directory's offset: wrong
open(sys.argv[1], "wb").write(d)
'''


def test_zip_whose_members_no_loader_reaches_is_not_refused(tmp_path):
    """An end record whose directory offset is wrong: zipfile finds the
    directory (its "concat" arithmetic) but no member's local header, so it
    raises BadZipFile on the member; nothing is unpickled: not refused, and
    the CLI does not count it as blocked."""
    path = str(tmp_path / "badcd.zip")
    p = subprocess.run([PYTHON, "-c", BADCD, path], env=clean_env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    code = "import zipfile; zipfile.ZipFile(P).read('a.pkl')"
    for pre in (False, True):
        res, q = load(path, code, preload=pre)
        assert res["raised"] == "BadZipFile", (pre, res, q.stderr[-1500:])
    r = run_cli("scan", "--format", "json", path)
    f = json.loads(r.stdout)["files"][0]
    assert f["action"] == "allow" and not f["pickle_bearing"], f


# ------------------------------------------------------------------ a loader's own find_class
# A first GLOBAL whose module line decodes but names no importable module: the
# find_class that imports fails there, but a loader's own find_class (one that
# maps old names, or returns a stand-in when the import fails) reads on, into
# a payload. The sniff must not call such a file "no pickle".
STANDIN = r'''
import pickle
class Standin(pickle.BASE):
    def find_class(self, module, name):
        try:
            return super().find_class(module, name)
        except Exception:
            return object
with open(P, "rb") as f:
    Standin(f).load()
'''
MODULE_LINES = [b"]x", b"", b"a b", b"my-module", b"os\x00junk", b"\xc3\xa9t\xc3\xa9-1", b"x\ty"]
# the C loader refuses an empty line before find_class; the pure-Python one does not


@pytest.mark.parametrize("line", MODULE_LINES, ids=[repr(x)[2:-1] for x in MODULE_LINES])
def test_unimportable_first_global_then_payload_is_refused(tmp_path, line):
    mark = tmp_path / "MARK"
    gen = ("import builtins, os, pickle, sys\nsys.path.insert(0, %r)\nfrom spgen import Reduce, touch_code\n"
           "d = pickle.dumps(Reduce(builtins.exec, (touch_code(%r),)), protocol=0)\n"
           "open(sys.argv[1], 'wb').write(b'c' + %r + b'\\nstub\\n0' + d)\n" % (HERE, str(mark), line))
    path = str(tmp_path / "standin.pkl")
    p = subprocess.run([PYTHON, "-c", gen, path], env=clean_env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    loader = STANDIN.replace("BASE", "_Unpickler" if line == b"" else "Unpickler")
    res, q = load(path, loader, preload=False)
    assert mark.exists(), "the stand-in loader did not run the payload: %s\n%s" % (res, q.stderr[-1500:])
    mark.unlink()
    res, q = load(path, loader, preload=True)
    assert not mark.exists(), "payload ran under the preload: %s\n%s" % (res, q.stderr[-1500:])
    assert res["raised"] == "PermissionError", (res, q.stderr[-1500:])
    f = json.loads(run_cli("scan", "--format", "json", path).stdout)["files"][0]
    assert f["pickle_bearing"] and f["verdict"] == "malicious", f
