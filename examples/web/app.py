"""A small Flask service, served by gunicorn with several worker processes.

    pip install flask gunicorn
    thinlink dev -m gunicorn -w 3 -b 127.0.0.1:8000 app:app

Edit `greeting()` (or any handler) while it runs and reload: every worker answers with
the new code at once, with the same pids (nothing restarted) and requests in flight
(try /stream) carried through to the end.
"""

import os
import time

from flask import Flask, Response, jsonify, request

app = Flask(__name__)
VISITS = {"count": 0}  # per worker: kept across patches, lost on a restart


def greeting(name: str) -> str:
    return f"Hello, {name}!"


@app.get("/")
def index():
    VISITS["count"] += 1
    hold = float(request.args.get("hold", 0))  # a slow request keeps its worker busy
    time.sleep(hold)
    return jsonify(
        message=greeting(request.args.get("name", "world")),
        pid=os.getpid(),
        master=os.getppid(),
        visits=VISITS["count"],
    )


@app.get("/stream")
def stream():
    """`count` lines, one every `delay` seconds: a response that is still being sent
    while a patch lands."""
    count = int(request.args.get("count", 10))
    delay = float(request.args.get("delay", 0.1))

    def lines():
        for i in range(count):
            yield f"{i} {greeting('stream')} {os.getpid()}\n"
            time.sleep(delay)

    return Response(lines(), mimetype="text/plain")
