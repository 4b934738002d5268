"""The ``emperor ctl`` side of the wire: one DEALER per call, a deadline, and errors that say what to do.

A call never hangs: if no emperor listens at the endpoint (no socket file for ``ipc://``),
it fails at once; if nothing answers within ``timeout`` seconds it fails with the
endpoint in the message (circus's "Timed out" without a hint was its most reported
problem). A connection the emperor drops without a reply (a request over
``MAX_MESSAGE``, or a frame ZMQ refuses) is reported as such, not as a time-out.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from emperor.control import protocol
from emperor.control.protocol import MAX_MESSAGE, TRANSPORT_LIMIT, ControlError, Errno


class Client:
    def __init__(self, endpoint: str, timeout: float = 5.0, emperor: str | None = None) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.emperor = emperor  # the identity key the answering emperor must have (None: any)

    def call(self, command: str, **properties: Any) -> dict[str, Any]:
        """Send one command; return the reply's fields, or raise ControlError (with the reply's errno)."""
        req_id = uuid.uuid4().hex[:12]
        request: dict[str, Any] = {"id": req_id, "command": command, "properties": properties}
        if self.emperor is not None:
            request["emperor"] = self.emperor
        body = json.dumps(request).encode()
        if len(body) > MAX_MESSAGE:
            raise ControlError(Errno.TOO_LARGE, f"request of {len(body)} bytes; the limit is {MAX_MESSAGE}")
        reply = self.exchange(body)
        try:
            data = json.loads(reply)
        except ValueError:
            raise ControlError(Errno.INVALID_JSON,
                               f"the emperor sent a reply that is not JSON: {reply[:80]!r}") from None
        if not isinstance(data, dict):
            raise ControlError(Errno.INVALID_JSON, "the emperor's reply is not a JSON object")
        if data.get("status") != "ok":
            try:
                errno = Errno(int(data.get("errno", Errno.INTERNAL)))
            except ValueError:
                errno = Errno.INTERNAL
            raise ControlError(errno, str(data.get("reason", "error")))
        me = data.get("emperor")
        if self.emperor is not None and not (isinstance(me, dict) and me.get("key") == self.emperor):
            of = me.get("of") if isinstance(me, dict) else "an emperor that does not say which it is"
            raise ControlError(Errno.WRONG_EMPEROR, f"the emperor at {self.endpoint} is the one of {of}, "
                               "not the one of --ini")
        return data

    def exchange(self, body: bytes) -> bytes:
        """Raw: one frame out, one frame back (tests use it to send malformed requests)."""
        self._check_endpoint()
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDTIMEO, max(1, int(self.timeout * 1000)))  # no peer yet: do not wait forever
        monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        try:
            sock.connect(self.endpoint)
            deadline = time.monotonic() + self.timeout
            try:
                sock.send(body)
            except zmq.Again:
                raise self._no_reply() from None
            poller = zmq.Poller()
            poller.register(sock, zmq.POLLIN)
            poller.register(monitor, zmq.POLLIN)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._no_reply()
                events = dict(poller.poll(int(left * 1000) + 1))
                if sock in events:
                    return sock.recv()
                if monitor in events:
                    recv_monitor_message(monitor)
                    raise ControlError(Errno.TOO_LARGE, f"the emperor at {self.endpoint} closed the "
                                       "connection without a reply: the request was over the transport "
                                       f"limit of {TRANSPORT_LIMIT} bytes")
        finally:
            sock.disable_monitor()
            monitor.close(linger=0)
            sock.close(linger=0)

    def _no_reply(self) -> ControlError:
        return ControlError(Errno.NO_EMPEROR, f"no reply from an emperor at {self.endpoint} within "
                            f"{self.timeout:g} s (is it running, and is this its emperor-control endpoint? "
                            "try --ini EMPEROR.INI)")

    def events(self, endpoint: str, vassal: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """Subscribe to the PUB endpoint; yield (topic, event) until the caller stops iterating."""
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.MAXMSGSIZE, TRANSPORT_LIMIT)
        sub.setsockopt_string(zmq.SUBSCRIBE, protocol.topic(vassal, "") if vassal else "vassal.")
        sub.connect(endpoint)
        try:
            while True:
                if not sub.poll(1000):
                    continue
                frames = sub.recv_multipart()
                if len(frames) != 2:
                    continue
                try:
                    yield frames[0].decode("utf-8", "replace"), json.loads(frames[1])
                except ValueError:
                    continue
        finally:
            sub.close(linger=0)

    def _check_endpoint(self) -> None:
        path = protocol.ipc_path(self.endpoint)
        if path is not None and not os.path.exists(path):
            raise ControlError(Errno.NO_EMPEROR, f"no emperor listening at {self.endpoint} (no such socket "
                               "file); is it running? give --endpoint, or --ini with its emperor.ini")
