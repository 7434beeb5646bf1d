"""Comparing two versions of a module: what a running process must do to move on.

The rules of docs/edit-semantics.md, decided here on the build side so the runtime only
carries them out:

- a function whose decorators are unchanged is patched in place: its code (and the
  code of the functions nested in it) is swapped on the live objects, and its
  defaults, annotations and docstring are re-evaluated when their text changed;
- a definition whose decorators changed, and any new definition, is re-run and bound;
- a class keeps its identity: changed method bodies are code swaps, added or changed
  members are re-created in a scratch class and set on the live one, removed ones are
  deleted; Enum members added after the last one are added to the live Enum; a change
  of bases, metaclass, class decorators, dataclass fields, other Enum members or
  `__slots__` needs a restart;
- an assignment or import that changed is re-run, and after it, in source order,
  every unchanged statement that reads what it binds at definition time (of a class,
  the members that read it are set on the live class; bases reading it are checked by
  the runtime; a class decorator or a dataclass field reading it needs a restart);
- any other module-level statement (a call, a loop, a `with`) is never re-run: a
  change to one needs a restart; so does code under `if __name__ == "__main__":` of
  the program's main module.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from hotpatch.bundle import RerunMode
from thinlink.build.analysis import Member, MemberKind, Statement, StatementKind, class_reads
from thinlink.build.units import ModuleRecord, Unit, UnitKind

__all__ = ["CodeChange", "Rerun", "ModulePlan", "plan_module"]

_RESTART_BASES = ("Enum", "IntEnum", "StrEnum", "Flag", "IntFlag", "NamedTuple", "TypedDict")
_APPENDABLE = ("Enum", "IntEnum", "StrEnum")  # members added after the last: in place


@dataclass(frozen=True, slots=True)
class CodeChange:
    """Swap the code of the live functions of `qualname` (first line `old_lineno`).

    `attrs` is the source of a dict expression of the function attributes to set
    (`__defaults__`, `__kwdefaults__`, `__annotations__`, `__doc__`), at `attrs_line`,
    or "" when only the code changed.
    """

    unit: Unit  # the new unit
    old_lineno: int
    attrs: str = ""
    attrs_line: int = 0


@dataclass(frozen=True, slots=True)
class Rerun:
    """Execute `statement` again. `mode` says what to do with what it binds:

    - MERGE: bind new names; a name bound to a function before keeps its object,
      which takes the new one's code and attributes;
    - REBIND: bind the new objects (decorators changed: references held elsewhere
      keep the old object, which the report warns about);
    - CLASS: execute into a scratch class and set `members` on the live class,
      deleting `removed` members.
    """

    statement: Statement
    mode: RerunMode
    members: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


@dataclass
class ModulePlan:
    """Everything one module needs, in the order it must happen."""

    name: str
    path: str
    code: list[CodeChange] = field(default_factory=list)
    reruns: list[Rerun] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    needs_restart: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    flags: int = 0  # the new version's `__future__` compiler flags

    @property
    def empty(self) -> bool:
        return not (self.code or self.reruns or self.removed or self.needs_restart)


def plan_module(
    name: str,
    path: str,
    old: tuple[ModuleRecord, list[Statement]],
    new: tuple[ModuleRecord, list[Statement]],
    *,
    is_main: bool = False,
    all_new: Callable[[], list[Statement]] | None = None,
) -> ModulePlan:
    """What a process running the old version of a module must do to run the new one.

    The statement lists may be just those of the segments that differ (the rest being
    unchanged); `all_new()` then gives every statement of the new version, asked for
    only when something was re-bound or removed (to find what depends on it).
    """
    (old_record, old_statements), (new_record, new_statements) = old, new
    every_new = all_new or (lambda: new_statements)
    plan = ModulePlan(name, path, flags=new_record.flags)
    old_units = _units_by_statement(old_record, old_statements)
    new_units = _units_by_statement(new_record, new_statements)
    pairs, added, removed = _match(old_statements, new_statements)
    rerun_at: dict[int, Rerun] = {}
    changed_names: set[str] = set()

    for before, after in pairs:
        if before.text == after.text:
            _relocate(plan, old_units[id(before)], new_units[id(after)], before, after)
            continue
        where = f"{path}:{after.lineno}"
        if after.kind is StatementKind.FUNCTION:
            if before.decorators != after.decorators:
                rerun_at[after.lineno] = Rerun(after, RerunMode.REBIND)
                changed_names.update(after.defines)
                plan.warnings.append(
                    f"{where}: decorators of {after.name}() changed: it was re-created, "
                    "references to the old object keep the old one"
                )
            else:
                _patch_function(plan, before, after, old_units[id(before)], new_units[id(after)])
        elif after.kind is StatementKind.CLASS:
            _patch_class(plan, rerun_at, before, after, old_units[id(before)], new_units[id(after)])
        elif after.kind in (StatementKind.ASSIGN, StatementKind.IMPORT):
            rerun_at[after.lineno] = Rerun(after, RerunMode.MERGE)
            changed_names.update(after.defines)
        elif after.kind is StatementKind.MAIN:
            if is_main:
                plan.needs_restart.append(
                    f"{where}: code under `if __name__ == '__main__':` changed"
                )
        else:  # OTHER statements are matched by text, so a changed one is never a pair
            plan.needs_restart.append(f"{where}: module-level statement changed")

    for after in added:
        where = f"{path}:{after.lineno}"
        if after.kind.binds:
            rerun_at[after.lineno] = Rerun(after, RerunMode.MERGE)
            changed_names.update(after.defines)
        elif after.kind is not StatementKind.MAIN or is_main:
            plan.needs_restart.append(f"{where}: new module-level statement: {_first(after.text)}")

    still_defined = {n for s in every_new() for n in s.defines} if removed else set()
    for before in removed:
        if before.kind.binds:
            gone = [n for n in before.defines if n not in still_defined]
            plan.removed.extend(gone)
            changed_names.update(gone)
        elif before.kind is not StatementKind.MAIN or is_main:
            plan.needs_restart.append(
                f"{path}:{before.lineno}: module-level statement removed: {_first(before.text)}"
            )

    if changed_names:
        _rerun_dependents(plan, every_new(), rerun_at, changed_names)
    plan.reruns = [rerun_at[line] for line in sorted(rerun_at)]
    return plan


def _first(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) < 60 else line[:57] + "..."


def _key(statement: Statement) -> tuple:
    if statement.kind in (StatementKind.FUNCTION, StatementKind.CLASS):
        return (statement.kind, statement.name)
    if statement.kind in (StatementKind.ASSIGN, StatementKind.IMPORT):
        return ("bind", statement.defines)
    return (statement.kind, statement.text)  # calls and blocks match only unchanged


def _match(
    old: list[Statement], new: list[Statement]
) -> tuple[list[tuple[Statement, Statement]], list[Statement], list[Statement]]:
    """Pairs of old and new statements with the same key (in order), added, removed."""
    waiting: dict[tuple, list[Statement]] = defaultdict(list)
    for statement in old:
        waiting[_key(statement)].append(statement)
    pairs, added = [], []
    for statement in new:
        queue = waiting.get(_key(statement))
        if queue:
            pairs.append((queue.pop(0), statement))
        else:
            added.append(statement)
    removed = [s for queue in waiting.values() for s in queue]
    return pairs, added, sorted(removed, key=lambda s: s.lineno)


def _units_by_statement(record: ModuleRecord, statements: list[Statement]) -> dict[int, list[Unit]]:
    """The units (functions, classes, methods) defined inside each statement."""
    out: dict[int, list[Unit]] = {}
    for statement in statements:
        # A top-level statement lies within one segment: look there, not at every unit.
        segment = record.segment_at(statement.lineno)
        inside = (
            []
            if segment is None
            else [u for u in segment.units if statement.lineno <= u.lineno <= statement.end_lineno]
        )
        out[id(statement)] = sorted(inside, key=lambda u: u.lineno)
    return out


def _pair_units(old: Iterable[Unit], new: Iterable[Unit]) -> list[tuple[Unit | None, Unit]]:
    """Pair units by qualified name, in order (a property's getter and setter share one)."""
    waiting: dict[str, list[Unit]] = defaultdict(list)
    for unit in old:
        waiting[unit.qualname].append(unit)
    return [(waiting[u.qualname].pop(0) if waiting[u.qualname] else None, u) for u in new]


def _relocate(
    plan: ModulePlan, old: list[Unit], new: list[Unit], before: Statement, after: Statement
) -> None:
    # An unchanged statement that moved: its functions get their code at the new
    # lines, so tracebacks and debuggers stay right. Same digest: not a change.
    if before.lineno == after.lineno:
        return
    for previous, unit in _pair_units(old, new):
        if previous is not None and unit.kind == UnitKind.FUNCTION:
            plan.code.append(CodeChange(unit, previous.lineno))


def _patch_function(
    plan: ModulePlan, before: Statement, after: Statement, old: list[Unit], new: list[Unit]
) -> None:
    for previous, unit in _pair_units(old, new):
        if unit.kind != UnitKind.FUNCTION:
            continue
        if previous is None:
            continue  # a new nested function: created by the new code of its parent
        attrs, line = "", 0
        if unit.qualname == after.name:
            attrs, line = _attrs_source(before.text, after.text, after.lineno, plan.flags)
        plan.code.append(CodeChange(unit, previous.lineno, attrs, line))


def _patch_class(
    plan: ModulePlan,
    rerun_at: dict[int, Rerun],
    before: Statement,
    after: Statement,
    old: list[Unit],
    new: list[Unit],
) -> None:
    where = f"{plan.path}:{after.lineno}"
    name = after.name
    reason = None
    if before.header != after.header:
        reason = f"base classes or metaclass of {name} changed"
    elif before.decorators != after.decorators:
        reason = f"decorators of class {name} changed"
    elif _is_dataclass(after) and _fields(before.members) != _fields(after.members):
        reason = f"fields of dataclass {name} changed"
    elif _restart_base(after) and not _members_appended(before, after):
        reason = f"members of {name} changed"
    elif _slots(before.members) != _slots(after.members):
        reason = f"__slots__ of {name} changed"
    if reason is not None:
        plan.needs_restart.append(f"{where}: {reason}")
        return

    old_members = {m.name: m for m in before.members if m.name}
    new_members = {m.name: m for m in after.members if m.name}
    changed: list[str] = []
    for member_name, member in new_members.items():
        previous = old_members.get(member_name)
        if previous is None or previous.text == member.text:
            continue
        if member.kind is MemberKind.FUNCTION and _same_decorators(previous.text, member.text):
            continue  # a code swap below
        changed.append(member_name)
    added = [n for n in new_members if n not in old_members]
    gone = [n for n in old_members if n not in new_members]
    seen: dict[str, int] = defaultdict(int)
    for previous, unit in _pair_units(old, new):
        nth = seen[unit.qualname]
        seen[unit.qualname] += 1
        if previous is None or unit.kind != UnitKind.FUNCTION:
            continue
        # A method's defaults are evaluated by the class body, not by its own code: a
        # default-only edit leaves the method's digest unchanged, so compare the source.
        attrs, line = _method_attrs(before, after, unit.qualname, nth, plan.flags)
        if unit.digest == previous.digest and unit.lineno == previous.lineno and not attrs:
            continue
        top = unit.qualname.split(".")[1] if "." in unit.qualname else ""
        if top in changed or top in added:
            continue  # re-created with its member
        plan.code.append(CodeChange(unit, previous.lineno, attrs, line))
    if changed or added or gone:
        rerun_at[after.lineno] = Rerun(after, RerunMode.CLASS, tuple(changed + added), tuple(gone))


def _method_attrs(
    before: Statement, after: Statement, qualname: str, nth: int, flags: int
) -> tuple[str, int]:
    """The attribute patch (`_attrs_source`) of the `nth` method `qualname` (a method of the
    class, or of a class nested in it; the `nth` because a property's getter and setter share
    one name), or ("", 0) for a function nested in a method (its parent's code makes it)."""
    path = qualname.split(".")[1:]
    if not path or "<locals>" in path:
        return "", 0
    olds, news = _members_at(before.members, path), _members_at(after.members, path)
    if nth >= len(olds) or nth >= len(news) or olds[nth].text == news[nth].text:
        return "", 0
    owner = qualname.split(".")[-2]  # the class defining it: private names are mangled with it
    return _attrs_source(olds[nth].text, news[nth].text, news[nth].lineno, flags, owner)


def _members_at(members: tuple[Member, ...], path: list[str]) -> list[Member]:
    """The function members at `path` (names from the class down), in source order."""
    *classes, name = path
    for part in classes:
        nested = [m for m in members if m.kind is MemberKind.CLASS and m.name == part]
        if not nested:
            return []
        members = nested[-1].members
    return [m for m in members if m.kind is MemberKind.FUNCTION and m.name == name]


def _rerun_class(
    plan: ModulePlan,
    rerun_at: dict[int, Rerun],
    statement: Statement,
    changed: set[str],
    rerun: Rerun | None,
) -> None:
    """A class read re-bound names when it was defined: re-run it and set on the live class
    the members that read them (`limit = LIMIT`, `def m(self, n=LIMIT)`); other members
    keep their live values. Bases reading them are re-evaluated too: the runtime then
    refuses the patch (needs restart) if they came out different. A class decorator
    reading them would have to run again on the live class: that needs a restart."""
    try:
        decorators, header, body = class_reads(statement.text)
    except SyntaxError:  # not expected: the statement compiled
        decorators, header, body = set(statement.reads), set(), []
    where = f"{plan.path}:{statement.lineno}"
    if changed & decorators:
        names = ", ".join(sorted(changed & decorators))
        plan.needs_restart.append(
            f"{where}: the decorators of class {statement.name} read {names}, which changed"
        )
        return
    reading = [i for i, (_, reads) in enumerate(body) if changed & reads]
    if _is_dataclass(statement) and any(
        i < len(statement.members) and statement.members[i] in _fields_of(statement.members)
        for i in reading
    ):
        # The decorator baked field defaults into __init__: as when a default is edited.
        plan.needs_restart.append(
            f"{where}: fields of dataclass {statement.name} read "
            f"{', '.join(sorted(changed.intersection(statement.reads)))}, which changed"
        )
        return
    members = [n for i in reading for n in body[i][0]]
    if not members and not changed & header:
        return
    if rerun is not None:
        members = [*rerun.members, *(n for n in members if n not in rerun.members)]
        rerun_at[statement.lineno] = Rerun(
            statement, RerunMode.CLASS, tuple(members), rerun.removed
        )
    else:
        rerun_at[statement.lineno] = Rerun(
            statement, RerunMode.CLASS, tuple(dict.fromkeys(members))
        )


def _same_decorators(old_text: str, new_text: str) -> bool:
    def decorators(text: str) -> list[str]:
        try:
            node = ast.parse(text).body[0]
        except (SyntaxError, IndexError):
            return []
        return [ast.unparse(d) for d in getattr(node, "decorator_list", [])]

    return decorators(old_text) == decorators(new_text)


def _fields(members: tuple[Member, ...]) -> list[str]:
    return [m.text for m in _fields_of(members)]


def _fields_of(members: tuple[Member, ...]) -> list[Member]:
    return [m for m in members if m.kind is MemberKind.OTHER and ":" in m.text.split("=")[0]]


def _is_dataclass(statement: Statement) -> bool:
    return any(d.split("(")[0].endswith("dataclass") for d in statement.decorators)


def _restart_base(statement: Statement) -> str | None:
    """The base of the class `statement` whose members are fixed when it is made, if any."""
    for base in statement.header.split(","):
        name = base.strip().split(".")[-1]
        if name in _RESTART_BASES:
            return name
    return None


def _members_appended(before: Statement, after: Statement) -> bool:
    """The class's data members are the same, or only new ones follow the last of them:
    what the runtime adds to a live Enum in place (not a Flag, whose masks cover all its
    members, nor a NamedTuple's or TypedDict's fields)."""
    old, new = _attributes(before.members), _attributes(after.members)
    if old == new:
        return True
    return _restart_base(after) in _APPENDABLE and new[: len(old)] == old


def _attributes(members: tuple[Member, ...]) -> list[str]:
    return [m.text for m in members if m.kind is MemberKind.OTHER]


def _slots(members: tuple[Member, ...]) -> list[str]:
    return [m.text for m in members if m.name == "__slots__"]


def _attrs_source(
    old_text: str, new_text: str, lineno: int, flags: int, owner: str | None = None
) -> tuple[str, int]:
    """A dict expression of the function attributes whose source changed, or "".

    `flags` are the module's compiler flags: under `from __future__ import annotations`
    the annotations are strings, as the compiler would have made them. `owner` is the
    class a method is defined in (its private parameter names are mangled with it).
    """
    try:
        old = ast.parse(old_text).body[0]
        new = ast.parse(new_text).body[0]
    except (SyntaxError, IndexError):
        return "", 0
    assert isinstance(new, ast.FunctionDef | ast.AsyncFunctionDef)
    assert isinstance(old, ast.FunctionDef | ast.AsyncFunctionDef)
    parts = []
    if _dump(old.args.defaults) != _dump(new.args.defaults):
        items = ", ".join(ast.unparse(d) for d in new.args.defaults)
        parts.append(f"'__defaults__': ({items}{',' if items else ''}) or None")
    if _dump(old.args.kw_defaults) != _dump(new.args.kw_defaults):
        items = ", ".join(
            f"{a.arg!r}: {ast.unparse(d)}"
            for a, d in zip(new.args.kwonlyargs, new.args.kw_defaults, strict=True)
            if d is not None
        )
        parts.append(f"'__kwdefaults__': {{{items}}} or None")
    old_annotations, new_annotations = _annotations(old), _annotations(new)
    if [(n, ast.dump(a)) for n, a in old_annotations] != [
        (n, ast.dump(a)) for n, a in new_annotations
    ]:
        as_strings = bool(flags & _FUTURE_ANNOTATIONS)
        items = ", ".join(
            f"{_mangle(name, owner)!r}: " + (repr(ast.unparse(a)) if as_strings else ast.unparse(a))
            for name, a in new_annotations
        )
        parts.append(f"'__annotations__': {{{items}}}")
    if ast.get_docstring(old, clean=False) != ast.get_docstring(new, clean=False):
        parts.append(f"'__doc__': {ast.get_docstring(new, clean=False)!r}")
    if not parts:
        return "", 0
    return "{" + ", ".join(parts) + "}", lineno


_FUTURE_ANNOTATIONS = 0x1000000  # __future__.annotations.compiler_flag


def _annotations(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[tuple[str, ast.expr]]:
    """(name, annotation) in the order CPython fills `__annotations__`: the positional
    parameters after the positional-only ones, then *args, keyword-only, **kwargs, return."""
    args = node.args
    every = [*args.args, *args.posonlyargs, args.vararg, *args.kwonlyargs, args.kwarg]
    found = [(a.arg, a.annotation) for a in every if a is not None and a.annotation is not None]
    return found + ([("return", node.returns)] if node.returns is not None else [])


def _mangle(name: str, owner: str | None) -> str:
    # As the compiler does for `__name` in a class body (not `__dunder__`).
    if owner is None or not name.startswith("__") or name.endswith("__") or "." in name:
        return name
    stripped = owner.lstrip("_")
    return f"_{stripped}{name}" if stripped else name


def _dump(nodes: list) -> list[str]:
    return [ast.dump(n) if n is not None else "" for n in nodes]


def _rerun_dependents(
    plan: ModulePlan, statements: list[Statement], rerun_at: dict[int, Rerun], changed: set[str]
) -> None:
    """Re-run, in source order, unchanged statements reading a re-bound name."""
    if not changed:
        return
    for statement in statements:
        rerun = rerun_at.get(statement.lineno)
        if rerun is not None and rerun.mode is RerunMode.CLASS:
            # The live class stays (its changed members are set on it): what read the
            # class keeps reading the same object. Members reading a changed name join in.
            if changed.intersection(statement.reads):
                _rerun_class(plan, rerun_at, statement, changed, rerun)
            continue
        if rerun is not None:
            changed.update(statement.defines)
            continue
        if not changed.intersection(statement.reads):
            continue
        names = ", ".join(sorted(changed.intersection(statement.reads)))
        where = f"{plan.path}:{statement.lineno}"
        if statement.kind in (StatementKind.ASSIGN, StatementKind.IMPORT):
            rerun_at[statement.lineno] = Rerun(statement, RerunMode.MERGE)
            changed.update(statement.defines)
        elif statement.kind is StatementKind.FUNCTION:
            mode = RerunMode.REBIND if statement.decorators else RerunMode.MERGE
            rerun_at[statement.lineno] = Rerun(statement, mode)
            # Re-running it brings its new code too; a swap as well would evaluate its
            # new defaults before what they read is bound (a function added above it).
            plan.code = [
                c
                for c in plan.code
                if not statement.lineno <= c.unit.lineno <= statement.end_lineno
            ]
            if statement.decorators:
                changed.update(statement.defines)
                plan.warnings.append(
                    f"{where}: {statement.name}() re-created because it reads {names} at "
                    "definition time; references to the old object keep the old one"
                )
        elif statement.kind is StatementKind.CLASS:
            _rerun_class(plan, rerun_at, statement, changed, None)
        else:
            plan.warnings.append(f"{where}: this statement used the old value of {names}")
