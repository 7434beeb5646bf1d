"""A FastAPI app served by uvicorn under `thinlink dev`, edited as its users edit it.

Every edit is checked through real HTTP requests (and a real WebSocket) on 127.0.0.1: the
new behaviour serves, the OpenAPI schema shows the new signature, and the app's process
and in-memory state are the same as before (patched, not restarted).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import write
from .devapp import dedent, edit, wait_until
from .web import Http, free_port

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

APP = dedent(
    """\
    import os

    from fastapi import Depends, FastAPI, WebSocket

    from users import router

    app = FastAPI()
    STATE = {"hits": 0}


    @app.get("/state")
    def state():
        STATE["hits"] += 1
        return {"pid": os.getpid(), "hits": STATE["hits"]}


    @app.get("/greet")
    def greet(name: str = "world"):
        return {"message": f"hello {name}"}


    @app.get("/items/{item_id}")
    async def item(item_id: int):
        return {"item": item_id}


    @app.websocket("/ws")
    async def ws(websocket: WebSocket):
        await websocket.accept()
        await websocket.send_text("v1")
        await websocket.close()


    app.include_router(router, prefix="/users")
    """
)
USERS = dedent(
    """\
    from fastapi import APIRouter

    router = APIRouter()
    USERS = ["ann", "bob", "cy"]


    @router.get("/")
    def list_users():
        return USERS
    """
)


def parameters(http: Http, path: str) -> list[str]:
    """The query parameters `/openapi.json` shows for GET `path`."""
    operation = http.json("/openapi.json")["paths"][path]["get"]
    return [p["name"] for p in operation.get("parameters", [])]


def ws_text(port: int, path: str) -> str:
    from websockets.sync.client import connect

    with connect(f"ws://127.0.0.1:{port}{path}", open_timeout=5) as socket:
        return socket.recv(timeout=5)


@pytest.fixture
def served(tmp_path: Path, dev_apps):
    root = tmp_path / "api"
    write(root, {"pyproject.toml": "", "app.py": APP, "users.py": USERS})
    port = free_port()
    app = dev_apps(root, "-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port", str(port))
    app.wait_err(r"Uvicorn running on")
    return root, app, Http(port, app), port


def test_fastapi_edits_go_live_under_uvicorn(served) -> None:
    root, app, http, port = served
    first = http.json("/state")
    assert parameters(http, "/greet") == ["name"]  # the schema is now cached by the app

    # A body edit.
    edit(root / "app.py", 'f"hello {name}"', 'f"hi {name}"')
    http.until("/greet?name=ann", {"message": "hi ann"})

    # A new parameter: FastAPI analysed the old signature when the route was made.
    edit(root / "app.py", 'name: str = "world"):', 'name: str = "world", punct: str = "!"):')
    edit(root / "app.py", 'f"hi {name}"', 'f"hi {name}{punct}"')
    http.until("/greet?name=ann&punct=?", {"message": "hi ann?"})
    app.wait_err(r"^  fastapi: rebuilt GET /greet \(.*parameters changed\)")
    assert parameters(http, "/greet") == ["name", "punct"]  # /docs shows it

    # A parameter removed, and the endpoint made async (FastAPI awaits it from now on).
    edit(root / "app.py", 'def greet(name: str = "world", punct', "async def greet(punct")
    edit(root / "app.py", 'f"hi {name}{punct}"', 'f"hi you{punct}"')
    http.until("/greet?name=ann&punct=.", {"message": "hi you."})
    assert parameters(http, "/greet") == ["punct"]

    # A new dependency, then the dependency's own parameters change.
    edit(
        root / "app.py",
        '@app.get("/greet")',
        'def settings():\n    return {"tone": "calm"}\n\n\n@app.get("/greet")',
    )
    edit(
        root / "app.py", 'punct: str = "!"):', 'punct: str = "!", conf: dict = Depends(settings)):'
    )
    edit(root / "app.py", 'f"hi you{punct}"', "f\"hi you{punct} ({conf['tone']})\"")
    try:
        http.until("/greet", {"message": "hi you! (calm)"})
    except AssertionError:
        print(app.transcript())
        raise
    edit(root / "app.py", "def settings():", 'def settings(tone: str = "calm"):')
    edit(root / "app.py", 'return {"tone": "calm"}', 'return {"tone": tone}')
    http.until("/greet?tone=loud", {"message": "hi you! (loud)"})
    app.wait_err(r"^  fastapi: rebuilt GET /greet \(dependency settings changed\)")
    assert parameters(http, "/greet") == ["punct", "tone"]

    # An async endpoint with a path parameter gains a query parameter.
    edit(
        root / "app.py",
        "async def item(item_id: int):",
        "async def item(item_id: int, q: int = 0):",
    )
    edit(root / "app.py", '{"item": item_id}', '{"item": item_id + q}')
    http.until("/items/5?q=10", {"item": 15})
    assert http.get("/items/5?q=x")[0] == 422  # validated as an int

    # A new route, then it goes away again.
    with open(root / "app.py", "a") as f:
        f.write('\n\n@app.get("/extra")\ndef extra():\n    return {"extra": True}\n')
    http.until("/extra", {"extra": True})
    edit(
        root / "app.py", '\n\n@app.get("/extra")\ndef extra():\n    return {"extra": True}\n', "\n"
    )
    http.until("/extra", status=404)

    # A decorator's arguments changed: the route moves.
    edit(root / "app.py", '@app.get("/items/{item_id}")', '@app.get("/things/{item_id}")')
    http.until("/things/1?q=1", {"item": 2})
    http.until("/items/1", status=404)

    # A router already included: a route added to it, and one edited with a new parameter.
    with open(root / "users.py", "a") as f:
        f.write('\n\n@router.get("/count")\ndef count():\n    return len(USERS)\n')
    http.until("/users/count", 3)
    edit(root / "users.py", "def list_users():", "def list_users(limit: int = 10):")
    edit(root / "users.py", "return USERS\n", "return USERS[:limit]\n")
    http.until("/users/?limit=1", ["ann"])

    # A WebSocket route: its body, then a new parameter.
    assert ws_text(port, "/ws") == "v1"
    edit(root / "app.py", 'send_text("v1")', 'send_text("v2")')
    wait_until(lambda: ws_text(port, "/ws") == "v2", what="the new WebSocket body")
    edit(
        root / "app.py",
        "async def ws(websocket: WebSocket):",
        'async def ws(websocket: WebSocket, who: str = "x"):',
    )
    edit(root / "app.py", 'send_text("v2")', 'send_text("v2 " + who)')
    wait_until(lambda: ws_text(port, "/ws?who=bo") == "v2 bo", what="the WebSocket parameter")
    app.wait_err(r"^  fastapi: rebuilt WS /ws \(.*parameters changed\)")

    # Patched, never restarted: the same process, its state carried on.
    last = http.json("/state")
    assert last["pid"] == first["pid"] and last["hits"] == first["hits"] + 1, app.transcript()
    assert "restarting" not in app.err.text()
    assert "failed" not in app.err.text(), app.transcript()
    assert "may not be seen" not in app.err.text(), app.transcript()


def test_a_pydantic_model_change_restarts_with_the_reason(tmp_path: Path, dev_apps) -> None:
    root = tmp_path / "api"
    write(
        root,
        {
            "pyproject.toml": "",
            "app.py": """\
            import os

            from fastapi import FastAPI
            from pydantic import BaseModel

            app = FastAPI()


            class Item(BaseModel):
                name: str

                def label(self):
                    return "item " + self.name


            @app.post("/items")
            def create(item: Item):
                fields = sorted(item.model_dump())
                return {"label": item.label(), "fields": fields, "pid": os.getpid()}
            """,
        },
    )
    port = free_port()
    app = dev_apps(root, "-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port", str(port))
    http = Http(port, app)
    app.wait_err(r"Uvicorn running on")
    status, first = http.get("/items", "POST", {"name": "a"})
    assert status == 200 and first["label"] == "item a"
    # A method's body is patched in place.
    edit(root / "app.py", '"item " + self.name', '"ITEM " + self.name')
    answer = http.until("/items", {**first, "label": "ITEM a"}, method="POST", body={"name": "a"})
    assert answer[1]["pid"] == first["pid"]
    # A field: the model's validator was built from the fields when the class was made.
    edit(root / "app.py", "    name: str\n", "    name: str\n    price: float = 1.0\n")
    line = app.wait_err(r"restarting: (.+)")
    assert "pydantic model changed (price)" in line.group(1) and "app:Item" in line.group(1)
    app.wait_err(r"Uvicorn running on")
    status, after = http.get("/items", "POST", {"name": "b"})
    assert after["fields"] == ["name", "price"] and after["pid"] != first["pid"]


def test_an_app_made_by_a_factory_is_kept_in_step(tmp_path: Path, dev_apps) -> None:
    # `uvicorn --factory app:create_app`: no module global holds the app, its routes come
    # from a router; signature changes, a new route and the schema reach it all the same.
    root = tmp_path / "api"
    write(
        root,
        {
            "pyproject.toml": "",
            "app.py": """\
            from fastapi import FastAPI

            from users import router


            def create_app():
                app = FastAPI()
                app.include_router(router, prefix="/users")
                return app
            """,
            "users.py": USERS,
        },
    )
    port = free_port()
    app = dev_apps(
        root, "-m", "uvicorn", "--factory", "app:create_app", "--host", "127.0.0.1",
        "--port", str(port),
    )  # fmt: skip
    http = Http(port, app)
    app.wait_err(r"Uvicorn running on")
    assert http.json("/users/") == ["ann", "bob", "cy"]
    assert parameters(http, "/users/") == []  # the schema is now cached by the app
    edit(root / "users.py", "def list_users():", "def list_users(limit: int = 10):")
    edit(root / "users.py", "return USERS\n", "return USERS[:limit]\n")
    http.until("/users/?limit=1", ["ann"])
    assert parameters(http, "/users/") == ["limit"]
    with open(root / "users.py", "a") as f:
        f.write('\n\n@router.get("/count")\ndef count():\n    return len(USERS)\n')
    http.until("/users/count", 3)
    assert "restarting" not in app.err.text() and "may not be seen" not in app.err.text()
