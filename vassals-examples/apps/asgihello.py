"""A plain ASGI application (no framework): what `asgi = asgihello:app` serves.

``/`` answers at once; ``/clock`` streams one line a second for five seconds (each line is
sent as it is made: nginx passes it on because of ``X-Accel-Buffering: no``). The lifespan
startup records when this worker started, and every request sees it in ``scope["state"]``.
"""

import asyncio
import time


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["started"] = time.strftime("%H:%M:%S")
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    path = scope["path"][len(scope["root_path"]):] or "/"
    if path == "/clock":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"x-accel-buffering", b"no")]})
        for _ in range(5):
            await send({"type": "http.response.body", "body": time.strftime("%H:%M:%S\n").encode(),
                        "more_body": True})
            await asyncio.sleep(1)
        await send({"type": "http.response.body", "body": b""})
        return
    body = f"Hello from ASGI! (worker up since {scope['state'].get('started', '?')})\n".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
