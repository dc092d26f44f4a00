"""test_layer2_offsets.py - a load from a file that starts where layer 1 did not.

Layer 1 judges a file from its first byte, as an unpickler reads it from there
(every stream in a row, or the container the head names). A loader can start
elsewhere: it seeks to an offset (an index of offsets, a pickle after its own
header), past bytes no unpickler gets over (a stream hidden behind an invalid
opcode), into the insides of a string constant, or it reads a file that is
both a zip and a protocol-0 pickle (b"PK\\x03\\x04\\n" is PERSID) with an
unpickler that has a persistent_load. Layer 2 used to take layer 1's verdict
for any regular file whatever its position: the stream it read was judged by
nobody, and only the runtime veto (names, behaviour) stood between the bytes
and the payload. Now layer 1's verdict is taken only for a load that starts at
offset 0 of a file it judged pickle-bearing and allowed; anything else is the
one pickle at the file's position, judged by bytes before the unpickler runs.

Every shape x entry point (pickle.load, Unpickler.load, _Unpickler.load):
- without the preload the payload runs (the harness sees a success);
- with it, the payload does not run and the refusal is the bytes judgement's
  (a `callee.` rule at the load), not the names veto's at find_class nor the
  runtime veto's (those act while the unpickler runs; on the code before, one
  of them was all that refused every shape);
- the same shape with a benign hidden pickle loads the same object as without
  the preload, and the file position after the load is the same."""
import io
import json
import os
import pickle
import subprocess
import zipfile

import pytest

from conftest import LIB, PYTHON, clean_env

pytestmark = pytest.mark.skipif(not os.path.exists(LIB), reason="libsafepickle.so not built")

BENIGN_HEAD = pickle.dumps({"model": [1, 2, 3], "name": "head"}, protocol=2)


def _evil(marker):
    return b"cposix\nsystem\n(S'touch " + marker.encode() + b"'\ntR."


def _hidden(kind):
    """(prefix bytes, suffix bytes): the hidden pickle starts at len(prefix)."""
    if kind == "after_zeros":         # an index of offsets: benign stream, padding, the pickle
        return BENIGN_HEAD + b"\0" * 70000, b""
    if kind == "after_bad_opcode":    # no unpickler reading from 0 gets past the newline
        return BENIGN_HEAD + b"\n", b""
    if kind == "after_text_header":   # the file's own header, then the pickle
        return b"MYFORMAT v1 rows=3\n", b""
    if kind == "inside_constant":     # the pickle is the insides of a benign bytes constant
        return None, None
    if kind == "zip_polyglot":        # a zip (zipfile opens it) that is a protocol-0 pickle at 0
        z = io.BytesIO()
        with zipfile.ZipFile(z, "w") as zf:
            zf.writestr("weights.txt", "0.1 0.2 0.3\n")
        return b"PK\x03\x04\n", z.getvalue()
    raise AssertionError(kind)


KINDS = ("after_zeros", "after_bad_opcode", "after_text_header", "inside_constant", "zip_polyglot")
ENTRIES = {
    "load": "pickle.load(f)",
    "unpickler": "U(f).load()",
    "pyunpickler": "P(f).load()",
}


def build(path, kind, inner):
    """Write the file; return the offset the loader seeks to."""
    if kind == "inside_constant":
        blob = b"pad:" + inner + b":pad"
        data = pickle.dumps({"blob": blob, "n": 1}, protocol=2)
        off = data.index(inner)
        path.write_bytes(data)
        return off
    pre, post = _hidden(kind)
    path.write_bytes(pre + inner + post)
    return 0 if kind == "zip_polyglot" else len(pre)


LOADER = r"""
import json, pickle, sys
class U(pickle.Unpickler):
    def persistent_load(self, pid): return None
class P(pickle._Unpickler):
    def persistent_load(self, pid): return None
path, off, entry = sys.argv[1], int(sys.argv[2]), sys.argv[3]
try:
    with open(path, "rb") as f:
        f.seek(off)
        v = eval(entry)
        print(json.dumps({"loaded": repr(v), "pos": f.tell()}))
except Exception as e:
    print(json.dumps({"error": type(e).__name__}))
"""


def run(tmp_path, path, off, entry, preload):
    e = clean_env()
    if preload:
        e["LD_PRELOAD"] = LIB
    r = subprocess.run([PYTHON, "-c", LOADER, str(path), str(off), ENTRIES[entry]], env=e,
                       capture_output=True, text=True, timeout=300)
    return json.loads(r.stdout.strip().splitlines()[-1]), r.stderr


# PERSID needs a persistent_load: plain pickle.load cannot read the zip polyglot at all
CASES = [(k, e) for k in KINDS for e in sorted(ENTRIES) if not (k == "zip_polyglot" and e == "load")]


@pytest.mark.parametrize("kind,entry", CASES)
def test_hidden_stream_refused_by_bytes(tmp_path, kind, entry):
    marker = str(tmp_path / "ran")
    if kind == "zip_polyglot":
        # PERSID reads the rest of the line as the id; the payload follows it
        evil = _evil(marker)
    else:
        evil = pickle.dumps(0, protocol=2)[:2] + _evil(marker)   # PROTO 2, then the call
    path = tmp_path / "f.bin"
    off = build(path, kind, evil)
    out, err = run(tmp_path, path, off, entry, preload=False)
    assert os.path.exists(marker), (kind, entry, out, err[-2000:])   # the shape does load the payload
    os.unlink(marker)
    out, err = run(tmp_path, path, off, entry, preload=True)
    assert not os.path.exists(marker), (kind, entry, out, err[-2000:])
    assert out.get("error"), out
    assert "safepickle: blocked" in err and "[rule callee.process" in err, err[-2000:]
    # refused by the bytes, before any opcode ran: not by the runtime veto, not by the
    # names veto at find_class (both act while the unpickler runs)
    assert "runtime." not in err and "(pickle.find_class;" not in err, err[-2000:]


@pytest.mark.parametrize("kind,entry", CASES)
def test_hidden_benign_stream_loads_the_same(tmp_path, kind, entry):
    inner = pickle.dumps({"hidden": list(range(5)), "s": "x" * 40}, protocol=2)
    if kind == "zip_polyglot":
        inner = b"(dp0\nS'hidden'\np1\nI1\ns."
    path = tmp_path / "f.bin"
    off = build(path, kind, inner)
    plain, perr = run(tmp_path, path, off, entry, preload=False)
    pre, err = run(tmp_path, path, off, entry, preload=True)
    assert "loaded" in plain, (plain, perr[-2000:])
    assert pre == plain, (pre, plain, err[-2000:])
    assert "safepickle:" not in err, err[-2000:]
