"""diffcontainers.py - differential container mutants (issue 12), run by
test_diff_containers.py under /usr/bin/python3.

For every format family, base containers are written by the real library
(zipfile, tarfile, gzip, bz2, lzma, zstandard, numpy, joblib) around a pickle
that imports `diffmark.<id>`; a module `diffmark` (written next to the
mutants) records every name the unpickler asks it for. Mutation operators
(below, documented in test/README.md) change header fields and framing. Each
mutant is loaded by the REAL loader (pandas.read_pickle with the family's
compression, numpy.load, joblib.load); a mutant is kept when that loader
still unpickled something (a diffmark name was looked up). The test then
asserts that `safepickle scan` imports the same name from every kept mutant,
and that the preload refuses a sample of them (a policy denies diffmark.*).

    diffcontainers.py gen OUT FAMILY N SEED [START] -> OUT/FAMILY/m*.bin + kept.jsonl
    diffcontainers.py load OUT FAMILY K       -> loads the first K kept (under the preload)
"""
import bz2
import gzip
import io
import json
import lzma
import os
import pickle
import random
import struct
import sys
import tarfile
import warnings
import zipfile
import zlib

warnings.simplefilter("ignore")
# Address space of a generator process (bytes). A mutant's length field can
# make the real loader allocate what it says (zstd's content size, a pickle
# FRAME or BINBYTES8 length read through a decompressor): under this bound it
# raises MemoryError at once. At 3 GiB those allocations were granted and
# touched - one gzip mutant took 36 s - and they were most of this test's time;
# the payloads are a few hundred bytes, so no loader needs more to unpickle them.
LOADER_MEM = 512 << 20

DIFFMARK = '''
HITS = []
_F = {}
def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    HITS.append(name)
    if name not in _F:
        def f(*a, **k):
            return {}
        f.__module__, f.__name__, f.__qualname__ = __name__, name, name
        _F[name] = f
    return _F[name]
'''


class Ref:
    """Pickles as a reference to diffmark.<name> called with no arguments."""

    def __init__(self, name):
        self.name = name

    def __reduce__(self):
        import diffmark
        return (getattr(diffmark, self.name), ())


def payload(name, proto):
    import diffmark
    obj = {"data": list(range(5)), "m": Ref(name)}
    p = pickle.dumps(obj, protocol=proto)
    del diffmark.HITS[:]
    return p


# ------------------------------------------------------------------ bases (real writers)
def b_zip(name, rng):
    out = []
    for method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
        b = io.BytesIO()
        with zipfile.ZipFile(b, "w", method) as z:
            z.writestr("x.pkl", payload(name, rng.choice([2, 4, 5])))
        out.append(b.getvalue())
    return out


def b_tar(name, rng):
    out = []
    for fmt in (tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        b = io.BytesIO()
        with tarfile.open(fileobj=b, mode="w", format=fmt) as t:
            d = payload(name, rng.choice([2, 4]))
            ti = tarfile.TarInfo("x.pkl")
            ti.size = len(d)
            t.addfile(ti, io.BytesIO(d))
        out.append(b.getvalue())
    return out


def b_gzip(name, rng):
    d = payload(name, 4)
    return [gzip.compress(d, rng.choice([1, 6, 9])), gzip.compress(d[:7]) + gzip.compress(d[7:])]


def b_bz2(name, rng):
    d = payload(name, 4)
    return [bz2.compress(d), bz2.compress(d[:9]) + bz2.compress(d[9:])]


def b_lzma(name, rng):
    d = payload(name, 4)
    f1 = [{"id": lzma.FILTER_LZMA1, "dict_size": rng.choice([4096, 1 << 16, 3 << 19, 1 << 23]),
           "lc": 3, "lp": 0, "pb": 2}]
    out = [lzma.compress(d, format=lzma.FORMAT_XZ), lzma.compress(d, format=lzma.FORMAT_ALONE, filters=f1)]
    raw = lzma.compress(d, format=lzma.FORMAT_RAW, filters=f1)
    out.append(b"LZIP\x01\x10" + raw + struct.pack("<IQQ", zlib.crc32(d), len(d), 26 + len(raw)))
    return out


def b_zstd(name, rng):
    import zstandard
    d = payload(name, 4)
    c = zstandard.ZstdCompressor(level=rng.choice([1, 3, 19]), write_checksum=rng.random() < .5,
                                 write_content_size=rng.random() < .5).compress
    return [c(d), c(b"") + c(d)]


def b_npy(name, rng):
    import numpy as np
    out = []
    for v in ((1, 0), (2, 0), (3, 0)):
        b = io.BytesIO()
        arr = np.array([Ref(name), 1], dtype=object)
        np.lib.format.write_array(b, arr, version=v, allow_pickle=True)
        out.append(b.getvalue())
    b = io.BytesIO()
    st = np.zeros(1, dtype=[("a", "O"), ("b", "<f8")])
    st["a"][0] = Ref(name)
    np.save(b, st, allow_pickle=True)
    out.append(b.getvalue())
    return out


def b_joblib(name, rng):
    d = payload(name, 2)
    zf = b"ZF" + ("0x%x" % len(d)).encode().ljust(19) + zlib.compress(d)
    return [zf, b"ZF" + ("0x%x" % len(d)).encode().ljust(19) + b" " + zlib.compress(d)]


# ------------------------------------------------------------------ mutation operators
def m_flip(rng, b, lo=0, hi=64):
    """flip one byte in the header region"""
    if not b:
        return b
    i = rng.randrange(min(len(b), hi)) if rng.random() < .8 else rng.randrange(len(b))
    return b[:i] + bytes([b[i] ^ (1 << rng.randrange(8))]) + b[i + 1:]


def m_set(rng, b):
    """set one header byte to a random value"""
    if not b:
        return b
    i = rng.randrange(min(len(b), 64))
    return b[:i] + bytes([rng.randrange(256)]) + b[i + 1:]


def m_trunc(rng, b):
    """cut the tail off"""
    return b[:rng.randrange(len(b) + 1)]


def m_prefix(rng, b):
    """bytes before the container"""
    return rng.choice([b"\x00", b"JUNK", rng.randbytes(rng.randrange(1, 300)), b" " * 7]) + b


def m_suffix(rng, b):
    """bytes after the container"""
    return b + rng.choice([b"\x00" * rng.randrange(1, 9), rng.randbytes(rng.randrange(1, 300)), b"PK\x05\x06"])


def m_insert(rng, b):
    """random bytes inserted anywhere"""
    i = rng.randrange(len(b) + 1)
    return b[:i] + rng.randbytes(rng.randrange(1, 5)) + b[i:]


def m_double(rng, b):
    """the container twice (multi-member / concatenated)"""
    return b + b


GENERIC = [m_flip, m_set, m_trunc, m_prefix, m_suffix, m_insert, m_double]


def zip_comment(rng, b):
    """zip: an archive comment, the length field right or wrong"""
    i = b.rfind(b"PK\x05\x06")
    if i < 0:
        return b
    com = rng.randbytes(rng.randrange(0, 2000))
    n = len(com) if rng.random() < .7 else rng.randrange(65536)
    return b[:i + 20] + struct.pack("<H", n) + com


def zip_cd_field(rng, b):
    """zip: a central-directory or end-record field set to a random value"""
    i = b.rfind(rng.choice([b"PK\x01\x02", b"PK\x05\x06", b"PK\x03\x04"]))
    if i < 0:
        return b
    j = i + 4 + rng.randrange(16)
    return b[:j] + bytes([rng.randrange(256)]) + b[j + 1:]


def tar_chksum(rng, b):
    """tar: the checksum field re-spelled as tarfile's nti() still reads it"""
    if len(b) < 512:
        return b
    h = bytearray(b[:512])
    if rng.random() < .4:
        h[257:265] = b"\0" * 8  # the magic is not checked
    h[148:156] = b" " * 8
    s = 256 + sum(h[:148]) + sum(h[156:])
    if rng.random() < .2:
        s = 256 + sum(struct.unpack("148b", bytes(h[:148]))) + sum(struct.unpack("356b", bytes(h[156:])))
    spell = rng.choice([
        lambda: ("%06o\0 " % s).encode(), lambda: ("%07o\0" % s).encode(), lambda: (" %o" % s).encode().ljust(8, b" "),
        lambda: ("0o%o" % s).encode().ljust(8, b"\0"), lambda: ("+%o" % s).encode().ljust(8, b"\t"),
        lambda: ("\x1c%o\x1f" % s).encode().ljust(8, b"\0"), lambda: b"\x80" + s.to_bytes(7, "big", signed=False)
        if s >= 0 else b"\xff" + (s + (1 << 56)).to_bytes(7, "big"),
        lambda: ("%o" % s)[:1].encode() + b"_" + ("%o" % s)[1:].encode() if len("%o" % s) > 1 else b"0",
    ])()
    h[148:156] = spell[:8].ljust(8, b"\0")
    return bytes(h) + b[512:]


def gzip_header(rng, b):
    """gzip: flag bits, FEXTRA/FNAME/FCOMMENT/FHCRC fields, mtime/xfl/os"""
    if len(b) < 10:
        return b
    flag = b[3]
    extra = b""
    body = b[10:]
    add = rng.randrange(32)
    if add & 1:
        flag |= 4
        x = rng.randbytes(rng.randrange(0, 40))
        extra += struct.pack("<H", len(x)) + x
    if add & 2:
        flag |= 8
        extra += bytes(rng.randrange(1, 256) for _ in range(rng.randrange(0, 30))) + b"\0"
    if add & 4:
        flag |= 16
        extra += bytes(rng.randrange(1, 256) for _ in range(rng.randrange(0, 30))) + b"\0"
    if add & 8:
        flag |= 2
        extra += rng.randbytes(2)
    if add & 16:
        flag |= 0xe0 & rng.randrange(256)
    return b[:3] + bytes([flag]) + rng.randbytes(6) + extra + body


def gzip_pad(rng, b):
    """gzip: NUL padding between and after members"""
    return b + b"\0" * rng.randrange(1, 20) + (b if rng.random() < .5 else b"")


def lzma_alone(rng, b):
    """lzma: recompressed as .lzma with random lc/lp/pb/dictionary, or as mixed concatenations"""
    d = lzma.decompress(b) if b[:1] == b"\xfd" else None
    if d is None:
        return b
    lc = rng.randrange(5)
    lp = rng.randrange(5 - lc)
    f = [{"id": lzma.FILTER_LZMA1, "dict_size": rng.choice([4096, 12288, 1 << 16, 3 << 20, 1 << 24]),
          "lc": lc, "lp": lp, "pb": rng.randrange(5)}]
    a = lzma.compress(d, format=lzma.FORMAT_ALONE, filters=f)
    return rng.choice([a, a + b, b + a, a + rng.randbytes(5)])


def lzma_dict(rng, b):
    """lzma: the .lzma dictionary-size / size fields re-written"""
    if b[:1] in (b"\xfd", b"L"):
        return b
    ds = rng.choice([0, 1, 3, 4096, 6144, 1 << 20, 0xffffffff, rng.randrange(1 << 32)])
    us = rng.choice([b[5:13], b"\xff" * 8])
    return b[:1] + struct.pack("<I", ds) + us + b[13:]


def zstd_frames(rng, b):
    """zstd: skippable frames (any of 16 magics) before/after, empty frames"""
    import zstandard
    sk = struct.pack("<II", 0x184D2A50 + rng.randrange(16), rng.randrange(0, 40))
    sk += rng.randbytes(struct.unpack("<I", sk[4:])[0])
    e = zstandard.ZstdCompressor().compress(b"")
    return rng.choice([sk + b, sk + sk + b, e + b, b + sk, sk + e + b])


def npy_header(rng, b):
    """npy: the header dict re-spelled as ast.literal_eval still reads it"""
    if b[:6] != b"\x93NUMPY":
        return b
    major = b[6]
    if major == 1:
        hl, pre = struct.unpack("<H", b[8:10])[0], 10
    else:
        hl, pre = struct.unpack("<I", b[8:12])[0], 12
    h = b[pre:pre + hl].decode("latin1")
    d = eval(h)  # our own writer's header
    descr = d["descr"]
    q = rng.choice(["'", '"'])

    def lit(s):
        r = rng.random()
        if r < .2:
            return q + "".join("\\x%02x" % ord(c) for c in s) + q
        if r < .3 and len(s) > 1:
            return q + s[:1] + q + " " + q + s[1:] + q
        if r < .4:
            return "u" + q + s + q
        return q + s + q

    def spell(v):
        if isinstance(v, str):
            return lit(v)
        if isinstance(v, bool):
            return rng.choice(["True", "False"]) if False else str(v)
        if isinstance(v, tuple):
            return "(" + ", ".join(spell(x) for x in v) + ("," if len(v) == 1 else rng.choice(["", ","])) + ")"
        if isinstance(v, list):
            return "[" + ", ".join(spell(x) for x in v) + rng.choice(["", ","]) + "]"
        return repr(v)
    if descr == "|O" and rng.random() < .3:
        descr = rng.choice(["object", "O", "|O8", "<O", "=O"])
    items = [("descr", descr), ("fortran_order", d["fortran_order"]), ("shape", d["shape"])]
    rng.shuffle(items)
    sp = rng.choice(["", " ", "  ", "\t"])
    body = "{" + ("," + sp).join(lit(k) + ":" + sp + spell(v) for k, v in items) + rng.choice(["", ",", ", "]) + "}"
    if rng.random() < .2:
        body = rng.choice(["  ", "\t", ""]) + body
    body += " " * ((-(pre + len(body) + 1)) % 64) + "\n"
    hb = body.encode("latin1")
    v = rng.choice([1, 2, 3]) if len(hb) < 65536 else rng.choice([2, 3])
    pre2 = struct.pack("<H", len(hb)) if v == 1 else struct.pack("<I", len(hb))
    return b"\x93NUMPY" + bytes([v, 0]) + pre2 + hb + b[pre + hl:]


def zf_length(rng, b):
    """joblib ZF: the hex length field re-spelled as int(x, 16) still reads it, optional space"""
    if b[:2] != b"ZF":
        return b
    try:
        n = int(b[2:21], 16)
    except ValueError:
        return b
    body = b[21:]
    if body[:1] == b" ":
        body = body[1:]
    f = rng.choice(["0x%x", "0X%X", "%x", "+0x%x", " 0x%x", "\t%x", "0x_%x", "%X"]) % n
    if rng.random() < .2 and len(f) > 3:
        f = f[:-2] + "_" + f[-2:]
    f = f.encode()
    if len(f) > 19:
        return b
    pad = rng.choice([b" ", b"\t", b"\n"])
    return b"ZF" + f.ljust(19, pad) + (b" " if rng.random() < .5 else b"") + body


FAMILIES = {
    #        base     special mutators                    loader
    "zip": (b_zip, [zip_comment, zip_cd_field], "pandas:zip"),
    "tar": (b_tar, [tar_chksum, tar_chksum], "pandas:tar"),
    "gzip": (b_gzip, [gzip_header, gzip_pad], "pandas:gzip"),
    "bz2": (b_bz2, [], "pandas:bz2"),
    "lzma": (b_lzma, [lzma_alone, lzma_dict], "pandas:xz"),
    "zstd": (b_zstd, [zstd_frames], "pandas:zstd"),
    "npy": (b_npy, [npy_header, npy_header], "numpy"),
    "joblib": (b_joblib, [zf_length, zf_length], "joblib"),
}


def load(loader, path):
    if loader.startswith("pandas:"):
        import pandas
        pandas.read_pickle(path, compression=loader.split(":")[1])
    elif loader == "numpy":
        import numpy
        r = numpy.load(path, allow_pickle=True)
        if hasattr(r, "files"):
            for k in r.files:
                r[k]
    elif loader == "joblib":
        import joblib
        joblib.load(path)


def mutant(fam, bases, seed, i):
    """Mutant i of a family: a base and 1-3 operators, from its own seeded generator."""
    rng = random.Random(seed * 1000003 + i)
    _, special, _ = FAMILIES[fam]
    ops = GENERIC + special * 2
    b = rng.choice(bases)
    chain = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        op = rng.choice(ops)
        chain.append(op.__name__)
        try:
            b = op(rng, b)
        except Exception:
            pass
    return b, chain


def gen(out, fam, n, seed, start=0):
    """Mutants start..n-1; appends kept ones to kept.jsonl and the index being
    loaded to progress (a loader that crashes the interpreter - numpy on some
    object-array mutants - is resumed past that mutant by the caller)."""
    import resource
    # a mutant can make the real loader allocate what its header claims
    # (zstd's content size): bound it, the loader then raises MemoryError
    resource.setrlimit(resource.RLIMIT_AS, (LOADER_MEM, LOADER_MEM))
    d = os.path.join(out, fam)
    os.makedirs(d, exist_ok=True)
    sys.path.insert(0, out)
    with open(os.path.join(out, "diffmark.py"), "w") as f:
        f.write(DIFFMARK)
    import diffmark
    base_fn, _, loader = FAMILIES[fam]
    rng = random.Random(seed)
    bases = []
    for k in range(4):
        bases += base_fn("h%s%d" % (fam, k), rng)
    tmp = os.path.join(d, "cur.bin")
    with open(os.path.join(d, "kept.jsonl"), "a") as kept, open(os.path.join(d, "progress"), "w") as prog:
        for i in range(start, n):
            b, chain = mutant(fam, bases, seed, i)
            with open(tmp, "wb") as f:
                f.write(b)
            prog.seek(0)
            prog.write("%010d\n" % i)
            prog.flush()
            del diffmark.HITS[:]
            try:
                load(loader, tmp)
            except BaseException:
                pass
            rec = {"i": i, "ops": chain}
            if diffmark.HITS:
                rec["name"] = "m%06d.bin" % i
                rec["hits"] = sorted(set(diffmark.HITS))
                os.replace(tmp, os.path.join(d, rec["name"]))
            kept.write(json.dumps(rec) + "\n")
            kept.flush()
    if os.path.exists(tmp):
        os.unlink(tmp)


def load_sample(out, fam, k):
    """Run under the preload: load the first k kept mutants; report hits and errors."""
    sys.path.insert(0, out)
    import diffmark
    d = os.path.join(out, fam)
    names = []
    with open(os.path.join(d, "kept.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            if "name" in r:
                names.append(r["name"])
    res = {}
    for name in sorted(names)[:k]:
        del diffmark.HITS[:]
        err = None
        try:
            load(FAMILIES[fam][2], os.path.join(d, name))
        except BaseException as e:
            err = type(e).__name__
        res[name] = {"hits": list(diffmark.HITS), "err": err}
    print(json.dumps(res))


if __name__ == "__main__":
    if sys.argv[1] == "gen":
        gen(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]) if len(sys.argv) > 6 else 0)
    else:
        load_sample(sys.argv[2], sys.argv[3], int(sys.argv[4]))
