"""test_polyglot.py - a file that is a container and a pickle at offset 0 at once.

polyglot.py builds, for every format of the recogniser's table (analyzer/formats.def),
a container/pickle polyglot when the format's magic can start a pickle, or says why
not (and a safetensors/pickle polyglot: the scan's one reading outside the table). Here, with the real libraries:
  - every "not possible" claim: the magic followed by the payload is refused by both
    CPython unpicklers (C Unpickler and pickle._Unpickler, with persistent_load and
    find_class overrides) at offset 0, before anything is imported or called;
  - every polyglot: the container's own loader opens it, and the payload runs under both
    unpicklers with a persistent_load (marker created), without safepickle; also inside
    a gzip (the scan's sequential path) for zip and tar;
  - `safepickle scan` calls each one malicious, and the preload with layer 1 alone
    (file hooks; no audit hook, no runtime layer) refuses the open: the marker stays
    absent;
  - the reverse: a pickle at 0 with a zip after it (the zip's end record at the tail),
    malicious in either reading;
  - benign containers whose first bytes are opcodes (tar names starting with 'c', '(',
    'P'; zips; torch.save; np.savez) get no raw reading at 0."""
import io
import json
import os
import textwrap
import zipfile

import pytest

import polyglot
import rtpolicy
from conftest import run_cli, run_py

LAYER1 = {"layer_file": True, "layer_audit_hook": False, "runtime_behaviour": False}


def _built(marker_dir):
    out = [c for c in polyglot.cases(marker_dir) if c.data is not None]
    out += [polyglot.gz_nested(c) for c in out if c.nested]
    return out


def _reverse(marker_dir):
    """Pickle-looking heads with a zip's end record at the tail (both readings)."""
    m = lambda n: n + ".ran"  # noqa: E731 (in the loader's cwd, as polyglot.py's)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.txt", "hello")
    head_bad = polyglot.payload(m("rev_head")) + buf.getvalue()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", polyglot.payload(m("rev_member")))
    member_bad = b"\x80\x02N." + buf.getvalue()
    return [polyglot.Poly("zip", "rev_head", head_bad), polyglot.Poly("zip", "rev_member", member_bad)]


def _write(tmp_path, polys):
    d = tmp_path / "files"
    d.mkdir(exist_ok=True)
    for c in polys:
        (d / c.name).write_bytes(c.data)
    return d


LOADS = textwrap.dedent(r'''
    import gzip, json, os, pickle, sys
    d, md, names = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    os.chdir(md)
    out = {}
    for n in names:
        p = os.path.join(d, n)
        for U in (pickle.Unpickler, pickle._Unpickler):
            class V(U):
                def persistent_load(self, pid):
                    return pid
            mk = n.replace("_gz", "") + ".ran"
            if os.path.exists(mk):
                os.unlink(mk)
            try:
                f = gzip.open(p) if n.endswith("_gz") else open(p, "rb")
                with f:
                    V(f).load()
                err = None
            except Exception as e:
                err = type(e).__name__
            out["%s/%s" % (n, U.__name__)] = [os.path.exists(mk), err]
    print(json.dumps(out))
''')


def test_every_format_decided(tmp_path):
    cases = [c for c in polyglot.cases(tmp_path) if c.fmt != "safetensors"]
    assert [c.fmt for c in cases] == polyglot.table()
    built = {c.fmt for c in cases if c.data is not None}
    assert {"zip", "tar", "zstd", "xz"} <= built
    for c in cases:
        assert c.data is not None or c.why, c.fmt


def test_not_possible_claims_hold(tmp_path):
    """The magic (then a newline and the payload) fails at offset 0 in both unpicklers,
    persistent_load and find_class never called."""
    md = tmp_path / "m"
    md.mkdir()
    samples = {c.name: c.sample.hex() for c in polyglot.cases(md) if c.sample is not None}
    assert {"npy", "gzip", "lz4", "joblib", "unscannable"} <= set(samples)
    # the table's "unscannable" holds rar too ('R' = REDUCE on the empty stack)
    samples["rar"] = (b"Rar!\x1a\x07\x00\n" + polyglot.payload("rar.ran")).hex()
    code = textwrap.dedent(r'''
        import io, json, os, pickle, sys
        samples, md = json.loads(sys.argv[1]), sys.argv[2]
        os.chdir(md)
        out = {}
        for n, h in samples.items():
            calls = []
            for U in (pickle.Unpickler, pickle._Unpickler):
                class V(U):
                    def persistent_load(self, pid):
                        calls.append(("persid", pid))
                        return pid
                    def find_class(self, m, a):
                        calls.append(("find_class", m, a))
                        return super().find_class(m, a)
                try:
                    V(io.BytesIO(bytes.fromhex(h))).load()
                    err = None
                except Exception as e:
                    err = type(e).__name__
                out["%s/%s" % (n, U.__name__)] = [err, calls, os.path.exists(n + ".ran")]
        print(json.dumps(out))
    ''')
    r = run_py(code, preload=False, args=(json.dumps(samples), str(md)))
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert len(res) == 2 * len(samples)
    for k, (err, calls, ran) in res.items():
        assert err is not None and calls == [] and not ran, (k, err, calls, ran)


def test_polyglots_open_and_run_without_preload(tmp_path):
    md = tmp_path / "m"
    md.mkdir()
    polys = _built(md) + _reverse(md)
    d = _write(tmp_path, polys)
    for c in polys:
        if c.opens:
            r = run_py("p = %r\n%s" % (str(d / c.name), c.opens), preload=False)
            assert r.returncode == 0 and r.stdout.strip(), (c.name, r.stderr[-800:])
    names = [c.name for c in polys if c.name != "rev_member"]
    r = run_py(LOADS, preload=False, args=(str(d), str(md), json.dumps(names)))
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert len(res) == 2 * len(names)
    for k, (ran, err) in res.items():
        assert ran, (k, err)
    # the member of rev_member runs when read from the zip
    r = run_py("import pickle, zipfile; pickle.loads(zipfile.ZipFile(%r).read('archive/data.pkl'))"
               % str(d / "rev_member"), preload=False, cwd=str(md))
    assert r.returncode == 0 and (md / "rev_member.ran").exists(), r.stderr


def test_cli_calls_them_malicious(tmp_path):
    md = tmp_path / "m"
    md.mkdir()
    polys = _built(md) + _reverse(md)
    d = _write(tmp_path, polys)
    r = run_cli("scan", "--format", "json", "-j", "1", *[d / c.name for c in polys])
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr
    doc = json.loads(r.stdout)
    files = doc["files"] if isinstance(doc, dict) else doc
    verdicts = {os.path.basename(f["path"]): f["verdict"] for f in files}
    assert verdicts == {c.name: "malicious" for c in polys}, verdicts
    assert not list(md.iterdir())


def test_preload_layer1_refuses_the_open(tmp_path):
    md = tmp_path / "m"
    md.mkdir()
    polys = _built(md) + _reverse(md)
    d = _write(tmp_path, polys)
    pol = rtpolicy.write(tmp_path, **LAYER1)
    names = [c.name for c in polys]
    r = run_py(LOADS, env={"SAFEPICKLE_POLICY": pol}, args=(str(d), str(md), json.dumps(names)))
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert len(res) == 2 * len(names)
    for k, (ran, err) in res.items():
        assert not ran and err == "PermissionError", (k, ran, err)
    r = run_py("import pickle, zipfile\ntry:\n  pickle.loads(zipfile.ZipFile(%r).read('archive/data.pkl'))\n"
               "except PermissionError: print('refused')" % str(d / "rev_member"), env={"SAFEPICKLE_POLICY": pol},
               cwd=str(md))
    assert "refused" in r.stdout, r.stdout + r.stderr
    assert not list(md.iterdir())


def test_benign_containers_get_no_raw_reading(tmp_path):
    """Containers whose heads start with opcodes but are no pickle: no stream at
    <file>!pickle@0, verdicts unchanged (safe or no pickle)."""
    code = textwrap.dedent(r'''
        import io, sys, tarfile, zipfile, numpy as np, torch, os
        d = sys.argv[1]
        torch.save({"w": torch.zeros(3)}, os.path.join(d, "model.pt"))
        np.savez(os.path.join(d, "arrs.npz"), a=np.zeros(1000), b=np.arange(10))
        for nm in ["cifar/data_batch_1", "(weird", "Pname", "V.txt", "code.py", "inst", "]x", "N."]:
            with tarfile.open(os.path.join(d, "t_" + nm.replace("/", "_") + ".tar"), "w") as t:
                for data in (b"x = 1\n" * 50, bytes(range(256)) * 8):
                    ti = tarfile.TarInfo(nm + str(len(data))); ti.size = len(data)
                    t.addfile(ti, io.BytesIO(data))
        with zipfile.ZipFile(os.path.join(d, "text.zip"), "w") as z:
            z.writestr("notes.txt", "a" * 5000)
        with zipfile.ZipFile(os.path.join(d, "stored.zip"), "w") as z:
            z.writestr("zeros.bin", bytes(100000))
        # safetensors whose length's low byte is 'V' (a UNICODE line with no newline to
        # EOF: 2 MiB of zero tensor data, longer than max_str): read to EOF, not a limit
        import json, struct
        hdr = json.dumps({"w": {"dtype": "F32", "shape": [1 << 19], "data_offsets": [0, 1 << 21]}}).encode()
        n = 0x100 + ord("V")
        with open(os.path.join(d, "zeros.safetensors"), "wb") as f:
            f.write(struct.pack("<Q", n) + hdr + b" " * (n - len(hdr)) + bytes(1 << 21))
    ''')
    d = tmp_path / "b"
    d.mkdir()
    r = run_py(code, preload=False, args=(str(d),))
    assert r.returncode == 0, r.stderr[-2000:]
    files = sorted(d.iterdir())
    assert len(files) == 13
    r = run_cli("scan", "--format", "json", "-j", "1", *files)
    assert r.returncode == 0, r.stdout[-3000:]
    res = {os.path.basename(f["path"]): f for f in json.loads(r.stdout)["files"]}
    for n, f in res.items():
        raw = [s for s in f["streams"] if s["loc"].endswith("!pickle@0")]
        # a tar whose first name is "N." + digits IS a pickle at 0 (None, STOP): read, safe
        assert len(raw) == (n in ("t_N..tar", "zeros.safetensors")), (n, raw)
        assert f["verdict"] == "safe" or (not f["pickle_bearing"] and f["verdict"] in ("safe", "none")), (n, f)
