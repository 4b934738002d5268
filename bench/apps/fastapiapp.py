"""FastAPI app for the benchmark rig (ASGI).

GET /        -> small JSON, the same document as flaskapp.py's "/" (async endpoint)
GET /__gen   -> {"pid":..., "loaded":...} (reload detection)
"""
import os
import time
from typing import Any

from fastapi import FastAPI

LOADED = time.time()

app = FastAPI()


@app.get("/")
async def index() -> dict[str, Any]:
    return {"message": "Hello, World!", "ok": True, "n": 42}


@app.get("/__gen")
async def gen() -> dict[str, Any]:
    return {"pid": os.getpid(), "ppid": os.getppid(), "loaded": LOADED}


application = app
