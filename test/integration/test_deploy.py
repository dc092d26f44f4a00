"""test_deploy.py - the container recipe (test/container/Dockerfile) checked outside Docker.

The Dockerfile is parsed (continuations, stages, ARG/ENV/COPY/RUN/USER/WORKDIR/CMD) and
its steps are executed in a temporary root: the image's absolute paths (/etc/safepickle,
/usr/lib/safepickle, /app, ...) are mapped into it, the build stage's `make install`
runs with DESTDIR, the runtime steps run under the ENV the image sets, apt-get steps are
checked against the installed Debian packages, and the image's CMD then serves a benign
model and refuses a malicious one as the image's non-root user."""
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
import time

import pytest

from conftest import BUILD, REPO, clean_env, run_py

DOCKERFILE = os.path.join(REPO, "test", "container", "Dockerfile")
# Absolute image paths the recipe creates; each is mapped into the temp root.
IMAGE_DIRS = ("etc/safepickle", "usr/lib/safepickle", "usr/share/safepickle", "usr/bin/safepickle",
              "usr/lib/pkgconfig", "usr/share/man", "var/log/safepickle", "app", "models")
SKIPPED = ("useradd", "groupadd")  # would change the shared host; USER is emulated by uid


def parse(path):
    """[(stage, KEYWORD, args)] with comments dropped and continuations joined."""
    steps, cur, stage = [], "", -1
    for raw in open(path).read().splitlines():
        s = raw.strip()
        if not s or s.startswith("#"):
            continue
        cur += (" " if cur else "") + s
        if cur.endswith("\\"):
            cur = cur[:-1].rstrip()
            continue
        kw, _, args = cur.partition(" ")
        kw = kw.upper()
        if kw == "FROM":
            stage += 1
        steps.append((stage, kw, args.strip()))
        cur = ""
    return steps


class Image:
    def __init__(self, top):
        self.top = top
        self.root = os.path.join(top, "root")
        self.stage = os.path.join(top, "stage")
        os.makedirs(self.root)
        self.env, self.args, self.uid, self.cwd, self.cmd, self.skipped = {}, {}, 0, self.root, None, []
        self.health = None
        self.apt_pkgs = []  # per apt-get step, in order

    def rw(self, s):
        """Map the image's absolute paths into the temp root (the build context to the repo)."""
        s = re.sub(r"(?<![\w./-])/src\b", REPO, s)
        s = re.sub(r"(?<![\w./-])/stage\b", self.stage, s)
        alt = "|".join(re.escape(d) for d in IMAGE_DIRS)
        return re.sub(r"(?<![\w./-])(/(?:%s))(?![\w-])" % alt, lambda m: self.root + m.group(1), s)

    def run_env(self):
        e = clean_env(**self.args)
        e.update(self.env)
        e["HOME"] = self.top  # the image's home, not the developer's (doctor lists kernelspecs)
        e.pop("JUPYTER_DATA_DIR", None)
        e.pop("XDG_DATA_HOME", None)
        e["PATH"] = os.path.join(self.root, "usr/bin") + ":" + e.get("PATH", "/usr/bin:/bin")
        for k in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL"):
            e.pop(k, None)
        return e

    def sh(self, cmd):
        r = subprocess.run(["/bin/bash", "-ec", cmd], cwd=self.cwd, env=self.run_env(),
                           capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, "RUN %s\n%s%s" % (cmd, r.stdout, r.stderr)
        return r

    def apt(self, cmd):
        m = re.search(r"apt-get install ([^&;|]*)", cmd)
        assert m, cmd
        pkgs = [p for p in m.group(1).split() if not p.startswith("-")]
        self.apt_pkgs.append(pkgs)
        for p in pkgs:
            r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True)
            assert r.stdout.endswith("installed"), "the recipe installs %s, unknown here" % p

    def step(self, stage, kw, args, final):
        if kw == "RUN":
            if "apt-get" in args:
                return self.apt(args)
            if args.split()[0] in SKIPPED:
                self.skipped.append(args)
                return
            if not final:  # the build stage: build into this test's build dir
                args = args.replace("make -C /src", "make -C /src BUILD=" + shlex.quote(BUILD))
            return self.sh(self.rw(args))
        if kw == "COPY":
            parts = args.split()
            src = [p for p in parts if not p.startswith("--")]
            if "--from=build" in parts:
                assert src == ["/stage/", "/"], args
                shutil.copytree(self.stage, self.root, dirs_exist_ok=True, symlinks=True)
            elif src[0] == ".":
                assert src[1] == "/src"  # the build context is the repo itself
            else:
                dst = self.rw(src[1])
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                shutil.copy(os.path.join(REPO, src[0]), dst)
            return
        if kw == "ARG":
            k, _, v = args.partition("=")
            self.args[k] = v
        elif kw == "ENV":
            for kv in shlex.split(args):
                k, _, v = kv.partition("=")
                self.env[k] = self.rw(v)
        elif kw == "USER":
            self.uid = int(args)
        elif kw == "WORKDIR":
            self.cwd = self.rw(args)
        elif kw == "CMD":
            self.cmd = [self.rw(a) for a in json.loads(args)]
        elif kw == "HEALTHCHECK":
            self.health = json.loads(args[args.index("CMD") + 3:])
        elif kw not in ("FROM", "VOLUME", "EXPOSE", "LABEL"):
            raise AssertionError("test_deploy.py does not know %s: teach it" % kw)

    def drop(self):
        uid = self.uid

        def fn():
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        return fn if uid else None

    def serve(self, model, preload=True):
        env = self.run_env()
        env["MODEL_PATH"] = model
        if not preload:
            env.pop("LD_PRELOAD", None)
        return subprocess.run(self.cmd, env=env, cwd=self.cwd, capture_output=True, text=True,
                              timeout=300, preexec_fn=self.drop())

    def healthcheck(self, **override):
        """Run HEALTHCHECK against a long-running process started like the image's PID 1
        (the image's environment with `override`, e.g. docker run -e LD_PRELOAD=)."""
        env = self.run_env()
        env.update(override)
        server = subprocess.Popen(["/usr/bin/python3", "-c", "import sys; sys.stdin.read()"], env=env,
                                  stdin=subprocess.PIPE, preexec_fn=self.drop())
        try:
            time.sleep(0.5)
            cmd = [str(server.pid) if a == "1" else a for a in self.health]
            return subprocess.run(cmd, env=self.run_env(), cwd=self.cwd, capture_output=True, text=True,
                                  timeout=120, preexec_fn=self.drop())
        finally:
            server.stdin.close()
            server.wait(timeout=30)


def option_b():
    """The recipe's Option B, a commented RUN line writing /etc/ld.so.preload."""
    m = re.search(r"^#\s+RUN (echo \S+ > /etc/ld\.so\.preload)$", open(DOCKERFILE).read(), re.M)
    assert m, "the recipe lost its Option B line"
    return m.group(1)


def ns_available(top):
    ov = os.path.join(top, "probe")
    os.makedirs(os.path.join(ov, "upper"))
    os.makedirs(os.path.join(ov, "work"))
    try:
        r = subprocess.run(["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", NS_SCRIPT % "true",
                            "sh", ov, "true"], capture_output=True, timeout=60)
    except OSError:
        return False
    return r.returncode == 0


# Runs its arguments with an /etc that only this process tree sees: an overlay on the host's
# /etc in a private mount namespace, where the recipe's Option B line is executed.
NS_SCRIPT = """set -e
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$1/upper,workdir=$1/work" /etc
%s
shift
exec "$@"
"""


def build_image(audit_log=None):
    top = tempfile.mkdtemp(prefix="sp-deploy-")
    os.chmod(top, 0o755)  # the image's user must reach the root
    img = Image(top)
    steps = parse(DOCKERFILE)
    last = max(s for s, _, _ in steps)
    for stage, kw, args in steps:
        if kw == "ARG" and audit_log and args.startswith("SAFEPICKLE_AUDIT_LOG="):
            args = "SAFEPICKLE_AUDIT_LOG=" + img.rw(audit_log)  # --build-arg
        img.step(stage, kw, args, stage == last)
    return img


@pytest.fixture(scope="module")
def models():
    d = tempfile.mkdtemp(prefix="sp-deploy-models-")
    os.chmod(d, 0o777)  # the control run's payload (as the image user) writes the marker here
    code = r"""
import os, sys, torch
sys.path.insert(0, %(here)r)
from spgen import Reduce, touch_cmd
torch.save({"w": torch.ones(3), "b": torch.zeros(1)}, %(d)r + "/model.pt")
torch.save({"w": torch.ones(3), "x": Reduce(os.system, (touch_cmd(%(d)r + "/PAYLOAD_RAN"),))}, %(d)r + "/bad.pt")
""" % {"here": os.path.dirname(os.path.abspath(__file__)), "d": d}
    r = run_py(code, preload=False)
    assert r.returncode == 0, r.stderr
    for f in os.listdir(d):
        os.chmod(os.path.join(d, f), 0o644)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_runtime_packages_cover_the_binaries():
    """The runtime stage installs the Debian package of every shared library the installed
    CLI and preload need (ldd + dpkg -S), and libunwind8, which the preload dlopens."""
    img = build_image()
    try:
        runtime = set(img.apt_pkgs[-1])
        need = set()
        for b in ("usr/bin/safepickle", "usr/lib/safepickle/libsafepickle.so"):
            out = subprocess.run(["ldd", os.path.join(img.root, b)], capture_output=True, text=True).stdout
            for lib in re.findall(r"=> (/\S+)", out):
                r = subprocess.run(["dpkg", "-S", os.path.realpath(lib)], capture_output=True, text=True)
                if r.returncode != 0:  # merged /usr: dpkg knows the /lib path
                    r = subprocess.run(["dpkg", "-S", lib.replace("/usr/lib/", "/lib/", 1)],
                                       capture_output=True, text=True)
                assert r.returncode == 0, lib
                need.add(r.stdout.split(":")[0])
        need.discard("libc6")  # in every base image
        assert need and need <= runtime, sorted(need - runtime)
        assert "libunwind8" in runtime
    finally:
        shutil.rmtree(img.top, ignore_errors=True)


def test_parse_recipe():
    steps = parse(DOCKERFILE)
    kws = [kw for _, kw, _ in steps]
    assert kws.count("FROM") == 2
    final = [(kw, a) for s, kw, a in steps if s == 1]
    env = " ".join(a for kw, a in final if kw == "ENV")
    assert "LD_PRELOAD=/usr/lib/safepickle/libsafepickle.so" in env
    assert "SAFEPICKLE_POLICY=/etc/safepickle/policy.json" in env
    assert any(kw == "USER" and a != "0" and a != "root" for kw, a in final)


@pytest.mark.parametrize("audit", ["stderr", "/var/log/safepickle/audit.jsonl"])
def test_recipe_steps_and_image_behaviour(models, audit):
    img = build_image(audit if audit != "stderr" else None)
    try:
        assert img.skipped == ["useradd --system --uid 10001 --no-create-home app"]
        pol = os.path.join(img.root, "etc/safepickle/policy.json")
        # read-only policy location
        assert stat.S_IMODE(os.stat(pol).st_mode) == 0o444
        assert stat.S_IMODE(os.stat(os.path.dirname(pol)).st_mode) == 0o555
        assert json.load(open(pol))["audit_log"] == (audit if audit == "stderr" else img.rw(audit))
        assert img.env["LD_PRELOAD"] == os.path.join(img.root, "usr/lib/safepickle/libsafepickle.so")
        # the image user cannot change the policy
        probe = subprocess.run(
            ["/usr/bin/python3", "-c", "import sys\ntry:\n open(sys.argv[1], 'a')\nexcept PermissionError:"
             "\n print('denied')", pol], capture_output=True, text=True,
            preexec_fn=lambda: (os.setgroups([]), os.setgid(img.uid), os.setuid(img.uid)))
        assert probe.stdout.strip() == "denied"

        ok = img.serve(os.path.join(models, "model.pt"))
        assert ok.returncode == 0 and ok.stdout.strip() == "serve: loaded model.pt: b, w", ok.stderr

        marker = os.path.join(models, "PAYLOAD_RAN")
        bad = img.serve(os.path.join(models, "bad.pt"))
        assert bad.returncode == 3, bad.stdout + bad.stderr
        assert not os.path.exists(marker)
        assert "safepickle:" in bad.stderr and "bad.pt" in bad.stderr
        if audit == "stderr":
            lines = bad.stderr.splitlines()
        else:
            logf = img.rw(audit)
            assert os.path.exists(logf), "no audit file written to the mounted path"
            lines = open(logf).read().splitlines()
        recs = [json.loads(ln) for ln in lines if ln.startswith("{")]
        assert any("bad.pt" in json.dumps(rec) and "malicious" in json.dumps(rec) for rec in recs), lines

        # HEALTHCHECK: healthy while the server maps the preload, unhealthy when it was started
        # with LD_PRELOAD emptied or with SAFEPICKLE_MODE=off
        h = img.healthcheck()
        assert h.returncode == 0 and "status: ok" in h.stdout, h.stdout + h.stderr
        h = img.healthcheck(LD_PRELOAD="")
        assert h.returncode == 1 and "NOT mapped" in h.stdout, h.stdout
        h = img.healthcheck(SAFEPICKLE_MODE="off")
        assert h.returncode == 1 and "SAFEPICKLE_MODE=off: nothing is blocked" in h.stdout, h.stdout

        # control: the same image command without the preload runs the payload
        img.serve(os.path.join(models, "bad.pt"), preload=False)
        assert os.path.exists(marker)
        os.unlink(marker)
    finally:
        shutil.rmtree(img.top, ignore_errors=True)


def test_recipe_option_b_ld_so_preload(models):
    """Option B: no LD_PRELOAD anywhere, the library comes from /etc/ld.so.preload."""
    img = build_image()
    try:
        if not ns_available(img.top):
            pytest.skip("no private mount namespace with an overlay /etc here (needs CAP_SYS_ADMIN)")
        ov = os.path.join(img.top, "etc-overlay")
        os.makedirs(os.path.join(ov, "upper"))
        os.makedirs(os.path.join(ov, "work"))
        env = img.run_env()
        del env["LD_PRELOAD"]
        script = NS_SCRIPT % img.rw(option_b())
        drop = ["setpriv", "--reuid", str(img.uid), "--regid", str(img.uid), "--clear-groups"]

        def serve(model):
            e = dict(env, MODEL_PATH=model)
            return subprocess.run(["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script,
                                   "sh", ov, *drop, *img.cmd], env=e, cwd=img.cwd, capture_output=True,
                                  text=True, timeout=300)
        ok = serve(os.path.join(models, "model.pt"))
        assert ok.returncode == 0 and ok.stdout.strip() == "serve: loaded model.pt: b, w", ok.stderr
        bad = serve(os.path.join(models, "bad.pt"))
        assert bad.returncode == 3 and "safepickle: blocked" in bad.stderr, bad.stdout + bad.stderr
        assert not os.path.exists(os.path.join(models, "PAYLOAD_RAN"))
        assert not os.path.exists("/etc/ld.so.preload")  # the host's /etc was never touched
    finally:
        shutil.rmtree(img.top, ignore_errors=True)
