"""A plain ASGI 3 app (no framework) for tests/test_asgi*.py: one path per behaviour to test.

``ASGI_EVENTS`` (env): a file where lifespan and disconnect events are appended, one line each.
``ASGI_FAIL_STARTUP`` (env): raise in lifespan startup, after reading ``lifespan.startup``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any
from urllib.parse import parse_qs

active = 0  # requests in this worker's app right now
peak = 0


def _event(text: str) -> None:
    path = os.environ.get("ASGI_EVENTS")
    if path:
        with open(path, "a") as f:
            f.write(f"{text} {os.getpid()}\n")


async def _lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if os.environ.get("ASGI_FAIL_STARTUP"):
                raise RuntimeError("database unreachable (ASGI_FAIL_STARTUP)")
            scope["state"]["started_by"] = os.getpid()
            _event("startup")
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            _event("shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _websocket(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert (await receive())["type"] == "websocket.connect"
    path = scope["path"]
    if path == "/ws-refuse":
        await send({"type": "websocket.close"})
        return
    subprotocol = scope["subprotocols"][0] if scope["subprotocols"] else None
    await send({"type": "websocket.accept", "subprotocol": subprotocol})
    if path == "/ws-raise":
        raise RuntimeError("the WebSocket app failed")
    if path == "/ws-scope":
        await send({"type": "websocket.send", "text": json.dumps(_jsonable(scope))})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            _event(f"ws-disconnect-{message['code']}")
            return
        if message.get("text") == "close-me":
            await send({"type": "websocket.close", "code": 4000, "reason": "asked to"})
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


async def _text(send: Any, body: bytes, status: int = 200, headers: list[Any] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


async def _read_all(receive: Any) -> tuple[bytes, int]:
    body, events = b"", 0
    while True:
        message = await receive()
        events += 1
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body, events


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global active, peak
    if scope["type"] == "lifespan":
        await _lifespan(scope, receive, send)
        return
    if scope["type"] == "websocket":
        await _websocket(scope, receive, send)
        return
    path = scope["path"].removeprefix(scope["root_path"])
    q = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    if path == "/scope":
        out = _jsonable({k: v for k, v in scope.items()})
        out["pid"] = os.getpid()
        out["loop"] = type(asyncio.get_running_loop()).__module__
        await _text(send, json.dumps(out).encode(), headers=[(b"content-type", b"application/json")])
    elif path == "/echo":  # streams the body back as it arrives
        await send({"type": "http.response.start", "status": 200, "headers": []})
        events = 0
        while True:
            message = await receive()
            events += 1
            await send({"type": "http.response.body", "body": message.get("body", b""), "more_body": True})
            if not message.get("more_body"):
                break
        await send({"type": "http.response.body", "body": b""})
        _event(f"echo-events {events}")
    elif path == "/big":  # n bytes in 64 KiB sends: the writer's flow control at work
        n = int(q.get("n", "1000000"))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(n).encode())]})
        chunk = b"0123456789abcdef" * 4096
        while n > 0:
            await send({"type": "http.response.body", "body": chunk[:n], "more_body": n > len(chunk)})
            n -= len(chunk)
    elif path == "/count":
        body, events = await _read_all(receive)
        await _text(send, json.dumps({"bytes": len(body), "events": events}).encode())
    elif path == "/stream":  # n chunks, `delay` seconds apart, each sent at once
        n, delay = int(q.get("n", "5")), float(q.get("delay", "0.2"))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"x-accel-buffering", b"no"), (b"content-type", b"text/plain")]})
        for i in range(n):
            await send({"type": "http.response.body", "body": f"{time.time():.6f} {i}\n".encode(),
                        "more_body": True})
            await asyncio.sleep(delay)
        await send({"type": "http.response.body", "body": b"end\n"})
    elif path == "/sleep":  # a slow request that does not block the loop
        active += 1
        peak = max(peak, active)
        try:
            await asyncio.sleep(float(q.get("s", "1")))
        finally:
            active -= 1
        await _text(send, json.dumps({"peak": peak, "pid": os.getpid()}).encode())
    elif path == "/block":  # blocks the whole event loop (harakiri must kill the worker)
        time.sleep(float(q.get("s", "30")))
        await _text(send, b"woke up")
    elif path == "/wait-disconnect":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-accel-buffering", b"no")]})
        await send({"type": "http.response.body", "body": b"waiting\n", "more_body": True})
        while (await receive())["type"] != "http.disconnect":
            pass
        _event("disconnect")
    elif path == "/state":
        await _text(send, json.dumps(scope["state"]).encode())
    elif path == "/nostart":
        return
    elif path == "/twostarts":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.start", "status": 200, "headers": []})
    elif path == "/raise":
        raise RuntimeError("the app failed before answering")
    elif path == "/raise-mid":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-accel-buffering", b"no")]})
        await send({"type": "http.response.body", "body": b"partial " * 1000, "more_body": True})
        await asyncio.sleep(0.05)
        raise RuntimeError("the app failed mid-stream")
    elif path == "/short":  # declares 10 bytes, sends 5 (a broken app: the reply must not look whole)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
        await send({"type": "http.response.body", "body": b"12345"})
    elif path == "/badheader":
        await _text(send, b"x", headers=[(b"x-split", b"a\r\nSet-Cookie: evil=1")])
    elif path == "/strheader":
        await send({"type": "http.response.start", "status": 200, "headers": [("x-str", "not bytes")]})
        await send({"type": "http.response.body", "body": b"x"})
    else:
        await _text(send, b"hello asgi\n" if path == "/" else b"not found\n", 200 if path == "/" else 404)


async def http_only(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An app without lifespan support: it refuses other scopes before reading anything."""
    assert scope["type"] == "http", "only http"
    await _text(send, b"http only\n")
