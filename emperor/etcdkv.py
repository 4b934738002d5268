"""The small part of etcd's v3 API the fleet uses, over etcd3gw (the JSON gateway client).

etcd3gw gives the HTTP session (TLS client certificates, CA), the URL layout and the error
mapping; this module adds what the fleet needs on top: several endpoints tried in turn (a
cluster member that is down costs one short timeout, then the next one is used), ranges that
keep the response header's revision, and a watch that reports a disconnect instead of
hanging, so callers can resume from the last revision they saw.

Every call has a timeout: nothing here may block a caller for long when etcd is gone.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

API_PATH = "/v3/"  # etcd >= 3.4 (Debian bookworm ships 3.4); no version probe per connection


class EtcdError(Exception):
    """etcd could not be reached or answered with an error; the message names the endpoint."""


class Compacted(EtcdError):
    """The revision to resume from was compacted away: list the prefix again."""


@dataclass(frozen=True)
class Tls:
    """etcd3gw's TLS settings, passed through: a CA bundle, a client certificate and its key."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class Event:
    kind: str  # "put" or "delete"
    key: str
    value: bytes
    revision: int  # the key's mod_revision


def parse_endpoints(spec: str) -> list[tuple[str, str, int]]:
    """``http://a:2379,https://b:2379`` -> [(protocol, host, port)]; ValueError names the bad one."""
    out: list[tuple[str, str, int]] = []
    for item in filter(None, (p.strip() for p in spec.split(","))):
        url = urllib.parse.urlsplit(item if "://" in item else f"http://{item}")
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"{item!r} is not an etcd endpoint (http://HOST:PORT or https://HOST:PORT)")
        try:
            port = url.port or 2379
        except ValueError:
            raise ValueError(f"{item!r}: bad port") from None
        out.append((url.scheme, url.hostname, port))
    if not out:
        raise ValueError("no etcd endpoint given")
    return out


def _b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def _unb64(data: str | None) -> bytes:
    return base64.b64decode(data) if data else b""


def range_end(prefix: str) -> str:
    """The end of the range of keys that start with ``prefix`` (its last byte plus one)."""
    raw = bytearray(prefix.encode())
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return _b64(b"\0")
    raw[-1] += 1
    return _b64(bytes(raw))


class Client:
    """One logical connection to an etcd cluster: endpoints tried in turn, every request bounded."""

    def __init__(self, endpoints: list[tuple[str, str, int]], timeout: float = 1.0, tls: Tls = Tls()) -> None:
        import etcd3gw  # the optional extra `fleet`: imported only when the fleet is configured

        self.endpoints = endpoints
        self.timeout = timeout
        self._clients = [etcd3gw.Etcd3Client(host=h, port=p, protocol=proto, ca_cert=tls.ca,
                                             cert_key=tls.key, cert_cert=tls.cert, timeout=timeout,
                                             api_path=API_PATH) for proto, h, p in endpoints]
        self._current = 0
        # per request, not only on the session: requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE
        # override a session's verify, and then the private CA would be ignored
        self._kw: dict[str, Any] = {"verify": tls.ca} if tls.ca else {}

    def describe(self) -> str:
        return ",".join(f"{p}://{h}:{port}" for p, h, port in self.endpoints)

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST to the current endpoint, then to each other one; EtcdError if none answers."""
        from etcd3gw import exceptions

        errors: list[str] = []
        for i in range(len(self._clients)):
            idx = (self._current + i) % len(self._clients)
            client = self._clients[idx]
            try:
                result: dict[str, Any] = client.post(client.get_url(path), json=body, **self._kw)
            except (exceptions.ConnectionFailedError, exceptions.ConnectionTimeoutError) as exc:
                errors.append(f"{client.base_url}: {_short(exc)}")
                continue
            except exceptions.Etcd3Exception as exc:
                raise EtcdError(f"{client.base_url}{path}: {_short(exc)}") from None
            except ValueError as exc:  # not JSON: not an etcd gateway
                raise EtcdError(f"{client.base_url}{path}: not an etcd answer ({exc})") from None
            self._current = idx
            return result
        raise EtcdError("; ".join(errors) or "no endpoint")

    # ---- leases and keys

    def grant(self, ttl: int) -> int:
        return int(self.post("/lease/grant", {"TTL": ttl, "ID": 0})["ID"])

    def keepalive(self, lease: int) -> int:
        """The lease's new TTL, or -1 when it has expired (its keys are gone)."""
        result = self.post("/lease/keepalive", {"ID": lease}).get("result", {})
        return int(result.get("TTL", -1))

    def revoke(self, lease: int) -> None:
        self.post("/kv/lease/revoke", {"ID": lease})

    def put(self, key: str, value: bytes, lease: int | None = None) -> None:
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = lease
        self.post("/kv/put", body)

    def delete(self, key: str) -> None:
        self.post("/kv/deleterange", {"key": _b64(key)})

    def get_prefix(self, prefix: str) -> tuple[dict[str, tuple[bytes, int]], int]:
        """Every key under ``prefix``: {key: (value, mod_revision)}, and the store's revision."""
        result = self.post("/kv/range", {"key": _b64(prefix), "range_end": range_end(prefix)})
        kvs = {base64.b64decode(kv["key"]).decode("utf-8", "surrogateescape"):
               (_unb64(kv.get("value")), int(kv.get("mod_revision", 0))) for kv in result.get("kvs", [])}
        return kvs, int(result.get("header", {}).get("revision", 0))

    def watch(self, prefix: str, start_revision: int, idle: float = 5.0) -> Iterator[Event]:
        """The events under ``prefix`` from ``start_revision`` on, as they happen.

        Ends (returns) after ``idle`` seconds without any news, so the caller can check its
        own state and resume from the last revision it saw; a lost connection raises
        EtcdError and a compacted revision raises Compacted.
        """
        import requests

        client = self._clients[self._current]
        body: dict[str, Any] = {"create_request": {"key": _b64(prefix), "range_end": range_end(prefix),
                                   "start_revision": start_revision}}
        try:
            resp = client.session.post(client.get_url("/watch"), json=body, stream=True,
                                       timeout=(self.timeout, idle), **self._kw)
        except requests.RequestException as exc:
            self._current = (self._current + 1) % len(self._clients)
            raise EtcdError(f"{client.base_url}: watch: {_short(exc)}") from None
        try:
            if resp.status_code != 200:
                raise EtcdError(f"{client.base_url}: watch: HTTP {resp.status_code}")
            for line in resp.iter_lines():
                if not line.strip():
                    continue
                result = json.loads(line).get("result", {})
                if int(result.get("compact_revision", 0) or 0) > 0:
                    raise Compacted(f"revision {start_revision} was compacted")
                if result.get("canceled"):
                    raise EtcdError(f"{client.base_url}: watch canceled: {result.get('cancel_reason', '')}")
                for ev in result.get("events", []):
                    kv = ev.get("kv", {})
                    yield Event("delete" if ev.get("type") == "DELETE" else "put",
                                base64.b64decode(kv.get("key", "")).decode("utf-8", "surrogateescape"),
                                _unb64(kv.get("value")), int(kv.get("mod_revision", 0)))
        except requests.exceptions.ConnectionError as exc:
            if "timed out" in str(exc).lower() or "Read timed out" in repr(exc):
                return  # idle: the caller resumes
            self._current = (self._current + 1) % len(self._clients)
            raise EtcdError(f"{client.base_url}: watch lost: {_short(exc)}") from None
        except requests.RequestException as exc:
            self._current = (self._current + 1) % len(self._clients)
            raise EtcdError(f"{client.base_url}: watch lost: {_short(exc)}") from None
        finally:
            resp.close()


def _short(exc: BaseException) -> str:
    # etcd3gw's exceptions keep their text in ``detail_text`` (str() is empty)
    text = str(exc).strip() or str(getattr(exc, "detail_text", "") or "").strip() or type(exc).__name__
    return text if len(text) < 200 else text[:200] + "..."


def require_client() -> None:
    """ValueError with the fix when etcd3gw (the optional extra ``fleet``) is not installed."""
    try:
        import etcd3gw  # noqa: F401
    except ImportError:
        raise ValueError("the etcd features need etcd3gw: pip install 'emperor[fleet]'") from None
