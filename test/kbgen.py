#!/usr/bin/python3
"""kbgen.py - regenerates and checks the standard-library part of safepickle's knowledge base.

analyzer/kb/stdlib.tsv has a hand-curated section (categories for risky modules and the
data-safe exceptions) and a generated section 2. This script takes every module in
sys.stdlib_module_names of the running interpreter (use /usr/bin/python3) and makes sure
the KB covers it by module: a module is covered by a module key equal to it or to one of its
parents, or by an @alias line. Modules not covered are appended to section 2 as stdlib_other.

    /usr/bin/python3 test/kbgen.py --check    # exit 1 and list what is missing
    /usr/bin/python3 test/kbgen.py --update   # rewrite section 2
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
KB = os.path.join(os.path.dirname(HERE), "analyzer", "kb", "stdlib.tsv")
MARK = "# ---------------------------------------------------------------- section 2 (test/kbgen.py --update)"
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
        if parts[0] in ("@import_effect", "@verb"):
            continue
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


def main(argv):
    mods, aliases, names, lines = parse()
    miss = missing(mods, aliases)
    if "--update" in argv:
        cut = lines.index(MARK)
        gen = [l for l in lines[cut + 1:] if l.strip() and not l.startswith("#")]
        gen_mods = {l.split("\t")[0] for l in gen}
        keep = lines[:cut + 1]
        allm = sorted(gen_mods | set(miss))
        # drop generated entries that the curated section now covers
        cur_mods, cur_al, _, _ = parse_lines(keep)
        allm = [m for m in allm if not covered(m, cur_mods, cur_al)]
        out = keep + ["%s\tstdlib_other" % m for m in allm]
        with open(KB, "w", encoding="utf-8") as f:
            f.write("\n".join(out) + "\n")
        print("section 2: %d modules; %d stdlib modules in total" % (len(allm),
              len(sys.stdlib_module_names)))
        return 0
    total = len(sys.stdlib_module_names)
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
