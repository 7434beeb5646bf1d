"""Which members of a re-run class statement are data (fields, `Meta`, `model_config`)
rather than methods: for frameworks that build a class's behaviour from its data once,
when the class is made (pydantic models, Django models)."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from ..bundle import RerunMode
from ._changes import Statement

__all__ = ["data_members", "remade_data"]

# Decorators that leave a method a method (nothing is derived from it at class creation).
_PLAIN = frozenset({"property", "staticmethod", "classmethod", "cached_property"})


def remade_data(statements: list[Statement], base: type) -> Iterator[tuple[type, list[str]]]:
    """(live class, its data members changed) for each class re-run by `statements` that
    is a `base` subclass and whose data changed: what needs the class made again."""
    for statement in statements:
        if statement.mode != RerunMode.CLASS or not statement.names:
            continue
        live = statement.live(statement.names[0])
        if isinstance(live, type) and issubclass(live, base):
            changed = data_members(statement)
            if changed:
                yield live, changed


def data_members(statement: Statement) -> list[str]:
    """The members `statement` sets on or deletes from its live class that are not plain
    methods: attributes, nested classes, methods under other decorators (a validator)."""
    try:
        node = ast.parse(statement.source).body[0]
    except (SyntaxError, IndexError):
        return list(statement.members)
    if not isinstance(node, ast.ClassDef):
        return list(statement.members)
    kinds: dict[str, bool] = {}
    for child in node.body:
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            names = [_decorator_name(d) for d in child.decorator_list]
            plain = all(n in _PLAIN for n in names)
            kinds[child.name] = kinds.get(child.name, True) and plain
    found = [m for m in statement.members if not kinds.get(m, False)]
    live = statement.live(statement.names[0]) if statement.names else None
    for name in statement.removed_members:
        value = getattr(live, "__dict__", {}).get(name)
        if not _is_method(value):
            found.append(name)
    return found


def _decorator_name(node: ast.expr) -> str:
    target = node.func if isinstance(node, ast.Call) else node
    if isinstance(target, ast.Attribute) and target.attr in ("setter", "getter", "deleter"):
        return "property"  # @name.setter: part of a property
    return ast.unparse(target).rpartition(".")[2]


def _is_method(value: object) -> bool:
    from types import FunctionType

    kind = type(value)
    return kind in (FunctionType, staticmethod, classmethod) or issubclass(kind, property)
