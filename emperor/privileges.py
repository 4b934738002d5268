"""Who a vassal (or the emperor) runs as: ``uid``, ``gid``, ``add-gid``, ``chown-socket``, ``umask``.

The names are resolved once, from the configuration, before anything is bound, so an
unknown user or group is a configuration error naming the file, line and key. The drop
itself happens late, in this order (docs/hosting.md):

1. bind every socket (privileged ports and root-owned socket directories work), apply
   ``chmod-socket`` and ``chown-socket`` before ``listen()``;
2. open the log file and the pidfile (the pidfile is handed to the user, so that a reload,
   which re-executes the master as that user, can lock and rewrite it);
3. ``setgroups`` (initgroups of the user, plus ``add-gid``), ``setgid``, ``setuid``, and
   check that ``setuid(0)`` now fails;
4. ``chdir`` again as the user and import the application.

Everything forked or re-executed afterwards (workers, ``lazy-apps`` imports, the master after a
reload) inherits the dropped ids and the already bound sockets: nothing needs root again.

Under ``emperor-tyrant`` the emperor starts the vassal as its file's owner (it sets
``EMPEROR_TYRANT``); the file's own ``uid``/``gid`` then lose, with a warning.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
from dataclasses import dataclass

from emperor import config

log = logging.getLogger("emperor.identity")

ENV_TYRANT = "EMPEROR_TYRANT"  # set by the emperor on vassals it starts as their file's owner
MAX_ID = 0xFFFFFFFE  # (uid_t)-1 means "unchanged" to the kernel


@dataclass(frozen=True)
class Identity:
    """The ids to switch to; ``None`` where the configuration says nothing."""

    uid: int | None = None
    gid: int | None = None
    user: str | None = None  # for initgroups; None for a uid without a passwd entry
    add_gids: tuple[int, ...] = ()
    chown: tuple[int, int] | None = None  # chown-socket: (uid, gid), -1 = unchanged
    umask: int | None = None
    origin: str = "command line"  # the configuration file, for messages
    where: str = "command line"  # ``file:line: key`` of the uid (else gid) setting, for messages

    @property
    def drops(self) -> bool:
        return self.uid is not None or self.gid is not None

    @property
    def owner(self) -> tuple[int, int] | None:
        """(uid, gid) to give the sockets we bind as root before the drop (-1: unchanged)."""
        if not self.drops or os.getuid() != 0:
            return None
        return (-1 if self.uid is None else self.uid, -1 if self.gid is None else self.gid)

    def groups(self) -> list[int]:
        """Supplementary groups: the user's own (as initgroups would set), then ``add-gid``."""
        gid = self.gid if self.gid is not None else os.getgid()
        out = os.getgrouplist(self.user, gid) if self.user else [gid]
        return list(dict.fromkeys([*out, *self.add_gids]))


def _number(text: str) -> int | None:
    if text.isdigit():
        value = int(text)
        if value > MAX_ID:
            raise ValueError(f"{value} is above the largest id {MAX_ID}")
        return value
    return None


def user_id(text: str) -> tuple[int, str | None, int | None]:
    """(uid, name, primary gid) of a user name or number; a number needs no passwd entry."""
    num = _number(text)
    try:
        pw = pwd.getpwuid(num) if num is not None else pwd.getpwnam(text)
    except KeyError:
        if num is not None:
            return num, None, None
        raise ValueError(f"no such user {text!r}") from None
    return pw.pw_uid, pw.pw_name, pw.pw_gid


def group_id(text: str) -> int:
    num = _number(text)
    if num is not None:
        return num
    try:
        return grp.getgrnam(text).gr_gid
    except KeyError:
        raise ValueError(f"no such group {text!r}") from None


def _error(cfg: config.Config, attr: str, message: str) -> config.ConfigError:
    e = cfg.sources.get(attr)
    key = attr.replace("_", "-")
    if e is None:
        return config.ConfigError(message, key=key)
    return config.ConfigError(message, e.file, e.line, e.key)


def resolve(cfg: config.Config) -> Identity:
    """Look every name up now; raises ``ConfigError`` (file, line, key) for an unknown one."""
    uid = gid = None
    user: str | None = None
    primary: int | None = None
    try:
        if cfg.uid is not None:
            uid, user, primary = user_id(cfg.uid)
    except ValueError as exc:
        raise _error(cfg, "uid", str(exc)) from None
    try:
        if cfg.gid is not None:
            gid = group_id(cfg.gid)
    except ValueError as exc:
        raise _error(cfg, "gid", str(exc)) from None
    if gid is None and primary is not None:
        gid = primary  # the user's own group, not root's (uWSGI would keep gid 0)
    elif gid is None and uid:
        raise _error(cfg, "uid", f"uid {uid} has no passwd entry, so no group of its own: set gid too "
                     "(else it would keep root's group)")
    add: list[int] = []
    for raw in cfg.add_gid:
        try:
            add.append(group_id(raw))
        except ValueError as exc:
            raise _error(cfg, "add_gid", str(exc)) from None
    chown = None
    if cfg.chown_socket:
        owner, _, group = cfg.chown_socket.partition(":")
        try:
            cuid = user_id(owner)[0] if owner else -1
            cgid = group_id(group) if group else -1
        except ValueError as exc:
            raise _error(cfg, "chown_socket", str(exc)) from None
        chown = (cuid, cgid)
    origin = cfg.files[0] if cfg.files else "command line"
    e = cfg.sources.get("uid" if cfg.uid is not None else "gid")
    where = f"{e.file}:{e.line}: {e.key}" if e is not None and e.line else origin
    return Identity(uid, gid, user, tuple(add), chown, cfg.umask, origin, where)


class IdentityError(Exception):
    """The drop failed or did not stick; the vassal must not run."""


def plan(ident: Identity, reloaded: bool = False) -> Identity:
    """What can and must be done from the ids we run with now; logs the warnings the case needs.

    Root: drop as configured (warn once when nothing says who to run as). Not root: there is
    nothing to switch to unless we already are that user; under ``emperor-tyrant`` the file's
    owner wins (warned), otherwise a different user is a configuration error.
    """
    if os.getuid() == 0:
        if ident.uid is None and not reloaded:
            log.warning("%s: runs as root: set uid/gid", ident.origin)
        return ident
    want_uid = ident.uid if ident.uid is not None else os.getuid()
    want_gid = ident.gid if ident.gid is not None else os.getgid()
    if (want_uid, want_gid) == (os.getuid(), os.getgid()):  # already them (a reload after the drop)
        if ident.drops and set(ident.groups()) != set(os.getgroups()):
            log.warning("%s: supplementary groups %s not applied (running with %s): a change of add-gid "
                        "needs a restart of the vassal, not a reload", ident.where,
                        sorted(ident.groups()), sorted(os.getgroups()))
        return Identity(chown=ident.chown, umask=ident.umask, origin=ident.origin)
    if os.environ.get(ENV_TYRANT):
        log.warning("%s: uid/gid %s:%s ignored: emperor-tyrant runs this vassal as its file's owner "
                    "(uid %d, gid %d)", ident.origin, want_uid, want_gid, os.getuid(), os.getgid())
        return Identity(chown=ident.chown, umask=ident.umask, origin=ident.origin)
    raise IdentityError(f"{ident.where}: cannot switch to uid {want_uid} gid {want_gid}: not running "
                        f"as root (uid {os.getuid()}, gid {os.getgid()})")


def apply_umask(ident: Identity) -> None:
    if ident.umask is not None:
        os.umask(ident.umask)


def hand_over(path: str, ident: Identity) -> None:
    """Give a file or socket we created as root to the user: the pidfile (a reload rewrites it as the
    user), the stats and zerg-server sockets (owned by the vassal's user, as its own sockets)."""
    if ident.owner is not None:
        try:
            os.chown(path, *ident.owner)
        except OSError as exc:
            raise IdentityError(f"chown {path} to uid {ident.uid} gid {ident.gid}: {exc.strerror}") from None


def drop(ident: Identity) -> None:
    """setgroups, setgid, setuid, in that order; then prove that root cannot be regained."""
    if not ident.drops or os.getuid() != 0:
        return
    try:
        if ident.gid is not None or ident.user:
            os.setgroups(ident.groups())
        if ident.gid is not None:
            os.setgid(ident.gid)
        if ident.uid is not None:
            os.setuid(ident.uid)
    except OSError as exc:
        raise IdentityError(f"cannot drop privileges to uid {ident.uid} gid {ident.gid}: "
                            f"{exc.strerror}") from None
    if ident.uid is not None and ident.uid != 0:
        try:
            os.setuid(0)
        except PermissionError:
            pass
        else:
            raise IdentityError(f"uid {ident.uid}: setuid(0) still succeeds after the drop: refusing to run")
    log.info("running as uid %d gid %d (groups %s)", os.getuid(), os.getgid(),
             ",".join(map(str, os.getgroups())) or "none")


def for_zerg(ident: Identity, servers: list[str]) -> Identity:
    """A root zerg with no ``uid`` of its own runs as the owner of the zerg server it attaches to.

    That socket is bound by its vassal after the vassal's own drop, so its owner is the
    vassal's user: the lent workers then run as the vassal's do, never as root.
    """
    if ident.drops or os.getuid() != 0:
        return ident
    for path in servers:
        if path.startswith("@"):
            continue
        try:
            st = os.stat(path)
        except OSError:
            continue
        if st.st_uid == 0:
            return ident
        try:
            name: str | None = pwd.getpwuid(st.st_uid).pw_name
        except KeyError:
            name = None
        return Identity(st.st_uid, st.st_gid, name, ident.add_gids, ident.chown, ident.umask, ident.origin,
                        ident.where)
    return ident


def chdir_as_user(directory: str | None) -> None:
    """Enter the working directory again after the drop, so one the user cannot enter fails now."""
    if directory:
        try:
            os.chdir(directory)
        except OSError as exc:
            raise IdentityError(f"chdir {directory} as uid {os.getuid()}: {exc.strerror}") from None


def log_already_open(path: str) -> bool:
    """After a reload the log file is still fd 2: keep it (the user may not be able to reopen it)."""
    try:
        a, b = os.fstat(2), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
