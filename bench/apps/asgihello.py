"""Plain ASGI app for the benchmark rig (no framework).

GET /        -> 200, 13 bytes "Hello, World!" (the benchmark target)
GET /__gen   -> 200, JSON {"pid":..., "loaded":...} (reload detection)
Lifespan events are acknowledged, so every server runs it with lifespan on.
"""
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

LOADED = time.time()
BODY = b"Hello, World!"  # 13 bytes
HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"13")]

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["path"] == "/__gen":
        body = json.dumps({"pid": os.getpid(), "ppid": os.getppid(), "loaded": LOADED}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


application = app
