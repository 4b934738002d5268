"""The emperor's main loop: one thread owns every vassal.

Everything arrives at one ``select``: signals (through ``signal.set_wakeup_fd``; the
handlers do nothing else), the monitor's inbox, each vassal's channel and each vassal's
pidfd (readable when the process exits, so there is no SIGCHLD race and no recycled pid).
An iteration handles those events, rescans if a file event has settled or the periodic
rescan is due, reconciles, then runs the timers: throttled respawns, overdue stops,
the shutdown deadline. Order of work and states: see ``docs/emperor.md``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from emperor import __version__, channel, config, daemon, etcdkv, ini, logs, privileges
from emperor.channel import Msg, decode
from emperor.control.protocol import Identity
from emperor.empire import access, broodlord, etcdsource, fleet, ondemand, reconcile, scan, spawn
from emperor.empire.dirlock import DirLockError, DirLocks
from emperor.empire.monitor import Inbox, Monitor
from emperor.empire.notify import Notifier
from emperor.empire.operator import BootError, Operator
from emperor.empire.throttle import Throttle
from emperor.empire.vassals import ALIVE, DEAD, RUNNING, After, State, Vassal, describe_exit
from emperor.options import Scope
from emperor.pidfile import PidFile, PidFileError

log = logging.getLogger("emperor")

SETTLE = 0.05  # a file event is acted on once events have been quiet this long ...
MAX_SETTLE = 1.0  # ... or this long after the first one, so a never-ending stream still applies
HANDOVER = 2.0  # a new vassal waits this long at most for vassals being stopped (a rename reuses the socket)
READY_TIMEOUT = 20.0  # READY=1 to systemd once the first vassals are up, or after this long
FINAL_KILL_WAIT = 5.0  # after the last SIGKILL, how long to wait for the kernel to reap
SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT)
HANDLED_SIGNALS = (*SHUTDOWN_SIGNALS, signal.SIGHUP, signal.SIGUSR1, signal.SIGURG, signal.SIGWINCH)


@dataclass
class Settings:
    """The emperor's configuration, resolved (absolute paths, seconds)."""

    sources: list[scan.Source | etcdsource.EtcdSource]
    mercy: float  # reload-mercy: its emperor default (30 s) is in the option table
    freq: float = 3.0
    throttle: float = 1.0
    max_throttle: float = 180.0
    tyrant: bool = False
    vassal_before: list[str] = field(default_factory=list)
    vassal_includes: list[str] = field(default_factory=list)
    logto: str | None = None
    touch_logreopen: str | None = None
    stats: str | None = None  # emperor-stats, stats-http, emperor-control (emperor/empire/operator.py)
    stats_http: bool = False
    control: str | None = None
    broodlord: int = 0  # the zerg pool (emperor-broodlord)
    required_heartbeat: float = 30.0  # emperor-required-heartbeat
    identity: Identity | None = None  # names the default control endpoint (emperor/control/protocol.py)
    ident: privileges.Identity = field(default_factory=privileges.Identity)  # uid/gid: dropped after binding
    on_demand: ondemand.Modes = field(default_factory=ondemand.Modes)  # emperor-on-demand-*
    fleet: fleet.FleetSettings | None = None  # emperor-etcd (docs/fleet.md)

    @classmethod
    def from_config(cls, cfg: config.Config, cwd: str) -> Settings:
        if not cfg.emperor:
            raise config.ConfigError("no vassal directory: set emperor = DIR (or a glob)", key="emperor")
        fleet_settings, sources = fleet_config(cfg, cwd)
        if cfg.emperor_tyrant and os.geteuid() != 0:
            raise config.ConfigError("tyrant mode needs root (it runs each vassal as its file's owner)",
                                     cfg.where("emperor-tyrant"), key="emperor-tyrant")
        ident = privileges.resolve(cfg)
        if cfg.emperor_tyrant and ident.drops:
            raise config.ConfigError("emperor-tyrant needs the emperor to stay root: remove uid/gid from "
                                     "the emperor's configuration", cfg.where("emperor-tyrant"),
                                     key="emperor-tyrant")
        if ident.drops and os.geteuid() != 0:
            raise config.ConfigError("the emperor can switch to uid/gid only when started as root",
                                     cfg.where("uid" if ident.uid is not None else "gid"), key="uid")
        return cls(
            stats=cfg.emperor_stats, stats_http=cfg.stats_http, control=cfg.emperor_control,
            sources=sources, freq=max(0.1, cfg.emperor_freq), throttle=cfg.emperor_throttle / 1000,
            max_throttle=max(cfg.emperor_max_throttle, cfg.emperor_throttle) / 1000,
            tyrant=cfg.emperor_tyrant, vassal_before=spawn.vassal_set_args(cfg.vassal_set),
            vassal_includes=[os.path.join(cwd, p) for p in cfg.vassals_include], mercy=cfg.reload_mercy,
            logto=cfg.logto or cfg.daemonize, touch_logreopen=cfg.touch_logreopen,
            broodlord=cfg.emperor_broodlord, required_heartbeat=cfg.emperor_required_heartbeat,
            identity=Identity.of_config(cfg.files, cfg.emperor, cwd), ident=ident,
            on_demand=_on_demand_modes(cfg, cwd), fleet=fleet_settings)


class Emperor:
    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self.s = settings
        self.clock = clock
        self.vassals: dict[str, Vassal] = {}
        self.procs: dict[str, spawn.Process] = {}
        self.refused: dict[str, str] = {}
        self.found: dict[str, scan.Found] = {}
        self.sel = selectors.DefaultSelector()
        self.inbox = Inbox()
        self.monitor = Monitor(self.inbox)
        self.notify = Notifier()
        self.signals: list[int] = []
        self.shutdown_at: float | None = None  # the shutdown deadline, once Ragnarok began
        self.killed_all = False
        self.now = clock()
        self.rescan_at = self.now  # the first scan is immediate
        self.event_since: float | None = None  # first unsettled file event
        self.event_last = 0.0
        self.sent_ready = False
        self.reloading_all = False
        self.started_at = self.now
        self.next_watchdog = self.now
        self.logreopen_mtime = self._mtime(self.s.touch_logreopen)
        self.next_logreopen_check = self.now + 1
        self.console = Operator(self)  # stats, metrics, control plane, events
        self.brood = broodlord.Broodlord(settings.broodlord, clock)  # docs/broodlord.md
        self.zergs: dict[str, broodlord.Zerg] = {}  # their processes are in self.procs too
        self.zerg_seq = 0
        self.ondemand = ondemand.OnDemand(settings.on_demand, self.sel, settings.tyrant)  # its sockets
        self.fleet = fleet.Fleet(settings.fleet, list(settings.sources), self.inbox.post)  # docs/fleet.md

    # ---------------------------------------------------------------- the loop

    def open(self) -> bool:
        """Bind what the operator asked for (emperor-stats, emperor-control) before anything starts:
        one that cannot be served stops the emperor (False), before a daemon reports success."""
        try:
            self.console.open()
        except BootError as exc:
            log.error("cannot start: %s", exc)
            return False
        return True

    def run(self) -> int:
        """The loop; ``open()`` must have succeeded."""
        self._wake_r, self._wake_w = socket.socketpair()
        for sock in (self._wake_r, self._wake_w):
            sock.setblocking(False)
        old_wakeup = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        old_handlers = {sig: signal.signal(sig, self._on_signal) for sig in HANDLED_SIGNALS}
        self.sel.register(self._wake_r, selectors.EVENT_READ, ("signal", None))
        self.sel.register(self.inbox.reader, selectors.EVENT_READ, ("inbox", None))
        self.monitor.start()
        self.fleet.start()
        dirs = ", ".join(s.path for s in self.s.sources)
        log.info("starting: emperor %s (pid %d) governing %s%s", __version__, os.getpid(), dirs,
                 " in tyrant mode" if self.s.tyrant else "")
        try:
            privileges.drop(self.s.ident)  # uid/gid: everything that needs root is bound (uWSGI's order)
            while not self._finished():
                self._iterate()
        finally:
            self.monitor.stop()
            self.fleet.stop()
            self.console.close()
            self.ondemand.close()
            for name in list(self.procs):
                self._close_proc(name)
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
            self.sel.close()
            self.inbox.close()
            self._wake_r.close()
            self._wake_w.close()
        self.notify.close()
        log.info("exiting: emperor (pid %d): all vassals are gone", os.getpid())
        return 0

    def _on_signal(self, signum: int, frame: object) -> None:
        self.signals.append(signum)  # the work happens in the loop

    def _finished(self) -> bool:
        return self.shutdown_at is not None and not self.procs

    def _iterate(self) -> None:
        self.ondemand.sync(self.vassals, self.clock())  # watch the sockets of vassals without a process
        timeout = max(0.0, self._next_deadline() - self.clock())
        for key, _ in self.sel.select(timeout):
            kind, name = key.data
            self.now = self.clock()
            if kind == "signal":
                with contextlib.suppress(OSError):
                    while self._wake_r.recv(4096):
                        pass
            elif kind == "inbox":
                if self.inbox.take() and self.shutdown_at is None:
                    self.event_since = self.event_since or self.now
                    self.event_last = self.now
            elif kind == "channel":
                self._read_channel(name)
            elif kind == "exit":
                self._reap(name)
            elif kind == "console":
                self.console.ready(name)
            elif kind == "zerg":
                self._read_zerg(name)
            elif kind == "zerg-exit":
                self._reap_zerg(name)
            elif kind == "ondemand":
                v, f = self.vassals.get(name), self.found.get(name)
                if self.ondemand.connection(name, v if f else None, self.now) and v and f:
                    self._spawn(v, f, woken=True)
            elif kind == "ondemand-exec":
                v, f = self.vassals.get(name), self.found.get(name)
                if self.ondemand.answer(name, v, f, self.now) and v and f:
                    self._spawn(v, f, woken=True)  # the command named no address: an ordinary vassal
        self.now = self.clock()
        self.console.tick()
        while self.signals:
            self._handle_signal(self.signals.pop(0))
        if self.shutdown_at is None and self._rescan_due():
            self.rescan()
        self._timers()
        self.fleet.sync(self.vassals, self.now)

    def _rescan_due(self) -> bool:
        if self.event_since is not None and (
                self.now - self.event_last >= SETTLE or self.now - self.event_since >= MAX_SETTLE):
            return True
        return self.now >= self.rescan_at

    def _next_deadline(self) -> float:
        deadlines = [self.now + 60.0]
        if self.shutdown_at is None:
            deadlines.append(self.rescan_at)
            if self.event_since is not None:
                deadlines.append(min(self.event_last + SETTLE, self.event_since + MAX_SETTLE))
        else:
            deadlines.append(self.shutdown_at if not self.killed_all else self.shutdown_at + FINAL_KILL_WAIT)
        for v in self.vassals.values():
            if v.state == State.THROTTLED and not self._zergs_of(v.name):  # else: when they exit
                deadlines.append(v.respawn_at)
            elif v.state == State.STOPPING and not v.killed:
                deadlines.append(v.stop_deadline)
            elif (hung := v.hung_deadline(self.s.required_heartbeat)) is not None:
                deadlines.append(hung)
        if self.notify.enabled and not self.sent_ready:
            deadlines.append(self.started_at + READY_TIMEOUT)
        if self.notify.watchdog_interval:
            deadlines.append(self.next_watchdog)
        if self.s.touch_logreopen:
            deadlines.append(self.next_logreopen_check)
        deadlines += [z.stop_deadline for z in self.zergs.values() if z.leaving and not z.killed]
        deadlines.append(self.console.deadline(self.now))
        if (asked := self.ondemand.deadline()) is not None:
            deadlines.append(asked)  # emperor-on-demand-exec: its answer is overdue then
        deadlines.append(self.fleet.deadline(self.now))
        return min(deadlines)

    # ---------------------------------------------------------------- scanning

    def rescan(self) -> None:
        self.event_since = None
        self.rescan_at = self.now + self.s.freq
        found, refused = scan.scan(self.s.sources, self.s.tyrant)
        if self.s.tyrant:
            interpreter = access.Cache()
            for name, f in list(found.items()):
                if f.uid is None or f.gid is None:
                    continue
                exe = spawn.vassal_argv(f.path, self.s.vassal_before, self.s.vassal_includes, True,
                                        f.content)[0]  # its venv's python (home), else ours
                if why := interpreter.problem(f.uid, f.gid, exe):
                    refused[name] = f"tyrant mode would run it as its owner, but {why}"
                    del found[name]
        log.debug("rescan: %d vassal files, %d refused", len(found), len(refused))
        for name, reason in refused.items():
            if self.refused.get(name) != reason:
                log.error("refused: %s: %s", scan.shown(name), reason)
        for name in set(self.refused) - set(refused):
            if name in found:
                log.info("accepted: %s is usable again", scan.shown(name))
        self.refused = refused
        self.found = found
        self.console.hide_held(self.found)  # `emperor ctl stop` holds a vassal until `start`
        self.monitor.watch(self._watch_dirs())
        self.reconcile()

    def _handover_until(self) -> float:
        """New vassals wait while others are leaving, so a renamed file finds its socket free.

        A rename looks like "old name gone, new name found" in one scan; spawning the new one
        at once would race the old one for the same socket. The wait is bounded by HANDOVER.
        """
        until = 0.0
        for v in self.vassals.values():
            if v.missing_since is not None:
                until = max(until, v.missing_since + HANDOVER)
            elif v.state == State.STOPPING and not v.killed:
                until = max(until, v.stop_deadline - self.s.mercy + HANDOVER)
        return until

    def _watch_dirs(self) -> set[str]:
        dirs: set[str] = set()
        for src in self.s.sources:
            dirs |= src.watch_dirs()
        for f in self.found.values():
            if f.target_dir and os.path.isdir(f.target_dir):
                dirs.add(f.target_dir)
        return dirs

    def reconcile(self) -> None:
        if self.shutdown_at is not None:
            return
        for name in self.found:
            if name in self.vassals:
                self.vassals[name].missing_since = None
        actions = reconcile.plan(self.found, self.vassals, self.now, SETTLE)
        actions.sort(key=lambda a: a.do == reconcile.Do.SPAWN)  # departures first, then arrivals
        for act in actions:
            v = self.vassals.get(act.name)
            if act.do == reconcile.Do.SPAWN and (handover := self._handover_until()) > self.now:
                self.rescan_at = min(self.rescan_at, handover)  # after the stops (a rename, most often)
                continue
            if act.do == reconcile.Do.SPAWN and act.found:
                v = Vassal(act.found.name, act.found.path, uid=act.found.uid, gid=act.found.gid,
                           throttle=Throttle(self.s.throttle, self.s.max_throttle))
                self.vassals[act.name] = v
                self._spawn(v, act.found)
            elif v is None:
                continue
            elif act.do == reconcile.Do.RELOAD and act.found:
                self._reload(v, act.found.stamp)
            elif act.do == reconcile.Do.RETRY and act.found:
                log.info("retrying: %r: its file changed", v.name)
                v.unthrottle(self.now)
                self._spawn(v, act.found)
            elif act.do == reconcile.Do.RESTART:
                self._stop(v, "(its owner changed; it restarts under the new one)")
            elif act.do == reconcile.Do.MISSING:
                v.missing_since = self.now
                self.rescan_at = min(self.rescan_at, self.now + SETTLE)
            elif act.do == reconcile.Do.STOP:
                self._stop(v, "(its file is gone)")
            elif act.do == reconcile.Do.FORGET:
                was = v.state.value if v.state else "new"
                log.info("removed: %r (its file is gone; it was %s)", v.name, was)
                del self.vassals[act.name]
        self._status()

    # ---------------------------------------------------------------- acting on vassals

    def _spawn(self, v: Vassal, f: scan.Found, woken: bool = False) -> None:
        v.path, v.uid, v.gid = f.path, f.uid, f.gid
        v.on_event = self.console.vassal_event
        if not woken and self.ondemand.arm(v, f, self.now):
            return  # on-demand: it starts at the first connection (emperor/empire/ondemand.py)
        argv = spawn.vassal_argv(f.path, self.s.vassal_before, self.s.vassal_includes, f.uid is not None,
                                 f.content)
        try:
            proc = spawn.spawn(v.name, f.path, argv, f.uid, f.gid, f.content, self.ondemand.handoff(v.name))
        except OSError as exc:
            v.stamp = f.stamp
            hint = ""
            if isinstance(exc, PermissionError) and f.uid is not None:
                hint = (f" (tyrant mode: uid {f.uid} must be able to run {sys.executable} and read "
                        f"the emperor package, or set home to a virtualenv it can run: docs/hosting.md)")
            v.spawn_failed(self.now, f"{exc}{hint}")
            return
        self.procs[v.name] = proc
        self.sel.register(proc.channel, selectors.EVENT_READ, ("channel", v.name))
        self.sel.register(proc.pidfd, selectors.EVENT_READ, ("exit", v.name))
        v.spawned(proc.pid, self.now, f.stamp)

    def _reload(self, v: Vassal, stamp: scan.Stamp | None = None) -> None:
        if v.request_reload(stamp):
            self._send(v, Msg.RELOAD)
            for z in self._zergs_of(v.name):  # the new code reaches the zergs too (they keep the sockets)
                self._send_zerg(z, Msg.RELOAD)

    def _stop(self, v: Vassal, why: str = "") -> None:
        if v.stop(self.now + self.s.mercy, why):
            self._send(v, Msg.STOP)
        self._stop_zergs(v.name, "(its vassal is stopping)")
        self.brood.forget(v.name)

    def _send(self, v: Vassal, msg: Msg) -> None:
        proc = self.procs.get(v.name)
        if proc is None:
            return
        content = self._checked_content(v.name, v.uid, v.gid) if msg == Msg.RELOAD else None
        sent = proc.send(msg) if content is None else proc.send_ini(msg, content)
        if not sent:
            log.debug("channel: cannot send %s to %r; it is exiting", msg.name, v.name)

    def _checked_content(self, name: str, uid: int | None, gid: int | None) -> bytes | None:
        """The ini bytes of the last scan, for a RELOAD: the vassal never re-reads its file by path.

        None when the file is gone or now belongs to someone else (that vassal is being
        stopped or restarted): the vassal then reloads the bytes it already has.
        """
        f = self.found.get(name)
        if f is None or (f.uid, f.gid) != (uid, gid):
            return None
        return f.content

    def _messages(self, name: str, proc: spawn.Process) -> Iterator[tuple[Msg, str]]:
        """The messages waiting on a child's channel (vassal or zerg), at most 64 per call so a
        chatty child cannot starve the others. EOF means the process is exiting: the channel
        leaves the selector and its pidfd says when it is gone."""
        for _ in range(64):
            try:
                packet = proc.channel.recv(1024)
            except BlockingIOError:
                return
            except OSError:
                packet = b""
            if not packet:
                with contextlib.suppress(KeyError, ValueError):
                    self.sel.unregister(proc.channel)
                return
            message = decode(packet)
            if message is None:
                log.debug("channel: %r sent an unknown message %r", name, packet[:16])
                continue
            yield message

    def _read_channel(self, name: str) -> None:
        proc, v = self.procs.get(name), self.vassals.get(name)
        if proc is None or v is None:
            return
        for msg, payload in self._messages(name, proc):
            self._on_message(v, msg, payload)

    def _on_message(self, v: Vassal, msg: Msg, payload: str) -> None:
        if msg == Msg.READY:
            if v.ready(self.now):
                self._send(v, Msg.RELOAD)
            self._status()
        elif msg == Msg.LOYAL:
            if v.became_loyal(self.now):
                self._send(v, Msg.RELOAD)
        elif msg == Msg.CONFIG_ERROR:
            if v.config_error(payload):
                self._send(v, Msg.RELOAD)
        elif msg == Msg.BYE:
            log.info("bye: %r (pid %s) %s", v.name, v.pid, payload)
        elif msg == Msg.SOS:
            self._on_sos(v, payload)
        elif msg == Msg.HEARTBEAT:
            v.heartbeat(self.now, payload)
        elif msg == Msg.SCALED:
            self.console.scaled(v, payload)
        elif msg == Msg.IDLE:
            v.idle_exit = True  # die-on-idle: it is leaving; an on-demand one waits again (ondemand.py)
            log.info("idle: %r (pid %s) has been idle for %s s: it is leaving", v.name, v.pid, payload)
        elif msg == Msg.ENDPOINTS:
            self.fleet.reported(v.name, payload)
        elif msg == Msg.WORKERS:
            self._on_workers(v, payload)
        else:
            log.debug("channel: %r sent %s %s", v.name, msg.name, payload)

    def _on_workers(self, v: Vassal, payload: str) -> None:
        """The vassal's worker counts (cheaper spawned or retired, or a scale): kept for
        ``emperor ctl list/status`` and the stats, and published as a ``workers`` event."""
        fields = payload.split()
        if len(fields) != 5 or not all(f.isdigit() for f in fields):
            log.warning("channel: %r sent malformed worker counts %r", v.name, payload[:60])
            return
        cur, low, high, spawns, cheaps = (int(f) for f in fields)
        v.workers = (cur, low, high, spawns, cheaps)
        self.console.publish(v.name, "workers", pid=v.pid or 0, workers=cur, min=low, max=high,
                             spawns=spawns, cheaps=cheaps)

    def _reap(self, name: str) -> None:
        proc, v = self.procs.get(name), self.vassals.get(name)
        if proc is None:
            return
        returncode = proc.reap()  # kills leftovers of its group (a stray grandchild) before reaping
        if returncode is None:
            return  # not yet: the pidfd fired early (it should not)
        self._close_proc(name)
        if v is None:
            return
        if (v.idle_exit and v.on_demand and returncode == 0 and v.state != State.STOPPING
                and self.shutdown_at is None and name in self.found):
            v.slept(returncode)  # on-demand: back to waiting for a connection (ondemand.py)
            self._stop_zergs(name, "(its on-demand vassal went idle)")
            self._status()
            return
        after = v.exited(returncode, self.now, shutting_down=self.shutdown_at is not None)
        self._stop_zergs(name, "(its vassal exited: the respawn needs its sockets)")
        if after == After.FORGET:
            del self.vassals[name]
            if self.shutdown_at is None:
                self.reconcile()  # re-added meanwhile (rename back, owner change): spawn it again
        elif after == After.WAIT and self.s.tyrant is False:
            self._explain_config_error(v)
        self._status()

    def _close_proc(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        for obj in (proc.channel, proc.pidfd):
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(obj)
        proc.close()

    def _explain_config_error(self, v: Vassal) -> None:
        """Repeat the vassal's config error in the emperor's words (and keep it for stats)."""
        args = [("ini", spawn.ini_spec(v.path))]
        f = self.found.get(v.name)
        path = os.path.abspath(v.path)
        ini.pin(path, f.content if f else None)  # the bytes the vassal was given, not the path again
        try:
            config.from_args(args, Scope.VASSAL)
        except config.ConfigError as exc:
            v.last_error = str(exc)
            log.error("failed: %r: %s", v.name, exc)
        except Exception:  # the vassal's own message is in the log already
            return
        finally:
            ini.pin(path, None)

    # ---------------------------------------------------------------- timers

    def _timers(self) -> None:
        now = self.now
        if self.shutdown_at is None:
            for v in list(self.vassals.values()):
                if v.state == State.THROTTLED and now >= v.respawn_at and not self._zergs_of(v.name):
                    f = self.found.get(v.name)
                    if f is None:
                        continue  # reconcile forgets it
                    self._spawn(v, f)
        for v in self.vassals.values():
            if v.state == State.STOPPING and not v.killed and now >= v.stop_deadline:
                self._kill(v, f"did not stop within {self.s.mercy:g} s")
            elif (hung := v.hung_deadline(self.s.required_heartbeat)) is not None and now >= hung:
                v.last_error = (f"no heartbeat for {now - v.heartbeat_at:.0f} s (heartbeat = "
                                f"{v.heartbeat_every:g} s, emperor-required-heartbeat = "
                                f"{self.s.required_heartbeat:g} s): the master is hung")
                self._kill(v, f"{v.last_error}; it will be respawned")  # the exit takes the throttle path
        if self.shutdown_at is not None and now >= self.shutdown_at:
            if not self.killed_all:
                self.killed_all = True
                for v in self.vassals.values():
                    if v.name in self.procs and not v.killed:
                        self._kill(v, "no mercy: the shutdown bound is over")
                for z in self.zergs.values():
                    self._kill_zerg(z, "no mercy: the shutdown bound is over")
            elif now >= self.shutdown_at + FINAL_KILL_WAIT:
                for name in list(self.procs):
                    log.error("abandoning: %r (pid %s) survived SIGKILL", name, self.procs[name].pid)
                    self._close_proc(name)
        if self.notify.enabled:
            if not self.sent_ready and (now >= self.started_at + READY_TIMEOUT or self._all_settled()):
                self.sent_ready = True
                self.notify.send("READY=1", self._status_line())
            if self.reloading_all and self._all_settled():
                self.reloading_all = False
                self.notify.send("READY=1", self._status_line())
            if self.notify.watchdog_interval and now >= self.next_watchdog:
                self.notify.send("WATCHDOG=1")
                self.next_watchdog = now + self.notify.watchdog_interval
        for z in list(self.zergs.values()):
            if z.leaving and not z.killed and now >= z.stop_deadline:
                self._kill_zerg(z, "it did not stop in time")
        if self.s.touch_logreopen and now >= self.next_logreopen_check:
            self.next_logreopen_check = now + 1
            mtime = self._mtime(self.s.touch_logreopen)
            if mtime != self.logreopen_mtime:
                self.logreopen_mtime = mtime
                self._reopen_logs(f"{self.s.touch_logreopen} was touched")

    def _kill(self, v: Vassal, why: str) -> None:
        proc = self.procs.get(v.name)
        if proc is None:
            return
        v.killed = True
        log.error("killing: %r (pid %s) and its process group: %s", v.name, v.pid, why)
        proc.kill_group()

    def _all_settled(self) -> bool:
        """No vassal is starting or reloading (the first scan has happened)."""
        return self.rescan_at > self.started_at and not any(
            v.state in (State.STARTING, State.RELOADING) for v in self.vassals.values())

    # ---------------------------------------------------------------- signals

    def _handle_signal(self, signum: int) -> None:
        sig = signal.Signals(signum)
        log.info("signal: %s", sig.name)
        if signum in SHUTDOWN_SIGNALS:
            self.shutdown(sig.name)
        elif signum == signal.SIGHUP:
            self.reload_all()
        elif signum == signal.SIGUSR1:
            self._reopen_logs("SIGUSR1")
            for line in self.console.status_lines():
                log.info("status: %s", line)
        elif signum == signal.SIGURG:
            for v in self.vassals.values():
                if v.state in DEAD or v.throttle.throttled:
                    v.unthrottle(self.now)
            log.info("throttle: cleared for every vassal")
        elif signum == signal.SIGWINCH and self.shutdown_at is None:
            self.monitor.restart()
            log.info("monitor: restarted")
            self.rescan()

    def reload_all(self) -> None:
        if self.shutdown_at is not None:
            return
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify.send("RELOADING=1", f"MONOTONIC_USEC={usec}")
        self.reloading_all = True
        for v in self.vassals.values():
            if v.state in RUNNING:
                self._reload(v)
            elif v.state in DEAD:
                v.unthrottle(self.now)
                v.state = State.THROTTLED  # FAILED too: SIGHUP retries it now
        log.info("reloading: every vassal (%d)", len(self.vassals))

    def shutdown(self, why: str) -> None:
        if self.shutdown_at is not None:
            log.warning("shutdown: already stopping (%.0f s left before SIGKILL); sending KILL to vassals",
                        max(0.0, self.shutdown_at - self.now))
            for v in self.vassals.values():
                self._send(v, Msg.KILL)
            return
        self.shutdown_at = self.now + self.s.mercy
        alive = [v for v in self.vassals.values() if v.state in ALIVE]
        log.info("shutdown: %s: stopping %d vassals (SIGKILL after %g s)", why, len(alive), self.s.mercy)
        self.notify.send("STOPPING=1", f"STATUS=stopping {len(alive)} vassals")
        self.monitor.stop()
        for v in list(self.vassals.values()):
            if v.state in RUNNING:
                self._stop(v, "(emperor shutdown)")
            elif v.state in DEAD:
                del self.vassals[v.name]
        for z in self.zergs.values():
            self._stop_zerg(z, "stopped", "(emperor shutdown)")

    # ---------------------------------------------------------------- broodlord (docs/broodlord.md)

    def _zergs_of(self, parent: str) -> list[broodlord.Zerg]:
        return [z for z in self.zergs.values() if z.parent == parent]

    def _on_sos(self, v: Vassal, payload: str) -> None:
        """SOS read on ``v``'s own channel: a vassal can only ask for itself."""
        if self.s.broodlord <= 0 or self.shutdown_at is not None:
            return  # as uWSGI: ignored without broodlord
        if v.state not in (State.READY, State.LOYAL, State.RELOADING):
            return
        backlog, threshold = channel.parse_sos(payload)  # "BACKLOG THRESHOLD", or "busy" for vassal-sos
        verdict = self.brood.sos(v.name, backlog, threshold)
        if verdict.preempt:
            donors = [z for z in self._zergs_of(verdict.preempt) if not z.leaving]
            if donors:
                youngest = max(donors, key=lambda z: z.spawned_at)
                self._stop_zerg(youngest, "preempted", f"(fair share: {v.name!r} is overloaded too)")
            else:
                self.brood.gone(verdict.preempt, "preempted", preempted=True)  # nothing left to take
        if verdict.lend:
            for i in range(verdict.count):
                self._lend(v, verdict.slot + i, backlog)
        else:
            log.debug("sos: %r (backlog %s): no zerg: %s", v.name, payload, verdict.reason)

    def _lend(self, v: Vassal, slot: int, backlog: int | None) -> None:
        self.zerg_seq += 1
        name = f"{v.name}:zerg#{self.zerg_seq}"
        try:
            content = self._checked_content(v.name, v.uid, v.gid)
            argv = spawn.zerg_argv(v.path, v.uid is not None, content)
            proc = spawn.spawn(name, v.path, argv, v.uid, v.gid, content)
        except OSError as exc:
            log.error("lend failed: cannot start a zerg for %r: %s", v.name, exc)
            self.brood.spawn_failed(v.name)
            return
        self.procs[name] = proc
        self.sel.register(proc.channel, selectors.EVENT_READ, ("zerg", name))
        self.sel.register(proc.pidfd, selectors.EVENT_READ, ("zerg-exit", name))
        self.zergs[name] = broodlord.Zerg(name, v.name, proc.pid, self.now, backlog)
        v.zergs += 1
        v.lends += 1
        why = f"backlog {backlog}" if backlog is not None else "every worker busy"
        log.info("lent: zerg %d/%d to %r (%s): %r (pid %d)", slot, self.s.broodlord, v.name, why, name,
                 proc.pid)

    def _send_zerg(self, z: broodlord.Zerg, msg: Msg) -> None:
        proc, v = self.procs.get(z.name), self.vassals.get(z.parent)
        if proc is None:
            return
        content = self._checked_content(v.name, v.uid, v.gid) if v and msg == Msg.RELOAD else None
        if content is None:
            proc.send(msg)
        else:
            proc.send_ini(msg, content)

    def _stop_zerg(self, z: broodlord.Zerg, how: str, why: str) -> None:
        if z.leaving:
            return
        # one that is not ready yet serves nothing: it gets a second, not the full mercy
        z.leaving, z.stop_deadline = how, self.now + (self.s.mercy if z.ready else min(self.s.mercy, 1.0))
        log.info("stopping: zerg %r of %r (pid %d) %s", z.name, z.parent, z.pid, why)
        self._send_zerg(z, Msg.STOP)

    def _stop_zergs(self, parent: str, why: str) -> None:
        for z in self._zergs_of(parent):
            self._stop_zerg(z, "stopped", why)

    def _kill_zerg(self, z: broodlord.Zerg, why: str) -> None:
        proc = self.procs.get(z.name)
        if proc is None or z.killed:
            return
        z.killed = True
        log.error("killing: zerg %r (pid %d) and its process group: %s", z.name, z.pid, why)
        proc.kill_group()

    def _read_zerg(self, name: str) -> None:
        proc, z = self.procs.get(name), self.zergs.get(name)
        if proc is None or z is None:
            return
        for msg, payload in self._messages(name, proc):
            if msg == Msg.READY and not z.ready:
                z.ready = True
                self.brood.started(z.parent)
                log.info("zerg ready: %r (pid %d) serving %r in %.2f s", name, z.pid, z.parent,
                         self.now - z.spawned_at)
            elif msg == Msg.IDLE and not z.leaving:
                log.info("reclaimed: zerg %r of %r (pid %d), idle %s s", name, z.parent, z.pid, payload)
                self._stop_zerg(z, "idle", "(idle)")

    def _reap_zerg(self, name: str) -> None:
        proc, z = self.procs.get(name), self.zergs.get(name)
        if proc is None or z is None:
            return
        returncode = proc.reap()
        if returncode is None:
            return
        self._close_proc(name)
        del self.zergs[name]
        how = z.leaving or ("lost" if z.ready else "failed")
        self.brood.gone(z.parent, how, preempted=how == "preempted")
        v = self.vassals.get(z.parent)
        if v is not None:
            v.zergs = max(0, v.zergs - 1)
            v.reclaims += int(how == "idle")
        left = f"pool {self.brood.alive}/{self.s.broodlord}"
        if how in ("lost", "failed"):
            log.warning("lost: zerg %r of %r (pid %d) %s%s; its slot is free (%s)", name, z.parent, z.pid,
                        describe_exit(returncode),
                        "" if z.ready else " before it was ready", left)
        else:
            how_exit = "killed by the emperor" if z.killed else describe_exit(returncode)
            log.info("gone: zerg %r of %r (pid %d) %s (%s)", name, z.parent, z.pid, how_exit, left)

    def broodlord_snapshot(self) -> dict[str, object]:
        """Pool facts for the stats server: the policy's counters and every zerg alive."""
        snap: dict[str, object] = self.brood.snapshot()
        snap["zergs"] = [z.snapshot(self.now) for z in self.zergs.values()]
        return snap

    # ---------------------------------------------------------------- logs and status

    def _reopen_logs(self, why: str) -> None:
        """Reopen our log and pass it to every vassal and zerg: they write to it too (fd 2)."""
        try:
            if not logs.reopen(self.s.logto):
                return
        except OSError as exc:
            log.error("log: cannot reopen %s (%s): %s", self.s.logto, why, exc.strerror)
            return
        log.info("log: reopened %s (%s)", self.s.logto, why)
        for proc in self.procs.values():
            channel.send_fd(proc.channel, Msg.LOGREOPEN, 2)

    @staticmethod
    def _mtime(path: str | None) -> int:
        if not path:
            return 0
        try:
            return os.stat(path).st_mtime_ns
        except OSError:
            return 0

    def _status_line(self) -> str:
        counts: dict[str, int] = {}
        for v in self.vassals.values():
            key = v.state.value if v.state else "new"
            counts[key] = counts.get(key, 0) + 1
        detail = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        line = f"STATUS=The emperor is governing {len(self.vassals)} vassals"
        return line + (f" ({detail})" if detail else "")

    def _status(self) -> None:
        if self.notify.enabled and self.sent_ready:
            self.notify.send(self._status_line())

    # ---------------------------------------------------------------- public verbs (empire/operator.py)

    def reload(self, v: Vassal) -> None:
        """Gracefully reload a running vassal, as touching its file does (``emperor ctl reload``)."""
        self._reload(v)

    def stop(self, v: Vassal, why: str = "") -> None:
        """Gracefully stop a vassal (``emperor ctl stop``); ``why`` goes into the log line."""
        self._stop(v, why)


# -------------------------------------------------------------------- entry point


def fleet_config(cfg: config.Config, cwd: str) -> tuple[fleet.FleetSettings | None,
                                                       list[scan.Source | etcdsource.EtcdSource]]:
    """The emperor-etcd settings and the sources (directories, globs, etcd:// prefixes)."""
    tls = etcdkv.Tls(cfg.emperor_etcd_ca, cfg.emperor_etcd_cert, cfg.emperor_etcd_key)
    sources: list[scan.Source | etcdsource.EtcdSource] = []
    for spec in cfg.emperor:
        try:
            if etcdsource.is_etcd_spec(spec):
                if cfg.emperor_tyrant:
                    raise ValueError(f"{spec!r}: an etcd key has no owner to run it as; tyrant mode "
                                     "takes its vassals from files only")
                etcdkv.require_client()
                sources.append(etcdsource.EtcdSource(spec, cwd, tls))
            else:
                sources.append(scan.Source.parse(spec, cwd))
        except ValueError as exc:
            raise config.ConfigError(str(exc), cfg.where("emperor"), key="emperor") from None
    if not cfg.emperor_etcd:
        return None, sources
    try:
        etcdkv.require_client()
    except ValueError as exc:
        raise config.ConfigError(str(exc), cfg.where("emperor-etcd"), key="emperor-etcd") from None
    return fleet.FleetSettings(etcdkv.parse_endpoints(cfg.emperor_etcd), cfg.emperor_etcd_prefix,
                               cfg.emperor_etcd_ttl, cfg.emperor_etcd_advertise, tls), sources


def _on_demand_modes(cfg: config.Config, cwd: str) -> ondemand.Modes:
    """emperor-on-demand-*: the directory must exist (a typo would make every vassal fail to bind)."""
    directory = cfg.emperor_on_demand_directory
    if directory:
        directory = os.path.join(cwd, directory)
        if not os.path.isdir(directory):
            key = "emperor-on-demand-directory"
            raise config.ConfigError(f"{directory} is not a directory", cfg.where(key), key=key)
    return ondemand.Modes(cfg.emperor_on_demand_extension, directory, cfg.emperor_on_demand_exec)


def run_emperor(pairs: list[tuple[str, str]]) -> int:
    """``emperor --ini emperor.ini`` / ``emperor --emperor DIR``: returns the exit status."""
    try:
        cfg = config.from_args(pairs, Scope.EMPEROR)
        settings = Settings.from_config(cfg, os.getcwd())
    except config.ConfigError as exc:
        print(f"emperor: {exc}", file=sys.stderr)
        return 78
    for warning in cfg.warnings:
        print(f"emperor: warning: {warning}", file=sys.stderr)
    privileges.apply_umask(settings.ident)
    if cfg.daemonize:
        ready_fd = daemon.started()
        if ready_fd is None:
            return daemon.wait_for_report()
    else:
        ready_fd = None
    logs.setup("emperor", settings.logto)
    pidfile = PidFile(cfg.pidfile) if cfg.pidfile else None
    locks = DirLocks()
    status = 1
    try:
        if pidfile:
            try:
                pidfile.acquire()
                privileges.hand_over(pidfile.path, settings.ident)
            except (PidFileError, OSError, privileges.IdentityError) as exc:
                log.error("pidfile: %s", exc)
                return 1
        try:
            locks.acquire([s.path for s in settings.sources if not s.is_glob])
        except DirLockError as exc:
            log.error("refusing to start: %s", exc)
            return 1
        emp = Emperor(settings)
        if not emp.open():
            return 1
        if ready_fd is not None:
            os.write(ready_fd, b"0")
            os.close(ready_fd)
            ready_fd = None
        try:
            status = emp.run()
        except privileges.IdentityError as exc:
            log.error("%s", exc)
    finally:
        if ready_fd is not None:
            with contextlib.suppress(OSError):
                os.write(ready_fd, b"1")
                os.close(ready_fd)
        locks.release()
        if pidfile:
            pidfile.release()
    return status
