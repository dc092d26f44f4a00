"""spgen.py - builds test pickles from code: a small opcode assembler and payload makers.

Malicious test files are never stored in the repo; tests build them with these helpers.
Every payload only touches a marker file under a temp directory."""
import os
import pickle
import struct


class Reduce:
    """An object whose pickle calls func(*args) on load. Use with the real
    libraries (torch.save, joblib.dump, np.save, ...) to plant a payload."""

    def __init__(self, func, args):
        self.func, self.args = func, tuple(args)

    def __reduce__(self):
        return (self.func, self.args)


def touch_code(marker):
    """Python source that creates the marker file."""
    return "open(%r, 'w').close()" % str(marker)


def touch_cmd(marker):
    """A shell command that creates the marker file."""
    return "touch '%s'" % str(marker)


class Asm:
    """Hand assembler for pickle opcodes. Produces exactly the bytes asked for,
    including constructions the stdlib pickler never emits."""

    def __init__(self, proto=None):
        self.b = bytearray()
        self.proto = proto if proto is not None else 0
        if proto is not None and proto >= 2:
            self.b += b"\x80" + bytes([proto])

    # raw
    def raw(self, data):
        self.b += data
        return self

    def op(self, code, arg=b""):
        self.b += code + arg
        return self

    # constants
    def str_(self, s):
        """Push a text string with the most natural opcode for the protocol."""
        data = s.encode("utf-8")
        if self.proto >= 4 and len(data) < 256:
            self.b += b"\x8c" + bytes([len(data)]) + data        # SHORT_BINUNICODE
        elif self.proto >= 1:
            self.b += b"X" + struct.pack("<I", len(data)) + data  # BINUNICODE
        else:
            self.b += b"V" + s.encode("raw_unicode_escape") + b"\n"  # UNICODE
        return self

    def bytes_(self, data):
        if self.proto >= 3:
            self.b += b"B" + struct.pack("<I", len(data)) + data   # BINBYTES
        else:
            self.b += b"T" + struct.pack("<I", len(data)) + data   # BINSTRING
        return self

    def int_(self, i):
        self.b += b"I" + str(int(i)).encode() + b"\n"
        return self

    def none(self):
        self.b += b"N"
        return self

    def mark(self):
        self.b += b"("
        return self

    def tuple_(self, n=None):
        if n is None:
            self.b += b"t"
        else:
            self.b += {0: b")", 1: b"\x85", 2: b"\x86", 3: b"\x87"}[n]
        return self

    def empty_dict(self):
        self.b += b"}"
        return self

    def empty_list(self):
        self.b += b"]"
        return self

    def setitem(self):
        self.b += b"s"
        return self

    def append(self):
        self.b += b"a"
        return self

    def pop(self):
        self.b += b"0"
        return self

    def memoize(self):
        self.b += b"\x94"
        return self

    def put(self, i):
        self.b += (b"q" + bytes([i])) if i < 256 else (b"r" + struct.pack("<I", i))
        return self

    def get(self, i):
        self.b += (b"h" + bytes([i])) if i < 256 else (b"j" + struct.pack("<I", i))
        return self

    # globals and calls
    def global_(self, module, name, stack=None):
        """GLOBAL (text) or, with stack=True / protocol >= 4 by default, STACK_GLOBAL."""
        if stack is None:
            stack = self.proto >= 4
        if stack:
            self.str_(module).str_(name)
            self.b += b"\x93"
        else:
            self.b += b"c" + module.encode() + b"\n" + name.encode() + b"\n"
        return self

    def reduce(self):
        self.b += b"R"
        return self

    def build(self):
        self.b += b"b"
        return self

    def call(self, module, name, *args):
        """Push module.name(*args) with str/int/bytes/None args."""
        self.global_(module, name)
        self.mark()
        for a in args:
            self.push(a)
        self.tuple_()
        self.reduce()
        return self

    def push(self, a):
        if a is None:
            return self.none()
        if isinstance(a, bool):
            self.b += b"\x88" if a else b"\x89"
            return self
        if isinstance(a, int):
            return self.int_(a)
        if isinstance(a, str):
            return self.str_(a)
        if isinstance(a, (bytes, bytearray)):
            return self.bytes_(bytes(a))
        raise TypeError(type(a))

    def stop(self):
        self.b += b"."
        return bytes(self.b)


def call_pickle(module, name, args, proto=2):
    """A complete pickle whose load calls module.name(*args)."""
    return Asm(proto).call(module, name, *args).stop()


def exec_pickle(marker, proto=2):
    """builtins.exec(<code that creates the marker>)."""
    return Asm(proto).call("builtins", "exec", touch_code(marker)).stop()


def system_pickle(marker, proto=2):
    """os.system('touch <marker>')."""
    return Asm(proto).call("os", "system", touch_cmd(marker)).stop()


def benign_pickle(proto=4):
    return pickle.dumps({"weights": [1.0, 2.0, 3.0], "name": "model", "n": 3}, protocol=proto)


def assert_marker_absent(marker):
    assert not os.path.exists(str(marker)), "payload ran: %s exists" % marker
