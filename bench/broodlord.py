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
the emperor ignores SOS). --system emperor runs this project instead of uWSGI,
--socket unix puts the vassal on a Unix socket.

--compare runs issue #4's comparison in one go: (a) this project without
broodlord, (b) with emperor-broodlord = 4, (c) real uWSGI broodlord, all on TCP,
and (b) on a Unix socket; then prints the table with the targets (PASS/MISS) and
writes a PNG (backlog, zergs, throughput over time) with --plot.

To try another emperor, pass --emperor-cmd and --vassal-template (placeholders:
{vassal_dir} {port} {zerg_sock} {apps} {delay} {backlog} {idle} {listen}
{stats_port} {broodlord} {venv_bin} {python}); the zerg-count sampler needs
a uWSGI-compatible emperor stats server or falls back to counting processes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B

VASSAL = """[uwsgi]
master = true
processes = 1
socket = {socket}
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
        buf = B.read_to_eof(s)
        s.close()
        return json.loads(buf.decode("utf-8", "replace"))
    except (OSError, ValueError):
        return None


ACCESS_FMT = re.compile(r"\[(\d+/\w+/\d+:\d+:\d+:\d+) [^\]]+\] \"GET [^\"]*\" (\d{3})")


def zerg_count(emperor_pid: int) -> int:
    """Zerg masters: the emperor's children started from a [zerg] section (both systems)."""
    n = 0
    for pid in B.proc_descendants(emperor_pid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == emperor_pid and b":zerg" in cmd:
            n += 1
    return n


def ss_recvq(socket_addr: str) -> int | None:
    if socket_addr.startswith("/"):
        cmd = ["ss", "-Hxl", "src", socket_addr]
    else:
        cmd = ["ss", "-Htln", "sport", f"= :{socket_addr.rsplit(':', 1)[1]}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=5).stdout.split()
    if not out:
        return None
    return int(out[2] if socket_addr.startswith("/") else out[1])


def per_second(access_log: str, t_load_wall: float) -> list[tuple[int, int]]:
    """(second from load start, 2xx completed in it) from nginx's combined access log."""
    counts: dict[int, int] = {}
    try:
        with open(access_log) as f:
            for line in f:
                m = ACCESS_FMT.search(line)
                if not m or not m.group(2).startswith("2"):
                    continue
                t = time.mktime(time.strptime(m.group(1), "%d/%b/%Y:%H:%M:%S"))
                sec = int(t - int(t_load_wall))
                counts[sec] = counts.get(sec, 0) + 1
    except OSError:
        return []
    return sorted(counts.items())


def run_one(a: argparse.Namespace, system: str, mode: str, sock_kind: str) -> dict[str, Any]:
    """One bounded run: start nginx + emperor + the slow vassal, wrk for --load s, watch --tail s."""
    rundir = B.make_rundir("emperor-brood-")
    vdir = os.path.join(rundir, "vassals")
    os.makedirs(vdir)
    port, stats_port, ng_port = B.free_port(), B.free_port(), B.free_port()
    sock_addr = f"127.0.0.1:{port}" if sock_kind == "tcp" else os.path.join(rundir, "app.sock")
    fmt = dict(vassal_dir=vdir, port=port, socket=sock_addr, zerg_sock=os.path.join(rundir, "broodlord.sock"),
               apps=B.APPS, delay=a.delay, backlog=a.backlog, idle=a.idle, listen=a.listen,
               stats_port=stats_port, venv_bin=B.venv_bindir(),
               python=os.path.join(B.venv_bindir(), "python"),
               broodlord=f" --emperor-broodlord {a.broodlord}" if mode == "broodlord" else "")
    tmpl = VASSAL
    if a.vassal_template:
        with open(a.vassal_template) as f:
            tmpl = f.read()
    vassal_text = tmpl.format(**fmt)
    with open(os.path.join(vdir, "slow.ini"), "w") as f:
        f.write(vassal_text)
    access = os.path.join(rundir, "access.log")
    target = sock_addr if sock_kind == "tcp" else f"unix:{sock_addr}"
    ng = B.Nginx(rundir, [B.nginx_server(ng_port, B.uwsgi_location(target),
                                         extra=f"        access_log {access};")]).start()
    t_ref = time.monotonic()
    cmd_tmpl = a.emperor_cmd if system == "uwsgi" else (
        "{python} -m emperor --emperor {vassal_dir}{broodlord}")
    em_cmd = cmd_tmpl.format(**fmt)
    em = B.Proc(em_cmd, os.path.join(rundir, "emperor.log"), cwd=rundir, stamp=True, t0=t_ref)
    samples: list[dict[str, Any]] = []
    try:
        ready = B.wait_200(lambda: B.http_status("127.0.0.1", ng_port, "/", 2.0), t_ref, 30, 0.05)
        B.log(f"{system}/{mode}/{sock_kind}: vassal ready after {ready} s")
        time.sleep(2.0)
        stop = threading.Event()

        def sampler() -> None:
            while not stop.is_set():
                t = time.monotonic() - t_ref
                samples.append({"t": round(t, 2), "zergs": zerg_count(em.pid),
                                "backlog": ss_recvq(sock_addr)})
                stop.wait(0.25)
        th = threading.Thread(target=sampler, daemon=True)
        th.start()
        t_load = time.monotonic() - t_ref
        t_load_wall = time.time()
        B.log(f"load: wrk -c{a.conns} -d{a.load}s")
        w = B.run_wrk(f"http://127.0.0.1:{ng_port}/", a.threads, a.conns, a.load, timeout_s=10)
        t_load_end = time.monotonic() - t_ref
        B.log("load done: requests={} rps={} p50={} p99={} non2xx={} err={}".format(
            w["requests"], w["rps"], w["p50_ms"], w["p99_ms"], w["non2xx"], w["sock_err"]))
        deadline = time.monotonic() + a.tail
        while time.monotonic() < deadline:  # silence: until the zergs are gone (bounded by --tail)
            if samples and samples[-1]["t"] > t_load_end + 2 and samples[-1]["zergs"] == 0:
                break
            time.sleep(0.25)
        stop.set()
        th.join(2)
    finally:
        em.stop()
        ng.stop()

    def rel(lines: list[tuple[float, str]]) -> list[tuple[float, str]]:
        return [(round(t - t_load, 2), ln.split("] ", 1)[-1][:160]) for t, ln in lines]
    lend_word = "going in broodlord mode" if system == "uwsgi" else "lent: zerg"
    sos_word = ("asking Emperor for reinforcements" if system == "uwsgi"
                else "asking the emperor for reinforcements")
    lends = rel(em.grep(lend_word))
    zc = [(round(s["t"] - t_load, 2), s["zergs"], s["backlog"]) for s in samples]
    cross = next((t for t, _, q in zc if t >= -0.5 and (q or 0) >= a.backlog), None)
    first_lend = lends[0][0] if lends else None
    return {
        "system": system, "mode": mode, "socket": sock_kind, "emperor_cmd": em_cmd, "vassal_ini": vassal_text,
        "load_s": a.load, "conns": a.conns, "wrk": {k: v for k, v in w.items() if k != "raw"},
        "load_end_rel_s": round(t_load_end - t_load, 2), "samples": zc,
        "throughput": per_second(access, t_load_wall),
        "backlog_cross_s": cross, "first_lend_s": first_lend,
        "lend_after_cross_s": round(first_lend - cross, 2) if first_lend is not None and cross is not None
        else None,
        "max_zergs": max((z for _, z, _ in zc), default=0),
        "zergs_at_end": zc[-1][1] if zc else None,
        "lends": lends, "sos": len(em.grep(sos_word)),
        "emperor_log_tail": [ln for _, ln in em.lines[-60:]],
    }


def verdicts(runs: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    """The issue's targets: (target, measured, PASS/MISS)."""
    a, b, c, u = runs["a"]["wrk"], runs["b"]["wrk"], runs["c"]["wrk"], runs["b-unix"]["wrk"]
    out: list[tuple[str, str, str]] = []

    def check(what: str, measured: str, ok: bool) -> None:
        out.append((what, measured, "PASS" if ok else "MISS"))
    ra, rb, rc = a["requests"] or 0, b["requests"] or 0, c["requests"] or 0
    check("(b) >= 3x the completed requests of (a)", f"{rb} vs {ra} ({rb / max(ra, 1):.2f}x)", rb >= 3 * ra)
    check("(b) p99 <= half of (a)'s", f"{b['p99_ms']} ms vs {a['p99_ms']} ms",
          bool(b["p99_ms"] and a["p99_ms"] and b["p99_ms"] <= a["p99_ms"] / 2))
    lend = runs["b"]["lend_after_cross_s"]
    check("first lend < 1.5 s after the backlog crosses the threshold", f"{lend} s",
          lend is not None and lend < 1.5)
    check("(b) completed >= (c)", f"{rb} vs {rc}", rb >= rc)
    check("(b) p50 <= (c)", f"{b['p50_ms']} ms vs {c['p50_ms']} ms",
          bool(b["p50_ms"] and c["p50_ms"] and b["p50_ms"] <= c["p50_ms"]))
    check("(b) p99 <= (c)", f"{b['p99_ms']} ms vs {c['p99_ms']} ms",
          bool(b["p99_ms"] and c["p99_ms"] and b["p99_ms"] <= c["p99_ms"]))
    lc = runs["c"]["lend_after_cross_s"]
    check("(b) first lend no later than (c)", f"{lend} s vs {lc} s",
          lend is not None and (lc is None or lend <= lc + 0.05))
    check("(b) on a Unix socket lends and >= 3x (a)",
          f"{u['requests']} requests, {runs['b-unix']['max_zergs']} zergs",
          (u["requests"] or 0) >= 3 * ra and runs["b-unix"]["max_zergs"] > 0)
    for k in ("b", "b-unix"):
        end = runs[k]["zergs_at_end"]
        check(f"({k}) zergs back to 0 after the burst", str(end), end == 0)
    for k, r in runs.items():
        errs = r["wrk"]["non2xx"] + sum(r["wrk"]["sock_err"].values())
        check(f"({k}) no failed request", str(errs), errs == 0)
    return out


def plot(runs: dict[str, dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    for key, r in runs.items():
        label = f"({key}) {r['system']} {r['mode']} {r['socket']}"
        ts = [t for t, _, _ in r["samples"]]
        axes[0].plot(ts, [q or 0 for _, _, q in r["samples"]], label=label)
        axes[1].step(ts, [z for _, z, _ in r["samples"]], where="post", label=label)
        thr = r["throughput"]
        axes[2].plot([s for s, _ in thr], [n for _, n in thr], label=label)
    axes[0].set_ylabel("listen backlog (ss Recv-Q)")
    axes[1].set_ylabel("zergs alive")
    axes[2].set_ylabel("completed req/s (nginx)")
    axes[2].set_xlabel("seconds from load start (wrk -c128 for 30 s, then silence)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.axvline(0, color="grey", lw=0.8)
    axes[0].legend(fontsize=8)
    fig.suptitle("broodlord: slow app (50 ms), 1 worker, emperor-broodlord = 4, idle = 10")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["broodlord", "plain"], default="broodlord")
    ap.add_argument("--system", choices=["uwsgi", "emperor"], default="uwsgi")
    ap.add_argument("--socket", choices=["tcp", "unix"], default="tcp")
    ap.add_argument("--compare", action="store_true",
                    help="run (a), (b), (c) and (b) on Unix; report targets")
    ap.add_argument("--plot", default="", help="with --compare: write the PNG here")
    ap.add_argument("--broodlord", type=int, default=4)
    ap.add_argument("--backlog", type=int, default=10)
    ap.add_argument("--idle", type=int, default=10)
    ap.add_argument("--delay", type=float, default=0.05)
    ap.add_argument("--listen", type=int, default=1024)
    ap.add_argument("--conns", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--load", type=int, default=30, help="seconds of wrk load")
    ap.add_argument("--tail", type=int, default=25, help="seconds observed after load (at most)")
    ap.add_argument("--emperor-cmd", default="{venv_bin}/uwsgi --emperor {vassal_dir} "
                    "--emperor-stats 127.0.0.1:{stats_port}{broodlord}")
    ap.add_argument("--vassal-template", default="")
    ap.add_argument("--out", default="")
    a = ap.parse_args()

    if not a.compare:
        res = run_one(a, a.system, a.mode, a.socket)
        out = a.out or os.path.join(B.make_rundir("emperor-brood-out-"), "broodlord.json")
        with open(out, "w") as f:
            json.dump(res, f, indent=1)
        summary(res)
        B.log("wrote", out)
        return
    plan = {"a": ("emperor", "plain", "tcp"), "b": ("emperor", "broodlord", "tcp"),
            "c": ("uwsgi", "broodlord", "tcp"), "b-unix": ("emperor", "broodlord", "unix")}
    runs = {k: run_one(a, *v) for k, v in plan.items()}
    for r in runs.values():
        summary(r)
    print("\n| run | system | socket | completed | req/s | p50 ms | p99 ms | max zergs "
          "| first lend after cross |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for k, r in runs.items():
        w = r["wrk"]
        print(f"| ({k}) | {r['system']} {r['mode']} | {r['socket']} | {w['requests']} | {w['rps']} | "
              f"{w['p50_ms']} | {w['p99_ms']} | {r['max_zergs']} | {r['lend_after_cross_s']} s |")
    print("\n| target | measured | |\n|---|---|---|")
    checks = verdicts(runs)
    for what, measured, ok in checks:
        print(f"| {what} | {measured} | {ok} |")
    out = a.out or os.path.join(B.make_rundir("emperor-brood-out-"), "broodlord-compare.json")
    with open(out, "w") as f:
        json.dump({"runs": runs, "verdicts": checks}, f, indent=1)
    if a.plot:
        plot(runs, a.plot)
        B.log("plot:", a.plot)
    B.log("wrote", out)


def summary(r: dict[str, Any]) -> None:
    w = r["wrk"]
    changes = [x for i, x in enumerate(r["samples"]) if i == 0 or x[1] != r["samples"][i - 1][1]]
    print(f"{r['system']} {r['mode']} {r['socket']} | completed {w['requests']} rps {w['rps']} "
          f"p50 {w['p50_ms']} "
          f"p99 {w['p99_ms']} non2xx {w['non2xx']} sock_err {w['sock_err']}")
    print("  zerg count changes (t, zergs, backlog):", [(t, z, q) for t, z, q in changes][:20])
    print("  backlog crossed at", r["backlog_cross_s"], "first lend at", r["first_lend_s"],
          "->", r["lend_after_cross_s"], "s; SOS lines:", r["sos"])


if __name__ == "__main__":
    main()
