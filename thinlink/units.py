"""The unit model: what a module is made of, as data.

A module is split into *segments*: runs of top-level statements that start where a
top-level `def` or `class` starts (decorators included). A segment is the granule the
compiler works in: an edit recompiles just the segments it touches. Inside segments
live the *units* a developer names: every function, class and method, addressed by
its qualified name (`Class.method`, `outer.<locals>.inner`).

These are frozen records; the compiler creates them and nothing changes them after.
"""

from __future__ import annotations

import bisect
import marshal
from dataclasses import dataclass

__all__ = ["Unit", "CodeRef", "Segment", "ModuleRecord", "dump_record", "load_record"]


@dataclass(frozen=True, slots=True)
class Unit:
    """A function or class inside a module.

    `digest` hashes the compiled behaviour and not the position: moving a unit keeps
    its digest, changing what it does (including through the scopes it closes over or
    the module's `__future__` flags) changes it. A function's digest covers the
    functions nested in it (it creates them); a class's does not cover its methods,
    which are units of their own.
    """

    qualname: str
    kind: str  # "function" or "class"
    lineno: int  # first line, decorators included, as co_firstlineno
    digest: str

    def moved(self, delta: int) -> Unit:
        return Unit(self.qualname, self.kind, self.lineno + delta, self.digest)


@dataclass(frozen=True, slots=True)
class CodeRef:
    """Where a segment's compiled code lives in the cache.

    `key` names a cached code object (the whole module, or a fragment compiled on its
    own); `delta` is how many lines the segment has moved since then, so relocated
    code is derived rather than stored again.
    """

    key: str
    delta: int = 0


@dataclass(frozen=True, slots=True)
class Segment:
    """A run of top-level statements compiled together (1-based, inclusive lines)."""

    start: int
    end: int
    digest: str  # of the segment's text and the module's compiler flags
    code: CodeRef
    units: tuple[Unit, ...] = ()
    imports: tuple[str, ...] = ()  # names its module-level imports bind

    def moved(self, delta: int) -> Segment:
        return Segment(
            self.start + delta,
            self.end + delta,
            self.digest,
            CodeRef(self.code.key, self.code.delta + delta),
            tuple(u.moved(delta) for u in self.units),
            self.imports,
        )


@dataclass(frozen=True)
class ModuleRecord:
    """One version of one module file: its segments and units.

    Content-addressed: the cache keeps it under the file's path and source digest,
    so a build refers to it instead of copying it.
    """

    path: str
    digest: str  # hotpatch._image.source_digest of the file's bytes
    flags: int  # the __future__ compiler flags of the module
    segments: tuple[Segment, ...]
    whole: str | None = None  # cache key of the whole module's code, when compiled

    def imports(self) -> set[str]:
        """Every name bound by a module-level import."""
        return {name for seg in self.segments for name in seg.imports}

    def units(self) -> list[Unit]:
        return [u for seg in self.segments for u in seg.units]

    def segment_at(self, line: int) -> Segment | None:
        starts = [seg.start for seg in self.segments]
        index = bisect.bisect_right(starts, line) - 1
        if index >= 0 and line <= self.segments[index].end:
            return self.segments[index]
        return None


_RECORD_FORMAT = 2


def dump_record(record: ModuleRecord) -> bytes:
    """Serialise a record (plain tuples through marshal: fast, and no pickle)."""
    segments = tuple(
        (
            s.start,
            s.end,
            s.digest,
            s.code.key,
            s.code.delta,
            tuple((u.qualname, u.kind, u.lineno, u.digest) for u in s.units),
            s.imports,
        )
        for s in record.segments
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
            Segment(start, end, sd, CodeRef(key, delta), tuple(Unit(*u) for u in units), imports)
            for start, end, sd, key, delta, units, imports in segments
        ),
        whole,
    )
