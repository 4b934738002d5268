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

log = logging.getLogger("emperor.daemons")

STOP_GRACE = 5.0  # seconds a daemon has to exit after its stop signal, then SIGKILL
PIDFILE_GRACE = 10.0  # seconds a self-daemonizing command has to write a live pid into its pidfile
DEFAULT_FREQ = 10  # a daemon that dies within this many seconds of its start is throttled
DEFAULT_MAX_THROTTLE = 60  # the longest respawn delay, in seconds
CHECK_EVERY = 1.0
KINDS = ("attach_daemon", "smart_attach_daemon", "smart_attach_daemon2", "attach_daemon2")  # cfg attributes


def _signal(raw: str) -> int:
    """A signal by number or name (``15``, ``TERM``, ``SIGTERM``)."""
    s = raw.strip().upper()
    if s.isdigit():
        num = int(s)
        if not 1 <= num < signal.NSIG:
            raise ValueError(f"{raw!r} is not a signal number")
        return num
    try:
        return int(signal.Signals[s if s.startswith("SIG") else "SIG" + s])
    except KeyError:
        raise ValueError(f"{raw!r} is not a signal name") from None


def _count(raw: str, key: str) -> int:
    if not raw.strip().isdigit():
        raise ValueError(f"{key}={raw!r}: expected a number of seconds")
    return int(raw)


@dataclass(frozen=True)
class DaemonSpec:
    """One companion process, as declared (the ``attach-daemon2`` keys are its fields)."""

    cmd: str
    pidfile: str = ""
    daemonize: bool = False  # the master writes the pidfile: the command itself stays in the foreground
    control: bool = False  # its death stops the whole vassal
    stop_signal: int = int(signal.SIGTERM)
    reload_signal: int = 0  # sent when a ``touch`` file changes (0: restart it instead)
    touch: tuple[str, ...] = ()
    freq: int = DEFAULT_FREQ
    max_throttle: int = DEFAULT_MAX_THROTTLE
    chdir: str = ""
    env: tuple[tuple[str, str], ...] = ()
    stdin: bool = False  # keep the master's stdin instead of /dev/null

    @property
    def survives_reload(self) -> bool:
        """Pidfile-governed daemons outlive a reload (and even the master), as in uWSGI."""
        return bool(self.pidfile)

    def describe(self) -> str:
        return self.cmd if len(self.cmd) <= 60 else self.cmd[:57] + "..."


def attach_daemon(raw: str) -> DaemonSpec:
    """``attach-daemon = CMD``."""
    if not raw.strip():
        raise ValueError("needs a command")
    return DaemonSpec(raw.strip())


def _pidfile_and_cmd(raw: str) -> tuple[str, str]:
    parts = raw.strip().split(None, 1)
    if len(parts) < 2:
        raise ValueError(f"{raw!r}: expected 'PIDFILE COMMAND'")
    return parts[0], parts[1].strip()


def smart_attach_daemon(raw: str) -> DaemonSpec:
    """``smart-attach-daemon = PIDFILE CMD``: the command writes the pidfile (it may daemonize)."""
    pidfile, cmd = _pidfile_and_cmd(raw)
    return DaemonSpec(cmd, pidfile=pidfile)


def smart_attach_daemon2(raw: str) -> DaemonSpec:
    """``smart-attach-daemon2 = PIDFILE CMD``: a foreground command; the master writes the pidfile."""
    pidfile, cmd = _pidfile_and_cmd(raw)
    return DaemonSpec(cmd, pidfile=pidfile, daemonize=True)


_TRUE = ("1", "true", "yes", "on", "")
# attach-daemon2 keys uWSGI has and emperor refuses, with the reason
REFUSED_KEYS = {
    "uid": "the master has already dropped to the vassal's user; set uid for the whole vassal",
    "gid": "the master has already dropped to the vassal's group; set gid for the whole vassal",
    "ns_pid": "namespaces are not implemented",
    "legion": "legions are not implemented",
    "notifypid": "pid notification is not implemented",
}
KEYS = ("cmd", "command", "exec", "pidfile", "daemonize", "daemon", "control", "stopsignal",
        "stop_signal", "reloadsignal", "reload_signal", "touch", "freq", "max_throttle", "chdir",
        "env", "stdin")


def _split_keyval(raw: str) -> list[tuple[str, str]]:
    """uWSGI's key=value,key=value; a value may contain commas when the next part has no '='."""
    out: list[tuple[str, str]] = []
    for part in raw.split(","):
        key, eq, value = part.partition("=")
        if not eq and out:
            k, prev = out[-1]
            out[-1] = (k, prev + "," + part)
            continue
        if not eq:
            raise ValueError(f"{part.strip()!r}: expected key=value")
        out.append((key.strip(), value.strip()))
    return out


def attach_daemon2(raw: str) -> DaemonSpec:
    """``attach-daemon2 = cmd=...,pidfile=...,...``: the keys in ``KEYS``; others are refused."""
    fields: dict[str, object] = {}
    env: list[tuple[str, str]] = []
    for key, value in _split_keyval(raw):
        if key in REFUSED_KEYS:
            raise ValueError(f"key {key!r} not supported: {REFUSED_KEYS[key]}")
        if key in ("cmd", "command", "exec"):
            fields["cmd"] = value
        elif key == "pidfile":
            fields["pidfile"] = value
        elif key in ("daemonize", "daemon"):
            fields["daemonize"] = value.lower() in _TRUE
        elif key == "control":
            fields["control"] = value.lower() in _TRUE
        elif key in ("stopsignal", "stop_signal"):
            fields["stop_signal"] = _signal(value)
        elif key in ("reloadsignal", "reload_signal"):
            fields["reload_signal"] = _signal(value)
        elif key == "touch":
            fields["touch"] = tuple(p for p in value.split(";") if p)
        elif key in ("freq", "max_throttle"):
            fields[key] = _count(value, key)
        elif key == "chdir":
            fields["chdir"] = value
        elif key == "env":
            name, eq, val = value.partition("=")
            if not eq or not name:
                raise ValueError(f"env={value!r}: expected env=NAME=VALUE")
            env.append((name, val))
        elif key == "stdin":
            fields["stdin"] = value.lower() in _TRUE
        else:
            raise ValueError(f"unknown key {key!r} (emperor knows: {', '.join(KEYS)})")
    if not str(fields.get("cmd", "")).strip():
        raise ValueError("needs cmd=COMMAND")
    if fields.get("daemonize") and not fields.get("pidfile"):
        raise ValueError("daemonize needs pidfile (the master writes the pid there)")
    return DaemonSpec(env=tuple(env), **fields)  # type: ignore[arg-type]


# ---- cron -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class CronSpec:
    """``MIN HOUR MDAY MONTH WDAY CMD``: -1 is any value, -N every N (value % N == 0), N exactly."""

    fields: tuple[int, int, int, int, int]
    cmd: str
    unique: bool = False

    def matches(self, t: time.struct_time) -> bool:
        """True when the local time ``t`` matches (WDAY 0 = Sunday, as cron and uWSGI)."""
        wday = (t.tm_wday + 1) % 7  # struct_time counts from Monday
        now = (t.tm_min, t.tm_hour, t.tm_mday, t.tm_mon, wday)
        for want, have in zip(self.fields, now, strict=True):
            if want == -1:
                continue
            if want < -1:
                if have % -want:
                    return False
            elif want != have:
                return False
        return True


_CRON_RANGES = ((0, 59, "minute"), (0, 23, "hour"), (1, 31, "day of month"), (1, 12, "month"),
                (0, 7, "day of week"))


def _cron(raw: str, unique: bool) -> CronSpec:
    parts = raw.strip().split(None, 5)
    if len(parts) < 6:
        raise ValueError(f"{raw!r}: expected 'MIN HOUR MDAY MONTH WDAY COMMAND'")
    values: list[int] = []
    for text, (low, high, what) in zip(parts[:5], _CRON_RANGES, strict=True):
        try:
            n = int(text)
        except ValueError:
            raise ValueError(f"{what} {text!r}: expected a number, -1 (any) or -N (every N)") from None
        if n >= 0 and not low <= n <= high:
            raise ValueError(f"{what} {n} is outside {low}..{high}")
        values.append(0 if what == "day of week" and n == 7 else n)  # 7 is Sunday too
    return CronSpec((values[0], values[1], values[2], values[3], values[4]), parts[5].strip(), unique)


def cron(raw: str) -> CronSpec:
    return _cron(raw, unique=False)


def unique_cron(raw: str) -> CronSpec:
    return _cron(raw, unique=True)


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
            from emperor.vassal.master import set_parent_death_signal

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
            d.stopping = True
            pid = d.target()
            if pid:
                _kill_group(pid, d.spec.stop_signal)
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
            d.stopping = True
            if pid := d.target():
                _kill_group(pid, d.spec.stop_signal)
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

