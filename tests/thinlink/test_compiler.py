"""Units and digests: a unit changes exactly when its compiled behaviour changes."""

from __future__ import annotations

import textwrap
from types import CodeType

from thinlink.build.compiler import (
    FUTURE_MASK,
    compile_module,
    relocate,
    split_segments,
)
from thinlink.build.text import split_lines
from thinlink.build.units import CodeRef, Unit


def find_code(root: CodeType, qualname: str, lineno: int) -> CodeType | None:
    """The code object nested in `root` with this qualified name and first line."""
    for const in root.co_consts:
        if isinstance(const, CodeType):
            if (const.co_qualname, const.co_firstlineno) == (qualname, lineno):
                return const
            found = find_code(const, qualname, lineno)
            if found is not None:
                return found
    return None


def units_of(src: str) -> dict[str, Unit]:
    src = textwrap.dedent(src)
    code = compile_module(src, "m.py")
    lines = split_lines(src)
    segs = split_segments(code, lines, 1, len(lines), code.co_flags & FUTURE_MASK, CodeRef("k"))
    return {u.qualname: u for s in segs for u in s.units}


def segments_of(src: str):
    src = textwrap.dedent(src)
    code = compile_module(src, "m.py")
    lines = split_lines(src)
    return split_segments(code, lines, 1, len(lines), code.co_flags & FUTURE_MASK, CodeRef("k"))


def test_segments_start_at_top_level_definitions_with_their_decorators():
    segs = segments_of(
        '''\
        """doc"""
        import os

        @decorator(
            1)
        def f():
            return 1
        X = """
        def not_a_function(): pass
        """
        class C:
            def m(self):
                pass
        if os:
            def g(): pass
        '''
    )
    assert [(s.start, s.end) for s in segs] == [(1, 3), (4, 10), (11, 15)]
    assert [u.qualname for u in segs[1].units] == ["f"]
    assert [u.qualname for u in segs[2].units] == ["C", "C.m", "g"]
    assert segs[1].units[0].lineno == 4  # the decorator's line


def test_moving_a_function_keeps_its_digest():
    before = units_of("def f(x):\n    return x + 1\n")
    after = units_of("\n\n\n# a comment\ndef f(x):\n    return x + 1\n")
    assert after["f"].lineno == 5
    assert before["f"].digest == after["f"].digest


def test_comment_and_blank_lines_inside_a_body_do_not_change_behaviour():
    before = units_of("def f(x):\n    y = x\n    return y\n")
    after = units_of("def f(x):\n    # why\n\n    y = x\n    return y\n")
    assert before["f"].digest == after["f"].digest


def test_body_defaults_and_signature_changes_change_the_digest():
    base = units_of("def f(x, y=1):\n    return x\n")["f"].digest
    assert units_of("def f(x, y=1):\n    return x + 1\n")["f"].digest != base
    assert units_of("def f(x, y=2):\n    return x\n")["f"].digest == base  # defaults live outside
    assert units_of("def f(x, *, y=1):\n    return x\n")["f"].digest != base


def test_an_enclosing_scope_gaining_a_local_changes_the_inner_function():
    reads_global = units_of(
        """
        def outer():
            def inner():
                return value
            return inner
        """
    )
    reads_closure = units_of(
        """
        def outer():
            value = 1
            def inner():
                return value
            return inner
        """
    )
    name = "outer.<locals>.inner"
    assert reads_global[name].digest != reads_closure[name].digest


def test_future_flags_are_part_of_the_digest():
    plain = units_of("def f(x: int) -> int:\n    return x\n")
    future = units_of("from __future__ import annotations\ndef f(x: int) -> int:\n    return x\n")
    assert plain["f"].digest != future["f"].digest


def test_a_method_edit_changes_the_method_not_its_class():
    before = units_of("class C:\n    a = 1\n    def m(self):\n        return 1\n")
    after = units_of("class C:\n    a = 1\n    def m(self):\n        return 2\n")
    assert before["C"].digest == after["C"].digest
    assert before["C.m"].digest != after["C.m"].digest
    attr = units_of("class C:\n    a = 2\n    def m(self):\n        return 1\n")
    assert attr["C"].digest != before["C"].digest
    assert attr["C.m"].digest == before["C.m"].digest


def test_renaming_a_class_changes_name_mangled_methods():
    a = units_of("class A:\n    def m(self):\n        return self.__x\n")
    b = units_of("class B:\n    def m(self):\n        return self.__x\n")
    assert (
        "_A__x"
        in find_code(
            compile_module("class A:\n def m(self): return self.__x\n", "m"), "A.m", 2
        ).co_names
    )
    assert a["A.m"].digest != b["B.m"].digest


def test_frozenset_constants_digest_the_same_in_every_process(python, subprocess_env):
    import subprocess

    script = (
        "from thinlink.build.compiler import *; from thinlink.build.units import CodeRef\n"
        "from thinlink.build.text import split_lines\n"
        'src = \'def f(x):\\n    return x in {"a", "b", "c", "d", "e"}\\n\'\n'
        "c = compile_module(src, 'm.py'); lines = split_lines(src)\n"
        "print(split_segments(c, lines, 1, len(lines), 0, CodeRef('k'))[0].units[0].digest)\n"
    )
    digests = {
        subprocess.run(
            [python, "-c", script],
            env={**subprocess_env, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in (1, 2, 3)
    }
    assert len(digests) == 1


def test_relocate_shifts_nested_code_and_tracebacks():
    code = compile_module("def f():\n    def g():\n        1 / 0\n    return g\n", "m.py")
    moved = relocate(code, 10)
    f = find_code(moved, "f", 11)
    g = find_code(moved, "f.<locals>.g", 12)
    assert f is not None and g is not None
    assert {line for _, _, line in g.co_lines() if line} == {12, 13}
    namespace: dict = {}
    exec(moved, namespace)
    try:
        namespace["f"]()()
    except ZeroDivisionError as exc:
        tb = exc.__traceback__
        while tb.tb_next:
            tb = tb.tb_next
        assert tb.tb_lineno == 13
