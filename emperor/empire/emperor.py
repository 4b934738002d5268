"""The emperor's main loop: one thread owns every vassal.

Everything arrives at one ``select``: signals (through ``signal.set_wakeup_fd``; the
handlers do nothing else), the monitor's inbox, each vassal's channel and each vassal's
pidfd (readable when the process exits, so there is no SIGCHLD race and no recycled pid).
An iteration handles those events, rescans if a file event has settled or the periodic
rescan is due, reconciles, then runs the timers: throttled respawns, overdue stops,
the shutdown deadline. Order of work and states: see ``docs/emperor.md``.

The children themselves are in ``spawn.Children`` (one table for vassals and zergs), the zergs
in ``zergs.Zergs``, the control and stats servers in ``operator.Operator``, the entry point in
``main.py``. The spawner is injected (``spawn.spawn`` by default), so the lifecycle runs under
a fake clock and a fake spawner in tests/test_emperor_unit.py.

Why this module is over the ~500 lines of the others: what is left is the loop and the
vassal lifecycle (events, scans, timers, signals, shutdown, verbs), which all act on the same
records; splitting them further would only hide that shared state behind indirection.
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
from collections.abc import Callable, Collection

from emperor import __version__, channel, logs, privileges
from emperor.channel import Msg
from emperor.empire import access, fleet, ondemand, orphans, reconcile, scan, spawn, template
from emperor.empire.monitor import Inbox, Monitor
from emperor.empire.notify import Notifier, status_line
from emperor.empire.operator import BootError, Operator
from emperor.empire.settings import Settings
from emperor.empire.throttle import Throttle
from emperor.empire.vassals import ALIVE, DEAD, RUNNING, After, State, Vassal
from emperor.empire.zergs import Zergs

log = logging.getLogger("emperor")

SETTLE = 0.05  # a file event is acted on once events have been quiet this long ...
MAX_SETTLE = 1.0  # ... or this long after the first one, so a never-ending stream still applies
READY_TIMEOUT = 20.0  # READY=1 to systemd once the first vassals are up, or after this long
FINAL_KILL_WAIT = 5.0  # after the last SIGKILL, how long to wait for the kernel to reap
SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT)
HANDLED_SIGNALS = (*SHUTDOWN_SIGNALS, signal.SIGHUP, signal.SIGUSR1, signal.SIGURG, signal.SIGWINCH,
                   signal.SIGCHLD)  # SIGCHLD: adopted orphans (emperor/empire/orphans.py)


__all__ = ["Emperor", "Settings"]  # Settings: emperor/empire/settings.py, named here as before


class Emperor:
    """The loop and the vassal lifecycle; its public methods are the verbs the operator uses."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic,
                 spawner: spawn.Spawner = spawn.spawn) -> None:
        self.s = settings
        self.clock = clock
        # emperor-template: vassals forked from a pre-imported template (emperor/empire/template.py)
        self.template = template.Template(clock) if settings.template and spawner is spawn.spawn else None
        self.spawner = self.template if self.template is not None else spawner
        self.adopted_daemons: set[int] = set()  # orphans.reap: detached daemons already logged
        self.vassals: dict[str, Vassal] = {}
        self.refused: dict[str, str] = {}
        self.found: dict[str, scan.Found] = {}
        self.held: set[str] = set()  # stopped with `emperor ctl stop`: the scans skip them until `start`
        self.sel = selectors.DefaultSelector()
        self.children = spawn.Children(self.sel)  # vassals and zergs
        self.inbox = Inbox()
        self.monitor = Monitor(self.inbox)
        self.notify = Notifier()
        self.signals: list[int] = []
        self.sigchld = False
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
        self.logreopen = logs.Touched(self.s.touch_logreopen, self.now)
        self.console = Operator(self)  # stats, metrics, control plane, events
        self.zergs = Zergs(settings.broodlord, clock, self.children, self.vassals, self._checked_content,
                           settings.mercy, spawner)  # docs/broodlord.md; zergs are always exec'd
        self.zergs.publish = self.console.publish
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
        for fileobj, which in self.console.fds():
            self.sel.register(fileobj, selectors.EVENT_READ, ("console", which))
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
            self._start_template()
            while not self._finished():
                self._iterate()
        finally:
            self.monitor.stop()
            self.fleet.stop()
            self.console.close()
            self.ondemand.close()
            if self.template is not None:
                self.template.stop()
            for name in self.children:
                self.children.close(name)
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

    def _start_template(self) -> None:
        """As the vassals' user (after the drop), before the first scan: a subreaper first, so its
        vassals become ours; without that, every vassal is exec'd."""
        if self.template is None:
            return
        if not template.become_subreaper():
            log.warning("template: cannot become a child subreaper; vassals are exec'd")
            self.template = None
            self.spawner = spawn.spawn
            return
        self.template.start()
        self.template.wait_ready()  # bounded (template.READY_TIMEOUT); late: the first vassals are exec'd

    def _adopted(self) -> None:
        """SIGCHLD or a vassal reaped: a dead template is restarted, adopted orphans are reaped or
        killed (emperor/empire/orphans.py)."""
        if self.template is None:
            return  # not a subreaper: orphans go to init as before
        if self.shutdown_at is None:
            self.template.check()
        ours = [self.children.get(n) for n in self.children]
        sessions = {p.pid for p in ours if p is not None and p.popen.returncode is None}
        known = {p.pid for p in ours if p is not None} | {a.proc.pid for a in self.ondemand.asking.values()}
        if self.template.pid is not None:
            known.add(self.template.pid)
        orphans.reap(known, sessions, self.adopted_daemons)

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum == signal.SIGCHLD:
            self.sigchld = True  # many at once are one look at our children
        else:
            self.signals.append(signum)  # the work happens in the loop

    def _finished(self) -> bool:
        return self.shutdown_at is not None and not self.children

    def _iterate(self, max_wait: float | None = None) -> None:
        """One pass of the loop; ``max_wait`` bounds the select (tests step a fake clock with 0)."""
        self.ondemand.sync(self.vassals, self.clock())  # watch the sockets of vassals without a process
        timeout = max(0.0, self._next_deadline() - self.clock())
        if max_wait is not None:
            timeout = min(timeout, max_wait)
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
                self.zergs.read(name, self.now)
            elif kind == "zerg-exit":
                self.zergs.reap(name)
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
        if self.sigchld:
            self.sigchld = False
            self._adopted()
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
            if (due := self._due(v)) is not None:
                deadlines.append(due)
        if self.notify.enabled and not self.sent_ready:
            deadlines.append(self.started_at + READY_TIMEOUT)
        if self.notify.watchdog_interval:
            deadlines.append(self.next_watchdog)
        if self.s.touch_logreopen:
            deadlines.append(self.logreopen.next_check)
        deadlines += self.zergs.deadlines()
        deadlines.append(self.console.deadline(self.now))
        if (asked := self.ondemand.deadline()) is not None:
            deadlines.append(asked)  # emperor-on-demand-exec: its answer is overdue then
        deadlines.append(self.fleet.deadline(self.now))
        if self.template is not None and (due := self.template.deadline()) is not None:
            deadlines.append(due)  # a lost template's restart
        return min(deadlines)

    def _due(self, v: Vassal) -> float | None:
        return v.next_deadline(self.s.required_heartbeat, self.zergs.count(v.name) > 0)

    # ---------------------------------------------------------------- scanning

    def rescan(self) -> None:
        self.event_since = None
        self.rescan_at = self.now + self.s.freq
        found, refused = scan.scan(self.s.sources, self.s.tyrant)
        if self.s.tyrant:
            access.refuse_unrunnable(found, refused, lambda f: spawn.vassal_argv(
                f.path, self.s.vassal_before, self.s.vassal_includes, True, f.content)[0])
        log.debug("rescan: %d vassal files, %d refused", len(found), len(refused))
        for name, reason in refused.items():
            if self.refused.get(name) != reason:
                log.error("refused: %s: %s", scan.shown(name), reason)
        for name in set(self.refused) - set(refused):
            if name in found:
                log.info("accepted: %s is usable again", scan.shown(name))
        self.refused = refused
        self.found = found
        for name in self.held:  # `emperor ctl stop` holds a vassal until `start`
            self.found.pop(name, None)
        self.monitor.watch(scan.watch_dirs(self.s.sources, self.found))
        self.reconcile()

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
            spawning = act.do == reconcile.Do.SPAWN
            if spawning and (handover := reconcile.handover_until(self.vassals, self.s.mercy)) > self.now:
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
                self._forget(act.name)
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
            proc = self.spawner(v.name, f.path, argv, f.uid, f.gid, f.content, self.ondemand.handoff(v.name))
        except OSError as exc:
            v.stamp = f.stamp
            hint = ""
            if isinstance(exc, PermissionError) and f.uid is not None:
                hint = (f" (tyrant mode: uid {f.uid} must be able to run {sys.executable} and read "
                        f"the emperor package, or set home to a virtualenv it can run: docs/hosting.md)")
            v.spawn_failed(self.now, f"{exc}{hint}")
            return
        self.children.add(v.name, proc, "channel")
        v.spawned(proc.pid, self.now, f.stamp)

    def _reload(self, v: Vassal, stamp: scan.Stamp | None = None) -> None:
        if v.request_reload(stamp):
            self._send(v, Msg.RELOAD)
            self.zergs.reload(v.name)

    def _stop(self, v: Vassal, why: str = "") -> None:
        if v.stop(self.now + self.s.mercy, why):
            self._send(v, Msg.STOP)
        self.zergs.withdraw(v.name, self.now)

    def _forget(self, name: str) -> None:
        """Drop a record (its process is gone or never was)."""
        del self.vassals[name]
        self.zergs.forget(name)

    def _send(self, v: Vassal, msg: Msg) -> None:
        if v.name not in self.children:
            return
        content = self._checked_content(v.name, v.uid, v.gid) if msg == Msg.RELOAD else None
        if not self.children.send(v.name, msg, content):
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

    def _read_channel(self, name: str) -> None:
        v = self.vassals.get(name)
        if v is None:
            return
        for msg, payload in self.children.messages(name):
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
            self.console.workers(v, payload)
        else:
            log.debug("channel: %r sent %s %s", v.name, msg.name, payload)

    def _reap(self, name: str) -> None:
        v = self.vassals.get(name)
        if name not in self.children:
            return
        returncode = self.children.reap(name)
        if returncode is None:
            return  # not yet: the pidfd fired early (it should not)
        self._adopted()  # what its group left behind
        if v is None:
            return
        if (v.idle_exit and v.on_demand and returncode == 0 and v.state != State.STOPPING
                and self.shutdown_at is None and name in self.found):
            v.slept(returncode)  # on-demand: back to waiting for a connection (ondemand.py)
            self.zergs.stop_all(name, "(its on-demand vassal went idle)", self.now)
            self._status()
            return
        after = v.exited(returncode, self.now, shutting_down=self.shutdown_at is not None)
        self.zergs.stop_all(name, "(its vassal exited: the respawn needs its sockets)", self.now)
        if after == After.FORGET:
            self._forget(name)
            if self.shutdown_at is None:
                self.reconcile()  # re-added meanwhile (rename back, owner change): spawn it again
        elif after == After.WAIT and self.s.tyrant is False:  # repeat its error in our words (and stats)
            f = self.found.get(v.name)
            if (problem := spawn.config_problem(v.path, f.content if f else None)) is not None:
                v.last_error = problem
                log.error("failed: %r: %s", v.name, problem)
        self._status()

    # ---------------------------------------------------------------- timers

    def _timers(self) -> None:
        now = self.now
        for v in list(self.vassals.values()):
            due = self._due(v)  # the same answer the select timeout was computed from
            if due is None or now < due:
                continue
            if v.state == State.THROTTLED:
                f = self.found.get(v.name)
                if self.shutdown_at is None and f is not None:  # else: reconcile forgets it
                    self._spawn(v, f)
            elif v.state == State.STOPPING:
                self._kill(v, f"did not stop within {self.s.mercy:g} s")
            else:  # its heartbeat is overdue
                v.last_error = (f"no heartbeat for {now - v.heartbeat_at:.0f} s (heartbeat = "
                                f"{v.heartbeat_every:g} s, emperor-required-heartbeat = "
                                f"{self.s.required_heartbeat:g} s): the master is hung")
                self._kill(v, f"{v.last_error}; it will be respawned")  # the exit takes the throttle path
        if self.shutdown_at is not None and now >= self.shutdown_at:
            if not self.killed_all:
                self.killed_all = True
                for v in self.vassals.values():
                    if v.name in self.children and not v.killed:
                        self._kill(v, "no mercy: the shutdown bound is over")
                for z in self.zergs:
                    self.zergs.kill(z, "no mercy: the shutdown bound is over")
            elif now >= self.shutdown_at + FINAL_KILL_WAIT:
                for name in self.children:
                    proc = self.children.get(name)
                    log.error("abandoning: %r (pid %s) survived SIGKILL", name, proc.pid if proc else "?")
                    self.children.close(name)
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
        self.zergs.timers(now)
        if self.template is not None and self.shutdown_at is None:
            self.template.check()  # restarts a lost one once its throttle allows
        if self.logreopen.touched(now):
            self.children.reopen_log(self.s.logto, f"{self.s.touch_logreopen} was touched")

    def _kill(self, v: Vassal, why: str) -> None:
        if v.name not in self.children:
            return
        v.killed = True
        log.error("killing: %r (pid %s) and its process group: %s", v.name, v.pid, why)
        self.children.kill(v.name)

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
            self.children.reopen_log(self.s.logto, "SIGUSR1")
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
            else:
                v.retry_now(self.now)  # FAILED too: SIGHUP retries it now
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
                self._forget(v.name)
        self.zergs.stop_all(None, "(emperor shutdown)", self.now)

    # ---------------------------------------------------------------- broodlord (docs/broodlord.md)

    def _on_sos(self, v: Vassal, payload: str) -> None:
        """SOS read on ``v``'s own channel: a vassal can only ask for itself."""
        if self.s.broodlord <= 0 or self.shutdown_at is not None:
            return  # as uWSGI: ignored without broodlord
        if v.state in (State.READY, State.LOYAL, State.RELOADING):
            self.zergs.sos(v, payload, self.now)

    def broodlord_snapshot(self) -> dict[str, object]:
        """Pool facts for the stats server: the policy's counters and every zerg alive."""
        return self.zergs.snapshot(self.now)

    def zerg_counts(self, name: str) -> dict[str, int]:
        """One vassal's zerg figures for the stats (emperor/empire/stats.py)."""
        return self.zergs.counts(name)

    # ---------------------------------------------------------------- logs and status

    def _status_line(self) -> str:
        return status_line([v.state.value if v.state else "new" for v in self.vassals.values()])

    def _status(self) -> None:
        if self.notify.enabled and self.sent_ready:
            self.notify.send(self._status_line())

    # ---------------------------------------------------------------- public verbs (empire/operator.py)

    def files(self) -> Collection[str]:
        return self.found.keys()

    def shutting_down(self) -> bool:
        return self.shutdown_at is not None

    def reload(self, name: str) -> bool:
        """Like touching the file: reload a running vassal, retry a dead one now (``emperor ctl reload``)."""
        v = self.vassals.get(name)
        if v is None:
            return False
        if v.state in RUNNING:
            self._reload(v)
            return True
        return v.retry_now(self.now)  # FAILED too: the next timers pass spawns it

    def hold(self, name: str) -> None:
        """``emperor ctl stop``: stop it and keep it stopped (the scans skip its file) until ``start``."""
        v = self.vassals[name]
        self.held.add(v.name)
        self.found.pop(v.name, None)
        if v.state in RUNNING:
            self._stop(v, "(emperor ctl stop: held until emperor ctl start)")
        elif v.state in DEAD:
            self._forget(v.name)
            log.info("held: %r stays stopped until emperor ctl start", v.name)

    def start(self, name: str) -> bool:
        """``emperor ctl start``: release a held vassal, or retry a dead one now."""
        if name in self.held:
            self.held.discard(name)
            self.rescan_at = self.now  # the next iteration sees the file again and spawns it
            log.info("released: %r (emperor ctl start)", name)
            return True
        v = self.vassals.get(name)
        return v is not None and v.state in DEAD and self.reload(name)

    def scalable(self, name: str) -> bool:
        """A SCALE can be asked of it now (it is up and serving) and its answer can still come."""
        v = self.vassals.get(name)
        return v is not None and v.state in (State.READY, State.LOYAL) and name in self.children

    def scale(self, name: str, count: int) -> bool:
        """Send SCALE (``emperor ctl scale``); the vassal answers with SCALED. False: not sent."""
        return self.scalable(name) and bool(
            self.children.send(name, Msg.SCALE, payload=channel.scale_request(count)))
