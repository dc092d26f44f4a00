"""test_decode.py - the analyzer's decoders (analyzer/decode.c, shared by the nested-pickle
reader and the classifier) against Python's own: base64.b64decode (standard, urlsafe,
altchars), binascii.unhexlify, bytes.fromhex and codecs.encode(s, 'latin1'), on inputs
drawn from each decoder's alphabet plus padding, white space and junk (fixed seed).
Wherever Python decodes, ours gives the same bytes; the hex and latin-1 decoders fail
exactly where Python raises (base64 never fails: the classifier judges what it decoded)."""
import base64
import binascii
import codecs
import os
import random
import subprocess

import pytest

from conftest import BUILD, REPO

HERE = os.path.dirname(os.path.abspath(__file__))
N = 4000


@pytest.fixture(scope="module")
def dechelper(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("dechelper") / "dechelper")
    lib = os.path.join(BUILD, "libspa.a")
    assert os.path.exists(lib), "missing %s: run make first" % lib
    subprocess.run(["cc", "-std=gnu11", "-O1", "-D_GNU_SOURCE", "-I" + os.path.join(REPO, "analyzer"), "-o", out,
                    os.path.join(HERE, "dechelper.c"), lib], check=True)
    return out


def _ours(helper, cases):
    text = "".join("%s %s\n" % (k, s.hex()) for k, s in cases)
    got = subprocess.run([helper], input=text, capture_output=True, text=True, check=True, timeout=120).stdout
    lines = got.split("\n")[:len(cases)]
    assert len(lines) == len(cases)
    return [None if l == "FAIL" else b"" if l == "-" else bytes.fromhex(l) for l in lines]


def _python(kind, s):
    try:
        if kind == "b64":
            return base64.b64decode(s)
        if kind == "b64url":
            return base64.urlsafe_b64decode(s)
        if kind.startswith("b64alt:"):
            return base64.b64decode(s, altchars=bytes.fromhex(kind[7:]))
        if kind == "hex":
            return binascii.unhexlify(s)
        if kind == "fromhex":
            return bytes.fromhex(s.decode("ascii"))
        if kind == "latin1":
            return codecs.encode(s.decode("utf-8"), "latin1")
    except (ValueError, binascii.Error, UnicodeError):
        return None
    raise AssertionError(kind)


def _cases(rng):
    b64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    out = []
    for _ in range(N):
        kind = rng.choice(["b64", "b64url", "b64alt:2d5f", "b64alt:2e2c", "hex", "fromhex", "latin1"])
        if kind.startswith("b64"):
            # real base64 of random data, then padding, white space, junk, alternates mixed in
            s = bytearray(base64.b64encode(bytes(rng.randrange(256) for _ in range(rng.randrange(0, 24)))))
            for _ in range(rng.randrange(0, 5)):
                s.insert(rng.randrange(len(s) + 1), rng.choice(b"==\n -_.,!" + b64[:4]))
        elif kind in ("hex", "fromhex"):
            s = bytearray(bytes(rng.randrange(256) for _ in range(rng.randrange(0, 16))).hex().encode())
            if rng.random() < 0.5:
                s = s.upper() if rng.random() < 0.3 else s
                for _ in range(rng.randrange(0, 4)):
                    s.insert(rng.randrange(len(s) + 1), rng.choice(b" \t\n\r\x0b\x0cgx0"))
        else:
            cps = [rng.choice([rng.randrange(0x20, 0x7f), rng.randrange(0x80, 0x100), rng.randrange(0x100, 0x800)])
                   for _ in range(rng.randrange(0, 12))]
            if rng.random() < 0.7:
                cps = [c for c in cps if c < 0x100]
            s = bytearray("".join(map(chr, cps)).encode("utf-8"))
            if rng.random() < 0.1 and s:
                s[rng.randrange(len(s))] = rng.choice([0xc0, 0xc1, 0x80, 0xff])
        out.append((kind, bytes(s)))
    return out


def test_decoders_match_python(dechelper):
    cases = _cases(random.Random(20261206))
    # the classes the hand-picked edge cases cover, whatever the generator draws
    cases += [("b64", b"YQ=Jj"), ("b64", b"YW=I="), ("b64", b"YQ==YWJj"), ("b64", b"YW-Jj"), ("b64url", b"YW-J"),
              ("b64", b"Y=WJj"), ("b64", b"YQ=x="), ("fromhex", b"6\t865"), ("fromhex", b" 68 65 "), ("hex", b"68 65"),
              ("latin1", "a\u00ff".encode()), ("latin1", "\u20ac".encode()), ("latin1", b"\xc1\xbf"),
              ("hex", b""), ("fromhex", b""), ("b64", b"")]
    ours = _ours(dechelper, cases)
    bad, decoded = [], 0
    for (kind, s), got in zip(cases, ours):
        want = _python(kind, s)
        if want is not None:
            decoded += 1
            if got != want:
                bad.append("%s %r: python %r, ours %r" % (kind, s, want, got))
        elif not kind.startswith("b64") and got is not None:
            bad.append("%s %r: python raises, ours %r" % (kind, s, got))
    assert decoded > N // 3, "the generator hardly produced decodable inputs (%d)" % decoded
    assert not bad, "%d of %d differ:\n%s" % (len(bad), len(cases), "\n".join(bad[:20]))
