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

static PyMethodDef methods[] = {
    {"parse_vars", parse_vars, METH_VARARGS,
     "parse_vars(buf, start, end, max_vars) -> dict, or None when the Python parser must decide."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "emperor.protocol._speedups",
    "C fast path for the uwsgi vars block (optional; uwsgi.py falls back to Python).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&module);
}
