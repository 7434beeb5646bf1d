"""Applying bundles to real modules imported from real files, and what live objects see."""

from __future__ import annotations

import importlib.util
import operator
import sys
import textwrap
import threading
from pathlib import Path
from types import CodeType, ModuleType

import pytest

from hotpatch import _apply, _jumptable
from hotpatch._errors import BundleError, PatchError
from hotpatch.bundle import Bundle, FunctionPatch, ModulePatch, Statement, encode

# -- helpers ---------------------------------------------------------------------------------


class Source:
    """A module written to a real file and imported for real, plus bundles made from edits
    of its text (compiled the way the build side compiles: with the file's path)."""

    def __init__(self, tmp_path: Path, name: str, text: str) -> None:
        self.name = name
        self.path = tmp_path / f"{name}.py"
        self.text = textwrap.dedent(text)
        self.path.write_text(self.text)
        spec = importlib.util.spec_from_file_location(name, self.path)
        assert spec and spec.loader
        self.module = importlib.util.module_from_spec(spec)
        sys.modules[name] = self.module
        spec.loader.exec_module(self.module)

    def codes(self, text: str, qualname: str) -> list[CodeType]:
        found, stack = [], [compile(text, str(self.path), "exec", dont_inherit=True)]
        while stack:
            code = stack.pop()
            if code.co_qualname == qualname and code.co_name != "<module>":
                found.append(code)
            stack.extend(c for c in code.co_consts if isinstance(c, CodeType))
        return sorted(found, key=lambda c: c.co_firstlineno)

    def swap(self, new_text: str, *qualnames: str) -> tuple[FunctionPatch, ...]:
        """Function patches for `qualnames` (every def with that qualname), old -> new."""
        new_text = textwrap.dedent(new_text)
        patches = []
        for qualname in qualnames:
            old, new = self.codes(self.text, qualname), self.codes(new_text, qualname)
            assert len(old) == len(new) and old, qualname
            pairs = zip(old, new, strict=True)
            patches += [FunctionPatch(qualname, o.co_firstlineno, n) for o, n in pairs]
        self.text = new_text
        return tuple(patches)

    def stmt(self, snippet: str, lineno: int, *defines: str) -> Statement:
        snippet = textwrap.dedent(snippet)
        code = compile("\n" * (lineno - 1) + snippet, str(self.path), "exec", dont_inherit=True)
        return Statement(code, defines, lineno, snippet)

    def patch(
        self,
        functions: tuple[FunctionPatch, ...] = (),
        statements: tuple[Statement, ...] = (),
        removed: tuple[str, ...] = (),
    ) -> ModulePatch:
        return ModulePatch(self.name, str(self.path), functions, statements, removed)


_counter = iter(range(1, 10**9))


def bundle(*modules: ModulePatch, base: str | None = None, **kw: object) -> Bundle:
    base = base or _apply.current_build() or "b0"
    return Bundle(base, f"b{next(_counter)}", modules, **kw)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def clean_runtime():
    before = set(sys.modules)
    _reset()
    yield
    _reset()
    for name in set(sys.modules) - before:
        if name.startswith("hp_"):
            del sys.modules[name]


def _reset() -> None:
    _jumptable.set_build(None)
    _apply._history.clear()
    _jumptable._table.clear()
    _jumptable._by_name.clear()
    _jumptable._callbacks.clear()
    _jumptable._queue.clear()
    _jumptable._enabled = _jumptable._pending = _jumptable._responsive = False
    _jumptable.update_mode()


def namespace_state(module: ModuleType) -> dict[str, tuple[object, object]]:
    """Every global with its identity and, for functions, their code and defaults."""
    state = {}
    for name, value in vars(module).items():
        code = getattr(value, "__code__", None)
        state[name] = (value, (code, getattr(value, "__defaults__", None)))
    return state


# -- functions -------------------------------------------------------------------------------

BASIC = """\
    import functools

    REGISTRY = []

    def register(fn):
        REGISTRY.append(fn)
        return fn

    @register
    def greet(name):
        return "hello " + name

    def helper():
        return 1
"""


def test_function_body_reaches_every_reference(tmp_path: Path) -> None:
    src = Source(tmp_path, "hp_basic", BASIC)
    m = src.module
    held = m.greet  # `from m import greet`
    report = _apply.apply(bundle(src.patch(src.swap(BASIC.replace('"hello "', '"hi "'), "greet"))))
    assert report.patched == ("hp_basic:greet",)
    assert held is m.greet and held("ann") == "hi ann"
    assert m.REGISTRY[0]("bob") == "hi bob"  # the registry kept the same, patched object
    assert m.REGISTRY == [held]  # not re-run: no second registration


def test_methods_classmethods_staticmethods_properties(tmp_path: Path) -> None:
    text = """\
        class Shape:
            sides = 0

            def describe(self):
                return "old describe"

            @classmethod
            def make(cls):
                return ("old make", cls)

            @staticmethod
            def unit():
                return "old unit"

            @property
            def size(self):
                return self._size

            @size.setter
            def size(self, value):
                self._size = value

            class Inner:
                def deep(self):
                    return "old deep"

        class Meta(type):
            def hello(cls):
                return "old meta"

        class WithMeta(metaclass=Meta):
            pass
    """
    src = Source(tmp_path, "hp_shapes", text)
    m = src.module
    shape = m.Shape()
    bound = shape.describe
    new = (
        text.replace("old describe", "new describe")
        .replace("old make", "new make")
        .replace("old unit", "new unit")
        .replace("self._size = value", "self._size = value * 2")
        .replace("old deep", "new deep")
        .replace("old meta", "new meta")
    )
    fps = src.swap(
        new,
        "Shape.describe",
        "Shape.make",
        "Shape.unit",
        "Shape.size",
        "Shape.Inner.deep",
        "Meta.hello",
    )
    _apply.apply(bundle(src.patch(fps)))
    assert bound() == "new describe" and shape.describe() == "new describe"
    assert m.Shape.make() == ("new make", m.Shape)
    assert m.Shape.unit() == "new unit"
    shape.size = 5
    assert shape.size == 10  # the setter (same qualname, other line) was patched too
    assert m.Shape.Inner().deep() == "new deep"
    assert m.WithMeta.hello() == "new meta"


def test_wrapped_and_cached_functions(tmp_path: Path) -> None:
    text = """\
        import functools

        def logged(fn):
            @functools.wraps(fn)
            def wrapper(*args):
                return ("logged", fn(*args))
            return wrapper

        def bare(fn):
            def wrapper(*args):
                return ("bare", fn(*args))
            return wrapper

        CALLS = []

        @logged
        def work(x):
            return x + 1

        @bare
        def plain(x):
            return x + 1

        @functools.lru_cache(maxsize=None)
        def square(x):
            CALLS.append(x)
            return x * x

        class Service:
            @functools.cache
            def answer(self):
                return 1
    """
    src = Source(tmp_path, "hp_wrapped", text)
    m = src.module
    assert m.square(3) == 9 and m.work(1) == ("logged", 2) and m.plain(1) == ("bare", 2)
    service = m.Service()
    assert service.answer() == 1
    new = (
        text.replace("x + 1", "x + 100")
        .replace("x * x", "x * x * x")
        .replace("return 1", "return 2")
    )
    report = _apply.apply(
        bundle(src.patch(src.swap(new, "work", "plain", "square", "Service.answer")))
    )
    assert set(report.patched) == {
        "hp_wrapped:work",
        "hp_wrapped:plain",
        "hp_wrapped:square",
        "hp_wrapped:Service.answer",
    }
    assert m.work(1) == ("logged", 101)
    assert m.plain(1) == ("bare", 101)  # found through the wrapper's closure
    assert m.square(3) == 27  # the cache was cleared
    assert m.CALLS == [3, 3]
    assert service.answer() == 2


def test_factory_closures_with_matching_and_different_free_variables(tmp_path: Path) -> None:
    text = """\
        def make_adder(n):
            def add(x):
                return x + n
            return add

        HANDLERS = {"five": make_adder(5)}
    """
    src = Source(tmp_path, "hp_factory", text)
    m = src.module
    elsewhere = [m.make_adder(1)]  # a closure the module does not hold

    new = text.replace("return x + n", "return x + n + 1000")
    fps = src.swap(new, "make_adder", "make_adder.<locals>.add")
    report = _apply.apply(bundle(src.patch(fps)))
    assert not report.warnings
    assert m.HANDLERS["five"](1) == 1006
    assert elsewhere[0](1) == 1002  # found by the garbage collector walk
    assert m.make_adder(2)(1) == 1003  # new closures come from the patched factory

    # The inner function now closes over another variable: live closures keep their code.
    new2 = (
        "def make_adder(n):\n    k = n\n    def add(x):\n        return x * k\n"
        "    return add\n\nHANDLERS = {'five': make_adder(5)}\n"
    )
    fps2 = src.swap(new2, "make_adder.<locals>.add")
    report = _apply.apply(bundle(src.patch(fps2)))
    assert m.HANDLERS["five"](1) == 1006 and elsewhere[0](1) == 1002
    assert any("free variables differ" in w for w in report.warnings)


def test_a_patch_for_a_function_not_found_warns(tmp_path: Path) -> None:
    src = Source(tmp_path, "hp_missing", "def f():\n    return 1\n")
    code = compile("def g():\n    return 2\n", str(src.path), "exec").co_consts[0]
    report = _apply.apply(bundle(src.patch((FunctionPatch("g", 1, code),))))
    assert report.patched == () and "no live function" in report.warnings[0]


# -- statements ------------------------------------------------------------------------------

CONSTS = """\
    A = 1
    B = A * 2

    def scaled(x, factor=A):
        return x * factor

    class Holder:
        limit = A
"""


def test_constants_and_dependent_statements_rerun_in_order(tmp_path: Path) -> None:
    src = Source(tmp_path, "hp_consts", CONSTS)
    other = ModuleType("hp_other")
    exec("from hp_consts import B", other.__dict__)
    sys.modules["hp_other"] = other
    m = src.module
    scaled, holder = m.scaled, m.Holder
    report = _apply.apply(
        bundle(
            src.patch(
                statements=(
                    src.stmt("A = 10\n", 1, "A"),
                    src.stmt("B = A * 2\n", 2, "B"),
                    src.stmt("def scaled(x, factor=A):\n    return x * factor\n", 4, "scaled"),
                    src.stmt("class Holder:\n    limit = A\n", 7, "Holder"),
                )
            )
        )
    )
    assert (m.A, m.B) == (10, 20)
    assert m.scaled is scaled and scaled(2) == 20  # same object, new default
    assert m.Holder is holder and holder.limit == 10
    assert other.B == 20  # `from hp_consts import B` was re-bound
    assert report.rerun == ("hp_consts:1", "hp_consts:2", "hp_consts:4", "hp_consts:7")
    assert "hp_other.B" in report.rebound


def test_unchanged_state_is_kept_and_new_names_are_added(tmp_path: Path) -> None:
    src = Source(tmp_path, "hp_state", "REGISTRY = []\n\ndef f():\n    return 1\n")
    m = src.module
    m.REGISTRY.append("live")
    report = _apply.apply(
        bundle(src.patch(statements=(src.stmt("def g():\n    return f() + 1\n", 6, "g"),)))
    )
    assert m.REGISTRY == ["live"] and m.g() == 2
    assert report.added == ("hp_state:g",)


def test_statement_forms_comprehensions_del_annotations_imports(tmp_path: Path) -> None:
    src = Source(tmp_path, "hp_forms", "N = 3\n_tmp = 1\ncount: int = 0\n")
    m = src.module
    report = _apply.apply(
        bundle(
            src.patch(
                statements=(
                    src.stmt("SQUARES = [i * i for i in range(N)]\n", 4, "SQUARES"),
                    src.stmt("del _tmp\n", 5),
                    src.stmt("total: float = 1.5\n", 6, "total"),
                    src.stmt("import os.path as osp\n", 7, "osp"),
                )
            )
        )
    )
    assert m.SQUARES == [0, 1, 4] and not hasattr(m, "_tmp") and m.total == 1.5
    assert m.__annotations__ == {"count": int, "total": float}
    assert m.osp.join("a", "b") == "a/b" and "i" not in vars(m)
    assert "hp_forms:_tmp" in report.removed


def test_generator_in_flight_finishes_on_old_code(tmp_path: Path) -> None:
    text = "def gen():\n    yield 'old 1'\n    yield 'old 2'\n"
    src = Source(tmp_path, "hp_gen", text)
    running = src.module.gen()
    assert next(running) == "old 1"
    _apply.apply(bundle(src.patch(src.swap(text.replace("old", "new"), "gen"))))
    assert next(running) == "old 2" and list(src.module.gen()) == ["new 1", "new 2"]


def test_hot_function_rerun_with_the_same_decorator_is_patched_in_place(tmp_path: Path) -> None:
    _jumptable.enable()
    text = "from hotpatch._jumptable import hot\n\n@hot\ndef speed(x=1):\n    return x\n"
    src = Source(tmp_path, "hp_hot", text)
    wrapper = src.module.speed
    assert wrapper.__wrapped__ is not wrapper
    report = _apply.apply(
        bundle(
            src.patch(
                statements=(src.stmt("@hot\ndef speed(x=2):\n    return x * 10\n", 3, "speed"),)
            )
        )
    )
    assert src.module.speed is wrapper and wrapper() == 20
    assert report.patched == ("hp_hot:speed",) and not report.warnings


def test_removed_names_go_and_old_references_keep_working(tmp_path: Path) -> None:
    src = Source(tmp_path, "hp_removed", "def old():\n    return 'still here'\n")
    held = src.module.old
    report = _apply.apply(bundle(src.patch(removed=("old", "never_existed"))))
    assert not hasattr(src.module, "old") and held() == "still here"
    assert report.removed == ("hp_removed:old",)


def test_class_rerun_patches_the_live_class_in_place(tmp_path: Path) -> None:
    text = """\
        class Base:
            def who(self):
                return "base"

        class Child(Base):
            kind = "old"

            def who(self):
                return "child+" + super().who()

            def going(self):
                return 1

            @property
            def label(self):
                return "old label"
    """
    src = Source(tmp_path, "hp_classes", text)
    m = src.module
    child_cls, obj = m.Child, m.Child()
    who = obj.who
    new_class = """\
        class Child(Base):
            kind = "new"

            def who(self):
                return "CHILD+" + super().who()

            def added(self):
                return "added+" + super().who()

            @property
            def label(self):
                return "new label"

            @label.setter
            def label(self, value):
                self._label = value
    """
    report = _apply.apply(bundle(src.patch(statements=(src.stmt(new_class, 5, "Child"),))))
    assert m.Child is child_cls and isinstance(obj, m.Child) and type(obj) is child_cls
    assert who() == "CHILD+base"  # a bound method made before the patch
    assert obj.added() == "added+base"  # super() in a new method points at the live class
    assert not hasattr(obj, "going")
    assert obj.kind == "new" and obj.label == "new label"
    obj.label = "x"  # a setter was added: a new property object
    assert obj._label == "x"
    assert "hp_classes:Child.added" in report.added
    assert "hp_classes:Child.going" in report.removed
    assert "hp_classes:Child.who" in report.patched
    assert not report.warnings  # a new property object loses no reference: no warning


def test_method_gaining_super_is_rebound_on_its_class_and_rolled_back(tmp_path: Path) -> None:
    text = """\
        class Base:
            def who(self, x=1):
                return "base"

        class Child(Base):
            def who(self, x=1):
                return "child"
    """
    _jumptable.enable()  # as under `thinlink dev`: `call` is the jump-table function
    src = Source(tmp_path, "hp_super", text)
    m = src.module
    old, obj = m.Child.__dict__["who"], m.Child()
    fps = src.swap(text.replace('return "child"', 'return "child+" + super().who()'), "Child.who")
    attrs = compile("{'__defaults__': (2,), '__annotations__': {'x': int}}", str(src.path), "eval")
    fp = FunctionPatch(fps[0].qualname, fps[0].old_lineno, fps[0].code, attrs)
    report = _apply.apply(bundle(src.patch((fp,))))
    new = m.Child.__dict__["who"]
    assert new is not old and obj.who() == "child+base" and old(obj) == "child"
    assert new.__defaults__ == (2,) and new.__annotations__ == {"x": int}
    assert new.__closure__[0].cell_contents is m.Child  # the live class, not a re-run's
    assert report.patched == ("hp_super:Child.who",)
    assert [w for w in report.warnings if "free variables changed" in w]
    assert _jumptable.call(old, obj) == "child+base"  # the jump table follows too
    _apply.rollback()
    assert m.Child.__dict__["who"] is old and obj.who() == "child"


def test_class_whose_bases_changed_needs_restart_and_nothing_applies(tmp_path: Path) -> None:
    text = "A = 1\n\nclass Base:\n    pass\n\nclass C:\n    pass\n"
    src = Source(tmp_path, "hp_bases", text)
    m = src.module
    before = namespace_state(m)
    report = _apply.apply(
        bundle(
            src.patch(
                statements=(
                    src.stmt("A = 2\n", 1, "A"),
                    src.stmt("class C(Base):\n    pass\n", 6, "C"),
                )
            )
        )
    )
    assert report.needs_restart and "base classes changed" in report.needs_restart
    assert not report.applied
    assert namespace_state(m) == before and _apply.current_build() is None


def test_dataclass_and_enum(tmp_path: Path) -> None:
    text = """\
        import dataclasses
        import enum

        @dataclasses.dataclass
        class Point:
            x: int
            y: int = 0

            def norm(self):
                return abs(self.x) + abs(self.y)

        class Color(enum.Enum):
            RED = 1
            BLUE = 2

            def pretty(self):
                return "old " + self.name
    """
    src = Source(tmp_path, "hp_dc", text)
    m = src.module
    point_cls, red = m.Point, m.Color.RED
    new_point = (
        text.split("class Color")[0]
        .split("import enum\n")[1]
        .replace("abs(self.x) + abs(self.y)", "max(abs(self.x), abs(self.y))")
    )
    new_color = (
        "class Color(enum.Enum):\n    RED = 1\n    BLUE = 2\n\n"
        "    def pretty(self):\n        return 'new ' + self.name\n"
    )
    report = _apply.apply(
        bundle(
            src.patch(
                statements=(
                    src.stmt(new_point.lstrip("\n"), 4, "Point"),
                    src.stmt(new_color, 12, "Color"),
                )
            )
        )
    )
    assert report.applied, report
    assert m.Point is point_cls and m.Point(3, -4).norm() == 4
    assert m.Color.RED is red and red.pretty() == "new RED"

    changed_fields = "@dataclasses.dataclass\nclass Point:\n    x: int\n    z: int = 0\n"
    report = _apply.apply(bundle(src.patch(statements=(src.stmt(changed_fields, 4, "Point"),))))
    assert "dataclass fields" in (report.needs_restart or "")
    changed_members = "class Color(enum.Enum):\n    RED = 1\n    GREEN = 3\n"
    report = _apply.apply(bundle(src.patch(statements=(src.stmt(changed_members, 12, "Color"),))))
    assert "Enum members" in (report.needs_restart or "")


def test_decorator_change_rebinds_and_warns_and_call_reaches_the_new_object(tmp_path: Path) -> None:
    text = """\
        def shout(fn):
            def wrapper(*args):
                return fn(*args).upper()
            return wrapper

        def hello():
            return "hello"
    """
    _jumptable.enable()  # as under `thinlink run`/`dev`: `call` is the jump-table function
    src = Source(tmp_path, "hp_deco", text)
    m = src.module
    old = m.hello
    report = _apply.apply(
        bundle(
            src.patch(
                statements=(src.stmt("@shout\ndef hello():\n    return 'hello'\n", 6, "hello"),)
            )
        )
    )
    assert m.hello is not old and m.hello() == "HELLO"
    assert old() == "hello"  # a reference held elsewhere keeps the old object ...
    assert _jumptable.call(old) == "HELLO"  # ... but the jump table knows its successor
    assert _jumptable.resolve("hp_deco:hello") is m.hello
    assert any("replaced by a new object" in w for w in report.warnings)

    # Same decorator, new body: the user's function inside the wrapper is conformed.
    wrapper = m.hello
    _apply.apply(
        bundle(
            src.patch(
                statements=(src.stmt("@shout\ndef hello():\n    return 'howdy'\n", 6, "hello"),)
            )
        )
    )
    assert m.hello is wrapper and wrapper() == "HOWDY"


def test_without_enable_call_is_operator_call_and_keeps_the_replaced_object(tmp_path: Path) -> None:
    """The documented limit of production mode: `call` is `operator.call`, no table."""
    src = Source(tmp_path, "hp_deco_off", "def hello():\n    return 'hello'\n")
    m = src.module
    old = m.hello
    report = _apply.apply(
        bundle(
            src.patch(
                statements=(src.stmt("@staticmethod\ndef hello():\n    return 'hi'\n", 1, "hello"),)
            )
        )
    )
    assert any("replaced by a new object" in w for w in report.warnings)
    assert _jumptable._table  # the table knows the successor ...
    assert _jumptable.call is operator.call and _jumptable.call(old) == "hello"  # ... unused
    _jumptable.enable()
    assert _jumptable.call is not operator.call and _jumptable.call(old) == "hi"


def test_decorator_arguments_changed_rebinds(tmp_path: Path) -> None:
    text = """\
        import functools

        def times(n):
            def deco(fn):
                @functools.wraps(fn)
                def wrapper():
                    return [fn() for _ in range(n)]
                return wrapper
            return deco

        @times(2)
        def tick():
            return 1
    """
    src = Source(tmp_path, "hp_args", text)
    m = src.module
    old = m.tick
    report = _apply.apply(
        bundle(
            src.patch(statements=(src.stmt("@times(3)\ndef tick():\n    return 1\n", 11, "tick"),))
        )
    )
    assert m.tick is not old and m.tick() == [1, 1, 1] and old() == [1, 1]
    assert report.warnings


# -- failures and rollback -------------------------------------------------------------------


def test_statement_that_raises_rolls_everything_back(tmp_path: Path) -> None:
    src = Source(tmp_path, "hp_boom", BASIC)
    m = src.module
    before = namespace_state(m)
    greet_code = m.greet.__code__
    bad = bundle(
        src.patch(
            src.swap(BASIC.replace('"hello "', '"hi "'), "greet"),
            statements=(
                src.stmt("NEW = 1\n", 20, "NEW"),
                src.stmt("def helper():\n    return 2\n", 13, "helper"),
                src.stmt("X = 1 / 0\n", 21, "X"),
            ),
        )
    )
    with pytest.raises(PatchError) as info:
        _apply.apply(bad)
    err = info.value
    assert err.module == "hp_boom" and err.unit == "line 21"
    assert "ZeroDivisionError" in str(err) and "X = 1 / 0" in str(err)
    assert "Traceback" in err.reason
    assert isinstance(err.__cause__, ZeroDivisionError)
    assert m.greet.__code__ is greet_code and m.greet("a") == "hello a"
    assert namespace_state(m) == before
    assert _apply.current_build() is None and not _apply._history


def test_statement_changing_globals_behind_the_log_is_rolled_back(tmp_path: Path) -> None:
    src = Source(
        tmp_path, "hp_sneaky", "COUNT = 0\n\ndef bump():\n    global COUNT\n    COUNT += 1\n"
    )
    before = namespace_state(src.module)
    with pytest.raises(PatchError):
        _apply.apply(bundle(src.patch(statements=(src.stmt("bump()\n1 / 0\n", 7),))))
    assert namespace_state(src.module) == before


def test_wrong_base_build_is_refused(tmp_path: Path) -> None:
    src = Source(tmp_path, "hp_build", BASIC)
    _apply.set_build("current")
    fps = src.swap(BASIC.replace('"hello "', '"hi "'), "greet")
    with pytest.raises(PatchError, match="patches build 'other'.*runs build 'current'"):
        _apply.apply(bundle(src.patch(fps), base="other"))
    assert src.module.greet("a") == "hello a"
    report = _apply.apply(bundle(src.patch(fps), base="current"))
    assert _apply.current_build() == report.build_id != "current"


@pytest.mark.parametrize("mangle", ["flip", "truncate", "unsigned", "wrong key"])
def test_bad_bundle_bytes_apply_nothing(tmp_path: Path, mangle: str) -> None:
    src = Source(tmp_path, "hp_badbytes", BASIC)
    b = bundle(src.patch(src.swap(BASIC.replace('"hello "', '"hi "'), "greet")))
    data = encode(b, None if mangle == "unsigned" else b"key")
    if mangle == "flip":
        data = data[:-3] + bytes([data[-3] ^ 1]) + data[-2:]
    elif mangle == "truncate":
        data = data[:-1]
    key = b"other" if mangle == "wrong key" else b"key"
    with pytest.raises(BundleError):
        _apply.apply(data, key=key)
    assert src.module.greet("a") == "hello a" and _apply.current_build() is None


def test_apply_from_a_file_path(tmp_path: Path) -> None:
    src = Source(tmp_path, "hp_file", BASIC)
    path = tmp_path / "p.hpb"
    path.write_bytes(
        encode(bundle(src.patch(src.swap(BASIC.replace('"hello "', '"yo "'), "greet"))))
    )
    _apply.apply(str(path))
    assert src.module.greet("a") == "yo a"


def test_needs_restart_bundle_applies_nothing(tmp_path: Path) -> None:
    src = Source(tmp_path, "hp_restart", BASIC)
    fps = src.swap(BASIC.replace('"hello "', '"hi "'), "greet")
    report = _apply.apply(bundle(src.patch(fps), needs_restart="__slots__ of C changed"))
    assert report.needs_restart == "__slots__ of C changed" and not report.applied
    assert "needs restart" in str(report)
    assert src.module.greet("a") == "hello a" and _apply.current_build() is None


def test_rollback_restores_exactly_one_patch_at_a_time(tmp_path: Path) -> None:
    src = Source(tmp_path, "hp_undo", CONSTS)
    m = src.module
    state0 = namespace_state(m)
    _apply.set_build("b0")
    _apply.apply(
        bundle(
            src.patch(
                src.swap(CONSTS.replace("x * factor", "x * factor + 1"), "scaled"),
                statements=(src.stmt("A = 5\n", 1, "A"), src.stmt("C = 3\n", 10, "C")),
            )
        )
    )
    state1 = namespace_state(m)
    _apply.apply(bundle(src.patch(removed=("B",))))
    assert not hasattr(m, "B")

    report = _apply.rollback()
    assert report.rolled_back and report.added == ("hp_undo:B",)
    assert namespace_state(m) == state1
    report = _apply.rollback()
    assert namespace_state(m) == state0 and m.scaled(2) == 2
    assert _apply.current_build() == "b0" and report.build_id == "b0"
    with pytest.raises(PatchError, match="nothing to roll back"):
        _apply.rollback()


def test_module_not_imported_is_skipped(tmp_path: Path) -> None:
    report = _apply.apply(
        bundle(ModulePatch("hp_not_imported", str(tmp_path / "x.py"), removed=("gone",)))
    )
    assert report.skipped == ("hp_not_imported",) and report.applied


def test_script_running_as_main_is_patched_too(tmp_path: Path, monkeypatch) -> None:
    src = Source(tmp_path, "hp_script", BASIC)
    main = ModuleType("__main__")
    main.__file__ = str(src.path)
    exec(compile(src.text, str(src.path), "exec"), main.__dict__)
    monkeypatch.setitem(sys.modules, "__main__", main)
    _apply.apply(bundle(src.patch(src.swap(BASIC.replace('"hello "', '"hey "'), "greet"))))
    assert main.greet("a") == "hey a" and src.module.greet("a") == "hey a"


def test_callbacks_get_the_report(tmp_path: Path) -> None:
    src = Source(tmp_path, "hp_cb", BASIC)
    seen = []
    _jumptable.on_patch(seen.append)
    report = _apply.apply(bundle(src.patch(src.swap(BASIC.replace('"hello "', '"hi "'), "greet"))))
    undo = _apply.rollback()
    assert seen == [report, undo]
    assert set(report.timings) >= {"decode", "locate", "functions", "statements", "total"}
    assert "1 patched" in str(report) and "hp_cb:greet" in str(report)


# -- threads ---------------------------------------------------------------------------------


def test_worker_thread_sees_old_or_new_never_an_error(tmp_path: Path) -> None:
    text = "def value():\n    return 0\n\ndef shifted(a, b=0):\n    return a + b\n"
    src = Source(tmp_path, "hp_race", text)
    m = src.module
    value, shifted = m.value, m.shifted
    seen: set[object] = set()
    errors: list[BaseException] = []
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set():
            try:
                seen.add(value())
                seen.add(shifted(1000))
            except BaseException as exc:  # noqa: BLE001  (recorded, asserted below)
                errors.append(exc)
                return

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as CPython allows
    thread = threading.Thread(target=worker)
    thread.start()
    try:
        for i in range(1, 51):
            new = (
                f"def value():\n    return {i}\n\ndef shifted(a, b=0, c={i}):\n"
                f"    return a + b + c\n"
            )
            fps = src.swap(new, "value")
            # The signature changes too: code and defaults must land together.
            stmt = src.stmt(new.split("\n\n")[1] + "\n", 4, "shifted")
            _apply.apply(bundle(src.patch(fps, statements=(stmt,))))
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)
    assert not errors
    assert seen <= set(range(51)) | set(range(1000, 1051))
    assert value() == 50 and shifted(1000) == 1050


def test_code_defaults_and_annotations_land_together_for_other_threads(tmp_path: Path) -> None:
    # The function reports its own code's version next to the defaults and annotations it
    # reads, with no call in between. A call that began before a patch may read what the
    # patch set (it finishes on its old code); new code with old attributes is a half state.
    def source(i: int) -> str:
        return (
            f"def typed(x: 'v{i}' = 'v{i}') -> 'v{i}':\n"
            f"    return ('v{i}', typed.__annotations__['x'], typed.__defaults__[0])\n"
        )

    src = Source(tmp_path, "hp_typed", source(0))
    typed = src.module.typed
    seen: list[tuple[str, str, str]] = []
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set():
            seen.append(typed())

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    thread = threading.Thread(target=worker)
    thread.start()
    try:
        for i in range(1, 41):
            (fp,) = src.swap(source(i), "typed")
            values = {
                "__defaults__": (f"v{i}",),
                "__annotations__": {"x": f"v{i}", "return": f"v{i}"},
            }
            attrs = compile(repr(values), str(src.path), "eval")
            fp = FunctionPatch(fp.qualname, fp.old_lineno, fp.code, attrs)
            _apply.apply(bundle(src.patch((fp,))))
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)
    mixed = [t for t in seen if t[1] != t[2] or int(t[0][1:]) > int(t[1][1:])]
    assert seen and not mixed, mixed[:5]
    assert typed() == ("v40", "v40", "v40")
    assert typed.__annotations__ == {"x": "v40", "return": "v40"}


MOVED_TAIL = """

def make():
    def inner():
        return 2
    return inner


made = make()


class Box:
    def open(self):
        return 3
"""


def test_moved_lines_shift_live_code_but_not_what_was_just_patched(tmp_path: Path) -> None:
    src = Source(tmp_path, "hp_moved", "def edited():\n    return 1\n" + MOVED_TAIL)
    m = src.module
    made, box_open, make_ = m.made, m.Box.open, m.make
    # Two lines added in edited(): lines 4.. of the old file move down by 2. The new
    # edited() reaches line 4, in the moved range: it must not be shifted again.
    new_text = "def edited():\n    x = 1\n    y = x\n    return y\n" + MOVED_TAIL
    functions = src.swap(new_text, "edited")
    patch = ModulePatch(src.name, str(src.path), functions, moved=((4, 16, 2),))
    report = _apply.apply(bundle(patch))
    assert report.patched == ("hp_moved:edited",)
    assert m.edited() == 1 and m.edited.__code__.co_firstlineno == 1
    assert m.edited.__code__.co_consts == functions[0].code.co_consts
    assert make_.__code__.co_firstlineno == 7
    assert made.__code__.co_firstlineno == 8  # a closure made before the patch
    assert make_().__code__.co_firstlineno == 8  # and one made after
    assert box_open.__code__.co_firstlineno == 17
    assert m.Box().open() == 3 and made() == 2
    _apply.rollback()
    assert make_.__code__.co_firstlineno == 5 and made.__code__.co_firstlineno == 6
    assert box_open.__code__.co_firstlineno == 15
