#!/usr/bin/env python3
"""The sync HTTP worker's work per keep-alive request, in one process, without nginx or wrk.

Builds a real ``Worker`` and ``HTTPServer`` (emperor/vassal/http_conn.py) over a Unix
socketpair, sends one request head as nginx's ``proxy_pass`` sends it, lets
``HTTPServer.serve`` answer it with the bench's hello app (or Flask JSON with ``--app
flask``), reads the response, and prints the CPU time (process_time: user + sys, the
client's syscalls included, alike for both trees) per request. ``--per-conn N`` opens a new
connection every N requests (accept + adopt + close; nginx's upstream keep-alive pool of 32
for 64 client connections churned one connection per ~6.5 requests in the session 3 runs).
Not counted: the accept loop's poll() turns (http_loop.py). Compare two trees interleaved:

  for i in 1 2 3; do PYTHONPATH=OLD_TREE .venv/bin/python bench/http_sync_micro.py
                     .venv/bin/python bench/http_sync_micro.py; done
  .venv/bin/python bench/http_sync_micro.py --profile   # + cProfile, by own time

In-process and timed in CPU, it is far less sensitive to a busy machine than a wrk run; read
the minimum of the rounds.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps"))

from emperor import config
from emperor.listeners import Listener
from emperor.options import Scope
from emperor.vassal import scoreboard
from emperor.vassal.http_conn import HTTPServer
from emperor.vassal.worker import Worker

REQUEST = (b"GET / HTTP/1.1\r\nHost: be\r\nX-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n"
           b"User-Agent: wrk\r\n\r\n")  # nginx's proxy_pass head in bench/benchlib.py (Connection "" dropped)


ECHO_BODY = bytes(range(256)) * 4096  # 1 MiB, as the rig's flask-echo
ECHO_REQUEST = (b"POST /echo HTTP/1.1\r\nHost: be\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Length: %d\r\n\r\n" % len(ECHO_BODY))


def build(app_name: str, rundir: str) -> tuple[HTTPServer, Listener]:
    if app_name in ("flask", "flask-echo"):
        from flaskapp import app
    else:
        from hello import application as app
    cfg = config.from_args([("http-socket", os.path.join(rundir, "s.sock")), ("disable-logging", "true"),
                            ("http-keepalive-requests", str(10**9))],
                           Scope.VASSAL)
    lsock = socket.socket(socket.AF_UNIX)
    lsock.bind(os.path.join(rundir, "s.sock"))
    lsock.listen()
    lst = Listener("s.sock", lsock, "unix", proto="http")
    worker = Worker(1, [lst], cfg, scoreboard.Scoreboard(2), app, lambda: app)
    server = HTTPServer(worker, [lst], None)
    server.peek = False
    return server, lst


def run(server: HTTPServer, lst: Listener, requests: int, per_conn: int) -> float:
    site = server.sites[lst.sock.fileno()]
    path = lst.sock.getsockname()
    conn = client = None
    # as the sync loop serves a held connection its poll() saw readable (serve_ready; older
    # trees: serve)
    serve = getattr(server, "serve_ready", None) or (lambda c: server.serve(c, first=False))
    t0 = time.process_time()
    for i in range(requests):
        if conn is None or (per_conn and i % per_conn == 0):
            if client is not None:
                client.close()  # the peer's FIN: the server sees it on its next read
                assert conn is not None
                assert not server.serve(conn, first=False)
            client = socket.socket(socket.AF_UNIX)
            client.connect(path)
            sock, addr = lst.sock._accept()  # type: ignore[attr-defined]
            fresh = server.accept(socket.socket(fileno=sock), site, addr) if _takes_addr(server) else \
                server.accept(socket.socket(fileno=sock), site)
            assert fresh is not None
            conn = fresh
        client.sendall(REQUEST)
        assert serve(conn)
        got = client.recv(65536)
        assert got.startswith(b"HTTP/1.1 200"), got[:80]
    return (time.process_time() - t0) / requests * 1e6


def run_echo(server: HTTPServer, lst: Listener, requests: int) -> float:
    """flask-echo: a client thread uploads 1 MiB and reads the 1 MiB answer, ``requests`` times
    on one connection, while this thread serves them (CPU of both, as in run())."""
    import threading

    site = server.sites[lst.sock.fileno()]
    client = socket.socket(socket.AF_UNIX)
    client.connect(lst.sock.getsockname())
    sock, addr = lst.sock._accept()  # type: ignore[attr-defined]
    conn = server.accept(socket.socket(fileno=sock), site, addr)
    assert conn is not None
    failed: list[str] = []

    def talk() -> None:
        for _ in range(requests):
            client.sendall(ECHO_REQUEST + ECHO_BODY)
            got = bytearray()
            while True:
                head_end = got.find(b"\r\n\r\n")
                if head_end >= 0 and len(got) >= head_end + 4 + len(ECHO_BODY):
                    break
                piece = client.recv(1 << 20)
                if not piece:
                    failed.append("closed")
                    return
                got += piece
            if not got.startswith(b"HTTP/1.1 200"):
                failed.append(bytes(got[:80]).decode("latin-1"))
                return

    t0 = time.process_time()
    thread = threading.Thread(target=talk)
    thread.start()
    for _ in range(requests):
        assert server.serve(conn, first=False)
    thread.join()
    client.close()
    assert not failed, failed
    return (time.process_time() - t0) / requests * 1e6


def _takes_addr(server: HTTPServer) -> bool:
    return server.accept.__code__.co_argcount > 3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--per-conn", type=int, default=0, help="a new connection every N requests (0: one)")
    ap.add_argument("--app", choices=["hello", "flask", "flask-echo"], default="hello",
                    help="flask-echo: POST 1 MiB, echoed (a client thread; use --requests 300)")
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="http-sync-micro-") as rundir:
        server, lst = build(a.app, rundir)
        runner = run
        if a.app == "flask-echo":
            def runner(server: HTTPServer, lst: Listener, requests: int, per_conn: int) -> float:
                return run_echo(server, lst, requests)
        runner(server, lst, 2000 if a.app != "flask-echo" else 20, a.per_conn)  # warm up
        if a.profile:
            prof = cProfile.Profile()
            prof.enable()
            runner(server, lst, a.requests, a.per_conn)
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
            if os.environ.get("PROFILE_OUT"):
                prof.dump_stats(os.environ["PROFILE_OUT"])
            return
        got = [runner(server, lst, a.requests, a.per_conn) for _ in range(a.rounds)]
    import emperor
    print(f"{os.path.dirname(emperor.__file__)} app={a.app} per-conn={a.per_conn or '-'}: "
          f"min {min(got):.2f} µs/request, rounds " + " ".join(f"{x:.2f}" for x in got))


if __name__ == "__main__":
    main()
