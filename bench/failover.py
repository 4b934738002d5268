#!/usr/bin/env python3
"""Failover of the dynamic fleet (issue #15's measure), on loopback.

Two emperors play two hosts (one vassal each, bench/apps/hello.py, on its own TCP port),
registered in a private etcd member (emperor-etcd, TTL --ttl); `emperor upstreams` renders
nginx's upstream and reloads nginx; a bounded Python client (--threads threads, HTTP/1.0
GETs) runs through nginx for --duration s. Emperor A is SIGKILLed at --kill-at s and
started again at --restart-at s. Reported: requests and failed requests, p50/p99 overall
and in the window [kill - 1 s, kill + TTL + 2 s], seconds from the kill until A's address
leaves the rendered file, and seconds from A's vassal answering again until it is back in
the file. Targets: 0 failed idempotent requests, out within TTL + 1 s, back within 1 s.

  $BENCH_VENV/bin/python bench/failover.py                 # 30 s, kill at 10, restart at 20
  bench/failover.py --json results.jsonl                   # also append the record

Needs etcd (Debian's etcd-server) and the package's `fleet` extra (etcd3gw) in the venv.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any

import benchlib as bl

HERE = os.path.dirname(os.path.abspath(__file__))


def start(cmd: list[str], logfile: str) -> subprocess.Popen[bytes]:
    with open(logfile, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def stop(p: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if p.poll() is None:
        os.kill(p.pid, sig)
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)


def wait(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except OSError:
            pass
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {what}")


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--kill-at", type=float, default=10)
    ap.add_argument("--restart-at", type=float, default=20)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--ttl", type=int, default=3)
    ap.add_argument("--python", default=sys.executable, help="the interpreter with emperor[fleet]")
    ap.add_argument("--json", help="append the result record to this JSONL file")
    args = ap.parse_args()
    etcd_bin = shutil.which("etcd") or "/usr/bin/etcd"
    if not os.path.exists(etcd_bin):
        raise SystemExit("etcd is not installed (apt install etcd-server)")
    run = bl.make_rundir("emperor-failover-")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        cport, pport = bl.free_port(), bl.free_port()
        etcd_url = f"http://127.0.0.1:{cport}"
        procs.append(start([etcd_bin, "--name", "m0", "--data-dir", f"{run}/etcd",
                            "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
                            "--listen-peer-urls", f"http://127.0.0.1:{pport}",
                            "--initial-advertise-peer-urls", f"http://127.0.0.1:{pport}",
                            "--initial-cluster", f"m0=http://127.0.0.1:{pport}", "--log-level", "warn"],
                           f"{run}/etcd.log"))
        wait(lambda: b"true" in urllib.request.urlopen(f"{etcd_url}/health", timeout=1).read(), 20, "etcd")

        ports, inis = [bl.free_port(), bl.free_port()], []
        for host, port in zip("ab", ports, strict=True):
            vdir = f"{run}/{host}/vassals"
            os.makedirs(vdir)
            with open(f"{vdir}/app.ini", "w") as f:
                f.write(f"[uwsgi]\nsocket = 127.0.0.1:{port}\nwsgi-file = {HERE}/apps/hello.py\n"
                        "processes = 2\nfleet-app = app\n")
            ini = f"{run}/{host}/emperor.ini"
            with open(ini, "w") as f:
                f.write(f"[uwsgi]\nemperor = {vdir}\nemperor-etcd = {etcd_url}\n"
                        f"emperor-etcd-ttl = {args.ttl}\nemperor-control = ipc://{run}/{host}.ctl\n")
            inis.append(ini)
        emperors = [start([args.python, "-m", "emperor", "--ini", ini], f"{run}/emperor-{h}.log")
                    for h, ini in zip("ab", inis, strict=True)]
        procs += emperors

        out, listen = f"{run}/upstreams.conf", bl.free_port()
        conf = f"{run}/nginx.conf"
        with open(conf, "w") as f:
            f.write(f"daemon off;\nworker_processes 1;\npid {run}/nginx.pid;\nerror_log {run}/nginx.err;\n"
                    "events { worker_connections 1024; }\n"
                    f"http {{\n    access_log off;\n    include {out};\n"
                    + bl.nginx_server(listen, bl.uwsgi_location("app")
                                      + "\n            uwsgi_next_upstream error timeout;\n"
                                      "            uwsgi_connect_timeout 1s;") + "\n}\n")
        nginx = [bl.sbin("nginx"), "-p", run, "-c", conf]
        procs.append(start([args.python, "-m", "emperor", "upstreams", "--etcd", etcd_url, "--out", out,
                            "--exec", " ".join([*nginx, "-s", "reload"])], f"{run}/upstreams.log"))
        addr = [f"127.0.0.1:{p}" for p in ports]
        wait(lambda: os.path.exists(out) and all(a in read(out) for a in addr), 30, "both rendered")
        procs.append(start(nginx, f"{run}/nginx.log"))
        wait(lambda: bl.http_status("127.0.0.1", listen)[0] == 200, 20, "nginx answering")

        samples: list[tuple[float, float, bool]] = []
        stop_load = threading.Event()
        t0 = time.monotonic()

        def client() -> None:
            while not stop_load.is_set():
                t = time.monotonic()
                status, _ = bl.http_status("127.0.0.1", listen, timeout=10)
                samples.append((t - t0, time.monotonic() - t, status == 200))

        marks: dict[str, float] = {}

        def watch_file() -> None:
            present = True
            while not stop_load.is_set():
                try:
                    now_present = addr[0] in read(out)
                except OSError:
                    now_present = present
                if present and not now_present:
                    marks.setdefault("out", time.monotonic() - t0)
                if not present and now_present:
                    marks.setdefault("back", time.monotonic() - t0)
                present = now_present
                time.sleep(0.01)

        threads = [threading.Thread(target=client, daemon=True) for _ in range(args.threads)]
        threads.append(threading.Thread(target=watch_file, daemon=True))
        for t in threads:
            t.start()
        time.sleep(args.kill_at)  # the scenario's own clock, not a wait for a condition
        os.kill(emperors[0].pid, signal.SIGKILL)
        marks["kill"] = time.monotonic() - t0
        emperors[0].wait(10)
        time.sleep(max(0.0, args.restart_at - (time.monotonic() - t0)))
        procs.append(start([args.python, "-m", "emperor", "--ini", inis[0]], f"{run}/emperor-a.log"))
        marks["restart"] = time.monotonic() - t0
        wait(lambda: _uwsgi_ok(ports[0]), 30, "A's vassal answering")
        marks["a_ready"] = time.monotonic() - t0
        time.sleep(max(0.0, args.duration - (time.monotonic() - t0)))
        stop_load.set()
        for t in threads:
            t.join(15)

        lat = [s[1] for s in samples]
        window = [s[1] for s in samples if marks["kill"] - 1 <= s[0] <= marks["kill"] + args.ttl + 2]
        rec = {
            "bench": "failover", "ttl": args.ttl, "duration": args.duration, "threads": args.threads,
            "requests": len(samples), "failed": sum(1 for s in samples if not s[2]),
            "p50_ms": round(1000 * (pct(lat, 0.5) or 0), 2), "p99_ms": round(1000 * (pct(lat, 0.99) or 0), 2),
            "p99_kill_window_ms": round(1000 * (pct(window, 0.99) or 0), 2),
            "out_after_kill_s": round(marks["out"] - marks["kill"], 2) if "out" in marks else None,
            "back_after_ready_s": round(marks["back"] - marks["a_ready"], 2) if "back" in marks else None,
        }
        print(json.dumps(rec, indent=2))
        if args.json:
            bl.dump_jsonl(args.json, rec)
        ok = rec["failed"] == 0 and rec["out_after_kill_s"] is not None \
            and rec["out_after_kill_s"] <= args.ttl + 1
        return 0 if ok else 1
    finally:
        for p in reversed(procs):
            stop(p, signal.SIGQUIT if p.args and "nginx" in str(p.args[0]) else signal.SIGTERM)
        shutil.rmtree(run, ignore_errors=True)


def _uwsgi_ok(port: int) -> bool:
    """A's vassal answers a uwsgi request on its own socket (bench/uwsgi_wire.py's client)."""
    import uwsgi_wire

    try:
        return uwsgi_wire.get(f"127.0.0.1:{port}", "/", timeout=1)[0] == 200
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
