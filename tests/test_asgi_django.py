"""Django's ASGI handler as an ASGI vassal (issue #14): behind nginx ``uwsgi_pass``, and on an
``http-socket`` directly and through nginx ``proxy_pass``.

One vassal, started from an ini file the way a deployment writes it (``asgi =``, ``chdir``,
``pythonpath``, ``env = DJANGO_SETTINGS_MODULE=...``), serves the project in tests/apps/djangoproj
on a uwsgi Unix socket and on an HTTP socket at once. nginx mounts the uwsgi socket at ``/`` and
at ``/dj/`` (``SCRIPT_NAME`` + ``uwsgi_modifier1 30``); a second nginx server proxies to the HTTP
socket. Django does not speak lifespan, so the default ``lifespan = auto`` must serve without it.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import (
    Nginx,
    ProcGroup,
    free_port,
    http_get,
    http_request,
    request,
    wait_for,
    wait_for_log,
    wsgi_vars,
)
from harness.http_client import RawHTTP, chunked, request_bytes
from harness.procs import Proc
from test_asgi import stats_doc
from vassal_runner import APPS

pytestmark = pytest.mark.live  # starts real processes (README: Tests)

SETTINGS = "djangoproj.settings"
Addr = tuple[str, int]


def write_ini(path: Path, *lines: str, chdir: Path) -> Path:
    """A vassal ini for the Django project: importable only through ``pythonpath`` (``chdir`` is
    elsewhere), settings chosen only by ``env`` (djangoproj/asgi.py does not default them)."""
    text = "\n".join(["[uwsgi]", f"chdir = {chdir}", f"pythonpath = {APPS}",
                      f"env = DJANGO_SETTINGS_MODULE={SETTINGS}", *lines]) + "\n"
    path.write_text(text)
    return path


def start_ini(procs: ProcGroup, ini: Path, name: str, ready: bool = True) -> Proc:
    proc = procs.start([sys.executable, "-m", "emperor.vassal", str(ini)], name=name)
    if ready:
        wait_for_log(proc, r"ready: \d+ worker", timeout=20)
    return proc


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    tmp = tmp_path_factory.mktemp("django")
    socks = Path(tempfile.mkdtemp(prefix="emp-", dir="/tmp"))
    socks.chmod(0o755)
    procs = ProcGroup(tmp / "logs")
    try:
        sock = str(socks / "django.sock")
        port = free_port()
        ini = write_ini(tmp / "django.ini", "asgi = djangoproj.asgi:application", f"socket = {sock}",
                        f"http-socket = 127.0.0.1:{port}", "processes = 2", "limit-post = 4000000",
                        chdir=tmp)
        vassal = start_ini(procs, ini, "django")
        ng = Nginx(tmp / "nginx", group=procs)
        ng.add_uwsgi("/", sock)
        ng.add_uwsgi("/dj/", sock, extra="uwsgi_param SCRIPT_NAME /dj;\nuwsgi_modifier1 30;")
        proxied = ng.add_server()  # a second server{}: proxy_pass to the http-socket
        up = ng.add_upstream("django_http", [("127.0.0.1", port)], "keepalive 8;")
        ng.add_proxy("/", up, server=proxied, extra="proxy_buffering off;\n"
                     "proxy_set_header X-Forwarded-For $remote_addr;\n"
                     "proxy_set_header X-Forwarded-Proto https;")
        ng.start()
        yield {"url": ng.url("/").rstrip("/"), "addr": ("127.0.0.1", port), "vassal": vassal,
               "proxy_url": ng.url("/", server=proxied).rstrip("/")}
    finally:
        procs.stop_all()
        procs.assert_no_orphans()
        shutil.rmtree(socks, ignore_errors=True)


def get_json(url: str) -> dict[str, object]:
    status, headers, body = http_get(url)
    assert status == 200, (status, body)
    assert dict((k.lower(), v) for k, v in headers)["content-type"] == "application/json"
    return json.loads(body)  # type: ignore[no-any-return]


def direct(front: dict[str, object]) -> str:
    host, port = front["addr"]  # type: ignore[misc]
    return f"http://{host}:{port}"


def test_served_without_lifespan(front: dict[str, object]) -> None:
    """Django's handler raises on the lifespan scope before reading an event: with the default
    lifespan = auto each worker logs that and serves on (both workers booted, no failure)."""
    vassal = front["vassal"]
    assert isinstance(vassal, Proc)
    log = vassal.log_text()
    assert log.count("does not support ASGI lifespan") == 2, log
    assert "lifespan startup failed" not in log
    assert get_json(str(front["url"]) + "/hello/")["settings"] == SETTINGS


def test_json_get_through_nginx(front: dict[str, object]) -> None:
    doc = get_json(str(front["url"]) + "/hello/?q=zap")
    assert doc["framework"] == "django" and doc["method"] == "GET" and doc["q"] == "zap"
    assert doc["settings"] == SETTINGS  # the vassal's env = reached the worker
    assert doc["path"] == "/hello/" and doc["path_info"] == "/hello/" and doc["script_name"] == ""
    assert doc["reversed"] == "/items/7/"
    assert doc["absolute"] == "http://127.0.0.1/hello/"  # Host from uwsgi_params ($host)
    assert get_json(str(front["url"]) + "/items/42/")["id"] == 42
    status, _, _ = http_get(str(front["url"]) + "/items/notanumber/")
    assert status == 404


def test_mounted_under_a_prefix_reverse_includes_it(front: dict[str, object]) -> None:
    """location /dj/ + uwsgi_param SCRIPT_NAME /dj + modifier1 30: root_path "/dj", so Django's
    script prefix is /dj, its path_info is the rest and reverse() gives the mounted URL."""
    doc = get_json(str(front["url"]) + "/dj/hello/")
    assert doc["script_name"] == "/dj" and doc["path_info"] == "/hello/" and doc["path"] == "/dj/hello/"
    assert doc["reversed"] == "/dj/items/7/"
    assert doc["absolute"] == "http://127.0.0.1/dj/hello/"
    assert get_json(str(front["url"]) + "/dj/items/5/") == {"id": 5, "path": "/dj/items/5/"}
    # the prefix does not leak into the next request on the same worker (Django keeps it per thread)
    assert get_json(str(front["url"]) + "/hello/")["reversed"] == "/items/7/"


def test_json_get_directly_on_the_http_socket(front: dict[str, object]) -> None:
    host, port = front["addr"]  # type: ignore[misc]
    doc = get_json(direct(front) + "/hello/?q=1")
    assert doc["script_name"] == "" and doc["path"] == "/hello/" and doc["reversed"] == "/items/7/"
    assert doc["absolute"] == f"http://{host}:{port}/hello/" and doc["q"] == "1"
    with RawHTTP(front["addr"]) as c:  # type: ignore[arg-type]
        for i in (1, 2, 3):  # keep-alive: three requests on one connection
            c.send(request_bytes("GET", f"/items/{i}/", {"Host": "localhost"}))
            r = c.response()
            assert r.status == 200 and json.loads(r.body)["id"] == i, r.body
    with RawHTTP(front["addr"]) as c:  # type: ignore[arg-type]
        c.send(request_bytes("GET", "/hello/", {"Host": "evil.example"}))
        assert c.response().status == 400  # ALLOWED_HOSTS is Django's, and it answers


def test_json_get_through_nginx_proxy_pass(front: dict[str, object]) -> None:
    """nginx proxy_pass to the http-socket, with X-Forwarded-Proto https: the scope's scheme (from
    a trusted peer) is Django's request.scheme, without SECURE_PROXY_SSL_HEADER."""
    doc = get_json(str(front["proxy_url"]) + "/hello/?q=px")
    assert doc["q"] == "px" and doc["path"] == "/hello/" and doc["reversed"] == "/items/7/"
    assert doc["scheme"] == "https" and doc["absolute"] == "https://127.0.0.1/hello/"
    for _ in range(3):  # over the upstream keepalive pool
        assert get_json(str(front["proxy_url"]) + "/items/9/")["id"] == 9


PAYLOAD = bytes(range(256)) * 4000  # 1 MB, every byte value


@pytest.mark.parametrize("via", ["nginx", "nginx-mounted", "proxy_pass", "direct"])
def test_post_body_echo(front: dict[str, object], via: str) -> None:
    base = {"nginx": str(front["url"]), "nginx-mounted": str(front["url"]) + "/dj",
            "proxy_pass": str(front["proxy_url"]), "direct": direct(front)}[via]
    status, headers, body = http_request(base + "/echo/", method="POST", body=PAYLOAD,
                                         headers={"Content-Type": "application/x-test"})
    h = dict((k.lower(), v) for k, v in headers)
    assert status == 200 and h["x-body-length"] == str(len(PAYLOAD)), (status, body[:200])
    assert h["content-type"] == "application/x-test" and body == PAYLOAD


def test_chunked_post_echo_directly(front: dict[str, object]) -> None:
    """A chunked request body on the HTTP socket is de-chunked before Django sees it."""
    parts = [b"a" * 1000, b"b" * 70000, b"c"]
    with RawHTTP(front["addr"]) as c:  # type: ignore[arg-type]
        c.send(request_bytes("POST", "/echo/", {"Host": "localhost", "Transfer-Encoding": "chunked"},
                             body=chunked(*parts)))
        r = c.response()
    assert r.status == 200 and r.body == b"".join(parts), r.body[:200]


def stream_lags(addr: Addr, path: str, n: int) -> list[float]:
    """GET ``path`` over HTTP/1.0 (close-delimited, no chunking); for each line the app sent,
    how long after its send time it arrived."""
    lags = []
    with socket.create_connection(addr, timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        f = s.makefile("rb")
        status = f.readline()
        assert status.split()[1] == b"200", status
        while f.readline().strip():
            pass
        for i in range(n):
            sent, idx = f.readline().split()
            lags.append(time.time() - float(sent))
            assert int(idx) == i
        assert f.readline() == b"end\n"
    return lags


@pytest.mark.parametrize("via", ["nginx", "nginx-mounted", "proxy_pass", "direct"])
def test_streamed_response_each_chunk_at_once(front: dict[str, object], via: str) -> None:
    """StreamingHttpResponse over an async iterator: each yielded line reaches the client
    (through nginx: the view's X-Accel-Buffering: no) within 50 ms, not at the end."""
    if via == "direct":
        addr: Addr = front["addr"]  # type: ignore[assignment]
        path = "/stream/?n=5&delay=0.3"
    else:
        url = str(front["proxy_url" if via == "proxy_pass" else "url"])
        port = int(url.rsplit(":", 1)[1])
        addr = ("127.0.0.1", port)
        path = ("/dj" if via == "nginx-mounted" else "") + "/stream/?n=5&delay=0.3"
    lags = stream_lags(addr, path, 5)
    assert max(lags) < 0.05, lags


# ---- vassals of their own ------------------------------------------------------------------
def test_lifespan_on_cannot_boot(procs: ProcGroup, sock_dir: Path, tmp_path: Path) -> None:
    """lifespan = on asks for what Django does not have: the worker's startup fails (status 22)."""
    ini = write_ini(tmp_path / "on.ini", "asgi = djangoproj.asgi:application",
                    f"socket = {sock_dir / 'on.sock'}", "lifespan = on", chdir=tmp_path)
    proc = start_ini(procs, ini, "lifespan-on", ready=False)
    assert proc.wait(20) == 22
    log = proc.log_text()
    assert "lifespan startup failed" in log and "not lifespan" in log, log  # Django's own message


def test_wsgi_key_on_django_asgi_app_stops_at_load(procs: ProcGroup, sock_dir: Path, tmp_path: Path) -> None:
    """module = pointed at Django's ASGIHandler: stop at load and say to use asgi =."""
    ini = write_ini(tmp_path / "wrong.ini", "module = djangoproj.asgi:application",
                    f"socket = {sock_dir / 'wrong.sock'}", chdir=tmp_path)
    proc = start_ini(procs, ini, "wrongkey", ready=False)
    assert proc.wait(20) == 22
    log = proc.log_text()
    assert "is an ASGI application" in log, log
    assert "asgi = djangoproj.asgi:application" in log and "ready" not in log, log


def test_settings_missing_without_env(procs: ProcGroup, sock_dir: Path, tmp_path: Path) -> None:
    """Counter-check for the env = assertions: without it Django cannot configure and the vassal
    does not boot (so the settings seen in the views really came from the ini)."""
    ini = tmp_path / "noenv.ini"
    ini.write_text(f"[uwsgi]\nchdir = {tmp_path}\npythonpath = {APPS}\n"
                   f"asgi = djangoproj.asgi:application\nsocket = {sock_dir / 'noenv.sock'}\n")
    proc = start_ini(procs, ini, "noenv", ready=False)
    assert proc.wait(20) != 0
    log = proc.log_text()
    assert "DJANGO_SETTINGS_MODULE" in log and "ready" not in log, log


def test_blocking_sync_view_runs_off_the_loop(procs: ProcGroup, sock_dir: Path, tmp_path: Path) -> None:
    """A sync view sleeping 2.5 s with harakiri = 1 on one worker: Django runs it in a thread, so
    the loop keeps serving (an async view answers while it sleeps) and harakiri, which watches
    the loop, does not fire (docs/asgi.md, Django)."""
    sock = str(sock_dir / "sync.sock")
    stats = sock_dir / "stats.sock"
    ini = write_ini(tmp_path / "sync.ini", "asgi = djangoproj.asgi", f"socket = {sock}",
                    f"stats = {stats}", "processes = 1", "harakiri = 1", chdir=tmp_path)
    proc = start_ini(procs, ini, "syncview")
    slow: list[tuple[int, bytes]] = []

    def slow_request() -> None:
        status, _, body, _ = request(sock, wsgi_vars(path="/sync-sleep/", query="s=2.5"), timeout=10)
        slow.append((status, body))

    t = threading.Thread(target=slow_request)
    t.start()
    try:
        wait_for(lambda: stats_doc(stats)["workers"][0]["in_flight"] == 1, 5,
                 what="the sync view in flight")
        status, _, body, _ = request(sock, wsgi_vars(path="/hello/"), timeout=5)
        assert status == 200 and json.loads(body)["framework"] == "django", body
        assert not slow  # answered while the sync view still slept
    finally:
        t.join(10)
    assert slow and slow[0][0] == 200 and json.loads(slow[0][1])["slept"] == 2.5, slow
    assert "HARAKIRI" not in proc.log_text(), proc.log_tail()
