/* pya_events.c - layer 2: the behaviour veto. The audit events refused while
 * an unpickle is in progress (a table, data) and the exceptions to it. */
#include "pya.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ================================================================ behaviour */
typedef enum pya_cat {
    PYA_PROCESS, PYA_CODE, PYA_NETWORK, PYA_NATIVE, PYA_FILE_WRITE, PYA_OPEN, PYA_IMPORT, PYA_STATE
} pya_cat;

struct pya_evrule {
    const char *event;
    pya_cat cat;
    const char *rule;
};

/* Audit events vetoed while an unpickle is in progress (data, not code). */
static const pya_evrule pya_events[] = {
    {"os.system", PYA_PROCESS, "runtime.process_spawn"},
    {"os.exec", PYA_PROCESS, "runtime.process_spawn"},
    {"os.posix_spawn", PYA_PROCESS, "runtime.process_spawn"},
    {"os.spawn", PYA_PROCESS, "runtime.process_spawn"},
    {"os.fork", PYA_PROCESS, "runtime.process_spawn"},
    {"os.forkpty", PYA_PROCESS, "runtime.process_spawn"},
    {"os.startfile", PYA_PROCESS, "runtime.process_spawn"},
    {"os.kill", PYA_PROCESS, "runtime.process_signal"},
    {"os.killpg", PYA_PROCESS, "runtime.process_signal"},
    {"subprocess.Popen", PYA_PROCESS, "runtime.process_spawn"},
    {"exec", PYA_CODE, "runtime.code_exec"},
    {"compile", PYA_CODE, "runtime.code_exec"},
    {"code.__new__", PYA_CODE, "runtime.code_exec"},
    {"marshal.loads", PYA_CODE, "runtime.code_exec"},
    {"marshal.load", PYA_CODE, "runtime.code_exec"},
    {"socket.connect", PYA_NETWORK, "runtime.network"},
    {"socket.bind", PYA_NETWORK, "runtime.network"},
    {"socket.sendto", PYA_NETWORK, "runtime.network"},
    {"socket.sendmsg", PYA_NETWORK, "runtime.network"},
    {"socket.getaddrinfo", PYA_NETWORK, "runtime.network"},
    {"socket.gethostbyname", PYA_NETWORK, "runtime.network"},
    {"urllib.Request", PYA_NETWORK, "runtime.network"},
    {"http.client.connect", PYA_NETWORK, "runtime.network"},
    {"ftplib.connect", PYA_NETWORK, "runtime.network"},
    {"smtplib.connect", PYA_NETWORK, "runtime.network"},
    {"webbrowser.open", PYA_NETWORK, "runtime.network"},
    {"ctypes.dlopen", PYA_NATIVE, "runtime.native_load"},
    {"ctypes.dlsym", PYA_NATIVE, "runtime.native_load"},
    {"open", PYA_OPEN, "runtime.file_write"},
    {"os.remove", PYA_FILE_WRITE, "runtime.file_write"},
    {"os.rename", PYA_FILE_WRITE, "runtime.file_write"},
    {"os.rmdir", PYA_FILE_WRITE, "runtime.file_write"},
    {"os.mkdir", PYA_FILE_WRITE, "runtime.file_write"},
    {"os.symlink", PYA_FILE_WRITE, "runtime.file_write"},
    {"os.link", PYA_FILE_WRITE, "runtime.file_write"},
    {"os.truncate", PYA_FILE_WRITE, "runtime.file_write"},
    {"os.chmod", PYA_FILE_WRITE, "runtime.file_write"},
    {"os.chown", PYA_FILE_WRITE, "runtime.file_write"},
    {"shutil.rmtree", PYA_FILE_WRITE, "runtime.file_write"},
    {"shutil.copyfile", PYA_FILE_WRITE, "runtime.file_write"},
    {"shutil.move", PYA_FILE_WRITE, "runtime.file_write"},
    {"shutil.copytree", PYA_FILE_WRITE, "runtime.file_write"},
    {"shutil.chown", PYA_FILE_WRITE, "runtime.file_write"},
    {"shutil.make_archive", PYA_FILE_WRITE, "runtime.file_write"},
    {"shutil.unpack_archive", PYA_FILE_WRITE, "runtime.file_write"},
    {"tempfile.mkstemp", PYA_FILE_WRITE, "runtime.file_write"},
    {"tempfile.mkdtemp", PYA_FILE_WRITE, "runtime.file_write"},
    {"sqlite3.connect", PYA_FILE_WRITE, "runtime.file_write"},
    {"os.utime", PYA_FILE_WRITE, "runtime.file_write"},
    {"os.setxattr", PYA_FILE_WRITE, "runtime.file_write"},
    {"os.removexattr", PYA_FILE_WRITE, "runtime.file_write"},
    {"os.chflags", PYA_FILE_WRITE, "runtime.file_write"},
    {"pdb.Pdb", PYA_CODE, "runtime.code_exec"},
    {"os.chdir", PYA_STATE, "runtime.state_mutation"},
    {"import", PYA_IMPORT, "runtime.import"},
    {"os.putenv", PYA_STATE, "runtime.state_mutation"},
    {"os.unsetenv", PYA_STATE, "runtime.state_mutation"},
    {"sys.settrace", PYA_STATE, "runtime.state_mutation"},
    {"sys.setprofile", PYA_STATE, "runtime.state_mutation"},
    {"sys.addaudithook", PYA_STATE, "runtime.state_mutation"},
    {"cpython.PyInterpreterState_New", PYA_CODE, "runtime.code_exec"}, /* a sub-interpreter */
    {"_thread.start_new_thread", PYA_PROCESS, "runtime.thread"},      /* 3.13+; earlier: pthread hook */
};

const pya_evrule *pya_event_rule(const char *ev) {
    for (size_t i = 0; i < sizeof pya_events / sizeof pya_events[0]; i++)
        if (strcmp(ev, pya_events[i].event) == 0) return &pya_events[i];
    return NULL;
}

/* An "open" audit event: (path, mode-or-None, flags). Returns 0 for a read,
 * 1 for an in-place update of an existing file (O_RDWR or O_WRONLY without
 * O_CREAT/O_TRUNC/O_APPEND; mode "r+"), 2 for anything that creates,
 * truncates or appends (O_CREAT/O_TRUNC/O_APPEND; modes with w, a or x). */
static int pya_open_kind(spp_pyobj *args) {
    spp_pyobj *flags = pya_arg(args, 2);
    if (flags) {
        long fl = py_PyLong_AsLong(flags);
        if (fl == -1 && py_PyErr_Occurred()) py_PyErr_Clear();
        else if (fl & (O_CREAT | O_TRUNC | O_APPEND)) return 2;
        else if (fl & (O_WRONLY | O_RDWR)) return 1;
        else return 0;
    }
    char mode[16];
    if (!pya_utf8(pya_arg(args, 1), mode, sizeof mode)) return 0;
    if (strpbrk(mode, "wax")) return 2;
    return strchr(mode, '+') ? 1 : 0;
}

/* joblib.load(..., mmap_mode="r+") and numpy.load(..., mmap_mode="r+") map the
 * arrays of the file being loaded read-write: numpy's memmap opens an existing
 * file with mode "r+b" from inside the unpickle. That one in-place open is
 * allowed when numpy.memmap's own frame makes it; a pickle cannot reach that
 * frame by name (numpy.memmap, open_memmap and numpy.load are refused at
 * find_class). Creating or truncating a file is never allowed. */
static bool pya_open_is_numpy_memmap(void) {
    pya_where w;
    pya_describe(py_PyEval_GetFrame(), &w);
    return strcmp(w.func, "__new__") == 0 &&
           (pya_ends_with(w.file, "/numpy/core/memmap.py") || pya_ends_with(w.file, "/numpy/_core/memmap.py"));
}

/* "numpy" allows numpy and numpy.*; a pattern with glob characters is an fnmatch. */
static bool pya_module_matches(const char *pat, const char *mod) {
    if (strpbrk(pat, "*?[")) return fnmatch(pat, mod, 0) == 0;
    size_t l = strlen(pat);
    return strncmp(pat, mod, l) == 0 && (mod[l] == 0 || mod[l] == '.');
}

/* Imports the interpreter itself makes while unpickling: codec modules (the
 * unpickler decodes protocol 0-2 strings, e.g. with encoding="latin1", and the
 * codec registry imports encodings.<name> on first use) and the lazy
 * datetime.strptime helper. Stdlib only, nothing a pickle can point elsewhere. */
static const char *const pya_interp_imports[] = {"encodings", "_strptime"};

/* An import during an unpickle is allowed when it is the module a global was
 * just resolved from (or one of its parents), belongs to a top-level package
 * already resolved in this unpickle, is an interpreter import (above), or
 * matches runtime_allow_imports. */
static bool pya_import_allowed(const spa_policy *p, const char *mod) {
    const pya_tls *t = &pya_t;
    for (size_t i = 0; i < sizeof pya_interp_imports / sizeof pya_interp_imports[0]; i++)
        if (pya_module_matches(pya_interp_imports[i], mod)) return true;
    size_t l = strlen(mod);
    if (t->pending[0] && strncmp(t->pending, mod, l) == 0 &&
        (t->pending[l] == 0 || t->pending[l] == '.'))
        return true;
    size_t top = strcspn(mod, ".");
    for (unsigned i = 0; i < t->npkgs; i++)
        if (strlen(t->pkgs[i]) == top && memcmp(t->pkgs[i], mod, top) == 0) return true;
    for (size_t i = 0; i < p->runtime_allow_imports.n; i++)
        if (pya_module_matches(p->runtime_allow_imports.v[i], mod)) return true;
    return false;
}

/* An event's first argument as text for the message and the record; bytes
 * that are not text (marshal.loads' data, a pickle) as their size, not a line
 * of '?'. Only the bytes shown are looked at (a module's source handed to
 * compile may be megabytes; what is shown is its first line's worth). */
static void pya_detail(spp_pyobj *o, char *buf, size_t n) {
    bool exact = false;
    if (!pya_utf8x(o, buf, n, &exact) || exact) return;
    char *b = NULL;
    spp_pyssize len = 0;
    if (py_PyBytes_AsStringAndSize && py_PyBytes_AsStringAndSize(o, &b, &len) == 0 && b) {
        bool text = true;
        spp_pyssize shown = len < (spp_pyssize)(n - 1) ? len : (spp_pyssize)(n - 1);
        for (spp_pyssize i = 0; i < shown && text; i++) {
            unsigned char c = (unsigned char)b[i];
            text = c >= 0x20 ? c < 0x7f : (c == '\t' || c == '\n' || c == '\r');
        }
        if (!text) snprintf(buf, n, "<%lld bytes>", (long long)len);
    }
    py_PyErr_Clear();
}

int pya_on_behaviour(const spa_policy *p, const pya_evrule *r, const char *ev,
                            spp_pyobj *args) {
    int open_kind = r->cat == PYA_OPEN ? pya_open_kind(args) : 0;
    if (r->cat == PYA_OPEN && open_kind == 0) { /* reads pass */
        /* ...but end a finished scope now, so the bytes this open is about to
         * read count as read between loads (a trusted file's next load). */
        if (!pya_scope_live(NULL, NULL, NULL)) pya_scope_clear();
        return 0;
    }
    bool in_import;
    char imp[SPP_PYA_NAME_MAX], outer[SPP_PYA_NAME_MAX];
    /* In scope: inside a wrapped load (exact), on a thread an unpickle
     * started, or under the frame that called the unpickler. */
    if (!pya_scope_live(&in_import, imp, outer) && !spp_l2_in_scope()) { pya_scope_clear(); return 0; }
    /* The analyzer judged the bytes in flight safe: every callable they reach
     * is one the knowledge base knows to be data-safe with these arguments, so
     * code, file and import effects are the library's own (scipy's exec of
     * generated methods, numpy's ast.literal_eval, tempfile). Process,
     * network, native and state effects are vetoed all the same. Only once
     * the load resolved a global through pickle's find_class (spp_l2.resolved):
     * an unpickler whose find_class imports from elsewhere - torch.package's
     * PackageUnpickler builds a module from the archive's own source - runs
     * code that is no installed library's (test_package_importer.py). */
    bool safe_bytes = spp_l2.verdict == SPA_VERDICT_SAFE && spp_l2.resolved && spp_l2_in_scope();
    if (safe_bytes && (r->cat == PYA_CODE || r->cat == PYA_FILE_WRITE || r->cat == PYA_OPEN)) return 0;
    /* ...and a local IPC connection (an AF_UNIX address is a str or bytes
     * path, never a host tuple): torch DataLoader workers pass tensors as file
     * descriptors through multiprocessing's resource sharer. */
    if (safe_bytes && !strcmp(ev, "socket.connect")) {
        spp_pyobj *addr = pya_arg(args, 1);
        char tmp[8];
        if (addr && pya_utf8(addr, tmp, sizeof tmp)) return 0;
    }
    bool trusted = pya_scope_trusted();
    if (open_kind == 1 && pya_open_is_numpy_memmap()) return 0;
    char detail[SPP_PYA_DETAIL_MAX];
    detail[0] = 0;
    pya_detail(pya_arg(args, 0), detail, sizeof detail);
    if (!detail[0] && r->cat == PYA_PROCESS) /* os.system(bytes), Popen(executable=None) */
        pya_utf8(pya_arg(args, 1), detail, sizeof detail);
    /* A module body executing under an announced import: its own imports,
     * opens, execs and native loads are how Python imports work. That holds
     * for every import nested in it too, whatever started the nested one: an
     * import the unpickle announced runs installed code with no argument from
     * the pickle, and when that code imports a module through
     * importlib.import_module (no `import` event: Debian's distutils shim
     * loading setuptools inside `import distutils`), the module's .pyc is
     * unmarshalled and executed by the import machinery on its behalf. A
     * gadget's own importlib.import_module, marshal.loads or exec outside any
     * announced import is not covered. */
    bool body_of_announced = in_import && (pya_body_announced(imp) || (strcmp(outer, imp) && pya_body_announced(outer)));
    /* ...or an import the unpickler's own find_class override started (no
     * pickle.find_class event announces it), when the load's bytes were judged
     * and allowed, so its globals were (the same condition as the name check's
     * leniency, pya_names.c): a load judged by names only (slots not found)
     * raises no event that any name check sees (test_layer2_imports.py) */
    bool judged = spp_l2.in_load > 0 &&
                  (spp_l2.verdict == SPA_VERDICT_SAFE || spp_l2.verdict == SPA_VERDICT_SUSPICIOUS);
    if (!body_of_announced && judged && (in_import || r->cat == PYA_IMPORT || !pya_t.anchor))
        body_of_announced = pya_import_by_unpickler(r->cat == PYA_IMPORT);
    if (r->cat == PYA_IMPORT) {
        /* (an import in a scope whose bytes are safe is announced too: its
         * body's own events are how Python imports work) */
        if (safe_bytes || body_of_announced || pya_import_allowed(p, detail)) {
            pya_imports_add(detail);
            return 0;
        }
    } else if (body_of_announced) {
        return 0;
    }
    char what[SPP_PYA_DETAIL_MAX + 64], msg[SPP_PYA_DETAIL_MAX + 96];
    snprintf(what, sizeof what, "%s during an unpickle", ev);
    snprintf(msg, sizeof msg, "%s(%s) called while a pickle was being loaded", ev,
             detail[0] ? detail : "...");
    if (trusted && r->cat == PYA_IMPORT) pya_imports_add(detail); /* its body is part of the load */
    return pya_decide(spa_policy_act(p, SPA_ACT_BLOCK), SPA_VERDICT_MALICIOUS, what, ev,
                         detail[0] ? detail : NULL, r->rule, msg, trusted);
}


/* ================================================================ libc vetoes */
/* Called by the libc hooks (interpose.c) for effects that raise no audit
 * event, when the calling thread is inside an unpickle or was started by one.
 * No Python here: the thread may not hold the GIL. File creation passes when
 * the bytes in flight were judged safe (the same rule as the audit events);
 * process creation and connect never do. Returns 0 or the errno of a refusal. */
int spp_l2_veto(spp_veto_kind kind, const char *call, const char *arg) {
    const spa_policy *p = spp_policy();
    if (!p || !p->layer_audit_hook || !p->runtime_behaviour || p->mode == SPA_MODE_OFF) return 0;
    if ((kind == SPP_VETO_FILE || kind == SPP_VETO_LOCAL_NET) && spp_l2.verdict == SPA_VERDICT_SAFE && spp_l2.resolved)
        return 0;
    if (kind == SPP_VETO_LOCAL_NET) kind = SPP_VETO_NETWORK;
    if (pya_t.busy || (pya_t.anchor && pya_t.trusted && !spp_feed.taint)) return 0;
    spa_action act = spa_policy_act(p, SPA_ACT_BLOCK);
    static const char *const rules[] = {"runtime.file_write", "runtime.process_spawn", "runtime.network",
                                        "runtime.network"};
    char msg[160];
    snprintf(msg, sizeof msg, "%s%s%s called while a pickle was being loaded%s", call, arg ? " " : "",
             arg ? arg : "", spp_l2.tainted ? " (on a thread the unpickle started)" : "");
    spa_reason reason = {.severity = SPA_VERDICT_MALICIOUS, .rule = rules[kind], .msg = msg, .loc = "libc", .off = 0};
    spp_event ev = {
        .layer = "audit_hook", .call = call, .path = "<libc>", .fd = -1, .verdict = SPA_VERDICT_MALICIOUS,
        .action = act, .reasons = &reason, .n_reasons = 1, .detail = "effect with no audit event, vetoed in libc",
        .format = "python",
    };
    spp_depth++;
    spp_report(&ev);
    spp_depth--;
    if (act != SPA_ACT_BLOCK) return 0;
    return p->block_errno > 0 ? p->block_errno : EACCES;
}
