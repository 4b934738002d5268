"""The ASGI lifespan protocol of a worker, and the app served when none could be loaded.

``Lifespan`` runs the app's ``lifespan`` scope around the worker's life (``lifespan`` option:
auto, on, off); ``not_loaded`` turns the master's WSGI 500 stand-in (need-app = false) into
an ASGI app.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from typing import Any

from emperor.protocol import asgi
from emperor.vassal.asgi_cycles import ASGIApp, Message

log = logging.getLogger("emperor.worker")


class Lifespan:
    """The ASGI lifespan protocol for one worker: startup before accepting, shutdown after.

    ``auto``: an app that raises or returns before reading its first lifespan event does not
    support lifespan, and is served without it. An app that fails after reading
    ``lifespan.startup`` (or sends ``lifespan.startup.failed``) cannot boot: the worker exits
    with status 22 and the vassal stops, so the emperor throttles it.
    """

    def __init__(self, app: Any, mode: str, wid: int) -> None:
        self.app = app
        self.mode = mode
        self.wid = wid
        self.state: dict[str, Any] = {}
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.reads = 0
        self.replies: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.active = False

    async def startup(self) -> bool:
        if self.mode == "off":
            return True
        scope = {"type": "lifespan", "asgi": dict(asgi.ASGI), "state": self.state}
        self.task = asyncio.get_running_loop().create_task(self._run(scope))
        await self.inbox.put({"type": "lifespan.startup"})
        kind, detail = await self.replies.get()
        if kind == "lifespan.startup.complete":
            self.active = True
            return True
        if kind == "ended" and self.reads == 0 and self.mode == "auto":
            log.info("worker %d: the app does not support ASGI lifespan (%s); serving without it",
                     self.wid, detail.strip().splitlines()[-1] if detail.strip() else "it returned")
            return True
        log.error("worker %d: ASGI lifespan startup failed: %s", self.wid,
                  detail or f"{kind} (lifespan = {self.mode})")
        return False

    async def shutdown(self) -> None:
        if not self.active:
            return
        await self.inbox.put({"type": "lifespan.shutdown"})
        kind, detail = await self.replies.get()
        if kind != "lifespan.shutdown.complete":
            log.error("worker %d: ASGI lifespan shutdown failed: %s", self.wid, detail or kind)

    async def _run(self, scope: dict[str, Any]) -> None:
        detail = ""
        try:
            await self.app(scope, self._receive, self._send)
        except Exception:
            detail = traceback.format_exc().rstrip()
        await self.replies.put(("ended", detail or "the app returned"))

    async def _receive(self) -> Message:
        self.reads += 1
        return await self.inbox.get()

    async def _send(self, message: Message) -> None:
        kind = message.get("type", "")
        if kind not in ("lifespan.startup.complete", "lifespan.startup.failed",
                        "lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            raise asgi.ResponseError(f"unexpected message type {kind!r} in a lifespan scope")
        await self.replies.put((kind, str(message.get("message", ""))))


def not_loaded(wsgi_stand_in: Any) -> ASGIApp:
    """need-app = false: the master put a WSGI 500 app in place of the one that failed to load."""
    captured: list[Any] = []
    body = b"".join(wsgi_stand_in({}, lambda status, headers, exc=None: captured.append(status)))
    text = body.decode("utf-8", "replace").strip()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 500,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": text.encode() + b"\n"})

    return app
