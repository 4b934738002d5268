"""A real nginx (the Debian package) in front of uwsgi backends, one per test.

Why real nginx: it is the client the vassal must satisfy (uwsgi_params,
buffering, 502 on refused sockets). Everything nginx writes (pid, logs, temp
files, config) stays under the test's directory; it listens on 127.0.0.1 only,
on free ports, in the foreground (``daemon off``) so we own its pid.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from . import procs as _procs
from .procs import Proc, ProcGroup, free_port, wait_for, wait_for_socket

UWSGI_PARAMS_FILE = Path("/etc/nginx/uwsgi_params")


def nginx_binary() -> str:
    """``$NGINX`` or the Debian path or PATH; skip-worthy error if none."""
    for cand in (os.environ.get("NGINX"), "/usr/sbin/nginx", shutil.which("nginx")):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise FileNotFoundError("nginx not found (apt-get install nginx, or set $NGINX)")


def uwsgi_params_directive() -> str:
    """``include /etc/nginx/uwsgi_params;``: the packaged file, as a real deployment uses it
    (Debian's adds ``HTTP_HOST $host``; see the protocol notes §5)."""
    if not UWSGI_PARAMS_FILE.exists():
        raise FileNotFoundError(f"{UWSGI_PARAMS_FILE} is missing (it ships with the nginx package)")
    return f"include {UWSGI_PARAMS_FILE};"


def upstream_target(upstream: str | Path | tuple[str, int]) -> str:
    """Normalise a backend for ``uwsgi_pass``: Path/'/x.sock' -> 'unix:/x.sock', (h, p) -> 'h:p'."""
    if isinstance(upstream, tuple):
        host, port = upstream
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    s = os.fspath(upstream)
    return "unix:" + s if s.startswith("/") else s


@dataclass
class Server:
    """One ``server{}`` block: a loopback port and its locations."""

    port: int
    host: str = "127.0.0.1"
    extra: str = ""
    auto_port: bool = True
    locations: list[tuple[str, str]] = field(default_factory=list)

    def render(self) -> str:
        listen = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        locs = "".join(
            f"        location {path} {{\n{_indent(body, 12)}\n        }}\n" for path, body in self.locations
        )
        return (
            f"    server {{\n        listen {listen};\n        server_name localhost;\n"
            f"{_indent(self.extra, 8)}\n{locs}    }}\n"
        )


def _indent(text: str, n: int) -> str:
    return "\n".join(" " * n + ln.strip() if ln.strip() else "" for ln in text.strip("\n").splitlines())


class Nginx:
    """Configure with ``add_uwsgi``/``add_location``/``add_server``/``add_upstream``, then ``start()``.

    >>> ng = Nginx(tmp_path)
    >>> ng.add_uwsgi("/", "unix:/tmp/x/app.sock")
    >>> ng.add_uwsgi("/tcp/", ("127.0.0.1", 9000))
    >>> ng.start(); status, headers, body = http_get(ng.url("/"))
    """

    def __init__(
        self,
        tmp_path: str | os.PathLike[str],
        port: int | None = None,
        host: str = "127.0.0.1",
        group: ProcGroup | None = None,
        extra_http: str = "",
        worker_processes: int = 1,
    ) -> None:
        self.dir = Path(tmp_path)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.group = group
        self.extra_http = extra_http
        self.worker_processes = worker_processes
        self.servers: list[Server] = []
        self.upstreams: list[tuple[str, str]] = []
        self.proc: Proc | None = None
        self.conf_path = self.dir / "nginx.conf"
        self.error_log_path = self.dir / "error.log"
        self.access_log_path = self.dir / "access.log"
        self.add_server(port=port, host=host)

    # ---------------------------------------------------------- config
    @property
    def port(self) -> int:
        """Port of the first (default) server."""
        return self.servers[0].port

    def add_server(self, port: int | None = None, host: str = "127.0.0.1", extra: str = "") -> Server:
        """Another ``server{}`` on its own loopback port (free one unless given)."""
        srv = Server(port or free_port(host), host, extra, auto_port=port is None)
        self.servers.append(srv)
        return srv

    def add_location(self, location: str, body: str, server: Server | None = None) -> None:
        """A raw ``location`` block (``location`` may carry a modifier, e.g. ``= /x``)."""
        (server or self.servers[0]).locations.append((location, body))

    def add_uwsgi(
        self,
        location: str = "/",
        upstream: str | Path | tuple[str, int] = "",
        extra: str = "",
        server: Server | None = None,
    ) -> None:
        """``location`` -> ``uwsgi_pass upstream`` with uwsgi_params; ``extra`` goes inside the block
        (e.g. ``uwsgi_modifier1 30;`` or ``uwsgi_request_buffering off;``)."""
        if not upstream:
            raise ValueError("add_uwsgi needs an upstream")
        body = f"{uwsgi_params_directive()}\nuwsgi_pass {upstream_target(upstream)};\n{extra}"
        self.add_location(location, body, server)

    def add_proxy(
        self,
        location: str = "/",
        upstream: str | Path | tuple[str, int] = "",
        extra: str = "",
        server: Server | None = None,
        keepalive: bool = True,
    ) -> None:
        """``location`` -> ``proxy_pass http://upstream`` (an HTTP backend: http-socket). With
        ``keepalive`` the location speaks HTTP/1.1 with an empty Connection header, which is what
        an ``upstream { keepalive N; }`` needs to reuse connections."""
        if not upstream:
            raise ValueError("add_proxy needs an upstream")
        body = f"proxy_pass http://{upstream_target(upstream)};\n"
        if keepalive:
            body += 'proxy_http_version 1.1;\nproxy_set_header Connection "";\n'
        body += "proxy_set_header Host $host;\n" + extra
        self.add_location(location, body, server)

    def add_upstream(self, name: str, servers: list[str | Path | tuple[str, int]], extra: str = "") -> str:
        """An ``upstream name {}`` block; pass ``name`` as an add_uwsgi or add_proxy upstream."""
        lines = [f"server {upstream_target(s)};" for s in servers]
        self.upstreams.append((name, "\n".join([*lines, extra])))
        return name

    def config_text(self) -> str:
        d = self.dir
        user = "user root;\n" if os.geteuid() == 0 else ""
        ups = "".join(f"    upstream {n} {{\n{_indent(b, 8)}\n    }}\n" for n, b in self.upstreams)
        return (
            f"{user}daemon off;\nmaster_process on;\nworker_processes {self.worker_processes};\n"
            f"pid {d}/nginx.pid;\nerror_log {self.error_log_path} info;\n"
            "events { worker_connections 1024; }\n"
            "http {\n"
            f"    access_log {self.access_log_path};\n"
            "    client_max_body_size 8m;\n"
            "    uwsgi_next_upstream off;\n"
            f"    client_body_temp_path {d}/tmp/body;\n    proxy_temp_path {d}/tmp/proxy;\n"
            f"    uwsgi_temp_path {d}/tmp/uwsgi;\n    fastcgi_temp_path {d}/tmp/fastcgi;\n"
            f"    scgi_temp_path {d}/tmp/scgi;\n"
            f"{_indent(self.extra_http, 4)}\n{ups}" + "".join(s.render() for s in self.servers) + "}\n"
        )

    def write_config(self) -> Path:
        (self.dir / "tmp").mkdir(exist_ok=True)
        self.conf_path.write_text(self.config_text())
        return self.conf_path

    def _argv(self, *extra: str) -> list[str]:
        d = self
        return [nginx_binary(), "-p", str(d.dir), "-e", str(d.error_log_path), "-c", str(d.conf_path), *extra]

    def check_config(self) -> None:
        """``nginx -t``; raises with nginx's own message if the config is bad."""
        self.write_config()
        r = subprocess.run(self._argv("-t"), capture_output=True, text=True, timeout=30)
        if r.returncode:
            raise RuntimeError(f"nginx -t failed for {self.conf_path}:\n{r.stderr}\n{self.config_text()}")

    # ---------------------------------------------------------- lifecycle
    def start(self, timeout: float = 10.0, retries: int = 3) -> Nginx:
        """Start and poll until every server port accepts; re-pick free ports if one was taken meanwhile."""
        for attempt in range(retries):
            self.check_config()
            log_mark = self.error_log_path.stat().st_size if self.error_log_path.exists() else 0
            if self.group is not None:
                self.proc = self.group.start(self._argv(), name="nginx", stop_signal=signal.SIGQUIT)
            else:
                self.proc = _procs.start(self._argv(), log_path=self.dir / "nginx.out", name="nginx")
            try:
                for s in self.servers:
                    wait_for_socket((s.host, s.port), timeout, proc=self.proc)
                wait_for(lambda: _procs.descendants(self.proc.pid), timeout, what="an nginx worker",  # type: ignore[union-attr]
                         proc=self.proc)
                self.proc.snapshot()
                return self
            except AssertionError:
                err = self.error_log(log_mark)
                self.stop()
                if "Address already in use" in err and attempt + 1 < retries:
                    for s in self.servers:
                        if s.auto_port:
                            s.port = free_port(s.host)
                    continue
                raise AssertionError(f"nginx did not come up; error log:\n{err}") from None
        raise AssertionError("unreachable")

    def reload(self, timeout: float = 10.0) -> None:
        """Rewrite the config and SIGHUP; wait until the old workers are replaced."""
        assert self.proc is not None and self.proc.alive(), "nginx is not running"
        self.check_config()
        old = set(_procs.descendants(self.proc.pid))
        os.kill(self.proc.pid, signal.SIGHUP)
        wait_for(lambda: (set(_procs.descendants(self.proc.pid)) - old), timeout,  # type: ignore[union-attr]
                 what="new nginx workers", proc=self.proc)
        self.proc.snapshot()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGQUIT (graceful) to our master pid, then SIGKILL to its process group after ``timeout``."""
        if self.proc is not None:
            _procs.stop(self.proc, signal.SIGQUIT, timeout)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    # ---------------------------------------------------------- use
    def url(self, path: str = "/", server: Server | None = None) -> str:
        s = server or self.servers[0]
        host = f"[{s.host}]" if ":" in s.host else s.host
        return f"http://{host}:{s.port}{path}"

    def error_log(self, after: int = 0) -> str:
        try:
            with open(self.error_log_path, "rb") as f:
                f.seek(after)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def error_log_size(self) -> int:
        return self.error_log_path.stat().st_size if self.error_log_path.exists() else 0

    def access_log(self) -> str:
        return self.access_log_path.read_text("utf-8", "replace") if self.access_log_path.exists() else ""

    def grep_error_log(self, pattern: str) -> list[str]:
        rx = re.compile(pattern)
        return [ln for ln in self.error_log().splitlines() if rx.search(ln)]
