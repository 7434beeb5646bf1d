"""What a patch changes, as data for adapters: functions, bindings, statements re-run.

Made by the runtime while it applies a patch, read by adapters (`hotpatch.adapters`) and
by the rule that names the library objects a change may not reach (`hotpatch._holders`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import CodeType, FunctionType, ModuleType
from typing import Any

__all__ = ["Binding", "FunctionChange", "Interface", "Statement"]

# Code flags (inspect.CO_*, spelled out: inspect is slow to import). A library that
# registered a function chose how to call it from the kind flags.
_VARARGS, _VARKEYWORDS = 0x04, 0x08
_KIND_FLAGS = 0x20 | 0x80 | 0x100 | 0x200  # generator, coroutine, iterable coroutine, async gen
_SHAPE_FLAGS = _VARARGS | _VARKEYWORDS
_MISSING: Any = object()

#: The parts of an `Interface` a library may have read when it registered a function.
SIGNATURE_PARTS = frozenset({"parameters", "defaults", "annotations", "kind"})


@dataclass(frozen=True, eq=False, slots=True)
class Interface:
    """What a library can read from a function without calling it: its parameters (from
    its code), defaults, annotations, doc, and whether it is a coroutine or generator.

    Taken before and after a patch (`FunctionChange.before`/`after`); the values are the
    function's own objects at that moment, not copies.
    """

    code: CodeType
    defaults: tuple[Any, ...] | None
    kwdefaults: dict[str, Any] | None
    annotations: dict[str, Any]
    doc: str | None

    @classmethod
    def of(cls, fn: FunctionType) -> Interface:
        """The interface of `fn` now."""
        return cls(fn.__code__, fn.__defaults__, fn.__kwdefaults__, fn.__annotations__, fn.__doc__)

    @property
    def parameters(self) -> tuple[str, ...]:
        """Parameter names in order (`*args`/`**kwargs` included)."""
        code = self.code
        count = code.co_argcount + code.co_kwonlyargcount
        count += bool(code.co_flags & _VARARGS) + bool(code.co_flags & _VARKEYWORDS)
        return code.co_varnames[:count]

    def differences(self, other: Interface) -> frozenset[str]:
        """Which of "parameters", "defaults", "annotations", "kind" and "doc" differ.

        Values are compared by identity: a patch sets new defaults or annotations only
        where their source changed, so an unchanged one is the very same object."""
        found = set()
        a, b = self.code, other.code
        if (
            a.co_argcount != b.co_argcount
            or a.co_posonlyargcount != b.co_posonlyargcount
            or a.co_kwonlyargcount != b.co_kwonlyargcount
            or (a.co_flags & _SHAPE_FLAGS) != (b.co_flags & _SHAPE_FLAGS)
            or self.parameters != other.parameters
        ):
            found.add("parameters")
        if (a.co_flags & _KIND_FLAGS) != (b.co_flags & _KIND_FLAGS):
            found.add("kind")
        if not _same(self.defaults, other.defaults) or not _same(self.kwdefaults, other.kwdefaults):
            found.add("defaults")
        if not _same(self.annotations, other.annotations):
            found.add("annotations")
        if self.doc != other.doc:
            found.add("doc")
        return frozenset(found)


def _same(x: object, y: object) -> bool:
    if x is y:
        return True
    if type(x) is not type(y):
        return False
    if type(x) is tuple:
        return len(x) == len(y) and all(a is b for a, b in zip(x, y, strict=True))  # type: ignore[arg-type]
    if type(x) is dict:
        return x.keys() == y.keys() and all(v is y[k] for k, v in x.items())  # type: ignore[attr-defined,index]
    return False


@dataclass(frozen=True, eq=False, slots=True)
class FunctionChange:
    """A live function the patch gave new code (and maybe new defaults, annotations, doc).

    `function` is the live function that runs the new code: the same object as before
    the patch, or, when its free variables changed, a new function bound on its class in
    place of `replaced` (the old object, which keeps the old code wherever else it is held).
    """

    name: str  # "module:qualname"
    function: FunctionType
    before: Interface
    after: Interface
    replaced: FunctionType | None = None
    #: The parts of the interface that changed (see `Interface.differences`).
    changed: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "changed", self.before.differences(self.after))

    @property
    def signature_changed(self) -> bool:
        """Its parameters, defaults, annotations, or coroutine/generator kind changed:
        what a library analysing the function when it registered it would have read."""
        return bool(self.changed & SIGNATURE_PARTS)

    def describe(self) -> str:
        """ "parameters and defaults", say: what changed, for messages."""
        parts = sorted(self.changed & SIGNATURE_PARTS) or sorted(self.changed) or ["code"]
        return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


@dataclass(frozen=True, eq=False, slots=True)
class Binding:
    """A name the patch bound, rebound or deleted: a module global (`"module:name"`) or a
    class member (`"module:Class.name"`).

    `kind` is "added" (`new` is the value), "removed" (`old` was), "replaced" (`old` was
    replaced by `new`: references to `old` held elsewhere keep it), or "merged" (the
    statement was re-run and made `new`, then `old` was kept and made to match it, so
    `new` is a throwaway: anything the re-run registered holds it).
    """

    name: str
    kind: str
    old: object = None
    new: object = None


@dataclass(frozen=True, eq=False, slots=True)
class Statement:
    """A top-level statement the patch re-runs (or re-ran) in `module`.

    `names` are what it binds; `mode` is "merge", "rebind" or "class" (see
    `hotpatch.bundle.Statement`); for "class", `members` are the members set on the live
    class and `removed_members` those deleted from it.
    """

    module: ModuleType
    lineno: int
    names: tuple[str, ...]
    mode: str
    source: str
    members: tuple[str, ...] = ()
    removed_members: tuple[str, ...] = ()

    def live(self, name: str) -> object:
        """The value `name` has in the live module now (None if it has none)."""
        return self.module.__dict__.get(name)
