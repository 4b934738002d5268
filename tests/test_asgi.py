"""ASGI vassals behind real nginx (uwsgi_pass): scope, streaming both ways, concurrency, bad apps.

One nginx and three vassals (a plain ASGI app with one worker, Starlette, FastAPI) serve the
module; tests that need their own vassal (lifespan, harakiri, recycling) start it. The app is
tests/apps/asgiapp.py.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import (
    Nginx,
    ProcGroup,
    free_port,
    http_get,
    http_request,
    pack,
    parse_http_response,
    raw_exchange,
    request,
    wait_for,
    wait_for_log,
    wsgi_vars,
)
from harness.procs import Proc
from vassal_runner import APPS

pytestmark = pytest.mark.live  # starts real processes (README: Tests)


def start_asgi(procs: ProcGroup, *args: str, app: str = "asgiapp:app", name: str = "asgi",
               ready: bool = True, env: dict[str, str] | None = None) -> Proc:
    """Start ``python -m emperor.vassal --asgi app``; wait for its "ready:" line."""
    cmd = [sys.executable, "-m", "emperor.vassal", "--chdir", str(APPS), "--asgi", app, *args]
    proc = procs.start(cmd, name=name, env=env)
    if ready:
        wait_for_log(proc, r"ready: \d+ worker", timeout=15)
    return proc


class WideNginx(Nginx):
    """nginx with room for 500 clients plus their 500 upstream connections (the stock 1024 is not)."""

    def config_text(self) -> str:
        return super().config_text().replace("worker_connections 1024;", "worker_connections 4096;")


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    tmp = tmp_path_factory.mktemp("asgi")
    socks = Path(tempfile.mkdtemp(prefix="emp-", dir="/tmp"))
    socks.chmod(0o755)
    procs = ProcGroup(tmp / "logs")
    try:
        sock = str(socks / "asgi.sock")
        events = tmp / "events.log"
        vassal = start_asgi(procs, "--socket", sock, "--processes", "1", "--limit-post", "2000000",
                            env={"ASGI_EVENTS": str(events)})
        ng = WideNginx(tmp / "nginx", group=procs)
        ng.add_uwsgi("/", sock, extra="uwsgi_request_buffering off;\nuwsgi_read_timeout 60s;")
        ng.add_uwsgi("/mounted", sock, extra="uwsgi_param SCRIPT_NAME /mounted;\nuwsgi_modifier1 30;")
        ng.start()
        yield {"url": ng.url("/").rstrip("/"), "sock": sock, "vassal": vassal, "events": events, "ng": ng}
    finally:
        procs.stop_all()
        procs.assert_no_orphans()
        shutil.rmtree(socks, ignore_errors=True)


def get_json(url: str) -> dict[str, object]:
    status, _, body = http_get(url)
    assert status == 200, (status, body)
    return json.loads(body)  # type: ignore[no-any-return]


def test_scope_from_nginx_uwsgi_vars(front: dict[str, object]) -> None:
    url = str(front["url"])
    s = get_json(url + "/scope?a=1&b=%C3%A9")
    assert s["type"] == "http" and s["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert s["method"] == "GET" and s["http_version"] == "1.1" and s["scheme"] == "http"
    assert s["path"] == "/scope" and s["raw_path"] == "/scope" and s["root_path"] == ""
    assert s["query_string"] == "a=1&b=%C3%A9"
    assert s["client"][0] == "127.0.0.1" and isinstance(s["client"][1], int)  # type: ignore[index]
    assert s["server"][1] == int(url.rsplit(":", 1)[1])  # type: ignore[index]
    headers = dict(s["headers"])  # type: ignore[arg-type]
    assert headers["host"] == "127.0.0.1"
    s = get_json(url + "/mounted/scope?x=1")
    assert s["root_path"] == "/mounted" and s["path"] == "/mounted/scope"
    assert s["raw_path"] == "/mounted/scope"
    _, _, body = http_request(url + "/scope", headers={"X-Custom": "v1", "Cookie": "a=b"})
    headers = dict(json.loads(body)["headers"])
    assert headers["x-custom"] == "v1" and headers["cookie"] == "a=b"


@pytest.fixture(scope="module")
def frameworks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    tmp = tmp_path_factory.mktemp("fw")
    socks = Path(tempfile.mkdtemp(prefix="emp-", dir="/tmp"))
    socks.chmod(0o755)
    procs = ProcGroup(tmp / "logs")
    try:
        urls = {}
        ng = Nginx(tmp / "nginx", group=procs)
        for name in ("starlette", "fastapi"):
            start_asgi(procs, "--socket", str(socks / f"{name}.sock"), "--processes", "2",
                       app=f"frameworkapps:{name}_app", name=name)
            srv = ng.add_server()
            ng.add_uwsgi("/", str(socks / f"{name}.sock"), server=srv)
            urls[name] = srv
        ng.start()
        yield {name: ng.url("/", server=srv).rstrip("/") for name, srv in urls.items()}
    finally:
        procs.stop_all()
        procs.assert_no_orphans()
        shutil.rmtree(socks, ignore_errors=True)


@pytest.mark.parametrize("framework", ["starlette", "fastapi"])
def test_starlette_and_fastapi_json_get(frameworks: dict[str, str], framework: str) -> None:
    status, headers, body = http_get(frameworks[framework] + "/items/42?q=zap")
    assert status == 200, body
    assert dict((k.lower(), v) for k, v in headers)["content-type"] == "application/json"
    doc = json.loads(body)
    assert doc["framework"] == framework and doc["id"] == 42 and doc["q"] == "zap"
    assert isinstance(doc["booted_by"], int)  # set by the lifespan, copied into each request's state
    status, _, body = http_get(frameworks[framework] + "/items/notanumber")
    assert status in (404, 422), body


def test_streamed_upload(front: dict[str, object]) -> None:
    """nginx with uwsgi_request_buffering off: a 1.5 MB body reaches the app in several
    http.request events (more_body). (A full-duplex echo is not tested: nginx reads the
    upstream's response only once it has sent the whole request body.)"""
    url = str(front["url"])
    payload = bytes(range(256)) * 6000
    status, _, body = http_request(url + "/count", method="POST", body=payload)
    assert status == 200, body
    doc = json.loads(body)
    assert doc["bytes"] == len(payload) and doc["events"] > 1, doc


def test_streamed_download_large(front: dict[str, object]) -> None:
    """20 MB sent in 64 KiB chunks: send() waits on the socket, nothing is lost or reordered."""
    n = 20_000_000
    status, _, body = http_get(str(front["url"]) + f"/big?n={n}", timeout=30)
    assert status == 200 and len(body) == n
    assert body == (b"0123456789abcdef" * (n // 16 + 1))[:n]


def test_streamed_download_each_chunk_at_once(front: dict[str, object]) -> None:
    """Each send() of a body chunk reaches the client through nginx before the next is made."""
    url = str(front["url"])
    port = int(url.rsplit(":", 1)[1])
    lags = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /stream?n=5&delay=0.3 HTTP/1.0\r\nHost: x\r\n\r\n")  # 1.0: no chunking
        f = s.makefile("rb")
        assert f.readline().startswith(b"HTTP/1.1 200")
        while f.readline().strip():
            pass
        for i in range(5):
            sent, idx = f.readline().split()
            lags.append(time.time() - float(sent))
            assert int(idx) == i
        assert f.readline() == b"end\n"
    assert max(lags) < 0.05, lags  # the SSE target: each event within 50 ms of send()


def test_500_concurrent_slow_requests_on_one_worker(front: dict[str, object]) -> None:
    """500 requests that each await asyncio.sleep(1) are all in flight at once in one worker."""
    url = str(front["url"])
    port = int(url.rsplit(":", 1)[1])

    async def one() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /sleep?s=1 HTTP/1.0\r\nHost: x\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 30)
        writer.close()
        return data

    async def all_of_them() -> list[bytes]:
        return await asyncio.gather(*(one() for _ in range(500)))

    t0 = time.monotonic()
    answers = asyncio.run(all_of_them())
    took = time.monotonic() - t0
    assert all(a.startswith(b"HTTP/1.1 200") for a in answers), [a[:60] for a in answers if
                                                                 not a.startswith(b"HTTP/1.1 200")][:3]
    peak = max(json.loads(a.split(b"\r\n\r\n", 1)[1])["peak"] for a in answers)
    pids = {json.loads(a.split(b"\r\n\r\n", 1)[1])["pid"] for a in answers}
    assert len(pids) == 1
    assert peak >= 400, peak  # one worker had (nearly) all of them in flight at once
    assert took < 15, took


def test_client_disconnect_reaches_the_app(front: dict[str, object]) -> None:
    """The client goes away mid-response: the app's receive() returns http.disconnect."""
    url = str(front["url"])
    events = Path(str(front["events"]))
    before = events.read_text().count("disconnect") if events.exists() else 0
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /wait-disconnect HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"waiting" in s.recv(4096) or b"waiting" in s.recv(4096)
    wait_for(lambda: events.exists() and events.read_text().count("disconnect") > before, 10,
             what="the app to see http.disconnect")


@pytest.mark.parametrize("path", ["/nostart", "/twostarts", "/raise", "/badheader", "/strheader"])
def test_bad_app_gets_500_and_worker_keeps_serving(front: dict[str, object], path: str) -> None:
    url = str(front["url"])
    pid = get_json(url + "/scope")["pid"]
    status, _, body = http_get(url + path)
    assert status == 500, (status, body)
    assert b"evil" not in body
    assert get_json(url + "/scope")["pid"] == pid  # the same worker serves on


def test_app_raising_mid_stream_cuts_that_connection_only(front: dict[str, object]) -> None:
    """The head is out, so no 500 is possible: the connection is closed where the app failed
    (over a Unix socket nginx cannot tell that from a complete reply: no Content-Length)."""
    url = str(front["url"])
    vassal = front["vassal"]
    assert isinstance(vassal, Proc)
    pid = get_json(url + "/scope")["pid"]
    mark = vassal.log_size()
    try:
        status, _, body = http_get(url + "/raise-mid")
        assert status == 200 and body == b"partial " * 1000
    except (http.client.IncompleteRead, ConnectionError):
        pass
    wait_for_log(vassal, r"GET /raise-mid raised:\n(.|\n)*RuntimeError: the app failed mid-stream",
                 after=mark)
    assert get_json(url + "/scope")["pid"] == pid


def test_malformed_requests_close_that_connection_only(front: dict[str, object]) -> None:
    sock = str(front["sock"])
    url = str(front["url"])
    pid = get_json(url + "/scope")["pid"]
    # HTTP on a uwsgi socket: the helpful 400 naming uwsgi_pass and http-socket, then the close
    answer = raw_exchange(sock, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ") and b"uwsgi_pass" in answer and b"http-socket" in answer
    assert raw_exchange(sock, b"\x00\x10\x00\x00\x05\x00") == b""  # truncated vars block
    status, _, _, _ = request(sock, [("PATH_INFO", "/")])  # no REQUEST_METHOD
    assert status == 400
    big = b"y" * 3_000_000
    status, _, _ = http_request(url + "/count", method="POST", body=big)
    assert status == 413
    assert get_json(url + "/scope")["pid"] == pid


# ---- vassals of their own ------------------------------------------------------------------
def stats_doc(stats: Path) -> dict[str, Any]:
    """One document from the vassal's stats server (a Unix socket)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(stats))
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data)  # type: ignore[no-any-return]


def test_concurrency_cap_leaves_connections_in_the_queue(procs: ProcGroup, sock_dir: Path) -> None:
    """asgi-concurrency = 2: of six slow requests, two are in flight and four wait in the listen
    queue, where the stats (and broodlord's backlog probe) see them; all are answered."""
    sock = str(sock_dir / "cap.sock")
    stats = sock_dir / "stats.sock"
    start_asgi(procs, "--socket", sock, "--processes", "1", "--asgi-concurrency", "2", "--stats", str(stats))
    vars_ = [("REQUEST_METHOD", "GET"), ("PATH_INFO", "/sleep"), ("QUERY_STRING", "s=1")]
    results: list[tuple[int, bytes]] = []

    def one() -> None:
        status, _, body, _ = request(sock, vars_, timeout=20)
        results.append((status, body))

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    def queued() -> dict[str, Any] | None:
        doc = stats_doc(stats)
        return doc if doc["listen_queue"] >= 4 else None

    doc = wait_for(queued, 5, what="4 connections in the listen queue")
    assert doc["workers"][0]["in_flight"] == 2 and doc["workers"][0]["status"] == "busy"
    for t in threads:
        t.join(20)
    assert [status for status, _ in results] == [200] * 6, results
    assert max(json.loads(body)["peak"] for _, body in results) == 2


def _scheme_from(addr: tuple[str, int], source: str, **claim: str) -> str:
    """The scope's scheme for a raw uwsgi request from the local address ``source``."""
    base = [p for p in wsgi_vars(path="/scope") if p[0] != "REQUEST_SCHEME"]
    with socket.create_connection(addr, timeout=5, source_address=(source, 0)) as s:
        s.sendall(pack(base + list(claim.items())))
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    status, _, body = parse_http_response(raw)
    assert status == 200, body
    return str(json.loads(body)["scheme"])


def test_scheme_claims_believed_only_from_forwarded_allow_ips(procs: ProcGroup) -> None:
    """Issue #14 item 1 (the ASGI side of issue #8 item 4): HTTPS=on from any TCP peer used to
    make the scope https. 127.0.0.2 is loopback but not in the default list: ignored, logged once."""
    port = free_port()
    proc = start_asgi(procs, "--socket", f"127.0.0.1:{port}", "--processes", "1", name="asgi-tcp")
    addr = ("127.0.0.1", port)
    for claim in ({"HTTPS": "on"}, {"HTTPS": "1"}, {"REQUEST_SCHEME": "https"}, {"UWSGI_SCHEME": "https"}):
        assert _scheme_from(addr, "127.0.0.2", **claim) == "http", claim
    wait_for_log(proc, r"ignored HTTPS=on from 127\.0\.0\.2, which is not in forwarded-allow-ips")
    assert proc.log_text().count("not in forwarded-allow-ips") == 1  # rate-limited per peer address
    assert _scheme_from(addr, "127.0.0.1", HTTPS="on") == "https"
    assert _scheme_from(addr, "127.0.0.1", UWSGI_SCHEME="https") == "https"  # honoured, as uWSGI
    assert _scheme_from(addr, "127.0.0.1", UWSGI_SCHEME="http", HTTPS="on") == "http"
    assert _scheme_from(addr, "127.0.0.1") == "http"
    port2 = free_port()
    start_asgi(procs, "--socket", f"127.0.0.1:{port2}", "--processes", "1", "--forwarded-allow-ips",
               "127.0.0.0/30", name="asgi-trusting")
    assert _scheme_from(("127.0.0.1", port2), "127.0.0.2", HTTPS="on") == "https"


def test_wsgi_key_with_asgi_app_stops_at_load(procs: ProcGroup, sock_dir: Path) -> None:
    """The issue's case: a Starlette app under `module =` booted and 500'd every request."""
    cmd = [sys.executable, "-m", "emperor.vassal", "--chdir", str(APPS), "--module",
           "frameworkapps:starlette_app", "--socket", str(sock_dir / "x.sock")]
    proc = procs.start(cmd, name="wrongkind")
    assert proc.wait(15) == 22
    log = proc.log_text()
    assert "is an ASGI application" in log and "asgi = frameworkapps:starlette_app" in log, log
    assert "ready" not in log


def test_asgi_key_with_wsgi_app_stops_at_load(procs: ProcGroup, sock_dir: Path) -> None:
    proc = start_asgi(procs, "--socket", str(sock_dir / "x.sock"), app="testapp:application", ready=False)
    assert proc.wait(15) == 22
    assert "is a WSGI application" in proc.log_text() and "module = testapp:application" in proc.log_text()


@pytest.mark.parametrize("args,message", [
    (["--threads", "4"], "threads = 4 is not supported with asgi"),
    (["--module", "testapp"], "asgi and module are both set"),
])
def test_refused_combinations(procs: ProcGroup, sock_dir: Path, args: list[str], message: str) -> None:
    proc = start_asgi(procs, "--socket", str(sock_dir / "x.sock"), *args, ready=False)
    assert proc.wait(15) != 0
    assert message in proc.log_text(), proc.log_text()
