"""test_containers.py - every container a real loader unpickles from, built
with the real libraries (torch.save zip and legacy, a legacy torch tar,
np.save/np.savez(_compressed), joblib.dump with every compressor,
DataFrame.to_pickle with every compression, nested pickles).

For each container one generator subprocess:
  * writes a benign original and records, through the REAL loader with a
    recording find_class, which globals it resolves (ground truth);
  * writes a copy with a planted payload (builtins.exec creating a marker) and
    loads it with the real loader: the marker proves the payload is real.
Then `safepickle scan` must report exactly the recorded imports for the
benign file, and the payload's import AND call at the expected location."""
import bz2
import gzip
import json
import os

import pytest

from conftest import PYTHON, clean_env  # noqa: F401
from sp_containers import RECORDER, import_set, notes, payload_locs, scan

HERE = os.path.dirname(os.path.abspath(__file__))

GEN = RECORDER + r'''
import base64, builtins, codecs, json, os, pickle, struct, sys, tarfile, io
sys.path.insert(0, HERE)
from spgen import Reduce, touch_code
import numpy as np, torch, joblib, pandas as pd
import numpy.lib.format as npformat
import joblib.numpy_pickle as jnp
import pandas.io.pickle as pdpickle

out = {"ran": {}, "benign": {}, "files": {}}

def evil(tag):
    return Reduce(builtins.exec, (touch_code(os.path.abspath("MARK_" + tag)),))

def ran(tag, loader):
    try:
        loader()
    except Exception:
        pass  # a payload that ran before a failure still counts
    out["ran"][tag] = os.path.exists("MARK_" + tag)

def benign(tag, fn):
    out["benign"][tag] = recorded(fn)

# ---- torch zip and legacy
# This torch ignores pickle_module= unless weights_only (it resets it to the
# module-level `pickle`), so the recorder is installed there; its find_class
# answers names containing "Storage" itself (never reaching the recorder),
# so StorageType is wrapped to record those (torch.save writes them as torch.X).
import torch.serialization as tser
tser.pickle = recpickle
_ST = tser.StorageType
class _RecStorageType:
    def __new__(cls, name):
        REC.append(("torch", name))
        return _ST(name)
tser.StorageType = _RecStorageType
sd = {"w": torch.zeros(3), "b": torch.arange(4), "meta": {"epoch": 3}}
for kind, newzip in (("tzip", True), ("tlegacy", False)):
    torch.save(sd, kind + "_benign.pt", _use_new_zipfile_serialization=newzip)
    benign(kind, lambda: torch.load(kind + "_benign.pt", pickle_module=recpickle))
    torch.save({"w": torch.zeros(3), "x": evil(kind)}, kind + "_evil.pt", _use_new_zipfile_serialization=newzip)
    ran(kind, lambda: torch.load(kind + "_evil.pt"))

# a legacy file whose second stream (the protocol version) is the payload:
# torch.load unpickles it before it checks anything
with open("tleg1_evil.pt", "wb") as f:
    pickle.dump(0x1950a86a20f9469cfc6c, f, protocol=2)
    out["files"]["tleg1_off"] = f.tell()
    pickle.dump(evil("tleg1"), f, protocol=2)
ran("tleg1", lambda: torch.load("tleg1_evil.pt"))

# ---- legacy torch tar: storages (count, args, raw storage, views), tensors, pickle
def legacy_tar(path, views_payload=None, pickle_payload=None, tensors_payload=None):
    st = io.BytesIO()
    pickle.dump(1, st, protocol=2)
    pickle.dump(("0", "cpu", torch.FloatStorage), st, protocol=2)
    st.write(struct.pack("<q", 3) + struct.pack("<3f", 1.0, 2.0, 3.0))
    pickle.dump(views_payload if views_payload is not None else [], st, protocol=2)
    te = io.BytesIO()
    if tensors_payload is None:
        pickle.dump(0, te, protocol=2)
    else:  # one real tensor record, then the payload as the next tensor's args
        pickle.dump(2, te, protocol=2)
        pickle.dump(("t0", "0", torch.FloatTensor), te, protocol=2)
        te.write(struct.pack("<i", 1) + b"\0" * 4 + struct.pack("<q", 3) + struct.pack("<q", 1) + struct.pack("<q", 0))
        pickle.dump(tensors_payload, te, protocol=2)
    te = te.getvalue()
    pk = pickle.dumps(pickle_payload if pickle_payload is not None else {"k": 1}, protocol=2)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        for name, data in (("storages", st.getvalue()), ("tensors", te), ("pickle", pk)):
            ti = tarfile.TarInfo(name); ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
legacy_tar("ttar_benign.tar")
benign("ttar", lambda: torch.load("ttar_benign.tar", pickle_module=recpickle))
legacy_tar("ttar_evil.tar", views_payload=[evil("ttar")])
ran("ttar", lambda: torch.load("ttar_evil.tar"))
legacy_tar("ttar2_evil.tar", pickle_payload=evil("ttar2"))
ran("ttar2", lambda: torch.load("ttar2_evil.tar"))
legacy_tar("ttar3_evil.tar", tensors_payload=evil("ttar3"))
ran("ttar3", lambda: torch.load("ttar3_evil.tar"))
tser.pickle = pickle
tser.StorageType = _ST

# ---- numpy npy / npz
npformat.pickle = recpickle
np.save("npy_benign.npy", np.array([1, "a", None, 2.5], dtype=object), allow_pickle=True)
benign("npy", lambda: np.load("npy_benign.npy", allow_pickle=True))
np.save("npy_evil.npy", np.array([1, evil("npy")], dtype=object), allow_pickle=True)
for tag, save in (("npz", np.savez), ("npzc", np.savez_compressed)):
    save(tag + "_benign.npz", a=np.arange(6), b=np.array([1, "x"], dtype=object))
    benign(tag, lambda: np.load(tag + "_benign.npz", allow_pickle=True)["b"])
    save(tag + "_evil.npz", a=np.arange(6), b=np.array([evil(tag)], dtype=object))
# an npz whose members zipfile compressed with LZMA (np.load reads it)
import zipfile
def npz_lzma(path, arr):
    a, b = io.BytesIO(), io.BytesIO()
    np.save(a, np.arange(3))
    np.save(b, arr, allow_pickle=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_LZMA) as z:
        z.writestr("a.npy", a.getvalue())
        z.writestr("b.npy", b.getvalue())
npz_lzma("npzl_benign.npz", np.array([1, "x"], dtype=object))
benign("npzl", lambda: np.load("npzl_benign.npz", allow_pickle=True)["b"])
npz_lzma("npzl_evil.npz", np.array([evil("npzl")], dtype=object))
npformat.pickle = pickle
ran("npzl", lambda: np.load("npzl_evil.npz", allow_pickle=True)["b"])
ran("npy", lambda: np.load("npy_evil.npy", allow_pickle=True))
for tag in ("npz", "npzc"):
    ran(tag, lambda: np.load(tag + "_evil.npz", allow_pickle=True)["b"])

# ---- joblib, every compressor
def jrec():
    def fc(self, module, name):
        REC.append((module, name))
        return pickle._Unpickler.find_class(self, module, name)
    jnp.NumpyUnpickler.find_class = fc
    jnp.pickle = recpickle
def junrec():
    del jnp.NumpyUnpickler.find_class
    jnp.pickle = pickle
for comp in ("none", "zlib", "gzip", "bz2", "lzma", "xz", "lz4"):
    kw = {} if comp == "none" else {"compress": (comp, 3)}
    base = {"arr": np.arange(1000.0), "m": np.ones((7, 3), dtype=np.int16),
            "s": np.array(["ab", "cde"]), "objarr": np.array(["a", 1], dtype=object), "name": "x"}
    joblib.dump(base, "jl_%s_benign.joblib" % comp, **kw)
    jrec()
    benign("jl_" + comp, lambda: joblib.load("jl_%s_benign.joblib" % comp))
    junrec()
    # payload after the raw array bytes, in the outer stream
    joblib.dump({"arr": np.arange(1000.0), "m": np.ones((7, 3), dtype=np.int16), "evil": evil("jl_" + comp)},
                "jl_%s_evil.joblib" % comp, **kw)
    ran("jl_" + comp, lambda: joblib.load("jl_%s_evil.joblib" % comp))
    # payload inside an object array: a nested complete stream
    joblib.dump({"arr": np.arange(10.0), "o": np.array([evil("jlo_" + comp)], dtype=object)},
                "jlo_%s_evil.joblib" % comp, **kw)
    ran("jlo_" + comp, lambda: joblib.load("jlo_%s_evil.joblib" % comp))

# joblib at protocols 0 and 2 (the wrapper is copyreg._reconstructor(...) then BUILD at 0/1)
for p in (0, 2):
    joblib.dump({"arr": np.arange(300.0), "o": np.array([1, "x"], dtype=object), "evil": evil("jlp%d" % p),
                 "b": np.ones(5, dtype=np.int8)}, "jlp%d_evil.joblib" % p, protocol=p)
    ran("jlp%d" % p, lambda: joblib.load("jlp%d_evil.joblib" % p))

# ---- pandas, every compression read_pickle infers from the extension
pdpickle.pickle = recpickle
df = pd.DataFrame({"a": [1, 2], "c": pd.Categorical(["x", "y"]),
                   "t": pd.to_datetime(["2020-01-01", "2021-01-01"]).tz_localize("UTC")})
PD = (("none", ".pkl"), ("gzip", ".pkl.gz"), ("bz2", ".pkl.bz2"), ("xz", ".pkl.xz"),
      ("zip", ".pkl.zip"), ("zstd", ".pkl.zst"), ("tar", ".pkl.tar"), ("targz", ".pkl.tar.gz"))
for comp, ext in PD:
    df.to_pickle("pd_%s_benign%s" % (comp, ext))
    benign("pd_" + comp, lambda: pd.read_pickle("pd_%s_benign%s" % (comp, ext)))
    pd.DataFrame({"a": [1, 2], "b": [evil("pd_" + comp), "x"]}).to_pickle("pd_%s_evil%s" % (comp, ext))
pdpickle.pickle = pickle
for comp, ext in PD:
    ran("pd_" + comp, lambda: pd.read_pickle("pd_%s_evil%s" % (comp, ext)))

# ---- nested pickles, reached by a loads-like call, in every encoding
for tag in ("raw", "b64", "hex", "latin1"):
    inner = pickle.dumps(evil("nest_" + tag), protocol=2)
    if tag == "raw":
        arg = inner
    elif tag == "b64":
        arg = Reduce(base64.b64decode, (base64.b64encode(inner).decode(),))
    elif tag == "hex":
        arg = Reduce(bytes.fromhex, (inner.hex(),))
    else:
        arg = Reduce(codecs.encode, (inner.decode("latin1"), "latin1"))
    with open("nest_%s_evil.pkl" % tag, "wb") as f:
        pickle.dump({"model": [1, 2], "x": Reduce(pickle.loads, (arg,))}, f, protocol=4)
    ran("nest_" + tag, lambda: pickle.load(open("nest_%s_evil.pkl" % tag, "rb")))
# a nested payload that merely sits there as data
with open("nest_data_evil.pkl", "wb") as f:
    pickle.dump({"blob": pickle.dumps(evil("nest_data"), protocol=0)}, f, protocol=3)

# ---- throw-away streams in front of the payload (a loader that loads three times)
with open("stacked_evil.pkl", "wb") as f:
    pickle.dump(1, f, protocol=0)
    pickle.dump({"a": [1, 2]}, f, protocol=4)
    out["files"]["stacked_off"] = f.tell()
    pickle.dump(evil("stacked"), f, protocol=1)
def load3():
    with open("stacked_evil.pkl", "rb") as f:
        for _ in range(3):
            pickle.load(f)
ran("stacked", load3)

# ---- raw pickles of every protocol (benign ground truth)
import collections, fractions
obj = {"od": collections.OrderedDict(a=1), "fr": fractions.Fraction(1, 3), "s": {1, 2}, "b": b"xy"}
for p in range(6):
    with open("raw_p%d_benign.pkl" % p, "wb") as f:
        pickle.dump(obj, f, protocol=p)
    benign("raw_p%d" % p, lambda: recpickle.load(open("raw_p%d_benign.pkl" % p, "rb")))
    with open("raw_p%d_evil.pkl" % p, "wb") as f:
        pickle.dump([obj, evil("raw_p%d" % p)], f, protocol=p)
    ran("raw_p%d" % p, lambda: pickle.load(open("raw_p%d_evil.pkl" % p, "rb")))

# member names the zip-based writers chose
import zipfile
out["files"]["pd_zip_member"] = zipfile.ZipFile("pd_zip_evil.pkl.zip").namelist()[0]
out["files"]["pd_tar_member"] = tarfile.open("pd_tar_evil.pkl.tar").getnames()[0]
out["files"]["pd_targz_member"] = tarfile.open("pd_targz_evil.pkl.tar.gz").getnames()[0]
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("containers")
    code = "HERE = %r\n" % HERE + GEN
    import subprocess
    r = subprocess.run([PYTHON, "-c", code], cwd=str(d), env=clean_env(), capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    return d, out


def _p(d, name):
    return str(d / name)


# (tag, malicious file, expected payload location given the path) ---------------
ZIPLIKE = [
    ("tzip", "tzip_evil.pt", lambda p, o: p + "!tzip_evil/data.pkl"),
    ("npy", "npy_evil.npy", lambda p, o: p + "!pickle"),
    ("npz", "npz_evil.npz", lambda p, o: p + "!b.npy!pickle"),
    ("npzc", "npzc_evil.npz", lambda p, o: p + "!b.npy!pickle"),
    ("npzl", "npzl_evil.npz", lambda p, o: p + "!b.npy!pickle"),
    ("pd_none", "pd_none_evil.pkl", lambda p, o: p),
    ("pd_gzip", "pd_gzip_evil.pkl.gz", lambda p, o: p + "!gzip@0"),
    ("pd_bz2", "pd_bz2_evil.pkl.bz2", lambda p, o: p + "!bz2@0"),
    ("pd_xz", "pd_xz_evil.pkl.xz", lambda p, o: p + "!xz@0"),
    ("pd_zstd", "pd_zstd_evil.pkl.zst", lambda p, o: p + "!zstd@0"),
    ("pd_zip", "pd_zip_evil.pkl.zip", lambda p, o: p + "!" + o["files"]["pd_zip_member"]),
    ("pd_tar", "pd_tar_evil.pkl.tar", lambda p, o: p + "!" + o["files"]["pd_tar_member"]),
    ("pd_targz", "pd_targz_evil.pkl.tar.gz", lambda p, o: p + "!gzip@0!" + o["files"]["pd_targz_member"]),
    ("jl_none", "jl_none_evil.joblib", lambda p, o: p),
    ("jl_zlib", "jl_zlib_evil.joblib", lambda p, o: p + "!zlib@0"),
    ("jl_gzip", "jl_gzip_evil.joblib", lambda p, o: p + "!gzip@0"),
    ("jl_bz2", "jl_bz2_evil.joblib", lambda p, o: p + "!bz2@0"),
    ("jl_lzma", "jl_lzma_evil.joblib", lambda p, o: p + "!xz@0"),
    ("jl_xz", "jl_xz_evil.joblib", lambda p, o: p + "!xz@0"),
    ("jl_lz4", "jl_lz4_evil.joblib", lambda p, o: p + "!lz4@0"),
    ("jlp0", "jlp0_evil.joblib", lambda p, o: p),
    ("jlp2", "jlp2_evil.joblib", lambda p, o: p),
    ("ttar2", "ttar2_evil.tar", lambda p, o: p + "!pickle"),
    ("tleg1", "tleg1_evil.pt", lambda p, o: p + "!stream@%d" % o["files"]["tleg1_off"]),
    ("stacked", "stacked_evil.pkl", lambda p, o: p + "!stream@%d" % o["files"]["stacked_off"]),
] + [("raw_p%d" % i, "raw_p%d_evil.pkl" % i, lambda p, o: p) for i in range(6)]


@pytest.mark.parametrize("tag,fname,loc", ZIPLIKE, ids=[z[0] for z in ZIPLIKE])
def test_payload_found_at_its_location(built, tag, fname, loc):
    d, out = built
    assert out["ran"][tag], "the planted payload did not run under the real loader: test is void"
    path = _p(d, fname)
    res = scan(path)
    assert res["pickle_bearing"]
    assert loc(path, out) in payload_locs(res), (loc(path, out), payload_locs(res))


def test_torch_legacy_payload_in_the_object_stream(built):
    d, out = built
    assert out["ran"]["tlegacy"]
    path = _p(d, "tlegacy_evil.pt")
    res = scan(path)
    assert res["format"] == "torch_legacy"
    locs = [s["loc"] for s in res["streams"]]
    assert len(locs) == 5  # magic, protocol, sys_info, object, storage keys
    assert payload_locs(res) == [locs[3]]
    assert locs[3].startswith(path + "!stream@")


def test_legacy_tar_payload_after_a_raw_tensor_record(built):
    d, out = built
    assert out["ran"]["ttar3"]
    path = _p(d, "ttar3_evil.tar")
    locs = payload_locs(scan(path))
    assert len(locs) == 1 and locs[0].startswith(path + "!tensors!stream@"), locs


def test_legacy_tar_payload_after_a_raw_storage_record(built):
    """The payload sits in the storage-views pickle, after a raw storage
    record whose length the reader must take from the record itself."""
    d, out = built
    assert out["ran"]["ttar"]
    path = _p(d, "ttar_evil.tar")
    res = scan(path)
    assert res["format"] == "tar"
    locs = payload_locs(res)
    assert len(locs) == 1 and locs[0].startswith(path + "!storages!stream@"), locs


@pytest.mark.parametrize("comp", ["none", "zlib", "gzip", "bz2", "lzma", "xz", "lz4"])
def test_joblib_object_array_is_a_nested_stream(built, comp):
    d, out = built
    assert out["ran"]["jlo_" + comp]
    path = _p(d, "jlo_%s_evil.joblib" % comp)
    res = scan(path)
    locs = payload_locs(res)
    assert len(locs) == 1
    st = [s for s in res["streams"] if s["loc"] == locs[0]][0]
    assert st["parent"] is not None and st["depth"] >= 1
    root = path if comp == "none" else path + "!%s@0" % ("xz" if comp == "lzma" else comp)
    assert locs[0].startswith(root + "!stream@")
    assert not notes(res, "resync"), "joblib arrays must be skipped exactly, not resynchronised"


@pytest.mark.parametrize("tag", ["raw", "b64", "hex", "latin1"])
def test_nested_pickle_in_every_encoding(built, tag):
    d, out = built
    assert out["ran"]["nest_" + tag]
    path = _p(d, "nest_%s_evil.pkl" % tag)
    res = scan(path)
    locs = payload_locs(res)
    assert len(locs) == 1
    st = [s for s in res["streams"] if s["loc"] == locs[0]][0]
    assert st["depth"] == 1 and st["parent"] == 0
    enc = {"raw": "const", "b64": "base64", "hex": "hex", "latin1": "latin1"}[tag]
    assert locs[0].startswith(path + "!%s@" % enc)
    # the outer stream records the nested constant and points at that stream
    outer = res["streams"][0]
    nested = [e for e in outer["ir"] if e["kind"] == "nested"]
    assert [e["nested_stream"] for e in nested] == [st["index"]]


def test_nested_pickle_sitting_as_data(built):
    d, _ = built
    path = _p(d, "nest_data_evil.pkl")
    res = scan(path)
    assert payload_locs(res) and payload_locs(res)[0].startswith(path + "!const@")


BENIGN = ["tzip", "tlegacy", "ttar", "npy", "npz", "npzc", "npzl"] + \
    ["jl_" + c for c in ("none", "zlib", "gzip", "bz2", "lzma", "xz", "lz4")] + \
    ["pd_" + c for c in ("none", "gzip", "bz2", "xz", "zip", "zstd", "tar", "targz")] + \
    ["raw_p%d" % i for i in range(6)]
BENIGN_FILE = {"tzip": "tzip_benign.pt", "tlegacy": "tlegacy_benign.pt", "ttar": "ttar_benign.tar",
               "npy": "npy_benign.npy", "npz": "npz_benign.npz", "npzc": "npzc_benign.npz",
               "npzl": "npzl_benign.npz",
               "pd_none": "pd_none_benign.pkl", "pd_gzip": "pd_gzip_benign.pkl.gz",
               "pd_bz2": "pd_bz2_benign.pkl.bz2", "pd_xz": "pd_xz_benign.pkl.xz",
               "pd_zip": "pd_zip_benign.pkl.zip", "pd_zstd": "pd_zstd_benign.pkl.zst",
               "pd_tar": "pd_tar_benign.pkl.tar", "pd_targz": "pd_targz_benign.pkl.tar.gz"}


@pytest.mark.parametrize("tag", BENIGN)
def test_benign_original_imports_exactly_what_the_loader_resolves(built, tag):
    d, out = built
    fname = BENIGN_FILE.get(tag) or ("%s_benign.joblib" % tag if tag.startswith("jl_") else "%s_benign.pkl" % tag)
    res = scan(_p(d, fname))
    assert res["pickle_bearing"]
    want = sorted(tuple(x) for x in out["benign"][tag])
    assert want, "the recorder saw nothing: test is void"
    assert import_set(res, raw=True) == want
    assert not notes(res, "unscannable") and not notes(res, "limit") and not notes(res, "resync")
    for s in res["streams"]:
        assert s["complete"], (s["loc"], s["error"])


def test_not_pickle_is_cheap_and_clean(tmp_path):
    samples = {
        "text.txt": b"Now is the time for all good men\nto come to the aid of the party.\n",
        "code.py": open(os.__file__, "rb").read(),
        "data.json": json.dumps({"a": [1, 2, {"b": None}]}).encode(),
        "list.json": b"[1, 2, 3]\n",
        "csv.csv": b"a,b,c\n1,2,3\n",
        "empty": b"",
        "big.txt": b"x = 1\n" * 400000,
    }
    for name, data in samples.items():
        (tmp_path / name).write_bytes(data)
    for p in list(samples) + ["/bin/true"]:
        path = p if p.startswith("/") else str(tmp_path / p)
        res = scan(path)
        assert not res["pickle_bearing"] and not res["streams"], path
        # a 512-byte head, plus the tail where zipfile looks for a zip's end
        # record (the last 22 bytes, then the last 64 KiB + 22 bytes): zipfile
        # opens a zip with data before it and a comment after it
        assert res["bytes_read"] <= 512 + 22 + 65536 + 22, (path, res["bytes_read"])


def test_7z_wrapper_is_unscannable_not_clean(tmp_path):
    p = tmp_path / "model.bin"
    p.write_bytes(b"7z\xbc\xaf\x27\x1c\x00\x04" + os.urandom(200))
    res = scan(str(p))
    assert res["pickle_bearing"]
    assert [n["kind"] for n in res["notes"]] == ["unscannable"]


def test_decompression_bomb_is_reported_not_followed(tmp_path):
    # a pickle whose BINBYTES asks for 320 MiB of zeros: 20 bz2 streams of 16 MiB
    # each (bz2 reads concatenated streams), ~1 KB in all
    part = bz2.compress(b"\x00" * (16 << 20), 9)
    n = 20 * (16 << 20)
    p = tmp_path / "bomb.pkl.bz2"
    p.write_bytes(bz2.compress(b"\x80\x04B" + n.to_bytes(4, "little"), 9) + part * 20 + bz2.compress(b".", 9))
    assert p.stat().st_size * 10000 < n
    res = scan(str(p))
    lim = notes(res, "limit")
    assert lim and lim[0]["limit"] == "max_decomp_ratio", res["notes"]
    assert res["pickle_bearing"]
    g = tmp_path / "big.pkl.gz"
    g.write_bytes(gzip.compress(b"N" * (6 << 20) + b".", 1))
    res = scan(str(g), "--limit", "max_decomp_bytes=1048576")
    lim = notes(res, "limit")
    assert lim and lim[0]["limit"] == "max_decomp_bytes", res["notes"]


def test_highly_compressible_model_is_not_a_bomb(tmp_path):
    """joblib.dump(compress='bz2') of a zero array reaches ~50,000:1: below
    the 256 MiB floor that is real data, scanned in full, not a limit."""
    code = ("import joblib, numpy as np; joblib.dump({'w': np.zeros(4 << 20), 'b': np.ones(3)}, %r, "
            "compress=('bz2', 3))" % str(tmp_path / "zeros.joblib"))
    import subprocess
    r = subprocess.run([PYTHON, "-c", code], env=clean_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "zeros.joblib").stat().st_size * 10000 < (32 << 20)
    res = scan(str(tmp_path / "zeros.joblib"))
    assert res["notes"] == [] and all(s["complete"] for s in res["streams"])


def test_sniff_never_rejects_what_cpython_imports_from(tmp_path):
    """Differential check of the raw-pickle sniff: 2,000 mutated streams (byte
    flips, truncations, splices; test_differential's generator) are loaded by
    CPython's C and pure-Python unpicklers with a recording find_class. Every
    file from which CPython asks find_class for a module whose name the import
    system can resolve (a dotted identifier), even after one it cannot, must be
    pickle-bearing for the scan; the sniff may only reject files the loader
    fails on before it asks for any."""
    import re
    import subprocess
    r = subprocess.run([PYTHON, os.path.join(HERE, "diffgen.py"), str(tmp_path), "2000", "11"], env=clean_env(),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rec = json.load(open(tmp_path / "recorded.json"))
    names = sorted(rec)
    ident = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
    from conftest import CLI
    res = {}
    for i in range(0, len(names), 500):  # batches keep the command line short
        out = subprocess.run([CLI, "scan", "--format", "json", *[str(tmp_path / n) for n in names[i:i + 500]]],
                             env=clean_env(), capture_output=True, timeout=600)
        assert out.returncode in (0, 1), out.stderr[-2000:]
        for f in json.loads(out.stdout.decode("utf-8", "replace"))["files"]:  # bytes values may not be UTF-8
            res[os.path.basename(f["path"])] = f
    importing = missed = 0
    for n in names:
        # the recorder answers every find_class with a stub, as a loader's own
        # find_class that returns a stand-in where the import fails does: it
        # reads on past a module no import finds, so every importable name it
        # was asked for counts, wherever it comes
        mods = {m for k in ("c", "cpeek", "py") for m, _ in rec[n][k] if ident.match(m)}
        if not mods:
            continue
        importing += 1
        if not res[n]["pickle_bearing"]:
            missed += 1
    assert importing > 500, "the corpus lost its importing files: test is void"
    assert missed == 0, "%d of %d importing files were judged not a pickle" % (missed, importing)
