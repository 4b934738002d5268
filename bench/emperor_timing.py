#!/usr/bin/env python3
"""Emperor timings, the project's emperor against real uWSGI, in the same run.

Issue #3's speed section. Both emperors run side by side, trials interleaved
(the order alternates per trial), every vassal behind one nginx (a `location
/NAME/` per vassal socket, `uwsgi_pass unix:SOCK`). Per trial and emperor:

  cold     emperor started with the symlink already in apps-enabled -> first 200
           through nginx
  symlink  `ln -s ../apps-available/NAME.ini apps-enabled/` into a running
           emperor -> first 200 through nginx (target: median < 0.5 s); the
           first 200 straight from the vassal socket is recorded too
  touch    `touch apps-enabled/NAME.ini` (the target's mtime) -> first 200 of the
           *new* generation (/__gen reports the module import time) through
           nginx (target: < 1 s), probing nginx and the socket alternately
           every --interval s, from the touch until 0.5 s after the new
           generation answered; every non-200 is a failed request (target: 0)
  remove   `rm apps-enabled/NAME.ini` -> the socket stops answering (and, when
           the server removes it, the socket file is gone)

Then, one round per emperor (not at the same time): 100 symlinks present, the
emperor started -> all 100 vassals answer on their sockets (each checked once
more through nginx); after a 5 s settle, the emperor process's RSS (psutil;
target < 60 MB) and its CPU over a --idle-window s idle window
((user+sys delta) / wall; target < 1 %), with the whole tree's PSS and CPU
for context; then the time to stop them all.

Before touch and remove every worker is made to serve once and a random 0-3 s
pause follows (make_all_loyal): a uWSGI worker's first request sends the
emperor a "loyal" byte, which makes uWSGI rescan at once and would hide its
3 s poll (anchor-baselines.md §5).

Emperor commands (placeholders {vassal_dir} {rundir} {tag} {venv_bin} {python}):
  emperor  {python} -m emperor --emperor {vassal_dir} --emperor-control ipc://{rundir}/ctl-{tag}
           (the control plane stays on, as by default, on a private endpoint)
  uwsgi    {venv_bin}/uwsgi --emperor {vassal_dir}
Vassal templates (placeholders {sock} {name} {workers} {wsgi_file} {apps}
{vassal_dir} {venv_bin} {python}): see VASSAL_TEMPLATES, or --vassal-template
FILE / --emperor-cmd CMD to replace the project's ones.

  emperor_timing.py --trials 10                 # both, ~6 min, + 100 vassals each
  emperor_timing.py --only uwsgi --trials 5 --no-hundred
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B
import uwsgi_wire as W

VASSAL_TEMPLATES = {
    "emperor": """[uwsgi]
socket = {sock}
chmod-socket = 666
processes = {workers}
wsgi-file = {wsgi_file}
disable-logging = true
""",
    "uwsgi": """[uwsgi]
master = true
processes = {workers}
socket = {sock}
chmod-socket = 666
wsgi-file = {wsgi_file}
disable-logging = true
""",
}
EMPEROR_CMDS = {
    "emperor": "{python} -m emperor --emperor {vassal_dir} --emperor-control ipc://{rundir}/ctl-{tag}",
    "uwsgi": "{venv_bin}/uwsgi --emperor {vassal_dir}",
}
# the emperor's own log line for "noticed the change" ({} = the vassal's file name)
NOTICED = {
    "emperor": {"symlink": "spawned: '{}'", "touch": "reloading: '{}'", "remove": "stopping: '{}'"},
    "uwsgi": {"symlink": "vassal {} has been spawned", "touch": "reload the uwsgi instance {}",
              "remove": "stop the uwsgi instance {}"},
}
TARGETS = {"symlink_s": 0.5, "touch_s": 1.0, "touch_failed": 0, "rss_mb": 60.0, "cpu_pct": 1.0}
PROBE_TIMEOUT = 5.0  # a reload keeps requests in the listen queue for ~1 s: not a failure


# ------------------------------------------------------------------ probes
def probe_sock(sock: str) -> tuple[int | None, Any]:
    """uwsgi protocol GET /__gen straight to the vassal's socket."""
    try:
        st, _hd, body, _raw = W.get(sock, "/__gen", timeout=PROBE_TIMEOUT)
        return st, (json.loads(body) if st == 200 else None)
    except (OSError, ValueError) as e:
        return None, str(e)


def probe_nginx(port: int, name: str) -> tuple[int | None, Any]:
    """HTTP GET /NAME/__gen through nginx (new connection each time)."""
    st, body = B.http_status("127.0.0.1", port, f"/{name}/__gen", timeout=PROBE_TIMEOUT)
    if st != 200:
        return st, None
    try:
        return st, json.loads(body)
    except ValueError:
        return None, body[:80]


def make_all_loyal(sock: str, workers: int, timeout: float = 5.0) -> int:
    """Parallel bursts of /__gen until `workers` distinct pids answered (bounded)."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    with cf.ThreadPoolExecutor(max_workers=8) as ex:
        while len(seen) < workers and time.monotonic() < deadline:
            for st, info in ex.map(lambda _: probe_sock(sock), range(16)):
                if st == 200 and isinstance(info, dict):
                    seen.add(info["pid"])
    time.sleep(0.5)  # let the emperor consume the loyalty messages
    return len(seen)


def wait_first_200(sock: str, port: int, name: str, t0: float, timeout: float,
                   interval: float) -> dict[str, float | None]:
    """Alternate socket and nginx probes until nginx answers 200 (or the deadline)."""
    deadline = t0 + timeout
    out: dict[str, float | None] = {"sock": None, "nginx": None}
    while time.monotonic() < deadline:
        if out["sock"] is None and probe_sock(sock)[0] == 200:
            out["sock"] = time.monotonic() - t0
        if probe_nginx(port, name)[0] == 200:
            out["nginx"] = time.monotonic() - t0
            if out["sock"] is None:
                out["sock"] = out["nginx"]
            return out
        time.sleep(interval)
    return out


def wait_new_generation(sock: str, port: int, name: str, t0: float, older: float, timeout: float,
                        interval: float, tail: float = 0.5) -> dict[str, Any]:
    """Bounded probe loop from the touch: alternate socket and nginx probes until
    nginx serves a generation loaded after `older`, then `tail` s more. Counts
    every non-200 (failed requests) and the longest gap between 200s."""
    deadline = t0 + timeout
    r: dict[str, Any] = {"sock": None, "nginx": None, "failed_sock": 0, "failed_nginx": 0,
                         "requests": 0, "gap_s": 0.0}
    last_ok = time.monotonic()
    stop_at = deadline
    while time.monotonic() < min(deadline, stop_at):
        for via in ("sock", "nginx"):
            st, info = probe_sock(sock) if via == "sock" else probe_nginx(port, name)
            now = time.monotonic()
            r["requests"] += 1
            if st != 200:
                r[f"failed_{via}"] += 1
                continue
            r["gap_s"] = max(r["gap_s"], now - last_ok)
            last_ok = now
            if r[via] is None and isinstance(info, dict) and info["loaded"] > older:
                r[via] = now - t0
                if via == "nginx":
                    stop_at = now + tail
        time.sleep(interval)
    r["gap_s"] = round(r["gap_s"], 4)
    return r


def wait_gone(sock: str, t0: float, timeout: float, interval: float) -> dict[str, float | None]:
    """Until the socket stops answering; then up to 2 s more for the file to go."""
    deadline = t0 + timeout
    out: dict[str, float | None] = {"stopped": None, "file_gone": None}
    while time.monotonic() < deadline:
        if probe_sock(sock)[0] != 200:
            out["stopped"] = time.monotonic() - t0
            break
        time.sleep(interval)
    if out["stopped"] is None:
        return out
    fdl = min(deadline, time.monotonic() + 2.0)
    while time.monotonic() < fdl:
        if not os.path.exists(sock):
            out["file_gone"] = time.monotonic() - t0
            break
        time.sleep(interval)
    return out


# ------------------------------------------------------------------ setup
@dataclass
class Emp:
    key: str
    cmd: str
    tmpl: str
    base: str  # <rundir>/<key>-files: apps-available/, apps-enabled*/ (not <key>: the cwd is
    # <rundir>, and a dir named "emperor" there would shadow the package for `python -m emperor`)
    ext: str = ".ini"
    results: dict[str, list[Any]] = field(default_factory=dict)

    def avail(self) -> str:
        return os.path.join(self.base, "apps-available")


class Rig:
    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.rundir = B.make_rundir("emperor-timing-")
        self.socks = os.path.join(self.rundir, "socks")
        os.makedirs(self.socks)
        self.port = B.free_port()
        self.nginx: B.Nginx | None = None

    def sock(self, name: str) -> str:
        return os.path.join(self.socks, name + ".sock")

    def nginx_conf(self, names: list[str]) -> B.Nginx:
        locs = []
        for n in names:
            locs.append(f"        location /{n}/ {{\n"
                        f"            rewrite ^/{n}(/.*)$ $1 break;\n"
                        f"{B.uwsgi_location('unix:' + self.sock(n))}\n"
                        f"        }}")
        srv = B.nginx_server(self.port, "            return 404;", extra="\n".join(locs))
        return B.Nginx(self.rundir, [srv])

    def write_vassal(self, emp: Emp, name: str, workers: int) -> str:
        """apps-available/NAME.ini; returns its path."""
        sock = self.sock(name)
        if os.path.exists(sock):
            os.unlink(sock)
        vb = B.venv_bindir()
        text = emp.tmpl.format(sock=sock, name=name, workers=workers,
                               wsgi_file=os.path.join(B.APPS, self.a.app), apps=B.APPS,
                               vassal_dir=os.path.join(emp.base, "apps-enabled"), venv_bin=vb,
                               python=os.path.join(vb, "python"))
        path = os.path.join(emp.avail(), name + emp.ext)
        with open(path, "w") as f:
            f.write(text)
        return path

    @staticmethod
    def link(emp: Emp, vdir: str, name: str) -> str:
        """ln -s ../apps-available/NAME.ini VDIR/ (relative, as users do)."""
        dst = os.path.join(vdir, name + emp.ext)
        os.symlink(os.path.relpath(os.path.join(emp.avail(), name + emp.ext), vdir), dst)
        return dst

    def start_emperor(self, emp: Emp, vdir: str, tag: str) -> B.Proc:
        vb = B.venv_bindir()
        cmd = emp.cmd.format(vassal_dir=vdir, rundir=self.rundir, tag=tag, venv_bin=vb,
                             python=os.path.join(vb, "python"))
        emp.results.setdefault("commands", [])
        if cmd not in emp.results["commands"]:
            emp.results["commands"].append(cmd)
        return B.Proc(cmd, os.path.join(self.rundir, f"{tag}.log"), cwd=self.rundir, stamp=True)


def noticed_after(em: B.Proc, needle: str, t_action_rel: float) -> float | None:
    hits = [t for t, ln in list(em.lines) if needle in ln and t >= t_action_rel - 0.01]
    return round(hits[0] - t_action_rel, 4) if hits else None


# ------------------------------------------------------------------ phases
def one_cold(rig: Rig, emp: Emp, i: int) -> None:
    a = rig.a
    name = f"{emp.key}-cold{i}"
    vdir = os.path.join(emp.base, f"apps-enabled-cold{i}")
    os.makedirs(vdir)
    rig.write_vassal(emp, name, a.workers)
    rig.link(emp, vdir, name)
    em = rig.start_emperor(emp, vdir, f"{emp.key}-cold{i}")
    try:
        r = wait_first_200(rig.sock(name), rig.port, name, em.t0, a.timeout, a.interval)
    finally:
        stop = em.stop(timeout=30)
    emp.results["cold"].append(r["nginx"])
    emp.results["cold_leftovers_killed"].append(em.leftovers_killed)
    B.log(f"{emp.key} cold {i}: first 200 via nginx {r['nginx']} s (socket {r['sock']}), stop {stop:.2f} s")


def one_trial(rig: Rig, emp: Emp, em: B.Proc, i: int) -> None:
    a = rig.a
    R = emp.results
    vdir = os.path.join(emp.base, "apps-enabled")
    name = f"{emp.key}-app{i}"
    fname = name + emp.ext
    sock = rig.sock(name)
    rig.write_vassal(emp, name, a.workers)
    time.sleep(random.uniform(0.0, 3.0))  # sample uWSGI's scan phase
    # (a) symlink -> first 200 through nginx
    t0 = time.monotonic()
    dst = rig.link(emp, vdir, name)
    r = wait_first_200(sock, rig.port, name, t0, a.timeout, a.interval)
    R["symlink"].append(r["nginx"])
    R["symlink_sock"].append(r["sock"])
    R["symlink_noticed"].append(noticed_after(em, NOTICED[emp.key]["symlink"].format(fname), t0 - em.tref))
    B.log(f"{emp.key} symlink {i}: 200 via nginx after {r['nginx']} s (socket {r['sock']})")
    if r["nginx"] is None:
        os.unlink(dst)
        return
    # (b) touch -> new generation through nginx, failed requests counted
    time.sleep(1.2 + random.uniform(0.0, 1.0))  # uWSGI compares mtimes in whole seconds
    if a.loyal_first:
        make_all_loyal(sock, a.workers)
        time.sleep(random.uniform(0.0, 3.0))
    _st, info = probe_sock(sock)
    older = info["loaded"] if isinstance(info, dict) else time.time()
    t0 = time.monotonic()
    tw = time.time()
    os.utime(dst, (tw, tw))  # follows the link, like touch(1)
    r = wait_new_generation(sock, rig.port, name, t0, older, a.timeout, a.interval)
    R["touch"].append(r["nginx"])
    R["touch_sock"].append(r["sock"])
    R["touch_failed"].append(r["failed_sock"] + r["failed_nginx"])
    R["touch_requests"].append(r["requests"])
    R["touch_gap"].append(r["gap_s"])
    R["touch_noticed"].append(noticed_after(em, NOTICED[emp.key]["touch"].format(fname), t0 - em.tref))
    B.log(f"{emp.key} touch {i}: new generation via nginx after {r['nginx']} s (socket {r['sock']}), "
          f"failed {r['failed_sock']}+{r['failed_nginx']} of {r['requests']}, longest gap {r['gap_s']} s")
    # (c) rm -> socket stops answering
    if a.loyal_first:
        make_all_loyal(sock, a.workers)
        time.sleep(random.uniform(0.0, 3.0))
    t0 = time.monotonic()
    os.unlink(dst)
    g = wait_gone(sock, t0, a.timeout, a.interval)
    R["remove"].append(g["stopped"])
    R["remove_file_gone"].append(g["file_gone"])
    R["remove_noticed"].append(noticed_after(em, NOTICED[emp.key]["remove"].format(fname), t0 - em.tref))
    B.log(f"{emp.key} remove {i}: stops answering after {g['stopped']} s, socket file gone {g['file_gone']}")


def hundred(rig: Rig, emp: Emp, n: int) -> dict[str, Any]:
    """n symlinks present, emperor started -> all n answer; idle RSS/CPU; stop."""
    import psutil

    a = rig.a
    vdir = os.path.join(emp.base, "apps-enabled-100")
    os.makedirs(vdir)
    names = [f"{emp.key}-v{k:03d}" for k in range(n)]
    for nm in names:
        rig.write_vassal(emp, nm, 1)
        rig.link(emp, vdir, nm)
    res: dict[str, Any] = {"vassals": n, "processes_per_vassal": 1}
    em = rig.start_emperor(emp, vdir, f"{emp.key}-100")
    try:
        pending = set(names)
        up: dict[str, float] = {}
        deadline = em.t0 + a.hundred_timeout
        while pending and time.monotonic() < deadline:
            for nm in sorted(pending):
                if probe_sock(rig.sock(nm))[0] == 200:
                    up[nm] = time.monotonic() - em.t0
                    pending.discard(nm)
            if pending:
                time.sleep(0.01)
        res["all_up_s"] = round(max(up.values()), 3) if not pending else None
        res["first_up_s"] = round(min(up.values()), 3) if up else None
        res["median_up_s"] = round(B.median(up.values()) or 0.0, 3) if up else None
        res["answered"] = len(up)
        res["via_nginx_200"] = sum(probe_nginx(rig.port, nm)[0] == 200 for nm in names)
        if not em.alive():
            raise RuntimeError(f"{emp.key}: the emperor exited; see {em.logfile}")
        B.log(f"{emp.key} 100: {len(up)}/{n} answering, all after {res['all_up_s']} s, "
              f"{res['via_nginx_200']} ok through nginx")
        time.sleep(5.0)  # settle: spawn bursts, loyalty messages
        p = psutil.Process(em.pid)
        res["emperor_threads"] = p.num_threads()
        res["emperor_fds"] = p.num_fds()
        m0 = p.memory_full_info()
        tree0 = B.mem_tree(em.pid)
        c0, tc0, s0, w0 = p.cpu_times(), B.cpu_tree(em.pid), B.system_cpu(), time.monotonic()
        time.sleep(a.idle_window)
        c1, tc1, s1, w1 = p.cpu_times(), B.cpu_tree(em.pid), B.system_cpu(), time.monotonic()
        m1 = p.memory_full_info()
        wall = w1 - w0
        cpu = (c1.user - c0.user) + (c1.system - c0.system)
        res["idle_window_s"] = round(wall, 2)
        res["emperor_cpu_s"] = round(cpu, 4)
        res["emperor_cpu_pct"] = round(100 * cpu / wall, 3)
        res["tree_cpu_pct"] = round(100 * (tc1["cpu_s"] - tc0["cpu_s"]) / wall, 3)
        # the whole machine's busy share during the window (all cores): > a few % = disturbed
        busy, total = s1["busy_s"] - s0["busy_s"], s1["total_s"] - s0["total_s"]
        res["machine_busy_pct"] = round(100 * busy / total, 2) if total else None
        res["emperor_rss_mib"] = round(max(m0.rss, m1.rss) / 2**20, 2)
        res["emperor_rss_mb"] = round(max(m0.rss, m1.rss) / 1e6, 2)
        res["emperor_pss_mib"] = round(m1.pss / 2**20, 2)
        res["emperor_uss_mib"] = round(m1.uss / 2**20, 2)
        res["tree_procs"] = tree0["procs"]
        res["tree_pss_mib"] = round(tree0["pss_kib"] / 1024, 1)
        res["tree_rss_mib"] = round(tree0["rss_kib"] / 1024, 1)
        res["still_answering"] = sum(probe_sock(rig.sock(nm))[0] == 200 for nm in names)
        B.log(f"{emp.key} 100 idle: emperor RSS {res['emperor_rss_mib']} MiB, CPU {res['emperor_cpu_pct']} % "
              f"over {wall:.1f} s; tree {res['tree_procs']} procs, PSS {res['tree_pss_mib']} MiB, "
              f"CPU {res['tree_cpu_pct']} %")
    finally:
        res["stop_s"] = round(em.stop(timeout=90), 3)
        res["leftovers_killed"] = em.leftovers_killed
    res["socket_files_left"] = sum(os.path.exists(rig.sock(nm)) for nm in names)
    B.log(f"{emp.key} 100: stopped in {res['stop_s']} s, leftovers killed {res['leftovers_killed']}")
    return res


def leftovers(rundir: str) -> list[tuple[int, str]]:
    """Processes whose command line mentions the run dir (ps-style scan of /proc)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cl = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if rundir in cl and B.pid_alive(int(d)):
            out.append((int(d), cl[:160]))
    return out


# ------------------------------------------------------------------ report
def stats(xs: list[float | None]) -> dict[str, Any]:
    ys = [x for x in xs if x is not None]
    if not ys:
        return {"n": 0, "missing": len(xs)}
    return {"median": round(B.median(ys) or 0.0, 4), "min": round(min(ys), 4), "max": round(max(ys), 4),
            "n": len(ys), "missing": len(xs) - len(ys)}


def fmt(s: dict[str, Any]) -> str:
    if not s.get("n"):
        return "n/a"
    miss = f", {s['missing']} timed out" if s.get("missing") else ""
    return f"{s['median']:.3f} s ({s['min']:.3f}-{s['max']:.3f}, n={s['n']}{miss})"


def ratio(x: float | None, y: float | None) -> str:
    return f"{x / y:.2f}x" if x is not None and y else "n/a"


def report(emps: list[Emp], hund: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], str]:
    summ: dict[str, Any] = {}
    for e in emps:
        R = e.results
        s = {k: stats(R[k]) for k in ("cold", "symlink", "symlink_sock", "symlink_noticed", "touch",
                                       "touch_sock", "touch_noticed", "remove", "remove_file_gone",
                                       "remove_noticed")}
        s["touch_failed_total"] = sum(R["touch_failed"])
        s["touch_requests_total"] = sum(R["touch_requests"])
        s["touch_longest_gap_s"] = max(R["touch_gap"], default=None)
        if e.key in hund:
            s["hundred"] = hund[e.key]
        summ[e.key] = s
    lines = ["| measure | " + " | ".join(e.key for e in emps) + " | target (ours) | ours |",
             "|---|" + "---:|" * len(emps) + "---|---|"]
    ours = summ.get("emperor")
    ref = summ.get("uwsgi")

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("PASS" if ok else "MISS")

    def med(s: dict[str, Any], k: str) -> float | None:
        v = s[k].get("median") if isinstance(s.get(k), dict) else None
        return float(v) if v is not None else None

    rows: list[tuple[str, str, str, bool | None]] = []
    for k, label, tgt in (("cold", "cold start -> 200 via nginx", ""),
                          ("symlink", "symlink -> 200 via nginx", "median < 0.5 s"),
                          ("symlink_sock", "symlink -> 200 on the socket", ""),
                          ("symlink_noticed", "symlink -> emperor's log line", ""),
                          ("touch", "touch -> new generation via nginx", "median < 1 s"),
                          ("touch_sock", "touch -> new generation on the socket", ""),
                          ("touch_noticed", "touch -> emperor's log line", ""),
                          ("remove", "rm -> socket stops answering", ""),
                          ("remove_file_gone", "rm -> socket file removed", ""),
                          ("remove_noticed", "rm -> emperor's log line", "")):
        ok: bool | None = None
        if ours is not None and k == "symlink":
            m = med(ours, k)
            ok = m is not None and m < TARGETS["symlink_s"] and ours[k]["missing"] == 0
        if ours is not None and k == "touch":
            m = med(ours, k)
            ok = m is not None and m < TARGETS["touch_s"] and ours[k]["missing"] == 0
        rows.append((label, k, tgt, ok))
    for label, k, tgt, ok in rows:
        lines.append(f"| {label} | " + " | ".join(fmt(summ[e.key][k]) for e in emps)
                     + f" | {tgt} | {verdict(ok) if tgt else ''} |")
    ok_f = None if ours is None else ours["touch_failed_total"] == 0
    lines.append("| failed requests during touch (all trials) | "
                 + " | ".join(f"{summ[e.key]['touch_failed_total']} of {summ[e.key]['touch_requests_total']}"
                              for e in emps) + f" | 0 | {verdict(ok_f)} |")
    lines.append("| longest gap between 200s during touch | "
                 + " | ".join(f"{summ[e.key]['touch_longest_gap_s']} s" for e in emps) + " | | |")
    if hund:
        def h(e: Emp, k: str, unit: str = "") -> str:
            v = hund.get(e.key, {}).get(k)
            return "n/a" if v is None else f"{v}{unit}"
        ho = hund.get("emperor", {})
        for k, label, unit, tgt, ok in (
                ("all_up_s", "100 vassals: start -> all answering", " s", "", None),
                ("median_up_s", "100 vassals: start -> median vassal answering", " s", "", None),
                ("emperor_rss_mb", "100 idle: emperor RSS (MB = 10^6 B)", "", "< 60 MB",
                 None if "emperor_rss_mb" not in ho else ho["emperor_rss_mb"] < TARGETS["rss_mb"]),
                ("emperor_rss_mib", "100 idle: emperor RSS (MiB)", "", "", None),
                ("emperor_uss_mib", "100 idle: emperor USS (MiB)", "", "", None),
                ("emperor_cpu_pct", "100 idle: emperor CPU %", " %", "< 1 %",
                 None if "emperor_cpu_pct" not in ho else ho["emperor_cpu_pct"] < TARGETS["cpu_pct"]),
                ("tree_pss_mib", "100 idle: whole tree PSS (MiB)", "", "", None),
                ("tree_procs", "100 idle: processes in the tree", "", "", None),
                ("tree_cpu_pct", "100 idle: whole tree CPU %", " %", "", None),
                ("machine_busy_pct", "100 idle: whole machine busy % (noise check)", " %", "", None),
                ("emperor_threads", "100 idle: emperor threads", "", "", None),
                ("emperor_fds", "100 idle: emperor fds", "", "", None),
                ("stop_s", "100 vassals: SIGINT -> emperor exited", " s", "", None)):
            lines.append(f"| {label} | " + " | ".join(h(e, k, unit) for e in emps)
                         + f" | {tgt} | {verdict(ok) if tgt else ''} |")
    text = "\n".join(lines)
    if ours is not None and ref is not None:
        rl = ["", "ratios emperor / uWSGI (medians):"]
        for k in ("cold", "symlink", "touch", "remove"):
            rl.append(f"  {k:8s} {ratio(med(ours, k), med(ref, k))}")
        if "emperor" in hund and "uwsgi" in hund:
            for k in ("all_up_s", "emperor_rss_mib", "emperor_cpu_pct", "tree_pss_mib"):
                rl.append(f"  {k:16s} {ratio(hund['emperor'].get(k), hund['uwsgi'].get(k))}")
        text += "\n".join(rl)
    return summ, text


# ------------------------------------------------------------------ main
def versions() -> dict[str, Any]:
    v: dict[str, Any] = {"python": platform.python_version(), "machine": platform.platform(),
                         "cpus": os.cpu_count()}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        v["uwsgi"] = subprocess.run([B.venv_bin("uwsgi"), "--version"], capture_output=True,
                                    text=True, timeout=10).stdout.strip()
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        v["nginx"] = subprocess.run([B.sbin("nginx"), "-v"], capture_output=True, text=True,
                                    timeout=10).stderr.strip()
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        v["emperor_commit"] = subprocess.run(["git", "-C", B.REPO, "describe", "--always", "--dirty"],
                                             capture_output=True, text=True, timeout=10).stdout.strip()
    return v


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="emperor,uwsgi", help="comma list of: emperor, uwsgi")
    ap.add_argument("--emperor-cmd", default=EMPEROR_CMDS["emperor"], help="the project's emperor command")
    ap.add_argument("--vassal-template", default="", help="file: the project's vassal template")
    ap.add_argument("--uwsgi-cmd", default=EMPEROR_CMDS["uwsgi"])
    ap.add_argument("--ext", default=".ini")
    ap.add_argument("--app", default="hello.py")
    ap.add_argument("--workers", type=int, default=2, help="processes per vassal in the trials")
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--interval", type=float, default=0.005, help="seconds between probes")
    ap.add_argument("--timeout", type=float, default=30)
    ap.add_argument("--hundred", type=int, default=100, help="vassals in the idle round (0: skip)")
    ap.add_argument("--no-hundred", dest="hundred", action="store_const", const=0)
    ap.add_argument("--hundred-timeout", type=float, default=180)
    ap.add_argument("--idle-window", type=float, default=30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out-dir", default="", help="default bench/results/emperor-<timestamp>")
    ap.add_argument("--no-loyal-first", dest="loyal_first", action="store_false",
                    help="do not warm every worker before touch/remove (see make_all_loyal)")
    a = ap.parse_args()
    random.seed(a.seed)
    rig = Rig(a)
    out_dir = a.out_dir or os.path.join(B.HERE, "results", "emperor-" + time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(out_dir, exist_ok=True)
    tmpl_ours = VASSAL_TEMPLATES["emperor"]
    if a.vassal_template:
        with open(a.vassal_template) as f:
            tmpl_ours = f.read()
    defs = {"emperor": (a.emperor_cmd, tmpl_ours), "uwsgi": (a.uwsgi_cmd, VASSAL_TEMPLATES["uwsgi"])}
    emps = []
    for k in a.only.split(","):
        cmd, tmpl = defs[k.strip()]
        e = Emp(k.strip(), cmd, tmpl, os.path.join(rig.rundir, f"{k.strip()}-files"), a.ext)
        os.makedirs(e.avail())
        os.makedirs(os.path.join(e.base, "apps-enabled"))
        for key in ("cold", "cold_leftovers_killed", "symlink", "symlink_sock", "symlink_noticed",
                    "touch", "touch_sock", "touch_failed", "touch_requests", "touch_gap", "touch_noticed",
                    "remove", "remove_file_gone", "remove_noticed"):
            e.results[key] = []
        emps.append(e)
    names = []
    for e in emps:
        names += [f"{e.key}-cold{i}" for i in range(a.trials)] + [f"{e.key}-app{i}" for i in range(a.trials)]
        names += [f"{e.key}-v{k:03d}" for k in range(a.hundred)]
    meta = {"argv": sys.argv, "versions": versions(), "loadavg_start": os.getloadavg(),
            "rundir": rig.rundir, "nginx_port": rig.port,
            "vassal_templates": {e.key: e.tmpl for e in emps}, "targets": TARGETS}
    B.log("run dir", rig.rundir, "results", out_dir)
    hund: dict[str, dict[str, Any]] = {}
    mains: dict[str, B.Proc] = {}
    rig.nginx = rig.nginx_conf(names).start()
    try:
        for e in emps:
            mains[e.key] = rig.start_emperor(e, os.path.join(e.base, "apps-enabled"), f"{e.key}-main")
        time.sleep(1.0)
        for i in range(a.trials):
            order = emps if i % 2 == 0 else emps[::-1]
            for e in order:
                one_cold(rig, e, i)
            for e in order:
                one_trial(rig, e, mains[e.key], i)
        for e in emps:
            e.results["main_stop_s"] = [round(mains.pop(e.key).stop(timeout=60), 3)]
        if a.hundred:
            order = emps if a.seed % 2 else emps[::-1]
            for e in order:
                try:
                    hund[e.key] = hundred(rig, e, a.hundred)
                except RuntimeError as exc:
                    B.log(f"{e.key} 100: {exc}")
                    hund[e.key] = {"error": str(exc)}
    finally:
        for em in mains.values():
            em.stop(timeout=60)
        rig.nginx.stop()
    time.sleep(0.5)
    left = leftovers(rig.rundir)
    for pid, _cl in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    summ, text = report(emps, hund)
    meta["loadavg_end"] = os.getloadavg()
    res = {"meta": meta, "summary": summ, "leftover_processes": left,
           "raw": {e.key: e.results for e in emps}}
    with open(os.path.join(out_dir, "emperor_timing.json"), "w") as f:
        json.dump(res, f, indent=1)
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write(text + "\n")
    for fn in os.listdir(rig.rundir):
        if fn.endswith(".log") or fn == "nginx.conf":
            shutil.copy(os.path.join(rig.rundir, fn), out_dir)
    print(text)
    print(f"leftover processes after the run: {len(left)} {left}")
    B.log("wrote", out_dir)
    shutil.rmtree(rig.rundir, ignore_errors=True)


if __name__ == "__main__":
    main()
