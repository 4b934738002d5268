"""uWSGI options with behaviour, against real vassals: touch-reload, max-worker-lifetime,
reload-on-as, harakiri-verbose, the request-log filters, log-date, memory-report and the
process-title prefix. Each test polls its vassal's log or its processes until a deadline."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import psutil
import pytest
from harness import request, wait_for, wait_for_log
from vassal_runner import start_vassal, worker_pids

pytestmark = pytest.mark.live  # starts real processes (README: Tests)

GET = {"REQUEST_METHOD": "GET", "PATH_INFO": "/pid", "QUERY_STRING": "", "SERVER_PROTOCOL": "HTTP/1.1",
       "SERVER_NAME": "t", "SERVER_PORT": "80"}


def get(sock: str, path: str, timeout: float = 10.0) -> int:
    path, _, query = path.partition("?")
    return request(sock, {**GET, "PATH_INFO": path, "QUERY_STRING": query}, timeout=timeout)[0]


def test_touch_reload_reloads_on_touch_and_on_removal(procs, sock_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sock = str(sock_dir / "t.sock")
    stamp = tmp_path / "deployed"
    stamp.write_text("")
    v = start_vassal(procs, "--socket", sock, "--touch-reload", str(stamp))
    before = worker_pids(v)
    mark = v.log_size()
    future = time.time() + 5
    os.utime(stamp, (future, future))
    wait_for_log(v, re.escape(str(stamp)) + r" was touched: graceful reload", after=mark)
    wait_for_log(v, r"ready: 1 worker", after=mark, timeout=15)
    assert worker_pids(v).isdisjoint(before)
    assert get(sock, "/pid") == 200
    before = worker_pids(v)
    mark = v.log_size()
    stamp.unlink()  # disappearing counts too, as in uWSGI
    wait_for_log(v, r"was touched: graceful reload", after=mark)
    wait_for_log(v, r"ready: 1 worker", after=mark, timeout=15)
    assert worker_pids(v).isdisjoint(before)


def test_max_worker_lifetime_recycles_idle_workers(procs, sock_dir: Path) -> None:  # type: ignore[no-untyped-def]
    sock = str(sock_dir / "l.sock")
    v = start_vassal(procs, "--socket", sock, "--max-worker-lifetime", "2")
    first = worker_pids(v)
    m = wait_for_log(v, r"worker 1 \(pid (\d+)\) recycled: max-worker-lifetime \(2 s\)", timeout=10)
    assert {int(m.group(1))} == first
    wait_for(lambda: worker_pids(v) and worker_pids(v).isdisjoint(first), 10, what="a new worker")
    assert get(sock, "/pid") == 200


def test_reload_on_as_recycles_after_the_response(procs, sock_dir: Path) -> None:  # type: ignore[no-untyped-def]
    sock = str(sock_dir / "a.sock")
    v = start_vassal(procs, "--socket", sock, "--reload-on-as", "1")  # every worker is above 1 MB
    first = worker_pids(v)
    assert get(sock, "/pid") == 200  # the response is sent first
    wait_for_log(v, r"recycled: reload-on-as \(\d+ MB > 1 MB\)")
    wait_for(lambda: worker_pids(v) and worker_pids(v).isdisjoint(first), 10, what="a new worker")


def test_harakiri_verbose_logs_what_the_worker_was_doing(procs, sock_dir: Path) -> None:  # type: ignore[no-untyped-def]
    sock = str(sock_dir / "h.sock")
    v = start_vassal(procs, "--socket", sock, "--harakiri", "1", "--harakiri-verbose")
    try:
        get(sock, "/hang", timeout=8)
    except OSError:
        pass  # the worker is killed mid-request: the connection just closes
    wait_for_log(v, r"HARAKIRI: worker 1")
    wait_for_log(v, r"HARAKIRI: -- syscall> \S+")
    wait_for_log(v, r"HARAKIRI: -- wchan> \S+")
    # the respawned worker serves before the test ends: a SIGTERM that reaches a worker between
    # its fork and its own signal handlers is lost (a race in the master, reported separately)
    wait_for(lambda: get(sock, "/pid") == 200, 10, what="the respawned worker", ignore=(OSError,))


def test_log_filters_bring_back_the_lines_worth_seeing(procs, sock_dir: Path) -> None:  # type: ignore[no-untyped-def]
    sock = str(sock_dir / "f.sock")
    v = start_vassal(procs, "--socket", sock, "--disable-logging", "--log-4xx", "--log-5xx",
                     "--log-slow", "300", "--log-big", "100000", "--log-zero")
    for path in ("/quiet-ok", "/big?n=200000", "/sleep?s=0.5", "/204", "/quiet-ok-2", "/raise"):
        get(sock, path)
    wait_for_log(v, r'"GET /raise HTTP/1.1" 500')  # the last one logged
    log = v.log_path.read_text()
    assert '"GET /big HTTP/1.1" 200 200' in log  # log-big
    assert '"GET /sleep HTTP/1.1" 200' in log  # log-slow
    assert '"GET /204 HTTP/1.1" 204' in log  # log-zero
    assert "quiet-ok" not in log  # fast, small, 200 with a body: not logged


STATUS_APP = """\
def application(environ, start_response):
    status = environ.get("QUERY_STRING") or "200"
    start_response(status + " X", [("Content-Type", "text/plain")])
    return [b"body"]
"""


def test_log_4xx_and_5xx_only(procs, sock_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    app = tmp_path / "status_app.py"
    app.write_text(STATUS_APP)
    sock = str(sock_dir / "s.sock")
    v = start_vassal(procs, "--socket", sock, "--wsgi-file", str(app), "--disable-logging", "--log-4xx")
    for path in ("/ok?200", "/missing?404", "/redirect?302", "/broken?503", "/gone?410"):
        get(sock, path)
    wait_for_log(v, r'"GET /gone HTTP/1.1" 410')  # the last one logged
    log = v.log_path.read_text()
    assert '"GET /missing HTTP/1.1" 404' in log
    assert "/ok" not in log and "/redirect" not in log and "/broken" not in log  # no log-5xx here


def test_log_date_and_memory_report(procs, sock_dir: Path) -> None:  # type: ignore[no-untyped-def]
    sock = str(sock_dir / "d.sock")
    v = start_vassal(procs, "--socket", sock, "--log-date", "%Y/%m/%d", "--memory-report")
    get(sock, "/dated")
    m = wait_for_log(v, r"(\d{4}/\d\d/\d\d) - \S+ \"GET /dated HTTP/1.1\" 200")
    assert m.group(1) == time.strftime("%Y/%m/%d")
    m = wait_for_log(v, r"\{address space usage: (\d+) bytes/\d+MB\} \{rss usage: (\d+) bytes/\d+MB\} "
                     r"\[pid: (\d+)\|worker: 1\|req: 1\]")
    assert int(m.group(3)) in worker_pids(v) and int(m.group(2)) > 1 << 20
    sock2 = str(sock_dir / "d2.sock")
    v2 = start_vassal(procs, "--socket", sock2, "--logdate", name="ctime")  # uWSGI's default: ctime
    get(sock2, "/ctime")
    wait_for_log(v2, r"\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4} - \S+ \"GET /ctime HTTP/1.1\" 200")


def test_log_x_forwarded_for(procs, sock_dir: Path) -> None:  # type: ignore[no-untyped-def]
    sock = str(sock_dir / "x.sock")
    v = start_vassal(procs, "--socket", sock, "--log-x-forwarded-for")
    vars_ = {**GET, "PATH_INFO": "/xff", "REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.9"}
    assert request(sock, vars_, timeout=10)[0] == 200
    assert request(sock, {**GET, "PATH_INFO": "/plain", "REMOTE_ADDR": "127.0.0.1"}, timeout=10)[0] == 200
    wait_for_log(v, r'127\.0\.0\.1 "GET /plain HTTP/1.1" 200')
    assert '203.0.113.9 "GET /xff HTTP/1.1" 200' in v.log_path.read_text()


def test_procname_prefix_spaced(procs, sock_dir: Path) -> None:  # type: ignore[no-untyped-def]
    sock = str(sock_dir / "p.sock")
    v = start_vassal(procs, "--socket", sock, "--procname-prefix-spaced", "shop")
    wait_for(lambda: " ".join(psutil.Process(v.pid).cmdline()).startswith("shop emperor: master"), 10,
             what="the master's title")
    wid = next(iter(worker_pids(v)))
    assert " ".join(psutil.Process(wid).cmdline()).startswith("shop emperor: worker 1")


def test_request_log_filter_rules() -> None:
    """Pure logic: which requests a disable-logging vassal still logs."""
    from types import SimpleNamespace

    from emperor.vassal.reqlog import RequestLog

    base = dict(disable_logging=True, log_4xx=False, log_5xx=False, log_slow=0, log_big=0, log_zero=False,
                log_date=None, memory_report=False, log_x_forwarded_for=False, log_format=None)
    assert not RequestLog(SimpleNamespace(**base)).some
    r = RequestLog(SimpleNamespace(**{**base, "log_4xx": True}))
    assert r.some and r.wanted("404", 10, 1.0) and not r.wanted("500", 10, 1.0) and not r.wanted("-", 0, 1)
    r = RequestLog(SimpleNamespace(**{**base, "log_slow": 100, "log_big": 1000}))
    assert r.wanted("200", 10, 100.5) and r.wanted("200", 1001, 1.0) and not r.wanted("200", 1000, 100.0)
    assert RequestLog(SimpleNamespace(**{**base, "disable_logging": False})).wanted("200", 10, 0.1)


def test_touch_reload_paths_are_relative_to_chdir(procs, sock_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A relative touch-reload path means the same file before and after chdir: no spurious reload."""
    from vassal_runner import APPS

    sock = str(sock_dir / "r.sock")
    site = tmp_path / "site"
    site.mkdir()
    stamp = site / "deployed"
    stamp.write_text("")
    v = start_vassal(procs, "--socket", sock, "--pythonpath", str(APPS), "--touch-reload", "deployed",
                     chdir=site)
    pids = worker_pids(v)
    assert get(sock, "/sleep?s=1.5") == 200  # the watch has looked at least once meanwhile
    assert "was touched" not in v.log_path.read_text()  # the same file before and after chdir
    mark = v.log_size()
    future = time.time() + 5
    os.utime(stamp, (future, future))
    wait_for_log(v, r"deployed was touched: graceful reload", after=mark)
    wait_for_log(v, r"ready: 1 worker", after=mark, timeout=15)
    assert worker_pids(v).isdisjoint(pids)
