"""The control plane inside the emperor: a ROUTER for commands, a PUB for events, no thread of ours.

The emperor's selector watches the ROUTER's ``zmq.FD``. That fd is edge-triggered (it
signals "something may have changed", not "a message is waiting"), so ``service()`` reads
``zmq.EVENTS`` and drains with NOBLOCK, at most ``BURST`` requests per call; the emperor
calls it on every loop iteration and asks for an immediate next iteration while
``pending()`` is true. A command runs to completion between two iterations, so commands
never race each other or the loop (no global lock, no "already running a command").

Every request is untrusted: a request over ``MAX_MESSAGE`` bytes gets a TOO_LARGE error
reply unparsed, and ``MAXMSGSIZE`` makes ZMQ drop a peer that sends more than
``TRANSPORT_LIMIT`` before any of it is buffered for us; anything that is not one JSON
object with a known command and valid properties gets an error reply; a command that
raises is logged and answered with INTERNAL. Nothing a peer sends can stop the loop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import zmq

from emperor import addresses
from emperor.control import protocol
from emperor.control.api import EmperorAPI, Later
from emperor.control.commands import REGISTRY, validate
from emperor.control.protocol import MAX_MESSAGE, TRANSPORT_LIMIT, ControlError, Errno, Identity

log = logging.getLogger("emperor.control")

BURST = 32


class ControlServer:
    def __init__(self, endpoint: str, execute: Callable[[str, dict[str, Any]], dict[str, Any] | Later],
                 default: bool, identity: Identity | None = None) -> None:
        self.endpoint = endpoint
        self.identity = identity
        self.me: dict[str, Any] = {"key": identity.key, "of": identity.of, "pid": os.getpid()} \
            if identity is not None else {}
        self.events_endpoint = protocol.events_endpoint(endpoint)
        self.execute = execute
        self.paths: list[str] = []
        self.ctx = zmq.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.pub = self.ctx.socket(zmq.PUB)
        try:
            for sock in (self.router, self.pub):
                sock.setsockopt(zmq.LINGER, 0)
            self.router.setsockopt(zmq.MAXMSGSIZE, TRANSPORT_LIMIT)
            self.router.setsockopt(zmq.RCVHWM, 256)
            self.router.setsockopt(zmq.SNDHWM, 256)
            self.pub.setsockopt(zmq.SNDHWM, 10_000)  # a slow subscriber loses events, never blocks us
            self._bind(self.router, endpoint, default)
            self._bind(self.pub, self.events_endpoint, default)
        except BaseException:
            self.close()
            raise

    def _bind(self, sock: zmq.Socket[bytes], endpoint: str, default: bool) -> None:
        path = protocol.ipc_path(endpoint)
        if path is None:
            host = endpoint[len("tcp://"):].rpartition(":")[0].strip("[]")
            loopback = host in ("127.0.0.1", "localhost", "::1")
            log.warning("control: %s is TCP: there is no authentication, anyone who can connect can "
                        "stop and reload vassals%s", endpoint,
                        "" if loopback else " (and it is NOT a loopback address)")
            sock.bind(endpoint)
            return
        protocol.private_dir(path, create=default)
        try:  # ZMQ's ipc bind would silently take over a live socket: bind_unix refuses a live one
            addresses.bind_unix(path, lambda: sock.bind(endpoint), private=True, mode=0o600)
        except addresses.AddressError as exc:
            raise addresses.AddressError(f"{exc} (another emperor? set emperor-control to another "
                                         "endpoint)") from None
        self.paths.append(path)

    # ---- the emperor's loop ---------------------------------------------------------------
    def fileno(self) -> int:
        return int(self.router.getsockopt(zmq.FD))

    def pending(self) -> bool:
        try:
            return bool(int(self.router.getsockopt(zmq.EVENTS)) & zmq.POLLIN)
        except zmq.ZMQError:
            return False

    def service(self) -> None:
        """Answer up to BURST waiting requests; never blocks."""
        for _ in range(BURST):
            try:
                frames = self.router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError as exc:
                log.error("control: receive failed: %s", exc)
                return
            if len(frames) < 2:
                continue
            envelope, body = frames[:-1], frames[-1]
            extra = len(envelope) > 2 or (len(envelope) == 2 and envelope[1] != b"")  # REQ adds b""
            reply = self.answer(body, extra_frames=extra)
            if isinstance(reply, Later):  # the operator finishes it when the vassal answers
                reply.send = self._sender(envelope, reply.request_id)
                continue
            self._send(envelope, reply)

    def _send(self, envelope: list[bytes], reply: bytes) -> None:
        with contextlib.suppress(zmq.ZMQError):  # the peer may be gone; ROUTER drops it then
            self.router.send_multipart([*envelope, reply], zmq.NOBLOCK)

    def _sender(self, envelope: list[bytes], req_id: Any) -> Callable[[dict[str, Any] | ControlError], None]:
        def send(result: dict[str, Any] | ControlError) -> None:
            self._send(envelope, self._encode(req_id, result))
        return send

    def _encode(self, req_id: Any, result: dict[str, Any] | ControlError) -> bytes:
        if isinstance(result, ControlError):
            return json.dumps({"id": req_id, "status": "error", "errno": int(result.errno),
                               "reason": result.reason, "emperor": self.me}).encode()
        return json.dumps({"id": req_id, "status": "ok", **result, "emperor": self.me}).encode()

    def answer(self, body: bytes, extra_frames: bool = False) -> bytes | Later:
        """One request frame -> one reply frame (JSON), or a ``Later`` the operator will finish.

        Every reply says which emperor answered (``emperor``: key, ini or directories, pid).
        A request whose ``emperor`` names another key is refused before anything runs.
        """
        req_id: Any = None
        try:
            if extra_frames:
                raise ControlError(Errno.MESSAGE_ERROR, "expected one JSON frame per request")
            if len(body) > MAX_MESSAGE:
                raise ControlError(Errno.TOO_LARGE, f"request of {len(body)} bytes; the limit is "
                                   f"{MAX_MESSAGE}")
            try:
                req = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                raise ControlError(Errno.INVALID_JSON, "the request is not UTF-8 JSON") from None
            if not isinstance(req, dict):
                raise ControlError(Errno.INVALID_JSON, "the request must be a JSON object")
            req_id = req.get("id")
            if not isinstance(req_id, str | int | type(None)) or isinstance(req_id, bool):
                req_id = None
                raise ControlError(Errno.MESSAGE_ERROR, "id must be a string or an integer")
            name = req.get("command")
            if not isinstance(name, str):
                raise ControlError(Errno.MESSAGE_ERROR, "command must be a string")
            cmd = REGISTRY.get(name)
            if cmd is None:
                shown = name[:40].encode("ascii", "backslashreplace").decode()
                raise ControlError(Errno.UNKNOWN_COMMAND,
                                   f"unknown command {shown!r}; known: {', '.join(sorted(REGISTRY))}")
            meant = req.get("emperor")
            if meant is not None and self.identity is not None and meant != self.identity.key:
                raise ControlError(Errno.WRONG_EMPEROR, f"this is the emperor of {self.identity.of} (pid "
                                   f"{os.getpid()}), not the one the request was meant for; nothing done")
            props = validate(cmd, req.get("properties"))
            try:
                result = self.execute(name, props)
            except ControlError:
                raise
            except Exception:
                log.exception("control: command %s failed", name)
                raise ControlError(Errno.INTERNAL, f"{name}: internal error (see the emperor's log)") \
                    from None
            if isinstance(result, Later):
                result.request_id = req_id
                return result
            return self._encode(req_id, result)
        except ControlError as exc:
            return self._encode(req_id, exc)

    def publish(self, vassal: str, event: str, data: dict[str, Any]) -> None:
        """Send one event (never blocks; dropped when no one listens or a subscriber lags)."""
        body = json.dumps({"vassal": vassal, "event": event, "time": round(time.time(), 3), **data})
        with contextlib.suppress(zmq.ZMQError):
            self.pub.send_multipart([protocol.topic(vassal, event).encode(), body.encode()], zmq.NOBLOCK)

    def close(self) -> None:
        for sock in (self.router, self.pub):
            with contextlib.suppress(zmq.ZMQError):
                sock.close(linger=0)
        self.ctx.term()
        for path in self.paths:
            with contextlib.suppress(OSError):
                os.unlink(path)
        self.paths = []



class ControlBootError(Exception):
    """The control plane cannot listen: the emperor refuses to start (never runs without it unasked)."""


def open_server(api: EmperorAPI, configured: str | None, identity: Identity) -> ControlServer | None:
    """Start the control plane for ``emperor-control`` (default: the endpoint of ``identity``).

    A busy endpoint (another emperor listens there), or one that cannot be bound, raises
    ControlBootError: an emperor without its control plane would leave ``emperor ctl``
    talking to the other emperor. ``off`` returns None.
    """
    try:
        endpoint = protocol.normalize(configured, identity.key)
    except ValueError as exc:
        raise ControlBootError(f"emperor-control: {exc}") from None
    if endpoint is None:
        log.info("control: off")
        return None
    def execute(name: str, props: dict[str, Any]) -> dict[str, Any] | Later:
        return REGISTRY[name].run(api, props)

    try:
        server = ControlServer(endpoint, execute, default=not configured, identity=identity)
    except (OSError, zmq.ZMQError, ValueError) as exc:
        raise ControlBootError(f"emperor-control: cannot listen on {endpoint}: {exc}") from None
    log.info("control: listening on %s (events on %s)", server.endpoint, server.events_endpoint)
    return server
