"""Companion processes and cron jobs run by the vassal's master (uWSGI's attach-daemon family).

``attach-daemon CMD`` runs a command that stays in the foreground (Celery, a queue consumer)
next to the app: the master starts it, restarts it when it dies (throttled when it dies
quickly) and stops it with the vassal. As in uWSGI, such a daemon is stopped on a reload and
started again by the reloaded master, so that it runs the new code.

``smart-attach-daemon PIDFILE CMD`` is governed by its pidfile: it is started only when the
pidfile does not name a live process, it survives a reload (the reloaded master finds it in
its pidfile) and is restarted when that process is gone. ``smart-attach-daemon2`` is the same
for a command that stays in the foreground: the master writes the pidfile itself.
``attach-daemon2 key=value,...`` is the general form (``KEYS``).

``cron``/``unique-cron`` ``MIN HOUR MDAY MONTH WDAY CMD`` run a command when the local time
matches, checked once a minute (-1 is any value, -N every N); a ``unique-cron`` job is not
started again while its previous run is still going.

Every command runs under ``/bin/sh -c`` in its own session (so a stop reaches its children
too), with stdin on /dev/null, stdout and stderr on the vassal's log, and no other file
descriptor of the master. Only the stdlib here: the vassal may run in an app's venv.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from emperor.daemonspec import CronSpec, DaemonSpec

log = logging.getLogger("emperor.daemons")

STOP_GRACE = 5.0  # seconds a daemon has to exit after its stop signal, then SIGKILL
PIDFILE_GRACE = 10.0  # seconds a self-daemonizing command has to write a live pid into its pidfile
CHECK_EVERY = 1.0
KINDS = ("attach_daemon", "smart_attach_daemon", "smart_attach_daemon2", "attach_daemon2")  # cfg attributes


# ---- running them ---------------------------------------------------------------------------
def _read_pid(path: str) -> int:
    try:
        with open(path, "rb") as f:
            text = f.read(32).strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is not alive
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def spawn(cmd: str, *, chdir: str = "", env: Iterable[tuple[str, str]] = (), stdin: bool = False,
          die_with_master: bool = False, blocked: Iterable[int] = ()) -> int:
    """Fork and exec ``/bin/sh -c CMD`` in a new session; returns its pid.

    ``blocked``: the master's signals, blocked across fork() so that none reaches the master's
    handlers (and its wakeup fd) from the child; the child restores their defaults first.
    """
    blocked = frozenset(blocked)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        pid = os.fork()
    except OSError:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        raise
    if pid:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        return pid
    try:  # the child: nothing here may return into the master's code
        signal.set_wakeup_fd(-1)
        for sig in blocked:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        os.setsid()
        if die_with_master:
            from emperor.daemon import set_parent_death_signal

            set_parent_death_signal(signal.SIGKILL)
        if not stdin:
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.close(null)
        os.closerange(3, 65536)  # listening sockets, the channel, the scoreboard: none are its business
        if chdir:
            os.chdir(chdir)
        environ = dict(os.environ)
        environ.update(env)
        os.execve("/bin/sh", ["/bin/sh", "-c", cmd], environ)
    except BaseException as exc:  # report and leave, whatever happened
        try:
            os.write(2, f"emperor: cannot run {cmd!r}: {exc}\n".encode(errors="replace"))
        finally:
            os._exit(127)
    raise AssertionError("unreachable")


@dataclass
class Daemon:
    spec: DaemonSpec
    kind: str  # the option name, for the log
    pid: int = 0  # our child (0: none)
    started: float = 0.0
    respawn_at: float = 0.0  # 0: not waiting to respawn
    quick_deaths: int = 0
    stopping: bool = False
    touched: dict[str, int | None] = field(default_factory=dict)

    def target(self) -> int:
        """The process to signal: the pidfile's (smart daemons), else our child."""
        if self.spec.pidfile:
            pid = _read_pid(self.spec.pidfile)
            if _alive(pid):
                return pid
        return self.pid if self.pid and _alive(self.pid) else 0


class Supervisor:
    """All of a vassal's companion processes and cron jobs; driven by the master's loop."""

    def __init__(self, daemons: list[tuple[str, DaemonSpec]], crons: list[CronSpec], name: str,
                 on_control_death: Callable[[str], None], blocked: Iterable[int] = (),
                 clock: Callable[[], float] = time.time) -> None:
        self.daemons = [Daemon(spec, kind) for kind, spec in daemons]
        self.crons = crons
        self.name = name
        self.on_control_death = on_control_death
        self.blocked = frozenset(blocked)
        self.clock = clock  # wall clock for cron (a test passes its own)
        self.cron_pids: dict[int, CronSpec] = {}
        self.last_minute = -1
        self.next_check = 0.0
        self.active = True

    def __bool__(self) -> bool:
        return bool(self.daemons or self.crons)

    # ---- daemons ----------------------------------------------------------------------------
    def start(self) -> None:
        """At boot (and after a reload): start each daemon, unless its pidfile names a live one."""
        now = time.monotonic()
        for d in self.daemons:
            d.touched = {p: _mtime(p) for p in d.spec.touch}
            pid = _read_pid(d.spec.pidfile) if d.spec.pidfile else 0
            if pid and _alive(pid):
                d.started = now - d.spec.freq  # not a quick death if it goes now
                log.info("%s: %s already running as pid %d (%s): adopted", self.name, d.kind, pid,
                         d.spec.pidfile)
                continue
            self._start(d, now)

    def _start(self, d: Daemon, now: float) -> None:
        spec = d.spec
        try:
            d.pid = spawn(spec.cmd, chdir=spec.chdir, env=spec.env, stdin=spec.stdin,
                          die_with_master=not spec.survives_reload, blocked=self.blocked)
        except OSError as exc:
            log.error("%s: %s %r: cannot fork: %s", self.name, d.kind, spec.describe(), exc.strerror)
            d.respawn_at = now + 1.0
            return
        d.started, d.respawn_at, d.stopping = now, 0.0, False
        if spec.daemonize and spec.pidfile:
            try:
                with open(spec.pidfile, "w") as f:
                    f.write(f"{d.pid}\n")
            except OSError as exc:
                log.error("%s: %s: cannot write %s: %s", self.name, d.kind, spec.pidfile, exc.strerror)
        log.info("%s: %s started (pid %d): %s", self.name, d.kind, d.pid, spec.describe())

    def reaped(self, pid: int, status: int) -> bool:
        """The master reaped a child it does not know: ours? (True if so)."""
        if pid in self.cron_pids:
            spec = self.cron_pids.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            (log.info if code == 0 else log.warning)("%s: cron job %r (pid %d) exited with status %d",
                                                     self.name, spec.cmd, pid, code)
            return True
        for d in self.daemons:
            if d.pid == pid:
                d.pid = 0
                code = os.waitstatus_to_exitcode(status)
                if d.stopping or not self.active:
                    return True
                if d.spec.pidfile and code == 0 and not d.spec.daemonize:
                    return True  # a self-daemonizing command's parent: the pidfile tells the rest
                self._died(d, f"exited with status {code}" if code >= 0 else f"killed by signal {-code}")
                return True
        return False

    def _died(self, d: Daemon, what: str) -> None:
        now = time.monotonic()
        if d.spec.control:
            log.error("%s: control %s %r %s: stopping the vassal", self.name, d.kind, d.spec.describe(),
                      what)
            self.on_control_death(what)
            return
        d.quick_deaths = d.quick_deaths + 1 if now - d.started < d.spec.freq else 0
        delay = float(min(d.quick_deaths, d.spec.max_throttle))
        log.warning("%s: %s %r %s; restarting%s", self.name, d.kind, d.spec.describe(), what,
                    f" in {delay:.0f} s (it died within {d.spec.freq} s of its start)" if delay else "")
        d.respawn_at = now + delay

    def tick(self, now: float) -> None:
        """From the master's loop (RUNNING only): respawns, pidfiles, touch files, cron."""
        if not self.active:
            return
        for d in self.daemons:
            if d.respawn_at and now >= d.respawn_at:
                self._start(d, now)
        if now < self.next_check:
            return
        self.next_check = now + CHECK_EVERY
        for d in self.daemons:
            if d.respawn_at or d.pid:
                if d.pid and d.touched:
                    self._check_touch(d)
                continue
            if d.spec.pidfile:
                if _alive(_read_pid(d.spec.pidfile)):
                    self._check_touch(d)
                elif now - d.started >= PIDFILE_GRACE or d.spec.daemonize:
                    self._died(d, f"is gone (no live pid in {d.spec.pidfile})")
        self._cron(self.clock())

    def _check_touch(self, d: Daemon) -> None:
        for path, before in d.touched.items():
            after = _mtime(path)
            if after == before:
                continue
            d.touched[path] = after
            pid = d.target()
            if d.spec.reload_signal and pid:
                log.info("%s: %s touched: signal %d to %s (pid %d)", self.name, path, d.spec.reload_signal,
                         d.kind, pid)
                _kill_group(pid, d.spec.reload_signal)
            else:
                log.info("%s: %s touched: restarting %s %r", self.name, path, d.kind, d.spec.describe())
                self._stop_and_wait([d], STOP_GRACE)
                self._start(d, time.monotonic())
            return

    def stop(self, keep_smart: bool = False) -> list[Daemon]:
        """Send each daemon (but the pidfile ones with ``keep_smart``) its stop signal."""
        self.active = keep_smart  # after a full stop nothing is respawned
        out = []
        for d in self.daemons:
            if keep_smart and d.spec.survives_reload:
                continue
            d.respawn_at = 0.0
            pid = d.target()
            if pid:
                if not d.stopping:  # once: a second SIGTERM means "hurry" to some (Celery: INT)
                    _kill_group(pid, d.spec.stop_signal)
                d.stopping = True
                out.append(d)
        return out

    def finish(self, grace: float = STOP_GRACE, keep_smart: bool = False) -> None:
        """Stop the daemons (and running cron jobs) and wait for them, SIGKILL after ``grace``."""
        stopping = self.stop(keep_smart)
        if not keep_smart:
            for pid in self.cron_pids:
                _kill_group(pid, signal.SIGTERM)
        self._wait(stopping, grace, crons=not keep_smart)

    def _stop_and_wait(self, ds: list[Daemon], grace: float) -> None:
        for d in ds:
            if (pid := d.target()) and not d.stopping:
                _kill_group(pid, d.spec.stop_signal)
            d.stopping = True
        self._wait(ds, grace, crons=False)

    def _wait(self, ds: list[Daemon], grace: float, crons: bool) -> None:
        pids = {d.target() or d.pid for d in ds} - {0}
        if crons:
            pids |= set(self.cron_pids)
        deadline = time.monotonic() + grace
        killed = False
        while pids:
            for pid in list(pids):
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:  # not ours (a daemonized one): look at it
                    done = 0 if _alive(pid) else pid
                if done:
                    pids.discard(pid)
            if not pids:
                break
            if time.monotonic() >= deadline:
                if killed:
                    log.error("%s: pid(s) %s survive SIGKILL", self.name, sorted(pids))
                    break
                log.warning("%s: companion pid(s) %s still running after %.0f s: SIGKILL", self.name,
                            sorted(pids), grace)
                for pid in pids:
                    _kill_group(pid, signal.SIGKILL)
                killed, deadline = True, time.monotonic() + 2.0
            time.sleep(0.05)
        for d in ds:
            d.pid = 0
        if crons:
            self.cron_pids.clear()

    # ---- cron -------------------------------------------------------------------------------
    def _cron(self, wall: float) -> None:
        minute = int(wall // 60)
        if minute == self.last_minute or not self.crons:
            return
        self.last_minute = minute
        t = time.localtime(wall)
        for spec in self.crons:
            if not spec.matches(t):
                continue
            if spec.unique and spec in self.cron_pids.values():
                log.warning("%s: unique-cron %r skipped: its previous run is still going", self.name,
                            spec.cmd)
                continue
            try:
                pid = spawn(spec.cmd, blocked=self.blocked)
            except OSError as exc:
                log.error("%s: cron %r: cannot fork: %s", self.name, spec.cmd, exc.strerror)
                continue
            self.cron_pids[pid] = spec
            log.info("%s: cron job started (pid %d): %s", self.name, pid, spec.cmd)


def _kill_group(pid: int, sig: int) -> None:
    """Signal the daemon's session (its children too); a daemonized one may lead no group of ours."""
    try:
        os.killpg(pid, sig)
        return
    except (ProcessLookupError, PermissionError):
        pass
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass

