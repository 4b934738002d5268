"""An HTTP vassal behind real nginx ``proxy_pass`` with an upstream keepalive pool.

The connection reuse is counted on the vassal's side (distinct REMOTE_PORTs the app saw), a
mix of slow and fast requests checks that no request waits behind a busy worker while another
is free, and a graceful reload under load loses nothing.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import BackgroundLoad, Nginx, ProcGroup, free_port, http_request, wait_for, wait_for_log
from vassal_runner import start_vassal

pytestmark = pytest.mark.live  # real processes (README: Tests)


def proxied(nginx: Callable[..., Nginx], port: int, keepalive: int = 8, extra: str = "") -> str:
    ng = nginx()
    ups = ng.add_upstream("app", [("127.0.0.1", port)], extra=f"keepalive {keepalive};")
    ng.add_proxy("/", ups, extra=extra)
    ng.start()
    return ng.url("/").rstrip("/")


def remote_port(url: str) -> str:
    status, _, body = http_request(url + "/env", timeout=10)
    assert status == 200, body
    return json.loads(body)["REMOTE_PORT"]  # type: ignore[no-any-return]


def test_nginx_reuses_upstream_connections(procs: ProcGroup, nginx: Callable[..., Nginx]) -> None:
    port = free_port()
    start_vassal(procs, "--http-socket", f"127.0.0.1:{port}", "--processes", "2")
    url = proxied(nginx, port)
    ports = [remote_port(url) for _ in range(100)]
    assert len(set(ports)) <= 2, f"{len(set(ports))} upstream connections for 100 requests"


def test_nginx_keepalive_under_concurrency(procs: ProcGroup, nginx: Callable[..., Nginx]) -> None:
    port = free_port()
    start_vassal(procs, "--http-socket", f"127.0.0.1:{port}", "--processes", "2")
    url = proxied(nginx, port)
    seen: set[str] = set()
    lock = threading.Lock()

    def probe() -> bool:
        p = remote_port(url)
        with lock:
            seen.add(p)
        return True

    with BackgroundLoad(probe, threads=6, max_requests=600) as load:
        load.join()
    assert load.result.failed == 0, load.result
    # at most nginx's pool (8) plus the few opened while every pooled one was busy
    assert len(seen) <= 20, f"{len(seen)} connections for {load.result.ok} requests"


def test_body_through_nginx(procs: ProcGroup, nginx: Callable[..., Nginx]) -> None:
    port = free_port()
    start_vassal(procs, "--http-socket", f"127.0.0.1:{port}", "--processes", "2")
    url = proxied(nginx, port, extra="proxy_request_buffering off;")  # nginx sends chunked upstream
    body = os.urandom(1 << 20)
    for path in ("/echo", "/echo-chunks"):
        status, _, got = http_request(url + path, "POST", body, {"Content-Type": "application/x"})
        assert status == 200 and got == body, path
    status, _, got = http_request(url + "/stream?n=3")
    assert status == 200 and got == b"chunk 0\nchunk 1\nchunk 2\n"


def test_slow_and_fast_no_request_waits_behind_an_idle_connection(
        procs: ProcGroup, nginx: Callable[..., Nginx]) -> None:
    """4 workers, 2 clients always on a 0.4 s request, 3 on fast ones: a free worker always
    exists, so no fast request may take anywhere near 0.4 s (it would if its pooled
    connection were held by a busy worker)."""
    port = free_port()
    start_vassal(procs, "--http-socket", f"127.0.0.1:{port}", "--processes", "4")
    url = proxied(nginx, port)
    fast_times: list[float] = []
    lock = threading.Lock()

    def slow() -> bool:
        return http_request(url + "/sleep?s=0.4", timeout=10)[0] == 200

    def fast() -> bool:
        t0 = time.monotonic()
        ok = http_request(url + "/hello", timeout=10)[0] == 200
        with lock:
            fast_times.append(time.monotonic() - t0)
        return ok

    with BackgroundLoad(slow, threads=2, seconds=4) as slow_load, \
            BackgroundLoad(fast, threads=3, seconds=4) as fast_load:
        slow_load.join()
        fast_load.join()
    assert slow_load.result.failed == 0 and fast_load.result.failed == 0
    fast_times.sort()
    assert len(fast_times) > 100
    p50 = fast_times[len(fast_times) // 2]
    assert fast_times[-1] < 0.3, f"slowest fast request took {fast_times[-1]:.3f}s (p50 {p50:.4f}s)"


def test_graceful_reload_under_load_loses_nothing(procs: ProcGroup, nginx: Callable[..., Nginx]) -> None:
    """POSTs (which nginx never retries) over pooled connections through three reloads: the
    parked connections and the parking socketpair survive the re-exec, and stopping workers
    park theirs, so nginx never finds a pooled connection closed under it."""
    port = free_port()
    v = start_vassal(procs, "--http-socket", f"127.0.0.1:{port}", "--processes", "2")
    url = proxied(nginx, port)

    def post() -> bool:
        status, _, body = http_request(url + "/echo", "POST", b"payload", timeout=10)
        return status == 200 and body == b"payload"

    with BackgroundLoad(post, threads=6, seconds=40) as load:
        for _ in range(3):
            seen = load.result.ok
            wait_for(lambda seen=seen: load.result.ok > seen + 50, 10, what="load running")
            mark = v.log_size()
            os.kill(v.pid, signal.SIGHUP)
            wait_for_log(v, r"ready: 2 worker", after=mark, timeout=15)
        seen = load.result.ok
        wait_for(lambda: load.result.ok > seen + 50, 10, what="requests after the reloads")
    assert load.result.failed == 0, load.result
    assert v.alive


def test_unix_http_socket_behind_nginx(procs: ProcGroup, nginx: Callable[..., Nginx], sock_dir: Path) -> None:
    sock = str(sock_dir / "http.sock")
    start_vassal(procs, "--http-socket", sock, "--chmod-socket", "666")
    ng = nginx()
    ups = ng.add_upstream("app", [sock], extra="keepalive 4;")
    ng.add_proxy("/", ups)
    ng.start()
    url = ng.url("/").rstrip("/")
    for i in range(20):
        status, _, body = http_request(url + f"/x{i}")
        assert status == 200 and body == f"hello /x{i}".encode()


def test_example_http_vassal_and_site(procs: ProcGroup, nginx: Callable[..., Nginx], tmp_path: Path,
                                      sock_dir: Path) -> None:
    """vassals-examples/apps-available/hello-http.ini behind the /http/ location of
    vassals-examples/nginx-site.conf, with only the demo's paths and port replaced."""
    from harness import uwsgi_params_directive

    examples = Path(__file__).resolve().parent.parent / "vassals-examples"
    demo = "/tmp/emperor-demo"
    avail = tmp_path / "apps-available"
    avail.mkdir()
    ini = (examples / "apps-available" / "hello-http.ini").read_text()
    ini = ini.replace(demo, str(sock_dir)).replace("%d../apps", str(examples / "apps"))
    (avail / "hello-http.ini").write_text(ini)
    start_vassal(procs, "--ini", str(avail / "hello-http.ini"), module="hello")
    port = free_port()
    site = (examples / "nginx-site.conf").read_text().replace(demo, str(sock_dir))
    site = site.replace("@EXAMPLES@", str(examples)).replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    site = site.replace("include uwsgi_params;", uwsgi_params_directive())
    ng = nginx(extra_http=site)
    ng.start()
    for _ in range(10):
        status, _, body = http_request(f"http://127.0.0.1:{port}/http/")
        assert status == 200 and body == b"Hello, World!"
    status, _, body = http_request(f"http://127.0.0.1:{port}/static/hello.txt")
    assert status == 200


def test_scale_under_load_behind_nginx(procs: ProcGroup, nginx: Callable[..., Nginx], tmp_path: Path,
                                       sock_dir: Path) -> None:
    """`emperor ctl scale` up and down while nginx sends load over pooled keep-alive connections:
    retiring workers park their idle connections with the master, nothing fails."""
    import subprocess
    import sys

    from test_emperor_rig import Rig

    rig = Rig(tmp_path / "vassals", sock_dir, procs)
    port = free_port()
    rig.write("app", extra=f"http-socket = 127.0.0.1:{port}")
    endpoint = f"ipc://{sock_dir}/ctl/control"
    (sock_dir / "ctl").mkdir(mode=0o700)
    rig.enable("app")
    rig.start(extra=f"emperor-control = {endpoint}")
    rig.serving("app")
    url = proxied(nginx, port)

    def scale(n: int) -> None:
        r = subprocess.run([sys.executable, "-m", "emperor", "ctl", "--endpoint", endpoint, "scale", "app",
                            str(n)], capture_output=True, text=True, timeout=20)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: len(rig.worker_pids("app")) == n, 15, what=f"{n} workers")

    with BackgroundLoad(lambda: http_request(url + "/sleep?s=0.01", timeout=10)[0] == 200, threads=6,
                        seconds=60) as load:
        wait_for(lambda: load.result.ok >= 30, 10, what="load running")
        for n in (5, 1, 3):
            scale(n)
            seen = load.result.ok
            wait_for(lambda seen=seen: load.result.ok >= seen + 40, 15, what=f"load on {n} workers")
    assert load.result.failed == 0 and load.result.ok > 0, load.result
