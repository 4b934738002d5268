"""The benchmark rig's ratio logic (bench/run_bench.py): pure functions over medians, no processes.

The verdicts in docs/benchmarks.md come from these: which uWSGI path is "its best", that a path
answering non-2xx is never picked as the best, and that a target is only judged when its
subject and baseline both ran.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import run_bench as R


def _cfg(rps: float, cpu: float = 10.0, non2xx: int = 0, p99: float = 5.0) -> dict[str, Any]:
    return {"rps": rps, "cpu_us": cpu, "non2xx": non2xx, "p99_ms": p99, "pss_mib": 20.0}


def test_best_path_is_the_fastest_clean_one() -> None:
    agg = {"hello": {"uwsgi+nginx": _cfg(100), "uwsgi-http+nginx": _cfg(120),
                     "uwsgi-http11+nginx": _cfg(500, non2xx=3)}}
    assert R.best_of(agg, "hello", R.UWSGI_NGINX_PATHS) == "uwsgi-http+nginx"
    agg["hello"]["uwsgi-http+nginx"]["non2xx"] = 1  # all dirty: fall back to the fastest
    agg["hello"]["uwsgi+nginx"]["non2xx"] = 1
    assert R.best_of(agg, "hello", R.UWSGI_NGINX_PATHS) == "uwsgi-http11+nginx"
    assert R.best_of(agg, "hello", "missing") is None


def test_cpu_ratio_is_taken_against_the_best_paths_own_cpu() -> None:
    agg = {"hello": {R.EMPEROR_HTTP: _cfg(130, cpu=40), "uwsgi+nginx": _cfg(100, cpu=10),
                     "uwsgi-http+nginx": _cfg(120, cpu=20)}}
    lines, recs = R.ratios(agg, None)
    cpu = [r for r in recs if r["metric"] == "cpu_us" and r["subject"] == R.EMPEROR_HTTP
           and r["verdict"] != "info"]
    assert [(r["baseline"], r["ratio"], r["verdict"]) for r in cpu] == [("uwsgi-http+nginx", 2.0, "MISS")]
    rps = [r for r in recs if r["metric"] == "rps" and r["target"] == 1.0 and r["subject"] == R.EMPEROR_HTTP]
    assert rps[0]["verdict"] == "PASS" and abs(rps[0]["ratio"] - 130 / 120) < 1e-9
    assert any("best(uwsgi|uwsgi-http|uwsgi-http11)=uwsgi-http" in ln for ln in lines)


def test_targets_without_their_baseline_in_the_run_are_not_judged() -> None:
    agg = {"asgi-hello": {R.EMPEROR_ASGI_HTTP: _cfg(100), "uvicorn+nginx": _cfg(200)}}
    _lines, recs = R.ratios(agg, None)
    judged = {r["baseline"] for r in recs if r["verdict"] in ("PASS", "MISS", "N/A")}
    assert judged == {"uvicorn+nginx"}  # no gunicorn-asgi or granian line: they did not run
    # an ASGI workload never meets the WSGI (issue #2) targets
    assert all(r["subject"] == R.EMPEROR_ASGI_HTTP for r in recs)


def test_the_asgi_worker_over_uwsgi_pass_is_context_not_a_target() -> None:
    """nginx keeps no uwsgi connection alive: that path is printed, never judged (#14's
    equal-terms targets are the HTTP socket's)."""
    agg = {"asgi-hello": {R.EMPEROR_ASGI: _cfg(100), "uvicorn+nginx": _cfg(200)}}
    lines, recs = R.ratios(agg, None)
    assert not [r for r in recs if r["verdict"] in ("PASS", "MISS", "N/A")]
    assert any("emperor-asgi/uvicorn" in line and "no target" in line for line in lines)


def test_configs_run_only_their_kind_of_app() -> None:
    cfgs = {name: R.Config(name, front, tmpl, kind) for name, front, tmpl, kind in R.BUILTIN}
    assert R.runs_workload(cfgs["uvicorn+nginx"], "fastapi-json")
    assert not R.runs_workload(cfgs["uvicorn+nginx"], "hello")
    assert not R.runs_workload(cfgs[R.EMPEROR_HTTP], "asgi-hello")
    assert R.runs_workload(R.Config("custom", "direct", "x"), "asgi-hello")  # --config: every workload
