"""A method whose free variables changed: a new function, bound on its live class.

What we do: a function's free variables are fixed when it is made, so new code that uses
`super()` (the implicit `__class__` cell) where the old did not, or stops using it, or
closes over another variable of an enclosing function, cannot go into the live function
object. A class member, though, is found through its class at every call: so we make a
new function from the new code, with its cells taken from the live world (`__class__` is
the LIVE class, other variables are the cells the old function, or a method beside it,
already shares), give it the defaults, annotations, doc and attributes of the old one (or
the new values the patch brings), and set it on the live class, in place of the old one,
under the transaction. Every instance, new and existing, and every method bound from now
on runs the new body. A classmethod, staticmethod, property or cached_property is made
anew around the new function.

What doesn't work: references to the old function object held outside the class (a
method bound before the patch, `handler = C.m` elsewhere, a registry) keep the old code;
the caller reports that. A member wrapped by a decorator of another kind is left as it is.
"""

from __future__ import annotations

import functools
from types import CellType, FunctionType, ModuleType
from typing import Any

from ._members import is_descriptor, parts
from ._transaction import Transaction

__all__ = ["rebind_method"]


def rebind_method(
    module: ModuleType,
    fn: FunctionType,
    code: Any,
    attrs: dict[str, Any] | None,
    tx: Transaction,
) -> tuple[FunctionType, type] | None:
    """Bind a new function made from `code` (with the `attrs` the patch brings) on the live
    class holding `fn` as a member. Returns (the new function, the class), or None when `fn`
    is not a member of a class found, or a free variable of `code` has no live cell."""
    found = _owner(module, fn)
    if found is None:
        return None
    owner, name, member = found
    closure = _closure(code, fn, owner)
    if closure is None:
        return None
    attrs = attrs or {}
    defaults = attrs.get("__defaults__", fn.__defaults__)
    new = FunctionType(code, fn.__globals__, fn.__name__, defaults, closure or None)
    new.__kwdefaults__ = attrs.get("__kwdefaults__", fn.__kwdefaults__)
    new.__annotations__ = attrs.get("__annotations__", fn.__annotations__)
    new.__doc__ = attrs.get("__doc__", fn.__doc__)
    new.__qualname__ = fn.__qualname__
    new.__module__ = fn.__module__
    new.__dict__.update(fn.__dict__)
    replacement = _rewrap(member, fn, new, owner, name)
    if replacement is None:
        return None
    tx.setattr(owner, name, replacement)  # one store: callers find old or new
    return new, owner


def _owner(module: ModuleType, fn: FunctionType) -> tuple[type, str, object] | None:
    """(the class, the member name, the member) holding `fn` in its own namespace."""
    *path, name = fn.__code__.co_qualname.split(".")
    if not path:
        return None
    if "<locals>" not in path:
        owner: object = module
        for part in path:
            owner = vars(owner).get(part) if isinstance(owner, ModuleType | type) else None
        if isinstance(owner, type):
            member = owner.__dict__.get(name)
            if member is not None and _holds(member, fn):
                return owner, name, member
    # A class made inside a function: not reachable from the module. Whoever holds `fn`
    # (its class's namespace, or a descriptor in it) is found by a walk of the heap.
    import gc

    holders = [r for r in gc.get_referrers(fn) if type(r) is dict or is_descriptor(r)]
    namespaces = [h for h in holders if type(h) is dict]
    namespaces += [
        r
        for h in holders
        if h is not None and type(h) is not dict
        for r in gc.get_referrers(h)
        if type(r) is dict
    ]
    for namespace in namespaces:
        member = namespace.get(name)
        if member is None or not _holds(member, fn):
            continue
        for cls in gc.get_referrers(namespace):
            if isinstance(cls, type) and cls.__dict__.get(name) is member:
                return cls, name, member
    return None


def _holds(member: object, fn: FunctionType) -> bool:
    return member is fn or any(part is fn for part in parts(member))


def _rewrap(
    member: object, fn: FunctionType, new: FunctionType, owner: type, name: str
) -> object | None:
    """The class member to set: `new` itself, or a descriptor like `member` around it."""
    if member is fn:
        return new
    kind = type(member)
    if kind in (classmethod, staticmethod):
        made = kind(new)
        for key, value in vars(member).items():  # e.g. __isabstractmethod__, set by hand
            if key not in ("__wrapped__", "__doc__", "__name__", "__qualname__", "__module__"):
                setattr(made, key, value)
        return made
    if kind is functools.cached_property:
        made = functools.cached_property(new)
        made.__set_name__(owner, member.attrname or name)  # type: ignore[attr-defined]
        return made
    if issubclass(kind, property):
        prop: Any = member
        if prop.fget is fn:
            prop = prop.getter(new)
        if prop.fset is fn:
            prop = prop.setter(new)
        if prop.fdel is fn:
            prop = prop.deleter(new)
        return prop
    return None


def _closure(code: Any, fn: FunctionType, owner: type) -> tuple[CellType, ...] | None:
    """Cells for the free variables of `code`: `__class__` holds the live class; any other
    is the cell the old function or a method of the same class already closes over. None
    when one is not found."""
    cells: list[CellType] = []
    for var in code.co_freevars:
        if var == "__class__":
            cells.append(CellType(owner))
            continue
        cell = _cell_named(fn, var)
        for value in vars(owner).values() if cell is None else ():
            for part in parts(value):
                cell = _cell_named(part, var)
                if cell is not None:
                    break
            if cell is not None:
                break
        if cell is None:
            return None
        cells.append(cell)
    return tuple(cells)


def _cell_named(fn: object, var: str) -> CellType | None:
    if type(fn) is not FunctionType or not fn.__closure__:  # type: ignore[union-attr]
        return None
    names = fn.__code__.co_freevars  # type: ignore[union-attr]
    return fn.__closure__[names.index(var)] if var in names else None  # type: ignore[union-attr]
