"""Building projects of real files: reuse, incremental rebuilds, failures, the cache.

Each test builds a project written into tmp_path through the public API (`Project`);
test_cli.py covers the same through the command, in-process and as real processes.
"""

from __future__ import annotations

import marshal
import os
import shutil
import sqlite3
import sysconfig
import threading
from pathlib import Path

import pytest

from thinlink import Project, launch
from thinlink.build import cache as cache_module
from thinlink.build import manifest as manifest_module
from thinlink.build.builder import BuildResult

STDLIB = Path(sysconfig.get_paths()["stdlib"])
FIELDS = {"build_id", "modules", "units", "compiled", "reused", "relocated", "failed", "seconds"}

MODULE = '''\
"""A module with every kind of unit."""
import marshal
import os

LIMIT = 10


def first():
    return 1


def second(x):
    total = 0
    for i in range(x):
        total += i
    return total


class Shape:
    sides = 0

    def area(self):
        return 0

    def name(self):
        return "shape"


def last():
    return os.sep
'''


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    write(root, "pyproject.toml", '[project]\nname = "proj"\n')
    write(root, "src/app/__init__.py", "from .shapes import Shape\n")
    write(root, "src/app/shapes.py", MODULE)
    write(
        root, "src/app/util.py", "def helper(a, b):\n    return a + b\n\n\nVALUE = helper(1, 2)\n"
    )
    write(root, "scripts/tool.py", "import sys\n\n\ndef main():\n    return sys.argv\n")
    return root


def write(root: Path, name: str, text: str | bytes) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def build(root: Path, cache: Path | None = None, *, jobs: int | None = 1) -> BuildResult:
    return Project(root, cache_dir=cache or root.parent / "cache", jobs=jobs).build()


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))


def syntax_error_of(path: Path) -> SyntaxError:
    with pytest.raises(SyntaxError) as info:
        compile(path.read_bytes(), str(path), "exec", dont_inherit=True)
    return info.value


def position(err: SyntaxError) -> str:
    return f"{err.filename}:{err.lineno}:{err.offset}: "


# reuse -----------------------------------------------------------------------------


def test_a_cold_build_compiles_every_unit(root):
    result = build(root)
    assert result.ok and result.errors == ()
    m = result.manifest
    assert [x.name for x in m.modules] == ["scripts.tool", "app", "app.shapes", "app.util"]
    assert m.units == result.compiled > 0
    assert result.reused == result.relocated == 0
    assert all(x.record is not None and x.error is None for x in m.modules)
    summary = result.summary()
    assert FIELDS <= summary.keys()
    assert summary["modules"] == 4 and summary["failed"] == 0


def test_an_unchanged_tree_compiles_nothing_and_keeps_its_build_id(root):
    first = build(root)
    again = build(root)
    assert again.compiled == again.relocated == 0
    assert again.reused == first.manifest.units
    assert again.manifest.build_id == first.manifest.build_id
    assert again.changes == ()


def test_touching_every_file_compiles_nothing(root):
    first = build(root)
    later = os.stat(root / "src/app/shapes.py").st_mtime + 3600
    for path in root.rglob("*.py"):
        os.utime(path, (later, later))
    again = build(root)
    assert (again.compiled, again.relocated) == (0, 0)
    assert again.manifest.build_id == first.manifest.build_id


def test_the_same_tree_gives_the_same_build_id_in_a_new_cache(root, tmp_path):
    first = build(root, tmp_path / "one")
    other = build(root, tmp_path / "two")
    assert other.compiled == first.compiled
    assert other.manifest.build_id == first.manifest.build_id
    assert other.manifest.modules == first.manifest.modules


def test_a_reverted_edit_is_found_in_the_cache(root):
    first = build(root)
    shapes = root / "src/app/shapes.py"
    edit(shapes, "return 1\n", "return 100\n")
    changed = build(root)
    assert changed.manifest.build_id != first.manifest.build_id
    shapes.write_text(MODULE)
    back = build(root)
    assert back.compiled == 0
    assert back.manifest.build_id == first.manifest.build_id


# incremental -------------------------------------------------------------------------


def test_a_body_edit_compiles_only_that_statements_units(root):
    first = build(root)
    edit(root / "src/app/shapes.py", "        total += i\n", "        total += i * 2\n")
    result = build(root)
    assert result.ok
    # the segment of `def second` and the function itself; nothing moved
    assert (result.compiled, result.relocated) == (2, 0)
    assert result.reused == first.manifest.units - 2
    assert [(c.name, c.action, c.compiled) for c in result.changes] == [
        ("app.shapes", "rebuilt", 2)
    ]
    assert result.manifest.units == first.manifest.units
    assert result.manifest.build_id != first.manifest.build_id


def test_a_method_edit_recompiles_its_class_statement_only(root):
    first = build(root)
    edit(root / "src/app/shapes.py", 'return "shape"', 'return "a shape"')
    result = build(root)
    # the class segment holds the class and its two methods
    assert (result.compiled, result.relocated) == (4, 0)
    assert result.reused == first.manifest.units - 4


def test_inserted_lines_relocate_the_units_below(root):
    first = build(root)
    edit(root / "src/app/shapes.py", "LIMIT = 10\n", "LIMIT = 10\n# one\n# two\nOTHER = 2\n")
    result = build(root)
    assert result.ok
    # the first segment (docstring, import, constants) compiled; every unit below moved
    assert result.compiled == 1
    assert result.relocated == first.manifest.by_name()["app.shapes"].units - 1 > 0
    assert result.reused + result.compiled + result.relocated == result.manifest.units


def test_an_incremental_build_equals_a_cold_build_of_the_same_tree(root, tmp_path):
    build(root, tmp_path / "inc")
    shapes = root / "src/app/shapes.py"
    edit(shapes, "def first():\n", "def zeroth():\n    pass\n\n\ndef first():\n")
    edit(shapes, "return 0\n", "return self.sides\n")
    inc = build(root, tmp_path / "inc")
    cold = build(root, tmp_path / "cold")
    assert inc.compiled < cold.compiled
    assert inc.manifest.build_id == cold.manifest.build_id
    assert [(m.name, m.digest, m.units) for m in inc.manifest.modules] == [
        (m.name, m.digest, m.units) for m in cold.manifest.modules
    ]


# failures -------------------------------------------------------------------------------


def test_a_syntax_error_is_reported_at_its_position_and_the_rest_still_builds(root):
    bad = write(root, "src/app/bad.py", "def ok():\n    return 1\n\n\ndef broken(:\n    pass\n")
    result = build(root)
    assert not result.ok
    (err,) = result.errors
    expected = syntax_error_of(bad)
    assert (err.path, err.line, err.col) == (str(bad), expected.lineno, expected.offset)
    assert (err.line, err.col) == (5, 12)
    assert str(err).startswith(f"{bad}:5:12: {expected.msg}")
    failed = result.manifest.by_name()["app.bad"]
    assert failed.record is None and failed.error == str(err)
    assert result.manifest.failed == (failed,)
    built = [m for m in result.manifest.modules if m.name != "app.bad"]
    assert len(built) == 4 and all(m.record is not None for m in built)
    assert result.summary()["failed"] == 1


def test_a_syntax_error_made_by_an_edit_is_reported_at_its_true_position(root):
    build(root)
    shapes = root / "src/app/shapes.py"
    edit(shapes, "    def name(self):\n", "    def name(self) -> :\n")
    result = build(root)
    (err,) = result.errors
    expected = syntax_error_of(shapes)
    assert str(err).startswith(f"{position(expected)}{expected.msg}")
    # fixing it builds again, and the last good build was kept meanwhile
    project = Project(root, cache_dir=root.parent / "cache")
    assert project.manifest("last").build_id == result.manifest.build_id
    assert project.manifest("last-good").build_id != result.manifest.build_id
    shapes.write_text(MODULE)
    assert build(root).ok


def test_undecodable_sources_are_errors_and_a_coding_line_is_honoured(root):
    invalid = write(root, "src/app/invalid.py", b'x = 1\ny = "caf\xe9"\nz = 2\n')
    nulls = write(root, "src/app/nulls.py", b"x = 1\n\x00\n")
    latin = write(root, "src/app/latin.py", b'# -*- coding: latin-1 -*-\nx = "caf\xe9"\n')
    result = build(root)
    errors = {e.path: e for e in result.errors}
    assert set(errors) == {str(invalid), str(nulls)}
    expected = syntax_error_of(invalid)
    err = errors[str(invalid)]
    assert (err.line, err.col) == (expected.lineno, expected.offset)
    assert err.line == 2
    assert str(err).startswith(f"{position(expected)}{expected.msg}")
    assert "'utf-8' codec can't decode byte 0xe9" in str(err)
    assert str(errors[str(nulls)]).startswith(f"{nulls}:1:1: ")
    assert "null bytes" in str(errors[str(nulls)])
    assert result.manifest.by_name()["app.latin"].record is not None
    assert str(latin) not in errors
    assert result.manifest.by_name()["app.shapes"].record is not None


@pytest.mark.parametrize(
    "data",
    [b"# coding: no-such-codec\nx = 1\n", b"\xef\xbb\xbf# coding: latin-1\nx = 1\n"],
    ids=["unknown-codec", "bom-and-latin-1"],
)
def test_a_bad_coding_line_is_reported_at_a_real_position(root, data):
    bad = write(root, "src/app/coding.py", data)
    (err,) = build(root).errors
    assert (err.line, err.col) == (1, 1)
    assert str(err).startswith(f"{bad}:1:1: ")


def test_unreadable_entries_are_errors_not_crashes(root):
    os.symlink("nowhere.py", root / "src/app/dangling.py")
    os.symlink("looping.py", root / "src/app/looping.py")
    (root / "src/app/folder.py").mkdir()
    result = build(root)
    messages = {Path(e.path).name: str(e) for e in result.errors}
    assert set(messages) == {"dangling.py", "looping.py"}
    assert messages["dangling.py"] == (
        f"{root}/src/app/dangling.py:1:1: cannot read: No such file or directory"
    )
    assert messages["looping.py"].startswith(f"{root}/src/app/looping.py:1:1: cannot read: ")
    assert "symbolic links" in messages["looping.py"]
    assert "app.folder" not in result.manifest.by_name()
    assert result.manifest.by_name()["app.shapes"].record is not None


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
def test_a_named_pipe_is_an_error_not_a_hang(root):
    # Opened as a file, a pipe blocks its reader until a writer comes. A writer that
    # connects and leaves at once lets such a regression fail (an empty module gets
    # built) instead of hanging the test run.
    fifo = root / "src/app/pipe.py"
    os.mkfifo(fifo)
    done = threading.Event()

    def unblock() -> None:
        while not done.wait(0.05):
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # no reader yet
                continue

    writer = threading.Thread(target=unblock, daemon=True)
    writer.start()
    try:
        result = build(root)
    finally:
        done.set()
        writer.join(timeout=5)
    (err,) = result.errors
    assert str(err) == f"{fifo}:1:1: cannot read: not a regular file"


def test_a_symlink_loop_is_a_warning_and_the_build_succeeds(root):
    os.symlink("..", root / "src/app/loop")
    result = build(root)
    assert result.ok
    assert len(result.warnings) == 1 and "symlink loop" in result.warnings[0]
    assert [m.name for m in result.manifest.modules] == [
        "scripts.tool",
        "app",
        "app.shapes",
        "app.util",
    ]


def test_a_build_never_runs_project_code(root, tmp_path, capfd):
    marker = tmp_path / "ran"
    write(
        root,
        "src/app/effects.py",
        f"""\
import marshal
import os
from pathlib import Path

Path({str(marker)!r}).write_text("module ran")
print("module printed")
os._exit(3)

if __name__ == "__main__":
    Path({str(marker)!r}).write_text("main ran")
""",
    )
    write(root, "src/app/__main__.py", f"open({str(marker)!r}, 'w').write('main')\n")
    write(root, "conftest.py", f"open({str(marker)!r}, 'w').write('conftest')\n")
    write(root, "setup.py", f"open({str(marker)!r}, 'w').write('setup')\n")
    result = build(root)
    assert result.ok
    assert {"app.effects", "app.__main__", "conftest", "setup"} <= set(result.manifest.by_name())
    assert not marker.exists()
    assert capfd.readouterr().out == ""


# the cache -------------------------------------------------------------------------------


def garble_every_value(cache_dir: Path) -> int:
    with sqlite3.connect(cache_dir / "objects" / "cache.db") as conn:
        changed = conn.execute(
            "UPDATE Cache SET value = randomblob(length(value)) WHERE value IS NOT NULL"
        ).rowcount
    for path in (cache_dir / "objects").rglob("*.val"):
        path.write_bytes(os.urandom(path.stat().st_size))
        changed += 1
    return changed


def test_damaged_values_are_compiled_again_when_used_never_trusted(root, tmp_path):
    from hotpatch.image import read_image
    from thinlink.build.image import ensure_image

    cache = tmp_path / "cache"
    first = build(root, cache)
    assert garble_every_value(cache) > 0
    # A no-op build opens no cache; what it did not read cannot mislead it.
    assert build(root, cache).manifest.build_id == first.manifest.build_id
    # An edit needs the old record: it is damaged, so the module is compiled whole.
    edit(root / "src/app/shapes.py", "return 1\n", "return 2\n")
    edited = build(root, cache)
    assert [(c.name, c.action) for c in edited.changes] == [("app.shapes", "compiled")]
    # An image needs every module's code: each damaged one is compiled from its file.
    project = Project(root, cache_dir=cache)
    builder = project.builder()
    try:
        image = read_image(ensure_image(builder.cache, edited.manifest))
    finally:
        builder.close()
    for entry in edited.manifest.modules:
        source = Path(entry.path).read_bytes()
        assert marshal.loads(image.entries[entry.path].code) == compile(
            source, entry.path, "exec", dont_inherit=True
        )


def test_one_damaged_record_recompiles_only_its_module(root, tmp_path):
    cache = tmp_path / "cache"
    first = build(root, cache)
    shapes = first.manifest.by_name()["app.shapes"]
    with sqlite3.connect(cache / "objects" / "cache.db") as conn:
        conn.execute("UPDATE Cache SET value = randomblob(64) WHERE key = ?", (shapes.record,))
    edit(root / "src/app/shapes.py", "return 1\n", "return 2\n")
    again = build(root, cache)
    assert again.ok
    assert [(c.name, c.action) for c in again.changes] == [("app.shapes", "compiled")]
    assert again.compiled == shapes.units


def test_values_swapped_between_keys_are_misses(root, tmp_path):
    cache = tmp_path / "cache"
    first = build(root, cache)
    util = first.manifest.by_name()["app.util"]
    shapes = first.manifest.by_name()["app.shapes"]
    with sqlite3.connect(cache / "objects" / "cache.db") as conn:
        rows = dict(
            conn.execute(
                "SELECT key, value FROM Cache WHERE key IN (?, ?)", (util.record, shapes.record)
            )
        )
        conn.execute("UPDATE Cache SET value = ? WHERE key = ?", (rows[shapes.record], util.record))
        conn.execute("UPDATE Cache SET value = ? WHERE key = ?", (rows[util.record], shapes.record))
    with cache_module.Cache(cache) as store:
        assert store.get_record(util.record) is None
        assert store.get_record(shapes.record) is None


def test_the_last_build_corrupt_is_a_fresh_start(root, tmp_path):
    cache = tmp_path / "cache"
    first = build(root, cache)
    for manifest in (cache / "builds").iterdir():
        manifest.write_bytes(b"garbage")
    again = build(root, cache)
    assert again.ok and again.compiled == 0  # records are still cached by content
    assert again.manifest.build_id == first.manifest.build_id
    # the manifest was written again, so the next edit is incremental
    project = Project(root, cache_dir=cache)
    assert project.manifest("last").modules == first.manifest.modules
    edit(root / "src/app/shapes.py", "return 1\n", "return 2\n")
    assert build(root, cache).changes[0].action == "rebuilt"


def test_the_cache_is_keyed_by_interpreter(root, monkeypatch):
    first = build(root)
    with monkeypatch.context() as patch:
        for module in (cache_module, manifest_module, launch):
            patch.setattr(module, "INTERPRETER_TAG", "other-python-0000")
        other = build(root)
    assert other.compiled == first.manifest.units
    assert other.manifest.build_id != first.manifest.build_id
    assert build(root).compiled == 0


def big_tree(root: Path) -> None:
    """About 600 KB of real modules: enough for the build to use worker processes."""
    for name in ("typing.py", "argparse.py", "inspect.py", "_pydecimal.py"):
        shutil.copy(STDLIB / name, root / name)
    shutil.copytree(STDLIB / "json", root / "json", ignore=shutil.ignore_patterns("__pycache__"))


def test_errors_come_back_from_worker_processes(tmp_path):
    # A SourceError raised in a worker used to break the pool (it did not unpickle).
    root = tmp_path / "big"
    root.mkdir()
    big_tree(root)
    bad = write(root, "bad.py", "x = (\n")
    result = build(root, jobs=2)
    (err,) = result.errors
    expected = syntax_error_of(bad)
    assert str(err).startswith(f"{position(expected)}{expected.msg}")
    assert len(result.manifest.modules) == len(list(root.rglob("*.py")))
    serial = build(root, tmp_path / "serial", jobs=1)
    assert serial.manifest.build_id == result.manifest.build_id
    assert [str(e) for e in serial.errors] == [str(err)]


# what a no-op build reads -----------------------------------------------------------------


def refuse_to_open_the_cache(monkeypatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cache was opened")

    monkeypatch.setattr(cache_module.Cache, "__init__", refuse)


def test_a_no_op_build_reads_the_manifest_and_the_sources_only(root, monkeypatch):
    first = build(root)
    with monkeypatch.context() as patch:
        refuse_to_open_the_cache(patch)
        again = build(root)
        later = os.stat(root / "src/app/shapes.py").st_mtime + 3600
        for path in root.rglob("*.py"):
            os.utime(path, (later, later))
        touched = build(root)
    for result in (again, touched):
        assert (result.compiled, result.reused) == (0, first.manifest.units)
        assert result.manifest.modules == first.manifest.modules


def test_a_session_records_its_builds_after_flushing(tmp_path):
    """thinlink dev writes behind: a save's records, manifest and refs reach the disk after
    its patch went out; meanwhile the session reads them from memory."""
    from thinlink.build.builder import Builder
    from thinlink.build.manifest import BuildStore

    root = tmp_path / "proj"
    write(root, "m.py", MODULE)
    builder = Builder(root, tmp_path / "cache", memo=True)
    first = builder.build()
    builder.write_behind()
    edit(root / "m.py", "return 1", "return 2")
    second = builder.build(changed={str(root / "m.py")})
    assert second.compiled == 2 and second.manifest.build_id != first.manifest.build_id

    other = BuildStore(tmp_path / "cache")  # another process: the disk only
    assert other.ref(str(root.resolve()), "last") == first.manifest.build_id
    assert builder.store.ref(str(root.resolve()), "last") == second.manifest.build_id
    assert builder.store.load(second.manifest.build_id) == second.manifest

    builder.flush()
    assert other.ref(str(root.resolve()), "last") == second.manifest.build_id
    reread = other.load(second.manifest.build_id)
    assert reread.modules == second.manifest.modules
    builder.close()
    # A new process picks up where the session left: nothing to compile.
    again = Project(root, cache_dir=tmp_path / "cache").build()
    assert again.compiled == 0 and again.manifest.build_id == second.manifest.build_id
