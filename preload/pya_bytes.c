/* pya_bytes.c - layer 2, bytes first: wherever the bytes of an in-memory
 * unpickle are at hand, the analyzer of layer 1 judges them (same scan, same
 * classifier, same policy, same reasons) before the unpickler starts.
 *
 * How: the C unpickler's entry points are plain C functions reached through
 * their method definitions (PyMethodDef) - _pickle.loads, _pickle.load and
 * _pickle.Unpickler.load. Every builtin-function object and every method
 * descriptor made from a definition reads its ml_meth at each call, so
 * replacing ml_meth in the definition itself covers references captured
 * before we patched (`from pickle import loads`), bound methods, and every
 * subclass of Unpickler (they inherit the same descriptor). The definitions
 * are patched once, at the first `import` event of pickle or _pickle (we
 * import _pickle ourselves at that moment, so it is patched before any code
 * can call it). The wrappers have the fixed C prototypes their ml_flags name
 * (METH_FASTCALL|METH_KEYWORDS, METH_NOARGS, METH_METHOD|METH_FASTCALL|
 * METH_KEYWORDS): no libffi. See preload/README.md "Bytes first". */
#include "pya.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "containers.h"
#include "opcodes.h"
#include "pya_pool.h"
#include "sha256.h"

typedef spp_pyobj *(*pyb_fastkw_fn)(spp_pyobj *, spp_pyobj *const *, spp_pyssize, spp_pyobj *);
typedef spp_pyobj *(*pyb_noargs_fn)(spp_pyobj *, spp_pyobj *);
typedef spp_pyobj *(*pyb_methkw_fn)(spp_pyobj *, void *, spp_pyobj *const *, size_t, spp_pyobj *);

static pyb_fastkw_fn pyb_orig_loads, pyb_orig_load;
static void *pyb_orig_uload;
static int pyb_uload_flags;
static atomic_int pyb_state; /* 0 not installed, 1 installed, 2 could not install (said so) */

/* Per-thread: the loads in flight on this thread, and the worst verdict the
 * analyzer gave the bytes they run (SPA_VERDICT_COUNT: not judged). */
SPP_TLS spp_l2_t spp_l2;

/* The outermost wrapped load returned: its scope ends now, not at the next
 * event (a finished load leaves no anchor behind). */
static void pyb_leave(const spp_l2_t *saved) {
    spp_l2.in_load = saved->in_load;
    spp_l2.verdict = saved->verdict;
    if (!spp_l2.in_load && !pya_t.busy) pya_scope_clear();
}

/* ================================================================ judging */
/* Warnings on in-memory bytes go to stderr once per distinct decisive reason
 * (a worker pool may load the same kind of task thousands of times); every
 * one goes to an audit file. */
#define PYB_SEEN_SLOTS 256
static uint32_t pyb_seen[PYB_SEEN_SLOTS];

static bool pyb_first_time(const spa_reason *d) {
    uint32_t h = 2166136261u;
    for (const char *s = d && d->rule ? d->rule : ""; *s; s++) h = (h ^ (uint8_t)*s) * 16777619u;
    for (const char *s = d && d->msg ? d->msg : ""; *s; s++) h = (h ^ (uint8_t)*s) * 16777619u;
    if (!h) h = 1;
    for (unsigned i = 0; i < PYB_SEEN_SLOTS; i++) {
        uint32_t *s = &pyb_seen[(h + i) & (PYB_SEEN_SLOTS - 1)];
        if (*s == h) return false;
        if (!*s) { *s = h; return true; }
    }
    return true;
}

/* ================================================================ verdict cache */
/* Bytes judged and allowed (nothing to report) are remembered by their digest,
 * so loading the same bytes again (a cached object, a task broadcast to a
 * pool, a deepcopy through pickle) costs one hashing pass, not a scan. The
 * digest is SHA-256 over the length and the keyed NH hash of every 4 KiB
 * block (spp_fp_hash: layer 1's verification key, random per process, never
 * seen by whoever writes the bytes): two different buffers share an entry
 * only if NH collides on a block they differ in (at most 2^-64 over the key)
 * or SHA-256 collides. Only allowed verdicts are kept: a refusal or a warning
 * is judged and reported again every time. The policy is fixed for the life
 * of the process, so a verdict never outlives the policy that gave it. The
 * bytes hashed are the bytes the unpickler reads (pyb_judge_data). */
#define PYB_VC_SLOTS 64 /* direct-mapped on the digest's first byte */

typedef struct pyb_vc_ent {
    uint8_t d[32];
    uint8_t verdict; /* spa_verdict */
    bool used;
} pyb_vc_ent;

static pyb_vc_ent pyb_vc[PYB_VC_SLOTS];
static pthread_mutex_t pyb_vc_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t pyb_vc_once = PTHREAD_ONCE_INIT;
static void pyb_vc_prepare(void) { pthread_mutex_lock(&pyb_vc_mu); }
static void pyb_vc_parent(void) { pthread_mutex_unlock(&pyb_vc_mu); }
static void pyb_vc_child(void) { pthread_mutex_init(&pyb_vc_mu, NULL); }
static void pyb_vc_init(void) { (void)pthread_atfork(pyb_vc_prepare, pyb_vc_parent, pyb_vc_child); }

static void pyb_digest(const uint8_t *p, size_t n, uint8_t d[32]) {
    spa_sha256 s;
    uint64_t len = n;
    spa_sha256_init(&s);
    spa_sha256_update(&s, &len, sizeof len);
    for (size_t o = 0; o < n; o += SPP_FP_BLOCK) {
        spp_h128 h = spp_fp_hash(p + o, n - o < SPP_FP_BLOCK ? n - o : SPP_FP_BLOCK);
        spa_sha256_update(&s, &h, sizeof h);
    }
    spa_sha256_final(&s, d);
}

static bool pyb_vc_get(const uint8_t d[32], spa_verdict *v) {
    pthread_once(&pyb_vc_once, pyb_vc_init);
    pthread_mutex_lock(&pyb_vc_mu);
    const pyb_vc_ent *e = &pyb_vc[d[0] % PYB_VC_SLOTS];
    bool hit = e->used && memcmp(e->d, d, 32) == 0;
    if (hit) *v = (spa_verdict)e->verdict;
    pthread_mutex_unlock(&pyb_vc_mu);
    return hit;
}

static void pyb_vc_put(const uint8_t d[32], spa_verdict v) {
    pthread_mutex_lock(&pyb_vc_mu);
    pyb_vc_ent *e = &pyb_vc[d[0] % PYB_VC_SLOTS];
    memcpy(e->d, d, 32);
    e->verdict = (uint8_t)v;
    e->used = true;
    pthread_mutex_unlock(&pyb_vc_mu);
}

/* Scan and classify on the preload's stack (spp_on_altstack). */
typedef struct pyb_scan_arg {
    const uint8_t *p;
    size_t n;
    const spa_policy *pol;
    spa_result *r;
    spa_code c;
} pyb_scan_arg;

static void pyb_scan_alt(void *arg) {
    pyb_scan_arg *a = arg;
    spa_scan_opts o;
    spa_scan_opts_default(&o);
    o.limits = a->pol->limits;
    o.alloc = spp_scan_alloc(); /* large arena chunks on huge pages: far fewer faults */
    o.name = "<bytes>";
    a->r = NULL;
    a->c = spc_scan_as(&o, a->p, a->n, SPA_FMT_PICKLE, &a->r);
    if (a->c == SPA_OK && a->r) a->c = spa_classify(a->r, a->pol);
}

/* Judge the bytes of one unpickle. Returns 0 to let it run (*v receives the
 * verdict, SPA_VERDICT_COUNT when nothing was judged), -1 with the exception
 * set when the policy refuses it. */
static int pyb_judge(const uint8_t *p, size_t n, const char *call, spa_verdict *v) {
    *v = SPA_VERDICT_COUNT;
    const spa_policy *pol = spp_policy();
    if (!pol || !pol->layer_audit_hook || pol->mode == SPA_MODE_OFF) return 0;
    uint8_t dg[32];
    pyb_digest(p, n, dg);
    if (pyb_vc_get(dg, v)) return 0; /* these bytes were judged and allowed */
    /* the analyzer runs on the preload's own stack: the host thread's may be
     * as small as 32 KiB (SPP_HOST_STACK_BUDGET, test_audit) */
    pyb_scan_arg sa = { p, n, pol, NULL, SPA_E_INTERNAL };
    spp_on_altstack(pyb_scan_alt, &sa);
    spa_result *r = sa.r;
    spa_code c = sa.c;
    spa_verdict verdict;
    spa_action act;
    if (c != SPA_OK || !r) {
        verdict = SPA_VERDICT_UNSCANNABLE;
        act = pol->on_error;
    } else {
        verdict = r->verdict;
        act = spa_policy_decide(pol, r);
    }
    act = spa_policy_act(pol, act);
    /* what the behaviour veto sees: a load reaching only data-safe callables counts as
     * safe there (its warning, if any, is reported as judged) */
    *v = c == SPA_OK && spa_result_data_only(r) ? SPA_VERDICT_SAFE : verdict;
    int rc = 0;
    if (act == SPA_ACT_ALLOW) {
        if (c == SPA_OK) pyb_vc_put(dg, *v); /* what the veto saw; a failed scan (no memory) is judged again */
    } else {
        /* A trusted file's bytes (read on this thread, still open) keep their
         * trust here as in the name check; trust stays bound to its globals. */
        bool trusted = !spp_feed.scope && spp_feed_peek();
        const spa_reason *d = r ? spp_decisive(r->reasons, r->n_reasons) : NULL;
        bool quiet = act == SPA_ACT_WARN && !pyb_first_time(d);
        rc = pya_report_bytes(act, verdict, call, r ? r->reasons : NULL, r ? r->n_reasons : 0,
                              c != SPA_OK ? spa_code_name(c) : NULL, trusted, quiet);
    }
    spa_result_free(r);
    return rc;
}

/* Bytes of a buffer-protocol object (bytes, bytearray, memoryview, ...) from
 * offset `from`. Returns 1 judged, 0 not a buffer, -1 blocked. */
static int pyb_judge_buffer(spp_pyobj *o, spp_pyssize from, const char *call, spa_verdict *v) {
    spp_pybuffer b;
    memset(&b, 0, sizeof b);
    if (py_PyObject_GetBuffer(o, &b, SPP_PYBUF_SIMPLE) != 0) {
        py_PyErr_Clear();
        return 0;
    }
    size_t off = from > 0 && from <= b.len ? (size_t)from : 0;
    int rc = pyb_judge((const uint8_t *)b.buf + off, (size_t)b.len - off, call, v);
    py_PyBuffer_Release(&b);
    return rc < 0 ? -1 : 1;
}

/* Is o exactly a bytes object (not a subclass)? Its bytes cannot change. */
static bool pyb_exact_bytes(spp_pyobj *o) {
    spp_pyobj *t = py_PyObject_Type(o);
    if (!t) { py_PyErr_Clear(); return false; }
    bool exact = t == py_PyBytes_Type;
    py_Py_DecRef(t);
    return exact;
}

/* The argument of pickle.loads, judged as the bytes the unpickler will read.
 * A bytes object cannot change and is judged in place. Any other buffer (a
 * bytearray, a memoryview, an mmap, an object exporting its own buffer) can
 * change after it is judged - another thread, another process writing a
 * shared mapping, code the load itself runs (the C unpickler reads its input
 * buffer in place, all along the load) - or hand out other bytes on its next
 * export: it is copied once into a new bytes object (*copy, a new reference),
 * the copy is judged and the caller unpickles the copy. Returns 1 judged, 0
 * not a buffer, -1 blocked, -2 no memory for the copy (MemoryError set). */
static int pyb_judge_data(spp_pyobj *o, const char *call, spa_verdict *v, spp_pyobj **copy) {
    *copy = NULL;
    if (pyb_exact_bytes(o)) return pyb_judge_buffer(o, 0, call, v);
    spp_pybuffer b;
    memset(&b, 0, sizeof b);
    if (py_PyObject_GetBuffer(o, &b, SPP_PYBUF_SIMPLE) != 0) {
        py_PyErr_Clear();
        return 0;
    }
    *copy = py_PyBytes_FromStringAndSize((const char *)b.buf, b.len);
    py_PyBuffer_Release(&b);
    if (!*copy) return -2;
    return pyb_judge_buffer(*copy, 0, call, v);
}

/* ================================================================ sources */
static long pyb_call_long(spp_pyobj *o, const char *meth) {
    spp_pyobj *r = py_PyObject_CallMethod(o, meth, NULL);
    if (!r) { py_PyErr_Clear(); return -1; }
    long l = py_PyLong_AsLong(r);
    if (l == -1 && py_PyErr_Occurred()) py_PyErr_Clear();
    py_Py_DecRef(r);
    return l;
}

static int pyb_call_bool(spp_pyobj *o, const char *meth) {
    spp_pyobj *r = py_PyObject_CallMethod(o, meth, NULL);
    if (!r) { py_PyErr_Clear(); return -1; }
    int b = py_PyObject_IsTrue(r);
    if (b < 0) py_PyErr_Clear();
    py_Py_DecRef(r);
    return b;
}

/* A file whose bytes layer 1 already judges: a regular file behind fileno(),
 * with the file hooks on. Its verdict is layer 1's, from the verdict cache
 * (SPA_VERDICT_COUNT when it is no longer cached: the veto stays strict). */
static bool pyb_layer1_file(spp_pyobj *f, spa_verdict *v) {
    const spa_policy *pol = spp_policy();
    if (!pol || !pol->layer_file || !py_PyObject_HasAttrString(f, "fileno")) return false;
    long fd = pyb_call_long(f, "fileno");
    struct stat st;
    if (fd < 0 || fstat((int)fd, &st) != 0 || !S_ISREG(st.st_mode)) return false;
    spp_key k;
    spp_key_from_stat(&k, &st);
    spp_cached c;
    if (spp_cache_get(&k, &c)) {
        if (c.bearing && c.action != SPA_ACT_BLOCK) *v = (spa_verdict)c.verdict;
        spp_cached_release(&c);
    }
    return true;
}

typedef enum pyb_kind { PYB_NONE, PYB_JUDGED, PYB_STREAM, PYB_BLOCKED } pyb_kind;

/* Judge what a file object holds from its current position, without moving
 * it: a BytesIO through its buffer, another seekable object by reading the
 * rest and seeking back. A non-seekable object is a stream (PYB_STREAM): the
 * caller reads exactly one pickle from it. */
static pyb_kind pyb_judge_file(spp_pyobj *f, const char *call, spa_verdict *v) {
    *v = SPA_VERDICT_COUNT;
    if (!f || pya_is_none(f)) return PYB_NONE;
    if (py_PyObject_HasAttrString(f, "getbuffer")) { /* io.BytesIO */
        long pos = pyb_call_long(f, "tell");
        spp_pyobj *view = py_PyObject_CallMethod(f, "getbuffer", NULL);
        if (view) {
            int rc = pyb_judge_buffer(view, pos, call, v);
            py_Py_DecRef(view);
            if (rc) return rc < 0 ? PYB_BLOCKED : PYB_JUDGED;
        } else {
            py_PyErr_Clear();
        }
    }
    int seekable = py_PyObject_HasAttrString(f, "seekable") ? pyb_call_bool(f, "seekable") : 0;
    if (seekable <= 0) return py_PyObject_HasAttrString(f, "read") ? PYB_STREAM : PYB_NONE;
    if (pyb_layer1_file(f, v)) return PYB_JUDGED;
    long pos = pyb_call_long(f, "tell");
    if (pos < 0) return PYB_STREAM;
    spp_pyobj *data = py_PyObject_CallMethod(f, "read", NULL);
    spp_pyobj *back = py_PyObject_CallMethod(f, "seek", "l", pos);
    if (back) py_Py_DecRef(back);
    else py_PyErr_Clear();
    if (!data) { py_PyErr_Clear(); return PYB_NONE; }
    int rc = pyb_judge_buffer(data, 0, call, v);
    py_Py_DecRef(data);
    return rc < 0 ? PYB_BLOCKED : rc ? PYB_JUDGED : PYB_NONE;
}

/* ---------------------------------------------------------------- streams */
/* Read exactly one pickle (through STOP) from a stream, opcode by opcode, so
 * the reader never waits for a byte the unpickler would not have waited for.
 * A malformed stream ends the read; the unpickler then fails on the same bytes. */
#define PYB_STREAM_MAX ((size_t)1 << 31) /* beyond: the policy's on_limit */

typedef struct pyb_buf { uint8_t *p; size_t n, cap; bool eof, limit; } pyb_buf;

static bool pyb_read(spp_pyobj *f, pyb_buf *b, size_t want, bool line) {
    while (want > 0 || line) {
        size_t chunk = want > ((size_t)1 << 20) ? ((size_t)1 << 20) : want;
        spp_pyobj *r = line ? py_PyObject_CallMethod(f, "readline", NULL)
                            : py_PyObject_CallMethod(f, "read", "n", (spp_pyssize)chunk);
        if (!r) { py_PyErr_Clear(); b->eof = true; return false; }
        spp_pybuffer v;
        memset(&v, 0, sizeof v);
        if (py_PyObject_GetBuffer(r, &v, SPP_PYBUF_SIMPLE) != 0) {
            py_PyErr_Clear();
            py_Py_DecRef(r);
            b->eof = true;
            return false;
        }
        size_t got = (size_t)v.len;
        if (b->n + got > PYB_STREAM_MAX) { b->limit = true; got = 0; }
        if (got && b->n + got > b->cap) {
            size_t cap = b->cap ? b->cap : 4096;
            while (cap < b->n + got) cap *= 2;
            uint8_t *np = realloc(b->p, cap);
            if (!np) { b->limit = true; got = 0; }
            else { b->p = np; b->cap = cap; }
        }
        if (got) memcpy(b->p + b->n, v.buf, got);
        b->n += got;
        bool short_read = (size_t)v.len < chunk || v.len == 0;
        py_PyBuffer_Release(&v);
        py_Py_DecRef(r);
        if (b->limit) return false;
        if (line) return got > 0 && b->p[b->n - 1] == '\n' ? true : (b->eof = true, false);
        if (short_read) { b->eof = true; return false; }
        want -= got;
    }
    return true;
}

static uint64_t pyb_le(const uint8_t *p, int n) {
    uint64_t x = 0;
    for (int i = n - 1; i >= 0; i--) x = (x << 8) | p[i];
    return x;
}

static void pyb_read_pickle(spp_pyobj *f, pyb_buf *b) {
    static const int width[] = {[SPA_ARG_U1] = 1, [SPA_ARG_U2] = 2, [SPA_ARG_S4] = 4, [SPA_ARG_U4] = 4,
                                [SPA_ARG_U8] = 8, [SPA_ARG_F8] = 8, [SPA_ARG_CNT1] = 1, [SPA_ARG_CNT4] = 4,
                                [SPA_ARG_CNT4S] = 4, [SPA_ARG_CNT8] = 8};
    for (;;) {
        if (!pyb_read(f, b, 1, false)) return;
        uint8_t op = b->p[b->n - 1];
        if (op == SPA_OP_STOP) return;
        const spa_opinfo *oi = spa_op_info(op);
        if (!oi) return; /* not an opcode: the unpickler fails here too */
        int k = oi->kind;
        if (k == SPA_ARG_LINE || k == SPA_ARG_LINE2) {
            if (!pyb_read(f, b, 0, true)) return;
            if (k == SPA_ARG_LINE2 && !pyb_read(f, b, 0, true)) return;
            continue;
        }
        if (k == SPA_ARG_NONE) continue;
        int w = width[k];
        if (!pyb_read(f, b, (size_t)w, false)) return;
        if (k < SPA_ARG_CNT1 || op == SPA_OP_FRAME) continue; /* a frame's body is opcodes */
        uint64_t len = pyb_le(b->p + b->n - w, w);
        if (k == SPA_ARG_CNT4S && (len & 0x80000000u)) return;
        if (len > PYB_STREAM_MAX) { b->limit = true; return; }
        if (len && !pyb_read(f, b, (size_t)len, false)) return;
    }
}

/* ================================================================ the wrappers */
/* Run `call` with this thread marked as inside a load whose bytes got verdict v. */
#define PYB_RUN(v, expr)                                                       \
    do {                                                                       \
        spp_l2_t saved_ = spp_l2;                                              \
        spp_l2.in_load++;                                                      \
        if (spp_l2.in_load == 1 || (v) == SPA_VERDICT_COUNT ||                 \
            (spp_l2.verdict != SPA_VERDICT_COUNT && (v) > spp_l2.verdict))     \
            spp_l2.verdict = (uint8_t)(v);                                     \
        res = (expr);                                                          \
        pyb_leave(&saved_);                                                    \
    } while (0)

/* False inside our own calls and for a child process's bootstrap load
 * (pya_is_ipc_anchor: not judged); otherwise marks this thread busy. */
static bool pyb_busy_enter(void) {
    if (pya_t.busy) return false;
    pya_t.busy = 1;
    spp_pyobj *a = pya_find_anchor();
    bool boot = a && pya_is_ipc_anchor(a);
    if (a) py_Py_DecRef(a);
    if (boot) pya_t.busy = 0;
    return !boot;
}

/* The second part of a two-step guard (the bootstrap test already passed). */
static bool pyb_busy_again(void) {
    if (pya_t.busy) return false;
    pya_t.busy = 1;
    return true;
}

/* ================================================================ a refused Pool task */
/* multiprocessing.Pool's worker drops a task message it cannot load (it exits
 * on an OSError, which SafePickleBlocked is) and the parent waits for ever.
 * When the refused bytes were read by a Pool worker's task queue (the load is
 * called by SimpleQueue.get, or by Connection.recv under joblib's
 * CustomizablePicklingQueue.get, called by multiprocessing.pool's worker), the
 * worker is handed, instead of the task, one with the same job and index
 * (read from the message's head, pya_pool.c: Pool pickles (job, i, func, args, kwds)
 * with protocol >= 2) whose function raises the refusal, so the worker reports
 * the task as failed, the parent's get() raises SafePickleBlocked and the pool
 * goes on. Nothing of the refused message is unpickled. */

static bool pyb_frame_is(spp_pyobj *f, const char *module, const char *func) {
    pya_where w;
    char mod[SPP_PYA_PKG_MAX];
    pya_describe(f, &w);
    pya_frame_module(f, mod, sizeof mod);
    return !strcmp(w.func, func) && !strcmp(mod, module);
}

/* 1: this load is the task read of a multiprocessing.Pool worker; 2: the
 * result read of a Pool's result handler (parent); 0: neither. */
static int pyb_pool_context(void) {
    spp_pyobj *a = pya_find_anchor();
    if (!a) return 0;
    int k = pyb_frame_is(a, "multiprocessing.queues", "get") ? 1 :
            pyb_frame_is(a, "multiprocessing.connection", "recv") ? 2 : 0;
    if (k) {
        spp_pyobj *b = pya_back(a);
        if (k == 2 && b && pyb_frame_is(b, "joblib.pool", "get")) {
            /* joblib's MemmappingPool: the worker reads its task through
             * CustomizablePicklingQueue.get, a closure over Connection.recv */
            spp_pyobj *w = pya_back(b);
            k = w && pyb_frame_is(w, "multiprocessing.pool", "worker") ? 1 : 0;
            if (w) py_Py_DecRef(w);
        } else if (!b || !pyb_frame_is(b, "multiprocessing.pool", k == 1 ? "worker" : "_handle_results")) {
            k = 0;
        }
        if (b) py_Py_DecRef(b);
    }
    py_Py_DecRef(a);
    return k;
}

/* The task's function: raises the refusal it carries (self = (class, text)). */
static spp_pyobj *pyb_w_refused(spp_pyobj *self, spp_pyobj *unused) {
    py_PyErr_SetObject(py_PyTuple_GetItem(self, 0), py_PyTuple_GetItem(self, 1));
    return NULL;
}
static spp_pymethoddef pyb_refused_def = {"safepickle_refused", (void *)pyb_w_refused, SPP_METH_NOARGS, NULL};

/* With the refusal raised: a Pool task (job, i, refused, (), {}) in its place,
 * or, for a result refused in the parent, the result (job, i, (False, exc)), so
 * the caller's get() raises it (the result handler would exit on the OSError and
 * leave the pool waiting); NULL with the refusal left as it is. The task's
 * exception goes back to the parent pickled, so its text quotes nothing of the
 * message (a payload's own text would make the parent refuse the report). */
static spp_pyobj *pyb_pool_refused_task(spp_pyobj *data, spa_verdict v) {
    spp_pybuffer b;
    long long job = 0, idx = 0;
    bool none = false, ok = false;
    memset(&b, 0, sizeof b);
    if (py_PyObject_GetBuffer(data, &b, SPP_PYBUF_SIMPLE) == 0) {
        ok = pya_pool_head((const uint8_t *)b.buf, (size_t)b.len, &job, &idx, &none);
        py_PyBuffer_Release(&b);
    }
    int ctx = ok ? pyb_pool_context() : 0;
    if (!ctx) return NULL;
    char text[160];
    snprintf(text, sizeof text, "safepickle: blocked a multiprocessing.Pool %s message judged %s, see the "
             "%s stderr and the audit log", ctx == 1 ? "task" : "result",
             v < SPA_VERDICT_COUNT ? spa_verdict_name(v) : "unsafe", ctx == 1 ? "worker's" : "process's");
    py_PyErr_Clear(); /* the refusal travels in what is built here (or is raised again) */
    spp_pyobj *s = py_PyUnicode_FromString(text);
    spp_pyobj *self = NULL, *fn = NULL, *a = NULL, *k = NULL, *task = NULL;
    if (ctx == 1) {
        self = s ? py_PyTuple_Pack(2, pya_exception(), s) : NULL;
        fn = self ? py_PyCFunction_NewEx(&pyb_refused_def, self, NULL) : NULL;
        a = fn ? py_PyTuple_Pack(0) : NULL;
        k = a ? py_PyDict_New() : NULL;
    } else {
        self = s ? py_PyObject_CallFunctionObjArgs(pya_exception(), s, NULL) : NULL; /* the exception */
        if (!self) py_PyErr_Clear();
        k = self ? py_PyTuple_Pack(2, pya_false(), self) : NULL;
    }
    spp_pyobj *j = k ? py_PyLong_FromLongLong(job) : NULL;
    spp_pyobj *i = j ? (none ? (py_Py_IncRef(pya_none()), pya_none()) : py_PyLong_FromLongLong(idx)) : NULL;
    if (i) task = ctx == 1 ? py_PyTuple_Pack(5, j, i, fn, a, k) : py_PyTuple_Pack(3, j, i, k);
    spp_pyobj *tmp[] = {s, self, fn, j, i, a, k};
    for (size_t x = 0; x < sizeof tmp / sizeof *tmp; x++)
        if (tmp[x]) py_Py_DecRef(tmp[x]);
    if (!task) {
        py_PyErr_Clear();
        py_PyErr_SetString(pya_exception(), text);
    }
    return task;
}

/* loads(data, ...) with data in place of its first argument, the keywords
 * unchanged (vectorcall: nargs positional values, then one per keyword name). */
static spp_pyobj *pyb_loads_data(spp_pyobj *m, spp_pyobj *data, spp_pyobj *const *args, spp_pyssize nargs,
                                 spp_pyobj *kw, spa_verdict v) {
    spp_pyobj *a2[16], *res;
    spp_pyssize nkw = kw ? py_PyTuple_Size(kw) : 0;
    if (nargs < 1 || nargs + nkw > 16) {
        py_PyErr_SetString(*py_PyExc_OSError, "safepickle: too many arguments");
        return NULL;
    }
    a2[0] = data;
    for (spp_pyssize i = 1; i < nargs + nkw; i++) a2[i] = args[i];
    PYB_RUN(v, pyb_orig_loads(m, a2, nargs, kw));
    return res;
}

static spp_pyobj *pyb_w_loads(spp_pyobj *m, spp_pyobj *const *args, spp_pyssize nargs, spp_pyobj *kw) {
    spa_verdict v = SPA_VERDICT_COUNT;
    spp_pyobj *copy = NULL;
    if (nargs >= 1 && pyb_busy_enter()) {
        int rc = pyb_judge_data(args[0], "pickle.loads", &v, &copy);
        if (rc < 0) {
            spp_pyobj *task = rc == -1 ? pyb_pool_refused_task(copy ? copy : args[0], v) : NULL;
            pya_t.busy = 0;
            if (copy) py_Py_DecRef(copy);
            return task;
        }
        pya_t.busy = 0;
    }
    if (copy) { /* the unpickler reads the bytes judged, not the buffer that may change */
        spp_pyobj *res = pyb_loads_data(m, copy, args, nargs, kw, v);
        py_Py_DecRef(copy);
        return res;
    }
    spp_pyobj *res;
    PYB_RUN(v, pyb_orig_loads(m, args, nargs, kw));
    return res;
}

/* Judge what a load from file object f will run. PYB_STREAM: *data receives
 * the one pickle read from the stream (judged), for the caller to load. */
static pyb_kind pyb_guard_file(spp_pyobj *f, const char *call, spa_verdict *v, spp_pyobj **data) {
    *data = NULL;
    if (!pyb_busy_enter()) return PYB_NONE;
    pyb_kind k = pyb_judge_file(f, call, v);
    if (k == PYB_STREAM) {
        pyb_buf b = {0};
        pyb_read_pickle(f, &b);
        if (b.limit) {
            const spa_policy *pol = spp_policy();
            spa_action act = pol ? spa_policy_act(pol, pol->on_limit) : SPA_ACT_BLOCK;
            static const spa_reason lim = {SPA_VERDICT_UNSCANNABLE, "runtime.limit",
                                           "pickle stream too large to judge in memory", "<stream>", 0};
            if (pya_report_bytes(act, SPA_VERDICT_UNSCANNABLE, call, &lim, 1, NULL, false, false) < 0)
                k = PYB_BLOCKED;
        } else if (pyb_judge(b.p ? b.p : (const uint8_t *)"", b.n, call, v) < 0) {
            k = PYB_BLOCKED;
        }
        if (k == PYB_STREAM) {
            *data = py_PyBytes_FromStringAndSize((const char *)(b.p ? b.p : (uint8_t *)""), (spp_pyssize)b.n);
            if (!*data) k = PYB_BLOCKED; /* MemoryError stays set */
        }
        free(b.p);
    }
    pya_t.busy = 0;
    return k;
}

static spp_pyobj *pyb_w_load(spp_pyobj *m, spp_pyobj *const *args, spp_pyssize nargs, spp_pyobj *kw) {
    spa_verdict v = SPA_VERDICT_COUNT;
    spp_pyobj *data = NULL, *res;
    pyb_kind k = nargs >= 1 ? pyb_guard_file(args[0], "pickle.load", &v, &data) : PYB_NONE;
    if (k == PYB_BLOCKED) return NULL;
    if (k == PYB_STREAM) {
        /* load(stream) == loads(the pickle read from it): same keywords. */
        res = pyb_loads_data(m, data, args, nargs, kw, v);
        py_Py_DecRef(data);
        return res;
    }
    PYB_RUN(v, pyb_orig_load(m, args, nargs, kw));
    return res;
}

/* The file an Unpickler reads: the object its bound `read` method belongs
 * to, found among the unpickler's references (gc.get_referents). New
 * reference or NULL. */
static spp_pyobj *pyb_unpickler_file(spp_pyobj *self) {
    spp_pyobj *gc = py_PyImport_ImportModule("gc");
    spp_pyobj *refs = gc ? py_PyObject_CallMethod(gc, "get_referents", "O", self) : NULL;
    if (gc) py_Py_DecRef(gc);
    spp_pyobj *file = NULL;
    spp_pyssize n = refs ? py_PyList_Size(refs) : 0;
    for (spp_pyssize i = 0; i < n && !file; i++) {
        spp_pyobj *o = py_PyList_GetItem(refs, i); /* borrowed */
        char nm[16];
        spp_pyobj *name = o ? pya_getattr(o, "__name__") : NULL;
        bool is_read = name && pya_utf8(name, nm, sizeof nm) && strcmp(nm, "read") == 0;
        if (name) py_Py_DecRef(name);
        if (is_read) {
            file = pya_getattr(o, "__self__");
            if (file && pya_is_none(file)) { py_Py_DecRef(file); file = NULL; }
        }
    }
    if (refs) py_Py_DecRef(refs);
    py_PyErr_Clear();
    return file;
}

/* Unpickler.load: judged through the file it reads. Over a stream the bytes
 * cannot be handed back to this unpickler, so the load is judged by names
 * and behaviour only (README, "Bytes first", limits). */
static spa_verdict pyb_guard_unpickler(spp_pyobj *self, bool *blocked) {
    spa_verdict v = SPA_VERDICT_COUNT;
    *blocked = false;
    if (!pyb_busy_enter()) return v;
    spp_pyobj *f = pyb_unpickler_file(self);
    pya_t.busy = 0;
    if (!f) return v;
    if (pyb_busy_again()) {
        pyb_kind k = pyb_judge_file(f, "pickle.Unpickler.load", &v);
        pya_t.busy = 0;
        *blocked = k == PYB_BLOCKED;
        if (k == PYB_STREAM) v = SPA_VERDICT_COUNT;
    }
    py_Py_DecRef(f);
    return v;
}

static spp_pyobj *pyb_w_uload_noargs(spp_pyobj *self, spp_pyobj *unused) {
    bool blocked;
    spa_verdict v = pyb_guard_unpickler(self, &blocked);
    if (blocked) return NULL;
    spp_pyobj *res;
    PYB_RUN(v, ((pyb_noargs_fn)pyb_orig_uload)(self, unused));
    return res;
}

static spp_pyobj *pyb_w_uload_meth(spp_pyobj *self, void *cls, spp_pyobj *const *args, size_t nargsf,
                                   spp_pyobj *kw) {
    bool blocked;
    spa_verdict v = pyb_guard_unpickler(self, &blocked);
    if (blocked) return NULL;
    spp_pyobj *res;
    PYB_RUN(v, ((pyb_methkw_fn)pyb_orig_uload)(self, cls, args, nargsf, kw));
    return res;
}

/* ---------------------------------------------------------------- pickle._Unpickler */
/* The pure-Python unpickler (pickle._Unpickler, and through it joblib's and
 * pandas' subclasses) runs Python code, not a C method: its class gets a
 * `load` that is an instance method around a C function holding the original
 * function, so `unpickler.load()` judges the file it reads first. */
static spp_pyobj *pyb_w_pyload(spp_pyobj *orig, spp_pyobj *self) {
    spa_verdict v = SPA_VERDICT_COUNT;
    if (pyb_busy_enter()) {
        spp_pyobj *rd = pya_getattr(self, "_file_read");
        spp_pyobj *f = rd ? pya_getattr(rd, "__self__") : NULL;
        if (rd) py_Py_DecRef(rd);
        pyb_kind k = f ? pyb_judge_file(f, "pickle._Unpickler.load", &v) : PYB_NONE;
        if (f) py_Py_DecRef(f);
        pya_t.busy = 0;
        if (k == PYB_BLOCKED) return NULL;
        if (k == PYB_STREAM) v = SPA_VERDICT_COUNT; /* judged by names and behaviour */
    }
    spp_pyobj *res;
    PYB_RUN(v, py_PyObject_CallFunctionObjArgs(orig, self, NULL));
    return res;
}

static spp_pymethoddef pyb_pyload_def = {"load", (void *)pyb_w_pyload, SPP_METH_O, NULL};
static atomic_int pyb_py_state; /* 0 not yet, 1 patched, 2 not patchable */

/* Patch pickle._Unpickler.load once the pure-Python class exists. */
static void pyb_patch_python(void) {
    if (atomic_load(&pyb_py_state) != 0) return;
    spp_pyobj *name = py_PyUnicode_FromString("pickle");
    spp_pyobj *mod = name ? py_PyImport_GetModule(name) : NULL;
    if (name) py_Py_DecRef(name);
    spp_pyobj *cls = mod && !pya_is_none(mod) ? pya_getattr(mod, "_Unpickler") : NULL;
    if (mod) py_Py_DecRef(mod);
    py_PyErr_Clear();
    if (!cls) return; /* not loaded yet: the next import event tries again */
    spp_pyobj *dict = pya_getattr(cls, "__dict__");
    spp_pyobj *orig = dict ? py_PyMapping_GetItemString(dict, "load") : NULL;
    py_PyErr_Clear();
    spp_pyobj *fn = orig ? py_PyCFunction_NewEx(&pyb_pyload_def, orig, NULL) : NULL;
    spp_pyobj *meth = fn ? py_PyInstanceMethod_New(fn) : NULL;
    bool ok = meth && py_PyObject_SetAttrString(cls, "load", meth) == 0;
    py_PyErr_Clear();
    spp_pyobj *all[] = {cls, dict, orig, fn, meth};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i]) py_Py_DecRef(all[i]);
    atomic_store(&pyb_py_state, ok ? 1 : 2);
    if (!ok) {
        static const char m[] = "safepickle: layer 2 cannot wrap pickle._Unpickler.load; pure-Python unpickles "
                                "are judged by names and behaviour only\n";
        spp_write_stderr(m, sizeof m - 1);
    }
}

/* ================================================================ install */
/* Is [p, p+n) in a writable mapping of this process? (/proc/self/maps) */
static bool pyb_writable(const void *p, size_t n) {
    FILE *m = fopen("/proc/self/maps", "re");
    if (!m) return false;
    uintptr_t a = (uintptr_t)p, b = a + n;
    bool ok = false;
    char line[512];
    while (fgets(line, sizeof line, m)) {
        unsigned long lo, hi;
        char perms[8];
        if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) == 3 && a >= lo && b <= hi) {
            ok = perms[1] == 'w';
            break;
        }
    }
    fclose(m);
    return ok;
}

/* The PyMethodDef behind a builtin function (PyCFunctionObject: header, then
 * m_ml) or a method descriptor (PyDescr_COMMON: header, d_type, d_name,
 * d_qualname, then d_method), checked by name. */
static spp_pymethoddef *pyb_def(spp_pyobj *o, size_t off, const char *name) {
    if (!o) return NULL;
    spp_pymethoddef *d = *(spp_pymethoddef **)((char *)o + off);
    if (!d || !pyb_writable(d, sizeof *d) || !d->ml_name || strcmp(d->ml_name, name) != 0) return NULL;
    return d;
}

#define PYB_OBJ_HEAD (2 * sizeof(void *))

static bool pyb_patch(spp_pyobj *mod) {
    spp_pyobj *loads = pya_getattr(mod, "loads"), *load = pya_getattr(mod, "load");
    spp_pyobj *cls = pya_getattr(mod, "Unpickler");
    spp_pyobj *dict = cls ? pya_getattr(cls, "__dict__") : NULL;
    spp_pyobj *uload = dict ? py_PyMapping_GetItemString(dict, "load") : NULL;
    py_PyErr_Clear();
    spp_pymethoddef *dl = pyb_def(loads, PYB_OBJ_HEAD, "loads");
    spp_pymethoddef *dm = pyb_def(load, PYB_OBJ_HEAD, "load");
    spp_pymethoddef *du = pyb_def(uload, PYB_OBJ_HEAD + 3 * sizeof(void *), "load");
    const int fkw = SPP_METH_FASTCALL | SPP_METH_KEYWORDS;
    bool ok = dl && dm && du && (dl->ml_flags & ~0x70) == fkw && (dm->ml_flags & ~0x70) == fkw &&
              ((du->ml_flags & ~0x70) == SPP_METH_NOARGS || (du->ml_flags & ~0x70) == (SPP_METH_METHOD | fkw));
    if (ok && dl->ml_meth != (void *)pyb_w_loads) {
        pyb_orig_loads = (pyb_fastkw_fn)dl->ml_meth;
        pyb_orig_load = (pyb_fastkw_fn)dm->ml_meth;
        pyb_orig_uload = du->ml_meth;
        pyb_uload_flags = du->ml_flags & ~0x70;
        dl->ml_meth = (void *)pyb_w_loads;
        dm->ml_meth = (void *)pyb_w_load;
        du->ml_meth = pyb_uload_flags == SPP_METH_NOARGS ? (void *)pyb_w_uload_noargs : (void *)pyb_w_uload_meth;
    }
    spp_pyobj *all[] = {loads, load, cls, dict, uload};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i]) py_Py_DecRef(all[i]);
    return ok;
}

bool pya_bytes_c_done(void) { return atomic_load_explicit(&pyb_state, memory_order_relaxed) != 0; }

bool pya_bytes_installed(void) {
    return atomic_load_explicit(&pyb_state, memory_order_relaxed) != 0 &&
           atomic_load_explicit(&pyb_py_state, memory_order_relaxed) != 0;
}

void pya_bytes_install(const char *trigger) {
    int expect = 0;
    if (atomic_load(&pyb_state) != 0) {
        pyb_patch_python();
        return;
    }
    if (!atomic_compare_exchange_strong(&pyb_state, &expect, 2)) return;
    /* At `import pickle` (before its body runs) we import it ourselves, so
     * both unpicklers exist and are wrapped before anyone can call them. */
    spp_pyobj *pk = trigger && !strcmp(trigger, "pickle") ? py_PyImport_ImportModule("pickle") : NULL;
    if (pk) py_Py_DecRef(pk);
    py_PyErr_Clear();
    pyb_patch_python();
    spp_pyobj *mod = py_PyImport_ImportModule("_pickle");
    bool ok = mod && pyb_patch(mod);
    if (mod) py_Py_DecRef(mod);
    py_PyErr_Clear();
    if (ok) {
        atomic_store(&pyb_state, 1);
        return;
    }
    /* Never silently: without the wrappers in-memory loads are judged by
     * names and behaviour only. */
    static const char m[] = "safepickle: layer 2 cannot judge in-memory pickle bytes in this Python (_pickle "
                            "not patchable); in-memory loads are judged by names and behaviour only\n";
    spp_write_stderr(m, sizeof m - 1);
}
