"""https-socket: TLS on a worker-served HTTP listener, with a self-signed certificate made by
the test (openssl), keep-alive over TLS, and certificate rotation without a restart."""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
from harness import ProcGroup, free_port, wait_for
from harness.http_client import RawHTTP, request_bytes
from vassal_runner import start_vassal

OPENSSL = shutil.which("openssl")  # contrib/demo/setup.sh test installs it; no skip when missing
pytestmark = pytest.mark.live  # real processes (README: Tests)


def make_cert(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run([OPENSSL or "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", f"/CN={name}", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


class TLSClient(RawHTTP):
    def __init__(self, port: int, cafile: Path) -> None:
        ctx = ssl.create_default_context(cafile=str(cafile))
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        self.buf = b""
        self.timeout = 5.0

    def peer_cn(self) -> str:
        cert = self.sock.getpeercert()  # type: ignore[attr-defined]
        return dict(x[0] for x in cert["subject"])["commonName"]


def test_https_get_keepalive_and_environ(procs: ProcGroup, tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path, "first")
    port = free_port()
    start_vassal(procs, "--https-socket", f"127.0.0.1:{port},{cert},{key}", "--processes", "2")
    with TLSClient(port, cert) as c:
        for i in range(3):
            c.send(request_bytes("GET", f"/env?i={i}"))
            env = json.loads(c.response().body)
            assert env["wsgi.url_scheme"] == "https" and env["HTTPS"] == "on"
        c.send(request_bytes("POST", "/echo", body=os.urandom(300000)))
        assert len(c.response().body) == 300000
        c.send(request_bytes("GET", "/sendfile?n=10000"))  # file_wrapper through TLS: no sendfile
        r = c.response()
        assert r.body == b"0123456789" * 10000


def test_certificate_rotation_without_restart(procs: ProcGroup, tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path, "first")
    port = free_port()
    live_cert, live_key = tmp_path / "live.crt", tmp_path / "live.key"
    shutil.copy(cert, live_cert)
    shutil.copy(key, live_key)
    proc = start_vassal(procs, "--https-socket", f"127.0.0.1:{port},{live_cert},{live_key}",
                        "--processes", "1")
    old = TLSClient(port, cert)
    try:
        old.send(request_bytes("GET", "/pid"))
        pid_before = old.response().body
        assert old.peer_cn() == "first"
        new_cert, new_key = make_cert(tmp_path, "second")
        for src, dst in ((new_key, live_key), (new_cert, live_cert)):
            tmp = dst.with_suffix(".tmp")
            shutil.copy(src, tmp)
            os.replace(tmp, dst)

        def rotated() -> bool:
            try:
                with TLSClient(port, new_cert) as c:
                    c.send(request_bytes("GET", "/pid"))
                    return c.response().body == pid_before and c.peer_cn() == "second"
            except ssl.SSLError:
                return False  # still the old certificate (the new CA does not verify it)

        # the same worker process (no restart) now hands out the new certificate
        wait_for(rotated, timeout=10, what="the new certificate in use")
        assert proc.alive
    finally:
        old.close()


def test_bad_certificate_refuses_to_start(procs: ProcGroup, tmp_path: Path) -> None:
    (tmp_path / "bad.crt").write_text("not a certificate")
    proc = start_vassal(procs, "--https-socket", f"127.0.0.1:{free_port()},{tmp_path / 'bad.crt'},"
                        f"{tmp_path / 'bad.crt'}", ready=False)
    assert proc.wait(timeout=15) == 78
    assert "cannot load" in proc.log_text()


def test_plain_http_to_https_socket_is_dropped(procs: ProcGroup, tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path, "first")
    port = free_port()
    start_vassal(procs, "--https-socket", f"127.0.0.1:{port},{cert},{key}", "--processes", "1",
                 "--socket-timeout", "1")
    with RawHTTP(("127.0.0.1", port)) as c:
        c.send(request_bytes("GET", "/"))
        assert c.closed_by_peer(within=5)
    with TLSClient(port, cert) as c:  # the worker is free again
        c.send(request_bytes("GET", "/ok"))
        assert c.response().body == b"hello /ok"
