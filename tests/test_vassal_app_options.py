"""How the vassal loads and runs the app: wsgi-file, pythonpath, env, lazy-apps, need-app,
reload-mercy, daemonize and process titles, each against a real vassal process."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import psutil
import pytest
from harness import ProcGroup, request, wait_for, wait_for_log, wsgi_vars
from vassal_runner import APPS, start_vassal

pytestmark = pytest.mark.live  # starts real processes (README: Tests)

BASE = {"REQUEST_METHOD": "GET", "QUERY_STRING": "", "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": "t", "SERVER_PORT": "80"}


def get(sock: str, path: str = "/pid") -> tuple[int, bytes]:
    path, _, query = path.partition("?")
    status, _, body, _ = request(sock, {**BASE, "PATH_INFO": path, "QUERY_STRING": query}, timeout=15)
    return status, body


def vassal_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "emperor.vassal", *args]


def test_wsgi_file_pythonpath_and_env(procs, sock_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "greeting.py").write_text("import os\nWORD = os.environ['GREETING']\n")
    app = tmp_path / "site" / "entry.py"
    app.parent.mkdir()
    app.write_text("import greeting\n\ndef app(environ, start_response):\n"
                   "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
                   "    return [greeting.WORD.encode()]\n")
    sock = str(sock_dir / "a.sock")
    v = procs.start(vassal_cmd("--socket", sock, "--wsgi-file", str(app), "--callable", "app",
                               "--pythonpath", str(tmp_path / "l*"), "--env", "GREETING=bonjour=1"),
                    name="wsgifile")
    wait_for_log(v, r"ready: 1 worker")
    assert get(sock, "/") == (200, b"bonjour=1")


def _loaded_at(sock: str, workers: int) -> dict[bytes, bytes]:
    seen: dict[bytes, bytes] = {}

    def probe() -> bool:
        pid, loaded = get(sock)[1].split()
        seen[pid] = loaded
        return len(seen) >= workers

    wait_for(probe, 10, interval=0, what="every worker answering")
    return seen


def test_app_is_imported_once_unless_lazy_apps(procs, sock_dir: Path) -> None:  # type: ignore[no-untyped-def]
    sock = str(sock_dir / "a.sock")
    start_vassal(procs, "--socket", sock, "--processes", "2", "--threads", "2")
    assert len(set(_loaded_at(sock, 2).values())) == 1  # forked from the master's import
    lazy = str(sock_dir / "lazy.sock")
    start_vassal(procs, "--socket", lazy, "--processes", "2", "--lazy-apps", name="lazy")
    assert len(set(_loaded_at(lazy, 2).values())) == 2  # each worker imported it


def test_need_app_false_serves_500_with_the_reason(procs, sock_dir: Path) -> None:  # type: ignore[no-untyped-def]
    sock = str(sock_dir / "a.sock")
    v = procs.start(vassal_cmd("--socket", sock, "--chdir", str(APPS), "--module", "missing_mod",
                               "--need-app", "false"), name="noapp")
    wait_for_log(v, r"ready: 1 worker")
    status, body = get(sock, "/")
    assert status == 500 and b"application not loaded: cannot import module missing_mod" in body


def test_lazy_apps_import_failure_stops_the_vassal(procs, sock_dir: Path) -> None:  # type: ignore[no-untyped-def]
    v = procs.start(vassal_cmd("--socket", str(sock_dir / "a.sock"), "--chdir", str(APPS), "--module",
                               "missing_mod", "--lazy-apps"), name="lazyfail")
    assert v.wait(15) == 22
    assert "could not load the app" in v.log_text()


def test_reload_mercy_bounds_a_graceful_stop(procs, sock_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sock = str(sock_dir / "a.sock")
    v = start_vassal(procs, "--socket", sock, "--reload-mercy", "1")
    mark = tmp_path / "in-flight"
    slow = threading.Thread(target=lambda: _quiet(lambda: get(sock, f"/sleep?s=60&mark={mark}")), daemon=True)
    slow.start()
    wait_for(mark.exists, 5, what="slow request in flight")
    v.popen.send_signal(signal.SIGTERM)
    assert v.wait(10) == 0
    assert "still busy after 1 s: SIGKILL" in v.log_text()


def _quiet(fn) -> None:  # type: ignore[no-untyped-def]
    try:
        fn()
    except Exception:
        pass


def test_process_titles(procs, sock_dir: Path) -> None:  # type: ignore[no-untyped-def]
    v = start_vassal(procs, "--socket", str(sock_dir / "a.sock"), "--processes", "2",
                     "--procname-prefix", "site-")
    master = psutil.Process(v.pid)
    assert " ".join(master.cmdline()).strip() == "site-emperor: master vassal"
    titles = sorted(" ".join(c.cmdline()).strip() for c in master.children())
    assert titles == ["site-emperor: worker 1 vassal", "site-emperor: worker 2 vassal"]


def test_daemonize_detaches_and_logs(procs, sock_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sock = str(sock_dir / "a.sock")
    log, pidfile = tmp_path / "daemon.log", tmp_path / "daemon.pid"
    launcher = procs.start(vassal_cmd("--socket", sock, "--chdir", str(APPS), "--module", "testapp",
                                      "--daemonize", str(log), "--pidfile", str(pidfile)), name="daemon")
    assert launcher.wait(10) == 0  # the foreground process returns at once
    wait_for(lambda: pidfile.exists() and log.exists() and "ready: 1 worker" in log.read_text(), 10,
             what="daemon ready")
    daemon = int(pidfile.read_text())
    try:
        assert daemon != launcher.pid and psutil.Process(daemon).ppid() != launcher.pid
        # a new session (setsid in the first child), and not its leader (the second fork)
        assert os.getsid(daemon) not in (launcher.pid, os.getsid(0), daemon)
        assert get(sock, "/")[0] == 200
        os.kill(daemon, signal.SIGTERM)
        wait_for(lambda: not _alive(daemon), 10, what="daemon gone")
        assert not pidfile.exists()
    finally:  # the daemon left our process tree: the procs fixture cannot see it
        if _alive(daemon):
            os.kill(daemon, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_relative_chdir_is_entered_once(procs: ProcGroup, sock_dir: Path) -> None:
    """``--chdir apps`` from the tests directory: the path is relative to where the vassal
    started, and the second chdir after the privilege drop must not resolve it again."""
    sock = str(sock_dir / "rel.sock")
    proc = procs.start([sys.executable, "-m", "emperor.vassal", "--socket", sock, "--chdir", APPS.name,
                        "--module", "testapp"], cwd=APPS.parent, name="rel")
    wait_for_log(proc, r"ready: \d+ worker", timeout=15)
    assert request(sock, wsgi_vars(path="/pid"))[0] == 200
