#!/usr/bin/env python3
"""Broodlord (autoscaling with zergs) experiment against real uWSGI.

Setup (all loopback):
  emperor   uwsgi --emperor DIR [--emperor-broodlord N] --emperor-stats 127.0.0.1:S
  vassal    slow app (sleeps --delay per request), processes = 1, uwsgi socket on
            127.0.0.1:P (TCP: vassal-sos-backlog only works on TCP sockets on stock
            Linux), vassal-sos-backlog = B, zerg-server = unix socket
  [zerg]    same app, zerg = <zerg-server socket>, processes = 1, idle = I,
            die-on-idle = true
  nginx     uwsgi_pass 127.0.0.1:P
  load      wrk -c C for --load seconds, then --tail seconds of silence

Reports a timeline (seconds from load start): SOS messages, zerg spawns and
deaths (emperor log + emperor stats server), per-second zerg count, wrk results,
and the distinct pids that served requests.

Modes: --mode broodlord (emperor-broodlord N) or --mode plain (no broodlord:
the emperor ignores SOS). Run both to compare throughput.

To try another emperor, pass --emperor-cmd and --vassal-template (placeholders:
{vassal_dir} {port} {zerg_sock} {apps} {delay} {backlog} {idle} {listen}
{stats_port} {broodlord} {venv_bin} {python}); the zerg-count sampler needs
a uWSGI-compatible emperor stats server or falls back to counting processes.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B

VASSAL = """[uwsgi]
master = true
processes = 1
socket = 127.0.0.1:{port}
listen = {listen}
wsgi-file = {apps}/slow.py
env = SLOW_APP_DELAY={delay}
disable-logging = true
vassal-sos-backlog = {backlog}
zerg-server = {zerg_sock}

[zerg]
zerg = {zerg_sock}
master = true
processes = 1
wsgi-file = {apps}/slow.py
env = SLOW_APP_DELAY={delay}
disable-logging = true
idle = {idle}
die-on-idle = true
"""


def emperor_stats(port: int) -> Any:
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=1)
        buf = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            buf += d
        s.close()
        return json.loads(buf.decode("utf-8", "replace"))
    except (OSError, ValueError):
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["broodlord", "plain"], default="broodlord")
    ap.add_argument("--broodlord", type=int, default=4)
    ap.add_argument("--backlog", type=int, default=10)
    ap.add_argument("--idle", type=int, default=10)
    ap.add_argument("--delay", type=float, default=0.05)
    ap.add_argument("--listen", type=int, default=1024)
    ap.add_argument("--conns", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--load", type=int, default=30, help="seconds of wrk load")
    ap.add_argument("--tail", type=int, default=25, help="seconds observed after load")
    ap.add_argument("--emperor-cmd", default="{venv_bin}/uwsgi --emperor {vassal_dir} "
                    "--emperor-stats 127.0.0.1:{stats_port}{broodlord}")
    ap.add_argument("--vassal-template", default="")
    ap.add_argument("--out", default="")
    a = ap.parse_args()

    rundir = B.make_rundir("emperor-brood-")
    vdir = os.path.join(rundir, "vassals")
    os.makedirs(vdir)
    port, stats_port, ng_port = B.free_port(), B.free_port(), B.free_port()
    fmt = dict(vassal_dir=vdir, port=port, zerg_sock=os.path.join(rundir, "broodlord.sock"),
               apps=B.APPS, delay=a.delay, backlog=a.backlog, idle=a.idle, listen=a.listen,
               stats_port=stats_port, venv_bin=B.venv_bindir(),
               python=os.path.join(B.venv_bindir(), "python"),
               broodlord=f" --emperor-broodlord {a.broodlord}" if a.mode == "broodlord" else "")
    tmpl = VASSAL
    if a.vassal_template:
        with open(a.vassal_template) as f:
            tmpl = f.read()
    vassal_text = tmpl.format(**fmt)
    with open(os.path.join(vdir, "slow.ini"), "w") as f:
        f.write(vassal_text)
    ng = B.Nginx(rundir, [B.nginx_server(ng_port, B.uwsgi_location(f"127.0.0.1:{port}"))]).start()
    t_ref = time.monotonic()
    em_cmd = a.emperor_cmd.format(**fmt)
    em = B.Proc(em_cmd, os.path.join(rundir, "emperor.log"), cwd=rundir, stamp=True, t0=t_ref)
    try:
        ready = B.wait_200(lambda: B.http_status("127.0.0.1", ng_port, "/", 2.0), t_ref, 30, 0.05)
        B.log(f"vassal ready after {ready} s")
        time.sleep(2.0)

        samples: list[dict[str, Any]] = []
        stop = threading.Event()

        def sampler() -> None:
            while not stop.is_set():
                t = time.monotonic() - t_ref
                st = emperor_stats(stats_port)
                if st and "vassals" in st:
                    z = [v for v in st["vassals"] if v.get("zerg")]
                    samples.append({"t": round(t, 2), "zergs": len(z), "vassals": len(st["vassals"])})
                else:
                    samples.append({"t": round(t, 2), "procs": len(B.proc_descendants(em.pid))})
                stop.wait(0.5)
        th = threading.Thread(target=sampler, daemon=True)
        th.start()

        t_load = time.monotonic() - t_ref
        B.log(f"load: wrk -c{a.conns} -d{a.load}s")
        w = B.run_wrk(f"http://127.0.0.1:{ng_port}/", a.threads, a.conns, a.load, timeout_s=10)
        t_load_end = time.monotonic() - t_ref
        # which processes are serving right after the load?
        pids: set[str] = set()
        for _ in range(60):
            st, body = B.http_status("127.0.0.1", ng_port, "/", 2.0)
            if st == 200:
                pids.add(body.decode().strip())
        B.log("load done: rps={} p50={} p99={} non2xx={} err={}".format(
            w["rps"], w["p50_ms"], w["p99_ms"], w["non2xx"], w["sock_err"]))
        time.sleep(a.tail)
        stop.set()
        th.join(2)
    finally:
        em.stop()
        ng.stop()

    def rel(lines: list[tuple[float, str]]) -> list[tuple[float, str]]:
        return [(round(t - t_load, 2), ln.split("] ", 1)[-1][:140]) for t, ln in lines]
    timeline = {
        "sos": rel(em.grep("asking Emperor for reinforcements")),
        "broodlord": rel(em.grep("going in broodlord mode")),
        "zerg_spawned": rel([x for x in em.grep("has been spawned") if ":zerg" in x[1]]),
        "zerg_attach": rel(em.grep("zerg")),
        "idle": rel(em.grep("inactive for more than")),
        "stopped": rel([x for x in em.grep("stop") + em.grep("removed") + em.grep("goodbye")
                        if ":zerg" in x[1] or "slow.ini" in x[1]]),
    }
    zc = [(round(s["t"] - t_load, 1), s.get("zergs", s.get("procs"))) for s in samples]
    res = {"mode": a.mode, "emperor_cmd": em_cmd, "vassal_ini": vassal_text,
           "load_s": a.load, "conns": a.conns, "wrk": {k: v for k, v in w.items() if k != "raw"},
           "wrk_raw": w["raw"], "load_end_rel_s": round(t_load_end - t_load, 2),
           "serving_pids_after_load": sorted(pids), "zerg_count_samples": zc,
           "timeline": timeline, "emperor_log_tail": [ln for _, ln in em.lines[-80:]]}
    out = a.out or os.path.join(rundir, f"broodlord-{a.mode}.json")
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    # compact human view
    print("mode", a.mode, "| wrk rps", w["rps"], "p50", w["p50_ms"], "p99", w["p99_ms"],
          "non2xx", w["non2xx"], "sock_err", w["sock_err"])
    print("zerg count (t rel. to load start, count):",
          [x for i, x in enumerate(zc) if i == 0 or x[1] != zc[i - 1][1]])
    for k in ("broodlord", "idle"):
        print(k, timeline[k][:12])
    print("sos messages:", len(timeline["sos"]), "first:", timeline["sos"][:1], "last:", timeline["sos"][-1:])
    print("serving pids after load:", sorted(pids))
    B.log("wrote", out)


if __name__ == "__main__":
    main()
