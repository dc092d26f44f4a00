"""test_layer2_bytes.py - layer 2, bytes first: the bytes judged are the bytes
unpickled, and the per-process verdict cache of judged bytes cannot be used to
smuggle other bytes through.

- A mutable buffer changed after its judgement. The C unpickler reads its
  input buffer in place all along the load, so a bytearray, a memoryview of
  one or an mmap rewritten after the analyzer judged it (by another thread, by
  another process through a shared mapping, by code the load runs) used to be
  unpickled with bytes nobody judged: bytes judged safe lift the code and
  file vetoes, and the rewritten tail runs builtins.exec. Here the rewrite is
  made, deterministically, by the program's own audit hook at the load's
  first find_class (Python hooks run after the preload's). Without the
  preload the payload runs; with it the unpickler reads the judged copy: the
  benign object comes back and the payload does not run (it ran before the
  copy).
- The verdict cache. Bytes judged and allowed are remembered by a digest of
  their content; the same buffer rewritten in place after a cached verdict
  (same object, same length, the change past the first 4 KiB block), or
  other bytes of the same length, are judged again and refused. A refusal is
  never cached: the same malicious bytes are refused every time."""
import os
import textwrap

import pytest

from conftest import LIB, run_py_file

pytestmark = pytest.mark.skipif(not os.path.exists(LIB), reason="libsafepickle.so not built")

PAD = 5000  # the rewritten part lies past the first 4 KiB block


def run(tmp_path, body, *, preload=True):
    return run_py_file(tmp_path, body, name="l2bytes.py", preload=preload)


# A protocol-0 list: [OrderedDict(), list(<text>)], and the same bytes with the
# second call turned into builtins.exec(<code>) (same length, same offsets).
PRELUDE = textwrap.dedent("""
    import pickle, sys
    MARK = %(mark)r
    CODE = "open(MARK, 'w').close()"
    PAD = %(pad)d
    def body(fn, text):
        return b"cbuiltins\\n" + fn + b"\\n(V" + text.encode() + b"\\ntR"
    HEAD = b"(ccollections\\nOrderedDict\\n(tR" + body(b"list", "p" * PAD)
    LEN = len(CODE) + 8
    OFF = len(HEAD)
    BENIGN = HEAD + body(b"list", "a" * LEN) + b"l."
    EVIL_TAIL = body(b"exec", CODE.ljust(LEN))
    assert len(EVIL_TAIL) == len(body(b"list", "a" * LEN))
    EVIL = BENIGN[:OFF] + EVIL_TAIL + BENIGN[OFF + len(EVIL_TAIL):]
    def outcome(f):
        try:
            r = f()
            return "loaded " + repr(r[-1][:3])
        except Exception as e:
            return "refused " + type(e).__name__
""")


def prelude(tmp_path):
    return PRELUDE % {"mark": str(tmp_path / "ran"), "pad": PAD}


# The program's own audit hook rewrites the buffer at the load's first
# find_class, after the preload's hook judged the bytes: what a concurrent
# writer does, made deterministic.
REWRITE = textwrap.dedent("""
    import mmap
    KIND = %(kind)r
    if KIND == "mmap":
        buf = mmap.mmap(-1, len(BENIGN)); buf[:] = BENIGN; arg = buf
    else:
        buf = bytearray(BENIGN); arg = memoryview(buf) if KIND == "memoryview" else buf
    done = []
    def hook(ev, args):
        if ev == "pickle.find_class" and not done:
            done.append(1)
            buf[OFF:OFF + len(EVIL_TAIL)] = EVIL_TAIL
    sys.addaudithook(hook)
    print(outcome(lambda: pickle.loads(arg)))
""")


@pytest.mark.parametrize("kind", ["bytearray", "memoryview", "mmap"])
def test_buffer_rewritten_after_judgement(tmp_path, kind):
    code = prelude(tmp_path) + REWRITE % {"kind": kind}
    ctl = run(tmp_path, code, preload=False)
    assert ctl.returncode == 0, ctl.stderr
    assert (tmp_path / "ran").exists(), "control: the rewritten tail must run without the preload"
    os.unlink(tmp_path / "ran")
    r = run(tmp_path, code)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "ran").exists(), "the unpickler read bytes that were never judged:\n" + r.stderr
    # the judged bytes were the ones unpickled: the benign list, whole
    assert r.stdout.strip() == "loaded ['a', 'a', 'a']", r.stdout + r.stderr


def test_cached_verdict_not_reused_for_rewritten_bytes(tmp_path):
    code = prelude(tmp_path) + textwrap.dedent("""
        buf = bytearray(BENIGN)
        out = [outcome(lambda: pickle.loads(buf)), outcome(lambda: pickle.loads(bytes(buf)))]
        buf[OFF:OFF + len(EVIL_TAIL)] = EVIL_TAIL          # same object, same length
        out.append(outcome(lambda: pickle.loads(buf)))
        out.append(outcome(lambda: pickle.loads(memoryview(buf))))
        out.append(outcome(lambda: pickle.loads(EVIL)))     # other bytes, same length
        out.append(outcome(lambda: pickle.loads(BENIGN)))   # still allowed
        print("|".join(out))
    """)
    ctl = run(tmp_path, code, preload=False)
    assert (tmp_path / "ran").exists(), "control: the payload must run without the preload\n" + ctl.stderr
    os.unlink(tmp_path / "ran")
    r = run(tmp_path, code)
    assert r.returncode == 0, r.stderr
    got = r.stdout.strip().split("|")
    assert got[:2] == ["loaded ['a', 'a', 'a']"] * 2, got
    assert got[2:5] == ["refused SafePickleBlocked"] * 3, (got, r.stderr)
    assert got[5] == "loaded ['a', 'a', 'a']", got
    assert not (tmp_path / "ran").exists()
    assert r.stderr.count("safepickle: blocked") == 3, r.stderr


def test_refusal_is_judged_every_time(tmp_path):
    code = prelude(tmp_path) + textwrap.dedent("""
        out = [outcome(lambda: pickle.loads(EVIL)) for _ in range(3)]
        print("|".join(out))
    """)
    r = run(tmp_path, code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().split("|") == ["refused SafePickleBlocked"] * 3, r.stdout + r.stderr
    assert r.stderr.count("safepickle: blocked") == 3, r.stderr
    assert not (tmp_path / "ran").exists()
