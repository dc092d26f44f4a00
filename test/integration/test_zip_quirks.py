"""test_zip_quirks.py - the zip tricks of threats.md A3, each rebuilt from a
real torch.save checkpoint with a planted payload by a small zip writer that
controls every header field. Each constructed file is first loaded by the real
torch.load in a subprocess whose payload creates a marker: the marker MUST
appear (the quirk is real, the loader accepts it). Then `safepickle scan` must
report the payload's import and call in the member the loader unpickles."""
import json
import os
import subprocess

import pytest

from conftest import PYTHON, clean_env
from sp_containers import payload_locs, scan

HERE = os.path.dirname(os.path.abspath(__file__))

GEN = r'''
import builtins, io, json, os, struct, sys, zipfile, zlib
sys.path.insert(0, HERE)
from spgen import Reduce, touch_code
import torch

def evil(tag):
    return Reduce(builtins.exec, (touch_code(os.path.abspath("MARK_" + tag)),))

def entries_of(tag):
    """(name, data) of a real torch.save checkpoint with a payload, archive folder renamed to 'ckpt'."""
    buf = io.BytesIO()
    torch.save({"w": torch.arange(6.0), "x": evil(tag)}, buf)
    z = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    out = []
    for n in z.namelist():
        out.append(("ckpt/" + n.split("/", 1)[1], z.read(n)))
    return out

def zwrite(entries, crc_bad=False, local_names=None, dd_zero=False, deflate=(), prefix=b"", zip64=False, mid=b""):
    out = bytearray(prefix)
    cd = bytearray()
    for name, data in entries:
        bname = name.encode()
        method = 8 if name.endswith(tuple(deflate)) and deflate else 0
        if method == 8:
            co = zlib.compressobj(6, zlib.DEFLATED, -15)
            comp = co.compress(data) + co.flush()
        else:
            comp = data
        crc = zlib.crc32(data) ^ (0x5A5A5A5A if crc_bad else 0)
        flags = 0x08 if dd_zero else 0
        lname = (local_names or {}).get(name, name).encode()
        off = len(out)
        lcrc, lcs, lus = (0, 0, 0) if dd_zero else (crc, len(comp), len(data))
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, flags, method, 0, 0x21, lcrc, lcs, lus, len(lname), 0)
        out += lname + comp
        if dd_zero:
            out += struct.pack("<IIII", 0x08074B50, crc, len(comp), len(data))
        if zip64:
            extra = struct.pack("<HHQQQ", 1, 24, len(data), len(comp), off)
            cd += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, flags, method, 0, 0x21, crc,
                              0xFFFFFFFF, 0xFFFFFFFF, len(bname), len(extra), 0, 0, 0, 0, 0xFFFFFFFF)
            cd += bname + extra
        else:
            cd += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, flags, method, 0, 0x21, crc,
                              len(comp), len(data), len(bname), 0, 0, 0, 0, 0, off)
            cd += bname
    cdoff = len(out)
    out += cd
    out += mid  # bytes between the directory and the end records
    n = len(entries)
    if zip64:
        e64 = len(out)
        out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, n, n, len(cd), cdoff)
        out += struct.pack("<IIQI", 0x07064B50, 0, e64, 1)
        out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    else:
        out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, len(cd), cdoff, 0)
    return bytes(out)

def decoy_prefix():
    """A benign data.pkl local entry the central directory never mentions."""
    import pickle
    d = pickle.dumps({"benign": True}, protocol=2)
    name = b"ckpt/data.pkl"
    return struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0x21, zlib.crc32(d), len(d), len(d),
                       len(name), 0) + name + d

QUIRKS = {
    "plain": {},
    "folder": {},                      # data.pkl under an arbitrary top-level folder ('ckpt')
    "deflated": {"deflate": ("data.pkl",)},
    "all_deflated": {"deflate": ("",)},
    "bad_crc": {"crc_bad": True},
    "local_name": {"local_names": "swap"},
    "dd_zero": {"dd_zero": True},
    "trust_cd": {"prefix": "decoy"},
    "zip64": {"zip64": True},
    "mid_junk": {"mid": b"#" * 100},  # miniz takes offsets as written; zipfile would shift them
}
res = {}
for tag, kw in QUIRKS.items():
    ents = entries_of(tag)
    kw = dict(kw)
    if kw.get("local_names") == "swap":
        kw["local_names"] = {n: n.replace("data.pkl", "zzzz.pkl") for n, _ in ents}
    if kw.get("prefix") == "decoy":
        kw["prefix"] = decoy_prefix()
    path = os.path.abspath("quirk_%s.pt" % tag)
    open(path, "wb").write(zwrite(ents, **kw))
    try:
        torch.load(path)
    except Exception as e:
        res.setdefault("errors", {})[tag] = repr(e)
    res[tag] = os.path.exists("MARK_" + tag)
print(json.dumps(res))
'''

QUIRKS = ["plain", "folder", "deflated", "all_deflated", "bad_crc", "local_name", "dd_zero", "trust_cd", "zip64",
          "mid_junk"]


@pytest.fixture(scope="module")
def quirks(tmp_path_factory):
    d = tmp_path_factory.mktemp("zipq")
    r = subprocess.run([PYTHON, "-c", "HERE = %r\n" % HERE + GEN], cwd=str(d), env=clean_env(),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return d, json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("tag", QUIRKS)
def test_zip_quirk_loads_and_is_caught(quirks, tag):
    d, res = quirks
    assert res[tag] is True, "torch.load did not run the payload: the quirk file is not valid (%s)" % \
        res.get("errors", {}).get(tag)
    path = str(d / ("quirk_%s.pt" % tag))
    out = scan(path)
    assert out["format"] == "zip"
    assert payload_locs(out) == [path + "!ckpt/data.pkl"], (payload_locs(out), out["notes"])


def test_decoy_entry_outside_the_directory_is_not_what_we_report(quirks):
    """With a decoy local entry in front, the member we report is the one the
    central directory names (the decoy is never read by the loader)."""
    d, res = quirks
    out = scan(str(d / "quirk_trust_cd.pt"))
    locs = [s["loc"] for s in out["streams"]]
    assert locs.count(str(d / "quirk_trust_cd.pt") + "!ckpt/data.pkl") == 1
