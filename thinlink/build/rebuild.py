"""Compiling one module: whole (cold) or just the segments an edit touched.

`compile_cold` compiles a file whole and derives its record. `rebuild` takes the
previous record and text of the same file and finds the changed lines (common prefix
and suffix: one span from the first edit to the last). Inside the span, old segments
whose text is still there are found again and moved; only the gaps between them are
compiled (one gap for a single edit, several for edits far apart). The segments below
the span shift by the number of lines added or removed: relocated, not recompiled.
Anything it cannot localise safely (no previous version, `__future__` imports edited,
the module's imports changed, a gap that does not compile on its own) falls back to
`compile_cold`, so the result is always what compiling the whole file gives.
"""

from __future__ import annotations

import bisect
import marshal
from collections import namedtuple
from types import CodeType

from hotpatch.image import source_digest
from thinlink.errors import SourceError

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
    unmatched: set[int] = set()  # segments of the span to compile again all the same
    while True:
        pieces = _pieces(old, first, last, old_text.lines, new_lines, end, unmatched)
        same = {piece.index for piece in pieces if type(piece) is _Same}
        outside = {
            name
            for i, names in old.importing
            if i < first or i > last or i in same
            for name in names
        }
        try:
            # Every gap is compiled knowing all the module's imports: a gap may use what
            # another one imports. If the imports changed, the check below recompiles all.
            compiled_gaps, stray = _compile_gaps(
                pieces, first, new_lines, path, old.flags, old.imports()
            )
        except SourceError:
            # Either a real error (the whole-file compile reports it with its true
            # position) or a fragment only valid in context: the whole file decides.
            return compile_cold(cache, path, data, digest)
        if stray is None:
            break
        # Segments start at definitions: lines that do not belong to the segment before
        # them. Take that one in too (from the span, or the one before the span).
        if stray == 0:
            first -= 1
        else:
            unmatched.add(pieces[stray - 1].index)
    fresh: list[Segment] = []
    fragments: list[tuple[str, CodeType]] = []
    compiled = relocated = 0
    for piece in pieces:
        if type(piece) is _Same:  # found again, the same text: moved at most
            segment = old.segments[piece.index]
            shift = piece.new_start - segment.start
            fresh.append(segment.moved(shift) if shift else segment)
            relocated += count_units((segment,)) if shift else 0
            continue
        code = compiled_gaps[piece]
        text = new_lines[piece.start - 1 : piece.end]
        key = cache.fragment_key(path, piece.start, text_digest(text, old.flags))
        made = split_segments(code, new_lines, piece.start, piece.end, old.flags, CodeRef(key))
        fragments.append((key, code))
        compiled += count_units(made)
        fresh += made
    if outside | {name for s in fresh for name in s.imports} != old.imports():
        # The module's imports changed, and with them the code of statements that
        # call methods on those names, wherever they are.
        return compile_cold(cache, path, data, digest)
    record = old.replaced(first, last, fresh, moved, digest)
    store(cache, record, data, fragments=fragments)
    relocated += count_units(moved) if delta else 0
    return Compiled(record, compiled, relocated, reused=record.unit_count - compiled - relocated)


class _Same(namedtuple("_Same", "index new_start")):
    """Old segment `index`, found unchanged in the new text, starting at `new_start`."""

    __slots__ = ()


class _Gap(namedtuple("_Gap", "start end")):
    """New lines `start..end` (inclusive), compiled as one fragment."""

    __slots__ = ()


def _pieces(
    old: ModuleRecord,
    first: int,
    last: int,
    old_lines: list[str],
    new_lines: list[str],
    end: int,
    unmatched: set[int],
) -> list[_Same | _Gap]:
    """The old segments `first..last` in new lines `old.segments[first].start..end`: those
    found again with the same text, in order, and the gaps between them to compile.

    An edit's span runs from its first changed line to its last: with several edits far
    apart, most of the segments in between are still there, moved at most.
    """
    start = old.segments[first].start
    candidates = [i for i in range(first, last + 1) if i not in unmatched]
    heads = {old_lines[old.segments[i].start - 1] for i in candidates}
    at: dict[str, list[int]] = {}  # head line -> the new lines it is on, ascending
    for line in range(start, end + 1):
        text = new_lines[line - 1]
        if text in heads:
            at.setdefault(text, []).append(line)
    pieces: list[_Same | _Gap] = []
    cursor = start
    for i in candidates:
        segment = old.segments[i]
        text = old_lines[segment.start - 1 : segment.end]
        lines = at.get(text[0], ())
        for line in lines[bisect.bisect_left(lines, cursor) :]:
            if line + len(text) - 1 > end:
                break
            if new_lines[line - 1 : line - 1 + len(text)] == text:
                if line > cursor:
                    pieces.append(_Gap(cursor, line - 1))
                pieces.append(_Same(i, line))
                cursor = line + len(text)
                break
    if cursor <= end:
        pieces.append(_Gap(cursor, end))
    return pieces


def _compile_gaps(
    pieces: list[_Same | _Gap],
    first: int,
    new_lines: list[str],
    path: str,
    flags: int,
    imports: set[str],
) -> tuple[dict[_Gap, CodeType], int | None]:
    """Each gap's code, and the index of the first gap that does not start at a
    definition (where a segment must start), if any; `SourceError` if one fails."""
    codes: dict[_Gap, CodeType] = {}
    for k, piece in enumerate(pieces):
        if type(piece) is _Same:
            continue
        code = compile_fragment(new_lines, piece.start, piece.end, path, flags, imports)
        at_module_start = k == 0 and first == 0
        if not at_module_start and piece.start not in definition_lines(code, new_lines):
            return codes, k
        codes[piece] = code
    return codes, None


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
    # Pre-order, first one wins: a unit's code is the first with its name and line.
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


def store(
    cache: Cache,
    record: ModuleRecord,
    data: bytes,
    code: bytes | None = None,
    fragments: list[tuple[str, CodeType]] = (),  # type: ignore[assignment]
) -> None:
    """Put a module version in the cache, in one transaction: its source, record, and
    its whole code or the fragments just compiled (if given)."""
    with cache.transact():
        for key, fragment in fragments:
            cache.put_code(key, fragment)
        cache.put(cache.source_key(record.digest), data)
        if code is not None and record.whole is not None:
            cache.put(record.whole, code)
        cache.put_record(cache.module_key("record", record.path, record.digest), record)
