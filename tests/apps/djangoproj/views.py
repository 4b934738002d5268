"""Async views of the test project: what each returns lets the tests check Django's view of
the ASGI scope (script prefix, path, host) and that bodies go both ways unaltered."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import reverse


async def hello(request: HttpRequest) -> JsonResponse:
    """reverse() follows the script prefix Django takes from the scope's root_path."""
    return JsonResponse({
        "framework": "django",
        "settings": os.environ.get("DJANGO_SETTINGS_MODULE"),
        "pid": os.getpid(),
        "method": request.method,
        "q": request.GET.get("q"),
        "path": request.path,
        "path_info": request.path_info,
        "script_name": request.META.get("SCRIPT_NAME"),
        "reversed": reverse("item", args=[7]),
        "absolute": request.build_absolute_uri(reverse("hello")),
        "scheme": request.scheme,
    })


async def item(request: HttpRequest, item_id: int) -> JsonResponse:
    return JsonResponse({"id": item_id, "path": request.path})


async def echo(request: HttpRequest) -> HttpResponse:
    """The request body back, as Django read it from the http.request events."""
    if request.method != "POST":
        return HttpResponse(status=405, headers={"Allow": "POST"})
    body = request.body
    return HttpResponse(body, content_type=request.content_type or "application/octet-stream",
                        headers={"X-Body-Length": str(len(body))})


async def _lines(n: int, delay: float) -> AsyncIterator[bytes]:
    for i in range(n):
        yield f"{time.time():.6f} {i}\n".encode()  # the send time, for the client's lag check
        await asyncio.sleep(delay)
    yield b"end\n"


async def stream(request: HttpRequest) -> StreamingHttpResponse:
    """An async iterator: Django's ASGI handler sends one http.response.body per line."""
    n = int(request.GET.get("n", "5"))
    delay = float(request.GET.get("delay", "0.2"))
    return StreamingHttpResponse(_lines(min(n, 100), min(delay, 2.0)), content_type="text/plain",
                                 headers={"X-Accel-Buffering": "no"})


def sync_sleep(request: HttpRequest) -> JsonResponse:
    """A sync view that blocks: Django runs it in a thread (sync_to_async), off the event loop."""
    seconds = min(float(request.GET.get("s", "1")), 5.0)
    time.sleep(seconds)
    return JsonResponse({"slept": seconds, "pid": os.getpid()})
