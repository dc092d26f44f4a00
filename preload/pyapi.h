/* pyapi.h - the few CPython C-API shapes the PEP 578 layer (pyaudit.c) uses,
 * written by hand so the preload never includes Python.h nor links libpython.
 * Every function is resolved with dlsym at run time (CPython 3.8-3.13). */
#ifndef SPP_PYAPI_H
#define SPP_PYAPI_H

#include <stddef.h>
#include <sys/types.h>

/* Opaque: we never touch an object's fields, only call exported functions
 * (two exceptions, pya_bytes.c: the method-definition pointer of a builtin
 * function and of a method descriptor, checked by name before use; and the
 * slots where a C Unpickler holds its file's bound methods, found by the
 * identity of those objects, never by a layout). */
typedef struct spp_pyobj spp_pyobj;
typedef ssize_t spp_pyssize;

/* Py_buffer: the stable-ABI layout (unchanged since 3.3). */
typedef struct spp_pybuffer {
    void *buf;
    spp_pyobj *obj;
    spp_pyssize len;
    spp_pyssize itemsize;
    int readonly;
    int ndim;
    char *format;
    spp_pyssize *shape;
    spp_pyssize *strides;
    spp_pyssize *suboffsets;
    void *internal;
} spp_pybuffer;
#define SPP_PYBUF_SIMPLE 0

/* The shapes of a C method (PyMethodDef) that layer 2 wraps (pya_bytes.c):
 * the first fields of PyMethodDef, and ml_flags values (methodobject.h). */
typedef struct spp_pymethoddef {
    const char *ml_name;
    void *ml_meth;
    int ml_flags;
    const char *ml_doc;
} spp_pymethoddef;
#define SPP_METH_VARARGS  0x0001
#define SPP_METH_KEYWORDS 0x0002
#define SPP_METH_NOARGS   0x0004
#define SPP_METH_O        0x0008
#define SPP_METH_FASTCALL 0x0080
#define SPP_METH_METHOD   0x0200

/* Py_AuditHookFunction: int hook(const char *event, PyObject *args, void *ud).
 * args is a tuple (borrowed). Return -1 with an exception set to veto. */
typedef int (*spp_py_audit_hook)(const char *event, spp_pyobj *args, void *ud);

/* The C-API table: one line per function, X(ret, name, params, required).
 * required = 1: without it the layer stays off. 0: optional (newer versions
 * only, with a fallback through attribute access). */
#define SPP_PYAPI_FUNCS(X)                                                          \
    X(int, PySys_AddAuditHook, (spp_py_audit_hook, void *), 1)                      \
    X(spp_pyssize, PyTuple_Size, (spp_pyobj *), 1)                                  \
    X(spp_pyobj *, PyTuple_GetItem, (spp_pyobj *, spp_pyssize), 1)                  \
    X(const char *, PyUnicode_AsUTF8AndSize, (spp_pyobj *, spp_pyssize *), 1)       \
    X(spp_pyobj *, PyUnicode_FromString, (const char *), 1)                         \
    X(int, PyBytes_AsStringAndSize, (spp_pyobj *, char **, spp_pyssize *), 0)       \
    X(long, PyLong_AsLong, (spp_pyobj *), 1)                                        \
    X(spp_pyobj *, PyObject_GetAttrString, (spp_pyobj *, const char *), 1)          \
    X(spp_pyobj *, PyMapping_GetItemString, (spp_pyobj *, const char *), 1)         \
    X(void, Py_IncRef, (spp_pyobj *), 1)                                            \
    X(void, Py_DecRef, (spp_pyobj *), 1)                                            \
    X(spp_pyobj *, PyErr_Occurred, (void), 1)                                       \
    X(void, PyErr_Clear, (void), 1)                                                 \
    X(void, PyErr_SetString, (spp_pyobj *, const char *), 1)                        \
    X(spp_pyobj *, PyErr_NewException, (const char *, spp_pyobj *, spp_pyobj *), 1) \
    X(spp_pyobj *, PyTuple_Pack, (spp_pyssize, ...), 1)                             \
    X(spp_pyobj *, PyImport_GetModule, (spp_pyobj *), 1)                            \
    X(spp_pyobj *, PyImport_GetModuleDict, (void), 0)                               \
    X(spp_pyobj *, PyModule_New, (const char *), 0)                                 \
    X(int, PyObject_SetAttrString, (spp_pyobj *, const char *, spp_pyobj *), 0)     \
    X(int, PyDict_SetItemString, (spp_pyobj *, const char *, spp_pyobj *), 0)       \
    X(spp_pyobj *, PyEval_GetFrame, (void), 1)                                      \
    X(int, PyFrame_GetLineNumber, (spp_pyobj *), 1)                                 \
    X(spp_pyobj *, PyFrame_GetBack, (spp_pyobj *), 0)      /* 3.9+ */               \
    X(spp_pyobj *, PyFrame_GetCode, (spp_pyobj *), 0)      /* 3.9+ */               \
    X(int, PyFrame_GetLasti, (spp_pyobj *), 0)             /* 3.11+ */              \
    X(int, Py_AtExit, (void (*)(void)), 0)                                          \
    X(int, Py_IsInitialized, (void), 0)                                             \
    X(int, PyGILState_Ensure, (void), 0)                                            \
    X(void, PyGILState_Release, (int), 0)                                           \
    X(void *, PyInterpreterState_Get, (void), 0)           /* 3.9+ */               \
    X(void *, _PyInterpreterState_Get, (void), 0)          /* 3.8 */                \
    X(spp_pyobj *, PyImport_ImportModule, (const char *), 1)                        \
    X(spp_pyobj *, PyObject_CallMethod, (spp_pyobj *, const char *, const char *, ...), 1) \
    X(spp_pyobj *, PyObject_CallOneArg, (spp_pyobj *, spp_pyobj *), 0) /* 3.9+ */    \
    X(spp_pyobj *, PyObject_CallFunctionObjArgs, (spp_pyobj *, ...), 1)             \
    X(int, PyObject_GetBuffer, (spp_pyobj *, spp_pybuffer *, int), 1)               \
    X(void, PyBuffer_Release, (spp_pybuffer *), 1)                                  \
    X(spp_pyobj *, PyBytes_FromStringAndSize, (const char *, spp_pyssize), 1)       \
    X(int, PyObject_IsTrue, (spp_pyobj *), 1)                                       \
    X(int, PyObject_HasAttrString, (spp_pyobj *, const char *), 1)                  \
    X(spp_pyssize, PyList_Size, (spp_pyobj *), 1)                                   \
    X(spp_pyobj *, PyList_GetItem, (spp_pyobj *, spp_pyssize), 1)                   \
    X(spp_pyobj *, PyCFunction_NewEx, (void *, spp_pyobj *, spp_pyobj *), 1)        \
    X(spp_pyobj *, PyInstanceMethod_New, (spp_pyobj *), 1)                          \
    X(int, PyObject_SetAttrString, (spp_pyobj *, const char *, spp_pyobj *), 1)    \
    X(spp_pyobj *, PyImport_AddModule, (const char *), 1)                          \
    X(void, PyErr_SetObject, (spp_pyobj *, spp_pyobj *), 1)                         \
    X(spp_pyobj *, PyLong_FromLongLong, (long long), 1)                             \
    X(spp_pyobj *, PyDict_New, (void), 1)                                           \
    X(spp_pyobj *, PyObject_Type, (spp_pyobj *), 1)                                 \
    X(int, PyObject_IsSubclass, (spp_pyobj *, spp_pyobj *), 1)                      \
    X(spp_pyobj *, PyObject_Call, (spp_pyobj *, spp_pyobj *, spp_pyobj *), 1)       \
    X(spp_pyobj *, PyCapsule_New, (void *, const char *, void (*)(spp_pyobj *)), 1) \
    X(void *, PyCapsule_GetPointer, (spp_pyobj *, const char *), 1)                 \
    X(spp_pyobj *, PyDict_GetItemString, (spp_pyobj *, const char *), 1)            \
    X(void, PyErr_Fetch, (spp_pyobj **, spp_pyobj **, spp_pyobj **), 1)             \
    X(void, PyErr_Restore, (spp_pyobj *, spp_pyobj *, spp_pyobj *), 1)

/* Data symbols: pointers to `PyObject *` variables. */
#define SPP_PYAPI_DATA(X)          \
    X(PyExc_PermissionError, 1)    \
    X(PyExc_OSError, 1)

/* Objects: the address of a static object (None, False, a built-in type). */
#define SPP_PYAPI_OBJS(X)          \
    X(_Py_NoneStruct, 0)           \
    X(_Py_FalseStruct, 0)          \
    X(PyBytes_Type, 0)

#endif /* SPP_PYAPI_H */
