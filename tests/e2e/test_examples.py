"""The examples under `thinlink dev`, edited while they run.

Each test copies an example into a temporary directory (its own project: the copy has
the example's pyproject.toml), runs it under ``python -m thinlink dev`` as a user would,
edits its files, and checks through the example's own output (its frames, its HTTP
answers) that the new code runs in every process, with their state kept and nothing
restarted.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .devapp import TIMEOUT, DevApp, edit, wait_until

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FRAME = re.compile(r"^\|(?P<row>.{40})\| score +(?P<score>\d+) +frame +(?P<frame>\d+)$")


def copy_example(name: str, tmp_path: Path) -> Path:
    root = tmp_path / name
    skip = shutil.ignore_patterns(".thinlink", "__pycache__")
    shutil.copytree(EXAMPLES / name, root, ignore=skip)
    return root


@pytest.fixture
def dev(dev_apps):
    """`dev(root, *args)`: start `thinlink dev ARGS` in `root`; all stopped at the end."""
    return dev_apps


# -- examples/loop ----------------------------------------------------------------------


def frames(app: DevApp) -> list[dict]:
    return [
        {"row": m["row"], "score": int(m["score"]), "frame": int(m["frame"])}
        for line in list(app.out.lines)
        if (m := FRAME.match(line))
    ]


def test_loop_example_edits_take_effect_and_state_carries_on(dev, tmp_path: Path) -> None:
    root = copy_example("loop", tmp_path)
    app = dev(root, "app.py", "--frames", "100000", "--fps", "200")
    app.wait_out(r"frame +\d+$")
    sim = root / "sim.py"

    # The ball is drawn with another character from the next frame on.
    edit(sim, 'row[state.x] = "o"', 'row[state.x] = "#"')
    app.wait_err(r"patched render: 1/1 processes")
    first_new = app.wait_out(r"^\|[ ]*#[ ]*\|")
    # The score goes up by 100 a bounce from now on, from where it was.
    edit(sim, "state.score += 1", "state.score += 100")
    app.wait_err(r"patched step: 1/1 processes")
    mark = len(app.out.lines)
    app.wait_out(r"score +\d*[1-9]\d\d ", since=mark)

    seen = frames(app)
    numbers = [f["frame"] for f in seen]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), "a frame was lost"
    assert numbers[0] == 1, "the first frame printed is frame 1"
    drawn = ["#" if "#" in f["row"] else "o" for f in seen]
    switch = drawn.index("#")
    assert set(drawn[:switch]) == {"o"} and set(drawn[switch:]) == {"#"}
    assert FRAME.match(first_new.string)
    scores = [f["score"] for f in seen]
    steps = [b - a for a, b in zip(scores, scores[1:], strict=False) if b != a]
    assert 100 in steps, steps
    # +1 a bounce before the edit, +100 after: the score carried on from where it was.
    assert set(steps[: steps.index(100)]) <= {1} and set(steps[steps.index(100) :]) == {100}
    assert app.err.text().count("thinlink dev: watching") == 1
    assert "restarting" not in app.err.text()


# -- examples/web -------------------------------------------------------------------------


def get(url: str, timeout: float = 10.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def round_of(base: str, n: int = 3, hold: float = 0.3) -> list[dict]:
    """`n` slow requests at once: a sync worker serves one at a time, so with `n`
    workers each of them answers one."""
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda i: get(f"{base}/?hold={hold}&name=n{i}"), range(n)))


def every_worker(base: str, want: str, workers: set[int] | None = None) -> list[dict]:
    """Rounds of requests until every worker answered `want` in one round (bounded)."""

    def check() -> list[dict] | None:
        answers = round_of(base)
        pids = {a["pid"] for a in answers}
        ok = len(pids) == 3 and all(want in a["message"] for a in answers)
        return answers if ok and (workers is None or pids == workers) else None

    return wait_until(check, timeout=TIMEOUT, interval=0.05, what=f"every worker to say {want}")


def test_web_example_every_gunicorn_worker_is_patched_in_place(dev, tmp_path: Path) -> None:
    pytest.importorskip("flask")
    pytest.importorskip("gunicorn")
    root = copy_example("web", tmp_path)
    app = dev(root, "-m", "gunicorn", "-w", "3", "-b", "127.0.0.1:0", "app:app")
    port = app.wait_err(r"Listening at: http://127\.0\.0\.1:(\d+)").group(1)
    base = f"http://127.0.0.1:{port}"
    for _ in range(3):
        app.wait_err(r"Booting worker with pid: \d+")

    before = every_worker(base, "Hello, n")
    workers = {a["pid"] for a in before}
    masters = {a["master"] for a in before}
    assert len(masters) == 1

    # A response still streaming while the patch lands completes, on the same
    # connection; its later lines come from the new code.
    lines: list[str] = []
    first_line = threading.Event()

    def stream() -> None:
        with urllib.request.urlopen(f"{base}/stream?count=15&delay=0.05", timeout=30) as r:
            for raw in r:
                lines.append(raw.decode().strip())
                first_line.set()

    reader = threading.Thread(target=stream)
    reader.start()
    assert first_line.wait(TIMEOUT), "the stream did not start"
    edit(root / "app.py", 'return f"Hello, {name}!"', 'return f"Howdy, {name}!"')
    reader.join(TIMEOUT)
    assert not reader.is_alive()
    assert [line.split()[0] for line in lines] == [str(i) for i in range(15)], lines
    greetings = [line.split()[1] for line in lines]
    assert greetings[0] == "Hello," and greetings[-1] == "Howdy,", greetings
    assert len({line.split()[-1] for line in lines}) == 1  # one worker served it all

    after = every_worker(base, "Howdy, n", workers)
    assert {a["master"] for a in after} == masters, "the master was restarted"
    # Each worker kept its own state (its visit counter) through the patch.
    assert all(a["visits"] >= 2 for a in after)
    patch = app.wait_err(r"patched greeting: (\d+)/(\d+) processes")
    assert patch.group(1) == patch.group(2) == "4"  # the master and its three workers

    # A route handler itself (Flask holds it in its view table) edited.
    edit(root / "app.py", 'visits=VISITS["count"],', 'visits=VISITS["count"], edited=True,')
    app.wait_err(r"patched index: 4/4 processes")
    edited = every_worker(base, "Howdy, n", workers)
    assert all(a.get("edited") is True for a in edited), edited
    assert {a["master"] for a in edited} == masters
    assert len(app.patches()) == 2
    assert app.err.text().count("Booting worker") == 3  # no worker was started again


# -- examples/fastapi -------------------------------------------------------------------------


def test_fastapi_example_edits_go_live_with_the_todos_kept(dev, tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from .web import Http, free_port

    root = copy_example("fastapi", tmp_path)
    port = free_port()
    app = dev(root, "-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port", str(port))
    http = Http(port, app)
    app.wait_err(r"Uvicorn running on")
    first = http.json("/")
    assert http.get("/todos/", "POST", {"title": "write"})[0] == 200
    assert http.get("/todos/", "POST", {"title": "test"})[0] == 200
    http.get("/todos/1/done", "POST")

    # A handler gains a parameter: FastAPI serves it, and /docs shows it.
    edit(root / "todos.py", "def list_todos():", "def list_todos(done: bool | None = None):")
    edit(
        root / "todos.py",
        "    return TODOS\n",
        "    return [t for t in TODOS if done is None or t['done'] == done]\n",
    )
    http.until("/todos/?done=false", [{"id": 2, "title": "test", "done": False}])
    schema = http.json("/openapi.json")["paths"]["/todos/"]["get"]
    assert [p["name"] for p in schema["parameters"]] == ["done"]

    # The dependency's body, and a new route on the included router.
    edit(root / "app.py", 'return "you"', 'return "the team"')
    http.until("/", {"message": "2 things to do for the team", "pid": first["pid"]})
    with open(root / "todos.py", "a") as f:
        f.write('\n\n@router.get("/count")\ndef count():\n    return len(TODOS)\n')
    http.until("/todos/count", 2)
    assert "restarting" not in app.err.text()


# -- examples/django --------------------------------------------------------------------------


def test_django_example_edits_go_live_with_the_notes_kept(dev, tmp_path: Path) -> None:
    pytest.importorskip("django")
    from .web import Http, free_port

    root = copy_example("django", tmp_path)
    port = free_port()
    command = ("manage.py", "runserver", "--noreload", f"127.0.0.1:{port}")
    app = dev(root, *command, env={"PYTHONUNBUFFERED": "1"})
    http = Http(port, app)
    first = http.until("/", {"message": "0 notes", "pid": http_pid(http)})[1]
    assert http.get("/notes/", "POST", {"text": "a note long enough to be cut short"})[0] == 200

    # A model's method and a view's body.
    edit(root / "notes/models.py", "self.text[:20]", "self.text[:6] + '...'")
    http.until("/notes/", {"notes": ["a note..."]})
    edit(root / "notes/views.py", 'f"{len(NOTES)} notes"', 'f"{len(NOTES)} note(s)"')
    http.until("/", {"message": "1 note(s)", "pid": first["pid"]})

    # A new view and its path in the included URLconf.
    with open(root / "notes/views.py", "a") as f:
        f.write('\n\ndef first(request):\n    return JsonResponse({"first": NOTES[0]})\n')
    edit(
        root / "notes/urls.py",
        '    path("", views.NotesView.as_view()),',
        '    path("", views.NotesView.as_view()),\n    path("first/", views.first),',
    )
    http.until("/notes/first/", {"first": "a note long enough to be cut short"})
    assert "restarting" not in app.err.text()


def http_pid(http) -> int:  # noqa: ANN001
    """The pid the Django example's index page shows, once it answers."""
    return wait_until(lambda: _pid(http), TIMEOUT, 0.05, "the server to answer")


def _pid(http) -> int | None:  # noqa: ANN001
    try:
        return http.get("/")[1]["pid"]
    except OSError:
        return None
