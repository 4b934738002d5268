"""TLS on HTTP listeners: ``https-socket = ADDR,CERT,KEY[,CIPHERS[,CA]]`` (docs/http.md).

The standard library's ssl module. Each worker builds the listener's SSLContext itself and
re-reads the certificate and key when their files change (checked at most once a second, on
a new connection): a renewed certificate is used for new connections without a restart, and
connections already open keep theirs, so no request is dropped.

A TLS connection's state lives in the worker's memory, so it cannot be handed to the master
like a plain idle connection: a worker that gets busy closes its idle TLS connections
(cleanly, with close_notify), and threaded workers close them after each response. ``TLSConn``
gives an SSLSocket the few socket calls the HTTP code makes (``recv`` with MSG_DONTWAIT,
``sendmsg``); file_wrapper bodies are read and written, never sendfile()d.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import ssl
import time
from typing import Any

from emperor.config_view import ConfigView

log = logging.getLogger("emperor.tls")


class TLSError(Exception):
    """A bad https-socket line, or certificate files that cannot be loaded (the message says which)."""


def parse(value: str) -> tuple[str, str, str, str | None, str | None]:
    """``ADDR,CERT,KEY[,CIPHERS[,CA]]`` -> its parts (the address may be ``[::1]:443``)."""
    parts = value.split(",")
    if len(parts) < 3 or not all(p.strip() for p in parts[:3]) or len(parts) > 5:
        raise TLSError(f"https-socket = {value}: expected ADDR,CERT,KEY[,CIPHERS[,CA]]")
    addr, cert, key = (p.strip() for p in parts[:3])
    ciphers = parts[3].strip() or None if len(parts) > 3 else None
    ca = parts[4].strip() or None if len(parts) > 4 else None
    return addr, cert, key, ciphers, ca


def sites(cfg: ConfigView) -> dict[str, TLSSite]:
    """Listener address -> its TLS context holder, from the https-socket lines (TLSError if bad)."""
    out: dict[str, TLSSite] = {}
    for value in getattr(cfg, "https_socket", None) or []:
        addr, cert, key, ciphers, ca = parse(value)
        out[addr] = TLSSite(cert, key, ciphers, ca)
    return out


class TLSSite:
    """One https listener's context, rebuilt when the certificate or key file changes."""

    def __init__(self, cert: str, key: str, ciphers: str | None, ca: str | None) -> None:
        self.cert, self.key, self.ciphers, self.ca = cert, key, ciphers, ca
        self._stamp = self._files_stamp()
        self._checked = time.monotonic()
        self.context = self._build()

    def _files_stamp(self) -> tuple[int, ...]:
        out: list[int] = []
        for path in (self.cert, self.key):
            try:
                st = os.stat(path)
                out += [st.st_mtime_ns, st.st_size, st.st_ino]
            except OSError:
                out += [0, 0, 0]
        return tuple(out)

    def _build(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(self.cert, self.key)
            if self.ciphers:
                ctx.set_ciphers(self.ciphers)
            if self.ca:
                optional = self.ca.startswith("!")
                ctx.load_verify_locations(self.ca.removeprefix("!"))
                ctx.verify_mode = ssl.CERT_OPTIONAL if optional else ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as exc:
            raise TLSError(f"https-socket: cannot load {self.cert} / {self.key}: {exc}") from None
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def current(self) -> ssl.SSLContext:
        """The context for a new connection, reloaded first if the files changed."""
        now = time.monotonic()
        if now - self._checked >= 1.0:
            self._checked = now
            stamp = self._files_stamp()
            if stamp != self._stamp:
                try:
                    self.context = self._build()
                    self._stamp = stamp
                    log.info("https: reloaded certificate %s", self.cert)
                except TLSError as exc:  # half-written files: keep the old context, try again later
                    log.error("%s (keeping the previous certificate)", exc)
        return self.context

    def accept(self, raw: Any, timeout: float) -> TLSConn | None:
        """Handshake on an accepted socket within ``timeout``; None (closed) if it fails."""
        sock = socket.socket(fileno=raw.detach())
        sock.settimeout(timeout)
        try:
            tls = self.current().wrap_socket(sock, server_side=True)
        except (OSError, ValueError) as exc:
            log.debug("https: handshake failed: %s", exc)
            sock.close()
            return None
        tls.settimeout(None)  # from here SO_RCVTIMEO/SO_SNDTIMEO bound each call, as for plain HTTP
        return TLSConn(tls)


class TLSConn:
    """The socket calls the HTTP code makes, on an SSLSocket."""

    tls = True

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.sock = sock

    def _ready(self) -> bool:
        if self.sock.pending():
            return True
        return bool(select.select([self.sock], [], [], 0)[0])

    def recv(self, n: int, flags: int = 0) -> bytes:
        if not flags & socket.MSG_DONTWAIT:
            return self.sock.recv(n)
        if not self._ready():
            raise BlockingIOError
        self.sock.setblocking(False)
        try:
            return self.sock.recv(n)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise BlockingIOError from None
        finally:
            self.sock.setblocking(True)

    def recv_into(self, buf: Any, nbytes: int = 0, flags: int = 0) -> int:
        data = self.recv(nbytes or len(buf), flags)
        buf[: len(data)] = data
        return len(data)

    def send(self, data: Any, flags: int = 0) -> int:
        self.sock.sendall(data)
        return len(data)

    def sendall(self, data: Any) -> None:
        self.sock.sendall(data)

    def sendmsg(self, buffers: Any, ancdata: Any = (), flags: int = 0) -> int:
        data = b"".join(bytes(b) for b in buffers)
        self.sock.sendall(data)
        return len(data)

    def fileno(self) -> int:
        return self.sock.fileno()

    def getpeername(self) -> Any:
        return self.sock.getpeername()

    def setsockopt(self, *args: Any) -> None:
        self.sock.setsockopt(*args)

    def settimeout(self, t: float | None) -> None:
        self.sock.settimeout(t)

    def shutdown(self, how: int) -> None:
        try:
            self.sock.unwrap()  # close_notify
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        self.sock.close()
