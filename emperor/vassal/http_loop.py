"""The accept loops of a worker that has an HTTP listener (docs/http.md): ``HTTPWorker``.

The master forks an ``HTTPWorker`` instead of a plain ``Worker`` when its vassal has an HTTP
socket, so only those vassals load httptools, and the worker module never imports this one.

A sync worker polls its listeners, the parking socketpair and the idle keep-alive connections
it holds, and serves whatever is ready at once. It parks lazily: while it serves, the other idle
connections it holds stay with it unless the work outlives ``PARK_AFTER``; then a one-shot
``SIGALRM`` (``setitimer``) hands them all to the master, which gives a request arriving on one
of them to a free worker. The timer is left running between pieces of work (it lapses when it
fires with none running, and waits for the rest of newer work's ``PARK_AFTER``), so under load
it is set about once per ``PARK_AFTER``, not twice per loop turn; a fast request costs no
``sendmsg`` per idle connection (nor the master's round trip for each), and a request on an
idle connection still never waits more than ``PARK_AFTER`` behind a busy worker while another
is free. The timer parks only when some other worker waits for work (``parking.Waiting``):
while every worker is busy, a round trip through the master would only queue the requests
behind the hand-overs. Threaded workers hold idle connections in their main thread, which
gives each ready one to a free thread, and park them under the same rule when every thread
stays busy ``PARK_AFTER``.
"""

from __future__ import annotations

import logging
import select
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

from emperor.vassal.exchange import Conn
from emperor.vassal.http_conn import HTTPServer
from emperor.vassal.http_wire import Connection, Site
from emperor.vassal.parking import Waiting
from emperor.vassal.worker import Worker

log = logging.getLogger("emperor.http")

IDLE_CAP = 64  # idle connections one worker holds; more are parked with the master
# Work longer than this parks the worker's other idle connections (the longest a request on one
# of them waits behind this worker before the master can give it to a free one).
PARK_AFTER = 0.01
# One loop turn serves ready held connections for at most about this long before it looks at
# the listeners and the parking socketpair again.
TURN = 0.01
# New connections one loop turn accepts at most (the kernel's queue is shared by the workers, who
# all see it readable; each takes what it can while its turn lasts).
ACCEPTS = 16


class HTTPWorker(Worker):
    """A sync worker of a vassal with at least one HTTP socket (its uwsgi sockets, if any, are
    served by ``Worker.handle`` as in any worker); only its accept loop differs."""

    waiting: Waiting | None = None  # which workers wait for work (set by the master, parking.py)

    def serve(self) -> None:
        if self.cfg.threads > 1:
            serve_threaded(self, self.park, self.waiting)
        else:
            serve_forever(self, self.park, self.waiting)


def accepter(listener: socket.socket) -> Callable[[], tuple[Conn, Any]]:
    """A fast accept() for ``listener`` (as ``exchange.accepter``) that also returns the peer's
    address accept() reported: an HTTP connection needs it, and getpeername() would ask again."""
    raw_accept = listener._accept  # type: ignore[attr-defined]
    family, kind, proto = int(listener.family), int(listener.type), listener.proto

    def accept() -> tuple[Conn, Any]:
        fd, addr = raw_accept()
        return Conn(family, kind, proto, fd), addr

    return accept


def serve_forever(worker: Worker, park: socket.socket | None, waiting: Waiting | None = None) -> None:
    """The accept loop of a worker that has at least one HTTP listener (module docstring)."""
    server = HTTPServer(worker, worker.listeners, park)
    server.peek = False  # our poll() sees a next request; no recv() to look for one after each response
    me = worker.index
    # our byte in the shared "waits for work" map, written directly (twice per poll() turn)
    wmem = waiting.mem if waiting is not None and 0 <= me < len(waiting.mem) else None
    # epoll, not poll(): a held connection stays registered while it is served and held again
    # (no register/unregister per request), and a turn costs the kernel the ready fds only, not
    # all of the ~32 held ones (measured: 0.9 against 2.9 us per turn with 33 connections). A
    # connection leaves the set before it is closed or parked (``server.unwatch``): a parked
    # one's file lives on in the master, and epoll would go on reporting it under its old number.
    poller = select.epoll()
    watched: set[int] = set()

    def unwatch(fd: int) -> None:
        if fd in watched:
            watched.discard(fd)
            poller.unregister(fd)

    server.unwatch = unwatch
    sources: dict[int, Callable[[], Any]] = {}
    for lst in worker.listeners:
        fd = lst.sock.fileno()
        poller.register(fd, select.EPOLLIN)
        sources[fd] = accepter(lst.sock)
    park_fd = -1
    if park is not None:
        park_fd = park.fileno()
        poller.register(park_fd, select.EPOLLIN)
    wake_r, wake_w = socket.socketpair()  # SIGTERM/SIGHUP end the wait (Worker._graceful)
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    worker.wakeup = wake_w
    poller.register(wake_r.fileno(), select.EPOLLIN)
    idle: dict[int, tuple[Connection, float]] = {}
    armed = False  # the park timer runs (it may outlive the work that set it: disarm() leaves it)
    busy_since = 0.0  # when the work now running began (monotonic; 0: not serving)
    carry: list[int] = []  # ready held connections a turn cut short did not reach

    def release() -> None:
        """Hand every idle connection to the master (also the SIGALRM handler: work took long)."""
        nonlocal armed
        armed = False
        for fd in list(idle):
            held = idle.pop(fd, None)  # None: the SIGALRM handler interrupted us and parked it
            if held is not None:
                server.park(held[0])

    def on_alarm(signum: int, frame: Any) -> None:
        nonlocal armed
        if not armed:  # a late signal after release() finds nothing to do
            return
        if not busy_since:  # the work that set it ended: nothing to park for (until the next arm())
            armed = False
            return
        left = busy_since + PARK_AFTER - time.monotonic()
        if left > 0.0001:  # set by earlier work: the work now running gets its own PARK_AFTER
            signal.setitimer(signal.ITIMER_REAL, left)
            return
        if waiting is None or not worker.alive or waiting.anyone():
            release()  # a free worker can serve them (or we are stopping): hand them over
        else:  # every other worker is busy too: parking would gain nothing; look again later
            signal.setitimer(signal.ITIMER_REAL, PARK_AFTER)

    def arm() -> None:
        """Becoming busy: park the idle connections only if this outlives PARK_AFTER.

        The timer is set only when none runs: one set by earlier work is left to fire, and its
        handler then waits for what is left of this work's PARK_AFTER. Under load, work follows
        work and the timer fires about once per PARK_AFTER, instead of two setitimer() calls
        per loop turn (measured: ~0.6 per request behind nginx)."""
        nonlocal armed, busy_since
        if not idle:
            return
        if not lazy:
            release()  # the application owns SIGALRM: park at once, as before
            return
        busy_since = time.monotonic()
        if not armed:
            armed = True
            signal.setitimer(signal.ITIMER_REAL, PARK_AFTER)

    def disarm() -> None:
        """The work ended: a timer still running lapses when it fires (no setitimer() here)."""
        nonlocal busy_since
        busy_since = 0.0

    def stop_timer() -> None:
        nonlocal armed
        if armed:
            armed = False  # first: a signal already pending is now a no-op
            signal.setitimer(signal.ITIMER_REAL, 0)

    def hold(conn: Connection, now: float) -> None:
        """Keep an idle connection until ``now`` + http-keepalive (``now``: the end of its last
        response, or of the turn that served it, so deadlines never go back in ``idle``'s order)."""
        if len(idle) >= IDLE_CAP:  # the longest idle one goes to the master
            oldest = next(iter(idle), -1)
            held = idle.pop(oldest, None)  # None: the SIGALRM handler parked it meanwhile
            if held is not None:
                server.park(held[0])
        fd = conn.sock.fileno()
        if fd not in watched:  # first: the SIGALRM handler parks what ``idle`` has
            poller.register(fd, select.EPOLLIN)
            watched.add(fd)
        idle[fd] = (conn, now + keepalive)

    keepalive = server.keepalive
    serve_ready = server.serve_ready

    # An application that installed its own SIGALRM handler keeps it (and we park eagerly).
    lazy = signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, None)
    if lazy:
        signal.signal(signal.SIGALRM, on_alarm)
        # SA_RESTART: a blocking system call in a C extension is resumed, not failed with EINTR
        signal.siginterrupt(signal.SIGALRM, False)
    while worker.alive and not worker.recycle_reason:
        now = time.monotonic()
        wait = -1.0
        while idle:  # in deadline order (hold() appends now + keepalive): only the head can be due
            fd = next(iter(idle))
            conn, until = idle[fd]
            if until > now:
                wait = until - now + 0.001
                break
            del idle[fd]
            server.close(conn)  # idle past http-keepalive: a clean close (FIN)
        if wmem is not None:
            wmem[me] = 1
        try:
            ready = poller.poll(wait)
        except OSError:
            if not worker.alive:
                break
            raise
        finally:
            if wmem is not None:
                wmem[me] = 0
        if not ready:
            continue
        ready_fds = {fd for fd, _ev in ready}
        own = [fd for fd in ready_fds if fd in idle]
        if carry:  # a turn cut short left these (still ready): they go first this time
            first = set(carry)
            own = [fd for fd in carry if fd in idle] + [fd for fd in own if fd not in first]
            carry = []
        if own:  # requests on connections we hold: the fast path, no hand-over
            # Every ready one in turn (a busy connection never starves a quieter one); the
            # others ready wait at most PARK_AFTER before the master can give them elsewhere.
            # A served one is held again at once, so the timer parks it too if a later one is slow.
            # The turn ends after TURN of work, so a new connection (up to ACCEPTS a turn) or a
            # parked one never waits behind a long queue of long requests (1 MiB uploads).
            armed_here = False
            now = time.monotonic()
            turn_ends = now + TURN
            try:
                for i, fd in enumerate(own):
                    if armed_here and now > turn_ends:
                        carry = own[i:]  # still ready: the next poll() reports them, first in line
                        break
                    held = idle.pop(fd, None)
                    if held is None:
                        continue  # parked by the timer meanwhile: the master has it
                    if not armed_here:
                        arm()
                        armed_here = True
                    conn = held[0]
                    keep = serve_ready(conn)
                    now = time.monotonic()
                    if keep:  # hold() for a connection still registered, inlined
                        if len(idle) < IDLE_CAP and fd in watched:
                            idle[fd] = (conn, now + keepalive)
                        else:
                            hold(conn, now)
            finally:
                disarm()
            if not worker.alive or worker.recycle_reason:
                continue
        # then, in the same turn, a parked connection and a new one: under load some held
        # connection is always ready, and serving only those would starve the master's queue.
        # One parked connection per turn, served at once: the socketpair is the workers' FIFO
        # (taking them all and holding them let the timer bounce the unserved ones from
        # worker to worker under long requests: seconds of tail with 1 MiB uploads).
        if park_fd in ready_fds:
            got = server.take_parked()
            if got is not None:
                arm()
                try:
                    keep = server.serve(got, first=False)
                finally:
                    disarm()
                if keep:
                    hold(got, time.monotonic())
                if not worker.alive or worker.recycle_reason:
                    continue
        # New connections: the kernel's queue is FIFO and its oldest connection has waited at
        # least a whole turn, so take up to ACCEPTS of them (within TURN) rather than one: one a
        # turn let nginx's new upstream connections pile up in the backlog (20 deep under Flask
        # load) and made them the slowest tenth of the requests.
        accepted = 0
        accept_ends = time.monotonic() + TURN
        for fd in ready_fds:
            accept = sources.get(fd)
            if accept is None:
                continue
            site = server.sites.get(fd)
            while accepted < ACCEPTS:
                try:
                    sock, addr = accept()
                except BlockingIOError:
                    break  # none left, or another worker took it
                except OSError as exc:
                    if not worker.alive:
                        break
                    if exc.errno in (23, 24):
                        log.error("worker %d: accept: %s", worker.wid, exc.strerror)
                        time.sleep(0.1)
                    break
                accepted += 1
                arm()
                try:
                    if site is None:
                        worker.handle(sock)  # a uwsgi listener of the same vassal
                        fresh = None
                    else:
                        fresh = server.accept(sock, site, addr)
                        if fresh is not None and not server.serve(fresh, first=True):
                            fresh = None
                finally:
                    disarm()
                if fresh is not None:
                    hold(fresh, time.monotonic())
                if not worker.alive or worker.recycle_reason or time.monotonic() > accept_ends:
                    accepted = ACCEPTS  # the turn is over: poll() again (held connections wait too)
            if accepted >= ACCEPTS or not worker.alive:
                break
    disarm()
    stop_timer()
    if wmem is not None:
        wmem[me] = 0
    release()  # stopping or recycling: the master keeps them for the next worker
    poller.close()
    worker.wakeup = None
    wake_w.close()
    wake_r.close()


def serve_threaded(worker: Worker, park: socket.socket | None, waiting: Waiting | None = None) -> None:
    """Threads: the main thread polls the listeners, the parking socketpair and the idle
    connections it holds, and gives each ready one to a free thread; the thread gives the
    connection back after its response (no hand-over to the master per request). When every
    thread stays busy PARK_AFTER while idle connections are held, they go to the master if
    another worker waits for work, as the sync loop's timer does."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor
    from threading import BoundedSemaphore

    server = HTTPServer(worker, worker.listeners, park)
    server.peek = False  # our poll() sees a next request (TLS still looks: HTTPServer.serve)
    me = worker.index
    poller = select.poll()
    sources: dict[int, Callable[[], Any]] = {}
    for lst in worker.listeners:
        poller.register(lst.sock.fileno(), select.POLLIN)
        sources[lst.sock.fileno()] = accepter(lst.sock)
    park_fd = park.fileno() if park is not None else -1
    if park is not None:
        poller.register(park_fd, select.POLLIN)
    wake_r, wake_w = socket.socketpair()  # a thread giving a connection back wakes our poll()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    wake_fd = wake_r.fileno()
    poller.register(wake_fd, select.POLLIN)
    free = BoundedSemaphore(worker.cfg.threads)
    back: deque[Connection] = deque()  # kept after a response, for the main thread to hold
    idle: dict[int, tuple[Connection, float]] = {}  # deadline order, as in serve_forever

    def task(item: Any, site: Site | None, addr: object = None) -> None:
        keep: Connection | None = None
        try:
            if isinstance(item, Connection):
                if server.serve(item, first=False):
                    keep = item
            elif site is None:
                worker.handle(item)
            else:
                conn = server.accept(item, site, addr)
                if conn is not None and server.serve(conn, first=True):
                    keep = conn
        finally:
            if keep is not None:
                back.append(keep)
                try:
                    wake_w.send(b"\0")
                except OSError:
                    pass  # full: a wake-up is pending anyway
            free.release()

    def hold(conn: Connection) -> None:
        if len(idle) >= IDLE_CAP:  # the longest idle one goes to the master
            oldest = next(iter(idle))
            poller.unregister(oldest)
            server.park(idle.pop(oldest)[0])
        fd = conn.sock.fileno()
        poller.register(fd, select.POLLIN)
        idle[fd] = (conn, time.monotonic() + server.keepalive)

    def release() -> None:
        for fd in list(idle):
            poller.unregister(fd)
            server.park(idle.pop(fd)[0])

    with ThreadPoolExecutor(worker.cfg.threads, thread_name_prefix=f"worker{worker.wid}") as pool:
        while worker.alive and not worker.recycle_reason:
            if not free.acquire(timeout=PARK_AFTER if idle else 1.0):
                # every thread busy: the held idle connections go where a free worker can
                # take them (and if none is free, we look again after PARK_AFTER)
                if idle and (waiting is None or not worker.alive or waiting.anyone()):
                    release()
                continue
            while back:
                hold(back.popleft())
            now = time.monotonic()
            wait = 1000
            while idle:
                fd = next(iter(idle))
                conn, until = idle[fd]
                if until > now:
                    wait = min(wait, int((until - now) * 1000) + 1)
                    break
                del idle[fd]
                poller.unregister(fd)
                server.close(conn)
            if waiting is not None:
                waiting.set(me, True)
            try:
                ready = poller.poll(wait)
            except OSError:
                ready = []
            finally:
                if waiting is not None:
                    waiting.set(me, False)
            slot = True  # the thread acquired above, not yet given work
            fds = {fd for fd, _ in ready}
            if wake_fd in fds:
                try:
                    while wake_r.recv(4096):
                        pass
                except OSError:
                    pass
            # First a parked connection and a new one (one each per turn), then the ready
            # held ones, longest idle first: under load some held connection is always ready,
            # and serving those first would leave new and parked ones waiting for seconds.
            if park_fd in fds and (got := server.take_parked()) is not None:
                pool.submit(task, got, None)
                slot = False
            for fd in fds:
                accept = sources.get(fd)
                if accept is None:
                    continue
                if not slot:
                    if not free.acquire(blocking=False):
                        break
                    slot = True
                try:
                    sock, addr = accept()
                except OSError:
                    continue  # another worker took it: the slot is still ours
                pool.submit(task, sock, server.sites.get(fd), addr)
                slot = False
                break
            for fd in [fd for fd in idle if fd in fds]:  # longest idle first
                if not slot:
                    if not free.acquire(blocking=False):
                        break  # no thread free: it stays held (and ready: the next poll() says so)
                    slot = True
                conn = idle.pop(fd)[0]
                poller.unregister(fd)
                pool.submit(task, conn, None)
                slot = False
            if slot:
                free.release()
    while back:  # the threads are done (the pool waited for them)
        server.park(back.popleft())
    release()  # stopping or recycling: the master keeps them for the next worker
    wake_r.close()
    wake_w.close()
