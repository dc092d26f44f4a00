"""test_layers.py - coverage of the two layers, measured: the malicious corpus
loaded with no preload, layer 1 only (file hooks), layer 2 only (PEP 578 audit
hook), and both, counting how many payloads ran (marker file created).

The corpus is threatgen's (the project's corpus: every live case of
malicious_cases() plus its payloads planted in real containers) when present,
else a corpus built here with spgen. Every payload is loaded twice: from its
file with the real loader (torch.load(path), joblib.load(path), ...) and from
bytes in memory (the loader given io.BytesIO). The table is written to
$SAFEPICKLE_LAYERS_TABLE (default: <tmp>/layers.md) and printed."""
import concurrent.futures
import json
import os
import subprocess
import textwrap

import pytest

import rtcorpus
import rtpolicy
import spgen
from conftest import LIB, PYTHON, clean_env

HERE = os.path.dirname(os.path.abspath(__file__))
pytestmark = pytest.mark.skipif(not os.path.exists(LIB), reason="libsafepickle.so not built")

# How a payload is loaded: from its file with the real loader, and from bytes
# in memory. For the memory way the file on disk is XOR-masked (so no file
# hook can recognise it) and unmasked in memory, as bytes from a socket, a
# cache or a queue would arrive. P is the file to read, ORIG the original name.
MASK = 0x5A
_MEM = "bytes(b ^ %d for b in open(P, 'rb').read())" % MASK
_PD_COMP = "{'gz': 'gzip', 'bz2': 'bz2', 'xz': 'xz'}.get(ORIG.rsplit('.', 1)[-1])"
LOADERS = {
    "pickle": ("import pickle; pickle.load(open(P, 'rb'))",
               "import pickle; pickle.loads(" + _MEM + ")"),
    "pickle_buffers": ("import pickle; pickle.load(open(P, 'rb'), buffers=[b'buf', b'buf2'])",
                       "import pickle; pickle.loads(" + _MEM + ", buffers=[b'buf', b'buf2'])"),
    "pickle_multi": ("import pickle\nf = open(P, 'rb')\nwhile True:\n    pickle.load(f)",
                     "import pickle, io\nf = io.BytesIO(" + _MEM + ")\nwhile True:\n    pickle.load(f)"),
    "torch": ("import torch; torch.load(P)",
              "import torch, io; torch.load(io.BytesIO(" + _MEM + "))"),
    "joblib": ("import joblib; joblib.load(P)",
               "import joblib, io; joblib.load(io.BytesIO(" + _MEM + "))"),
    "numpy": ("import numpy; numpy.load(P, allow_pickle=True)",
              "import numpy, io; numpy.load(io.BytesIO(" + _MEM + "), allow_pickle=True)"),
    "pandas": ("import pandas; pandas.read_pickle(P)",
               "import pandas, io; pandas.read_pickle(io.BytesIO(" + _MEM + "), compression=" + _PD_COMP + ")"),
}
# Stream loads (pickle family only: the other loaders need a seekable file): the
# bytes arrive through a pipe, written by a thread, read by pickle.load.
_PIPE = ("import os, threading\nrd, wr = os.pipe()\nD = " + _MEM + "\n"
         "threading.Thread(target=lambda: (os.write(wr, D), os.close(wr))).start()\nS = os.fdopen(rd, 'rb')\n")
STREAM = {
    "pickle": _PIPE + "import pickle; pickle.load(S)",
    "pickle_buffers": _PIPE + "import pickle; pickle.load(S, buffers=[b'buf', b'buf2'])",
    "pickle_multi": _PIPE + "import pickle\nwhile True:\n    pickle.load(S)",
}
CHUNK = 12  # payloads per child process (limits cross-talk between payloads that ran)


def write_masked(path):
    with open(path, "rb") as f:
        data = f.read()
    with open(path + ".masked", "wb") as f:
        f.write(bytes(b ^ MASK for b in data))

# ------------------------------------------------------------------ own corpus
# (name, loader, builder(marker) -> bytes). Library formats are produced by the
# real libraries in a child process (see LIB_GEN).
def _own_raw():
    out = []
    for proto in range(0, 6):
        out.append(("system_p%d" % proto, "pickle", lambda m, p=proto: spgen.system_pickle(m, proto=p)))
        out.append(("exec_p%d" % proto, "pickle", lambda m, p=proto: spgen.exec_pickle(m, proto=p)))
    out += [
        ("posix_alias", "pickle", lambda m: spgen.call_pickle("posix", "system", [spgen.touch_cmd(m)])),
        ("py2_builtin_eval", "pickle", lambda m: spgen.call_pickle("__builtin__", "eval", [spgen.touch_code(m)])),
        ("subprocess_popen", "pickle", lambda m: spgen.call_pickle("subprocess", "getoutput", [spgen.touch_cmd(m)])),
        ("os_popen", "pickle", lambda m: _popen_read(m)),
        ("dotted_proto4", "pickle", lambda m: spgen.Asm(4).global_("os", "path.os.system").mark()
         .str_(spgen.touch_cmd(m)).tuple_().reduce().stop()),
        ("discarded_result", "pickle", lambda m: spgen.Asm(2).call("os", "system", spgen.touch_cmd(m))
         .pop().none().stop()),
        ("payload_before_garbage", "pickle", lambda m: spgen.Asm(2).call("os", "system", spgen.touch_cmd(m))
         .raw(b"X\xff\xff\xff\x7f").stop()),
        ("profile_gadget", "pickle", lambda m: spgen.call_pickle("profile", "run", [spgen.touch_code(m)])),
        ("cprofile_gadget", "pickle", lambda m: spgen.call_pickle("cProfile", "run", [spgen.touch_code(m)])),
        ("getattr_trampoline", "pickle", lambda m: spgen.Asm(2).global_("builtins", "getattr").mark()
         .global_("os.path", "os").str_("system").tuple_().reduce().mark().str_(spgen.touch_cmd(m))
         .tuple_().reduce().stop()),
        ("importlib_gadget", "pickle", lambda m: _import_then_call(m)),
        ("nested_loads", "pickle", lambda m: spgen.call_pickle("pickle", "loads", [spgen.system_pickle(m)], proto=3)),
        ("nested_loads_bytes_codecs", "pickle", lambda m: _nested_codecs(m)),
        ("builtins_open_write", "pickle", lambda m: spgen.Asm(2).global_("builtins", "open").mark()
         .str_(str(m)).str_("w").tuple_().reduce().stop()),
    ]
    return out


def _popen_read(m):
    a = spgen.Asm(2)
    a.global_("os", "popen").mark().str_(spgen.touch_cmd(m)).tuple_().reduce()
    return a.stop()


def _import_then_call(m):
    # getattr(importlib.import_module('os'), 'system')(cmd)
    a = spgen.Asm(2)
    a.global_("builtins", "getattr").mark()
    a.call("importlib", "import_module", "os")
    a.str_("system").tuple_().reduce()
    a.mark().str_(spgen.touch_cmd(m)).tuple_().reduce()
    return a.stop()


def _nested_codecs(m):
    inner = spgen.system_pickle(m, proto=2).decode("latin1")
    a = spgen.Asm(2)
    a.global_("pickle", "loads").mark()
    a.call("_codecs", "encode", inner, "latin1")
    a.tuple_().reduce()
    return a.stop()


# Library formats, generated by the real libraries (no preload).
LIB_GEN = textwrap.dedent("""
    import gzip, io, json, os, sys, pickle
    sys.path.insert(0, %r)
    import spgen, numpy as np, torch, joblib
    out, cases = sys.argv[1], json.loads(sys.argv[2])
    for name, loader, marker in cases:
        bad = spgen.Reduce(os.system, [spgen.touch_cmd(marker)])
        b = io.BytesIO()
        if name == "torch_zip":
            torch.save({"w": torch.ones(2), "x": bad}, b)
        elif name == "torch_legacy":
            torch.save({"w": torch.ones(2), "x": bad}, b, _use_new_zipfile_serialization=False)
        elif name.startswith("joblib"):
            joblib.dump({"a": np.arange(10), "x": bad}, b, compress={"joblib": 0, "joblib_zlib": 3, "joblib_xz": ("xz", 3)}[name])
        elif name == "numpy_object":
            np.save(b, np.array([bad, 1], dtype=object), allow_pickle=True)
        elif name == "pandas_gzip":
            b.write(gzip.compress(pickle.dumps({"x": bad})))
        open(os.path.join(out, name + (".pkl.gz" if name == "pandas_gzip" else ".bin")), "wb").write(b.getvalue())
""") % HERE

LIB_CASES = [("torch_zip", "torch"), ("torch_legacy", "torch"), ("joblib", "joblib"),
             ("joblib_zlib", "joblib"), ("joblib_xz", "joblib"), ("numpy_object", "numpy"),
             ("pandas_gzip", "pandas")]


def build_own_corpus(d, markers):
    """Write every payload into d; returns [(name, loader, path, marker)]."""
    items = []
    for name, loader, build in _own_raw():
        m = os.path.join(markers, name)
        p = os.path.join(d, name + ".bin")
        with open(p, "wb") as f:
            f.write(build(m))
        items.append((name, loader, p, m))
    cases = [(n, l, os.path.join(markers, n)) for n, l in LIB_CASES]
    r = subprocess.run([PYTHON, "-c", LIB_GEN, d, json.dumps(cases)], env=clean_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    items += [(n, l, os.path.join(d, n + (".pkl.gz" if n == "pandas_gzip" else ".bin")), m)
              for n, l, m in cases]
    return items


def build_corpus(d, markers):
    """The project's corpus (threatgen) if available, else our own; plus the
    gadget payloads of test_runtime (callables with bland names in a user
    module, which only behaviour can give away)."""
    try:
        import threatgen  # engineer h3's generator of the project's corpus
    except ImportError:
        src, items = "spgen (own set)", build_own_corpus(d, markers)
    else:
        src, items = _from_threatgen(threatgen, d, markers)
    gadgets = _gadget_items(d, markers)
    return src + " + %d user-module gadgets (test_runtime)" % len(gadgets), items + gadgets


def _gadget_items(d, markers):
    rtcorpus.write_gadgets(d, os.path.join(markers, "g_foreign_import.ran"))
    cases = [
        ("g_shell", "tidy", lambda m: [spgen.touch_cmd(m)]),
        ("g_write", "save_state", lambda m: [m]),
        ("g_exec", "apply_rule", lambda m: [spgen.touch_code(m)]),
        ("g_native", "warm_cache", lambda m: [spgen.touch_cmd(m)]),
        ("g_foreign_import", "load_plugin", lambda m: ["rt_foreign"]),
        ("g_nested", "chain", lambda m: [spgen.call_pickle("rt_gadgets", "tidy", [spgen.touch_cmd(m)])]),
    ]
    items = []
    for name, fn, args in cases:
        m = os.path.join(markers, name + ".ran")
        p = os.path.join(d, name + ".bin")
        with open(p, "wb") as f:
            f.write(spgen.call_pickle("rt_gadgets", fn, args(m), proto=3))
        items.append((name, "pickle", p, m))
    return items + _escape_items(d, markers)


def _escape_items(d, markers):
    """The escapes of issue 14 (test_layer2_escapes.py): gadgets whose bytes
    pass (a thread, mknod, mkfifo, 300 frames deep, a sub-interpreter) and the
    reflective walk to os.mkfifo through an ordinary class."""
    import test_layer2_escapes as esc
    with open(os.path.join(d, "l2gadgets.py"), "w") as f:
        f.write(esc.GADGETS)
    items = []
    for case, make in sorted(esc.GADGET_CASES.items()):
        m = os.path.join(markers, "e_" + case + ".ran")
        name, args = make(__import__("pathlib").Path(m))
        args = [m if a == os.path.basename(m) else a for a in args]  # absolute marker path
        p = os.path.join(d, "e_" + case + ".bin")
        with open(p, "wb") as f:
            f.write(spgen.call_pickle("l2gadgets", name, args, proto=3))
        items.append(("e_" + case, "pickle", p, m))
    for module, cls, osname in esc.reflective_classes(2):
        n = "e_reflective_%s_%s" % (module, cls)
        m = os.path.join(markers, n + ".ran")
        p = os.path.join(d, n + ".bin")
        with open(p, "wb") as f:
            f.write(esc.reflective_pickle(m, module, cls, osname, proto=4))
        items.append((n, "pickle", p, m))
    return items


def _from_threatgen(threatgen, d, markers):
    """threatgen.malicious_cases (the live ones: runs=True, proven by
    test_threats.py) plus its payloads planted in real containers."""
    items = []
    cases = threatgen.malicious_cases(markers)
    for c in cases:
        if not c.runs or c.loader not in LOADERS:
            continue
        p = os.path.join(d, c.name + ".bin")
        with open(p, "wb") as f:
            f.write(c.data)
        items.append((c.name, c.loader, p, os.path.join(markers, c.name + ".ran")))
    n_raw = len(items)
    r = subprocess.run([PYTHON, "-c", threatgen.container_malicious_script(d, markers)], env=clean_env(),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    for m in json.loads(r.stdout.strip().splitlines()[-1]):
        items.append((m["name"], m["loader"], m["path"], os.path.join(markers, m["name"] + ".ran")))
    src = "threatgen: %d live cases of malicious_cases() (threats.md A9, B, C) + %d payloads in real " \
          "containers (container_malicious_script)" % (n_raw, len(items) - n_raw)
    return src, items


# One child per (configuration, loader, way): loads every file of that loader
# in turn, each in try/except, and reports which markers appeared.
RUNNER = textwrap.dedent("""
    import json, os, signal, sys, time
    signal.alarm(300)
    items = json.loads(sys.argv[1])
    sys.path.insert(0, os.path.dirname(sys.argv[4]))  # the corpus dir: rt_gadgets
    for (name, code, marker), P, ORIG in zip(items, sys.argv[3::2], sys.argv[4::2]):
        try:
            exec(code, {"P": P, "ORIG": ORIG})
        except BaseException:
            pass
    time.sleep(0.5)  # payloads that spawn a shell (os.popen) finish asynchronously
    ran = [name for name, _, marker in items if os.path.exists(marker)]
    for name, _, marker in items:
        if os.path.exists(marker):
            os.unlink(marker)
    print("RAN " + json.dumps(ran))
""")

CONFIGS = [
    ("no preload", None),
    ("layer 1 only", dict(layer_file=True, layer_audit_hook=False)),
    ("layer 2 only", dict(layer_file=False, layer_audit_hook=True)),
    ("layer 2 only, names only (behaviour veto off)",
     dict(layer_file=False, layer_audit_hook=True, runtime_behaviour=False)),
    ("both layers", dict(layer_file=True, layer_audit_hook=True)),
]


def run_config(tmp_path, items, pol, way):
    """The payloads that ran in one configuration and way. Chunks run side by side (one
    child per core): their items, hence their markers, are disjoint."""
    env = clean_env()
    if pol is not None:
        env["LD_PRELOAD"] = LIB
        env["SAFEPICKLE_POLICY"] = rtpolicy.write(tmp_path, **pol)
    jobs = []
    for loader in LOADERS:
        if way == "stream" and loader not in STREAM:
            continue
        sub = [it for it in items if it[1] == loader]
        code = STREAM[loader] if way == "stream" else LOADERS[loader][0 if way == "file" else 1]
        jobs += [(loader, code, sub[i:i + CHUNK]) for i in range(0, len(sub), CHUNK)]

    def one(job):
        loader, code, part = job
        payload = [[n, code, m] for n, _, _, m in part]
        args = []
        for _, _, p, _ in part:
            args += [p if way == "file" else p + ".masked", p]
        r = subprocess.run([PYTHON, "-c", RUNNER, json.dumps(payload), way] + args,
                           env=env, capture_output=True, text=True, timeout=600)
        line = [l for l in r.stdout.splitlines() if l.startswith("RAN ")]
        assert line, "runner died (%s, %s, %s): %s" % (pol, loader, way, r.stderr[-2000:])
        return json.loads(line[0][4:])

    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as ex:
        return sorted(n for ran in ex.map(one, jobs) for n in ran)


def test_layer_coverage_table(tmp_path):
    d = tmp_path / "corpus"
    mk = tmp_path / "markers"
    d.mkdir()
    mk.mkdir()
    source, items = build_corpus(str(d), str(mk))
    for _, _, p, _ in items:
        write_masked(p)
    n = len(items)
    ns = len([it for it in items if it[1] in STREAM])
    rows, detail = [], {}
    for label, pol in CONFIGS:
        counts = []
        for way in ("file", "memory", "stream"):
            ran = run_config(tmp_path, items, pol, way)
            detail["%s / %s" % (label, way)] = ran
            counts.append(len(ran))
        rows.append((label, counts[0], counts[1], counts[2]))
    table = ["corpus: %s, plus issue 14's escapes; %d payloads, each loaded from its file and from memory, "
             "the %d of the pickle family also from a pipe" % (source, n, ns), "",
             "| configuration | payloads that ran (file loads) | payloads that ran (in-memory loads) "
             "| payloads that ran (stream loads) |",
             "| --- | --- | --- | --- |"]
    table += ["| %s | %d / %d | %d / %d | %d / %d |" % (lab, a, n, b, n, c, ns) for lab, a, b, c in rows]
    text = "\n".join(table) + "\n\nran:\n" + json.dumps(detail, indent=1) + "\n"
    out = os.environ.get("SAFEPICKLE_LAYERS_TABLE", str(tmp_path / "layers.md"))
    with open(out, "w") as f:
        f.write(text)
    print(text)
    by = {lab: (a, b) for lab, a, b, _ in rows}
    st = {lab: c for lab, _, _, c in rows}
    assert st["both layers"] == 0 and st["layer 2 only"] == 0, detail
    # The corpus is live: unprotected, every payload runs from its file.
    assert by["no preload"][0] == n, detail["no preload / file"]
    # Both layers together: nothing runs, from files or from memory.
    assert by["both layers"] == (0, 0), detail
    # Layer 2 alone guards in-memory loads completely.
    assert by["layer 2 only"][1] == 0, detail["layer 2 only / memory"]
