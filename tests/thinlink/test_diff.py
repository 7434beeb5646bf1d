"""The attribute patches of an edited function (`_attrs_source`), checked against what the
compiler makes of the new source: the same defaults, kw-only defaults, annotations (in
CPython's order, as strings under `from __future__ import annotations`, with a class's
private names mangled) and doc."""

from __future__ import annotations
import __future__

import pytest

from thinlink.patches.diff import _attrs_source

FUTURE = __future__.annotations.compiler_flag

EDITS = [
    ("def f(x): pass", "def f(x: int) -> str: pass"),
    (
        "def f(a, /, b, *c, d, **e): pass",
        "def f(a: 1, /, b: 2, *c: 3, d: 4 = 0, **e: 5) -> 6: pass",
    ),
    ("def f(x: int = 1): pass", "def f(x: list[int] | None = None, *, k: 'Q' = 2): pass"),
    ("def f(x: int) -> int:\n    'doc'", "def f(x: int) -> int:\n    'new doc'"),
    ("def f(x: int) -> int: pass", "def f(x): pass"),
]


@pytest.mark.parametrize("flags", [0, FUTURE], ids=["eager", "future"])
@pytest.mark.parametrize(("old", "new"), EDITS)
def test_attribute_patch_matches_a_cold_compile(old: str, new: str, flags: int) -> None:
    expression, line = _attrs_source(old, new, 1, flags)
    assert expression and line == 1
    values = eval(compile(expression, "<attrs>", "eval", flags=flags, dont_inherit=True), {"Q": 0})
    namespace: dict[str, object] = {"Q": 0}
    exec(compile(new, "<new>", "exec", flags=flags, dont_inherit=True), namespace)
    fn = namespace["f"]
    for name, value in values.items():
        assert getattr(fn, name) == value, name
        if name == "__annotations__":
            assert list(value) == list(fn.__annotations__)  # CPython's order


def test_method_annotations_mangle_private_names() -> None:
    old = "def m(self, __x): pass"
    new = "def m(self, __x: int, y__: str) -> None: pass"
    expression, _ = _attrs_source(old, new, 3, 0, owner="_Box")
    values = eval(expression)
    namespace: dict[str, object] = {}
    exec(compile(f"class _Box:\n    {new}\n", "<new>", "exec", dont_inherit=True), namespace)
    method = namespace["_Box"].m  # type: ignore[attr-defined]
    expected = {"_Box__x": int, "y__": str, "return": None}
    assert values["__annotations__"] == method.__annotations__ == expected


def test_no_attribute_patch_when_only_the_body_changed() -> None:
    assert _attrs_source(
        "def f(x: int = 1):\n    return x", "def f(x: int = 1):\n    return 2", 1, 0
    ) == ("", 0)
