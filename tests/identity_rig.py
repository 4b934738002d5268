"""Shared pieces of the identity and virtualenv tests (tests/test_identity*.py, tests/test_venv*.py).

Everything a vassal touches after dropping to another user must be reachable by that user:
this machine's interpreter lives under /root (mode 0700), so each test runs its vassals from
a virtualenv made with the system Python (``/usr/bin/python3``, world-readable), in a
world-readable directory, through ``home`` (the emperor's package itself, in the worktree,
is world-readable). That is also what a deployer needs (docs/hosting.md).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from harness import Proc, ProcGroup, request, wait_for_log, wsgi_vars

SYSTEM_PYTHON = "/usr/bin/python3"

APP = '''\
"""Reports who and where it runs: ids, whether it can write a root-owned file, package versions."""
import json
import os
import sys


def application(environ, start_response):
    try:
        with open(os.environ["ROOT_FILE"], "a") as f:
            f.write("written by the app\\n")
        wrote = True
    except (OSError, KeyError):
        wrote = False
    try:
        import verpkg
        version = verpkg.__version__
    except ImportError:
        version = None
    try:
        import psutil
        psutil_version = psutil.__version__
    except ImportError:
        psutil_version = None
    body = json.dumps({
        "uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
        "pid": os.getpid(), "wrote": wrote, "prefix": sys.prefix, "version": version,
        "psutil": psutil_version, "python": list(sys.version_info[:3]),
        "emperor": sys.modules["emperor"].__file__,
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
'''


def world_dir() -> Path:
    """A directory every user can read and enter (pytest's tmp_path is under a 0700 directory)."""
    d = Path(tempfile.mkdtemp(prefix="emp-id-", dir="/tmp"))
    d.chmod(0o755)
    return d


def make_venv(path: Path, packages: dict[str, str] | None = None) -> Path:
    """A venv from the system Python (no pip, no network); ``packages``: {name: version} written
    into its site-packages as tiny packages, which is what ``pip install`` of a local package leaves."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.fail(f"{SYSTEM_PYTHON} is needed to build a venv other users can run")
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(path)], check=True)
    site = next(path.glob("lib/python3*/site-packages"))
    for name, version in (packages or {}).items():
        pkg = site / name
        pkg.mkdir()
        (pkg / "__init__.py").write_text(f'__version__ = "{version}"\n')
        dist = site / f"{name}-{version}.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return path


def ids(pid: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(Uid real/effective/saved/fs, Gid ..., supplementary groups) from /proc/PID/status."""
    fields: dict[str, tuple[int, ...]] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Uid", "Gid", "Groups"):
                fields[key] = tuple(int(x) for x in value.split())
    return fields["Uid"], fields["Gid"], tuple(sorted(fields.get("Groups", ())))


def children(pid: int) -> set[int]:
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rpartition(")")[2].split()[1]) == pid:
                        out.add(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return out


def get_json(sock: Path, path: str = "/") -> dict[str, object]:
    status, _, body, _ = request(str(sock), wsgi_vars(path=path), timeout=10)
    assert status == 200, (status, body[:300])
    return json.loads(body)  # type: ignore[no-any-return]


class Emperor:
    """An emperor over ``root/vassals`` (its log is the test's window on the vassals)."""

    def __init__(self, root: Path, procs: ProcGroup) -> None:
        self.root, self.procs = root, procs
        self.vassals = root / "vassals"
        self.vassals.mkdir(exist_ok=True)
        self.vassals.chmod(0o755)
        self.proc: Proc | None = None

    def write(self, name: str, text: str) -> Path:
        path = self.vassals / f"{name}.ini"
        path.write_text(text)
        return path

    def start(self, extra: str = "") -> Proc:
        ini = self.root / "emperor.ini"
        ini.write_text(f"[uwsgi]\nemperor = {self.vassals}\nemperor-control = off\n{extra}\n")
        self.proc = self.procs.start([sys.executable, "-m", "emperor", "--ini", str(ini)], name="emperor")
        wait_for_log(self.proc, r"starting: emperor", timeout=20)
        return self.proc

    @property
    def log(self) -> str:
        assert self.proc is not None
        return self.proc.log_text()

    def wait_log(self, pattern: str, after: int = 0, timeout: float = 20.0) -> re.Match[str]:
        assert self.proc is not None
        return wait_for_log(self.proc, pattern, timeout=timeout, after=after)

    def mark(self) -> int:
        assert self.proc is not None
        return self.proc.log_size()

    def master(self, name: str) -> int:
        pids = re.findall(rf"spawned: '{re.escape(name)}\.ini' \(pid (\d+)\)", self.log)
        assert pids, f"{name} never spawned:\n{self.log[-3000:]}"
        return int(pids[-1])


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
