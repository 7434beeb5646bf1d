"""The import hook, in process: modules come from the image, and look as CPython makes them."""

from __future__ import annotations

import importlib
import importlib.resources
import importlib.util
import inspect
import linecache
import marshal
import os
import sys
import traceback
from importlib.machinery import PathFinder, SourceFileLoader
from pathlib import Path

import pytest

from hotpatch._loader import (
    BuildFinder,
    BuildLoader,
    install,
    installed,
    module_build,
    uninstall,
)
from hotpatch.image import Image, ImageEntry, source_digest
from hotpatch.provenance import TrackingLoader, digest_of


def build_image(root: Path, build_id: str = "b1", code_from: dict[str, str] | None = None) -> Image:
    """Compile each .py under ``root``; ``code_from`` maps a file to other source to compile."""
    entries = {}
    for path in sorted(root.rglob("*.py")):
        data = path.read_bytes()
        source = (code_from or {}).get(str(path.relative_to(root)), data)
        code = compile(source, str(path), "exec", dont_inherit=True)
        entries[str(path)] = ImageEntry(source_digest(data), marshal.dumps(code))
    return Image(build_id, str(root), entries)


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    importlib.invalidate_caches()  # FileFinder caches directory listings


@pytest.fixture
def project(tmp_path, monkeypatch):
    root = tmp_path / "proj"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    before = set(sys.modules)
    yield root
    uninstall()
    for name in set(sys.modules) - before:
        del sys.modules[name]


PACKAGE = {
    "hp_pkg/__init__.py": "from .sub.leaf import value\nNAME = __name__\n",
    "hp_pkg/data.txt": "some data\n",
    "hp_pkg/sub/__init__.py": "",
    "hp_pkg/sub/leaf.py": "from .. import helper\n\ndef value():\n    return helper.X * 2\n",
    "hp_pkg/helper.py": "X = 21\n\ndef fail():\n    raise ValueError('from helper')\n",
    "hp_ns/part.py": "from . import other\nY = other.Z\n",
    "hp_ns/other.py": "Z = 'ns'\n",
}


def _describe(module) -> dict:
    spec = module.__spec__
    return {
        "file": getattr(module, "__file__", None),
        "cached": getattr(module, "__cached__", None),
        "path": list(getattr(module, "__path__", [])) or None,
        "package": module.__package__,
        "spec": (spec.name, spec.origin, spec.cached, spec.has_location, spec.parent),
        "locations": list(spec.submodule_search_locations or []) or None,
        "keys": sorted(vars(module)),
    }


NAMES = ["hp_pkg", "hp_pkg.sub", "hp_pkg.sub.leaf", "hp_pkg.helper", "hp_ns", "hp_ns.part"]


def test_modules_look_exactly_as_a_plain_import_makes_them(project):
    write(project, PACKAGE)
    for name in NAMES:
        importlib.import_module(name)
    plain = {name: _describe(sys.modules[name]) for name in NAMES}
    for name in [n for n in sys.modules if n.startswith(("hp_pkg", "hp_ns"))]:
        del sys.modules[name]

    install(build_image(project))
    for name in NAMES:
        importlib.import_module(name)
    assert {name: _describe(sys.modules[name]) for name in NAMES} == plain
    assert sys.modules["hp_pkg"].value() == 42
    assert sys.modules["hp_ns.part"].Y == "ns"


def test_project_modules_come_from_the_build(project):
    write(project, PACKAGE)
    install(build_image(project, "build-7"))
    import hp_ns.part
    import hp_pkg

    for module in (hp_pkg, sys.modules["hp_pkg.sub.leaf"], hp_ns.part):
        assert type(module.__loader__) is BuildLoader
        assert module.__spec__.loader is module.__loader__
        assert module_build(module.__name__) == "build-7"
    assert type(hp_ns.__spec__.loader).__name__.endswith("NamespaceLoader")
    assert module_build("hp_ns") is None
    assert all(module_build(n) for n in ("hp_pkg", "hp_pkg.helper", "hp_ns.part"))
    assert hp_pkg.__cached__ == importlib.util.cache_from_source(hp_pkg.__file__)


def test_the_image_code_runs_not_the_source(project):
    write(project, {"hp_mod.py": "WHO = 'source'\n"})
    install(build_image(project, code_from={"hp_mod.py": "WHO = 'image'\n"}))
    import hp_mod

    assert hp_mod.WHO == "image"


def test_an_entry_without_code_is_compiled_from_the_build_source(project):
    # thinlink dev leaves a module edited a function at a time to the importer.
    write(project, {"hp_lazy.py": "def where():\n    return __name__\n"})
    image = build_image(project, "build-9")
    path = str(project / "hp_lazy.py")
    image.entries[path] = ImageEntry(image.entries[path].digest, b"")
    install(image)
    import hp_lazy

    assert hp_lazy.where() == "hp_lazy"
    assert type(hp_lazy.__loader__) is BuildLoader
    assert module_build("hp_lazy") == "build-9"  # still the build's module
    assert hp_lazy.where.__code__.co_filename == path


def test_a_file_edited_after_the_build_runs_its_new_source(project):
    write(project, {"hp_mod.py": "WHO = 'old'\n"})
    install(build_image(project))
    write(project, {"hp_mod.py": "WHO = 'new'\n"})
    import hp_mod

    assert hp_mod.WHO == "new"
    assert type(hp_mod.__loader__) is TrackingLoader  # compiled from the bytes it checked
    assert module_build("hp_mod") is None
    # What it runs is on record, so a patch made from the build is refused for it.
    assert digest_of(hp_mod.__file__) == source_digest(b"WHO = 'new'\n")


def test_modules_outside_the_image_keep_their_usual_loader(project):
    write(project, {"hp_mod.py": "X = 1\n"})
    finder = install(build_image(project))
    write(project, {"hp_late.py": "X = 2\n"})
    import json

    for name, path in [("hp_late", None), ("colorsys", None), ("json.decoder", json.__path__)]:
        spec = finder.find_spec(name, path)
        assert spec.origin == PathFinder.find_spec(name, path).origin
        assert type(spec.loader) is SourceFileLoader
    assert finder.find_spec("hp_no_such_module") is None


def test_built_in_modules_are_not_shadowed_by_a_project_file(project):
    name = next(n for n in sorted(sys.builtin_module_names) if n not in sys.modules)
    write(project, {f"{name}.py": "raise AssertionError('shadowed')\n"})
    install(build_image(project))
    assert importlib.import_module(name).__spec__.origin == "built-in"


def test_resources_source_and_tracebacks_work(project):
    write(project, PACKAGE)
    install(build_image(project))
    import hp_pkg
    from hp_pkg import helper

    assert importlib.resources.files(hp_pkg).joinpath("data.txt").read_text() == "some data\n"
    assert inspect.getsource(helper.fail).startswith("def fail():")
    assert hp_pkg.__loader__.get_source("hp_pkg") == PACKAGE["hp_pkg/__init__.py"]
    assert hp_pkg.__loader__.is_package("hp_pkg")
    with pytest.raises(ValueError) as info:
        helper.fail()
    frame = traceback.extract_tb(info.value.__traceback__)[-1]
    assert (frame.filename, frame.lineno, frame.line) == (
        helper.__file__,
        4,
        "raise ValueError('from helper')",
    )
    assert linecache.getline(helper.__file__, 1) == "X = 21\n"


def test_reload_follows_the_file(project):
    write(project, {"hp_mod.py": "WHO = 'built'\n"})
    install(build_image(project))
    import hp_mod

    assert importlib.reload(hp_mod).WHO == "built"
    assert module_build("hp_mod") == "b1"
    write(project, {"hp_mod.py": "WHO = 'edited'\n"})
    assert importlib.reload(hp_mod).WHO == "edited"
    assert module_build("hp_mod") is None


def test_a_reused_loader_checks_the_file_again(project):
    write(project, {"hp_mod.py": "WHO = 'built'\n"})
    finder = install(build_image(project))
    loader = finder.loader_for("hp_mod", str(project / "hp_mod.py"))
    assert isinstance(loader, BuildLoader)
    namespace: dict = {}
    exec(loader.get_code("hp_mod"), namespace)
    assert namespace["WHO"] == "built"
    write(project, {"hp_mod.py": "WHO = 'edited'\n"})
    exec(loader.get_code("hp_mod"), namespace)
    assert namespace["WHO"] == "edited"
    assert module_build("hp_mod") is None


def test_no_pycs_are_written_for_modules_from_the_build(project, monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    write(project, {"hp_mod.py": "X = 1\n"})
    install(build_image(project))
    import hp_mod  # noqa: F401

    assert not (project / "__pycache__").exists()


def test_install_is_idempotent_and_sits_just_before_path_finder(project):
    image = build_image(project)
    finder = install(image)
    assert install(image) is finder
    assert installed() is finder
    assert sys.meta_path.count(finder) == 1
    assert sys.meta_path.index(finder) + 1 == sys.meta_path.index(PathFinder)

    other = install(build_image(project, "b2"))
    assert other is not finder and finder not in sys.meta_path
    uninstall()
    uninstall()
    assert installed() is None
    assert not any(isinstance(f, BuildFinder) for f in sys.meta_path)


def test_unreadable_or_unknown_files_get_no_build_loader(project):
    write(project, {"hp_mod.py": "X = 1\n"})
    finder = install(build_image(project))
    os.remove(project / "hp_mod.py")
    assert finder.loader_for("hp_mod", str(project / "hp_mod.py")) is None
    assert finder.loader_for("hp_other", str(project / "other.py")) is None
