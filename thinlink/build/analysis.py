"""What each top-level statement defines and reads: the dependency facts of a module.

Patches need to know, per statement: the names it binds, the names it reads while it
executes (decorators, defaults, base classes, module-level expressions: what must be
re-run when one of them changes), and the globals its function bodies read when
called. This takes a parse, which a cold build does not pay for: statements are
analysed per segment, on demand (when a patch is made), and cached by the segment's
text digest, so an edit re-analyses only the segments it touched.
"""

from __future__ import annotations

import ast
import marshal
import symtable
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from .cache import Cache
from .units import ModuleRecord, Segment

__all__ = [
    "Member",
    "MemberKind",
    "Statement",
    "StatementKind",
    "analyze_module",
    "analyze_segment",
    "class_reads",
]

_FORMAT = 2  # 2: kinds checked on load (an unknown one is a miss)


class StatementKind(StrEnum):
    """What a top-level statement is, for the rules of `thinlink.patches.diff`."""

    FUNCTION = "function"
    CLASS = "class"
    ASSIGN = "assign"  # binds names, and does nothing else worth re-running for
    IMPORT = "import"
    MAIN = "main"  # `if __name__ == "__main__":`
    OTHER = "other"  # calls, loops, `if`/`try` blocks: effects beyond binding names

    @property
    def binds(self) -> bool:
        """A kind whose whole effect is the names it binds (re-run when it changes)."""
        return self in _BINDING


_BINDING = frozenset(
    {StatementKind.FUNCTION, StatementKind.CLASS, StatementKind.ASSIGN, StatementKind.IMPORT}
)


class MemberKind(StrEnum):
    """What a statement in a class body is."""

    FUNCTION = "function"
    CLASS = "class"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Member:
    """A statement inside a class body (a method, a nested class, an attribute)."""

    name: str  # the name it binds in the class namespace ("" when none)
    kind: MemberKind
    text: str  # its source, dedented, decorators included
    lineno: int
    members: tuple[Member, ...] = ()  # of a nested class

    def moved(self, delta: int) -> Member:
        return replace(
            self, lineno=self.lineno + delta, members=tuple(m.moved(delta) for m in self.members)
        )


@dataclass(frozen=True, slots=True)
class Statement:
    """One top-level statement of a module.

    `kind` says what it is (`StatementKind`). `header` is the part of a definition evaluated once
    at definition time besides its decorators: a class's bases and keywords, a
    function's defaults and annotations. `text` is the statement's source.
    """

    lineno: int
    end_lineno: int
    kind: str
    defines: tuple[str, ...]
    reads: tuple[str, ...]
    body_globals: tuple[str, ...]
    decorators: tuple[str, ...]
    header: str
    text: str
    members: tuple[Member, ...] = ()

    @property
    def name(self) -> str:
        return self.defines[0] if self.kind in _DEFINITIONS and self.defines else ""

    def moved(self, delta: int) -> Statement:
        if not delta:
            return self
        return Statement(
            self.lineno + delta,
            self.end_lineno + delta,
            self.kind,
            self.defines,
            self.reads,
            self.body_globals,
            self.decorators,
            self.header,
            self.text,
            tuple(m.moved(delta) for m in self.members),
        )


def analyze_module(cache: Cache, record: ModuleRecord, source: str) -> list[Statement]:
    """Every top-level statement of the module, in order (cached per segment)."""
    from .text import split_lines

    lines = split_lines(source)
    out: list[Statement] = []
    for segment in record.segments:
        out.extend(analyze_segment(cache, segment, lines, record.flags))
    return out


def analyze_segment(
    cache: Cache | None, segment: Segment, lines: Sequence[str], flags: int
) -> list[Statement]:
    """The statements of one segment, from the cache when its text was seen before."""
    key = f"ana:{_FORMAT}:{segment.digest}"
    relative = _memo.get(key)
    if relative is None:
        payload = cache.get(key) if cache is not None else None
        if payload is not None:
            relative = [_load(s) for s in marshal.loads(payload)]
        else:
            text = "".join(lines[segment.start - 1 : segment.end])
            relative = list(_analyze(text, flags))
            if cache is not None:
                cache.put(key, marshal.dumps([_dump(s) for s in relative]))
        if len(_memo) > _MEMO_SIZE:
            _memo.clear()
        _memo[key] = relative
    return [s.moved(segment.start - 1) for s in relative]


# Analyses by segment digest, for a long-lived process (`thinlink dev`): content keyed,
# so never stale; cleared when it grows past this many segments.
_memo: dict[str, list[Statement]] = {}
_MEMO_SIZE = 50_000


def _analyze(text: str, flags: int) -> Iterator[Statement]:
    tree = compile(text, "<segment>", "exec", flags=flags | ast.PyCF_ONLY_AST, dont_inherit=True)
    lines = text.splitlines(keepends=True)
    lazy_annotations = bool(flags & 0x1000000)  # from __future__ import annotations
    for node in tree.body:
        source = _source(lines, node)
        yield Statement(
            lineno=_first_line(node),
            end_lineno=node.end_lineno or node.lineno,
            kind=_kind(node),
            defines=tuple(_defined(node)),
            reads=tuple(sorted(_reads(node, lazy_annotations))),
            body_globals=tuple(sorted(_body_globals(source, node))),
            decorators=tuple(ast.unparse(d) for d in getattr(node, "decorator_list", ())),
            header=_header(node),
            text=source,
            members=tuple(_members(node, lines)) if isinstance(node, ast.ClassDef) else (),
        )


def _first_line(node: ast.stmt) -> int:
    decorators = getattr(node, "decorator_list", None)
    return min([node.lineno, *(d.lineno for d in decorators)]) if decorators else node.lineno


def _source(lines: list[str], node: ast.stmt) -> str:
    return "".join(lines[_first_line(node) - 1 : node.end_lineno])


def _kind(node: ast.stmt) -> StatementKind:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return StatementKind.FUNCTION
    if isinstance(node, ast.ClassDef):
        return StatementKind.CLASS
    if isinstance(node, ast.Import | ast.ImportFrom):
        return StatementKind.IMPORT
    if isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign) and not _calls(node):
        return StatementKind.ASSIGN
    if isinstance(node, ast.If) and _is_main_guard(node.test):
        return StatementKind.MAIN
    if isinstance(node, ast.Assign | ast.AnnAssign) and _is_pure_call_assignment(node):
        return StatementKind.ASSIGN
    return StatementKind.OTHER


def _calls(node: ast.AST) -> bool:
    return any(
        isinstance(n, ast.Call | ast.Await | ast.Yield | ast.YieldFrom) for n in ast.walk(node)
    )


def _is_pure_call_assignment(node: ast.Assign | ast.AnnAssign) -> bool:
    # `X = compute(...)` binds a name; re-running it is what a developer expects
    # when they edit it (`TypeVar`, `namedtuple`, `re.compile`, `logging.getLogger`).
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    return all(isinstance(t, ast.Name | ast.Tuple) for t in targets)


def _is_main_guard(test: ast.expr) -> bool:
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and len(test.comparators) == 1
        and isinstance(test.comparators[0], ast.Constant)
        and test.comparators[0].value == "__main__"
    )


def _defined(node: ast.stmt) -> list[str]:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return [node.name]
    if isinstance(node, ast.Import | ast.ImportFrom):
        return [(a.asname or a.name.partition(".")[0]) for a in node.names if a.name != "*"]
    names: list[str] = []
    for sub in _walk_outside_bodies(node):
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store | ast.Del):
            names.append(sub.id)
        elif isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.append(sub.name)
        elif isinstance(sub, ast.Import | ast.ImportFrom):
            names.extend(a.asname or a.name.partition(".")[0] for a in sub.names if a.name != "*")
    return list(dict.fromkeys(names))


def _walk_outside_bodies(node: ast.AST) -> Iterator[ast.AST]:
    """Nodes executed when the statement runs: not function bodies, lambdas' bodies."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        if isinstance(current, ast.FunctionDef | ast.AsyncFunctionDef):
            stack.extend(current.decorator_list)
            stack.extend(d for d in (*current.args.defaults, *current.args.kw_defaults) if d)
            stack.extend(_annotations(current))
        elif isinstance(current, ast.Lambda):
            stack.extend(d for d in (*current.args.defaults, *current.args.kw_defaults) if d)
        else:
            stack.extend(ast.iter_child_nodes(current))


def _annotations(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.expr]:
    args = fn.args
    every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
    found = [a.annotation for a in every if a is not None and a.annotation is not None]
    return found + ([fn.returns] if fn.returns else [])


def _reads(node: ast.stmt, lazy_annotations: bool) -> set[str]:
    reads = set()
    for sub in _walk_outside_bodies(node):
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):
            reads.add(sub.id)
    if lazy_annotations and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        lazy = {n.id for a in _annotations(node) for n in ast.walk(a) if isinstance(n, ast.Name)}
        eager = {
            n.id
            for part in (*node.decorator_list, *node.args.defaults, *node.args.kw_defaults)
            if part is not None
            for n in ast.walk(part)
            if isinstance(n, ast.Name)
        }
        reads -= lazy - eager
    return reads


def class_reads(text: str) -> tuple[set[str], set[str], list[tuple[tuple[str, ...], set[str]]]]:
    """What the class statement `text` reads while it runs, by part: its decorators, its
    bases and keywords, and each statement of its body (with the names it binds in the
    class namespace). Parsed on demand: only a patch re-running a class asks."""
    node = ast.parse(text).body[0]
    assert isinstance(node, ast.ClassDef)

    def loads(parts: Sequence[ast.AST]) -> set[str]:
        return {
            n.id
            for part in parts
            for n in _walk_outside_bodies(part)
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
        }

    body = [(tuple(_defined(child)), _reads(child, False)) for child in node.body]
    return loads(node.decorator_list), loads([*node.bases, *node.keywords]), body


def _header(node: ast.stmt) -> str:
    if isinstance(node, ast.ClassDef):
        return ", ".join(
            [*(ast.unparse(b) for b in node.bases), *(ast.unparse(k) for k in node.keywords)]
        )
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        args = node.args
        parts = [ast.unparse(d) for d in args.defaults]
        parts += ["" if d is None else ast.unparse(d) for d in args.kw_defaults]
        parts += [ast.unparse(a) for a in _annotations(node)]
        return "; ".join(parts)
    return ""


def _body_globals(source: str, node: ast.stmt) -> set[str]:
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return set()
    import textwrap

    try:
        table = symtable.symtable(textwrap.dedent(source), "<statement>", "exec")
    except SyntaxError:
        return set()
    found: set[str] = set()
    stack = list(table.get_children())
    while stack:
        scope = stack.pop()
        if scope.get_type() == "function":  # a str, or a StrEnum member on 3.13
            found.update(
                s.get_name() for s in scope.get_symbols() if s.is_global() and s.is_referenced()
            )
        stack.extend(scope.get_children())
    return found


def _members(node: ast.ClassDef, lines: list[str]) -> Iterator[Member]:
    import textwrap

    for child in node.body:
        text = textwrap.dedent(_source(lines, child))
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            yield Member(child.name, MemberKind.FUNCTION, text, _first_line(child))
        elif isinstance(child, ast.ClassDef):
            yield Member(
                child.name,
                MemberKind.CLASS,
                text,
                _first_line(child),
                tuple(_members(child, lines)),
            )
        else:
            names = _defined(child)
            yield Member(
                names[0] if len(names) == 1 else ",".join(names),
                MemberKind.OTHER,
                text,
                _first_line(child),
            )


def _dump(s: Statement) -> tuple:
    return (
        s.lineno,
        s.end_lineno,
        str(s.kind),  # marshal takes plain strings only
        s.defines,
        s.reads,
        s.body_globals,
        s.decorators,
        s.header,
        s.text,
        tuple(_dump_member(m) for m in s.members),
    )


def _dump_member(m: Member) -> tuple:
    return (m.name, str(m.kind), m.text, m.lineno, tuple(_dump_member(c) for c in m.members))


def _load(t: tuple) -> Statement:
    lineno, end_lineno, kind, *rest, members = t
    return Statement(
        lineno,
        end_lineno,
        StatementKind(kind),
        *rest,
        members=tuple(_load_member(m) for m in members),
    )


def _load_member(t: tuple) -> Member:
    name, kind, text, lineno, members = t
    return Member(name, MemberKind(kind), text, lineno, tuple(_load_member(m) for m in members))


_DEFINITIONS = frozenset({StatementKind.FUNCTION, StatementKind.CLASS})
