"""A real emperor over a temporary apps-available/apps-enabled tree, for the emperor tests.

Not part of the shared harness: it builds on it (``procs``, ``wait_for``, the uwsgi
client) with what only the emperor tests need: writing vassal files, enabling them by
symlink, reading the emperor's greppable log, and finding vassal and worker pids. The
other ``test_emperor_*`` modules import it; its own test checks that the vassal files it
writes are valid vassal configurations.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import psutil
import pytest
from harness import Proc, ProcGroup, request, wait_for, wait_for_log, wsgi_vars
from harness.procs import vassal_children

pytestmark = pytest.mark.live  # starts real processes (README: Tests)

APP = '''\
"""Test app: answers "<tag> <worker pid>"; /sleep?s=N sleeps first; crashes at import if asked."""
import os
import time

TAG = os.environ.get("APP_TAG", "?")
if os.environ.get("APP_CRASH"):
    raise RuntimeError("this app crashes on import (APP_CRASH is set)")


def application(environ, start_response):
    if environ.get("PATH_INFO", "").endswith("/sleep"):
        with open(os.path.join(os.path.dirname(__file__), "sleeping"), "w"):
            pass  # tells the test the slow request is inside a worker
        time.sleep(float(environ.get("QUERY_STRING", "s=1").partition("=")[2] or 1))
    body = f"{TAG} {os.getpid()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


class Rig:
    """Directories, files and the emperor process of one test."""

    def __init__(self, root: Path, socks: Path, procs: ProcGroup) -> None:
        self.root, self.socks, self.procs = root, socks, procs
        self.avail = root / "apps-available"
        self.enabled = root / "apps-enabled"
        self.avail.mkdir(parents=True, exist_ok=True)
        self.enabled.mkdir(exist_ok=True)
        self.app = root / "app.py"
        self.app.write_text(APP)
        self.proc: Proc | None = None

    # ---- files

    def sock(self, name: str) -> Path:
        return self.socks / f"{name}.sock"

    def vassal_text(self, name: str, tag: str = "v1", crash: bool = False, processes: int = 2,
                    extra: str = "") -> str:
        lines = ["[uwsgi]", f"socket = {self.sock(name)}", f"wsgi-file = {self.app}",
                 f"processes = {processes}", f"env = APP_TAG={tag}"]
        if crash:
            lines.append("env = APP_CRASH=1")
        return "\n".join([*lines, extra, ""])

    def write(self, name: str, **kw: object) -> Path:
        path = self.avail / f"{name}.ini"
        path.write_text(self.vassal_text(name, **kw))  # type: ignore[arg-type]
        return path

    def enable(self, name: str, link: str | None = None) -> Path:
        target = self.avail / f"{name}.ini"
        if not target.exists():
            self.write(name)
        dst = self.enabled / f"{link or name}.ini"
        dst.symlink_to(f"../apps-available/{name}.ini")
        return dst

    # ---- the emperor

    def start(self, extra: str = "", env: dict[str, str] | None = None, wait: bool = True,
              cmd_prefix: tuple[str, ...] = ()) -> Proc:
        ini = self.root / "emperor.ini"
        ini.write_text(f"[uwsgi]\nemperor = {self.enabled}\n{extra}\n")
        self.proc = self.procs.start([*cmd_prefix, sys.executable, "-m", "emperor", "--ini", str(ini)],
                                     env=env, name="emperor")
        if wait:
            wait_for_log(self.proc, r"starting: emperor", timeout=20)
        return self.proc

    @property
    def log(self) -> str:
        assert self.proc is not None
        return self.proc.log_text()

    def mark(self) -> int:
        assert self.proc is not None
        return self.proc.log_size()

    def wait_log(self, pattern: str, after: int = 0, timeout: float = 15.0) -> re.Match[str]:
        assert self.proc is not None
        return wait_for_log(self.proc, pattern, timeout=timeout, after=after)

    def count(self, pattern: str, after: int = 0) -> int:
        assert self.proc is not None
        return len(re.findall(pattern, self.proc.log_text(after)))

    # ---- the vassals

    def get(self, name: str, path: str = "/", timeout: float = 10.0) -> tuple[int, str]:
        status, _, body, _ = request(str(self.sock(name)), wsgi_vars(path=path), timeout=timeout)
        return status, body.decode()

    def serving(self, name: str, tag: str | None = None, timeout: float = 20.0) -> str:
        """Wait until ``name`` answers 200 (with ``tag`` if given); return the body."""

        def probe() -> str | None:
            status, body = self.get(name)
            return body if status == 200 and (tag is None or body.startswith(f"{tag} ")) else None

        return wait_for(probe, timeout, what=f"{name} serving {tag or ''}", ignore=(OSError,), proc=self.proc)

    def vassal_pid(self, name: str, emperor: int | None = None, log: str | None = None) -> int | None:
        """The live vassal master for ``name``: the last "spawned:" pid in the log, if it is
        still a child of the emperor (``emperor``/``log``: for an emperor this rig did not start)."""
        if emperor is None:
            assert self.proc is not None
            emperor, log = self.proc.pid, self.log
        pids = re.findall(rf"spawned: '{re.escape(name)}\.ini' \(pid (\d+)\)", log or "")
        if not pids:
            return None
        try:
            p = psutil.Process(int(pids[-1]))
            if p.ppid() == emperor and p.status() != psutil.STATUS_ZOMBIE:
                return p.pid
        except psutil.Error:
            pass
        return None

    def worker_pids(self, name: str) -> set[int]:
        return self.worker_pids_of(None, name)

    def worker_pids_of(self, emperor: int | None, name: str, log: str | None = None) -> set[int]:
        pid = self.vassal_pid(name, emperor, log)
        if pid is None:
            return set()
        live = set()
        try:
            kids = psutil.Process(pid).children()
        except psutil.Error:
            return set()
        for c in kids:
            try:
                if c.status() != psutil.STATUS_ZOMBIE:
                    live.add(c.pid)
            except psutil.Error:
                continue
        return live

    def tree(self) -> list[int]:
        assert self.proc is not None
        try:
            return [p.pid for c in vassal_children(self.proc.pid) for p in [c, *c.children(recursive=True)]]
        except psutil.Error:
            return []


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_rig_writes_valid_vassal_files(tmp_path: Path) -> None:
    from emperor import config
    from emperor.options import Scope

    rig = Rig(tmp_path, tmp_path, ProcGroup(tmp_path / "logs"))
    path = rig.write("a", tag="v9", crash=True, extra="harakiri = 30")
    cfg = config.from_args([("ini", str(path))], Scope.VASSAL)
    assert cfg.socket == [str(tmp_path / "a.sock")] and cfg.processes == 2
    assert cfg.env == ["APP_TAG=v9", "APP_CRASH=1"] and cfg.harakiri == 30


class EventStream:
    """`emperor ctl events` in the background, its JSON lines collected by a thread.

    A SUB socket connects asynchronously, so ``connect()`` reloads a vassal until its
    "reloaded" event arrives: after that, no event can be missed.
    """

    def __init__(self, endpoint: str) -> None:
        import subprocess
        import threading

        self.endpoint = endpoint
        self.proc = subprocess.Popen([sys.executable, "-m", "emperor", "ctl", "--endpoint", endpoint,
                                      "events"], stdout=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        assert self.proc.stdout is not None
        self.reader = threading.Thread(target=lambda: self.lines.extend(iter(self.proc.stdout.readline, "")),
                                       daemon=True)
        self.reader.start()

    def events(self) -> list[tuple[str, str]]:
        import json

        return [(e["vassal"], e["event"]) for e in (json.loads(x) for x in list(self.lines) if x.strip())]

    def connect(self, rig: Rig, name: str) -> None:
        import subprocess

        def delivered() -> bool:
            mark = rig.mark()
            subprocess.run([sys.executable, "-m", "emperor", "ctl", "--endpoint", self.endpoint, "reload",
                            name], capture_output=True, timeout=20, check=True)
            rig.wait_log(rf"reloaded: '{re.escape(name)}'", after=mark)
            return (name, "reloaded") in self.events()

        wait_for(delivered, 30, interval=0, what="the event stream to deliver")

    def stop(self) -> None:
        import signal

        self.proc.send_signal(signal.SIGINT)
        self.proc.communicate(timeout=10)
        self.reader.join(5)
