"""Fixtures every integration test uses: ``procs``, ``nginx``, ``sock_dir``.

Teardown order matters and is fixed here: stop nginx and every tracked
process, then fail the test if anything it started is still alive.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `import harness` from any test module

from harness import Nginx, ProcGroup, nginx_binary


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[ProcGroup]:
    """Start processes with ``procs.start(cmd, ...)``; all are stopped and checked for orphans at teardown.

    Logs go to ``<tmp_path>/logs/<name>.<n>.log``.
    """
    group = ProcGroup(tmp_path / "logs")
    try:
        yield group
    finally:
        group.stop_all()
        group.assert_no_orphans()


@pytest.fixture
def nginx(procs: ProcGroup, tmp_path: Path) -> Callable[..., Nginx]:
    """Factory: ``ng = nginx(); ng.add_uwsgi("/", sock); ng.start()``. Stopped by ``procs`` teardown.

    Skips the test when nginx is not installed, except under CI=true (``bash .ci/run`` installs it).
    """
    try:
        nginx_binary()
    except FileNotFoundError as e:
        if os.environ.get("CI"):
            raise  # CI installs nginx; a skip there would hide every nginx test
        pytest.skip(str(e))
    count = 0

    def make(**kw: object) -> Nginx:
        nonlocal count
        count += 1
        return Nginx(tmp_path / f"nginx{count}", group=procs, **kw)  # type: ignore[arg-type]

    return make


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short private directory for Unix sockets (tmp_path can exceed the 108-byte sun_path limit)."""
    d = Path(tempfile.mkdtemp(prefix="emp-", dir="/tmp"))
    d.chmod(0o755)  # so a non-root nginx worker can reach sockets created inside
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
