"""The unit model: what a module is made of, as data.

A module is split into *segments*: runs of top-level statements that start where a
top-level `def` or `class` starts (decorators included). A segment is the granule the
compiler works in: an edit recompiles just the segments it touches. Inside segments
live the *units* a developer names: every function, class and method, addressed by
its qualified name (`Class.method`, `outer.<locals>.inner`).

These are immutable records; the compiler creates them and nothing changes them after.
Units, code references and segments are named tuples: an edit of a large module
creates thousands of moved ones, and a tuple is the cheapest object Python makes.
"""

from __future__ import annotations

import bisect
import marshal
from collections import namedtuple
from collections.abc import Iterable
from enum import StrEnum

from thinlink.launch import STORAGE_FORMAT

__all__ = [
    "Unit",
    "UnitKind",
    "CodeRef",
    "Segment",
    "ModuleRecord",
    "count_units",
    "dump_record",
    "load_record",
]


class UnitKind(StrEnum):
    """What a unit is. Stored as its plain string (records are marshalled), which
    compares equal to the member."""

    FUNCTION = "function"
    CLASS = "class"


class Unit(namedtuple("Unit", "qualname kind lineno digest")):
    """A function or class inside a module: its `qualname`, `kind` (`UnitKind`),
    `lineno` (its first line, decorators included, as `co_firstlineno`) and
    `digest`.

    `digest` hashes the compiled behaviour and not the position: moving a unit keeps
    its digest, changing what it does (including through the scopes it closes over or
    the module's `__future__` flags) changes it. A function's digest covers the
    functions nested in it (it creates them); a class's does not cover its methods,
    which are units of their own.
    """

    __slots__ = ()


class CodeRef(namedtuple("CodeRef", "key delta", defaults=(0,))):
    """Where a segment's compiled code lives in the cache.

    `key` names a cached code object (the whole module, or a fragment compiled on its
    own); `delta` is how many lines the segment has moved since then, so relocated
    code is derived rather than stored again.
    """

    __slots__ = ()


class Segment(
    namedtuple("Segment", "start end digest code compiled_units imports", defaults=((), ()))
):
    """A run of top-level statements compiled together (1-based, inclusive lines).

    `digest` hashes the segment's text and the module's compiler flags; `code` says where
    its compiled code is. `compiled_units` are its units at the lines the code was
    compiled at, `code.delta` lines above where they are now: kept unshifted, so that
    moving a segment makes one tuple. `imports` are the names its module-level imports
    bind.
    """

    __slots__ = ()

    @property
    def units(self) -> tuple[Unit, ...]:
        """The functions and classes in the segment, at their current lines."""
        delta = self.code.delta
        if not delta:
            return self.compiled_units
        return tuple([_new(Unit, (q, k, line + delta, d)) for q, k, line, d in self.compiled_units])

    def moved(self, delta: int) -> Segment:
        start, end, digest, (key, shifted), units, imports = self
        # tuple.__new__ directly: a named tuple's own __new__ is a Python call, and a
        # shift edit of a large module moves every segment below it.
        return _new(
            Segment,
            (
                start + delta,
                end + delta,
                digest,
                _new(CodeRef, (key, shifted + delta)),
                units,
                imports,
            ),
        )


_new = tuple.__new__


class ModuleRecord:
    """One version of one module file: its segments and units.

    Content-addressed: the cache keeps it under the file's path and source digest,
    so a build refers to it instead of copying it. Immutable; what is derived from the
    segments (their starts, imports, unit count) is computed once, on first use, so an
    edit of a module with thousands of segments does not walk all of them again.
    """

    __slots__ = ("path", "digest", "flags", "segments", "whole", "_starts", "_importing", "_count")

    def __init__(
        self,
        path: str,
        digest: str,  # hotpatch.image.source_digest of the file's bytes
        flags: int,  # the __future__ compiler flags of the module
        segments: tuple[Segment, ...],
        whole: str | None = None,  # cache key of the whole module's code, when compiled
    ) -> None:
        self.path = path
        self.digest = digest
        self.flags = flags
        self.segments = segments
        self.whole = whole
        self._starts: list[int] | None = None
        self._importing: list[tuple[int, tuple[str, ...]]] | None = None
        self._count: int | None = None

    def _key(self) -> tuple:
        return (self.path, self.digest, self.flags, self.segments, self.whole)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ModuleRecord) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"ModuleRecord({self.path!r}, {self.digest!r}, {len(self.segments)} segments)"

    @property
    def starts(self) -> list[int]:
        """First line of each segment, for bisecting."""
        if self._starts is None:
            self._starts = [seg.start for seg in self.segments]
        return self._starts

    @property
    def importing(self) -> list[tuple[int, tuple[str, ...]]]:
        """(segment index, names) of each segment with module-level imports."""
        if self._importing is None:
            self._importing = [(i, s.imports) for i, s in enumerate(self.segments) if s.imports]
        return self._importing

    @property
    def unit_count(self) -> int:
        """Units in the module: each segment and each definition (see `count_units`)."""
        if self._count is None:
            self._count = count_units(self.segments)
        return self._count

    def replaced(
        self,
        first: int,
        last: int,
        fresh: tuple[Segment, ...] | list[Segment],
        moved: tuple[Segment, ...],
        digest: str,
    ) -> ModuleRecord:
        """The next version: segments `first..last` replaced by `fresh`, those after them
        by `moved`; its unit count is derived from this one's, not counted again."""
        record = ModuleRecord(
            self.path, digest, self.flags, (*self.segments[:first], *fresh, *moved)
        )
        gone = count_units(self.segments[first : last + 1])
        record._count = self.unit_count - gone + count_units(fresh)
        if self._starts is not None:
            delta = moved[0].start - self.segments[last + 1].start if moved else 0
            after = self._starts[last + 1 :]
            record._starts = [
                *self._starts[:first],
                *(s.start for s in fresh),
                *(after if not delta else [start + delta for start in after]),
            ]
        return record

    def imports(self) -> set[str]:
        """Every name bound by a module-level import."""
        return {name for _, names in self.importing for name in names}

    def segment_index(self, line: int) -> int | None:
        """Index of the segment holding `line`, or None."""
        index = bisect.bisect_right(self.starts, line) - 1
        if index >= 0 and line <= self.segments[index].end:
            return index
        return None

    def segment_at(self, line: int) -> Segment | None:
        index = self.segment_index(line)
        return None if index is None else self.segments[index]


def count_units(segments: Iterable[Segment]) -> int:
    """Units in segments: each segment (its top-level statements) and each definition."""
    return sum(1 + len(s.compiled_units) for s in segments)


_RECORD_FORMAT = STORAGE_FORMAT  # records change with the storage format


def dump_record(record: ModuleRecord) -> bytes:
    """Serialise a record (plain tuples through marshal: fast, and no pickle)."""
    # marshal takes plain tuples only, not named ones.
    segments = tuple(
        (start, end, digest, key, delta, tuple(map(tuple, units)), imports)
        for start, end, digest, (key, delta), units, imports in record.segments
    )
    return marshal.dumps(
        (_RECORD_FORMAT, record.path, record.digest, record.flags, record.whole, segments)
    )


def load_record(data: bytes) -> ModuleRecord | None:
    """The record in `data`, or None if it is of another format (a cache miss)."""
    try:
        version, path, digest, flags, whole, segments = marshal.loads(data)
    except (ValueError, EOFError, TypeError):
        return None
    if version != _RECORD_FORMAT:
        return None
    return ModuleRecord(
        path,
        digest,
        flags,
        tuple(
            _new(
                Segment,
                (
                    start,
                    end,
                    sd,
                    _new(CodeRef, (key, delta)),
                    tuple([_new(Unit, u) for u in units]),
                    imports,
                ),
            )
            for start, end, sd, key, delta, units, imports in segments
        ),
        whole,
    )
