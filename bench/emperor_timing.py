#!/usr/bin/env python3
"""Emperor timings: cold start, new-vassal pickup, touch-reload, removal.

Measures, over --trials trials each:
  cold    emperor started with the vassal file already present -> first 200
  drop    vassal file renamed into the watched dir -> first 200 on its socket
  touch   mtime of the vassal file bumped -> first 200 served by the *new*
          generation (the app's /__gen reports the module import time), plus
          how many probe requests failed during the reload and the longest gap
  remove  vassal file deleted -> its socket stops answering
The probe speaks the uwsgi protocol directly to the vassal's Unix socket
(GET /__gen every --interval seconds), so nginx is not involved.

Defaults drive real uWSGI (uwsgi --emperor DIR). To time another emperor
(e.g. the project), pass templates; placeholders: {vassal_dir} {sock} {name}
{wsgi_file} {apps} {workers} {venv_bin} {python}:
  emperor_timing.py --emperor-cmd '{python} -m emperor --vassals {vassal_dir}' \\
                    --vassal-template my_vassal.ini.tmpl --ext .ini
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B
import uwsgi_wire as W

DEFAULT_VASSAL = """[uwsgi]
master = true
processes = {workers}
socket = {sock}
chmod-socket = 666
wsgi-file = {wsgi_file}
disable-logging = true
"""


def probe(sock: str) -> tuple[int | None, Any]:
    try:
        st, _hd, body, _raw = W.get(sock, "/__gen", timeout=2.0)
        if st == 200:
            return st, json.loads(body)
        return st, None
    except (OSError, ValueError) as e:
        return None, str(e)


def write_vassal(args: argparse.Namespace, vdir: str, name: str, tmpl: str,
                 stage: str) -> tuple[str, str, str]:
    sock = os.path.join(args.rundir, name + ".sock")
    if os.path.exists(sock):
        os.unlink(sock)
    text = tmpl.format(sock=sock, name=name, workers=args.workers,
                       wsgi_file=os.path.join(B.APPS, args.app), apps=B.APPS,
                       vassal_dir=vdir, venv_bin=B.venv_bindir(),
                       python=os.path.join(B.venv_bindir(), "python"))
    tmp = os.path.join(stage, name + args.ext)
    with open(tmp, "w") as f:
        f.write(text)
    return tmp, os.path.join(vdir, name + args.ext), sock


def wait_ok(sock: str, t0: float, timeout: float, newer_than: float | None = None,
            interval: float = 0.005) -> tuple[float | None, int, float]:
    """Poll until a 200 (and, if newer_than, a generation loaded after it).
    Returns (seconds since t0 or None, failures, longest gap between 200s)."""
    deadline = time.monotonic() + timeout
    fails, last_ok, gap = 0, time.monotonic(), 0.0
    while time.monotonic() < deadline:
        st, info = probe(sock)
        now = time.monotonic()
        if st == 200:
            gap = max(gap, now - last_ok)
            last_ok = now
            if newer_than is None or (isinstance(info, dict) and info["loaded"] > newer_than):
                return now - t0, fails, gap
        else:
            fails += 1
        time.sleep(interval)
    return None, fails, max(gap, time.monotonic() - last_ok)


def make_all_loyal(sock: str, workers: int, timeout: float = 5.0) -> int:
    """Make every worker serve at least one request before a measurement.

    A uWSGI vassal worker sends a 'loyal' byte to the emperor after its first
    request, and every message from a vassal makes the uWSGI emperor rescan
    its directory at once. A probe that hits a fresh worker right after a
    touch/unlink would therefore shortcut the 3 s scan period. Parallel
    bursts are sent until /__gen has reported `workers` distinct pids."""
    import concurrent.futures as cf
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    with cf.ThreadPoolExecutor(max_workers=8) as ex:
        while len(seen) < workers and time.monotonic() < deadline:
            for st, info in ex.map(lambda _: probe(sock), range(16)):
                if st == 200 and isinstance(info, dict):
                    seen.add(info["pid"])
    time.sleep(0.5)  # let the emperor consume the loyalty messages
    return len(seen)


def wait_gone(sock: str, t0: float, timeout: float, interval: float = 0.01) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st, _ = probe(sock)
        if st != 200:
            return time.monotonic() - t0
        time.sleep(interval)
    return None


def stats(xs: list[float | None]) -> str:
    ys = [x for x in xs if x is not None]
    if not ys:
        return "n/a"
    return f"median {B.median(ys):.3f}  min {min(ys):.3f}  max {max(ys):.3f}  (n={len(ys)})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--emperor-cmd", default="{venv_bin}/uwsgi --emperor {vassal_dir}")
    ap.add_argument("--vassal-template", default="", help="file with a vassal config template")
    ap.add_argument("--ext", default=".ini")
    ap.add_argument("--app", default="hello.py")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="")
    ap.add_argument("--no-loyal-first", dest="loyal_first", action="store_false",
                    help="do not warm every worker before touch/remove (see make_all_loyal)")
    a = ap.parse_args()
    random.seed(a.seed)
    tmpl = DEFAULT_VASSAL
    if a.vassal_template:
        with open(a.vassal_template) as f:
            tmpl = f.read()
    a.rundir = B.make_rundir("emperor-timing-")
    stage = os.path.join(a.rundir, "stage")
    os.makedirs(stage)
    res: dict[str, Any] = {"cold": [], "drop": [], "touch": [], "touch_fails": [], "touch_gap": [],
           "remove": [], "emperor_cmd": a.emperor_cmd, "vassal_template": tmpl}

    def start_emperor(vdir: str, tag: str) -> B.Proc:
        cmd = a.emperor_cmd.format(vassal_dir=vdir, venv_bin=B.venv_bindir(),
                                   python=os.path.join(B.venv_bindir(), "python"))
        return B.Proc(cmd, os.path.join(a.rundir, f"emperor-{tag}.log"), cwd=a.rundir,
                      stamp=True)

    # cold start
    for i in range(a.trials):
        vdir = os.path.join(a.rundir, f"cold{i}")
        os.makedirs(vdir)
        tmp, dst, sock = write_vassal(a, vdir, f"cold{i}", tmpl, stage)
        os.rename(tmp, dst)
        em = start_emperor(vdir, f"cold{i}")
        t, _, _ = wait_ok(sock, em.t0, a.timeout)
        res["cold"].append(t)
        em.stop()
        B.log(f"cold start {i}: {t}")

    # drop / touch / remove on one long-running emperor
    vdir = os.path.join(a.rundir, "vassals")
    os.makedirs(vdir)
    em = start_emperor(vdir, "main")
    marks = []
    time.sleep(1.0)
    try:
        for i in range(a.trials):
            time.sleep(random.uniform(0.0, 3.0))  # sample the scan phase
            name = f"app{i}"
            tmp, dst, sock = write_vassal(a, vdir, name, tmpl, stage)
            t0 = time.monotonic()
            os.rename(tmp, dst)
            marks.append((f"drop {name}", round(t0 - em.t0, 3)))
            t, _, _ = wait_ok(sock, t0, a.timeout)
            res["drop"].append(t)
            B.log(f"drop {i}: first 200 after {t} s")
            if t is None:
                continue
            time.sleep(1.2 + random.uniform(0.0, 3.0))  # mtime has 1 s granularity
            if a.loyal_first:
                make_all_loyal(sock, a.workers)
                time.sleep(random.uniform(0.0, 3.0))  # sample the scan phase again
            _st, info = probe(sock)
            t0 = time.monotonic()
            tw = time.time()
            os.utime(dst, (tw, tw))
            marks.append((f"touch {name}", round(t0 - em.t0, 3)))
            newer = info["loaded"] if isinstance(info, dict) else tw
            t, fails, gap = wait_ok(sock, t0, a.timeout, newer_than=newer)
            res["touch"].append(t)
            res["touch_fails"].append(fails)
            res["touch_gap"].append(gap)
            B.log(f"touch {i}: new generation after {t} s, failed probes {fails}, longest gap {gap:.3f} s")
            time.sleep(0.5)
            if a.loyal_first:
                make_all_loyal(sock, a.workers)
                time.sleep(random.uniform(0.0, 3.0))
            t0 = time.monotonic()
            os.unlink(dst)
            marks.append((f"remove {name}", round(t0 - em.t0, 3)))
            t = wait_gone(sock, t0, a.timeout)
            res["remove"].append(t)
            B.log(f"remove {i}: gone after {t} s")
    finally:
        em.stop()
    res["marks_rel_emperor_start"] = marks
    res["emperor_events_rel"] = [(round(t, 3), ln[:120]) for t, ln in em.lines
                                 if "[emperor]" in ln or "gracefully" in ln or "goodbye" in ln]
    # split "noticed by the emperor" from "acted": uWSGI-style log lines
    detect: dict[str, list[float | None]] = {"drop": [], "touch": [], "remove": []}
    needles = {"drop": "vassal {} has been spawned", "touch": "reload the uwsgi instance {}",
               "remove": "stop the uwsgi instance {}"}
    for what, tm in marks:
        kind, name = what.split(" ", 1)
        needle = needles[kind].format(name + a.ext)
        hits = [t for t, ln in em.lines if needle in ln and t >= tm - 0.01]
        detect[kind].append(round(hits[0] - tm, 3) if hits else None)
    res["emperor_noticed_after_s"] = detect
    summary: dict[str, Any] = {k: stats(res[k]) for k in ("cold", "drop", "touch", "remove")}
    for k in detect:
        summary[f"{k}_noticed_by_emperor"] = stats(detect[k])
    summary["touch_failed_probes"] = res["touch_fails"]
    summary["touch_longest_gap_s"] = [round(g, 3) for g in res["touch_gap"]]
    res["summary"] = summary
    out = a.out or os.path.join(a.rundir, "emperor_timing.json")
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(summary, indent=1))
    B.log("wrote", out)
    if a.out:
        shutil.rmtree(a.rundir, ignore_errors=True)


if __name__ == "__main__":
    main()
