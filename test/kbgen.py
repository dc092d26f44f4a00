#!/usr/bin/python3
"""kbgen.py - regenerates and checks the standard-library part of safepickle's knowledge base.

analyzer/kb/stdlib.tsv has a hand-curated section (categories for risky modules and the
data-safe exceptions) and a generated section 2. This script takes every module in
sys.stdlib_module_names of the running interpreter (use /usr/bin/python3) and makes sure
the KB covers it by module: a module is covered by a module key equal to it or to one of its
parents, or by an @alias line. Modules not covered are appended to section 2 as stdlib_other.

    /usr/bin/python3 test/kbgen.py --check    # exit 1 and list what is missing
    /usr/bin/python3 test/kbgen.py --update   # rewrite sections 2 and 3 and modattr.tsv

Section 3 lists the modules that ship with the interpreter but are not in
sys.stdlib_module_names (lib-dynload test and internal modules, the `test` package, ...):
they are standard library, not "unknown third-party"; test and internal modules
(_test*, _xx*, xx*, test, __hello__, sitecustomize: sub-interpreters, C-API pokes, import
effects) are code_exec, the rest stdlib_other.

analyzer/kb/modattr.tsv lists every module-valued attribute of the standard library
(`@modattr MODULE:ATTR TARGET`: tempfile._os is os), found by importing each module (a
development-time tool; modules whose import acts are skipped). The KB judges such an
attribute as the module it is.

analyzer/kb/reexport.tsv lists every callable bound under a module the KB judges data
wholesale (numpy, pandas, decimal, ...) but defined where the KB judges it otherwise
(`@reexport numpy.lib:save numpy:save`), found by importing those modules and asking the
built CLI ($SAFEPICKLE_BUILD/safepickle, default build/) for the verdict of a call of each
definition; the KB judges such a name as its definition. --check compares it too (and
exits 2 when the CLI is not built). test/integration/test_kb_tables.py runs --check.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
KB = os.path.join(os.path.dirname(HERE), "analyzer", "kb", "stdlib.tsv")
MARK = "# ---------------------------------------------------------------- section 2 (test/kbgen.py --update)"
MARK3 = "# ---------------------------------------------------------------- section 3: shipped with the interpreter, not in sys.stdlib_module_names (test/kbgen.py --update)"
MODATTR = os.path.join(os.path.dirname(HERE), "analyzer", "kb", "modattr.tsv")
CLI = os.path.join(os.environ.get("SAFEPICKLE_BUILD", os.path.join(os.path.dirname(HERE), "build")), "safepickle")
# importing these acts (opens a browser, prints, starts Tk) or needs a display
SKIP_IMPORT = {"antigravity", "this", "idlelib", "turtledemo", "tkinter", "turtle", "__hello__",
               "__phello__", "_tkinter", "lib2to3", "pydoc_data", "sitecustomize", "test"}
CATS = {"data", "code_exec", "process", "network", "file_write", "import", "reflection",
        "deserialize", "native", "state_mutation", "stdlib_other"}


def parse(path=KB):
    """Returns (module_keys {key: cat}, aliases {from: to}, name_keys {key: cat}, lines)."""
    mods, aliases, names = {}, {}, {}
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for ln, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if parts[0].startswith("@") and parts[0] != "@alias":
            continue        # @import_effect, @verb, @partial, @typeref, @shared, ... name no module
        if parts[0] == "@alias":
            if len(parts) < 3:
                raise SystemExit("%s:%d: @alias needs FROM and TO" % (path, ln))
            aliases[parts[1]] = parts[2]
            continue
        if len(parts) < 2 or parts[1] not in CATS:
            raise SystemExit("%s:%d: bad entry %r" % (path, ln, line))
        if ":" in parts[0]:
            names[parts[0]] = parts[1]
        else:
            mods[parts[0]] = parts[1]
    return mods, aliases, names, lines


def covered(mod, mods, aliases):
    if mod in aliases:
        mod = aliases[mod]
    parts = mod.split(".")
    return any(".".join(parts[:i]) in mods for i in range(len(parts), 0, -1))


def missing(mods, aliases):
    return sorted(m for m in sys.stdlib_module_names if not covered(m, mods, aliases))


def shipped():
    """Modules in the interpreter's own library directories (and built in) that are not in
    sys.stdlib_module_names, each with its category."""
    import pkgutil
    import re
    import sysconfig
    dirs = [sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"],
            os.path.join(sysconfig.get_paths()["stdlib"], "lib-dynload")]
    names = {m.name for m in pkgutil.iter_modules([d for d in dirs if os.path.isdir(d)])}
    names |= set(sys.builtin_module_names)
    out = {}
    for n in sorted(names - set(sys.stdlib_module_names)):
        if re.match(r"^(_test|_xx|xx|test$|__hello__|__phello__|sitecustomize|_ctypes_test)", n):
            out[n] = "code_exec"
        else:
            out[n] = "stdlib_other"
    return out


def modattrs():
    """(module, attribute, target module) for every module-valued attribute of every
    importable stdlib module (and of the shipped modules above)."""
    import importlib
    import io
    import contextlib
    import types
    import warnings
    warnings.simplefilter("ignore")
    found = set()
    todo = sorted(set(sys.stdlib_module_names) | set(shipped()))
    seen = set()
    while todo:
        name = todo.pop()
        if name in seen or name.split(".")[0] in SKIP_IMPORT:
            continue
        seen.add(name)
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                m = importlib.import_module(name)
        except BaseException:
            continue
        for attr, v in list(vars(m).items()):
            if isinstance(v, types.ModuleType):
                found.add((name, attr, v.__name__))
                if v.__name__.startswith(name + ".") and v.__name__ not in seen:
                    todo.append(v.__name__)   # submodules are walked too (os.path, xml.dom)
    return sorted(found)


def write_modattr():
    rows = modattrs()
    with open(MODATTR, "w", encoding="utf-8") as f:
        f.write("# modattr.tsv - every module-valued attribute of the standard library of %s %s\n"
                "# (generated by /usr/bin/python3 test/kbgen.py --update; do not edit by hand).\n"
                "# @modattr MODULE:ATTR TARGET: MODULE.ATTR is the module TARGET; the KB judges it\n"
                "# as that module (a name walked through it is judged in TARGET).\n"
                % (sys.implementation.name, "%d.%d" % sys.version_info[:2]))
        for mod, attr, target in rows:
            f.write("@modattr\t%s:%s\t%s\n" % (mod, attr, target))
    return rows


REEXPORT = os.path.join(os.path.dirname(HERE), "analyzer", "kb", "reexport.tsv")
ML = os.path.join(os.path.dirname(HERE), "analyzer", "kb", "ml.tsv")


def data_module_keys():
    """Module keys the KB judges data wholesale (numpy, pandas, decimal, ...), both files."""
    out = []
    for path in (KB, ML):
        for line in open(path, encoding="utf-8"):
            p = line.rstrip("\n").split("\t")
            if len(p) >= 2 and p[1] == "data" and ":" not in p[0] and not p[0].startswith(("#", "@", "*")):
                out.append(p[0])
    return out


def reexport_candidates():
    """(access module, name, defining module, qualname) for every callable bound in a module
    under a data module key (its submodules once imported too) that is defined elsewhere:
    numpy.lib.save is numpy.save, pandas.HDFStore is pandas.io.pytables.HDFStore."""
    import importlib
    import io
    import contextlib
    import types
    import warnings
    warnings.simplefilter("ignore")
    keys = data_module_keys()
    for k in keys:
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                importlib.import_module(k)
        except BaseException:
            pass
    rows = set()
    for mn, m in sorted(sys.modules.items()):
        if not isinstance(m, types.ModuleType) or not any(mn == k or mn.startswith(k + ".") for k in keys):
            continue
        try:
            names = sorted(set(vars(m)) | set(dir(m)))    # dir(): a module __getattr__'s names too
        except BaseException:
            continue
        for a in names:
            if a.startswith("__"):
                continue
            try:
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    v = getattr(m, a)
                if isinstance(v, types.ModuleType) or not callable(v):
                    continue
                cm, cq = getattr(v, "__module__", None), getattr(v, "__qualname__", None)
            except BaseException:
                continue
            if not isinstance(cm, str) or not isinstance(cq, str) or "<" in cq or (cm, cq) == (mn, a):
                continue
            if "\t" in a + cm + cq or "\n" in a + cm + cq:
                continue
            rows.add((mn, a, cm, cq))
    return sorted(rows)


def reexports(cli):
    """The candidates whose definition the KB judges by a category other than data or
    unknown, asked of the built analyzer (CLI) with a call of the definition: those the
    KB must judge as their definition wherever they are reached."""
    import json
    import struct
    import subprocess
    import tempfile
    rows = reexport_candidates()
    out = []

    def s_(x):
        b = x.encode()
        return b"X" + struct.pack("<I", len(b)) + b
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for k, (mn, a, cm, cq) in enumerate(rows):
            p = os.path.join(d, "%d.pkl" % k)
            with open(p, "wb") as f:
                f.write(b"\x80\x04" + s_(cm) + s_(cq) + b"\x93)R.")
            paths.append(p)
        verdict = {}
        for i in range(0, len(paths), 500):
            r = subprocess.run([cli, "scan", "--format", "json", *paths[i:i + 500]], capture_output=True, text=True)
            for f in json.loads(r.stdout)["files"]:
                verdict[f["path"]] = [x["rule"] for x in f["reasons"]]
        for k, row in enumerate(rows):
            rules = verdict.get(paths[k], [])
            if any(r.startswith("callee.") and r not in ("callee.unknown_function", "callee.data") for r in rules):
                out.append(row)
    return out


def write_reexport(cli):
    rows = reexports(cli)
    with open(REEXPORT, "w", encoding="utf-8") as f:
        f.write("# reexport.tsv - callables bound under a module the KB judges data wholesale but defined\n"
                "# where the KB judges them otherwise (generated by /usr/bin/python3 test/kbgen.py --update\n"
                "# with the built CLI; do not edit by hand).\n"
                "# @reexport MODULE:NAME DEFMODULE:QUALNAME: MODULE.NAME is DEFMODULE.QUALNAME; the KB judges\n"
                "# it (and a name walked through it) as that definition when that is not data.\n")
        for mn, a, cm, cq in rows:
            f.write("@reexport\t%s:%s\t%s:%s\n" % (mn, a, cm, cq))
    return rows


def main(argv):
    mods, aliases, names, lines = parse()
    miss = missing(mods, aliases)
    if "--update" in argv:
        if MARK3 in lines:
            lines = lines[:lines.index(MARK3)]
        while lines and not lines[-1].strip():
            lines.pop()
        cut = lines.index(MARK)
        gen = [l for l in lines[cut + 1:] if l.strip() and not l.startswith("#")]
        gen_mods = {l.split("\t")[0] for l in gen}
        keep = lines[:cut + 1]
        allm = sorted(gen_mods | set(miss))
        # drop generated entries that the curated section now covers
        cur_mods, cur_al, _, _ = parse_lines(keep)
        allm = [m for m in allm if not covered(m, cur_mods, cur_al)]
        out = keep + ["%s\tstdlib_other" % m for m in allm]
        ship = shipped()
        out += ["", MARK3] + ["%s\t%s" % (m, c) for m, c in sorted(ship.items())
                               if not covered(m, cur_mods, cur_al)]
        with open(KB, "w", encoding="utf-8") as f:
            f.write("\n".join(out) + "\n")
        rows = write_modattr()
        rx = write_reexport(CLI)
        print("reexport.tsv: %d re-exported callables judged as their definition" % len(rx))
        print("section 2: %d modules; %d stdlib modules in total; section 3: %d shipped modules; "
              "modattr.tsv: %d module-valued attributes" % (len(allm), len(sys.stdlib_module_names),
                                                           len(ship), len(rows)))
        return 0
    total = len(sys.stdlib_module_names)
    ship = shipped()
    miss += sorted(m for m in ship if not covered(m, mods, aliases))
    if os.path.exists(MODATTR):
        have = {tuple(l.rstrip("\n").split("\t")[1:3]) for l in open(MODATTR, encoding="utf-8")
                if l.startswith("@modattr\t")}
        want = {("%s:%s" % (m, a), t) for m, a, t in modattrs()}
        if want - have:
            print("modattr.tsv lacks %d module-valued attributes, e.g. %s"
                  % (len(want - have), sorted(want - have)[:5]))
            return 1
    if os.path.exists(REEXPORT):
        if not os.path.exists(CLI):
            print("cannot check reexport.tsv: no built CLI at %s (make build, or set SAFEPICKLE_BUILD)" % CLI)
            return 2
        have = {tuple(l.rstrip("\n").split("\t")[1:3]) for l in open(REEXPORT, encoding="utf-8")
                if l.startswith("@reexport\t")}
        want = {("%s:%s" % (m, a), "%s:%s" % (c, q)) for m, a, c, q in reexports(CLI)}
        if want - have:
            print("reexport.tsv lacks %d re-exported callables, e.g. %s" % (len(want - have), sorted(want - have)[:5]))
            return 1
        print("reexport.tsv: all %d re-exports the CLI judges other than data are listed" % len(want))
    if miss:
        print("not covered (%d of %d): %s" % (len(miss), total, " ".join(miss)))
        return 1
    print("all %d stdlib modules covered (%d module keys, %d name keys, %d aliases)"
          % (total, len(mods), len(names), len(aliases)))
    return 0


def parse_lines(lines):
    import tempfile
    with tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False) as t:
        t.write("\n".join(lines))
    try:
        return parse(t.name)
    finally:
        os.unlink(t.name)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
