"""preload_cases.py - the loaders and objects used by the preload integration tests.

The same module runs in the pytest process (building files with the real
libraries, no preload) and in the child /usr/bin/python3 under the preload
(`python3 preload_cases.py CASES.json RESULTS.json`), where each case is loaded
with its real loader and the outcome recorded: raised or not, the exception,
and whether the object equals the original rebuilt here from its builder."""
import json
import os
import sys

# ---------------------------------------------------------------- objects

def build(name):
    """Deterministic benign objects, rebuilt identically in parent and child."""
    if name == "plain":
        return {"weights": [1.0, 2.5, -3.0], "name": "model", "layers": (3, 4), "ok": True}
    if name == "torch":
        import torch
        return {"w": torch.arange(12, dtype=torch.float32).reshape(3, 4),
                "b": torch.ones(4, dtype=torch.float64), "meta": {"epoch": 3, "tag": "ckpt"}}
    if name == "npobj":
        import numpy as np
        return np.array([{"a": 1}, "two", 3.0, (4, 5)], dtype=object)
    if name == "npz":
        return {"a": build("npobj")}
    if name == "joblib":
        import numpy as np
        return {"arr": np.arange(1000, dtype=np.float64), "labels": ["x", "y"], "n": 7}
    if name == "pandas":
        import pandas as pd
        return pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"],
                             "c": pd.Categorical(["p", "q", "p"])})
    if name == "jit":
        import torch
        torch.manual_seed(0)
        return torch.jit.script(torch.nn.Linear(4, 2))
    raise KeyError(name)


def equal(a, b):
    """Structural equality across tensors, arrays, frames, modules."""
    import numpy as np
    try:
        import torch
    except ImportError:  # pragma: no cover
        torch = None
    if torch is not None and isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if torch is not None and isinstance(a, torch.jit.ScriptModule):
        x = torch.arange(8, dtype=torch.float32).reshape(2, 4)
        return torch.equal(a(x), b(x))
    if isinstance(a, np.ndarray):
        if not isinstance(b, np.ndarray) or a.dtype != b.dtype or a.shape != b.shape:
            return False
        if a.dtype == object:
            return all(equal(x, y) for x, y in zip(a.ravel(), b.ravel()))
        return bool(np.array_equal(a, b))
    if type(a).__name__ == "DataFrame":
        return type(b).__name__ == "DataFrame" and a.equals(b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))
    return a == b


# ---------------------------------------------------------------- loaders

def load(case):
    kind, path = case["kind"], case.get("path")
    if case.get("chdir"):
        os.chdir(case["chdir"])
    if kind == "pickle":
        import pickle
        with open(path, "rb") as f:
            return pickle.load(f)
    if kind == "pickle_loads":
        import pickle
        with open(path, "rb") as f:
            return pickle.loads(f.read())
    if kind == "pickle_osopen":
        import pickle
        fd = os.open(path, os.O_RDONLY)
        with os.fdopen(fd, "rb") as f:
            return pickle.load(f)
    if kind == "pickle_inherited_dup":
        import pickle
        fd = os.dup(case["fd"])  # an fd that never passed an open hook, dup'd
        with os.fdopen(fd, "rb") as f:
            return pickle.load(f)
    if kind == "torch":
        import torch
        return torch.load(path)
    if kind == "torch_fileobj":
        import torch
        with open(path, "rb") as f:
            return torch.load(f)
    if kind == "torch_inherited_dup":
        import torch
        fd = os.dup(case["fd"])
        with os.fdopen(fd, "rb") as f:
            return torch.load(f)
    if kind == "np":
        import numpy as np
        r = np.load(path, allow_pickle=True)
        if hasattr(r, "files"):
            out = {k: r[k] for k in r.files}
            r.close()
            return out
        return r
    if kind == "joblib":
        import joblib
        return joblib.load(path)
    if kind == "pandas":
        import pandas as pd
        return pd.read_pickle(path, compression=case.get("compression", "infer"))
    if kind == "jit":
        import torch
        return torch.jit.load(path)
    raise KeyError(kind)


def main(cases_path, results_path):
    with open(cases_path) as f:
        cases = json.load(f)
    results = {}
    cwd = os.getcwd()
    for case in cases:
        res = {"raised": False, "exc": None, "equal": None}
        try:
            obj = load(case)
            if case.get("expect"):
                res["equal"] = bool(equal(build(case["expect"]), obj))
        except BaseException as e:  # noqa: BLE001 - we record whatever the loader raised
            res["raised"] = True
            res["exc"] = "%s: %s" % (type(e).__name__, e)
        finally:
            os.chdir(cwd)
        results[case["id"]] = res
    with open(results_path, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
