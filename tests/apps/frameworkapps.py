"""Starlette and FastAPI apps for tests/test_asgi.py: a JSON GET and a lifespan that sets state."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse
from starlette.routing import Route


@contextlib.asynccontextmanager
async def lifespan(app: object) -> AsyncIterator[dict[str, int]]:
    yield {"booted_by": os.getpid()}


async def items(request: StarletteRequest) -> JSONResponse:
    return JSONResponse({"framework": "starlette", "id": int(request.path_params["id"]),
                         "q": request.query_params.get("q"), "booted_by": request.state.booted_by,
                         "root_path": request.scope.get("root_path", "")})


starlette_app = Starlette(routes=[Route("/items/{id:int}", items)], lifespan=lifespan)

fastapi_app = FastAPI(lifespan=lifespan)


@fastapi_app.get("/items/{item_id}")
async def read_item(item_id: int, request: Request, q: str | None = None) -> dict[str, object]:
    return {"framework": "fastapi", "id": item_id, "q": q, "booted_by": request.state.booted_by}
