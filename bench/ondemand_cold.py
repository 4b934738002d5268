"""Cold start of on-demand vassals and mass bring-up, emperor against uWSGI (issue #13).

Measures, in one run and on the same machine:

1. ``import``: wall time of ``python -c "import emperor.vassal.master"`` (median of N), the
   vassal runtime's import cost (the part lazy imports can cut);
2. ``first-byte``: an emperor with ``emperor-on-demand-directory`` and N hello (or Flask)
   vassals that have no process yet: for each vassal, connect to its socket, send one uwsgi
   request and time until the first byte of the answer (sequential, one vassal at a time);
3. ``cpu``: CPU seconds a standalone vassal (master + worker) spends until its first answer;
4. ``bring-up``: N ordinary vassals symlinked into an empty, watched directory at once: time
   from the first symlink until every one answers 200 on its socket.

Each for ``emperor`` (this tree's ``python -m emperor``: vassals forked from its template),
``emperor-exec`` (the same with ``emperor-template = false``: every vassal a fresh interpreter)
and ``uwsgi`` (``$BENCH_VENV/bin/uwsgi`` when bench/setup.sh installed it). The on-demand run
also reports the CPU (user + sys) of each woken vassal's process tree when its first answer
has arrived. Everything on Unix sockets in a scratch dir; processes are
stopped by their own pid. Usage::

    .venv/bin/python bench/ondemand_cold.py [--vassals 10] [--bringup 100] [--app hello|flask]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from uwsgi_wire import pack_request  # noqa: E402

APPS = {"hello": HERE / "apps" / "hello.py", "flask": HERE / "apps" / "flaskapp.py"}


def uwsgi_binary() -> str | None:
    venv = os.environ.get("BENCH_VENV", os.path.join(tempfile.gettempdir(), "emperor-bench-venv"))
    path = os.path.join(venv, "bin", "uwsgi")
    return path if os.access(path, os.X_OK) else shutil.which("uwsgi")


def request_bytes() -> bytes:
    return pack_request([("REQUEST_METHOD", "GET"), ("PATH_INFO", "/"), ("QUERY_STRING", ""),
                         ("SERVER_NAME", "localhost"), ("SERVER_PORT", "80"), ("SERVER_PROTOCOL", "HTTP/1.1"),
                         ("REMOTE_ADDR", "127.0.0.1"), ("HTTP_HOST", "localhost")])


def first_byte(path: str, timeout: float = 30.0) -> float:
    """Seconds from connect() to the first byte of the answer; raises if nothing comes."""
    t0 = time.monotonic()
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(request_bytes())
        if not s.recv(1):
            raise ConnectionError(f"{path}: closed without an answer")
        took = time.monotonic() - t0
        while s.recv(65536):
            pass
    return took


def answers(path: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2.0)
            s.connect(path)
            s.sendall(request_bytes())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            return b" 200 " in data.split(b"\r\n", 1)[0]
    except OSError:
        return False


def import_time(python: str, rounds: int) -> float:
    out = []
    for _ in range(rounds):
        t0 = time.monotonic()
        subprocess.run([python, "-c", "import emperor.vassal.master"], check=True)
        out.append(time.monotonic() - t0)
    return statistics.median(out)


class Server:
    """An emperor (ours or uWSGI's) over a scratch directory, stopped by pid."""

    def __init__(self, kind: str, root: Path, extra: list[str]) -> None:
        self.kind, self.root = kind, root
        self.vassals = root / "vassals"
        self.vassals.mkdir(parents=True)
        log = open(root / f"{kind}.log", "wb")  # noqa: SIM115 - closed in stop()
        if kind.startswith("emperor"):
            if kind == "emperor-exec":
                extra = [*extra, "emperor-template = false"]
            ini = root / "emperor.ini"
            ini.write_text("\n".join(["[uwsgi]", f"emperor = {self.vassals}", *extra, ""]))
            env = dict(os.environ, XDG_RUNTIME_DIR=str(root))
            argv = [sys.executable, "-m", "emperor", "--ini", str(ini)]
        else:
            binary = uwsgi_binary()
            assert binary
            argv = [binary, "--emperor", str(self.vassals), "--emperor-freq", "1"]
            for line in extra:
                key, _, value = line.partition("=")
                argv += [f"--{key.strip()}", value.strip()]
            env = dict(os.environ)
        self.log = log
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        time.sleep(0.5)

    def vassal(self, name: str, app: Path, sock: str | None, extra: str = "") -> str:
        lines = ["[uwsgi]", f"wsgi-file = {app}", f"chdir = {app.parent}", "processes = 1",
                 "disable-logging = true"]
        if sock:
            lines.append(f"socket = {sock}")
        if self.kind == "uwsgi":
            lines.append("master = true")
        return "\n".join([*lines, extra, ""])

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGINT if self.kind == "uwsgi" else signal.SIGTERM)
            self.proc.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(5)
        self.log.close()


def tree_cpu(pids: set[int]) -> float:
    """CPU seconds (user + sys) of these processes and their descendants."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            top = psutil.Process(pid)
            for p in [top, *top.children(recursive=True)]:
                t = p.cpu_times()
                total += t.user + t.system
        except psutil.Error:
            pass
    return total


def template_cpu(emperor: object) -> float:
    """CPU seconds of our emperor's template process, with its reaped children (the intermediates)."""
    import psutil

    assert isinstance(emperor, psutil.Process)
    for c in emperor.children():
        try:
            if c.name() == "emperor-tpl":
                t = c.cpu_times()
                return t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return 0.0


def bench_first_byte(kind: str, n: int, app: Path, cpu: list[float] | None = None) -> list[float]:
    """Connect-to-first-byte of each on-demand vassal; ``cpu`` gets each woken vassal's CPU seconds."""
    import psutil

    root = Path(tempfile.mkdtemp(prefix=f"odc-{kind}-"))
    od = root / "od"
    od.mkdir()
    srv = Server(kind, root, [f"emperor-on-demand-directory = {od}"])
    try:
        for i in range(n):
            text = srv.vassal(f"v{i}", app, None, "idle = 60\ndie-on-idle = true")
            (srv.vassals / f"v{i}.ini").write_text(text)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all((od / f"v{i}.socket").exists() for i in range(n)):
            time.sleep(0.05)
        time.sleep(1.0)  # let the emperor settle (uWSGI scans every second here)
        emperor = psutil.Process(srv.proc.pid)
        out = []
        for i in range(n):
            before = {p.pid for p in emperor.children()}
            spent = template_cpu(emperor)
            out.append(first_byte(str(od / f"v{i}.socket")))
            if cpu is not None:  # the template's forks (its reaped intermediates too) count as well
                cpu.append(tree_cpu({p.pid for p in emperor.children()} - before)
                           + template_cpu(emperor) - spent)
        return out
    finally:
        srv.stop()
        shutil.rmtree(root, ignore_errors=True)


def bench_bringup(kind: str, n: int, app: Path) -> float:
    root = Path(tempfile.mkdtemp(prefix=f"odb-{kind}-"))
    avail = root / "avail"
    avail.mkdir()
    srv = Server(kind, root, [])
    try:
        socks = [str(root / f"s{i}.sock") for i in range(n)]
        for i in range(n):
            (avail / f"v{i}.ini").write_text(srv.vassal(f"v{i}", app, socks[i]))
        t0 = time.monotonic()
        for i in range(n):
            (srv.vassals / f"v{i}.ini").symlink_to(avail / f"v{i}.ini")
        pending = set(socks)
        deadline = t0 + 120
        while pending and time.monotonic() < deadline:
            for s in list(pending):
                if os.path.exists(s) and answers(s):
                    pending.discard(s)
            time.sleep(0.02)
        if pending:
            raise TimeoutError(f"{kind}: {len(pending)} of {n} vassals never answered")
        return time.monotonic() - t0
    finally:
        srv.stop()
        shutil.rmtree(root, ignore_errors=True)


def cpu_to_first_answer(kind: str, app: Path, rounds: int) -> float:
    """CPU seconds (user + sys, master and workers) a standalone vassal spends until it has answered
    its first request: unlike wall times, hardly changed by other load on the machine."""
    import psutil

    out = []
    for _ in range(rounds):
        root = Path(tempfile.mkdtemp(prefix=f"odcpu-{kind}-"))
        sock = str(root / "s.sock")
        if kind.startswith("emperor"):
            argv = [sys.executable, "-m", "emperor.vassal", "--socket", sock, "--wsgi-file", str(app),
                    "--chdir", str(app.parent), "--processes", "1", "--disable-logging", "true"]
        else:
            argv = [str(uwsgi_binary()), "--socket", sock, "--wsgi-file", str(app), "--chdir",
                    str(app.parent), "--processes", "1", "--master", "--disable-logging"]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + 30
            while not (os.path.exists(sock) and answers(sock)):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{kind}: no answer")
                time.sleep(0.005)
            master = psutil.Process(proc.pid)
            total = 0.0
            for p in [master, *master.children(recursive=True)]:
                t = p.cpu_times()
                total += t.user + t.system
            out.append(total)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            shutil.rmtree(root, ignore_errors=True)
    return statistics.median(out)


def summary(xs: list[float]) -> str:
    xs = sorted(xs)
    p90 = xs[min(len(xs) - 1, round(0.9 * (len(xs) - 1)))]
    ms = [statistics.median(xs) * 1000, p90 * 1000, xs[-1] * 1000]
    return "median {:.0f} ms, p90 {:.0f} ms, max {:.0f} ms".format(*ms)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vassals", type=int, default=10, help="on-demand vassals for first-byte")
    ap.add_argument("--bringup", type=int, default=100, help="vassals symlinked at once (0: skip)")
    ap.add_argument("--app", choices=sorted(APPS), default="hello")
    ap.add_argument("--only", default="emperor,emperor-exec,uwsgi")
    ap.add_argument("--import-rounds", type=int, default=10)
    args = ap.parse_args()
    app = APPS[args.app]
    kinds = [k for k in args.only.split(",") if k != "uwsgi" or uwsgi_binary()]
    imp = import_time(sys.executable, args.import_rounds) * 1000
    bare = statistics.median(_bare(sys.executable) for _ in range(5)) * 1000
    print(f"import emperor.vassal.master: median {imp:.0f} ms (python -c pass: {bare:.0f} ms)")
    for kind in kinds:
        if kind == "emperor-exec":
            continue  # the same standalone vassal as "emperor"
        cpu = cpu_to_first_answer(kind, app, max(3, args.import_rounds // 2))
        print(f"{kind}: standalone {args.app} vassal, CPU to its first answer: median {cpu * 1000:.0f} ms")
    first_byte: dict[str, float] = {}
    bringup: dict[str, float] = {}
    for kind in kinds:
        woken: list[float] = []
        fb = bench_first_byte(kind, args.vassals, app, woken)
        first_byte[kind] = statistics.median(fb)
        print(f"{kind}: on-demand {args.app} vassal, connect to first byte ({args.vassals} vassals): "
              f"{summary(fb)}; its CPU by then: median {statistics.median(woken) * 1000:.0f} ms")
    if args.bringup:
        for kind in kinds:
            bringup[kind] = bench_bringup(kind, args.bringup, app)
            print(f"{kind}: {args.bringup} {args.app} vassals symlinked at once, all answering in "
                  f"{bringup[kind]:.2f} s")
    # issue #13: cold start and bring-up no slower than uWSGI's in the same run
    for what, got in ((f"on-demand {args.app} first byte (median)", first_byte),
                      (f"{args.bringup} {args.app} vassals all answering", bringup)):
        if "emperor" in got and "uwsgi" in got:
            ratio = got["emperor"] / got["uwsgi"]
            print(f"target: {what}: emperor/uwsgi = {ratio:.2f}x (target <= 1.00x) "
                  f"{'PASS' if ratio <= 1.0 else 'MISS'}")
    return 0


def _bare(python: str) -> float:
    t0 = time.monotonic()
    subprocess.run([python, "-c", "pass"], check=True)
    return time.monotonic() - t0


if __name__ == "__main__":
    raise SystemExit(main())
