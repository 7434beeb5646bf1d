"""Conform live definitions to freshly made ones, in place, so every reference sees the change.

What we do (after jurigged's codefind `conform`): a live function keeps its identity and gets
the new code, defaults, annotations and doc; callbacks, registries, `from m import f` and
bound methods all hold that same object. A live class keeps its identity (`isinstance`,
pickling, existing instances) and gets its members conformed, added or deleted one by one.

What doesn't work: a function's free variables are fixed when it is made, so code with other
free variables cannot go into it (a class member is then rebound on its live class by
`_rebind`; anything else keeps its old code, and the caller warns). A
wrapper whose decorator or decorator arguments changed cannot be conformed: the definition
is re-bound to the new object and references held elsewhere keep the old one. An Enum gets
the members added after its last one (moved onto it from the re-run class). A class whose
bases, metaclass, `__slots__`, dataclass fields, other Enum members or namedtuple fields
changed needs a restart (`NeedsRestart` unwinds to the transaction, which undoes
everything).
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field
from types import CodeType, FunctionType, GetSetDescriptorType, MemberDescriptorType
from typing import Any

from ._errors import NeedsRestart
from ._locate import containers_holding, unwrap_chain
from ._members import parts
from ._transaction import Transaction
from .adapters._changes import Binding, FunctionChange, Interface
from .bundle import FUNCTION_ATTRS

__all__ = [
    "Changes",
    "Merge",
    "NeedsRestart",
    "conform",
    "conform_function",
    "values_equal",
]

_CODE_AND_ATTRS = ("__code__", *FUNCTION_ATTRS)  # what `_store` sets
_ATOMIC = (int, float, complex, str, bytes, bool, type(None), range, type(Ellipsis))
# Never copied from a re-run class onto the live one: identity and layout of the live class.
_SKIP = frozenset(
    {
        "__dict__",
        "__weakref__",
        "__module__",
        "__qualname__",
        "__slots__",
        "_abc_impl",
        "__dataclass_fields__",
        "__dataclass_params__",
    }
)
_SLOT_DESCRIPTORS = (MemberDescriptorType, GetSetDescriptorType)
_MISSING: Any = object()


@dataclass
class Changes:
    """What a patch did so far; the lists become the report's fields."""

    patched: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    rerun: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    rebound: list[str] = field(default_factory=list)
    caches: list[object] = field(default_factory=list)  # cleared after commit
    functions: list[FunctionChange] = field(default_factory=list)  # for adapters
    bindings: list[Binding] = field(default_factory=list)  # for adapters
    adapted: list[str] = field(default_factory=list)  # what adapters did
    unseen: list[str] = field(default_factory=list)  # holders that may not see a change


def conform(
    fn: FunctionType, code: CodeType, tx: Transaction, attrs: dict[str, Any] | None = None
) -> str | None:
    """Give `fn` the code `code` in place (one store: callers see old or new, never a mix),
    and with it the function attributes in `attrs` (the new values of those of
    `FUNCTION_ATTRS` whose source changed).

    Returns None when done, or the reason it was refused (different free variables).
    """
    if fn.__code__.co_freevars != code.co_freevars:
        return _freevar_reason(fn.__code__, code)
    if not attrs:
        tx.setattr(fn, "__code__", code)
        return None
    tx.remember_attrs(fn, _CODE_AND_ATTRS)
    _store(
        fn,
        code,
        attrs.get("__defaults__", fn.__defaults__),
        attrs.get("__kwdefaults__", fn.__kwdefaults__),
        attrs.get("__annotations__", fn.__annotations__),
        attrs.get("__doc__", fn.__doc__),
    )
    return None


def conform_function(live: FunctionType, new: FunctionType, tx: Transaction) -> str | None:
    """Copy the code and the `FUNCTION_ATTRS` (defaults, kw-only defaults, annotations, doc)
    of `new` onto `live`.

    Returns None when done, or the reason it was refused (different free variables).
    """
    if live.__code__.co_freevars != new.__code__.co_freevars:
        return _freevar_reason(live.__code__, new.__code__)
    tx.remember_attrs(live, _CODE_AND_ATTRS)
    _store(
        live,
        new.__code__,
        new.__defaults__,
        new.__kwdefaults__,
        new.__annotations__,
        new.__doc__,
    )
    return None


def _store(
    fn: FunctionType,
    code: CodeType,
    defaults: tuple[Any, ...] | None,
    kwdefaults: dict[str, Any] | None,
    annotations: dict[str, Any],
    doc: str | None,
) -> None:
    # New code with old defaults or annotations is a half state another thread could call
    # (a new parameter without its default: TypeError) or read (a framework analysing the
    # signature). Straight-line stores with no call or backward jump in between: CPython
    # switches threads only there, so no other thread sees some of these without the rest.
    # One store per name of `_CODE_AND_ATTRS`, in its order.
    fn.__code__ = code
    fn.__defaults__ = defaults
    fn.__kwdefaults__ = kwdefaults
    fn.__annotations__ = annotations
    fn.__doc__ = doc


def _freevar_reason(old: CodeType, new: CodeType) -> str:
    return f"free variables differ (live {old.co_freevars or '()'}, new {new.co_freevars or '()'})"


class Merge:
    """Merges re-run definitions of one module into its live objects."""

    def __init__(
        self, module: str, label: str, files: frozenset[str], tx: Transaction, changes: Changes
    ) -> None:
        self.module = module  # the live module's __name__ (what __module__ says)
        self.label = label  # the name reports use
        self.files = files
        self.tx = tx
        self.changes = changes
        # ids of the live functions given new code by this patch (alive: the module holds
        # them); shifting the lines of what only moved leaves them alone.
        self.swapped: set[int] = set()

    def value(self, old: object, new: object, qualname: str) -> bool:
        """Conform `old` to `new` in place; False when that is not possible (nothing was
        changed then, and the caller rebinds)."""
        if old is new:
            return True
        kind = type(old)
        if kind is not type(new):
            return False
        if kind is classmethod or kind is staticmethod:
            return self.value(old.__func__, new.__func__, qualname)  # type: ignore[attr-defined]
        if kind is functools.cached_property:
            return self.value(old.func, new.func, qualname)  # type: ignore[attr-defined]
        if issubclass(kind, property):
            return self._property(old, new, qualname)  # type: ignore[arg-type]
        if issubclass(kind, type):
            if self.defined_here(old, qualname) and self.defined_here(new, qualname):
                self.klass(old, new, qualname)  # type: ignore[arg-type]
                return True
            return False
        plan = self._plan(old, new, qualname)
        if plan is None:
            return False
        self._conform_plan(plan, qualname)
        return True

    def klass(
        self,
        live: type,
        new: type,
        qualname: str,
        only: tuple[str, ...] | None = None,
        removed: tuple[str, ...] = (),
        decorated: bool = False,
    ) -> None:
        """Patch the live class in place to match `new`, a re-run of its definition.

        With `only`, just those members are set and `removed` ones deleted: members whose
        source did not change keep their live values (class data the app mutated).
        `decorated`: the definition has class decorators (which may register `new`).
        """
        if decorated or _announces_subclasses(new):
            _adopt_registrations(live, new)  # first: even a refused class was announced
        reason = _class_change(live, new)
        if reason:
            raise NeedsRestart(f"{self.label}:{qualname}: {reason}")
        _retarget_class_cell(new, live)
        if issubclass(live, enum.Enum):
            self._add_enum_members(live, new, qualname)
        if only is not None:
            self._members(live, new, qualname, only, removed)
            return
        is_enum = issubclass(live, enum.Enum)
        live_dict = live.__dict__
        for name, value in list(new.__dict__.items()):
            if name in _SKIP or type(value) in _SLOT_DESCRIPTORS or issubclass(type(value), new):
                continue  # layout, identity, or a member of the new class (Enum)
            if is_enum and not _holds_code(value):
                continue  # Enum bookkeeping is tied to the members, which did not change
            self._set_member(live, name, value, qualname)
        for name in [n for n in live_dict if n not in new.__dict__ and n not in _SKIP]:
            if self.defined_here(live_dict[name], f"{qualname}.{name}", prefix=True):
                self._remove_member(live, name, qualname)

    def _set_member(self, live: type, name: str, value: object, qualname: str) -> None:
        """Conform member `name` of the live class to `value`, or set it."""
        sub = f"{qualname}.{name}"
        old = live.__dict__.get(name, _MISSING)
        if old is _MISSING:
            self.tx.setattr(live, name, value)
            self.changes.added.append(f"{self.label}:{sub}")
            self.changes.bindings.append(Binding(f"{self.label}:{sub}", "added", new=value))
        elif self.value(old, value, sub):
            if old is not value:
                self.changes.bindings.append(Binding(f"{self.label}:{sub}", "merged", old, value))
        elif not values_equal(old, value):
            self.tx.setattr(live, name, value)
            self.changes.bindings.append(Binding(f"{self.label}:{sub}", "replaced", old, value))
            # Only the class holds a property object: replacing it loses no reference.
            if not issubclass(type(old), property) and self.defined_here(old, sub):
                self._warn_rebound(sub)

    def _add_enum_members(self, live: type, new: type, qualname: str) -> None:
        """Move the members `new` adds onto the live Enum: the members held stay the
        class's, and the new ones are found by name, by value, in iteration and pickles."""
        for name in enum_additions(live, new) or ():
            member = new._member_map_[name]  # type: ignore[attr-defined]
            object.__setattr__(member, "__class__", live)  # made by the throwaway class
            member.__objclass__ = live
            member._sort_order_ = len(live._member_names_)  # type: ignore[attr-defined]
            # The class attribute first: the Enum refuses to set a name it has as a member.
            # (It is the member, or where a base has that name, a property leading to it.)
            self.tx.setattr(live, name, new.__dict__.get(name, member))
            self.tx.setattr(live, "_member_names_", [*live._member_names_, name])  # type: ignore[attr-defined]
            self.tx.setitem(live._member_map_, name, member)  # type: ignore[attr-defined]
            self.tx.setitem(live._value2member_map_, member._value_, member)  # type: ignore[attr-defined]
            sub = f"{self.label}:{qualname}.{name}"
            self.changes.added.append(sub)
            self.changes.bindings.append(Binding(sub, "added", new=member))

    def _members(
        self, live: type, new: type, qualname: str, only: tuple[str, ...], removed: tuple[str, ...]
    ) -> None:
        for name in only:
            value = new.__dict__.get(name, _MISSING)
            if value is not _MISSING:
                self._set_member(live, name, value, qualname)
        for name in removed:
            if name in live.__dict__:
                self._remove_member(live, name, qualname)

    def _remove_member(self, live: type, name: str, qualname: str) -> None:
        sub = f"{self.label}:{qualname}.{name}"
        self.changes.bindings.append(Binding(sub, "removed", old=live.__dict__[name]))
        self.tx.delattr(live, name)
        self.changes.removed.append(sub)

    def defined_here(self, obj: object, qualname: str, prefix: bool = False) -> bool:
        """True when `obj` is a definition from this module (a function or class with this
        qualname, or under it when `prefix`): something a user may hold a reference to."""
        parent = qualname.rpartition(".")[0] + "." if prefix else None
        if issubclass(type(obj), type):
            name = obj.__dict__.get("__qualname__", obj.__qualname__)
            return obj.__dict__.get("__module__") == self.module and (
                name == qualname or (parent is not None and name.startswith(parent))
            )
        for fn in _functions_in(obj):
            code = fn.__code__
            if code.co_filename in self.files and (
                code.co_qualname == qualname
                or (parent is not None and code.co_qualname.startswith(parent))
                or (parent is None and "<locals>" not in code.co_qualname)
            ):
                return True
        return False

    def _warn_rebound(self, qualname: str) -> None:
        self.changes.warnings.append(
            f"{self.label}:{qualname} was replaced by a new object (its decorator or kind "
            "changed); references to the old one held elsewhere keep the old code"
        )

    def _property(self, old: property, new: property, qualname: str) -> bool:
        pairs = [(old.fget, new.fget), (old.fset, new.fset), (old.fdel, new.fdel)]
        if any((a is None) != (b is None) for a, b in pairs):
            return False  # a setter or deleter added or removed: a new property object
        plans = [self._plan(a, b, qualname) for a, b in pairs if a is not None]
        if any(p is None for p in plans):
            return False
        for plan in plans:
            self._conform_plan(plan, qualname)  # type: ignore[arg-type]
        if old.__doc__ != new.__doc__:
            self.tx.setattr(old, "__doc__", new.__doc__)
        return True

    def _is_target(self, fn: object, qualname: str) -> bool:
        return (
            type(fn) is FunctionType
            and fn.__code__.co_qualname == qualname
            and fn.__code__.co_filename in self.files
        )

    def _plan(self, old: object, new: object, qualname: str) -> tuple | None:
        """Find the user's function inside both wrapper chains. Returns (live function,
        new function, caches to clear) when the wrappers are equivalent (same decorator code,
        same decorator arguments), else None. Checks only: changes nothing."""
        old_chain, new_chain = unwrap_chain(old), unwrap_chain(new)
        corr: dict[int, object] = {}
        for depth, (a, b) in enumerate(zip(old_chain, new_chain, strict=False)):
            corr[id(a)] = b
            if self._is_target(a, qualname) and self._is_target(b, qualname):
                return _target_plan(old_chain[:depth], new_chain[:depth], a, b, corr)
        if len(old_chain) != len(new_chain):
            return None
        a, b = old_chain[-1], new_chain[-1]
        if (
            type(a) is FunctionType
            and type(b) is FunctionType
            and a.__code__.co_qualname == b.__code__.co_qualname
            and a.__code__.co_filename == b.__code__.co_filename
        ):
            return _target_plan(old_chain[:-1], new_chain[:-1], a, b, corr)
        return None

    def _conform_plan(self, plan: tuple, qualname: str) -> None:
        live, new, caches = plan
        if _function_changed(live, new):
            before = Interface.of(live)
            conform_function(live, new, self.tx)  # freevars were checked by the plan
            name = f"{self.label}:{qualname}"
            self.changes.patched.append(name)
            self.changes.functions.append(FunctionChange(name, live, before, Interface.of(live)))
            self.changes.caches.extend(caches)


def _target_plan(
    old_wrappers: list,
    new_wrappers: list,
    live: FunctionType,
    new: FunctionType,
    corr: dict[int, object],
) -> tuple | None:
    if any(not _equivalent(a, b, corr) for a, b in zip(old_wrappers, new_wrappers, strict=True)):
        return None
    if live.__code__.co_freevars != new.__code__.co_freevars or not _cells_equal(live, new, corr):
        return None
    return live, new, [w for w in old_wrappers if hasattr(w, "cache_clear")]


def _equivalent(a: object, b: object, corr: dict[int, object]) -> bool:
    """Two wrapper levels made by the same decorator with the same arguments."""
    if type(a) is not type(b):
        return False
    if type(a) is FunctionType:
        return (
            a.__code__ == b.__code__  # type: ignore[attr-defined]
            and values_equal(a.__defaults__, b.__defaults__, corr)  # type: ignore[attr-defined]
            and values_equal(a.__kwdefaults__, b.__kwdefaults__, corr)  # type: ignore[attr-defined]
            and _cells_equal(a, b, corr)
        )  # type: ignore[arg-type]
    if hasattr(a, "cache_parameters"):
        return a.cache_parameters() == b.cache_parameters()  # type: ignore[attr-defined]
    return False


def _cells_equal(a: FunctionType, b: FunctionType, corr: dict[int, object]) -> bool:
    cells_a, cells_b = a.__closure__ or (), b.__closure__ or ()
    if len(cells_a) != len(cells_b):
        return False
    for x, y in zip(cells_a, cells_b, strict=True):
        try:
            vx, vy = x.cell_contents, y.cell_contents
        except ValueError:  # an empty cell: equal only if both are
            if _cell_empty(x) != _cell_empty(y):
                return False
            continue
        if not values_equal(vx, vy, corr):
            return False
    return True


def _cell_empty(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018
    except ValueError:
        return True
    return False


def values_equal(
    x: object, y: object, corr: dict[int, object] | None = None, depth: int = 0
) -> bool:
    """Equal for the purpose of "nothing changed": identical, corresponding (`corr` maps old
    ids to new objects), or plain data that compares equal. Never calls a user `__eq__`."""
    if x is y or (corr is not None and corr.get(id(x)) is y):
        return True
    kind = type(x)
    if kind is not type(y) or depth > 8:
        return False
    if kind in _ATOMIC:
        return x == y
    if kind is tuple or kind is list:
        return len(x) == len(y) and all(  # type: ignore[arg-type]
            values_equal(a, b, corr, depth + 1) for a, b in zip(x, y, strict=True)
        )  # type: ignore[call-overload]
    if kind is dict:
        return x.keys() == y.keys() and all(  # type: ignore[attr-defined]
            values_equal(v, y[k], corr, depth + 1) for k, v in x.items()
        )  # type: ignore[attr-defined,index]
    if kind is frozenset or kind is set:
        return all(type(v) in _ATOMIC for v in x) and x == y  # type: ignore[attr-defined]
    return False


def _function_changed(live: FunctionType, new: FunctionType) -> bool:
    return live.__code__ != new.__code__ or any(
        not values_equal(getattr(live, name), getattr(new, name)) for name in FUNCTION_ATTRS
    )


def _functions_in(obj: object) -> list[FunctionType]:
    """The functions a class member consists of (unwrapping descriptors and wrappers)."""
    return [f for p in parts(obj) for f in unwrap_chain(p) if type(f) is FunctionType]


def _holds_code(obj: object) -> bool:
    return bool(_functions_in(obj))


def _retarget_class_cell(new: type, live: type) -> None:
    # Methods using super() or __class__ close over the class being defined: the throwaway
    # re-run class. Point that cell at the live class, since the live class is what stays.
    for value in new.__dict__.values():
        for fn in _functions_in(value):
            names = fn.__code__.co_freevars
            if "__class__" in names and fn.__closure__:
                cell = fn.__closure__[names.index("__class__")]
                if not _cell_empty(cell) and cell.cell_contents is new:
                    cell.cell_contents = live


def _adopt_registrations(live: type, new: type) -> None:
    """Creating `new` (the re-run of a class statement) ran the class-creation hooks again
    (`__init_subclass__`, the metaclass, class decorators), which may have stored it in a
    registry (`PLUGINS[cls.__name__] = cls`). The live class is the one that stays, applied
    or not: point every dict holding the throwaway class back at it.

    Not through the undo log: this undoes a side effect of the re-run, so after this patch
    is rolled back the registry must still hold the live class (the log would put `new`
    back). A list or set the hook appended `new` to keeps the live class once, in place."""
    for holder in containers_holding(new):
        if type(holder) is dict:
            for key, value in list(holder.items()):
                if value is new:
                    holder[key] = live
        elif type(holder) is list:
            has_live = any(item is live for item in holder)
            holder[:] = (
                [item for item in holder if item is not new]
                if has_live
                else [live if item is new else item for item in holder]
            )
        else:  # a set: classes hash by identity unless their metaclass says otherwise
            holder.discard(new)
            holder.add(live)


def _announces_subclasses(cls: type) -> bool:
    """True when creating `cls` runs code that may keep it somewhere: a metaclass other
    than `type`, or an `__init_subclass__` defined by a base (a heap walk finds out where)."""
    if type(cls) is not type:
        return True
    return any("__init_subclass__" in vars(base) for base in cls.__mro__[1:-1])


def _class_change(live: type, new: type) -> str | None:
    """Why `new` cannot be patched into `live` in place, or None."""
    if type(live) is not type(new):
        return "its metaclass changed"
    if live.__bases__ != new.__bases__:
        return "its base classes changed"
    if live.__dict__.get("__slots__") != new.__dict__.get("__slots__"):
        return "its __slots__ changed"
    if _dataclass_shape(live) != _dataclass_shape(new):
        return "its dataclass fields or parameters changed"
    if live.__dict__.get("_fields") != new.__dict__.get("_fields"):
        return "its namedtuple fields changed"
    if issubclass(live, enum.Enum) and enum_additions(live, new) is None:
        return "its Enum members changed (only new members at the end are added in place)"
    return None


def enum_additions(live: type, new: type) -> list[str] | None:
    """The members `new` (a re-run of the Enum `live`) adds after the live ones: [] when
    the members are the same, None when they changed otherwise (one removed, renamed,
    reordered or given another value; an alias; a Flag, whose masks derive from all its
    members; a value that cannot be a dict key)."""
    old_names: list[str] = live._member_names_  # type: ignore[attr-defined]
    new_names: list[str] = new._member_names_  # type: ignore[attr-defined]
    old_map, new_map = live._member_map_, new._member_map_  # type: ignore[attr-defined]
    if new_names[: len(old_names)] != old_names or len(new_map) - len(new_names) != len(
        old_map
    ) - len(old_names):
        return None
    if any(name not in new_map for name in old_map):
        return None  # an alias renamed or removed
    old_values = [m._value_ for m in old_map.values()]
    if not values_equal(old_values, [new_map[n]._value_ for n in old_map]):
        return None
    added = new_names[len(old_names) :]
    if added and issubclass(live, enum.Flag):
        return None
    try:
        if any(new_map[n]._value_ in live._value2member_map_ for n in added):  # type: ignore[attr-defined]
            return None
    except TypeError:
        return None
    return added


def _dataclass_shape(cls: type) -> object:
    fields = cls.__dict__.get("__dataclass_fields__")
    if fields is None:
        return None
    params = cls.__dict__.get("__dataclass_params__")
    return repr(params), [(name, repr(f.type), f.init, f.kw_only) for name, f in fields.items()]
