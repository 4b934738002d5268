"""An ASGI worker: one event loop per process, many connections in flight at once.

The path of a request is codec -> adapter -> app -> writer, one module each:

- the **codec** turns bytes into a scope and body chunks: ``aio_uwsgi.UwsgiCodec`` for uwsgi
  sockets, ``aio_http.HttpCodec`` for HTTP/1.1 ones (asyncio Protocols);
- the **adapter**, ``asgi_cycles.HttpCycle`` (or ``WebSocketCycle``), gives the app its
  ``receive()`` and ``send()`` and checks every message the app sends;
- the **writer** is the codec's transport: each body chunk is written at once, and
  ``send()`` waits while the kernel buffer is full (flow control both ways);
- ``lifespan.Lifespan`` runs the app's lifespan scope around the worker's life.

This module is the process around them: the accept loop, the tasks, the request
bookkeeping and the heartbeat. Its duties are the sync worker's: the scoreboard slot
(requests, busy/idle, requests in flight), harakiri (a heartbeat of the loop: a loop blocked
for ``harakiri`` seconds is killed by the master), max-requests and reload-on-rss (recycle
between requests), graceful stop within reload-mercy, and lifespan startup/shutdown around it all.
Above ``asgi-concurrency`` requests in flight the worker stops accepting: connections wait
in the kernel's listen queue, where the backlog probe and the other workers see them.
"""

from __future__ import annotations

import _socket
import asyncio
import gc
import logging
import os
import random
import signal
import socket
import ssl
import sys
import time
import traceback
from collections.abc import Callable
from functools import partial
from typing import Any

from emperor import logs
from emperor.config_view import ConfigView
from emperor.protocol import asgi
from emperor.proxies import AllowList
from emperor.vassal import loader
from emperor.vassal import scoreboard as sb
from emperor.vassal.aio_uwsgi import UwsgiCodec
from emperor.vassal.asgi_cycles import ClientDisconnected, Codec, HttpCycle, WebSocketCycle
from emperor.vassal.lifespan import Lifespan, not_loaded
from emperor.vassal.sockets import Listener

log = logging.getLogger("emperor.worker")


class AcceptedSocket(socket.socket):
    """An accepted connection as the loop's ``connect_accepted_socket`` takes it: a real
    ``socket.socket`` (uvloop keeps it as the transport's file object and counts on its
    ``_io_refs`` when closing), whose ``family`` and ``type`` are plain ints. socket.py turns
    them into enums on every read, and uvloop reads both for every new connection: measured
    at ~2 % of a connection's cost behind nginx's keep-alive pool (bench/asgi_codec_micro.py
    --connect 1)."""

    __slots__ = ()

    @property
    def family(self) -> int:  # type: ignore[override]
        return _FAMILY(self)

    @property
    def type(self) -> int:  # type: ignore[override]
        return _TYPE(self)


_FAMILY = _socket.socket.family.__get__  # the C type's getters: the int the kernel gave
_TYPE = _socket.socket.type.__get__

ACCEPT_BATCH = 16  # connections accepted per wake-up, so that idle sibling workers get their share
# Accept fairness: all workers wait on the same listen socket, and the one the kernel runs first
# would take a whole burst of new connections (wrk's 64, nginx's keep-alive pool), leaving its
# sibling idle for the life of those connections. A worker that already holds FAIR_SLACK (plus
# a quarter) more open connections than the least loaded accepting sibling (scoreboard CONNS)
# steps aside for FAIR_PAUSE s, at most FAIR_MAX_WAIT s in a row, and then not for
# FAIR_BACKOFF s (a sibling with a blocked loop must not starve the queue).
FAIR_MIN = 4  # below this many open connections a worker always accepts (no scoreboard reads)
FAIR_SLACK = 2
FAIR_PAUSE = 0.001
FAIR_MAX_WAIT = 0.02
FAIR_BACKOFF = 1.0  # s without stepping aside after a sibling let FAIR_MAX_WAIT pass
EXIT_APP_LOAD = 22  # channel.Exit.APP_LOAD: the master stops the vassal, the emperor throttles it


class Worker:
    """The ASGI worker process; same constructor as the sync ``emperor.vassal.worker.Worker``."""

    def __init__(self, wid: int, listeners: list[Listener], cfg: ConfigView, board: sb.Scoreboard,
                 app: Any, load_app: Callable[[], Any]) -> None:
        self.wid = wid
        self.index = wid - 1
        self.listeners = listeners
        self.cfg = cfg
        self.board = board
        self.app: Any = app
        self.load_app = load_app
        self.ints = board.ints
        self.slot = board.base(self.index)
        self.tally = sb.tally(self.ints, self.slot)  # each request's counting (count(): busy is in-flight's)
        self.buffer_size = cfg.buffer_size
        self.limit_post = cfg.limit_post
        self.ws_max_size = cfg.websockets_max_size * 1024
        self.ws_ping = (cfg.websockets_ping_freq, cfg.websockets_pong_tolerance)
        self.websockets: set[WebSocketCycle] = set()
        self.timeout = cfg.socket_timeout
        self.proxies = AllowList(cfg.forwarded_allow_ips)
        self.cap = cfg.asgi_concurrency
        self.harakiri = cfg.harakiri  # read per request: a ConfigView lookup each time otherwise
        self.log_requests = not cfg.disable_logging
        delta = cfg.max_requests_delta if cfg.max_requests_delta is not None else cfg.max_requests // 10
        self.max_requests = cfg.max_requests + (random.randint(0, delta) if cfg.max_requests and delta else 0)
        self.rss_limit = cfg.reload_on_rss * 1024 * 1024
        self.in_flight = 0
        self.conns = 0  # open connections (scoreboard CONNS, for the siblings' accept fairness)
        self.families: dict[int, int] = {}  # id(listener) -> its address family, for accepted sockets
        self.accepting = False
        self.stop_reason = ""
        self.stopping: asyncio.Event | None = None
        self.idle: asyncio.Event | None = None
        self.lifespan_state: dict[str, Any] = {}
        # the loop keeps only weak references to tasks: each request's is kept here, under the id of
        # its cycle (alive while the task runs), until the coroutine's own finally pops it
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.siblings: list[int] = []  # scoreboard bases of the other live workers (heartbeat refreshes)
        self.deferred_at = 0.0  # when this worker began stepping aside for a sibling (0: it is not)
        self.fair_wait = False  # stepping aside now: accepting resumes at FAIR_PAUSE, not before
        self.fair_off_until = 0.0  # no stepping aside before this time (a sibling did not take them)
        self.logged: set[str] = set()
        self.pid = 0
        self.log_second, self.log_prefix = 0, ""  # the request lines' time and vassal prefix
        self.loop: asyncio.AbstractEventLoop

    # ---- process ---------------------------------------------------------------------------
    def install_signals(self) -> None:
        """The worker's own handlers, installed by the master in the child while its signals are
        still blocked (as for the sync worker): a stop sent to a new worker is never lost."""
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGINT, signal.SIGQUIT):  # fast stop works even with a blocked loop
            signal.signal(sig, lambda s, f: os._exit(0))
        for sig in (signal.SIGTERM, signal.SIGHUP):  # until the loop takes them over
            signal.signal(sig, lambda s, f: setattr(self, "stop_reason", "graceful stop"))
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        for sig in (signal.SIGUSR2, signal.SIGTTIN, signal.SIGTTOU):  # the master's: never stop a worker
            signal.signal(sig, signal.SIG_IGN)

    def run(self) -> None:
        """Entry point in the forked child; never returns."""
        code = 1
        try:
            self.pid = os.getpid()
            if self.app is None:
                try:
                    self.app = self.load_app()
                except loader.AppLoadError as exc:
                    log.error("worker %d: %s", self.wid, exc)
                    os._exit(EXIT_APP_LOAD)
                gc.collect()
                gc.freeze()
            if loader.kind(self.app) == "wsgi":  # need-app = false: the master's 500 stand-in
                self.app = not_loaded(self.app)
            self.loop = _new_loop(self.cfg.asgi_loop)
            asyncio.set_event_loop(self.loop)
            code = self.loop.run_until_complete(self._main())
        except BaseException:
            traceback.print_exc()
        finally:
            self.ints[self.slot + sb.ACCEPTING] = 0
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    async def _main(self) -> int:
        loop = self.loop
        self.stopping = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        for sig in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, self.begin_stop, "graceful stop")
        lifespan = Lifespan(self.app, self.cfg.lifespan, self.wid)
        if not await lifespan.startup():
            return EXIT_APP_LOAD
        self.lifespan_state = lifespan.state
        heartbeat = loop.create_task(self._heartbeat())
        if self.stop_reason:
            self.stopping.set()
        else:
            for lst in self.listeners:
                lst.sock.setblocking(False)
            self._accept_on()
            self.ints[self.slot + sb.ACCEPTING] = 1
        await self.stopping.wait()
        self.ints[self.slot + sb.ACCEPTING] = 0
        self._accept_off()
        for lst in self.listeners:
            lst.sock.close()  # this process's copies; the master keeps the sockets
        # In-flight requests finish, within reload-mercy: the master enforces it on reload and stop,
        # but nobody would on a recycle (max-requests), and an endless stream would keep this
        # worker, no longer accepting, alive for ever.
        mercy = self.cfg.reload_mercy
        try:
            await asyncio.wait_for(self.idle.wait(), mercy)
        except TimeoutError:
            log.warning("worker %d: %d request(s) still in flight after reload-mercy (%g s): closing them",
                        self.wid, self.in_flight, mercy)
        heartbeat.cancel()
        try:
            await asyncio.wait_for(lifespan.shutdown(), mercy)
        except TimeoutError:
            log.warning("worker %d: ASGI lifespan shutdown did not complete within reload-mercy (%g s)",
                        self.wid, mercy)
        if self.stop_reason not in ("graceful stop", ""):
            log.info("worker %d (pid %d) recycled: %s", self.wid, self.pid, self.stop_reason)
        return 0

    def begin_stop(self, reason: str) -> None:
        if not self.stop_reason or reason == "graceful stop":
            self.stop_reason = self.stop_reason or reason
        if self.stopping is not None:
            self.stopping.set()
            self._accept_off()  # now: the loop may call the listener's reader before _main resumes
        for ws in list(self.websockets):  # they would hold the worker until reload-mercy
            ws.close_with(1001, "server stopping")

    async def _heartbeat(self) -> None:
        """Stamp the slot while requests are in flight: a stale stamp means a blocked loop (harakiri)."""
        period = min(1.0, max(0.05, self.cfg.harakiri / 4)) if self.cfg.harakiri else 1.0
        ints, slot = self.ints, self.slot
        beats = 0
        while True:
            ints[slot + sb.BUSY_SINCE] = time.monotonic_ns() if self.in_flight else 0
            self.siblings = [b for b in (self.board.base(i) for i in range(self.board.slots))
                             if b != slot and ints[b + sb.PID]]
            beats += 1
            # the siblings spawned just after this worker are seen within 0.1 s, not a period
            await asyncio.sleep(period if beats > 10 else min(period, 0.1))

    def _over_share(self) -> bool:
        """True if this worker holds more than FAIR_SLACK plus a quarter more connections than
        the least loaded sibling that accepts: it then leaves the next connection to it (see
        FAIR_SLACK), for at most FAIR_MAX_WAIT s in a row."""
        ints = self.ints
        least = min((ints[b + sb.CONNS] for b in self.siblings if ints[b + sb.ACCEPTING]),
                    default=self.conns)
        if self.conns <= least + FAIR_SLACK + least // 4:  # up to a quarter more is fair enough
            self.deferred_at = 0.0
            return False
        now = time.monotonic()
        if now < self.fair_off_until:
            return False
        if not self.deferred_at:
            self.deferred_at = now
        elif now - self.deferred_at > FAIR_MAX_WAIT:
            # the sibling does not take them (a blocked loop?): this worker accepts everything
            # for FAIR_BACKOFF s, rather than one connection per FAIR_MAX_WAIT
            self.deferred_at = 0.0
            self.fair_off_until = now + FAIR_BACKOFF
            return False
        return True

    # ---- accepting -------------------------------------------------------------------------
    def _accept_on(self) -> None:
        if self.accepting or self.stopping is None or self.stopping.is_set():
            return
        self.accepting = True
        for lst in self.listeners:
            self.loop.add_reader(lst.sock.fileno(), self._on_listener, lst)

    def _accept_off(self) -> None:
        if not self.accepting:
            return
        self.accepting = False
        for lst in self.listeners:
            try:
                self.loop.remove_reader(lst.sock.fileno())
            except (ValueError, OSError):
                pass

    def _on_listener(self, lst: Listener) -> None:
        sock = lst.sock
        for _ in range(ACCEPT_BATCH):
            if self.in_flight >= self.cap:
                self._accept_off()  # the rest waits in the kernel queue
                return
            if self.conns >= FAIR_MIN and self.siblings and self._over_share():
                self._accept_off()  # a less busy sibling takes it (or we do, FAIR_PAUSE later)
                self.fair_wait = True  # and no request that ends meanwhile turns accepting back on
                self.loop.call_later(FAIR_PAUSE, self._fair_resume)
                return
            try:
                # the C accept: socket.accept() would also turn family and type into enums, a
                # cost per request on uwsgi sockets (nginx opens a connection per request)
                fd, _addr = sock._accept()  # type: ignore[attr-defined]
            except (BlockingIOError, InterruptedError):
                return  # another worker took it
            except OSError as exc:
                if exc.errno in (23, 24):  # ENFILE/EMFILE: back off instead of spinning
                    log.error("worker %d: accept: %s", self.wid, exc.strerror)
                    self._accept_off()
                    self.loop.call_later(0.1, self._accept_on)
                    return
                raise
            family = self.families.get(id(lst))
            if family is None:
                family = self.families[id(lst)] = int(sock.family)
            # no setblocking(False): the loop makes the socket non-blocking as it wraps it
            conn = AcceptedSocket(family, socket.SOCK_STREAM, 0, fd)
            self._count_in()
            self.conn_opened()
            factory, tls = self.codec_for(lst)
            self.open_connection(conn, factory, tls)

    def codec_for(self, lst: Listener) -> tuple[Callable[[], asyncio.Protocol], ssl.SSLContext | None]:
        """The codec of a listener's connections (and its TLS context). This worker speaks uwsgi
        only; ``aio_http.Worker`` adds HTTP and HTTPS listeners."""
        return self._uwsgi_codec, None

    def _uwsgi_codec(self) -> asyncio.Protocol:
        return UwsgiCodec(self)

    def open_connection(self, conn: socket.socket, factory: Callable[[], asyncio.Protocol],
                        tls: ssl.SSLContext | None) -> None:
        """Give an accepted socket its transport and codec (``connect_accepted_socket``).

        The coroutine is driven here rather than by a Task: it runs at once up to its wait for
        ``connection_made`` and is resumed once from that future's callback. A Task per
        connection (its registration in asyncio's task set, a loop callback to start it, one
        to resume it and one for its done-callback) was a large part of what a new connection
        cost: behind nginx's keep-alive pool about one request in four or five comes on a new
        upstream connection (docs/benchmarks.md, "Session 4")."""
        if tls is None:
            coro = self.loop.connect_accepted_socket(factory, conn)
        else:
            coro = self.loop.connect_accepted_socket(factory, conn, ssl=tls,
                                                     ssl_handshake_timeout=self.timeout)
        self._drive(coro, conn, None)

    def _drive(self, coro: Any, conn: socket.socket, _done: Any) -> None:
        """One step of ``open_connection``'s coroutine: it waits for futures only (a bare
        ``yield``, as ``asyncio.sleep(0)`` makes, is resumed on the next loop turn)."""
        try:
            waiting = coro.send(None)
        except StopIteration:
            return
        except Exception as exc:  # a socket gone before it was wrapped, a failed TLS handshake
            if not isinstance(exc, (OSError, ssl.SSLError, TimeoutError)):
                log.error("worker %d: setting up a connection: %r", self.wid, exc)
            conn.close()
            self._count_out()
            self.conn_closed()
            return
        if waiting is None:
            self.loop.call_soon(self._drive, coro, conn, None)
        else:
            waiting.add_done_callback(partial(self._drive, coro, conn))

    def _fair_resume(self) -> None:
        self.fair_wait = False
        if self.in_flight < self.cap:
            self._accept_on()

    def conn_opened(self) -> None:
        self.conns += 1
        self.ints[self.slot + sb.CONNS] = self.conns

    def conn_closed(self) -> None:
        """A connection is gone (its codec's connection_lost, or it never got a codec)."""
        self.conns -= 1
        self.ints[self.slot + sb.CONNS] = self.conns

    def _count_in(self) -> None:
        self.in_flight += 1
        self.ints[self.slot + sb.IN_FLIGHT] = self.in_flight
        if self.in_flight == 1:
            self.ints[self.slot + sb.BUSY_SINCE] = time.monotonic_ns()
            assert self.idle is not None
            self.idle.clear()

    def _count_out(self) -> None:
        self.in_flight -= 1
        self.ints[self.slot + sb.IN_FLIGHT] = self.in_flight
        if self.in_flight == 0:
            self.ints[self.slot + sb.BUSY_SINCE] = 0
            assert self.idle is not None
            self.idle.set()
        if not self.accepting and self.in_flight < self.cap and not self.fair_wait:
            self._accept_on()

    # ---- requests --------------------------------------------------------------------------
    def start_app(self, cycle: HttpCycle, codec: Codec) -> None:
        if self.harakiri:
            s = cycle.scope
            self.board.set_text(self.index, f"{s['method']} {s['raw_path'].decode('latin-1')} "
                                            f"({self.in_flight} in flight)")
        self._task(cycle, self._run_app(cycle, codec))

    def _task(self, key: object, coro: Any) -> None:
        """Run a request's (or WebSocket's) coroutine in a Task, strongly referenced in ``tasks``
        under ``id(key)`` until the coroutine itself pops it as it ends (the ``finally`` of
        ``_run_app`` and ``_run_websocket``, which know their cycle). A done-callback would cost a
        loop callback per request, and ``asyncio.current_task()`` is Python code on 3.11 (about 4 %
        of an ASGI hello worker's CPU behind nginx)."""
        self.tasks[id(key)] = self.loop.create_task(coro, name="emperor-asgi")  # a name: none formatted

    def start_websocket(self, ws: WebSocketCycle, codec: Codec) -> None:
        if self.stop_reason:
            ws.close_with(1001, "server stopping")
        self.websockets.add(ws)
        self._task(ws, self._run_websocket(ws, codec))

    async def _run_websocket(self, ws: WebSocketCycle, codec: Codec) -> None:
        path = ws.scope["path"]
        try:
            await self.app(ws.scope, ws.receive, ws.send)
        except ClientDisconnected:
            pass
        except Exception as exc:
            self.ints[self.slot + sb.EXCEPTIONS] += 1
            what = "broke the ASGI protocol" if isinstance(exc, asgi.ResponseError) else "raised"
            log.error("worker %d: WebSocket %s %s:\n%s", self.wid, path, what,
                      traceback.format_exc().rstrip())
            if ws.accepted:
                ws.close_with(1011, "internal error")
            elif not ws.gone:
                ws.status = 500
                ws._write(asgi.error_response(500, "Internal Server Error"))
                codec.finish(ok=True)
        else:
            if ws.accepted:
                ws.close_with(1000, "")
            elif not ws.gone:  # returned without accepting: refused (ASGI: 403)
                await ws.send({"type": "websocket.close"})
        finally:
            self.websockets.discard(ws)
            self.tasks.pop(id(ws), None)

    async def _run_app(self, cycle: HttpCycle, codec: Codec) -> None:
        response = cycle.response
        scope = cycle.scope
        try:
            await self.app(scope, cycle.receive, cycle.send)
        except ClientDisconnected as exc:
            log.debug("worker %d: %s %s: %s", self.wid, scope["method"], scope["path"], exc)
            codec.finish(ok=False)
            return
        except Exception as exc:
            self.ints[self.slot + sb.EXCEPTIONS] += 1
            what = "broke the ASGI protocol" if isinstance(exc, asgi.ResponseError) else "raised"
            log.error("worker %d: %s %s %s:\n%s", self.wid, scope["method"], scope["path"], what,
                      traceback.format_exc().rstrip())
            self._fail(cycle, codec)
            return
        finally:
            self.tasks.pop(id(cycle), None)
        if not response.complete and not cycle.gone:
            self.ints[self.slot + sb.EXCEPTIONS] += 1
            log.error("worker %d: %s %s: the app returned without %s", self.wid, scope["method"],
                      scope["path"], "completing the response (more_body)" if response.started
                      else "sending http.response.start")
            self._fail(cycle, codec)

    def _fail(self, cycle: HttpCycle, codec: Codec) -> None:
        """500 when nothing was written yet; otherwise reset the connection (a truncated reply)."""
        if cycle.gone:
            return
        if cycle.response.head_sent:
            codec.finish(ok=False)
            return
        cycle.response.status = 500
        cycle.response.complete = True
        data = cycle.error_response(500, "Internal Server Error")
        cycle.sent += len(data)
        codec.write(data)
        codec.finish(ok=True)

    def connection_done(self, codec: Codec) -> None:
        """Per-connection bookkeeping (one request per uwsgi connection)."""
        self._count_out()
        self.conn_closed()
        self.request_done(codec)

    def request_done(self, codec: Codec) -> None:
        """Per-request bookkeeping, as the sync worker does: counters, log line, recycling."""
        cycle = codec.cycle
        done = self.tally.count(codec.start, cycle.sent if cycle is not None else 0)
        if self.log_requests and codec.env is not None:
            self._log_request(codec, (time.monotonic_ns() - codec.start) // 1000)
        if self.max_requests and done >= self.max_requests:
            self.begin_stop(f"max-requests ({done} requests)")
        elif self.rss_limit and (rss := _rss()) > self.rss_limit:
            self.begin_stop(f"reload-on-rss ({rss >> 20} MB > {self.rss_limit >> 20} MB)")

    def _log_request(self, codec: Codec, took_us: int) -> None:
        env = codec.env or {}
        cycle = codec.cycle
        if isinstance(cycle, WebSocketCycle):
            status = cycle.status
        else:
            status = cycle.response.status if cycle is not None else codec.status
        now = int(time.time())
        if now != self.log_second:  # one strftime per second, as the sync worker
            self.log_second, self.log_prefix = now, f"{logs.stamp(now)} [{logs.tag()}] "
        line = (f"{self.log_prefix}{env.get('REMOTE_ADDR', '-')} \"{env.get('REQUEST_METHOD', '-')} "
                f"{env.get('REQUEST_URI') or env.get('PATH_INFO', '')} {env.get('SERVER_PROTOCOL', '-')}\" "
                f"{status or '-'} {cycle.sent if cycle else 0} {took_us / 1000:.2f}ms pid={self.pid} "
                f"worker={self.wid}\n")
        try:
            os.write(2, line.encode("latin-1", "replace"))
        except OSError:
            pass

    def believed(self, transport: asyncio.BaseTransport | None, claim: str) -> bool:
        """An https claim (``claim``: the var that made it) is believed from a Unix-socket peer
        (the socket's mode decides who connects) and from a TCP peer in forwarded-allow-ips;
        any other claim is ignored and logged once per peer address, as the sync worker does."""
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is None:
            return False
        if sock.family == socket.AF_UNIX:
            return True
        try:
            peer = sock.getpeername()
        except OSError:
            return False
        if self.proxies.allows(peer):
            return True
        key = f"{peer[0]}|scheme"
        if key not in self.logged and len(self.logged) < 1024:
            self.logged.add(key)
            log.warning("worker %d: ignored %s from %s, which is not in forwarded-allow-ips: "
                        "the ASGI scope's scheme is http", self.wid, claim, peer[0])
        return False

    def note_peer(self, codec: Codec, text: str, kind: str = "slow", level: int = logging.INFO) -> None:
        """Trouble caused by a peer: logged once per peer and kind (bounded), never fatal."""
        peer = (codec.env or {}).get("REMOTE_ADDR") or _peer(codec.transport)
        key = f"{peer}|{kind}"
        if key in self.logged or len(self.logged) >= 1024:
            log.debug("worker %d: %s: %s", self.wid, peer, text)
            return
        self.logged.add(key)
        log.log(level, "worker %d: %s from %s", self.wid, text, peer)


def _new_loop(choice: str) -> asyncio.AbstractEventLoop:
    """uvloop when allowed and installed (``asgi-loop``), else the stdlib loop."""
    if choice in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise
        else:
            return uvloop.new_event_loop()  # type: ignore[no-any-return]
    return asyncio.new_event_loop()


def _peer(transport: asyncio.BaseTransport | None) -> str:
    name = transport.get_extra_info("peername") if transport is not None else None
    return f"{name[0]}:{name[1]}" if isinstance(name, tuple) else "unix peer"


_proc: Any = None


def _rss() -> int:
    global _proc
    if _proc is None:
        import psutil

        _proc = psutil.Process()
    return int(_proc.memory_info().rss)
