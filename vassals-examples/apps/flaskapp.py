"""A Flask application: what `module = flaskapp:app` serves (mounted under /flask by nginx)."""

import os

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.get("/")
def index():
    return jsonify(message="Hello from Flask", pid=os.getpid(), script_name=request.script_root)


@app.post("/echo")
def echo():
    return request.get_data(), 200, {"Content-Type": "application/octet-stream"}
