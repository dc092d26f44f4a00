#!/usr/bin/env python3
"""installed.py - every file shipped by the installed Debian packages and the Python
installations on the machine: `safepickle scan` must call none malicious or suspicious,
and each must open under the preload (allowed).

    installed.py [--sample N] [--seed S] [--cli build/safepickle] [--preload build/libsafepickle.so]

--sample takes a fixed-seed sample (what `make test` runs); without it every file is used,
and the counts also go to test/bench/results.md (section bench:installed).
Prints the counts (files, pickle-bearing, verdicts, refused opens) and every exception."""
import argparse
import json
import os
import random
import subprocess
import sys
import sysconfig

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(HERE, "..", "bench"))
from results import lib_digest, write_section  # noqa: E402  (the one writer of results.md)


def shipped_files():
    files = set()
    info = "/var/lib/dpkg/info"
    for f in sorted(os.listdir(info)):
        if f.endswith(".list"):
            with open(os.path.join(info, f), errors="replace") as fh:
                for line in fh:
                    p = line.rstrip("\n")
                    if p.startswith(("/proc", "/sys", "/dev")):
                        continue
                    files.add(p)
    for d in {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"], "/usr/lib/python3/dist-packages"}:
        for dp, dn, fn in os.walk(d):
            for x in fn:
                files.add(os.path.join(dp, x))
    return sorted(p for p in files if os.path.isfile(p) and not os.path.islink(p)
                  and os.access(p, os.R_OK))


OPENER = r'''
import json, sys
bad = []
for p in json.load(open(sys.argv[1])):
    try:
        with open(p, "rb") as f:
            f.read(1)
    except PermissionError as e:
        bad.append(p)
    except OSError:
        pass
print(json.dumps(bad))
'''


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sample", type=int, default=0)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--cli", default=os.path.join(ROOT, "build", "safepickle"))
    ap.add_argument("--preload", default=os.path.join(ROOT, "build", "libsafepickle.so"))
    a = ap.parse_args()
    files = shipped_files()
    total = len(files)
    if a.sample and a.sample < total:
        files = sorted(random.Random(a.seed).sample(files, a.sample))
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("SAFEPICKLE_")}
    verdicts, bearing, flagged = {}, 0, []
    for i in range(0, len(files), 500):
        r = subprocess.run([a.cli, "scan", "--format", "json", *files[i:i + 500]], capture_output=True,
                           text=True, env=env)
        try:
            scanned = json.loads(r.stdout)["files"]
        except ValueError:
            print("installed files: scan failed (exit %d): %s" % (r.returncode, r.stderr[-500:]))
            return 1
        for f in scanned:
            bearing += bool(f.get("pickle_bearing"))
            v = f.get("verdict", "error")
            verdicts[v] = verdicts.get(v, 0) + 1
            if v in ("malicious", "suspicious", "unscannable"):
                flagged.append((f["path"], v, [x["rule"] + ": " + x["msg"][:120] for x in f.get("reasons", [])][:2]))
    lst = os.path.join("/tmp", "sp-installed-%d.json" % os.getpid())
    json.dump(files, open(lst, "w"))
    penv = dict(env, LD_PRELOAD=os.path.abspath(a.preload), SAFEPICKLE_LOG="none")
    r = subprocess.run(["/usr/bin/python3", "-c", OPENER, lst], capture_output=True, text=True, env=penv)
    os.unlink(lst)
    refused = json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else ["<opener failed: %s>" % r.stderr[-300:]]
    print("installed files: %d shipped, %d examined%s; %d pickle-bearing; verdicts %s; %d refused opens under the preload"
          % (total, len(files), " (sample, seed %d)" % a.seed if a.sample else "", bearing,
             json.dumps(verdicts, sort_keys=True), len(refused)))
    for f in flagged:
        print("  FLAGGED %s: %s %s" % f)
    for p in refused:
        print("  REFUSED " + p)
    if not a.sample:
        lib = lib_digest(a.preload)
        write_section("installed", "\n".join([
            "## Every installed file (`make installed-files`, test/upstream/installed.py)", "",
            "Every regular file the installed Debian packages list (/var/lib/dpkg/info/*.list) and every file "
            "of the Python installations' stdlib and site-packages: scanned by `safepickle scan` (none may be "
            "malicious, suspicious or unscannable), then opened and read under the preload (none may be refused).", "",
            "| files | pickle-bearing | verdicts | flagged | refused opens | library |",
            "| --- | --- | --- | --- | --- | --- |",
            "| %d | %d | %s | **%d** | **%d** | %s |" % (len(files), bearing, ", ".join(
                "%s %d" % kv for kv in sorted(verdicts.items())), len(flagged), len(refused), lib)]), stamp=True)
    return 1 if flagged or refused else 0


if __name__ == "__main__":
    sys.exit(main())
