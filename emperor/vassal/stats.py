"""The vassal's stats: uWSGI's stats JSON (what uwsgitop and uwsgi_exporter read) and Prometheus text.

Everything comes from what the master already holds: the scoreboard (written by the
workers themselves), its worker table, its listeners, and ``/proc/PID/statm`` for
``rss``/``vsz`` (read directly, not through psutil: a vassal imports nothing outside the standard
library before the app, so the app's virtualenv decides every package version). Rendering never
talks to a worker and never waits, so a stats reader cannot slow down serving. Every counter is a
JSON integer: uwsgi_exporter's Go decoder rejects the
whole document when one of them is a float (``avg_rt: 12.5``).

Served by :class:`emperor.statsserver.StatsServer`, which the master registers in its loop
when ``stats = ADDR`` is set (``stats-http`` adds HTTP and ``/metrics``). What it reads is
named by ``Source`` (the master satisfies it; this module does not import the master), and
read at every document, so a ``scale`` or a respawn shows at once.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import TYPE_CHECKING, Any, Protocol

from emperor import __version__
from emperor.statsserver import StatsServer
from emperor.vassal import scoreboard as sb

if TYPE_CHECKING:
    from emperor.vassal.cheaper import Ledger, Policy
    from emperor.vassal.scoreboard import Scoreboard
    from emperor.vassal.sockets import Listener

log = logging.getLogger("emperor.stats")


class Settings(Protocol):
    """The options the documents show (the vassal's ``Config``, emperor/config_view.py)."""

    listen: int
    chdir: str | None
    stats: str | None
    stats_http: bool
    socket_timeout: float


class Source(Protocol):
    """What the stats read of the vassal's master, live: its name and pid, the scoreboard the
    workers write, its worker table (pid -> worker id), its listeners, its target worker count
    and its settings."""

    name: str
    pid: int
    board: Scoreboard
    workers: dict[int, int]
    listeners: list[Listener]
    target: int  # the worker count now (the ini's ``processes``, or what a scale set)
    cheaper: Policy | None  # docs/autoscaling.md: the policy, its book, the workers it is retiring
    cheaper_log: Ledger
    retiring: set[int]

    def running_workers(self) -> int: ...

    @property
    def cfg(self) -> Settings: ...


class VassalStats:
    """Builds the documents for one master; keeps what deltas and /proc lookups need between reads."""

    def __init__(self, master: Source) -> None:
        self.master = master
        self.last_requests: dict[int, int] = {}  # worker id -> requests at the previous document
        self.probe: Any = None
        self.started = int(time.time())

    # ---- the JSON -----------------------------------------------------------------------
    def document(self) -> dict[str, Any]:
        m = self.master
        queues = self._queues()
        backlog = max((q[0] for q in queues.values()), default=0)
        workers = [self._worker(wid, pid) for pid, wid in sorted(m.workers.items(), key=lambda kv: kv[1])]
        return {
            "version": __version__,
            "listen_queue": backlog,
            "listen_queue_errors": 0,
            "signal_queue": 0,
            "load": backlog,
            "pid": m.pid,
            "uid": os.getuid(),
            "gid": os.getgid(),
            "cwd": _cwd(),
            "name": m.name,
            "processes": m.target,
            "locks": [{"user 0": 0}, {"signal": 0}],
            "sockets": [
                {"name": lst.name, "proto": lst.proto, "queue": queues.get(lst.name, (0, 0))[0],
                 "max_queue": queues.get(lst.name, (0, m.cfg.listen))[1] or m.cfg.listen,
                 "shared": 0, "can_offload": 0}
                for lst in m.listeners],
            "workers": workers,
            "cheaper": self._cheaper(),
        }

    def _cheaper(self) -> dict[str, Any]:
        """The worker counts (current, minimum, maximum) and the cheaper algorithm's book: spawns and
        cheaps by rule and the last events with their reasons (emperor/vassal/cheaper.py). Without
        cheaper the minimum and maximum are both ``processes``."""
        m = self.master
        current = m.running_workers()
        pol = m.cheaper
        if pol is None:
            return {"enabled": 0, "algo": "", "workers": current, "min": m.target,
                    "max": m.target, "spawns": 0, "cheaps": 0, "events": []}
        book = m.cheaper_log
        return {"enabled": 1, "algo": pol.s.algo, "workers": current, "min": pol.minimum, "max": pol.maximum,
                "retiring": len(m.retiring), "spawns": sum(book.spawned.values()),
                "cheaps": sum(book.cheaped.values()), "spawns_by_rule": dict(book.spawned),
                "cheaps_by_rule": dict(book.cheaped), "events": list(book.events)}

    def _worker(self, wid: int, pid: int) -> dict[str, Any]:
        b, i = self.master.board, wid - 1
        requests = b.get(i, sb.REQUESTS)
        delta = max(0, requests - self.last_requests.get(wid, 0))
        self.last_requests[wid] = requests
        rt_sum = b.get(i, sb.RT_SUM_US)
        busy = b.get(i, sb.BUSY_SINCE) != 0
        exceptions = b.get(i, sb.EXCEPTIONS)
        rss, vsz = proc_memory(pid)
        return {
            "id": wid,
            "pid": pid,
            "accepting": int(b.get(i, sb.ACCEPTING) != 0),
            "requests": requests,
            "delta_requests": delta,
            "exceptions": exceptions,
            "harakiri_count": b.get(i, sb.HARAKIRI),
            "signals": 0,
            "signal_queue": 0,
            "status": "busy" if busy else "idle",
            "in_flight": b.get(i, sb.IN_FLIGHT),  # ASGI workers (docs/asgi.md); 0 for sync workers
            "rss": rss,
            "vsz": vsz,
            "running_time": rt_sum,
            "last_spawn": b.get(i, sb.LAST_SPAWN),
            "respawn_count": b.get(i, sb.RESPAWNS),
            "tx": b.get(i, sb.TX),
            "avg_rt": rt_sum // requests if requests else 0,
            "apps": [{"id": 0, "modifier1": 0, "mountpoint": "", "startup_time": 0, "requests": requests,
                      "exceptions": exceptions, "chdir": self.master.cfg.chdir or ""}],
            # one core per worker: the scoreboard is per worker, also with threads. ``vars`` stays
            # empty on purpose (uWSGI puts the busy request's CGI variables there).
            "cores": [{"id": 0, "requests": requests, "static_requests": 0, "routed_requests": 0,
                       "offloaded_requests": 0, "write_errors": 0, "read_errors": 0,
                       "in_request": int(busy), "vars": [], "req_info": {}}],
        }

    def _queues(self) -> dict[str, tuple[int, int]]:
        """(connections waiting, backlog) per listener, where the kernel tells; 0 otherwise."""
        if self.probe is None:
            try:
                from emperor.vassal import backlog

                self.probe = backlog.Probe([(lst.name, lst.sock) for lst in self.master.listeners])
            except Exception:  # no backlog module or no netlink: queues read as 0
                self.probe = False
        if not self.probe:
            return {}
        try:
            return {name: (q.length, q.limit) for name, q in self.probe.read().items() if q is not None}
        except Exception:
            return {}

    def close(self) -> None:
        if self.probe:
            try:
                self.probe.close()
            except Exception:
                pass
        self.probe = None

    def render(self) -> bytes:
        return json.dumps(self.document(), indent="\t").encode() + b"\n"

    # ---- Prometheus ---------------------------------------------------------------------
    def metrics(self) -> tuple[str, bytes]:
        """Prometheus text from the same figures (prometheus_client does the format)."""
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        doc = self.document()
        m = self.master
        vassal = m.name
        hist = [0] * (len(sb.HIST_BOUNDS_US) + 1)
        rt_sum = 0
        for wid in m.workers.values():
            for k, n in enumerate(m.board.histogram(wid - 1)):
                hist[k] += n
            rt_sum += m.board.get(wid - 1, sb.RT_SUM_US)

        def families() -> list[Any]:
            out: list[Any] = []

            def counter(name: str, help_: str, key: str) -> None:
                c = CounterMetricFamily(name, help_, labels=["vassal", "worker"])
                for w in doc["workers"]:
                    c.add_metric([vassal, str(w["id"])], w[key])
                out.append(c)

            counter("emperor_worker_requests", "Requests served by the worker.", "requests")
            counter("emperor_worker_exceptions", "Requests that raised in the application.", "exceptions")
            counter("emperor_worker_harakiri", "Workers killed by harakiri in this slot.", "harakiri_count")
            counter("emperor_worker_respawns", "Worker respawns in this slot (crashes and recycles).",
                    "respawn_count")
            counter("emperor_worker_tx_bytes", "Response bytes sent by the worker.", "tx")
            rss = GaugeMetricFamily("emperor_worker_rss_bytes", "Resident memory of the worker.",
                                    labels=["vassal", "worker"])
            for w in doc["workers"]:
                rss.add_metric([vassal, str(w["id"])], w["rss"])
            out.append(rss)
            alive = GaugeMetricFamily("emperor_workers", "Worker processes alive.", labels=["vassal"])
            alive.add_metric([vassal], len(doc["workers"]))
            out.append(alive)
            busy = GaugeMetricFamily("emperor_busy_workers", "Workers inside a request now.",
                                     labels=["vassal"])
            busy.add_metric([vassal], sum(1 for w in doc["workers"] if w["status"] == "busy"))
            out.append(busy)
            target = GaugeMetricFamily("emperor_processes", "Configured (or scaled) worker count.",
                                       labels=["vassal"])
            target.add_metric([vassal], m.target)
            out.append(target)
            ch = doc["cheaper"]
            for name, key, text in (("emperor_workers_min", "min", "The least workers cheaper keeps "
                                     "(processes without cheaper)."),
                                    ("emperor_workers_max", "max", "The most workers cheaper may run "
                                     "(processes)."),
                                    ("emperor_workers_current", "workers", "Workers running and not "
                                     "retiring.")):
                g = GaugeMetricFamily(name, text, labels=["vassal"])
                g.add_metric([vassal], ch[key])
                out.append(g)
            for name, key, text in (("emperor_cheaper_spawns", "spawns_by_rule", "Workers spawned by "
                                     "the cheaper algorithm, by rule."),
                                    ("emperor_cheaper_cheaps", "cheaps_by_rule", "Workers retired by "
                                     "the cheaper algorithm, by rule.")):
                c = CounterMetricFamily(name, text, labels=["vassal", "rule"])
                for rule, n in sorted(ch.get(key, {}).items()):
                    c.add_metric([vassal, rule], n)
                out.append(c)
            q = GaugeMetricFamily("emperor_listen_queue", "Connections waiting in the accept queue "
                                  "(0 where the kernel does not report it).", labels=["vassal", "socket"])
            for s in doc["sockets"]:
                q.add_metric([vassal, s["name"]], s["queue"])
            out.append(q)
            h = HistogramMetricFamily("emperor_request_duration_seconds", "Time from accept to close of "
                                      "each request, over the live workers.", labels=["vassal"])
            buckets, running = [], 0
            for bound, n in zip((*sb.HIST_BOUNDS_US, None), hist, strict=True):
                running += n
                buckets.append(("+Inf" if bound is None else repr(bound / 1e6), running))
            h.add_metric([vassal], buckets, rt_sum / 1e6)
            out.append(h)
            return out

        class _Collector:
            def collect(self) -> list[Any]:
                return families()

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector())  # type: ignore[arg-type]
        return "text/plain; version=0.0.4; charset=utf-8", generate_latest(registry)


class StatsError(Exception):
    """``stats = ADDR`` cannot be served: a boot error, as a busy ``socket`` is (the operator asked)."""


def open_server(master: Source, inherited: Listener | None = None) -> tuple[StatsServer, VassalStats] | None:
    """Listen on ``stats = ADDR`` if set (or keep the socket a reload inherited); raises StatsError
    when the address cannot be used."""
    cfg = master.cfg
    if not cfg.stats:
        return None
    stats = VassalStats(master)
    try:
        kept = (inherited.sock, inherited.path, inherited.ident) if inherited else None
        server = StatsServer(cfg.stats, stats.render, http=cfg.stats_http, render_metrics=stats.metrics,
                             timeout=max(1.0, cfg.socket_timeout), inherited=kept)
    except (OSError, ValueError) as exc:
        raise StatsError(f"stats = {cfg.stats}: {exc}") from None
    log.info("%s: stats on %s", master.name, server.describe())
    return server, stats


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:
        return ""



_PAGE = os.sysconf("SC_PAGE_SIZE")


def proc_memory(pid: int | str = "self") -> tuple[int, int]:
    """(rss, vsz) in bytes from /proc/PID/statm; (0, 0) for a process that is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            size, resident = f.read().split()[:2]
        return int(resident) * _PAGE, int(size) * _PAGE
    except (OSError, ValueError):
        return 0, 0
