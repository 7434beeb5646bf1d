"""An incremental rebuild gives exactly what compiling the whole file gives.

The modules edited here are real: copies of this interpreter's standard library.
"""

from __future__ import annotations

import marshal
import random
import sysconfig
from pathlib import Path

import pytest

from thinlink.build.cache import Cache
from thinlink.build.rebuild import compile_cold, rebuild, unit_code
from thinlink.errors import SourceError

STDLIB = Path(sysconfig.get_paths()["stdlib"])


def units_of(record) -> list:  # noqa: ANN001
    return [unit for segment in record.segments for unit in segment.units]


@pytest.fixture
def cache(tmp_path):
    with Cache(tmp_path / "cache") as c:
        yield c


def assert_same_as_cold(cache: Cache, incremental, path: str, data: bytes) -> None:
    cold = compile_cold(cache, path, data).record
    inc = incremental.record
    assert [(s.start, s.end, s.digest) for s in inc.segments] == [
        (s.start, s.end, s.digest) for s in cold.segments
    ]
    assert [u for s in inc.segments for u in s.units] == [u for s in cold.segments for u in s.units]
    # What the incremental record derived from its base, not from its own segments.
    assert inc.starts == cold.starts and inc.unit_count == cold.unit_count
    for inc_seg, cold_seg in zip(inc.segments, cold.segments, strict=True):
        for unit in inc_seg.units:
            mine = unit_code(cache, inc_seg, unit)
            theirs = unit_code(cache, cold_seg, unit)
            assert mine is not None and theirs is not None, unit
            assert list(mine.co_positions()) == list(theirs.co_positions()), unit
            assert mine.co_code == theirs.co_code, unit


def edit(cache: Cache, path: str, old: bytes, new: bytes):
    base = compile_cold(cache, path, old).record
    assert base.starts  # computed, so that the edited record derives its own from it
    return rebuild(cache, base, old, path, new)


def check_edit(cache: Cache, path: str, original: bytes, new: bytes) -> bool:
    """Where the whole file compiles, the rebuild equals it (True); where it does not,
    the rebuild fails too (False)."""
    try:
        compile(new, path, "exec", dont_inherit=True)
    except SyntaxError:
        with pytest.raises(SourceError):
            edit(cache, path, original, new)
        return False
    assert_same_as_cold(cache, edit(cache, path, original, new), path, new)
    return True


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) >= 1, old
    return text.replace(old, new, 1)


def test_a_body_edit_compiles_only_its_segment(cache):
    path = str(STDLIB / "textwrap.py")
    old = Path(path).read_text()
    new = replace_once(old, "        self.width = width\n", "        self.width = width + 0\n")
    done = edit(cache, path, old.encode(), new.encode())
    # the TextWrapper class segment: the class, its methods, and the segment itself
    assert done.compiled == 1 + sum(
        1 for u in units_of(done.record) if u.qualname.split(".")[0] == "TextWrapper"
    )
    assert done.relocated == 0
    assert_same_as_cold(cache, done, path, new.encode())


def test_inserted_lines_relocate_everything_below(cache):
    path = str(STDLIB / "difflib.py")
    old = Path(path).read_text()
    new = replace_once(
        old,
        "def _calculate_ratio(matches, length):\n",
        "def _calculate_ratio(matches, length):\n    # one\n    # two\n",
    )
    done = edit(cache, path, old.encode(), new.encode())
    assert done.compiled == 2 and done.relocated > 50
    assert_same_as_cold(cache, done, path, new.encode())


@pytest.mark.parametrize(
    "change",
    [
        ("\ndef _copy_items(items):", "\ndef added(x):\n    return x\n\n\ndef _copy_items(items):"),
        ("\nclass HelpFormatter(object):", "\n@decorator\nclass HelpFormatter(object):"),
        ("SUPPRESS = '==SUPPRESS=='", "SUPPRESS = '==SUPPRESSED=='\nEXTRA = SUPPRESS * 2"),
        ("def _copy_items(items):", "def _copy_items(items, *, deep=False):"),
    ],
    ids=["add-function", "add-decorator", "module-constant", "signature"],
)
def test_scripted_edits_match_a_cold_compile(cache, change):
    path = str(STDLIB / "argparse.py")
    old = Path(path).read_text()
    new = replace_once(old, *change)
    assert_same_as_cold(cache, edit(cache, path, old.encode(), new.encode()), path, new.encode())


def test_deleting_a_function(cache):
    import ast

    path = str(STDLIB / "difflib.py")
    old = Path(path).read_text()
    plain = [
        node
        for node in ast.parse(old).body
        if isinstance(node, ast.FunctionDef) and not node.decorator_list
    ]
    victim = plain[len(plain) // 2]
    lines = old.splitlines(keepends=True)
    del lines[victim.lineno - 1 : victim.end_lineno]
    new = "".join(lines)
    done = edit(cache, path, old.encode(), new.encode())
    assert victim.name not in {u.qualname for u in units_of(done.record)}
    assert_same_as_cold(cache, done, path, new.encode())


def test_a_syntax_error_names_its_true_position(cache):
    path = str(STDLIB / "textwrap.py")
    old = Path(path).read_text()
    lines = old.splitlines(keepends=True)
    target = next(i for i, line in enumerate(lines) if line.startswith("    def fill("))
    lines.insert(target + 1, "        return (\n")
    with pytest.raises(SourceError) as info:
        edit(cache, path, old.encode(), "".join(lines).encode())
    try:
        compile("".join(lines), path, "exec")
    except SyntaxError as exc:
        assert (info.value.line, info.value.col) == (exc.lineno, exc.offset)
    assert str(info.value).startswith(f"{path}:")


def test_a_string_opened_and_closed_across_segments(cache, tmp_path):
    path = str(tmp_path / "m.py")
    old = "def a():\n    return 1\n\ndef b():\n    return 2\n\ndef c():\n    return 3\n"
    new = 'def a():\n    return 1\n"""\ndef b():\n    return 2\n"""\ndef c():\n    return 3\n'
    done = edit(cache, path, old.encode(), new.encode())
    assert "b" not in {u.qualname for u in units_of(done.record)}
    assert_same_as_cold(cache, done, path, new.encode())


def test_adding_a_future_import_recompiles_the_whole_module(cache, tmp_path):
    path = str(tmp_path / "m.py")
    old = '"""doc"""\ndef f(x: int):\n    return x\n'
    new = '"""doc"""\nfrom __future__ import annotations\ndef f(x: int):\n    return x\n'
    done = edit(cache, path, old.encode(), new.encode())
    assert done.record.flags != 0
    assert_same_as_cold(cache, done, path, new.encode())


def test_a_coding_line_is_honoured_by_fragments(cache, tmp_path):
    path = str(tmp_path / "m.py")
    old = "# -*- coding: latin-1 -*-\ndef f():\n    return 'caf\xe9'\n".encode("latin-1")
    new = "# -*- coding: latin-1 -*-\ndef f():\n    return 'caf\xe9!'\n".encode("latin-1")
    done = edit(cache, path, old, new)
    assert_same_as_cold(cache, done, path, new)
    code = unit_code(cache, done.record.segments[-1], done.record.segments[-1].units[0])
    assert "caf\xe9!" in code.co_consts


@pytest.mark.parametrize(
    "name",
    [
        "textwrap.py",
        "difflib.py",
        "argparse.py",
        "fractions.py",
        "json/decoder.py",
        "dataclasses.py",
    ],
)
def test_random_line_edits_match_a_cold_compile(cache, name):
    """Random deletions, duplications and swaps of lines: where the whole file compiles,
    the rebuild equals it; where it does not, the rebuild fails too."""
    path = str(STDLIB / name)
    original = Path(path).read_bytes()
    rng = random.Random(name)
    checked = 0
    for _ in range(25):
        lines = original.decode().splitlines(keepends=True)
        i = rng.randrange(len(lines))
        kind = rng.choice(["delete", "duplicate", "swap", "dedent"])
        if kind == "delete":
            del lines[i]
        elif kind == "duplicate":
            lines.insert(i, lines[i])
        elif kind == "swap" and i + 1 < len(lines):
            lines[i], lines[i + 1] = lines[i + 1], lines[i]
        else:
            lines[i] = lines[i].lstrip(" ")
        checked += check_edit(cache, path, original, "".join(lines).encode())
    assert checked >= 5


@pytest.mark.parametrize("name", ["argparse.py", "difflib.py", "dataclasses.py", "typing.py"])
def test_several_edits_far_apart_match_a_cold_compile(cache, name):
    """Two to five random line edits spread over the file at once (a checkout, a search
    and replace): the segments between them are found again, not compiled."""
    path = str(STDLIB / name)
    original = Path(path).read_bytes()
    rng = random.Random(f"many {name}")
    for _ in range(15):
        lines = original.decode().splitlines(keepends=True)
        for i in sorted(rng.sample(range(len(lines)), rng.randint(2, 5)), reverse=True):
            kind = rng.choice(["delete", "duplicate", "blank", "comment"])
            if kind == "delete":
                del lines[i]
            elif kind == "duplicate":
                lines.insert(i, lines[i])
            elif kind == "blank":
                lines.insert(i, "\n")
            else:
                lines.insert(i, "# note\n")
        check_edit(cache, path, original, "".join(lines).encode())


def test_bodies_edited_far_apart_compile_only_their_segments(cache):
    path = str(STDLIB / "argparse.py")
    original = Path(path).read_bytes()
    text = original.decode()
    targets = ["def _get_formatter(self):", "def _get_values(self, action, arg_strings):"]
    new = text
    for head in targets:
        assert text.count(head) == 1
        new = new.replace(head, head + "\n        pass", 1)
    done = edit(cache, path, original, new.encode())
    assert_same_as_cold(cache, done, path, new.encode())
    # Each edited method's class segment holds many units; only the segments of the two
    # methods' classes are compiled, far fewer than the classes and functions between.
    base = compile_cold(cache, path, original).record
    edited = {base.segment_at(text[: text.index(h)].count("\n") + 1) for h in targets}
    assert done.compiled == sum(1 + len(s.units) for s in edited)
    assert done.compiled < base.unit_count // 3


def test_records_round_trip_through_the_cache(cache):
    from thinlink.build.units import dump_record, load_record

    path = str(STDLIB / "textwrap.py")
    record = compile_cold(cache, path, Path(path).read_bytes()).record
    assert load_record(dump_record(record)) == record
    assert load_record(marshal.dumps((99, "x"))) is None
