"""An undo log for live state, so a patch applies fully or not at all.

Every change a patch makes to the running program (a function's `__code__`, a module global,
a class attribute, a jump-table entry) goes through a `Transaction`, which records the old
value first. `rollback()` restores the records in reverse order, exactly.

A dict can also be snapshotted: code a patch runs (a re-run statement calling a function that
does `global X; X = ...`) may change a module namespace behind the log's back, and a failed
apply must undo that too. Snapshots are dropped on `commit()`: restoring one later (for
`hotpatch.rollback()`) would also undo what the app itself changed since.

A transaction is used by one thread at a time (the applying thread, under the apply lock).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, MutableMapping
from types import FunctionType
from typing import Any

__all__ = ["Transaction"]

logger = logging.getLogger(__name__)

_MISSING: Any = object()

_ATTR, _ITEM, _CALL = "attr", "item", "call"


class _Record:
    """One undo step. A class of this module, not a tuple: walks of the heap looking for
    who holds a function tell the runtime's own records apart by their type."""

    __slots__ = ("kind", "target", "name", "old")

    def __init__(self, kind: str, target: Any, name: Any, old: Any) -> None:
        self.kind = kind
        self.target = target
        self.name = name
        self.old = old


class Transaction:
    """An ordered undo log of attribute and item changes."""

    def __init__(self) -> None:
        self._log: list[_Record] = []
        self._snapshots: list[tuple[MutableMapping[Any, Any], dict[Any, Any]]] = []

    def __len__(self) -> int:
        return len(self._log)

    def records(self) -> list[object]:
        """The containers of this transaction's snapshots (they hold what they saved): for
        walks of the heap that must tell this runtime's own references apart."""
        return [self._snapshots, *self._snapshots, *(saved for _, saved in self._snapshots)]

    # -- attributes ---------------------------------------------------------------------------

    def remember_attrs(self, obj: object, names: Iterable[str]) -> None:
        """Record the current value of attributes the caller is about to assign itself (used
        where several assignments must follow each other with no call in between)."""
        for name in names:
            self._log.append(_Record(_ATTR, obj, name, _current_attr(obj, name)))

    def setattr(self, obj: object, name: str, value: object) -> None:
        """Set `obj.name = value`, recording the old value (or its absence)."""
        self.remember_attrs(obj, (name,))
        setattr(obj, name, value)

    def delattr(self, obj: object, name: str) -> None:
        """Delete `obj.name`, recording the old value."""
        self.remember_attrs(obj, (name,))
        delattr(obj, name)

    # -- mapping items ------------------------------------------------------------------------

    def setitem(self, mapping: MutableMapping[Any, Any], key: object, value: object) -> None:
        """Set `mapping[key] = value` (a single store: readers see old or new)."""
        self._log.append(_Record(_ITEM, mapping, key, mapping.get(key, _MISSING)))
        mapping[key] = value

    def delitem(self, mapping: MutableMapping[Any, Any], key: object) -> None:
        """Delete `mapping[key]`, recording the old value."""
        self._log.append(_Record(_ITEM, mapping, key, mapping[key]))
        del mapping[key]

    def snapshot(self, mapping: MutableMapping[Any, Any]) -> None:
        """Remember all of `mapping` so `rollback()` before `commit()` restores it whole."""
        self._snapshots.append((mapping, dict(mapping)))

    # -- anything else ------------------------------------------------------------------------

    def on_rollback(self, undo: Callable[[], object]) -> None:
        """Call `undo()` when this transaction is rolled back, in its place in the log
        (after what was recorded later is undone, before what was recorded earlier): for
        state that is rebuilt rather than restored, such as a cache to clear again."""
        self._log.append(_Record(_CALL, undo, None, None))

    # -- outcome ------------------------------------------------------------------------------

    def commit(self) -> None:
        """Keep the changes; the log stays for a later `rollback()`, snapshots are dropped."""
        self._snapshots.clear()

    def rollback(self) -> None:
        """Undo every recorded change, newest first, then restore snapshots.

        Never stops half way: an undo step that fails is logged and the rest still run.
        """
        for record in reversed(self._log):
            kind, target, name, old = record.kind, record.target, record.name, record.old
            try:
                if kind == _ATTR:
                    _restore_attr(target, name, old)
                elif kind == _ITEM:
                    _restore_item(target, name, old)
                else:
                    target()
            except Exception:  # keep undoing the rest; one failure must not strand them
                logger.exception("hotpatch: could not undo %s %r on %r", kind, name, target)
        self._log.clear()
        for mapping, saved in reversed(self._snapshots):
            _restore_mapping(mapping, saved)
        self._snapshots.clear()


def _current_attr(obj: object, name: str) -> object:
    # A class attribute is read raw from the class's own __dict__ (not through descriptors,
    # not from a base class); absence is recorded so rollback deletes rather than shadows.
    if isinstance(obj, type):
        return obj.__dict__.get(name, _MISSING)
    if isinstance(obj, FunctionType):
        return getattr(obj, name, _MISSING)
    try:
        own = object.__getattribute__(obj, "__dict__")
    except AttributeError:
        return getattr(obj, name, _MISSING)
    if name in own:
        return own[name]
    # Not in the instance dict: only a data descriptor (slot, property) holds a value to
    # restore; anything else comes from the class and must not be copied onto the instance.
    descriptor = getattr(type(obj), name, None)
    if hasattr(type(descriptor), "__set__"):
        return getattr(obj, name, _MISSING)
    return _MISSING


def _restore_attr(obj: object, name: str, old: object) -> None:
    if old is _MISSING:
        if isinstance(obj, type) and name not in obj.__dict__:
            return
        try:
            delattr(obj, name)
        except AttributeError:
            pass
    else:
        setattr(obj, name, old)


def _restore_item(mapping: MutableMapping[Any, Any], key: object, old: object) -> None:
    if old is _MISSING:
        mapping.pop(key, None)
    else:
        mapping[key] = old


def _restore_mapping(mapping: MutableMapping[Any, Any], saved: dict[Any, Any]) -> None:
    # Key by key, never clear-then-refill: another thread may read the namespace meanwhile.
    for key in [k for k in mapping if k not in saved]:
        mapping.pop(key, None)
    for key, value in saved.items():
        if mapping.get(key, _MISSING) is not value:
            mapping[key] = value
