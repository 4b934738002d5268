"""What the logs say, with real processes (issue 8, item 14, and the first-boot message of item 16):
request lines with the time and the vassal's name, the prefix on every traceback line, log
rotation reaching every vassal and worker, a full listen queue, recycles counted as respawns,
a readable SIGUSR1 status dump.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
from harness import ProcGroup, free_port, pack, request, wait_for, wsgi_vars
from test_emperor_rig import Rig
from test_stats import fetch
from vassal_runner import APPS, start_vassal

pytestmark = pytest.mark.live  # starts real processes (README: Tests)

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"


def _ini(path: Path, sock: str, *extra: str) -> Path:
    path.write_text("\n".join(["[uwsgi]", f"socket = {sock}", f"chdir = {APPS}", "module = testapp",
                               *extra, ""]))
    return path


def test_request_lines_have_the_time_and_the_vassal_and_tracebacks_keep_the_prefix(
        procs: ProcGroup, sock_dir: Path, tmp_path: Path) -> None:
    sock = str(sock_dir / "shop.sock")
    ini = _ini(tmp_path / "shop.ini", sock, "processes = 1")
    proc = start_vassal(procs, "--ini", str(ini))
    assert request(sock, wsgi_vars(path="/pid"))[0] == 200
    assert request(sock, wsgi_vars(path="/raise"))[0] == 500
    line = wait_for(lambda: re.search(rf"^{STAMP} \[shop\] \S+ \"GET /pid HTTP/1.1\" 200 .*$",
                                      proc.log_text(), re.M), 10, what="the request line")
    assert "pid=" in line.group(0)
    wait_for(lambda: "the app failed on purpose" in proc.log_text(), 10, what="the traceback")
    text = proc.log_text()
    start = text.index("raised:")
    start = text.rindex("\n", 0, start) + 1
    end = text.index("\n", text.index("RuntimeError: the app failed on purpose"))
    block = text[start:end].splitlines()
    assert len(block) > 3, block
    for ln in block:  # every line of the traceback carries the time and the vassal's name
        assert re.match(rf"{STAMP} \[shop\] ", ln), ln


def test_asgi_request_lines_have_the_time_and_the_vassal(procs: ProcGroup, sock_dir: Path,
                                                          tmp_path: Path) -> None:
    sock = str(sock_dir / "async.sock")
    ini = tmp_path / "async.ini"
    ini.write_text(f"[uwsgi]\nsocket = {sock}\nchdir = {APPS}\nasgi = asgiapp:app\nprocesses = 1\n")
    proc = procs.start([sys.executable, "-m", "emperor.vassal", "--ini", str(ini)], name="async")
    wait_for(lambda: "ready:" in proc.log_text(), 15, what="the ASGI vassal")
    assert request(sock, wsgi_vars(path="/"))[0] == 200
    line = rf"^{STAMP} \[async\] \S+ \"GET / HTTP/1.1\" 200 .*pid="
    wait_for(lambda: re.search(line, proc.log_text(), re.M), 10,
             what="the ASGI request line with the time and the vassal's name")


def test_recycling_a_worker_counts_as_a_respawn(procs: ProcGroup, sock_dir: Path) -> None:
    sock, stats = str(sock_dir / "app.sock"), str(sock_dir / "stats.sock")
    proc = start_vassal(procs, "--socket", sock, "--processes", "1", "--max-requests", "2",
                        "--max-requests-delta", "0", "--stats", stats)
    for _ in range(5):
        assert request(sock, wsgi_vars(path="/pid"), timeout=10)[0] == 200
    wait_for(lambda: proc.log_text().count("recycled") >= 2, 10, what="two recycles")
    wait_for(lambda: json.loads(fetch(stats))["workers"][0]["respawn_count"] >= 2, 10,
             what="respawn_count to count the recycles")


def test_a_full_listen_queue_is_logged_without_broodlord(procs: ProcGroup) -> None:
    port = free_port()
    proc = start_vassal(procs, "--socket", f"127.0.0.1:{port}", "--processes", "1", "--listen", "2")
    held: list[socket.socket] = []
    busy = socket.create_connection(("127.0.0.1", port), timeout=5)  # the only worker sleeps in it
    held.append(busy)
    try:
        busy.sendall(pack(wsgi_vars(path="/sleep", query="s=8"), b"", 0, 0))
        for _ in range(8):  # then the queue (2) fills: more connections than it holds
            s = socket.socket()
            s.settimeout(0.3)
            try:
                s.connect(("127.0.0.1", port))
                s.sendall(b"x")  # past TCP_DEFER_ACCEPT: queued for accept()
            except OSError:
                pass
            held.append(s)
        match = wait_for(lambda: re.search(r"listen queue is full \((\d+)/(\d+)\)", proc.log_text()), 10,
                         what="the listen-queue-full line")
        assert int(match.group(2)) == 2 and int(match.group(1)) >= 2
    finally:
        for s in held:
            s.close()


def _emperor_with_log(rig: Rig, tmp_path: Path) -> tuple[Path, Path]:
    log, touch = tmp_path / "emperor.log", tmp_path / "reopen"
    touch.write_text("")
    rig.enable("app")
    rig.start(extra=f"logto = {log}\ntouch-logreopen = {touch}", wait=False)
    wait_for(lambda: log.exists() and "starting: emperor" in log.read_text(), 20, what="the emperor log")
    rig.serving("app")
    return log, touch


def test_log_rotation_reaches_every_vassal_and_worker(tmp_path: Path, sock_dir: Path,
                                                      procs: ProcGroup) -> None:
    rig = Rig(tmp_path / "vassals", sock_dir, procs)
    log, touch = _emperor_with_log(rig, tmp_path)
    wait_for(lambda: re.search(r"\[app\.ini\] \S+ \"GET / ", log.read_text()), 10, what="a request line")

    for round_, how in enumerate(("touch", "SIGUSR1")):
        rotated = tmp_path / f"emperor.log.{round_}"
        log.rename(rotated)
        if how == "touch":
            time.sleep(0.01)  # a new mtime (the clock's resolution); the emperor polls once a second
            os.utime(touch)
        else:
            assert rig.proc is not None
            os.kill(rig.proc.pid, signal.SIGUSR1)
        wait_for(lambda: log.exists() and "log: reopened" in log.read_text(), 10, what="the emperor reopens")
        wait_for(lambda: "app.ini: log reopened" in log.read_text(), 10, what="the vassal reopens")
        before = rotated.read_text()
        for _ in range(6):  # every worker serves at least once, most likely
            assert rig.get("app", "/")[0] == 200
        wait_for(lambda: len(re.findall(r"\[app\.ini\] \S+ \"GET / ", log.read_text())) >= 6, 10,
                 what="the request lines in the new log")
        assert rotated.read_text() == before, "a process kept writing to the rotated file"
    text = log.read_text()
    assert "status: app.ini: loyal" in text and "{'" not in text  # SIGUSR1's dump is readable


def test_a_vassal_reopens_its_own_logto(procs: ProcGroup, sock_dir: Path, tmp_path: Path) -> None:
    log, touch, sock = tmp_path / "shop.log", tmp_path / "reopen", str(sock_dir / "shop.sock")
    touch.write_text("")
    ini = _ini(tmp_path / "shop.ini", sock, "processes = 2", f"logto = {log}", f"touch-logreopen = {touch}")
    proc = start_vassal(procs, "--ini", str(ini), ready=False)
    wait_for(lambda: log.exists() and "ready:" in log.read_text(), 15, what="the vassal's log")
    for round_, how in enumerate(("touch", "SIGUSR1")):
        rotated = tmp_path / f"shop.log.{round_}"
        log.rename(rotated)
        if how == "touch":
            time.sleep(0.01)
            os.utime(touch)
        else:
            os.kill(proc.pid, signal.SIGUSR1)
        wait_for(lambda: log.exists() and "log reopened" in log.read_text(), 10, what="the reopen")
        before = rotated.read_text()
        for _ in range(6):
            assert request(sock, wsgi_vars(path="/pid"))[0] == 200
        wait_for(lambda: log.read_text().count('"GET /pid') >= 6, 10, what="request lines in the new file")
        assert rotated.read_text() == before


def test_a_failed_first_boot_does_not_claim_a_previous_configuration(tmp_path: Path, sock_dir: Path,
                                                                    procs: ProcGroup) -> None:
    rig = Rig(tmp_path / "vassals", sock_dir, procs)
    (rig.avail / "bad.ini").write_text(rig.vassal_text("bad", extra="processes = many"))
    rig.enable("bad")
    rig.start()
    rig.wait_log(r"config error: 'bad\.ini' \(pid \d+\) cannot start: .*processes")
    assert "keeps its previous configuration" not in rig.log


def test_a_stale_socket_file_is_removed_and_logged(procs: ProcGroup, sock_dir: Path) -> None:
    """docs/vassal.md and docs/emperor.md say so (issue 8, item 18): it was removed silently."""
    sock = sock_dir / "app.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(sock))  # a socket file nobody listens on: a crashed server's leftover
    stale.close()
    proc = start_vassal(procs, "--socket", str(sock))
    assert f"removed the stale socket file {sock}" in proc.log_text()
    assert request(str(sock), wsgi_vars(path="/pid"))[0] == 200
