"""The watcher's filter (what a change must be to count) and its poller, on real files."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import watchfiles

from thinlink.dev.watch import SourceFilter, poll_changes

MODIFIED = watchfiles.Change.modified


@pytest.fixture
def root(tmp_path: Path) -> Path:
    # Under directories named like ignored ones: only the part below the root counts.
    root = tmp_path / "build" / ".hidden" / "venv" / "proj"
    root.mkdir(parents=True)
    return root


def test_sources_count_and_ignored_places_do_not(root: Path) -> None:
    (root / "tools-env").mkdir()
    (root / "tools-env" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (root / "build" / "pkg").mkdir(parents=True)
    (root / "dist").mkdir()
    (root / "build" / "pkg" / "__init__.py").write_text("")
    (root / "real_build" / "build").mkdir(parents=True)
    (root / "real_build" / "build" / "__init__.py").write_text("")  # a package named build
    accept = SourceFilter(roots=[root])
    assert accept(MODIFIED, str(root / "app.py"))
    assert accept(MODIFIED, str(root / "pkg" / "sub" / "mod.py"))
    assert accept(MODIFIED, str(root / "real_build" / "build" / "mod.py"))
    for ignored in [
        "tools-env/lib/python3.12/site-packages/x.py",  # any venv, by its pyvenv.cfg
        "tools-env/x.py",
        "lib/site-packages/x.py",
        ".git/hooks/x.py",
        ".venv/x.py",
        "__pycache__/x.py",
        "pkg/__pycache__/x.cpython-312.pyc",
        "build/pkg/x.py",  # setuptools' output
        "dist/x.py",
        "x.egg-info/x.py",
        "node_modules/x.py",
        ".#app.py",
        "app.py~",
        ".app.py.swp",
        "#app.py#",
        "4913",
        "notes.txt",
    ]:
        assert not accept(MODIFIED, str(root / ignored)), ignored


def test_include_and_exclude_match_name_relative_path_or_absolute_path(root: Path) -> None:
    accept = SourceFilter(
        include=("*.py", "conf/*.toml"), exclude=("legacy/*", "*_test.py"), roots=[root]
    )
    assert accept(MODIFIED, str(root / "conf" / "app.toml"))
    assert not accept(MODIFIED, str(root / "other" / "app.toml"))
    assert not accept(MODIFIED, str(root / "legacy" / "old.py"))
    assert not accept(MODIFIED, str(root / "pkg" / "mod_test.py"))
    assert accept(MODIFIED, str(root / "pkg" / "legacy.py"))
    absolute = SourceFilter(exclude=(f"{root}/gen/*",), roots=[root])
    assert not absolute(MODIFIED, str(root / "gen" / "x.py"))


def test_the_innermost_watched_root_counts(root: Path) -> None:
    inner = root / ".config"  # hidden below the project, but watched itself
    accept = SourceFilter(roots=[root, inner])
    assert accept(MODIFIED, str(inner / "settings.py"))
    assert not SourceFilter(roots=[root])(MODIFIED, str(inner / "settings.py"))


def collect(root: Path, act, batches: int = 1, **kwargs) -> list[set[str]]:  # noqa: ANN001
    """Run the poller on `root` while `act()` runs; the first `batches` batches."""
    stop = threading.Event()
    found: list[set[str]] = []
    ready = threading.Event()

    def run() -> None:
        ready.set()
        for batch in poll_changes([root], SourceFilter(roots=[root]), stop, **kwargs):
            found.append(batch)
            if len(found) == batches:
                return

    thread = threading.Thread(target=run)
    thread.start()
    ready.wait()
    act()
    thread.join(10)
    stop.set()
    thread.join(10)
    assert len(found) == batches, found
    return found


def test_polling_sees_a_save_in_the_same_second_with_the_same_size(root: Path) -> None:
    path = root / "mod.py"
    path.write_text("x = 1\n")
    before = path.stat()

    def rewrite() -> None:
        threading.Event().wait(0.1)  # the poller has its first snapshot
        path.write_text("x = 2\n")
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1))  # 1 ns later

    assert collect(root, rewrite) == [{str(path)}]


def test_polling_reports_a_burst_as_one_batch_and_deletions(root: Path) -> None:
    paths = [root / f"m{i}.py" for i in range(10)]
    (root / "gone.py").write_text("")

    def burst() -> None:
        threading.Event().wait(0.1)
        for path in paths:
            path.write_text("x = 1\n")
        (root / "gone.py").unlink()
        (root / "ignored.txt").write_text("")

    batches = collect(root, burst, delay=0.05, step=0.05)
    assert batches == [{str(p) for p in paths} | {str(root / "gone.py")}]
