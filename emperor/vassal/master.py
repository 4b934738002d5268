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

The master's parts, each acting on it through a small ``Host`` protocol or explicit arguments
(none imports this module): ``bind`` (the listeners), ``autoscale`` (cheaper, scale),
``health`` (harakiri, lifetime, chain reload, a worker's exit), ``governed`` (the emperor
channel), ``broodlord`` (zerg server, SOS, idle), ``masterlog`` (log reopen), ``reload`` (what
crosses the re-exec); the entry point is ``main.run_vassal``.

Why this module is still over the ~500 lines of the others: what is left is boot, the loop,
forking and reaping the workers, reload and stop, which all read and write the same worker
table; the master's state is declared here once (``__init__`` alone is 50 lines), and splitting
further would only move it behind more indirection.
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
from typing import TYPE_CHECKING, Any

from emperor import channel, config, privileges
from emperor.channel import Exit, Msg
from emperor.daemon import set_parent_death_signal
from emperor.options import Scope
from emperor.pidfile import PidFile, PidFileError
from emperor.statsserver import StatsServer
from emperor.vassal import (
    autoscale,
    backlog,
    bind,
    broodlord,
    cheaper,
    daemons,
    governed,
    health,
    loader,
    masterlog,
    parking,
    reload,
    scoreboard,
    sockets,
    static,
    zerg,
)
from emperor.vassal.scoreboard import Scoreboard
from emperor.vassal.stats import VassalStats
from emperor.vassal.touch import ChainReload, TouchWatch
from emperor.vassal.worker import Worker

if TYPE_CHECKING:  # the stats server is imported only when `stats` is set (docs/emperor.md#cold-start)
    from emperor.statsserver import StatsServer
    from emperor.vassal.stats import VassalStats

log = logging.getLogger("emperor.master")

PR_SET_NAME = 15
FAST_STOP_GRACE = 3.0
# Every signal the master handles: blocked across fork() until the worker has its own handlers.
MASTER_SIGNALS = frozenset({signal.SIGCHLD, signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT,
                            signal.SIGUSR1, signal.SIGUSR2, signal.SIGTTIN, signal.SIGTTOU})
RUNNING, RELOADING, STOPPING = "running", "reloading", "stopping"


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
        self.reloads = int(os.environ.pop(reload.ENV_RELOADS, "0") or 0)
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
        self.sel: selectors.BaseSelector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = socket.socketpair()
        self.zerg_server: zerg.ZergServer | None = None  # broodlord: docs/broodlord.md
        self.sos: backlog.SosWatch | None = None
        self.idle: zerg.IdleWatch | None = None
        self.next_heartbeat = 0.0  # heartbeat = N: when the next HEARTBEAT is due
        self.logwatch = masterlog.LogWatch(cfg, name)  # touch-logreopen, log-maxsize
        self.touch: TouchWatch | None = None  # touch-reload, set up after chdir (paths are relative to it)
        self.chain: ChainReload | None = None  # touch-chain-reload
        self.lifetime_done: set[int] = set()  # workers sent SIGTERM for max-worker-lifetime
        self.parking: parking.ParkingLot | None = None
        self.daemons: daemons.Supervisor | None = None  # attach-daemon*, cron (emperor/vassal/daemons.py)
        self.cheap_waiting = False  # cheap: no worker until the first connection
        # cheaper (emperor/vassal/autoscale.py, docs/autoscaling.md): the policy, the worker ids it
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
        try:
            self.listeners, kept = bind.listeners(cfg, self.ident, self._own_keys())
        except bind.BindError as exc:
            log.error("%s", exc)
            return exc.status
        if (failed := broodlord.boot(self, kept.get(f"zerg-server:{cfg.zerg_server}"))) is not None:
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
            privileges.chdir_as_user(os.getcwd() if cfg.chdir else None)  # absolute: chdir was applied
        except privileges.IdentityError as exc:
            log.error("%s", exc)
            return Exit.CONFIG
        handed = os.environ.pop(parking.ENV, None)
        if bind.accept_mode(self.listeners):  # idle keep-alive connections no worker holds (docs/http.md)
            self.parking = parking.ParkingLot(cfg.http_keepalive, self.sel, handed,
                                              scoreboard.slots_for(cfg.processes))
        else:
            parking.discard(handed)
        self.board = Scoreboard(scoreboard.slots_for(cfg.processes))  # room for `emperor ctl scale`
        try:
            static.wrap(loader.failing_app("static check"), cfg)  # directories checked once, before any fork
        except static.StaticError as exc:
            log.error("%s", exc)
            return Exit.CONFIG
        autoscale.boot(self)
        if not cfg.lazy_apps:
            try:
                self.app = static.wrap(loader.load(cfg), cfg)
            except loader.AppLoadError as exc:
                log.error("%s", exc)
                if cfg.need_app:
                    return Exit.APP_LOAD
                self.app = loader.failing_app(str(exc))
        _freeze_heap()
        self.old_workers = reload.old_workers_from_env()
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

    # ---- the loop ------------------------------------------------------------------------
    def run(self) -> int:
        # Handlers first: a stop sent while the app imports (seconds, for a big app) is queued,
        # not fatal (SIGTERM's default action) and not lost (a channel read only afterwards).
        self._install_signals()
        if self.chan is not None:
            self.sel.register(self.chan, selectors.EVENT_READ, lambda: governed.on_channel(self))
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
            if wid not in self.respawn_at and self.wanted(wid):  # a scale during the import queued it
                self._spawn(wid)

    def _wait_first_connection(self) -> None:
        """``cheap``, and ``idle`` without ``die-on-idle``: no worker until a socket is readable (a
        connection waits in its queue) or a request arrives on a parked keep-alive connection (it
        waits on the parking socketpair); the vassal counts as ready meanwhile, since what waits
        will be served."""
        self.cheap_waiting = True
        for lst in self.listeners:
            self.sel.register(lst.sock, selectors.EVENT_READ, self._first_connection)
        if self.parking is not None:
            self.sel.register(self.parking.worker_end, selectors.EVENT_READ, self._first_connection)

    def _first_connection(self) -> None:
        for lst in self.listeners:
            self.sel.unregister(lst.sock)
        if self.parking is not None:
            self.sel.unregister(self.parking.worker_end)
        self.cheap_waiting = False
        if self.state != RUNNING:
            return
        autoscale.wake(self)
        if self.idle is not None:
            self.idle.reset(time.monotonic())
        held = set(self.workers.values())  # a worker still leaving keeps its slot: respawned when reaped
        wids = [w for w in range(1, self.target + 1) if self.wanted(w) and w not in held]
        log.info("%s: cheap: a connection arrived: forking %d worker(s)", self.name, len(wids))
        for wid in wids:
            if wid not in self.respawn_at:
                self._spawn(wid)

    def go_cheap(self, quiet: float) -> None:
        """``idle`` without ``die-on-idle`` (uWSGI's cheap mode): every worker finishes and exits,
        the master keeps the sockets, and the next connection brings the workers back."""
        if self.cheap_waiting or self.state != RUNNING:
            return
        log.info("%s: idle for %.0f s (no request, no busy worker): cheap mode: stopping %d worker(s) "
                 "until the next connection", self.name, quiet, len(self.workers))
        self.respawn_at.clear()
        self._wait_first_connection()  # first: wanted() is now False for every worker
        for pid in list(self.workers):
            self.retiring.add(pid)
            health.kill(pid, signal.SIGTERM)  # closes its listeners, then finishes what it has
        autoscale.tell_workers(self)

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
                health.log_status(self.name, self.workers, self.board)
                self.reopen_log("SIGUSR1")
            elif signum in (signal.SIGTTIN, signal.SIGTTOU):
                autoscale.scale_by(self, 1 if signum == signal.SIGTTIN else -1, signal.Signals(signum).name)

    def _tick(self) -> None:
        now = time.monotonic()
        if self.state == RUNNING:
            for wid, when in list(self.respawn_at.items()):
                if not self.wanted(wid):  # scaled down or cheaped meanwhile
                    del self.respawn_at[wid]
                elif now >= when and wid not in self.workers.values():  # (a retiring one holds the slot)
                    del self.respawn_at[wid]
                    self._spawn(wid)
            health.check(self, now)
            autoscale.tick(self, now)
            governed.report(self)
            broodlord.tick(self, now)
            for why in self.logwatch.due(now):
                self.reopen_log(why)
            if self.daemons is not None:
                self.daemons.tick(now)
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
                    health.killpg(pid, signal.SIGKILL)
                self.deadline = now + 5.0
        if self.stats_server is not None:
            self.stats_server.expire()
        governed.heartbeat(self, now)
        if self.old_workers:
            self._reap()
        for pid, deadline in list(self.old_workers.items()):
            if now >= deadline:
                log.warning("%s: old worker pid %d outlived reload-mercy: SIGKILL", self.name, pid)
                health.killpg(pid, signal.SIGKILL)
                self.old_workers[pid] = now + 5.0

    # ---- workers -------------------------------------------------------------------------
    def _spawn(self, wid: int) -> None:
        cfg = self.cfg
        load = lambda: static.wrap(loader.load(cfg), cfg)  # noqa: E731 - lazy-apps import in the worker
        self.board.reset(wid - 1, 0)  # before fork(): the child may mark itself accepting at once
        if self.parking is not None:
            self.parking.waiting.set(wid - 1, False)  # a dead predecessor may have left it set
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
                broodlord.close(self, in_worker=True)
                if self.parking is not None:
                    self.parking.close_in_worker()
                    worker.park = self.parking.worker_end
                    worker.waiting = self.parking.waiting
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
            health.worker_died(self, wid, pid, status)

    # ---- scaling (emperor/vassal/autoscale.py) and logs (emperor/vassal/masterlog.py) -----
    def wanted(self, wid: int) -> bool:
        """Worker ``wid`` should run: within the worker count, not switched off by cheaper, and
        the vassal not waiting for a connection (``cheap``, or cheap mode after ``idle``)."""
        return wid <= self.target and wid not in self.cheaped and not self.cheap_waiting

    def running_workers(self) -> int:
        """Workers alive that are not leaving (for the stats: emperor/vassal/stats.py ``Source``)."""
        return autoscale.running_workers(self)

    def scale(self, payload: str) -> tuple[bool, str]:
        """``emperor ctl scale``: the worker count now, runtime only (emperor/vassal/autoscale.py)."""
        return autoscale.scale(self, payload)

    def reopen_log(self, why: str, fd: int | None = None) -> None:
        """Reopen fds 1 and 2 and tell the workers (emperor/vassal/masterlog.py)."""
        masterlog.reopen(self.cfg, self.name, self.board, why, fd)

    # ---- reload and stop -----------------------------------------------------------------
    def reload(self) -> None:
        """Graceful reload: check the new config, let the workers finish, re-exec in place
        (what crosses the exec: emperor/vassal/reload.py)."""
        if self.state != RUNNING:
            return
        why = reload.refusal(self.name, self.pairs, self.scope)
        if why is not None:
            if self.chan is not None:
                channel.send(self.chan, Msg.CONFIG_ERROR, why)
            return
        self.state = RELOADING
        if self.daemons is not None:  # attach-daemon ones restart with the new code; pidfile ones stay
            self.daemons.finish(keep_smart=True)
        deadline = time.monotonic() + self.cfg.reload_mercy
        old = dict.fromkeys(self.workers, deadline) | self.old_workers
        for pid in self.workers:
            health.kill(pid, signal.SIGTERM)
        env = reload.handover_env(self.listeners + self._own_listeners(), self.parking, self.reloads, old,
                                  deadline, self.chan, self.name)
        log.info("%s: reloading: %d worker(s) finishing, re-executing the master", self.name, len(old))
        signal.set_wakeup_fd(-1)
        try:
            reload.reexec(self.pairs, env)
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
            health.kill(pid, sig)
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
        broodlord.close(self)
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
