"""`%load_ext thinlink` in IPython's own shell, in this process: real files, real cells.

Each test writes a project into a temporary directory, loads the extension in an
`InteractiveShell` working there, runs cells, saves files between them, and checks what
the next cell sees and what it printed. The edit cases are `notebook_cases.CASES` (the
kernel tests and the benchmark run the same ones).
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest

from hotpatch import _apply, _jumptable, provenance

from .notebook_cases import BODY, CASES, Cell, run_case, save, write_project

pytest.importorskip("IPython", reason="the test extra installs IPython")

from IPython.core.interactiveshell import InteractiveShell  # noqa: E402
from traitlets.config import Config  # noqa: E402


@pytest.fixture(scope="module")
def shell(tmp_path_factory: pytest.TempPathFactory):
    os.environ["IPYTHONDIR"] = str(tmp_path_factory.mktemp("ipython"))
    config = Config()
    config.HistoryManager.enabled = False
    saved_main = sys.modules.get("__main__")
    yield InteractiveShell.instance(config=config, colors="nocolor")
    if saved_main is not None:
        sys.modules["__main__"] = saved_main


class Notebook:
    """The shell, with the extension loaded in a project; `cell(code)` runs one cell."""

    def __init__(self, shell: InteractiveShell, capsys: pytest.CaptureFixture, root: Path):
        self.shell = shell
        self.capsys = capsys
        self.root = root

    def cell(self, code: str) -> Cell:
        self.capsys.readouterr()
        self.shell.user_ns.pop("__check", None)
        result = self.shell.run_cell(code, store_history=True)
        captured = self.capsys.readouterr()
        error = result.error_in_exec or result.error_before_exec
        value = None
        if error is None and "__check" in self.shell.user_ns:
            value = repr(self.shell.user_ns["__check"])
        described = None if error is None else f"{type(error).__name__}: {error}"
        return Cell(value, captured.out, captured.err, described)

    def save(self, name: str, text: str) -> None:
        save(self.root / name, text)


@pytest.fixture
def notebook(shell, capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A project with every case's files, the shell working in it (not loaded yet)."""
    root = tmp_path / "project"
    write_project(root)
    monkeypatch.chdir(root)
    monkeypatch.syspath_prepend(str(root))
    for name in [n for n in os.environ if n.startswith(("THINLINK_", "HOTPATCH_"))]:
        monkeypatch.delenv(name)
    before = set(sys.modules)
    saved_digests = dict(provenance.digests)
    shell.reset(new_session=False)
    yield Notebook(shell, capsys, root)
    shell.run_line_magic("unload_ext", "thinlink")
    shell.extension_manager.loaded.discard("thinlink")
    provenance.untrack()
    provenance.digests.clear()
    provenance.digests.update(saved_digests)
    for name in set(sys.modules) - before:
        if name.startswith(("nb_", "other_")):
            del sys.modules[name]
    importlib.invalidate_caches()
    _apply._history.clear()
    _jumptable.set_build(None)
    _jumptable._queue.clear()
    _jumptable._enabled = _jumptable._pending = _jumptable._responsive = False
    _jumptable.update_mode()


@pytest.fixture
def loaded(notebook: Notebook) -> Notebook:
    started = notebook.cell("%load_ext thinlink")
    assert started.error is None, started.output
    assert f"thinlink: project {notebook.root}" in started.out
    return notebook


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_edit_case(loaded: Notebook, case) -> None:
    assert run_case(loaded.cell, loaded.root, case, applied=False) == []


def test_a_patch_is_one_line_and_nothing_changed_says_nothing(loaded: Notebook) -> None:
    assert loaded.cell("import nb_body").output == ""
    loaded.save("nb_body.py", BODY.replace('"hello "', '"hi "'))
    cell = loaded.cell("nb_body.greet('x')")
    lines = [line for line in cell.output.splitlines() if line.startswith("thinlink:")]
    assert len(lines) == 1 and lines[0].startswith("thinlink: patched nb_body.greet (")
    assert lines[0].endswith(" ms)")
    for _ in range(3):
        quiet = loaded.cell("x = nb_body.greet('y')")
        assert quiet.output == "" and loaded.shell.user_ns["x"] == "hi y"


def test_the_messages_say_file_line_col_the_reason_and_the_traceback(loaded: Notebook) -> None:
    loaded.cell("import nb_syntax, nb_dc, nb_raise")
    loaded.save("nb_syntax.py", 'def f():\n    return "new" +\n')
    cell = loaded.cell("nb_syntax.f()")
    assert f"{loaded.root}/nb_syntax.py:2:" in cell.err
    assert "the code runs on the last version that built" in cell.err
    # As in `thinlink dev`, a file to patch that does not build stops every patch (the
    # others may need what it defines), and says so at each save until it builds.
    loaded.save("nb_dc.py", (loaded.root / "nb_dc.py").read_text().replace("x: int", "x: str"))
    cell = loaded.cell("nb_dc.Point(1)")
    assert f"{loaded.root}/nb_syntax.py:2:" in cell.err and "restart" not in cell.err
    loaded.save("nb_syntax.py", 'def f():\n    return "new"\n')
    cell = loaded.cell("__check = nb_syntax.f()")
    assert cell.value == "'new'" and "patched nb_syntax.f" in cell.out
    assert "nb_dc not patched, it needs a kernel restart:" in cell.err
    assert "fields of dataclass Point" in cell.err and cell.error is None
    loaded.save("nb_raise.py", 'def f():\n    return "new"\n\n\nX = 1 / 0\n')
    cell = loaded.cell("nb_raise.f()")
    assert "patch not applied, nothing changed (rolled back)" in cell.err
    assert "ZeroDivisionError: division by zero" in cell.err and "line 5" in cell.err


def test_modules_imported_before_loading_are_adopted(notebook: Notebook) -> None:
    notebook.cell("import nb_body\nfrom nb_body import greet")
    notebook.cell("%load_ext thinlink")
    notebook.save("nb_body.py", BODY.replace('"hello "', '"hi "'))
    cell = notebook.cell("__check = greet('x')")
    assert cell.value == "'hi x'", cell.output
    assert "patched nb_body.greet" in cell.out


def test_a_module_changed_before_it_was_adopted_is_named_once(notebook: Notebook) -> None:
    notebook.cell("import nb_body")
    notebook.save("nb_body.py", BODY.replace('"hello "', '"edited before loading "'))
    started = notebook.cell("%load_ext thinlink")
    warnings = [line for line in started.err.splitlines() if "nb_body" in line]
    assert len(warnings) == 1, started.output
    assert "nb_body is not patched: its file changed after it was imported" in warnings[0]
    assert "importlib.reload(nb_body)" in warnings[0]
    notebook.save("nb_body.py", BODY.replace('"hello "', '"later "'))
    cell = notebook.cell("__check = nb_body.greet('x')")
    assert cell.value == "'hello x'"  # never a patch on top of unknown code
    assert "nb_body not patched: its file changed after it was imported" in cell.err
    assert notebook.cell("y = nb_body.greet('y')").output == ""  # said; not again
    status = notebook.cell("%thinlink").out
    assert "behind its file: nb_body: its file changed after it was imported" in status
    # Imported again: from then on it is patched.
    notebook.cell("import importlib; importlib.reload(nb_body)")
    notebook.save("nb_body.py", BODY.replace('"hello "', '"reloaded, then patched "'))
    cell = notebook.cell("__check = nb_body.greet('z')")
    assert cell.value == "'reloaded, then patched z'", cell.output


def test_off_on_rollback_and_status(loaded: Notebook) -> None:
    loaded.cell("import nb_body")
    status = loaded.cell("%thinlink").out
    assert f"thinlink: on, project {loaded.root}" in status
    assert "tracked: 1 imported modules of the project's" in status and ": nb_body" in status
    assert "last patch: none yet" in status
    loaded.cell("%thinlink off")
    loaded.save("nb_body.py", BODY.replace('"hello "', '"hi "'))
    assert loaded.cell("__check = nb_body.greet('x')").value == "'hello x'"
    loaded.cell("%thinlink on")
    assert loaded.cell("__check = nb_body.greet('x')").value == "'hi x'"
    assert "last patch (" in loaded.cell("%thinlink").out
    rolled = loaded.cell("%thinlink rollback")
    assert "rolled back: nb_body.greet" in rolled.out
    assert loaded.cell("__check = nb_body.greet('x')").value == "'hello x'"
    assert "behind its file: nb_body: rolled back" in loaded.cell("%thinlink").out
    assert "nothing to roll back" in loaded.cell("%thinlink rollback").err
    loaded.save("nb_body.py", BODY.replace('"hello "', '"again "'))
    assert loaded.cell("__check = nb_body.greet('x')").value == "'again x'"
    assert "usage: %thinlink" in loaded.cell("%thinlink sideways").err


def test_another_project_by_path(loaded: Notebook, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "other_mod.py").write_text("def value():\n    return 1\n")
    sys.path.insert(0, str(other))
    try:
        switched = loaded.cell(f"%thinlink project {other}")
        assert f"thinlink: project {other}" in switched.out
        loaded.cell("import other_mod, nb_body")
        save(other / "other_mod.py", "def value():\n    return 2\n")
        loaded.save("nb_body.py", BODY.replace('"hello "', '"not followed "'))
        assert loaded.cell("__check = (other_mod.value(), nb_body.greet('x'))").value == (
            "(2, 'hello x')"
        )
    finally:
        sys.path.remove(str(other))


def test_a_new_module_file_is_tracked_when_imported(loaded: Notebook) -> None:
    (loaded.root / "nb_new.py").write_text("def f():\n    return 1\n")
    assert loaded.cell("import nb_new").error is None
    loaded.save("nb_new.py", "def f():\n    return 2\n")
    assert loaded.cell("__check = nb_new.f()").value == "2"


def test_modules_imported_after_loading_run_the_builds_code_and_are_patched(
    loaded: Notebook,
) -> None:
    # Loaded from the build's image (as `thinlink run` loads them), not compiled again.
    loaded.cell("import nb_body")
    assert loaded.cell("__check = type(nb_body.__spec__.loader).__name__").value == (
        "'TrackedBuildLoader'"
    )
    loaded.save("nb_body.py", BODY.replace('"hello "', '"hi "'))
    cell = loaded.cell("__check = nb_body.greet('x')")
    assert cell.value == "'hi x'" and "patched nb_body.greet" in cell.out, cell.output


def test_a_module_saved_after_loading_and_imported_later_runs_its_file(
    loaded: Notebook,
) -> None:
    # The image holds the build's bytes; the file holds newer ones: the file wins.
    loaded.save("nb_body.py", BODY.replace('"hello "', '"saved before import "'))
    cell = loaded.cell("import nb_body\n__check = nb_body.greet('x')")
    assert cell.value == "'saved before import x'", cell.output
    loaded.save("nb_body.py", BODY.replace('"hello "', '"then patched "'))
    assert loaded.cell("__check = nb_body.greet('x')").value == "'then patched x'"


def test_names_added_to_a_star_imported_module_join_the_namespace(loaded: Notebook) -> None:
    # As `%autoreload 3` does: the cell star-imported the module, so a function saved
    # into it is there in the next cell; a private name is not, the user's own is kept.
    loaded.save("nb_star.py", "def one():\n    return 1\n")
    assert loaded.cell("from nb_star import *\ntwo = 'mine'").error is None
    loaded.save(
        "nb_star.py",
        "def one():\n    return 1\n\n\ndef two():\n    return 2\n\n\n"
        "def three():\n    return 3\n\n\ndef _hidden():\n    return 0\n",
    )
    cell = loaded.cell("__check = (one(), three(), two)")
    assert cell.value == "(1, 3, 'mine')", cell.output
    assert "_hidden" not in loaded.shell.user_ns
    loaded.cell("%thinlink rollback")
    assert "three" not in loaded.shell.user_ns and loaded.shell.user_ns["two"] == "mine"


def test_unloading_leaves_the_import_system_as_it_was(notebook: Notebook) -> None:
    from hotpatch._loader import BuildFinder

    before = list(sys.meta_path)
    notebook.cell("%load_ext thinlink")
    assert any(isinstance(f, BuildFinder) for f in sys.meta_path)
    notebook.cell("%unload_ext thinlink")
    assert sys.meta_path == before


def test_a_long_loop_picks_up_a_save_at_its_safe_points(loaded: Notebook) -> None:
    (loaded.root / "nb_loop.py").write_text("def value():\n    return 'old'\n")
    loaded.cell("import nb_loop")
    for safe_point, before, after in (
        ("hotpatch.call(nb_loop.value)", "old", "new"),
        ("(hotpatch.safepoint(), nb_loop.value())[1]", "new", "newer"),
    ):
        cell = loaded.cell(
            f"""\
import threading, time, hotpatch
from pathlib import Path

def save_soon():
    time.sleep(0.3)
    Path("nb_loop.py").write_text("def value():\\n    return {after!r}\\n")

threading.Thread(target=save_soon).start()
seen = []
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    seen.append({safe_point})
    if seen[-1] == {after!r}:
        break
    time.sleep(0.002)
__check = (seen[0], seen[-1])
"""
        )
        assert cell.value == repr((before, after)), cell.output
        assert "thinlink: patched nb_loop.value (" in cell.out, cell.output
        assert "(during the cell)" in cell.out, cell.output


MOVING = """\
def top():
    return "top"


def below():
    return "below"
"""


def test_code_that_moved_gets_its_new_lines_and_the_next_patch_finds_it(
    loaded: Notebook,
) -> None:
    (loaded.root / "nb_move.py").write_text(MOVING)
    loaded.cell("import nb_move\nbelow = nb_move.below")
    grown = MOVING.replace('    return "top"', '    extra = "!"\n    return "top" + extra')
    loaded.save("nb_move.py", grown)
    assert loaded.cell("__check = nb_move.top()").value == "'top!'"
    # Edited at once, before the shift of `below` (a line down) may have happened: the
    # patch must still find `below` by its new line.
    loaded.save("nb_move.py", grown.replace('"below"', '"below, edited"'))
    cell = loaded.cell("__check = (below(), below.__code__.co_firstlineno)")
    assert cell.value == "('below, edited', 6)", cell.output
    # The update and its shifts roll back as one.
    loaded.cell("%thinlink rollback")
    cell = loaded.cell("__check = (nb_move.top(), below(), below.__code__.co_firstlineno)")
    assert cell.value == "('top!', 'below', 6)", cell.output
    loaded.cell("%thinlink rollback")
    cell = loaded.cell("__check = (nb_move.top(), below(), below.__code__.co_firstlineno)")
    assert cell.value == "('top', 'below', 5)", cell.output


def test_shifted_lines_show_in_tracebacks(loaded: Notebook) -> None:
    (loaded.root / "nb_trace.py").write_text(
        'def top():\n    return 1\n\n\ndef fails():\n    raise ValueError("here")\n'
    )
    loaded.cell("import nb_trace")
    loaded.save(
        "nb_trace.py",
        'def top():\n    x = 1\n    return x\n\n\ndef fails():\n    raise ValueError("here")\n',
    )
    loaded.cell("nb_trace.top()")
    cell = loaded.cell(
        "import traceback\n"
        "try:\n    nb_trace.fails()\n"
        "except ValueError as exc:\n"
        "    __check = traceback.extract_tb(exc.__traceback__)[-1].lineno\n"
    )
    assert cell.value == "7", cell.output


def test_code_added_where_old_code_moved_from_keeps_its_lines(loaded: Notebook) -> None:
    # The new function starts at line 1, a line the shift of `a` (1 -> 4) reads as old: the
    # shifts then go with the patch (the runtime tells the new function from the moved one).
    (loaded.root / "nb_insert.py").write_text('def a():\n    return "a"\n')
    loaded.cell("import nb_insert\na = nb_insert.a")
    loaded.save("nb_insert.py", 'def new():\n    return "new"\n\n\ndef a():\n    return "a"\n')
    cell = loaded.cell(
        "__check = (nb_insert.new(), nb_insert.new.__code__.co_firstlineno, a(),"
        " a.__code__.co_firstlineno)"
    )
    assert cell.value == "('new', 1, 'a', 5)", cell.output
