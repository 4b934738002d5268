"""The vassal's entry point: from a command line to a running master.

Reads the configuration (under an emperor: the ini bytes it checked, passed as an fd), resolves
the identity before anything is bound, enters the ``home`` venv, detaches for ``daemonize``,
redirects the log, then hands over to :class:`emperor.vassal.master.Master`. A configuration
error is reported to the emperor (CONFIG_ERROR) as well as logged.
"""

from __future__ import annotations

import logging
import os
import socket

from emperor import channel, config, daemon, ini, inifd, logs, privileges
from emperor.channel import Exit, Msg
from emperor.daemon import set_parent_death_signal
from emperor.options import Scope
from emperor.vassal.master import Master
from emperor.vassal.masterlog import log_to_syslog
from emperor.vassal.reload import ENV_RELOADS, enter_venv

log = logging.getLogger("emperor.master")


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
    reloaded = bool(os.environ.get(ENV_RELOADS))
    try:
        inifd.adopt()  # under an emperor: its checked bytes, never the path again
        cfg = config.from_args(pairs, scope)
        ident = privileges.resolve(cfg)  # unknown users and groups fail here, before anything is bound
        if cfg.home:
            enter_venv(cfg, pairs, chan)
        ident = privileges.plan(ident, reloaded)
    except (config.ConfigError, ini.IniError, privileges.IdentityError) as exc:
        log.error("configuration error: %s", exc)
        if chan is not None:
            channel.send(chan, Msg.CONFIG_ERROR, str(exc))
        return Exit.CONFIG
    privileges.apply_umask(ident)
    if not name:
        name = os.path.splitext(os.path.basename(cfg.files[0]))[0] if cfg.files else "vassal"
        logs.setup(name)
    if cfg.logger and cfg.logger[0] == "file" and not (cfg.logto or cfg.daemonize):
        cfg.values["logto"] = cfg.logger[1]  # logger = file:PATH is logto = PATH
    logfile = cfg.logto or cfg.daemonize
    if cfg.daemonize and chan is None and not os.environ.get(ENV_RELOADS):
        daemon.detach()
    if logfile and not (reloaded and privileges.log_already_open(logfile)):
        try:
            logs.redirect(logfile)
        except OSError as exc:
            log.error("logto %s: %s", logfile, exc.strerror)
            return Exit.CONFIG
    if cfg.logger and cfg.logger[0] == "syslog":
        log_to_syslog(cfg.logger[1], name)
    return Master(cfg, pairs, scope, chan, name, ident).run()


def _channel_dead(chan: socket.socket) -> bool:
    """The emperor may have died before PR_SET_PDEATHSIG took effect: check the channel once."""
    try:
        return chan.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
