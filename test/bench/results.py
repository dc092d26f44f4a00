"""results.py - the one writer of test/bench/results.md, the one file of measured figures
the READMEs link to. Each script owns one section, between <!-- bench:NAME --> and
<!-- /bench:NAME -->, and rewrites only that one; every other section stays as it is.

    write_section(name, body, stamp=False, path=RESULTS)  body becomes section NAME
    read_section(name, path=RESULTS) -> str or None       a section's body (to merge rows)
    lib_digest(path) -> str                                how a section names the library it measured

From a shell (results.sh): `python3 results.py NAME [--stamp] < body.md`."""
import datetime
import hashlib
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results.md")
HEAD = ("# Measured figures\n\nWritten by the scripts in test/bench/ (`make bench`); each script owns one "
        "section and rewrites only that one. Ratios are side by side in one run.\n")


def _pat(name):
    return re.compile(r"<!-- bench:%s -->\n?(.*?)<!-- /bench:%s -->" % (re.escape(name), re.escape(name)), re.S)


def read_section(name, path=RESULTS):
    if not os.path.exists(path):
        return None
    m = _pat(name).search(open(path).read())
    return m.group(1) if m else None


def lib_digest(path):
    """The first 16 hex digits of the file's SHA-256: the library a figure is for."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def write_section(name, body, stamp=False, path=RESULTS):
    body = body.strip("\n")
    if stamp:
        body += "\n\n_measured %s on %s (%d cores)_" % (
            datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC"), os.uname().nodename, os.cpu_count() or 0)
    sec = "<!-- bench:%s -->\n%s\n<!-- /bench:%s -->" % (name, body, name)
    old = open(path).read() if os.path.exists(path) else HEAD
    pat = _pat(name)
    new = pat.sub(lambda m: sec, old) if pat.search(old) else old.rstrip("\n") + "\n\n" + sec + "\n"
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(new)
    os.replace(tmp, path)


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        sys.exit("usage: results.py NAME [--stamp] < body")
    write_section(sys.argv[1], sys.stdin.read(), stamp="--stamp" in sys.argv[2:])
