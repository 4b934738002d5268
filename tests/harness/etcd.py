"""Private etcd members for the fleet tests: loopback free ports, a temp data dir, stopped by pid.

``Etcd.start(procs, tmp)`` runs one member; ``cluster(procs, tmp, 3)`` runs three that form one
cluster. Each member is a harness ``Proc`` of the test's ``procs`` group, so the fixture's
teardown stops it (and checks for orphans) even when the test fails.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import ssl
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .procs import Proc, ProcGroup, wait_for


def etcd_binary() -> str | None:
    """Debian's etcd-server installs /usr/bin/etcd (contrib/demo/setup.sh test installs it)."""
    return shutil.which("etcd") or (str(Path("/usr/bin/etcd")) if Path("/usr/bin/etcd").exists() else None)


@dataclass
class Member:
    name: str
    host: str
    client_port: int
    peer_port: int
    data_dir: Path
    proc: Proc | None = None
    prefix: list[str] = field(default_factory=list)  # e.g. ``ip netns exec NS`` (harness/netns.py)
    tls: Certs | None = None  # https with client-certificate auth

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    def healthy(self) -> bool:
        ctx = self.tls.client_context() if self.tls else None
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1, context=ctx) as resp:
                return bool(json.loads(resp.read()).get("health") in ("true", True))
        except (OSError, ValueError):
            return False


class _MemberExited(AssertionError):
    """A member's process ended while the cluster was starting (carries its log tail)."""

    def __init__(self, name: str, log: str) -> None:
        super().__init__(name)
        self.name, self.log = name, log


@dataclass
class Cluster:
    procs: ProcGroup
    members: list[Member] = field(default_factory=list)

    @property
    def endpoints(self) -> str:
        return ",".join(m.url for m in self.members if m.proc is not None and m.proc.alive())

    @property
    def url(self) -> str:
        return self.members[0].url

    def start(self, extra_env: dict[str, str] | None = None) -> Cluster:
        """Start every member and wait until all are healthy.

        A loopback member's ports are free when picked (``_two_ports``), which can lose a race with another
        process (an outgoing connection's ephemeral port, say): etcd then exits with "address
        already in use". That is retried with fresh ports, twice; any other early exit, or a member
        still unhealthy at the deadline, fails with the members' log tails.
        """
        for attempt in range(3):
            self._spawn(extra_env)
            try:
                wait_for(self._all_healthy, timeout=20, what="etcd healthy")
                return self
            except _MemberExited as e:
                if attempt == 2 or "address already in use" not in e.log or not self._reroll_ports():
                    raise AssertionError(f"etcd member {e.name} exited before it was healthy:\n"
                                         f"{e.log}") from None
                self.stop()
            except AssertionError as e:
                raise AssertionError(f"{e}\n{self._log_tails()}") from None
        raise AssertionError("unreachable")

    def _spawn(self, extra_env: dict[str, str] | None) -> None:
        binary = etcd_binary()
        assert binary, "etcd is not installed (bash contrib/demo/setup.sh test installs etcd-server)"
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        token = f"emperor-test-{self.members[0].client_port}"  # one per cluster, the same on each member
        for m in self.members:
            shutil.rmtree(m.data_dir, ignore_errors=True)  # a retry starts a new cluster
            m.data_dir.mkdir(parents=True, exist_ok=True)
            cmd = [binary, "--name", m.name, "--data-dir", str(m.data_dir),
                   "--listen-client-urls", m.url, "--advertise-client-urls", m.url,
                   "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
                   "--initial-cluster", initial, "--initial-cluster-state", "new",
                   "--initial-cluster-token", token,
                   "--heartbeat-interval", "50", "--election-timeout", "500", "--log-level", "warn"]
            if m.tls:
                cmd += ["--cert-file", str(m.tls.server_cert), "--key-file", str(m.tls.server_key),
                        "--trusted-ca-file", str(m.tls.ca), "--client-cert-auth"]
            m.proc = self.procs.start([*m.prefix, *cmd], name=f"etcd-{m.name}", env=extra_env or {})

    def _all_healthy(self) -> bool:
        for m in self.members:
            if m.proc is not None and not m.proc.alive():
                raise _MemberExited(m.name, m.proc.log_tail())
        return all(m.healthy() for m in self.members)

    def _reroll_ports(self) -> bool:
        """New free ports for loopback members; False when a member's ports are fixed (a netns)."""
        if any(m.prefix for m in self.members):
            return False
        for m in self.members:
            m.client_port, m.peer_port = _two_ports(m.host)
        return True

    def _log_tails(self) -> str:
        return "\n".join(f"--- etcd-{m.name} log tail:\n{m.proc.log_tail()}" for m in self.members
                         if m.proc is not None)

    def leader(self) -> Member:
        """The member that is the raft leader now (asked through the v3 gateway's status call)."""
        for m in self.members:
            if m.proc is None or not m.proc.alive():
                continue
            req = urllib.request.Request(f"{m.url}/v3/maintenance/status", data=b"{}", method="POST")
            try:
                with urllib.request.urlopen(req, timeout=2) as resp:
                    status = json.loads(resp.read())
            except (OSError, ValueError):
                continue
            if status.get("leader") and status["leader"] == status.get("header", {}).get("member_id"):
                return m
        raise AssertionError("no leader among the live members")

    def stop_member(self, m: Member, sig: int = signal.SIGTERM) -> None:
        assert m.proc is not None
        self.procs.stop(m.proc, sig=sig)

    def stop(self) -> None:
        for m in self.members:
            if m.proc is not None and m.proc.alive():
                self.procs.stop(m.proc)


@dataclass
class Certs:
    """A private CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl."""

    dir: Path

    ca = property(lambda self: self.dir / "ca.pem")
    server_cert = property(lambda self: self.dir / "server.pem")
    server_key = property(lambda self: self.dir / "server.key")
    client_cert = property(lambda self: self.dir / "client.pem")
    client_key = property(lambda self: self.dir / "client.key")

    @classmethod
    def make(cls, directory: Path) -> Certs:
        import subprocess

        directory.mkdir(parents=True, exist_ok=True)
        c = cls(directory)

        def run(*args: str) -> None:
            subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=emperor-test-ca",
            "-keyout", str(directory / "ca.key"), "-out", str(c.ca))
        # clientAuth too: etcd's JSON gateway dials etcd's own gRPC port with the server certificate
        server_ext = "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth"
        client_ext = "extendedKeyUsage=clientAuth"
        for name, cn, ext in (("server", "127.0.0.1", server_ext), ("client", "root", client_ext)):
            ext_file = directory / f"{name}.ext"
            ext_file.write_text(ext + "\n")
            run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}", "-keyout",
                str(directory / f"{name}.key"), "-out", str(directory / f"{name}.csr"))
            run("x509", "-req", "-in", str(directory / f"{name}.csr"), "-CA", str(c.ca), "-CAkey",
                str(directory / "ca.key"), "-CAcreateserial", "-days", "2", "-extfile", str(ext_file),
                "-out", str(directory / f"{name}.pem"))
        return c

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.load_cert_chain(str(self.client_cert), str(self.client_key))
        return ctx


def _two_ports(host: str) -> tuple[int, int]:
    """Two distinct free ports: both are held open while the second is taken, so they differ."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as a, socket.socket(fam, socket.SOCK_STREAM) as b:
        a.bind((host, 0))
        b.bind((host, 0))
        return int(a.getsockname()[1]), int(b.getsockname()[1])


def cluster(procs: ProcGroup, tmp: Path, size: int = 1,
            hosts: list[tuple[str, list[str]]] | None = None, tls: Certs | None = None) -> Cluster:
    """``size`` members on loopback, or one per ``(address, command prefix)`` of ``hosts`` (a member
    in a namespace of its own uses 2379/2380 there), each with its own data dir."""
    c = Cluster(procs)
    for i in range(len(hosts) if hosts else size):
        host, prefix = hosts[i] if hosts else ("127.0.0.1", [])
        ports = (2379, 2380) if prefix else _two_ports(host)
        c.members.append(Member(f"m{i}", host, *ports, tmp / f"etcd-m{i}", prefix=list(prefix), tls=tls))
    return c.start()
