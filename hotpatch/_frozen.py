"""`Frozen`: the base of small immutable records, on both sides (runtime and build).

What `@dataclass(frozen=True, slots=True)` generates, written out once: importing
dataclasses imports inspect (and with it ast, dis, tokenize, ...), which costs a
program's start-up and a no-op build more than their own work. Each record lists its
fields in `__slots__` and has an `__init__` with the signature (and defaults) a reader
expects, passing the values on in slot order. Here, in the runtime, because the build
side may import the runtime and never the other way round.
"""

from __future__ import annotations

__all__ = ["Frozen"]


class Frozen:
    """An immutable value: equal, hashable and printed by its fields (`__slots__`)."""

    __slots__ = ()

    def __init__(self, *values: object) -> None:
        for name, value in zip(self.__slots__, values, strict=True):
            object.__setattr__(self, name, value)

    def _values(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __reduce__(self) -> tuple:
        return type(self), self._values()  # pickle and copy rebuild through __init__

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}: {type(self).__name__} is frozen")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}: {type(self).__name__} is frozen")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"
