#!/usr/bin/env python3
"""The sync uwsgi worker's work per request, in one process, without nginx or wrk.

Builds a real ``Worker`` (emperor/vassal/worker.py) on a Unix listener; for each request a
client connects, sends the packet nginx's ``uwsgi_pass`` sends with the stock uwsgi_params
(``bench/uwsgi_wire.py`` packs it), ``Worker.handle`` serves the accepted connection (parse,
environ, app, response, scoreboard, close) and the client reads the answer to EOF. Prints the
CPU time (process_time: user + sys of both sides, the client's syscalls alike for both
trees) per request. nginx keeps no uwsgi connection alive, so every request pays the
connection, as in the rig. Not counted: the accept loop's poll() or blocking accept() wait.

  for i in 1 2 3; do PYTHONPATH=OLD_TREE .venv/bin/python bench/uwsgi_sync_micro.py
                     .venv/bin/python bench/uwsgi_sync_micro.py; done
  .venv/bin/python bench/uwsgi_sync_micro.py --app flask --profile   # + cProfile, by own time

Read the minimum of the rounds (in-process CPU is far less sensitive to a busy machine than
a wrk run).
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

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "apps"))
sys.path.insert(0, HERE)

import uwsgi_wire  # noqa: E402

from emperor import config  # noqa: E402
from emperor.listeners import Listener  # noqa: E402
from emperor.options import Scope  # noqa: E402
from emperor.vassal import scoreboard  # noqa: E402
from emperor.vassal.exchange import accepter  # noqa: E402
from emperor.vassal.worker import Worker  # noqa: E402

# what nginx sends for GET / with the stock uwsgi_params and wrk's headers
VARS = [(k.encode(), v.encode()) for k, v in [
    ("QUERY_STRING", ""), ("REQUEST_METHOD", "GET"), ("CONTENT_TYPE", ""), ("CONTENT_LENGTH", ""),
    ("REQUEST_URI", "/"), ("PATH_INFO", "/"), ("DOCUMENT_ROOT", "/usr/share/nginx/html"),
    ("SERVER_PROTOCOL", "HTTP/1.1"), ("REQUEST_SCHEME", "http"), ("HTTPS", ""),
    ("REMOTE_ADDR", "127.0.0.1"), ("REMOTE_PORT", "40000"), ("SERVER_PORT", "8080"),
    ("SERVER_NAME", "localhost"), ("HTTP_HOST", "127.0.0.1:8080"), ("HTTP_USER_AGENT", "wrk"),
]]
PACKET = uwsgi_wire.pack_request(VARS)


def build(app_name: str, rundir: str) -> tuple[Worker, socket.socket]:
    if app_name == "flask":
        from flaskapp import app
    else:
        from hello import application as app
    path = os.path.join(rundir, "s.sock")
    cfg = config.from_args([("socket", path), ("disable-logging", "true")], Scope.VASSAL)
    lsock = socket.socket(socket.AF_UNIX)
    lsock.bind(path)
    lsock.listen(64)
    lst = Listener("s.sock", lsock, "unix")
    return Worker(1, [lst], cfg, scoreboard.Scoreboard(2), app, lambda: app), lsock


def run(worker: Worker, lsock: socket.socket, requests: int) -> float:
    accept = accepter(lsock)
    path = lsock.getsockname()
    handle = worker.handle
    t0 = time.process_time()
    for _ in range(requests):
        client = socket.socket(socket.AF_UNIX)
        client.connect(path)
        client.sendall(PACKET)
        handle(accept())
        got = b""
        while piece := client.recv(65536):
            got += piece
        client.close()
        assert got.startswith(b"HTTP/1.1 200"), got[:80]
    return (time.process_time() - t0) / requests * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--app", choices=["hello", "flask"], default="hello")
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="uwsgi-sync-micro-") as rundir:
        worker, lsock = build(a.app, rundir)
        run(worker, lsock, 2000)  # warm up
        if a.profile:
            prof = cProfile.Profile()
            prof.enable()
            run(worker, lsock, a.requests)
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
            if os.environ.get("PROFILE_OUT"):
                prof.dump_stats(os.environ["PROFILE_OUT"])
            return
        got = [run(worker, lsock, a.requests) for _ in range(a.rounds)]
        lsock.close()
    import emperor
    print(f"{os.path.dirname(emperor.__file__)} app={a.app}: min {min(got):.2f} µs/request, rounds "
          + " ".join(f"{x:.2f}" for x in got))


if __name__ == "__main__":
    main()
