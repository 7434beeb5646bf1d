"""Writes held in memory until flushed.

For `thinlink dev`: a save's build (cache values, manifest, refs, tree state) is written
after its patch has gone out, off the path between a save and the app running the new
code. Readers of a store that writes behind see their own unwritten values first.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["WriteBehind"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class WriteBehind(Generic[K, V]):
    """A buffer of pending writes, off until `start()`; `flush()` hands them, in the order
    they came, to the store's `write(items)`. May not be shared between threads."""

    def __init__(self, write: Callable[[dict[K, V]], None]) -> None:
        self._write = write
        self._pending: dict[K, V] | None = None

    @property
    def active(self) -> bool:
        return self._pending is not None

    def start(self) -> None:
        """Hold writes from now on."""
        if self._pending is None:
            self._pending = {}

    def hold(self, key: K, value: V) -> bool:
        """Keep `value` for `key` until the next flush; False (nothing kept) when off."""
        if self._pending is None:
            return False
        self._pending[key] = value
        return True

    def get(self, key: K) -> V | None:
        """The value held for `key`, if any."""
        return None if not self._pending else self._pending.get(key)

    def flush(self) -> int:
        """Write what is held; returns how many values. On failure they stay held."""
        pending = self._pending
        if not pending:
            return 0
        self._write(pending)
        self._pending = {}
        return len(pending)

    def discard(self) -> None:
        """Drop what is held (the store it was for is gone)."""
        if self._pending:
            self._pending = {}
