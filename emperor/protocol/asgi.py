"""ASGI (HTTP) pieces that need no socket: the scope from uwsgi vars, the response checker.

Sans-IO and imports nothing of the project, so that every codec (the uwsgi one today, an
HTTP/1.1 one later) builds the same scope and enforces the same rules on what the app
sends. The worker (``emperor.vassal.aio``) owns the sockets and the event loop.

The rules enforced on the app's messages (ASGI HTTP spec): ``http.response.start`` exactly
once and first; ``http.response.body`` only after it and not after the last one
(``more_body`` false); status an int in 100..599; header names and values bytes, names
HTTP tokens, no CR/LF/NUL anywhere (no response splitting). A broken rule raises
``ResponseError``; the worker then answers 500 if nothing was sent yet, else closes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

from emperor.protocol.uwsgi import SCHEME_KEY
from emperor.protocol.wsgi import url_scheme

if TYPE_CHECKING:
    from emperor.protocol.http import Head

ASGI = {"version": "3.0", "spec_version": "2.4"}
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_HTTP_VERSIONS = {"HTTP/1.0": "1.0", "HTTP/1.1": "1.1", "HTTP/2.0": "2", "HTTP/2": "2", "HTTP/3": "3"}


class ResponseError(Exception):
    """The application sent a message the ASGI HTTP protocol does not allow at this point."""


def _text(raw: str) -> str:
    """uwsgi vars are bytes read as latin-1; ASGI paths are str decoded from UTF-8."""
    return raw.encode("latin-1").decode("utf-8", "replace")


Trust = Callable[[str], bool]  # (the var that claimed https) -> is the peer believed


def _untrusted(claim: str) -> bool:
    return False


def http_scope(env: Mapping[str, str], modifier1: int = 0,
               state: dict[str, Any] | None = None, trust: Trust = _untrusted) -> dict[str, Any]:
    """The ASGI ``http`` scope of one request, from nginx's uwsgi vars.

    ``root_path`` is SCRIPT_NAME and ``path`` is the full path, as uvicorn and Starlette
    expect. With modifier1 30 nginx sends the full path in PATH_INFO (the mount point is
    its prefix); otherwise PATH_INFO is taken as relative to SCRIPT_NAME, as in WSGI.
    ``scheme`` follows the WSGI rule (``wsgi.url_scheme``): what UWSGI_SCHEME,
    REQUEST_SCHEME or HTTPS claim, but ``https`` only if ``trust(claim)`` believes the peer
    (forwarded-allow-ips); by default nobody is, since any peer can write those vars.
    """
    script = env.get("SCRIPT_NAME", "")
    path_info = env.get("PATH_INFO", "")
    if script and not (modifier1 == 30 and path_info.startswith(script)):
        path_info = script + path_info
    uri = env.get("REQUEST_URI", "")
    raw_path = uri.partition("?")[0] if uri else path_info
    scheme, claim = url_scheme(env, env.get(SCHEME_KEY))
    if claim and not trust(claim):
        scheme = "http"
    headers: list[tuple[bytes, bytes]] = []
    for key, value in env.items():
        if key.startswith("HTTP_"):
            headers.append((key[5:].lower().replace("_", "-").encode("latin-1"), value.encode("latin-1")))
    if env.get("CONTENT_TYPE"):
        headers.append((b"content-type", env["CONTENT_TYPE"].encode("latin-1")))
    if env.get("CONTENT_LENGTH"):
        headers.append((b"content-length", env["CONTENT_LENGTH"].encode("latin-1")))
    return {
        "type": "http",
        "asgi": dict(ASGI),
        "http_version": _HTTP_VERSIONS.get(env.get("SERVER_PROTOCOL", ""), "1.1"),
        "method": env.get("REQUEST_METHOD", "GET"),
        "scheme": scheme,
        "path": _text(path_info),
        "raw_path": raw_path.encode("latin-1"),
        "query_string": env.get("QUERY_STRING", "").encode("latin-1"),
        "root_path": _text(script),
        "headers": headers,
        "client": _address(env.get("REMOTE_ADDR"), env.get("REMOTE_PORT")),
        "server": _address(env.get("SERVER_ADDR") or env.get("SERVER_NAME"), env.get("SERVER_PORT")),
        "state": dict(state) if state is not None else {},
    }


def is_websocket(env: Mapping[str, str]) -> bool:
    """A WebSocket handshake: ``GET`` with ``Upgrade: websocket`` (nginx passes both headers)."""
    return env.get("REQUEST_METHOD") == "GET" and "websocket" in env.get("HTTP_UPGRADE", "").lower()


def websocket_scope(env: Mapping[str, str], modifier1: int = 0,
                    state: dict[str, Any] | None = None, trust: Trust = _untrusted) -> dict[str, Any]:
    """The ASGI ``websocket`` scope of an upgrade request (the http scope, less ``method``)."""
    scope = http_scope(env, modifier1, state, trust)
    del scope["method"]
    scope["type"] = "websocket"
    scope["scheme"] = "wss" if scope["scheme"] == "https" else "ws"
    offered = env.get("HTTP_SEC_WEBSOCKET_PROTOCOL", "")
    scope["subprotocols"] = [p.strip() for p in offered.split(",") if p.strip()]
    return scope


def scope_from_head(head: Head, server: tuple[str, int] | None, client: tuple[str, int] | None,
                    scheme: str, trusted: bool, state: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ASGI ``http`` scope of an HTTP/1.1 request (``protocol.http.Head``).

    ``scheme`` is the listener's (``https`` on an https-socket); ``trusted`` says the peer is
    in forwarded-allow-ips, whose X-Forwarded-For (its last entry: the address the proxy saw)
    and X-Forwarded-Proto (http or https) then replace ``client`` and ``scheme``, as on the
    WSGI side (``wsgi.forwarded``). ``root_path`` is "": an HTTP socket has no mount point.
    """
    headers = head.headers if head.lowered else [(name.lower(), value) for name, value in head.headers]
    if trusted:
        xff: list[bytes] = []
        protos: list[bytes] = []
        for n, v in headers:  # one pass (a proxied request has both, most others neither)
            if n[:12] == b"x-forwarded-":
                if n == b"x-forwarded-for":
                    xff.append(v)
                elif n == b"x-forwarded-proto":
                    protos.append(v)
        if xff:
            last = xff[-1].rsplit(b",", 1)[-1].strip()
            if last:
                client = (last.decode("latin-1"), 0)
        if protos:
            proto = b"".join(protos).strip().lower()
            if proto in (b"http", b"https"):
                scheme = proto.decode()
    path = head.path
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},  # ASGI, as a literal: a fresh dict per scope
        "http_version": "1.0" if head.version == "HTTP/1.0" else "1.1",
        "method": head.method,
        "scheme": scheme,
        "path": unquote_to_bytes(path).decode("utf-8", "replace") if b"%" in path else path.decode("latin-1"),
        "raw_path": path,
        "query_string": head.query.encode("latin-1"),
        "root_path": "",
        "headers": headers,
        "client": client,
        "server": server,
        "state": dict(state) if state is not None else {},
    }


def _address(host: str | None, port: str | None) -> tuple[str, int] | None:
    if not host:
        return None
    return (host, int(port)) if port and port.isdigit() else (host, 0)


def request_event(body: bytes, more: bool) -> dict[str, Any]:
    return {"type": "http.request", "body": body, "more_body": more}


DISCONNECT = {"type": "http.disconnect"}


def _status_line(status: int) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    return f"HTTP/1.1 {status} {reason}\r\n".encode()


_STATUS_LINES = {status: _status_line(status) for status in range(100, 600)}
_GOOD_NAMES: set[bytes] = set()  # header names already checked against _TOKEN (bounded)


def serialize_head(status: int, headers: Iterable[Any]) -> bytes:
    """``HTTP/1.1 <status> <reason>`` + headers + blank line, or ResponseError.

    On every response: the status lines are made once, a header name is checked against the
    token grammar once per worker (the first 1024 names), a value with three ``in`` tests."""
    if type(status) is not int or not 100 <= status <= 599:
        raise ResponseError(f"status must be an int in 100..599, not {status!r}")
    lines = [_STATUS_LINES[status]]
    good = _GOOD_NAMES
    for pair in headers:
        try:
            name, value = pair
        except (TypeError, ValueError):
            raise ResponseError(f"a header must be a [name, value] pair, not {pair!r:.80}") from None
        if not isinstance(name, bytes) or not isinstance(value, bytes):
            raise ResponseError(f"header names and values must be bytes, not {pair!r:.80}")
        if name not in good:
            if not _TOKEN.match(name):
                raise ResponseError(f"bad header name {name[:80]!r}")
            if len(good) < 1024:
                good.add(name)
        if b"\n" in value or b"\r" in value or b"\0" in value:
            raise ResponseError(f"header {name[:80]!r} contains CR, LF or NUL (response splitting)")
        lines += (name, b": ", value, b"\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


class HttpResponse:
    """One response's state: checks each message from the app and says what to write.

    The head is held back until the first body message, so an app that fails between
    ``http.response.start`` and its first body still gets a clean 500.
    """

    __slots__ = ("complete", "head", "method", "started", "status", "with_body")

    def __init__(self, method: str) -> None:
        self.method = method
        self.started = False
        self.complete = False
        self.status = 0
        self.head = b""
        self.with_body = True

    @property
    def head_sent(self) -> bool:
        return self.started and not self.head

    def begin(self, status: int, head: bytes) -> None:
        """``http.response.start`` with its head already serialized (and ``status`` checked)."""
        if self.started:
            raise ResponseError("http.response.start sent twice")
        self.head = head
        self.status = status
        self.started = True
        self.with_body = self.method != "HEAD" and not (status < 200 or status in (204, 304))

    def on_message(self, message: Mapping[str, Any]) -> tuple[bytes, bool]:
        """Check one ``send()`` message; return (bytes to write now, whether the response is done)."""
        try:
            kind = message["type"]
        except (TypeError, KeyError):
            raise ResponseError(f"a message must be a dict with a 'type', not {message!r:.80}") from None
        if kind == "http.response.start":
            status: int = message.get("status")  # type: ignore[assignment]
            if self.started:
                raise ResponseError("http.response.start sent twice")
            self.begin(status, serialize_head(status, message.get("headers", ())))
            return b"", False
        if kind == "http.response.body":
            if not self.started:
                raise ResponseError("http.response.body before http.response.start")
            if self.complete:
                raise ResponseError("http.response.body after the response was complete")
            body = message.get("body", b"")
            if not isinstance(body, (bytes, bytearray, memoryview)):
                raise ResponseError(f"body must be bytes, not {type(body).__name__}")
            more = bool(message.get("more_body", False))
            self.complete = not more
            out = bytes(body) if self.with_body else b""
            if self.head:
                out, self.head = self.head + out, b""
            return out, self.complete
        raise ResponseError(f"unexpected message type {kind!r} in an http scope")


def error_response(status: int, text: str, body: bytes | None = None) -> bytes:
    """A whole plain-text response (head and body), for errors the server answers itself;
    ``body`` replaces the reason when the error has something more helpful to say."""
    body = body or text.encode() + b"\n"
    return serialize_head(status, [(b"content-type", b"text/plain"),
                                   (b"content-length", str(len(body)).encode())]) + body
