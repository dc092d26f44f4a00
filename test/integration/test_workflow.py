"""test_workflow.py - the everyday workflow: `safepickle scan` on a Hugging-Face-style model
folder (pickle and non-pickle files side by side, a large safetensors skipped after its
first bytes, progress on a terminal, a final summary) and `safepickle trust FILE`
(a reviewed file's digest added to a policy, with its effect under the preload)."""
import hashlib
import json
import os
import pickle
import pty
import re
import shutil
import subprocess

import pytest

from conftest import CLI, LIB, PYTHON, REPO, clean_env, run_cli, run_py
from spgen import system_pickle

HERE = os.path.dirname(os.path.abspath(__file__))
BIG = 256 << 20  # sparse safetensors payload size: bytes a scan must NOT read


def build(code, **kw):
    r = run_py("import os, sys\nsys.path.insert(0, %r)\nfrom spgen import Reduce, touch_cmd\n" % HERE
               + code % kw, preload=False)
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """A model folder as `huggingface-cli download` leaves it, plus one planted payload."""
    d = tmp_path_factory.mktemp("hf") / "my-model"
    (d / "checkpoint-100").mkdir(parents=True)
    marker = d.parent / "PAYLOAD_RAN"
    build(r"""
import argparse, json, struct, joblib, torch
from sklearn.preprocessing import StandardScaler
d = %(d)r
torch.save({"embed.weight": torch.randn(16, 8), "head.bias": torch.zeros(8)}, d + "/pytorch_model.bin")
torch.save(argparse.Namespace(lr=3e-4, epochs=2, output_dir="out"), d + "/training_args.bin")
torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 3, "hyper_parameters": {"lr": 0.1}},
           d + "/last.ckpt")
torch.save({"step": 100, "rng": torch.get_rng_state()}, d + "/checkpoint-100/rng_state.pth")
torch.save({"state": {}, "param_groups": [{"lr": 0.1}], "hook": Reduce(os.system, (touch_cmd(%(m)r),))},
           d + "/checkpoint-100/optimizer.pt")
joblib.dump(StandardScaler().fit([[0.0], [2.0]]), d + "/scaler.joblib")
json.dump({"architectures": ["Tiny"], "hidden_size": 8}, open(d + "/config.json", "w"))
json.dump({"version": "1.0", "model": {"vocab": {"a": 0}}}, open(d + "/tokenizer.json", "w"))
open(d + "/README.md", "w").write("# tiny model\n")
open(d + "/.gitattributes", "w").write("*.bin filter=lfs\n")
hdr = json.dumps({"__metadata__": {"format": "pt"},
                  "w": {"dtype": "F32", "shape": [%(n)d], "data_offsets": [0, %(b)d]}}).encode()
hdr += b" " * (0x160 - len(hdr))  # padded with spaces to 8-byte alignment, as the writer does
with open(d + "/model.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(hdr)) + hdr)
    f.truncate(8 + len(hdr) + %(b)d)
""", d=str(d), m=str(marker), n=BIG // 4, b=BIG)
    return d, marker


def scan_io(args):
    """Run `safepickle scan ARGS` from a shell and return (rc, stdout, stderr, bytes the
    scan read): /proc/PID/io of the shell includes its reaped child's rchar."""
    sh = 'before=$(awk \'/^rchar/{print $2}\' /proc/$$/io); "$@" >"$OUT" 2>"$ERR"; rc=$?; ' \
         'after=$(awk \'/^rchar/{print $2}\' /proc/$$/io); echo "$rc $((after - before))"'
    tmp = os.path.join(os.path.dirname(str(args[-1])), "")
    out, err = os.path.join(tmp, "scan.out"), os.path.join(tmp, "scan.err")
    r = subprocess.run(["/bin/bash", "-c", sh, "sh", CLI, "scan", "-v", *map(str, args)], capture_output=True,
                       text=True, env=clean_env(OUT=out, ERR=err), timeout=600)
    rc, nread = map(int, r.stdout.split())
    return rc, open(out).read(), open(err).read(), nread


def parse_scan(out):
    """{file name: (format, verdict, action)} from `safepickle scan -v`'s text output:
    a "PATH: FORMAT, N streams" line opens a file's record, "verdict: V  action: A" closes it."""
    res, cur = {}, None
    for ln in out.splitlines():
        m = re.match(r"^(/\S.*): (\w+), \d+ streams?$", ln)
        if m:
            cur = (os.path.basename(m.group(1)), m.group(2))
            continue
        m = re.match(r"^verdict: (\w+)\s+action: (\w+)", ln)
        if m and cur:
            res[cur[0]] = (cur[1], m.group(1), m.group(2))
            cur = None
    return res


def test_scan_model_folder(hf_folder):
    d, marker = hf_folder
    rc, out, err, nread = scan_io([d])
    assert rc == 1, out + err  # something would be blocked
    files = parse_scan(out)
    assert len(files) == 11, files  # every regular file, in subfolders too
    assert files["optimizer.pt"][1:] == ("malicious", "block"), files
    for benign in ("pytorch_model.bin", "training_args.bin", "last.ckpt", "rng_state.pth", "scaler.joblib"):
        assert files[benign][1:] == ("safe", "allow"), (benign, files[benign])
    # files that bear no pickle are recognised by their bytes and allowed
    for other in ("model.safetensors", "config.json", "tokenizer.json", "README.md", ".gitattributes"):
        assert files[other] == ("none", "safe", "allow"), (other, files[other])
    # and the 256 MiB safetensors is skipped after its first bytes
    pickles = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs
                  if not f.endswith(".safetensors"))
    assert nread < pickles + (8 << 20), "scan read %d bytes of a %d-byte folder" % (nread, pickles + BIG)
    # it ends with a summary that adds up
    assert out.splitlines()[-1] == ("summary: 11 files, 6 pickle-bearing (5 safe, 0 suspicious, 1 malicious, "
                                    "0 unscannable), 5 without pickles, 0 errors; 1 would be blocked, 0 warned")
    rc, out, err, _ = scan_io([d / "checkpoint-100" / "optimizer.pt", d / "missing.bin", d / "config.json"])
    assert rc == 2 and out.splitlines()[-1].startswith("summary: 3 files, 1 pickle-bearing (0 safe, 0 suspicious, "
                                                       "1 malicious, 0 unscannable), 1 without pickles, 1 error;")
    assert not marker.exists()


def test_safetensors_are_never_pickles(tmp_path):
    """Every possible low byte of the header length: a real file's is arbitrary."""
    d = tmp_path / "st"
    d.mkdir()
    build(r"""
import json, struct
for lo in range(256):
    n = 0x100 + lo
    hdr = json.dumps({"__metadata__": {"format": "pt"},
                      "w": {"dtype": "F32", "shape": [1 << 22], "data_offsets": [0, 1 << 24]}}).encode()
    with open(%(d)r + "/%%03d.safetensors" %% lo, "wb") as f:
        f.write(struct.pack("<Q", n) + hdr + b" " * (n - len(hdr)))
        f.truncate(8 + n + (1 << 24))
""", d=str(d))
    r = run_cli("scan", "-v", d)
    files = parse_scan(r.stdout)
    assert len(files) == 256
    wrong = {k: v for k, v in files.items() if v != ("none", "safe", "allow")}
    assert not wrong, "%d of 256 safetensors judged as pickles: %s" % (len(wrong), sorted(wrong.items())[:20])
    assert r.returncode == 0


def test_scan_progress_on_a_terminal(hf_folder):
    d, _ = hf_folder
    master, slave = pty.openpty()
    p = subprocess.Popen([CLI, "scan", str(d)], stdout=subprocess.PIPE, stderr=slave, env=clean_env())
    os.close(slave)
    tty = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        tty += chunk
    p.stdout.read()
    p.wait(timeout=300)
    os.close(master)
    piped = subprocess.run([CLI, "scan", str(d)], capture_output=True, env=clean_env())
    # progress is written only to a terminal: files done of the total, and time left
    assert len(tty) > len(piped.stderr), (tty, piped.stderr)
    total = len(parse_scan(subprocess.run([CLI, "scan", "-v", str(d)], capture_output=True, text=True,
                                          env=clean_env()).stdout))
    assert re.search(rb"\[\d+/%d\] \d+%% ETA \d+m\d\ds" % total, tty), tty[-500:]
    assert b"scanned %d files under " % total in tty


# ------------------------------------------------------------------ trust

@pytest.fixture
def reviewed(tmp_path, marker):
    """A pickle the default policy blocks (it runs a command), and a policy file."""
    f = tmp_path / "reviewed.pkl"
    build('import pickle\npickle.dump(Reduce(os.system, (touch_cmd(%(m)r),)), open(%(f)r, "wb"))',
          m=str(marker), f=str(f))
    pol = tmp_path / "policy.json"
    shutil.copy(os.path.join(REPO, "policies", "default.json"), pol)
    os.chmod(pol, 0o640)
    return f, pol


def load_under(pol, f, **env):
    return subprocess.run([PYTHON, "-c", "import pickle, sys; pickle.load(open(sys.argv[1], 'rb'))", str(f)],
                          env=clean_env(LD_PRELOAD=LIB, SAFEPICKLE_POLICY=pol, **env), capture_output=True,
                          text=True, timeout=120)


def test_trust_adds_digest(reviewed, marker):
    f, pol = reviewed
    r = run_cli("trust", f, "--policy", pol)
    assert r.returncode == 0, r.stderr
    digest = hashlib.sha256(f.read_bytes()).hexdigest()
    assert "malicious" in r.stdout and digest in r.stdout  # the reviewer sees what they accept
    doc = json.loads(pol.read_text())
    # sha256sum's line: the digest, two spaces, the file's name
    assert doc["trusted"]["sha256"].count("%s  %s" % (digest, f.name)) == 1
    assert os.stat(pol).st_mode & 0o777 == 0o640  # mode kept
    assert run_cli("policy", "check", pol).returncode == 0
    r = run_cli("doctor", env={"SAFEPICKLE_POLICY": pol, "HOME": pol.parent})
    assert "trusted digests: 1" in r.stdout
    # idempotent
    r = run_cli("trust", f, "--policy", pol)
    assert r.returncode == 0 and "already trusted" in r.stdout
    assert [e[:64] for e in json.loads(pol.read_text())["trusted"]["sha256"]].count(digest) == 1


def test_trust_takes_effect_in_the_file_layer(reviewed, marker, tmp_path):
    """With the PEP 578 layer off, a trusted file loads (its reviewed payload runs) and a
    one-byte change makes it blocked again: the preload hashes files against trusted.sha256."""
    f, pol = reviewed
    doc = json.loads(pol.read_text())
    doc["layers"]["audit_hook"] = False
    doc["layers"]["runtime_behaviour"] = False
    pol.write_text(json.dumps(doc))
    r = load_under(pol, f)
    assert r.returncode != 0 and not marker.exists(), "precondition: the policy blocks this file"
    assert run_cli("trust", f, "--policy", pol).returncode == 0
    r = load_under(pol, f)
    assert r.returncode == 0, r.stderr
    assert marker.exists()
    marker.unlink()
    f.write_bytes(f.read_bytes() + b"\n")
    r = load_under(pol, f)
    assert r.returncode != 0 and not marker.exists()


def test_trusted_file_loads_under_the_preload(reviewed, marker, tmp_path):
    """Both layers on (the default policy): a trusted file's unpickle is fed from a file the
    policy trusts, so layer 2 lets its reviewed globals and behaviour through, and says so in
    the audit record."""
    f, pol = reviewed
    r = load_under(pol, f)
    assert r.returncode != 0 and not marker.exists(), "precondition: the policy blocks this file"
    assert json.loads(pol.read_text())["layers"]["audit_hook"] is True
    assert run_cli("trust", f, "--policy", pol).returncode == 0
    # the reviewed file now loads under that policy (its payload is what was reviewed)
    log = tmp_path / "audit.jsonl"
    r = load_under(pol, f, SAFEPICKLE_LOG=log)
    assert r.returncode == 0, r.stderr
    assert marker.exists()
    assert "blocked" not in r.stderr
    recs = [json.loads(line) for line in log.read_text().splitlines()]
    assert all(x["action"] == "allow" for x in recs), recs
    file_rec = [x for x in recs if x["layer"] == "file"]
    assert file_rec and all(x.get("trusted") is True for x in file_rec), recs
    # the skipped layer-2 vetoes are on record: the os.system global and the spawn it made
    hook = {x["call"] for x in recs if x["layer"] == "audit_hook" and x.get("trusted") is True}
    assert {"pickle.find_class", "os.system"} <= hook, recs
    marker.unlink()
    # trust is by content: one more byte after STOP and it is blocked again
    f.write_bytes(f.read_bytes() + b"\n")
    r = load_under(pol, f)
    assert r.returncode != 0 and not marker.exists()


LEAK_PROBE = r"""
import json, os, pickle, sys, threading
trusted, evil_file, m_evil = sys.argv[1:4]
out = {}

class R:
    def __init__(self, tag): self.tag = tag
    def __reduce__(self): return (os.system, ("touch '%s.%s'" % (m_evil, self.tag),))

def refused(fn):
    try:
        fn()
    except PermissionError as e:
        return "refused: %s" % e
    return "loaded"

# 1. the trusted file loads (its reviewed payload runs)
pickle.load(open(trusted, "rb"))
out["trusted"] = "loaded"
# 2. an untrusted in-memory pickle right after it, same thread
out["loads_after"] = refused(lambda: pickle.loads(pickle.dumps(R("a"))))
# 3. same, while the trusted file is still open (its bytes fed the previous load only)
with open(trusted, "rb") as fh:
    pickle.load(fh)
    out["loads_in_with"] = refused(lambda: pickle.loads(pickle.dumps(R("b"))))
# 4. trusted bytes read (file kept open) on this thread, untrusted load on another thread
fh = open(trusted, "rb")
fh.read()
res = {}
t = threading.Thread(target=lambda: res.update(v=refused(lambda: pickle.loads(pickle.dumps(R("c"))))))
t.start(); t.join()
out["other_thread"] = res["v"]
fh.close()
# 5. trusted bytes read, file closed, then an untrusted in-memory load
with open(trusted, "rb") as fh2:
    data = fh2.read()
out["loads_after_read"] = refused(lambda: pickle.loads(pickle.dumps(R("d"))))
# 6. a different, untrusted malicious file
out["evil_file"] = refused(lambda: pickle.load(open(evil_file, "rb")))
# 7. and the trusted file still loads a second time in the same process
out["trusted_again"] = refused(lambda: pickle.load(open(trusted, "rb")))
print(json.dumps(out))
"""


def test_trust_does_not_leak(reviewed, marker, tmp_path):
    """Trust covers the unpickle its trusted file feeds, on that thread, and nothing else."""
    f, pol = reviewed
    assert run_cli("trust", f, "--policy", pol).returncode == 0
    evil = tmp_path / "evil.pkl"
    m_evil = tmp_path / "EVIL_RAN"
    build('import pickle\npickle.dump(Reduce(os.system, (touch_cmd(%(m)r),)), open(%(f)r, "wb"))',
          m=str(m_evil) + ".file", f=str(evil))
    r = subprocess.run([PYTHON, "-c", LEAK_PROBE, str(f), str(evil), str(m_evil)],
                       env=clean_env(LD_PRELOAD=LIB, SAFEPICKLE_POLICY=pol), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["trusted"] == "loaded" and out["trusted_again"] == "loaded", out
    assert marker.exists()
    for k in ("loads_after", "loads_in_with", "other_thread", "loads_after_read", "evil_file"):
        assert out[k].startswith("refused"), (k, out)
    assert not list(tmp_path.glob("EVIL_RAN*")), list(tmp_path.glob("EVIL_RAN*"))
    assert "os.system" in r.stderr  # the refusals were explained



BIND_PROBE = r"""
import json, os, pickle, subprocess, sys
trusted, m = sys.argv[1:3]

class S:
    def __reduce__(self): return (subprocess.call, (["touch", m],))

fh = open(trusted, "rb")
fh.read()          # the trusted file's bytes are read and it stays open: trust is pending
try:
    pickle.loads(pickle.dumps(S()))   # other bytes, a global the trusted file does not import
    out = "loaded"
except PermissionError as e:
    out = "refused: %s" % e
fh.close()
print(json.dumps({"other_global": out}))
"""


def test_trust_is_bound_to_the_files_globals(reviewed, marker, tmp_path):
    """Trust follows content: while a trusted file is open, an in-memory load of other bytes
    on the same thread takes the pending trust, but resolving a global the trusted file's own
    pickle does not import (subprocess.call; the file imports os.system) ends it, and the
    load is judged as any other: refused, nothing run."""
    f, pol = reviewed
    assert run_cli("trust", f, "--policy", pol).returncode == 0
    m2 = tmp_path / "OTHER_RAN"
    r = subprocess.run([PYTHON, "-c", BIND_PROBE, str(f), str(m2)],
                       env=clean_env(LD_PRELOAD=LIB, SAFEPICKLE_POLICY=pol), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["other_global"].startswith("refused"), out
    assert "subprocess.call" in out["other_global"] or "subprocess" in r.stderr
    assert not m2.exists()

def test_trust_errors_and_creation(reviewed, tmp_path):
    f, pol = reviewed
    r = run_cli("trust", f)  # no policy named, none in the environment
    assert r.returncode == 2 and "--policy" in r.stderr
    r = run_cli("trust", tmp_path / "missing.pkl", "--policy", pol)
    assert r.returncode == 2
    broken = tmp_path / "broken.json"
    broken.write_text('{"mode": "enforce", ')
    r = run_cli("trust", f, "--policy", broken)
    assert r.returncode == 2 and "byte" in r.stderr
    assert broken.read_text() == '{"mode": "enforce", '  # left untouched
    fresh = tmp_path / "new-policy.json"
    r = run_cli("trust", f, env={"SAFEPICKLE_POLICY": fresh})
    assert r.returncode == 0 and "created" in r.stdout, r.stderr
    assert len(json.loads(fresh.read_text())["trusted"]["sha256"]) == 1
    assert run_cli("policy", "check", fresh).returncode == 0


def test_scan_text_findings_first_quiet_and_verbose(tmp_path, marker):
    """Default text: one block per file that is not plainly safe, then the summary;
    -q: the summary only; -v: every file with its IR (the old listing)."""
    d = tmp_path / "three"
    d.mkdir()
    (d / "a_good.pkl").write_bytes(pickle.dumps({"w": list(range(100))}, protocol=4))
    (d / "b_bad.pkl").write_bytes(system_pickle(marker))
    (d / "c_notes.txt").write_text("not a pickle\n" * 50)
    r = run_cli("scan", d)
    lines = r.stdout.splitlines()
    assert r.returncode == 1
    assert lines[0] == "%s: malicious, action block" % (d / "b_bad.pkl"), lines
    assert all(l.startswith("  [") for l in lines[1:-1]) and len(lines) >= 3, lines
    assert lines[-1].startswith("summary: 3 files, 2 pickle-bearing (1 safe, 0 suspicious, 1 malicious")
    assert "a_good" not in r.stdout and "c_notes" not in r.stdout
    q = run_cli("scan", "-q", d)
    assert q.returncode == 1 and q.stdout.splitlines() == [lines[-1]]
    v = run_cli("scan", "-v", d)
    files = parse_scan(v.stdout)
    assert set(files) == {"a_good.pkl", "b_bad.pkl", "c_notes.txt"}, files
    assert not marker.exists()
