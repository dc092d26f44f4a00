"""test_readme.py - every command shown in the README is exercised.

The README's shell code blocks (indented blocks, and fences tagged sh/bash/shell/console or
untagged) are split into commands; a line whose first word is no program (not on PATH, not a
path, not one of the project's own tools) is output or data, not a command. Each command's signature (program, subcommands, option
names, environment variables it sets) must appear together in one place that runs it: a
test function in test/integration, a shell line inside a test, test/demo.sh or .ci/run.
The quick start is also run as a new user would: `make demo`, then `safepickle run`."""
import ast
import os
import re
import shlex
import shutil
import subprocess

from conftest import BUILD, CLI, REPO, clean_env, run_py

SHELL_LANGS = {"", "sh", "bash", "shell", "console"}
TWO_LEVEL = {"jupyter", "policy"}          # safepickle commands with a sub-subcommand
CLI_CALLERS = {"run_cli", "run_installed"}  # test helpers that run the safepickle CLI
MAKE_CALLERS = {"make"}
# Programs the README may show that are not installed on a test machine.
KNOWN = {"safepickle", "make", "docker", "python", "python3", "jupyter", "pkg-config"}


def readme_blocks(text):
    """Yield the shell code blocks of a markdown text as lists of lines."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^\s*```\s*([\w-]*)", lines[i])
        if m:
            lang, body = m.group(1).lower(), []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                body.append(lines[i])
                i += 1
            if lang in SHELL_LANGS:
                yield body
        elif lines[i].startswith("    ") and (i == 0 or not lines[i - 1].strip()):
            body = []
            while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
                body.append(lines[i][4:])
                i += 1
            yield body
            continue
        i += 1


def split_commands(line):
    """shlex words of each command on a line (split at && || ; |), comments dropped."""
    line = line.strip()
    if line.startswith("$ "):
        line = line[2:]
    try:
        lex = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lex.whitespace_split = True
        lex.commenters = "#"
        words = list(lex)
    except ValueError:
        return []
    cmds, cur = [], []
    for w in words:
        if w and set(w) <= set(";&|"):
            if cur:
                cmds.append(cur)
            cur = []
        else:
            cur.append(w)
    if cur:
        cmds.append(cur)
    return cmds


def signature(words):
    """(description, frozenset of tokens that must appear together where it is run)."""
    env = []
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        env.append(words[0].split("=", 1)[0])
        words = words[1:]
    if not words:
        return None
    prog = os.path.basename(words[0])
    if not (prog in KNOWN or "/" in words[0] or shutil.which(prog)):
        return None  # not a command: output or data shown in an unfenced block
    rest = words[1:]
    opts = {w.split("=", 1)[0] for w in rest if w.startswith("-") and w != "--"}
    if "--" in rest:  # `safepickle run -- CMD ...`: CMD's own words do not count
        cut = rest.index("--")
        opts = {w.split("=", 1)[0] for w in rest[:cut] if w.startswith("-")}
        rest = rest[:cut]
    toks = set(env)
    if prog == "safepickle":
        pos = [w for w in rest if not w.startswith("-")]
        sub = pos[:2] if pos and pos[0] in TWO_LEVEL else pos[:1]
        toks |= {"safepickle", *sub} | opts
    elif prog == "make":
        toks |= {"make"} | {w for w in rest if not w.startswith("-") and "=" not in w}
        toks |= {w.split("=", 1)[0] for w in rest if "=" in w}
    elif prog in ("python", "python3") and env:
        pass  # `LD_PRELOAD=... python x.py`: the environment is what is shown
    elif prog == "docker":
        toks |= {"docker-recipe"}
    else:
        toks |= {prog} | opts
    return " ".join(words), frozenset(toks)


def string_tokens(s):
    out = {s}
    if s.startswith("-"):
        out.add(s.split("=", 1)[0])
    if os.path.basename(s) == "safepickle":
        out.add("safepickle")
    return out


def shell_sites(text):
    sites = []
    for line in text.splitlines():
        for words in split_commands(line):
            sig = signature(words)
            if sig:
                sites.append(set(sig[1]))
    return sites


def python_sites(path):
    """One site per function (all its strings, keyword names and called helpers), plus
    shell sites for every multi-line string (embedded scripts)."""
    tree = ast.parse(open(path).read(), path)
    sites = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "\n" in node.value:
            sites += shell_sites(node.value)
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        toks = set()
        for sub in ast.walk(node):
            if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                toks |= string_tokens(sub.value)
                for line in sub.value.splitlines():
                    for words in split_commands(line):
                        sig = signature(words)
                        if sig:
                            toks |= sig[1]
            elif isinstance(sub, ast.keyword) and sub.arg:
                toks.add(sub.arg)
            elif isinstance(sub, ast.Name):
                if sub.id in CLI_CALLERS or sub.id == "CLI":
                    toks.add("safepickle")
                if sub.id in MAKE_CALLERS:
                    toks.add("make")
                if sub.id == "DOCKERFILE":
                    toks.add("docker-recipe")
        sites.append(toks)
    return sites


def all_sites():
    sites = []
    tdir = os.path.join(REPO, "test", "integration")
    for f in sorted(os.listdir(tdir)):
        if f.endswith(".py"):
            sites += python_sites(os.path.join(tdir, f))
    for f in ("test/demo.sh", ".ci/run"):
        p = os.path.join(REPO, f)
        if os.path.exists(p):
            sites += shell_sites(open(p).read())
    return sites


def readme_commands():
    cmds = []
    for block in readme_blocks(open(os.path.join(REPO, "README.md")).read()):
        for line in block:
            for words in split_commands(line):
                sig = signature(words)
                if sig:
                    cmds.append(sig)
    return cmds


def test_signature_extraction():
    assert signature(split_commands("safepickle jupyter install --policy strict  # x")[0])[1] == \
        {"safepickle", "jupyter", "install", "--policy"}
    assert signature(split_commands("make install DESTDIR=/tmp/stage PREFIX=/usr")[0])[1] == \
        {"make", "install", "DESTDIR", "PREFIX"}
    assert signature(split_commands("safepickle run --audit -- python3 -m x --y")[0])[1] == \
        {"safepickle", "run", "--audit"}
    assert signature(split_commands("LD_PRELOAD=libsafepickle.so python train.py")[0])[1] == {"LD_PRELOAD"}
    assert [c[0] for c in split_commands("a -x && b; c | d")] == ["a", "b", "c", "d"]
    assert signature(["{files:", "[", "{"]) is None  # data in an unfenced block is not a command
    assert signature(["sha256sum", "-c", "x"])[1] == {"sha256sum", "-c"}


def test_every_readme_command_is_exercised():
    cmds = readme_commands()
    assert len(cmds) >= 5, "the README shows almost no commands: is the block parser broken?"
    sites = all_sites()
    missing = [text for text, toks in cmds if not any(toks <= s for s in sites)]
    assert not missing, "README commands no test or demo runs:\n  " + "\n  ".join(missing)


def test_quick_start_as_a_new_user(tmp_path, marker):
    """README quick start: `make demo`, then `safepickle run -- python3 your_script.py`."""
    env = clean_env()
    for k in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL"):
        env.pop(k, None)
    r = subprocess.run(["make", "--no-print-directory", "-C", REPO, "BUILD=" + BUILD, "demo"],
                       env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    code = r"""
import os, pickle, sys
sys.path.insert(0, %(here)r)
from spgen import Reduce, touch_cmd
pickle.dump(Reduce(os.system, (touch_cmd(%(marker)r),)), open("bad.pkl", "wb"))
pickle.dump([1, 2, 3], open("ok.pkl", "wb"))
""" % {"here": os.path.dirname(os.path.abspath(__file__)), "marker": str(marker)}
    assert run_py(code, preload=False, cwd=tmp_path).returncode == 0
    (tmp_path / "your_script.py").write_text(
        "import pickle\nprint(pickle.load(open('ok.pkl', 'rb')))\n"
        "try:\n    pickle.load(open('bad.pkl', 'rb'))\n    print('loaded')\n"
        "except PermissionError as e:\n    print('refused')\n")
    r = subprocess.run([CLI, "run", "--", "/usr/bin/python3", "your_script.py"], cwd=tmp_path,
                       env=clean_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["[1,", "2,", "3]", "refused"]
    assert not marker.exists()
    assert "safepickle:" in r.stderr and "bad.pkl" in r.stderr
    # then the Jupyter section's first command (into a temporary Jupyter data dir)
    r = subprocess.run([CLI, "jupyter", "install"], env=clean_env(JUPYTER_DATA_DIR=tmp_path / "jd"),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "jd/kernels/python3-safepickle/kernel.json").exists()
