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
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

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

/* The vars block b[start:end] as a new dict; None (a new reference) for anything the
 * Python parser must judge; NULL with an exception on a memory error. */
static PyObject *
vars_dict(const unsigned char *b, Py_ssize_t start, Py_ssize_t end, Py_ssize_t max_vars)
{
    PyObject *env = PyDict_New();
    if (env == NULL)
        return NULL;
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
            return NULL;
        }
        Py_DECREF(key);
        Py_DECREF(value);
    }
    if (fallback || PyDict_GET_SIZE(env) != count) {  /* a repeated key shrinks the dict */
        Py_DECREF(env);
        Py_RETURN_NONE;
    }
    return env;
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
    PyObject *env = vars_dict((const unsigned char *)view.buf, start, end, max_vars);
    PyBuffer_Release(&view);
    return env;
}

/* (defined with the HTTP head's strings below; tentative definitions here) */
static PyObject *str_empty, *key_method, *key_path, *key_scheme, *key_https, *str_http;
static PyObject *key_content_length, *key_http_content_length, *key_http_content_type, *key_request_scheme,
    *key_script_name, *key_input;

static int
discard(PyObject *d, PyObject *key)
{
    if (PyDict_GetItemWithError(d, key) == NULL)
        return PyErr_Occurred() ? -1 : 0;
    return PyDict_DelItem(d, key);
}

/* uwsgi_request(data, max_vars, buffer_size, base, empty_input): the usual uwsgi request
 * (modifier 0/0, nothing after the vars block, no body, REQUEST_METHOD and PATH_INFO there,
 * no https claim and no UWSGI_* var) as (environ, method), the environ completed as
 * parse_vars + environ_from_uwsgi complete it (uwsgi.py, wsgi.py) with ``wsgi.input`` =
 * empty_input. None for anything else (nothing consumed): the worker's Python path then reads
 * it with its precise checks and errors, so the two cannot disagree but on speed. */
static PyObject *
uwsgi_request(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5 || !PyBytes_CheckExact(args[0]) || !PyDict_CheckExact(args[3])) {
        PyErr_SetString(PyExc_TypeError, "uwsgi_request(data: bytes, max_vars, buffer_size, base: dict, "
                                         "empty_input)");
        return NULL;
    }
    const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t n = PyBytes_GET_SIZE(args[0]);
    Py_ssize_t max_vars = PyLong_AsSsize_t(args[1]), buffer_size = PyLong_AsSsize_t(args[2]);
    if ((max_vars == -1 || buffer_size == -1) && PyErr_Occurred())
        return NULL;
    if (n < 4 || b[0] != 0 || b[3] != 0)
        Py_RETURN_NONE;
    Py_ssize_t size = b[1] | (b[2] << 8);
    if (size == 0 || size > buffer_size || 4 + size != n)
        Py_RETURN_NONE;
    PyObject *env = vars_dict(b, 4, n, max_vars);
    if (env == NULL || env == Py_None)
        return env;
    /* nginx repeats the CGI vars as headers: keep one source (as uwsgi.parse_vars) */
    if (discard(env, key_http_content_length) < 0 || discard(env, key_http_content_type) < 0)
        goto error;
    PyObject *cl = PyDict_GetItemWithError(env, key_content_length);
    if (cl != NULL && PyUnicode_GET_LENGTH(cl) != 0)
        goto python;  /* a body (or "0"): the Python path reads and checks it */
    PyObject *method = PyDict_GetItemWithError(env, key_method);
    if (method == NULL || PyDict_GetItemWithError(env, key_path) == NULL)
        goto python;
    /* wsgi.url_scheme: REQUEST_SCHEME http, else no claim of https (url_scheme in wsgi.py) */
    PyObject *scheme = PyDict_GetItemWithError(env, key_request_scheme);
    if (scheme == NULL || PyUnicode_CompareWithASCIIString(scheme, "http") != 0) {
        if (scheme != NULL && PyUnicode_CompareWithASCIIString(scheme, "https") == 0)
            goto python;
        PyObject *https = PyDict_GetItemWithError(env, key_https);
        if (https != NULL && PyUnicode_GET_LENGTH(https) != 0)
            goto python;  /* (on, 1, or anything else: the Python path decides) */
    }
    if (PyErr_Occurred() || PyDict_Update(env, args[3]) < 0)
        goto error;
    if (PyDict_GetItemWithError(env, key_script_name) == NULL
            && (PyErr_Occurred() || PyDict_SetItem(env, key_script_name, str_empty) < 0))
        goto error;
    if (PyDict_SetItem(env, key_scheme, str_http) < 0 || PyDict_SetItem(env, key_input, args[4]) < 0)
        goto error;
    method = PyDict_GetItemWithError(env, key_method);  /* (again: the update could have replaced it) */
    if (method == NULL)
        goto python;
    return Py_BuildValue("(NO)", env, method);
python:
    if (PyErr_Occurred())
        goto error;
    Py_DECREF(env);
    Py_RETURN_NONE;
error:
    Py_DECREF(env);
    return NULL;
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


/* parse_head: one whole, plain HTTP/1.x request head straight into a WSGI environ.
 *
 * The sync HTTP worker's usual request (what nginx's proxy_pass and wrk send: GET or HEAD, an
 * origin-form target, a handful of ordinary fields, no body or a Content-Length one) costs
 * llhttp's callbacks, a Head,
 * a Python pass over the rules and another over the fields to build the environ. This takes
 * only that shape, checked strictly, and returns None for anything else, so that llhttp and
 * the rules in http.py (the authority) decide every other request with their precise errors:
 * an incomplete head or one over max_head, more than max_headers fields, a method other than
 * GET HEAD POST PUT DELETE OPTIONS PATCH, a target not starting with '/' or with a byte
 * outside RFC 3986's unreserved, sub-delims and ":@/?%", a version other than HTTP/1.0 and
 * HTTP/1.1, a field name that is not a token, a value byte outside VCHAR/SP/HT, anything but
 * CRLF line ends, Transfer-Encoding, Expect or Upgrade fields (a chunked body, a 100-continue,
 * a protocol switch), a Content-Length that is not 1 to 18 digits or comes twice, a second
 * Host, Content-Type or Connection, a Connection other than "close" or "keep-alive". The
 * body of a Content-Length is the caller's to count (http.py reads it without llhttp). tests/test_http_codec.py checks that both paths give
 * the same environ and events on the same bytes (and random mutations of them).
 *
 * The environ is a copy of ``base`` plus what environ_from_http adds (REMOTE_* come from
 * ``base``, which the connection fills once); ``keys`` is wsgi.py's field name -> environ key
 * cache, shared with the Python path and filled the same way; ``trusted`` (the peer is in
 * forwarded-allow-ips) applies X-Forwarded-For/-Proto as wsgi.forwarded does.
 */
static const char *FAST_METHODS[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", NULL};
static PyObject *method_strs[7];
static PyObject *str_http11, *str_http10, *str_empty, *key_method, *key_path, *key_query,
    *key_uri, *key_protocol, *str_comma, *str_semicolon, *key_cookie, *key_xff, *key_xfp,
    *key_remote_addr, *key_remote_port, *key_scheme, *key_https, *str_http, *str_https, *str_on;

/* RFC 9110 tchar */
static int
is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* RFC 3986 unreserved, sub-delims, ':' '@' '/' '?' '%' */
static int
is_target_char(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c != 0 && strchr("-._~!$&'()*+,;=:@/?%", c) != NULL;
}

static int
name_is(const unsigned char *n, Py_ssize_t len, const char *lower)
{
    if ((Py_ssize_t)strlen(lower) != len)
        return 0;
    for (Py_ssize_t i = 0; i < len; i++) {
        if (Py_TOLOWER(n[i]) != (unsigned char)lower[i])
            return 0;
    }
    return 1;
}

static int
hexval(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* PATH_INFO: the path %-decoded as urllib.parse.unquote_to_bytes does (a '%' not followed by
 * two hex digits stays), then latin-1 */
static PyObject *
decode_path(const unsigned char *p, Py_ssize_t len, int utf8)
{
    if (memchr(p, '%', len) == NULL)
        return PyUnicode_DecodeLatin1((const char *)p, len, NULL);
    char small[512];
    char *out = len <= (Py_ssize_t)sizeof(small) ? small : PyMem_Malloc(len);
    if (out == NULL)
        return PyErr_NoMemory();
    Py_ssize_t o = 0;
    for (Py_ssize_t i = 0; i < len; i++) {
        int hi, lo;
        if (p[i] == '%' && i + 2 < len && (hi = hexval(p[i + 1])) >= 0
                && (lo = hexval(p[i + 2])) >= 0) {
            out[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            out[o++] = (char)p[i];
        }
    }
    PyObject *s = utf8 ? PyUnicode_DecodeUTF8(out, o, "replace") : PyUnicode_DecodeLatin1(out, o, NULL);
    if (out != small)
        PyMem_Free(out);
    return s;
}

#define FAST_MAX_FIELDS 128

typedef struct {
    const unsigned char *name, *value;
    Py_ssize_t name_len, value_len;
} HeadField;

/* the environ key of a field name not in ``keys`` yet, as wsgi._cgi_key computes it */
static PyObject *
cgi_key(const unsigned char *n, Py_ssize_t len)
{
    if (memchr(n, '_', len) != NULL) {
        Py_INCREF(str_empty);
        return str_empty;
    }
    char small[256];
    char *out = len + 5 <= (Py_ssize_t)sizeof(small) ? small : PyMem_Malloc(len + 5);
    if (out == NULL)
        return PyErr_NoMemory();
    memcpy(out, "HTTP_", 5);
    for (Py_ssize_t i = 0; i < len; i++)
        out[5 + i] = n[i] == '-' ? '_' : (char)Py_TOUPPER(n[i]);
    PyObject *key;
    if ((len == 12 && memcmp(out + 5, "CONTENT_TYPE", 12) == 0)
            || (len == 14 && memcmp(out + 5, "CONTENT_LENGTH", 14) == 0))
        key = PyUnicode_DecodeLatin1(out + 5, len, NULL);
    else
        key = PyUnicode_DecodeLatin1(out, len + 5, NULL);
    if (out != small)
        PyMem_Free(out);
    return key;
}

/* env[key] = value, or env[key] += sep + value for a repeated HTTP_* field */
static int
store_field(PyObject *env, PyObject *key, PyObject *value)
{
    PyObject *old = PyDict_GetItemWithError(env, key);
    if (old == NULL) {
        if (PyErr_Occurred())
            return -1;
        return PyDict_SetItem(env, key, value);
    }
    if (PyUnicode_GET_LENGTH(key) < 5 || PyUnicode_KIND(key) != PyUnicode_1BYTE_KIND
            || memcmp(PyUnicode_1BYTE_DATA(key), "HTTP_", 5) != 0)
        return PyDict_SetItem(env, key, value);
    PyObject *sep = PyUnicode_Compare(key, key_cookie) == 0 ? str_semicolon : str_comma;
    PyObject *joined = PyUnicode_Concat(old, sep);
    if (joined == NULL)
        return -1;
    PyObject *all = PyUnicode_Concat(joined, value);
    Py_DECREF(joined);
    if (all == NULL)
        return -1;
    int rc = PyDict_SetItem(env, key, all);
    Py_DECREF(all);
    return rc;
}

/* wsgi.forwarded for a trusted peer: X-Forwarded-For's last entry replaces REMOTE_ADDR (and
 * drops REMOTE_PORT), an X-Forwarded-Proto of http or https replaces wsgi.url_scheme. The
 * values are the fast path's (visible ASCII, SP, HT), so stripping SP and HT is str.strip(). */
static int
forwarded(PyObject *env)
{
    PyObject *xff = PyDict_GetItemWithError(env, key_xff);
    if (xff == NULL && PyErr_Occurred())
        return -1;
    if (xff != NULL && PyUnicode_Check(xff) && PyUnicode_IS_ASCII(xff)) {
        const char *v = (const char *)PyUnicode_1BYTE_DATA(xff);
        Py_ssize_t end = PyUnicode_GET_LENGTH(xff), start = end;
        while (start > 0 && v[start - 1] != ',')
            start--;
        while (start < end && (v[start] == ' ' || v[start] == '\t'))
            start++;
        while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
            end--;
        if (end > start) {
            PyObject *addr = PyUnicode_Substring(xff, start, end);
            if (addr == NULL || PyDict_SetItem(env, key_remote_addr, addr) < 0) {
                Py_XDECREF(addr);
                return -1;
            }
            Py_DECREF(addr);
            if (PyDict_DelItem(env, key_remote_port) < 0) {
                if (!PyErr_ExceptionMatches(PyExc_KeyError))
                    return -1;
                PyErr_Clear();
            }
        }
    }
    PyObject *proto = PyDict_GetItemWithError(env, key_xfp);
    if (proto == NULL && PyErr_Occurred())
        return -1;
    if (proto != NULL && PyUnicode_Check(proto) && PyUnicode_IS_ASCII(proto)) {
        const char *v = (const char *)PyUnicode_1BYTE_DATA(proto);
        Py_ssize_t start = 0, end = PyUnicode_GET_LENGTH(proto);
        while (start < end && (v[start] == ' ' || v[start] == '\t'))
            start++;
        while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
            end--;
        if (name_is((const unsigned char *)v + start, end - start, "https")) {
            if (PyDict_SetItem(env, key_scheme, str_https) < 0 || PyDict_SetItem(env, key_https, str_on) < 0)
                return -1;
        } else if (name_is((const unsigned char *)v + start, end - start, "http")) {
            if (PyDict_SetItem(env, key_scheme, str_http) < 0)
                return -1;
        }
    }
    return 0;
}

static int
set_str(PyObject *env, PyObject *key, PyObject *value)
{
    if (value == NULL)
        return -1;
    int rc = PyDict_SetItem(env, key, value);
    Py_DECREF(value);
    return rc;
}

static PyObject *
length_obj(long long length)
{
    if (length < 0)
        Py_RETURN_NONE;
    return PyLong_FromLongLong(length);
}

/* The fields as an ASGI scope has them: (name in lower case, value) bytes pairs; ``host``, when
 * not NULL, gets the first Host value (a new reference, or NULL when there is none). */
static PyObject *
lowered_headers(HeadField *fields, Py_ssize_t count, PyObject **host_out)
{
    PyObject *headers = PyList_New(count), *host = NULL;
    if (headers == NULL)
        return NULL;
    for (Py_ssize_t f = 0; f < count; f++) {
        PyObject *name = PyBytes_FromStringAndSize(NULL, fields[f].name_len);
        if (name == NULL)
            goto error;
        char *out = PyBytes_AS_STRING(name);
        for (Py_ssize_t i = 0; i < fields[f].name_len; i++)
            out[i] = (char)Py_TOLOWER(fields[f].name[i]);
        PyObject *value = PyBytes_FromStringAndSize((const char *)fields[f].value, fields[f].value_len);
        if (value == NULL) {
            Py_DECREF(name);
            goto error;
        }
        if (host_out != NULL && host == NULL && fields[f].name_len == 4 && memcmp(out, "host", 4) == 0) {
            host = value;
            Py_INCREF(host);
        }
        PyObject *pair = PyTuple_Pack(2, name, value);
        Py_DECREF(name);
        Py_DECREF(value);
        if (pair == NULL)
            goto error;
        PyList_SET_ITEM(headers, f, pair);
    }
    if (host_out != NULL)
        *host_out = host;
    return headers;
error:
    Py_DECREF(headers);
    Py_XDECREF(host);
    return NULL;
}

/* parse_head's result without an environ: what http.Head holds (for the ASGI worker), the
 * field names in lower case (as an ASGI scope has them) */
static PyObject *
head_fields(const unsigned char *b, Py_ssize_t end, int m, Py_ssize_t tstart, Py_ssize_t tend,
            Py_ssize_t query, int http11, int connection, long long length, HeadField *fields,
            Py_ssize_t count)
{
    PyObject *host = NULL;
    PyObject *headers = lowered_headers(fields, count, &host);
    if (headers == NULL)
        return NULL;
    Py_ssize_t path_end = query < 0 ? tend : query;
    int keep = http11 ? connection != 1 : connection == 2;
    PyObject *target = PyUnicode_DecodeLatin1((const char *)b + tstart, tend - tstart, NULL);
    if (target == NULL)
        goto error;
    PyObject *query_str;
    if (query < 0) {
        Py_INCREF(str_empty);
        query_str = str_empty;
    } else if ((query_str = PyUnicode_DecodeLatin1((const char *)b + query + 1, tend - query - 1, NULL)) == NULL) {
        Py_DECREF(target);
        goto error;
    }
    if (host == NULL) {
        Py_INCREF(Py_None);
        host = Py_None;
    }
    PyObject *clen = length_obj(length);
    if (clen == NULL) {
        Py_DECREF(target);
        Py_DECREF(query_str);
        Py_DECREF(headers);
        Py_DECREF(host);
        return NULL;
    }
    /* N steals headers, target, query_str, host and clen, also when building the tuple fails */
    PyObject *result = Py_BuildValue("(nNOONNOy#NN)", end, headers, keep ? Py_True : Py_False, method_strs[m],
                                     target, clen, http11 ? str_http11 : str_http10, (const char *)b + tstart,
                                     path_end - tstart, query_str, host);
    return result;
error:
    Py_DECREF(headers);
    Py_XDECREF(host);
    return NULL;
}

/* parse_head's result with an ASGI ``http`` scope (the ASGI worker's): a copy of ``base`` (the
 * connection's constant keys: type, scheme, root_path, client, server, state) with the request's,
 * as asgi.scope_from_head builds it (state shallow-copied per request; from a trusted peer the
 * last X-Forwarded-For entry as client and X-Forwarded-Proto as scheme). */
static PyObject *key_asgi, *key_http_version, *key_s_method, *key_s_path, *key_raw_path, *key_query_string,
    *key_headers, *key_state, *key_client, *key_s_scheme, *str_v11, *str_v10, *asgi_versions;

static int
is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static int
scope_forwarded(PyObject *scope, HeadField *fields, Py_ssize_t count)
{
    const unsigned char *xff = NULL;
    Py_ssize_t xff_len = 0;
    char proto[16];
    Py_ssize_t plen = 0;
    int protos = 0, too_long = 0;
    for (Py_ssize_t f = 0; f < count; f++) {
        if (name_is(fields[f].name, fields[f].name_len, "x-forwarded-for")) {
            xff = fields[f].value;
            xff_len = fields[f].value_len;
        } else if (name_is(fields[f].name, fields[f].name_len, "x-forwarded-proto")) {
            protos++;
            if (plen + fields[f].value_len > (Py_ssize_t)sizeof(proto))
                too_long = 1;
            else {
                memcpy(proto + plen, fields[f].value, fields[f].value_len);
                plen += fields[f].value_len;
            }
        }
    }
    if (xff != NULL) {
        Py_ssize_t start = xff_len;
        while (start > 0 && xff[start - 1] != ',')
            start--;
        Py_ssize_t stop = xff_len;
        while (start < stop && is_space(xff[start]))
            start++;
        while (stop > start && is_space(xff[stop - 1]))
            stop--;
        if (stop > start) {
            PyObject *client = Py_BuildValue("(Ni)", PyUnicode_DecodeLatin1((const char *)xff + start,
                                                                           stop - start, NULL), 0);
            if (client == NULL || PyDict_SetItem(scope, key_client, client) < 0) {
                Py_XDECREF(client);
                return -1;
            }
            Py_DECREF(client);
        }
    }
    if (protos && !too_long) {
        Py_ssize_t start = 0, stop = plen;
        while (start < stop && is_space((unsigned char)proto[start]))
            start++;
        while (stop > start && is_space((unsigned char)proto[stop - 1]))
            stop--;
        const unsigned char *v = (const unsigned char *)proto + start;
        if (name_is(v, stop - start, "https")) {
            if (PyDict_SetItem(scope, key_s_scheme, str_https) < 0)
                return -1;
        } else if (name_is(v, stop - start, "http")) {
            if (PyDict_SetItem(scope, key_s_scheme, str_http) < 0)
                return -1;
        }
    }
    return 0;
}

static PyObject *
head_scope(const unsigned char *b, Py_ssize_t end, int m, Py_ssize_t tstart, Py_ssize_t tend,
           Py_ssize_t query, int http11, int connection, long long length, HeadField *fields,
           Py_ssize_t count, PyObject *base, int trusted)
{
    PyObject *scope = PyDict_Copy(base), *v;
    if (scope == NULL)
        return NULL;
    Py_ssize_t path_end = query < 0 ? tend : query;
    PyObject *state = PyDict_GetItemWithError(base, key_state);  /* borrowed */
    if (state == NULL && PyErr_Occurred())
        goto error;
    v = PyDict_Copy(asgi_versions);
    if (set_str(scope, key_asgi, v) < 0
            || PyDict_SetItem(scope, key_http_version, http11 ? str_v11 : str_v10) < 0
            || PyDict_SetItem(scope, key_s_method, method_strs[m]) < 0
            || set_str(scope, key_s_path, decode_path(b + tstart, path_end - tstart, 1)) < 0
            || set_str(scope, key_raw_path, PyBytes_FromStringAndSize((const char *)b + tstart,
                                                                    path_end - tstart)) < 0
            || set_str(scope, key_query_string, query < 0 ? PyBytes_FromStringAndSize(NULL, 0)
                       : PyBytes_FromStringAndSize((const char *)b + query + 1, tend - query - 1)) < 0
            || set_str(scope, key_headers, lowered_headers(fields, count, NULL)) < 0
            || set_str(scope, key_state, state != NULL && PyDict_Check(state) ? PyDict_Copy(state)
                                                                             : PyDict_New()) < 0)
        goto error;
    if (trusted && scope_forwarded(scope, fields, count) < 0)
        goto error;
    int keep = http11 ? connection != 1 : connection == 2;
    PyObject *clen = length_obj(length);
    if (clen == NULL)
        goto error;
    return Py_BuildValue("(nNOONNO)", end, scope, keep ? Py_True : Py_False, method_strs[m],
                         PyUnicode_DecodeLatin1((const char *)b + tstart, tend - tstart, NULL), clen,
                         http11 ? str_http11 : str_http10);
error:
    Py_DECREF(scope);
    return NULL;
}

static PyObject *
parse_head(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6 || !((PyDict_Check(args[1]) && (PyDict_Check(args[2]) || args[2] == Py_None))
                        || (args[1] == Py_None && args[2] == Py_None))) {
        PyErr_SetString(PyExc_TypeError,
                        "parse_head(data, base: dict | None, keys: dict | None, max_head, max_headers, trusted)");
        return NULL;
    }
    PyObject *base = args[1], *keys = args[2];
    Py_ssize_t max_head = PyLong_AsSsize_t(args[3]);
    Py_ssize_t max_headers = PyLong_AsSsize_t(args[4]);
    if ((max_head == -1 || max_headers == -1) && PyErr_Occurred())
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *b = (const unsigned char *)view.buf;
    Py_ssize_t limit = view.len < max_head ? view.len : max_head;
    PyObject *env = NULL;
    HeadField fields[FAST_MAX_FIELDS];
    Py_ssize_t count = 0, end = -1, i;

    /* the whole head, within max_head */
    for (i = 0; i + 3 < limit; i++) {
        const unsigned char *cr = memchr(b + i, '\r', limit - 3 - i);
        if (cr == NULL)
            break;
        i = cr - b;
        if (b[i + 1] == '\n' && b[i + 2] == '\r' && b[i + 3] == '\n') {
            end = i + 4;
            break;
        }
    }
    if (end < 0)
        goto fallback;

    /* the request line: METHOD SP origin-form SP HTTP/1.x CRLF */
    int m;
    Py_ssize_t mlen = 0;
    for (m = 0; FAST_METHODS[m] != NULL; m++) {
        mlen = (Py_ssize_t)strlen(FAST_METHODS[m]);
        if (mlen + 1 < end && memcmp(b, FAST_METHODS[m], mlen) == 0 && b[mlen] == ' ')
            break;
    }
    if (FAST_METHODS[m] == NULL)
        goto fallback;
    Py_ssize_t tstart = mlen + 1, query = -1;
    i = tstart;
    if (b[i] != '/')
        goto fallback;
    while (i < end && b[i] != ' ') {
        if (!is_target_char(b[i]))
            goto fallback;
        if (b[i] == '?' && query < 0)
            query = i;
        i++;
    }
    Py_ssize_t tend = i;
    if (i + 11 > end || memcmp(b + i, " HTTP/1.", 8) != 0 || (b[i + 8] != '0' && b[i + 8] != '1')
            || b[i + 9] != '\r' || b[i + 10] != '\n')
        goto fallback;
    int http11 = b[i + 8] == '1';
    i += 11;

    /* the fields: token ":" OWS value OWS CRLF, then the blank line */
    int hosts = 0, types = 0, connection = 0;  /* connection: 0 none, 1 close, 2 keep-alive */
    long long length = -1;  /* Content-Length, -1: none */
    for (;;) {
        if (b[i] == '\r') {
            if (i + 2 == end && b[i + 1] == '\n')
                break;
            goto fallback;
        }
        Py_ssize_t ns = i;
        while (i < end && is_tchar(b[i]))
            i++;
        if (i == ns || b[i] != ':')
            goto fallback;
        Py_ssize_t nl = i - ns;
        i++;
        while (b[i] == ' ' || b[i] == '\t')
            i++;
        Py_ssize_t vs = i;
        while (i < end && b[i] != '\r') {
            unsigned char c = b[i];
            if (c != '\t' && (c < 0x20 || c >= 0x7f))
                goto fallback;
            i++;
        }
        if (i + 1 >= end || b[i + 1] != '\n')
            goto fallback;
        Py_ssize_t ve = i;
        while (ve > vs && (b[ve - 1] == ' ' || b[ve - 1] == '\t'))
            ve--;
        i += 2;
        if (++count > max_headers || count > FAST_MAX_FIELDS)
            goto fallback;
        const unsigned char *n = b + ns;
        if (name_is(n, nl, "transfer-encoding") || name_is(n, nl, "expect") || name_is(n, nl, "upgrade"))
            goto fallback;
        if (name_is(n, nl, "content-length")) {  /* once, 1 to 18 digits */
            if (length >= 0 || ve - vs < 1 || ve - vs > 18)
                goto fallback;
            length = 0;
            for (Py_ssize_t d = vs; d < ve; d++) {
                if (b[d] < '0' || b[d] > '9')
                    goto fallback;
                length = length * 10 + (b[d] - '0');
            }
        }
        if (name_is(n, nl, "host") && hosts++)
            goto fallback;
        if (name_is(n, nl, "content-type") && types++)
            goto fallback;
        if (name_is(n, nl, "connection")) {
            if (connection)
                goto fallback;
            if (name_is(b + vs, ve - vs, "close"))
                connection = 1;
            else if (name_is(b + vs, ve - vs, "keep-alive"))
                connection = 2;
            else
                goto fallback;
        }
        fields[count - 1] = (HeadField){n, b + vs, nl, ve - vs};
    }

    if (base == Py_None) {
        PyBuffer_Release(&view);
        return head_fields(b, end, m, tstart, tend, query, http11, connection, length, fields, count);
    }
    if (keys == Py_None) {  /* an ASGI scope */
        int trusted = PyObject_IsTrue(args[5]);
        PyObject *got = trusted < 0 ? NULL : head_scope(b, end, m, tstart, tend, query, http11, connection,
                                                        length, fields, count, base, trusted);
        PyBuffer_Release(&view);
        return got;
    }

    /* the environ */
    env = PyDict_Copy(base);
    if (env == NULL)
        goto error;
    Py_ssize_t path_end = query < 0 ? tend : query;
    if (PyDict_SetItem(env, key_method, method_strs[m]) < 0
            || set_str(env, key_path, decode_path(b + tstart, path_end - tstart, 0)) < 0
            || (query < 0 ? PyDict_SetItem(env, key_query, str_empty)
                          : set_str(env, key_query, PyUnicode_DecodeLatin1(
                                (const char *)b + query + 1, tend - query - 1, NULL))) < 0
            || set_str(env, key_uri, PyUnicode_DecodeLatin1((const char *)b + tstart, tend - tstart, NULL)) < 0
            || PyDict_SetItem(env, key_protocol, http11 ? str_http11 : str_http10) < 0)
        goto error;
    for (Py_ssize_t f = 0; f < count; f++) {
        PyObject *name = PyBytes_FromStringAndSize((const char *)fields[f].name, fields[f].name_len);
        if (name == NULL)
            goto error;
        PyObject *key = PyDict_GetItemWithError(keys, name);
        if (key != NULL) {
            Py_INCREF(key);
        } else if (PyErr_Occurred()) {
            Py_DECREF(name);
            goto error;
        } else {
            key = cgi_key(fields[f].name, fields[f].name_len);
            if (key == NULL || (PyDict_GET_SIZE(keys) < 2048 && PyDict_SetItem(keys, name, key) < 0)) {
                Py_XDECREF(key);
                Py_DECREF(name);
                goto error;
            }
        }
        Py_DECREF(name);
        if (PyUnicode_GET_LENGTH(key) == 0) {  /* a name with '_': dropped */
            Py_DECREF(key);
            continue;
        }
        PyObject *value = PyUnicode_DecodeLatin1((const char *)fields[f].value, fields[f].value_len, NULL);
        int rc = value == NULL ? -1 : store_field(env, key, value);
        Py_DECREF(key);
        Py_XDECREF(value);
        if (rc < 0)
            goto error;
    }
    if (PyObject_IsTrue(args[5]) && forwarded(env) < 0)
        goto error;
    int keep = http11 ? connection != 1 : connection == 2;
    PyBuffer_Release(&view);
    PyObject *uri = PyDict_GetItemWithError(env, key_uri);  /* borrowed: env holds it */
    PyObject *clen = length_obj(length);
    if (clen == NULL) {
        Py_DECREF(env);
        return NULL;
    }
    return Py_BuildValue("(nNOOONO)", end, env, keep ? Py_True : Py_False, method_strs[m], uri, clen,
                         http11 ? str_http11 : str_http10);

fallback:
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
error:
    Py_XDECREF(env);
    PyBuffer_Release(&view);
    return NULL;
}

/* ---- the response head of a plain response (the sync HTTP worker's usual one) ---------------
 *
 * heads caches (status, *headers) -> (checked head without its blank line, the app's
 * Content-Length or -1, the app asked to close), filled by the Python side (http_conn.py's
 * HTTPServer.head, which checks the app's headers). This adds what HTTPExchange.make_head adds
 * for a whole body of known length that may have one: Date, Content-Length (unless the app gave
 * it), Connection. Anything else returns None and the Python path decides: a head not cached
 * yet, an app's Content-Length other than the body's, an app asking to close, a status without
 * a body (1xx, 204, 304). */
static const char *DAYS[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char *MONTHS[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
                               "Dec"};
static time_t date_second = -1;
static char date_buf[64];
static int date_len;

static void
date_refresh(time_t now)
{
    struct tm tm;
    gmtime_r(&now, &tm);
    date_len = snprintf(date_buf, sizeof(date_buf), "Date: %s, %02d %s %04d %02d:%02d:%02d GMT\r\n",
                        DAYS[tm.tm_wday], tm.tm_mday, MONTHS[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour,
                        tm.tm_min, tm.tm_sec);
    date_second = now;
}

/* The head (and, when ``body`` is not NULL, the body after it: one object, one copy) or None
 * (a new reference either way; NULL on error). ``need_cl``: only under the app's own
 * Content-Length (the first piece of an iterable is the whole body only when it says so). */
static PyObject *
build_response(PyObject *heads, PyObject *status, PyObject *headers, Py_ssize_t length, int keep, int version10,
               PyObject *body, int need_cl)
{
    if (!PyUnicode_Check(status) || !PyList_CheckExact(headers) || PyUnicode_GET_LENGTH(status) < 3)
        Py_RETURN_NONE;
    Py_UCS4 c0 = PyUnicode_READ_CHAR(status, 0);
    if (c0 == '1' || ((c0 == '2' || c0 == '3') && PyUnicode_READ_CHAR(status, 1) == '0'
                      && PyUnicode_READ_CHAR(status, 2) == '4'))
        Py_RETURN_NONE;  /* 1xx, 204, 304: no body */
    Py_ssize_t n = PyList_GET_SIZE(headers);
    PyObject *key = PyTuple_New(n + 1);
    if (key == NULL)
        return NULL;
    Py_INCREF(status);
    PyTuple_SET_ITEM(key, 0, status);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *h = PyList_GET_ITEM(headers, i);
        Py_INCREF(h);
        PyTuple_SET_ITEM(key, i + 1, h);
    }
    PyObject *hit = PyDict_GetItemWithError(heads, key);  /* borrowed */
    Py_DECREF(key);
    if (hit == NULL) {
        if (PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_TypeError))  /* unhashable: the Python path */
                return NULL;
            PyErr_Clear();
        }
        Py_RETURN_NONE;
    }
    if (!PyTuple_CheckExact(hit) || PyTuple_GET_SIZE(hit) != 3 || !PyBytes_CheckExact(PyTuple_GET_ITEM(hit, 0)))
        Py_RETURN_NONE;
    PyObject *base = PyTuple_GET_ITEM(hit, 0);
    Py_ssize_t cl = PyLong_AsSsize_t(PyTuple_GET_ITEM(hit, 1));
    if (cl == -1 && PyErr_Occurred())
        return NULL;
    if ((cl >= 0 && cl != length) || (need_cl && cl < 0) || PyTuple_GET_ITEM(hit, 2) != Py_False)
        Py_RETURN_NONE;
    time_t now = time(NULL);
    if (now != date_second)
        date_refresh(now);
    char extra[128];
    int len = 0;
    memcpy(extra, date_buf, date_len);
    len = date_len;
    if (cl < 0)
        len += snprintf(extra + len, sizeof(extra) - len, "Content-Length: %zd\r\n", length);
    if (!keep)
        len += snprintf(extra + len, sizeof(extra) - len, "Connection: close\r\n");
    else if (version10)
        len += snprintf(extra + len, sizeof(extra) - len, "Connection: keep-alive\r\n");
    extra[len++] = '\r';
    extra[len++] = '\n';
    Py_ssize_t blen = PyBytes_GET_SIZE(base), bodylen = body == NULL ? 0 : PyBytes_GET_SIZE(body);
    PyObject *out = PyBytes_FromStringAndSize(NULL, blen + len + bodylen);
    if (out == NULL)
        return NULL;
    char *o = PyBytes_AS_STRING(out);
    memcpy(o, PyBytes_AS_STRING(base), blen);
    memcpy(o + blen, extra, len);
    if (bodylen)
        memcpy(o + blen + len, PyBytes_AS_STRING(body), bodylen);
    return out;
}

static PyObject *
response_head(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6 || !PyDict_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError,
                        "response_head(heads: dict, status: str, headers: list, length, keep, version10)");
        return NULL;
    }
    Py_ssize_t length = PyLong_AsSsize_t(args[3]);
    if (length == -1 && PyErr_Occurred())
        return NULL;
    int keep = PyObject_IsTrue(args[4]), version10 = PyObject_IsTrue(args[5]);
    if (keep < 0 || version10 < 0)
        return NULL;
    return build_response(args[0], args[1], args[2], length, keep, version10, NULL, 0);
}

static PyObject *
date_line(PyObject *Py_UNUSED(self), PyObject *Py_UNUSED(args))
{
    time_t now = time(NULL);
    if (now != date_second)
        date_refresh(now);
    return PyBytes_FromStringAndSize(date_buf, date_len);
}

/* ---- a whole plain request in one call (the sync HTTP worker's usual one) -------------------
 *
 * plain(data, base, keys, max_head, max_headers, trusted, app, heads, conn, may_keep, late, note,
 *       file_wrapper):
 * when ``data`` is exactly one plain bodiless head (parse_head's), builds the environ, calls the
 * WSGI app with a ``Reply`` as start_response, and when the app returned a list of one bytes
 * under a head ``heads`` has checked (build_response), returns (head + body, keep, reply): the
 * bytes to send (and the Reply, for the request log). Still sans-IO: a ``write()`` of the app goes to ``late(reply)``, the Python side's
 * exchange for this reply, which takes over the response. Returns None when ``data`` is not
 * such a head (nothing was consumed: feed the parser), and otherwise a Reply (its ``result``,
 * ``error``, ``environ``, ``method``, ``target`` and ``keep`` set) for the Python side to finish:
 * an app that raised, that returned anything else, a head not cached yet, HEAD, a write().
 * ``note``: None, or called with (method, target) before the app (harakiri's record);
 * ``file_wrapper``: wsgi.file_wrapper's type, whose results are left to the Python side. */
typedef struct {
    PyObject_HEAD
    PyObject *status;    /* what start_response was given (NULL before) */
    PyObject *headers;
    PyObject *late;      /* the Python side's late(reply) -> its exchange, on write() */
    PyObject *exchange;  /* late's result: the response is the Python side's from then on */
    PyObject *conn;
    PyObject *method;
    PyObject *target;
    PyObject *environ;
    PyObject *result;    /* what the app returned (NULL: it raised, or not called yet) */
    PyObject *error;     /* the exception the app raised */
    PyObject *rest;      /* the iterator of a result iterated here (its first piece taken) */
    PyObject *first;     /* that first piece, when the Python side must send it */
    char keep, version10;
    char sent;           /* the head (and the whole body the app declared) is in plain()'s bytes */
    char closed;         /* the result's close() was called here (if it raised: ``error``) */
} Reply;

static int
reply_traverse(Reply *r, visitproc visit, void *arg)
{
    Py_VISIT(r->status);
    Py_VISIT(r->headers);
    Py_VISIT(r->late);
    Py_VISIT(r->exchange);
    Py_VISIT(r->conn);
    Py_VISIT(r->environ);
    Py_VISIT(r->result);
    Py_VISIT(r->error);
    Py_VISIT(r->rest);
    Py_VISIT(r->first);
    return 0;
}

static int
reply_clear(Reply *r)
{
    Py_CLEAR(r->status);
    Py_CLEAR(r->headers);
    Py_CLEAR(r->late);
    Py_CLEAR(r->exchange);
    Py_CLEAR(r->conn);
    Py_CLEAR(r->method);
    Py_CLEAR(r->target);
    Py_CLEAR(r->environ);
    Py_CLEAR(r->result);
    Py_CLEAR(r->error);
    Py_CLEAR(r->rest);
    Py_CLEAR(r->first);
    return 0;
}

static void
reply_dealloc(Reply *r)
{
    PyObject_GC_UnTrack(r);
    reply_clear(r);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

static PyObject *
reply_write(Reply *r, PyObject *data)
{
    if (r->exchange == NULL) {
        if (r->status == NULL) {
            PyErr_SetString(PyExc_AssertionError, "write() before start_response()");
            return NULL;
        }
        PyObject *ex = PyObject_CallOneArg(r->late, (PyObject *)r);
        if (ex == NULL)
            return NULL;
        Py_XSETREF(r->exchange, ex);  /* (late set it too) */
    }
    return PyObject_CallMethod(r->exchange, "write", "O", data);
}

static PyObject *
reply_start_response(Reply *r, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *status = NULL, *headers = NULL, *exc_info = Py_None;
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    if (nargs + nkw < 2 || nargs + nkw > 3) {
        PyErr_SetString(PyExc_TypeError, "start_response(status, headers, exc_info=None)");
        return NULL;
    }
    PyObject *slots[3] = {NULL, NULL, NULL};
    for (Py_ssize_t i = 0; i < nargs; i++)
        slots[i] = args[i];
    for (Py_ssize_t i = 0; i < nkw; i++) {
        const char *name = PyUnicode_AsUTF8(PyTuple_GET_ITEM(kwnames, i));
        if (name == NULL)
            return NULL;
        int at = strcmp(name, "status") == 0 ? 0 : strcmp(name, "headers") == 0 ? 1
                 : strcmp(name, "exc_info") == 0 ? 2 : -1;
        if (at < 0 || slots[at] != NULL) {
            PyErr_Format(PyExc_TypeError, "start_response() got an unexpected or repeated argument '%s'", name);
            return NULL;
        }
        slots[at] = args[nargs + i];
    }
    status = slots[0];
    headers = slots[1];
    if (slots[2] != NULL)
        exc_info = slots[2];
    if (status == NULL || headers == NULL) {
        PyErr_SetString(PyExc_TypeError, "start_response(status, headers, exc_info=None)");
        return NULL;
    }
    if (r->exchange != NULL)  /* write() was called: the Python exchange decides (a late error) */
        return PyObject_CallMethod(r->exchange, "start_response", "OOO", status, headers, exc_info);
    if (exc_info == Py_None && r->status != NULL) {
        PyErr_SetString(PyExc_AssertionError, "start_response called twice without exc_info");
        return NULL;
    }
    /* with exc_info and nothing sent yet (no write()): the new head replaces the old one */
    Py_INCREF(status);
    Py_XSETREF(r->status, status);
    Py_INCREF(headers);
    Py_XSETREF(r->headers, headers);
    return PyObject_GetAttrString((PyObject *)r, "write");
}

static PyObject *
reply_get(Reply *r, void *closure)
{
    PyObject *v = NULL;
    switch ((int)(Py_ssize_t)closure) {
    case 0: v = r->status; break;
    case 1: v = r->headers; break;
    case 2: v = r->exchange; break;
    case 3: v = r->conn; break;
    case 4: v = r->method; break;
    case 5: v = r->target; break;
    case 6: v = r->environ; break;
    case 7: v = r->result; break;
    case 8: v = r->error; break;
    case 9: return PyBool_FromLong(r->keep);
    case 10: return PyBool_FromLong(r->version10);
    case 11: v = r->rest; break;
    case 12: v = r->first; break;
    case 13: return PyBool_FromLong(r->sent);
    case 14: return PyBool_FromLong(r->closed);
    }
    if (v == NULL)
        Py_RETURN_NONE;
    Py_INCREF(v);
    return v;
}

static int
reply_set_exchange(Reply *r, PyObject *value, void *Py_UNUSED(closure))
{
    if (value == NULL || value == Py_None) {
        PyErr_SetString(PyExc_TypeError, "a Reply's exchange cannot be removed");
        return -1;
    }
    Py_INCREF(value);
    Py_XSETREF(r->exchange, value);
    return 0;
}

static PyGetSetDef reply_getset[] = {
    {"status", (getter)reply_get, NULL, "the status start_response was given (None before)", (void *)0},
    {"headers", (getter)reply_get, NULL, "the headers start_response was given", (void *)1},
    {"exchange", (getter)reply_get, (setter)reply_set_exchange,
     "the Python side's exchange: once set, start_response and write() go to it", (void *)2},
    {"conn", (getter)reply_get, NULL, "the connection (opaque here)", (void *)3},
    {"method", (getter)reply_get, NULL, "REQUEST_METHOD", (void *)4},
    {"target", (getter)reply_get, NULL, "the request target", (void *)5},
    {"environ", (getter)reply_get, NULL, "the WSGI environ", (void *)6},
    {"result", (getter)reply_get, NULL, "what the app returned (None: it raised)", (void *)7},
    {"error", (getter)reply_get, NULL, "the exception the app raised, or None", (void *)8},
    {"keep", (getter)reply_get, NULL, "the connection may stay open after the response", (void *)9},
    {"version10", (getter)reply_get, NULL, "the request was HTTP/1.0", (void *)10},
    {"rest", (getter)reply_get, NULL, "the iterator of a result iterated here, its first piece taken", (void *)11},
    {"first", (getter)reply_get, NULL, "that first piece, when the Python side must send it", (void *)12},
    {"sent", (getter)reply_get, NULL, "the head and the declared body are in plain()'s bytes", (void *)13},
    {"closed", (getter)reply_get, NULL, "the result's close() was called by plain() (it raised: error)",
     (void *)14},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef reply_methods[] = {
    {"start_response", (PyCFunction)(void (*)(void))reply_start_response, METH_FASTCALL | METH_KEYWORDS,
     "The WSGI start_response."},
    {"write", (PyCFunction)reply_write, METH_O, "The WSGI write(): the Python side's exchange takes over."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ReplyType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "emperor.protocol._speedups.Reply",
    .tp_basicsize = sizeof(Reply),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "One plain request's start_response state (plain()).",
    .tp_traverse = (traverseproc)reply_traverse,
    .tp_clear = (inquiry)reply_clear,
    .tp_dealloc = (destructor)reply_dealloc,
    .tp_methods = reply_methods,
    .tp_getset = reply_getset,
};

/* The exception being raised, kept in r->error for the Python side (the app's failure); -1
 * for what must go on up instead (not an Exception: KeyboardInterrupt, SystemExit). */
static int
keep_error(Reply *r)
{
    if (!PyErr_ExceptionMatches(PyExc_Exception))
        return -1;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    Py_XSETREF(r->error, value);
    return 0;
}

static PyObject *str_close;

/* A framework's response whose first piece was its whole declared body: ask its iterator for
 * the next piece now. None (the usual): close() the result here (``closed``) and clear
 * ``rest``, so that nothing is left for the Python side to do; if close() raised, the
 * exception is ``error`` and ``rest`` stays, for the Python side to log it. A piece: it
 * becomes ``first`` and the Python side drains it and the rest as the Python path does (more
 * than the declared length is the app's error). An exception: it is ``error``, answered by
 * the Python side as the app's failure. */
static int
finish_rest(Reply *r)
{
    PyObject *more = PyIter_Next(r->rest);
    if (more != NULL) {
        r->first = more;
        return 0;
    }
    if (PyErr_Occurred())
        return keep_error(r);
    PyObject *close = PyObject_GetAttr(r->result, str_close);
    if (close == NULL) {  /* none (or a broken attribute: the Python path's getattr would fail too) */
        if (!PyErr_ExceptionMatches(PyExc_Exception))
            return -1;
        PyErr_Clear();
    }
    else {
        r->closed = 1;
        PyObject *done = PyObject_CallNoArgs(close);
        Py_DECREF(close);
        if (done == NULL)
            return keep_error(r);  /* (``rest`` kept: the Python side looks, and logs it) */
        Py_DECREF(done);
    }
    Py_CLEAR(r->rest);
    return 0;
}

static PyObject *parse_head(PyObject *, PyObject *const *, Py_ssize_t);

static PyObject *
plain(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 13 || !PyBytes_CheckExact(args[0]) || !PyDict_CheckExact(args[7]) || !PyType_Check(args[12])) {
        PyErr_SetString(PyExc_TypeError, "plain(data: bytes, base, keys, max_head, max_headers, trusted, app, "
                                         "heads: dict, conn, may_keep, late, note, file_wrapper: type)");
        return NULL;
    }
    PyObject *got = parse_head(NULL, args, 6);
    if (got == NULL || got == Py_None)
        return got;
    /* (size, env, keep_alive, method, target, content_length, version) */
    if (PyLong_AsSsize_t(PyTuple_GET_ITEM(got, 0)) != PyBytes_GET_SIZE(args[0])
            || PyTuple_GET_ITEM(got, 5) != Py_None) {
        int bad = PyErr_Occurred() != NULL;
        Py_DECREF(got);
        if (bad)
            return NULL;
        Py_RETURN_NONE;  /* a body, or more after the head: the parser's */
    }
    int may_keep = PyObject_IsTrue(args[9]);
    if (may_keep < 0) {
        Py_DECREF(got);
        return NULL;
    }
    Reply *r = PyObject_GC_New(Reply, &ReplyType);
    if (r == NULL) {
        Py_DECREF(got);
        return NULL;
    }
    r->status = r->headers = r->exchange = r->result = r->error = r->rest = r->first = NULL;
    r->sent = r->closed = 0;
    r->environ = PyTuple_GET_ITEM(got, 1);
    r->method = PyTuple_GET_ITEM(got, 3);
    r->target = PyTuple_GET_ITEM(got, 4);
    Py_INCREF(r->environ);
    Py_INCREF(r->method);
    Py_INCREF(r->target);
    r->keep = PyTuple_GET_ITEM(got, 2) == Py_True && may_keep;
    r->version10 = PyTuple_GET_ITEM(got, 6) == str_http10;
    Py_DECREF(got);
    Py_INCREF(args[10]);
    r->late = args[10];
    Py_INCREF(args[8]);
    r->conn = args[8];
    PyObject_GC_Track(r);

    if (args[11] != Py_None) {  /* note(method, target): harakiri's "what was it doing" */
        PyObject *noted = PyObject_CallFunctionObjArgs(args[11], r->method, r->target, NULL);
        if (noted == NULL)
            goto error;
        Py_DECREF(noted);
    }
    PyObject *start = PyObject_GetAttrString((PyObject *)r, "start_response");
    if (start == NULL)
        goto error;
    PyObject *call[2] = {r->environ, start};
    PyObject *result = PyObject_Vectorcall(args[6], call, 2, NULL);
    Py_DECREF(start);
    if (result == NULL)
        goto raised;  /* (KeyboardInterrupt, SystemExit go on up, as from the Python path) */
    r->result = result;
    if (r->exchange != NULL || r->method == method_strs[1])
        return (PyObject *)r;  /* write(), HEAD */
    if (PyList_CheckExact(result)) {
        if (r->status != NULL && PyList_GET_SIZE(result) == 1 && PyBytes_CheckExact(PyList_GET_ITEM(result, 0))) {
            PyObject *body = PyList_GET_ITEM(result, 0);
            PyObject *out = build_response(args[7], r->status, r->headers, PyBytes_GET_SIZE(body), r->keep,
                                           r->version10, body, 0);
            if (out == NULL)
                goto error;
            if (out != Py_None) {  /* r: for the request log (status, headers, environ) */
                r->sent = 1;
                return Py_BuildValue("(NON)", out, r->keep ? Py_True : Py_False, (PyObject *)r);
            }
            Py_DECREF(out);
        }
        return (PyObject *)r;
    }
    if (PyObject_TypeCheck(result, (PyTypeObject *)args[12]))
        return (PyObject *)r;  /* wsgi.file_wrapper: sendfile(), the Python side's */
    /* Any other iterable (a framework's response: werkzeug's ClosingIterator, Django's
     * HttpResponse): its first piece is the whole body when the app's Content-Length says so;
     * then head and body go out at once, and the Python side drains ``rest`` after sending
     * (anything more is the app's error there, as on the Python path) and calls close(). */
    PyObject *it = PyObject_GetIter(result);
    if (it == NULL)
        goto raised;
    r->rest = it;
    PyObject *first = PyIter_Next(it);
    if (first == NULL) {
        if (PyErr_Occurred())
            goto raised;
        return (PyObject *)r;  /* empty: the Python side answers it (no first piece) */
    }
    r->first = first;  /* (a generator calls start_response when first asked for a piece) */
    if (r->exchange == NULL && r->status != NULL && PyBytes_CheckExact(first) && PyBytes_GET_SIZE(first) > 0) {
        PyObject *out = build_response(args[7], r->status, r->headers, PyBytes_GET_SIZE(first), r->keep,
                                       r->version10, first, 1);
        if (out == NULL)
            goto error;
        if (out != Py_None) {
            r->sent = 1;
            Py_CLEAR(r->first);
            if (finish_rest(r) < 0) {
                Py_DECREF(out);
                goto error;
            }
            return Py_BuildValue("(NON)", out, r->keep ? Py_True : Py_False, (PyObject *)r);
        }
        Py_DECREF(out);
    }
    return (PyObject *)r;
raised:
    if (keep_error(r) < 0)
        goto error;
    return (PyObject *)r;
error:
    Py_DECREF(r);
    return NULL;
}

static PyObject *str_begin, *str_end, *str_idle;

/* serve_plain(fd, recv_size, tally, base, keys, max_head, max_headers, trusted, app, heads, conn,
 * may_keep, late, note, file_wrapper): the sync HTTP loop's usual keep-alive request with its
 * I/O, for a connection its poll() saw readable (http_conn.HTTPServer.serve_ready): one
 * non-blocking recv() of up to recv_size bytes, ``plain`` (its arguments after the data are
 * this function's from ``base`` on), the answer sent with one non-blocking send(), and the
 * request counted (``tally``: begin() before the app, end() after the send). Returns
 *   an int: answered whole; the request count from tally.end(), negated when the connection
 *     is to be closed;
 *   None: nothing to read after all (the connection stays idle);
 *   b"": the peer closed (or reset) the connection;
 *   the bytes read: not a plain request (nothing consumed, nothing counted: the parser's);
 *   (got, start, sent): plain()'s result for the Python side to finish from where this
 *     stopped (http_conn.HTTPServer.finish_plain): a Reply, or a whole answer of which
 *     ``sent`` bytes went out (the socket's buffer was full), or one whose iterable has more. */
static PyObject *
serve_plain(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 15) {
        PyErr_SetString(PyExc_TypeError, "serve_plain(fd, recv_size, tally, base, keys, max_head, max_headers, "
                                         "trusted, app, heads, conn, may_keep, late, note, file_wrapper)");
        return NULL;
    }
    long fd = PyLong_AsLong(args[0]);
    Py_ssize_t size = PyLong_AsSsize_t(args[1]);
    if ((fd == -1 || size == -1) && PyErr_Occurred())
        return NULL;
    if (size <= 0 || fd < 0) {
        PyErr_SetString(PyExc_ValueError, "serve_plain: a bad fd or recv_size");
        return NULL;
    }
    PyObject *data = PyBytes_FromStringAndSize(NULL, size);
    if (data == NULL)
        return NULL;
    ssize_t n = recv((int)fd, PyBytes_AS_STRING(data), (size_t)size, MSG_DONTWAIT);
    if (n <= 0) {
        Py_DECREF(data);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            Py_RETURN_NONE;
        return PyBytes_FromStringAndSize(NULL, 0);
    }
    if (n < size && _PyBytes_Resize(&data, n) < 0)
        return NULL;
    PyObject *start = PyObject_CallMethodNoArgs(args[2], str_begin);
    if (start == NULL) {
        Py_DECREF(data);
        return NULL;
    }
    PyObject *call[13];
    call[0] = data;
    for (int i = 0; i < 12; i++)
        call[i + 1] = args[i + 3];
    PyObject *got = plain(NULL, call, 13);
    if (got == Py_None) {  /* not a plain request: busy again cleared, the bytes for the parser */
        Py_DECREF(got);
        Py_DECREF(start);
        PyObject *idle = PyObject_CallMethodNoArgs(args[2], str_idle);
        if (idle == NULL) {
            Py_DECREF(data);
            return NULL;
        }
        Py_DECREF(idle);
        return data;
    }
    Py_DECREF(data);
    if (got == NULL) {
        Py_DECREF(start);
        return NULL;
    }
    Py_ssize_t sent = 0;
    if (PyTuple_CheckExact(got) && ((Reply *)PyTuple_GET_ITEM(got, 2))->rest == NULL) {
        PyObject *out = PyTuple_GET_ITEM(got, 0);
        Py_ssize_t len = PyBytes_GET_SIZE(out);
        ssize_t w = send((int)fd, PyBytes_AS_STRING(out), (size_t)len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w == len) {
            int keep = PyTuple_GET_ITEM(got, 1) == Py_True;
            Py_DECREF(got);
            PyObject *sent_obj = PyLong_FromSsize_t(len);
            if (sent_obj == NULL) {
                Py_DECREF(start);
                return NULL;
            }
            PyObject *done = PyObject_CallMethodObjArgs(args[2], str_end, start, sent_obj, NULL);
            Py_DECREF(start);
            Py_DECREF(sent_obj);
            if (done == NULL || keep)
                return done;
            PyObject *negated = PyNumber_Negative(done);
            Py_DECREF(done);
            return negated;
        }
        if (w > 0)
            sent = w;  /* (an error or a full buffer: the Python side sends, and raises, as before) */
    }
    return Py_BuildValue("(NNn)", got, start, sent);
}

static int
init_head_strings(void)
{
    for (int m = 0; FAST_METHODS[m] != NULL; m++) {
        if ((method_strs[m] = PyUnicode_InternFromString(FAST_METHODS[m])) == NULL)
            return -1;
    }
    return (str_http11 = PyUnicode_InternFromString("HTTP/1.1")) == NULL
        || (str_http10 = PyUnicode_InternFromString("HTTP/1.0")) == NULL
        || (str_empty = PyUnicode_InternFromString("")) == NULL
        || (str_comma = PyUnicode_InternFromString(", ")) == NULL
        || (str_semicolon = PyUnicode_InternFromString("; ")) == NULL
        || (key_cookie = PyUnicode_InternFromString("HTTP_COOKIE")) == NULL
        || (key_method = PyUnicode_InternFromString("REQUEST_METHOD")) == NULL
        || (key_path = PyUnicode_InternFromString("PATH_INFO")) == NULL
        || (key_query = PyUnicode_InternFromString("QUERY_STRING")) == NULL
        || (key_uri = PyUnicode_InternFromString("REQUEST_URI")) == NULL
        || (key_protocol = PyUnicode_InternFromString("SERVER_PROTOCOL")) == NULL
        || (key_xff = PyUnicode_InternFromString("HTTP_X_FORWARDED_FOR")) == NULL
        || (key_xfp = PyUnicode_InternFromString("HTTP_X_FORWARDED_PROTO")) == NULL
        || (key_remote_addr = PyUnicode_InternFromString("REMOTE_ADDR")) == NULL
        || (key_remote_port = PyUnicode_InternFromString("REMOTE_PORT")) == NULL
        || (key_scheme = PyUnicode_InternFromString("wsgi.url_scheme")) == NULL
        || (key_https = PyUnicode_InternFromString("HTTPS")) == NULL
        || (str_close = PyUnicode_InternFromString("close")) == NULL
        || (str_begin = PyUnicode_InternFromString("begin")) == NULL
        || (str_end = PyUnicode_InternFromString("end")) == NULL
        || (str_idle = PyUnicode_InternFromString("idle")) == NULL
        || (key_content_length = PyUnicode_InternFromString("CONTENT_LENGTH")) == NULL
        || (key_http_content_length = PyUnicode_InternFromString("HTTP_CONTENT_LENGTH")) == NULL
        || (key_http_content_type = PyUnicode_InternFromString("HTTP_CONTENT_TYPE")) == NULL
        || (key_request_scheme = PyUnicode_InternFromString("REQUEST_SCHEME")) == NULL
        || (key_script_name = PyUnicode_InternFromString("SCRIPT_NAME")) == NULL
        || (key_input = PyUnicode_InternFromString("wsgi.input")) == NULL
        || (str_http = PyUnicode_InternFromString("http")) == NULL
        || (str_https = PyUnicode_InternFromString("https")) == NULL
        || (str_on = PyUnicode_InternFromString("on")) == NULL
        || (key_asgi = PyUnicode_InternFromString("asgi")) == NULL
        || (key_http_version = PyUnicode_InternFromString("http_version")) == NULL
        || (key_s_method = PyUnicode_InternFromString("method")) == NULL
        || (key_s_path = PyUnicode_InternFromString("path")) == NULL
        || (key_raw_path = PyUnicode_InternFromString("raw_path")) == NULL
        || (key_query_string = PyUnicode_InternFromString("query_string")) == NULL
        || (key_headers = PyUnicode_InternFromString("headers")) == NULL
        || (key_state = PyUnicode_InternFromString("state")) == NULL
        || (key_client = PyUnicode_InternFromString("client")) == NULL
        || (key_s_scheme = PyUnicode_InternFromString("scheme")) == NULL
        || (str_v11 = PyUnicode_InternFromString("1.1")) == NULL
        || (str_v10 = PyUnicode_InternFromString("1.0")) == NULL
        || (asgi_versions = Py_BuildValue("{ssss}", "version", "3.0", "spec_version", "2.4")) == NULL ? -1 : 0;
}

static PyMethodDef methods[] = {
    {"parse_vars", parse_vars, METH_VARARGS,
     "parse_vars(buf, start, end, max_vars) -> dict, or None when the Python parser must decide."},
    {"serve_plain", (PyCFunction)(void (*)(void))serve_plain, METH_FASTCALL,
     "serve_plain(fd, recv_size, tally, *plain's arguments after the data) -> the usual keep-alive request "
     "with its recv() and send() (see the C source)."},
    {"uwsgi_request", (PyCFunction)(void (*)(void))uwsgi_request, METH_FASTCALL,
     "uwsgi_request(data, max_vars, buffer_size, base, empty_input) -> (environ, method) or None: the usual "
     "bodiless uwsgi request whole in C (see the C source)."},
    {"parse_head", (PyCFunction)(void (*)(void))parse_head, METH_FASTCALL,
     "parse_head(data, base, keys, max_head, max_headers, trusted) -> (head size, environ, keep_alive, "
     "method, target, content_length, version), or None when llhttp and the rules in http.py must decide."},
    {"response_head", (PyCFunction)(void (*)(void))response_head, METH_FASTCALL,
     "response_head(heads, status, headers, length, keep, version10) -> the whole head of a response "
     "whose body of `length` bytes follows, or None when the Python path must build it."},
    {"plain", (PyCFunction)(void (*)(void))plain, METH_FASTCALL,
     "plain(data, base, keys, max_head, max_headers, trusted, app, heads, conn, may_keep, late, note, "
     "file_wrapper) -> "
     "(response bytes, keep, reply), a Reply for the Python side to finish, or None (not a plain request)."},
    {"date_line", date_line, METH_NOARGS, "date_line() -> b'Date: <IMF-fixdate>\\r\\n' (the C twin of http.date_line)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "emperor.protocol._speedups",
    "C fast paths for the uwsgi vars block, HTTP header fields and plain HTTP heads (optional; Python fallbacks).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (PyType_Ready(&FieldSinkType) < 0 || PyType_Ready(&ReplyType) < 0 || init_head_strings() < 0)
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
