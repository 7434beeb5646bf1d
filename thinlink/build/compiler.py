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
import marshal
import opcode
from collections.abc import Iterable, Sequence
from types import CodeType

import xxhash

from hotpatch.relocation import firstlineno_const, relocate
from thinlink.errors import SourceError

from .units import CodeRef, Segment, Unit, UnitKind

__all__ = [
    "FUTURE_MASK",
    "compile_module",
    "compile_fragment",
    "split_segments",
    "relocate",
    "text_digest",
    "import_bindings",
    "definition_lines",
]

FUTURE_MASK = 0
for _name in __future__.all_feature_names:
    FUTURE_MASK |= getattr(__future__, _name).compiler_flag

_INDENT = (" ", "\t", "\x0c")
_CO_NEWLOCALS = 0x0002  # inspect.CO_NEWLOCALS, without importing inspect


def compile_module(data: bytes | str, path: str) -> CodeType:
    """Compile a whole module like the import system does; `SourceError` on failure.

    Anything `compile()` raises is the file's failure, not the build's: a syntax error,
    null bytes (ValueError), an expression nested too deep (RecursionError), too large
    to compile (MemoryError, OverflowError)."""
    try:
        return compile(data, path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise SourceError.from_syntax_error(path, exc) from None
    except Exception as exc:  # noqa: BLE001 - see above
        raise SourceError(path, 1, 1, _compile_failure(exc)) from None


def _compile_failure(exc: Exception) -> str:
    if isinstance(exc, ValueError):
        return str(exc)  # "source code string cannot contain null bytes"
    return f"cannot compile: {type(exc).__name__}: {exc}"


def compile_fragment(
    lines: Sequence[str], start: int, end: int, path: str, flags: int, imports: Iterable[str] = ()
) -> CodeType:
    """Compile lines `start..end` (1-based, inclusive) of a module on their own.

    The text is padded with empty lines so every position is the one it has in the
    file; `flags` are the module's `__future__` flags, and `imports` the names the rest
    of the module binds by import (they change code generation, see import_bindings),
    declared in a trailing `if 0:` block: seen by the symbol table, never executed.
    """
    text = "\n" * (start - 1) + "".join(lines[start - 1 : end])
    names = sorted(imports)
    if names:
        text += ("" if text.endswith("\n") else "\n") + f"if 0:\n    import {', '.join(names)}\n"
    try:
        return compile(text, path, "exec", flags=flags, dont_inherit=True)
    except SyntaxError as exc:
        raise SourceError.from_syntax_error(path, exc) from None
    except Exception as exc:  # noqa: BLE001 - as in compile_module
        raise SourceError(path, start, 1, _compile_failure(exc)) from None


def text_digest(lines: Sequence[str], flags: int) -> str:
    """Digest of a segment's text and compiler flags; independent of its position."""
    text = "".join(lines).encode("utf-8", "surrogatepass")
    return xxhash.xxh3_128_hexdigest(flags.to_bytes(4, "little") + text)


def _definitions(code: CodeType) -> list[CodeType]:
    return [c for c in code.co_consts if isinstance(c, CodeType) and not c.co_name.startswith("<")]


def definition_lines(code: CodeType, lines: Sequence[str]) -> list[int]:
    """Sorted first lines of the top-level `def`s and `class`es in module `code`."""
    return _definition_lines(_definitions(code), lines)


def _definition_lines(tops: list[CodeType], lines: Sequence[str]) -> list[int]:
    return sorted(
        {
            c.co_firstlineno
            for c in tops
            if c.co_firstlineno <= len(lines)
            and not lines[c.co_firstlineno - 1].startswith(_INDENT)
        }
    )


def split_segments(
    code: CodeType, lines: Sequence[str], first: int, last: int, flags: int, ref: CodeRef
) -> list[Segment]:
    """Cut lines `first..last` into segments at the top-level definitions in `code`.

    `code` is the module (or fragment) code compiled from exactly those lines; `ref`
    is where that code is cached, recorded in each segment.
    """
    if last < first:
        return []
    tops = _definitions(code)
    starts = [line for line in _definition_lines(tops, lines) if first < line <= last]
    bounds = [first, *starts]
    units: list[list[Unit]] = [[] for _ in bounds]
    imports: list[list[str]] = [[] for _ in bounds]
    digests = _Digests()
    for top in tops:
        slot = bisect.bisect_right(bounds, top.co_firstlineno) - 1
        _units_in(top, digests, units[max(slot, 0)])
    for line, name in import_bindings(code):
        if first <= line <= last:
            imports[bisect.bisect_right(bounds, line) - 1].append(name)
    ends = [b - 1 for b in bounds[1:]] + [last]
    return [
        Segment(
            start,
            end,
            text_digest(lines[start - 1 : end], flags),
            ref,
            tuple(found),
            tuple(sorted(set(names))),
        )
        for start, end, found, names in zip(bounds, ends, units, imports, strict=True)
    ]


def _units_in(code: CodeType, digests: _Digests, out: list[Unit]) -> None:
    """Append the units of `code` and of the code nested in it to `out`, in pre-order."""
    if not code.co_name.startswith("<"):
        is_class = _is_class_body(code)
        kind = str(UnitKind.CLASS if is_class else UnitKind.FUNCTION)  # a plain str: marshalled
        out.append(
            Unit(code.co_qualname, kind, code.co_firstlineno, digests.of(code, deep=not is_class))
        )
    for const in code.co_consts:
        if type(const) is CodeType:
            _units_in(const, digests, out)


def _is_class_body(code: CodeType) -> bool:
    # Functions get a fresh, optimised local namespace; a class body runs in the
    # namespace dict that becomes the class, so it lacks CO_NEWLOCALS.
    return not code.co_flags & _CO_NEWLOCALS


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
        position = firstlineno_const(code)
        if position is None and _NESTED.isdisjoint(map(type, code.co_consts)):
            consts = code.co_consts  # plain values only: what _consts would copy
        else:
            consts = self._consts(code, -1 if position is None else position[0], deep)
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
            ),
            # Version 2 predates back-references, so the bytes depend on values only,
            # not on which equal constants the compiler happened to share.
            2,
        )
        digest = xxhash.xxh3_128_digest(payload)
        self._memo[key] = digest
        return digest

    def _consts(self, code: CodeType, position: int, deep: bool) -> list[object]:
        """The constants of `code` as its digest covers them (`position`: the index of
        a class body's first line, or -1)."""
        consts: list[object] = []
        for i, const in enumerate(code.co_consts):
            kind = type(const)
            if i == position:
                consts.append("<firstlineno>")  # a class's own line is not behaviour
            elif kind is CodeType:
                # A class's methods are units of their own; its comprehensions and
                # lambdas are part of its body.
                if deep or const.co_name.startswith("<"):
                    consts.append(("code", self._digest(const, True)))
                else:
                    consts.append(("unit", const.co_qualname))
            elif kind in _NESTED:
                consts.append(_canonical(const))
            else:
                consts.append(const)  # what _canonical returns as it is, without a call
        return consts


# Constants a digest does not take as they are: code (digested or named) and the
# containers _canonical rewrites.
_NESTED = frozenset({CodeType, tuple, frozenset})


def _canonical(const: object) -> object:
    # frozenset constants (`x in {"a", "b"}`) iterate in hash order, which differs
    # between processes; sort them so a digest is the same in every build.
    if isinstance(const, frozenset):
        return ("frozenset", tuple(sorted((_canonical(c) for c in const), key=repr)))
    if isinstance(const, tuple):
        if _CONTAINERS.isdisjoint(map(type, const)):
            return const  # equal to the copy below, and so marshalled the same
        return tuple(_canonical(c) for c in const)
    return const


_CONTAINERS = frozenset({tuple, frozenset})


_OP = opcode.opmap
_IMPORT_NAME = _OP["IMPORT_NAME"]
_STORES = (_OP["STORE_NAME"], _OP["STORE_GLOBAL"])
_SKIP = (0, _OP["EXTENDED_ARG"], _OP["IMPORT_FROM"])  # 0 is CACHE


def import_bindings(code: CodeType) -> list[tuple[int, str]]:
    """(line, name) of every name a module-level import binds in `code`.

    The compiler emits different code for `name.method()` when `name` is bound by an
    import anywhere at module level (CPython's `is_import_originated`), so fragments
    must be compiled knowing the module's imports. Scans the module-level bytecode:
    each IMPORT_NAME is followed by the STORE_NAMEs it feeds.
    """
    raw = code.co_code
    found: list[tuple[int, str]] = []
    at = _find_op(raw, _IMPORT_NAME, 0)
    while at >= 0:
        i, ext = at + 2, 0
        while i < len(raw):
            op, arg = raw[i], raw[i + 1] | ext
            ext = (arg << 8) if op == _OP["EXTENDED_ARG"] else 0
            if op in _STORES:
                found.append((at, code.co_names[arg]))
            elif op not in _SKIP:
                break
            i += 2
        at = _find_op(raw, _IMPORT_NAME, i)
    if not found:
        return []
    lines = _lines_at(code, {offset for offset, _ in found})
    return [(lines.get(offset, code.co_firstlineno), name) for offset, name in found]


def _find_op(raw: bytes, op: int, start: int) -> int:
    # Every code unit is two bytes (3.11+): an even offset holds an opcode.
    at = raw.find(bytes((op,)), start)
    while at >= 0 and at % 2:
        at = raw.find(bytes((op,)), at + 1)
    return at


def _lines_at(code: CodeType, offsets: set[int]) -> dict[int, int]:
    """The line of each bytecode offset in `offsets`.

    One pass over the line table, whose ranges come in order: it stops past the last
    offset (imports are mostly at the top of a module).
    """
    wanted = sorted(offsets)
    lines = {}
    i = 0
    for start, end, line in code.co_lines():
        while i < len(wanted) and wanted[i] < start:
            i += 1  # in no range with a line
        if i == len(wanted):
            break
        j = i
        while j < len(wanted) and wanted[j] < end:
            if line is not None:
                lines[wanted[j]] = line
            j += 1
    return lines
