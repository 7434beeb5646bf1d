"""Making a patch bundle from two builds.

For every module whose source changed between the builds: load both versions' records
and sources from the cache, analyse their statements (cached per segment), plan what
a running process must do (`diff.plan_module`), and compile what the plan needs: the
new code of each function to swap (taken from the build, relocated where it only
moved), the expressions of changed defaults, and each statement to re-run, compiled
alone at its own lines. The bundle format is the runtime's (`hotpatch.bundle`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from types import CodeType

from hotpatch.bundle import Bundle, FunctionPatch, ModulePatch, Statement
from hotpatch.image import source_digest
from thinlink.build.analysis import analyze_segment
from thinlink.build.cache import Cache
from thinlink.build.compiler import compile_fragment, relocate
from thinlink.build.manifest import Manifest, ModuleEntry
from thinlink.build.rebuild import compile_cold, unit_code
from thinlink.build.units import ModuleRecord, Segment
from thinlink.errors import SourceError, ThinlinkError
from thinlink.launch import read_source

from .diff import CodeChange, ModulePlan, plan_module

__all__ = ["PatchResult", "make_patch"]


@dataclass
class PatchResult:
    """A bundle and the plans it was made from (for a readable summary)."""

    bundle: Bundle
    plans: list[ModulePlan] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        return {
            "base_build": self.bundle.base_build,
            "target_build": self.bundle.target_build,
            "modules": [
                {
                    "module": p.name,
                    "path": p.path,
                    "patched": [c.unit.qualname for c in p.code],
                    "rerun": [_describe(r.statement) for r in p.reruns],
                    "removed": p.removed,
                    "needs_restart": p.needs_restart,
                    "warnings": p.warnings,
                }
                for p in self.plans
                if not p.empty or p.warnings
            ],
            "needs_restart": self.bundle.needs_restart,
            "warnings": list(self.bundle.warnings),
        }


def _describe(statement) -> str:  # noqa: ANN001
    return f"line {statement.lineno}: {statement.kind} {', '.join(statement.defines)}".rstrip()


class PatchError(ThinlinkError):
    """A patch could not be made (a build's records are gone from the cache)."""


def make_patch(
    cache: Cache, old: Manifest, new: Manifest, main_path: str | None = None
) -> PatchResult:
    """The bundle that moves a process from build `old` to build `new`.

    `main_path` is the program's main script, whose `if __name__ == "__main__":`
    block ran: a change to it needs a restart.
    """
    before = old.by_path()
    plans: list[ModulePlan] = []
    modules: list[ModulePatch] = []
    for entry in new.modules:
        previous = before.get(entry.path)
        if previous is not None and previous.digest == entry.digest:
            continue
        plan, patch = _module_patch(cache, previous, entry, entry.path == main_path)
        plans.append(plan)
        if patch is not None:
            modules.append(patch)
    reasons = [r for p in plans for r in p.needs_restart]
    warnings = tuple(w for p in plans for w in p.warnings)
    needs_restart = None
    if reasons:
        needs_restart = reasons[0] + (f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else "")
    bundle = Bundle(old.build_id, new.build_id, tuple(modules), needs_restart, warnings)
    return PatchResult(bundle, plans)


def _module_patch(
    cache: Cache, previous: ModuleEntry | None, entry: ModuleEntry, is_main: bool
) -> tuple[ModulePlan, ModulePatch | None]:
    new_record, new_lines = _load(cache, entry)
    if previous is None or previous.record is None:
        old_record, old_lines = ModuleRecord(entry.path, "", new_record.flags, ()), []
    else:
        try:
            old_record, old_lines = _load(cache, previous)
        except PatchError as exc:
            # What the process runs is unknown here: only a restart brings it to `entry`.
            plan = ModulePlan(entry.name, entry.path)
            plan.needs_restart.append(str(exc))
            return plan, None
    # Segments with the same text in both versions hold the same statements: only the
    # others are analysed and compared; unchanged ones that moved are relocated.
    unchanged, changed, removed = _segment_changes(old_record, new_record)

    def statements(record: ModuleRecord, segments: list[Segment], lines: list[str]) -> list:
        return [st for seg in segments for st in analyze_segment(cache, seg, lines, record.flags)]

    plan = plan_module(
        entry.name,
        entry.path,
        (old_record, statements(old_record, removed, old_lines)),
        (new_record, statements(new_record, changed, new_lines)),
        is_main=is_main,
        all_new=lambda: statements(new_record, list(new_record.segments), new_lines),
    )
    # Unchanged segments that moved: the live code in their lines is shifted in place.
    moved = _moved_ranges(unchanged)
    if plan.needs_restart:
        return plan, None
    # Sent even when nothing in it needs doing (a comment edited): the process moves its
    # record of the module's source on to `digest`, which the next patch starts from.
    imports = new_record.imports()
    roots: dict = {}  # each cached code object loaded and indexed once
    functions = tuple(
        _function_patch(cache, new_record, change, entry.path, roots) for change in plan.code
    )
    statements_ = tuple(
        Statement(
            code=compile_fragment(
                new_lines,
                r.statement.lineno,
                r.statement.end_lineno,
                entry.path,
                new_record.flags,
                imports,
            ),
            defines=r.statement.defines,
            lineno=r.statement.lineno,
            source=r.statement.text,
            mode=r.mode,
            members=r.members,
            removed=r.removed,
        )
        for r in plan.reruns
    )
    return plan, ModulePatch(
        entry.name,
        entry.path,
        functions,
        statements_,
        tuple(plan.removed),
        moved,
        base_digest=previous.digest if previous is not None else None,
        digest=entry.digest,
    )


def _segment_changes(
    old: ModuleRecord, new: ModuleRecord
) -> tuple[list[tuple[Segment, Segment]], list[Segment], list[Segment]]:
    """(unchanged pairs of old and new segments, changed new ones, removed old ones)."""
    # An edit leaves a run of segments at each end as they were: pair those in order,
    # and match by text only in between (an edit of a large module touches one or two).
    olds, news = old.segments, new.segments
    head = 0
    limit = min(len(olds), len(news))
    while head < limit and olds[head].digest == news[head].digest:
        head += 1
    tail = 0
    limit -= head
    while tail < limit and olds[-1 - tail].digest == news[-1 - tail].digest:
        tail += 1
    unchanged = list(zip(olds[:head], news[:head], strict=True))
    waiting: dict[str, list[Segment]] = defaultdict(list)
    for segment in olds[head : len(olds) - tail]:
        waiting[segment.digest].append(segment)
    changed = []
    for segment in news[head : len(news) - tail]:
        queue = waiting.get(segment.digest)
        if queue:
            unchanged.append((queue.pop(0), segment))
        else:
            changed.append(segment)
    if tail:
        unchanged += zip(olds[len(olds) - tail :], news[len(news) - tail :], strict=True)
    removed = sorted((s for q in waiting.values() for s in q), key=lambda s: s.start)
    return unchanged, changed, removed


def _moved_ranges(unchanged: list[tuple[Segment, Segment]]) -> tuple[tuple[int, int, int], ...]:
    """(first, last, delta): runs of old lines whose segments moved by `delta` lines."""
    ranges: list[list[int]] = []
    for before, after in sorted(unchanged, key=lambda pair: pair[0].start):
        delta = after.start - before.start
        if not delta:
            continue
        if ranges and ranges[-1][2] == delta and ranges[-1][1] + 1 == before.start:
            ranges[-1][1] = before.end  # adjacent, same shift: one range
        else:
            ranges.append([before.start, before.end, delta])
    return tuple((first, last, delta) for first, last, delta in ranges)


def _function_patch(
    cache: Cache, record: ModuleRecord, change: CodeChange, path: str, roots: dict
) -> FunctionPatch:
    segment = record.segment_at(change.unit.lineno)
    code = None if segment is None else unit_code(cache, segment, change.unit, roots)
    if code is None:
        raise PatchError(f"{path}: compiled code of {change.unit.qualname} is missing; rebuild")
    attrs: CodeType | None = None
    if change.attrs:
        attrs = relocate(
            compile(change.attrs, path, "eval", flags=record.flags, dont_inherit=True),
            change.attrs_line - 1,
        )
    return FunctionPatch(change.unit.qualname, change.old_lineno, code, attrs)


def _load(cache: Cache, entry: ModuleEntry) -> tuple[ModuleRecord, list[str]]:
    """The record and source lines of one module version. A record gone from the cache
    (evicted, or damaged and dropped) is made again from its source: the cached copy, or
    the file if it still holds that version. `PatchError` when neither is left."""
    record = cache.get_record(entry.record or "")
    source = cache.get(cache.source_key(entry.digest or ""))
    if source is None:
        source = _file_if_unchanged(entry)
    if record is None and source is not None:
        try:
            made = compile_cold(cache, entry.path, source, entry.digest)
        except SourceError as exc:
            raise PatchError(f"{entry.path}: its record cannot be made again: {exc}") from None
        record = made.record
    if record is None or source is None:
        raise PatchError(
            f"{entry.path}: the source of the version processes run ({entry.digest}) is gone "
            "from the cache (damaged or evicted) and from the file"
        )
    text = cache.source_text(entry.digest or "", entry.path, source)
    return record, text.lines


def _file_if_unchanged(entry: ModuleEntry) -> bytes | None:
    try:
        data = read_source(entry.path)
    except OSError:
        return None
    return data if source_digest(data) == entry.digest else None
