"""The rule for what no adapter covers: name the library objects that may not see a change.

A library may analyse a function when it is registered (a CLI library reads its
parameters into options, a task queue its signature, a web framework its annotations)
and keep what it found. When a patch changes a function's parameters, defaults,
annotations or kind in place, such a holder goes on with what it found before. Without an
adapter for it the runtime cannot rebuild that, but it can say so instead of reporting a
bare "patched": it looks for the objects of installed libraries (not the app's own module
globals or classes, not the standard library) that hold the function, directly or through
a dict or list of theirs, and names each of them in the report.

One walk of the heap per level (at most three: function, container, owner), done only
when a patch changed some function's signature.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterable
from types import (
    BuiltinFunctionType,
    CellType,
    CodeType,
    FrameType,
    FunctionType,
    MethodType,
    ModuleType,
)

from ._origin import is_library
from .adapters._changes import FunctionChange

__all__ = ["unseen_by_holders"]

_CONTAINERS = (dict, list, tuple, set, frozenset)
_PASSIVE = (
    FrameType,
    CellType,
    MethodType,
    FunctionType,
    ModuleType,
    CodeType,
    BuiltinFunctionType,
)
_LEVELS = 3


def unseen_by_holders(
    changes: list[FunctionChange], kept: frozenset[str], own: Iterable[object] = ()
) -> list[str]:
    """One line per (function, library holder): the function's signature changed and the
    holder, an object of an installed library whose class is not in `kept`, holds it.
    `own` are this runtime's containers that hold functions (the undo log's records)."""
    targets = [c for c in changes if c.signature_changed and c.replaced is None]
    if not targets:
        return []
    own_ids = {id(o) for o in own} | {id(targets)}
    module_dicts = {id(m.__dict__) for m in list(sys.modules.values()) if isinstance(m, ModuleType)}
    # For each object reached: the target functions it holds, and how ("callback").
    held: dict[int, tuple[object, list[FunctionChange], str]] = {
        id(c.function): (c.function, [c], "") for c in targets
    }
    frontier = [c.function for c in targets]
    found: dict[tuple[int, int], str] = {}
    for _ in range(_LEVELS):
        referrers = gc.get_referrers(*frontier)
        own_ids.update((id(referrers), id(frontier)))
        own_ids.update(id(entry) for entry in held.values())
        nxt: list[object] = []
        ids = {id(o): o for o in frontier}
        for ref in referrers:
            if id(ref) in own_ids or isinstance(ref, _PASSIVE) or id(ref) in module_dicts:
                continue
            if isinstance(ref, type) or type(ref).__module__.startswith("hotpatch"):
                continue  # a class member (the app's class), or this runtime's own records
            for child, how in _children_held(ref, ids):
                _, functions, inner = held[id(child)]
                path = _join(how, inner)
                if isinstance(ref, _CONTAINERS):
                    if id(ref) not in held:
                        held[id(ref)] = (ref, list(functions), path)
                        nxt.append(ref)
                    continue
                for change in functions:
                    key = (id(change.function), id(ref))
                    if key not in found and _is_library_object(ref, kept):
                        found[key] = _line(change, ref, path)
        if not nxt:
            break
        frontier = nxt
    return list(found.values())


def _children_held(ref: object, ids: dict[int, object]) -> list[tuple[object, str]]:
    """Which of the objects `ids` (by id) `ref` holds, and under which key or attribute."""
    out: list[tuple[object, str]] = []
    if isinstance(ref, dict):
        for key, value in list(ref.items()):  # type: ignore[attr-defined]
            if id(value) in ids:
                out.append((value, f"[{key!r}]"))
    elif isinstance(ref, _CONTAINERS):
        for index, value in enumerate(list(ref)):  # type: ignore[call-overload]
            if id(value) in ids:
                out.append((value, f"[{index}]"))
    else:
        try:
            own = object.__getattribute__(ref, "__dict__")
        except (AttributeError, TypeError):
            own = {}
        if isinstance(own, dict):
            for key, value in list(own.items()):
                if id(value) in ids:
                    out.append((value, f".{key}"))
        if id(own) in ids:
            out.append((own, ""))  # its instance dict held the function (or a container)
        if not out:  # held otherwise (slots, a C type): say which object, not where
            out = [(o, "") for o in ids.values() if _refers(ref, o)]
    return out


def _join(how: str, inner: str) -> str:
    """The path from a holder to the function: `.view_functions['index']`. An object's own
    `__dict__` (`how` empty) shows its first key as an attribute."""
    if how or not inner.startswith("["):
        return how + inner
    key, _, rest = inner[1:].partition("]")
    return f".{key.strip(chr(39))}{rest}"


def _refers(ref: object, obj: object) -> bool:
    return any(r is obj for r in gc.get_referents(ref))


def _is_library_object(obj: object, kept: frozenset[str]) -> bool:
    cls = type(obj)
    for c in cls.__mro__:
        module = c.__module__
        if f"{module}.{c.__qualname__}" in kept or any(
            module == k or module.startswith(k + ".") for k in kept
        ):
            return False
    return is_library(cls.__module__)


def _line(change: FunctionChange, holder: object, path: str) -> str:
    cls = type(holder)
    where = f"{cls.__module__}.{cls.__qualname__}{path}"
    return (
        f"{change.name}: {change.describe()} changed; held by {where}, which may have "
        "analysed it when it was registered: the change may not be seen there"
    )
