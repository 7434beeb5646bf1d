"""Compiling one module: whole (cold) or just the segments an edit touched.

`compile_cold` compiles a file whole and derives its record. `rebuild` takes the
previous record and text of the same file, finds the changed lines (common prefix
and suffix), recompiles only the segments they fall in, and shifts the segments
below by the number of lines added or removed: relocated, not recompiled. Anything
it cannot localise safely (no previous version, `__future__` imports edited, a
fragment that does not compile on its own) falls back to `compile_cold`, so the
result is always what compiling the whole file gives.
"""

from __future__ import annotations

import marshal
from collections import namedtuple
from types import CodeType

from hotpatch._image import source_digest

from .cache import Cache
from .compiler import (
    FUTURE_MASK,
    compile_fragment,
    compile_module,
    definition_lines,
    relocate,
    split_segments,
    text_digest,
)
from .errors import SourceError
from .text import LineSpan, decode, split_lines
from .units import CodeRef, ModuleRecord, Segment, Unit, count_units

__all__ = [
    "Compiled",
    "compile_cold",
    "compile_whole",
    "rebuild",
    "store",
    "decode",
    "count_units",
    "unit_code",
]


class Compiled(namedtuple("Compiled", "record compiled relocated reused", defaults=(0, 0))):
    """A module record just produced, with how many units were compiled or moved."""

    __slots__ = ()

    @property
    def units(self) -> int:
        return self.record.unit_count


def compile_cold(cache: Cache, path: str, data: bytes, digest: str | None = None) -> Compiled:
    """Compile `data` (the bytes of the file at `path`) whole and store the results."""
    record, code = compile_whole(path, data, digest)
    store(cache, record, data, marshal.dumps(code))
    return Compiled(record, count_units(record.segments))


def compile_whole(
    path: str, data: bytes, digest: str | None = None
) -> tuple[ModuleRecord, CodeType]:
    """Compile a file whole and derive its record, storing nothing (for workers)."""
    digest = digest or source_digest(data)
    code = compile_module(data, path)
    lines = split_lines(decode(data, path))
    flags = code.co_flags & FUTURE_MASK
    code_key = Cache.module_key("code", path, digest)
    segments = split_segments(code, lines, 1, len(lines), flags, CodeRef(code_key))
    return ModuleRecord(path, digest, flags, tuple(segments), whole=code_key), code


def rebuild(
    cache: Cache,
    old: ModuleRecord,
    old_data: bytes,
    path: str,
    data: bytes,
    digest: str | None = None,
) -> Compiled:
    """Recompile only what changed between `old_data` and `data` (same file).

    `digest` is `data`'s source digest, if the caller has it already.
    """
    digest = digest or source_digest(data)
    old_text = cache.source_text(old.digest, path, old_data)
    assert old_text is not None  # decoded from old_data at worst
    new_text, edit = old_text.edit(data, path)
    cache.remember_text(digest, new_text)
    new_lines = new_text.lines
    span = _changed_segments(old, old_text.lines, new_lines, edit)
    if span is None:
        return compile_cold(cache, path, data, digest)
    first, last = span
    delta = edit.delta
    end = old.segments[last].end + delta
    after = old.segments[last + 1 :]
    moved = tuple(s.moved(delta) for s in after) if delta else after
    while True:
        start = old.segments[first].start
        outside = {n for i, names in old.importing if i < first or i > last for n in names}
        try:
            code = compile_fragment(new_lines, start, end, path, old.flags, outside)
        except SourceError:
            # Either a real error (the whole-file compile reports it with its true
            # position) or a fragment only valid in context: the whole file decides.
            return compile_cold(cache, path, data, digest)
        # Segments start at definitions; if the edit removed the one this segment
        # started at, its lines belong to the segment before: take that one in too.
        if first == 0 or start in definition_lines(code, new_lines):
            break
        first -= 1
    key = cache.fragment_key(path, start, text_digest(new_lines[start - 1 : end], old.flags))
    fresh = split_segments(code, new_lines, start, end, old.flags, CodeRef(key))
    if outside | {name for s in fresh for name in s.imports} != old.imports():
        # The module's imports changed, and with them the code of statements that
        # call methods on those names, wherever they are.
        return compile_cold(cache, path, data, digest)
    cache.put_code(key, code)
    record = old.replaced(first, last, fresh, moved, digest)
    store(cache, record, data)
    compiled = count_units(fresh)
    relocated = count_units(moved) if delta else 0
    return Compiled(record, compiled, relocated, reused=record.unit_count - compiled - relocated)


CodeIndex = dict[tuple[str, int], CodeType]


def unit_code(
    cache: Cache, segment: Segment, unit: Unit, roots: dict[str, CodeIndex | None] | None = None
) -> CodeType | None:
    """The code object of `unit`, at its current lines, from where `segment` keeps it.

    `roots` memoises the cached code objects loaded, indexed by (qualname, first line),
    for callers asking for many units (a whole module's code is megabytes to unmarshal
    and thousands of code objects to search).
    """
    roots = {} if roots is None else roots
    key = segment.code.key
    if key not in roots:
        root = cache.get_code(key)
        roots[key] = None if root is None else _index_codes(root, {})
    index = roots[key]
    if index is None:
        return None
    found = index.get((unit.qualname, unit.lineno - segment.code.delta))
    return None if found is None else relocate(found, segment.code.delta)


def _index_codes(root: CodeType, out: CodeIndex) -> CodeIndex:
    # Pre-order, first one wins: the same match find_code makes.
    for const in root.co_consts:
        if isinstance(const, CodeType):
            out.setdefault((const.co_qualname, const.co_firstlineno), const)
            _index_codes(const, out)
    return out


def _changed_segments(
    old: ModuleRecord, old_lines: list[str], new_lines: list[str], edit: LineSpan
) -> tuple[int, int] | None:
    """Indexes of the first and last old segment an edit touches, or None for 'all'."""
    if not old.segments:
        return None
    lo, hi = edit.old_start, edit.old_end  # changed old lines; empty when lo > hi
    changed_text = old_lines[lo - 1 : hi] + new_lines[lo - 1 : edit.new_end]
    if any("__future__" in line for line in changed_text):
        return None
    if lo > hi:  # pure insertion after line `hi`: it extends that line's segment
        lo = hi = max(hi, 1)
    first = old.segment_index(lo)
    last = old.segment_index(hi)
    if first is None or last is None:
        return None
    return first, last


def store(cache: Cache, record: ModuleRecord, data: bytes, code: bytes | None = None) -> None:
    """Put a module version in the cache: its source, record and (if given) code."""
    with cache.transact():
        cache.put(cache.source_key(record.digest), data)
        if code is not None and record.whole is not None:
            cache.put(record.whole, code)
        cache.put_record(cache.module_key("record", record.path, record.digest), record)
