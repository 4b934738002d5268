"""The vassal's listening sockets at boot: inherited, handed over, or bound (docs/sockets.md).

A reload passes the bound sockets on (``sockets.ENV_FDS``); an on-demand vassal gets the
emperor's socket first; a zerg serves its parent's sockets and binds none; everything else is
bound here, after every TLS certificate has loaded (a bad certificate binds nothing). The
master's own sockets that cross a reload with the listeners (stats, zerg server) are returned
apart, under their names, for the parts that own them.
"""

from __future__ import annotations

import os

from emperor import addresses, config, privileges
from emperor.channel import Exit
from emperor.vassal import sockets, zerg
from emperor.vassal.sockets import Listener


class BindError(Exception):
    """The listeners cannot be had: the message to log and the vassal's exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def listeners(cfg: config.Config, ident: privileges.Identity,
              own_keys: list[str]) -> tuple[list[Listener], dict[str, Listener]]:
    """(the listeners, the inherited sockets named in ``own_keys``); raises BindError."""
    on_demand = bool(os.environ.get(sockets.ENV_ON_DEMAND))
    if not (cfg.socket or cfg.zerg or cfg.http_socket or cfg.http or cfg.https_socket or on_demand):
        where = ", ".join(cfg.files) or "command line"
        raise BindError("no socket configured: set socket = /path/app.sock or 127.0.0.1:PORT, or "
                        f"http-socket = 127.0.0.1:PORT ({where})", Exit.CONFIG)
    tls_addrs: list[str] = []
    if cfg.https_socket:  # load every certificate once, before binding anything
        from emperor.vassal import tls

        try:
            tls_addrs = list(tls.sites(cfg))
        except tls.TLSError as exc:
            raise BindError(str(exc), Exit.CONFIG) from None
    try:
        inherited = sockets.adopt(os.environ.pop(sockets.ENV_FDS, None))
        kept = {key: inherited.pop(key) for key in own_keys if key in inherited}
        if cfg.zerg:  # a zerg serves its parent's sockets (kept across its own reloads), binds none
            own = [s for k, s in inherited.items() if not k.startswith(("stats:", "zerg-server:"))]
            found = own or zerg.attach(cfg.zerg)
            for lst in found:  # the zerg protocol carries no protocol: ours decides
                lst.proto = cfg.protocol
            return found, kept
        # on-demand (docs/emperor.md): the emperor's socket, first; a `socket` naming the same
        # address is that socket (uWSGI would bind it over the emperor's)
        od = sockets.take_on_demand(inherited)
        if od is not None:
            sockets.configure(od, cfg.listen, cfg.socket_timeout, not cfg.no_defer_accept)
            od.proto = cfg.protocol
        wanted = {a: p for a, p in sockets.configured(cfg, tls_addrs).items() if od is None or a != od.name}
        return ([od] if od else []) + sockets.open_all(
            wanted, cfg.listen, cfg.chmod_socket, cfg.socket_timeout, not cfg.no_defer_accept,
            inherited, ident.chown), kept
    except (addresses.AddressError, zerg.ZergError, OSError) as exc:
        raise BindError(str(exc), Exit.SOCKET) from None


def accept_mode(found: list[Listener]) -> bool:
    """Set each listener blocking or not for the workers' accept loops; True if any speaks HTTP."""
    speaks_http = any(lst.proto in ("http", "https") for lst in found)
    for lst in found:
        # one uwsgi listener: blocking accept(); else poll() + non-blocking accept in each worker
        lst.sock.setblocking(len(found) == 1 and not speaks_http)
    return speaks_http
