"""Plain WSGI app for the benchmark rig.

GET /        -> 200, 13 bytes "Hello, World!" (the benchmark target)
GET /__gen   -> 200, JSON {"pid":..., "loaded":...}: worker pid and the time this
                module was imported; used to detect that a reload really happened.
"""
import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

LOADED = time.time()
BODY = b"Hello, World!"  # 13 bytes


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ.get("PATH_INFO") == "/__gen":
        body = json.dumps({"pid": os.getpid(), "ppid": os.getppid(),
                           "loaded": LOADED}).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", "13")])
    return [BODY]


app = application
