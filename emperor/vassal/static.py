"""Static files before the app: ``static-map``, ``static-map2``, ``check-static`` (docs/http.md).

A WSGI middleware, installed only when one of those options is set, so a vassal without
them runs its app unwrapped (no per-request cost). It works on uwsgi and HTTP sockets alike:
a whole file goes back as ``wsgi.file_wrapper`` (sendfile), a single ``Range`` as a bounded
read. Nothing outside the mapped directories is ever served: the path is resolved with
``os.path.realpath`` (which follows ``..`` and symlinks) and must stay under the mapped
directory, or under a ``static-safe`` one; else the answer is 403. PATH_INFO is already
percent-decoded (by nginx, or by the HTTP codec), so ``%2e%2e`` and ``%2f`` arrive as ``..``
and ``/`` and get the same check.
"""

from __future__ import annotations

import email.utils
import logging
import mimetypes
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from emperor.config_view import ConfigView
from emperor.protocol.wsgi import FileWrapper

log = logging.getLogger("emperor.static")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
_RANGE = re.compile(r"bytes=(\d*)-(\d*)\Z")


class StaticError(Exception):
    """A static-map line that cannot be used (the message names the option and the value)."""


class Mount:
    __slots__ = ("full", "prefix", "root")

    def __init__(self, prefix: str, root: str, full: bool) -> None:
        self.prefix = prefix.rstrip("/")
        self.root = root
        self.full = full  # static-map2: the whole PATH_INFO is appended to root


def wrap(app: WSGIApp, cfg: ConfigView) -> WSGIApp:
    """``app`` itself when no static option is set; else the middleware in front of it."""
    maps = list(getattr(cfg, "static_map", None) or [])
    maps2 = list(getattr(cfg, "static_map2", None) or [])
    checks = list(getattr(cfg, "check_static", None) or [])
    if not (maps or maps2 or checks):
        return app
    mounts = [_mount(v, False, "static-map") for v in maps] + [_mount(v, True, "static-map2") for v in maps2]
    mounts += [Mount("", _directory(d, "check-static"), True) for d in checks]
    safe = [_directory(d, "static-safe") for d in (getattr(cfg, "static_safe", None) or [])]
    index = list(getattr(cfg, "static_index", None) or [])
    files = StaticFiles(app, mounts, safe, index)
    files.expires_type = [_expiry(v, "static-expires-type", regex=False)
                          for v in getattr(cfg, "static_expires_type", None) or []]
    files.expires = [_expiry(v, "static-expires", regex=True)
                     for v in getattr(cfg, "static_expires", None) or []]
    return files


def _expiry(value: str, option: str, regex: bool) -> tuple[Any, int]:
    """``MIME=SECONDS`` or ``REGEXP=SECONDS`` (the last ``=`` splits: a regexp may contain one)."""
    what, sep, secs = value.rpartition("=")
    if not sep or not what or not secs.strip().isdigit():
        raise StaticError(f"{option} = {value}: expected {'REGEXP' if regex else 'MIME/TYPE'}=SECONDS")
    if regex:
        try:
            return re.compile(what), int(secs)
        except re.error as exc:
            raise StaticError(f"{option} = {value}: bad regular expression: {exc}") from None
    return what, int(secs)


def _mount(value: str, full: bool, option: str) -> Mount:
    prefix, sep, root = value.partition("=")
    if not sep or not prefix.startswith("/") or not root:
        raise StaticError(f"{option} = {value}: expected /prefix=DIR")
    return Mount(prefix, _directory(root, option), full)


def _directory(path: str, option: str) -> str:
    real = os.path.realpath(path)
    if not os.path.isdir(real):
        raise StaticError(f"{option}: {path} is not a directory")
    return real


class StaticFiles:
    """The middleware: GET and HEAD under a mount are served from disk, the rest goes to the app."""

    def __init__(self, app: WSGIApp, mounts: list[Mount], safe: list[str], index: list[str]) -> None:
        self.app = app
        self.mounts = mounts
        self.safe = safe
        self.index = index
        self.expires_type: list[tuple[Any, int]] = []  # (MIME type, seconds): static-expires-type
        self.expires: list[tuple[Any, int]] = []  # (compiled regexp on the file path, seconds)

    def __call__(self, env: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if env.get("REQUEST_METHOD") in ("GET", "HEAD"):
            path = env.get("PATH_INFO", "")
            for m in self.mounts:
                if m.prefix and path != m.prefix and not path.startswith(m.prefix + "/"):
                    continue
                rel = path if m.full else path[len(m.prefix):]
                found = self._resolve(m.root, rel)
                if found is None:
                    continue  # not there: the next mount, then the app (uWSGI does the same)
                if found == "":
                    return _simple(start_response, "403 Forbidden", b"Forbidden\n")
                return self._serve(env, start_response, found)
        return self.app(env, start_response)

    def _resolve(self, root: str, rel: str) -> str | None:
        """The real path of a regular file under ``root``; "" if it escapes; None if absent."""
        if "\0" in rel:
            return ""
        try:
            real = os.path.realpath(os.path.join(root, rel.lstrip("/")))
        except (ValueError, OSError):
            return ""
        if not self._inside(real, root):
            log.warning("static: refused %r: it resolves to %s, outside %s", rel[:200], real, root)
            return ""
        if os.path.isdir(real):
            for name in self.index:
                candidate = os.path.realpath(os.path.join(real, name))
                if self._inside(candidate, root) and os.path.isfile(candidate):
                    return candidate
            return None
        return real if os.path.isfile(real) else None

    def _ttl(self, path: str, ctype: str) -> int | None:
        """Seconds until Expires: the first static-expires-type for the type, else the first
        static-expires whose regexp matches the file's path (uWSGI's order); None: no header."""
        ttl = _first_ttl(self.expires_type, lambda t: t == ctype)
        return ttl if ttl is not None else _first_ttl(self.expires, lambda rx: rx.search(path))

    def _inside(self, real: str, root: str) -> bool:
        return any(real == d or real.startswith(d.rstrip("/") + "/") for d in (root, *self.safe))

    def _serve(self, env: dict[str, Any], start_response: Callable[..., Any], path: str) -> Iterable[bytes]:
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed by the server through the file wrapper
        except OSError:
            return _simple(start_response, "403 Forbidden", b"Forbidden\n")
        try:
            st = os.fstat(f.fileno())
            size = st.st_size
            mtime = int(st.st_mtime)
            etag = f'"{st.st_mtime_ns:x}-{size:x}"'
            ctype = mimetypes.guess_type(path)[0] or "application/octet-stream"
            headers = [("Content-Type", ctype),
                       ("Last-Modified", email.utils.formatdate(mtime, usegmt=True)),
                       ("ETag", etag), ("Accept-Ranges", "bytes")]
            ttl = self._ttl(path, ctype)
            if ttl is not None:
                headers += [("Expires", email.utils.formatdate(time.time() + ttl, usegmt=True)),
                            ("Cache-Control", f"max-age={ttl}")]
            if _not_modified(env, etag, mtime):
                f.close()
                start_response("304 Not Modified", headers[1:3])
                return []
            rng = env.get("HTTP_RANGE")
            if rng and env.get("HTTP_IF_RANGE", etag) in (etag, headers[1][1]):
                span = _range(rng, size)
                if span is None:
                    f.close()
                    return _simple(start_response, "416 Range Not Satisfiable", b"",
                                   [("Content-Range", f"bytes */{size}")])
                if span != (0, size - 1):
                    first, last = span
                    f.seek(first)
                    start_response("206 Partial Content", [
                        *headers, ("Content-Range", f"bytes {first}-{last}/{size}"),
                        ("Content-Length", str(last - first + 1))])
                    return _read_span(f, last - first + 1)
            start_response("200 OK", [*headers, ("Content-Length", str(size))])
            return FileWrapper(f)
        except BaseException:
            f.close()
            raise


def _first_ttl(rules: list[tuple[Any, int]], match: Any) -> int | None:
    for rule, ttl in rules:
        if match(rule):
            return ttl
    return None


def _not_modified(env: dict[str, Any], etag: str, mtime: int) -> bool:
    inm = env.get("HTTP_IF_NONE_MATCH")
    if inm is not None:
        return inm.strip() == "*" or etag in [t.strip().removeprefix("W/") for t in inm.split(",")]
    ims = env.get("HTTP_IF_MODIFIED_SINCE")
    if ims:
        try:
            when = email.utils.parsedate_to_datetime(ims).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return False
        return mtime <= when
    return False


def _range(spec: str, size: int) -> tuple[int, int] | None:
    """One ``bytes=a-b`` range as (first, last); None when unsatisfiable; the whole file for
    anything else (several ranges, other units): a 200 is always a valid answer to Range."""
    m = _RANGE.match(spec.strip())
    if m is None:
        return (0, size - 1)
    a, b = m.group(1), m.group(2)
    if not a and not b:
        return (0, size - 1)
    if not a:  # the last b bytes
        n = int(b)
        if n == 0 or size == 0:
            return None
        return (max(0, size - n), size - 1)
    first = int(a)
    last = min(int(b), size - 1) if b else size - 1
    if first >= size or (b and int(b) < first):
        return None
    return (first, last)


def _read_span(f: Any, length: int) -> Iterator[bytes]:
    try:
        while length > 0:
            chunk = f.read(min(length, 65536))
            if not chunk:
                break
            length -= len(chunk)
            yield chunk
    finally:
        f.close()


def _simple(start_response: Callable[..., Any], status: str, body: bytes,
            extra: list[tuple[str, str]] | None = None) -> list[bytes]:
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
                            *(extra or [])])
    return [body]
