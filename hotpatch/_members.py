"""What a class member is made of: the one place that knows the descriptors holding functions.

A method is a function in the class's dict, or a descriptor around one or more: a
classmethod or staticmethod (`__func__`), a property (getter, setter, deleter), a
`functools.cached_property` (`func`). Patching in place, rebinding a method and finding
live functions all look through them the same way.
"""

from __future__ import annotations

import functools

__all__ = ["is_descriptor", "parts"]

_WRAPPING = (classmethod, staticmethod)


def is_descriptor(member: object) -> bool:
    """True for a classmethod, staticmethod, property (or subclass) or cached_property."""
    kind = type(member)
    return kind in _WRAPPING or kind is functools.cached_property or issubclass(kind, property)


def parts(member: object) -> list[object]:
    """The callables `member` is made of: what a descriptor wraps (a property's missing
    accessors left out), or `[member]` itself."""
    kind = type(member)
    if kind in _WRAPPING:
        return [member.__func__]  # type: ignore[attr-defined]
    if kind is functools.cached_property:
        return [member.func]  # type: ignore[attr-defined]
    if issubclass(kind, property):
        found = (member.fget, member.fset, member.fdel)  # type: ignore[attr-defined]
        return [f for f in found if f is not None]
    return [member]
