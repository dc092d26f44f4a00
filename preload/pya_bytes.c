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
    spp_l2.resolved = saved->resolved;
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
    /* a file the load opens by name is judged at that open when layer 1 acts here */
    o.opens_judged = spp_active;
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

/* The regular file behind f's fileno(), or -1 (none, not regular, the file
 * hooks off). */
static int pyb_regular_fd(spp_pyobj *f) {
    const spa_policy *pol = spp_policy();
    if (!pol || !pol->layer_file || !py_PyObject_HasAttrString(f, "fileno")) return -1;
    if (py_PyObject_HasAttrString(f, "rollover")) {
        /* tempfile.SpooledTemporaryFile: fileno() would move it to disk;
         * while it is in memory it is judged like any in-memory stream */
        spp_pyobj *rolled = pya_getattr(f, "_rolled");
        int on_disk = rolled ? py_PyObject_IsTrue(rolled) : 1;
        if (rolled) py_Py_DecRef(rolled);
        py_PyErr_Clear();
        if (on_disk == 0) return -1;
    }
    long fd = pyb_call_long(f, "fileno");
    struct stat st;
    if (fd < 0 || fd > INT32_MAX || fstat((int)fd, &st) != 0 || !S_ISREG(st.st_mode)) return -1;
    return (int)fd;
}

/* A file whose bytes layer 1 judged pickle-bearing and allowed: the regular
 * file fd, whose verdict is still in the verdict cache. Its verdict is layer
 * 1's. Anything else (judged not pickle-bearing, which an unpickler reading
 * it contradicts; no longer cached) is not taken from layer 1. */
static bool pyb_layer1_file(int fd, spa_verdict *v) {
    struct stat st;
    if (fstat(fd, &st) != 0) return false;
    spp_key k;
    spp_key_from_stat(&k, &st);
    spp_cached c;
    bool judged = false;
    if (spp_cache_get(&k, &c)) {
        if ((judged = c.bearing && c.action != SPA_ACT_BLOCK)) *v = (spa_verdict)c.verdict;
        spp_cached_release(&c);
    }
    return judged;
}

/* Is o a plain file object: exactly an io.FileIO, or exactly an
 * io.BufferedReader/BufferedRandom over one? Its tell() is then the
 * file's own position (a subclass may count it otherwise). */
static bool pyb_plain_file(spp_pyobj *o) {
    static const char *const names[] = {"FileIO", "BufferedReader", "BufferedRandom"};
    spp_pyobj *io = py_PyImport_ImportModule("io");
    spp_pyobj *t = io ? py_PyObject_Type(o) : NULL;
    int which = -1;
    for (int i = 0; t && which < 0 && i < 3; i++) {
        spp_pyobj *c = pya_getattr(io, names[i]);
        if (c == t) which = i;
        if (c) py_Py_DecRef(c);
    }
    bool plain = which == 0;
    if (which > 0) { /* a buffered file: plain when its raw file is */
        spp_pyobj *raw = pya_getattr(o, "raw");
        spp_pyobj *rt = raw ? py_PyObject_Type(raw) : NULL;
        spp_pyobj *fio = rt ? pya_getattr(io, "FileIO") : NULL;
        plain = fio && rt == fio;
        spp_pyobj *tmp[] = {raw, rt, fio};
        for (size_t i = 0; i < sizeof tmp / sizeof *tmp; i++)
            if (tmp[i]) py_Py_DecRef(tmp[i]);
    }
    if (t) py_Py_DecRef(t);
    if (io) py_Py_DecRef(io);
    py_PyErr_Clear();
    return plain;
}

/* Does f read the regular file fd from the file's start when its tell() is
 * 0? A plain file does (its tell() is the file's position). Any other object
 * that forwards fileno() - gzip.GzipFile, bz2.BZ2File, lzma.LZMAFile,
 * joblib's compressor files, an io.BufferedReader over one, a subclass of a
 * file - counts tell() in its own bytes, from where the file it wraps stood
 * when it was made: made over a file positioned after a header or another
 * stream, it says "offset 0" while it reads a stream layer 1 never examined
 * (test_layer2_wrappers.py). Its chain of wrapped files (fileobj, _fp, _file,
 * file, f, raw) is followed down to a plain file of fd, whose own position must
 * be 0 (nothing of the stream read yet, so it starts at the file's start);
 * with no such chain, fd's offset must be 0. plain: pyb_plain_file(f), which
 * the caller has already asked. */
static bool pyb_reads_from_start(spp_pyobj *f, int fd, bool plain) {
    static const char *const attrs[] = {"fileobj", "_fp", "_file", "file", "f", "raw"};
    if (plain) return true;
    spp_pyobj *o = f;
    py_Py_IncRef(o);
    for (int depth = 0; depth < 8; depth++) {
        spp_pyobj *next = NULL;
        for (size_t i = 0; !next && i < sizeof attrs / sizeof *attrs; i++) {
            next = pya_getattr(o, attrs[i]);
            py_PyErr_Clear();
            if (next && (pya_is_none(next) || next == o || !py_PyObject_HasAttrString(next, "read"))) {
                py_Py_DecRef(next);
                next = NULL;
            }
        }
        py_Py_DecRef(o);
        if (!next) break;
        if (pyb_plain_file(next)) {
            bool start = pyb_call_long(next, "fileno") == fd && pyb_call_long(next, "tell") == 0;
            py_Py_DecRef(next);
            return start;
        }
        o = next;
        if (depth == 7) py_Py_DecRef(o);
    }
    return lseek(fd, 0, SEEK_CUR) == 0;
}

typedef enum pyb_kind { PYB_NONE, PYB_JUDGED, PYB_STREAM, PYB_BLOCKED } pyb_kind;
typedef struct pyb_buf { uint8_t *p; size_t n, cap; bool eof, limit; } pyb_buf;
static void pyb_read_pickle_ahead(spp_pyobj *f, pyb_buf *b, size_t *end);
static bool pyb_limit_refused(const char *call);

/* Judge what a file object holds from its current position, without moving
 * it. A regular file behind fileno() has layer 1's verdict. Another seekable
 * object (an io.BytesIO, a BufferedReader over one, an in-memory
 * SpooledTemporaryFile) is read to its end and sought back; the bytes read
 * are judged and handed to the caller (*snap, a new reference to a bytes
 * object, *base its position) so that the unpickler can be held to them
 * (pyb_pin). A non-seekable object is a stream (PYB_STREAM): the caller reads
 * exactly one pickle from it. */
static pyb_kind pyb_judge_file(spp_pyobj *f, const char *call, bool one, bool stream_ok, spa_verdict *v,
                               spp_pyobj **snap, long *base) {
    *v = SPA_VERDICT_COUNT;
    *snap = NULL;
    *base = 0;
    if (!f || pya_is_none(f)) return PYB_NONE;
    int seekable = py_PyObject_HasAttrString(f, "seekable") ? pyb_call_bool(f, "seekable") : 0;
    if (seekable <= 0) return py_PyObject_HasAttrString(f, "read") ? PYB_STREAM : PYB_NONE;
    long pos = pyb_call_long(f, "tell");
    /* A wrapper over a regular file that does not read it from the file's
     * start (pyb_reads_from_start; any wrapper past its own 0 has moved its
     * file) is read as a stream: one pickle through its STOP, judged, never
     * sought back (a decompressing wrapper seeks back by rewinding its file
     * to the file's absolute start). Not for an unpickler that keeps its file
     * (stream_ok false): it is read ahead and pinned, as any seekable object. */
    int fd = pyb_regular_fd(f);
    bool plain = fd >= 0 && pyb_plain_file(f);
    bool from_start = fd >= 0 && pyb_reads_from_start(f, fd, plain);
    if (fd >= 0 && stream_ok && (!from_start || (pos != 0 && !plain))) return PYB_STREAM;
    /* Layer 1 judged the file from its first byte, as an unpickler reads it
     * from there: its verdict stands for a load that starts at 0. A load
     * that starts elsewhere (a seek to an offset, a pickle after another
     * format's header, inside a string constant or after bytes no unpickler
     * gets past) may read a stream layer 1 never examined: judged here. */
    if (pos == 0 && from_start && pyb_layer1_file(fd, v)) return PYB_JUDGED;
    if (pos < 0) return PYB_STREAM;
    spp_pyobj *data = NULL;
    bool limit = false;
    if (one) {
        /* the one pickle this load reads: a buffer of many pickles loaded one by
         * one costs each load its own pickle, not the rest of the buffer */
        pyb_buf b = {0};
        size_t end = 0;
        pyb_read_pickle_ahead(f, &b, &end);
        limit = b.limit;
        if (!limit) data = py_PyBytes_FromStringAndSize((const char *)(b.p ? b.p : (uint8_t *)""), (spp_pyssize)end);
        free(b.p);
    } else {
        /* a BytesIO read from 0 to its end hands out its own bytes object: no copy */
        data = py_PyObject_CallMethod(f, "read", NULL);
    }
    spp_pyobj *back = py_PyObject_CallMethod(f, "seek", "l", pos);
    if (back) py_Py_DecRef(back);
    else py_PyErr_Clear();
    if (limit) return pyb_limit_refused(call) ? PYB_BLOCKED : PYB_NONE;
    if (!data) { py_PyErr_Clear(); return PYB_NONE; }
    spp_pyobj *copy = NULL;
    int rc = pyb_judge_data(data, call, v, &copy);
    if (copy) {
        py_Py_DecRef(data);
        data = copy;
    }
    if (rc == 1) {
        *snap = data;
        *base = pos;
        return PYB_JUDGED;
    }
    py_Py_DecRef(data);
    return rc < 0 ? PYB_BLOCKED : PYB_NONE;
}

/* ---------------------------------------------------------------- pinned streams */
/* The unpickler of an in-memory stream reads the stream as it goes, after its
 * bytes were judged: code holding the stream (another thread, a find_class or
 * persistent_load override, a __setstate__ of an earlier object) could
 * rewrite it in between. So the unpickler is handed, in place of the file's
 * read, readinto, readline and peek, functions that call them and check what
 * they return against the bytes judged (the pin), at the place the unpickler
 * has reached in them; the first byte that differs refuses the load. The
 * file's own methods are called, with the same arguments in the same order,
 * so the stream is left exactly as without the preload. The pure-Python
 * unpickler (joblib's NumpyUnpickler) shares its file with code that reads
 * array bytes from it between pickle opcodes: for it a forward move of the
 * file is followed (its position, from tell(), must lie in the bytes judged). */
enum { PYB_RD, PYB_RDINTO, PYB_RDLINE, PYB_PEEK, PYB_NMETH };
static const char *const pyb_meth[PYB_NMETH] = {"read", "readinto", "readline", "peek"};
#define PYB_PIN_NAME "safepickle.pin"
#define PYB_OBJ_HEAD (2 * sizeof(void *)) /* PyObject_HEAD: refcount, type */

typedef struct pyb_pin {
    spp_pyobj *snap, *file, *orig[PYB_NMETH];
    const uint8_t *p;
    size_t n, e;  /* the bytes judged; how far the unpickler has read into them */
    long base;    /* the file's position when they were judged */
    bool jumps;   /* follow forward moves of the file (pickle._Unpickler) */
    bool off;     /* a difference was reported and allowed (monitor mode) */
    const char *call;
    spp_pyobj *et, *ev, *tb; /* the refusal: raised again if the unpickler replaced it */
} pyb_pin;

static void pyb_pin_free(spp_pyobj *cap) {
    pyb_pin *pin = py_PyCapsule_GetPointer(cap, PYB_PIN_NAME);
    if (!pin) { py_PyErr_Clear(); return; }
    if (pin->snap) py_Py_DecRef(pin->snap);
    if (pin->file) py_Py_DecRef(pin->file);
    spp_pyobj *o[] = {pin->orig[0], pin->orig[1], pin->orig[2], pin->orig[3], pin->et, pin->ev, pin->tb};
    for (size_t i = 0; i < sizeof o / sizeof *o; i++)
        if (o[i]) py_Py_DecRef(o[i]);
    free(pin);
}

/* The C unpickler turns an UnpicklingError met while reading an opcode into
 * EOFError ("Ran out of input"), which a reader loop takes for the end of its
 * data: a load that failed after the pin refused it raises the refusal. */
static void pyb_pin_reraise(pyb_pin *pin, spp_pyobj *res) {
    if (res || !pin || !pin->ev) return;
    py_PyErr_Clear();
    py_PyErr_Restore(pin->et, pin->ev, pin->tb); /* steals them */
    pin->et = pin->ev = pin->tb = NULL;
}

/* Do the len bytes at b, just read (advance) or peeked, continue the bytes judged? */
static int pyb_pin_check(pyb_pin *pin, const uint8_t *b, size_t len, bool advance) {
    /* a peek (read-ahead, not consumed) may reach past the one pickle judged:
     * what lies past its STOP is not read by this load */
    if (!advance && pin->e <= pin->n && len > pin->n - pin->e) len = pin->n - pin->e;
    if (len == 0 || pin->off) return 0;
    if (pin->e <= pin->n && len <= pin->n - pin->e && memcmp(pin->p + pin->e, b, len) == 0) {
        if (advance) pin->e += len;
        return 0;
    }
    if (pin->jumps) {
        long t = pyb_call_long(pin->file, "tell");
        long q = t - pin->base - (advance ? (long)len : 0);
        if (t >= 0 && q >= (long)pin->e && (size_t)q <= pin->n && len <= pin->n - (size_t)q &&
            memcmp(pin->p + q, b, len) == 0) {
            pin->e = (size_t)q + (advance ? len : 0);
            return 0;
        }
    }
    const spa_policy *pol = spp_policy();
    spa_action act = spa_policy_act(pol, SPA_ACT_BLOCK);
    spa_reason why = {SPA_VERDICT_UNSCANNABLE, "runtime.stream_changed",
                      "the stream changed after its bytes were judged (the unpickler read other bytes)",
                      "<stream>", (uint64_t)pin->base + pin->e};
    if (pya_report_bytes(act, SPA_VERDICT_UNSCANNABLE, pin->call, &why, 1, NULL, false, false) < 0) {
        if (!pin->ev) {
            py_PyErr_Fetch(&pin->et, &pin->ev, &pin->tb);
            spp_pyobj *keep[] = {pin->et, pin->ev, pin->tb};
            for (int i = 0; i < 3; i++)
                if (keep[i]) py_Py_IncRef(keep[i]);
            py_PyErr_Restore(pin->et, pin->ev, pin->tb);
        }
        return -1;
    }
    pin->off = true;
    return 0;
}

/* The file's method `which`, called with the unpickler's arguments; what it
 * returns is checked against the pin and handed back unchanged. */
static spp_pyobj *pyb_pin_call(spp_pyobj *cap, spp_pyobj *args, spp_pyobj *kw, int which) {
    pyb_pin *pin = py_PyCapsule_GetPointer(cap, PYB_PIN_NAME);
    if (!pin || !pin->orig[which]) return NULL;
    spp_pyobj *r = py_PyObject_Call(pin->orig[which], args, kw);
    if (!r || pin->off) return r;
    spp_pyobj *src = which == PYB_RDINTO ? pya_arg(args, 0) : r;
    long got = -1;
    if (which == PYB_RDINTO) {
        got = pya_is_none(r) ? 0 : py_PyLong_AsLong(r);
        if (got < 0) py_PyErr_Clear();
    }
    spp_pybuffer b;
    memset(&b, 0, sizeof b);
    int rc;
    if (!src || (which == PYB_RDINTO && got < 0) || py_PyObject_GetBuffer(src, &b, SPP_PYBUF_SIMPLE) != 0) {
        py_PyErr_Clear(); /* not bytes: never the bytes judged */
        rc = pyb_pin_check(pin, (const uint8_t *)"", 1, false) < 0 ? -1 : 0;
        if (rc == 0) pin->off = true;
    } else {
        size_t len = which == PYB_RDINTO ? ((size_t)got < (size_t)b.len ? (size_t)got : (size_t)b.len) : (size_t)b.len;
        rc = pyb_pin_check(pin, b.buf, len, which != PYB_PEEK);
        py_PyBuffer_Release(&b);
    }
    if (rc < 0) {
        py_Py_DecRef(r);
        return NULL;
    }
    return r;
}

static spp_pyobj *pyb_pin_read(spp_pyobj *c, spp_pyobj *a, spp_pyobj *k) { return pyb_pin_call(c, a, k, PYB_RD); }
static spp_pyobj *pyb_pin_readinto(spp_pyobj *c, spp_pyobj *a, spp_pyobj *k) { return pyb_pin_call(c, a, k, PYB_RDINTO); }
static spp_pyobj *pyb_pin_readline(spp_pyobj *c, spp_pyobj *a, spp_pyobj *k) { return pyb_pin_call(c, a, k, PYB_RDLINE); }
static spp_pyobj *pyb_pin_peek(spp_pyobj *c, spp_pyobj *a, spp_pyobj *k) { return pyb_pin_call(c, a, k, PYB_PEEK); }
static spp_pymethoddef pyb_pin_defs[PYB_NMETH] = {
    {"read", (void *)pyb_pin_read, SPP_METH_VARARGS | SPP_METH_KEYWORDS, NULL},
    {"readinto", (void *)pyb_pin_readinto, SPP_METH_VARARGS | SPP_METH_KEYWORDS, NULL},
    {"readline", (void *)pyb_pin_readline, SPP_METH_VARARGS | SPP_METH_KEYWORDS, NULL},
    {"peek", (void *)pyb_pin_peek, SPP_METH_VARARGS | SPP_METH_KEYWORDS, NULL},
};

/* A pin on the bytes judged (steals snap) for the file's methods in orig
 * (borrowed; NULL: the unpickler does not use that one); the functions that
 * stand for them go to proxy[] (new references, NULL where orig is), the pin
 * to *out (valid while they live). Returns false with an exception set (no
 * memory): the load must not run. */
static bool pyb_pin_new(spp_pyobj *file, spp_pyobj *snap, long base, bool jumps, const char *call,
                        spp_pyobj *const orig[PYB_NMETH], spp_pyobj *proxy[PYB_NMETH], pyb_pin **out) {
    pyb_pin *pin = calloc(1, sizeof *pin);
    *out = NULL;
    spp_pyobj *cap = pin ? py_PyCapsule_New(pin, PYB_PIN_NAME, pyb_pin_free) : NULL;
    memset(proxy, 0, PYB_NMETH * sizeof *proxy);
    if (!cap) {
        free(pin);
        py_Py_DecRef(snap);
        if (!py_PyErr_Occurred()) py_PyErr_SetString(*py_PyExc_OSError, "safepickle: no memory to pin a stream");
        return false;
    }
    pin->snap = snap; /* exactly a bytes object (pyb_judge_data): its bytes cannot change nor move */
    spp_pybuffer b;
    memset(&b, 0, sizeof b);
    if (py_PyObject_GetBuffer(snap, &b, SPP_PYBUF_SIMPLE) == 0) {
        pin->p = b.buf;
        pin->n = (size_t)b.len;
        py_PyBuffer_Release(&b);
    } else {
        py_PyErr_Clear(); /* nothing to compare with: every read differs */
    }
    pin->file = file;
    py_Py_IncRef(file);
    pin->base = base;
    pin->jumps = jumps;
    pin->call = call;
    bool ok = true;
    for (int i = 0; i < PYB_NMETH && ok; i++) {
        if (!orig[i]) continue;
        pin->orig[i] = orig[i];
        py_Py_IncRef(orig[i]);
        proxy[i] = py_PyCFunction_NewEx(&pyb_pin_defs[i], cap, NULL);
        ok = proxy[i] != NULL;
    }
    py_Py_DecRef(cap); /* the proxies hold it: *out lives as long as they do */
    if (!ok)
        for (int i = 0; i < PYB_NMETH; i++)
            if (proxy[i]) { py_Py_DecRef(proxy[i]); proxy[i] = NULL; }
    if (ok) *out = pin;
    return ok;
}

/* ---------------------------------------------------------------- streams */
/* Read exactly one pickle (through STOP) from a stream, opcode by opcode, so
 * the reader never waits for a byte the unpickler would not have waited for.
 * A malformed stream ends the read; the unpickler then fails on the same bytes. */
#define PYB_STREAM_MAX ((size_t)1 << 31) /* beyond: the policy's on_limit */

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

/* Walk the opcodes of one pickle in p[0..n) from *at, the offset of the next
 * opcode: 1 at its STOP (*at just past it), 0 when the next opcode is not all
 * there (*need more bytes, or *line: a line), -1 where the unpickler fails too
 * (not an opcode, a negative length; *limit: a length over PYB_STREAM_MAX). */
static int pyb_walk(const uint8_t *p, size_t n, size_t *at, size_t *need, bool *line, bool *limit) {
    static const int width[] = {[SPA_ARG_U1] = 1, [SPA_ARG_U2] = 2, [SPA_ARG_S4] = 4, [SPA_ARG_U4] = 4,
                                [SPA_ARG_U8] = 8, [SPA_ARG_F8] = 8, [SPA_ARG_CNT1] = 1, [SPA_ARG_CNT4] = 4,
                                [SPA_ARG_CNT4S] = 4, [SPA_ARG_CNT8] = 8};
    *need = 0;
    *line = false;
    for (;;) {
        size_t i = *at;
        if (i >= n) { *need = 1; return 0; }
        uint8_t op = p[i];
        if (op == SPA_OP_STOP) { *at = i + 1; return 1; }
        const spa_opinfo *oi = spa_op_info(op);
        if (!oi) return -1; /* not an opcode: the unpickler fails here too */
        int k = oi->kind;
        if (k == SPA_ARG_LINE || k == SPA_ARG_LINE2) {
            const uint8_t *e = memchr(p + i + 1, '\n', n - i - 1);
            if (e && k == SPA_ARG_LINE2) e = memchr(e + 1, '\n', (size_t)(p + n - e - 1));
            if (!e) { *line = true; return 0; }
            *at = (size_t)(e - p) + 1;
            continue;
        }
        if (k == SPA_ARG_NONE) { *at = i + 1; continue; }
        size_t w = (size_t)width[k];
        if (n - i - 1 < w) { *need = w - (n - i - 1); return 0; }
        if (k < SPA_ARG_CNT1 || op == SPA_OP_FRAME) { *at = i + 1 + w; continue; } /* a frame's body is opcodes */
        uint64_t len = pyb_le(p + i + 1, (int)w);
        if (k == SPA_ARG_CNT4S && (len & 0x80000000u)) return -1;
        if (len > PYB_STREAM_MAX) { *limit = true; return -1; }
        if (n - i - 1 - w < len) { *need = (size_t)len - (n - i - 1 - w); return 0; }
        *at = i + 1 + w + (size_t)len;
    }
}

/* Read exactly one pickle from f, never a byte more: what each next opcode
 * needs, then its argument. */
static int pyb_read_pickle(spp_pyobj *f, pyb_buf *b) {
    size_t at = 0, need;
    bool line;
    int r;
    while ((r = pyb_walk(b->p, b->n, &at, &need, &line, &b->limit)) == 0)
        if (!(line ? pyb_read(f, b, 0, true) : pyb_read(f, b, need, false))) return 0;
    return r; /* 1 through its STOP, 0 the stream ended first, -1 a byte that is no opcode (pyb_walk) */
}

/* One pickle from a seekable f, read in growing chunks (a file in memory:
 * reading past its STOP costs nothing but the copy; the caller seeks back):
 * *end is where it ends in b (b->n when it does not end). */
static void pyb_read_pickle_ahead(spp_pyobj *f, pyb_buf *b, size_t *end) {
    size_t at = 0, need, chunk = 8192;
    bool line;
    int r;
    bool more = true;
    while ((r = pyb_walk(b->p, b->n, &at, &need, &line, &b->limit)) == 0 && more) {
        size_t want = need > chunk ? need : chunk;
        more = pyb_read(f, b, want, false); /* false at the end: what it read is walked once more */
        if (chunk < ((size_t)16 << 20)) chunk *= 2;
    }
    *end = r == 1 ? at : b->n;
}

/* ================================================================ the wrappers */
/* Run `call` with this thread marked as inside a load whose bytes got verdict v. */
#define PYB_RUN(v, expr)                                                       \
    do {                                                                       \
        spp_l2_t saved_ = spp_l2;                                              \
        spp_l2.in_load++;                                                      \
        if (spp_l2.in_load == 1) spp_l2.resolved = false;                      \
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

/* Where the argument `name` (the first parameter) is in a vectorcall: 0 when
 * passed by position, nargs + i when by keyword (pickle.load(file=f), and
 * loads(data=...) where a Python accepts it), -1 when absent. */
static spp_pyssize pyb_arg_at(spp_pyssize nargs, spp_pyobj *kw, const char *name) {
    if (nargs >= 1) return 0;
    spp_pyssize nkw = kw ? py_PyTuple_Size(kw) : 0;
    for (spp_pyssize i = 0; i < nkw; i++) {
        char nm[16];
        spp_pyobj *k = py_PyTuple_GetItem(kw, i); /* borrowed */
        if (k && pya_utf8(k, nm, sizeof nm) && strcmp(nm, name) == 0) return nargs + i;
    }
    py_PyErr_Clear();
    return -1;
}

/* fn(...) (the original loads or load) with data in place of the argument at
 * index `at` (pyb_arg_at), the others unchanged (vectorcall: nargs positional
 * values, then one per keyword name). */
static spp_pyobj *pyb_call_with(pyb_fastkw_fn fn, spp_pyobj *m, spp_pyobj *data, spp_pyssize at,
                                spp_pyobj *const *args, spp_pyssize nargs, spp_pyobj *kw, spa_verdict v) {
    spp_pyobj *a2[16], *res;
    spp_pyssize nkw = kw ? py_PyTuple_Size(kw) : 0;
    if (at < 0 || at >= nargs + nkw || nargs + nkw > 16) {
        py_PyErr_SetString(*py_PyExc_OSError, "safepickle: too many arguments");
        return NULL;
    }
    for (spp_pyssize i = 0; i < nargs + nkw; i++) a2[i] = i == at ? data : args[i];
    PYB_RUN(v, fn(m, a2, nargs, kw));
    return res;
}

static spp_pyobj *pyb_w_loads(spp_pyobj *m, spp_pyobj *const *args, spp_pyssize nargs, spp_pyobj *kw) {
    spa_verdict v = SPA_VERDICT_COUNT;
    spp_pyobj *copy = NULL;
    spp_pyssize at = pyb_arg_at(nargs, kw, "data");
    if (at >= 0 && pyb_busy_enter()) {
        int rc = pyb_judge_data(args[at], "pickle.loads", &v, &copy);
        if (rc < 0) {
            spp_pyobj *task = rc == -1 ? pyb_pool_refused_task(copy ? copy : args[at], v) : NULL;
            pya_t.busy = 0;
            if (copy) py_Py_DecRef(copy);
            return task;
        }
        pya_t.busy = 0;
    }
    if (copy) { /* the unpickler reads the bytes judged, not the buffer that may change */
        spp_pyobj *res = pyb_call_with(pyb_orig_loads, m, copy, at, args, nargs, kw, v);
        py_Py_DecRef(copy);
        return res;
    }
    spp_pyobj *res;
    PYB_RUN(v, pyb_orig_loads(m, args, nargs, kw));
    return res;
}

/* A pickle too large to judge in memory (PYB_STREAM_MAX): the policy's
 * on_limit. True when refused (the exception is set). */
static bool pyb_limit_refused(const char *call) {
    const spa_policy *pol = spp_policy();
    spa_action act = pol ? spa_policy_act(pol, pol->on_limit) : SPA_ACT_BLOCK;
    static const spa_reason lim = {SPA_VERDICT_UNSCANNABLE, "runtime.limit",
                                   "pickle stream too large to judge in memory", "<stream>", 0};
    return pya_report_bytes(act, SPA_VERDICT_UNSCANNABLE, call, &lim, 1, NULL, false, false) < 0;
}

/* An unpickler that keeps its stream (kept) and reads it between opcodes
 * itself: joblib's NumpyUnpickler reads each array's bytes after the BUILD of
 * its wrapper, so the walk through one pickle meets bytes that are no opcode.
 * Those reads cannot be told from the pickle before the load runs, and
 * nothing else can judge a stream that cannot be sought back: unscannable,
 * refused by default (the policy's action for unscannable content), saying
 * how to load it. True when refused (the exception is set). */
static bool pyb_kept_refused(const char *call) {
    const spa_policy *pol = spp_policy();
    /* unscannable content: the policy's action for it (block by default) */
    spa_action act = pol ? spa_policy_act(pol, pol->on_verdict[SPA_VERDICT_UNSCANNABLE]) : SPA_ACT_BLOCK;
    static const spa_reason why = {SPA_VERDICT_UNSCANNABLE, "runtime.stream_kept",
                                   "this unpickler reads its non-seekable stream between opcodes itself "
                                   "(joblib's arrays): its bytes cannot be judged before it runs; load from a "
                                   "file, or read the stream into an io.BytesIO first",
                                   "<stream>", 0};
    return pya_report_bytes(act, SPA_VERDICT_UNSCANNABLE, call, &why, 1, NULL, false, false) < 0;
}

/* One pickle read from stream f (through its STOP, pyb_read_pickle) and
 * judged: PYB_STREAM with *data its bytes (new reference), or PYB_BLOCKED
 * with the exception set. kept: the unpickler keeps f (pyb_keeps_file); it
 * reads the bytes judged all the same (its opcodes come from *data), but one
 * whose pickle the walk meets a byte in that is no opcode reads f between
 * opcodes (pyb_kept_refused). Called with this thread busy. */
static pyb_kind pyb_stream_take(spp_pyobj *f, const char *call, bool kept, spa_verdict *v, spp_pyobj **data) {
    pyb_kind k = PYB_STREAM;
    pyb_buf b = {0};
    *data = NULL;
    int walked = pyb_read_pickle(f, &b);
    if (b.limit) {
        if (pyb_limit_refused(call)) k = PYB_BLOCKED;
    } else if (kept && walked < 0) {
        if (pyb_kept_refused(call)) k = PYB_BLOCKED;
    } else if (pyb_judge(b.p ? b.p : (const uint8_t *)"", b.n, call, v) < 0) {
        k = PYB_BLOCKED;
    }
    if (k == PYB_STREAM) {
        *data = py_PyBytes_FromStringAndSize((const char *)(b.p ? b.p : (uint8_t *)""), (spp_pyssize)b.n);
        if (!*data) k = PYB_BLOCKED; /* MemoryError stays set */
    }
    free(b.p);
    return k;
}

/* Judge what a load from file object f will run. PYB_STREAM: *data receives
 * the one pickle read from the stream (judged), for the caller to load.
 * PYB_JUDGED from an in-memory stream: *snap, *base as pyb_judge_file. */
static pyb_kind pyb_guard_file(spp_pyobj *f, const char *call, spa_verdict *v, spp_pyobj **data,
                               spp_pyobj **snap, long *base) {
    *data = NULL;
    *snap = NULL;
    if (!pyb_busy_enter()) return PYB_NONE;
    pyb_kind k = pyb_judge_file(f, call, true, true, v, snap, base);
    if (k == PYB_STREAM) k = pyb_stream_take(f, call, false, v, data);
    pya_t.busy = 0;
    return k;
}

/* The bound read, readinto and readline of an io.BytesIO over data (new
 * references into m[]; peek stays NULL: the unpickler then reads without
 * read-ahead). False with an exception set. */
static bool pyb_bytesio_methods(spp_pyobj *data, spp_pyobj *m[PYB_NMETH]) {
    memset(m, 0, PYB_NMETH * sizeof *m);
    spp_pyobj *io = py_PyImport_ImportModule("io");
    spp_pyobj *bio = io ? py_PyObject_CallMethod(io, "BytesIO", "O", data) : NULL;
    bool ok = bio != NULL;
    for (int j = 0; ok && j < PYB_NMETH; j++)
        if (j != PYB_PEEK) ok = (m[j] = py_PyObject_GetAttrString(bio, pyb_meth[j])) != NULL;
    if (io) py_Py_DecRef(io);
    if (bio) py_Py_DecRef(bio);
    if (!ok) {
        for (int j = 0; j < PYB_NMETH; j++)
            if (m[j]) { py_Py_DecRef(m[j]); m[j] = NULL; }
        if (!py_PyErr_Occurred()) py_PyErr_SetString(*py_PyExc_OSError, "safepickle: cannot hand the bytes back");
    }
    return ok;
}

/* Does the unpickler keep its file itself among its attributes (not only the
 * file's methods)? Then it may read the file between opcodes (joblib's
 * NumpyUnpickler reads array bytes from its file_handle), and the stream
 * cannot be read ahead of it. */
static bool pyb_keeps_file(spp_pyobj *self, spp_pyobj *f) {
    spp_pyobj *d = pya_getattr(self, "__dict__");
    spp_pyobj *vals = d ? py_PyObject_CallMethod(d, "values", NULL) : NULL;
    spp_pyobj *bi = vals ? py_PyImport_ImportModule("builtins") : NULL;
    spp_pyobj *lst = bi ? py_PyObject_CallMethod(bi, "list", "O", vals) : NULL;
    bool keeps = false;
    for (spp_pyssize i = 0, n = lst ? py_PyList_Size(lst) : 0; i < n && !keeps; i++)
        keeps = py_PyList_GetItem(lst, i) == f;
    spp_pyobj *tmp[] = {d, vals, bi, lst};
    for (size_t i = 0; i < sizeof tmp / sizeof *tmp; i++)
        if (tmp[i]) py_Py_DecRef(tmp[i]);
    py_PyErr_Clear();
    return keeps;
}

/* A stand-in for file f that the C unpickler reads through the pin: an
 * object with the same read, readinto, readline and peek attributes as f
 * (those f has), each checking what f's returns (types.SimpleNamespace).
 * Steals snap. NULL with an exception set. */
static spp_pyobj *pyb_pinned_file(spp_pyobj *f, spp_pyobj *snap, long base, const char *call, pyb_pin **pin) {
    spp_pyobj *orig[PYB_NMETH] = {0}, *proxy[PYB_NMETH];
    for (int i = 0; i < PYB_NMETH; i++)
        if (py_PyObject_HasAttrString(f, pyb_meth[i])) orig[i] = pya_getattr(f, pyb_meth[i]);
    bool ok = pyb_pin_new(f, snap, base, false, call, orig, proxy, pin);
    spp_pyobj *types = ok ? py_PyImport_ImportModule("types") : NULL;
    spp_pyobj *cls = types ? pya_getattr(types, "SimpleNamespace") : NULL;
    spp_pyobj *kw = cls ? py_PyDict_New() : NULL, *args = kw ? py_PyTuple_Pack(0) : NULL, *ns = NULL;
    for (int i = 0; i < PYB_NMETH && args; i++)
        if (proxy[i] && py_PyDict_SetItemString(kw, pyb_meth[i], proxy[i]) != 0) { py_Py_DecRef(args); args = NULL; }
    if (args) ns = py_PyObject_Call(cls, args, kw);
    if (ok && !ns && !py_PyErr_Occurred()) py_PyErr_SetString(*py_PyExc_OSError, "safepickle: cannot pin a stream");
    spp_pyobj *tmp[] = {types, cls, kw, args};
    for (size_t i = 0; i < sizeof tmp / sizeof *tmp; i++)
        if (tmp[i]) py_Py_DecRef(tmp[i]);
    for (int i = 0; i < PYB_NMETH; i++) {
        if (orig[i]) py_Py_DecRef(orig[i]);
        if (proxy[i]) py_Py_DecRef(proxy[i]);
    }
    return ns;
}

static spp_pyobj *pyb_w_load(spp_pyobj *m, spp_pyobj *const *args, spp_pyssize nargs, spp_pyobj *kw) {
    spa_verdict v = SPA_VERDICT_COUNT;
    spp_pyobj *data = NULL, *snap = NULL, *res;
    long base = 0;
    spp_pyssize at = pyb_arg_at(nargs, kw, "file");
    pyb_kind k = at >= 0 ? pyb_guard_file(args[at], "pickle.load", &v, &data, &snap, &base) : PYB_NONE;
    if (k == PYB_BLOCKED) return NULL;
    if (k == PYB_STREAM && at == 0) {
        /* load(stream) == loads(the pickle read from it): same keywords. */
        res = pyb_call_with(pyb_orig_loads, m, data, 0, args, nargs, kw, v);
        py_Py_DecRef(data);
        return res;
    }
    if (k == PYB_STREAM) { /* load(file=stream): load(file=an io.BytesIO of it) */
        spp_pyobj *io = py_PyImport_ImportModule("io");
        spp_pyobj *bio = io ? py_PyObject_CallMethod(io, "BytesIO", "O", data) : NULL;
        res = bio ? pyb_call_with(pyb_orig_load, m, bio, at, args, nargs, kw, v) : NULL;
        spp_pyobj *tmp[] = {io, bio, data};
        for (size_t i = 0; i < sizeof tmp / sizeof *tmp; i++)
            if (tmp[i]) py_Py_DecRef(tmp[i]);
        return res;
    }
    if (snap) { /* an in-memory stream: the unpickler reads it through the pin */
        pyb_pin *pin;
        spp_pyobj *pinned = pyb_pinned_file(args[at], snap, base, "pickle.load", &pin);
        if (!pinned) return NULL;
        res = pyb_call_with(pyb_orig_load, m, pinned, at, args, nargs, kw, v);
        pyb_pin_reraise(pin, res);
        py_Py_DecRef(pinned);
        return res;
    }
    PYB_RUN(v, pyb_orig_load(m, args, nargs, kw));
    return res;
}

/* The file an Unpickler reads and the bound methods of it the unpickler holds
 * (read, readinto, readline, peek: meth[], new references, NULL where it has
 * none), found among the unpickler's references (gc.get_referents) by name and
 * by the object they are bound to. The file: new reference or NULL. */
static spp_pyobj *pyb_unpickler_io(spp_pyobj *self, spp_pyobj *meth[PYB_NMETH]) {
    spp_pyobj *gc = py_PyImport_ImportModule("gc");
    spp_pyobj *refs = gc ? py_PyObject_CallMethod(gc, "get_referents", "O", self) : NULL;
    if (gc) py_Py_DecRef(gc);
    spp_pyobj *file = NULL, *owner[PYB_NMETH] = {0};
    memset(meth, 0, PYB_NMETH * sizeof *meth);
    spp_pyssize n = refs ? py_PyList_Size(refs) : 0;
    for (spp_pyssize i = 0; i < n; i++) {
        spp_pyobj *o = py_PyList_GetItem(refs, i); /* borrowed */
        char nm[16];
        spp_pyobj *name = o ? pya_getattr(o, "__name__") : NULL;
        int which = -1;
        for (int j = 0; name && j < PYB_NMETH && which < 0; j++)
            if (pya_utf8(name, nm, sizeof nm) && strcmp(nm, pyb_meth[j]) == 0) which = j;
        if (name) py_Py_DecRef(name);
        if (which < 0 || meth[which]) continue;
        owner[which] = pya_getattr(o, "__self__");
        meth[which] = o;
        py_Py_IncRef(o);
    }
    if (owner[PYB_RD] && !pya_is_none(owner[PYB_RD])) {
        file = owner[PYB_RD];
        py_Py_IncRef(file);
    }
    for (int j = 0; j < PYB_NMETH; j++) {
        if (meth[j] && (!file || owner[j] != file)) { py_Py_DecRef(meth[j]); meth[j] = NULL; }
        if (owner[j]) py_Py_DecRef(owner[j]);
    }
    if (refs) py_Py_DecRef(refs);
    py_PyErr_Clear();
    return file;
}

/* The C Unpickler holds its file's bound methods in pointer slots of its own
 * object (inside _pickle.Unpickler's basic size). They are found by the
 * identity of the objects found above, each exactly once, never by a layout;
 * while the load runs the slots hold the pin's functions instead. */
typedef struct pyb_swap {
    spp_pyobj **slot[PYB_NMETH];
    spp_pyobj *orig[PYB_NMETH], *proxy[PYB_NMETH];
    spp_pyobj *dict; /* pickle._Unpickler: the instance's __dict__ */
    pyb_pin *pin;
    bool on;
} pyb_swap;

static long pyb_unpickler_size(void) {
    static atomic_long size;
    long s = atomic_load(&size);
    if (s > 0) return s;
    spp_pyobj *mod = py_PyImport_ImportModule("_pickle");
    spp_pyobj *cls = mod ? pya_getattr(mod, "Unpickler") : NULL;
    spp_pyobj *bs = cls ? pya_getattr(cls, "__basicsize__") : NULL;
    s = bs ? py_PyLong_AsLong(bs) : -1;
    spp_pyobj *tmp[] = {mod, cls, bs};
    for (size_t i = 0; i < sizeof tmp / sizeof *tmp; i++)
        if (tmp[i]) py_Py_DecRef(tmp[i]);
    py_PyErr_Clear();
    if (s > (long)PYB_OBJ_HEAD && s < 65536) atomic_store(&size, s);
    return s;
}

/* The one slot of the unpickler (within size bytes) that holds o. */
static bool pyb_find_slots_one(spp_pyobj *self, spp_pyobj *o, long size, spp_pyobj ***slot) {
    spp_pyobj **w = (spp_pyobj **)self;
    *slot = NULL;
    if (size <= (long)PYB_OBJ_HEAD) return false;
    for (size_t i = PYB_OBJ_HEAD / sizeof *w; i < (size_t)size / sizeof *w; i++) {
        if (w[i] != o) continue;
        if (*slot) return false; /* twice: not a slot we can tell */
        *slot = &w[i];
    }
    return *slot != NULL;
}

static bool pyb_find_slots(spp_pyobj *self, spp_pyobj *const meth[PYB_NMETH], spp_pyobj **slot[PYB_NMETH]) {
    long size = pyb_unpickler_size();
    if (!meth[PYB_RD] || !meth[PYB_RDLINE]) return false;
    for (int j = 0; j < PYB_NMETH; j++) {
        slot[j] = NULL;
        if (meth[j] && !pyb_find_slots_one(self, meth[j], size, &slot[j])) return false;
    }
    return true;
}

/* Put `now[j]` (new references, NULL allowed) into the unpickler's slots in
 * place of its file's methods; the slots' references to those are kept in sw. */
static void pyb_swap_in(pyb_swap *sw, spp_pyobj *now[PYB_NMETH]) {
    for (int j = 0; j < PYB_NMETH; j++) {
        sw->proxy[j] = now[j]; /* ours: its address stays taken while swapped */
        if (!sw->slot[j]) continue;
        sw->orig[j] = *sw->slot[j];
        if (now[j]) py_Py_IncRef(now[j]);
        *sw->slot[j] = now[j]; /* the slot's */
    }
    sw->on = true;
}

static bool pyb_slots_or_say(spp_pyobj *self, spp_pyobj *const meth[PYB_NMETH], pyb_swap *sw) {
    if (pyb_find_slots(self, meth, sw->slot)) return true;
    static atomic_int said;
    static const char m[] = "safepickle: layer 2 cannot find where an Unpickler holds its file's methods in this "
                            "Python; Unpickler.load is not held to the bytes judged (in-memory streams) and is "
                            "judged by names and behaviour (other streams)\n";
    if (!atomic_exchange(&said, 1)) spp_write_stderr(m, sizeof m - 1);
    memset(sw->slot, 0, sizeof sw->slot);
    return false;
}

/* An object with read and readline attributes (types.SimpleNamespace), the
 * stream an unpickler reads when its read is not a method of a file (a
 * function, a lambda): new reference or NULL. */
static spp_pyobj *pyb_namespace(spp_pyobj *read, spp_pyobj *readline) {
    spp_pyobj *types = py_PyImport_ImportModule("types");
    spp_pyobj *cls = types ? pya_getattr(types, "SimpleNamespace") : NULL;
    spp_pyobj *kw = cls ? py_PyDict_New() : NULL, *args = kw ? py_PyTuple_Pack(0) : NULL, *ns = NULL;
    if (args && py_PyDict_SetItemString(kw, "read", read) == 0 && py_PyDict_SetItemString(kw, "readline", readline) == 0)
        ns = py_PyObject_Call(cls, args, kw);
    spp_pyobj *tmp[] = {types, cls, kw, args};
    for (size_t i = 0; i < sizeof tmp / sizeof *tmp; i++)
        if (tmp[i]) py_Py_DecRef(tmp[i]);
    py_PyErr_Clear();
    return ns;
}

/* Is o one of the callables in refs? */
static bool pyb_in_refs(spp_pyobj *refs, spp_pyobj *o) {
    for (spp_pyssize i = 0, n = py_PyList_Size(refs); i < n; i++)
        if (py_PyList_GetItem(refs, i) == o) return py_PyObject_HasAttrString(o, "__call__");
    return false;
}

/* A C Unpickler whose read is not a method named `read` of a file (a
 * function, a lambda): its file's methods are the callables among its
 * references in four slots in a row, read, readinto, readline, peek (their
 * order in _pickle.c, CPython 3.8 to 3.13), read and readline set, found by
 * identity, exactly one such row. meth[] as pyb_unpickler_io; returns the
 * stream as pyb_namespace, or NULL. */
static spp_pyobj *pyb_unpickler_anon(spp_pyobj *self, spp_pyobj *meth[PYB_NMETH]) {
    spp_pyobj *gc = py_PyImport_ImportModule("gc");
    spp_pyobj *refs = gc ? py_PyObject_CallMethod(gc, "get_referents", "O", self) : NULL, *ns = NULL;
    spp_pyobj **row = NULL;
    long size = pyb_unpickler_size();
    int rows = 0;
    memset(meth, 0, PYB_NMETH * sizeof *meth);
    for (spp_pyssize i = 0, n = refs ? py_PyList_Size(refs) : 0; i < n && rows < 2; i++) {
        spp_pyobj **s = NULL, *o = py_PyList_GetItem(refs, i);
        if (!o || !pyb_in_refs(refs, o) || !pyb_find_slots_one(self, o, size, &s)) continue;
        if ((char *)(s + PYB_PEEK + 1) > (char *)self + size || !s[PYB_RDLINE] || !pyb_in_refs(refs, s[PYB_RDLINE]))
            continue;
        if ((s[PYB_RDINTO] && !pyb_in_refs(refs, s[PYB_RDINTO])) || (s[PYB_PEEK] && !pyb_in_refs(refs, s[PYB_PEEK])))
            continue;
        row = s;
        rows++;
    }
    if (rows == 1) ns = pyb_namespace(row[PYB_RD], row[PYB_RDLINE]);
    for (int j = 0; ns && j < PYB_NMETH; j++)
        if ((meth[j] = row[j])) py_Py_IncRef(meth[j]);
    if (gc) py_Py_DecRef(gc);
    if (refs) py_Py_DecRef(refs);
    py_PyErr_Clear();
    return ns;
}

/* Unpickler.load: judged through the file it reads, and held to the bytes
 * judged (*sw): an in-memory stream through the pin; another stream (a pipe,
 * a socket file, stdin) gives one pickle, read through its STOP and judged,
 * which the unpickler is handed instead of the stream (as pickle.load does).
 * An unpickler that keeps its stream gets the same (pyb_stream_take, kept);
 * one whose slots cannot be found is judged by names and behaviour (README,
 * "Bytes first"). */
static spa_verdict pyb_guard_unpickler(spp_pyobj *self, bool *blocked, pyb_swap *sw) {
    spa_verdict v = SPA_VERDICT_COUNT;
    spp_pyobj *meth[PYB_NMETH], *snap = NULL, *data = NULL, *now[PYB_NMETH];
    long base = 0;
    pyb_kind k = PYB_NONE;
    *blocked = false;
    memset(sw, 0, sizeof *sw);
    if (!pyb_busy_enter()) return v;
    spp_pyobj *f = pyb_unpickler_io(self, meth);
    if (!f) f = pyb_unpickler_anon(self, meth);
    pya_t.busy = 0;
    if (!f) return v;
    if (pyb_busy_again()) {
        bool kept = pyb_keeps_file(self, f);
        k = pyb_judge_file(f, "pickle.Unpickler.load", true, !kept, &v, &snap, &base);
        if (k == PYB_STREAM && pyb_slots_or_say(self, meth, sw))
            k = pyb_stream_take(f, "pickle.Unpickler.load", kept, &v, &data);
        else if (k == PYB_STREAM)
            v = SPA_VERDICT_COUNT;
        pya_t.busy = 0;
        *blocked = k == PYB_BLOCKED;
    }
    if (data) {
        if (pyb_bytesio_methods(data, now)) pyb_swap_in(sw, now);
        else *blocked = true;
        py_Py_DecRef(data);
    } else if (snap && pyb_slots_or_say(self, meth, sw)) {
        if (pyb_pin_new(f, snap, base, false, "pickle.Unpickler.load", meth, now, &sw->pin)) pyb_swap_in(sw, now);
        else *blocked = true; /* no memory to pin: the exception is set */
    } else if (snap) {
        py_Py_DecRef(snap);
    }
    for (int j = 0; j < PYB_NMETH; j++)
        if (meth[j]) py_Py_DecRef(meth[j]);
    py_Py_DecRef(f);
    return v;
}

/* Give the unpickler its file's methods back, unless the load re-initialised
 * it (its read slot no longer holds ours: then its slots hold what it set,
 * and the originals are dropped). */
static void pyb_unswap(pyb_swap *sw, spp_pyobj *res) {
    pyb_pin_reraise(sw->pin, res);
    bool reinit = sw->on && *sw->slot[PYB_RD] != sw->proxy[PYB_RD];
    for (int j = 0; j < PYB_NMETH; j++) {
        if (sw->on && sw->slot[j]) {
            spp_pyobj *cur = *sw->slot[j];
            if (!reinit && cur == sw->proxy[j]) {
                *sw->slot[j] = sw->orig[j];
                if (cur) py_Py_DecRef(cur); /* the slot's */
            } else if (sw->orig[j]) {
                py_Py_DecRef(sw->orig[j]);
            }
        }
        if (sw->proxy[j]) py_Py_DecRef(sw->proxy[j]); /* ours */
    }
    memset(sw, 0, sizeof *sw);
}

static spp_pyobj *pyb_w_uload_noargs(spp_pyobj *self, spp_pyobj *unused) {
    bool blocked;
    pyb_swap sw;
    spa_verdict v = pyb_guard_unpickler(self, &blocked, &sw);
    if (blocked) return NULL;
    spp_pyobj *res;
    PYB_RUN(v, ((pyb_noargs_fn)pyb_orig_uload)(self, unused));
    pyb_unswap(&sw, res);
    return res;
}

static spp_pyobj *pyb_w_uload_meth(spp_pyobj *self, void *cls, spp_pyobj *const *args, size_t nargsf,
                                   spp_pyobj *kw) {
    bool blocked;
    pyb_swap sw;
    spa_verdict v = pyb_guard_unpickler(self, &blocked, &sw);
    if (blocked) return NULL;
    spp_pyobj *res;
    PYB_RUN(v, ((pyb_methkw_fn)pyb_orig_uload)(self, cls, args, nargsf, kw));
    pyb_unswap(&sw, res);
    return res;
}

/* ---------------------------------------------------------------- pickle._Unpickler */
/* The pure-Python unpickler (pickle._Unpickler, and through it joblib's and
 * pandas' subclasses) runs Python code, not a C method: its class gets a
 * `load` that is an instance method around a C function holding the original
 * function, so `unpickler.load()` judges the file it reads first. Over an
 * in-memory stream, the instance's _file_read and _file_readline (what its
 * load reads through) are the pin's functions while the load runs; they
 * follow forward moves of the file (joblib reads array bytes from it). */
static const char *const pyb_py_attr[PYB_NMETH] = {"_file_read", NULL, "_file_readline", NULL};

/* What the instance's load reads through (_file_read, _file_readline;
 * borrowed into orig[]) and its __dict__ (new reference), or NULL when it has
 * not both (its load then reads nothing we can stand in for). */
static spp_pyobj *pyb_pyload_io(spp_pyobj *self, spp_pyobj *orig[PYB_NMETH]) {
    memset(orig, 0, PYB_NMETH * sizeof *orig);
    spp_pyobj *d = pya_getattr(self, "__dict__");
    for (int j = 0; d && j < PYB_NMETH; j++)
        if (pyb_py_attr[j]) orig[j] = py_PyDict_GetItemString(d, pyb_py_attr[j]); /* borrowed */
    py_PyErr_Clear();
    if (d && orig[PYB_RD] && orig[PYB_RDLINE]) return d;
    if (d) py_Py_DecRef(d);
    return NULL;
}

/* The instance's _file_read and _file_readline become now[] (new references,
 * kept in sw with what they replace). False with an exception set. */
static bool pyb_pyload_swap(spp_pyobj *d, spp_pyobj *const orig[PYB_NMETH], spp_pyobj *now[PYB_NMETH], pyb_swap *sw) {
    bool ok = true;
    sw->dict = d;
    sw->on = true;
    for (int j = 0; j < PYB_NMETH; j++) {
        sw->proxy[j] = now[j];
        if (!pyb_py_attr[j] || !now[j] || !ok) continue;
        sw->orig[j] = orig[j];
        py_Py_IncRef(orig[j]);
        if (py_PyDict_SetItemString(d, pyb_py_attr[j], now[j]) != 0) ok = false;
    }
    return ok;
}

/* Over an in-memory stream (snap, stolen): held to the bytes judged through
 * the pin. Over another stream: one pickle read and judged (*k becomes
 * PYB_BLOCKED when refused), and the load reads those bytes, also when the
 * unpickler keeps the stream (keeps: pyb_keeps_file, asked once by the
 * caller; pyb_stream_take). False with an exception set: the load must not run. */
static bool pyb_pyload_hold(spp_pyobj *self, spp_pyobj *f, bool keeps, spp_pyobj *snap, long base, pyb_kind *k,
                            spa_verdict *v, pyb_swap *sw) {
    spp_pyobj *orig[PYB_NMETH], *now[PYB_NMETH] = {0}, *data = NULL;
    spp_pyobj *d = (snap || *k == PYB_STREAM) ? pyb_pyload_io(self, orig) : NULL;
    bool ok = true;
    if (d && snap) {
        ok = pyb_pin_new(f, snap, base, true, "pickle._Unpickler.load", orig, now, &sw->pin);
        snap = NULL;
    } else if (d && *k == PYB_STREAM && pyb_busy_again()) {
        *k = pyb_stream_take(f, "pickle._Unpickler.load", keeps, v, &data);
        pya_t.busy = 0;
        ok = *k != PYB_BLOCKED && pyb_bytesio_methods(data, now);
    } else {
        if (*k == PYB_STREAM) *v = SPA_VERDICT_COUNT; /* judged by names and behaviour */
        if (d) py_Py_DecRef(d);
        d = NULL;
    }
    if (snap) py_Py_DecRef(snap);
    if (data) py_Py_DecRef(data);
    if (d && ok) return pyb_pyload_swap(d, orig, now, sw);
    if (d) py_Py_DecRef(d);
    return ok;
}

/* Put back what the load read through, unless it was set to something else.
 * The load's exception, if any, is kept. */
static void pyb_pyload_unpin(pyb_swap *sw, spp_pyobj *res) {
    spp_pyobj *et = NULL, *ev = NULL, *tb = NULL;
    pyb_pin_reraise(sw->pin, res);
    py_PyErr_Fetch(&et, &ev, &tb);
    for (int j = 0; j < PYB_NMETH; j++) {
        spp_pyobj *now = sw->dict && sw->orig[j] ? py_PyDict_GetItemString(sw->dict, pyb_py_attr[j]) : NULL;
        if (now && now == sw->proxy[j] && py_PyDict_SetItemString(sw->dict, pyb_py_attr[j], sw->orig[j]) != 0)
            py_PyErr_Clear();
        if (sw->orig[j]) py_Py_DecRef(sw->orig[j]);
        if (sw->proxy[j]) py_Py_DecRef(sw->proxy[j]);
    }
    if (sw->dict) py_Py_DecRef(sw->dict);
    memset(sw, 0, sizeof *sw);
    py_PyErr_Restore(et, ev, tb);
}

static spp_pyobj *pyb_w_pyload(spp_pyobj *orig, spp_pyobj *self) {
    spa_verdict v = SPA_VERDICT_COUNT;
    pyb_swap sw;
    memset(&sw, 0, sizeof sw);
    if (pyb_busy_enter()) {
        spp_pyobj *rd = pya_getattr(self, "_file_read");
        spp_pyobj *f = rd ? pya_getattr(rd, "__self__") : NULL, *snap = NULL;
        long base = 0;
        if (rd && (!f || !py_PyObject_HasAttrString(f, "read"))) {
            /* its read is not a method of a file (a function): the stream is what it reads through */
            spp_pyobj *rl = pya_getattr(self, "_file_readline");
            if (f) py_Py_DecRef(f);
            f = rl ? pyb_namespace(rd, rl) : NULL;
            if (rl) py_Py_DecRef(rl);
        }
        if (rd) py_Py_DecRef(rd);
        /* an unpickler that keeps its file reads it between opcodes (joblib's
         * NumpyUnpickler reads array bytes inline): all the rest is judged, and
         * the pin follows its moves; otherwise the one pickle this load reads */
        bool keeps = f && pyb_keeps_file(self, f);
        pyb_kind k = f ? pyb_judge_file(f, "pickle._Unpickler.load", !keeps, !keeps, &v, &snap, &base) : PYB_NONE;
        pya_t.busy = 0;
        bool ok = k == PYB_BLOCKED || pyb_pyload_hold(self, f, keeps, snap, base, &k, &v, &sw);
        if (f) py_Py_DecRef(f);
        if (k == PYB_BLOCKED || !ok) {
            pyb_pyload_unpin(&sw, NULL);
            return NULL;
        }
    }
    spp_pyobj *res;
    PYB_RUN(v, py_PyObject_CallFunctionObjArgs(orig, self, NULL));
    pyb_pyload_unpin(&sw, res);
    return res;
}

static spp_pymethoddef pyb_pyload_def = {"load", (void *)pyb_w_pyload, SPP_METH_O, NULL};
static atomic_int pyb_py_state; /* 0 not yet, 1 patched, 2 not patchable */

/* Wrap this interpreter's pickle._Unpickler.load, if its pickle module is
 * loaded and the class does not hold the wrapper yet (an instancemethod
 * there is ours: the class's own load is a plain function). 2 wrapped now,
 * 1 wrapped before, 0 no pickle module yet, -1 not patchable. */
static int pyb_patch_python_here(void) {
    spp_pyobj *name = py_PyUnicode_FromString("pickle");
    spp_pyobj *mod = name ? py_PyImport_GetModule(name) : NULL;
    if (name) py_Py_DecRef(name);
    spp_pyobj *cls = mod && !pya_is_none(mod) ? pya_getattr(mod, "_Unpickler") : NULL;
    if (mod) py_Py_DecRef(mod);
    py_PyErr_Clear();
    if (!cls) return 0; /* not loaded yet: the next import event tries again */
    spp_pyobj *dict = pya_getattr(cls, "__dict__");
    spp_pyobj *orig = dict ? py_PyMapping_GetItemString(dict, "load") : NULL;
    py_PyErr_Clear();
    spp_pyobj *inner = orig ? pya_getattr(orig, "__func__") : NULL;
    bool done = inner != NULL;
    spp_pyobj *fn = orig && !done ? py_PyCFunction_NewEx(&pyb_pyload_def, orig, NULL) : NULL;
    spp_pyobj *meth = fn ? py_PyInstanceMethod_New(fn) : NULL;
    bool ok = done || (meth && py_PyObject_SetAttrString(cls, "load", meth) == 0);
    py_PyErr_Clear();
    spp_pyobj *all[] = {cls, dict, orig, inner, fn, meth};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i]) py_Py_DecRef(all[i]);
    return !ok ? -1 : done ? 1 : 2;
}

static void pyb_say_python_unwrapped(void) {
    static const char m[] = "safepickle: layer 2 cannot wrap pickle._Unpickler.load; pure-Python unpickles "
                            "are judged by names and behaviour only\n";
    spp_write_stderr(m, sizeof m - 1);
}

/* Patch pickle._Unpickler.load once the pure-Python class exists. */
static void pyb_patch_python(void) {
    if (atomic_load(&pyb_py_state) != 0) return;
    int r = pyb_patch_python_here();
    if (r == 0) return;
    atomic_store(&pyb_py_state, r > 0 ? 1 : 2);
    if (r < 0) pyb_say_python_unwrapped();
}

/* A sub-interpreter has a pickle module and a pickle._Unpickler class of its
 * own (the C unpickler's methods are static and wrapped once for all): at
 * its `import pickle` (before the body runs) we import it ourselves and wrap
 * its class too. Before, pickle._loads, pickle._Unpickler and every subclass
 * (joblib's, pandas', torch.package's) ran unjudged in a sub-interpreter
 * (test_layer2_subinterpreters.py). */
void pya_bytes_python_again(void) {
    if (atomic_load(&pyb_py_state) != 1) return; /* not yet (the main path) or not patchable */
    spp_pyobj *pk = py_PyImport_ImportModule("pickle");
    if (pk) py_Py_DecRef(pk);
    py_PyErr_Clear();
    if (pyb_patch_python_here() < 0) pyb_say_python_unwrapped();
}

/* A pickle.find_class outside every wrapped load, once pickle._Unpickler was
 * wrapped: the class may have been replaced since. importlib.reload(pickle)
 * runs the module body again with no import event after the new class
 * exists, and pure-Python loads (pickle._loads, pickle._Unpickler and its
 * subclasses made after the reload) then ran with their bytes unjudged. The
 * new class is wrapped for the loads that follow; the load in progress,
 * whose bytes nobody judged, is refused (-1, exception set) as unscannable
 * (test_layer2_subinterpreters.py, test_pickle_reloaded). */
int pya_bytes_python_replaced(void) {
    if (atomic_load(&pyb_py_state) != 1) return 0;
    int r = pyb_patch_python_here();
    if (r < 0) pyb_say_python_unwrapped();
    if (r != 2) return 0;
    const spa_policy *pol = spp_policy();
    spa_action act = pol ? spa_policy_act(pol, SPA_ACT_BLOCK) : SPA_ACT_BLOCK;
    static const spa_reason why = {SPA_VERDICT_UNSCANNABLE, "runtime.unwrapped",
                                   "pickle._Unpickler was replaced after layer 2 wrapped it (importlib.reload(pickle)?): "
                                   "the bytes of this load were not judged; later loads are",
                                   "<stream>", 0};
    return pya_report_bytes(act, SPA_VERDICT_UNSCANNABLE, "pickle._Unpickler.load", &why, 1, NULL, false, false) < 0
               ? -1
               : 0;
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
