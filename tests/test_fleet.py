"""The fleet on loopback: a private etcd member, real emperors and vassals, ``emperor upstreams``.

Two emperors on 127.0.0.1 play two hosts (their vassals listen on different ports). Checked:
keys appear when a vassal is READY, survive a graceful reload, are removed when it stops,
vanish within TTL + 1 s of an emperor's SIGKILL; ``emperor upstreams`` renders and re-renders
and keeps its file while etcd is down (serving goes on); a vassal ini put under an etcd
prefix runs within about a second and deleting the key stops it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from harness import ProcGroup, free_port, request, wait_for, wait_for_log, wsgi_vars
from harness.etcd import Cluster, cluster

from emperor import etcdkv

pytestmark = pytest.mark.live  # real etcd members and emperors; setup.sh test installs etcd (never skipped)

APP = '''\
import os


def application(environ, start_response):
    body = f"{os.environ.get('APP_TAG', '?')} {os.getpid()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''

TTL = 2


class Host:
    """One emperor with its vassal directory, registering in etcd."""

    def __init__(self, root: Path, procs: ProcGroup, etcd: str, extra: str = "",
                 prefix: list[str] | None = None) -> None:
        self.root, self.procs, self.etcd = root, procs, etcd
        self.prefix = prefix or []  # ``ip netns exec NS`` for a host in a namespace
        self.vassals = root / "vassals"
        self.vassals.mkdir(parents=True)
        (root / "app.py").write_text(APP)
        self.extra = extra
        self.proc = None

    def write(self, name: str, port: int, tag: str = "v1", extra: str = "", bind: str = "127.0.0.1") -> Path:
        path = self.vassals / f"{name}.ini"
        tmp = self.vassals / f".{name}.tmp"
        tmp.write_text(f"[uwsgi]\nsocket = {bind}:{port}\nwsgi-file = {self.root / 'app.py'}\n"
                       f"processes = 1\nenv = APP_TAG={tag}\n{extra}\n")
        tmp.replace(path)
        return path

    def start(self) -> None:
        ini = self.root / "emperor.ini"
        ini.write_text(f"[uwsgi]\nemperor = {self.vassals}\nemperor-etcd = {self.etcd}\n"
                       f"emperor-etcd-ttl = {TTL}\nemperor-etcd-prefix = /t\nemperor-control = ipc://{self.root}/ctl\n"
                       f"{self.extra}\n")
        self.proc = self.procs.start([*self.prefix, sys.executable, "-m", "emperor", "--ini", str(ini)],
                                     name="emperor")
        wait_for_log(self.proc, r"starting: emperor", timeout=20)

    def mark(self) -> int:
        assert self.proc is not None
        return self.proc.log_size()

    def wait_log(self, pattern: str, after: int = 0, timeout: float = 15.0) -> None:
        assert self.proc is not None
        wait_for_log(self.proc, pattern, after=after, timeout=timeout)


def keys(etcd: Cluster, prefix: str = "/t/upstreams/") -> dict[str, dict[str, object]]:
    client = etcdkv.Client(etcdkv.parse_endpoints(etcd.endpoints), timeout=2)
    kvs, _ = client.get_prefix(prefix)
    return {k: json.loads(v) for k, (v, _) in kvs.items()}


def answer(port: int) -> str:
    status, _, body, _ = request(("127.0.0.1", port), wsgi_vars(), timeout=5)
    assert status == 200, status
    return body.decode()


def emperor_stats(port: int) -> dict[str, Any]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return dict(json.loads(data))


@pytest.fixture
def etcd(procs: ProcGroup, tmp_path: Path) -> Cluster:
    return cluster(procs, tmp_path, 1)


def test_http_sockets_register_under_their_own_upstream(etcd: Cluster, procs: ProcGroup,
                                                         tmp_path: Path) -> None:
    """A vassal with a uwsgi and an HTTP socket gives two upstreams: nginx cannot mix protocols."""
    host = Host(tmp_path / "h", procs, etcd.url)
    pu, ph = free_port(), free_port()
    host.write("shop", pu, extra=f"http-socket = 127.0.0.1:{ph}")
    host.start()
    ku, kh = f"/t/upstreams/shop/127.0.0.1:{pu}", f"/t/upstreams/shop-http/127.0.0.1:{ph}"
    def both() -> dict[str, dict[str, object]] | None:
        k = keys(etcd)
        return k if {ku, kh} <= set(k) else None

    got = wait_for(both, 20, what="both keys")
    assert got[kh]["proto"] == "http" and "proto" not in got[ku], got


def test_membership_follows_vassal_lifecycle(etcd: Cluster, procs: ProcGroup, tmp_path: Path) -> None:
    """READY -> key (app name, weight from the vassal); reload -> kept; stop -> removed;
    SIGKILL of the emperor -> gone within TTL + 1 s; the other host's keys stay."""
    a, b = Host(tmp_path / "a", procs, etcd.url), Host(tmp_path / "b", procs, etcd.url)
    pa, pb = free_port(), free_port()
    a.write("shop", pa, extra="weight = 3")
    b.write("shop", pb)
    a.start()
    b.start()
    ka, kb = f"/t/upstreams/shop/127.0.0.1:{pa}", f"/t/upstreams/shop/127.0.0.1:{pb}"
    def both() -> dict[str, dict[str, object]] | None:
        k = keys(etcd)
        return k if {ka, kb} <= set(k) else None

    got = wait_for(both, 20, what="both keys")
    assert got[ka]["weight"] == 3 and got[ka]["vassal"] == "shop.ini", got
    assert got[kb]["weight"] == 1, got

    # a graceful reload keeps the key the whole time (the socket stays open)
    mark = a.mark()
    seen_missing = []
    a.write("shop", pa, tag="v2", extra="weight = 3")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if ka not in keys(etcd):
            seen_missing.append(time.monotonic())
        assert a.proc is not None
        if "reloaded: 'shop.ini'" in a.proc.log_text(mark):
            break
        time.sleep(0.02)
    a.wait_log(r"reloaded: 'shop.ini'", after=mark)
    assert not seen_missing, "the key vanished during a graceful reload"
    assert answer(pa).startswith("v2")

    # a named app: the key moves to the new app name after the reload
    a.write("shop", pa, tag="v3", extra="weight = 3\nfleet-app = store")
    wait_for(lambda: f"/t/upstreams/store/127.0.0.1:{pa}" in keys(etcd) and ka not in keys(etcd), 15,
             what="key under the new app name")

    # `emperor ctl stop` on host B -> its key is removed; `start` -> back
    ctl = [sys.executable, "-m", "emperor", "ctl", "--endpoint", f"ipc://{b.root}/ctl"]
    assert subprocess.run([*ctl, "stop", "shop.ini"], capture_output=True, timeout=30).returncode == 0
    wait_for(lambda: kb not in keys(etcd), 15, what="B's key removed after emperor ctl stop")
    assert subprocess.run([*ctl, "start", "shop.ini"], capture_output=True, timeout=30).returncode == 0
    wait_for(lambda: kb in keys(etcd), 15, what="B's key back after emperor ctl start")

    # the vassal file removed on host B -> its key is removed, A's stays
    (b.vassals / "shop.ini").unlink()
    wait_for(lambda: kb not in keys(etcd), 15, what="B's key removed after its vassal stopped")

    # SIGKILL the emperor A: its lease stops being refreshed, its key goes within TTL + 1 s
    assert a.proc is not None
    ka2 = f"/t/upstreams/store/127.0.0.1:{pa}"
    assert ka2 in keys(etcd)
    b.write("shop", pb)
    wait_for(lambda: kb in keys(etcd), 15, what="B's key back")
    os.kill(a.proc.pid, signal.SIGKILL)
    # the lease's expiry removes it (a deadline, not a timed assert: bench/failover.py measures it)
    wait_for(lambda: ka2 not in keys(etcd), TTL + 3, what="A's key gone after SIGKILL")
    assert kb in keys(etcd)  # the other host is untouched
    a.proc.wait(10)


def test_clean_shutdown_revokes_and_wildcard_is_advertised(etcd: Cluster, procs: ProcGroup,
                                                           tmp_path: Path) -> None:
    """A socket bound to every interface registers the advertise address, never 0.0.0.0;
    SIGTERM removes the keys at once (the lease is revoked)."""
    a = Host(tmp_path / "a", procs, etcd.url, extra="emperor-etcd-advertise = 127.0.0.9")
    port = free_port()
    a.write("wild", port)
    (a.vassals / "wild.ini").write_text((a.vassals / "wild.ini").read_text().replace(
        f"127.0.0.1:{port}", f"0.0.0.0:{port}"))
    a.start()
    key = f"/t/upstreams/wild/127.0.0.9:{port}"
    wait_for(lambda: key in keys(etcd), 20, what="advertised key")
    assert not any("0.0.0.0" in k for k in keys(etcd))
    assert a.proc is not None
    procs.stop(a.proc)
    assert key not in keys(etcd)  # revoked on the way out, not left to the TTL


def test_etcd_down_does_not_affect_serving(etcd: Cluster, procs: ProcGroup, tmp_path: Path) -> None:
    """etcd stopped: the vassal keeps serving, the emperor keeps running and says so once;
    etcd back (same data dir) -> the keys are registered again."""
    stats_port = free_port()
    a = Host(tmp_path / "a", procs, etcd.url, extra=f"emperor-stats = 127.0.0.1:{stats_port}")
    port = free_port()
    a.write("app", port)
    a.start()
    key = f"/t/upstreams/app/127.0.0.1:{port}"
    wait_for(lambda: key in keys(etcd), 20, what="key")
    fleet = wait_for(lambda: emperor_stats(stats_port).get("fleet"), 10, what="fleet in the stats")
    assert fleet["reachable"] == 1 and fleet["registered"] == [key] and fleet["lease"], fleet
    member = etcd.members[0]
    etcd.stop_member(member)
    a.wait_log(r"etcd: cannot register upstreams \(serving is not affected\)", timeout=TTL + 10)
    assert emperor_stats(stats_port)["fleet"]["reachable"] == 0  # the operator can see it
    for _ in range(20):
        assert answer(port).startswith("v1")
    # a change while etcd is down still applies locally
    mark = a.mark()
    a.write("app", port, tag="v2")
    a.wait_log(r"reloaded: 'app.ini'", after=mark)
    assert answer(port).startswith("v2")
    etcd.start()
    wait_for(lambda: key in keys(etcd), 20, what="key registered again after etcd came back",
             ignore=(etcdkv.EtcdError,))


def upstreams_cmd(etcd: str, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "emperor", "upstreams", "--etcd", etcd, "--prefix", "/t", "--out", str(out),
            *extra]


def test_upstreams_renders_and_keeps_file_when_etcd_is_down(etcd: Cluster, procs: ProcGroup,
                                                             tmp_path: Path) -> None:
    """Two hosts -> one upstream with both servers; a stopped vassal -> re-rendered without it
    and --exec run again; a rogue key is skipped; etcd down -> the file stays as it was."""
    a, b = Host(tmp_path / "a", procs, etcd.url), Host(tmp_path / "b", procs, etcd.url)
    pa, pb = free_port(), free_port()
    a.write("shop", pa, extra="weight = 2")
    b.write("shop", pb)
    a.start()
    b.start()
    out, runs = tmp_path / "upstreams.conf", tmp_path / "runs"
    hook = f"sh -c 'echo run >> {runs}'"
    rdr = procs.start(upstreams_cmd(etcd.url, out, "--exec", hook), name="upstreams")
    server_a = f"server 127.0.0.1:{pa} weight=2 max_fails=1 fail_timeout=2s;"
    server_b = f"server 127.0.0.1:{pb} weight=1 max_fails=1 fail_timeout=2s;"

    def text() -> str:
        return out.read_text() if out.exists() else ""

    wait_for(lambda: server_a in text() and server_b in text(), 20, what="both servers rendered")
    assert "upstream shop {" in text() and text().count("upstream ") == 1, text()
    wait_for(lambda: runs.exists() and runs.read_text().count("run") >= 1, 5, what="--exec ran")

    # a key that would inject nginx directives is skipped, the rest still renders
    client = etcdkv.Client(etcdkv.parse_endpoints(etcd.url))
    client.put("/t/upstreams/evil/1.2.3.4:80;include /etc/passwd", b"{}")
    client.put("/t/upstreams/other/127.0.0.1:9", b'{"weight": 5, "vassal": "o.ini", "state": "ready"}')
    wait_for(lambda: "upstream other {" in text(), 10, what="second app rendered")
    assert "evil" not in text() and "passwd" not in text()
    client.delete("/t/upstreams/other/127.0.0.1:9")
    wait_for(lambda: "upstream other" not in text(), 10, what="second app gone")

    # a vassal stops on B -> re-rendered without it
    before = runs.read_text().count("run")
    (b.vassals / "shop.ini").unlink()
    wait_for(lambda: server_b not in text(), 15, what="B's server dropped")
    assert server_a in text()
    wait_for(lambda: runs.read_text().count("run") > before, 5, what="--exec ran after the change")

    # etcd down: the file is kept exactly, the renderer keeps running and says so
    kept = text()
    mtime = out.stat().st_mtime_ns
    etcd.stop_member(etcd.members[0])
    wait_for_log(rdr, r"etcd unreachable, keeping", timeout=20)
    assert rdr.alive() and text() == kept and out.stat().st_mtime_ns == mtime
    assert answer(pa).startswith("v1")  # and serving is not affected

    # etcd back: the renderer resumes (B's vassal is back meanwhile)
    b.write("shop", pb)
    etcd.start()
    wait_for(lambda: server_b in text(), 30, what="re-rendered after etcd came back")


def test_upstreams_once_and_template_errors(etcd: Cluster, tmp_path: Path) -> None:
    """--once renders the current keys with a custom template; a broken template is refused
    with its file and line, before anything is written."""

    client = etcdkv.Client(etcdkv.parse_endpoints(etcd.url))
    client.put("/t/upstreams/api/10.0.0.1:8000", b'{"weight": 4, "vassal": "api.ini", "state": "loyal"}')
    tpl = tmp_path / "t.tmpl"
    tpl.write_text("# apps\n@app\nupstream ${app}_pool {  # $count\n@server\n  server $addr weight=$weight;"
                   "  # $vassal $state\n@end\n}\n@end\nmap $$host $$x {}\n")
    out = tmp_path / "o.conf"
    done = subprocess.run(upstreams_cmd(etcd.url, out, "--once", "--template", str(tpl)), timeout=30,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert out.read_text() == ("# apps\nupstream api_pool {  # 1\n  server 10.0.0.1:8000 weight=4;"
                               "  # api.ini loyal\n}\nmap $host $x {}\n")
    tpl.write_text("@app\n@server\n@end\n")
    bad = subprocess.run(upstreams_cmd(etcd.url, tmp_path / "x.conf", "--once", "--template", str(tpl)),
                         timeout=30, capture_output=True, text=True)
    assert bad.returncode == 2 and f"{tpl}: @app is not closed" in bad.stderr, bad.stderr
    tpl.write_text("@app\nupstream $nope {}\n@end\n")
    bad = subprocess.run(upstreams_cmd(etcd.url, tmp_path / "x.conf", "--once", "--template", str(tpl)),
                         timeout=30, capture_output=True, text=True)
    assert bad.returncode == 2 and "nope" in bad.stderr, bad.stderr
    assert not (tmp_path / "x.conf").exists()


def test_vassals_from_an_etcd_prefix(etcd: Cluster, procs: ProcGroup, tmp_path: Path) -> None:
    """emperor = etcd://HOST:PORT/PREFIX next to a directory: a put key runs within ~1 s on both
    emperors, a second put reloads it, a delete stops it; a bad key name is refused by name."""
    member = etcd.members[0]
    src = f"etcd://{member.host}:{member.client_port}/t/vassals"
    port, port_b = free_port(), free_port()
    # one loopback plays both hosts: each emperor gives its vassals their own port (vassal-set)
    a = Host(tmp_path / "a", procs, etcd.url, extra=f"emperor = {src}\nvassal-set = port={port}")
    b = Host(tmp_path / "b", procs, etcd.url, extra=f"emperor = {src}\nvassal-set = port={port_b}")
    a.start()
    b.start()
    ini = (f"[uwsgi]\nsocket = 127.0.0.1:%(port)\nwsgi-file = {tmp_path / 'a' / 'app.py'}\nprocesses = 1\n"
           "env = APP_TAG=%(tag)\n")
    client = etcdkv.Client(etcdkv.parse_endpoints(etcd.url))
    marks = (a.mark(), b.mark())
    client.put("/t/vassals/web.ini", ini.replace("%(tag)", "e1").encode())
    a.wait_log(r"spawned: 'web.ini'", after=marks[0], timeout=5)  # the put reaches both emperors
    b.wait_log(r"spawned: 'web.ini'", after=marks[1], timeout=5)
    a.wait_log(r"ready: 'web.ini'", after=marks[0])
    b.wait_log(r"ready: 'web.ini'", after=marks[1])
    assert answer(port).startswith("e1")
    # the vassal got its ini as a memfd, not a path: no file of that name exists anywhere
    assert not (tmp_path / "a" / "web.ini").exists()

    mark = a.mark()
    client.put("/t/vassals/web.ini", ini.replace("%(tag)", "e2").encode())
    a.wait_log(r"reloaded: 'web.ini'", after=mark)
    assert answer(port).startswith("e2")

    client.put("/t/vassals/sub/x.ini", b"[uwsgi]\n")
    a.wait_log(r"refused: .*sub/x\.ini.*PREFIX/NAME\.ini", after=mark)

    mark = a.mark()
    client.delete("/t/vassals/web.ini")
    a.wait_log(r"stopped: 'web.ini'", after=mark)
    b.wait_log(r"stopped: 'web.ini'", after=marks[1])


def test_tyrant_refuses_etcd_source(tmp_path: Path) -> None:
    """An etcd key has no owner: tyrant mode refuses the source with a clear error, naming the key."""

    if os.geteuid() != 0:
        pytest.skip("tyrant mode needs root")
    ini = tmp_path / "e.ini"
    ini.write_text("[uwsgi]\nemperor = etcd://127.0.0.1:1/v\nemperor-tyrant = true\n")
    done = subprocess.run([sys.executable, "-m", "emperor", "--ini", str(ini)], timeout=30,
                          capture_output=True, text=True)
    assert done.returncode == 78 and "tyrant mode takes its vassals from files only" in done.stderr
    assert "emperor" in done.stderr


def test_three_member_cluster_leader_killed(procs: ProcGroup, tmp_path: Path) -> None:
    """A 3-member cluster: SIGKILL the leader -> the keys survive (the lease is kept alive
    through the other members), a new vassal still registers, emperor upstreams still renders."""
    etcd = cluster(procs, tmp_path, 3)
    leader = wait_for(etcd.leader, 10, what="a leader", ignore=(AssertionError,))
    # the leader first: the emperor and the renderer talk to it until it dies, then fail over
    endpoints = ",".join([leader.url, *(m.url for m in etcd.members if m is not leader)])
    a = Host(tmp_path / "a", procs, endpoints)
    pa = free_port()
    a.write("app", pa)
    a.start()
    key = f"/t/upstreams/app/127.0.0.1:{pa}"
    wait_for(lambda: key in keys(etcd), 20, what="registered")
    out = tmp_path / "up.conf"
    procs.start(upstreams_cmd(endpoints, out), name="upstreams")
    wait_for(lambda: out.exists() and f"127.0.0.1:{pa}" in out.read_text(), 20, what="rendered")

    etcd.stop_member(leader, sig=signal.SIGKILL)
    wait_for(lambda: etcd.leader() is not None, 10, what="a new leader", ignore=(AssertionError,))
    # longer than the TTL: the lease must have been refreshed through another member
    deadline = time.monotonic() + TTL + 2
    while time.monotonic() < deadline:
        assert key in wait_for(lambda: keys(etcd), 5, ignore=(etcdkv.EtcdError,)), "key lost"
        time.sleep(0.2)
    pn = free_port()
    a.write("more", pn)
    wait_for(lambda: f"/t/upstreams/more/127.0.0.1:{pn}" in keys(etcd), 20, what="new vassal registered",
             ignore=(etcdkv.EtcdError,))
    wait_for(lambda: f"127.0.0.1:{pn}" in out.read_text(), 20, what="new vassal rendered")


def test_etcd_unreachable_from_the_start(procs: ProcGroup, tmp_path: Path) -> None:
    """No etcd at all: the emperor starts, its vassals serve, and it says once why nothing is registered."""
    a = Host(tmp_path / "a", procs, f"http://127.0.0.1:{free_port()}")
    port = free_port()
    a.write("app", port)
    a.start()
    a.wait_log(r"ready: 'app.ini'")
    assert answer(port).startswith("v1")
    a.wait_log(r"etcd: cannot register upstreams \(serving is not affected\)")
    assert a.proc is not None
    assert a.proc.log_text().count("cannot register upstreams") == 1


def test_upstreams_burst_costs_one_reload(etcd: Cluster, procs: ProcGroup, tmp_path: Path) -> None:
    """Ten keys changed in a burst (an emperor stopping ten vassals) -> one or two writes and
    --exec runs, not ten: the renderer waits for the changes to settle."""
    out, runs = tmp_path / "u.conf", tmp_path / "runs"
    client = etcdkv.Client(etcdkv.parse_endpoints(etcd.url))
    client.put("/t/upstreams/app/10.0.0.1:1", b"{}")
    procs.start(upstreams_cmd(etcd.url, out, "--exec", f"sh -c 'echo run >> {runs}'"), name="upstreams")
    wait_for(lambda: runs.exists() and runs.read_text().count("run") == 1, 20, what="first render")
    for i in range(2, 12):
        client.put(f"/t/upstreams/app/10.0.0.{i}:1", b"{}")
    wait_for(lambda: "10.0.0.11:1" in out.read_text(), 10, what="the burst rendered")
    assert runs.read_text().count("run") <= 3, runs.read_text()


def test_a_silent_loop_stops_refreshing_the_lease(etcd: Cluster) -> None:
    """The registrar refreshes the lease only while the emperor's loop keeps calling ``want``:
    a hung emperor (loop silent for longer than the TTL) loses its keys like a dead one."""
    from emperor.empire import fleet

    now = [0.0]
    reg = fleet.Registrar(fleet.FleetSettings(etcdkv.parse_endpoints(etcd.url), "/t", TTL),
                          clock=lambda: now[0])
    reg.start()
    try:
        reg.want({("app", "127.0.0.1", 9): {"vassal": "app.ini"}}, now[0])
        wait_for(lambda: "/t/upstreams/app/127.0.0.1:9" in keys(etcd), 10, what="registered")
        # the loop goes on calling: the key outlives the TTL several times over
        t0 = time.monotonic()
        while time.monotonic() - t0 < TTL * 2:
            now[0] = time.monotonic() - t0
            reg.want({("app", "127.0.0.1", 9): {"vassal": "app.ini"}}, now[0])
            assert "/t/upstreams/app/127.0.0.1:9" in keys(etcd)
            time.sleep(0.1)
        # the loop falls silent (the clock moves, `want` is not called): the key expires
        now[0] += TTL + 1
        wait_for(lambda: "/t/upstreams/app/127.0.0.1:9" not in keys(etcd), TTL + 3, what="key expired")
    finally:
        reg.stop()


def test_missing_client_library_is_a_clear_config_error(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    """Without the `fleet` extra the emperor refuses to start and says what to install."""
    from emperor import config
    from emperor.empire.emperor import Settings
    from emperor.options import Scope

    monkeypatch.setitem(sys.modules, "etcd3gw", None)  # import etcd3gw -> ImportError
    cfg = config.from_args([("emperor", str(tmp_path)), ("emperor-etcd", "http://127.0.0.1:2379")],
                           Scope.EMPEROR)
    with pytest.raises(config.ConfigError, match=r"emperor-etcd.*pip install 'emperor\[fleet\]'"):
        Settings.from_config(cfg, str(tmp_path))


def test_tls_client_certificates_are_passed_through(procs: ProcGroup, tmp_path: Path) -> None:
    """etcd on https with --client-cert-auth: emperor-etcd-ca/-cert/-key register, `emperor upstreams`
    renders with --etcd-ca/--etcd-cert/--etcd-key, and an etcds:// source runs a vassal. Without the
    client certificate etcd refuses the renderer."""
    from harness.etcd import Certs

    certs = Certs.make(tmp_path / "certs")
    etcd = cluster(procs, tmp_path, 1, tls=certs)
    member = etcd.members[0]
    tls_opts = (f"emperor-etcd-ca = {certs.ca}\nemperor-etcd-cert = {certs.client_cert}\n"
                f"emperor-etcd-key = {certs.client_key}")
    port, port2 = free_port(), free_port()
    a = Host(tmp_path / "a", procs, etcd.url,
             extra=f"{tls_opts}\nemperor = etcds://127.0.0.1:{member.client_port}/t/vassals")
    a.write("app", port)
    a.start()
    client = etcdkv.Client(etcdkv.parse_endpoints(etcd.url),
                           tls=etcdkv.Tls(str(certs.ca), str(certs.client_cert), str(certs.client_key)))
    key = f"/t/upstreams/app/127.0.0.1:{port}"
    wait_for(lambda: key in client.get_prefix("/t/upstreams/")[0], 20, what="registered over TLS")
    client.put("/t/vassals/tls.ini", f"[uwsgi]\nsocket = 127.0.0.1:{port2}\nwsgi-file = "
               f"{a.root / 'app.py'}\nprocesses = 1\n".encode())
    a.wait_log(r"ready: 'tls.ini'")
    assert answer(port2).startswith("?")

    out = tmp_path / "u.conf"
    done = subprocess.run([*upstreams_cmd(etcd.url, out, "--once"), "--etcd-ca", str(certs.ca),
                           "--etcd-cert", str(certs.client_cert), "--etcd-key", str(certs.client_key)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert f"127.0.0.1:{port}" in out.read_text()
    refused = subprocess.run([*upstreams_cmd(etcd.url, tmp_path / "x.conf", "--once"), "--etcd-ca",
                              str(certs.ca)], capture_output=True, text=True, timeout=30)
    assert refused.returncode == 1 and not (tmp_path / "x.conf").exists(), refused.stderr
