#!/usr/bin/env python3
"""The HTTP codec's Python work per request head, without sockets: parse, environ, scope.

Feeds one whole request head at a time to ``protocol.http.RequestParser`` and takes its
events (the sync and the ASGI worker do the same per keep-alive request), then builds the
WSGI environ (``wsgi.environ_from_http``) or the ASGI scope (``asgi.scope_from_head``) from
the head. Prints the CPU time (``time.process_time``) per request for each part and head
shape. CPU time of a single thread in-process is far less sensitive to a busy machine than a
wrk run: compare two trees interleaved, e.g.

  for i in 1 2 3; do PYTHONPATH=OLD_TREE python bench/http_codec_micro.py;
                     PYTHONPATH=NEW_TREE python bench/http_codec_micro.py; done
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time
from collections.abc import Callable

from emperor.protocol import asgi, http, wsgi

HEADS = {
    # what nginx's proxy_pass sends (proxy_http_version 1.1, the usual proxy_set_header lines)
    "nginx": (b"GET /hello?name=x HTTP/1.1\r\nHost: backend\r\nX-Real-IP: 127.0.0.1\r\n"
              b"X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\nConnection: \r\n\r\n"),
    # what curl or wrk sends straight to the socket
    "direct": (b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl/7.88.1\r\n"
               b"Accept: */*\r\n\r\n"),
}


def parse_only(head: bytes) -> Callable[[], object]:
    parser = http.RequestParser(65535)
    feed, events = parser.feed, parser.events

    def once() -> object:
        feed(head)
        h = events.popleft()
        events.popleft()  # END
        return h
    return once


def with_environ(head: bytes) -> Callable[[], object]:
    parse = parse_only(head)
    constant = {**wsgi.base_environ(False), **wsgi.site_environ(("127.0.0.1", 8080), False)}
    peer = ("127.0.0.1", "5555")

    def once() -> object:
        return wsgi.environ_from_http(parse(), constant, peer, True)  # type: ignore[arg-type]
    return once


def with_scope(head: bytes) -> Callable[[], object]:
    parse = parse_only(head)
    server, client = ("127.0.0.1", 8080), ("127.0.0.1", 5555)

    def once() -> object:
        return asgi.scope_from_head(parse(), server, client, "http", True)  # type: ignore[arg-type]
    return once


def timed(fn: Callable[[], object], n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - start) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3, help="report the minimum of the rounds")
    ap.add_argument("--profile", action="store_true", help="cProfile the nginx head + environ")
    args = ap.parse_args()
    cols = []
    for shape, head in HEADS.items():
        for part, make in (("parse", parse_only), ("+environ", with_environ), ("+scope", with_scope)):
            fn = make(head)
            fn()
            best = min(timed(fn, args.requests) for _ in range(args.rounds))
            cols.append(f"{shape} {part} {best:.2f}")
    sink = getattr(http, "FieldSink", None)
    speedups = "no FieldSink" if sink is None else f"FieldSink from {sink.__module__}"
    print(f"µs per request (min of {args.rounds} x {args.requests}): " + " | ".join(cols)
          + f"  [{speedups}; emperor from {os.path.dirname(http.__file__)}]")
    if args.profile:
        fn = with_environ(HEADS["nginx"])
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(args.requests // 10):
            fn()
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
