"""The adapter API and the rule for what no adapter covers, on real modules and real patches.

Each test writes a small project, imports its modules in this process, edits the files,
makes the patch as the tool does (`thinlink.Project.patch()`) and applies it with
`hotpatch.apply`: what adapters are told, what they change (and how that is undone), and
what the report says.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import hotpatch
from hotpatch import _apply, _jumptable, provenance
from hotpatch.adapters import Adapter, Patch, _registry, register
from thinlink import Project


class Project_:
    """A project on disk whose modules this process imports, patched edit by edit."""

    def __init__(self, root: Path, files: dict[str, str]) -> None:
        self.root = root
        for name, text in files.items():
            (root / name).write_text(textwrap.dedent(text))
        self.project = Project(root, cache_dir=root.parent / "cache")
        self.project.build()
        sys.path.insert(0, str(root))
        self.names = [name[:-3] for name in files if name.endswith(".py")]

    def module(self, name: str):  # noqa: ANN201
        __import__(name)
        # Imported by the ordinary importer: vouched for now, before any edit, so that
        # patches from the build are taken (hotpatch.provenance).
        assert provenance.adopt(sys.modules[name]) is not None
        return sys.modules[name]

    def edit(self, name: str, old: str, new: str) -> hotpatch.PatchReport:
        path = self.root / name
        text = path.read_text()
        assert old in text, old
        path.write_text(text.replace(old, new))
        return hotpatch.apply(self.project.patch().bundle)

    def close(self) -> None:
        sys.path.remove(str(self.root))
        for name in self.names:
            sys.modules.pop(name, None)


@pytest.fixture
def project(tmp_path: Path):
    made: list[Project_] = []

    def make(files: dict[str, str]) -> Project_:
        root = tmp_path / "app"
        root.mkdir()
        (root / "pyproject.toml").write_text("")
        made.append(Project_(root, files))
        return made[-1]

    _jumptable.set_build(None)
    _apply._history.clear()
    saved = list(_registry._registered)
    yield make
    _registry._registered[:] = saved
    _jumptable.set_build(None)
    _apply._history.clear()
    for p in made:
        p.close()


class Recorder(Adapter):
    """Records what it is told; changes what the test asks it to."""

    name = "recorder"
    modules = ("json",)  # imported in every test process

    def __init__(self) -> None:
        self.seen: list[tuple[str, object]] = []
        self.act = None

    def before(self, patch: Patch) -> None:
        self.seen.append(("before", [(s.names, s.mode) for s in patch.statements]))

    def after(self, patch: Patch) -> None:
        self.seen.append(
            (
                "after",
                {
                    "functions": [(f.name, sorted(f.changed)) for f in patch.functions],
                    "bindings": [(b.name, b.kind) for b in patch.bindings],
                },
            )
        )
        if self.act is not None:
            self.act(patch)


MOD = """\
def greet(name):
    return "hello " + name


def helper():
    return 1
"""


def test_adapters_are_told_what_changed(project) -> None:
    app = project({"hp_ad1.py": MOD})
    module = app.module("hp_ad1")
    recorder = register(Recorder)
    held = module.helper
    report = app.edit("hp_ad1.py", "def greet(name):", "def greet(name, punct='!'):")
    assert report.patched == ("hp_ad1:greet",)
    assert recorder.seen == [
        ("before", []),
        (
            "after",
            {"functions": [("hp_ad1:greet", ["defaults", "parameters"])], "bindings": []},
        ),
    ]
    recorder.seen.clear()
    app.edit(
        "hp_ad1.py",
        "def helper():\n    return 1\n",
        "def added():\n    return 2\n",
    )
    assert recorder.seen[0] == ("before", [(("added",), "merge")])
    assert sorted(recorder.seen[1][1]["bindings"]) == [
        ("hp_ad1:added", "added"),
        ("hp_ad1:helper", "removed"),
    ]
    assert held() == 1


def test_what_an_adapter_changes_is_undone_with_the_patch(project) -> None:
    app = project({"hp_ad2.py": MOD})
    module = app.module("hp_ad2")
    recorder = register(Recorder)
    target = type("Target", (), {"state": "old"})()
    undone: list[str] = []

    def act(patch: Patch) -> None:
        patch.setattr(target, "state", "new")
        patch.on_undo(lambda: undone.append("undo"))
        patch.note("rebuilt the target")

    recorder.act = act
    report = app.edit("hp_ad2.py", '"hello "', '"hi "')
    assert target.state == "new" and report.adapted == ("recorder: rebuilt the target",)
    assert "recorder: rebuilt the target" in str(report)
    hotpatch.rollback()
    assert target.state == "old" and undone == ["undo"] and module.greet("x") == "hello x"


def test_an_adapter_that_fails_rolls_the_whole_patch_back(project) -> None:
    app = project({"hp_ad3.py": MOD})
    module = app.module("hp_ad3")
    recorder = register(Recorder)
    target = type("Target", (), {"state": "old"})()

    def act(patch: Patch) -> None:
        patch.setattr(target, "state", "new")
        raise RuntimeError("cannot rebuild")

    recorder.act = act
    with pytest.raises(hotpatch.PatchError, match="recorder adapter failed.*cannot rebuild"):
        app.edit("hp_ad3.py", '"hello "', '"hi "')
    assert module.greet("x") == "hello x" and target.state == "old"
    assert hotpatch.current_build() is None


def test_an_adapter_can_ask_for_a_restart(project) -> None:
    app = project({"hp_ad4.py": MOD})
    module = app.module("hp_ad4")
    recorder = register(Recorder)
    recorder.act = lambda patch: patch.needs_restart("the tables were made at start")
    report = app.edit("hp_ad4.py", '"hello "', '"hi "')
    assert report.needs_restart == "recorder: the tables were made at start"
    assert not report.applied and module.greet("x") == "hello x"


def test_an_adapter_is_active_only_once_its_framework_is_imported(project) -> None:
    app = project({"hp_ad5.py": MOD})
    app.module("hp_ad5")

    class Elsewhere(Recorder):
        modules = ("hp_not_imported_framework",)

    recorder = register(Elsewhere)
    app.edit("hp_ad5.py", '"hello "', '"hi "')
    assert recorder.seen == []
    assert "hp_not_imported_framework" not in sys.modules


def test_a_library_holder_of_a_changed_signature_is_named(project) -> None:
    click = pytest.importorskip("click")
    app = project(
        {
            "hp_cli.py": """\
            import click

            REGISTRY = {}


            def hello(name):
                return "hello " + name


            command = click.Command("hello", callback=hello)
            REGISTRY["hello"] = hello
            """
        }
    )
    module = app.module("hp_cli")
    assert isinstance(module.command, click.Command)
    report = app.edit("hp_cli.py", "def hello(name):", "def hello(name, loud=False):")
    assert report.patched == ("hp_cli:hello",)
    (line,) = report.unseen  # the app's own dict is not a library: only the command
    assert line.startswith("hp_cli:hello: defaults and parameters changed; held by ")
    assert "click.core.Command.callback" in line and "may not be seen there" in line
    assert "may not be seen: hp_cli:hello" in str(report)
    # A body edit changes no signature: nothing to say.
    report = app.edit("hp_cli.py", '"hello " + name', '"hi " + name')
    assert report.unseen == ()

    # An adapter that keeps click's objects in step: no longer named.
    class Keeps(Recorder):
        holders = ("click",)

    register(Keeps)
    report = app.edit("hp_cli.py", "loud=False", "loud=True")
    assert report.unseen == ()


def test_third_party_adapters_come_from_the_entry_point_group(tmp_path: Path) -> None:
    site = tmp_path / "site"
    dist = site / "hp_demo_adapter-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: hp-demo-adapter\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[hotpatch.adapters]\n"
        "hp_demo_framework = hp_demo_adapter:DemoAdapter\n"
        "hp_other_framework = hp_broken_adapter:Missing\n"
    )
    (site / "hp_demo_adapter.py").write_text(
        "from hotpatch.adapters import Adapter\n\n"
        "class DemoAdapter(Adapter):\n"
        "    name = 'demo'\n    modules = ('hp_demo_framework',)\n"
    )
    (site / "hp_demo_framework.py").write_text("")
    code = (
        "import sys\n"
        "from hotpatch.adapters import active\n"
        "print([a.name for a in active()], 'hp_demo_adapter' in sys.modules)\n"
        "import hp_demo_framework\n"
        "print([a.name for a in active()], 'hp_demo_adapter' in sys.modules)\n"
    )
    env = {"PYTHONPATH": f"{site}:{Path(__file__).resolve().parents[2]}", "PATH": "/usr/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    # Loaded only once its framework is imported; never imported before.
    assert out.stdout.splitlines() == ["[] False", "['demo'] True"]


STARLETTE_APP = """\
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route


class Tag:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        async def tagged(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-tag", b"on")]
            await send(message)

        await self.app(scope, receive, tagged)


def hello(request):
    return PlainTextResponse("sync")


app = Starlette(routes=[Route("/", hello, middleware=[Middleware(Tag)])])
"""


def asgi_get(app, path: str) -> tuple[str, dict[str, str]]:
    """(body, headers) of a GET request served by the ASGI `app`, in this process."""
    import asyncio

    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return body.decode(), {k.decode(): v.decode() for k, v in start["headers"]}


def test_a_rebuilt_starlette_route_keeps_its_own_middleware(project) -> None:
    pytest.importorskip("starlette")
    p = project({"site_app.py": STARLETTE_APP})
    module = p.module("site_app")
    body, headers = asgi_get(module.app, "/")
    assert body == "sync" and headers["x-tag"] == "on"
    # Made async: Starlette wraps an endpoint by its kind, so the route is rebuilt.
    report = p.edit("site_app.py", "def hello(request):", "async def hello(request):")
    assert any("rebuilt GET /" in line for line in report.adapted), report
    body, headers = asgi_get(module.app, "/")
    assert body == "sync" and headers.get("x-tag") == "on", headers
    hotpatch.rollback()
    assert asgi_get(module.app, "/")[1]["x-tag"] == "on"
