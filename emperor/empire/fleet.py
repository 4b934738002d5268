"""Membership in etcd (``emperor-etcd``) and the etcd vassal sources, as the emperor sees them.

The emperor's loop calls :meth:`Fleet.sync` every iteration: it computes the keys this host
should have, ``<prefix>/upstreams/<app>/<host:port>`` for every TCP socket of every vassal
that is READY, LOYAL or RELOADING (a graceful reload keeps the socket open, so the key
stays), and hands that set to a worker thread. The worker does every etcd call, each with a
short timeout, so a slow or lost etcd never stalls the loop or touches serving: it grants a
lease of ``emperor-etcd-ttl`` seconds, puts and deletes keys attached to it, and keeps it alive
every third of the TTL, but only while the loop itself keeps calling ``sync``: a hung
emperor stops refreshing its lease and its keys vanish with it, as a killed one's do. A lease
found expired (etcd was unreachable longer than the TTL) is granted again and every key put
again. On a clean shutdown the vassals leave one by one and the lease is revoked last.

A vassal reports its app name, weight and bound TCP addresses before each READY
(``Msg.ENDPOINTS``, sent by the vassal master): what it really bound, ``:0`` included. A
wildcard address (``0.0.0.0``, ``::``) is registered as ``emperor-etcd-advertise``, by default
the local address of the route to the first etcd endpoint, never as the wildcard.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from emperor import etcdkv, validators
from emperor.empire.vassals import State, Vassal

log = logging.getLogger("emperor")

SERVING = frozenset({State.READY, State.LOYAL, State.RELOADING})
WILDCARDS = ("0.0.0.0", "::", "")
CALL_TIMEOUT = 1.0  # every etcd request; the worker is the only one waiting for it


@dataclass(frozen=True)
class FleetSettings:
    endpoints: list[tuple[str, str, int]]
    prefix: str = "/emperor"
    ttl: int = 3
    advertise: str | None = None
    tls: etcdkv.Tls = field(default_factory=etcdkv.Tls)


@dataclass(frozen=True)
class Endpoints:
    """A vassal's ENDPOINTS payload, parsed."""

    app: str
    weight: int
    addrs: tuple[tuple[str, int], ...]  # uwsgi sockets: upstream <app> (uwsgi_pass)
    others: tuple[tuple[str, int, str], ...] = ()  # http/https sockets: upstream <app>-<proto> (proxy_pass)


def parse_endpoints(payload: str) -> Endpoints | None:
    """``app=NAME weight=N HOST:PORT [HOST]:PORT HOST:PORT/http ...``; None when malformed (the
    vassal is ours, but the channel is a trust boundary all the same: nothing from it reaches etcd
    unchecked). An address with ``/http`` or ``/https`` is an HTTP listener."""
    app, weight = "", 1
    addrs: list[tuple[str, int]] = []
    others: list[tuple[str, int, str]] = []
    for word in payload.split():
        if word.startswith("app="):
            app = word[4:]
        elif word.startswith("weight="):
            if not word[7:].isdigit():
                return None
            weight = max(1, min(1000, int(word[7:])))
        else:
            word, _, proto = word.partition("/")
            host, sep, port = word.rpartition(":")
            if not sep or not port.isdigit() or not 0 < int(port) < 65536:
                return None
            if proto not in ("", "http", "https"):
                return None
            if proto:
                others.append((host.strip("[]"), int(port), proto))
            else:
                addrs.append((host.strip("[]"), int(port)))
    if app:
        try:
            validators.upstream_name(app)
        except ValueError:
            return None
    return Endpoints(app, weight, tuple(addrs), tuple(others))


def default_app(vassal_name: str) -> str:
    """The vassal's name without ``.ini``, made safe as an upstream name (other characters -> ``_``)."""
    base = vassal_name.removesuffix(".ini") or "app"
    safe = "".join(c if c.isalnum() or c in "_.-" else "_" for c in base)[:128]
    return safe if safe[0] not in ".-" else f"_{safe[1:]}"


def route_address(host: str, port: int) -> str:
    """The local address the kernel would use to reach ``host``: a UDP connect sends nothing."""
    info = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    with socket.socket(info[0], socket.SOCK_DGRAM) as s:
        s.connect(info[4])
        return str(s.getsockname()[0])


def format_addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Registrar:
    """The worker thread that owns the lease and the keys; fed with the wanted keys by the loop."""

    def __init__(self, settings: FleetSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.s = settings
        self.clock = clock
        self._lock = threading.Lock()
        self._wanted: dict[tuple[str, str, int], dict[str, object]] = {}  # (app, host, port) -> value
        self._loop_alive = clock()
        self._kick = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.lease: int | None = None
        self.registered: dict[str, bytes] = {}  # key -> value as put under the current lease
        self.advertise = settings.advertise
        self.failing = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="etcd-registrar", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Revoke the lease (best effort, bounded): every key of this emperor goes at once."""
        self._stopping.set()
        self._kick.set()
        if self._thread is not None:
            self._thread.join(timeout=3 * CALL_TIMEOUT + 1)

    def want(self, wanted: dict[tuple[str, str, int], dict[str, object]], now: float) -> None:
        """From the loop: the keys it wants now; also the proof that the loop is alive."""
        with self._lock:
            changed = wanted != self._wanted
            self._wanted = wanted
            self._loop_alive = now
        if changed:
            self._kick.set()

    def snapshot(self) -> dict[str, object]:
        """For the emperor's stats: where it registers, whether etcd answers, what is registered."""
        with self._lock:
            registered = sorted(self.registered)
        return {"etcd": ",".join(f"{p}://{h}:{port}" for p, h, port in self.s.endpoints),
                "prefix": self.s.prefix, "ttl": self.s.ttl, "reachable": int(not self.failing),
                "lease": f"{self.lease:x}" if self.lease else "", "registered": registered}

    # ---- the worker

    def _run(self) -> None:
        client = etcdkv.Client(self.s.endpoints, timeout=CALL_TIMEOUT, tls=self.s.tls)
        refresh_every = self.s.ttl / 3
        next_refresh = 0.0
        while not self._stopping.is_set():
            self._kick.wait(timeout=max(0.05, min(refresh_every, next_refresh - self.clock())))
            self._kick.clear()
            if self._stopping.is_set():
                break
            try:
                now = self.clock()
                with self._lock:
                    loop_alive = self._loop_alive
                    wanted = dict(self._wanted)
                if now - loop_alive > self.s.ttl:
                    if self.lease is not None:
                        log.error("etcd: the emperor's loop has been silent for %.1f s: no longer "
                                  "refreshing the lease, its keys expire", now - loop_alive)
                        self.lease, self.registered = None, {}
                    next_refresh = now + refresh_every
                    continue
                if self.lease is not None and now >= next_refresh:
                    if client.keepalive(self.lease) <= 0:
                        log.warning("etcd: lease %x expired (etcd was unreachable too long); "
                                    "registering again", self.lease)
                        self.lease, self.registered = None, {}
                    next_refresh = now + refresh_every
                if self.lease is None:
                    self.lease, self.registered = client.grant(self.s.ttl), {}
                    next_refresh = self.clock() + refresh_every
                self._apply(client, wanted)
                if self.failing:
                    self.failing = False
                    log.info("etcd: %s reachable again; %d upstream keys registered", client.describe(),
                             len(self.registered))
            except etcdkv.EtcdError as exc:
                if not self.failing:
                    self.failing = True  # before the log line: the stats agree with the log at once
                    log.warning("etcd: cannot register upstreams (serving is not affected): %s", exc)
                next_refresh = self.clock() + min(1.0, refresh_every)
            except Exception:
                log.exception("etcd: registrar failed; retrying")
                next_refresh = self.clock() + 1.0
        if self.lease is not None:
            with contextlib.suppress(etcdkv.EtcdError):
                client.revoke(self.lease)
                log.info("etcd: lease revoked: this emperor's upstream keys are gone")

    def _apply(self, client: etcdkv.Client, wanted: Mapping[tuple[str, str, int], dict[str, object]]) -> None:
        keys: dict[str, bytes] = {}
        for (app, host, port), fields in wanted.items():
            if host in WILDCARDS:
                if self.advertise is None:
                    _, ehost, eport = self.s.endpoints[0]
                    try:
                        self.advertise = route_address(ehost, eport)
                    except OSError as exc:
                        raise etcdkv.EtcdError(f"no route to {ehost} to pick an advertise address: "
                                               f"{exc}; set emperor-etcd-advertise") from None
                    log.info("etcd: advertising %s for sockets bound to every interface", self.advertise)
                host = self.advertise
            keys[f"{self.s.prefix}/upstreams/{app}/{format_addr(host, port)}"] = json.dumps(
                fields, sort_keys=True).encode()
        for key in sorted(set(self.registered) - set(keys)):
            client.delete(key)
            with self._lock:
                del self.registered[key]
            log.info("etcd: unregistered %s", key)
        for key, value in sorted(keys.items()):
            if self.registered.get(key) != value:
                client.put(key, value, self.lease)
                if key not in self.registered:
                    log.info("etcd: registered %s", key)
                with self._lock:
                    self.registered[key] = value


class Fleet:
    """The emperor's hooks: a few calls from its loop, nothing that can block it."""

    def __init__(self, settings: FleetSettings | None, sources: list[object],
                 wake: Callable[[], None]) -> None:
        self.settings = settings
        self.registrar = Registrar(settings) if settings else None
        self.sources = [s for s in sources if hasattr(s, "start")]
        self.wake = wake
        self.endpoints: dict[str, Endpoints] = {}

    def start(self) -> None:
        for src in self.sources:
            src.start(self.wake)  # type: ignore[attr-defined]
        if self.registrar:
            self.registrar.start()

    def stop(self) -> None:
        for src in self.sources:
            src.stop()  # type: ignore[attr-defined]
        if self.registrar:
            self.registrar.stop()

    def reported(self, name: str, payload: str) -> None:
        """A vassal's ENDPOINTS message."""
        parsed = parse_endpoints(payload)
        if parsed is None:
            log.warning("etcd: %r sent malformed endpoints %r; not registered", name, payload[:120])
            self.endpoints.pop(name, None)
            return
        self.endpoints[name] = parsed

    def sync(self, vassals: Mapping[str, Vassal], now: float) -> None:
        if self.registrar is None:
            return
        for gone in set(self.endpoints) - set(vassals):
            del self.endpoints[gone]  # a removed vassal reports again when it is spawned anew
        wanted: dict[tuple[str, str, int], dict[str, object]] = {}
        for name, v in vassals.items():
            ep = self.endpoints.get(name)
            if ep is None or v.state not in SERVING:
                continue
            app = ep.app or default_app(name)
            value = {"vassal": name, "weight": ep.weight, "state": v.state.value if v.state else "",
                     "pid": v.pid}
            for host, port in ep.addrs:
                wanted[(app, host, port)] = value
            for host, port, proto in ep.others:  # one upstream per protocol: nginx cannot mix them
                wanted[(f"{app}-{proto}", host, port)] = {**value, "proto": proto}
        self.registrar.want(wanted, now)

    def deadline(self, now: float) -> float:
        """The loop must call ``sync`` this often, or the lease is no longer refreshed."""
        return now + self.settings.ttl / 3 if self.settings else now + 3600.0
