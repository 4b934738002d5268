/* The uwsgi vars-block parser in C: the one loop on the request path that Python cannot
 * make cheap (two slices, two length reads and a dict store per var, ~20 vars a request).
 *
 * It only takes the fast path. Anything unusual (a truncated length, an empty key, a repeated
 * key, more than max_vars vars, CR/LF/NUL in a value, a UWSGI_* key) makes it return None, and
 * the pure-Python parser in uwsgi.py handles the request with its precise errors. So the two
 * implementations cannot disagree on anything but speed; tests/test_protocol.py checks both.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>

/* nginx sends the same keys in the same order on every request: keep the key objects by
 * position and reuse them when the bytes match (no allocation, and their hash is cached).
 * The GIL is held for the whole call, so threads of one worker cannot race on it. */
#define KEY_CACHE 64
static PyObject *key_cache[KEY_CACHE];

static PyObject *
cached_key(Py_ssize_t pos, const unsigned char *k, Py_ssize_t kl)
{
    if (pos < KEY_CACHE) {
        PyObject *hit = key_cache[pos];
        if (hit != NULL && PyUnicode_GET_LENGTH(hit) == kl && PyUnicode_KIND(hit) == PyUnicode_1BYTE_KIND
                && memcmp(PyUnicode_1BYTE_DATA(hit), k, kl) == 0) {
            Py_INCREF(hit);
            return hit;
        }
    }
    PyObject *key = PyUnicode_DecodeLatin1((const char *)k, kl, NULL);
    if (key != NULL && pos < KEY_CACHE) {
        Py_XSETREF(key_cache[pos], key);
        Py_INCREF(key);
    }
    return key;
}

static PyObject *
parse_vars(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer view;
    Py_ssize_t start, end, max_vars;
    if (!PyArg_ParseTuple(args, "y*nnn", &view, &start, &end, &max_vars))
        return NULL;
    if (start < 0 || end > view.len || start > end) {
        PyBuffer_Release(&view);
        Py_RETURN_NONE;
    }
    const unsigned char *b = (const unsigned char *)view.buf;
    PyObject *env = PyDict_New();
    if (env == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    Py_ssize_t i = start, count = 0;
    int fallback = 0;
    while (i < end) {
        if (i + 2 > end) { fallback = 1; break; }
        Py_ssize_t kl = b[i] | (b[i + 1] << 8);
        i += 2;
        if (kl == 0 || i + kl + 2 > end) { fallback = 1; break; }
        const unsigned char *k = b + i;
        i += kl;
        Py_ssize_t vl = b[i] | (b[i + 1] << 8);
        i += 2;
        if (i + vl > end) { fallback = 1; break; }
        const unsigned char *val = b + i;
        i += vl;
        if (++count > max_vars || (kl >= 6 && memcmp(k, "UWSGI_", 6) == 0)
                || memchr(val, '\r', vl) || memchr(val, '\n', vl) || memchr(val, '\0', vl)) {
            fallback = 1;
            break;
        }
        PyObject *key = cached_key(count - 1, k, kl);
        PyObject *value = key ? PyUnicode_DecodeLatin1((const char *)val, vl, NULL) : NULL;
        if (value == NULL || PyDict_SetItem(env, key, value) < 0) {
            Py_XDECREF(key);
            Py_XDECREF(value);
            Py_DECREF(env);
            PyBuffer_Release(&view);
            return NULL;
        }
        Py_DECREF(key);
        Py_DECREF(value);
    }
    PyBuffer_Release(&view);
    if (fallback || PyDict_GET_SIZE(env) != count) {  /* a repeated key shrinks the dict */
        Py_DECREF(env);
        Py_RETURN_NONE;
    }
    return env;
}

/* FieldSink: httptools' on_header callback for protocol/http.py's RequestParser, so that a
 * header field costs no Python frame. sink(name, value) counts the field, raises ``error``
 * (the parser's 431) once ``count`` exceeds ``limit``, strips the value's trailing SP/HT
 * (llhttp keeps it) and appends (name, value) to ``fields``, and to ``special`` too when the
 * name is one the parser's rules look at (Host, Expect, Content-Type, Content-Length,
 * Transfer-Encoding, in any case), so that they are checked without a Python loop over every
 * field. While ``fields`` is None (trailers) a field is counted and dropped. The rules stay in
 * http.py, which has the same class in Python as the fallback. */
typedef struct {
    PyObject_HEAD
    PyObject *fields;   /* a list, or None */
    PyObject *special;  /* a list, the parser clears it */
    PyObject *error;    /* the exception instance raised past the limit */
    Py_ssize_t count;
    Py_ssize_t limit;
    vectorcallfunc vectorcall;
} FieldSink;

/* Host, Expect, Content-Type, Content-Length, Transfer-Encoding (ASCII case-insensitive) */
static int
special_name(const char *n, Py_ssize_t len)
{
    const char *want;
    switch (len) {
    case 4: want = "host"; break;
    case 6: want = "expect"; break;
    case 12: want = "content-type"; break;
    case 14: want = "content-length"; break;
    case 17: want = "transfer-encoding"; break;
    default: return 0;
    }
    for (Py_ssize_t i = 0; i < len; i++) {
        if (Py_TOLOWER((unsigned char)n[i]) != want[i])
            return 0;
    }
    return 1;
}

static PyObject *
sink_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    FieldSink *self = (FieldSink *)callable;
    if (PyVectorcall_NARGS(nargsf) != 2 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "FieldSink(name, value) takes two positional arguments");
        return NULL;
    }
    PyObject *name = args[0], *value = args[1];
    if (!PyBytes_Check(name) || !PyBytes_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "FieldSink(name, value) takes bytes");
        return NULL;
    }
    if (++self->count > self->limit) {
        PyErr_SetObject((PyObject *)Py_TYPE(self->error), self->error);
        return NULL;
    }
    if (self->fields == Py_None)
        Py_RETURN_NONE;
    if (self->fields == NULL || !PyList_Check(self->fields)) {
        PyErr_SetString(PyExc_TypeError, "FieldSink.fields must be a list or None");
        return NULL;
    }
    Py_ssize_t len = PyBytes_GET_SIZE(value);
    const char *v = PyBytes_AS_STRING(value);
    Py_ssize_t end = len;
    while (end > 0 && (v[end - 1] == ' ' || v[end - 1] == '\t'))
        end--;
    PyObject *pair;
    if (end == len) {
        pair = PyTuple_Pack(2, name, value);
    } else {
        PyObject *stripped = PyBytes_FromStringAndSize(v, end);
        if (stripped == NULL)
            return NULL;
        pair = PyTuple_Pack(2, name, stripped);
        Py_DECREF(stripped);
    }
    if (pair == NULL)
        return NULL;
    int rc = PyList_Append(self->fields, pair);
    if (rc == 0 && special_name(PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name)))
        rc = PyList_Append(self->special, pair);
    Py_DECREF(pair);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

static int
sink_init(FieldSink *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"limit", "error", NULL};
    Py_ssize_t limit;
    PyObject *error;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "nO", kwlist, &limit, &error))
        return -1;
    if (!PyExceptionInstance_Check(error)) {
        PyErr_SetString(PyExc_TypeError, "FieldSink: error must be an exception instance");
        return -1;
    }
    PyObject *fields = PyList_New(0);
    if (fields == NULL)
        return -1;
    PyObject *special = PyList_New(0);
    if (special == NULL) {
        Py_DECREF(fields);
        return -1;
    }
    Py_XSETREF(self->fields, fields);
    Py_XSETREF(self->special, special);
    Py_INCREF(error);
    Py_XSETREF(self->error, error);
    self->limit = limit;
    self->count = 0;
    self->vectorcall = sink_vectorcall;
    return 0;
}

static int
sink_traverse(FieldSink *self, visitproc visit, void *arg)
{
    Py_VISIT(self->fields);
    Py_VISIT(self->special);
    Py_VISIT(self->error);
    return 0;
}

static int
sink_clear(FieldSink *self)
{
    Py_CLEAR(self->fields);
    Py_CLEAR(self->special);
    Py_CLEAR(self->error);
    return 0;
}

static void
sink_dealloc(FieldSink *self)
{
    PyObject_GC_UnTrack(self);
    sink_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef sink_members[] = {
    {"fields", T_OBJECT_EX, offsetof(FieldSink, fields), 0, "the fields of the head (a list), or None"},
    {"special", T_OBJECT_EX, offsetof(FieldSink, special), READONLY, "the fields the rules look at"},
    {"count", T_PYSSIZET, offsetof(FieldSink, count), 0, "fields counted in this message"},
    {"limit", T_PYSSIZET, offsetof(FieldSink, limit), 0, "the most fields a message may have"},
    {NULL},
};

static PyTypeObject FieldSinkType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "emperor.protocol._speedups.FieldSink",
    .tp_basicsize = sizeof(FieldSink),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "FieldSink(limit, error): httptools' on_header in C (see protocol/http.py).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)sink_init,
    .tp_dealloc = (destructor)sink_dealloc,
    .tp_traverse = (traverseproc)sink_traverse,
    .tp_clear = (inquiry)sink_clear,
    .tp_members = sink_members,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(FieldSink, vectorcall),
};

static PyMethodDef methods[] = {
    {"parse_vars", parse_vars, METH_VARARGS,
     "parse_vars(buf, start, end, max_vars) -> dict, or None when the Python parser must decide."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "emperor.protocol._speedups",
    "C fast paths for the uwsgi vars block and HTTP header fields (optional; Python fallbacks).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (PyType_Ready(&FieldSinkType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&FieldSinkType);
    if (PyModule_AddObject(m, "FieldSink", (PyObject *)&FieldSinkType) < 0) {
        Py_DECREF(&FieldSinkType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
