#!/usr/bin/env python3
"""Interleaved throughput / latency / CPU-per-request / memory / startup
benchmark of WSGI backends behind one nginx on loopback (and direct).

Every run starts the backend fresh (time to first 200 is measured), checks one
response of the workload, warms up with wrk, samples the CPU time of the
backend's whole process tree (and of nginx), measures with wrk --latency,
samples CPU again, records memory (RSS/PSS/USS of the process tree), then
stops the backend by its PID.  Configurations are interleaved (round r starts
at offset r in the list) and medians over rounds are reported, with the
project's targets from issue #2 as ratios against uWSGI and gunicorn measured
in the same run.

Built-in configurations (WORKERS=2 worker processes each):
  emperor+nginx        {python} -m emperor.vassal --socket SOCK ... <- nginx uwsgi_pass unix:SOCK
                       ({python}: --emperor-python, default the bench venv's python, which
                       has the project installed editable by setup.sh)
  uwsgi+nginx          uwsgi --master --processes 2 --socket SOCK  <- nginx uwsgi_pass unix:SOCK
  gunicorn+nginx       gunicorn -w 2 (sync) --bind unix:SOCK  <- nginx proxy_pass http://unix:SOCK
  uwsgi-emperor+nginx  uwsgi --emperor DIR, one vassal ini (same options)  <- nginx uwsgi_pass
  uwsgi-direct         uwsgi --master --processes 2 --http-socket 127.0.0.1:PORT
  gunicorn-direct      gunicorn -w 2 --bind 127.0.0.1:PORT

Another backend:
  --config 'NAME|FRONT|COMMAND TEMPLATE'
  FRONT: nginx-uwsgi (nginx uwsgi_pass unix:{sock}), nginx-uwsgi-tcp (uwsgi_pass
  127.0.0.1:{port}), nginx-http (proxy_pass to unix:{sock}), direct (HTTP on
  127.0.0.1:{port}).  Placeholders: {sock} {port} {workers} {wsgi_file}
  {module} {callable} {apps} {rundir} {venv_bin} {python}.

Workloads: hello (plain WSGI, 13 bytes), flask-json (45 bytes), flask-payload
(64 KiB), flask-echo (POST 1 MiB, echoed).

Examples:
  run_bench.py --rounds 3 --only emperor+nginx,uwsgi+nginx,gunicorn+nginx   # issue #2 (~9 min)
  run_bench.py --only uwsgi+nginx,gunicorn+nginx --workloads hello --rounds 1 --duration 3
Results: results.jsonl (one line per run), summary.json, summary.md in --out
(default: bench/results/<timestamp>/, gitignored).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B


@dataclass(frozen=True)
class Workload:
    wsgi_file: str
    module: str  # module:callable
    path: str
    method: str
    body: int  # request body bytes
    ready: str  # path polled for readiness
    flask: bool
    kind: str = "wsgi"  # "wsgi" or "asgi": which configs can run it


WORKLOADS: dict[str, Workload] = {
    "hello": Workload("hello.py", "hello:application", "/", "GET", 0, "/", False),
    "flask-json": Workload("flaskapp.py", "flaskapp:app", "/", "GET", 0, "/", True),
    "flask-payload": Workload("flaskapp.py", "flaskapp:app", "/payload", "GET", 0, "/", True),
    "flask-echo": Workload("flaskapp.py", "flaskapp:app", "/echo", "POST", 1 << 20, "/", True),
    "asgi-hello": Workload("asgihello.py", "asgihello:app", "/", "GET", 0, "/", False, "asgi"),
    "fastapi-json": Workload("fastapiapp.py", "fastapiapp:app", "/", "GET", 0, "/", False, "asgi"),
}
WSGI_WORKLOADS = tuple(w for w, d in WORKLOADS.items() if d.kind == "wsgi")
ASGI_WORKLOADS = tuple(w for w, d in WORKLOADS.items() if d.kind == "asgi")

SUBJECT = "emperor+nginx"
UWSGI = "uwsgi+nginx"
GUNICORN = "gunicorn+nginx"

EMPEROR_VASSAL_CMD = ("{python} -m emperor.vassal --socket {sock} --chmod-socket 666 --processes {workers} "
                      "--module {module} --chdir {apps} --disable-logging")
UWSGI_COMMON = ("--master --processes {workers} --wsgi-file {wsgi_file} --callable {callable} "
                "--chdir {apps} --disable-logging")
# issue #12 (HTTP listeners) and #14 (ASGI): subjects and anchors
EMPEROR_HTTP = "emperor-http+nginx"
EMPEROR_HTTP_DIRECT = "emperor-http-direct"
EMPEROR_ASGI = "emperor-asgi+nginx"
EMPEROR_ASGI_HTTP = "emperor-asgi-http+nginx"
EMPEROR_ASGI_DIRECT = "emperor-asgi-direct"
EMPEROR_HTTP_CMD = ("{python} -m emperor.vassal --http-socket {bind} --chmod-socket 666 "
                    "--processes {workers} --module {module} --chdir {apps} --disable-logging")
EMPEROR_ASGI_CMD = ("{python} -m emperor.vassal --socket {sock} --chmod-socket 666 --processes {workers} "
                    "--asgi {module} --chdir {apps} --disable-logging")
EMPEROR_ASGI_HTTP_CMD = ("{python} -m emperor.vassal --http-socket {bind} --chmod-socket 666 "
                         "--processes {workers} --asgi {module} --chdir {apps} --disable-logging")
GUNICORN_CMD = "{venv_bin}/gunicorn --workers {workers} --bind {gbind} --chdir {apps} "
GTHREADS = 4  # threads per gunicorn gthread worker
GRANIAN_CMD = ("{venv_bin}/granian --workers {workers} --working-dir {apps} --no-ws --log-level warning "
               "{granian_bind} ")
UVICORN_CMD = ("{venv_bin}/uvicorn --workers {workers} --loop uvloop --http httptools --no-access-log "
               "--log-level warning --app-dir {apps} {uvicorn_bind} {module}")
# (name, front, template, kind): kind "wsgi"/"asgi" runs only that kind of workload
BUILTIN: list[tuple[str, str, str, str]] = [
    (SUBJECT, "nginx-uwsgi", EMPEROR_VASSAL_CMD, "wsgi"),
    (UWSGI, "nginx-uwsgi", "{venv_bin}/uwsgi " + UWSGI_COMMON + " --socket {sock} --chmod-socket=666",
     "wsgi"),
    (GUNICORN, "nginx-http",
     "{venv_bin}/gunicorn --workers {workers} --worker-class sync --bind unix:{sock} "
     "--chdir {apps} {module}", "wsgi"),
    ("uwsgi-emperor+nginx", "nginx-uwsgi", "@emperor", "wsgi"),
    ("uwsgi-direct", "direct",
     "{venv_bin}/uwsgi " + UWSGI_COMMON + " --http-socket 127.0.0.1:{port} "
     "--add-header 'Connection: close'", "wsgi"),
    ("gunicorn-direct", "direct",
     "{venv_bin}/gunicorn --workers {workers} --worker-class sync --bind 127.0.0.1:{port} "
     "--chdir {apps} {module}", "wsgi"),
    # --- HTTP (issue #12): nginx proxy_pass to an upstream with keepalive, or wrk directly
    (EMPEROR_HTTP, "nginx-http-ka", EMPEROR_HTTP_CMD, "wsgi"),
    ("uwsgi-http+nginx", "nginx-http-ka", "{venv_bin}/uwsgi " + UWSGI_COMMON
     + " --http-socket {sock} --chmod-socket=666", "wsgi"),
    ("uwsgi-http11+nginx", "nginx-http-ka", "{venv_bin}/uwsgi " + UWSGI_COMMON
     + " --http11-socket {sock} --chmod-socket=666", "wsgi"),
    ("gunicorn-sync+nginx", "nginx-http-ka", GUNICORN_CMD + "--worker-class sync {module}", "wsgi"),
    ("gunicorn-gthread+nginx", "nginx-http-ka",
     GUNICORN_CMD + f"--worker-class gthread --threads {GTHREADS} {{module}}", "wsgi"),
    ("granian-wsgi+nginx", "nginx-http-ka", GRANIAN_CMD + "--interface wsgi {module}", "wsgi"),
    (EMPEROR_HTTP_DIRECT, "direct", EMPEROR_HTTP_CMD, "wsgi"),
    ("uwsgi-http11-direct", "direct", "{venv_bin}/uwsgi " + UWSGI_COMMON
     + " --http11-socket 127.0.0.1:{port}", "wsgi"),
    ("gunicorn-gthread-direct", "direct",
     GUNICORN_CMD + f"--worker-class gthread --threads {GTHREADS} {{module}}", "wsgi"),
    ("granian-wsgi-direct", "direct", GRANIAN_CMD + "--interface wsgi {module}", "wsgi"),
    # --- ASGI (issue #14): emperor over uwsgi_pass and over an http-socket (proxy_pass with
    # upstream keepalive, or wrk directly), the others over HTTP
    (EMPEROR_ASGI, "nginx-uwsgi", EMPEROR_ASGI_CMD, "asgi"),
    (EMPEROR_ASGI_HTTP, "nginx-http-ka", EMPEROR_ASGI_HTTP_CMD, "asgi"),
    (EMPEROR_ASGI_DIRECT, "direct", EMPEROR_ASGI_HTTP_CMD, "asgi"),
    ("uvicorn+nginx", "nginx-http-ka", UVICORN_CMD, "asgi"),
    ("gunicorn-asgi+nginx", "nginx-http-ka", GUNICORN_CMD + "--worker-class asgi {module}", "asgi"),
    ("granian-asgi+nginx", "nginx-http-ka", GRANIAN_CMD + "--interface asgi {module}", "asgi"),
    ("uvicorn-direct", "direct", UVICORN_CMD, "asgi"),
    ("gunicorn-asgi-direct", "direct", GUNICORN_CMD + "--worker-class asgi {module}", "asgi"),
    ("granian-asgi-direct", "direct", GRANIAN_CMD + "--interface asgi {module}", "asgi"),
]
HTTP_NGINX = [EMPEROR_HTTP, SUBJECT, UWSGI, "uwsgi-http+nginx", "uwsgi-http11+nginx", "gunicorn-sync+nginx",
              "gunicorn-gthread+nginx", "granian-wsgi+nginx"]
HTTP_DIRECT = [EMPEROR_HTTP_DIRECT, "uwsgi-direct", "uwsgi-http11-direct", "gunicorn-direct",
               "gunicorn-gthread-direct", "granian-wsgi-direct"]
ASGI_CONFIGS = [EMPEROR_ASGI, EMPEROR_ASGI_HTTP, EMPEROR_ASGI_DIRECT, "uvicorn+nginx", "gunicorn-asgi+nginx",
                "granian-asgi+nginx",
                "uvicorn-direct", "gunicorn-asgi-direct", "granian-asgi-direct"]
# --suite: (configs, workloads) presets
SUITES: dict[str, tuple[list[str], tuple[str, ...]]] = {
    "wsgi": ([SUBJECT, UWSGI, GUNICORN], WSGI_WORKLOADS),
    "http": (HTTP_NGINX + HTTP_DIRECT, WSGI_WORKLOADS),
    "asgi": (ASGI_CONFIGS, ASGI_WORKLOADS),
    "http+asgi": (HTTP_NGINX + HTTP_DIRECT + ASGI_CONFIGS, WSGI_WORKLOADS + ASGI_WORKLOADS),
}

UWSGI_EMPEROR_VASSAL = """[uwsgi]
master = true
processes = {workers}
socket = {sock}
chmod-socket = 666
wsgi-file = {wsgi_file}
callable = {callable}
chdir = {apps}
disable-logging = true
"""


@dataclass(frozen=True)
class Target:
    """One target of issues #2/#12/#14: subject/baseline ratio of a metric.  A baseline
    given as a tuple means the best of those configs (highest req/s in that workload;
    the CPU and p99 ratios are then taken against that same config)."""
    metric: str  # key into the per-config summary
    label: str
    baseline: str | tuple[str, ...]
    workloads: tuple[str, ...]
    op: str  # ">=" or "<="
    value: float
    subject: str = SUBJECT


ALL = WSGI_WORKLOADS
FLASK = tuple(w for w, d in WORKLOADS.items() if d.flask)
TARGETS: list[Target] = [
    Target("rps", "req/s", UWSGI, ("hello",), ">=", 0.90),
    Target("rps", "req/s", UWSGI, ("flask-json", "flask-payload", "flask-echo"), ">=", 0.95),
    Target("rps", "req/s", GUNICORN, ALL, ">=", 2.0),
    Target("cpu_us", "CPU/req", UWSGI, ("hello",), "<=", 1.3),
    Target("cpu_us", "CPU/req", UWSGI, ("flask-json",), "<=", 1.1),
    Target("p99_ms", "p99", UWSGI, ALL, "<=", 1.2),
    Target("pss_mib", "PSS", UWSGI, FLASK, "<=", 1.1),
]
# ratios printed without a target (context)
INFO: list[tuple[str, str, str, tuple[str, ...]]] = [
    ("cpu_us", "CPU/req", UWSGI, ("flask-payload", "flask-echo")),
    ("pss_mib", "PSS", UWSGI, ("hello",)),
    ("cpu_us", "CPU/req", GUNICORN, ALL),
]

# issue #12, behind nginx: emperor over HTTP vs uWSGI's best path (uwsgi_pass, http-socket or
# http11-socket), gunicorn sync; directly: vs Granian, uWSGI's best, gunicorn's best.
UWSGI_NGINX_PATHS = (UWSGI, "uwsgi-http+nginx", "uwsgi-http11+nginx")
# uWSGI's http11-socket is left out of the direct baseline: a sync worker keeps its connection
# between requests, so 2 workers serve 2 of wrk's 64 connections and starve the other 62 (its
# p50 * req/s ~ 1-2 requests in flight); it is shown as a context ratio instead.
UWSGI_DIRECT_PATHS = "uwsgi-direct"
GUNICORN_DIRECT = ("gunicorn-direct", "gunicorn-gthread-direct")
HF = ("hello", "flask-json")
HTTP_TARGETS: list[Target] = [
    Target("rps", "req/s", UWSGI_NGINX_PATHS, HF, ">=", 1.0, EMPEROR_HTTP),
    Target("cpu_us", "CPU/req", UWSGI_NGINX_PATHS, HF, "<=", 1.0, EMPEROR_HTTP),
    Target("rps", "req/s", "gunicorn-sync+nginx", WSGI_WORKLOADS, ">=", 2.0, EMPEROR_HTTP),
    Target("rps", "req/s", "granian-wsgi-direct", ("hello",), ">=", 0.7, EMPEROR_HTTP_DIRECT),
    Target("rps", "req/s", "granian-wsgi-direct", ("flask-json",), ">=", 0.9, EMPEROR_HTTP_DIRECT),
    Target("rps", "req/s", UWSGI_DIRECT_PATHS, WSGI_WORKLOADS, ">=", 1.0, EMPEROR_HTTP_DIRECT),
    Target("rps", "req/s", GUNICORN_DIRECT, WSGI_WORKLOADS, ">=", 1.0, EMPEROR_HTTP_DIRECT),
]
HTTP_INFO: list[tuple[str, str, str | tuple[str, ...], tuple[str, ...], str]] = [
    ("rps", "req/s", SUBJECT, WSGI_WORKLOADS, EMPEROR_HTTP),
    ("rps", "req/s", UWSGI_NGINX_PATHS, ("flask-payload", "flask-echo"), EMPEROR_HTTP),
    ("cpu_us", "CPU/req", UWSGI_NGINX_PATHS, ("flask-payload", "flask-echo"), EMPEROR_HTTP),
    ("rps", "req/s", "granian-wsgi+nginx", WSGI_WORKLOADS, EMPEROR_HTTP),
    ("cpu_us", "CPU/req", "granian-wsgi+nginx", WSGI_WORKLOADS, EMPEROR_HTTP),
    ("p99_ms", "p99", UWSGI_NGINX_PATHS, WSGI_WORKLOADS, EMPEROR_HTTP),
    ("pss_mib", "PSS", UWSGI_NGINX_PATHS, WSGI_WORKLOADS, EMPEROR_HTTP),
    ("rps", "req/s", "granian-wsgi-direct", ("flask-payload", "flask-echo"), EMPEROR_HTTP_DIRECT),
    ("cpu_us", "CPU/req", "granian-wsgi-direct", WSGI_WORKLOADS, EMPEROR_HTTP_DIRECT),
    ("rps", "req/s", "uwsgi-http11-direct", WSGI_WORKLOADS, EMPEROR_HTTP_DIRECT),
    ("p99_ms", "p99", "granian-wsgi-direct", WSGI_WORKLOADS, EMPEROR_HTTP_DIRECT),
]
# issue #14: emperor's ASGI worker behind nginx vs uvicorn, gunicorn -k asgi, Granian (each over
# proxy_pass with upstream keepalive); emperor both over uwsgi_pass and over an http-socket (the
# equal-terms path), and directly (wrk keep-alive) vs Granian directly.
ASGI_HTTP_TARGETS: list[Target] = [
    Target("rps", "req/s", "uvicorn+nginx", ASGI_WORKLOADS, ">=", 1.0, EMPEROR_ASGI_HTTP),
    Target("rps", "req/s", "gunicorn-asgi+nginx", ASGI_WORKLOADS, ">=", 1.0, EMPEROR_ASGI_HTTP),
    Target("cpu_us", "CPU/req", "uvicorn+nginx", ASGI_WORKLOADS, "<=", 1.0, EMPEROR_ASGI_HTTP),
    Target("cpu_us", "CPU/req", "gunicorn-asgi+nginx", ASGI_WORKLOADS, "<=", 1.0, EMPEROR_ASGI_HTTP),
    Target("rps", "req/s", "granian-asgi+nginx", ASGI_WORKLOADS, ">=", 1.0, EMPEROR_ASGI_HTTP),
    Target("p99_ms", "p99", "uvicorn+nginx", ASGI_WORKLOADS, "<=", 1.0, EMPEROR_ASGI_HTTP),
    Target("rps", "req/s", "granian-asgi-direct", ASGI_WORKLOADS, ">=", 0.8, EMPEROR_ASGI_DIRECT),
]
# Context, no target. emperor's ASGI worker over uwsgi_pass is here too: nginx keeps no uwsgi
# connection alive (the protocol ends a response by closing), so that path pays a connection per
# request that the others, behind the keepalive upstream, do not; #14's equal-terms targets are
# ASGI_HTTP_TARGETS (decided in docs/benchmarks.md, "ASGI on HTTP sockets, re-measured").
ASGI_INFO: list[tuple[str, str, str | tuple[str, ...], tuple[str, ...], str]] = [
    ("rps", "req/s", "uvicorn+nginx", ASGI_WORKLOADS, EMPEROR_ASGI),
    ("rps", "req/s", "gunicorn-asgi+nginx", ASGI_WORKLOADS, EMPEROR_ASGI),
    ("cpu_us", "CPU/req", "uvicorn+nginx", ASGI_WORKLOADS, EMPEROR_ASGI),
    ("cpu_us", "CPU/req", "gunicorn-asgi+nginx", ASGI_WORKLOADS, EMPEROR_ASGI),
    ("rps", "req/s", "granian-asgi+nginx", ASGI_WORKLOADS, EMPEROR_ASGI),
    ("p99_ms", "p99", "uvicorn+nginx", ASGI_WORKLOADS, EMPEROR_ASGI),
    ("cpu_us", "CPU/req", "granian-asgi+nginx", ASGI_WORKLOADS, EMPEROR_ASGI),
    ("pss_mib", "PSS", "uvicorn+nginx", ASGI_WORKLOADS, EMPEROR_ASGI),
    ("rps", "req/s", "granian-asgi-direct", ASGI_WORKLOADS, EMPEROR_ASGI),
    ("cpu_us", "CPU/req", "granian-asgi+nginx", ASGI_WORKLOADS, EMPEROR_ASGI_HTTP),
    ("pss_mib", "PSS", "uvicorn+nginx", ASGI_WORKLOADS, EMPEROR_ASGI_HTTP),
    ("rps", "req/s", "uvicorn-direct", ASGI_WORKLOADS, EMPEROR_ASGI_DIRECT),
    ("cpu_us", "CPU/req", "uvicorn-direct", ASGI_WORKLOADS, EMPEROR_ASGI_DIRECT),
    ("p99_ms", "p99", "uvicorn-direct", ASGI_WORKLOADS, EMPEROR_ASGI_DIRECT),
    ("cpu_us", "CPU/req", "granian-asgi-direct", ASGI_WORKLOADS, EMPEROR_ASGI_DIRECT),
]
ALL_TARGETS = TARGETS + HTTP_TARGETS + ASGI_HTTP_TARGETS
ALL_INFO = [(m, lb, b, w, SUBJECT) for m, lb, b, w in INFO] + HTTP_INFO + ASGI_INFO


@dataclass
class Config:
    name: str
    front: str
    template: str
    kind: str = "any"  # "wsgi", "asgi" or "any": which workloads it runs
    stop_signal: int = signal.SIGINT
    sock: str = ""
    port: int = 0
    nginx_port: int = 0
    safe: str = field(init=False)

    def __post_init__(self) -> None:
        self.safe = "".join(c if c.isalnum() else "_" for c in self.name)


def build_nginx(rundir: str, configs: list[Config]) -> B.Nginx | None:
    servers = []
    os.makedirs(os.path.join(rundir, "sock"), exist_ok=True)
    for c in configs:
        c.sock = os.path.join(rundir, "sock", c.safe + ".sock")
        c.port = B.free_port()
        if c.front == "direct":
            continue
        c.nginx_port = B.free_port()
        if c.front == "nginx-uwsgi":
            loc = B.uwsgi_location("unix:" + c.sock)
        elif c.front == "nginx-uwsgi-tcp":
            loc = B.uwsgi_location(f"127.0.0.1:{c.port}")
        elif c.front == "nginx-http":
            loc = B.proxy_location("unix:" + c.sock)
        elif c.front == "nginx-http-ka":
            up = "up_" + c.safe
            servers.append(B.nginx_upstream(up, "unix:" + c.sock, KEEPALIVE))
            loc = B.proxy_keepalive_location(up)
        else:
            raise SystemExit(f"unknown front {c.front!r}")
        servers.append(B.nginx_server(c.nginx_port, loc))
    if not servers:
        return None
    return B.Nginx(rundir, servers).start()


KEEPALIVE = 32  # nginx upstream keepalive pool (connections per nginx worker)


def fill(template: str, c: Config, wl: str, rundir: str, workers: int, python: str) -> str:
    """The command line of config c for workload wl.  {bind}/{gbind}/{granian_bind}/
    {uvicorn_bind} are the listening address in each server's syntax: the Unix socket
    behind nginx, 127.0.0.1:{port} for direct configs."""
    w = WORKLOADS[wl]
    direct = c.front == "direct"
    tcp = f"127.0.0.1:{c.port}"
    return template.format(
        sock=c.sock, port=c.port, workers=workers,
        wsgi_file=os.path.join(B.APPS, w.wsgi_file), module=w.module,
        callable=w.module.split(":")[1], apps=B.APPS, rundir=rundir,
        venv_bin=B.venv_bindir(), python=python,
        bind=tcp if direct else c.sock,
        gbind=tcp if direct else "unix:" + c.sock,
        granian_bind=(f"--host 127.0.0.1 --port {c.port}" if direct
                      else f"--uds {c.sock} --uds-permissions 438"),
        uvicorn_bind=(f"--host 127.0.0.1 --port {c.port}" if direct else f"--uds {c.sock}"))


def runs_workload(c: Config, wl: str) -> bool:
    return c.kind in ("any", WORKLOADS[wl].kind)


def start_backend(c: Config, wl: str, rundir: str, a: argparse.Namespace, logdir: str) -> tuple[B.Proc, str]:
    if os.path.exists(c.sock):
        os.unlink(c.sock)
    logf = os.path.join(logdir, f"{c.safe}-{wl}.log")
    if c.template == "@emperor":
        vdir = os.path.join(rundir, "vassals-" + c.safe)
        os.makedirs(vdir, exist_ok=True)
        for f in os.listdir(vdir):
            os.unlink(os.path.join(vdir, f))
        with open(os.path.join(vdir, "app.ini"), "w") as fh:
            fh.write(fill(UWSGI_EMPEROR_VASSAL, c, wl, rundir, a.workers, a.emperor_python))
        cmd = f"{B.venv_bin('uwsgi')} --emperor {vdir}"
    else:
        cmd = fill(c.template, c, wl, rundir, a.workers, a.emperor_python)
    return B.Proc(cmd, logf, cwd=B.APPS, stop_signal=c.stop_signal), cmd


def front_port(c: Config) -> int:
    return c.port if c.front == "direct" else c.nginx_port


def url_for(c: Config, path: str) -> str:
    return f"http://127.0.0.1:{front_port(c)}{path}"


def http_request(port: int, method: str, path: str, body: bytes = b"",
                 timeout: float = 5.0) -> tuple[int | None, bytes]:
    """One HTTP/1.0 request with an optional body; (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        head = f"{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Length: {len(body)}\r\n"
        if body:
            head += "Content-Type: application/octet-stream\r\n"
        s.sendall(head.encode() + b"\r\n" + body)
        chunks = []
        while True:
            d = s.recv(1 << 16)
            if not d:
                break
            chunks.append(d)
    raw = b"".join(chunks)
    m = re.match(rb"HTTP/\d\.\d (\d{3})", raw)
    return (int(m.group(1)) if m else None), raw.partition(b"\r\n\r\n")[2]


def check_response(c: Config, wl: str) -> str:
    """'ok' if one request of the workload returns what the app returns."""
    w = WORKLOADS[wl]
    body = b"a" * w.body
    try:
        st, got = http_request(front_port(c), w.method, w.path, body)
    except OSError as e:
        return f"error: {e}"
    if st != 200:
        return f"status {st}"
    if wl in ("hello", "asgi-hello"):
        ok = got == b"Hello, World!"
    elif wl in ("flask-json", "fastapi-json"):
        try:
            ok = json.loads(got) == {"message": "Hello, World!", "ok": True, "n": 42}
        except ValueError:
            ok = False
    elif wl == "flask-payload":
        ok = got == bytes(range(256)) * 256
    else:
        ok = got == body
    return "ok" if ok else f"unexpected body ({len(got)} bytes: {got[:40]!r})"


def one_run(c: Config, wl: str, rundir: str, a: argparse.Namespace, logdir: str,
            nginx: B.Nginx | None) -> dict[str, Any]:
    w = WORKLOADS[wl]
    proc, cmd = start_backend(c, wl, rundir, a, logdir)
    port = front_port(c)
    startup = B.wait_200(lambda: B.http_status("127.0.0.1", port, w.ready, 1.0), proc.t0,
                         timeout=a.startup_timeout)
    rec: dict[str, Any] = {"config": c.name, "workload": wl, "cmd": cmd, "startup_s": startup}
    if startup is None:
        rec["error"] = f"no 200 within {a.startup_timeout}s"
        rec["log_tail"] = _tail(proc.logfile)
        proc.stop()
        return rec
    time.sleep(0.5)
    rec["mem_idle"] = B.mem_tree(proc.pid)  # after startup, before any load
    rec["check"] = check_response(c, wl)
    script = B.wrk_script(rundir, w.method, w.body)
    url = url_for(c, w.path)
    if a.warmup:
        B.run_wrk(url, a.threads, a.conns, a.warmup, script)
    ng_pid = nginx.pid if nginx and c.front != "direct" else None
    sys0, wrk0 = B.system_cpu(), B.children_cpu()
    cpu0 = B.cpu_tree(proc.pid)
    ng0 = B.cpu_tree(ng_pid) if ng_pid else None
    res = B.run_wrk(url, a.threads, a.conns, a.duration, script)
    cpu1 = B.cpu_tree(proc.pid)
    ng1 = B.cpu_tree(ng_pid) if ng_pid else None
    sys1, wrk1 = B.system_cpu(), B.children_cpu()
    rec.update({k: v for k, v in res.items() if k != "raw"})
    rec["cpu"] = B.cpu_delta(cpu0, cpu1, res["requests"])
    if ng0 and ng1:
        rec["nginx_cpu"] = B.cpu_delta(ng0, ng1, res["requests"])
    # Machine-wide busy CPU in the window not spent by the backend, nginx or wrk: other
    # processes on the machine (interference), plus softirq/kernel work not charged to them.
    busy = sys1["busy_s"] - sys0["busy_s"]
    ours = rec["cpu"]["cpu_s"] + (rec.get("nginx_cpu") or {}).get("cpu_s", 0.0) + (wrk1 - wrk0)
    rec["machine"] = {"busy_s": round(busy, 3), "total_s": round(sys1["total_s"] - sys0["total_s"], 3),
                      "wrk_cpu_s": round(wrk1 - wrk0, 3), "other_cpu_s": round(busy - ours, 3),
                      "loadavg": os.getloadavg()[0]}
    rec["wrk_tail"] = res["raw"][-700:]
    rec["mem"] = B.mem_tree(proc.pid)
    rec["stop_s"] = proc.stop()
    rec["exit_code"] = proc.p.returncode
    rec["leftovers_killed"] = proc.leftovers_killed
    return rec


def _tail(path: str, n: int = 1500) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - n))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


# ------------------------------------------------------------------ summary
def _med(rs: list[dict[str, Any]], *keys: str) -> float | None:
    vals = []
    for r in rs:
        v: Any = r
        for k in keys:
            v = v.get(k) if isinstance(v, dict) else None
        vals.append(v)
    return B.median(vals)


def aggregate(recs: list[dict[str, Any]], configs: list[Config], workloads: list[str]) -> dict[str, Any]:
    """{workload: {config: medians...}} over the rounds that produced wrk numbers."""
    out: dict[str, Any] = {}
    for wl in workloads:
        out[wl] = {}
        for c in configs:
            all_rs = [r for r in recs if r["config"] == c.name and r["workload"] == wl]
            rs = [r for r in all_rs if r.get("rps") is not None]
            if not all_rs:
                continue
            rps = [r["rps"] for r in rs]
            cpus = [r["cpu"]["us_per_req"] for r in rs if r["cpu"]["us_per_req"]]
            pss = _med(rs, "mem", "pss_kib")
            rss = _med(rs, "mem", "rss_kib")
            out[wl][c.name] = {
                "n": len(rs), "failed_runs": len(all_rs) - len(rs),
                "rps": B.median(rps), "rps_min": min(rps) if rps else None,
                "rps_max": max(rps) if rps else None,
                "p50_ms": _med(rs, "p50_ms"), "p99_ms": _med(rs, "p99_ms"),
                "cpu_us": _med(rs, "cpu", "us_per_req"),
                "cpu_us_min": min(cpus, default=None),
                "cpu_us_max": max(cpus, default=None),
                "sys_pct": B.median([100 * r["cpu"]["sys_s"] / r["cpu"]["cpu_s"] for r in rs
                                     if r["cpu"]["cpu_s"]]),
                "nginx_cpu_us": _med(rs, "nginx_cpu", "us_per_req"),
                "pss_mib": pss / 1024 if pss is not None else None,
                "rss_mib": rss / 1024 if rss is not None else None,
                "idle_pss_mib": (_med(rs, "mem_idle", "pss_kib") or 0) / 1024,
                "procs": _med(rs, "mem", "procs"),
                "other_cpu_pct": B.median([100 * r["machine"]["other_cpu_s"] / r["machine"]["total_s"]
                                           for r in rs if r["machine"]["total_s"]]),
                "startup_s": _med(rs, "startup_s"),
                "non2xx": sum(r.get("non2xx") or 0 for r in rs),
                "sock_errs": sum(sum(r.get("sock_err", {}).values()) for r in rs),
                "requests": sum(r.get("requests") or 0 for r in rs),
                "checks": sorted({r.get("check", r.get("error", "?")) for r in all_rs}),
                "tree_changed": sum(1 for r in rs if r["cpu"]["tree_changed"]),
                "leftovers_killed": sum(r.get("leftovers_killed", 0) for r in all_rs),
            }
    return out


def _f(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def table_md(agg: dict[str, Any], configs: list[Config]) -> str:
    lines = []
    for wl, per in agg.items():
        lines += [f"### {wl}", "",
                  "| config | req/s | req/s min..max | p50 ms | p99 ms | CPU µs/req | CPU min..max | sys % "
                  "| nginx µs/req | PSS MiB | RSS MiB | procs | startup s | non-2xx | sock errs "
                  "| other CPU % | check | n |",
                  "|---|---:|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
        for c in configs:
            s = per.get(c.name)
            if not s:
                continue
            note = "" if not s["failed_runs"] else f" ({s['failed_runs']} failed)"
            lines.append(
                f"| {c.name} | {_f(s['rps'], '.0f')} | {_f(s['rps_min'], '.0f')}..{_f(s['rps_max'], '.0f')} "
                f"| {_f(s['p50_ms'], '.2f')} | {_f(s['p99_ms'], '.2f')} | {_f(s['cpu_us'], '.1f')} "
                f"| {_f(s['cpu_us_min'], '.1f')}..{_f(s['cpu_us_max'], '.1f')} | {_f(s['sys_pct'], '.0f')} "
                f"| {_f(s['nginx_cpu_us'], '.1f')} | {_f(s['pss_mib'], '.1f')} | {_f(s['rss_mib'], '.1f')} "
                f"| {_f(s['procs'], '.0f')} | {_f(s['startup_s'], '.2f')} | {s['non2xx']} | {s['sock_errs']} "
                f"| {_f(s['other_cpu_pct'], '.0f')} | {','.join(s['checks'])} | {s['n']}{note} |")
        lines.append("")
    return "\n".join(lines)


def _short(name: str) -> str:
    return name.replace("+nginx", "")


def best_of(agg: dict[str, Any], wl: str, base: str | tuple[str, ...]) -> str | None:
    """The baseline config: itself, or of a tuple the one with the highest req/s in wl among
    those that answered every request with 2xx (a path whose req/s counts nginx's 502s, as
    uWSGI's http11-socket behind nginx does, is not a "best path"); all of them if none did."""
    names = (base,) if isinstance(base, str) else base
    per = agg.get(wl, {})
    have = [(per[n].get("rps") or 0.0, n) for n in names if n in per and per[n].get("rps")]
    clean = [h for h in have if not per[h[1]].get("non2xx")]
    pool = clean or have
    return max(pool)[1] if pool else None


def ratios(agg: dict[str, Any], subject: str | None) -> tuple[list[str], list[dict[str, Any]]]:
    """Ratio lines (targets with PASS/MISS, then context ratios) and their records.
    subject None: every target whose subject was measured; else only that subject's."""
    lines: list[str] = []
    recs: list[dict[str, Any]] = []
    width = max((len(w) for w in agg), default=5)

    def ratio(wl: str, metric: str, subj: str, base: str | None) -> float | None:
        s, b = agg.get(wl, {}).get(subj), agg.get(wl, {}).get(base) if base else None
        if not s or not b or s.get(metric) is None or not b.get(metric):
            return None
        return float(s[metric]) / float(b[metric])

    def bname(wl: str, base: str | tuple[str, ...]) -> tuple[str | None, str]:
        b = best_of(agg, wl, base)
        if isinstance(base, str):
            return b, _short(base)
        return b, "best(" + "|".join(_short(n) for n in base) + ")" + (f"={_short(b)}" if b else "")

    measured = {c for per in agg.values() for c in per}
    def ran(base: str | tuple[str, ...]) -> bool:
        return any(n in measured for n in ((base,) if isinstance(base, str) else base))

    # a target counts when its subject and (one of) its baseline(s) were in the run
    targets = [t for t in ALL_TARGETS if (t.subject == subject if subject else t.subject in measured)
               and ran(t.baseline)]
    for t in targets:
        for wl in agg:
            if wl not in t.workloads:
                continue
            b, blabel = bname(wl, t.baseline)
            r = ratio(wl, t.metric, t.subject, b)
            head = f"{wl:<{width}}  {t.label:<7}  {_short(t.subject)}/{blabel}"
            if r is None:
                verdict = "N/A"
                lines.append(f"{head} = n/a (target {t.op} {t.value:.2f}x) N/A")
            else:
                ok = r >= t.value if t.op == ">=" else r <= t.value
                verdict = "PASS" if ok else "MISS"
                lines.append(f"{head} = {r:.2f}x (target {t.op} {t.value:.2f}x) {verdict}")
            recs.append({"workload": wl, "metric": t.metric, "subject": t.subject, "baseline": b,
                         "ratio": r, "op": t.op, "target": t.value, "verdict": verdict})
    ctx = []
    for metric, label, base, wls, subj in ALL_INFO:
        if subj not in measured or (subject and subj != subject):
            continue
        for wl in agg:
            if wl in wls:
                b, blabel = bname(wl, base)
                r = ratio(wl, metric, subj, b)
                if r is not None:
                    ctx.append(f"{wl:<{width}}  {label:<7}  {_short(subj)}/{blabel} = {r:.2f}x "
                               "(no target)")
                    recs.append({"workload": wl, "metric": metric, "subject": subj, "baseline": b,
                                 "ratio": r, "op": None, "target": None, "verdict": "info"})
    n_pass = sum(1 for r in recs if r["verdict"] == "PASS")
    n_miss = sum(1 for r in recs if r["verdict"] == "MISS")
    n_na = sum(1 for r in recs if r["verdict"] == "N/A")
    lines.append(f"targets: {n_pass} PASS, {n_miss} MISS" + (f", {n_na} N/A" if n_na else ""))
    return lines + ctx, recs


# ------------------------------------------------------------------ machine
def _version(cmd: list[str]) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"? ({e})"
    return ((p.stdout or "") + (p.stderr or "")).strip().splitlines()[0] if (p.stdout or p.stderr) else "?"


def _tree_hash(root: str) -> str:
    """sha256 over the .py files under root (path + content): identifies the code that ran,
    also when the working tree has uncommitted edits."""
    h = hashlib.sha256()
    for d, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                p = os.path.join(d, name)
                h.update(os.path.relpath(p, root).encode() + b"\0")
                with open(p, "rb") as f:
                    h.update(f.read())
    return h.hexdigest()[:16]


def machine_info(a: argparse.Namespace) -> dict[str, Any]:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.M)
            cpu = m.group(1) if m else "?"
    except OSError:
        pass
    vb = B.venv_bindir()
    commit = _version(["git", "-C", B.REPO, "rev-parse", "--short", "HEAD"])
    dirty = _version(["git", "-C", B.REPO, "status", "--porcelain", "--", "emperor"])
    return {
        "nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": _version([a.emperor_python, "--version"]),
        "uwsgi": _version([os.path.join(vb, "uwsgi"), "--version"]),
        "gunicorn": _version([os.path.join(vb, "gunicorn"), "--version"]),
        "nginx": _version([B.sbin("nginx"), "-v"]),
        "wrk": _version(["wrk", "--version"]),
        "flask": _version([os.path.join(vb, "python"), "-c", "import flask, importlib.metadata as m; "
                           "print(m.version('flask'), m.version('werkzeug'))"]),
        "asgi_stack": _version([os.path.join(vb, "python"), "-c", "import importlib.metadata as m\n"
                                "def v(n):\n try: return m.version(n)\n except Exception: return '-'\n"
                                "print(' '.join(n + '=' + v(n) for n in ('granian', 'uvicorn', 'httptools', "
                                "'uvloop', 'starlette', 'fastapi', 'gunicorn-h1c')))"]),
        "emperor_commit": commit + (" (emperor/ modified)" if dirty not in ("", "?") else ""),
        "emperor_tree_sha256": _tree_hash(os.path.join(B.REPO, "emperor")),
        # the optional C fast path of the vars parser (pure-Python fallback without it)
        "emperor_speedups": _version([a.emperor_python, "-c", "import emperor.protocol._speedups as m; "
                                      "print('C extension', m.__file__)"]),
        "nginx_workers": os.environ.get("BENCH_NGINX_WORKERS", "1"),
    }


def preflight(configs: list[Config], a: argparse.Namespace) -> list[Config]:
    """Drop configs whose program cannot even print --help (e.g. the project not installed)
    or whose program is not in the bench venv (e.g. setup.sh not re-run since an anchor was added)."""
    keep = []
    for c in configs:
        prog = c.template.split()[0].replace("{venv_bin}", B.venv_bindir())
        if prog.startswith("/") and not os.path.exists(prog):
            B.log(f"SKIPPING {c.name}: {prog} is not installed (run bench/setup.sh)")
            continue
        if "emperor.vassal" in c.template:
            cmd = [a.emperor_python, "-m", "emperor.vassal", "--help"]
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=B.APPS)
                ok, why = p.returncode == 0, (p.stderr or p.stdout).strip()[-300:]
            except (OSError, subprocess.TimeoutExpired) as e:
                ok, why = False, str(e)
            if not ok:
                B.log(f"SKIPPING {c.name}: `{' '.join(cmd)}` failed: {why}")
                continue
        keep.append(c)
    return keep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10, help="seconds of measured wrk load per run")
    ap.add_argument("--warmup", type=int, default=2, help="seconds of discarded wrk load before it")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--startup-timeout", type=float, default=30)
    ap.add_argument("--suite", default="wsgi", choices=list(SUITES),
                    help="preset of configs and workloads: wsgi (issue #2, the default), http (issue #12), "
                    "asgi (issue #14), http+asgi; --only/--workloads override it")
    ap.add_argument("--workloads", default="", help=f"comma list of {', '.join(WORKLOADS)}")
    ap.add_argument("--only", default="",
                    help="comma list of config names (built-in or --config); 'all' for every built-in")
    ap.add_argument("--config", action="append", default=[], help="'NAME|FRONT|TEMPLATE'")
    ap.add_argument("--subject", default="",
                    help="check only this config's targets (default: every target whose subject ran)")
    ap.add_argument("--emperor-python", default=B.venv_python(),
                    help="python with the project installed ({python} in templates; default: bench venv's)")
    ap.add_argument("--out", default="", help="output dir (default: bench/results/<timestamp>)")
    ap.add_argument("--summarize", default="", metavar="DIR",
                    help="measure nothing: recompute DIR's summary from its results.jsonl")
    a = ap.parse_args()
    if a.summarize:
        resummarize(a.summarize, a.subject or None)
        return

    configs = [Config(*t) for t in BUILTIN]
    for spec in a.config:
        name, front, tmpl = spec.split("|", 2)
        configs = [c for c in configs if c.name != name] + [Config(name, front, tmpl)]
    suite_configs, suite_workloads = SUITES[a.suite]
    a.only = a.only or ",".join(suite_configs)
    a.workloads = a.workloads or ",".join(suite_workloads)
    if a.only != "all":
        want = a.only.split(",")
        unknown = set(want) - {c.name for c in configs}
        if unknown:
            raise SystemExit(f"unknown config(s): {', '.join(sorted(unknown))}")
        configs = [c for c in configs if c.name in want]
        configs.sort(key=lambda c: want.index(c.name))
    workloads = a.workloads.split(",")
    for wl in workloads:
        if wl not in WORKLOADS:
            raise SystemExit(f"unknown workload {wl!r}; known: {', '.join(WORKLOADS)}")
    skipped = [c.name for c in configs]
    configs = preflight(configs, a)
    skipped = [n for n in skipped if n not in {c.name for c in configs}]
    rundir = B.make_rundir()
    out = a.out or os.path.join(B.HERE, "results", time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(out, exist_ok=True)
    logdir = os.path.join(rundir, "logs")
    os.makedirs(logdir, exist_ok=True)
    jl = os.path.join(out, "results.jsonl")
    B.log(f"run dir {rundir}, results {out}")
    n_runs = sum(1 for wl in workloads for c in configs if runs_workload(c, wl))
    est = a.rounds * n_runs * (a.duration + a.warmup + 3)
    B.log(f"{a.rounds} rounds x {n_runs} runs ({len(workloads)} workloads, {len(configs)} configs), "
          f"~{est / 60:.0f} min; load average {os.getloadavg()}")
    nginx = build_nginx(rundir, configs)
    meta = {"meta": True, "time": time.strftime("%Y-%m-%d %H:%M:%S"), "args": vars(a),
            "configs": [(c.name, c.front, c.template) for c in configs], "skipped": skipped,
            "machine": machine_info(a), "loadavg": os.getloadavg(),
            "uptime": _version(["uptime"])}
    B.dump_jsonl(jl, meta)
    recs: list[dict[str, Any]] = []
    try:
        for r in range(a.rounds):
            for wl in workloads:
                cs = [c for c in configs if runs_workload(c, wl)]
                k = r % len(cs) if cs else 0
                for c in cs[k:] + cs[:k]:
                    rec = one_run(c, wl, rundir, a, logdir, nginx)
                    rec["round"] = r
                    recs.append(rec)
                    B.dump_jsonl(jl, rec)
                    cpu = rec.get("cpu", {})
                    B.log(f"r{r} {wl:<13} {c.name:<20} rps={rec.get('rps')} p50={rec.get('p50_ms')} "
                          f"p99={rec.get('p99_ms')} cpu={_f(cpu.get('us_per_req'), '.1f')}us/req"
                          f"{' (tree changed)' if cpu.get('tree_changed') else ''} "
                          f"non2xx={rec.get('non2xx')} err={rec.get('sock_err')} check={rec.get('check')} "
                          f"start={_f(rec.get('startup_s'), '.3f')} "
                          f"pss={rec.get('mem', {}).get('pss_kib', 0) / 1024:.1f}MiB"
                          + (f" ERROR {rec['error']}" if "error" in rec else ""))
    finally:
        if nginx:
            nginx.stop()
    meta_end = {"meta_end": True, "time": time.strftime("%Y-%m-%d %H:%M:%S"), "loadavg": os.getloadavg(),
                "uptime": _version(["uptime"])}
    B.dump_jsonl(jl, meta_end)
    summarize(out, meta, meta_end, recs, configs, workloads, a.subject or None)


def summarize(out: str, meta: dict[str, Any], meta_end: dict[str, Any] | None, recs: list[dict[str, Any]],
              configs: list[Config], workloads: list[str], subject: str | None) -> None:
    """Medians, tables and ratio lines: printed, and written to summary.json / summary.md."""
    agg = aggregate(recs, configs, workloads)
    md = table_md(agg, configs)
    md = (f"load average before: {meta.get('uptime', meta.get('loadavg'))}; after: "
          f"{(meta_end or {}).get('uptime', (meta_end or {}).get('loadavg'))}\n\n") + md
    rlines, rrecs = ratios(agg, subject)
    if meta.get("skipped"):
        rlines.insert(0, f"skipped (did not start): {', '.join(meta['skipped'])}")
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump({"meta": meta, "meta_end": meta_end, "summary": agg, "ratios": rrecs}, f, indent=1)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(md + "\n```\n" + "\n".join(rlines) + "\n```\n")
    print(md)
    print("\n".join(rlines))
    B.log(f"wrote {out}/summary.json, summary.md")


def resummarize(out: str, subject: str | None) -> None:
    """Recompute summary.json/summary.md of an earlier run from its results.jsonl (e.g. after
    the targets changed); nothing is measured."""
    meta: dict[str, Any] = {}
    meta_end: dict[str, Any] | None = None
    recs: list[dict[str, Any]] = []
    with open(os.path.join(out, "results.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            if r.get("meta"):
                meta = r
            elif r.get("meta_end"):
                meta_end = r
            else:
                recs.append(r)
    configs = [Config(name, front, tmpl) for name, front, tmpl in meta["configs"]]
    workloads = list(dict.fromkeys(r["workload"] for r in recs))
    summarize(out, meta, meta_end, recs, configs, workloads, subject)


if __name__ == "__main__":
    main()
