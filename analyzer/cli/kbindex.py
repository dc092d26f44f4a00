# kbindex.py - the environment index behind `safepickle kb index`: reads the source of every
# module importable from the running interpreter's library directories with `ast` (nothing is
# imported or executed) and writes a knowledge-base overlay (TSV, the KB's own syntax):
#   @module NAME                    a top-level module importable here
#   @modattr MODULE:ATTR TARGET     MODULE.ATTR is the module TARGET (an import binds it, or a submodule)
#   MODULE:QUALNAME CATEGORY        a function/method/class of a package the KB does not cover:
#                                   the sink category it reaches within DEPTH calls, or `data`
#                                   (inert: defined here, reaches no sink)
#   @shared MODULE:NAME             an enum class of any package (its bases reach enum's, or its
#                                   metaclass is enum's): calling it returns a member the process
#                                   shares, so BUILD on the result changes the program (the KB's
#                                   directive of that name); also under each name a module binds it to
# Its header records the environment it describes: `# env PATH` (the interpreter and every
# library directory) and `# env-digest HEX`, SHA-256 of "PATH\tMTIME_NS\n" of each (-1 when
# absent); the analyzer recomputes it to tell a stale index (kb.c).
# Cost: each file is parsed on its own and reduced at once to a compact summary (its imports,
# its definitions and what each calls): no AST outlives its file. Files are spread over JOBS
# forked workers (JSON lines over pipes, no pickle); summaries are cached per file, keyed by
# (path, size, mtime, SHA-256 of the bytes) plus the module name, this script's digest and the
# Python version, so a rebuild parses only what changed. The result does not depend on the cache or on JOBS.
# The CLI embeds this file and runs it with the target interpreter:
#   python3 -I - OUT DEPTH KB_TOP_KEYS(comma-separated) ONLY_PACKAGES CACHE JOBS SCRIPT_SHA256 < kbindex.py
import ast
import hashlib
import json
import os
import selectors
import stat
import sys
import time

OUT, DEPTH = sys.argv[1], int(sys.argv[2])
KNOWN = set(filter(None, sys.argv[3].split(","))) | set(sys.stdlib_module_names)
ONLY = set(filter(None, sys.argv[4].split(","))) if len(sys.argv) > 4 else set()   # --packages: parse only these
CACHE = sys.argv[5] if len(sys.argv) > 5 else ""             # "": no cache
JOBS = max(1, int(sys.argv[6])) if len(sys.argv) > 6 else 1
SCRIPT = sys.argv[7] if len(sys.argv) > 7 else ""             # this script's digest: "" disables the cache
MAX_FILE = 2 << 20
CACHE_MAGIC = "safepickle-kbindex-cache 1 %s %s" % (SCRIPT, sys.version.split()[0])   # another script or
# Python: another cache

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
        self.binds = []        # [local, module, only_if_a_module]: imports binding a module, in order
        self.defs = {}         # qualname -> ast node


def resolve_rel(mod, level, target):
    base = mod.name.split(".")
    if not mod.is_pkg:
        base = base[:-1]
    if level > 1:
        base = base[:len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def collect(mod, tree):
    for node in tree.body:
        for n in (ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node]):
            if isinstance(n, ast.Import):
                for a in n.names:
                    if a.asname:
                        mod.aliases[a.asname] = a.name
                        mod.binds.append([a.asname, a.name, 0])
                    else:
                        top = a.name.split(".")[0]
                        mod.aliases[top] = top
                        mod.binds.append([top, top, 0])
            elif isinstance(n, ast.ImportFrom):
                src = resolve_rel(mod, n.level, n.module) if n.level else (n.module or "")
                for a in n.names:
                    if a.name == "*":
                        continue
                    local = a.asname or a.name
                    full = src + "." + a.name
                    mod.aliases[local] = full
                    mod.binds.append([local, full, 1])   # a module binding when FULL is a module
            elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                mod.defs[n.name] = n
            elif isinstance(n, ast.ClassDef):
                mod.defs[n.name] = n
                for b in n.body:
                    if isinstance(b, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        mod.defs[n.name + "." + b.name] = b


def class_bases(mod, node):
    """The dotted names a class statement derives from (bases, metaclass=), resolved
    through the module's imports: `Enum` after `from enum import Enum` is enum.Enum; a class
    of the same module is MODULE.NAME."""
    out = []
    for b in list(node.bases) + [k.value for k in node.keywords if k.arg == "metaclass"]:
        d = dotted(b)
        if not d:
            continue
        if d[0] in mod.aliases:
            out.append(".".join([mod.aliases[d[0]]] + d[1:]))
        elif d[0] in mod.defs:
            out.append(".".join([mod.name] + d))
    return out


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


# ------------------------------------------------------------------ one file
def summarize(name, path, data):
    """The facts of one source file the index needs, as plain JSON data; the AST dies here.
    {"a": aliases, "b": binds, "d": {qualname: [is_class, direct sink, sorted callees]},
    "c": {class: [dotted bases]}} (callees and sink only for packages the KB does not cover;
    bases for every package)."""
    tree = ast.parse(data, path)
    m = Mod(name, path, path.endswith("__init__.py"))
    collect(m, tree)
    known = name.split(".")[0] in KNOWN
    defs, bases = {}, {}
    for q, node in m.defs.items():
        if isinstance(node, ast.ClassDef):
            b = class_bases(m, node)
            if b:
                bases[q] = b
        if known:
            defs[q] = [isinstance(node, ast.ClassDef)]
        else:
            cs, d = callees(m, q, node)
            defs[q] = [isinstance(node, ast.ClassDef), d, sorted(cs)]
    return {"a": m.aliases, "b": m.binds, "d": defs, "c": bases}


ENUM_ROOTS = {"enum." + n for n in ("Enum", "IntEnum", "Flag", "IntFlag", "StrEnum", "ReprEnum", "EnumMeta",
                                    "EnumType")}


def class_key(parsed, full, depth=0):
    """MODULE:NAME of the class a dotted name denotes, through the names modules import
    (a package re-exporting a class from a submodule), or None."""
    if depth > 8:
        return None
    parts = full.split(".")
    for i in range(len(parts) - 1, 0, -1):
        mn, rest = ".".join(parts[:i]), parts[i:]
        s = parsed.get(mn)
        if s is None:
            continue
        if len(rest) == 1 and rest[0] in s.get("c", {}):
            return mn + ":" + rest[0]
        if rest[0] in s["a"]:
            return class_key(parsed, ".".join([s["a"][rest[0]]] + rest[1:]), depth + 1)
        return None
    return None


def enum_classes(parsed):
    """MODULE:NAME of every class whose bases (or metaclass) reach enum's, and every
    MODULE:LOCAL a module binds one of them to."""
    found = set()
    while True:
        new = set()
        for mn, s in parsed.items():
            for q, bases in s.get("c", {}).items():
                key = mn + ":" + q
                if key not in found and any(b in ENUM_ROOTS or class_key(parsed, b) in found for b in bases):
                    new.add(key)
        if not new:
            break
        found |= new
    names = set(found)
    for mn, s in parsed.items():
        for local, full in s["a"].items():
            if class_key(parsed, full) in found:
                names.add(mn + ":" + local)
    return names


def do_file(item):
    """item: [idx, name, path, sha the cache holds for this (path, size, mtime) or None].
    Returns [idx, status, size, mtime_ns, sha, summary]: status "hit" (the cached summary
    holds), "ok", "err" (unreadable or unparsable), "big" (over MAX_FILE, skipped)."""
    idx, name, path, cached = item
    try:
        st = os.stat(path)
        if st.st_size > MAX_FILE:
            return [idx, "big", st.st_size, st.st_mtime_ns, None, None]
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return [idx, "err", -1, -1, None, None]
    sha = hashlib.sha256(data).hexdigest()
    if cached == sha:
        return [idx, "hit", st.st_size, st.st_mtime_ns, sha, None]
    try:
        return [idx, "ok", st.st_size, st.st_mtime_ns, sha, summarize(name, path, data)]
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return [idx, "err", st.st_size, st.st_mtime_ns, sha, None]


def run_jobs(items, jobs):
    """do_file over items, in JOBS forked workers (largest files first, each to the least
    loaded worker); yields the results in any order. A worker that dies fails the index."""
    if jobs <= 1 or len(items) < 2 * jobs:
        for it in items:
            yield do_file(it)
        return
    def size(it):
        try:
            return os.stat(it[2]).st_size
        except OSError:
            return 0
    shards, load = [[] for _ in range(jobs)], [0] * jobs
    for it in sorted(items, key=size, reverse=True):
        k = load.index(min(load))
        shards[k].append(it)
        load[k] += size(it) + 4096
    sel, pids = selectors.DefaultSelector(), []
    sys.stdout.flush()
    sys.stderr.flush()
    for shard in shards:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            rc = 1
            try:
                os.close(r)
                with os.fdopen(w, "w", encoding="utf-8") as f:
                    for it in shard:
                        f.write(json.dumps(do_file(it), separators=(",", ":")) + "\n")
                rc = 0
            except BaseException:
                import traceback
                traceback.print_exc()
            finally:
                os._exit(rc)
        os.close(w)
        pids.append(pid)
        sel.register(r, selectors.EVENT_READ, [b""])
    while sel.get_map():
        for key, _ in sel.select():
            chunk = os.read(key.fd, 1 << 20)
            if not chunk:
                sel.unregister(key.fd)
                os.close(key.fd)
                if key.data[0]:
                    raise SystemExit("kb index: a worker's output was cut short")
                continue
            lines = (key.data[0] + chunk).split(b"\n")
            key.data[0] = lines.pop()
            for ln in lines:
                yield json.loads(ln)
    for pid in pids:
        if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0:
            raise SystemExit("kb index: a worker failed")


# ------------------------------------------------------------------ the cache
def cache_trusted(path):
    """The cache is used only if its directory and file belong to us and nobody else can
    write them (a planted cache could call sink-reaching functions inert)."""
    d = os.path.dirname(os.path.abspath(path))
    try:
        st = os.stat(d)
    except OSError as e:
        return "its directory: %s" % e.strerror
    if st.st_uid != os.geteuid() or st.st_mode & 0o022 or not stat.S_ISDIR(st.st_mode):
        return "its directory %s is not ours alone" % d
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if st.st_uid != os.geteuid() or st.st_mode & 0o022 or not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        return "it is not a regular file of ours that only we can write"
    return None


def cache_load(path):
    """path -> [size, mtime_ns, sha, name, known, status, summary JSON text]."""
    out = {}
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return out
    with os.fdopen(fd, "r", encoding="utf-8", errors="surrogateescape") as f:
        if f.readline().rstrip("\n") != CACHE_MAGIC:
            return out
        for ln in f:
            r = ln.rstrip("\n").split("\t", 7)
            if len(r) == 8:
                out[r[0]] = [int(r[1]), int(r[2]), r[3], r[4], r[5], r[6], r[7]]
    return out


def cache_save(path, rows):
    tmp = "%s.%d.tmp" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(CACHE_MAGIC + "\n")
            for r in rows:
                f.write("\t".join(map(str, r)) + "\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


# ------------------------------------------------------------------ the environment
def env_digest(paths):
    h = hashlib.sha256()
    for p in paths:
        try:
            m = os.stat(p).st_mtime_ns
        except OSError:
            m = -1
        h.update(("%s\t%d\n" % (p, m)).encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def parse_all(mods):
    """name -> summary for every module read (the index's `parsed`), and the counts."""
    use = bool(CACHE and SCRIPT)
    if use:
        why = cache_trusted(CACHE)
        if why:
            sys.stderr.write("kb index: not using the cache %s: %s\n" % (CACHE, why))
            use = False
    old = cache_load(CACHE) if use else {}
    items, meta = [], []
    for name, path in mods:
        if not path or (ONLY and name.split(".")[0] not in ONLY):
            continue
        known = "1" if name.split(".")[0] in KNOWN else "0"
        c = old.get(path)
        cached = None
        if c and c[3] == name and c[4] == known:
            try:
                st = os.stat(path)
                if (st.st_size, st.st_mtime_ns) == (c[0], c[1]):
                    cached = c[2]
            except OSError:
                pass
        items.append([len(items), name, path, cached])
        meta.append(known)
    res = [None] * len(items)
    for r in run_jobs(items, JOBS):
        res[r[0]] = r
    parsed, rows = {}, []
    nfiles = nerr = nhit = 0
    for (idx, name, path, _), r, known in zip(items, res, meta):
        status, summ = r[1], r[5]
        if status == "hit":
            c = old[path]
            status, text = c[5], c[6]
            summ = json.loads(text) if status == "ok" else None
            nhit += 1
        elif status in ("ok", "err"):
            text = json.dumps(summ, separators=(",", ":")) if status == "ok" else "-"
        if status in ("ok", "err") and "\t" not in path and "\n" not in path and r[4]:
            rows.append([path, r[2], r[3], r[4], name, known, status, text])
        if status == "ok":
            nfiles += 1
            parsed[name] = summ
        elif status == "err":
            nerr += 1
    del old
    if use:
        try:
            cache_save(CACHE, rows)
        except OSError as e:
            sys.stderr.write("kb index: could not write the cache %s: %s\n" % (CACHE, e))
    return parsed, nfiles, nerr, nhit


def main():
    t0 = time.monotonic()
    dirs = lib_dirs()
    mods = list(walk_modules(dirs))
    modules = {m for m, _ in mods}
    parsed, nfiles, nerr, nhit = parse_all(mods)
    # call graph of the packages the KB does not cover (callees sorted: the first sink found
    # does not depend on hashing)
    graph, sink = {}, {}
    for name, s in parsed.items():
        if name.split(".")[0] in KNOWN:
            continue
        for q, d in s["d"].items():
            key = name + ":" + q
            graph[key] = d[2]
            if d[1]:
                sink[key] = d[1]
            del d[1:]
    # a class is judged by its constructor path (__init__, __new__) and its __setstate__
    for key in list(graph):
        mn, q = key.split(":", 1)
        if "." not in q and parsed[mn]["d"].get(q, [False])[0]:
            graph[key] = sorted(set(graph[key]) | {key + "." + x for x in ("__init__", "__new__", "__setstate__")})
    # a name imported into a module resolves to its definition
    for name, s in parsed.items():
        for local, full in s["a"].items():
            key = name + ":" + local
            if key not in graph and full.rpartition(".")[0] in parsed:
                graph[key] = [full.rpartition(".")[0] + ":" + full.rpartition(".")[2]]
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
    enums = enum_classes(parsed)
    env = [os.path.realpath(sys.executable)] + dirs
    with open(OUT + ".tmp", "w", encoding="utf-8") as f:
        f.write("# safepickle KB index of %s (%s), %d library dirs, depth %d; written by `safepickle kb index`\n"
                % (sys.executable, sys.version.split()[0], len(dirs), DEPTH))
        for d in dirs:
            f.write("# dir %s\n" % d)
        for p in env:
            f.write("# env %s\n" % p)
        f.write("# env-digest %s\n" % env_digest(env))
        for top in sorted({m.split(".")[0] for m in modules}):
            f.write("@module\t%s\n" % top)
        nma = 0
        for name in sorted(parsed):
            ma = {}
            for local, target, cond in parsed[name]["b"]:
                if not cond or target in modules:
                    ma[local] = target
            for local, target in sorted(ma.items()):
                f.write("@modattr\t%s:%s\t%s\n" % (name, local, target))
                nma += 1
        for name in sorted(modules):   # a package's submodules are its attributes once imported
            pkg, _, sub = name.rpartition(".")
            pm = parsed.get(pkg)
            # a package's own binding of the name (from .Thing import Thing, def Thing) wins
            if pkg and pkg in modules and not (pm and (sub in pm["a"] or sub in pm["d"])):
                f.write("@modattr\t%s:%s\t%s\n" % (pkg, sub, name))
                nma += 1
        for key in sorted(enums):
            f.write("@shared\t%s\n" % key)
        nsink = ninert = 0
        for key in sorted(graph):
            if ":" not in key or key.split(":", 1)[0] not in parsed:
                continue
            mn, q = key.split(":", 1)
            if q not in parsed[mn]["d"] and key not in reach:
                continue
            if key in reach:
                f.write("%s\t%s\n" % (key, reach[key]))
                nsink += 1
            else:
                f.write("%s\tdata\n" % key)
                ninert += 1
    os.replace(OUT + ".tmp", OUT)
    sys.stderr.write("kb index: %d modules (%d parsed, %d unparsable, %d from the cache), %d module-valued "
                     "attributes, %d enum names, %d names reach a sink, %d inert, %d jobs, %.1f s\n"
                     % (len(modules), nfiles, nerr, nhit, nma, len(enums), nsink, ninert, JOBS,
                        time.monotonic() - t0))


main()
