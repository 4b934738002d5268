"""Slow plain WSGI app (broodlord / autoscaling experiments).

Every request sleeps SLOW_APP_DELAY seconds (default 0.05) and answers with the
serving process's pid, so a load generator can count how many distinct
processes (workers + zergs) served it.
"""
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

DELAY = float(os.environ.get("SLOW_APP_DELAY", "0.05"))


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    time.sleep(DELAY)
    body = f"slow pid={os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


app = application
