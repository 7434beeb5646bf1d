"""The edit cases a notebook reloader is judged by: real files edited between real cells.

Each case is a module of its own (so one kernel runs them all), a cell that imports it and
holds references the way notebook code does, and steps: files saved, then the next cell's
check (an expression whose `repr` must equal the expected one) and what its output must
show (regular expressions, whatever the reloader's wording). Used by the in-process
IPython tests, the Jupyter kernel tests and `benchmarks/bench_notebook.py` (which runs
the same cases under `%autoreload 2`).

A notebook is anything with `cell(code) -> Cell`; `run_case` drives one case through it.
"""

from __future__ import annotations

import os
import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CASES", "Case", "Cell", "Step", "run_case", "save", "write_project"]


@dataclass(frozen=True)
class Cell:
    """What a cell did: the `repr` of its check value (None if it raised), its output."""

    value: str | None
    out: str = ""
    err: str = ""
    error: str | None = None  # the exception the cell raised, as "Name: message"

    @property
    def output(self) -> str:
        return self.out + self.err


@dataclass(frozen=True)
class Step:
    """Save `files` (name -> whole new text), then run `check` in the next cell."""

    files: dict[str, str]
    check: str
    expected: object
    shown: tuple[str, ...] = ()  # regexes the check cell's output must match
    # Also right, without `shown`: the change applied in place, consistently (for edits
    # the spec calls for a restart, a reloader that really managed them is not wrong).
    applied: tuple[object, ...] = ()


@dataclass(frozen=True)
class Case:
    name: str
    what: str
    files: dict[str, str]
    setup: str
    steps: tuple[Step, ...]
    needs_restart: bool = False
    extra: dict[str, str] = field(default_factory=dict)  # other files of the case


def _d(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


BODY = _d(
    """
    def greet(name):
        return "hello " + name


    class Greeter:
        def hello(self):
            return greet("method")
    """
)

METHOD = _d(
    """
    class Counter:
        def __init__(self):
            self.n = 0

        def step(self):
            self.n += 1
            return self.n
    """
)

ATTRIBUTE = _d(
    """
    class Config:
        LIMIT = 10

        def limit(self):
            return self.LIMIT
    """
)

CONSTANT = _d(
    """
    A = 2
    B = A * 10
    REGISTRY = []


    def scaled(x=A):
        return x * 3
    """
)

STATE = _d(
    """
    CALLS = []


    def record(x):
        CALLS.append(x)
        return len(CALLS)
    """
)

DECORATED = _d(
    """
    import functools

    HANDLERS = {}


    def register(fn):
        HANDLERS[fn.__name__] = fn
        return fn


    def logged(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            return fn(*args, **kwargs)

        return wrapper


    @functools.lru_cache(maxsize=None)
    def square(x):
        return x * x


    @register
    def handle():
        return "v1"


    @logged
    def shout(text):
        return text.upper()
    """
)

PROPERTY = _d(
    """
    class Shape:
        def __init__(self, side):
            self.side = side

        @property
        def area(self):
            return self.side * self.side

        @classmethod
        def unit(cls):
            return cls(1)

        @staticmethod
        def kind():
            return "square"
    """
)

ADD_REMOVE = _d(
    """
    def keep():
        return "keep"


    def old():
        return "old"
    """
)

SYNTAX = _d(
    """
    def f():
        return "old"
    """
)

RAISING = _d(
    """
    def f():
        return "old"


    X = 1
    """
)

DATACLASS = _d(
    """
    import dataclasses


    @dataclasses.dataclass
    class Point:
        x: int


    def norm(p):
        return abs(p.x)
    """
)

ENUM = _d(
    """
    import enum


    class Color(enum.Enum):
        RED = 1
        GREEN = 2
    """
)

BASES = _d(
    """
    class Base:
        def who(self):
            return "base"


    class Other:
        def who(self):
            return "other"


    class Child(Base):
        pass
    """
)


CASES: tuple[Case, ...] = (
    Case(
        "function_body",
        "function body; references held (from-import, list, dict, bound method)",
        {"nb_body.py": BODY},
        "import nb_body\nfrom nb_body import greet\nheld = [nb_body.greet]\n"
        "registry = {'g': nb_body.greet}\nbound = nb_body.Greeter().hello",
        (
            Step(
                {"nb_body.py": BODY.replace('"hello "', '"hi "')},
                "(greet('a'), held[0]('b'), registry['g']('c'), bound(), nb_body.greet('d'))",
                ("hi a", "hi b", "hi c", "hi method", "hi d"),
            ),
        ),
    ),
    Case(
        "method_live_instance",
        "method body; a live instance and a bound method keep their state and class",
        {"nb_method.py": METHOD},
        "import nb_method\nc = nb_method.Counter()\nc.step()\nc.step()\nstep = c.step",
        (
            Step(
                {"nb_method.py": METHOD.replace("self.n += 1", "self.n += 10")},
                "(c.step(), step(), isinstance(c, nb_method.Counter), "
                "type(c) is nb_method.Counter)",
                (12, 22, True, True),
            ),
        ),
    ),
    Case(
        "class_attribute",
        "class attribute changed and added; the instance sees both",
        {"nb_attr.py": ATTRIBUTE},
        "import nb_attr\ncfg = nb_attr.Config()",
        (
            Step(
                {"nb_attr.py": ATTRIBUTE.replace("LIMIT = 10", "LIMIT = 20\n    NAME = 'new'")},
                "(cfg.limit(), nb_attr.Config.LIMIT, cfg.NAME, isinstance(cfg, nb_attr.Config))",
                (20, 20, "new", True),
            ),
        ),
    ),
    Case(
        "constant_dependants",
        "module constant; what reads it re-run (B, a default), `from m import A` rebound, "
        "an unchanged REGISTRY kept",
        {"nb_const.py": CONSTANT},
        "import nb_const\nfrom nb_const import A\nnb_const.REGISTRY.append('kept')",
        (
            Step(
                {"nb_const.py": CONSTANT.replace("A = 2", "A = 3")},
                "(nb_const.B, nb_const.scaled(), A, nb_const.REGISTRY)",
                (30, 9, 3, ["kept"]),
            ),
        ),
    ),
    Case(
        "state_kept",
        "function body edited; the module's data (a list filled by earlier calls) kept",
        {"nb_state.py": STATE},
        "import nb_state\nnb_state.record(1)\nnb_state.record(2)",
        (
            Step(
                {"nb_state.py": STATE.replace("return len(CALLS)", "return len(CALLS) * 100")},
                "(nb_state.record(3), nb_state.CALLS)",
                (300, [1, 2, 3]),
            ),
        ),
    ),
    Case(
        "decorated",
        "decorated functions: lru_cache (held, cleared), a registration decorator, "
        "a functools.wraps wrapper",
        {"nb_deco.py": DECORATED},
        "import nb_deco\nsq = nb_deco.square\nsq(3)\nshout = nb_deco.shout",
        (
            Step(
                {
                    "nb_deco.py": DECORATED.replace("return x * x", "return x * x + 1")
                    .replace('return "v1"', 'return "v2"')
                    .replace("text.upper()", 'text.upper() + "!"')
                },
                "(sq(3), nb_deco.square(3), nb_deco.HANDLERS['handle'](), shout('a'), "
                "len(nb_deco.HANDLERS))",
                (10, 10, "v2", "A!", 1),
            ),
        ),
    ),
    Case(
        "property_classmethod",
        "property, classmethod and staticmethod bodies; a live instance",
        {"nb_prop.py": PROPERTY},
        "import nb_prop\ns = nb_prop.Shape(3)",
        (
            Step(
                {
                    "nb_prop.py": PROPERTY.replace(
                        "return self.side * self.side", "return self.side * 4"
                    )
                    .replace("return cls(1)", "return cls(2)")
                    .replace('return "square"', 'return "quad"')
                },
                "(s.area, nb_prop.Shape.unit().side, s.kind(), isinstance(s, nb_prop.Shape))",
                (12, 2, "quad", True),
            ),
        ),
    ),
    Case(
        "added_removed",
        "a function added and one removed; an old reference to it keeps working",
        {"nb_addrm.py": ADD_REMOVE},
        "import nb_addrm\nold_ref = nb_addrm.old",
        (
            Step(
                {
                    "nb_addrm.py": ADD_REMOVE.replace(
                        'def old():\n    return "old"', 'def new():\n    return "new"'
                    )
                },
                "(hasattr(nb_addrm, 'old'), nb_addrm.new(), old_ref(), nb_addrm.keep())",
                (False, "new", "old", "keep"),
            ),
        ),
    ),
    Case(
        "syntax_error",
        "a syntax error: the file and line are shown, the cell runs on the last good code; "
        "the fix then applies",
        {"nb_syntax.py": SYNTAX},
        "import nb_syntax",
        (
            Step(
                {"nb_syntax.py": SYNTAX.replace('return "old"', 'return "new" +')},
                "nb_syntax.f()",
                "old",
                (r"nb_syntax\.py\D{1,10}2\b",),
            ),
            Step(
                {"nb_syntax.py": SYNTAX.replace('return "old"', 'return "fixed"')},
                "nb_syntax.f()",
                "fixed",
            ),
        ),
    ),
    Case(
        "raising_rerun",
        "a re-run statement raises: the whole change is rolled back (f keeps its old body), "
        "the traceback shown; the fix then applies",
        {"nb_raise.py": RAISING},
        "import nb_raise",
        (
            Step(
                {"nb_raise.py": RAISING.replace('"old"', '"new"').replace("X = 1", "X = 1 / 0")},
                "(nb_raise.f(), nb_raise.X)",
                ("old", 1),
                ("ZeroDivisionError",),
            ),
            Step(
                {"nb_raise.py": RAISING.replace('"old"', '"new"').replace("X = 1", "X = 2")},
                "(nb_raise.f(), nb_raise.X)",
                ("new", 2),
            ),
        ),
    ),
    Case(
        "restart_dataclass",
        "dataclass fields changed: the reason is shown, the kernel keeps the class it had",
        {"nb_dc.py": DATACLASS},
        "import nb_dc\np = nb_dc.Point(1)",
        (
            Step(
                {"nb_dc.py": DATACLASS.replace("x: int", "x: int\n    y: int = 0")},
                "(isinstance(p, nb_dc.Point), repr(p), nb_dc.norm(nb_dc.Point(-5)))",
                (True, "Point(x=1)", 5),
                ("(?i)restart",),
                applied=((True, "Point(x=1, y=0)", 5),),
            ),
        ),
        needs_restart=True,
    ),
    Case(
        "restart_enum",
        "an Enum member added: it joins the live Enum, whose members held stay its own; a "
        "member's value changed: the reason is shown, the members held stay the class's",
        {"nb_enum.py": ENUM},
        "import nb_enum\nc = nb_enum.Color.RED",
        (
            Step(
                {"nb_enum.py": ENUM.replace("GREEN = 2", "GREEN = 2\n    BLUE = 3")},
                "(c is nb_enum.Color.RED, [m.name for m in nb_enum.Color], "
                "nb_enum.Color(3) is nb_enum.Color.BLUE)",
                (True, ["RED", "GREEN", "BLUE"], True),
            ),
            Step(
                {"nb_enum.py": ENUM.replace("RED = 1", "RED = 10") + "    BLUE = 3\n"},
                "(c is nb_enum.Color.RED, nb_enum.Color.RED.value)",
                (True, 1),
                ("(?i)restart",),
                applied=((True, 10),),
            ),
        ),
        needs_restart=True,
    ),
    Case(
        "restart_bases",
        "a class's base changed: the reason is shown, instances keep their class",
        {"nb_bases.py": BASES},
        "import nb_bases\nk = nb_bases.Child()",
        (
            Step(
                {"nb_bases.py": BASES.replace("class Child(Base):", "class Child(Other):")},
                "(k.who(), isinstance(k, nb_bases.Child), nb_bases.Child().who())",
                ("base", True, "base"),
                ("(?i)restart",),
                applied=(("other", True, "other"),),
            ),
        ),
        needs_restart=True,
    ),
)


def write_project(root: Path, cases: tuple[Case, ...] = CASES) -> None:
    """Every case's files under `root`, a project (it has a pyproject.toml)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'notebook-cases'\n")
    for case in cases:
        for name, text in {**case.files, **case.extra}.items():
            (root / name).write_text(text)


def save(path: Path, text: str) -> None:
    """Write `path` as an editor saves it a while after the last save: its modification
    time in a later whole second than the last one's. Saves made faster than a person
    makes them would look the same to a reloader that reads only modification times,
    and to a pyc, which records them in whole seconds (with the size): a reload would run
    the stale pyc."""
    try:
        before = os.stat(path).st_mtime_ns
    except FileNotFoundError:
        before = 0
    path.write_text(text)
    after = os.stat(path).st_mtime_ns
    second = 1_000_000_000
    if after // second <= before // second:
        later = (before // second + 1) * second + after % second
        os.utime(path, ns=(later, later))


def run_case(
    cell: Callable[[str], Cell], root: Path, case: Case, *, applied: bool = True
) -> list[str]:
    """Run `case` through `cell`; the problems found (none: the reloader got it right).

    The check cell's code is `__check = (<check>)` and `cell` returns `repr(__check)`.
    With `applied` False, a step's `applied` outcomes are not accepted: only what the
    spec asks for (a restart, said)."""
    problems = []
    setup = cell(case.setup)
    if setup.error:
        return [f"{case.name}: setup raised {setup.error}"]
    for number, step in enumerate(case.steps, 1):
        for name, text in step.files.items():
            save(root / name, text)
        got = cell(f"__check = ({step.check})")
        where = f"{case.name} step {number}"
        if got.error is not None:
            problems.append(f"{where}: the check raised {got.error}\n{got.output}")
            continue
        if applied and got.value in [repr(a) for a in step.applied]:
            continue  # managed in place, and consistent
        if got.value != repr(step.expected):
            problems.append(
                f"{where}: {step.check} is {got.value}, expected {step.expected!r}\n{got.output}"
            )
        for pattern in step.shown:
            if not re.search(pattern, got.output):
                problems.append(f"{where}: output does not show {pattern!r}:\n{got.output}")
    return problems
