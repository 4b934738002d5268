#!/usr/bin/env python3
"""Where does a backend's CPU per request go?  Samples its whole process tree
with py-spy while wrk drives it through nginx, and prints the top functions by
self time and by inclusive time (Python frames; --native adds C frames).

Needs py-spy in the bench venv: BENCH_WITH_PYSPY=1 bash bench/setup.sh

  profile_backend.py                                   # emperor+nginx, hello, 8 s
  profile_backend.py --config uwsgi+nginx --workload flask-json --seconds 10

Same configs, placeholders and --emperor-python as run_bench.py. py-spy runs
with --nonblocking (it does not stop the process to sample), at --rate Hz.
Caveat: a worker blocked in accept() is not always recognised as idle, so the
frame that calls accept() collects waiting time too; read the other frames as
shares of the rest.
Every load is bounded (wrk -d); processes are stopped by their own PID.
Output: a text report on stdout, and the raw collapsed stacks in --out.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B
import run_bench as R

_LINE = re.compile(r"^(.*) (\d+)$")


Counter = collections.Counter


def parse_collapsed(path: str) -> tuple[Counter[str], Counter[str], Counter[str], int]:
    """py-spy --format raw: 'frame;frame;...;leaf COUNT' per line; with --subprocesses the
    stack starts with 'process PID:"cmd"' frames (parent first).
    Returns (self samples per frame, inclusive samples per frame, samples per process, total).
    A sample with no Python frame is counted as '(no Python frame: native code)'."""
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    per_proc: Counter[str] = Counter()
    total = 0
    with open(path) as f:
        for line in f:
            m = _LINE.match(line.rstrip("\n"))
            if not m:
                continue
            parts = m.group(1).split(";")
            procs = [fr for fr in parts if fr.startswith("process ")]
            frames = [fr for fr in parts if not fr.startswith(("process ", "thread "))]
            n = int(m.group(2))
            total += n
            per_proc[procs[-1][:90] if procs else "?"] += n
            self_c[frames[-1] if frames else "(no Python frame: native code)"] += n
            for fr in set(frames):
                incl[fr] += n
    return self_c, incl, per_proc, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=R.SUBJECT, help="a built-in config name of run_bench.py")
    ap.add_argument("--workload", default="hello", choices=list(R.WORKLOADS))
    ap.add_argument("--seconds", type=int, default=8, help="py-spy sampling time (wrk runs 3 s longer)")
    ap.add_argument("--rate", type=int, default=250)
    ap.add_argument("--native", action="store_true", help="include native (C) frames")
    ap.add_argument("--lines", action="store_true", help="aggregate by line, not by function")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--emperor-python", default=B.venv_python())
    ap.add_argument("--out", default="", help="raw collapsed stacks file (default: in the run dir)")
    a = ap.parse_args()
    pyspy = B.venv_bin("py-spy")
    known = {name: (front, tmpl, kind) for name, front, tmpl, kind in R.BUILTIN}
    if a.config not in known:
        raise SystemExit(f"unknown config {a.config!r}; known: {', '.join(known)}")
    c = R.Config(a.config, *known[a.config])
    if not R.runs_workload(c, a.workload):
        raise SystemExit(f"{a.config} serves {c.kind} apps; {a.workload} is not one")
    rundir = B.make_rundir("emperor-profile-")
    logdir = os.path.join(rundir, "logs")
    os.makedirs(logdir)
    nginx = R.build_nginx(rundir, [c])
    w = R.WORKLOADS[a.workload]
    out = a.out or os.path.join(rundir, f"pyspy-{c.safe}-{a.workload}.txt")
    proc = None
    try:
        proc, cmd = R.start_backend(c, a.workload, rundir, a, logdir)
        B.log("backend:", cmd)
        port = R.front_port(c)
        if B.wait_200(lambda: B.http_status("127.0.0.1", port, w.ready, 1.0), proc.t0, 30) is None:
            raise SystemExit(f"backend did not answer; log: {proc.logfile}")
        script = B.wrk_script(rundir, w.method, w.body)
        wrk = subprocess.Popen([B.path_bin("wrk"), f"-t{a.threads}", f"-c{a.conns}", f"-d{a.seconds + 3}s",
                                "--latency", R.url_for(c, w.path)] + (["-s", script] if script else []),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(1.5)
        spy = [pyspy, "record", "--pid", str(proc.pid), "--subprocesses", "--nonblocking",
               "--rate", str(a.rate), "--duration", str(a.seconds), "--format", "raw", "--output", out]
        if a.native:
            spy.append("--native")
        if not a.lines:
            spy.append("--function")
        r = subprocess.run(spy, capture_output=True, text=True, timeout=a.seconds + 60)
        wout, _ = wrk.communicate(timeout=a.seconds + 60)
        if r.returncode:
            raise SystemExit("py-spy failed:\n" + r.stderr[-2000:])
    finally:
        if proc:
            proc.stop()
        if nginx:
            nginx.stop()
    res = B.parse_wrk(wout)
    self_c, incl, per_proc, total = parse_collapsed(out)
    if not total:
        raise SystemExit(f"no samples in {out}")
    print(f"{a.config} {a.workload}: wrk {res['rps']} req/s during sampling; {total} non-idle samples "
          f"at {a.rate} Hz over {a.seconds} s")
    print("\nSamples by process:")
    for pr, n in per_proc.most_common():
        print(f"  {100 * n / total:5.1f}%  {pr}")
    print(f"\nTop {a.top} by self time:")
    for fr, n in self_c.most_common(a.top):
        print(f"  {100 * n / total:5.1f}%  {fr}")
    print(f"\nTop {a.top} by inclusive time:")
    for fr, n in incl.most_common(a.top):
        print(f"  {100 * n / total:5.1f}%  {fr}")
    print(f"\nraw stacks: {out}")


if __name__ == "__main__":
    main()
