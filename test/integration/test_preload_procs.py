"""test_preload_procs.py - the preload under threads and processes: a threaded
loader, a torch DataLoader with worker processes, and multiprocessing pools with
fork and spawn. Every benign load must equal the original, every malicious one
must raise with its payload's marker absent, in every thread and process."""
import json
import os
import signal
import subprocess
import textwrap

import pytest

from conftest import LIB, PYTHON, REPO, clean_env
from spgen import Reduce, touch_cmd

CHILD = textwrap.dedent(r'''
    import os, pickle, sys, threading
    GOOD, BAD, MODE = sys.argv[1], sys.argv[2], sys.argv[3]
    EXPECT = {"w": list(range(50)), "name": "ok"}

    def try_load(path):
        """'ok' if it loaded the expected object, 'refused' if it raised, else 'WRONG'."""
        try:
            if path.endswith(".pt"):
                import torch
                obj = torch.load(path)
                return "ok" if torch.equal(obj["t"], torch.arange(10)) else "WRONG"
            with open(path, "rb") as f:
                obj = pickle.load(f)
            return "ok" if obj == EXPECT else "WRONG"
        except Exception:
            return "refused"

    def work(i):
        return (try_load(GOOD), try_load(BAD))

    def check(results):
        assert results, "no results"
        for g, b in results:
            assert g == "ok", results
            assert b == "refused", results
        print("CHECKED", len(results))

    if __name__ == "__main__":
        if MODE == "threads":
            out = []
            lock = threading.Lock()
            def run(i):
                for _ in range(15):
                    r = work(i)
                    with lock:
                        out.append(r)
            ts = [threading.Thread(target=run, args=(i,)) for i in range(8)]
            for t in ts: t.start()
            for t in ts: t.join()
            check(out)
        elif MODE in ("fork", "spawn"):
            import multiprocessing as mp
            pool = mp.get_context(MODE).Pool(2)
            try:
                out = pool.map_async(work, range(8)).get(timeout=60)
            except BaseException as e:  # a stuck or broken pool fails fast instead of hanging
                print("POOL FAILED: %s: %s" % (type(e).__name__, e), file=sys.stderr, flush=True)
                for w in pool._pool:
                    os.kill(w.pid, 9)
                os._exit(3)
            pool.terminate()
            check(out)
        elif MODE == "dataloader":
            import torch
            from torch.utils.data import DataLoader, Dataset
            class DS(Dataset):
                def __len__(self): return 8
                def __getitem__(self, i):
                    g, b = work(i)
                    return torch.tensor([g == "ok", b == "refused", os.getpid()])
            rows = torch.cat([x for x in DataLoader(DS(), batch_size=2, num_workers=2, timeout=60)])
            rows = rows.reshape(-1, 3)
            assert len(set(rows[:, 2].tolist()) - {os.getpid()}) >= 1, "no worker process did a load"
            check([("ok" if r[0] else "WRONG", "refused" if r[1] else "WRONG") for r in rows.tolist()])
''')


@pytest.fixture(scope="module")
def proc_files(tmp_path_factory):
    import pickle

    import torch
    d = tmp_path_factory.mktemp("procs")
    marker = d / "PAYLOAD_RAN"
    script = d / "child.py"
    script.write_text(CHILD)
    good = d / "good.pkl"
    bad = d / "bad.pkl"
    with open(good, "wb") as f:
        pickle.dump({"w": list(range(50)), "name": "ok"}, f, protocol=4)
    with open(bad, "wb") as f:
        pickle.dump({"w": Reduce(os.system, (touch_cmd(marker),))}, f, protocol=4)
    torch.save({"t": torch.arange(10)}, d / "good.pt")
    torch.save({"t": torch.arange(10), "x": Reduce(os.system, (touch_cmd(marker),))}, d / "bad.pt")
    # the default policy with only layer 1 (the file hooks) on
    with open(os.path.join(REPO, "policies", "default.json")) as f:
        pol = json.load(f)
    pol["name"] = "file-hooks-only"
    pol["layers"] = {"file_hooks": True, "audit_hook": False, "runtime_behaviour": False}
    with open(d / "layer1.json", "w") as f:
        json.dump(pol, f)
    return d, marker, script


# Each scenario runs with the embedded default policy (both layers, the product as
# shipped) and with only the file hooks on (this layer's behaviour on its own).
POLICIES = ["default", "layer1"]


def _run(proc_files, mode, ext, policy):
    d, marker, script = proc_files
    if marker.exists():
        marker.unlink()
    env = clean_env(LD_PRELOAD=LIB)
    if policy == "layer1":
        env["SAFEPICKLE_POLICY"] = str(d / "layer1.json")
    # own session: if the child hangs, its workers (which hold the output pipes) die with it
    p = subprocess.Popen([PYTHON, str(script), str(d / ("good" + ext)), str(d / ("bad" + ext)), mode], env=env,
                         cwd=str(d), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        pytest.fail("%s mode hung under the preload\n%s" % (mode, err[-3000:]))
    p = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    assert p.returncode == 0 and "CHECKED" in p.stdout, "rc=%d\n%s\n%s" % (p.returncode, p.stdout, p.stderr[-3000:])
    assert not marker.exists(), "payload ran in %s mode" % mode
    assert "safepickle: blocked" in p.stderr
    return p


@pytest.mark.parametrize("policy", POLICIES)
def test_threads(proc_files, policy):
    p = _run(proc_files, "threads", ".pkl", policy)
    assert "CHECKED 120" in p.stdout


@pytest.mark.parametrize("policy", POLICIES)
def test_multiprocessing_fork(proc_files, policy):
    _run(proc_files, "fork", ".pkl", policy)


@pytest.mark.parametrize("policy", POLICIES)
def test_multiprocessing_spawn(proc_files, policy):
    _run(proc_files, "spawn", ".pkl", policy)


@pytest.mark.parametrize("policy", POLICIES)
def test_dataloader_workers(proc_files, policy):
    _run(proc_files, "dataloader", ".pt", policy)


def test_control_payload_runs_without_preload(proc_files):
    """Without the preload the same child sees the payload run (the test can fail)."""
    d, marker, script = proc_files
    if marker.exists():
        marker.unlink()
    p = subprocess.run([PYTHON, str(script), str(d / "good.pkl"), str(d / "bad.pkl"), "threads"],
                       env=clean_env(), cwd=str(d), capture_output=True, text=True, timeout=600)
    assert p.returncode != 0  # the check fails: the bad file loaded
    assert marker.exists()
    marker.unlink()


STRESS = r'''
import os, pickle, sys, threading, time
d = sys.argv[1]
stop = time.time() + 5
errs = []
def worker(k):
    n = 0
    while time.time() < stop:
        i = (k * 7 + n) % 10
        p = os.path.join(d, "s%d.pkl" % i)
        try:
            with open(p, "rb") as f:
                assert pickle.load(f)["i"] == i
            if n % 25 == 0:
                os.utime(p)  # new identity: the next open is judged again, not cached
        except Exception as e:
            errs.append(repr(e))
        n += 1
def forker():
    while time.time() < stop:
        pid = os.fork()
        if pid == 0:  # the child judges a file right after a fork taken mid-judgement
            try:
                with open(os.path.join(d, "s3.pkl"), "rb") as f:
                    pickle.load(f)
                os._exit(0)
            except BaseException:
                os._exit(1)
        if os.waitpid(pid, 0)[1] != 0:
            errs.append("child failed")
ts = [threading.Thread(target=worker, args=(k,)) for k in range(6)] + [threading.Thread(target=forker)]
for t in ts: t.start()
for t in ts: t.join()
print("ERRORS", len(errs), errs[:3])
'''


def test_fork_while_threads_judge(tmp_path):
    """Threads judging files (cache and audit writer busy) while another thread
    forks: no deadlock in the children (atfork), no wrong result anywhere."""
    import pickle
    for i in range(10):
        with open(tmp_path / ("s%d.pkl" % i), "wb") as f:
            pickle.dump({"i": i, "w": list(range(500))}, f)
    env = clean_env(LD_PRELOAD=LIB, SAFEPICKLE_LOG=str(tmp_path / "audit.jsonl"))
    p = subprocess.run([PYTHON, "-c", STRESS, str(tmp_path)], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "ERRORS 0 " in p.stdout, (p.stdout, p.stderr[-2000:])
    # the files were judged again after each identity change, not only once
    with open(tmp_path / "audit.jsonl") as f:
        assert sum(1 for _ in f) > 10
