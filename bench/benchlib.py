"""Shared helpers for the benchmark rig: venv lookup, run dirs, nginx, wrk,
process trees (RSS/PSS and CPU time from /proc), readiness polling.

Nothing here hard-codes a machine path: the venv comes from $BENCH_VENV
(default: <tmp>/emperor-bench-venv, outside the repo), scratch dirs from
$BENCH_TMP (default: the system temp dir), apps from ./apps next to this file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import IO, Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
APPS = os.path.join(HERE, "apps")
TMP = os.environ.get("BENCH_TMP") or tempfile.gettempdir()
VENV = os.environ.get("BENCH_VENV") or os.path.join(TMP, "emperor-bench-venv")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def venv_bin(name: str) -> str:
    p = os.path.join(VENV, "bin", name)
    if os.path.exists(p):
        return p
    w = shutil.which(name)
    if not w:
        raise SystemExit(f"cannot find {name!r} (looked in {VENV}/bin and PATH); run setup.sh")
    return w


def venv_bindir() -> str:
    d = os.path.join(VENV, "bin")
    return d if os.path.exists(os.path.join(d, "python")) else os.path.dirname(sys.executable)


def venv_python() -> str:
    return os.path.join(venv_bindir(), "python")


def sbin(name: str) -> str:
    for d in ("", "/usr/sbin/", "/usr/local/sbin/", "/sbin/"):
        p = shutil.which(name) if not d else d + name
        if p and os.path.exists(p):
            return p
    raise SystemExit(f"cannot find {name}; run setup.sh")


def make_rundir(prefix: str = "emperor-bench-") -> str:
    d = tempfile.mkdtemp(prefix=prefix, dir=TMP)
    os.chmod(d, 0o755)
    return d


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p: int = s.getsockname()[1]
    s.close()
    return p


def log(*a: object) -> None:
    print(time.strftime("%H:%M:%S"), *a, flush=True)


# ------------------------------------------------------------------ processes
class Proc:
    """A started command; stopped by signalling its own PID (and, as a last
    resort, the PIDs of its own descendants, collected before the signal)."""

    def __init__(self, cmd: str | list[str], logfile: str, env: Mapping[str, str] | None = None,
                 cwd: str | None = None, stop_signal: int = signal.SIGINT,
                 stamp: bool = False, t0: float | None = None) -> None:
        """stamp=True: every output line is written to logfile prefixed with
        '[+SECONDS]' relative to t0 (monotonic; default: start time) and also
        kept in self.lines as (t, text)."""
        self.cmd = cmd if isinstance(cmd, list) else shlex.split(cmd)
        self.logfile = logfile
        self.stop_signal = stop_signal
        self.fh: IO[bytes] = open(logfile, "ab")  # noqa: SIM115 - closed in stop()
        self.lines: list[tuple[float, str]] = []
        self.leftovers_killed = 0
        e = dict(os.environ)
        if env:
            e.update(env)
        self.t0 = time.monotonic()
        self.tref = t0 if t0 is not None else self.t0
        self.p = subprocess.Popen(self.cmd, stdout=subprocess.PIPE if stamp else self.fh,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  env=e, cwd=cwd, start_new_session=True)
        self.pid = self.p.pid
        if stamp:
            threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.p.stdout is not None
        for raw in iter(self.p.stdout.readline, b""):
            t = time.monotonic() - self.tref
            txt = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append((t, txt))
            try:
                self.fh.write(f"[+{t:.3f}] {txt}\n".encode())
                self.fh.flush()
            except ValueError:
                break

    def grep(self, needle: str) -> list[tuple[float, str]]:
        return [(t, ln) for t, ln in list(self.lines) if needle in ln]

    def alive(self) -> bool:
        return self.p.poll() is None

    def descendants(self) -> list[int]:
        return proc_descendants(self.pid)

    def stop(self, timeout: float = 15.0) -> float:
        """Returns seconds from the stop signal until the main PID exited.
        Descendants still alive 5 s after that are SIGKILLed by PID and counted
        in self.leftovers_killed (a backend should take its workers down)."""
        if not self.alive():
            self.fh.close()
            return 0.0
        kids = self.descendants()
        t = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, self.stop_signal)
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            self.p.wait(5)
        took = time.monotonic() - t
        # leftovers (e.g. workers orphaned by a SIGKILLed master): by PID only
        deadline = time.monotonic() + 5
        for pid in kids:
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if pid_alive(pid):
                self.leftovers_killed += 1
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.fh.close()
        return took


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the comm field: [0] is state (field 3)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None


def pid_alive(pid: int) -> bool:
    f = _stat_fields(pid)
    return f is not None and f[0] != "Z"


def proc_descendants(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            f = _stat_fields(int(d))
            if f:
                kids.setdefault(int(f[1]), []).append(int(d))
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def mem_tree(pid: int) -> dict[str, int]:
    """RSS / PSS / USS in KiB summed over pid and all descendants, plus count."""
    pids = [pid, *proc_descendants(pid)]
    tot = {"procs": 0, "rss_kib": 0, "pss_kib": 0, "uss_kib": 0}
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                txt = f.read()
        except OSError:
            continue
        vals = dict(re.findall(r"^(\w+):\s+(\d+) kB", txt, re.M))
        tot["procs"] += 1
        tot["rss_kib"] += int(vals.get("Rss", 0))
        tot["pss_kib"] += int(vals.get("Pss", 0))
        tot["uss_kib"] += int(vals.get("Private_Clean", 0)) + int(vals.get("Private_Dirty", 0))
    return tot


def cpu_tree(pid: int) -> dict[str, Any]:
    """CPU time (seconds) of pid and every live descendant, from /proc/PID/stat.

    Per process: utime + stime (fields 14, 15; all threads of the process)
    plus cutime + cstime (fields 16, 17: descendants it has already waited
    for). Summed over the live tree this counts every CPU second of the tree
    exactly once, also for workers that exited and were reaped by a process of
    the tree between two samples (their time moves from their own utime/stime
    into the parent's cutime/cstime). Zombies still report their own times.
    Returns {"cpu_s", "user_s", "sys_s", "pids"}."""
    user = sys_ = 0
    pids: list[int] = []
    for p in [pid, *proc_descendants(pid)]:
        f = _stat_fields(p)
        if f is None:
            continue
        # after "pid (comm) ": f[0]=state(3) ... f[11]=utime(14) f[12]=stime(15)
        # f[13]=cutime(16) f[14]=cstime(17)
        user += int(f[11]) + int(f[13])
        sys_ += int(f[12]) + int(f[14])
        pids.append(p)
    return {"cpu_s": (user + sys_) / CLK_TCK, "user_s": user / CLK_TCK,
            "sys_s": sys_ / CLK_TCK, "pids": sorted(pids)}


def cpu_delta(before: Mapping[str, Any], after: Mapping[str, Any], requests: int | None) -> dict[str, Any]:
    """CPU used between two cpu_tree() samples, and per request (µs)."""
    d = {k: round(after[k] - before[k], 4) for k in ("cpu_s", "user_s", "sys_s")}
    d["us_per_req"] = (d["cpu_s"] * 1e6 / requests) if requests else None
    d["tree_changed"] = before["pids"] != after["pids"]
    d["pids_before"] = len(before["pids"])
    d["pids_after"] = len(after["pids"])
    return d


def system_cpu() -> dict[str, float]:
    """Machine-wide CPU seconds from /proc/stat: busy (all but idle+iowait) and total."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    total = sum(vals[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    idle = vals[3] + vals[4]
    return {"busy_s": (total - idle) / CLK_TCK, "total_s": total / CLK_TCK}


def children_cpu() -> float:
    """CPU seconds of this process's waited-for children (e.g. wrk, after it returned)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


# ------------------------------------------------------------------ readiness
def read_to_eof(s: socket.socket) -> bytes:
    """Everything the peer sends until it closes (HTTP/1.0 replies, stats documents)."""
    parts = []
    while d := s.recv(65536):
        parts.append(d)
    return b"".join(parts)


def http_status(host: str, port: int, path: str = "/", timeout: float = 1.0) -> tuple[int | None, bytes]:
    """One HTTP/1.0 request; returns (status, body) or (None, error text)."""
    try:
        s = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        return None, str(e).encode()
    try:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        buf = read_to_eof(s)
    except OSError as e:
        return None, str(e).encode()
    finally:
        s.close()
    m = re.match(rb"HTTP/\d\.\d (\d{3})", buf)
    _head, _, body = buf.partition(b"\r\n\r\n")
    return (int(m.group(1)) if m else None), body


def wait_200(probe: Callable[[], tuple[int | None, Any]], t0: float, timeout: float = 30.0,
             interval: float = 0.01) -> float | None:
    """probe() -> (status, body). Returns seconds since t0 (monotonic) of the
    first 200, or None on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st, _body = probe()
        if st == 200:
            return time.monotonic() - t0
        time.sleep(interval)
    return None


# ------------------------------------------------------------------ nginx
NGINX_MAIN = """\
{user}worker_processes {workers};
daemon off;
master_process on;
pid {rundir}/nginx.pid;
error_log {rundir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_max_body_size 4m;
    client_body_buffer_size 2m;
    # A response up to 2 MiB stays in nginx's memory: with the default 8 x 4k buffers nginx wrote
    # every 64 KiB and 1 MiB answer to a temporary file and read it back (about 0.7 ms of its CPU per
    # 1 MiB echo on this rig, for every backend alike), which capped how far apart backends could be.
    proxy_buffers 32 64k;
    proxy_busy_buffers_size 128k;
    uwsgi_buffers 32 64k;
    uwsgi_busy_buffers_size 128k;
    client_body_temp_path {rundir}/nginx-tmp/body;
    proxy_temp_path {rundir}/nginx-tmp/proxy;
    uwsgi_temp_path {rundir}/nginx-tmp/uwsgi;
    fastcgi_temp_path {rundir}/nginx-tmp/fastcgi;
    scgi_temp_path {rundir}/nginx-tmp/scgi;
{servers}
}}
"""


def nginx_conf_dir() -> str:
    try:
        out = subprocess.run([sbin("nginx"), "-V"], capture_output=True, text=True).stderr
        m = re.search(r"--conf-path=(\S+)", out)
        if m:
            return os.path.dirname(m.group(1))
    except (OSError, SystemExit):
        pass
    return "/etc/nginx"


def uwsgi_params_include() -> str:
    p = os.path.join(nginx_conf_dir(), "uwsgi_params")
    if os.path.exists(p):
        return f"include {p};"
    return "\n".join(f"uwsgi_param {k} {v};" for k, v in [
        ("QUERY_STRING", "$query_string"), ("REQUEST_METHOD", "$request_method"),
        ("CONTENT_TYPE", "$content_type"), ("CONTENT_LENGTH", "$content_length"),
        ("REQUEST_URI", "$request_uri"), ("PATH_INFO", "$document_uri"),
        ("DOCUMENT_ROOT", "$document_root"), ("SERVER_PROTOCOL", "$server_protocol"),
        ("REQUEST_SCHEME", "$scheme"), ("HTTPS", "$https if_not_empty"),
        ("REMOTE_ADDR", "$remote_addr"), ("REMOTE_PORT", "$remote_port"),
        ("SERVER_PORT", "$server_port"), ("SERVER_NAME", "$server_name")])


def nginx_server(port: int, location_body: str, extra: str = "") -> str:
    return f"""    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
{extra}
        location / {{
{location_body}
        }}
    }}"""


def uwsgi_location(target: str) -> str:
    """target: 'unix:/path' or '127.0.0.1:port' (or an upstream name)."""
    return f"            {uwsgi_params_include()}\n            uwsgi_pass {target};"


def proxy_location(target: str) -> str:
    """target: 'unix:/path' or '127.0.0.1:port'."""
    t = f"http://unix:{target[5:]}:" if target.startswith("unix:") else f"http://{target}"
    return ("            proxy_set_header Host $host;\n"
            "            proxy_set_header X-Real-IP $remote_addr;\n"
            "            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
            "            proxy_set_header X-Forwarded-Proto $scheme;\n"
            f"            proxy_pass {t};")


def nginx_upstream(name: str, target: str, keepalive: int) -> str:
    """An upstream block with an idle keep-alive pool (target: 'unix:/path' or 'host:port')."""
    return f"""    upstream {name} {{
        server {target};
        keepalive {keepalive};
    }}"""


def proxy_keepalive_location(upstream: str) -> str:
    """proxy_pass to an upstream over HTTP/1.1 with connection reuse (the issue #12 set-up)."""
    return ("            proxy_http_version 1.1;\n"
            "            proxy_set_header Connection \"\";\n"
            "            proxy_set_header Host $host;\n"
            "            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
            "            proxy_set_header X-Forwarded-Proto $scheme;\n"
            f"            proxy_pass http://{upstream};")


class Nginx:
    def __init__(self, rundir: str, servers: Iterable[str], workers: str | int | None = None,
                 extra_http: str = "") -> None:
        self.rundir = rundir
        workers = workers or os.environ.get("BENCH_NGINX_WORKERS", "1")
        os.makedirs(os.path.join(rundir, "nginx-tmp"), exist_ok=True)
        user = ""
        if os.geteuid() == 0:
            import pwd
            user = f"user {pwd.getpwuid(0).pw_name};\n"
        conf = NGINX_MAIN.format(user=user, workers=workers, rundir=rundir,
                                 servers=extra_http + "\n".join(servers))
        self.conf = os.path.join(rundir, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.proc: Proc | None = None

    def start(self) -> Nginx:
        ng = sbin("nginx")
        errlog = os.path.join(self.rundir, "nginx-error.log")
        r = subprocess.run([ng, "-t", "-p", self.rundir, "-c", self.conf, "-e", errlog],
                           capture_output=True, text=True)
        if r.returncode:
            raise SystemExit("nginx -t failed:\n" + r.stderr)
        self.proc = Proc([ng, "-p", self.rundir, "-c", self.conf, "-e", errlog],
                         os.path.join(self.rundir, "nginx.out"), stop_signal=signal.SIGQUIT)
        time.sleep(0.3)
        if not self.proc.alive():
            raise SystemExit(f"nginx died; see {errlog}")
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()


# ------------------------------------------------------------------ wrk
_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(txt: str) -> float | None:
    m = re.match(r"([\d.]+)(us|ms|s|m|h)$", txt)
    return float(m.group(1)) * _UNIT[m.group(2)] if m else None


def parse_wrk(out: str) -> dict[str, Any]:
    r: dict[str, Any] = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    r["rps"] = float(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in ([\d.]+\w+), ([\d.]+\w+) read", out)
    r["requests"] = int(m.group(1)) if m else None
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        r[f"p{pct}_ms"] = _ms(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    r["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["sock_err"] = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups()),
                             strict=True)) if m else {}
    m = re.search(r"Transfer/sec:\s+(\S+)", out)
    r["transfer_per_s"] = m.group(1) if m else None
    return r


def wrk_script(rundir: str, method: str = "GET", body_bytes: int = 0) -> str | None:
    if method == "GET" and not body_bytes:
        return None
    path = os.path.join(rundir, f"wrk-{method}-{body_bytes}.lua")
    with open(path, "w") as f:
        f.write(f'wrk.method = "{method}"\n')
        if body_bytes:
            f.write(f'wrk.body = string.rep("a", {body_bytes})\n')
            f.write('wrk.headers["Content-Type"] = "application/octet-stream"\n')
    return path


def run_wrk(url: str, threads: int = 2, conns: int = 64, duration: int = 10, script: str | None = None,
            timeout_s: int = 5) -> dict[str, Any]:
    """One bounded wrk run (wrk stops itself after `duration`; we kill it after duration + 60 s)."""
    cmd = [path_bin("wrk"), f"-t{threads}", f"-c{conns}", f"-d{duration}s",
           "--latency", "--timeout", f"{timeout_s}s"]
    if script:
        cmd += ["-s", script]
    cmd.append(url)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    res = parse_wrk(p.stdout)
    res["raw"] = p.stdout[-2000:]
    return res


def path_bin(name: str) -> str:
    w = shutil.which(name)
    if not w:
        raise SystemExit(f"{name} not found; run setup.sh")
    return w


def median(xs: Iterable[float | int | None]) -> float | None:
    ys = sorted(x for x in xs if x is not None)
    if not ys:
        return None
    n = len(ys)
    return float(ys[n // 2]) if n % 2 else (ys[n // 2 - 1] + ys[n // 2]) / 2


def dump_jsonl(path: str, rec: Mapping[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")
