"""``forwarded-allow-ips``: the peers whose word on the request's scheme is believed.

Whoever connects to a vassal's socket writes the CGI vars, so ``HTTPS=on``,
``REQUEST_SCHEME=https`` or ``UWSGI_SCHEME`` from an arbitrary TCP peer would let it make the
app believe a plain request was encrypted (secure cookies, redirects, HSTS decisions).
They are believed only from a peer in this list: a Unix-socket peer always (the socket's
mode decides who can connect), and by default loopback, as gunicorn's
``forwarded_allow_ips``. The HTTP codec uses the same list for X-Forwarded-For/-Proto.
"""

from __future__ import annotations

import ipaddress

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
DEFAULT = "127.0.0.1,::1"


def parse(raw: str) -> tuple[Network, ...] | None:
    """The networks of a comma-separated list of IPs and CIDRs; None for ``*`` (every peer).

    Raises ValueError naming the bad entry.
    """
    entries = [e.strip() for e in raw.split(",") if e.strip()]
    if entries == ["*"]:
        return None
    nets = []
    for entry in entries:
        try:
            nets.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network (such as 10.0.0.0/8), "
                             "nor '*' alone") from None
    return tuple(nets)


class AllowList:
    """Decides from a ``getpeername()`` result; built once per worker."""

    def __init__(self, raw: str = DEFAULT) -> None:
        self.networks = parse(raw)

    def allows(self, peer: object) -> bool:
        if self.networks is None or not isinstance(peer, tuple):  # '*', or an AF_UNIX peer
            return True
        try:
            ip = ipaddress.ip_address(peer[0].partition("%")[0])  # fe80::1%eth0: drop the zone
        except (ValueError, IndexError, AttributeError):
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # a dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d
        return any(ip in net for net in self.networks)
