"""test_structure.py - structure checks anyone can rerun (issue 18; test/README.md).

1. No include cycle: the analyzer includes nothing of the CLI or the preload, the CLI
   nothing of the preload, and the header graph has no cycle.
2. No function over 150 lines in the C sources (generated code under build/ aside).
3. The extension points cost what the component READMEs say, proven in a scratch copy
   of the built tree: a dummy opcode (1 line in opcodes.def + its load_ handler), a libc
   hook (1 line in hooks.def + its name in exports.map), a CLI command (1 line in
   commands.def + its cmd_*.c) and a KB entry (1 line in a TSV) each build, and the
   result really has the new thing.
4. The format readers depend on the content interface (content.c), never on scan.c,
   whose dispatch calls them: no reader object uses a symbol scan.o defines.
5. The shipped libraries export exactly their documented lists: libsafepickle.so the
   hooks of preload/hooks.def, libspa.so the functions of analyzer/capi.h. Tests reach
   internals through internal headers and the static libspa.a, never through exports.
"""
import json
import os
import re
import shutil
import subprocess

import pytest

from conftest import REPO, clean_env

SRC_DIRS = ("analyzer", "analyzer/cli", "preload")
MAX_FUNC = 150


def _component(path):
    d = os.path.dirname(path)
    return {"analyzer": "analyzer", "analyzer/cli": "cli", "preload": "preload"}.get(d)


def _sources():
    for d in SRC_DIRS:
        for f in sorted(os.listdir(os.path.join(REPO, d))):
            if f.endswith((".c", ".h")):
                yield os.path.join(d, f)


def _includes(rel):
    text = open(os.path.join(REPO, rel), errors="replace").read()
    out = []
    for inc in re.findall(r'^\s*#\s*include\s+"([^"]+)"', text, re.M):
        if inc.endswith(".def") or inc.endswith(".inc"):
            continue
        for d in (os.path.dirname(rel),) + SRC_DIRS:
            cand = os.path.normpath(os.path.join(d, inc))
            if os.path.exists(os.path.join(REPO, cand)):
                out.append(cand)
                break
    return out


def test_components_include_only_downward():
    allowed = {"analyzer": {"analyzer"}, "cli": {"cli", "analyzer"}, "preload": {"preload", "analyzer"}}
    bad = []
    for rel in _sources():
        c = _component(rel)
        for inc in _includes(rel):
            ic = _component(inc)
            if ic and ic not in allowed[c]:
                bad.append("%s (%s) includes %s (%s)" % (rel, c, inc, ic))
    assert not bad, "\n".join(bad)


def test_no_header_include_cycle():
    graph = {rel: [i for i in _includes(rel) if i.endswith(".h")] for rel in _sources() if rel.endswith(".h")}
    state, cycles = {}, []

    def visit(n, path):
        state[n] = 1
        for m in graph.get(n, []):
            if state.get(m) == 1:
                cycles.append(" -> ".join(path[path.index(m):] + [m]) if m in path else n + " -> " + m)
            elif not state.get(m):
                visit(m, path + [m])
        state[n] = 2

    for n in graph:
        if not state.get(n):
            visit(n, [n])
    assert len(graph) > 10
    assert not cycles, "\n".join(cycles)


def _functions(rel):
    """(first line, length, name) of each function definition in a C file: a line at
    column 0 that opens a definition, to the closing brace at column 0."""
    lines = open(os.path.join(REPO, rel), errors="replace").read().split("\n")
    i = 0
    while i < len(lines):
        l = lines[i]
        head = re.match(r"^(?!typedef|struct|enum|union|static const|const|#)[A-Za-z_][\w\s\*,]*\b(\w+)\s*\(", l)
        opens = l.rstrip().endswith("{") or (i + 1 < len(lines) and lines[i + 1].strip() == "{")
        if head and opens and not l.rstrip().endswith(";"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("}"):
                j += 1
            yield i + 1, j - i + 1, head.group(1)
            i = j
        i += 1


def test_no_function_over_150_lines():
    long = []
    seen = 0
    for rel in _sources():
        if rel.endswith(".c"):
            for line, n, name in _functions(rel):
                seen += 1
                if n > MAX_FUNC:
                    long.append("%s:%d %s: %d lines" % (rel, line, name, n))
    assert seen > 300, "the function finder found almost nothing: is it broken?"
    assert not long, "functions over %d lines:\n%s" % (MAX_FUNC, "\n".join(long))


# ------------------------------------------------------------------ readers and scan.c
READERS = ("zip", "tar", "npy", "decomp", "joblib", "nested", "torch_legacy", "sniff", "content", "decode")


def _syms(obj, undefined):
    out = subprocess.run(["nm", obj], capture_output=True, text=True, check=True).stdout
    rows = [l.split() for l in out.splitlines()]
    if undefined:
        return {r[1] for r in rows if len(r) == 2 and r[0] == "U"}
    return {r[2] for r in rows if len(r) == 3 and r[1] in "TDRB"}


def test_readers_do_not_call_scan(built):
    obj = lambda n: os.path.join(REPO, "build/obj/analyzer/%s.o" % n)
    scan_defs, scan_uses = _syms(obj("scan"), False), _syms(obj("scan"), True)
    assert "spa_scan_src" in scan_defs and "spc_read_as" in scan_defs, scan_defs
    # scan.c does call the readers (the check below is not vacuous)
    assert {"spc_zip", "spc_tar", "spc_npy", "spc_decomp", "spc_torch_legacy"} <= scan_uses, scan_uses
    bad = []
    for r in READERS:
        used = _syms(obj(r), True) & scan_defs
        if used:
            bad.append("%s.c uses scan.c's %s" % (r, ", ".join(sorted(used))))
    assert not bad, "\n".join(bad)


# ------------------------------------------------------------------ exported symbols
def _exported(lib):
    out = subprocess.run(["nm", "-D", "--defined-only", "--format=posix", lib], capture_output=True, text=True,
                         check=True).stdout
    return {l.split()[0].split("@")[0] for l in out.splitlines() if l.strip()}


def _documented_hooks():
    text = open(os.path.join(REPO, "preload/hooks.def")).read()
    return set(re.findall(r"^SPP_HOOK\(\s*\w+\s*,[^,]+,\s*(\w+)\s*,", text, re.M))


def _documented_capi():
    text = open(os.path.join(REPO, "analyzer/capi.h")).read()
    return set(re.findall(r"^SPA_CAPI\b[^(]*?\b(\w+)\s*\(", text, re.M))


def test_exports_equal_documented_lists(built):
    hooks, capi = _documented_hooks(), _documented_capi()
    assert len(hooks) > 50 and "open" in hooks and "pthread_create" in hooks, hooks
    assert capi == {"spa_capi_judge", "spa_capi_scan", "spa_capi_version", "spa_capi_free"}, capi
    got = _exported(os.path.join(REPO, "build/libsafepickle.so"))
    assert got == hooks, "libsafepickle.so exports beyond hooks.def: %s; hooks not exported: %s" % (
        sorted(got - hooks), sorted(hooks - got))
    got = _exported(os.path.join(REPO, "build/libspa.so"))
    assert got == capi, "libspa.so exports beyond capi.h: %s; missing: %s" % (sorted(got - capi), sorted(capi - got))


def test_no_kb_text_embedded_twice(built):
    """The KB is in the library once, as its line table; its TSV text is not embedded
    a second time (the former kb_data.S, which only a test read)."""
    for lib in ("build/libsafepickle.so", "build/libspa.so"):
        data = open(os.path.join(REPO, lib), "rb").read()
        comment = next(l for l in open(os.path.join(REPO, "analyzer/kb/ml.tsv"), "rb").read().split(b"\n")
                       if l.startswith(b"#") and len(l) > 40)
        assert comment not in data, "%s embeds the KB's TSV text (%r)" % (lib, comment)


# ------------------------------------------------------------------ extension points
@pytest.fixture(scope="module")
def built():
    r = subprocess.run(["make", "-s", "build"], cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    return REPO


def _scratch(tmp_path):
    dst = tmp_path / "tree"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    for f in filter(None, files):
        src = os.path.join(REPO, f)
        if os.path.isfile(src):
            os.makedirs(os.path.dirname(str(dst / f)), exist_ok=True)
            shutil.copy2(src, dst / f)
    shutil.copytree(os.path.join(REPO, "build"), dst / "build", symlinks=True)
    return dst


def _edit(path, fn):
    s = open(path).read()
    t = fn(s)
    assert t != s, "the edit did not apply to %s" % path
    open(path, "w").write(t)


def _make(dst):
    env = clean_env()
    for k in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL"):
        env.pop(k, None)
    r = subprocess.run(["make", "-s", "-j2", "build"], cwd=dst, capture_output=True, text=True, env=env, timeout=1200)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]


def test_add_an_opcode(built, tmp_path):
    dst = _scratch(tmp_path)
    used = set(int(b, 16) for b in re.findall(r"^OP\(\w+,\s*0x([0-9a-f]{2})", open(dst / "analyzer/opcodes.def").read(), re.M))
    byte = next(b for b in range(0xf0, 0x100) if b not in used)
    _edit(dst / "analyzer/opcodes.def", lambda s: s + 'OP(DUMMY_OP, 0x%02x, SPA_ARG_NONE, "none", 5, "", "")\n' % byte)
    _edit(dst / "analyzer/vm.c", lambda s: s.replace(
        "/* byte -> handler, from the opcode table",
        "static void load_DUMMY_OP(vm *m, uint8_t op, uint64_t off) { (void)m; (void)op; (void)off; }\n\n"
        "/* byte -> handler, from the opcode table", 1))
    _make(dst)
    # the new opcode is known by name to the whole analyzer (explain names it)
    p = tmp_path / "d.pkl"
    p.write_bytes(b"\x80\x05" + bytes([byte]) + b"N.")
    r = subprocess.run([str(dst / "build/safepickle"), "scan", "-v", str(p)], capture_output=True, text=True)
    assert "?" not in r.stdout.split("ops")[0] and r.returncode in (0, 1), r.stdout + r.stderr


def test_add_a_libc_hook(built, tmp_path):
    dst = _scratch(tmp_path)
    _edit(dst / "preload/hooks.def", lambda s: s + "SPP_HOOK(CLOSE,    int,     syncfs,         (int fd),                                  (fd))\n")
    _edit(dst / "preload/exports.map", lambda s: s.replace("local:", "    syncfs;\n  local:", 1))
    _make(dst)
    syms = subprocess.run(["nm", "-D", "--defined-only", str(dst / "build/libsafepickle.so")], capture_output=True,
                          text=True).stdout.split()
    assert "syncfs" in syms


def test_add_a_cli_command(built, tmp_path):
    dst = _scratch(tmp_path)
    _edit(dst / "analyzer/cli/commands.def", lambda s: s + 'X("dummy", cmd_dummy, "a dummy command")\n')
    (dst / "analyzer/cli/cmd_dummy.c").write_text(
        '/* cmd_dummy.c - a dummy command. */\n#include <stdio.h>\n#include "cli.h"\n'
        'int cmd_dummy(int argc, char **argv) { (void)argc; (void)argv; puts("dummy ran"); return 0; }\n')
    _make(dst)
    r = subprocess.run([str(dst / "build/safepickle"), "dummy"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "dummy ran"


def test_add_a_kb_entry(built, tmp_path):
    dst = _scratch(tmp_path)
    before = subprocess.run([str(dst / "build/safepickle"), "policy", "judge", "dummypkg.sub", "launch"],
                            capture_output=True, text=True).stdout
    _edit(dst / "analyzer/kb/ml.tsv", lambda s: s + "dummypkg.sub:launch\tprocess\ta dummy entry\n")
    _make(dst)
    after = subprocess.run([str(dst / "build/safepickle"), "policy", "judge", "dummypkg.sub", "launch"],
                           capture_output=True, text=True).stdout
    assert "process" in after and "process" not in before, (before, after)


def test_add_a_container_format(built, tmp_path):
    """analyzer/README.md "Adding a format": one line in formats.def, its magic test and
    reader in one new file, declared in containers.h. The enum, the name, the tag, the
    recogniser's magic list and the reader dispatch follow from the table: the CLI scans
    such a file as the new format and finds the pickle inside it."""
    dst = _scratch(tmp_path)
    _edit(dst / "analyzer/formats.def", lambda s: s.replace(
        "SPA_FMT(PICKLE,",
        'SPA_FMT(DUMMYFMT,     "dummyfmt",     "dummy",  spc_magic_dummyfmt,   spc_dummyfmt)\nSPA_FMT(PICKLE,', 1))
    _edit(dst / "analyzer/containers.h", lambda s: s.replace(
        "int spc_magic_zip(", "int spc_magic_dummyfmt(const uint8_t *p, size_t n, uint64_t total);\nint spc_magic_zip(", 1)
        .replace("spa_code spc_zip(", "spa_code spc_dummyfmt(spc_scan *s, spc_content *c, spa_format fmt, "
                 "uint32_t *first_stream);\nspa_code spc_zip(", 1))
    (dst / "analyzer/dummyfmt.c").write_text(
        '/* dummyfmt.c - a dummy container: "DUMMYFMT" then a pickle. */\n'
        '#include <string.h>\n\n#include "containers.h"\n\n'
        'int spc_magic_dummyfmt(const uint8_t *p, size_t n, uint64_t total) {\n'
        '    (void)total;\n'
        '    return n >= 8 && memcmp(p, "DUMMYFMT", 8) == 0 ? SPC_M_YES : SPC_M_NO;\n}\n\n'
        'spa_code spc_dummyfmt(spc_scan *s, spc_content *c, spa_format fmt, uint32_t *first_stream) {\n'
        '    (void)fmt;\n'
        '    spa_in *in = spc_content_in(s, c);\n'
        '    if (!in) return SPA_E_NOMEM;\n'
        '    if (spa_in_skip(in, 8) != SPA_OK) return SPA_OK;\n'
        '    s->pickle_bearing = true;\n'
        '    const char *loc = spa_ctx_loc(s->sc, "%s!dummy", c->loc);\n'
        '    if (!loc) return SPA_E_NOMEM;\n'
        '    return spc_pickles(s, in, c->size, loc, c->depth + 1, c->parent, 1, first_stream);\n}\n')
    _make(dst)
    p = tmp_path / "d.bin"
    p.write_bytes(b"DUMMYFMT" + b"cos\nsystem\n(S'true'\ntR.")
    r = subprocess.run([str(dst / "build/safepickle"), "scan", "--format", "json", str(p)], capture_output=True,
                       text=True)
    f = json.loads(r.stdout)["files"][0]
    assert f["format"] == "dummyfmt" and f["verdict"] == "malicious", f
    assert f["streams"][0]["loc"].endswith("!dummy"), f["streams"]
    # without the entry the same bytes hold no pickle the build can see
    r = subprocess.run([os.path.join(REPO, "build/safepickle"), "scan", "--format", "json", str(p)],
                       capture_output=True, text=True)
    f = json.loads(r.stdout)["files"][0]
    assert not f["pickle_bearing"] and f["verdict"] == "safe", f
