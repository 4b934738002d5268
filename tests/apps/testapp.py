"""The application the vassal tests run: one endpoint per behaviour under test.

Every request goes through ``wsgiref.validate.validator``, so each test is also a PEP 3333
compliance check of the server. Endpoints that must misbehave on purpose (bad headers,
exceptions) live in ``raw_application``, which is not wrapped.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from urllib.parse import parse_qs
from wsgiref.validate import validator

_hoard: list[bytes] = []
LOADED_AT = time.time()


def _qs(environ, name, default):
    return parse_qs(environ.get("QUERY_STRING", "")).get(name, [default])[0]


def _reply(start_response, body: bytes, status="200 OK", ctype="text/plain", extra=()):
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body))), *extra])
    return [body]


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/env" or path.startswith("/env/"):
        keep = {k: v for k, v in environ.items() if isinstance(v, str)}
        keep["wsgi.url_scheme"] = environ["wsgi.url_scheme"]
        return _reply(start_response, json.dumps(keep).encode(), ctype="application/json")
    if path == "/process":  # process-wide state no request may change (cwd, os.environ, imports)
        state = {"cwd": os.getcwd(), "environ": dict(os.environ), "modules": sorted(sys.modules)}
        return _reply(start_response, json.dumps(state).encode(), ctype="application/json")
    if path == "/echo":
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        return _reply(start_response, body, ctype="application/octet-stream")
    if path == "/echo-lines":
        lines = list(environ["wsgi.input"])
        return _reply(start_response, json.dumps([x.decode("latin-1") for x in lines]).encode())
    if path == "/echo-chunks":
        inp, parts = environ["wsgi.input"], []
        while chunk := inp.read(1000):
            parts.append(chunk)
        return _reply(start_response, b"".join(parts))
    if path == "/echo-mixed":  # a few bytes, a line, then read(step) to the end (buffer, pieces, large reads)
        inp, step = environ["wsgi.input"], int(_qs(environ, "step", "40000"))
        parts = [inp.read(7), inp.readline()]
        while chunk := inp.read(step):
            parts.append(chunk)
        return _reply(start_response, b"".join(parts))
    if path == "/ignore-body":
        return _reply(start_response, b"ignored")
    if path == "/big":
        n = int(_qs(environ, "n", "65536"))
        return _reply(start_response, b"x" * n)
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (f"chunk {i}\n".encode() for i in range(int(_qs(environ, "n", "5"))))
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        return [b"and returned"]
    if path == "/file":
        f = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the server via file_wrapper.close
        f.write(b"0123456789" * int(_qs(environ, "n", "10000")))
        f.seek(0)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](f, 8192)
    if path == "/204":
        start_response("204 No Content", [])
        return []
    if path == "/304":
        start_response("304 Not Modified", [("ETag", '"x"')])
        return []
    if path == "/pid":
        return _reply(start_response, f"{os.getpid()} {LOADED_AT}".encode())
    if path == "/sleep":
        mark = _qs(environ, "mark", "")
        if mark:
            open(mark, "w").close()  # tells the test the request is in flight
        time.sleep(float(_qs(environ, "s", "1")))
        return _reply(start_response, b"slept")
    if path == "/barrier":
        # n requests meet here: only possible if they are served at the same time
        where, n = _qs(environ, "dir", "/nonexistent"), int(_qs(environ, "n", "2"))
        open(os.path.join(where, f"{os.getpid()}-{time.monotonic_ns()}"), "w").close()
        deadline = time.monotonic() + 5
        while len(os.listdir(where)) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return _reply(start_response, b"met" if len(os.listdir(where)) >= n else b"alone")
    if path == "/hang":
        while True:
            time.sleep(1)
    if path == "/spawn-child":
        pid = os.fork()
        if pid == 0:
            os.setsid() if _qs(environ, "setsid", "0") == "1" else None
            time.sleep(300)
            os._exit(0)
        with open(_qs(environ, "pidfile", "/dev/null"), "w") as f:
            f.write(str(pid))
        while True:
            time.sleep(1)
    if path == "/crash":
        os.kill(os.getpid(), signal.SIGKILL)
    if path == "/exit":
        os._exit(3)
    if path == "/leak":
        _hoard.append(b"x" * (int(_qs(environ, "mb", "50")) << 20))
        return _reply(start_response, f"{os.getpid()}".encode())
    return _reply(start_response, f"hello {path}".encode())


validated = validator(app)


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/raise":
        raise RuntimeError("the app failed on purpose")
    if path == "/bad-header":
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Evil", "a\r\nSet-Cookie: pwned=1")])
        return [b"never sent"]
    if path == "/bad-name":
        start_response("200 OK", [("Bad Name", "x")])
        return [b"never sent"]
    if path == "/cl-te":
        start_response("200 OK", [("Content-Length", "5"), ("Transfer-Encoding", "chunked")])
        return [b"hello"]
    if path == "/head-body":
        return _reply(start_response, b"body that HEAD must not carry")
    if path == "/wsgi-flags":  # the non-str wsgi.* keys, which /env leaves out
        flags = {k: v for k, v in environ.items() if k.startswith("wsgi.") and isinstance(v, (bool, tuple))}
        return _reply(start_response, json.dumps(flags).encode(), ctype="application/json")
    if path == "/sendfile":  # file_wrapper, unwrapped by the validator (so the server sees it)
        f = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the server via file_wrapper.close
        f.write(b"0123456789" * int(_qs(environ, "n", "10000")))
        f.seek(int(_qs(environ, "skip", "0")))
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](f, 8192)
    if path.startswith("/raw/"):  # plain responses for tests that talk uwsgi without nginx's vars
        return app(environ, start_response)
    return validated(environ, start_response)
