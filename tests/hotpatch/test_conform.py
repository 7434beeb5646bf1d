"""The primitives under `apply`: conform, the undo log, value comparison and locating live
functions."""

from __future__ import annotations

import functools
import sys
from types import CodeType, FunctionType, ModuleType

import pytest

from hotpatch._conform import Changes, Merge, NeedsRestart, conform, conform_function, values_equal
from hotpatch._locate import closures_of, index_module, module_files, unwrap_chain
from hotpatch._transaction import Transaction

FILE = "/virtual/mod.py"


def compiled(source: str, qualname: str, filename: str = FILE) -> CodeType:
    stack = [compile(source, filename, "exec", dont_inherit=True)]
    while stack:
        code = stack.pop()
        if code.co_qualname == qualname and code.co_name != "<module>":
            return code
        stack.extend(c for c in code.co_consts if isinstance(c, CodeType))
    raise LookupError(qualname)


def make_module(source: str, name: str = "hp_virtual", filename: str = FILE) -> ModuleType:
    module = ModuleType(name)
    module.__file__ = filename
    exec(compile(source, filename, "exec", dont_inherit=True), module.__dict__)
    return module


# -- conform ---------------------------------------------------------------------------------


def test_conform_swaps_code_in_place_and_rolls_back() -> None:
    def f(x):
        return x

    original = f.__code__
    tx = Transaction()
    assert conform(f, compiled("def f(x):\n    return x * 2\n", "f"), tx) is None
    assert f(2) == 4
    tx.rollback()
    assert f.__code__ is original and f(2) == 2


def test_conform_refuses_other_free_variables() -> None:
    def outer():
        n = 1

        def inner():
            return n

        return inner

    inner = outer()
    code = compiled(
        "def outer():\n    m = 2\n    def inner():\n        return m\n", "outer.<locals>.inner"
    )
    reason = conform(inner, code, Transaction())
    assert reason and "free variables differ" in reason and "'n'" in reason
    assert inner() == 1


def test_conform_function_copies_everything_but_identity() -> None:
    def live(a, b=1, *, c=2) -> int:
        """old doc"""
        return a + b + c

    namespace: dict[str, object] = {}
    exec(
        compile(
            "def live(a, b=10, *, c=20) -> str:\n    '''new doc'''\n    return a * b * c\n",
            FILE,
            "exec",
            dont_inherit=True,
        ),
        namespace,
    )
    new = namespace["live"]
    held = live
    tx = Transaction()
    assert conform_function(live, new, tx) is None  # type: ignore[arg-type]
    assert held is live and live(1) == 200
    assert (live.__defaults__, live.__kwdefaults__) == ((10,), {"c": 20})
    assert live.__doc__ == "new doc" and live.__annotations__ == {"return": str}
    tx.rollback()
    assert live(1) == 4 and live.__doc__ == "old doc" and live.__defaults__ == (1,)


# -- transaction -----------------------------------------------------------------------------


def test_transaction_undoes_in_reverse_order_exactly() -> None:
    class Box:
        shared = "class value"

    box = Box()
    box.own = 1
    namespace = {"a": 1, "b": 2}
    tx = Transaction()
    tx.setattr(box, "own", 2)
    tx.setattr(box, "own", 3)
    tx.setattr(box, "shared", "shadow")  # absent on the instance: must be deleted, not copied
    tx.setattr(Box, "added", 1)
    tx.delattr(Box, "shared")
    tx.setitem(namespace, "a", 10)
    tx.setitem(namespace, "c", 3)
    tx.delitem(namespace, "b")
    assert len(tx) == 8
    tx.rollback()
    assert box.own == 1 and "shared" not in vars(box) and box.shared == "class value"
    assert "added" not in vars(Box) and Box.shared == "class value"
    assert namespace == {"a": 1, "b": 2} and list(namespace) == ["a", "b"]


def test_snapshot_catches_changes_behind_the_log_until_commit() -> None:
    namespace = {"keep": 1}
    tx = Transaction()
    tx.snapshot(namespace)
    namespace["sneaky"] = 2
    namespace["keep"] = 5
    tx.rollback()
    assert namespace == {"keep": 1}

    tx = Transaction()
    tx.snapshot(namespace)
    tx.setitem(namespace, "logged", 1)
    tx.commit()
    namespace["app_state"] = 7  # the app changes things after the patch
    tx.rollback()  # hotpatch.rollback(): undo the patch, not the app
    assert namespace == {"keep": 1, "app_state": 7}


def test_a_failing_undo_step_does_not_stop_the_rest(caplog) -> None:
    class Stubborn:
        locked = False

        def __setattr__(self, name, value):
            if Stubborn.locked:
                raise AttributeError("locked")
            object.__setattr__(self, name, value)

    obj = Stubborn()
    obj.x = 1
    namespace = {"a": 1}
    tx = Transaction()
    tx.setitem(namespace, "a", 2)
    tx.setattr(obj, "x", 2)
    Stubborn.locked = True
    tx.rollback()
    assert namespace == {"a": 1} and "could not undo" in caplog.text


# -- values_equal ----------------------------------------------------------------------------


def test_values_equal_compares_plain_data_only() -> None:
    class Loud:
        def __eq__(self, other):
            raise AssertionError("user __eq__ called")

    assert values_equal((1, "a", [2.0, None], {"k": b"v"}), (1, "a", [2.0, None], {"k": b"v"}))
    assert not values_equal((1, 2), (1, 3)) and not values_equal(1, 1.0)
    assert not values_equal(Loud(), Loud())
    a, b = object(), object()
    assert values_equal([a], [b], {id(a): b})


# -- merge -----------------------------------------------------------------------------------


def _merge(module: ModuleType) -> tuple[Merge, Transaction]:
    tx = Transaction()
    return Merge(module.__name__, module.__name__, frozenset({FILE}), tx, Changes()), tx


def _rerun_class(module: ModuleType, source: str, name: str) -> type:
    scratch: dict[str, object] = {}
    exec(compile(source, FILE, "exec", dont_inherit=True), module.__dict__, scratch)
    return scratch[name]  # type: ignore[return-value]


def test_klass_patches_in_place_and_retargets_super() -> None:
    module = make_module(
        "class Base:\n    def f(self):\n        return 'base'\n"
        "class C(Base):\n    def f(self):\n        return 'c' + super().f()\n"
        "    def h(self):\n        return 'h'\n"
    )
    live = module.C
    new = _rerun_class(
        module,
        "class C(Base):\n    def f(self):\n"
        "        return 'c2+' + super().f()\n"
        "    def g(self):\n        return 'g+' + super().f()\n"
        "    def h(self):\n        return 'h+' + super().f()\n",
        "C",
    )
    merge, tx = _merge(module)
    obj = live()
    old_h = obj.h
    merge.klass(live, new, "C")
    assert obj.f() == "c2+base" and obj.g() == "g+base" and obj.h() == "h+base"
    assert merge.changes.patched == ["hp_virtual:C.f"] and merge.changes.added == ["hp_virtual:C.g"]
    # h now needs a __class__ cell it never had: a new function object, and a warning.
    assert old_h() == "h" and "C.h was replaced" in merge.changes.warnings[0]
    tx.rollback()
    assert obj.f() == "cbase" and not hasattr(live, "g") and obj.h() == "h"


@pytest.mark.parametrize(
    "new_source, reason",
    [
        ("class C(Base):\n    __slots__ = ('y',)\n", "__slots__"),
        ("class C:\n    __slots__ = ('x',)\n", "base classes"),
        ("class C(Base, metaclass=Meta):\n    __slots__ = ('x',)\n", "metaclass"),
    ],
)
def test_klass_refuses_layout_changes(new_source: str, reason: str) -> None:
    module = make_module(
        "class Meta(type):\n    pass\nclass Base:\n    pass\n"
        "class C(Base):\n    __slots__ = ('x',)\n"
    )
    new = _rerun_class(module, new_source, "C")
    merge, _ = _merge(module)
    with pytest.raises(NeedsRestart, match=reason):
        merge.klass(module.C, new, "C")


def test_value_refuses_when_wrapper_closures_differ() -> None:
    module = make_module(
        "def deco(tag):\n    def wrap(fn):\n        def w():\n"
        "            return tag, fn()\n        return w\n    return wrap\n"
        "@deco('a')\ndef f():\n    return 1\n"
    )
    scratch: dict[str, object] = {}
    exec(compile("@deco('b')\ndef f():\n    return 2\n", FILE, "exec"), module.__dict__, scratch)
    merge, _ = _merge(module)
    assert not merge.value(module.f, scratch["f"], "f")
    exec(compile("@deco('a')\ndef f():\n    return 2\n", FILE, "exec"), module.__dict__, scratch)
    live = module.f
    assert merge.value(live, scratch["f"], "f") and live() == ("a", 2)


# -- locate ----------------------------------------------------------------------------------

LOCATE = """\
import functools

def deco(fn):
    def bare(*a):
        return fn(*a)
    return bare

class Meta(type):
    def meta_method(cls):
        pass

class C(metaclass=Meta):
    @property
    def p(self):
        pass

    @p.setter
    def p(self, v):
        pass

    @classmethod
    def cm(cls):
        pass

    @staticmethod
    def sm():
        pass

    @functools.cached_property
    def cp(self):
        pass

    class Nested:
        def deep(self):
            pass

    C_SELF = None

@deco
def decorated():
    pass

@functools.lru_cache
def cached():
    pass

@functools.singledispatch
def dispatch(x):
    pass

@dispatch.register
def _(x: int):
    pass

def target():
    pass

PARTIAL = functools.partial(target)
HANDLERS = {"h": lambda: None}
C.C_SELF = C
"""


def test_index_finds_functions_wherever_the_module_keeps_them() -> None:
    module = make_module(LOCATE)
    index = index_module(module, module_files(module))
    names = {qualname for qualname, _ in index.functions}
    assert names >= {
        "deco",
        "deco.<locals>.bare",
        "Meta.meta_method",
        "C.p",
        "C.cm",
        "C.sm",
        "C.cp",
        "C.Nested.deep",
        "decorated",
        "cached",
        "dispatch",
        "_",
        "target",
        "<lambda>",
    }
    getter_and_setter = sorted(line for qualname, line in index.functions if qualname == "C.p")
    assert len(getter_and_setter) == 2
    assert index.caches == [module.cached]
    assert index.caches_for([module.cached.__wrapped__]) == [module.cached]
    assert not any(qualname.startswith("partial") for qualname, _ in index.functions)


def test_index_only_takes_functions_from_the_modules_file() -> None:
    module = make_module("import functools\nfrom os.path import join\nwraps = functools.wraps\n")
    assert index_module(module, module_files(module)).functions == {}


def test_module_files_knows_every_spelling(tmp_path) -> None:
    module = ModuleType("m")
    module.__file__ = str(tmp_path / "m.py")
    files = module_files(module, "relative/m.py")
    assert str(tmp_path / "m.py") in files and "relative/m.py" in files


def test_closures_of_finds_functions_by_code() -> None:
    def factory(n):
        def inner():
            return n

        return inner

    made = [factory(1), factory(2)]
    found = closures_of([made[0].__code__])
    assert {id(f) for f in found} == {id(f) for f in made}
    assert closures_of([]) == []


def test_unwrap_chain_follows_wraps_and_bare_closures() -> None:
    def user():
        pass

    @functools.wraps(user)
    def wrapped():
        pass

    def bare():
        return wrapped()

    assert unwrap_chain(wrapped) == [wrapped, user]
    assert unwrap_chain(bare) == [bare, wrapped, user]
    assert unwrap_chain(user) == [user]
    assert type(unwrap_chain(functools.lru_cache(user))[0]) is not FunctionType


def test_index_survives_cycles() -> None:
    module = make_module(
        "def f():\n    return f\nclass C:\n    pass\nC.again = C\nLOOP = []\nLOOP.append(LOOP)\n"
    )
    sys.setrecursionlimit(sys.getrecursionlimit())  # the walk is bounded, not recursive-deep
    assert ("f", 1) in index_module(module, module_files(module)).functions
