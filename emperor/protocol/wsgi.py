"""WSGI (PEP 3333) pieces that need no socket: the environ, the input stream, start_response,
the head.

This is the WSGI side of the app-adapter layer: the wire codecs (``protocol/uwsgi.py``,
``protocol/http.py``) decode a request, and ``environ_from_uwsgi`` / ``environ_from_http``
turn it into the environ, so the environ rules (SCRIPT_NAME and modifier1 30, the
``wsgi.*`` keys, which scheme a peer may claim) are written once, here, whatever the
socket. ``protocol/asgi.py`` is the ASGI side (the scope). Which peers are trusted is the
caller's to say (``emperor/proxies.py``): this module does no I/O and imports nothing else
of the project but the codecs.

The worker (``emperor.vassal.worker``) owns the I/O and injects a ``recv_into`` callable
into ``Input``. The response head is checked here as a whole, with one regex pass, so an
app can never split a response (CR/LF/NUL in a header, a bad header name, both
Content-Length and Transfer-Encoding, two Content-Lengths): those become a 500.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import unquote_to_bytes

from emperor.protocol.uwsgi import SCHEME_KEY

if TYPE_CHECKING:  # the type only: a uwsgi-only worker never loads httptools
    from emperor.protocol.http import Head

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]

_HEAD = re.compile(r"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+: [^\x00\r\n]*\r\n)*\Z")
_CTL = re.compile("[\x00\r\n]")
_FRAMING = re.compile(r"^(content-length|transfer-encoding):", re.I | re.M)
_READ_CHUNK = 65536


class HeaderError(Exception):
    """The application produced a response head that must not be sent."""


class LineReader:
    """``readlines`` and iteration for a ``wsgi.input`` from its ``readline`` (PEP 3333): written
    once for the uwsgi body (Input) and the HTTP body (emperor/vassal/http_wire.py)."""

    def readline(self, size: int | None = -1) -> bytes:
        raise NotImplementedError

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines, total = [], 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line


class Input(LineReader):
    """``wsgi.input``: exactly CONTENT_LENGTH bytes, then EOF; never reads past the body."""

    __slots__ = ("_buf", "_recv_into", "_remaining")

    def __init__(self, prefetched: bytes, remaining: int,
                 recv_into: Callable[[memoryview], int]) -> None:
        self._buf = bytearray(prefetched)
        self._remaining = remaining  # body bytes still in the socket
        self._recv_into = recv_into

    @property
    def unread(self) -> int:
        """Body bytes the application has not consumed (still buffered or in the socket)."""
        return len(self._buf) + self._remaining

    @property
    def pending(self) -> int:
        """Body bytes still in the socket (what must be drained before closing)."""
        return self._remaining

    def _fill(self, want: int) -> bool:
        """Receive up to ``want`` more bytes (at most 64 KiB) into the buffer; False at the end."""
        if self._remaining <= 0:
            return False
        n = min(want, self._remaining, _READ_CHUNK)
        old = len(self._buf)
        self._buf.extend(bytes(n))
        got = self._recv_into(memoryview(self._buf)[old:])
        del self._buf[old + got :]
        if got == 0:
            raise _closed_early(self._remaining)
        self._remaining -= got
        return True

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (all that is left when omitted), received straight into one buffer."""
        buf = self._buf
        avail = len(buf) + self._remaining
        if size is None or size < 0 or size > avail:
            size = avail
        if len(buf) >= size:
            out = bytes(memoryview(buf)[:size])
            del buf[:size]
            return out
        out_buf = bytearray(size)
        have = len(buf)
        out_buf[:have] = buf
        buf.clear()
        view = memoryview(out_buf)
        while have < size:
            got = self._recv_into(view[have:])
            if got == 0:
                raise _closed_early(self._remaining)
            have += got
            self._remaining -= got
        return bytes(out_buf)

    def readline(self, size: int | None = -1) -> bytes:
        limit = -1 if size is None else size
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0 and (limit < 0 or nl < limit):
                return self.read(nl + 1)
            if 0 <= limit <= len(self._buf):
                return self.read(limit)
            if not self._fill(_READ_CHUNK):
                return self.read(len(self._buf) if limit < 0 else min(limit, len(self._buf)))

def _closed_early(remaining: int) -> ConnectionError:
    return ConnectionError(f"client closed the connection with {remaining} body bytes unsent")


class EmptyInput:
    """``wsgi.input`` for requests without a body; stateless, so one instance serves all."""

    __slots__ = ()
    unread = 0
    pending = 0

    def read(self, size: int | None = -1) -> bytes:
        return b""

    def readline(self, size: int | None = -1) -> bytes:
        return b""

    def readlines(self, hint: int = -1) -> list[bytes]:
        return []

    def __iter__(self) -> Iterator[bytes]:
        return iter(())


EMPTY_INPUT = EmptyInput()


class FileWrapper:
    """``wsgi.file_wrapper``: the worker sends ``filelike`` with sendfile when it has a fileno."""

    def __init__(self, filelike: BinaryIO, blksize: int = 65536) -> None:
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.filelike.read(self.blksize):
            yield chunk


class Response:
    """The state ``start_response`` fills in for one request."""

    __slots__ = ("head_sent", "headers", "status", "write")

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.head_sent = False
        self.write = write

    def start_response(self, status: str, headers: list[tuple[str, str]],
                       exc_info: ExcInfo | None = None) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response called twice without exc_info")
        self.status = status
        self.headers = headers
        return self.write


def serialize_head(status: str, headers: list[tuple[str, str]]) -> bytes:
    """``HTTP/1.1 <status>`` + headers + blank line, or HeaderError if it could split."""
    code = status[:3]
    if not (len(status) >= 4 and code.isascii() and code.isdigit() and status[3] == " "
            and not _CTL.search(status)):
        raise HeaderError(f"bad status line {status[:80]!r}")
    try:
        block = "".join([k + ": " + v + "\r\n" for k, v in headers])  # TypeError unless str
    except (TypeError, ValueError) as exc:
        raise HeaderError(f"headers must be (str, str) tuples: {exc}") from None
    if not _HEAD.match(block) or block.count("\n") != len(headers):
        _explain_bad_header(headers)
    framing = _FRAMING.findall(block)
    if len(framing) > 1:
        names = sorted(f.lower() for f in framing)
        raise HeaderError("conflicting framing headers: " + ", ".join(names))
    try:
        return f"HTTP/1.1 {status}\r\n{block}\r\n".encode("latin-1")
    except UnicodeEncodeError as exc:
        raise HeaderError(f"response head is not latin-1: {exc}") from None


def _explain_bad_header(headers: list[tuple[str, str]]) -> None:
    for k, v in headers:
        if not isinstance(k, str) or not isinstance(v, str):
            raise HeaderError(f"header {k!r} is not a (str, str) tuple")
        if not _HEAD.match(f"{k}: \r\n"):
            raise HeaderError(f"bad header name {k[:80]!r}")
        if any(c in v for c in "\r\n\0"):
            raise HeaderError(f"header {k} contains CR, LF or NUL (response splitting)")
    raise HeaderError("malformed headers")


def body_allowed(method: str, status: str) -> bool:
    """No body for HEAD, 1xx, 204 and 304."""
    if method == "HEAD":
        return False
    code = status[:3]
    return not (code[0] == "1" or code in ("204", "304"))


def url_scheme(env: Mapping[str, Any], uwsgi_scheme: str | None) -> tuple[str, str]:
    """The scheme the vars claim, and the var that claimed ``https`` ("" for plain http).

    ``UWSGI_SCHEME`` first (as uWSGI), then ``REQUEST_SCHEME``, then ``HTTPS=on``/``1``;
    values other than http/https are ignored. Whether the claim is believed depends on the
    peer (``forwarded-allow-ips``): ``environ_from_uwsgi`` asks its ``trust`` callable.
    """
    for var, value in (("UWSGI_SCHEME", uwsgi_scheme), ("REQUEST_SCHEME", env.get("REQUEST_SCHEME"))):
        if value == "https":
            return "https", f"{var}=https"
        if value == "http":
            return "http", ""
    https = env.get("HTTPS", "")
    if https.lower() in ("on", "1"):
        return "https", f"HTTPS={https}"
    return "http", ""


def base_environ(multithread: bool) -> dict[str, Any]:
    """The constant ``wsgi.*`` keys, merged into every request's environ with one update().

    SCRIPT_NAME is not here: nginx may send it, so ``environ_from_uwsgi`` only fills it in
    when absent.
    """
    import sys

    return {
        "wsgi.version": (1, 0),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": multithread,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.file_wrapper": FileWrapper,
    }


# ---- the environ of a decoded request --------------------------------------------------------
Trust = Callable[[Any, str], bool]  # (peer, the var that claimed https) -> is the claim believed


def environ_from_uwsgi(env: dict[str, Any], modifier1: int, base: dict[str, Any], peer: Any,
                       trust: Trust) -> dict[str, Any]:
    """The WSGI environ of a uwsgi request: its vars (``uwsgi.parse_vars``), completed in place.

    The vars *are* the environ (no copy on the hot path). ``base`` is ``base_environ()``;
    ``modifier1`` 30 (nginx ``uwsgi_modifier1 30``) strips the SCRIPT_NAME prefix from
    PATH_INFO; SCRIPT_NAME is "" when nginx sent none. ``wsgi.url_scheme`` is what the vars
    claim (``url_scheme``), but ``https`` only if ``trust(peer, claim)`` says the peer may
    claim it: ``trust`` is called only for such a claim, so a plain request costs no
    ``getpeername()``. ``wsgi.input`` is the caller's (it owns the socket).
    """
    env.update(base)
    if modifier1 == 30:
        strip_script_name(env)
    elif "SCRIPT_NAME" not in env:
        env["SCRIPT_NAME"] = ""
    scheme, claim = url_scheme(env, env.pop(SCHEME_KEY, None))
    if claim and not trust(peer, claim):
        scheme = "http"
    env["wsgi.url_scheme"] = scheme
    return env


def strip_script_name(env: dict[str, Any]) -> None:
    """modifier1 30: remove the SCRIPT_NAME prefix from PATH_INFO (nginx 'uwsgi_modifier1 30')."""
    script = env.get("SCRIPT_NAME", "")
    path = env.get("PATH_INFO", "")
    if script and path.startswith(script):
        env["PATH_INFO"] = path[len(script):]
    env.setdefault("SCRIPT_NAME", "")


def site_environ(sockname: object, tls: bool) -> dict[str, Any]:
    """What an HTTP listener adds to every environ, computed once per listener.

    ``sockname`` is the listener's ``getsockname()`` (a Unix socket's path gives
    ``localhost:80``); ``tls`` for an https-socket.
    """
    if isinstance(sockname, tuple):
        host, port = str(sockname[0]), str(sockname[1])
    else:
        host, port = "localhost", "80"
    scheme = "https" if tls else "http"
    env: dict[str, Any] = {"SERVER_NAME": host, "SERVER_PORT": port, "SCRIPT_NAME": "",
                           "wsgi.url_scheme": scheme, "wsgi.input_terminated": True}
    if tls:
        env["HTTPS"] = "on"
    return env


def environ_from_http(head: Head, constant: dict[str, Any], peer: tuple[str, str],
                      trusted: bool) -> dict[str, Any]:
    """The WSGI environ of an HTTP/1.1 request (``http.Head``), without ``wsgi.input``.

    ``constant`` is ``{**base_environ(), **site_environ()}``, merged once per listener by the
    caller and copied here (one fast copy, not a literal and two updates); ``peer`` the
    client's (host, port) as strings. Header fields become ``HTTP_*`` keys (repeats joined
    with ", ", cookies with "; "; names with ``_`` dropped); the host of an absolute-form
    target wins over the Host field. A ``trusted`` peer (forwarded-allow-ips) may set the
    client address and the scheme with X-Forwarded-For/-Proto (``forwarded``).
    """
    path = head.path
    if b"%" in path:
        path = unquote_to_bytes(path)
    env = constant.copy()
    env["REQUEST_METHOD"] = head.method
    env["PATH_INFO"] = path.decode("latin-1") if path != b"*" else ""
    env["QUERY_STRING"] = head.query
    env["REQUEST_URI"] = head.target
    env["SERVER_PROTOCOL"] = head.version
    env["REMOTE_ADDR"] = peer[0]
    env["REMOTE_PORT"] = peer[1]
    keys = FIELD_KEYS
    for name, value in head.headers:
        key = keys.get(name)
        if key is None:
            key = _cgi_key(name)
        if not key:
            continue
        val = value.decode("latin-1")
        if key in env and key.startswith("HTTP_"):
            env[key] += ("; " if key == "HTTP_COOKIE" else ", ") + val
        else:
            env[key] = val
    if head.host is not None:
        env["HTTP_HOST"] = head.host.decode("latin-1")  # absolute-form wins (RFC 9112 3.2.2)
    if trusted:
        forwarded(env)
    return env


def forwarded(env: dict[str, Any]) -> None:
    """A trusted proxy's X-Forwarded-For (its last entry: the address the proxy saw) and
    X-Forwarded-Proto (http or https only) replace REMOTE_ADDR and wsgi.url_scheme."""
    xff = env.get("HTTP_X_FORWARDED_FOR")
    if xff:
        last = xff[xff.rfind(",") + 1:].strip()
        if last:
            env["REMOTE_ADDR"] = last
            env.pop("REMOTE_PORT", None)
    proto = env.get("HTTP_X_FORWARDED_PROTO")
    if proto:
        proto = proto.strip().lower()
        if proto in ("http", "https"):
            env["wsgi.url_scheme"] = proto
            if proto == "https":
                env["HTTPS"] = "on"


# field name as sent -> its environ key ("" for a name dropped), shared by environ_from_http and
# the C fast path of the HTTP codec (RequestParser.build_environ), which fill it alike
FIELD_KEYS: dict[bytes, str] = {b"Content-Length": "CONTENT_LENGTH", b"Content-Type": "CONTENT_TYPE"}


def _cgi_key(name: bytes) -> str:
    """``X-Forwarded-For`` -> ``HTTP_X_FORWARDED_FOR``; "" for names with ``_`` (dropped: an
    ``X_Forwarded_For`` would otherwise overwrite the real one's key)."""
    if b"_" in name:
        key = ""
    else:
        upper = name.decode("latin-1").upper().replace("-", "_")
        key = upper if upper in ("CONTENT_LENGTH", "CONTENT_TYPE") else "HTTP_" + upper
    if len(FIELD_KEYS) < 2048:
        FIELD_KEYS[name] = key
    return key
