"""The fleet across real network namespaces: two "hosts" on a bridge, a 3-member etcd cluster
(one member on each host and one on the bridge), nginx in the root namespace in front.

Traffic stays on the test's own bridge (198.18.0.0/15, a never-routed benchmarking range);
the namespaces and the bridge are deleted by the test even when it fails. Under a bounded
load of GETs through nginx: SIGKILL of host 0's emperor -> its key gone within TTL + 1 s, the
file re-rendered, 0 failed requests; the emperor back -> the host back in the upstream; host 0
cut off (its link down) -> its lease expires, 0 failed requests; a vassal ini put under an
etcd prefix runs on both hosts (same port, each in its own namespace) and stops when deleted;
etcd entirely down -> both hosts keep serving and the rendered file stays.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import BackgroundLoad, Nginx, ProcGroup, http_get, wait_for
from harness import netns as netns_mod
from harness.etcd import cluster
from harness.nginx import uwsgi_params_directive
from test_fleet import TTL, Host, keys, upstreams_cmd

from emperor import etcdkv

pytestmark = pytest.mark.live  # namespaces, etcd, emperors, nginx: setup.sh test installs them; no skip

PORT = 8001  # the same port on every host: each one is its own namespace


@pytest.fixture
def net() -> object:
    network = netns_mod.Network(2)
    try:
        yield network
    finally:
        network.close()
        assert not network.leftovers(), network.leftovers()


def test_fleet_across_namespaces(net: netns_mod.Network, procs: ProcGroup, tmp_path: Path,
                                 nginx: Callable[..., Nginx]) -> None:
    etcd = cluster(procs, tmp_path, hosts=[(net.addrs[0], net.prefix(0)), (net.addrs[1], net.prefix(1)),
                                           (net.gateway, [])])
    urls = [m.url for m in etcd.members]
    hosts = []
    for i, tag in enumerate("AB"):
        own_first = ",".join([urls[i], *(u for j, u in enumerate(urls) if j != i)])
        src = f"etcd://{net.addrs[i]}:2379/t/vassals"
        h = Host(tmp_path / f"h{i}", procs, own_first, extra=f"emperor = {src}", prefix=net.prefix(i))
        h.write("app", PORT, tag=tag, bind="0.0.0.0")  # registered as the advertise address
        h.start()
        hosts.append(h)
    addr = [f"{a}:{PORT}" for a in net.addrs]
    wait_for(lambda: {f"/t/upstreams/app/{a}" for a in addr} <= set(keys(etcd)), 30,
             what="both hosts registered with their own address", ignore=(etcdkv.EtcdError,))

    out = tmp_path / "upstreams.conf"
    listen = 18000 + os.getpid() % 2000
    ng = nginx(extra_http=f"include {out};\nserver {{\n    listen 127.0.0.1:{listen};\n    location / {{\n"
                          f"        {uwsgi_params_directive()}\n        uwsgi_pass app;\n"
                          "        uwsgi_next_upstream error timeout;\n        uwsgi_connect_timeout 1s;\n"
                          "    }\n}")
    reload_cmd = " ".join([*ng._argv(), "-s", "reload"])
    rdr = procs.start(upstreams_cmd(",".join(urls), out, "--exec", reload_cmd), name="upstreams")
    wait_for(lambda: out.exists() and all(a in out.read_text() for a in addr), 20, what="rendered", proc=rdr)
    ng.start()
    url = f"http://127.0.0.1:{listen}/"

    def probe() -> str:
        status, _, body = http_get(url, timeout=10)
        if status != 200:
            raise AssertionError(f"HTTP {status} {body[:80]!r}")
        return body.decode()

    def both_serve() -> bool:
        return {probe()[0] for _ in range(8)} == {"A", "B"}

    wait_for(both_serve, 30, what="both hosts serving", ignore=(AssertionError, OSError))

    with BackgroundLoad(probe, threads=4, seconds=120) as load:
        wait_for(lambda: load.result.ok >= 50, 15, what="load running")
        # 1. host 0's emperor SIGKILLed
        assert hosts[0].proc is not None
        os.kill(hosts[0].proc.pid, signal.SIGKILL)
        # the lease's expiry removes it (deadline, not a timed assert: bench/failover.py measures it)
        wait_for(lambda: f"/t/upstreams/app/{addr[0]}" not in keys(etcd), TTL + 3, what="host 0 key gone")
        wait_for(lambda: addr[0] not in out.read_text(), 5, what="host 0 out of the file")
        hosts[0].proc.wait(10)
        # 2. it comes back
        hosts[0].start()
        wait_for(lambda: addr[0] in out.read_text(), 30, what="host 0 back in the file")
        # 3. host 0 cut off: its lease cannot be refreshed (its own member has no quorum alone)
        mid = load.result.ok
        net.cut(0)
        wait_for(lambda: addr[0] not in out.read_text(), TTL + 10, what="cut-off host out of the file")
        wait_for(lambda: load.result.ok >= mid + 100, 30, what="load served while host 0 is cut off")
        net.restore(0)
        wait_for(lambda: addr[0] in out.read_text(), 30, what="host 0 back after the link came up")
    assert load.result.failed == 0 and load.result.ok > 0, load.result

    # 4. a vassal ini put under the etcd prefix runs on both hosts, on the same port in each
    client = etcdkv.Client(etcdkv.parse_endpoints(",".join(reversed(urls))))  # the never-cut member first
    marks = [h.mark() for h in hosts]
    ini = (f"[uwsgi]\nsocket = 0.0.0.0:8002\nwsgi-file = {hosts[0].root / 'app.py'}\nprocesses = 1\n"
           "env = APP_TAG=etcd\nfleet-app = web\n")
    client.put("/t/vassals/web.ini", ini.encode())
    for h, m in zip(hosts, marks, strict=True):  # the deadline is the bound (bench/failover.py times it)
        h.wait_log(r"spawned: 'web.ini'", after=m, timeout=5)
    wait_for(lambda: all(f"/t/upstreams/web/{a}:8002" in keys(etcd) for a in net.addrs), 20,
             what="web registered on both hosts")
    client.delete("/t/vassals/web.ini")
    for h, m in zip(hosts, marks, strict=True):
        h.wait_log(r"stopped: 'web.ini'", after=m)

    wait_for(lambda: "upstream web" not in out.read_text(), 10, what="web out of the file")

    # 5. etcd entirely down: both hosts keep serving, the rendered file stays
    kept = out.read_text()
    etcd.stop()
    with BackgroundLoad(probe, threads=2, seconds=30, max_requests=200) as load:
        wait_for(lambda: load.result.total >= 200, 30, what="200 requests with etcd down")
    assert load.result.failed == 0, load.result
    wait_for(both_serve, 10, what="both hosts still serving", ignore=(AssertionError, OSError))
    assert out.read_text() == kept
