"""A Flask app with a blueprint under `thinlink dev`, served by Flask's dev server and by
gunicorn with three workers, edited after it served requests (when Flask refuses new
routes), checked through real HTTP requests on 127.0.0.1. Under gunicorn every worker
must answer with the new code: requests held open in parallel make each worker answer
one. The same processes, with their state, throughout.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from .conftest import write
from .devapp import TIMEOUT, dedent, edit, wait_until
from .web import free_port

pytest.importorskip("flask")

APP = dedent(
    """\
    import os
    import time

    from flask import Flask, jsonify, request

    from shop import bp

    app = Flask(__name__)
    STATE = {"hits": 0}


    @app.before_request
    def hold():
        time.sleep(float(request.args.get("hold", 0)))  # keeps a sync worker busy


    @app.after_request
    def pid(response):
        response.headers["X-Pid"] = str(os.getpid())
        return response


    @app.get("/state")
    def state():
        STATE["hits"] += 1
        return jsonify(pid=os.getpid(), hits=STATE["hits"])


    @app.get("/greet")
    def greet():
        return jsonify(message="hello")


    app.register_blueprint(bp, url_prefix="/shop")
    """
)
SHOP = dedent(
    """\
    from flask import Blueprint, jsonify

    bp = Blueprint("shop", __name__)
    ITEMS = ["pen", "ink"]


    @bp.get("/items/<int:index>")
    def item(index):
        return jsonify(item=ITEMS[index])
    """
)


def ask(base: str, path: str) -> tuple[int, Any, int]:
    """(status, JSON answer or None, the pid that answered)."""
    try:
        with urllib.request.urlopen(base + path, timeout=10) as response:
            return response.status, json.loads(response.read()), int(response.headers["X-Pid"])
    except urllib.error.HTTPError as exc:
        return exc.code, None, int(exc.headers.get("X-Pid") or 0)


class Server:
    """One app server; `until(path, expected)` waits for every worker to answer it."""

    def __init__(self, base: str, workers: int, session: Any = None) -> None:
        self.transcript = session.transcript if session is not None else str
        self.base = base
        self.workers = workers
        self.pids: set[int] = set()

    def round(self, path: str) -> list[tuple[int, Any, int]]:
        """One answer from every worker (requests held open in parallel; rounds again
        until no worker answered twice)."""
        sep = "&" if "?" in path else "?"
        held = f"{path}{sep}hold=0.3" if self.workers > 1 else path

        def answers() -> list[tuple[int, Any, int]] | None:
            try:
                with ThreadPoolExecutor(self.workers) as pool:
                    got = list(pool.map(lambda _: ask(self.base, held), range(self.workers)))
            except OSError:  # not listening yet
                return None
            return got if len({pid for _, _, pid in got}) == self.workers else None

        return wait_until(answers, TIMEOUT, 0.01, f"every worker to answer {path}")

    def until(self, path: str, status: int, value: Any = None) -> None:
        """Ask every worker until each answers `status` (and `value`)."""
        last: list[object] = []

        def answered() -> bool:
            answers = self.round(path)
            last[:] = answers
            if all(s == status and (value is None or v == value) for s, v, _ in answers):
                self.pids |= {pid for _, _, pid in answers}
                return True
            return False

        try:
            wait_until(answered, TIMEOUT, 0.01, f"every worker to answer {status} at {path}")
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}: the last answers were {last}\n{self.transcript()}"
            ) from None

    def states(self) -> dict[int, int]:
        """{pid: its visit counter} of every worker."""
        return {pid: value["hits"] for _, value, pid in self.round("/state")}


@pytest.fixture(params=["flask run", "gunicorn -w 3"])
def served(request: pytest.FixtureRequest, tmp_path: Path, dev_apps):
    if request.param.startswith("gunicorn"):
        pytest.importorskip("gunicorn")
    root = tmp_path / "site"
    files = {"pyproject.toml": "", "app.py": APP, "shop.py": SHOP}
    # gunicorn 23+ opens a control socket at a fixed path in the home directory: two
    # servers at once would fight over it.
    files["gunicorn.conf.py"] = "control_socket_disable = True\n"
    write(root, files)
    port = free_port()
    if request.param == "flask run":
        args = ["-m", "flask", "--app", "app", "run", "--host", "127.0.0.1", "--port", str(port)]
        workers = 1
    else:
        args = ["-m", "gunicorn", "-w", "3", "-b", f"127.0.0.1:{port}", "app:app"]
        workers = 3
    app = dev_apps(root, *args)
    server = Server(f"http://127.0.0.1:{port}", workers, app)
    return root, app, server


def test_flask_edits_go_live_after_the_first_request(served) -> None:
    root, app, server = served
    processes = server.workers + (server.workers > 1)  # gunicorn's master is patched too
    server.until("/greet", 200, {"message": "hello"})  # the first request: setup is over
    first = server.states()

    # A view's body.
    edit(root / "app.py", 'message="hello"', 'message="hi"')
    server.until("/greet", 200, {"message": "hi"})

    # The view gains a parameter from its URL rule (the route is defined again), then
    # loses it again, reading the query string instead.
    edit(
        root / "app.py",
        '@app.get("/greet")\ndef greet():',
        '@app.get("/greet/<name>")\ndef greet(name):',
    )
    edit(root / "app.py", 'message="hi"', 'message="hi " + name')
    server.until("/greet/ann", 200, {"message": "hi ann"})
    server.until("/greet", 404)
    app.wait_err(r"flask: endpoint 'greet' now at /greet/<name>")
    edit(
        root / "app.py",
        '@app.get("/greet/<name>")\ndef greet(name):',
        '@app.get("/greet")\ndef greet():',
    )
    edit(root / "app.py", 'message="hi " + name', 'message="hi " + request.args["who"]')
    server.until("/greet?who=bo", 200, {"message": "hi bo"})
    server.until("/greet/ann", 404)

    # A new route using a new module, then the route goes.
    (root / "pricing.py").write_text("def price(n):\n    return n * 3\n")
    with open(root / "app.py", "a") as f:
        f.write(
            '\n\n@app.get("/price/<int:n>")\ndef priced(n):\n'
            "    from pricing import price\n\n    return jsonify(price=price(n))\n"
        )
    server.until("/price/2", 200, {"price": 6})
    edit(root / "pricing.py", "n * 3", "n * 5")
    server.until("/price/2", 200, {"price": 10})
    text = (root / "app.py").read_text()
    (root / "app.py").write_text(text[: text.index('\n\n@app.get("/price')] + "\n")
    server.until("/price/2", 404)

    # The blueprint (registered at start): a new route, a route's rule changed.
    with open(root / "shop.py", "a") as f:
        f.write('\n\n@bp.get("/count")\ndef count():\n    return jsonify(count=len(ITEMS))\n')
    server.until("/shop/count", 200, {"count": 2})
    edit(root / "shop.py", '@bp.get("/items/<int:index>")', '@bp.get("/things/<int:index>")')
    server.until("/shop/things/1", 200, {"item": "ink"})
    server.until("/shop/items/1", 404)

    # Patched in every process, never restarted: the same processes, their state kept.
    assert len(app.patches()) >= 6, app.transcript()
    assert all(f": {processes}/{processes} processes" in line for line in app.patches())
    now = server.states()
    assert set(now) == set(first) == server.pids, app.transcript()
    assert all(now[pid] == first[pid] + 1 for pid in now)  # each kept its own state
    assert "restarting" not in app.err.text() and "failed" not in app.err.text(), app.transcript()
    # No request failed on the way (a view unmapped while a request was routed to it).
    assert "KeyError" not in app.err.text(), app.transcript()


FACTORY = dedent(
    """\
    import os

    from flask import Flask, jsonify


    def create_app():
        from shop import bp

        app = Flask(__name__)  # held by the server only: no module global names it
        app.register_blueprint(bp, url_prefix="/shop")

        @app.after_request
        def pid(response):
            response.headers["X-Pid"] = str(os.getpid())
            return response

        return app
    """
)


def test_an_app_made_by_a_factory_gets_new_blueprint_routes(tmp_path: Path, dev_apps) -> None:
    # Flask's tutorial layout: `create_app()` run by `flask --app "app:create_app()"`,
    # the routes on a blueprint. The new route is registered on the live app all the same.
    root = tmp_path / "site"
    write(root, {"pyproject.toml": "", "app.py": FACTORY, "shop.py": SHOP})
    port = free_port()
    app = dev_apps(
        root, "-m", "flask", "--app", "app:create_app()", "run", "--port", str(port),
        "--host", "127.0.0.1",
    )  # fmt: skip
    server = Server(f"http://127.0.0.1:{port}", 1, app)
    server.until("/shop/items/0", 200, {"item": "pen"})  # setup is over
    with open(root / "shop.py", "a") as f:
        f.write('\n\n@bp.get("/count")\ndef count():\n    return jsonify(count=len(ITEMS))\n')
    server.until("/shop/count", 200, {"count": 2})
    app.wait_err(r"flask: registered 1 new route\(s\) of blueprint 'shop'")
    edit(root / "shop.py", '@bp.get("/items/<int:index>")', '@bp.get("/things/<int:index>")')
    server.until("/shop/things/1", 200, {"item": "ink"})
    server.until("/shop/items/1", 404)
    assert len(server.pids) == 1 and "restarting" not in app.err.text(), app.transcript()
