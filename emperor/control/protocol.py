"""The control plane's wire format, shared by the emperor and ``emperor ctl``.

A request is one ZMQ frame holding a JSON object ``{"id", "command", "properties"}``; the
reply is one frame ``{"id", "status": "ok", ...result}`` or ``{"id", "status": "error",
"errno", "reason"}``. Events on the PUB socket are two frames: the topic
``vassal.<name>.<event>`` and a JSON body. A request larger than ``MAX_MESSAGE`` is read
and answered with a TOO_LARGE error without being parsed; one larger than
``TRANSPORT_LIMIT`` never reaches the emperor's memory: ZMQ (``MAXMSGSIZE``) drops the
connection, which the client reports as an error of its own.
"""

from __future__ import annotations

import enum
import hashlib
import os
import socket
import stat
from dataclasses import dataclass

MAX_MESSAGE = 64 * 1024  # the largest request the emperor parses
TRANSPORT_LIMIT = 16 * 1024 * 1024  # larger frames are dropped by ZMQ before anything is buffered
MAX_NAME = 255


class Errno(enum.IntEnum):
    """Error numbers of error replies (circus-style: stable, documented, testable)."""

    INVALID_JSON = 1  # not UTF-8 JSON, or not an object
    UNKNOWN_COMMAND = 2
    MESSAGE_ERROR = 3  # envelope or properties do not match the command's schema
    UNKNOWN_VASSAL = 4
    BAD_STATE = 5  # the vassal cannot do that now (e.g. scale while it is not running)
    TOO_LARGE = 6  # over MAX_MESSAGE (an error reply), or over TRANSPORT_LIMIT (the connection dropped)
    NO_EMPEROR = 7  # reported by the client: nothing answered at the endpoint
    INTERNAL = 8  # a bug in a command; the emperor logged the traceback and carries on
    REFUSED = 9  # the vassal refused (a scale past its scoreboard); the reason says why
    WRONG_EMPEROR = 10  # the emperor at the endpoint is not the one the request was meant for (--ini)


class ControlError(Exception):
    """An error reply, or a client-side failure, with its number."""

    def __init__(self, errno: Errno, reason: str) -> None:
        super().__init__(reason)
        self.errno = errno
        self.reason = reason


def topic(vassal: str, event: str) -> str:
    return f"vassal.{vassal}.{event}"


@dataclass(frozen=True)
class Identity:
    """Which emperor this is: its ini file, or (started without one) the directories it governs.

    ``key`` (a hash of that) names the default endpoint, so two emperors of one user get two
    control planes; the emperor puts it in every reply and refuses a request that names
    another key, so ``emperor ctl --ini second.ini`` never acts on the first emperor.
    """

    of: str  # "/etc/emperor.ini", or "/srv/a, /srv/b"

    @property
    def key(self) -> str:
        return hashlib.sha256(self.of.encode("utf-8", "surrogateescape")).hexdigest()[:16]

    @classmethod
    def of_config(cls, files: list[str], dirs: list[str], cwd: str) -> Identity:
        """From the config's ini files (the first one) or, with none, its ``emperor`` values."""
        if files:
            return cls(os.path.realpath(os.path.join(cwd, files[0])))
        return cls(", ".join(sorted(os.path.realpath(os.path.join(cwd, d)) for d in dirs)))


def runtime_dir() -> str:
    """``$XDG_RUNTIME_DIR/emperor``, else ``/tmp/emperor-UID``: where default endpoints live."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isdir(runtime):
        return os.path.join(runtime, "emperor")
    return f"/tmp/emperor-{os.geteuid()}"


def default_endpoint(key: str) -> str:
    """``ipc://RUNTIME/control-KEY``: one per emperor (KEY is its ``Identity.key``)."""
    return f"ipc://{runtime_dir()}/control-{key}"


def running_defaults() -> list[str]:
    """The default endpoints in the runtime directory with an emperor behind them (stale files skipped)."""
    base = runtime_dir()
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return []
    found = []
    for name in names:
        if not name.startswith("control-") or name.endswith(".events"):
            continue
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(os.path.join(base, name))
        except OSError:
            continue  # left by an emperor that was killed
        finally:
            probe.close()
        found.append(f"ipc://{base}/{name}")
    return found


def normalize(endpoint: str | None, key: str | None = None) -> str | None:
    """The endpoint as ZMQ wants it; ``None`` for ``off``. A bare path means ``ipc://PATH``.

    Unset: the default endpoint of the emperor ``key`` (ValueError without a key).
    """
    if endpoint is None or endpoint == "":
        if key is None:
            raise ValueError("no endpoint: give --endpoint, or --ini with the emperor's ini")
        return default_endpoint(key)
    if endpoint.lower() in ("off", "none", "false", "no"):
        return None
    if endpoint.startswith("/"):
        return "ipc://" + endpoint
    if endpoint.startswith(("ipc://", "tcp://")):
        return endpoint
    raise ValueError(f"{endpoint}: expected ipc:///path, /path or tcp://HOST:PORT")


def ipc_path(endpoint: str) -> str | None:
    return endpoint[len("ipc://"):] if endpoint.startswith("ipc://") else None


def events_endpoint(endpoint: str) -> str:
    """Where the PUB socket listens: next to the control socket (``.events``), or the next TCP port."""
    path = ipc_path(endpoint)
    if path is not None:
        return f"ipc://{path}.events"
    host, _, port = endpoint.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"{endpoint}: a TCP control endpoint needs an explicit port")
    return f"{host}:{int(port) + 1}"


def private_dir(path: str, create: bool) -> None:
    """Check (or create, mode 0700) the directory of an ipc socket.

    Ours and not writable by anyone else (a sticky directory such as /tmp is fine for an
    explicit path): otherwise another user could replace the socket and receive commands.
    The default directory must also be unreadable by others.
    """
    d = os.path.dirname(path) or "."
    if create and not os.path.isdir(d):
        os.makedirs(d, mode=0o700, exist_ok=True)
        os.chmod(d, 0o700)
    st = os.stat(d)
    if create:
        if st.st_uid != os.geteuid() or st.st_mode & 0o077:
            raise PermissionError(f"{d} must be owned by uid {os.geteuid()} with mode 0700 "
                                  f"(it is uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o})")
    elif st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise PermissionError(f"{d} is writable by group or others: put the control socket in a "
                              "directory of mode 0700")
