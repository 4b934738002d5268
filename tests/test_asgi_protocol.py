"""Pure logic of ASGI support: the scope from uwsgi vars, the response checker, the app-kind check."""

from __future__ import annotations

from typing import Any

import pytest

from emperor.protocol import asgi, http
from emperor.protocol.uwsgi import SCHEME_KEY
from emperor.vassal.loader import kind

NGINX_VARS = {
    "QUERY_STRING": "a=1&b=%C3%A9", "REQUEST_METHOD": "POST", "CONTENT_TYPE": "application/json",
    "CONTENT_LENGTH": "12", "REQUEST_URI": "/caf%C3%A9/x?a=1&b=%C3%A9",
    "PATH_INFO": "/café/x".encode().decode("latin-1"), "SERVER_PROTOCOL": "HTTP/1.0",
    "REQUEST_SCHEME": "https", "REMOTE_ADDR": "10.0.0.7", "REMOTE_PORT": "50123", "SERVER_PORT": "443",
    "SERVER_NAME": "example.org", "HTTP_HOST": "example.org", "HTTP_X_FORWARDED_FOR": "1.2.3.4",
    "HTTP_COOKIE": "a=b; c=d",
}


def test_scope_from_nginx_vars() -> None:
    s = asgi.http_scope(NGINX_VARS, state={"db": 1}, trust=lambda claim: True)  # nginx is trusted
    assert s["type"] == "http" and s["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert s["http_version"] == "1.0" and s["method"] == "POST" and s["scheme"] == "https"
    assert s["path"] == "/café/x" and s["raw_path"] == b"/caf%C3%A9/x" and s["root_path"] == ""
    assert s["query_string"] == b"a=1&b=%C3%A9"
    assert s["client"] == ("10.0.0.7", 50123) and s["server"] == ("example.org", 443)
    assert (b"x-forwarded-for", b"1.2.3.4") in s["headers"]
    assert (b"content-type", b"application/json") in s["headers"]
    assert (b"content-length", b"12") in s["headers"]
    assert all(isinstance(k, bytes) and isinstance(v, bytes) for k, v in s["headers"])
    assert s["state"] == {"db": 1}
    assert s["state"] is not asgi.http_scope(NGINX_VARS, state=s["state"])["state"]  # a copy per request


def test_scheme_from_https_var_and_defaults() -> None:
    claims: list[str] = []

    def trust(claim: str) -> bool:
        claims.append(claim)
        return True

    s = asgi.http_scope({"REQUEST_METHOD": "GET", "PATH_INFO": "/", "HTTPS": "on"}, trust=trust)
    assert s["scheme"] == "https" and s["client"] is None and s["server"] is None
    assert s["http_version"] == "1.1" and s["raw_path"] == b"/" and s["headers"] == []
    assert claims == ["HTTPS=on"]


@pytest.mark.parametrize("env,trusted,scheme", [
    ({"HTTPS": "on"}, False, "http"),  # the default trusts no peer: anyone can write the vars
    ({"HTTPS": "on"}, True, "https"),
    ({SCHEME_KEY: "https"}, True, "https"),  # UWSGI_SCHEME, as uWSGI, first
    ({SCHEME_KEY: "http", "HTTPS": "on"}, True, "http"),
    ({SCHEME_KEY: "https"}, False, "http"),
    ({"REQUEST_SCHEME": "https"}, False, "http"),
])
def test_scheme_claims_need_a_trusted_peer(env: dict[str, str], trusted: bool, scheme: str) -> None:
    s = asgi.http_scope({"REQUEST_METHOD": "GET", "PATH_INFO": "/", **env}, trust=lambda c: trusted)
    assert s["scheme"] == scheme
    env["HTTP_UPGRADE"] = "websocket"
    ws = asgi.websocket_scope({"REQUEST_METHOD": "GET", "PATH_INFO": "/", **env}, trust=lambda c: trusted)
    assert ws["scheme"] == ("wss" if scheme == "https" else "ws")


@pytest.mark.parametrize("modifier1,path_info,path", [
    (30, "/app/x", "/app/x"),  # nginx sends the full path; SCRIPT_NAME is its prefix
    (0, "/x", "/app/x"),  # WSGI convention: PATH_INFO is relative to SCRIPT_NAME
])
def test_root_path_from_script_name(modifier1: int, path_info: str, path: str) -> None:
    s = asgi.http_scope({"REQUEST_METHOD": "GET", "PATH_INFO": path_info, "SCRIPT_NAME": "/app",
                         "REQUEST_URI": "/app/x?q"}, modifier1)
    assert s["root_path"] == "/app" and s["path"] == path and s["raw_path"] == b"/app/x"


def start(status: Any = 200, headers: Any = ()) -> dict[str, Any]:
    return {"type": "http.response.start", "status": status, "headers": list(headers)}


def body(data: Any = b"", more: bool = False) -> dict[str, Any]:
    return {"type": "http.response.body", "body": data, "more_body": more}


def test_response_head_waits_for_the_first_body() -> None:
    r = asgi.HttpResponse("GET")
    assert r.on_message(start(200, [(b"content-type", b"text/plain")])) == (b"", False)
    assert r.started and not r.head_sent
    out, done = r.on_message(body(b"hello ", more=True))
    assert out == b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nhello " and not done
    assert r.head_sent
    assert r.on_message(body(b"world")) == (b"world", True)
    assert r.complete


@pytest.mark.parametrize("method,status", [("HEAD", 200), ("GET", 204), ("GET", 304), ("GET", 101)])
def test_no_body_for_head_and_bodiless_statuses(method: str, status: int) -> None:
    r = asgi.HttpResponse(method)
    r.on_message(start(status, [(b"content-length", b"5")]))
    out, done = r.on_message(body(b"abcde"))
    assert out.endswith(b"\r\n\r\n") and b"abcde" not in out and done


@pytest.mark.parametrize("messages,error", [
    ([body(b"x")], "before http.response.start"),
    ([start(), start()], "sent twice"),
    ([start(), body(), body()], "after the response was complete"),
    ([start(999)], "status must be an int"),
    ([start("200")], "status must be an int"),
    ([start(200, [("x", "y")])], "must be bytes"),
    ([start(200, [(b"bad name", b"y")])], "bad header name"),
    ([start(200, [(b"x", b"a\r\nSet-Cookie: evil")])], "response splitting"),
    ([start(200, [(b"x",)])], "[name, value] pair"),
    ([start(), body("text")], "body must be bytes"),
    ([{"type": "websocket.accept"}], "unexpected message type"),
    (["not a dict"], "must be a dict"),
])
def test_protocol_violations(messages: list[Any], error: str) -> None:
    r = asgi.HttpResponse("GET")
    with pytest.raises(asgi.ResponseError, match=error.replace("[", r"\[")):
        for m in messages:
            r.on_message(m)


def test_error_response_is_complete() -> None:
    raw = asgi.error_response(500, "Internal Server Error")
    head, _, text = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert f"content-length: {len(text)}".encode() in head


# ---- which kind of app: loader.kind ----------------------------------------------------------
async def asgi_function(scope: Any, receive: Any, send: Any) -> None: ...


def wsgi_function(environ: Any, start_response: Any) -> list[bytes]:
    return []


class AsgiClass:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None: ...


class WsgiClass:
    def __call__(self, environ: Any, start_response: Any) -> list[bytes]:
        return []


class Inherits(AsgiClass):
    pass


def wrapper(*args: Any) -> Any: ...


@pytest.mark.parametrize("app,expected", [
    (asgi_function, "asgi"), (AsgiClass(), "asgi"), (Inherits(), "asgi"),
    (wsgi_function, "wsgi"), (WsgiClass(), "wsgi"),
    (wrapper, None), (AsgiClass, None), (print, None),
])
def test_app_kind(app: Any, expected: str | None) -> None:
    assert kind(app) == expected


def test_framework_kinds() -> None:
    import flask
    from fastapi import FastAPI
    from starlette.applications import Starlette

    assert kind(Starlette()) == "asgi" and kind(FastAPI()) == "asgi" and kind(flask.Flask("x")) == "wsgi"


def _head(raw: bytes) -> http.Head:
    parser = http.RequestParser()
    parser.feed(raw)
    head = parser.next_event()
    assert isinstance(head, http.Head)
    return head


def test_scope_from_an_http_head() -> None:
    head = _head(b"POST /caf%C3%A9/x?a=1 HTTP/1.0\r\nHost: h\r\nX-Forwarded-For: 1.2.3.4\r\n"
                 b"X-Forwarded-Proto: https\r\nContent-Length: 0\r\n\r\n")
    s = asgi.scope_from_head(head, ("127.0.0.1", 80), ("10.0.0.7", 5000), "http", False, {"db": 1})
    assert s["type"] == "http" and s["http_version"] == "1.0" and s["method"] == "POST"
    assert s["path"] == "/café/x" and s["raw_path"] == b"/caf%C3%A9/x" and s["query_string"] == b"a=1"
    assert s["root_path"] == "" and s["scheme"] == "http" and s["client"] == ("10.0.0.7", 5000)
    assert s["server"] == ("127.0.0.1", 80) and s["state"] == {"db": 1}
    assert (b"host", b"h") in s["headers"] and (b"x-forwarded-for", b"1.2.3.4") in s["headers"]
    trusted = asgi.scope_from_head(head, None, ("10.0.0.7", 5000), "http", True)
    assert trusted["scheme"] == "https" and trusted["client"] == ("1.2.3.4", 0)


@pytest.mark.parametrize("fields,scheme,client", [
    (b"X-Forwarded-For: 9.9.9.9, 1.2.3.4\r\n", "https", ("1.2.3.4", 0)),  # the last entry: what the proxy saw
    (b"X-Forwarded-Proto: gopher\r\n", "https", ("10.0.0.7", 1)),  # only http/https replace the scheme
    (b"X-Forwarded-Proto: http\r\n", "http", ("10.0.0.7", 1)),
])
def test_forwarded_fields_from_a_trusted_peer(fields: bytes, scheme: str, client: tuple[str, int]) -> None:
    head = _head(b"GET / HTTP/1.1\r\nHost: h\r\n" + fields + b"\r\n")
    s = asgi.scope_from_head(head, None, ("10.0.0.7", 1), "https", True)
    assert s["scheme"] == scheme and s["client"] == client


class _Writer:
    """A writer that keeps what is written (pure logic: no transport)."""

    paused_writing = None

    def __init__(self) -> None:
        self.data = b""
        self.finished: bool | None = None

    def write(self, data: bytes) -> None:
        self.data += data

    def finish(self, ok: bool) -> None:
        self.finished = ok


def _exchange(headers: Any, body: bytes, method: str = "GET", keep_alive: bool = True,
              version: str = "1.1") -> bytes:
    import asyncio

    from emperor.vassal.asgi_exchange import HttpExchange

    writer = _Writer()
    ex = HttpExchange({"method": method, "http_version": version}, writer, False, keep_alive, False)

    async def respond() -> None:
        await ex.send({"type": "http.response.start", "status": 200, "headers": headers})
        await ex.send({"type": "http.response.body", "body": body})

    asyncio.run(respond())
    assert writer.finished is True
    head, _, rest = writer.data.partition(b"\r\n\r\n")
    lines = [line for line in head.split(b"\r\n") if not line.startswith(b"date: ")]
    assert head.count(b"\r\ndate: ") == 1, head
    return b"\r\n".join(lines) + b"\r\n\r\n" + rest


def test_repeated_response_heads_are_framed_each_time_for_their_own_request() -> None:
    """HttpExchange keeps the heads it built (asgi_exchange._HEADS): the same app headers on a
    request in another framing state (closing, HTTP/1.0, HEAD) must not get the first one's."""
    cl = [(b"content-type", b"text/plain"), (b"content-length", b"2")]
    first = _exchange(cl, b"hi")
    assert _exchange(cl, b"hi") == first and b"connection" not in first
    assert b"connection: close" in _exchange(cl, b"hi", keep_alive=False)
    assert b"connection: keep-alive" in _exchange(cl, b"hi", version="1.0")
    assert _exchange(cl, b"", method="HEAD").endswith(b"\r\n\r\n")
    plain = [(b"content-type", b"text/plain")]
    assert b"transfer-encoding: chunked" in _exchange(plain, b"hi")
    assert _exchange(plain, b"hi").endswith(b"2\r\nhi\r\n0\r\n\r\n")
    assert b"connection: close" in _exchange(plain, b"hi", version="1.0")  # close-delimited
    assert b"content-length: 2" in _exchange(iter(cl), b"hi")  # a generator, read once
    for _ in range(2):  # the Content-Length is still checked when the head comes from the cache
        with pytest.raises(asgi.ResponseError, match="over the response's Content-Length"):
            _exchange(cl, b"too long")


def test_an_accepted_socket_reads_family_and_type_as_ints() -> None:
    """aio.AcceptedSocket: what the ASGI worker hands to connect_accepted_socket is a real
    socket.socket (uvloop counts its _io_refs on close) whose family and type are the kernel's
    ints, without socket.py's enum conversion per read."""
    import socket

    from emperor.vassal.aio import AcceptedSocket

    a, b = socket.socketpair()
    s = AcceptedSocket(socket.AF_UNIX, socket.SOCK_STREAM, 0, a.detach())
    try:
        assert isinstance(s, socket.socket)
        assert type(s.family) is int and s.family == socket.AF_UNIX
        assert type(s.type) is int and s.type == socket.SOCK_STREAM
        s.sendall(b"ping")
        assert b.recv(4) == b"ping"
    finally:
        s.close()
        b.close()
