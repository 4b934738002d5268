"""Fixtures every integration test uses: ``procs``, ``nginx``, ``sock_dir``; and the ``live`` marker.

Teardown order matters and is fixed here: stop nginx and every tracked
process, then fail the test if anything it started is still alive.

A test that starts processes (a vassal, an emperor, nginx, any subprocess) is *live* and
carries the ``live`` marker (a module-level ``pytestmark = pytest.mark.live``, or the
decorator on one test); ``pytest -m "not live"`` runs the pure unit tests alone, in
seconds. The marker cannot drift: the live fixtures refuse an unmarked test, and an
unmarked test that forks or starts a subprocess fails saying so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `import harness` from any test module

from harness import Nginx, ProcGroup, nginx_binary


def _require_live(request: pytest.FixtureRequest, what: str) -> None:
    if request.node.get_closest_marker("live") is None:
        pytest.fail(f"{request.node.nodeid} uses {what} but is not marked live "
                    "(pytestmark = pytest.mark.live, see README's Tests section)", pytrace=False)


@pytest.fixture(autouse=True)
def _pure_tests_start_no_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unmarked test is a pure unit test: starting a process there is a mislabelled live test."""
    if request.node.get_closest_marker("live") is not None:
        return

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"{request.node.nodeid} starts a process but is not marked live "
                             "(pytestmark = pytest.mark.live, see README's Tests section)")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    monkeypatch.setattr(os, "fork", refuse)
    monkeypatch.setattr(os, "posix_spawn", refuse)


@pytest.fixture
def procs(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ProcGroup]:
    """Start processes with ``procs.start(cmd, ...)``; all are stopped and checked for orphans at teardown.

    Logs go to ``<tmp_path>/logs/<name>.<n>.log``.
    """
    _require_live(request, "procs")
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
def sock_dir(request: pytest.FixtureRequest) -> Iterator[Path]:
    """A short private directory for Unix sockets (tmp_path can exceed the 108-byte sun_path limit)."""
    _require_live(request, "sock_dir")
    d = Path(tempfile.mkdtemp(prefix="emp-", dir="/tmp"))
    d.chmod(0o755)  # so a non-root nginx worker can reach sockets created inside
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
