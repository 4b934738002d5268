/* One worker's per-request counters in its scoreboard slot (emperor/vassal/scoreboard.py), in C.
 *
 * A sync HTTP request's bookkeeping was eight memoryview reads and writes, two clock reads and
 * a bisect in Python: about 0.8 us, a tenth of what the worker's own Python spends on a plain
 * request. Tally does the same in two calls: begin() marks the slot busy and returns the start
 * (CLOCK_MONOTONIC ns, time.monotonic_ns()'s clock, which the master's harakiri check reads);
 * end(start, sent) counts the request, its bytes, its time and its histogram bucket, clears
 * busy and returns the request count (for max-requests); count() is end() without the busy
 * (the ASGI worker's, busy while any request is in flight). scoreboard.PyTally is the twin used
 * without a compiler; tests/test_scoreboard.py runs both.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <time.h>

#define MAX_BOUNDS 32

typedef struct {
    PyObject_HEAD
    Py_buffer view;
    int has_view;
    long long *busy, *requests, *tx, *rt, *hist;
    long long bounds[MAX_BOUNDS];
    Py_ssize_t nbounds;
} Tally;

static long long
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int
tally_init(Tally *self, PyObject *args, PyObject *kwds)
{
    PyObject *ints, *bounds;
    Py_ssize_t busy, requests, tx, rt, hist;
    static char *kwlist[] = {"ints", "busy", "requests", "tx", "rt", "hist", "bounds", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OnnnnnO!", kwlist, &ints, &busy, &requests, &tx, &rt, &hist,
                                     &PyTuple_Type, &bounds))
        return -1;
    if (self->has_view) {
        PyBuffer_Release(&self->view);
        self->has_view = 0;
    }
    if (PyObject_GetBuffer(ints, &self->view, PyBUF_CONTIG | PyBUF_FORMAT) < 0)
        return -1;
    self->has_view = 1;
    Py_ssize_t n = self->view.len / (Py_ssize_t)sizeof(long long);
    self->nbounds = PyTuple_GET_SIZE(bounds);
    if (self->view.itemsize != (Py_ssize_t)sizeof(long long) || self->view.format == NULL
            || strcmp(self->view.format, "q") != 0 || self->nbounds > MAX_BOUNDS) {
        PyErr_SetString(PyExc_ValueError, "Tally needs a writable 'q' memoryview and at most 32 bounds");
        return -1;
    }
    Py_ssize_t cells[] = {busy, requests, tx, rt, hist, hist + self->nbounds};
    for (size_t i = 0; i < sizeof(cells) / sizeof(cells[0]); i++) {
        if (cells[i] < 0 || cells[i] >= n) {
            PyErr_SetString(PyExc_IndexError, "a Tally cell is outside the scoreboard");
            return -1;
        }
    }
    for (Py_ssize_t i = 0; i < self->nbounds; i++) {
        self->bounds[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(bounds, i));
        if (self->bounds[i] == -1 && PyErr_Occurred())
            return -1;
    }
    long long *base = (long long *)self->view.buf;
    self->busy = base + busy;
    self->requests = base + requests;
    self->tx = base + tx;
    self->rt = base + rt;
    self->hist = base + hist;
    return 0;
}

static void
tally_dealloc(Tally *self)
{
    if (self->has_view)
        PyBuffer_Release(&self->view);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
tally_begin(Tally *self, PyObject *Py_UNUSED(args))
{
    if (!self->has_view) {
        PyErr_SetString(PyExc_ValueError, "Tally not initialised");
        return NULL;
    }
    long long start = now_ns();
    *self->busy = start;
    return PyLong_FromLongLong(start);
}

static PyObject *
tally_count(Tally *self, PyObject *const *args, Py_ssize_t nargs, int idle)
{
    if (nargs != 2 || !self->has_view) {
        PyErr_SetString(PyExc_TypeError, "end(start, sent) / count(start, sent)");
        return NULL;
    }
    long long start = PyLong_AsLongLong(args[0]);
    long long sent = PyLong_AsLongLong(args[1]);
    if ((start == -1 || sent == -1) && PyErr_Occurred())
        return NULL;
    long long took = (now_ns() - start) / 1000;
    long long done = *self->requests + 1;
    *self->requests = done;
    if (idle)
        *self->busy = 0;
    *self->tx += sent;
    *self->rt += took;
    Py_ssize_t b = 0;  /* bisect_left: the first bound >= took */
    while (b < self->nbounds && self->bounds[b] < took)
        b++;
    self->hist[b] += 1;
    return PyLong_FromLongLong(done);
}

static PyObject *
tally_end(Tally *self, PyObject *const *args, Py_ssize_t nargs)
{
    return tally_count(self, args, nargs, 1);
}

static PyObject *
tally_count_only(Tally *self, PyObject *const *args, Py_ssize_t nargs)
{
    return tally_count(self, args, nargs, 0);
}

static PyObject *
tally_idle(Tally *self, PyObject *Py_UNUSED(args))
{
    if (!self->has_view) {
        PyErr_SetString(PyExc_ValueError, "Tally not initialised");
        return NULL;
    }
    *self->busy = 0;
    Py_RETURN_NONE;
}

static PyMethodDef tally_methods[] = {
    {"begin", (PyCFunction)tally_begin, METH_NOARGS, "Mark the slot busy; the start (monotonic ns)."},
    {"idle", (PyCFunction)tally_idle, METH_NOARGS,
     "Clear busy without counting: what began was not a request after all (half a head)."},
    {"end", (PyCFunction)(void (*)(void))tally_end, METH_FASTCALL,
     "end(start, sent) -> requests: count one request (bytes, time, histogram) and clear busy."},
    {"count", (PyCFunction)(void (*)(void))tally_count_only, METH_FASTCALL,
     "count(start, sent) -> requests: as end() but busy is left alone (the ASGI worker's: busy while "
     "any request is in flight)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject TallyType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "emperor.vassal._tally.Tally",
    .tp_basicsize = sizeof(Tally),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Tally(ints, busy, requests, tx, rt, hist, bounds): one worker's per-request counters.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)tally_init,
    .tp_dealloc = (destructor)tally_dealloc,
    .tp_methods = tally_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "emperor.vassal._tally",
    "A worker's per-request scoreboard counters in C (optional; scoreboard.PyTally is the twin).", -1, NULL,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__tally(void)
{
    if (PyType_Ready(&TallyType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&TallyType);
    if (PyModule_AddObject(m, "Tally", (PyObject *)&TallyType) < 0) {
        Py_DECREF(&TallyType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
