/* pya_frames.c - layer 2: small helpers over the dlsym'd C-API (text of
 * str/bytes objects, tuple items) and the frame walks every part uses: where a
 * frame is, which frames belong to the unpickler, the frame that called it. */
#include "pya.h"

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ================================================================ small helpers */
void pya_copy(char *dst, size_t n, const char *src) {
    if (!n) return;
    size_t l = src ? strnlen(src, n - 1) : 0;
    if (l) memcpy(dst, src, l);
    dst[l] = 0;
}

bool pya_ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && memcmp(s + a - b, suf, b) == 0;
}

/* Text of a str (UTF-8) or bytes object into buf, control characters
 * replaced; false (no exception left behind) for any other object. *exact
 * (optional) says whether buf holds the whole text unaltered. */
bool pya_utf8x(spp_pyobj *o, char *buf, size_t n, bool *exact) {
    buf[0] = 0;
    if (exact) *exact = false;
    if (!o) return false;
    spp_pyssize len = 0;
    bool is_bytes = false;
    const char *s = py_PyUnicode_AsUTF8AndSize(o, &len);
    if (!s) {
        py_PyErr_Clear();
        char *b = NULL;
        if (!py_PyBytes_AsStringAndSize || py_PyBytes_AsStringAndSize(o, &b, &len) != 0 || !b) {
            py_PyErr_Clear();
            return false;
        }
        s = b;
        is_bytes = true;
    }
    size_t l = (size_t)len < n - 1 ? (size_t)len : n - 1;
    bool same = l == (size_t)len;
    if (!same && !is_bytes) /* never cut a UTF-8 sequence: records stay valid UTF-8 */
        while (l > 0 && ((unsigned char)s[l] & 0xC0) == 0x80) l--;
    memcpy(buf, s, l);
    buf[l] = 0;
    for (size_t i = 0; i < l; i++) { /* one line, valid UTF-8 (bytes: ASCII only) */
        unsigned char c = (unsigned char)buf[i];
        if (c < 0x20 || c == 0x7f || (is_bytes && c >= 0x80)) { buf[i] = '?'; same = false; }
    }
    if (exact) *exact = same;
    return true;
}

bool pya_utf8(spp_pyobj *o, char *buf, size_t n) { return pya_utf8x(o, buf, n, NULL); }

spp_pyobj *pya_arg(spp_pyobj *args, spp_pyssize i) {
    if (!args || py_PyTuple_Size(args) <= i) { py_PyErr_Clear(); return NULL; }
    spp_pyobj *o = py_PyTuple_GetItem(args, i); /* borrowed */
    if (!o) py_PyErr_Clear();
    return o;
}

spp_pyobj *pya_none(void) { return py__Py_NoneStruct; }

bool pya_is_none(spp_pyobj *o) { return o == pya_none(); }

spp_pyobj *pya_false(void) { return py__Py_FalseStruct; }

/* ================================================================ frames */
/* All return new references (or NULL with no exception left behind). */
spp_pyobj *pya_getattr(spp_pyobj *o, const char *name) {
    spp_pyobj *r = py_PyObject_GetAttrString(o, name);
    if (!r) py_PyErr_Clear();
    return r;
}

spp_pyobj *pya_back(spp_pyobj *f) {
    spp_pyobj *b = py_PyFrame_GetBack ? py_PyFrame_GetBack(f) : pya_getattr(f, "f_back");
    if (b && pya_is_none(b)) { py_Py_DecRef(b); b = NULL; }
    return b;
}

spp_pyobj *pya_code(spp_pyobj *f) {
    return py_PyFrame_GetCode ? py_PyFrame_GetCode(f) : pya_getattr(f, "f_code");
}

long pya_lasti(spp_pyobj *f) {
    if (py_PyFrame_GetLasti) return py_PyFrame_GetLasti(f);
    spp_pyobj *v = pya_getattr(f, "f_lasti");
    if (!v) return -2;
    long l = py_PyLong_AsLong(v);
    if (l == -1 && py_PyErr_Occurred()) { py_PyErr_Clear(); l = -2; }
    py_Py_DecRef(v);
    return l;
}


/* File and function of a frame's code; line of the frame. */
void pya_describe(spp_pyobj *f, pya_where *w) {
    w->file[0] = w->func[0] = 0;
    w->line = 0;
    if (!f) return;
    spp_pyobj *code = pya_code(f);
    if (code) {
        spp_pyobj *s = pya_getattr(code, "co_filename");
        if (s) { pya_utf8(s, w->file, sizeof w->file); py_Py_DecRef(s); }
        s = pya_getattr(code, "co_name");
        if (s) { pya_utf8(s, w->func, sizeof w->func); py_Py_DecRef(s); }
        py_Py_DecRef(code);
    }
    w->line = py_PyFrame_GetLineNumber(f);
}

/* The text of mapping[key], where mapping is the frame attribute `attr`
 * (f_globals, or f_locals: a dict, or a proxy on 3.13), into buf ("" if none). */
static void pya_frame_str(spp_pyobj *f, const char *attr, const char *key, char *buf, size_t n) {
    buf[0] = 0;
    spp_pyobj *m = pya_getattr(f, attr);
    if (!m) return;
    spp_pyobj *v = py_PyMapping_GetItemString(m, key);
    if (v) {
        pya_utf8(v, buf, n);
        py_Py_DecRef(v);
    } else {
        py_PyErr_Clear();
    }
    py_Py_DecRef(m);
}

/* The __name__ of the module a frame's code belongs to (its globals). */
void pya_frame_module(spp_pyobj *f, char *buf, size_t n) { pya_frame_str(f, "f_globals", "__name__", buf, n); }

/* Frames of the unpickler itself: a find_class override (torch's, yours) and
 * the pure-Python unpickler of the stdlib module `pickle` (used by joblib and
 * pandas' compat unpickler), recognised by module name, not by file name
 * (pandas/io/pickle.py is the caller, not the unpickler). The frame above them
 * is the one that called load(). */
bool pya_is_unpickler_frame(spp_pyobj *f, const pya_where *w) {
    if (strcmp(w->func, "find_class") == 0) return true;
    if (!pya_ends_with(w->file, "pickle.py")) return false;
    char mod[SPP_PYA_PKG_MAX];
    pya_frame_module(f, mod, sizeof mod);
    return strcmp(mod, "pickle") == 0;
}

/* Library code (stdlib, site-packages, frozen modules): skipped when naming
 * the user's line that led to the load. */
bool pya_is_library_file(const char *file) {
    return file[0] == '<' || strstr(file, "/site-packages/") || strstr(file, "/dist-packages/") ||
           strstr(file, "/lib/python3");
}

/* The frame that called the load: walk up from the current frame past the
 * unpickler's own frames. New reference or NULL (no Python frame at all,
 * e.g. a C program calling pickle.loads through the C API). */
spp_pyobj *pya_find_anchor(void) {
    spp_pyobj *f = py_PyEval_GetFrame(); /* borrowed */
    if (!f) return NULL;
    py_Py_IncRef(f);
    for (int i = 0; f && i < SPP_PYA_MAX_FRAMES; i++) {
        pya_where w;
        pya_describe(f, &w);
        if (!pya_is_unpickler_frame(f, &w)) return f;
        spp_pyobj *b = pya_back(f);
        py_Py_DecRef(f);
        f = b;
    }
    if (f) py_Py_DecRef(f);
    return NULL;
}

/* Is this frame the entry of a real import (importlib's _find_and_load)? */
bool pya_is_import_frame(const pya_where *w) {
    return strncmp(w->file, "<frozen importlib._bootstrap", 28) == 0 &&
           strcmp(w->func, "_find_and_load") == 0;
}

/* The module a `_find_and_load(name, import_)` frame is importing (its first
 * argument, read from the frame's locals). */
void pya_import_frame_name(spp_pyobj *f, char *buf, size_t n) { pya_frame_str(f, "f_locals", "name", buf, n); }

/* A frame of the import machinery between an import's caller and its
 * _find_and_load: importlib.import_module and the frozen bootstrap. */
static bool pya_is_importlib_frame(const pya_where *w) {
    return strncmp(w->file, "<frozen importlib.", 18) == 0 || pya_ends_with(w->file, "/importlib/__init__.py");
}

/* Is a find_class frame a method of an unpickler: is the type of its `self` a
 * subclass of the C unpickler (_pickle.Unpickler) or the stdlib's pure-Python
 * one (pickle._Unpickler)? By the type's MRO (not isinstance, which asks the
 * object's own __class__): a pickle gets such an object only by constructing
 * an unpickler, itself code_exec to the KB. */
static bool pya_self_is_unpickler(spp_pyobj *f) {
    static const char *const cls[][2] = {{"_pickle", "Unpickler"}, {"pickle", "_Unpickler"}};
    spp_pyobj *loc = pya_getattr(f, "f_locals");
    spp_pyobj *obj = loc ? py_PyMapping_GetItemString(loc, "self") : NULL;
    spp_pyobj *self = obj ? py_PyObject_Type(obj) : NULL;
    py_PyErr_Clear();
    bool yes = false;
    for (size_t i = 0; self && !yes && i < sizeof cls / sizeof cls[0]; i++) {
        spp_pyobj *name = py_PyUnicode_FromString(cls[i][0]);
        spp_pyobj *mod = name ? py_PyImport_GetModule(name) : NULL; /* no import */
        if (name) py_Py_DecRef(name);
        spp_pyobj *c = mod && !pya_is_none(mod) ? pya_getattr(mod, cls[i][1]) : NULL;
        if (mod) py_Py_DecRef(mod);
        py_PyErr_Clear();
        if (c) {
            yes = py_PyObject_IsSubclass(self, c) == 1;
            py_PyErr_Clear();
            py_Py_DecRef(c);
        }
    }
    spp_pyobj *all[] = {self, obj, loc};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i]) py_Py_DecRef(all[i]);
    return yes;
}

/* Does the current event belong to an import that an unpickler's own
 * find_class override started: `importlib.import_module(module)` or
 * `__import__(module)` of the module a global names, the way pickle's own
 * find_class imports it (which announces it with its `pickle.find_class`
 * event; an override that does not call it raises none)? True when, walking
 * up, the outermost import's caller (past importlib's own frames) is a
 * `find_class` method of an unpickler instance. import_event: the event is the
 * `import` event that `__import__` raises before any import frame exists.
 * The names were judged with the bytes (layer 1 or bytes first); what runs is
 * the body of an installed module, as with pickle's own find_class. */
bool pya_import_by_unpickler(bool import_event) {
    spp_pyobj *f = py_PyEval_GetFrame();
    if (!f) return false;
    py_Py_IncRef(f);
    bool importing = import_event, yes = false;
    for (int i = 0; f && f != pya_t.anchor && i < SPP_PYA_MAX_FRAMES; i++) { /* not past the load's caller */
        pya_where w;
        pya_describe(f, &w);
        if (pya_is_import_frame(&w)) {
            importing = true;
        } else if (importing && !pya_is_importlib_frame(&w)) {
            if (strcmp(w.func, "find_class") == 0 && pya_self_is_unpickler(f)) {
                yes = true;
                break;
            }
            importing = false; /* an import some other code started: an outer one may still be find_class's */
        }
        spp_pyobj *b = pya_back(f);
        py_Py_DecRef(f);
        f = b;
    }
    if (f) py_Py_DecRef(f);
    return yes;
}
