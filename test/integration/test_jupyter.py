"""test_jupyter.py - `safepickle jupyter install` end to end with a real kernel.

Installs a kernelspec into a temporary Jupyter data dir, starts it with
jupyter_client (Debian's python3-jupyter-client / python3-ipykernel), runs a cell
that loads a malicious checkpoint and one that loads a benign one, and checks the
cell error, the marker file, the benign result and that the kernel survives."""
import json
import os
import queue
import subprocess
import time

import pytest

from conftest import LIB, REPO, run_cli, run_py

jupyter_client = pytest.importorskip("jupyter_client")
from jupyter_client.manager import start_new_kernel  # noqa: E402

KERNEL = "sp-test-kernel"
CELL_TIMEOUT = 180


def make_checkpoints(tmp, marker):
    """A benign and a malicious torch checkpoint, built with the real torch.
    The malicious one is proven live: loading it without the preload runs the
    payload (then the marker is removed again)."""
    code = r"""
import os, sys, torch
sys.path.insert(0, %(here)r)
from spgen import Reduce, touch_cmd
torch.save({"w": torch.arange(4.0)}, %(ok)r)
torch.save({"w": torch.zeros(2), "cfg": Reduce(os.system, (touch_cmd(%(marker)r),))}, %(bad)r)
torch.load(%(bad)r)
print("payload ran:", os.path.exists(%(marker)r))
os.unlink(%(marker)r)
""" % {"here": os.path.dirname(os.path.abspath(__file__)), "ok": str(tmp / "ok.pt"),
       "bad": str(tmp / "bad.pt"), "marker": str(marker)}
    r = run_py(code, preload=False)
    assert r.returncode == 0, r.stderr
    assert "payload ran: True" in r.stdout, "control failed: the malicious checkpoint is not live"
    return tmp / "ok.pt", tmp / "bad.pt"


def run_cell(kc, code):
    """Execute one cell; return (reply content, {'stdout':..,'stderr':..}, [error contents])."""
    out = {"stdout": "", "stderr": ""}
    errors = []

    def hook(msg):
        t, c = msg["msg_type"], msg["content"]
        if t == "stream":
            out[c["name"]] += c["text"]
        elif t == "error":
            errors.append(c)

    reply = kc.execute_interactive(code, timeout=CELL_TIMEOUT, output_hook=hook)
    # ipykernel forwards fd-level stderr (the preload's line) from a watcher thread:
    # it may arrive just after the reply.
    deadline = time.time() + 2.0
    while time.time() < deadline:
        try:
            msg = kc.get_iopub_msg(timeout=0.2)
        except queue.Empty:
            continue
        hook(msg)
    return reply["content"], out, errors


def start_kernel():
    """Start the installed kernelspec as a notebook server would. pytest's own
    PYTEST_CURRENT_TEST variable is removed: ipykernel turns its fd-level output
    capture off when it sees it, and a real notebook has it on."""
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    return start_new_kernel(kernel_name=KERNEL, startup_timeout=120, env=env)


@pytest.fixture
def datadir(tmp_path, monkeypatch):
    d = tmp_path / "jupyter-data"
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(d))
    for k in list(os.environ):
        if k == "LD_PRELOAD" or k.startswith("SAFEPICKLE_"):
            monkeypatch.delenv(k)
    return d


def test_install_writes_kernelspec(datadir):
    r = run_cli("jupyter", "install", "--name", KERNEL, "--user", env={"JUPYTER_DATA_DIR": datadir})
    assert r.returncode == 0, r.stderr
    spec = json.loads((datadir / "kernels" / KERNEL / "kernel.json").read_text())
    launcher = datadir / "kernels" / KERNEL / "safepickle_kernel.py"
    assert spec["argv"][:4] == ["/usr/bin/python3", str(launcher), "-f", "{connection_file}"]
    compile(launcher.read_text(), str(launcher), "exec")  # valid Python
    assert spec["display_name"] == "Python 3 (safepickle: %s)" % KERNEL
    hook = datadir / "kernels" / KERNEL / "safepickle_hook.py"
    assert spec["argv"][4:] == ["--IPKernelApp.exec_lines=exec(compile(open(%s).read(), %s, 'exec'))"
                                % (json.dumps(str(hook)), json.dumps(str(hook)))]
    compile(hook.read_text(), str(hook), "exec")  # valid Python
    assert os.path.samefile(spec["env"]["LD_PRELOAD"], LIB)
    assert "SAFEPICKLE_POLICY" not in spec["env"]  # no --policy: the embedded default
    assert (datadir / "kernels" / KERNEL / "logo-64x64.png").stat().st_size > 0  # the usual icon
    from jupyter_client.kernelspec import KernelSpecManager
    assert KERNEL in KernelSpecManager().find_kernel_specs()
    # doctor lists it, and flags one whose library path went stale
    denv = {"JUPYTER_DATA_DIR": datadir, "HOME": datadir.parent, "XDG_DATA_HOME": datadir.parent / "xdg"}
    r = run_cli("doctor", env=denv)
    assert "kernelspec  %s (policy: embedded default)" % (datadir / "kernels" / KERNEL) in r.stdout, r.stdout
    kj = datadir / "kernels" / KERNEL / "kernel.json"
    stale = json.loads(kj.read_text())
    stale["env"]["LD_PRELOAD"] = "/nonexistent/libsafepickle.so"
    kj.write_text(json.dumps(stale))
    r = run_cli("doctor", env=denv)
    assert r.returncode == 1 and "preloads /nonexistent/libsafepickle.so, which does not exist" in r.stdout
    # a second install replaces our own kernelspec; a foreign one is kept without --force
    assert run_cli("jupyter", "install", "--name", KERNEL, env={"JUPYTER_DATA_DIR": datadir}).returncode == 0
    foreign = datadir / "kernels" / "foreign"
    foreign.mkdir()
    (foreign / "kernel.json").write_text(json.dumps({"argv": ["x"], "display_name": "x", "language": "python"}))
    r = run_cli("jupyter", "install", "--name", "foreign", env={"JUPYTER_DATA_DIR": datadir})
    assert r.returncode == 2 and "--force" in r.stderr
    assert json.loads((foreign / "kernel.json").read_text())["argv"] == ["x"]
    r = run_cli("jupyter", "uninstall", "--name", "foreign", env={"JUPYTER_DATA_DIR": datadir})
    assert r.returncode == 2 and (foreign / "kernel.json").exists()
    # uninstall removes ours
    r = run_cli("jupyter", "uninstall", "--name", KERNEL, env={"JUPYTER_DATA_DIR": datadir})
    assert r.returncode == 0, r.stderr
    assert not (datadir / "kernels" / KERNEL).exists()
    assert run_cli("jupyter", "uninstall", "--name", KERNEL,
                   env={"JUPYTER_DATA_DIR": datadir}).returncode == 2


def test_install_rejects_bad_input(datadir, tmp_path):
    env = {"JUPYTER_DATA_DIR": datadir}
    bad = tmp_path / "bad.json"
    bad.write_text('{"mode": "enforce",,}')
    r = run_cli("jupyter", "install", "--policy", bad, env=env)
    assert r.returncode == 2 and "invalid" in r.stderr and "byte" in r.stderr
    r = run_cli("jupyter", "install", "--policy", tmp_path / "missing.json", env=env)
    assert r.returncode == 2
    r = run_cli("jupyter", "install", "--name", "../escape", env=env)
    assert r.returncode == 2
    r = run_cli("jupyter", "install", "--user", "--sys-prefix", env=env)
    assert r.returncode == 2
    assert not (datadir / "kernels").exists() or not any((datadir / "kernels").iterdir())


def test_prefix_and_policy(tmp_path, datadir):
    pol = os.path.join(REPO, "policies", "strict.json")
    r = run_cli("jupyter", "install", "--prefix", tmp_path / "pfx", "--policy", pol, "--log", "/var/log/x.jsonl")
    assert r.returncode == 0, r.stderr
    spec = json.loads((tmp_path / "pfx/share/jupyter/kernels/python3-safepickle/kernel.json").read_text())
    assert spec["env"]["SAFEPICKLE_LOG"] == "/var/log/x.jsonl"
    assert os.path.samefile(spec["env"]["SAFEPICKLE_POLICY"], pol)
    assert os.path.isabs(spec["env"]["SAFEPICKLE_POLICY"])


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """One kernel session: a cell loading a malicious checkpoint, then one loading a benign
    one, then a liveness check. Returns what each step produced."""
    tmp = tmp_path_factory.mktemp("jupyter")
    marker = tmp / "PAYLOAD_RAN"
    ok, bad = make_checkpoints(tmp, marker)
    datadir = tmp / "jupyter-data"
    old = os.environ.get("JUPYTER_DATA_DIR")
    old_state = os.environ.get("XDG_STATE_HOME")
    os.environ["JUPYTER_DATA_DIR"] = str(datadir)
    os.environ["XDG_STATE_HOME"] = str(tmp / "state")   # the kernel's audit records
    res = {"marker": marker, "bad": bad, "ok": ok, "state": tmp / "state"}
    try:
        r = run_cli("jupyter", "install", "--name", KERNEL, env={"JUPYTER_DATA_DIR": datadir})
        assert r.returncode == 0, r.stderr
        km, kc = start_kernel()
        try:
            res["maps"] = run_cell(kc, "print('libsafepickle.so' in open('/proc/self/maps').read())")
            res["bad_cell"] = run_cell(kc, "import torch\nm = torch.load(%r)" % str(bad))
            res["marker_after_bad"] = marker.exists()
            res["ns"] = run_cell(kc, "print(any('safepickle' in n for n in dir()))")
            res["ok_cell"] = run_cell(kc, "m = torch.load(%r)\nprint(float(m['w'].sum()))" % str(ok))
            res["alive"] = km.is_alive()
            res["last_cell"] = run_cell(kc, "1 + 1")
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
    finally:
        if old is None:
            os.environ.pop("JUPYTER_DATA_DIR", None)
        else:
            os.environ["JUPYTER_DATA_DIR"] = old
        if old_state is None:
            os.environ.pop("XDG_STATE_HOME", None)
        else:
            os.environ["XDG_STATE_HOME"] = old_state
    return res


def error_text(content):
    return " ".join([content.get("ename", ""), content.get("evalue", "")] + content.get("traceback", []))


def test_kernel_runs_under_the_preload(session):
    content, out, _ = session["maps"]
    assert content["status"] == "ok" and out["stdout"].strip() == "True", (content, out)


def test_malicious_cell_fails_and_payload_does_not_run(session):
    content, out, _ = session["bad_cell"]
    assert content["status"] == "error", (content, out)
    assert content["ename"] == "PermissionError", content
    assert not session["marker_after_bad"] and not session["marker"].exists()


def test_reason_reaches_the_cell(session):
    """The notebook user sees the reason under the failing cell: the preload's stderr line
    (ipykernel forwards fd 2 to the cell that is running) or the exception itself."""
    content, out, _ = session["bad_cell"]
    cell = error_text(content) + out["stderr"]
    assert "safepickle: blocked" in cell and str(session["bad"]) in cell, (content, out)
    assert "malicious" in cell and "os.system" in cell, (content, out)


def test_cell_shows_one_line_and_no_audit_record(session):
    """Quiet by default (issue 17): the cell's stderr holds the one `safepickle:` line, not
    the JSON audit record, which goes to the state directory."""
    content, out, _ = session["bad_cell"]
    lines = [ln for ln in out["stderr"].splitlines() if ln.strip()]
    assert [ln for ln in lines if ln.startswith("safepickle:")] and not [ln for ln in lines if "{" in ln], out
    assert len([ln for ln in lines if ln.startswith("safepickle: blocked")]) == 1, out
    log = session["state"] / "safepickle" / "audit.jsonl"
    recs = [json.loads(ln) for ln in log.read_text().splitlines()]
    assert any(r["action"] == "block" and r["path"] == str(session["bad"]) for r in recs)


def test_reason_is_in_the_exception(session):
    """The cell's error itself names the reason (the kernelspec's exception handler asks
    `safepickle jupyter why FILE`), not only the stderr output above it."""
    content, _, _ = session["bad_cell"]
    assert content["evalue"].startswith("[Errno 13] Permission denied: safepickle: blocked "), content
    assert "malicious" in content["evalue"] and "os.system" in content["evalue"], content
    assert str(session["bad"]) in content["evalue"]
    # the handler leaves nothing in the user's namespace
    assert session["ns"][1]["stdout"].strip() == "False"


def test_why(session, tmp_path):
    r = run_cli("jupyter", "why", session["bad"])
    assert r.returncode == 0 and r.stdout.startswith("safepickle: blocked %s: malicious: " % session["bad"])
    r = run_cli("jupyter", "why", session["ok"])
    assert r.returncode == 1 and r.stdout == ""
    r = run_cli("jupyter", "why", session["bad"], env={"SAFEPICKLE_MODE": "audit"})
    assert r.returncode == 1  # audit mode blocks nothing


def test_benign_cell_after_the_block(session):
    content, out, errors = session["ok_cell"]
    assert content["status"] == "ok", (content, out, errors)
    assert out["stdout"].strip() == "6.0"


def test_kernel_survives(session):
    assert session["alive"]
    assert session["last_cell"][0]["status"] == "ok"


def test_sys_prefix_and_python(tmp_path, datadir):
    """--sys-prefix asks the chosen interpreter for its sys.prefix: a venv here, so the
    shared machine's /usr/share/jupyter is never touched."""
    venv = tmp_path / "venv"
    r = subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", "--system-site-packages", str(venv)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    py = str(venv / "bin" / "python3")
    r = run_cli("jupyter", "install", "--sys-prefix", "--python", py, "--name", "venv-kernel")
    assert r.returncode == 0, r.stderr
    spec = json.loads((venv / "share/jupyter/kernels/venv-kernel/kernel.json").read_text())
    assert spec["argv"][0] == py
    r = run_cli("jupyter", "uninstall", "--sys-prefix", "--python", py, "--name", "venv-kernel")
    assert r.returncode == 0 and not (venv / "share/jupyter/kernels/venv-kernel").exists()
    # an interpreter without ipykernel is refused before anything is written
    bare = tmp_path / "bare"
    assert subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(bare)]).returncode == 0
    r = run_cli("jupyter", "install", "--sys-prefix", "--python", str(bare / "bin/python3"))
    assert r.returncode == 2 and "ipykernel" in r.stderr
    assert not (bare / "share/jupyter").exists()


# ------------------------------------------------ kernels that refuse to run unprotected

def start_named(name):
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    return start_new_kernel(kernel_name=name, startup_timeout=120, env=env)


@pytest.mark.parametrize("breakage", ["library_removed", "mode_off"])
def test_unprotected_kernel_runs_no_cell_and_says_why(tmp_path, datadir, breakage):
    """A kernelspec whose library was uninstalled (ld.so only prints "ignored") or whose
    environment turns the policy off must not run cells: each cell fails with the reason."""
    import shutil
    marker = tmp_path / "PAYLOAD_RAN"
    ok, bad = make_checkpoints(tmp_path, marker)
    inst = tmp_path / "inst"
    inst.mkdir()
    shutil.copy(os.path.join(os.path.dirname(LIB), "safepickle"), inst)
    shutil.copy(LIB, inst)
    r = subprocess.run([str(inst / "safepickle"), "jupyter", "install", "--name", "sp-broken"],
                       env=dict(os.environ, JUPYTER_DATA_DIR=str(datadir)), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    kj = datadir / "kernels" / "sp-broken" / "kernel.json"
    if breakage == "library_removed":
        os.unlink(inst / "libsafepickle.so")  # as `make uninstall` of that install would
        why = "was not loaded into this kernel"
    else:
        spec = json.loads(kj.read_text())
        spec["env"]["SAFEPICKLE_MODE"] = "off"
        kj.write_text(json.dumps(spec))
        why = "a canary malicious pickle was not refused: its policy is not in force"
    km, kc = start_named("sp-broken")
    try:
        for cell in ("open(%r, 'w').close()" % str(marker), "import torch\nm = torch.load(%r)" % str(bad),
                     "1 + 1"):
            content, out, errors = run_cell(kc, cell)
            assert content["status"] == "error" and content["ename"] == "SafePickleUnprotected", content
            assert "safepickle: this kernel is NOT protected: " in content["evalue"] and why in content["evalue"]
            # the notebook shows it: an error output under the cell
            assert errors and errors[0]["evalue"] == content["evalue"], errors
            assert not marker.exists()
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert not marker.exists()


def test_display_names_are_distinct_and_uninstall_all(tmp_path, datadir):
    env = {"JUPYTER_DATA_DIR": datadir}
    for name in ("python3-safepickle", "sp-a", "sp-b"):
        assert run_cli("jupyter", "install", "--name", name, env=env).returncode == 0
    pfx = tmp_path / "pfx"
    assert run_cli("jupyter", "install", "--name", "sp-c", "--prefix", pfx, env=env).returncode == 0
    names = {n: json.loads((datadir / "kernels" / n / "kernel.json").read_text())["display_name"]
             for n in ("python3-safepickle", "sp-a", "sp-b")}
    assert names == {"python3-safepickle": "Python 3 (safepickle)", "sp-a": "Python 3 (safepickle: sp-a)",
                     "sp-b": "Python 3 (safepickle: sp-b)"}
    foreign = datadir / "kernels" / "foreign"
    foreign.mkdir()
    (foreign / "kernel.json").write_text(json.dumps({"argv": ["x"], "display_name": "x", "language": "python"}))
    # --all with a location: only there
    r = run_cli("jupyter", "uninstall", "--all", "--prefix", pfx, env=env)
    assert r.returncode == 0 and "removed kernelspec 'sp-c'" in r.stdout, r.stdout + r.stderr
    assert not (pfx / "share/jupyter/kernels/sp-c").exists() and (datadir / "kernels/sp-a").exists()
    # --all without: the user's dir and $JUPYTER_PATH; foreign kernelspecs stay
    assert run_cli("jupyter", "install", "--name", "sp-c", "--prefix", pfx, env=env).returncode == 0
    r = run_cli("jupyter", "uninstall", "--all", env=dict(env, JUPYTER_PATH=pfx / "share/jupyter"))
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(datadir / "kernels")) == ["foreign"]
    assert not (pfx / "share/jupyter/kernels/sp-c").exists()
    r = run_cli("jupyter", "uninstall", "--all", env=env)
    assert r.returncode == 0 and "no safepickle kernelspec found" in r.stdout


def test_doctor_flags_a_kernelspec_without_the_check(datadir):
    """A kernelspec written before kernels checked themselves (argv: -m ipykernel_launcher)
    runs unprotected once its library is gone: doctor says so."""
    env = {"JUPYTER_DATA_DIR": datadir, "HOME": datadir.parent, "XDG_DATA_HOME": datadir.parent / "xdg"}
    assert run_cli("jupyter", "install", "--name", KERNEL, env=env).returncode == 0
    r = run_cli("doctor", env=env)
    assert r.returncode == 0 and "protection check" not in r.stdout, r.stdout
    kj = datadir / "kernels" / KERNEL / "kernel.json"
    spec = json.loads(kj.read_text())
    spec["argv"] = ["/usr/bin/python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kj.write_text(json.dumps(spec))
    r = run_cli("doctor", env=env)
    assert r.returncode == 1, r.stdout
    assert "PROBLEM: kernelspec %s starts without safepickle's protection check" % KERNEL in r.stdout, r.stdout


def test_install_refuses_a_library_ld_so_cannot_load(tmp_path, datadir):
    """No kernelspec is written for a library that would be "ignored" by ld.so."""
    import shutil
    inst = tmp_path / "inst"
    inst.mkdir()
    shutil.copy(os.path.join(os.path.dirname(LIB), "safepickle"), inst)
    shutil.copy(LIB, inst)
    with open(inst / "libsafepickle.so", "r+b") as f:
        f.truncate(512)
    r = subprocess.run([str(inst / "safepickle"), "jupyter", "install", "--name", "sp-x"],
                       env=dict(os.environ, JUPYTER_DATA_DIR=str(datadir)), capture_output=True, text=True)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "would not be protected: ld.so did not load it into a new process" in r.stderr, r.stderr
    assert not (datadir / "kernels" / "sp-x").exists()
