/* Reading a request body of known length straight into the bytes object wsgi.input returns.
 *
 * A Content-Length body read whole (Flask's request.get_data(), Django's request.body) went
 * through 64 KiB recv() calls, one bytes object each, the parser's bookkeeping per piece and a
 * final join: for a 1 MiB upload, 17 syscalls and two copies in user space. Python cannot
 * recv into a bytes object (recv_into wants a writable buffer, and bytes(bytearray) copies
 * again); this does: it allocates the result once, copies the pieces already received to its
 * start and lets recv() fill the rest, as large as the socket buffer allows per call.
 *
 * Only I/O lives here; the HTTP parser (emperor/protocol) stays sans-IO. The socket keeps its
 * SO_RCVTIMEO (socket-timeout): a recv() that times out ends the read like a closed peer. The
 * optional deadline (body-read-timeout) is looked at before each recv(): a peer that trickles
 * a byte now and then, each within socket-timeout, cannot hold the worker past it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

static PyObject *
recv_body(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 && nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "recv_body(fd, pieces, n[, deadline]) takes 3 or 4 arguments");
        return NULL;
    }
    double deadline = 0.0;  /* CLOCK_MONOTONIC seconds (Python's time.monotonic()); 0: none */
    if (nargs == 4) {
        deadline = PyFloat_AsDouble(args[3]);
        if (deadline == -1.0 && PyErr_Occurred())
            return NULL;
    }
    long fd = PyLong_AsLong(args[0]);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    if (fd < 0 || fd > 0x7fffffff) {
        PyErr_SetString(PyExc_ValueError, "bad file descriptor");
        return NULL;
    }
    PyObject *pieces = args[1];
    if (!PyList_CheckExact(pieces)) {
        PyErr_SetString(PyExc_TypeError, "pieces must be a list of bytes");
        return NULL;
    }
    Py_ssize_t n = PyLong_AsSsize_t(args[2]);
    if (n < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "n must be >= 0");
        return NULL;
    }
    Py_ssize_t have = 0, count = PyList_GET_SIZE(pieces);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *p = PyList_GET_ITEM(pieces, i);
        if (!PyBytes_CheckExact(p)) {
            PyErr_SetString(PyExc_TypeError, "pieces must be a list of bytes");
            return NULL;
        }
        have += PyBytes_GET_SIZE(p);
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, have + n);
    if (out == NULL)
        return NULL;
    char *buf = PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *p = PyList_GET_ITEM(pieces, i);
        memcpy(buf, PyBytes_AS_STRING(p), PyBytes_GET_SIZE(p));
        buf += PyBytes_GET_SIZE(p);
    }
    Py_ssize_t got = 0;
    int err = 0;
    while (got < n) {
        if (deadline > 0.0) {  /* body-read-timeout: looked at before each wait */
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            if ((double)ts.tv_sec + (double)ts.tv_nsec / 1e9 > deadline) {
                err = ETIMEDOUT;
                break;
            }
        }
        ssize_t r;
        Py_BEGIN_ALLOW_THREADS
        r = recv((int)fd, buf + got, (size_t)(n - got), 0);
        Py_END_ALLOW_THREADS
        if (r > 0) {
            got += r;
            continue;
        }
        if (r == 0)
            break;  /* the peer closed: the caller sees a short result and errno 0 */
        if (errno == EINTR) {  /* a signal (the worker's park timer): run its handler, go on */
            if (PyErr_CheckSignals() < 0) {
                Py_DECREF(out);
                return NULL;
            }
            continue;
        }
        err = errno;  /* EAGAIN: SO_RCVTIMEO (socket-timeout) ran out; or a reset */
        break;
    }
    if (got < n && _PyBytes_Resize(&out, have + got) < 0)
        return NULL;
    return Py_BuildValue("(Ni)", out, err);
}

static PyMethodDef methods[] = {
    {"recv_body", (PyCFunction)(void (*)(void))recv_body, METH_FASTCALL,
     "recv_body(fd, pieces, n[, deadline]) -> (bytes, errno): the pieces joined, then n bytes received from "
     "fd into the same object; shorter when the peer closed (errno 0), recv failed (errno) or the monotonic "
     "deadline passed before a wait (ETIMEDOUT)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "emperor.vassal._bodyread",
    "Receive a request body of known length into one bytes object (optional; a Python fallback).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__bodyread(void)
{
    return PyModule_Create(&module);
}
