"""The vassal master: binds the sockets, imports the app, forks and supervises the workers.

One loop, one poll point: signal handlers do nothing but wake it (``set_wakeup_fd`` delivers
the signal numbers), and the emperor channel is read in the same select(). Signals:

==========  =============================================================================
SIGHUP      graceful reload: re-read the config (an invalid one is refused and the old
            config keeps running), tell workers to finish, re-exec in place (same pid)
            with the listening sockets inherited; new workers import the app afresh.
SIGTERM     graceful stop: workers finish their request (bounded by reload-mercy), exit 0.
SIGINT      fast stop (also SIGQUIT): workers exit at once.
SIGUSR1     log one status line per worker.
==========  =============================================================================
"""

from __future__ import annotations

import ctypes
import gc
import json
import logging
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any

from emperor import addresses, channel, config, logs
from emperor.channel import Exit, Msg
from emperor.options import Scope
from emperor.pidfile import PidFile, PidFileError
from emperor.statsserver import StatsServer
from emperor.vassal import backlog, loader, parking, scoreboard, sockets, static, zerg
from emperor.vassal.scoreboard import Scoreboard
from emperor.vassal.stats import VassalStats, open_server
from emperor.vassal.worker import Worker

log = logging.getLogger("emperor.master")

ENV_RELOADS = "EMPEROR_RELOADS"
ENV_OLD_WORKERS = "EMPEROR_OLD_WORKERS"
PR_SET_PDEATHSIG = 1
FAST_STOP_GRACE = 3.0
RUNNING, RELOADING, STOPPING = "running", "reloading", "stopping"


def set_parent_death_signal(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to kill this process when its parent (thread) dies; no-op elsewhere."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _title(text: str) -> None:
    try:
        import setproctitle

        setproctitle.setproctitle(text)
    except ImportError:
        pass


def render_args(pairs: Sequence[tuple[str, str]]) -> list[str]:
    """Turn (key, value) pairs back into a command line for the re-exec."""
    out: list[str] = []
    for key, value in pairs:
        out += [f"--{key}", value]
    return out


class Master:
    def __init__(self, cfg: config.Config, pairs: list[tuple[str, str]], scope: Scope,
                 chan: socket.socket | None, name: str) -> None:
        self.cfg = cfg
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
        self.parking: parking.ParkingLot | None = None

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
            except (OSError, PidFileError) as exc:
                self.pidfile = None
                log.error("pidfile %s: %s", cfg.pidfile, exc)
                return Exit.CONFIG
        try:
            loader.prepare_process(cfg)
        except loader.AppLoadError as exc:
            log.error("%s", exc)
            return Exit.APP_LOAD
        if not (cfg.socket or cfg.zerg or cfg.http_socket or cfg.http or cfg.https_socket):
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
            if cfg.zerg:  # a zerg serves its parent's sockets (kept across its own reloads), binds none
                self.listeners = list(inherited.values()) or zerg.attach(cfg.zerg)
                for lst in self.listeners:  # the zerg protocol carries no protocol: ours decides
                    lst.proto = cfg.protocol
            else:
                wanted = sockets.configured(cfg, tls_addrs)
                self.listeners = sockets.open_all(wanted, cfg.listen, cfg.chmod_socket,
                                                  cfg.socket_timeout, not cfg.no_defer_accept, inherited)
        except (addresses.AddressError, zerg.ZergError, OSError) as exc:
            log.error("%s", exc)
            return Exit.SOCKET
        speaks_http = any(lst.proto in ("http", "https") for lst in self.listeners)
        for lst in self.listeners:
            # one uwsgi listener: blocking accept(); else poll() + non-blocking accept in each worker
            lst.sock.setblocking(len(self.listeners) == 1 and not speaks_http)
        handed = os.environ.pop(parking.ENV, None)
        if speaks_http:  # idle keep-alive connections no worker holds (docs/http.md)
            self.parking = parking.ParkingLot(cfg.http_keepalive, self.sel, handed)
        else:
            parking.discard(handed)
        if (failed := self._broodlord_boot()) is not None:
            return failed
        self.board = Scoreboard(scoreboard.slots_for(cfg.processes))  # room for `emperor ctl scale`
        try:
            static.wrap(_failing_app("static check"), cfg)  # directories checked once, before any fork
        except static.StaticError as exc:
            log.error("%s", exc)
            return Exit.CONFIG
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
        return None

    def _adopt_old_workers(self) -> None:
        raw = os.environ.pop(ENV_OLD_WORKERS, "")
        if raw:
            try:
                data = json.loads(raw)
                self.old_workers = {int(p): float(data["deadline"]) for p in data["pids"]}
            except (ValueError, KeyError, TypeError):
                log.error("ignoring malformed %s", ENV_OLD_WORKERS)

    # ---- the loop ------------------------------------------------------------------------
    def run(self) -> int:
        failure = self.boot()
        if failure is not None:
            self._finish(vacuum=True, force=True)
            return failure
        _title(f"{self.cfg.procname_prefix}emperor: master {self.name}")
        self._install_signals()
        if self.chan is not None:
            self.sel.register(self.chan, selectors.EVENT_READ, self._on_channel)
        self.sel.register(self.wake_r, selectors.EVENT_READ, self._on_signals)
        if (served := open_server(self)) is not None:
            self.stats_server, self.stats = served
            self.sel.register(self.stats_server, selectors.EVENT_READ, self.stats_server.service)
        log.info("%s: master pid %d%s, %d worker(s) x %d thread(s), app %s, sockets: %s", self.name,
                 self.pid, f" (reload {self.reloads})" if self.reloads else "", self.cfg.processes,
                 self.cfg.threads, loader.describe(self.cfg),
                 ", ".join(lst.describe() for lst in self.listeners))
        self._reap()  # old workers may have exited before this image installed its SIGCHLD handler
        for wid in range(1, self.cfg.processes + 1):
            self._spawn(wid)
        while self.state != "done":
            for key, _ in self.sel.select(self._timeout()):
                key.data()
            self._tick()
        return self.exit_code

    def _timeout(self) -> float:
        if not self.ready_sent or self.respawn_at:
            return 0.05
        t = 1.0
        if self.state != RUNNING:
            t = min(t, max(0.0, self.deadline - time.monotonic()), 0.1)
        if self.sos is not None:  # wake for the backlog probe on time, not up to a second late
            t = min(t, max(0.0, self.sos.next_check - time.monotonic()))
        return t

    def _install_signals(self) -> None:
        self.wake_w.setblocking(False)
        self.wake_r.setblocking(False)
        signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)
        for sig in (signal.SIGCHLD, signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT,
                    signal.SIGUSR1, signal.SIGUSR2):
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

    def _on_channel(self) -> None:
        assert self.chan is not None
        try:
            packet = self.chan.recv(channel.MAX_PAYLOAD + 1)
        except BlockingIOError:
            return
        except OSError:
            packet = b""
        if not packet:
            log.error("%s: lost the emperor (channel closed): stopping now", self.name)
            self.sel.unregister(self.chan)
            self.chan.close()
            self.chan = None
            self.stop(graceful=False)
            return
        decoded = channel.decode(packet)
        if decoded is None:
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
            self.scale(_payload)

    def _tick(self) -> None:
        now = time.monotonic()
        if self.state == RUNNING:
            for wid, when in list(self.respawn_at.items()):
                if wid > self.cfg.processes:  # scaled down meanwhile
                    del self.respawn_at[wid]
                elif now >= when and wid not in self.workers.values():  # (a retiring one holds the slot)
                    del self.respawn_at[wid]
                    self._spawn(wid)
            self._check_harakiri()
            self._report()
            self._broodlord_tick(now)
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
            self.ready_sent = channel.send(self.chan, Msg.READY, str(len(self.workers)))
            log.info("%s: ready: %d worker(s) accepting", self.name, len(self.workers))
        if self.ready_sent and not self.loyal_sent and self.board.total_requests() > 0:
            self.loyal_sent = channel.send(self.chan, Msg.LOYAL)

    def _all_accepting(self) -> bool:
        b, live = self.board, set(self.workers.values())
        wanted = range(1, self.cfg.processes + 1)  # a worker retiring after a scale-down does not count
        return bool(self.workers) and all(
            wid in live and b.get(wid - 1, scoreboard.ACCEPTING) for wid in wanted)

    # ---- workers -------------------------------------------------------------------------
    def _spawn(self, wid: int) -> None:
        cfg = self.cfg
        load = lambda: static.wrap(loader.load(cfg), cfg)  # noqa: E731 - lazy-apps import in the worker
        self.board.reset(wid - 1, 0)  # before fork(): the child may mark itself accepting at once
        pid = os.fork()
        if pid == 0:  # the worker
            try:
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
                worker = Worker(wid, self.listeners, cfg, self.board, self.app, load)
                if self.parking is not None:
                    self.parking.close_in_worker()
                    worker.park = self.parking.worker_end
                _title(f"{cfg.procname_prefix}emperor: worker {wid} {self.name}")
                worker.run()
            finally:
                os._exit(1)
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
                continue
            self._worker_died(wid, pid, status)

    def _worker_died(self, wid: int, pid: int, status: int) -> None:
        lived = time.monotonic() - self.spawned_at.get(wid, 0.0)
        harakiri = pid in self.harakiri_done
        self.harakiri_done.discard(pid)
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            what = f"killed by signal {sig} ({signal.Signals(sig).name})"
            if sig == signal.SIGKILL and not harakiri and self.state == RUNNING:
                what += " (possible OOM)"
            code = -sig
        else:
            code = os.WEXITSTATUS(status)
            what = f"exited with status {code}"
        if self.state != RUNNING:
            log.info("%s: worker %d (pid %d) %s", self.name, wid, pid, what)
            return
        if wid > self.cfg.processes:
            log.info("%s: worker %d (pid %d) retired after a scale-down: %s", self.name, wid, pid, what)
            return
        if code == 0:
            log.info("%s: worker %d (pid %d) exited after recycling; respawning", self.name, wid, pid)
            self.quick_deaths[wid] = 0
            self._spawn(wid)
            return
        if code == Exit.APP_LOAD and self.cfg.lazy_apps and self.cfg.need_app:
            log.error("%s: worker %d could not load the app (lazy-apps, need-app): stopping", self.name, wid)
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
                _killpg(pid, signal.SIGKILL)

    def _log_status(self) -> None:
        for pid, wid in sorted(self.workers.items(), key=lambda kv: kv[1]):
            b, i = self.board, wid - 1
            log.info("%s: worker %d pid %d requests %d %s respawns %d harakiri %d", self.name, wid, pid,
                     b.get(i, scoreboard.REQUESTS), "busy" if b.get(i, scoreboard.BUSY_SINCE) else "idle",
                     b.get(i, scoreboard.RESPAWNS), b.get(i, scoreboard.HARAKIRI))

    # ---- broodlord (docs/broodlord.md) ---------------------------------------------------
    def _broodlord_boot(self) -> int | None:
        """The zerg server, the SOS watch (a vassal) and the idle watch (a zerg)."""
        cfg, now = self.cfg, time.monotonic()
        if cfg.zerg_server:
            try:
                self.zerg_server = zerg.ZergServer(cfg.zerg_server, self.listeners)
            except (addresses.AddressError, OSError) as exc:
                log.error("zerg-server: %s", exc)
                return Exit.SOCKET
            self.sel.register(self.zerg_server.sock, selectors.EVENT_READ, self.zerg_server.on_accept)
        if cfg.vassal_sos_backlog or cfg.vassal_sos:
            if self.chan is None:
                log.warning("%s: vassal-sos-backlog/vassal-sos ignored: not governed by an emperor",
                            self.name)
            else:
                probe = backlog.Probe([(lst.name, lst.sock) for lst in self.listeners])
                self.sos = backlog.SosWatch(probe, cfg.vassal_sos_backlog, cfg.vassal_sos, now)
        if cfg.idle and cfg.die_on_idle:
            self.idle = zerg.IdleWatch(cfg.idle, now)
        elif cfg.idle:
            log.warning("%s: idle = %d does nothing without die-on-idle (cheap mode is not implemented)",
                        self.name, cfg.idle)
        return None

    def _broodlord_tick(self, now: float) -> None:
        """Once a second: SOS while overloaded (a vassal); leave when idle (a zerg)."""
        if self.sos is not None and self.chan is not None:
            busy = [self.board.get(wid - 1, scoreboard.BUSY_SINCE) for wid in self.workers.values()]
            all_busy = len(busy) == self.cfg.processes and all(busy)
            payload = self.sos.check(now, all_busy)
            if payload is not None:
                channel.send(self.chan, Msg.SOS, payload)
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
    def scale(self, payload: str) -> None:
        """Change the worker count now, without a reload: spawn the missing workers, or retire the
        highest-numbered ones gracefully (SIGTERM: they finish their request and leave).

        Runtime only: ``cfg.processes`` is overwritten in memory, so every reader (readiness,
        stats, SOS) sees the new count, and a reload re-reads the ini and its value wins again.
        """
        if self.state != RUNNING:
            log.warning("%s: scale ignored: the vassal is %s", self.name, self.state)
            return
        try:
            count = int(payload)
        except ValueError:
            log.error("%s: scale ignored: %r is not a worker count", self.name, payload)
            return
        if not 1 <= count <= self.board.slots:
            log.error("%s: scale to %d refused: the scoreboard has %d slots (4 x the ini's processes, at "
                      "least 64); raise processes in the ini and reload", self.name, count, self.board.slots)
            return
        old = self.cfg.processes
        self.cfg.values["processes"] = count
        log.info("%s: scaled: %d -> %d worker(s) (runtime only: a reload restores the ini's value)",
                 self.name, old, count)
        live = set(self.workers.values())
        for wid in range(1, count + 1):
            if wid not in live and wid not in self.respawn_at:
                self.respawn_at[wid] = time.monotonic()  # _tick spawns it once its slot is free
        for pid, wid in list(self.workers.items()):
            if wid > count:
                _kill(pid, signal.SIGTERM)
        self.ready_sent = self.ready_sent and count <= old  # READY again once the new ones accept

    # ---- reload and stop -----------------------------------------------------------------
    def reload(self) -> None:
        if self.state != RUNNING:
            return
        try:
            config.from_args(self.pairs, self.scope)
        except config.ConfigError as exc:
            log.error("%s: reload refused, the configuration is invalid (still running the previous "
                      "one): %s", self.name, exc)
            if self.chan is not None:
                channel.send(self.chan, Msg.CONFIG_ERROR, str(exc))
            return
        self.state = RELOADING
        deadline = time.monotonic() + self.cfg.reload_mercy
        old = dict.fromkeys(self.workers, deadline) | self.old_workers
        for pid in self.workers:
            _kill(pid, signal.SIGTERM)
        env = dict(os.environ)
        env[sockets.ENV_FDS] = sockets.export(self.listeners)
        if self.parking is not None:
            env[parking.ENV] = self.parking.export()
        env[ENV_RELOADS] = str(self.reloads + 1)
        env[ENV_OLD_WORKERS] = json.dumps({"pids": list(old), "deadline": deadline})
        if self.chan is not None:
            self.chan.set_inheritable(True)
            env[channel.ENV_FD] = str(self.chan.fileno())
            env[channel.ENV_NAME] = self.name
        argv = [sys.executable, "-m", "emperor.vassal", *render_args(self.pairs)]
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
        if self.stats_server is not None:
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
    try:
        cfg = config.from_args(pairs, scope)
    except config.ConfigError as exc:
        log.error("configuration error: %s", exc)
        if chan is not None:
            channel.send(chan, Msg.CONFIG_ERROR, str(exc))
        return Exit.CONFIG
    if not name:
        name = os.path.splitext(os.path.basename(cfg.files[0]))[0] if cfg.files else "vassal"
        logs.setup(name)
    logfile = cfg.logto or cfg.daemonize
    if cfg.daemonize and chan is None and not os.environ.get(ENV_RELOADS):
        _daemonize()
    if logfile:
        try:
            logs.redirect(logfile)
        except OSError as exc:
            log.error("logto %s: %s", logfile, exc.strerror)
            return Exit.CONFIG
    return Master(cfg, pairs, scope, chan, name).run()


def _channel_dead(chan: socket.socket) -> bool:
    """The emperor may have died before PR_SET_PDEATHSIG took effect: check the channel once."""
    try:
        return chan.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _daemonize() -> None:
    """Classic double fork for init.d users; under an emperor or systemd do not daemonize."""
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.close(devnull)
