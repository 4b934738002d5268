"""Start a real vassal (``python -m emperor.vassal``) serving tests/apps for a test."""

from __future__ import annotations

import sys
from pathlib import Path

from harness import ProcGroup, wait_for_log
from harness.procs import Proc

APPS = Path(__file__).resolve().parent / "apps"
EXAMPLE_APPS = Path(__file__).resolve().parent.parent / "vassals-examples" / "apps"


def start_vassal(procs: ProcGroup, *args: str, module: str = "testapp", name: str = "vassal",
                 ready: bool = True, env: dict[str, str] | None = None, chdir: Path = APPS) -> Proc:
    """Start a vassal with ``args`` (e.g. "--socket", path); wait for its "ready:" line."""
    cmd = [sys.executable, "-m", "emperor.vassal", "--chdir", str(chdir), "--module", module, *args]
    proc = procs.start(cmd, name=name, env=env)
    if ready:
        wait_for_log(proc, r"ready: \d+ worker", timeout=15)
    return proc


def worker_pids(proc: Proc) -> set[int]:
    """The master's current children (its workers)."""
    import psutil

    return {c.pid for c in psutil.Process(proc.pid).children()}
