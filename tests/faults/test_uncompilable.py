"""A file CPython cannot compile (its compiler gives up with RecursionError or
MemoryError, not SyntaxError) fails alone: the build names it and builds the rest.

Issue 12, item 5. `X = 1+1+...+1` with 20,000 terms, a call chain `f()()()...` as deep,
and 20,000 unary minus signs in a row; at module level and inside a function; in the
first build and as an edit of a module built before. Each time `thinlink build`
reports that file (`file: message`, no traceback) and `thinlink run` of a script that
does not import it runs as under python.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e.conftest import write

from .commands import Verdict, message_problems, python, thinlink
from .probes import FULL, Ledger
from .sample import Template

TERMS = 20_000
EXPRESSIONS = {  # what CPython's compiler gives up on, each way it does
    "a sum of 20,000 terms (RecursionError)": "+".join(["1"] * TERMS),
    "20,000 calls in a chain (RecursionError)": "int" + "()" * TERMS,
    "20,000 unary minus signs (MemoryError)": "-" * TERMS + "1",
}
PLACES = {
    "at module level": "X = {}\n",
    "inside a function": "def f():\n    return {}\n",
}
PROJECT = {
    "pyproject.toml": "",
    "good.py": "def value():\n    return 42\n",
    "other.py": "import good\n\nTWICE = good.value() * 2\n",
    "main.py": "import good, other\n\nprint(good.value(), other.TWICE)\n",
    "deep.py": "X = 1\n",
}


CASES = [
    (expression, place, when)
    for expression in EXPRESSIONS
    for place in PLACES
    for when in ("first build", "edit")
    # The quick run: each expression at module level in a first build, and the sum
    # inside a function as an edit.
    if FULL
    or (place, when) == ("at module level", "first build")
    or (expression.startswith("a sum") and (place, when) == ("inside a function", "edit"))
]


@pytest.mark.parametrize(("expression", "place", "when"), CASES)
def test_one_file_cpython_cannot_compile(
    template: Template, ledger: Ledger, tmp_path: Path, expression: str, place: str, when: str
) -> None:
    root = tmp_path / "project"
    write(root, PROJECT)
    if when == "edit":
        first = thinlink("build", cwd=root)
        assert first.returncode == 0, first.excerpt(40)
    deep = root / "deep.py"
    deep.write_text(PLACES[place].format(EXPRESSIONS[expression]))
    expected = python("main.py", cwd=root)
    assert expected.returncode == 0, expected.excerpt(40)

    build = thinlink("build", cwd=root)
    problems = message_problems(build, template.shapes, most=2)  # the file's line, a summary
    named = [line for line in build.stderr.splitlines() if str(deep) in line]
    if not named:
        problems.append("the build does not name the file it could not compile")
    elif len(named[0]) > 300:
        problems.append(f"the line naming the file is {len(named[0])} characters long")
    ran = thinlink("run", "main.py", cwd=root)
    problems += message_problems(ran, template.shapes)
    if (ran.returncode, ran.stdout) != (expected.returncode, expected.stdout):
        problems.append("`thinlink run` of a script not importing the file does not run right")
    again = thinlink("build", cwd=root)  # a no-op build: reports the file still, no traceback
    problems += [f"no-op build: {p}" for p in message_problems(again, template.shapes, most=2)]
    ledger.record(f"deep.py: {expression} {place}, {when}", Verdict(problems, [build, ran, again]))
    ledger.check()
