"""The accept loops of a worker that has an HTTP listener (docs/http.md): ``HTTPWorker``.

The master forks an ``HTTPWorker`` instead of a plain ``Worker`` when its vassal has an HTTP
socket, so only those vassals load httptools, and the worker module never imports this one.

A sync worker polls its listeners, the parking socketpair and the idle keep-alive connections
it holds, and serves whatever is ready at once. It parks lazily: while it serves, the other idle
connections it holds stay with it unless the work outlives ``PARK_AFTER``; then a one-shot
``SIGALRM`` (``setitimer``) hands them all to the master, which gives a request arriving on one
of them to a free worker. So a fast request costs two ``setitimer`` calls instead of a
``sendmsg`` per idle connection (and the master's round trip for each), and a request on an
idle connection still never waits more than ``PARK_AFTER`` behind a busy worker. Threaded
workers never hold idle connections: a thread parks the connection after each response unless
the next (pipelined) request is already there.
"""

from __future__ import annotations

import logging
import select
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

from emperor.vassal.exchange import accepter
from emperor.vassal.http_conn import HTTPServer
from emperor.vassal.http_wire import Connection, Site
from emperor.vassal.parking import Waiting
from emperor.vassal.worker import Worker

log = logging.getLogger("emperor.http")

IDLE_CAP = 64  # idle connections one worker holds; more are parked with the master
# Work longer than this parks the worker's other idle connections (the longest a request on one
# of them waits behind this worker before the master can give it to a free one).
PARK_AFTER = 0.01


class HTTPWorker(Worker):
    """A sync worker of a vassal with at least one HTTP socket (its uwsgi sockets, if any, are
    served by ``Worker.handle`` as in any worker); only its accept loop differs."""

    waiting: Waiting | None = None  # which workers wait for work (set by the master, parking.py)

    def serve(self) -> None:
        if self.cfg.threads > 1:
            serve_threaded(self, self.park)
        else:
            serve_forever(self, self.park, self.waiting)


def serve_forever(worker: Worker, park: socket.socket | None, waiting: Waiting | None = None) -> None:
    """The accept loop of a worker that has at least one HTTP listener (module docstring)."""
    server = HTTPServer(worker, worker.listeners, park)
    server.peek = False  # our poll() sees a next request; no recv() to look for one after each response
    me = worker.index
    poller = select.poll()
    sources: dict[int, Callable[[], Any]] = {}
    for lst in worker.listeners:
        fd = lst.sock.fileno()
        poller.register(fd, select.POLLIN)
        sources[fd] = accepter(lst.sock)
    park_fd = -1
    if park is not None:
        park_fd = park.fileno()
        poller.register(park_fd, select.POLLIN)
    idle: dict[int, tuple[Connection, float]] = {}
    armed = False  # the park timer runs (only while serving with other idle connections held)

    def release() -> None:
        """Hand every idle connection to the master (also the SIGALRM handler: work took long)."""
        nonlocal armed
        armed = False
        for fd in list(idle):
            held = idle.pop(fd, None)  # None: the SIGALRM handler interrupted us and parked it
            if held is not None:
                poller.unregister(fd)
                server.park(held[0])

    def on_alarm(signum: int, frame: Any) -> None:
        if not armed:  # a late signal after disarm() finds nothing to do
            return
        if waiting is None or not worker.alive or waiting.anyone():
            release()  # a free worker can serve them (or we are stopping): hand them over
        else:  # every other worker is busy too: parking would gain nothing; look again later
            signal.setitimer(signal.ITIMER_REAL, PARK_AFTER)

    def arm() -> None:
        """Becoming busy: park the idle connections only if this outlives PARK_AFTER."""
        nonlocal armed
        if not idle:
            return
        if not lazy:
            release()  # the application owns SIGALRM: park at once, as before
            return
        armed = True
        signal.setitimer(signal.ITIMER_REAL, PARK_AFTER)

    def disarm() -> None:
        nonlocal armed
        if armed:
            armed = False  # first: a signal already pending is now a no-op
            signal.setitimer(signal.ITIMER_REAL, 0)

    def hold(conn: Connection) -> None:
        if len(idle) >= IDLE_CAP:  # the longest idle one goes to the master
            oldest = next(iter(idle), -1)
            held = idle.pop(oldest, None)  # None: the SIGALRM handler parked it meanwhile
            if held is not None:
                poller.unregister(oldest)
                server.park(held[0])
        fd = conn.sock.fileno()
        poller.register(fd, select.POLLIN)  # first: the SIGALRM handler parks what ``idle`` has
        idle[fd] = (conn, time.monotonic() + server.keepalive)

    # An application that installed its own SIGALRM handler keeps it (and we park eagerly).
    lazy = signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, None)
    if lazy:
        signal.signal(signal.SIGALRM, on_alarm)
        # SA_RESTART: a blocking system call in a C extension is resumed, not failed with EINTR
        signal.siginterrupt(signal.SIGALRM, False)
    while worker.alive and not worker.recycle_reason:
        now = time.monotonic()
        wait = -1
        while idle:  # in deadline order (hold() appends now + keepalive): only the head can be due
            fd = next(iter(idle))
            conn, until = idle[fd]
            if until > now:
                wait = int((until - now) * 1000) + 1
                break
            del idle[fd]
            poller.unregister(fd)
            server.close(conn)  # idle past http-keepalive: a clean close (FIN)
        if waiting is not None:
            waiting.set(me, True)
        try:
            ready = poller.poll(wait)
        except OSError:
            if not worker.alive:
                break
            raise
        finally:
            if waiting is not None:
                waiting.set(me, False)
        if not ready:
            continue
        ready_fds = {fd for fd, _ev in ready}
        own = [fd for fd in ready_fds if fd in idle]
        if own:  # requests on connections we hold: the fast path, no hand-over
            # Every ready one in turn (a busy connection never starves a quieter one); the
            # others ready wait at most PARK_AFTER before the master can give them elsewhere.
            # A served one is held again at once, so the timer parks it too if a later one is slow.
            armed_here = False
            try:
                for fd in own:
                    held = idle.pop(fd, None)
                    if held is None:
                        continue  # parked by the timer meanwhile: the master has it
                    poller.unregister(fd)
                    if not armed_here:
                        arm()
                        armed_here = True
                    if server.serve(held[0], first=False):
                        hold(held[0])
            finally:
                disarm()
            if not worker.alive or worker.recycle_reason:
                continue
        # then, in the same turn, the parked connections and a new one: under load some held
        # connection is always ready, and serving only those would starve the master's queue.
        # Every parked one waiting is taken (each has a request: the master hands back only
        # those) and held: the next poll() reports them ready, and they are served in turn with
        # the others, where the timer can still park them if this worker stays busy.
        if park_fd in ready_fds:
            while len(idle) < IDLE_CAP and (got := server.take_parked()) is not None:
                hold(got)
        for fd in ready_fds:
            accept = sources.get(fd)
            if accept is None:
                continue
            try:
                sock = accept()
            except BlockingIOError:
                continue  # another worker took it
            except OSError as exc:
                if not worker.alive:
                    break
                if exc.errno in (23, 24):
                    log.error("worker %d: accept: %s", worker.wid, exc.strerror)
                    time.sleep(0.1)
                    continue
                raise
            site = server.sites.get(fd)
            arm()
            try:
                if site is None:
                    worker.handle(sock)  # a uwsgi listener of the same vassal
                    fresh = None
                else:
                    fresh = server.accept(sock, site)
                    if fresh is not None and not server.serve(fresh, first=True):
                        fresh = None
            finally:
                disarm()
            if fresh is not None:
                hold(fresh)
            break
    disarm()
    if waiting is not None:
        waiting.set(me, False)
    release()  # stopping or recycling: the master keeps them for the next worker


def serve_threaded(worker: Worker, park: socket.socket | None) -> None:
    """Threads: each connection is served in a thread, then parked (threads hold nothing idle)."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import BoundedSemaphore

    server = HTTPServer(worker, worker.listeners, park)
    poller = select.poll()
    sources: dict[int, Callable[[], Any]] = {}
    for lst in worker.listeners:
        poller.register(lst.sock.fileno(), select.POLLIN)
        sources[lst.sock.fileno()] = accepter(lst.sock)
    park_fd = park.fileno() if park is not None else -1
    if park is not None:
        poller.register(park_fd, select.POLLIN)
    free = BoundedSemaphore(worker.cfg.threads)

    def task(item: Any, site: Site | None) -> None:
        try:
            if isinstance(item, Connection):
                if server.serve(item, first=False):
                    server.park(item)
            elif site is None:
                worker.handle(item)
            else:
                conn = server.accept(item, site)
                if conn is not None and server.serve(conn, first=True):
                    server.park(conn)
        finally:
            free.release()

    with ThreadPoolExecutor(worker.cfg.threads, thread_name_prefix=f"worker{worker.wid}") as pool:
        while worker.alive and not worker.recycle_reason:
            free.acquire()
            submitted = False
            try:
                ready = poller.poll(1000)
            except OSError:
                ready = []
            fds = {fd for fd, _ in ready}
            if park_fd in fds and (got := server.take_parked()) is not None:
                pool.submit(task, got, None)
                submitted = True
            else:
                for fd in fds:
                    accept = sources.get(fd)
                    if accept is None:
                        continue
                    try:
                        sock = accept()
                    except OSError:
                        continue
                    pool.submit(task, sock, server.sites.get(fd))
                    submitted = True
                    break
            if not submitted:
                free.release()
