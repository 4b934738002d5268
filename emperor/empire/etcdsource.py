"""``emperor = etcd://HOST:PORT/PREFIX``: every key under an etcd prefix is a vassal ini.

A watcher thread keeps a snapshot of the prefix (listed once, then followed with a watch
from the listed revision, resumed from the last revision seen after an idle period or a
disconnect, listed again when that revision was compacted) and wakes the emperor's loop;
the loop's rescan reads the snapshot through :meth:`EtcdSource.scan`, so an etcd vassal goes
through the same reconcile, state machine, throttle, events and stats as a file. Put ->
spawn or reload (the stamp is the key's mod_revision); delete -> stop.

The content reaches the vassal exactly as a file's does: the bytes of the snapshot, in a
sealed memfd (``emperor/inifd.py``); the vassal never reads a path. Its path, used for
relative includes and its working directory, is ``<the emperor's cwd>/<name>``. A key has no
owner, so tyrant mode refuses etcd sources (``Settings.from_config``). When etcd is
unreachable the snapshot stays as it was: running vassals keep running.
"""

from __future__ import annotations

import logging
import os
import threading
import urllib.parse
from collections.abc import Callable

from emperor import etcdkv
from emperor.empire import scan

log = logging.getLogger("emperor")

RETRY = 1.0  # seconds between attempts while etcd is unreachable
IDLE = 5.0  # a watch with no news for this long is re-opened from the last revision


def is_etcd_spec(spec: str) -> bool:
    return spec.startswith(("etcd://", "etcds://"))


class EtcdSource:
    """One ``etcd://`` value of ``emperor``; ``is_glob`` is True so no directory lock is taken."""

    is_glob = True

    def __init__(self, spec: str, cwd: str, tls: etcdkv.Tls | None = None) -> None:
        url = urllib.parse.urlsplit(spec)
        if not url.hostname:
            raise ValueError(f"{spec!r}: give etcd://HOST:PORT/PREFIX")
        try:
            port = url.port or 2379
        except ValueError:
            raise ValueError(f"{spec!r}: bad port") from None
        prefix = url.path.rstrip("/")
        if not prefix:
            raise ValueError(f"{spec!r}: give a key prefix after the address (etcd://HOST:PORT/PREFIX)")
        self.spec = spec
        self.endpoint = ("https" if url.scheme == "etcds" else "http", url.hostname, port)
        self.prefix = prefix + "/"
        self.path = spec  # how the source is named in logs
        self.cwd = cwd
        self.tls = tls or etcdkv.Tls()
        self._lock = threading.Lock()
        self._kvs: dict[str, tuple[bytes, int]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake: Callable[[], None] = lambda: None

    # ---- what the file scan asks of a source

    def watch_dirs(self) -> set[str]:
        return set()

    def candidates(self) -> list[tuple[str, str]]:
        return []

    def scan(self, tyrant: bool) -> tuple[dict[str, scan.Found], dict[str, str]]:
        """The snapshot as vassals: names checked as file names are, sizes bounded."""
        found: dict[str, scan.Found] = {}
        refused: dict[str, str] = {}
        with self._lock:
            items = sorted(self._kvs.items())
        for key, (value, revision) in items:
            name = key[len(self.prefix):]
            where = f"{self.spec} key {scan.shown(key)}"
            if "/" in name or not scan.looks_like_vassal(name):
                refused[where] = "a vassal key must be PREFIX/NAME.ini (no deeper level, not hidden)"
                continue
            if problem := scan.name_problem(name):
                refused[where] = problem.replace("file name", "key name")
                continue
            if len(value) > scan.MAX_SIZE:
                refused[where] = f"{len(value)} bytes is too large for a vassal ini (limit {scan.MAX_SIZE})"
                continue
            found[name] = scan.Found(name, os.path.join(self.cwd, name), (revision,), content=value)
        return found, refused

    # ---- the watcher thread

    def start(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        self._thread = threading.Thread(target=self._run, name=f"etcd-source {self.spec}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=0.5)  # a daemon thread: a watch blocked in a read ends with us

    def _run(self) -> None:
        client = etcdkv.Client([self.endpoint], timeout=1.0, tls=self.tls)
        failing = False
        while not self._stop.is_set():
            try:
                kvs, revision = client.get_prefix(self.prefix)
                self._publish(kvs)
                if failing:
                    log.info("etcd: %s reachable again (%d vassal keys)", self.spec, len(kvs))
                    failing = False
                self._follow(client, revision + 1)
            except etcdkv.Compacted:
                continue  # list again
            except etcdkv.EtcdError as exc:
                if not failing:
                    log.warning("etcd: %s unreachable (the running vassals stay as they are): %s",
                                self.spec, exc)
                    failing = True
                self._stop.wait(RETRY)
            except Exception:  # a bug here must not end the source silently
                log.exception("etcd: %s: watcher failed; retrying", self.spec)
                self._stop.wait(RETRY)

    def _follow(self, client: etcdkv.Client, revision: int) -> None:
        """Apply events from ``revision`` on until stopped; re-open after idle periods."""
        while not self._stop.is_set():
            for ev in client.watch(self.prefix, revision, idle=IDLE):
                with self._lock:
                    if ev.kind == "put":
                        self._kvs[ev.key] = (ev.value, ev.revision)
                    else:
                        self._kvs.pop(ev.key, None)
                revision = max(revision, ev.revision + 1)
                self._wake()
                if self._stop.is_set():
                    return

    def _publish(self, kvs: dict[str, tuple[bytes, int]]) -> None:
        with self._lock:
            changed = kvs != self._kvs
            self._kvs = dict(kvs)
        if changed:
            self._wake()
