"""test_layer2_ipc.py - no trusted-by-name IPC (issue 14): multiprocessing,
concurrent.futures, joblib's loky backend, torch DataLoader workers and
scikit-learn's GridSearchCV(n_jobs=2) work under the preload because what they
send is judged safe on its bytes, with outcomes identical to a run without the
preload; a refused task message surfaces as an error in the parent, never as
a hang."""
import json
import os
import subprocess
import textwrap

import pytest

from conftest import LIB, PYTHON, clean_env, run_py_file

pytestmark = pytest.mark.skipif(not os.path.exists(LIB), reason="libsafepickle.so not built")

WORK = textwrap.dedent("""
    import os, pickle
    def square(x):
        return x * x
    class Shipped:  # reduced as joblib's array reducer does: pickle.loads(<bytes>)
        def __init__(self, b):
            self.b = b
        def __reduce__(self):
            return (pickle.loads, (self.b,))
    class Touch:
        def __reduce__(self):
            return (os.system, ("touch marker",))
    def make_touch():
        return Touch()
    def big(i, n=3 << 20):
        import numpy
        return numpy.full(n, i, dtype=numpy.uint8)
""")

FRAMEWORKS = textwrap.dedent("""
    import json, sys, warnings
    warnings.simplefilter("ignore")
    import work
    out = {}
    if __name__ == "__main__":
        import multiprocessing as mp, concurrent.futures as cf
        for m in ("fork", "spawn"):
            with mp.get_context(m).Pool(2) as p:
                out["pool_" + m] = p.map(work.square, range(6))
        with cf.ProcessPoolExecutor(2) as ex:
            out["futures"] = list(ex.map(work.square, range(6)))
        from joblib import Parallel, delayed
        out["joblib_loky"] = Parallel(n_jobs=2, backend="loky")(delayed(work.square)(i) for i in range(6))
        import torch
        from torch.utils.data import DataLoader, TensorDataset
        dl = DataLoader(TensorDataset(torch.arange(8.0)), batch_size=4, num_workers=2)
        out["dataloader"] = [b[0].tolist() for b in dl]
        print("OUT " + json.dumps(out, sort_keys=True))
""")

GRIDSEARCH = textwrap.dedent("""
    import json, warnings
    warnings.simplefilter("ignore")
    if __name__ == "__main__":
        from sklearn.datasets import load_iris
        from sklearn.model_selection import GridSearchCV
        from sklearn.linear_model import LogisticRegression
        X, y = load_iris(return_X_y=True)
        g = GridSearchCV(LogisticRegression(max_iter=200), {"C": [0.1, 1.0]}, n_jobs=2, cv=3).fit(X, y)
        out = [g.best_params_, round(float(g.best_score_), 6)]
        # the shape joblib ships arrays in, loads(<bytes>), carrying a payload instead
        import os, pickle, work
        from joblib import Parallel, delayed
        try:
            Parallel(n_jobs=2)(delayed(len)([work.Shipped(pickle.dumps(work.Touch()))]) for _ in range(2))
            out.append("ran")
        except Exception as e:
            out.append(type(e).__name__)
        print("OUT " + json.dumps(out + [os.path.exists("marker")]))
""")


def run(tmp_path, body, preload, timeout=600):
    (tmp_path / "work.py").write_text(WORK)
    return run_py_file(tmp_path, body, name="main.py", preload=preload, env={"PYTHONPATH": str(tmp_path)},
                       timeout=timeout)


def out_of(r):
    for line in r.stdout.splitlines():
        if line.startswith("OUT "):
            return json.loads(line[4:])
    raise AssertionError(r.stdout + r.stderr[-3000:])


def test_parallel_frameworks_identical_under_preload(tmp_path):
    plain = out_of(run(tmp_path, FRAMEWORKS, preload=False))
    r = run(tmp_path, FRAMEWORKS, preload=True)
    assert out_of(r) == plain, r.stderr[-3000:]
    assert "safepickle: blocked" not in r.stderr, r.stderr[-3000:]


def test_gridsearch_n_jobs_identical_under_preload(tmp_path):
    """numpy arrays reach loky workers as pickle.loads(<bytes>): judged by those bytes,
    so GridSearchCV matches a plain run, and the same shape carrying a payload (which
    runs plainly) is refused in the worker with no marker."""
    plain = out_of(run(tmp_path, GRIDSEARCH, preload=False))
    assert plain[2:] == ["ran", True]
    os.remove(str(tmp_path / "marker"))
    r = run(tmp_path, GRIDSEARCH, preload=True)
    out = out_of(r)
    assert out[:2] == plain[:2], r.stderr[-3000:]
    assert out[2] != "ran" and out[3] is False, (out, r.stderr[-3000:])
    assert "safepickle: blocked" in r.stderr


LARGE = textwrap.dedent("""
    import json, os, pickle, warnings
    warnings.simplefilter("ignore")
    if __name__ == "__main__":
        import work
        from joblib import Parallel, delayed
        out = {}
        for b in ("loky", "multiprocessing"):
            # results over max_str (1 MiB): joblib ships each as pickle.loads(<3 MiB bytes>)
            r = Parallel(n_jobs=2, backend=b)(delayed(work.big)(i) for i in range(3))
            out[b] = [[int(a[0]), int(a[-1]), len(a)] for a in r]
        # the same shape, its payload past the first MiB of the nested stream
        try:
            Parallel(n_jobs=2)(delayed(len)([work.Shipped(pickle.dumps(["a" * (3 << 19), work.Touch()]))])
                               for _ in range(2))
            out["payload"] = "ran"
        except Exception as e:
            out["payload"] = type(e).__name__
        out["marker"] = os.path.exists("marker")
        print("OUT " + json.dumps(out, sort_keys=True))
""")


def test_results_over_max_str_identical_under_preload(tmp_path):
    """A worker's result array over 1 MiB reaches the parent as pickle.loads(<bytes>) of a
    stream longer than max_str: in memory those bytes are judged whole (SPA_VF_WHOLE), so
    the results match a plain run (they were refused: BrokenProcessPool), and a payload
    placed past the first MiB of such a stream (which runs plainly) is still refused."""
    plain = out_of(run(tmp_path, LARGE, preload=False))
    assert plain["payload"] == "ran" and plain["marker"] is True
    os.remove(str(tmp_path / "marker"))
    r = run(tmp_path, LARGE, preload=True)
    out = out_of(r)
    for b in ("loky", "multiprocessing"):
        assert out[b] == plain[b], r.stderr[-3000:]
    assert out["payload"] != "ran" and out["marker"] is False, (out, r.stderr[-3000:])
    assert "safepickle: blocked" in r.stderr


REFUSED_TASK = textwrap.dedent("""
    import sys, time, json
    import concurrent.futures as cf
    from joblib import Parallel, delayed
    out = {}
    if __name__ == "__main__":
        t = time.time()
        try:
            # a function shipped by value (cloudpickle: a code object): refused in the worker
            Parallel(n_jobs=2, backend="loky")(delayed(lambda x: x + 1)(i) for i in range(4))
            out["loky"] = "ran"
        except Exception as e:
            out["loky"] = type(e).__name__
        out["loky_seconds_under_60"] = time.time() - t < 60
        print("OUT " + json.dumps(out, sort_keys=True))
""")


def test_refused_task_is_an_error_not_a_hang(tmp_path):
    r = run(tmp_path, REFUSED_TASK, preload=False)
    assert out_of(r)["loky"] == "ran"
    r = run(tmp_path, REFUSED_TASK, preload=True, timeout=300)
    out = out_of(r)
    assert out["loky"] != "ran" and out["loky_seconds_under_60"], (out, r.stderr[-2000:])
    assert "safepickle: blocked" in r.stderr


REFUSED_POOL_TASK = textwrap.dedent("""
    import json, os, sys, time
    import multiprocessing as mp
    import work
    if __name__ == "__main__":
        out = {}
        for m in ("fork", "spawn"):
            with mp.get_context(m).Pool(2) as p:
                for how in ("apply", "map", "result"):
                    t = time.time()
                    try:
                        if how == "apply":
                            p.apply_async(id, (work.Touch(),)).get(timeout=20)
                        elif how == "map":
                            p.map_async(len, [[work.Touch()]]).get(timeout=20)
                        else:  # the payload comes back as a result
                            p.apply_async(work.make_touch).get(timeout=20)
                        out[m + "_" + how] = "ran"
                    except mp.TimeoutError:
                        out[m + "_" + how] = "hang"
                    except Exception as e:
                        out[m + "_" + how] = type(e).__name__
                out[m + "_after"] = p.map(work.square, range(4))
        out["marker"] = os.path.exists("marker")
        print("OUT " + json.dumps(out, sort_keys=True))
""")


def test_refused_pool_task_is_an_error_not_a_hang(tmp_path):
    """A Pool worker drops a task message it cannot load, and the parent's result
    handler exits on a result it cannot load (CPython: the caller waits for ever).
    Refused either way, the task fails in the parent with the refusal, the payload
    (which runs plainly) does not run, and the pool keeps working."""
    plain = out_of(run(tmp_path, REFUSED_POOL_TASK, preload=False))
    assert plain["marker"] and plain["fork_apply"] == "ran" == plain["spawn_map"] == plain["fork_result"]
    os.remove(str(tmp_path / "marker"))
    r = run(tmp_path, REFUSED_POOL_TASK, preload=True)
    out = out_of(r)
    for k in ("fork_apply", "fork_map", "fork_result", "spawn_apply", "spawn_map", "spawn_result"):
        assert out[k] == "SafePickleBlocked", (out, r.stderr[-3000:])
    assert out["fork_after"] == out["spawn_after"] == [0, 1, 4, 9]
    assert out["marker"] is False


DASK_LAMBDA = textwrap.dedent("""
    import sys, time
    from distributed import Client, LocalCluster
    if __name__ == '__main__':
        t = time.time()
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as c, \\
                Client(c) as cl:
            f = cl.submit(lambda x: x + 1, 1)   # shipped by value (cloudpickle: a code object)
            try:
                print('RESULT', f.result(timeout=120))
            except Exception as e:
                print('ERROR', type(e).__name__, 'SafePickleBlocked' in str(e) or 'SafePickleBlocked' in type(e).__name__)
        print('SECS %.0f' % (time.time() - t))
""")


def test_dask_worker_refusal_surfaces(tmp_path):
    """A dask worker refuses a function shipped by value (the default policy refuses code
    objects); the client gets that refusal as the task's error within seconds, never a
    wait until its timeout. The worker's report travels through tblib
    (unpickle_exception(SafePickleBlocked, (message,), ...) with its traceback) and is
    loaded by the client: the report itself is not refused."""
    pytest.importorskip("distributed")
    script = tmp_path / "d.py"
    script.write_text(DASK_LAMBDA)
    e = clean_env()
    r = subprocess.run([PYTHON, str(script)], cwd=str(tmp_path), env=e, capture_output=True, text=True, timeout=300)
    assert "RESULT 2" in r.stdout, r.stderr[-2000:]       # plainly the lambda runs
    e["LD_PRELOAD"] = LIB
    r = subprocess.run([PYTHON, str(script)], cwd=str(tmp_path), env=e, capture_output=True, text=True, timeout=300)
    assert "ERROR" in r.stdout and "True" in r.stdout, (r.stdout, r.stderr[-3000:])
    assert int(r.stdout.split("SECS")[1]) < 100, r.stdout    # the error, not the client's 120 s timeout
    assert "callee.code_exec" in r.stderr                     # the worker's refusal
    assert "ERROR SafePickleBlocked True" in r.stdout, r.stdout                # its report loads as sent
    assert not [ln for ln in r.stderr.splitlines()
                if ln.startswith("safepickle: blocked") and "SafePickleBlocked receives" in ln], r.stderr[-3000:]


JOBLIB_WPLUS = textwrap.dedent("""
    import sys, time, numpy as np
    from joblib.pool import MemmappingPool
    def inplace(args):
        a, i = args
        a[i] *= 2
    if __name__ == '__main__':
        t = time.time()
        a = np.memmap(sys.argv[1], dtype='float64', shape=(4,), mode='w+')
        a[:] = 1.0
        p = MemmappingPool(2, max_nbytes=2)
        try:
            p.map(inplace, [(a, i) for i in range(4)])
            print('RESULT', a.tolist())
        except Exception as e:
            print('ERROR', type(e).__name__)
        finally:
            p.terminate()
        print('SECS %.0f' % (time.time() - t))
""")


def test_joblib_memmapping_pool_refusal_surfaces(tmp_path):
    """joblib's MemmappingPool (its multiprocessing backend) ships a w+ memmap as
    _strided_from_memmap(..., 'w+', ...): a writable mapping of a file the bytes name,
    refused by design (test_memmap_views.py). The worker reads its task through
    CustomizablePicklingQueue.get (a closure over Connection.recv), so the Pool task
    substitute applies there too: map() raises SafePickleBlocked at once instead of
    hanging for ever."""
    script = tmp_path / "m.py"
    script.write_text(JOBLIB_WPLUS)
    e = clean_env()
    r = subprocess.run([PYTHON, str(script), str(tmp_path / "a.mmap")], cwd=str(tmp_path), env=e,
                       capture_output=True, text=True, timeout=120)
    assert "RESULT [2.0, 2.0, 2.0, 2.0]" in r.stdout, r.stderr[-2000:]
    e["LD_PRELOAD"] = LIB
    try:
        r = subprocess.run([PYTHON, str(script), str(tmp_path / "b.mmap")], cwd=str(tmp_path), env=e,
                           capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail("the pool hung on the refused task")
    assert "ERROR SafePickleBlocked" in r.stdout, (r.stdout, r.stderr[-2000:])
    assert int(r.stdout.split("SECS")[1]) < 60, r.stdout
