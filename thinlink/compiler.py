"""Compiling modules and fragments of modules, and deriving units from the result.

What we do: compile each module whole with `compile()` (exactly what CPython caches in
a pyc), then read the segment boundaries and units off the code object tree: every
top-level `def`/`class` is a code constant whose `co_firstlineno` is its first line,
decorators included. That costs a walk over the constants, not a parse.

What doesn't work: `ast.parse` per module to find statements costs about as much again
as compiling, so a cold build could not stay near compile speed; and splitting on
column-0 lines alone is fooled by multi-line strings and brackets.

Why fragments are safe: a segment starts at a top-level `def`/`class` line, where the
tokenizer is at top level (no open bracket or string). Code objects of a top-level
statement depend on nothing outside it but the `__future__` flags, which we pass in.
So compiling the text of a run of segments on its own, padded to its original line,
gives the same function and class code objects as compiling the whole file.
"""

from __future__ import annotations
import __future__

import bisect
import inspect
import marshal
from collections.abc import Iterator, Sequence
from types import CodeType

import xxhash

from .errors import SourceError
from .units import CodeRef, Segment, Unit

__all__ = [
    "FUTURE_MASK",
    "compile_module",
    "compile_fragment",
    "split_segments",
    "relocate",
    "find_code",
    "text_digest",
    "split_lines",
]

FUTURE_MASK = 0
for _name in __future__.all_feature_names:
    FUTURE_MASK |= getattr(__future__, _name).compiler_flag

_INDENT = (" ", "\t", "\x0c")


def split_lines(text: str) -> list[str]:
    """Split decoded source into lines the way the tokenizer counts them.

    `str.splitlines` also splits on form feeds and Unicode separators, which may sit
    inside string literals; the tokenizer (after universal newlines) only counts `\\n`.
    """
    lines = text.split("\n")
    last = lines.pop()
    out = [line + "\n" for line in lines]
    if last:
        out.append(last)
    return out


def compile_module(data: bytes | str, path: str) -> CodeType:
    """Compile a whole module like the import system does; `SourceError` on failure."""
    try:
        return compile(data, path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise SourceError.from_syntax_error(path, exc) from None
    except ValueError as exc:  # null bytes in the source
        raise SourceError(path, 1, 1, str(exc)) from None


def compile_fragment(lines: Sequence[str], start: int, end: int, path: str, flags: int) -> CodeType:
    """Compile lines `start..end` (1-based, inclusive) of a module on their own.

    The text is padded with empty lines so every position is the one it has in the
    file; `flags` are the module's `__future__` flags.
    """
    text = "\n" * (start - 1) + "".join(lines[start - 1 : end])
    try:
        return compile(text, path, "exec", flags=flags, dont_inherit=True)
    except SyntaxError as exc:
        raise SourceError.from_syntax_error(path, exc) from None
    except ValueError as exc:
        raise SourceError(path, start, 1, str(exc)) from None


def text_digest(lines: Sequence[str], flags: int) -> str:
    """Digest of a segment's text and compiler flags; independent of its position."""
    text = "".join(lines).encode("utf-8", "surrogatepass")
    return xxhash.xxh3_128_hexdigest(flags.to_bytes(4, "little") + text)


def split_segments(
    code: CodeType, lines: Sequence[str], first: int, last: int, flags: int, ref: CodeRef
) -> list[Segment]:
    """Cut lines `first..last` into segments at the top-level definitions in `code`.

    `code` is the module (or fragment) code compiled from exactly those lines; `ref`
    is where that code is cached, recorded in each segment.
    """
    if last < first:
        return []
    tops = [c for c in code.co_consts if isinstance(c, CodeType) and not c.co_name.startswith("<")]
    starts = sorted(
        {
            c.co_firstlineno
            for c in tops
            if first < c.co_firstlineno <= last
            and not lines[c.co_firstlineno - 1].startswith(_INDENT)
        }
    )
    bounds = [first, *starts]
    units: list[list[Unit]] = [[] for _ in bounds]
    digests = _Digests()
    for top in tops:
        slot = bisect.bisect_right(bounds, top.co_firstlineno) - 1
        units[max(slot, 0)].extend(_units_in(top, digests))
    ends = [b - 1 for b in bounds[1:]] + [last]
    return [
        Segment(start, end, text_digest(lines[start - 1 : end], flags), ref, tuple(found))
        for start, end, found in zip(bounds, ends, units, strict=True)
    ]


def _units_in(code: CodeType, digests: _Digests) -> Iterator[Unit]:
    if not code.co_name.startswith("<"):
        is_class = _is_class_body(code)
        kind = "class" if is_class else "function"
        yield Unit(code.co_qualname, kind, code.co_firstlineno, digests.of(code, deep=not is_class))
    for const in code.co_consts:
        if isinstance(const, CodeType):
            yield from _units_in(const, digests)


def _is_class_body(code: CodeType) -> bool:
    # Functions get a fresh, optimised local namespace; a class body runs in the
    # namespace dict that becomes the class, so it lacks CO_NEWLOCALS.
    return not code.co_flags & inspect.CO_NEWLOCALS


class _Digests:
    """Position-independent digests of code objects, memoised for one module."""

    def __init__(self) -> None:
        self._memo: dict[tuple[int, bool], bytes] = {}

    def of(self, code: CodeType, *, deep: bool) -> str:
        return self._digest(code, deep).hex()

    def _digest(self, code: CodeType, deep: bool) -> bytes:
        key = (id(code), deep)
        found = self._memo.get(key)
        if found is not None:
            return found
        consts = []
        for const in code.co_consts:
            if isinstance(const, CodeType):
                # A class's methods are units of their own; its comprehensions and
                # lambdas are part of its body.
                if deep or const.co_name.startswith("<"):
                    consts.append(("code", self._digest(const, True)))
                else:
                    consts.append(("unit", const.co_qualname))
            else:
                consts.append(_canonical(const))
        payload = marshal.dumps(
            (
                code.co_code,
                tuple(consts),
                code.co_names,
                code.co_varnames,
                code.co_freevars,
                code.co_cellvars,
                code.co_argcount,
                code.co_posonlyargcount,
                code.co_kwonlyargcount,
                code.co_flags,
                code.co_exceptiontable,
                code.co_qualname,
            )
        )
        digest = xxhash.xxh3_128_digest(payload)
        self._memo[key] = digest
        return digest


def _canonical(const: object) -> object:
    # frozenset constants (`x in {"a", "b"}`) iterate in hash order, which differs
    # between processes; sort them so a digest is the same in every build.
    if isinstance(const, frozenset):
        return ("frozenset", tuple(sorted((_canonical(c) for c in const), key=repr)))
    if isinstance(const, tuple):
        return tuple(_canonical(c) for c in const)
    return const


def relocate(code: CodeType, delta: int) -> CodeType:
    """Shift a code object and everything nested in it by `delta` lines.

    Line tables are relative to `co_firstlineno` (3.11+), so this rewrites one field
    per code object; tracebacks and debuggers then see the new lines.
    """
    if delta == 0:
        return code
    consts = tuple(relocate(c, delta) if isinstance(c, CodeType) else c for c in code.co_consts)
    return code.replace(co_firstlineno=code.co_firstlineno + delta, co_consts=consts)


def find_code(root: CodeType, qualname: str, lineno: int) -> CodeType | None:
    """The code object nested in `root` with this qualified name and first line."""
    for const in root.co_consts:
        if isinstance(const, CodeType):
            if const.co_qualname == qualname and const.co_firstlineno == lineno:
                return const
            found = find_code(const, qualname, lineno)
            if found is not None:
                return found
    return None
