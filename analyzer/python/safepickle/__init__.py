"""safepickle - judge pickle-bearing files and bytes before loading them.

A thin layer over the analyzer's shared library (libspa.so, through ctypes): the
same analyzer, policy and verdicts as `safepickle scan` and the preload.

    import safepickle
    v = safepickle.scan("model.pt")          # Verdict: .verdict, .action, .reasons
    obj = safepickle.loads(data)             # judge, then pickle.loads (or raise)
    try: ...
    except safepickle.SafePickleBlocked: ... # also what the preload raises

Works in any CPython 3.8+; needs nothing but the standard library.
"""
import ctypes
import io
import os
import pickle
import sys
import tempfile

__all__ = ["SafePickleError", "SafePickleBlocked", "Verdict", "scan", "judge", "load", "loads",
           "is_protected", "protection_status", "library_path", "__version__"]


class SafePickleError(Exception):
    """safepickle could not judge the input (bad policy, unreadable file, missing library)."""


def _blocked_class():
    # The preload's layer 2 raises this class too. Whichever of the two makes it
    # first, both use the same object: the preload publishes its class as
    # sys.modules["_safepickle_preload"].SafePickleBlocked and adopts ours when
    # this module is already imported.
    pre = sys.modules.get("_safepickle_preload")
    cls = getattr(pre, "SafePickleBlocked", None)
    if isinstance(cls, type) and issubclass(cls, PermissionError):
        return cls

    class SafePickleBlocked(PermissionError, pickle.UnpicklingError):
        """A load refused by safepickle's policy. .verdict holds the judgement when known."""
        verdict = None

    SafePickleBlocked.__module__ = "safepickle"
    return SafePickleBlocked


SafePickleBlocked = _blocked_class()


class Verdict:
    """The judgement of one file or byte string, as `scan --format json` gives it."""

    __slots__ = ("verdict", "action", "reasons", "path", "format", "pickle_bearing", "report")

    def __init__(self, report):
        self.report = report
        self.verdict = report.get("verdict")
        self.action = report.get("action")
        self.reasons = report.get("reasons", [])
        self.path = report.get("path")
        self.format = report.get("format")
        self.pickle_bearing = report.get("pickle_bearing")

    @property
    def blocked(self):
        return self.action == "block"

    def __repr__(self):
        return "Verdict(%s, action=%s, %d reason%s)" % (self.verdict, self.action, len(self.reasons),
                                                       "" if len(self.reasons) == 1 else "s")

    def __str__(self):
        lines = ["%s: %s (action %s)" % (self.path, self.verdict, self.action)]
        lines += ["  [%s] %s: %s" % (r["severity"], r["rule"], r["msg"]) for r in self.reasons]
        return "\n".join(lines)


def _candidates():
    env = os.environ.get("SAFEPICKLE_LIBSPA")
    if env:
        return [env]  # named explicitly: nothing else is tried
    here = os.path.dirname(os.path.abspath(__file__))
    return [
        # installed: PREFIX/lib/python3[.X]/dist-packages/safepickle -> PREFIX/lib/safepickle
        os.path.normpath(os.path.join(here, "..", "..", "..", "safepickle", "libspa.so")),
        # the source tree: analyzer/python/safepickle -> build/
        os.path.normpath(os.path.join(here, "..", "..", "..", "build", "libspa.so")),
    ]


_lib = None
_libpath = None


def library_path():
    """The path of the libspa.so in use (loading it if needed)."""
    _load_lib()
    return _libpath


def _load_lib():
    global _lib, _libpath
    if _lib is not None:
        return _lib
    tried = []
    for p in _candidates():
        if not os.path.isfile(p):
            tried.append(p + " (absent)")
            continue
        try:
            lib = ctypes.CDLL(p)
        except OSError as e:
            tried.append("%s (%s)" % (p, e))
            continue
        lib.spa_capi_judge.restype = ctypes.c_void_p
        lib.spa_capi_judge.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_char_p]
        lib.spa_capi_scan.restype = ctypes.c_void_p
        lib.spa_capi_scan.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        lib.spa_capi_version.restype = ctypes.c_char_p
        lib.spa_capi_free.argtypes = [ctypes.c_void_p]
        _lib, _libpath = lib, p
        return lib
    raise SafePickleError("safepickle: the analyzer library libspa.so was not found: " + "; ".join(tried)
                          + " (set SAFEPICKLE_LIBSPA, or reinstall with make install)")


def _call(fn, *args):
    import json
    lib = _load_lib()
    ptr = getattr(lib, fn)(*args)
    if not ptr:
        raise MemoryError("safepickle: out of memory")
    try:
        text = ctypes.string_at(ptr).decode("utf-8")
    finally:
        lib.spa_capi_free(ptr)
    doc = json.loads(text)
    if "error" in doc:
        raise SafePickleError("safepickle: %s: %s" % (doc["error"]["code"], doc["error"]["msg"]))
    return Verdict(doc)


def _policy_arg(policy):
    return None if policy is None else os.fsencode(policy)


def judge(data, name=None, policy=None):
    """Judge bytes (bytes, bytearray, memoryview) as a file's content. Returns a Verdict."""
    b = bytes(memoryview(data))
    return _call("spa_capi_judge", b, len(b), None if name is None else os.fsencode(name), _policy_arg(policy))


def scan(path_or_bytes, policy=None):
    """Judge a file by path (str, bytes, os.PathLike) or a byte string. Returns a Verdict."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)) and not isinstance(path_or_bytes, bytes):
        return judge(path_or_bytes, policy=policy)
    if isinstance(path_or_bytes, bytes) and not os.path.exists(path_or_bytes):
        return judge(path_or_bytes, policy=policy)
    return _call("spa_capi_scan", os.fsencode(path_or_bytes), _policy_arg(policy))


def _refuse(v):
    e = SafePickleBlocked("safepickle: refused: %s" % str(v))
    e.verdict = v
    raise e


def loads(data, *, policy=None, **kwargs):
    """pickle.loads(data, **kwargs) after judging data; raises SafePickleBlocked if refused."""
    v = judge(data, policy=policy)
    if v.blocked:
        _refuse(v)
    return pickle.loads(data, **kwargs)


def load(file, *, policy=None, **kwargs):
    """pickle.load of a path or a binary file object, judged first (the bytes judged
    are the bytes loaded: the file is read once)."""
    if isinstance(file, (str, bytes, os.PathLike)):
        with open(file, "rb") as f:
            data = f.read()
        name = os.fsdecode(file)
    else:
        data = file.read()
        name = getattr(file, "name", None)
        name = name if isinstance(name, str) else None
    v = judge(data, name=name, policy=policy)
    if v.blocked:
        _refuse(v)
    return pickle.loads(data, **kwargs)


# a harmless load the default policy refuses: eval("0") (code execution, so
# malicious), which does nothing even where it is not refused
_CANARY = b"\x80\x02cbuiltins\neval\nX\x01\x00\x00\x000\x85R."


def protection_status():
    """What protects this process right now, each proven by a refusal:
    {"preload": bool, "file_layer": bool, "in_memory_layer": bool}."""
    maps = ""
    try:
        with open("/proc/self/maps") as f:
            maps = f.read()
    except OSError:
        pass
    st = {"preload": "libsafepickle" in maps, "file_layer": False, "in_memory_layer": False}
    fd, path = tempfile.mkstemp(prefix="safepickle-canary-", suffix=".pkl")
    try:
        os.write(fd, _CANARY)
        os.close(fd)
        try:
            with open(path, "rb") as f:
                f.read(1)
        except PermissionError:
            st["file_layer"] = True
    finally:
        os.unlink(path)
    try:
        pickle.loads(_CANARY)
    except PermissionError:
        st["in_memory_layer"] = True
    return st


def is_protected():
    """True when the preload is loaded and both layers refuse a malicious load."""
    st = protection_status()
    return st["preload"] and st["file_layer"] and st["in_memory_layer"]


def _version():
    try:
        return _load_lib().spa_capi_version().decode()
    except SafePickleError:
        return "unknown"


def __getattr__(name):  # PEP 562: the version asks the library only when read
    if name == "__version__":
        return _version()
    raise AttributeError(name)
