"""polyglot.py - container/pickle polyglots, one per format of the recogniser's table.

A file can be a valid container (zipfile, tarfile, lzma, zstd open it) and, read from
offset 0 by an unpickler, a malicious pickle at the same time. For every format of
analyzer/formats.def (the one table of formats; read from there, not copied) this module
either builds such a polyglot or says why the format's magic cannot start a pickle that
runs anything; plus the one reading the scan decides by bytes outside the table
(safetensors: a JSON header after a u64 length):

    cases(marker_dir) -> [Poly]     every format of the table, in table order

A Poly with data is a polyglot: `data` is the file, `opens` a Python snippet (path in the
variable `p`) that opens it with the container's own loader and prints what it read, and
`persid` says whether the pickle needs a persistent_load (PERSID/BINPERSID at 0). A Poly
without data has `why`, and `sample`: the format's magic followed by the payload, which both
CPython unpicklers must refuse at offset 0 before they import or call anything
(test_polyglot checks both claims). `nested` marks the polyglots that are also built
inside a gzip (the scan's sequential path). The payload only touches <name>.ran in the
loader's working directory (a tar name holds 100 bytes: the tests load with the marker
directory as cwd).

Run as a script: `polyglot.py DIR MARKERDIR` writes the polyglots and a manifest.json."""
import io
import json
import lzma
import os
import re
import struct
import sys
import tarfile
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
FORMATS_DEF = os.path.join(os.path.dirname(os.path.dirname(HERE)), "analyzer", "formats.def")


def table():
    """The format names of formats.def, in table order."""
    out = []
    for ln in open(FORMATS_DEF):
        m = re.match(r'\s*SPA_FMT\(\s*(\w+)\s*,\s*"([^"]+)"', ln)
        if m:
            out.append(m.group(2))
    return out


def payload(marker):
    """A protocol-0 pickle (ASCII, no PROTO) that runs `touch marker`."""
    return b"cposix\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."


class Poly:
    def __init__(self, fmt, name, data=None, opens=None, persid=False, why=None, sample=None,
                 nested=False):
        self.fmt, self.name, self.data, self.opens = fmt, name, data, opens
        self.persid, self.why, self.sample, self.nested = persid, why, sample, nested


def _zip_members():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.txt", "hello")
        z.writestr("b.bin", bytes(range(256)))
    return buf.getvalue()


def zip_poly(marker):
    """"PK\\3\\4" + "\\n" is PERSID with the id "K\\3\\4"; the payload follows; then a zip.
    zipfile finds the end record at the tail and tolerates the bytes before the zip."""
    return b"PK\x03\x04\n" + payload(marker) + _zip_members()


def tar_poly(marker):
    """A tar whose first member's name is the payload (tarfile checks only the checksum)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        ti = tarfile.TarInfo(payload(marker).decode("latin-1"))
        d = b"hello\n"
        ti.size = len(d)
        t.addfile(ti, io.BytesIO(d))
    return buf.getvalue()


def zstd_poly(marker):
    """A zstd skippable frame (magic 0x184D2A5x, little-endian) starting with 'V'
    (UNICODE line): the line runs to a newline inside the frame's data, then the payload;
    a real zstd frame follows."""
    import zstandard
    frame = zstandard.ZstdCompressor().compress(b"\x80\x04N.")
    body = b"x\n" + payload(marker)
    return b"V\x2a\x4d\x18" + struct.pack("<I", len(body)) + body + frame


def xz_poly(marker):
    """An .lzma (alone) header whose properties byte 0x8a (lc=3 lp=0 pb=3) is LONG1: its
    length byte is the dictionary size's low byte (128: a valid 2^n), so the long covers
    the rest of the header and the compressed data (a benign pickle); the payload follows
    after 0xff padding (an invalid header: lzma.open ignores data after the first stream
    that does not decode). The scan's weak-magic settlement reads this as xz."""
    comp = lzma.LZMACompressor(format=lzma.FORMAT_ALONE, filters=[
        {"id": lzma.FILTER_LZMA1, "dict_size": 4096, "lc": 3, "lp": 0, "pb": 3}])
    z = comp.compress(b"\x80\x02]q\x00(K\x01K\x02e.") + comp.flush()
    assert z[0] == 0x8a, z[:1]
    z = bytes([0x8a, 128, 0, 0, 0]) + z[5:]  # dict 128: LONG1 covers z[2:130]
    assert len(z) <= 130, len(z)
    z += b"\xff" * (130 - len(z))
    return z + b"0" + payload(marker)  # POP the long


def safetensors_poly(marker):
    """Not a formats.def entry but a reading the scan also decides by bytes: a
    safetensors file (u64 header length, JSON header) whose length's low byte is 'X'
    (BINUNICODE): its length (the next 3 bytes) runs the string over the JSON's start
    into a metadata value holding the payload (a raw newline in a JSON string: cJSON
    takes it; safetensors' own parser does not, but pickle.load needs no parser)."""
    pay = payload(marker)
    pre = b'{"__metadata__":{"a":"'
    post = b'"},"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    for pad in range(0, 1 << 16):
        strlen = 8 + len(pre) + pad - 5  # BINUNICODE's data: bytes 5 .. the payload
        body = pre + b"x" * pad + pay + post
        n = 0x58 | (strlen << 8)
        if n >= len(body):
            body += b" " * (n - len(body))
            break
    f = struct.pack("<Q", len(body)) + body + b"\0\0\0\0"
    assert f[0] == 0x58
    return f


def _gz(data):
    import gzip
    return gzip.compress(data, mtime=0)


# Formats whose magic cannot start a pickle that does anything: the reason, and the
# magic (followed by the payload) that both unpicklers must refuse at offset 0.
NOT_POSSIBLE = {
    "npy": ("0x93 is STACK_GLOBAL: it pops two values from the empty stack (C: stack "
            "underflow; Python: IndexError)", b"\x93NUMPY\x01\x00v\x00"),
    "gzip": ("0x1f is no opcode", b"\x1f\x8b\x08\x00"),
    "lz4": ("0x04 is no opcode", b"\x04\x22\x4d\x18"),
    "joblib": ("'Z' is no opcode", b"ZF0x00000000000000\n"),
    "unscannable": ("7z: '7' is no opcode; rar: 'R' is REDUCE on the empty stack",
                    b"7z\xbc\xaf\x27\x1c"),
}
BIG_ONLY = {
    "bz2": ("'B' is BINBYTES: its length is 'Zh' + the level digit + the block magic's "
            "first byte (0x31 or 0x17), at least 389 MB of argument before a payload: "
            "possible, not built here (size); the rule is the same as for the others "
            "(the walk says MAYBE at the head's end) and test_sniff checks it fires",
            b"BZh91AY&SY"),
}


def cases(marker_dir=None):
    out = []
    m = lambda n: n + ".ran"  # noqa: E731 (relative: a tar name holds 100 bytes)
    for fmt in table():
        if fmt == "none":
            out.append(Poly(fmt, "none", why="not a format: no loader reads anything"))
        elif fmt == "pickle":
            out.append(Poly(fmt, "pickle", why="the raw pickle itself: always read at 0"))
        elif fmt == "torch_legacy":
            out.append(Poly(fmt, "torch_legacy",
                            why="its magic is a pickle (PROTO, LONG1): the reader unpickles "
                                "offset 0 itself (spc_pickles)"))
        elif fmt == "zip":
            out.append(Poly(fmt, "zip_persid", zip_poly(m("zip_persid")), persid=True, nested=True,
                            opens="import zipfile; z = zipfile.ZipFile(p); print(z.namelist(), z.read('a.txt'))"))
        elif fmt == "tar":
            out.append(Poly(fmt, "tar_name", tar_poly(m("tar_name")), nested=True,
                            opens="import tarfile; t = tarfile.open(p); print(len(t.getnames()), "
                                  "t.extractfile(t.getmembers()[0]).read())"))
        elif fmt == "zstd":
            out.append(Poly(fmt, "zstd_skippable", zstd_poly(m("zstd_skippable")),
                            opens="import zstandard, pickle; d = zstandard.ZstdDecompressor()."
                                  "stream_reader(open(p, 'rb')).read(); print(pickle.loads(d))"))
        elif fmt == "xz":
            out.append(Poly(fmt, "lzma_long1", xz_poly(m("lzma_long1")),
                            opens="import lzma, pickle; print(pickle.loads(lzma.open(p).read()))"))
        elif fmt == "zlib":
            out.append(Poly(fmt, "zlib", why=(
                "weak magics only ('(' or 'X' CMF bytes; 'x' is no opcode): '(' + FLG 'S' needs "
                "the deflate data to open a quoted ASCII STRING line (a first byte of 0x27 is "
                "the reserved block type, 0x22 a fixed-Huffman block that must stay quoted "
                "ASCII text), '(' + 0x91 or 'X' lead into stored blocks whose NLEN (~LEN) is "
                "not UTF-8 for BINUNICODE; not built - the settled weak reading goes through "
                "the same rule as xz"), sample=None))
        elif fmt in NOT_POSSIBLE:
            why, magic = NOT_POSSIBLE[fmt]
            out.append(Poly(fmt, fmt, why=why, sample=magic + b"\n" + payload(m(fmt))))
        elif fmt in BIG_ONLY:
            why, magic = BIG_ONLY[fmt]
            out.append(Poly(fmt, fmt, why=why))
        else:
            raise AssertionError("formats.def has %r: decide whether its magic can start a "
                                 "pickle and add it to polyglot.py" % fmt)
    out.append(Poly("safetensors", "safetensors_x", safetensors_poly(m("safetensors_x")),
                    opens="import json, struct; b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; "
                          "print(sorted(json.loads(b[8:8 + n], strict=False)))"))
    return out


def gz_nested(p):
    """The polyglot inside a gzip: pickle.load(gzip.open(f)) reads the raw pickle, tarfile/
    zipfile read the container from the decompressed stream (sequential content)."""
    return Poly(p.fmt, p.name + "_gz", _gz(p.data), persid=p.persid, opens=None)


if __name__ == "__main__":
    d, md = sys.argv[1], sys.argv[2]
    os.makedirs(d, exist_ok=True)
    man = []
    for c in cases(md):
        if c.data is not None:
            open(os.path.join(d, c.name), "wb").write(c.data)
        man.append({"fmt": c.fmt, "name": c.name, "built": c.data is not None, "why": c.why})
    json.dump(man, open(os.path.join(d, "manifest.json"), "w"), indent=1)
