"""Flask app for the benchmark rig.

GET  /         -> small JSON (45 bytes)
GET  /payload  -> 64 KiB (65536 bytes) application/octet-stream
POST /echo     -> echoes the request body (the rig sends 1 MiB)
GET  /__gen    -> {"pid":..., "loaded":...} (reload detection)
"""
import os
import time

from flask import Flask, Response, jsonify, request

LOADED = time.time()
PAYLOAD = bytes(range(256)) * 256  # 65536 bytes

app = Flask(__name__)


@app.get("/")
def index() -> Response:
    return jsonify(message="Hello, World!", ok=True, n=42)


@app.get("/payload")
def payload() -> Response:
    return Response(PAYLOAD, mimetype="application/octet-stream")


@app.post("/echo")
def echo() -> Response:
    data = request.get_data()
    return Response(data, mimetype="application/octet-stream")


@app.get("/__gen")
def gen() -> Response:
    return jsonify(pid=os.getpid(), ppid=os.getppid(), loaded=LOADED)


application = app
