"""``idle`` without ``die-on-idle``: uWSGI's cheap mode, with real processes behind nginx.

After ``idle`` seconds without a request the workers leave and the master stays with the
socket; the next request is served (not refused) and brings the workers back; the next quiet
period does it again. With and without cheaper, on a Unix socket and on TCP. ``idle`` with
``die-on-idle`` (the vassal exits) is covered by tests/test_ondemand.py and the zerg tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from harness import ProcGroup, free_port, http_get, wait_for, wait_for_log
from vassal_runner import start_vassal, worker_pids

pytestmark = pytest.mark.live  # real processes (README: Tests)

IDLE = 2


@pytest.mark.parametrize("kind", ["unix", "tcp"])
@pytest.mark.parametrize("with_cheaper", [False, True], ids=["fixed", "cheaper"])
def test_idle_without_die_on_idle_is_cheap_mode(procs: ProcGroup, nginx: Any, sock_dir: Path, kind: str,
                                                with_cheaper: bool) -> None:
    if kind == "unix":
        addr: str = str(sock_dir / "app.sock")
        upstream: str | tuple[str, int] = addr
    else:
        port = free_port()
        addr, upstream = f"127.0.0.1:{port}", ("127.0.0.1", port)
    sizing = ["--processes", "4", "--cheaper", "1"] if with_cheaper else ["--processes", "2"]
    awake = 1 if with_cheaper else 2  # cheaper-initial defaults to cheaper
    v = start_vassal(procs, "--socket", addr, "--idle", str(IDLE), *sizing)
    ng = nginx()
    ng.add_uwsgi("/", upstream)
    ng.start()
    assert "does nothing without die-on-idle" not in v.log_text()
    mark = 0
    for round_ in range(2):
        status, _, body = http_get(ng.url("/"), timeout=20)
        assert status == 200, (round_, status, body[:200])
        wait_for(lambda: len(worker_pids(v)) == awake, 15, what=f"{awake} worker(s) serving (round {round_})")
        m = wait_for_log(v, r"idle for \d+ s .*cheap mode", timeout=IDLE + 15, after=mark)
        mark = m.end()
        wait_for(lambda: not worker_pids(v), 15, what="cheap mode: every worker gone")
        assert v.alive(), "the master keeps the socket in cheap mode"
    status, _, body = http_get(ng.url("/"), timeout=20)  # the first request after cheap mode: served
    assert status == 200, (status, body[:200])
    wait_for_log(v, r"cheap: a connection arrived: forking", after=mark)
    assert "upstream" not in ng.error_log(), ng.error_log()[-2000:]
    assert v.alive()


def test_cheap_mode_wakes_on_a_kept_alive_http_connection(procs: ProcGroup) -> None:
    """On an HTTP socket the leaving workers park their keep-alive connections with the master;
    a request on one of them (no new connection) also brings the workers back and is served."""
    import http.client

    port = free_port()
    v = start_vassal(procs, "--http-socket", f"127.0.0.1:{port}", "--idle", str(IDLE), "--processes", "2")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("GET", "/")
        r = conn.getresponse()
        assert (r.status, r.read()) == (200, b"hello /"), r.status
        wait_for_log(v, r"idle for \d+ s .*cheap mode", timeout=IDLE + 15)
        wait_for(lambda: not worker_pids(v), 15, what="cheap mode: every worker gone")
        conn.request("GET", "/again")  # the same connection, kept alive through cheap mode
        r = conn.getresponse()
        assert (r.status, r.read()) == (200, b"hello /again"), r.status
    finally:
        conn.close()
    wait_for_log(v, r"cheap: a connection arrived: forking 2 worker")
