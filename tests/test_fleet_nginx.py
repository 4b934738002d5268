"""The fleet behind a real nginx, on loopback: two emperors play two hosts.

- The static recipe (contrib/fleet/nginx-fleet.conf, its addresses pointed at the test's
  ports): under a bounded load of GETs, a vassal SIGKILLed and then a whole emperor
  SIGKILLed on host A cost 0 failed requests (``uwsgi_next_upstream error timeout``); host A
  restarted serves again.
- The dynamic fleet: ``emperor upstreams`` renders the upstream from etcd and reloads nginx;
  SIGKILL of host A's emperor -> its key gone within TTL + 1 s, the file re-rendered, 0 failed
  requests; a new vassal on host B is in the file about a second after it is ready.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import BackgroundLoad, Nginx, ProcGroup, free_port, http_get, wait_for
from harness.etcd import Cluster, cluster, etcd_binary
from harness.nginx import uwsgi_params_directive
from harness.procs import vassal_children
from test_fleet import TTL, Host, keys, upstreams_cmd

pytestmark = pytest.mark.live  # real processes (README: Tests)

RECIPE = Path(__file__).resolve().parent.parent / "contrib" / "fleet" / "nginx-fleet.conf"


def served_by(ng: Nginx) -> Callable[[], str]:
    def probe() -> str:
        status, _, body = http_get(ng.url("/"), timeout=10)
        if status != 200:
            raise AssertionError(f"HTTP {status} {body[:80]!r}")
        return body.decode()

    return probe


def vassal_master(host: Host) -> int:
    """The host's one vassal master (the emperor's only child)."""
    assert host.proc is not None
    children = vassal_children(host.proc.pid)  # not its template process
    assert len(children) == 1, children
    return int(children[0].pid)


def recipe_http(ports: list[int], listen: int) -> str:
    """The recipe's http-level text with the test's loopback addresses."""
    text = RECIPE.read_text()
    text = text.replace("10.0.0.11:8001", f"127.0.0.1:{ports[0]}").replace("10.0.0.12:8001",
                                                                            f"127.0.0.1:{ports[1]}")
    text = text.replace("listen 80;", f"listen 127.0.0.1:{listen};")
    return text.replace("include uwsgi_params;", uwsgi_params_directive())


def test_static_recipe_survives_vassal_and_emperor_kills(procs: ProcGroup, tmp_path: Path,
                                                         nginx: Callable[..., Nginx]) -> None:
    hosts = [Host(tmp_path / h, procs, "", extra="") for h in ("a", "b")]
    ports = [free_port(), free_port()]
    for h, p, tag in zip(hosts, ports, ("A", "B"), strict=True):
        h.write("app", p, tag=tag)
        ini = h.root / "emperor.ini"
        ini.write_text(f"[uwsgi]\nemperor = {h.vassals}\nemperor-control = ipc://{h.root}/ctl\n")
        h.proc = procs.start([sys.executable, "-m", "emperor", "--ini", str(ini)], name="emperor")
    listen = free_port()
    ng = nginx(extra_http=recipe_http(ports, listen))
    ng.start()
    url = f"http://127.0.0.1:{listen}/"
    ng.url = lambda path="/": url  # type: ignore[method-assign]
    probe = served_by(ng)
    wait_for(lambda: {probe()[0] for _ in range(6)} == {"A", "B"}, 30, what="both hosts serving",
             ignore=(AssertionError, OSError))

    with BackgroundLoad(probe, threads=4, seconds=90) as load:
        wait_for(lambda: load.result.ok >= 50, 15, what="load running")
        # `emperor ctl stop` on A: a graceful stop; nginx sends everything to B meanwhile
        ctl = [sys.executable, "-m", "emperor", "ctl", "--endpoint", f"ipc://{hosts[0].root}/ctl"]
        mark = hosts[0].mark()
        done = subprocess.run([*ctl, "stop", "app.ini"], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        hosts[0].wait_log(r"stopped: 'app.ini'", after=mark)
        mid = load.result.ok
        wait_for(lambda: load.result.ok >= mid + 50, 15, what="load while A's vassal is stopped")
        done = subprocess.run([*ctl, "start", "app.ini"], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        hosts[0].wait_log(r"ready: 'app.ini'", after=mark)
        # a vassal SIGKILLed on A: nginx retries its requests on B; the emperor respawns it
        mark = hosts[0].mark()
        os.kill(vassal_master(hosts[0]), signal.SIGKILL)
        hosts[0].wait_log(r"ready: 'app.ini'", after=mark, timeout=20)
        mid = load.result.ok
        wait_for(lambda: load.result.ok >= mid + 50, 15, what="load after the vassal kill")
        # host A's emperor SIGKILLed: its vassal follows (parent-death signal); B takes everything
        assert hosts[0].proc is not None
        os.kill(hosts[0].proc.pid, signal.SIGKILL)
        hosts[0].proc.wait(10)
        mid = load.result.ok
        wait_for(lambda: load.result.ok >= mid + 100, 20, what="load served by B alone")
    assert load.result.failed == 0 and load.result.ok > 0, load.result

    # host A comes back: both serve again
    ini = hosts[0].root / "emperor.ini"
    hosts[0].proc = procs.start([sys.executable, "-m", "emperor", "--ini", str(ini)], name="emperor")
    wait_for(lambda: "A" in {probe()[0] for _ in range(6)}, 30, what="host A serving again",
             ignore=(AssertionError, OSError))


@pytest.mark.skipif(etcd_binary() is None and os.environ.get("CI") != "true", reason="etcd not installed")
def test_dynamic_fleet_fails_over_with_nothing_lost(procs: ProcGroup, tmp_path: Path,
                                                    nginx: Callable[..., Nginx]) -> None:
    etcd: Cluster = cluster(procs, tmp_path, 1)
    a, b = Host(tmp_path / "a", procs, etcd.url), Host(tmp_path / "b", procs, etcd.url)
    pa, pb = free_port(), free_port()
    a.write("app", pa, tag="A")
    b.write("app", pb, tag="B")
    a.start()
    b.start()
    wait_for(lambda: len([k for k in keys(etcd) if "/app/" in k]) == 2, 20, what="both registered")

    out = tmp_path / "upstreams.conf"
    listen = free_port()
    ng = nginx(extra_http=f"include {out};\nserver {{\n    listen 127.0.0.1:{listen};\n    location / {{\n"
                          f"        {uwsgi_params_directive()}\n        uwsgi_pass app;\n"
                          "        uwsgi_next_upstream error timeout;\n    }\n}")
    reload_cmd = " ".join([*ng._argv(), "-s", "reload"])
    rdr = procs.start(upstreams_cmd(etcd.url, out, "--exec", reload_cmd), name="upstreams")
    wait_for(lambda: out.exists() and out.read_text().count("server 127.0.0.1") == 2, 20, what="rendered",
             proc=rdr)
    ng.start()
    url = f"http://127.0.0.1:{listen}/"
    ng.url = lambda path="/": url  # type: ignore[method-assign]
    probe = served_by(ng)
    wait_for(lambda: {probe()[0] for _ in range(6)} == {"A", "B"}, 30, what="both hosts serving",
             ignore=(AssertionError, OSError))

    with BackgroundLoad(probe, threads=4, seconds=60) as load:
        wait_for(lambda: load.result.ok >= 50, 15, what="load running")
        err_mark = ng.error_log_path.stat().st_size
        assert a.proc is not None
        os.kill(a.proc.pid, signal.SIGKILL)
        wait_for(lambda: f"127.0.0.1:{pa}" not in out.read_text(), TTL + 5, what="A out of the file")
        wait_for(lambda: "reconfiguring" in ng.error_log(err_mark), 10, what="nginx reloaded by --exec")
        mid = load.result.ok
        wait_for(lambda: load.result.ok >= mid + 100, 20, what="load served by B alone")

        # a new vassal on B is in the rendered upstream about a second after it is ready
        pn = free_port()
        mark = b.mark()
        b.write("app2", pn, tag="N", extra="fleet-app = app")
        b.wait_log(r"ready: 'app2.ini'", after=mark)
        wait_for(lambda: f"127.0.0.1:{pn}" in out.read_text(), 5, what="new vassal rendered")
    assert load.result.failed == 0 and load.result.ok > 0, load.result
    assert re.search(r"upstream app \{", out.read_text())
