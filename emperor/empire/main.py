"""The emperor's entry point: ``emperor --ini emperor.ini`` / ``emperor --emperor DIR``.

Reads the configuration, daemonizes, takes the pidfile and the directory locks, then runs
one ``Emperor`` (emperor/empire/emperor.py) until it exits; the exit status is returned.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

from emperor import config, daemon, logs, privileges
from emperor.empire.dirlock import DirLockError, DirLocks
from emperor.empire.emperor import Emperor
from emperor.empire.settings import Settings
from emperor.options import Scope
from emperor.pidfile import PidFile, PidFileError

log = logging.getLogger("emperor")


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
