#!/usr/bin/env python3
"""The ASGI worker's Python work per keep-alive HTTP request, without the kernel or a client.

Feeds one request head (as nginx's proxy_pass sends it) at a time to ``aio_http.HttpCodec``
over a transport that only counts writes, runs the bench's plain ASGI hello app, and prints
the CPU time (process_time) per request, two event-loop turns included. In-process,
single-threaded and timed in CPU rather than wall time, it is far less sensitive to a busy
machine than a wrk run (CPU caches still suffer from neighbours): use it to compare
two trees of emperor (PYTHONPATH=<tree>), interleaved, next to run_bench.py's CPU per request.

  PYTHONPATH=OLD_TREE python bench/asgi_codec_micro.py --requests 20000
  PYTHONPATH=NEW_TREE python bench/asgi_codec_micro.py --profile     # + cProfile, by own time

With ``--socket`` the codec gets a real transport instead: a Unix socketpair on the same
loop, with a client protocol in the process that sends the next request when a response
arrives (its few µs and the kernel's loopback work are counted too, alike for every server).
``--server uvicorn`` runs uvicorn's ``HttpToolsProtocol`` the same way (uvicorn installed),
so that the two servers' Python work per request can be compared without nginx or wrk.
The counting transport above under-reports what a real one costs; compare servers with
``--socket``, and read the minimum of the rounds on a busy machine.

With ``--connect K`` the client opens a new connection every K requests (closing the old one),
on a listening Unix socket: emperor's worker accepts through its own accept path
(``aio.Worker._on_listener``, a codec per connection), uvicorn through ``loop.create_unix_server``
as it serves. Behind nginx's ``keepalive 32`` pool with 64 client connections, about one
request in four to five comes on a new upstream connection (K=4 is close to that).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import time
from functools import partial
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps"))

from asgihello import app  # (--app fastapi: replaced in main())

from emperor.vassal import aio_http

REQUEST = (b"GET / HTTP/1.1\r\nHost: be\r\nConnection: keep-alive\r\nX-Real-IP: 127.0.0.1\r\n"
           b"X-Forwarded-For: 127.0.0.1\r\nUser-Agent: wrk\r\n\r\n")
OPTIONS = {"buffer_size": 65536, "limit_post": 0, "websockets_max_size": 1024, "websockets_ping_freq": 0,
           "websockets_pong_tolerance": 0, "socket_timeout": 30, "forwarded_allow_ips": "127.0.0.1",
           "asgi_concurrency": 1000, "disable_logging": True, "max_requests_delta": None,
           "max_requests": 0, "reload_on_rss": 0, "http_keepalive": 30,
           "http_keepalive_requests": 10**9, "harakiri": 0}


class CountingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5555), "sockname": ("127.0.0.1", 80)}.get(name, default)

    def write(self, data: Any) -> None:
        self.writes += 1

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        self.closing = True

    def get_write_buffer_size(self) -> int:
        return 0


class Board:
    """A scoreboard stand-in: int64 cells as the real one has (the C Tally needs a buffer), no
    shared memory."""

    slots = 64

    def __init__(self) -> None:
        self.ints = memoryview(bytearray(8 * 64 * 64)).cast("q")

    def base(self, index: int) -> int:
        return index * 64

    def set_text(self, index: int, text: str) -> None:
        pass


class Options:
    def __getattr__(self, name: str) -> Any:
        return OPTIONS.get(name)


async def run(n: int) -> float:
    w = aio_http.Worker(1, [], Options(), Board(), app, lambda: app)  # type: ignore[arg-type]
    w.loop = asyncio.get_running_loop()
    w.stopping, w.idle = asyncio.Event(), asyncio.Event()
    codec = aio_http.HttpCodec(w, "http", 0)
    transport = CountingTransport()
    codec.connection_made(transport)
    start = time.process_time()
    for _ in range(n):
        codec.data_received(REQUEST)
        await asyncio.sleep(0)  # the app's task runs
        await asyncio.sleep(0)
    took = time.process_time() - start
    assert transport.writes == n, f"{transport.writes} responses for {n} requests"
    return took / n * 1e6


class _Client(asyncio.Protocol):
    """``n`` requests on one connection, one at a time (the next when the previous response has
    arrived). ``done`` gets the number of responses: at the n-th, or with ``close``, once the
    connection we then close is gone."""

    def __init__(self, n: int, done: asyncio.Future[int], close: bool = False) -> None:
        self.n, self.done, self.close, self.got = n, done, close, 0
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(REQUEST)

    def data_received(self, data: bytes) -> None:
        self.got += data.count(b"Hello, World!")
        if self.got < self.n:
            self.transport.write(REQUEST)
        elif self.close:
            self.transport.close()
        elif not self.done.done():
            self.done.set_result(self.got)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(self.got)


def _factory(server: str) -> Any:
    if server == "uvicorn":
        from uvicorn.config import Config
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
        from uvicorn.server import ServerState

        cfg = Config(app, http="httptools", lifespan="off", access_log=False,
                     forwarded_allow_ips="127.0.0.1")
        cfg.load()
        state = ServerState()
        return lambda: HttpToolsProtocol(cfg, state, app_state={})
    w = aio_http.Worker(1, [], Options(), Board(), app, lambda: app)  # type: ignore[arg-type]
    w.loop = asyncio.get_running_loop()
    w.stopping, w.idle = asyncio.Event(), asyncio.Event()
    return lambda: aio_http.HttpCodec(w, "http", 0)


async def run_socket(n: int, server: str) -> float:
    import socket

    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    await loop.connect_accepted_socket(_factory(server), a)
    done: asyncio.Future[int] = loop.create_future()
    start = time.process_time()
    transport, _ = await loop.connect_accepted_socket(lambda: _Client(n, done), b)
    await done
    took = time.process_time() - start
    transport.close()
    await asyncio.sleep(0.01)
    return took / n * 1e6


async def run_connect(n: int, k: int, server: str) -> float:
    import socket
    import tempfile

    from emperor.listeners import Listener

    loop = asyncio.get_running_loop()
    path = os.path.join(tempfile.mkdtemp(prefix="asgi-micro-"), "s.sock")
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(path)
    lsock.listen(128)
    lsock.setblocking(False)
    server_obj: Any = None
    if server == "uvicorn":
        server_obj = await loop.create_unix_server(_factory("uvicorn"), sock=lsock)
    else:
        w = aio_http.Worker(1, [Listener(path, lsock, "unix", path, proto="http")], Options(), Board(),
                            app, lambda: app)  # type: ignore[arg-type]
        w.loop = loop
        w.stopping, w.idle = asyncio.Event(), asyncio.Event()
        w._accept_on()
    got = 0
    start = time.process_time()
    while got < n:
        lost: asyncio.Future[int] = loop.create_future()
        await loop.create_unix_connection(partial(_Client, k, lost, True), path)
        got += await lost
    took = time.process_time() - start
    if server_obj is not None:
        server_obj.close()
    else:
        w._accept_off()
        lsock.close()
    await asyncio.sleep(0.01)
    os.unlink(path)
    return took / got * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--socket", action="store_true", help="a real socketpair and an in-process client")
    ap.add_argument("--server", default="emperor", choices=["emperor", "uvicorn"],
                    help="with --socket or --connect")
    ap.add_argument("--connect", type=int, default=0, metavar="K",
                    help="a new connection every K requests, accepted from a listening socket")
    ap.add_argument("--app", default="hello", choices=["hello", "fastapi"],
                    help="the bench's plain ASGI hello, or its FastAPI JSON endpoint (with --socket)")
    args = ap.parse_args()
    if args.app == "fastapi":
        global app
        from fastapiapp import app
    try:
        import uvloop
        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    def once() -> Any:
        if args.connect:
            return run_connect(args.requests, args.connect, args.server)
        return run_socket(args.requests, args.server) if args.socket else run(args.requests)

    times = sorted(loop.run_until_complete(once()) for _ in range(args.rounds))
    what = args.server if args.socket else "emperor, counting transport"
    if args.connect:
        what = f"{args.server}, a new connection every {args.connect} request(s)"
    print(f"µs per request (median of {args.rounds}): {times[len(times) // 2]:.2f}  min {times[0]:.2f}  "
          f"(all: {', '.join(f'{t:.2f}' for t in times)})  {what}; "
          f"emperor from {os.path.dirname(aio_http.__file__)}")
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        loop.run_until_complete(once())
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(int(os.environ.get("MICRO_TOP", "25")))
        if os.environ.get("PROFILE_OUT"):
            prof.dump_stats(os.environ["PROFILE_OUT"])


if __name__ == "__main__":
    main()
