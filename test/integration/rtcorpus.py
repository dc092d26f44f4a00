"""rtcorpus.py - in-memory pickles for the layer-2 (PEP 578 audit hook) tests.

benign_generate(dir) writes, from a child /usr/bin/python3 WITHOUT the preload,
every benign kind of threats.md D as bytes plus the loader each one needs and
a summary of the object; LOADER_CODE loads them all in memory (BytesIO,
bytes) in one child under the preload and reports what came back. Gadget
modules for the behaviour tests live in a temp dir, never in the repo."""
import json
import os
import subprocess
import textwrap

from conftest import PYTHON, clean_env

# A user-defined module: classes and functions the benign files reference, and
# the summary both sides compute. Written into the temp dir by each test.
MODELS_PY = textwrap.dedent('''
    import collections, enum, torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 2)
            self.act = torch.nn.ReLU()
        def forward(self, x):
            return self.act(self.fc(x))

    class Color(enum.Enum):
        RED = 1
        GREEN = 2

    Point = collections.namedtuple("Point", "x y")

    class Plain:
        def __init__(self, a=1, b="two"):
            self.a, self.b = a, b
        def __eq__(self, o):
            return type(o) is Plain and (self.a, self.b) == (o.a, o.b)
        def __repr__(self):
            return "Plain(%r, %r)" % (self.a, self.b)

    class Greeter:
        def __init__(self, who="world"):
            self.who = who
        def hello(self):
            return "hello " + self.who

    def scale(k, x):
        return k * x

    def summarize(o):
        """A text summary both the generator and the loader can compute."""
        import numpy as np
        t = type(o).__module__ + "." + type(o).__qualname__
        try:
            if isinstance(o, dict):
                return t + "{" + ",".join("%s:%s" % (k, summarize(v)) for k, v in sorted(o.items(), key=lambda kv: str(kv[0]))) + "}"
            if isinstance(o, (list, tuple)) and not hasattr(o, "_fields"):
                return t + "[" + ",".join(summarize(v) for v in o) + "]"
            if isinstance(o, torch.Tensor):
                return t + "%s:%.4f" % (tuple(o.shape), float(o.double().sum()))
            if isinstance(o, torch.nn.Module):
                return t + summarize(o.state_dict())
            if isinstance(o, np.ndarray):
                return t + "%s:%s" % (o.shape, o.dtype) + ("" if o.dtype != object else repr(o.tolist()))
            if hasattr(o, "to_dict") and hasattr(o, "dtypes"):
                return t + repr(o.dtypes.tolist()) + repr(o.shape)
            if hasattr(o, "toarray"):
                return t + repr(o.toarray().tolist())
            if hasattr(o, "bit_generator"):
                return t + repr(o.bit_generator.state["state"])
            import functools, types
            if isinstance(o, functools.partial):
                return t + ":" + repr(o(3))
            if isinstance(o, types.MethodType):
                return t + ":" + repr(o())
            if callable(o) and not isinstance(o, type):  # a reference: never called here
                return t + ":" + getattr(o, "__module__", "?") + "." + getattr(o, "__qualname__", "?")
            if hasattr(o, "steps"):
                return t + repr([s[0] for s in o.steps])
            return t + ":" + repr(o)
        except Exception as e:
            return t + ":<summary failed %s>" % type(e).__name__
''')

GEN_CODE = textwrap.dedent('''
    import argparse, copyreg, functools, io, json, math, os, pathlib, pickle, re, sys, zoneinfo
    out = sys.argv[1]
    sys.path.insert(0, out)
    import numpy as np, torch, joblib, pandas as pd, scipy.sparse as sp
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.linear_model import LogisticRegression
    import rt_models as M
    torch.manual_seed(0)
    items = {}
    def add(name, loader, data, obj):
        with open(os.path.join(out, name + ".bin"), "wb") as f:
            f.write(data)
        items[name] = {"loader": loader, "summary": M.summarize(obj)}
    def tsave(obj, **kw):
        b = io.BytesIO(); torch.save(obj, b, **kw); return b.getvalue()
    net = M.Net()
    add("torch_state_dict", "torch", tsave(net.state_dict()), net.state_dict())
    add("torch_whole_module", "torch", tsave(net), net)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.ones(3, 4)).sum().backward(); opt.step()
    add("torch_optimizer", "torch", tsave(opt.state_dict()), opt.state_dict())
    ckpt = {"state_dict": net.state_dict(), "epoch": 3, "device": torch.device("cpu"),
            "hparams": argparse.Namespace(lr=0.1, data=pathlib.PosixPath("/data/train")),
            "path": pathlib.PurePosixPath("/ckpt/last.ckpt")}
    add("torch_lightning_ckpt", "torch", tsave(ckpt), ckpt)
    add("torch_legacy_format", "torch", tsave(net.state_dict(), _use_new_zipfile_serialization=False), net.state_dict())
    X = np.random.RandomState(0).rand(20, 3); y = (X[:, 0] > 0.5).astype(int)
    pipe = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())]).fit(X, y)
    for tag, comp in (("joblib_pipeline", 0), ("joblib_pipeline_zlib", 3), ("joblib_pipeline_lzma", ("xz", 3))):
        b = io.BytesIO(); joblib.dump(pipe, b, compress=comp); add(tag, "joblib", b.getvalue(), pipe)
    oarr = np.array([{"a": 1}, "text", 3.5, None], dtype=object)
    b = io.BytesIO(); np.save(b, oarr, allow_pickle=True); add("numpy_object_npy", "numpy", b.getvalue(), oarr)
    add("numpy_object_pickle", "pickle", pickle.dumps(oarr), oarr)
    df = pd.DataFrame({"cat": pd.Categorical(["a", "b", "a"]),
                       "ts": pd.date_range("2024-01-01", periods=3, tz="Europe/Paris"),
                       "iv": pd.interval_range(0, 3), "x": [1.0, 2.0, 3.0]})
    add("pandas_frame", "pandas", pickle.dumps(df), df)
    m = sp.csr_matrix(np.eye(3))
    add("scipy_sparse", "pickle", pickle.dumps(m), m)
    g = np.random.default_rng(7)
    add("numpy_generator", "pickle", pickle.dumps(g), g)
    small = {"re": re.compile(r"ab+c", re.I), "tz": zoneinfo.ZoneInfo("Europe/Paris"),
             "enum": M.Color.GREEN, "nt": M.Point(1, 2), "partial": functools.partial(M.scale, 2),
             "bound": M.Greeter("pickle").hello, "ref_user": M.scale, "ref_math": math.sqrt,
             "ref_stdlib": os.path.join, "plain": M.Plain(5, "x")}
    for proto in range(0, 6):
        add("small_objects_p%d" % proto, "pickle", pickle.dumps(small, protocol=proto), small)
    add("copyreg_reconstructor_p0", "pickle", pickle.dumps(M.Plain(), protocol=0), M.Plain())
    add("many_small_objects", "pickle", pickle.dumps([M.Plain(i, str(i)) for i in range(2000)]),
        [M.Plain(i, str(i)) for i in range(2000)])
    json.dump(items, open(os.path.join(out, "index.json"), "w"), indent=1)
''')

# Loads every file of an index in memory and prints {name: "ok:<summary>" | "error:..."}.
LOADER_CODE = textwrap.dedent('''
    import io, json, os, pickle, sys
    d = sys.argv[1]
    sys.path.insert(0, d)
    idx = json.load(open(os.path.join(d, "index.json")))
    res = {}
    for name, it in sorted(idx.items()):
        data = open(os.path.join(d, name + ".bin"), "rb").read()
        try:
            if it["loader"] == "pickle":
                obj = pickle.loads(data)
            elif it["loader"] == "torch":
                import torch; obj = torch.load(io.BytesIO(data))
            elif it["loader"] == "joblib":
                import joblib; obj = joblib.load(io.BytesIO(data))
            elif it["loader"] == "numpy":
                import numpy; obj = numpy.load(io.BytesIO(data), allow_pickle=True)
            elif it["loader"] == "pandas":
                import pandas; obj = pandas.read_pickle(io.BytesIO(data))
            import rt_models
            res[name] = "ok:" + rt_models.summarize(obj)
        except BaseException as e:
            res[name] = "error:%s: %s" % (type(e).__name__, e)
    print("RESULT " + json.dumps(res))
''')


def write_models(d):
    with open(os.path.join(str(d), "rt_models.py"), "w") as f:
        f.write(MODELS_PY)


def benign_generate(d):
    """Build the benign D corpus into d (no preload). Returns the index."""
    write_models(d)
    r = subprocess.run([PYTHON, "-c", GEN_CODE, str(d)], env=clean_env(), capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    with open(os.path.join(str(d), "index.json")) as f:
        return json.load(f)


def parse_result(stdout):
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise AssertionError("no RESULT line in output:\n" + stdout[-2000:])


# Gadgets for the behaviour tests: callables with bland names in a user module,
# which the knowledge base does not know (names like "shell" or "spawn" are
# caught by its name patterns), so only the behaviour veto can stop them.
GADGETS_PY = textwrap.dedent('''
    import os, socket, ctypes, subprocess
    import os as tools  # reachable as rt_gadgets.tools: a bland name for the os module

    def tidy(cmd):
        os.system(cmd)

    def refresh(argv):
        subprocess.Popen(argv).wait()

    def save_state(path):
        with open(path, "w") as f:
            f.write("x")

    def apply_rule(src):
        exec(src)

    def sync(port, marker_path):
        s = socket.socket()
        try:
            s.connect(("127.0.0.1", port))
            s.sendall(b"payload-ran")
        finally:
            s.close()

    def warm_cache(cmd):
        ctypes.CDLL("libc.so.6").system(cmd.encode())

    def load_plugin(name):
        __import__(name)

    def enable(name):
        import importlib
        importlib.import_module(name)

    def patch(path):
        with open(path, "r+") as f:
            f.write("PWNED")

    def pause(seconds):
        import time
        time.sleep(seconds)
        return seconds

    def chain(inner):
        import pickle
        return pickle.loads(inner)
''')

# A module whose import is the payload (imported by import_it during a load).
FOREIGN_PY = "open(%r, 'w').close()\n"


def write_gadgets(d, marker):
    d = str(d)
    with open(os.path.join(d, "rt_gadgets.py"), "w") as f:
        f.write(GADGETS_PY)
    with open(os.path.join(d, "rt_foreign.py"), "w") as f:
        f.write(FOREIGN_PY % str(marker))
