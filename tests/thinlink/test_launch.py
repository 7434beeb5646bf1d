"""The launch path on real directory trees: the project's root, its module files, and
whether the last build is still the working tree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from thinlink.launch import discover, find_root


def write(root: Path, *names: str, text: str = "x = 1\n") -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def names(root: Path) -> list[str]:
    found, _ = discover(root)
    return [name for _, name in found]


def test_modules_and_packages_get_dotted_names(tmp_path):
    write(
        tmp_path, "top.py", "pkg/__init__.py", "pkg/mod.py", "pkg/sub/__init__.py", "pkg/sub/x.py"
    )
    found, warnings = discover(tmp_path)
    assert [(Path(path).relative_to(tmp_path).as_posix(), name) for path, name in found] == [
        ("pkg/__init__.py", "pkg"),
        ("pkg/mod.py", "pkg.mod"),
        ("pkg/sub/__init__.py", "pkg.sub"),
        ("pkg/sub/x.py", "pkg.sub.x"),
        ("top.py", "top"),
    ]
    assert all(os.path.isabs(path) for path, _ in found)
    assert warnings == []


def test_src_layout_names_have_no_src_prefix(tmp_path):
    write(tmp_path, "src/app/__init__.py", "src/app/core.py", "src/single.py", "tools/gen.py")
    assert names(tmp_path) == ["app", "app.core", "single", "tools.gen"]


def test_directories_nobody_builds_are_ignored(tmp_path):
    write(tmp_path, "app.py")
    write(
        tmp_path,
        ".hidden/secret.py",
        ".git/hooks/hook.py",
        "__pycache__/app.py",
        "pkg/__pycache__/cached.py",
        "node_modules/lib/thing.py",
        "lib/site-packages/dep.py",
        "lib/dist-packages/dep.py",
        "app.egg-info/meta.py",
        "dist/copy.py",
        "build/lib/copy.py",
    )
    # a virtual environment, whatever its name
    write(tmp_path, "env/lib/python3/site-packages/dep.py", "env/bin/tool.py")
    (tmp_path / "env" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    write(tmp_path, "myvenv/anything.py")
    (tmp_path / "myvenv" / "pyvenv.cfg").write_text("")
    # hidden and non-Python files
    write(tmp_path, ".hidden_module.py", "notes.txt", "script.pyw", "data.pyc")
    assert names(tmp_path) == ["app"]


def test_a_real_package_named_build_is_kept(tmp_path):
    write(tmp_path, "build/__init__.py", "build/steps.py")
    assert names(tmp_path) == ["build", "build.steps"]


def test_a_symlink_loop_is_skipped_with_a_warning(tmp_path):
    write(tmp_path, "pkg/__init__.py", "pkg/mod.py")
    os.symlink("..", tmp_path / "pkg" / "loop")
    os.symlink(".", tmp_path / "pkg" / "self")
    found, warnings = discover(tmp_path)
    assert [name for _, name in found] == ["pkg", "pkg.mod"]
    assert len(warnings) == 2
    assert all("symlink loop" in w and w.endswith("skipped") for w in warnings)
    assert any(w.startswith(str(tmp_path / "pkg" / "loop")) for w in warnings)


def test_a_second_name_for_a_directory_does_not_rename_its_modules(tmp_path):
    # "docs" sorts before "examples": a walk following links as it goes met the
    # modules under the link's name first and skipped the real directory.
    write(tmp_path, "examples/demo.py")
    (tmp_path / "docs").mkdir()
    os.symlink("../examples", tmp_path / "docs" / "examples")
    found, warnings = discover(tmp_path)
    assert [(name, path) for path, name in found] == [
        ("examples.demo", str(tmp_path / "examples" / "demo.py"))
    ]
    assert len(warnings) == 1 and "already included" in warnings[0]


def test_a_symlink_to_a_directory_outside_is_followed(tmp_path):
    root, outside = tmp_path / "proj", tmp_path / "outside"
    write(outside, "shared/util.py")
    write(root, "main.py")
    os.symlink(outside, root / "vendor")
    assert names(root) == ["main", "vendor.shared.util"]


def test_odd_entries_named_like_modules(tmp_path):
    write(tmp_path, "ok.py")
    os.symlink("missing.py", tmp_path / "dangling.py")
    os.symlink("selfref.py", tmp_path / "selfref.py")
    (tmp_path / "folder.py").mkdir()
    found, warnings = discover(tmp_path)
    # unreadable files are listed, for the build to report; a directory is not a module
    assert [name for _, name in found] == ["dangling", "ok", "selfref"]
    assert warnings == []


def test_find_root_walks_up_to_the_nearest_marker(tmp_path):
    for marker in ("pyproject.toml", "setup.py", "setup.cfg", ".git"):
        project = tmp_path / marker.strip(".").replace(".", "_")
        deep = project / "a" / "b"
        deep.mkdir(parents=True)
        (project / marker).mkdir() if marker == ".git" else (project / marker).write_text("")
        assert find_root(deep) == str(project)
        assert find_root(project) == str(project)
        write(deep, "mod.py")
        assert find_root(deep / "mod.py") == str(project)


def test_find_root_without_a_marker_is_the_start(tmp_path, monkeypatch):
    start = tmp_path / "loose" / "dir"
    start.mkdir(parents=True)
    markers = ("pyproject.toml", "setup.py", "setup.cfg", ".git")
    if any((parent / m).exists() for parent in start.parents for m in markers):
        pytest.skip("a project marker above the temporary directory")
    assert find_root(start) == str(start)
    monkeypatch.chdir(start)
    assert find_root() == str(start)
