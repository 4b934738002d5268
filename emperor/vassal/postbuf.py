"""``post-buffering``: receive the whole request body before the app is called.

uWSGI's meaning: a body up to N bytes is kept in memory, a bigger one goes to a temporary
file, and the app gets a ``wsgi.input`` that never waits on the client. The reads go through
the request's own ``Input``, so socket-timeout bounds each read and body-read-timeout the
whole body (its deadline is set before this runs); a client that is too slow, or closes
early, raises and the app is never called. limit-post has already refused bodies too big.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import IO

from emperor.protocol.wsgi import EmptyInput, Input


class FileInput:
    """``wsgi.input`` over a body spooled to an unnamed temporary file (already complete)."""

    __slots__ = ("_f", "_left")
    pending = 0  # nothing is left in the socket: nothing to drain

    def __init__(self, f: IO[bytes], length: int) -> None:
        self._f = f
        self._left = length

    @property
    def unread(self) -> int:
        return self._left

    def read(self, size: int | None = -1) -> bytes:
        data = self._f.read(-1 if size is None or size < 0 else size)
        self._left -= len(data)
        return data

    def readline(self, size: int | None = -1) -> bytes:
        line = self._f.readline(-1 if size is None else size)
        self._left -= len(line)
        return line

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines = self._f.readlines(hint)
        self._left -= sum(map(len, lines))
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line

    def close(self) -> None:
        self._f.close()


def buffer_body(inp: Input | EmptyInput | FileInput, length: int, in_memory: int,
                bufsize: int) -> Input | FileInput:
    """Read all ``length`` body bytes from ``inp`` now; raises what ``inp.read`` raises
    (ClientGone past a deadline, ConnectionError when the client closes early)."""
    if length <= in_memory:
        return Input(inp.read(length), 0, _no_socket)
    f = tempfile.TemporaryFile(prefix="emperor-body-")  # noqa: SIM115 - handed to the app, closed with it
    try:
        left = length
        while left > 0:
            chunk = inp.read(min(bufsize, left))
            f.write(chunk)
            left -= len(chunk)
        f.seek(0)
    except BaseException:
        f.close()
        raise
    return FileInput(f, length)


def _no_socket(view: memoryview) -> int:
    raise AssertionError("a buffered body never reads the socket")
