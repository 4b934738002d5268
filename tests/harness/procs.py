"""Start, watch and stop real processes for integration tests, and prove none is left.

Why: the emperor spawns vassals which fork workers; a test that leaks one
poisons every later test (ports, sockets, CPU). So every process a test starts
runs in its own session, carries a marker environment variable that all its
descendants inherit, and its descendants are tracked by pid + create time.
Teardown stops the tracked processes by pid (then SIGKILL to their own process
group) and fails the test if any of them, or anything wearing the marker, is
still alive. Every wait polls against a deadline; nothing sleeps a fixed time.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import psutil

from .uwsgi_client import Addr, connect

T = TypeVar("T")

MARKER_VAR = "EMPEROR_TEST_MARKER"
"""Environment variable set on every process the harness starts (value: one id per test)."""


class WaitTimeout(AssertionError):
    """A polled condition did not come true before its deadline."""


# ------------------------------------------------------------------ small helpers
def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel just handed out on ``host`` (free now; callers retry on a rare race)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
    ignore: tuple[type[BaseException], ...] = (),
    proc: Proc | None = None,
) -> T:
    """Poll ``predicate`` until it returns something truthy; return that value.

    Exceptions listed in ``ignore`` count as "not yet" (the last one is quoted
    on timeout). If ``proc`` is given and dies meanwhile, fail at once with
    the tail of its log instead of waiting out the deadline.
    """
    t0 = time.monotonic()
    deadline = t0 + timeout
    last: object = None
    while True:
        try:
            last = predicate()
            if last:
                return last
        except ignore as e:
            last = e
        if proc is not None and not proc.alive():
            raise WaitTimeout(
                f"{what}: gave up after {time.monotonic() - t0:.2f}s because {proc.name} "
                f"(pid {proc.pid}) exited with {proc.popen.returncode}; last result {last!r}\n"
                f"--- log tail {proc.log_path}:\n{proc.log_tail()}"
            )
        if time.monotonic() >= deadline:
            tail = f"\n--- log tail {proc.log_path}:\n{proc.log_tail()}" if proc else ""
            raise WaitTimeout(f"timed out after {timeout}s waiting for {what}; last result {last!r}{tail}")
        time.sleep(interval)


def wait_for_socket(addr: Addr, timeout: float = 10.0, proc: Proc | None = None) -> None:
    """Wait until a TCP or Unix address accepts a connection (the connection is closed unused)."""

    def probe() -> bool:
        with connect(addr, timeout=1.0):
            return True

    wait_for(probe, timeout, what=f"a listener on {addr!r}", ignore=(OSError,), proc=proc)


def wait_for_log(
    proc: Proc, pattern: str | re.Pattern[str], timeout: float = 10.0, after: int = 0
) -> re.Match[str]:
    """Wait until ``proc``'s log (from byte offset ``after``) matches ``pattern``; return the match.

    Take ``after = proc.log_size()`` before an action to match only lines it caused.
    """
    rx = re.compile(pattern) if isinstance(pattern, str) else pattern

    def probe() -> re.Match[str] | None:
        return rx.search(proc.log_text(after))

    return wait_for(probe, timeout, what=f"log line /{rx.pattern}/ from {proc.name}", proc=proc)


def pid_alive(pid: int, create_time: float | None = None) -> bool:
    """True if ``pid`` exists, is not a zombie, and (if given) is the same process (create time)."""
    try:
        p = psutil.Process(pid)
        if create_time is not None and abs(p.create_time() - create_time) > 0.01:
            return False
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


TEMPLATE_COMM = "emperor-tpl"  # emperor/vassal/template.py: the emperor's template process


def vassal_children(pid: int) -> list[psutil.Process]:
    """An emperor's children without its template process (emperor-template): its vassals and zergs."""
    try:
        kids = psutil.Process(pid).children()
    except psutil.Error:
        return []
    out = []
    for k in kids:
        try:
            if k.name() != TEMPLATE_COMM:
                out.append(k)
        except psutil.Error:
            continue
    return out


def descendants(pid: int) -> list[int]:
    """All live descendants of ``pid`` (children, grandchildren...)."""
    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def _identity(pid: int) -> tuple[int, float] | None:
    try:
        return pid, psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _describe(pid: int) -> str:
    try:
        p = psutil.Process(pid)
        return f"pid {pid} ppid {p.ppid()} [{p.status()}] {' '.join(p.cmdline())[:200]}"
    except psutil.Error:
        return f"pid {pid} (gone)"


def marked_pids(marker: str) -> list[int]:
    """Live processes whose environment carries ``MARKER_VAR=marker`` (they descend from our test)."""
    found = []
    for p in psutil.process_iter(["pid"]):
        if p.pid == os.getpid():
            continue
        try:
            if p.environ().get(MARKER_VAR) == marker and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p.pid)
        except psutil.Error:
            continue
    return found


def assert_no_orphans(pids: Iterable[int | tuple[int, float]] = (), marker: str | None = None) -> None:
    """Fail if any given process (pid or (pid, create_time)) or any process wearing ``marker`` lives."""
    alive = []
    for item in pids:
        pid, ctime = item if isinstance(item, tuple) else (item, None)
        if pid_alive(pid, ctime):
            alive.append(pid)
    if marker:
        alive += [p for p in marked_pids(marker) if p not in alive]
    if alive:
        raise AssertionError("processes left running:\n  " + "\n  ".join(_describe(p) for p in alive))


# ------------------------------------------------------------------ processes
@dataclass
class Proc:
    """One started command: its Popen, its log file, and every descendant ever seen."""

    name: str
    cmd: list[str]
    popen: subprocess.Popen[bytes]
    log_path: Path
    started: float
    seen: set[tuple[int, float]] = field(default_factory=set)
    forced: list[str] = field(default_factory=list)
    """Processes stop() had to SIGKILL (it did not exit on its signal / outlived its parent)."""
    _log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def snapshot(self) -> list[int]:
        """Record the current descendants (so they are checked even after reparenting); return them."""
        kids = descendants(self.pid)
        for k in kids:
            ident = _identity(k)
            if ident:
                self.seen.add(ident)
        return kids

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_text(self, after: int = 0) -> str:
        """The log from byte offset ``after`` (undecodable bytes replaced)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(after)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait(self, timeout: float = 10.0) -> int:
        """Wait for exit; returns the exit code (negative = killed by that signal)."""
        return self.popen.wait(timeout)

    def close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def start(
    cmd: Sequence[str | os.PathLike[str]],
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    log_path: str | os.PathLike[str] | None = None,
    name: str | None = None,
    marker: str | None = None,
    inherit_env: bool = True,
    pass_fds: Sequence[int] = (),
) -> Proc:
    """Popen ``cmd`` in a new session, stdin from /dev/null, stdout+stderr appended to ``log_path``.

    ``env`` is added to os.environ (or replaces it when ``inherit_env=False``);
    ``marker`` is exported as ``EMPEROR_TEST_MARKER`` so descendants can be found.
    """
    argv = [os.fspath(c) for c in cmd]
    name = name or Path(argv[0]).name
    if log_path is None:
        log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"emperor-test-{name}-{uuid.uuid4().hex[:8]}.log"
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    e = dict(os.environ) if inherit_env else {}
    e.update(env or {})
    e.setdefault("PYTHONUNBUFFERED", "1")
    if marker:
        e[MARKER_VAR] = marker
    fh = open(log_path, "ab")  # noqa: SIM115  (owned by Proc, closed in stop())
    try:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=e,
            cwd=cwd,
            start_new_session=True,
            pass_fds=tuple(pass_fds),
        )
    except BaseException:
        fh.close()
        raise
    p = Proc(name, argv, popen, log_path, time.monotonic(), _log=fh)
    ident = _identity(popen.pid)
    if ident:
        p.seen.add(ident)
    return p


def stop(proc: Proc, sig: int = signal.SIGTERM, timeout: float = 10.0, grace: float = 5.0) -> int:
    """Stop ``proc``: ``sig`` to its pid, wait up to ``timeout``, then SIGKILL its process group.
    Descendants seen earlier get ``grace`` more seconds to exit on their own, then SIGKILL by pid
    (only if the create time still matches). Every forced kill is noted in ``proc.forced`` so the
    ``procs`` fixture can fail the test: cleaning up must not hide an orphan. Returns the exit code.
    """
    proc.snapshot()
    if proc.alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        try:
            proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.forced.append(f"{_describe(proc.pid)} ignored signal {sig} for {timeout}s")
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # our own session: pgid == pid
            proc.popen.wait(5)
    _kill_seen(proc, grace)
    proc.close_log()
    rc = proc.popen.returncode
    assert rc is not None
    return rc


def _kill_seen(proc: Proc, grace: float) -> None:
    """Descendants that outlive their parent (e.g. workers of a SIGKILLed master)."""
    pending = [(pid, ct) for pid, ct in proc.seen if pid != proc.pid]
    if not pending:
        return
    with contextlib.suppress(WaitTimeout):
        wait_for(lambda: not any(pid_alive(p, c) for p, c in pending), grace, interval=0.05,
                 what="descendants to exit")
    killed = []
    for pid, ct in pending:
        if pid_alive(pid, ct):
            proc.forced.append(f"{_describe(pid)} outlived {proc.name} (pid {proc.pid}) by {grace}s")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.append((pid, ct))
    if killed:
        wait_for(lambda: not any(pid_alive(p, c) for p, c in killed), 5, what="SIGKILLed descendants to die")


class ProcGroup:
    """Everything one test started; the ``procs`` fixture stops it all and checks for leftovers."""

    def __init__(self, log_dir: str | os.PathLike[str], marker: str | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.marker = marker or uuid.uuid4().hex
        self.procs: list[Proc] = []
        self._stop_sig: dict[int, int] = {}

    def start(
        self,
        cmd: Sequence[str | os.PathLike[str]],
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        name: str | None = None,
        stop_signal: int = signal.SIGTERM,
        **kw: Any,
    ) -> Proc:
        """Start a tracked process; its log goes to ``<log_dir>/<name>.<n>.log``."""
        name = name or Path(os.fspath(cmd[0])).name
        log = self.log_dir / f"{name}.{len(self.procs)}.log"
        p = start(cmd, env=env, cwd=cwd, log_path=log, name=name, marker=self.marker, **kw)
        self.procs.append(p)
        self._stop_sig[p.pid] = stop_signal
        return p

    def snapshot(self) -> None:
        """Record current descendants of every tracked process (call after spawns and reloads)."""
        for p in self.procs:
            if p.alive():
                p.snapshot()

    def stop(self, proc: Proc, sig: int | None = None, timeout: float = 10.0, grace: float = 5.0) -> int:
        """Stop with ``sig`` or the process's ``stop_signal`` (see module ``stop``)."""
        sig = self._stop_sig.get(proc.pid, signal.SIGTERM) if sig is None else sig
        return stop(proc, sig, timeout, grace)

    def stop_all(self, timeout: float = 10.0) -> None:
        """Stop in reverse start order (the front end before its backends)."""
        self.snapshot()
        for p in reversed(self.procs):
            self.stop(p, timeout=timeout)

    def all_seen(self) -> set[tuple[int, float]]:
        return set().union(*(p.seen for p in self.procs)) if self.procs else set()

    def leftovers(self) -> list[int]:
        """Live pids among everything seen plus anything wearing our marker."""
        pids = {pid for pid, ct in self.all_seen() if pid_alive(pid, ct)}
        return sorted(pids | set(marked_pids(self.marker)))

    def assert_no_orphans(self, timeout: float = 5.0) -> None:
        """Fail if stop() had to force-kill anything, or (after ``timeout``) anything still runs."""
        forced = [f for p in self.procs for f in p.forced]
        with contextlib.suppress(WaitTimeout):
            wait_for(lambda: not self.leftovers(), timeout, interval=0.05, what="no leftovers")
        try:
            assert_no_orphans(self.all_seen(), self.marker)
        except AssertionError as e:
            forced.append(str(e))
        if forced:
            raise AssertionError("processes had to be killed at stop:\n  " + "\n  ".join(forced))


# ------------------------------------------------------------------ load
@dataclass
class LoadResult:
    """Counts of a bounded client loop; ``failures`` keeps the first details for the assertion message."""

    ok: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def total(self) -> int:
        return self.ok + self.failed

    def __str__(self) -> str:
        head = f"{self.ok} ok, {self.failed} failed in {self.elapsed:.2f}s"
        return head + ("".join(f"\n  {f}" for f in self.failures) if self.failures else "")


class BackgroundLoad:
    """``threads`` threads call ``fn()`` until stopped, ``seconds`` pass or ``max_requests`` are made.

    ``fn`` fails by raising or by returning False (any other value is ok), so
    ``lambda: http_get(url)[0] == 200`` is a valid probe. Use around a reload::

        with BackgroundLoad(probe) as load:
            ...trigger reload, wait for it...
        assert load.result.failed == 0, load.result
    """

    def __init__(
        self,
        fn: Callable[[], object],
        threads: int = 4,
        seconds: float = 30.0,
        max_requests: int | None = None,
        keep_failures: int = 50,
    ) -> None:
        self.fn, self.seconds, self.max_requests, self.keep = fn, seconds, max_requests, keep_failures
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._issued = 0
        self._threads = [
            threading.Thread(target=self._run, daemon=True, name=f"load-{i}") for i in range(threads)
        ]

    def _take(self) -> bool:
        with self._lock:
            if self.max_requests is not None and self._issued >= self.max_requests:
                return False
            self._issued += 1
            return True

    def _run(self) -> None:
        deadline = self._t0 + self.seconds
        while not self._stop.is_set() and time.monotonic() < deadline and self._take():
            t = time.monotonic()
            try:
                ok = self.fn() is not False
                detail = "returned False"
            except Exception as e:
                ok, detail = False, f"{type(e).__name__}: {e}"
            with self._lock:
                if ok:
                    self.result.ok += 1
                else:
                    self.result.failed += 1
                    if len(self.result.failures) < self.keep:
                        self.result.failures.append(f"+{t - self._t0:.3f}s {detail}")

    def start(self) -> BackgroundLoad:
        self._t0 = time.monotonic()
        for t in self._threads:
            t.start()
        return self

    def join(self) -> LoadResult:
        """Wait for the loop to end by its own bounds."""
        for t in self._threads:
            t.join()
        self.result.elapsed = time.monotonic() - self._t0
        return self.result

    def stop(self) -> LoadResult:
        """End the loop now (in-flight calls finish) and return the counts."""
        self._stop.set()
        return self.join()

    def __enter__(self) -> BackgroundLoad:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def load_loop(
    fn: Callable[[], object], threads: int = 4, seconds: float = 5.0, max_requests: int | None = None
) -> LoadResult:
    """Run ``fn`` from ``threads`` threads until ``seconds`` pass or ``max_requests`` are made."""
    return BackgroundLoad(fn, threads, seconds, max_requests).start().join()
