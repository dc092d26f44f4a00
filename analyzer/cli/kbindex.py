# kbindex.py - the environment index behind `safepickle kb index`: reads the source of every
# module importable from the running interpreter's library directories with `ast` (nothing is
# imported or executed) and writes a knowledge-base overlay (TSV, the KB's own syntax):
#   @module NAME                    a top-level module importable here
#   @modattr MODULE:ATTR TARGET     MODULE.ATTR is the module TARGET (an import binds it, or a submodule)
#   MODULE:QUALNAME CATEGORY        a function/method/class of a package the KB does not cover:
#                                   the sink category it reaches within DEPTH calls, or `data`
#                                   (inert: defined here, reaches no sink)
# The CLI embeds this file and runs it with the target interpreter:
#   python3 -I - OUT DEPTH KB_TOP_KEYS(comma-separated) [ONLY_PACKAGES] < kbindex.py
import ast
import os
import sys
import time

OUT, DEPTH = sys.argv[1], int(sys.argv[2])
KNOWN = set(filter(None, sys.argv[3].split(","))) | set(sys.stdlib_module_names)
ONLY = set(filter(None, sys.argv[4].split(","))) if len(sys.argv) > 4 else set()   # --packages: parse only these
MAX_FILE = 2 << 20

# sink: fully qualified callable -> category (prefix match on "module." when it ends with ".")
SINKS = {
    "builtins.exec": "code_exec", "builtins.eval": "code_exec", "builtins.compile": "code_exec",
    "builtins.__import__": "import", "importlib.import_module": "import", "importlib.": "import",
    "os.system": "process", "os.popen": "process", "os.fork": "process", "os.forkpty": "process",
    "os.kill": "process", "os.killpg": "process", "os.posix_spawn": "process", "os.posix_spawnp": "process",
    "subprocess.": "process", "pty.": "process", "_posixsubprocess.": "process", "multiprocessing.": "process",
    "os.remove": "file_write", "os.unlink": "file_write", "os.rename": "file_write", "os.replace": "file_write",
    "os.rmdir": "file_write", "os.removedirs": "file_write", "os.mkdir": "file_write", "os.makedirs": "file_write",
    "os.chmod": "file_write", "os.chown": "file_write", "os.symlink": "file_write", "os.link": "file_write",
    "os.truncate": "file_write", "os.mkfifo": "file_write", "os.mknod": "file_write", "os.write": "file_write",
    "shutil.": "file_write", "tempfile.mkstemp": "file_write", "tempfile.mkdtemp": "file_write",
    "socket.": "network", "urllib.request.": "network", "http.client.": "network", "ftplib.": "network",
    "smtplib.": "network", "requests.": "network", "urllib3.": "network", "webbrowser.": "network",
    "ctypes.": "native", "_ctypes.": "native", "cffi.": "native",
    "pickle.load": "deserialize", "pickle.loads": "deserialize", "marshal.load": "deserialize",
    "marshal.loads": "deserialize", "_pickle.load": "deserialize", "_pickle.loads": "deserialize",
    "threading.Thread": "process", "_thread.start_new_thread": "process", "_thread.start_new": "process",
    "_xxsubinterpreters.": "code_exec", "runpy.": "code_exec", "types.FunctionType": "code_exec",
    "types.CodeType": "code_exec", "code.": "code_exec",
}
for _k in [k for k in SINKS if k.startswith("os.")]:
    SINKS["posix." + _k[3:]] = SINKS[_k]
for _n in ("execv", "execve", "execl", "execle", "execlp", "execlpe", "execvp", "execvpe",
           "spawnv", "spawnve", "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnvp", "spawnvpe"):
    SINKS["os." + _n] = SINKS["posix." + _n] = "process"
SINK_PREFIXES = sorted((k for k in SINKS if k.endswith(".")), key=len, reverse=True)
WRITE_MODES = set("wax+")


def sink_of(q):
    if q in SINKS:
        return SINKS[q]
    for p in SINK_PREFIXES:
        if q.startswith(p):
            return SINKS[p]
    return None


def lib_dirs():
    out = []
    for p in sys.path:
        if p and os.path.isdir(p) and os.path.realpath(p) not in [os.path.realpath(x) for x in out]:
            out.append(p)
    return out


def walk_modules(dirs):
    """(module name, path or None) for every module importable from dirs (first dir wins)."""
    seen = set()
    for d in dirs:
        try:
            entries = sorted(os.listdir(d))
        except OSError:
            continue
        for e in entries:
            p = os.path.join(d, e)
            if e.endswith(".py") and os.path.isfile(p):
                name = e[:-3]
            elif ".cpython-" in e or e.endswith((".so", ".abi3.so")):
                name = e.split(".")[0]
                p = None
            elif os.path.isdir(p) and e.isidentifier():
                name = e
            else:
                continue
            if not name.isidentifier() or name in seen:
                continue
            seen.add(name)
            if p and os.path.isdir(p):
                for dp, dn, fn in os.walk(p):
                    dn[:] = sorted(x for x in dn if x.isidentifier())
                    rel = os.path.relpath(dp, d).replace(os.sep, ".")
                    for f in sorted(fn):
                        if f.endswith(".py"):
                            m = rel if f == "__init__.py" else rel + "." + f[:-3]
                            yield m, os.path.join(dp, f)
                        elif ".cpython-" in f or f.endswith(".so"):
                            yield rel + "." + f.split(".")[0], None
            else:
                yield name, p


class Mod:
    def __init__(self, name, path, is_pkg):
        self.name, self.path, self.is_pkg = name, path, is_pkg
        self.aliases = {}      # local name -> fully qualified (module or module.attr)
        self.modattrs = {}     # local name -> module name (bound by an import)
        self.defs = {}         # qualname -> ast node


def resolve_rel(mod, level, target):
    base = mod.name.split(".")
    if not mod.is_pkg:
        base = base[:-1]
    if level > 1:
        base = base[:len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def collect(mod, tree, modules):
    for node in tree.body:
        for n in (ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node]):
            if isinstance(n, ast.Import):
                for a in n.names:
                    if a.asname:
                        mod.aliases[a.asname] = a.name
                        mod.modattrs[a.asname] = a.name
                    else:
                        top = a.name.split(".")[0]
                        mod.aliases[top] = top
                        mod.modattrs[top] = top
            elif isinstance(n, ast.ImportFrom):
                src = resolve_rel(mod, n.level, n.module) if n.level else (n.module or "")
                for a in n.names:
                    if a.name == "*":
                        continue
                    local = a.asname or a.name
                    full = src + "." + a.name
                    mod.aliases[local] = full
                    if full in modules:
                        mod.modattrs[local] = full
            elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                mod.defs[n.name] = n
            elif isinstance(n, ast.ClassDef):
                mod.defs[n.name] = n
                for b in n.body:
                    if isinstance(b, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        mod.defs[n.name + "." + b.name] = b


def dotted(expr):
    parts = []
    while isinstance(expr, ast.Attribute):
        parts.append(expr.attr)
        expr = expr.value
    if isinstance(expr, ast.Name):
        parts.append(expr.id)
        return list(reversed(parts))
    return None


def callees(mod, qual, node):
    """Fully qualified names this def calls (best effort) and a direct sink if any."""
    cls = qual.split(".")[0] if "." in qual else None
    out, direct = set(), None
    for n in ast.walk(node):
        if not isinstance(n, ast.Call):
            continue
        d = dotted(n.func)
        if not d:
            continue
        if d[0] in ("self", "cls") and cls and len(d) == 2:
            out.add(mod.name + ":" + cls + "." + d[1])
            continue
        if d[0] in mod.defs and len(d) <= 2:
            out.add(mod.name + ":" + ".".join(d))
            continue
        if d[0] in mod.aliases:
            q = mod.aliases[d[0]] + ("." + ".".join(d[1:]) if len(d) > 1 else "")
        elif len(d) == 1:
            q = "builtins." + d[0]
        else:
            continue
        if q == "builtins.open":
            mode = n.args[1] if len(n.args) > 1 else next((k.value for k in n.keywords if k.arg == "mode"), None)
            if mode is not None and not (isinstance(mode, ast.Constant) and isinstance(mode.value, str)
                                         and not (set(mode.value) & WRITE_MODES)):
                direct = direct or "file_write"
            continue
        s = sink_of(q)
        if s:
            direct = direct or s
        else:
            mname, _, attr = q.rpartition(".")
            out.add(mname + ":" + attr)
    return out, direct


def main():
    t0 = time.monotonic()
    dirs = lib_dirs()
    mods = list(walk_modules(dirs))
    modules = {m for m, _ in mods}
    parsed = {}
    nfiles = nerr = 0
    for name, path in mods:
        if not path or (ONLY and name.split(".")[0] not in ONLY):
            continue
        try:
            if os.path.getsize(path) > MAX_FILE:
                continue
            tree = ast.parse(open(path, "rb").read(), path)
        except (SyntaxError, ValueError, OSError, RecursionError, MemoryError):
            nerr += 1
            continue
        nfiles += 1
        m = Mod(name, path, path.endswith("__init__.py"))
        collect(m, tree, modules)
        parsed[name] = m
    # call graph of the packages the KB does not cover
    graph, sink = {}, {}
    for name, m in parsed.items():
        if name.split(".")[0] in KNOWN:
            continue
        for q, node in m.defs.items():
            key = name + ":" + q
            cs, d = callees(m, q, node)
            graph[key] = cs
            if d:
                sink[key] = d
    # a class is judged by its constructor path (__init__, __new__) and its __setstate__
    for key in list(graph):
        mn, q = key.split(":", 1)
        if "." not in q and isinstance(parsed[mn].defs.get(q), ast.ClassDef):
            graph[key] |= {key + "." + x for x in ("__init__", "__new__", "__setstate__")}
    # a name imported into a module resolves to its definition
    for name, m in parsed.items():
        for local, full in m.aliases.items():
            key = name + ":" + local
            if key not in graph and full.rpartition(".")[0] in parsed:
                graph.setdefault(key, set()).add(full.rpartition(".")[0] + ":" + full.rpartition(".")[2])
    reach = dict(sink)
    for _ in range(DEPTH):
        new = {}
        for k, cs in graph.items():
            if k in reach:
                continue
            for c in cs:
                if c in reach:
                    new[k] = reach[c]
                    break
        if not new:
            break
        reach.update(new)
    with open(OUT + ".tmp", "w", encoding="utf-8") as f:
        f.write("# safepickle KB index of %s (%s), %d library dirs, depth %d; written by `safepickle kb index`\n"
                % (sys.executable, sys.version.split()[0], len(dirs), DEPTH))
        for d in dirs:
            f.write("# dir %s\n" % d)
        for top in sorted({m.split(".")[0] for m in modules}):
            f.write("@module\t%s\n" % top)
        nma = 0
        for name in sorted(parsed):
            m = parsed[name]
            for local, target in sorted(m.modattrs.items()):
                f.write("@modattr\t%s:%s\t%s\n" % (name, local, target))
                nma += 1
        for name in sorted(modules):   # a package's submodules are its attributes once imported
            pkg, _, sub = name.rpartition(".")
            pm = parsed.get(pkg)
            # a package's own binding of the name (from .Thing import Thing, def Thing) wins
            if pkg and pkg in modules and not (pm and (sub in pm.aliases or sub in pm.defs)):
                f.write("@modattr\t%s:%s\t%s\n" % (pkg, sub, name))
                nma += 1
        nsink = ninert = 0
        for key in sorted(graph):
            if ":" not in key or key.split(":", 1)[0] not in parsed:
                continue
            mn, q = key.split(":", 1)
            if q not in parsed[mn].defs and key not in reach:
                continue
            if key in reach:
                f.write("%s\t%s\n" % (key, reach[key]))
                nsink += 1
            else:
                f.write("%s\tdata\n" % key)
                ninert += 1
    os.replace(OUT + ".tmp", OUT)
    sys.stderr.write("kb index: %d modules (%d parsed, %d unparsable), %d module-valued attributes, "
                     "%d names reach a sink, %d inert, %.1f s\n"
                     % (len(modules), nfiles, nerr, nma, nsink, ninert, time.monotonic() - t0))


main()
