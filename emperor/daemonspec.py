"""The values of the companion-process and cron options (attach-daemon*, cron, unique-cron).

Pure parsing, declared here so that the option table (``emperor.options``) can validate them
without importing the vassal; the vassal's master runs them (``emperor.vassal.daemons``).
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass

DEFAULT_FREQ = 10  # a daemon that dies within this many seconds of its start is throttled
DEFAULT_MAX_THROTTLE = 60  # the longest respawn delay, in seconds


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
