"""The vassal master: binds the sockets, imports the app, forks and supervises the workers.

One loop, one poll point: signal handlers do nothing but wake it (``set_wakeup_fd`` delivers
the signal numbers), and the emperor channel is read in the same select(). Signals:

==========  =============================================================================
SIGHUP      graceful reload: re-read the config (an invalid one is refused and the old
            config keeps running), tell workers to finish, re-exec in place (same pid)
            with the listening sockets inherited; new workers import the app afresh.
SIGTERM     graceful stop: workers finish their request (bounded by reload-mercy), exit 0.
SIGINT      fast stop (also SIGQUIT): workers exit at once.
SIGUSR1     log one status line per worker, then reopen the log (logrotate).
SIGTTIN     one worker more (as gunicorn; at most the scoreboard's size).
SIGTTOU     one worker less (at least one).
==========  =============================================================================

The handlers are installed before the app is imported, so a stop that arrives during a slow
import is honoured before any worker is forked. Workers are forked with these signals
blocked and unblock them only once their own handlers are in place (``_spawn``): a signal
sent to a new worker is never lost to the master's handlers, nor reported to the master.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from emperor import addresses, channel, config, daemon, ini, inifd, logformat, logs, privileges, venv
from emperor.channel import Exit, Msg
from emperor.daemon import set_parent_death_signal
from emperor.options import Scope
from emperor.pidfile import PidFile, PidFileError
from emperor.statsserver import StatsServer
from emperor.vassal import backlog, cheaper, daemons, loader, parking, scoreboard, sockets, static, zerg
from emperor.vassal.scoreboard import Scoreboard
from emperor.vassal.stats import VassalStats, proc_memory
from emperor.vassal.touch import ChainReload, TouchWatch
from emperor.vassal.worker import Worker

if TYPE_CHECKING:  # the stats server is imported only when `stats` is set (docs/emperor.md#cold-start)
    from emperor.statsserver import StatsServer
    from emperor.vassal.stats import VassalStats

log = logging.getLogger("emperor.master")

ENV_RELOADS = "EMPEROR_RELOADS"
ENV_OLD_WORKERS = "EMPEROR_OLD_WORKERS"
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
FAST_STOP_GRACE = 3.0
# Every signal the master handles: blocked across fork() until the worker has its own handlers.
MASTER_SIGNALS = frozenset({signal.SIGCHLD, signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT,
                            signal.SIGUSR1, signal.SIGUSR2, signal.SIGTTIN, signal.SIGTTOU})
RUNNING, RELOADING, STOPPING = "running", "reloading", "stopping"


def _proc_text(pid: int, name: str) -> str:
    """One line of /proc/PID/NAME (harakiri-verbose), or why it could not be read."""
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read(256).decode("ascii", "replace").strip() or "-"
    except OSError as exc:
        return f"unreadable ({exc.strerror})"


def _title(text: str) -> None:
    """The process title (setproctitle, called after the app is imported, so a venv's own copy is
    used); without it, as in a ``home`` venv that lacks it, at least the kernel's 15-byte name."""
    try:
        import setproctitle

        setproctitle.setproctitle(text)
    except ImportError:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_NAME, text.removeprefix("emperor: ").encode()[:15], 0, 0, 0)
        except (OSError, AttributeError):
            pass


def render_args(pairs: Sequence[tuple[str, str]]) -> list[str]:
    """Turn (key, value) pairs back into a command line for the re-exec."""
    out: list[str] = []
    for key, value in pairs:
        out += [f"--{key}", value]
    return out


class Master:
    def __init__(self, cfg: config.Config, pairs: list[tuple[str, str]], scope: Scope,
                 chan: socket.socket | None, name: str, ident: privileges.Identity | None = None) -> None:
        self.cfg = cfg
        self.ident = ident or privileges.Identity()
        self.pairs = pairs
        self.scope = scope
        self.chan = chan
        self.name = name
        self.pid = os.getpid()
        self.reloads = int(os.environ.pop(ENV_RELOADS, "0") or 0)
        self.workers: dict[int, int] = {}  # pid -> worker id
        self.old_workers: dict[int, float] = {}  # pids from before a reload -> kill deadline
        self.respawn_at: dict[int, float] = {}  # worker id -> when to respawn
        self.quick_deaths: dict[int, int] = {}
        self.spawned_at: dict[int, float] = {}
        self.harakiri_done: set[int] = set()
        self.state = RUNNING
        self.deadline = 0.0
        self.exit_code = 0
        self.ready_sent = False
        self.loyal_sent = False
        self.target = cfg.processes  # the worker count now: the ini's until a scale (runtime only)
        self.listeners: list[sockets.Listener] = []
        self.pidfile: PidFile | None = None
        self.app: loader.WSGIApp | None = None
        self.board: Scoreboard
        self.stats_server: StatsServer | None = None  # stats = ADDR (emperor/vassal/stats.py)
        self.stats: VassalStats | None = None
        self.sel = selectors.DefaultSelector()
        self.wake_r, self.wake_w = socket.socketpair()
        self.zerg_server: zerg.ZergServer | None = None  # broodlord: docs/broodlord.md
        self.sos: backlog.SosWatch | None = None
        self.idle: zerg.IdleWatch | None = None
        self.next_heartbeat = 0.0  # heartbeat = N: when the next HEARTBEAT is due
        self.logreopen_mtime: int | None = None  # touch-logreopen: the mtime last seen
        self.next_logreopen_check = 0.0
        self.next_logsize_check = 0.0  # log-maxsize
        self.touch: TouchWatch | None = None  # touch-reload, set up after chdir (paths are relative to it)
        self.chain: ChainReload | None = None  # touch-chain-reload
        self.lifetime_done: set[int] = set()  # workers sent SIGTERM for max-worker-lifetime
        self.parking: parking.ParkingLot | None = None
        self.daemons: daemons.Supervisor | None = None  # attach-daemon*, cron (emperor/vassal/daemons.py)
        self.cheap_waiting = False  # cheap: no worker until the first connection
        # cheaper (emperor/vassal/cheaper.py, docs/autoscaling.md): the policy, the worker ids it
        # switched off, the pids leaving because of it, and its book of spawns and cheaps
        self.cheaper: cheaper.Policy | None = None
        self.cheaped: set[int] = set()
        self.retiring: set[int] = set()
        self.cheaper_log = cheaper.Ledger()
        self.cheaper_next = 0.0
        self.busy_us: dict[int, int] = {}

    # ---- boot ----------------------------------------------------------------------------
    def boot(self) -> int | None:
        """Everything before the workers exist; returns an exit status on failure."""
        cfg = self.cfg
        for w in cfg.warnings:
            log.warning("%s", w)
        if cfg.pidfile:
            try:
                self.pidfile = PidFile(cfg.pidfile)
                self.pidfile.acquire()
                privileges.hand_over(self.pidfile.path, self.ident)  # a reload rewrites it as the user
            except (OSError, PidFileError, privileges.IdentityError) as exc:
                self.pidfile = None
                log.error("pidfile %s: %s", cfg.pidfile, exc)
                return Exit.CONFIG
        try:
            loader.prepare_process(cfg)
        except loader.AppLoadError as exc:
            log.error("%s", exc)
            return Exit.APP_LOAD
        if cfg.touch_reload:
            self.touch = TouchWatch(cfg.touch_reload)
        if cfg.touch_chain_reload:
            self.chain = ChainReload(cfg.touch_chain_reload)
        on_demand = bool(os.environ.get(sockets.ENV_ON_DEMAND))
        if not (cfg.socket or cfg.zerg or cfg.http_socket or cfg.http or cfg.https_socket or on_demand):
            log.error("no socket configured: set socket = /path/app.sock or 127.0.0.1:PORT, or "
                      "http-socket = 127.0.0.1:PORT (%s)",
                      ", ".join(cfg.files) or "command line")
            return Exit.CONFIG
        tls_addrs: list[str] = []
        if cfg.https_socket:  # load every certificate once, before binding anything
            from emperor.vassal import tls

            try:
                tls_addrs = list(tls.sites(cfg))
            except tls.TLSError as exc:
                log.error("%s", exc)
                return Exit.CONFIG
        try:
            inherited = sockets.adopt(os.environ.pop(sockets.ENV_FDS, None))
            kept = {key: inherited.pop(key) for key in self._own_keys() if key in inherited}
            if cfg.zerg:  # a zerg serves its parent's sockets (kept across its own reloads), binds none
                own = [s for k, s in inherited.items() if not k.startswith(("stats:", "zerg-server:"))]
                self.listeners = own or zerg.attach(cfg.zerg)
                for lst in self.listeners:  # the zerg protocol carries no protocol: ours decides
                    lst.proto = cfg.protocol
            else:
                # on-demand (docs/emperor.md): the emperor's socket, first; a `socket` naming the same
                # address is that socket (uWSGI would bind it over the emperor's)
                od = sockets.take_on_demand(inherited)
                if od is not None:
                    sockets.configure(od, cfg.listen, cfg.socket_timeout, not cfg.no_defer_accept)
                    od.proto = cfg.protocol
                wanted = {a: p for a, p in sockets.configured(cfg, tls_addrs).items()
                          if od is None or a != od.name}
                self.listeners = ([od] if od else []) + sockets.open_all(
                    wanted, cfg.listen, cfg.chmod_socket, cfg.socket_timeout, not cfg.no_defer_accept,
                    inherited, self.ident.chown)
        except (addresses.AddressError, zerg.ZergError, OSError) as exc:
            log.error("%s", exc)
            return Exit.SOCKET
        if (failed := self._broodlord_boot(kept.get(f"zerg-server:{cfg.zerg_server}"))) is not None:
            return failed
        if cfg.stats:
            from emperor.vassal.stats import StatsError, open_server

            try:
                if (served := open_server(self, kept.get(f"stats:{cfg.stats}"))) is not None:
                    self.stats_server, self.stats = served
            except StatsError as exc:
                log.error("%s", exc)
                return Exit.SOCKET
        try:  # everything that needs root is done: drop it (docs/hosting.md)
            if self.stats_server is not None and self.stats_server.path:
                privileges.hand_over(self.stats_server.path, self.ident)  # the stats socket: the user's
            privileges.drop(privileges.for_zerg(self.ident, cfg.zerg))
            if self.chan is not None:
                set_parent_death_signal()  # a credential change clears it
            privileges.chdir_as_user(cfg.chdir)
        except privileges.IdentityError as exc:
            log.error("%s", exc)
            return Exit.CONFIG
        speaks_http = any(lst.proto in ("http", "https") for lst in self.listeners)
        for lst in self.listeners:
            # one uwsgi listener: blocking accept(); else poll() + non-blocking accept in each worker
            lst.sock.setblocking(len(self.listeners) == 1 and not speaks_http)
        handed = os.environ.pop(parking.ENV, None)
        if speaks_http:  # idle keep-alive connections no worker holds (docs/http.md)
            self.parking = parking.ParkingLot(cfg.http_keepalive, self.sel, handed)
        else:
            parking.discard(handed)
        self.board = Scoreboard(scoreboard.slots_for(cfg.processes))  # room for `emperor ctl scale`
        try:
            static.wrap(_failing_app("static check"), cfg)  # directories checked once, before any fork
        except static.StaticError as exc:
            log.error("%s", exc)
            return Exit.CONFIG
        self._cheaper_boot()
        if not cfg.lazy_apps:
            try:
                self.app = static.wrap(loader.load(cfg), cfg)
            except loader.AppLoadError as exc:
                log.error("%s", exc)
                if cfg.need_app:
                    return Exit.APP_LOAD
                self.app = _failing_app(str(exc))
        _freeze_heap()
        self._adopt_old_workers()
        self._start_daemons()
        return None

    def _start_daemons(self) -> None:
        """attach-daemon*, cron: started once the app is loaded (as the vassal's user, in chdir)."""
        cfg = self.cfg
        specs = [(kind.replace("_", "-"), spec) for kind in daemons.KINDS for spec in getattr(cfg, kind)]
        if not specs and not cfg.cron:
            return
        self.daemons = daemons.Supervisor(specs, cfg.cron, self.name, self._control_died, MASTER_SIGNALS)
        self.daemons.start()

    def _control_died(self, what: str) -> None:
        self.exit_code = Exit.CRASH
        self.stop(graceful=True)

    def _proc_title(self, ours: str, given: str | None) -> str:
        """procname-prefix + (procname / procname-master, else emperor's title) + procname-append."""
        return f"{self.cfg.procname_prefix}{given or ours}{self.cfg.procname_append}"

    def _own_keys(self) -> list[str]:
        """Names under which the stats and zerg-server sockets cross a reload with the listeners."""
        return [f"stats:{self.cfg.stats}", f"zerg-server:{self.cfg.zerg_server}"]

    def _own_listeners(self) -> list[sockets.Listener]:
        out = []
        if self.stats_server is not None:
            srv = self.stats_server
            out.append(sockets.Listener(f"stats:{self.cfg.stats}", srv.sock, "unix" if srv.path else "tcp",
                                        srv.path, srv.ident))
        if self.zerg_server is not None:
            lst = self.zerg_server.listener
            out.append(sockets.Listener(f"zerg-server:{self.cfg.zerg_server}", lst.sock, lst.kind, lst.path,
                                        lst.ident))
        return out

    def _adopt_old_workers(self) -> None:
        raw = os.environ.pop(ENV_OLD_WORKERS, "")
        if raw:
            import json  # only after a reload

            try:
                data = json.loads(raw)
                self.old_workers = {int(p): float(data["deadline"]) for p in data["pids"]}
            except (ValueError, KeyError, TypeError):
                log.error("ignoring malformed %s", ENV_OLD_WORKERS)

    # ---- the loop ------------------------------------------------------------------------
    def run(self) -> int:
        # Handlers first: a stop sent while the app imports (seconds, for a big app) is queued,
        # not fatal (SIGTERM's default action) and not lost (a channel read only afterwards).
        self._install_signals()
        if self.chan is not None:
            self.sel.register(self.chan, selectors.EVENT_READ, self._on_channel)
        self.sel.register(self.wake_r, selectors.EVENT_READ, self._on_signals)
        failure = self.boot()
        if failure is not None:
            self._finish(vacuum=True, force=True)
            return failure
        cfg = self.cfg
        _title(self._proc_title(f"emperor: master {self.name}", cfg.procname_master or cfg.procname))
        if self.stats_server is not None:
            self.sel.register(self.stats_server, selectors.EVENT_READ, self.stats_server.service)
        count = str(self.target) if self.cheaper is None else \
            f"{self.target - len(self.cheaped)} (cheaper: {self.cheaper.minimum}-{self.target})"
        log.info("%s: master pid %d%s, %s worker(s) x %d thread(s), app %s, sockets: %s", self.name,
                 self.pid, f" (reload {self.reloads})" if self.reloads else "", count,
                 self.cfg.threads, loader.describe(self.cfg),
                 ", ".join(lst.describe() for lst in self.listeners))
        self._reap()  # old workers may have exited before this image installed its SIGCHLD handler
        for key, _ in self.sel.select(0):  # what arrived during the import (a stop, a reload) comes first
            key.data()
        if self.state == RUNNING and self.cfg.cheap:
            self._wait_first_connection()
        elif self.state == RUNNING:
            self._spawn_all()
        else:
            log.info("%s: stopped before any worker was forked", self.name)
        while self.state != "done":
            for key, _ in self.sel.select(self._timeout()):
                key.data()
            self._tick()
        return self.exit_code

    def _spawn_all(self) -> None:
        for wid in range(1, self.target + 1):
            if wid not in self.respawn_at and self._wanted(wid):  # a scale during the import queued it
                self._spawn(wid)

    def _wait_first_connection(self) -> None:
        """``cheap``: no worker until a socket is readable (a connection waits in its queue); the
        vassal counts as ready meanwhile, since the queued connection will be served."""
        self.cheap_waiting = True
        for lst in self.listeners:
            self.sel.register(lst.sock, selectors.EVENT_READ, self._first_connection)
        log.info("%s: cheap: no worker until the first connection", self.name)

    def _first_connection(self) -> None:
        for lst in self.listeners:
            self.sel.unregister(lst.sock)
        self.cheap_waiting = False
        if self.state == RUNNING:
            log.info("%s: cheap: a connection arrived: forking %d worker(s)", self.name, self.target)
            self._spawn_all()

    def _timeout(self) -> float:
        if not self.ready_sent or self.respawn_at:
            return 0.05
        t = 1.0
        if self.state != RUNNING:
            t = min(t, max(0.0, self.deadline - time.monotonic()), 0.1)
        if self.sos is not None:  # wake for the backlog probe on time, not up to a second late
            t = min(t, max(0.0, self.sos.next_check - time.monotonic()))
        if self.cheaper is not None and self.state == RUNNING:
            t = min(t, max(0.0, self.cheaper_next - time.monotonic()))
        return t

    def _install_signals(self) -> None:
        self.wake_w.setblocking(False)
        self.wake_r.setblocking(False)
        signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)
        for sig in MASTER_SIGNALS:
            signal.signal(sig, _noop)
        signal.siginterrupt(signal.SIGCHLD, False)

    def _on_signals(self) -> None:
        try:
            data = self.wake_r.recv(4096)
        except BlockingIOError:
            return
        for signum in data:
            if signum == signal.SIGCHLD:
                self._reap()
            elif signum == signal.SIGHUP:
                log.info("%s: SIGHUP received: graceful reload", self.name)
                self.reload()
            elif signum == signal.SIGTERM:
                log.info("%s: SIGTERM received: graceful stop", self.name)
                self.stop(graceful=True)
            elif signum in (signal.SIGINT, signal.SIGQUIT):
                log.info("%s: %s received: fast stop", self.name, signal.Signals(signum).name)
                self.stop(graceful=False)
            elif signum == signal.SIGUSR1:
                self._log_status()
                self.reopen_log("SIGUSR1")
            elif signum in (signal.SIGTTIN, signal.SIGTTOU):
                self._scale_by(1 if signum == signal.SIGTTIN else -1, signal.Signals(signum).name)

    def _scale_by(self, step: int, why: str) -> None:
        """SIGTTIN/SIGTTOU: one worker more or less, as gunicorn, within [1, scoreboard slots]."""
        count = self.target + step
        if not 1 <= count <= self.board.slots:
            log.warning("%s: %s ignored: already %d worker(s) (the range is 1 to %d)", self.name, why,
                        self.target, self.board.slots)
            return
        log.info("%s: %s received: %d -> %d worker(s)", self.name, why, self.target, count)
        self.scale(str(count))

    def _on_channel(self) -> None:
        assert self.chan is not None
        fd: int | None = None
        try:
            packet, fd = channel.recv(self.chan)
        except BlockingIOError:
            return
        except OSError:
            packet = b""
        if fd is not None and packet[:1] == bytes((Msg.RELOAD,)):
            try:
                inifd.replace(fd)  # the ini bytes the emperor checked (emperor/inifd.py)
            except OSError as exc:
                log.error("%s: cannot read the ini the emperor sent: %s", self.name, exc.strerror)
            fd = None
        if not packet:
            log.error("%s: lost the emperor (channel closed): stopping now", self.name)
            self.sel.unregister(self.chan)
            self.chan.close()
            self.chan = None
            self.stop(graceful=False)
            return
        decoded = channel.decode(packet)
        if decoded is None or (fd is not None and decoded[0] != Msg.LOGREOPEN):
            if fd is not None:
                os.close(fd)
            log.warning("%s: ignoring unknown message from the emperor: %r", self.name, packet[:16])
            return
        msg, _payload = decoded
        if msg == Msg.STOP:
            self.stop(graceful=True)
        elif msg == Msg.RELOAD:
            self.reload()
        elif msg == Msg.KILL:
            self.stop(graceful=False)
        elif msg == Msg.SCALE:
            accepted, detail = self.scale(_payload)
            channel.send(self.chan, Msg.SCALED, channel.scale_reply(accepted, detail))
        elif msg == Msg.LOGREOPEN:
            self.reopen_log("the emperor reopened its log", fd)

    def _tick(self) -> None:
        now = time.monotonic()
        if self.state == RUNNING:
            for wid, when in list(self.respawn_at.items()):
                if not self._wanted(wid):  # scaled down or cheaped meanwhile
                    del self.respawn_at[wid]
                elif now >= when and wid not in self.workers.values():  # (a retiring one holds the slot)
                    del self.respawn_at[wid]
                    self._spawn(wid)
            self._check_harakiri()
            self._check_lifetime(now)
            self._cheaper_tick(now)
            self._report()
            self._broodlord_tick(now)
            self._check_logreopen(now)
            if self.cfg.log_maxsize:
                self._check_log_size(now)
            if self.daemons is not None:
                self.daemons.tick(now)
            if self.chain is not None:
                self._chain_step(now)
        if self.state == RUNNING and self.touch is not None and (path := self.touch.touched(now)):
            log.info("%s: %s was touched: graceful reload (touch-reload)", self.name, path)
            self.reload()
        if self.parking is not None:
            self.parking.tick()
        if self.state != RUNNING and self.state != "done":
            if not self.workers and not self.old_workers:
                self._finish(vacuum=True)
                self.state = "done"
            elif now >= self.deadline:
                for pid, wid in list(self.workers.items()):
                    log.warning("%s: worker %d (pid %d) still busy after %.0f s: SIGKILL",
                                self.name, wid, pid, self.cfg.reload_mercy)
                    _killpg(pid, signal.SIGKILL)
                self.deadline = now + 5.0
        if self.stats_server is not None:
            self.stats_server.expire()
        if self.cfg.heartbeat and self.chan is not None and now >= self.next_heartbeat:
            # from the loop itself: a master that stops looping (SIGSTOP, a stuck call) goes silent
            channel.send(self.chan, Msg.HEARTBEAT, channel.heartbeat_payload(self.cfg.heartbeat))
            self.next_heartbeat = now + self.cfg.heartbeat
        if self.old_workers:
            self._reap()
        for pid, deadline in list(self.old_workers.items()):
            if now >= deadline:
                log.warning("%s: old worker pid %d outlived reload-mercy: SIGKILL", self.name, pid)
                _killpg(pid, signal.SIGKILL)
                self.old_workers[pid] = now + 5.0

    def _report(self) -> None:
        """READY once every worker accepts; LOYAL once a request has been served."""
        if self.chan is None:
            if not self.ready_sent and self._all_accepting():
                self.ready_sent = True
                log.info("%s: ready: %d worker(s) accepting", self.name, len(self.workers))
            return
        if not self.ready_sent and self._all_accepting():
            channel.send(self.chan, Msg.ENDPOINTS, self._endpoints())  # for emperor-etcd (docs/fleet.md)
            self.ready_sent = channel.send(self.chan, Msg.READY, str(len(self.workers)))
            log.info("%s: ready: %d worker(s) accepting", self.name, len(self.workers))
            self._tell_workers()
        if self.ready_sent and not self.loyal_sent and self.board.total_requests() > 0:
            self.loyal_sent = channel.send(self.chan, Msg.LOYAL)

    def _endpoints(self) -> str:
        """What the emperor registers in etcd: the app name, the weight and the bound TCP addresses
        (``getsockname``, so ``:0`` reports its real port; a wildcard is replaced by the emperor)."""
        words = [f"app={self.cfg.fleet_app or ''}", f"weight={self.cfg.weight}"]
        for lst in self.listeners:
            if lst.kind != "tcp":
                continue
            host, port = lst.sock.getsockname()[:2]
            suffix = "" if lst.proto == "uwsgi" else f"/{lst.proto}"  # HTTP: upstream <app>-http
            words.append(f"[{host}]:{port}{suffix}" if ":" in host else f"{host}:{port}{suffix}")
        return " ".join(words)

    def _all_accepting(self) -> bool:
        if self.cheap_waiting:
            return True
        b, live = self.board, set(self.workers.values())
        wanted = [w for w in range(1, self.target + 1) if self._wanted(w)]  # not the retiring ones
        return bool(self.workers) and all(
            wid in live and b.get(wid - 1, scoreboard.ACCEPTING) for wid in wanted)

    # ---- workers -------------------------------------------------------------------------
    def _spawn(self, wid: int) -> None:
        cfg = self.cfg
        load = lambda: static.wrap(loader.load(cfg), cfg)  # noqa: E731 - lazy-apps import in the worker
        self.board.reset(wid - 1, 0)  # before fork(): the child may mark itself accepting at once
        worker_class: Any = Worker
        if cfg.asgi:  # an event-loop worker (docs/asgi.md), imported before fork()
            from emperor.vassal import aio

            worker_class = aio.Worker
            if any(lst.proto != "uwsgi" for lst in self.listeners):  # its HTTP codec loads httptools
                from emperor.vassal import aio_http

                worker_class = aio_http.Worker
        elif any(lst.proto != "uwsgi" for lst in self.listeners):  # only these load httptools
            from emperor.vassal import http_loop

            worker_class = http_loop.HTTPWorker
        # Blocked across fork(): until the worker has its own handlers, a signal would run the
        # master's do-nothing handler (a SIGTERM lost) and write to the master's wakeup socket.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, MASTER_SIGNALS)
        try:
            pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            raise
        if pid == 0:  # the worker
            try:
                worker = worker_class(wid, self.listeners, cfg, self.board, self.app, load)
                worker.install_signals()
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # pending signals are handled here
                os.setpgid(0, 0)
                set_parent_death_signal()
                if os.getppid() != self.pid:
                    os._exit(0)
                self.sel.close()
                self.wake_r.close()
                self.wake_w.close()
                if self.chan is not None:
                    self.chan.close()
                if self.stats_server is not None:
                    self.stats_server.close_in_child()
                self._broodlord_close(in_worker=True)
                if self.parking is not None:
                    self.parking.close_in_worker()
                    worker.park = self.parking.worker_end
                _title(self._proc_title(f"emperor: worker {wid} {self.name}", cfg.procname))
                worker.run()
            finally:
                os._exit(1)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        try:
            os.setpgid(pid, pid)
        except OSError:
            pass
        self.board.set(wid - 1, scoreboard.PID, pid)
        self.workers[pid] = wid
        self.spawned_at[wid] = time.monotonic()

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.old_workers.pop(pid, None) is not None:
                continue
            wid = self.workers.pop(pid, None)
            if wid is None:
                if self.daemons is not None:
                    self.daemons.reaped(pid, status)
                continue
            self._worker_died(wid, pid, status)

    def _worker_died(self, wid: int, pid: int, status: int) -> None:
        lived = time.monotonic() - self.spawned_at.get(wid, 0.0)
        harakiri = pid in self.harakiri_done
        self.harakiri_done.discard(pid)
        self.lifetime_done.discard(pid)
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            what = f"killed by signal {sig} ({signal.Signals(sig).name})"
            if sig == signal.SIGKILL and not harakiri and self.state == RUNNING:
                what += " (possible OOM)"
            code = -sig
        else:
            code = os.WEXITSTATUS(status)
            what = f"exited with status {code}"
        cheaped = pid in self.retiring
        self.retiring.discard(pid)
        self.busy_us.pop(pid, None)
        if self.state != RUNNING:
            log.info("%s: worker %d (pid %d) %s", self.name, wid, pid, what)
            return
        if not self._wanted(wid):
            log.info("%s: worker %d (pid %d) retired after %s: %s", self.name, wid, pid,
                     "a cheap" if cheaped else "a scale-down", what)
            return
        if cheaped:  # wanted again while it was leaving: its slot is free now
            log.info("%s: worker %d (pid %d) retired (%s); spawning it again: cheaper wants it back",
                     self.name, wid, pid, what)
            self._spawn(wid)
            return
        if code == 0:
            log.info("%s: worker %d (pid %d) exited after recycling; respawning", self.name, wid, pid)
            self.board.set(wid - 1, scoreboard.RESPAWNS, self.board.get(wid - 1, scoreboard.RESPAWNS) + 1)
            self.quick_deaths[wid] = 0
            self._spawn(wid)
            return
        if code == Exit.APP_LOAD and (self.cfg.lazy_apps or self.cfg.asgi) and self.cfg.need_app:
            log.error("%s: worker %d could not %s the app (need-app): stopping", self.name, wid,
                      "load" if self.cfg.lazy_apps else "start (ASGI lifespan startup)")
            self.exit_code = Exit.APP_LOAD
            self.stop(graceful=False)
            return
        log.error("%s: worker %d (pid %d) %s%s; respawning", self.name, wid, pid, what,
                  " after harakiri" if harakiri else "")
        self.board.set(wid - 1, scoreboard.RESPAWNS, self.board.get(wid - 1, scoreboard.RESPAWNS) + 1)
        quick = self.quick_deaths.get(wid, 0) + 1 if lived < 1.0 else 0
        self.quick_deaths[wid] = quick
        if quick >= 3:
            delay = min(0.25 * 2 ** (quick - 3), 5.0)
            log.error("%s: worker %d respawning too fast: waiting %.2f s", self.name, wid, delay)
            self.respawn_at[wid] = time.monotonic() + delay
        else:
            self._spawn(wid)

    def _check_harakiri(self) -> None:
        limit = self.cfg.harakiri
        if not limit:
            return
        now = time.monotonic_ns()
        for pid, wid in self.workers.items():
            since = self.board.get(wid - 1, scoreboard.BUSY_SINCE)
            if since and now - since > limit * 1_000_000_000 and pid not in self.harakiri_done:
                self.harakiri_done.add(pid)
                request = self.board.text(wid - 1)
                log.error("%s: HARAKIRI: worker %d (pid %d) spent more than %d s on %r: killing it and "
                          "its process group", self.name, wid, pid, limit, request)
                self.board.set(wid - 1, scoreboard.HARAKIRI, self.board.get(wid - 1, scoreboard.HARAKIRI) + 1)
                if self.cfg.harakiri_verbose:
                    for what in ("syscall", "wchan"):
                        log.error("%s: HARAKIRI: -- %s> %s", self.name, what, _proc_text(pid, what))
                _killpg(pid, signal.SIGKILL)

    def _check_lifetime(self, now: float) -> None:
        """max-worker-lifetime: a graceful SIGTERM to each worker older than its lifetime; the
        worker finishes its request, exits 0 and is respawned by _worker_died."""
        base = self.cfg.max_worker_lifetime
        if not base:
            return
        for pid, wid in self.workers.items():
            limit = base + wid * self.cfg.max_worker_lifetime_delta
            if pid not in self.lifetime_done and now - self.spawned_at.get(wid, now) > limit:
                self.lifetime_done.add(pid)
                log.info("%s: worker %d (pid %d) recycled: max-worker-lifetime (%d s)", self.name, wid,
                         pid, limit)
                _kill(pid, signal.SIGTERM)

    def _chain_step(self, now: float) -> None:
        """touch-chain-reload: one worker at a time (emperor/vassal/touch.py ChainReload)."""
        assert self.chain is not None
        board = self.board
        step = self.chain.step(now, self.workers, lambda wid: bool(board.get(wid - 1, scoreboard.ACCEPTING)))
        if step is None:
            return
        what, pid, wid = step
        if what == "touched":
            log.info("%s: chain reload: replacing %d worker(s) one at a time (touch-chain-reload)",
                     self.name, len(self.workers))
        elif what == "next":
            log.info("%s: chain reload: worker %d (pid %d) finishes and is replaced", self.name, wid, pid)
            self.lifetime_done.add(pid)  # a recycle: exits 0, respawned by _worker_died
            _kill(pid, signal.SIGTERM)
        else:
            log.info("%s: chain reload done", self.name)

    def _log_status(self) -> None:
        for pid, wid in sorted(self.workers.items(), key=lambda kv: kv[1]):
            b, i = self.board, wid - 1
            log.info("%s: worker %d pid %d requests %d %s respawns %d harakiri %d", self.name, wid, pid,
                     b.get(i, scoreboard.REQUESTS), "busy" if b.get(i, scoreboard.BUSY_SINCE) else "idle",
                     b.get(i, scoreboard.RESPAWNS), b.get(i, scoreboard.HARAKIRI))

    # ---- cheaper (emperor/vassal/cheaper.py, docs/autoscaling.md) ------------------------
    def _wanted(self, wid: int) -> bool:
        """Worker ``wid`` should run: within ``processes`` and not switched off by cheaper."""
        return wid <= self.target and wid not in self.cheaped

    def _cheaper_boot(self) -> None:
        settings, warnings = cheaper.Settings.from_config(self.cfg)
        for w in warnings:
            log.warning("%s: %s: cheaper: %s", self.name, self.cfg.where("cheaper"), w)
        if settings is None:
            return
        now = time.monotonic()
        self.cheaper = cheaper.Policy(settings, now)
        self.cheaped = set(range(settings.initial + 1, settings.maximum + 1))
        readable = self.sos is not None and self.sos.probe.backlog()[0] is not None
        if settings.algo in ("backlog", "busyness") and not readable:
            log.warning("%s: cheaper-algo = %s: the listen queue cannot be read here%s", self.name,
                        settings.algo, ": using spare" if settings.algo == "backlog" else
                        ": the backlog rules are off")
        log.info("%s: cheaper: %s, %d to %d worker(s), %d at start", self.name, settings.algo,
                 settings.minimum, settings.maximum, settings.initial)

    def _cheaper_can_grow(self) -> bool:
        return self.cheaper is not None and len(self.workers) - len(self.retiring) < self.target

    def _cheaper_tick(self, now: float) -> None:
        """Feed the policy from the scoreboard and the backlog probe, and act on its answer."""
        pol = self.cheaper
        if pol is None or now < self.cheaper_next:
            return
        b, now_ns = self.board, time.monotonic_ns()
        live = {wid: pid for pid, wid in self.workers.items() if pid not in self.retiring}
        wanted = [w for w in range(1, self.target + 1) if self._wanted(w)]
        starting, busy, rss, counters, running = 0, 0, 0, {}, []
        for wid in wanted:
            pid = live.get(wid)
            if pid is None or not b.get(wid - 1, scoreboard.ACCEPTING):
                starting += 1
                if pid is None:
                    continue
            since = b.get(wid - 1, scoreboard.BUSY_SINCE)
            busy += bool(since)
            running.append((wid, bool(since)))
            in_flight = max(0, now_ns - since) // 1000 if since else 0
            counters[pid] = b.get(wid - 1, scoreboard.RT_SUM_US) + in_flight
            if pol.s.rss_soft or pol.s.rss_hard:
                rss += proc_memory(pid)[0]
        busy_time, self.busy_us = cheaper.busy_delta(self.busy_us, counters)
        queue = None
        if self.sos is not None and (busy >= len(wanted) or pol.s.algo in ("backlog", "busyness")):
            queue = self.sos.probe.backlog()[0]
        snap = cheaper.Snapshot(now, len(wanted), busy, starting, busy_time, queue, rss)
        action = pol.decide(snap)
        hot = starting or busy >= len(wanted)
        self.cheaper_next = now + (0.05 if hot else 0.25)  # a full house is watched closely
        if action.spawn:
            self._cheaper_spawn(action, len(wanted), live)
        elif action.retire:
            self._cheaper_retire(action, len(wanted), running)

    def _cheaper_spawn(self, action: cheaper.Action, before: int, live: dict[int, int]) -> None:
        held = set(self.workers.values())  # a retiring worker keeps its slot until it exits
        chosen = sorted(self.cheaped, key=lambda w: (w in held, w))[:action.spawn]
        for wid in chosen:
            self.cheaped.discard(wid)
            if wid not in held:
                self._spawn(wid)
        after = before + len(chosen)
        self.cheaper_log.record(action, time.time(), before, after)
        log.info("%s: cheaper: spawned %d worker(s) (%d -> %d): %s", self.name, len(chosen), before, after,
                 action.reason)
        self._tell_workers()

    def _cheaper_retire(self, action: cheaper.Action, before: int, running: list[tuple[int, bool]]) -> None:
        """SIGTERM: the worker closes its listening sockets first (a connection the kernel queued
        goes to another worker), finishes the request it has, and exits 0."""
        pids = {wid: pid for pid, wid in self.workers.items() if pid not in self.retiring}
        chosen = cheaper.pick_retirees(action.retire, running)
        for wid in chosen:
            self.cheaped.add(wid)
            self.retiring.add(pids[wid])
            _kill(pids[wid], signal.SIGTERM)
        after = before - len(chosen)
        self.cheaper_log.record(action, time.time(), before, after)
        log.info("%s: cheaper: retiring %d worker(s) (%d -> %d): %s", self.name, len(chosen), before, after,
                 action.reason)
        self._tell_workers()

    def running_workers(self) -> int:
        """Workers alive that are not leaving (a cheap or a scale-down sent them SIGTERM)."""
        return sum(1 for pid, wid in self.workers.items() if pid not in self.retiring and self._wanted(wid))

    def _tell_workers(self) -> None:
        """WORKERS to the emperor: running (not retiring), minimum, maximum, cheaper's spawns and
        cheaps (``emperor ctl list/status``)."""
        if self.chan is None:
            return
        pol, book = self.cheaper, self.cheaper_log
        low = pol.minimum if pol is not None else self.target
        channel.send(self.chan, Msg.WORKERS, f"{self.running_workers()} {low} "
                     f"{self.target} {sum(book.spawned.values())} {sum(book.cheaped.values())}")

    def _cheaper_rescale(self, old: int, count: int) -> None:
        """``emperor ctl scale N`` under cheaper moves the ceiling (docs/autoscaling.md)."""
        assert self.cheaper is not None
        self.cheaper.maximum = count
        self.cheaped = {w for w in self.cheaped if w <= count} | set(range(old + 1, count + 1))
        active = [w for w in range(1, count + 1) if w not in self.cheaped]
        for wid in sorted(self.cheaped)[:max(0, self.cheaper.minimum - len(active))]:
            self.cheaped.discard(wid)  # never below cheaper (or the new ceiling, if lower)

    # ---- broodlord (docs/broodlord.md) ---------------------------------------------------
    def _broodlord_boot(self, inherited: sockets.Listener | None = None) -> int | None:
        """The zerg server, the SOS watch (a vassal) and the idle watch (a zerg)."""
        cfg, now = self.cfg, time.monotonic()
        if cfg.zerg_server:
            try:
                self.zerg_server = zerg.ZergServer(cfg.zerg_server, self.listeners, inherited=inherited,
                                                   owner=self.ident.owner)
            except (addresses.AddressError, OSError) as exc:
                log.error("zerg-server: %s", exc)
                return Exit.SOCKET
            self.sel.register(self.zerg_server.sock, selectors.EVENT_READ, self.zerg_server.on_accept)
        sos = bool(cfg.vassal_sos_backlog or cfg.vassal_sos)
        if sos and self.chan is None:
            log.warning("%s: vassal-sos-backlog/vassal-sos ignored: not governed by an emperor", self.name)
            sos = False
        # always: the watch also logs a full listen queue (rate-limited), SOS or not
        probe = backlog.Probe([(lst.name, lst.sock) for lst in self.listeners])
        self.sos = backlog.SosWatch(probe, cfg.vassal_sos_backlog if sos else 0, cfg.vassal_sos if sos else 0,
                                    now)
        if not sos:
            self.sos.PROBE_EVERY = 1.0  # only the log line: once a second is enough
        if cfg.heartbeat and self.chan is None:
            log.warning("%s: heartbeat ignored: not governed by an emperor", self.name)
        if cfg.idle and cfg.die_on_idle:
            self.idle = zerg.IdleWatch(cfg.idle, now)
        elif cfg.idle:
            log.warning("%s: idle = %d does nothing without die-on-idle (uWSGI's return to cheap mode "
                        "is not implemented)", self.name, cfg.idle)
        return None

    def _broodlord_tick(self, now: float) -> None:
        """Once a second: SOS while overloaded (a vassal); leave when idle (a zerg)."""
        if self.sos is not None:
            busy = [self.board.get(wid - 1, scoreboard.BUSY_SINCE) for wid in self.workers.values()]
            all_busy = len(busy) == self.target and all(busy)
            payload = self.sos.check(now, all_busy)  # also logs a full listen queue
            if payload is not None and self.chan is not None and not self._cheaper_can_grow():
                channel.send(self.chan, Msg.SOS, payload)  # zergs only once cheaper reached processes
        if self.idle is not None:
            any_busy = any(self.board.get(wid - 1, scoreboard.BUSY_SINCE) for wid in self.workers.values())
            quiet = self.idle.check(self.board.total_requests(), any_busy, now)
            if quiet is not None:
                log.info("%s: idle for %.0f s (no request, no busy worker): leaving", self.name, quiet)
                if self.chan is not None:
                    channel.send(self.chan, Msg.IDLE, f"{quiet:.0f}")
                self.stop(graceful=True)  # a request accepted meanwhile still finishes

    def _broodlord_close(self, in_worker: bool = False) -> None:
        """Close the zerg server (removing its file, except from a worker) and the netlink probe."""
        if self.zerg_server is not None:
            if in_worker:
                self.zerg_server.sock.close()
            else:
                self.zerg_server.close()
            self.zerg_server = None
        if self.sos is not None:
            self.sos.probe.close()
            if not in_worker:
                self.sos = None

    # ---- scale (emperor ctl scale) -------------------------------------------------------
    def scale(self, payload: str) -> tuple[bool, str]:
        """Change the worker count now, without a reload: spawn the missing workers, or retire the
        highest-numbered ones gracefully (SIGTERM: they finish their request and leave).

        Runtime only: the count is ``self.target``, which every reader (readiness, stats, SOS,
        SIGTTIN/SIGTTOU) uses; the config keeps the ini's value, so a reload restores it.
        Returns (accepted, the new count or the reason of the refusal) for the emperor.
        """
        asked = channel.parse_scale_request(payload)
        if self.state != RUNNING:
            why = f"the vassal is {self.state}"
        elif asked is None:
            why = f"{payload[:40]!r} is not a worker count"
        elif not 1 <= asked <= self.board.slots:
            why = (f"{asked} workers: the scoreboard has {self.board.slots} slots (4 x the ini's "
                   "processes, at least 64); raise processes in the ini and reload")
        else:
            why = ""
        if why:
            log.error("%s: scale refused: %s", self.name, why)
            return False, why
        assert asked is not None  # a refusal above otherwise
        count = asked
        old, self.target = self.target, count
        log.info("%s: scaled: %d -> %d worker(s) (runtime only: a reload restores the ini's value)",
                 self.name, old, count)
        if self.cheaper is not None:
            self._cheaper_rescale(old, count)
        live = set(self.workers.values())
        for wid in range(1, count + 1):
            if wid not in live and wid not in self.respawn_at and self._wanted(wid):
                self.respawn_at[wid] = time.monotonic()  # _tick spawns it once its slot is free
        for pid, wid in list(self.workers.items()):
            if wid > count:
                _kill(pid, signal.SIGTERM)
        self.ready_sent = self.ready_sent and count <= old  # READY again once the new ones accept
        self._tell_workers()
        return True, str(count)

    # ---- logs (logrotate) ----------------------------------------------------------------
    def _check_logreopen(self, now: float) -> None:
        """``touch-logreopen = PATH``: reopen the log when PATH's mtime changes (checked once a second)."""
        path = self.cfg.touch_logreopen
        if not path or now < self.next_logreopen_check:
            return
        self.next_logreopen_check = now + 1.0
        mtime = _mtime(path)
        if self.logreopen_mtime is None:
            self.logreopen_mtime = mtime
        elif mtime != self.logreopen_mtime:
            self.logreopen_mtime = mtime
            self.reopen_log(f"{path} was touched")

    def _check_log_size(self, now: float) -> None:
        """``log-maxsize``: once a second, rename a log file past the size to FILE.UNIXTIME and reopen."""
        path = self.cfg.logto or self.cfg.daemonize
        if not path or now < self.next_logsize_check:
            return
        self.next_logsize_check = now + 1.0
        try:
            if os.fstat(2).st_size <= self.cfg.log_maxsize:
                return
            rotated = base = f"{path}.{int(time.time())}"
            n = 0
            while os.path.lexists(rotated):  # rotated twice in one second: never overwrite
                n += 1
                rotated = f"{base}.{n}"
            os.rename(path, rotated)
        except OSError as exc:
            log.error("%s: log-maxsize: cannot rotate %s: %s", self.name, path, exc.strerror)
            self.next_logsize_check = now + 60.0  # say it once a minute, not every second
            return
        self.reopen_log(f"log-maxsize: the old log is {rotated}")

    def reopen_log(self, why: str, fd: int | None = None) -> None:
        """Point fds 1 and 2 at the log again and tell the workers (logrotate renamed the file).

        The vassal's own ``logto`` wins: it is reopened by name. Otherwise the vassal writes
        to the emperor's log, which the emperor passes as ``fd`` (the vassal may not be allowed
        to open it). Workers follow at their next request (``Scoreboard.LOG_GEN``).
        """
        own = self.cfg.logto or self.cfg.daemonize
        try:
            if own:
                logs.reopen(own)
            elif fd is not None:
                logs.adopt(fd)
            else:
                return
        except OSError as exc:
            log.error("%s: cannot reopen the log %s: %s", self.name, own or "", exc.strerror)
            return
        finally:
            if fd is not None:
                os.close(fd)
        for wid in range(1, self.board.slots + 1):
            self.board.set(wid - 1, scoreboard.LOG_GEN, self.board.get(wid - 1, scoreboard.LOG_GEN) + 1)
        log.info("%s: log reopened (%s)", self.name, why)

    # ---- reload and stop -----------------------------------------------------------------
    def reload(self) -> None:
        if self.state != RUNNING:
            return
        try:
            privileges.plan(privileges.resolve(config.from_args(self.pairs, self.scope)), reloaded=True)
        except privileges.IdentityError as exc:
            why = f"{exc}; a reload cannot change the user: stop and start the vassal"
            log.error("%s: reload refused (still running the previous configuration): %s", self.name, why)
            if self.chan is not None:
                channel.send(self.chan, Msg.CONFIG_ERROR, why)
            return
        except config.ConfigError as exc:
            log.error("%s: reload refused, the configuration is invalid (still running the previous "
                      "one): %s", self.name, exc)
            if self.chan is not None:
                channel.send(self.chan, Msg.CONFIG_ERROR, str(exc))
            return
        self.state = RELOADING
        if self.daemons is not None:  # attach-daemon ones restart with the new code; pidfile ones stay
            self.daemons.finish(keep_smart=True)
        deadline = time.monotonic() + self.cfg.reload_mercy
        old = dict.fromkeys(self.workers, deadline) | self.old_workers
        for pid in self.workers:
            _kill(pid, signal.SIGTERM)
        env = dict(os.environ)
        env[sockets.ENV_FDS] = sockets.export(self.listeners + self._own_listeners())
        if self.parking is not None:
            env[parking.ENV] = self.parking.export()
        env[ENV_RELOADS] = str(self.reloads + 1)
        import json

        env[ENV_OLD_WORKERS] = json.dumps({"pids": list(old), "deadline": deadline})
        if self.chan is not None:
            self.chan.set_inheritable(True)
            env[channel.ENV_FD] = str(self.chan.fileno())
            env[channel.ENV_NAME] = self.name
        argv = [*venv.self_command(), *render_args(self.pairs)]
        log.info("%s: reloading: %d worker(s) finishing, re-executing the master", self.name, len(old))
        sys.stdout.flush()
        sys.stderr.flush()
        signal.set_wakeup_fd(-1)
        try:
            os.execve(sys.executable, argv, env)
        except OSError as exc:
            log.error("%s: reload failed, cannot re-exec %s: %s; respawning workers", self.name,
                      sys.executable, exc)
            signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)
            self.state = RUNNING
            if self.daemons is not None:
                self.daemons.start()

    def stop(self, graceful: bool) -> None:
        if self.state == STOPPING and graceful:
            return
        self.state = STOPPING
        mercy = self.cfg.reload_mercy if graceful else FAST_STOP_GRACE
        self.deadline = time.monotonic() + mercy
        self.respawn_at.clear()
        sig = signal.SIGTERM if graceful else signal.SIGINT
        for pid in list(self.workers) + list(self.old_workers):
            _kill(pid, sig)
        if self.daemons is not None:
            self.daemons.stop()

    def _finish(self, vacuum: bool, force: bool = False) -> None:
        """Close the sockets (removing ours with vacuum, under an emperor, or when we never served)."""
        under_emperor = self.chan is not None or os.environ.get(channel.ENV_NAME)
        for lst in self.listeners:
            if vacuum and (self.cfg.vacuum or under_emperor or force):
                sockets.vacuum(lst)
            lst.sock.close()
        if self.parking is not None:
            self.parking.close()
            self.parking = None
        self._broodlord_close()
        if self.daemons is not None:
            self.daemons.finish()
            self.daemons = None
        if self.stats_server is not None:
            if self.stats_server in self.sel.get_map():  # a boot failure comes before registration
                self.sel.unregister(self.stats_server)
            self.stats_server.close()
            self.stats_server = None
        if self.stats is not None:
            self.stats.close()
        if self.pidfile is not None:
            self.pidfile.release()
        if self.chan is not None:
            channel.send(self.chan, Msg.BYE, "stopped")
        log.info("%s: stopped", self.name)


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


def _freeze_heap() -> None:
    """Move everything loaded so far (our modules, the app) out of the garbage collector's reach.

    Workers forked afterwards never traverse these objects in a full collection, and never
    write to their gc headers, so the pages stay shared with the master (Python's gc docs
    recommend gc.freeze() before fork for this). Apps that create cycles per request (Flask,
    Django) then pay for collections over their own objects only.
    """
    gc.collect()
    gc.freeze()


def _noop(signum: int, frame: object) -> None:
    """Signals only wake the loop (set_wakeup_fd carries the number)."""


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _killpg(pid: int, sig: int) -> None:
    """Signal the worker's process group (children of a stuck request die too), then the worker."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        _kill(pid, sig)


def _failing_app(message: str) -> loader.WSGIApp:
    """need-app = false: answer 500 and say why, instead of refusing to start."""
    body = f"application not loaded: {message.splitlines()[0]}\n".encode()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("500 Internal Server Error", [("Content-Type", "text/plain"),
                                                     ("Content-Length", str(len(body)))])
        return [body]

    return app


def run_vassal(pairs: list[tuple[str, str]], scope: Scope = Scope.VASSAL) -> int:
    """Run one vassal in the foreground; the exit status follows ``channel.Exit``."""
    chan = channel.from_env()
    name = os.environ.get(channel.ENV_NAME, "")
    if any(k == "ini" and v.rpartition(":")[2] == "zerg" for k, v in pairs):
        scope = Scope.ZERG  # file.ini:zerg, as uWSGI's broodlord starts it
    if chan is not None:
        set_parent_death_signal()
        if _channel_dead(chan):
            return Exit.CRASH
    logs.setup(name or "vassal")
    reloaded = bool(os.environ.get(ENV_RELOADS))
    try:
        inifd.adopt()  # under an emperor: its checked bytes, never the path again
        cfg = config.from_args(pairs, scope)
        ident = privileges.resolve(cfg)  # unknown users and groups fail here, before anything is bound
        if cfg.home:
            _enter_venv(cfg, pairs, chan)
        ident = privileges.plan(ident, reloaded)
    except (config.ConfigError, ini.IniError, privileges.IdentityError) as exc:
        log.error("configuration error: %s", exc)
        if chan is not None:
            channel.send(chan, Msg.CONFIG_ERROR, str(exc))
        return Exit.CONFIG
    privileges.apply_umask(ident)
    if not name:
        name = os.path.splitext(os.path.basename(cfg.files[0]))[0] if cfg.files else "vassal"
        logs.setup(name)
    if cfg.logger and cfg.logger[0] == "file" and not (cfg.logto or cfg.daemonize):
        cfg.values["logto"] = cfg.logger[1]  # logger = file:PATH is logto = PATH
    logfile = cfg.logto or cfg.daemonize
    if cfg.daemonize and chan is None and not os.environ.get(ENV_RELOADS):
        daemon.detach()
    if logfile and not (reloaded and privileges.log_already_open(logfile)):
        try:
            logs.redirect(logfile)
        except OSError as exc:
            log.error("logto %s: %s", logfile, exc.strerror)
            return Exit.CONFIG
    if cfg.logger and cfg.logger[0] == "syslog":
        _log_to_syslog(cfg.logger[1], name)
    return Master(cfg, pairs, scope, chan, name, ident).run()


def _log_to_syslog(arg: str, name: str) -> None:
    """``logger = syslog[:IDENT[,FACILITY]]``: the master's and workers' log records go to syslog."""
    try:
        handler = logformat.syslog_handler(arg, name)
    except OSError as exc:
        log.error("logger = syslog: cannot reach the syslog socket (%s): logging to stderr", exc)
        return
    logging.getLogger("emperor").handlers[:] = [handler]


def _enter_venv(cfg: config.Config, pairs: list[tuple[str, str]], chan: socket.socket | None) -> None:
    """``home``: re-execute under the venv's own python unless already running from it (emperor/venv.py)."""
    home = cfg.home
    assert home is not None  # the caller enters only when home is set
    try:
        python = venv.check(home)
    except venv.VenvError as exc:
        e = cfg.sources.get("home")
        raise config.ConfigError(str(exc), e.file if e else "", e.line if e else 0,
                                 e.key if e else "home") from None
    if venv.running_in(home):
        return
    env = dict(os.environ)
    if chan is not None:
        chan.set_inheritable(True)
        env[channel.ENV_FD] = str(chan.fileno())
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(python, [*venv.command(python), *render_args(pairs)], env)
    except OSError as exc:
        raise config.ConfigError(f"home {cfg.home}: cannot run {python}: {exc.strerror}") from None


def _channel_dead(chan: socket.socket) -> bool:
    """The emperor may have died before PR_SET_PDEATHSIG took effect: check the channel once."""
    try:
        return chan.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
