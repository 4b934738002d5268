"""A raw HTTP/1.1 client for tests that need control over the bytes: pipelining, half-sent heads,
malformed requests, keep-alive reuse. Reads responses with their framing (Content-Length,
chunked or close-delimited), so several can be read from one connection in order."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .uwsgi_client import Addr, connect


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    version: str = "HTTP/1.1"
    raw_head: bytes = b""
    trailers: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    def count(self, name: str) -> int:
        return sum(1 for k, _ in self.headers if k.lower() == name.lower())


class RawHTTP:
    """One connection; ``send`` bytes, ``response()`` reads the next response."""

    def __init__(self, addr: Addr, timeout: float = 5.0) -> None:
        self.sock = connect(addr, timeout)
        self.buf = b""
        self.timeout = timeout

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawHTTP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if not self._fill():
                raise EOFError(f"connection closed inside a line ({self.buf[:80]!r})")
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise EOFError(f"connection closed with {n - len(self.buf)} body bytes missing")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def response(self, head_request: bool = False) -> Response:
        """The next response (skipping none: a 100 Continue is returned as itself)."""
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise EOFError(f"connection closed before a response head ({self.buf[:80]!r})")
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        version, code, *_ = lines[0].decode("latin-1").split(" ", 2)
        status = int(code)
        headers = []
        for ln in lines[1:]:
            k, _, v = ln.decode("latin-1").partition(":")
            headers.append((k, v.strip()))
        resp = Response(status, headers, b"", version, head)
        if head_request or status < 200 or status in (204, 304):
            return resp
        te = resp.header("transfer-encoding")
        cl = resp.header("content-length")
        if te and te.lower() == "chunked":
            parts = []
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while (t := self._line()) != b"":
                        k, _, v = t.decode("latin-1").partition(":")
                        resp.trailers.append((k, v.strip()))
                    break
                parts.append(self._exactly(size))
                if self._line() != b"":
                    raise ValueError("chunk not followed by CRLF")
            resp.body = b"".join(parts)
        elif cl is not None:
            resp.body = self._exactly(int(cl))
        else:
            while self._fill():
                pass
            resp.body, self.buf = self.buf, b""
        return resp

    def closed_by_peer(self, within: float = 3.0) -> bool:
        """True if the server closes the connection (EOF or reset) within ``within`` seconds."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return False
            except ConnectionResetError:
                return True
            if not chunk:
                return True
            self.buf += chunk
        return False


def request_bytes(method: str = "GET", path: str = "/", headers: dict[str, str] | None = None,
                  body: bytes = b"", version: str = "HTTP/1.1") -> bytes:
    hdrs = {"Host": "test"} if version == "HTTP/1.1" else {}
    hdrs.update(headers or {})
    if body and "Content-Length" not in hdrs and "Transfer-Encoding" not in hdrs:
        hdrs["Content-Length"] = str(len(body))
    head = f"{method} {path} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
    return head.encode("latin-1") + body


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts if p) + b"0\r\n\r\n"

