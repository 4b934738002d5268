#!/usr/bin/env python3
"""uwsgi binary protocol helpers for the benchmark rig (stdlib only).

As a library:   pack_request(vars, body, modifier1=0, modifier2=0) -> bytes
                parse_vars(block) -> list of (key, value) pairs (bytes)
                request(addr, vars, body=b"", timeout=5) -> (status, headers, body, raw)
                    addr is "unix:/path", "/path" or "host:port"

As a CLI:
  uwsgi_wire.py get ADDR [PATH]        one GET over the uwsgi protocol, prints the raw reply
  uwsgi_wire.py capture LISTEN OUT.jsonl [--reply http|status|bare|http10]
                                       [--linger S] [--max N]
        A fake uwsgi server: for every connection it records the packet header,
        the vars block (order and duplicates kept), the body (read by
        CONTENT_LENGTH), any extra bytes, and what the peer does after the reply
        (closes, sends another packet = keep-alive, or stays silent).
        LISTEN is "unix:/path" or "127.0.0.1:PORT". Loopback/unix only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import select
import socket
import struct
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any

StrOrBytes = str | bytes
Reply = tuple[int | None, list[tuple[str, str]], bytes, bytes]
Vars = Mapping[str, str] | Mapping[StrOrBytes, StrOrBytes] | Iterable[tuple[StrOrBytes, StrOrBytes]]


def pack_vars(pairs: Vars) -> bytes:
    out = bytearray()
    items = pairs.items() if hasattr(pairs, "items") else pairs
    for k, v in items:
        kb = k.encode("latin-1") if isinstance(k, str) else k
        vb = v.encode("latin-1") if isinstance(v, str) else v
        out += struct.pack("<H", len(kb)) + kb + struct.pack("<H", len(vb)) + vb
    return bytes(out)


def pack_request(pairs: Vars, body: bytes = b"", modifier1: int = 0, modifier2: int = 0) -> bytes:
    block = pack_vars(pairs)
    if len(block) > 0xFFFF:
        raise ValueError("vars block larger than 65535 bytes")
    return struct.pack("<BHB", modifier1, len(block), modifier2) + block + body


def parse_vars(block: bytes) -> list[tuple[bytes, bytes]]:
    pairs: list[tuple[bytes, bytes]] = []
    i, n = 0, len(block)
    while i < n:
        if i + 2 > n:
            raise ValueError(f"truncated key size at {i}")
        (kl,) = struct.unpack_from("<H", block, i)
        i += 2
        k = block[i:i + kl]
        i += kl
        if i + 2 > n:
            raise ValueError(f"truncated value size at {i}")
        (vl,) = struct.unpack_from("<H", block, i)
        i += 2
        v = block[i:i + vl]
        i += vl
        if len(k) != kl or len(v) != vl:
            raise ValueError("truncated key/value")
        pairs.append((k, v))
    return pairs


def _connect(addr: str, timeout: float) -> socket.socket:
    if addr.startswith("unix:"):
        addr = addr[5:]
    if addr.startswith(("/", "@")):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(("\0" + addr[1:]) if addr.startswith("@") else addr)
        return s
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout)
    return s


def default_vars(path: str = "/", method: str = "GET", host: str = "localhost", body: bytes = b"",
                 extra: Mapping[str, str] | None = None) -> dict[str, str]:
    path_info, _, qs = path.partition("?")
    v = {
        "REQUEST_METHOD": method, "REQUEST_URI": path, "PATH_INFO": path_info,
        "QUERY_STRING": qs, "SERVER_PROTOCOL": "HTTP/1.1", "SERVER_NAME": host,
        "SERVER_PORT": "80", "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "1",
        "HTTP_HOST": host, "CONTENT_TYPE": "", "CONTENT_LENGTH": str(len(body)) if body else "",
    }
    if extra:
        v.update(extra)
    return v


def request(addr: str, pairs: Vars, body: bytes = b"", timeout: float = 5.0, modifier1: int = 0,
            modifier2: int = 0) -> Reply:
    """Send one uwsgi request, read until the peer closes; parse an HTTP-ish reply."""
    s = _connect(addr, timeout)
    try:
        s.sendall(pack_request(pairs, body, modifier1, modifier2))
        chunks = []
        while True:
            d = s.recv(65536)
            if not d:
                break
            chunks.append(d)
    finally:
        s.close()
    raw = b"".join(chunks)
    head, _, rbody = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status: int | None = None
    headers: list[tuple[str, str]] = []
    first = lines[0] if lines else b""
    if first.startswith(b"HTTP/"):
        parts = first.split(b" ", 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
        lines = lines[1:]
    for ln in lines:
        k, _, v = ln.partition(b":")
        headers.append((k.strip().decode("latin-1"), v.strip().decode("latin-1")))
        if status is None and k.strip().lower() == b"status":
            status = int(v.strip()[:3])
    return status, headers, rbody, raw


def get(addr: str, path: str = "/", timeout: float = 5.0) -> Reply:
    return request(addr, default_vars(path), timeout=timeout)


# ---------------------------------------------------------------- capture
REPLIES: dict[str, bytes | None] = {
    "http": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\ncaptured\n",
    "http10": b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\ncaptured\n",
    "status": b"Status: 201 Created\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\ncaptured\n",
    "bare": b"Content-Type: text/plain\r\nContent-Length: 9\r\n\r\ncaptured\n",
    "noclen": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\ncaptured-no-content-length\n",
    "slow": None,  # sleeps SLOW_REPLY_S, then answers like "http"
}
SLOW_REPLY_S = 2.5


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        d = conn.recv(min(65536, n - len(buf)))
        if not d:
            break
        buf += d
    return bytes(buf)


def _handle(conn: socket.socket, peer: Any, reply: str, linger: float, extra_wait: float) -> dict[str, Any]:
    rec: dict[str, Any] = {"t": time.time(), "peer": str(peer), "packets": []}
    while True:
        hdr = _recv_exact(conn, 4)
        if len(hdr) < 4:
            rec["end"] = "peer closed" if not hdr else f"short header {hdr!r}"
            break
        m1, size, m2 = struct.unpack("<BHB", hdr)
        block = _recv_exact(conn, size)
        pkt: dict[str, Any] = {"modifier1": m1, "datasize": size, "modifier2": m2,
               "header_hex": hdr.hex()}
        try:
            pairs = parse_vars(block)
            pkt["vars"] = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in pairs]
        except ValueError as e:
            pkt["vars_error"] = str(e)
            pairs = []
        clen: int | None = None
        for k, v in pairs:
            if k == b"CONTENT_LENGTH" and v.strip():
                clen = int(v)
        body = _recv_exact(conn, clen) if clen else b""
        pkt["body_len"] = len(body)
        pkt["body_sha256"] = hashlib.sha256(body).hexdigest()
        pkt["body_head"] = body[:64].decode("latin-1")
        # anything beyond the declared body (e.g. a body sent without CONTENT_LENGTH)?
        extra = b""
        conn.setblocking(False)
        deadline = time.time() + extra_wait
        while time.time() < deadline:
            r, _, _ = select.select([conn], [], [], max(0.0, deadline - time.time()))
            if not r:
                break
            try:
                d = conn.recv(65536)
            except BlockingIOError:
                continue
            if not d:
                pkt["eof_before_reply"] = True  # peer half-closed its sending side
                break
            extra += d
        conn.setblocking(True)
        pkt["extra_bytes"] = len(extra)
        pkt["extra_head"] = extra[:64].decode("latin-1")
        this_reply = reply
        for k, v in pairs:  # per-request override: ?reply=status etc.
            if k == b"QUERY_STRING":
                for part in v.decode("latin-1").split("&"):
                    if part.startswith("reply=") and part[6:] in REPLIES:
                        this_reply = part[6:]
        pkt["reply"] = this_reply
        if this_reply == "slow":  # answer late (timeout tests)
            time.sleep(SLOW_REPLY_S)
            this_reply = "http"
        data = REPLIES[this_reply]
        assert data is not None
        conn.sendall(data)
        rec["packets"].append(pkt)
        # keep-alive probe: does the peer send another request on this connection?
        r, _, _ = select.select([conn], [], [], linger)
        if not r:
            rec["end"] = f"peer silent for {linger:.1f}s after reply; we closed"
            break
        peek = conn.recv(4, socket.MSG_PEEK)
        if not peek:
            rec["end"] = "peer closed after reply"
            break
        rec["keepalive_reuse"] = True  # loop: another packet on the same connection
    conn.close()
    return rec


def capture(listen: str, out: str, reply: str = "http", linger: float = 1.0, max_conns: int = 0,
            extra_wait: float = 0.2) -> None:
    if listen.startswith(("unix:", "/")):
        path = listen[5:] if listen.startswith("unix:") else listen
        if os.path.exists(path):
            os.unlink(path)
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        os.chmod(path, 0o666)
    else:
        host, port = listen.rsplit(":", 1)
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit("capture listens on loopback only")
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((host, int(port)))
    srv.listen(64)
    n = 0
    print(f"capturing on {listen} -> {out} (reply={reply})", flush=True)
    with open(out, "a") as fh:
        while not max_conns or n < max_conns:
            conn, peer = srv.accept()
            n += 1
            try:
                rec = _handle(conn, peer, reply, linger, extra_wait)
            except Exception as e:  # keep capturing
                rec = {"error": repr(e)}
            fh.write(json.dumps(rec) + "\n")
            fh.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("get")
    g.add_argument("addr")
    g.add_argument("path", nargs="?", default="/")
    c = sub.add_parser("capture")
    c.add_argument("listen")
    c.add_argument("out")
    c.add_argument("--reply", default="http", choices=sorted(REPLIES))
    c.add_argument("--linger", type=float, default=1.0)
    c.add_argument("--extra-wait", type=float, default=0.2)
    c.add_argument("--max", type=int, default=0)
    a = ap.parse_args(argv)
    if a.cmd == "get":
        st, _hd, _body, raw = get(a.addr, a.path)
        sys.stdout.buffer.write(raw)
        return 0 if st and 200 <= st < 300 else 1
    capture(a.listen, a.out, a.reply, a.linger, a.max, a.extra_wait)
    return 0


if __name__ == "__main__":
    sys.exit(main())
