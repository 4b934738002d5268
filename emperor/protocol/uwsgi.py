"""The uwsgi packet codec: sans-IO, hard limits, typed errors. Imports nothing of the project.

A request is a 4-byte header (modifier1, little-endian u16 datasize, modifier2), then
``datasize`` bytes of vars (``u16le klen, key, u16le vlen, value`` repeated), then the body,
whose length is the ``CONTENT_LENGTH`` var and nothing else. See docs/protocol.md.

``parse_vars`` is on every request's path: it decodes the block once as latin-1 and slices
the resulting str, so a var costs two index operations and two slices.
"""

from __future__ import annotations

import re
from typing import Any

MAX_VARS = 1000
SERVED_MODIFIERS = frozenset({0, 30})

# Keys that must appear at most once: a duplicate makes the request ambiguous (smuggling).
_SINGLE = ("CONTENT_LENGTH", "REQUEST_METHOD", "PATH_INFO", "REQUEST_URI", "QUERY_STRING",
           "HTTP_HOST", "CONTENT_TYPE", "SCRIPT_NAME", "HTTPS", "REQUEST_SCHEME")
# The one UWSGI_* var that is not dropped: uWSGI sets wsgi.url_scheme from it. It is kept under
# this key, out of the app's sight, and the worker honours it from a trusted peer only.
SCHEME_KEY = "emperor.uwsgi_scheme"
_BAD_CHARS = re.compile("[\x00\r\n]")
_VARIABLE = re.compile(r"\d+|'[^']*'|\"[^\"]*\"")


try:  # the optional C extension (emperor/protocol/_speedups.c)
    from emperor.protocol._speedups import parse_vars as _c_parse_vars
except ImportError:  # no compiler at install time: the pure-Python parser does everything
    _c_parse_vars = None


class ProtocolError(Exception):
    """A request that cannot be served. ``status`` 0 means close without a reply.

    ``kind`` names the diagnosis without its variable parts (sizes, values), so a worker can
    log each kind of trouble once per peer; ``body_pending`` is how many body bytes the peer
    is still sending, to be drained so that the error reply is not lost to a reset.
    """

    status = 400
    body: bytes | None = None  # the reply's text, when more helpful than the status's reason

    def __init__(self, message: str, status: int | None = None, body_pending: int = 0) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        self.kind = type(self).__name__ + ":" + _VARIABLE.sub("", message)[:48]
        self.body_pending = body_pending


class UnsupportedModifier(ProtocolError):
    status = 501


class HTTPToUwsgi(ProtocolError):
    """An HTTP client (curl, proxy_pass) at a uwsgi socket: a real 400 that says what to do."""

    body = (b"400 Bad Request: this is a uwsgi-protocol socket, not HTTP. Put nginx in front with "
            b"uwsgi_pass, or give the vassal an http-socket (http-socket = ADDR) for HTTP clients "
            b"and proxy_pass.\n")


class BlockTooLarge(ProtocolError):
    status = 0  # like uWSGI: log and close; nginx shows a 502


def check_header(data: bytes, buffer_size: int) -> int:
    """Validate the header and return the vars block size, or raise a ProtocolError."""
    m1, size, m2 = data[0], data[1] | (data[2] << 8), data[3]
    if m1 not in SERVED_MODIFIERS or m2:
        if data[:4] in (b"GET ", b"POST", b"HEAD", b"PUT ", b"DELE", b"OPTI", b"PATC", b"CONN"):
            raise HTTPToUwsgi("this looks like HTTP sent to a uwsgi-protocol socket "
                              "(use nginx uwsgi_pass, or an http-socket for proxy_pass)")
        if data[0] == 0x16:
            raise ProtocolError("this looks like a TLS handshake sent to a uwsgi-protocol socket", 0)
        raise UnsupportedModifier(f"unsupported modifier1 {m1} / modifier2 {m2} "
                                  "(only 0/0 and 30/0 are served)")
    if size > buffer_size:
        raise BlockTooLarge(f"vars block of {size} bytes is larger than buffer-size {buffer_size}")
    if size == 0:
        raise ProtocolError("empty vars block")
    return size


def parse_vars(b: bytes, start: int, end: int) -> dict[str, Any]:
    """Parse the vars block ``b[start:end]``: the C fast path when built, else Python.

    Every value is a str; the dict is typed as an environ because the worker completes it in
    place (``wsgi.input`` and the other non-str keys) instead of copying it.

    The C parser returns None for anything unusual, and the Python parser then decides, so
    both give the same result or the same error for every input (tests/test_protocol.py).
    """
    env = _c_parse_vars(b, start, end, MAX_VARS) if _c_parse_vars is not None else None
    if env is None:
        env = parse_vars_py(b, start, end)
    env.pop("HTTP_CONTENT_LENGTH", None)  # nginx repeats the CGI vars as headers: keep one source
    env.pop("HTTP_CONTENT_TYPE", None)
    return env


def parse_vars_py(b: bytes, start: int, end: int) -> dict[str, str]:
    """Parse the vars block ``b[start:end]`` into a dict of latin-1 strings.

    Every length must fit inside the block; empty keys, more than MAX_VARS vars, CR/LF/NUL in
    a value, and a repeated framing key (CONTENT_LENGTH, HTTP_HOST, ...) are 400s. Other
    repeated HTTP_* headers (nginx 1.22 sends each copy) are joined with ", " ("; " for
    cookies), as nginx >= 1.23 does. ``UWSGI_*`` vars are dropped: a peer never configures us
    (``UWSGI_SCHEME`` alone is kept, as ``SCHEME_KEY``, for the worker to judge).
    """
    s = b[start:end].decode("latin-1")
    env: dict[str, str] = {}
    i = 0
    n = end - start
    count = 0
    try:
        while i < n:
            kl = b[start + i] | (b[start + i + 1] << 8)
            i += 2
            k = s[i : i + kl]
            i += kl
            vl = b[start + i] | (b[start + i + 1] << 8)
            i += 2
            env[k] = s[i : i + vl]
            i += vl
            count += 1
    except IndexError:
        raise ProtocolError("truncated vars block: a length field runs past the block") from None
    if i != n:
        raise ProtocolError("truncated vars block: a key or value runs past the block")
    if count != len(env) or count > MAX_VARS or "" in env or "UWSGI_" in s:
        return _slow_vars(b, start, end, s)
    if _BAD_CHARS.search("".join(env.values())):
        _reject_bad_value(env)
    return env


def _walk(b: bytes, start: int, end: int, s: str) -> list[tuple[str, str]]:
    out = []
    i, n = 0, end - start
    while i < n:
        kl = b[start + i] | (b[start + i + 1] << 8)
        k = s[i + 2 : i + 2 + kl]
        i += 2 + kl
        vl = b[start + i] | (b[start + i + 1] << 8)
        out.append((k, s[i + 2 : i + 2 + vl]))
        i += 2 + vl
    return out


def _slow_vars(b: bytes, start: int, end: int, s: str) -> dict[str, str]:
    """The rare cases: duplicates, empty keys, too many vars, UWSGI_* vars."""
    pairs = _walk(b, start, end, s)
    if len(pairs) > MAX_VARS:
        raise ProtocolError(f"too many vars ({len(pairs)} > {MAX_VARS})")
    env: dict[str, str] = {}
    dropped = []
    for k, val in pairs:
        if not k:
            raise ProtocolError("empty key in vars block")
        if k == "UWSGI_SCHEME":
            k = SCHEME_KEY
            if k in env:
                raise ProtocolError("UWSGI_SCHEME appears twice")
        elif k.startswith("UWSGI_"):
            dropped.append(k)
            continue
        if k in env:
            if k in _SINGLE:
                raise ProtocolError(f"{k} appears twice")
            if k.startswith("HTTP_"):
                env[k] = env[k] + ("; " if k == "HTTP_COOKIE" else ", ") + val
                continue
        env[k] = val
    if dropped:
        env["emperor.dropped_vars"] = ",".join(dropped)
    if _BAD_CHARS.search("".join(env.values())):
        _reject_bad_value(env)
    return env


def _reject_bad_value(env: dict[str, str]) -> None:
    for k, val in env.items():
        if _BAD_CHARS.search(val):
            raise ProtocolError(f"{k} contains CR, LF or NUL")


def content_length(env: dict[str, str], limit: int) -> int:
    """CONTENT_LENGTH as strict decimal (1-18 ASCII digits); empty or absent means 0."""
    cl = env.get("CONTENT_LENGTH")
    if not cl:
        return 0
    if not (cl.isascii() and cl.isdigit()) or len(cl) > 18:
        raise ProtocolError(f"CONTENT_LENGTH {cl[:40]!r} is not a decimal number")
    n = int(cl)
    if limit and n > limit:
        raise ProtocolError(f"request body of {n} bytes is larger than limit-post {limit}", 413,
                            body_pending=n)
    return n


def request_method(env: dict[str, Any], body_pending: int) -> str:
    """REQUEST_METHOD, once the vars are known to name a request: REQUEST_METHOD and PATH_INFO
    must both be there (nginx sends them from ``uwsgi_params``). ``body_pending`` is the
    body's length, for the error to drain (``ProtocolError.body_pending``)."""
    method: str | None = env.get("REQUEST_METHOD")
    if method is None or "PATH_INFO" not in env:
        raise ProtocolError("REQUEST_METHOD or PATH_INFO missing (does the nginx location include "
                            "uwsgi_params?)", body_pending=body_pending)
    return method


def pack(env: dict[str, str] | list[tuple[str, str]], modifier1: int = 0, modifier2: int = 0) -> bytes:
    """Encode a request header + vars (for tests and tools; the server never sends requests)."""
    items = env.items() if isinstance(env, dict) else env
    parts = []
    for k, val in items:
        kb, vb = k.encode("latin-1"), val.encode("latin-1")
        parts.append(len(kb).to_bytes(2, "little") + kb + len(vb).to_bytes(2, "little") + vb)
    block = b"".join(parts)
    if len(block) > 0xFFFF:
        raise ValueError("vars block larger than 65535 bytes")
    return bytes((modifier1,)) + len(block).to_bytes(2, "little") + bytes((modifier2,)) + block
