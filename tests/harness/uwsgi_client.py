"""A uwsgi-protocol client (and a tiny test server) written from the wire spec.

Why our own: tests must speak the protocol byte-exactly, including malformed
packets no real client would send, and must not depend on uWSGI being
installed. Wire facts: /work/shared/design/uwsgi-protocol.md (4-byte header
``modifier1, u16le datasize, modifier2``; vars are ``u16le len + bytes`` pairs;
the body follows, framed only by ``CONTENT_LENGTH``; the response is plain
HTTP ended by the server closing the connection).
"""

from __future__ import annotations

import http.client
import select
import socket
import struct
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

Addr = str | tuple[str, int]
"""A Unix socket path (``/x.sock``, ``unix:/x.sock``, ``@abstract``) or ``(host, port)``."""

VarKey = str | bytes
Vars = Mapping[str, VarKey] | Mapping[bytes, bytes] | Iterable[tuple[VarKey, VarKey]]
Headers = list[tuple[str, str]]

MAX_BLOCK = 0xFFFF


class UwsgiTimeout(TimeoutError):
    """The peer neither answered nor closed in time; ``partial`` holds what did arrive."""

    def __init__(self, msg: str, partial: bytes = b"") -> None:
        super().__init__(msg)
        self.partial = partial


class BadResponse(ValueError):
    """The bytes received are not an HTTP response; ``raw`` holds them."""

    def __init__(self, msg: str, raw: bytes) -> None:
        super().__init__(f"{msg}: {raw[:200]!r}")
        self.raw = raw


# ------------------------------------------------------------------ packing
def _b(x: VarKey) -> bytes:
    """Keys/values are raw bytes on the wire; str is taken as latin-1 (PEP 3333)."""
    return x if isinstance(x, bytes) else x.encode("latin-1")


def _items(vars: Vars) -> list[tuple[VarKey, VarKey]]:
    return list(vars.items()) if isinstance(vars, Mapping) else list(vars)


def pack_vars(vars: Vars) -> bytes:
    """The vars block alone (no header). A list of pairs keeps order and duplicates."""
    out = bytearray()
    for k, v in _items(vars):
        kb, vb = _b(k), _b(v)
        if len(kb) > MAX_BLOCK or len(vb) > MAX_BLOCK:
            raise ValueError(f"uwsgi var longer than 65535 bytes: {kb[:40]!r}")
        out += struct.pack("<H", len(kb)) + kb + struct.pack("<H", len(vb)) + vb
    return bytes(out)


def pack_header(datasize: int, modifier1: int = 0, modifier2: int = 0) -> bytes:
    """The 4-byte packet header; raises if a field does not fit (use raw bytes for lies)."""
    return struct.pack("<BHB", modifier1, datasize, modifier2)


def pack(vars: Vars, body: bytes = b"", modifier1: int = 0, modifier2: int = 0) -> bytes:
    """A whole request packet: header + vars block + body (the body is not counted in datasize)."""
    block = pack_vars(vars)
    if len(block) > MAX_BLOCK:
        raise ValueError(f"uwsgi vars block is {len(block)} bytes; the header allows at most 65535")
    return pack_header(len(block), modifier1, modifier2) + block + body


def unpack_vars(block: bytes) -> list[tuple[bytes, bytes]]:
    """Parse a vars block into ordered (key, value) byte pairs; ValueError if truncated."""
    out: list[tuple[bytes, bytes]] = []
    i, n = 0, len(block)
    while i < n:
        if i + 2 > n:
            raise ValueError(f"truncated key length at offset {i}")
        (kl,) = struct.unpack_from("<H", block, i)
        i += 2
        if i + kl + 2 > n:
            raise ValueError(f"key of {kl} bytes at offset {i} overruns the block")
        k = block[i : i + kl]
        i += kl
        (vl,) = struct.unpack_from("<H", block, i)
        i += 2
        if i + vl > n:
            raise ValueError(f"value of {vl} bytes at offset {i} overruns the block")
        out.append((k, block[i : i + vl]))
        i += vl
    return out


def wsgi_vars(
    method: str = "GET",
    path: str = "/",
    query: str = "",
    body: bytes = b"",
    headers: Iterable[tuple[str, str]] = (),
    **extra: str,
) -> list[tuple[str, str]]:
    """A var list shaped like nginx's stock ``uwsgi_params`` (empty CONTENT_* on GET, as nginx)."""
    v = [
        ("QUERY_STRING", query),
        ("REQUEST_METHOD", method),
        ("CONTENT_TYPE", "application/octet-stream" if body else ""),
        ("CONTENT_LENGTH", str(len(body)) if body else ""),
        ("REQUEST_URI", path + ("?" + query if query else "")),
        ("PATH_INFO", path),
        ("DOCUMENT_ROOT", "/usr/share/nginx/html"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REQUEST_SCHEME", "http"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("REMOTE_PORT", "40000"),
        ("SERVER_PORT", "80"),
        ("SERVER_NAME", "localhost"),
        ("HTTP_HOST", "localhost"),
    ]
    v += [("HTTP_" + k.upper().replace("-", "_"), val) for k, val in headers]
    v += list(extra.items())
    return v


# ------------------------------------------------------------------ responses
def parse_http_response(raw: bytes) -> tuple[int, Headers, bytes]:
    """Split a plain HTTP response into (status, headers, body).

    Accepts ``HTTP/x.y NNN``, a CGI ``Status: NNN`` header, or headers only
    (200), as nginx does; the body is every byte after the blank line.
    """
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise BadResponse("no end of headers (CRLF CRLF)", raw)
    lines = head.split(b"\r\n")
    status = 0
    if lines[0].startswith(b"HTTP/"):
        parts = lines[0].split(None, 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise BadResponse("bad status line", raw)
        status = int(parts[1])
        lines = lines[1:]
    headers: Headers = []
    for ln in lines:
        name, colon, value = ln.partition(b":")
        if not colon or not name or name != name.strip():
            raise BadResponse(f"bad header line {ln[:80]!r}", raw)
        headers.append((name.decode("latin-1"), value.strip().decode("latin-1")))
    if not status:
        cgi = [v for k, v in headers if k.lower() == "status"]
        status = int(cgi[0].split()[0]) if cgi else 200
    return status, headers, body


def header(headers: Headers, name: str) -> str | None:
    """First value of a header, case-insensitively (None if absent)."""
    name = name.lower()
    return next((v for k, v in headers if k.lower() == name), None)


# ------------------------------------------------------------------ sockets
def connect(addr: Addr, timeout: float = 5.0) -> socket.socket:
    """Connected stream socket to a Unix path (``@x`` = abstract) or a (host, port) pair."""
    if isinstance(addr, tuple):
        return socket.create_connection(addr, timeout=timeout)
    path = addr.removeprefix("unix:")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect("\0" + path[1:] if path.startswith("@") else path)
    except BaseException:
        s.close()
        raise
    return s


@dataclass
class Exchange:
    """What one connection gave back: bytes, whether it ended by RST, and how long it took."""

    data: bytes
    reset: bool
    elapsed: float


def exchange(addr: Addr, data: bytes, timeout: float = 5.0, half_close: bool = False) -> Exchange:
    """Send ``data`` and read until EOF (or RST) within an overall deadline.

    A server that rejects a packet may close before reading all of it, so a
    failed send or a reset is recorded, not raised. ``half_close`` shuts our
    write side after sending (no real client does this; see the spec §9).
    """
    t0 = time.monotonic()
    deadline = t0 + timeout
    buf = bytearray()
    reset = False
    with connect(addr, timeout) as s:
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            reset = True
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise UwsgiTimeout(f"{addr}: no EOF within {timeout}s ({len(buf)} bytes read)", bytes(buf))
            s.settimeout(left)
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                reset = True
                break
            except TimeoutError:
                continue
            if not chunk:
                break
            buf += chunk
    return Exchange(bytes(buf), reset, time.monotonic() - t0)


def raw_exchange(addr: Addr, data: bytes, timeout: float = 5.0) -> bytes:
    """Send arbitrary (possibly malformed) bytes; return everything read until EOF/RST."""
    return exchange(addr, data, timeout).data


def request(
    addr: Addr,
    vars: Vars,
    body: bytes = b"",
    timeout: float = 5.0,
    modifier1: int = 0,
    modifier2: int = 0,
) -> tuple[int, Headers, bytes, bytes]:
    """One uwsgi request; returns (status, headers, body, raw).

    Reads until the server closes (one request per connection). Status 0
    with empty headers/body means the server closed without sending a byte
    (what uWSGI does for an unknown modifier1 or an oversized block).
    """
    raw = raw_exchange(addr, pack(vars, body, modifier1, modifier2), timeout)
    if not raw:
        return 0, [], b"", raw
    status, headers, rbody = parse_http_response(raw)
    return status, headers, rbody, raw


# ------------------------------------------------------------------ HTTP (to nginx)
def http_request(
    url: str,
    method: str = "GET",
    body: bytes | str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, Headers, bytes]:
    """One HTTP request over a fresh connection (http.client); returns (status, headers, body)."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port or 80, timeout=timeout)
    try:
        target = (u.path or "/") + ("?" + u.query if u.query else "")
        conn.request(method, target, body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, resp.getheaders(), data
    finally:
        conn.close()


def http_get(
    url: str, headers: Mapping[str, str] | None = None, timeout: float = 10.0
) -> tuple[int, Headers, bytes]:
    """GET shortcut for http_request."""
    return http_request(url, "GET", None, headers, timeout)


# ------------------------------------------------------------------ tiny server
@dataclass
class Received:
    """One request as a test server saw it."""

    modifier1: int
    modifier2: int
    vars: list[tuple[bytes, bytes]]
    body: bytes

    def var(self, name: str) -> str | None:
        """Last value of a var (uWSGI semantics: the last duplicate wins), as latin-1 str."""
        key = name.encode("latin-1")
        vals = [v for k, v in self.vars if k == key]
        return vals[-1].decode("latin-1") if vals else None


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"peer closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def read_request(s: socket.socket) -> Received:
    """Read one uwsgi packet plus its CONTENT_LENGTH body from a connected socket."""
    m1, size, m2 = struct.unpack("<BHB", _recv_exact(s, 4))
    pairs = unpack_vars(_recv_exact(s, size))
    got = Received(m1, m2, pairs, b"")
    cl = got.var("CONTENT_LENGTH")
    if cl:
        got.body = _recv_exact(s, int(cl))
    return got


def default_response(req: Received) -> bytes:
    """Echo handler: status 200, the PATH_INFO and the body length, Content-Length set."""
    body = f"path={req.var('PATH_INFO')} body={len(req.body)}\n".encode()
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


@dataclass
class TinyUwsgiServer:
    """A one-thread uwsgi server for tests that need a backend but not the real vassal.

    ``handler(req) -> bytes`` builds the raw HTTP response; the connection is
    closed after it, as the protocol requires. Every request is kept in
    ``received``; handler/parse errors are kept in ``errors`` (never raised in
    the thread, so pytest's thread-exception check stays quiet).
    Use as a context manager.
    """

    addr: Addr = ("127.0.0.1", 0)
    handler: Callable[[Received], bytes] = default_response
    received: list[Received] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        tcp = isinstance(self.addr, tuple)
        fam = (socket.AF_INET6 if ":" in self.addr[0] else socket.AF_INET) if tcp else socket.AF_UNIX
        self._sock = socket.socket(fam, socket.SOCK_STREAM)
        try:
            if isinstance(self.addr, tuple):
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                self._sock.bind(self.addr)
                self.addr = tuple(self._sock.getsockname()[:2])  # type: ignore[assignment]
            else:
                self._sock.bind(self.addr.removeprefix("unix:"))
            self._sock.listen(64)
        except BaseException:
            self._sock.close()
            raise
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._serve, name="tiny-uwsgi", daemon=True)

    @property
    def nginx_upstream(self) -> str:
        """The address as nginx's ``uwsgi_pass`` wants it."""
        if isinstance(self.addr, tuple):
            host, port = self.addr
            return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return "unix:" + self.addr.removeprefix("unix:")

    def start(self) -> TinyUwsgiServer:
        self._thread.start()
        return self

    def _serve(self) -> None:
        while True:
            ready, _, _ = select.select([self._sock, self._wake_r], [], [])
            if self._wake_r in ready:
                return
            conn, _ = self._sock.accept()
            with conn:
                conn.settimeout(10)
                try:
                    req = read_request(conn)
                    self.received.append(req)
                    conn.sendall(self.handler(req))
                except Exception as e:  # recorded for the test to assert on
                    self.errors.append(f"{type(e).__name__}: {e}")

    def stop(self) -> None:
        """Wake the thread through its pipe (no polling), join it, close the sockets."""
        if self._thread.is_alive():
            self._wake_w.send(b"x")
            self._thread.join(10)
        for s in (self._sock, self._wake_r, self._wake_w):
            s.close()

    def __enter__(self) -> TinyUwsgiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
