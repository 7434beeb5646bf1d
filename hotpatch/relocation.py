"""Code objects moved to other lines: the one rewrite both sides make.

The build side relocates cached code to where a segment moved; the runtime shifts live
functions whose code only moved. Line tables are relative to `co_firstlineno` (3.11+),
so a move rewrites one field per code object, plus, for a class body on 3.13+, the
`__firstlineno__` constant that `inspect.getsource` reads.
"""

from __future__ import annotations

from opcode import opmap
from types import CodeType

__all__ = ["firstlineno_const", "relocate"]

_CO_NEWLOCALS = 0x0002  # inspect.CO_NEWLOCALS, without importing inspect
_LOAD_CONST = opmap["LOAD_CONST"]
_STORE_NAME = opmap["STORE_NAME"]


def relocate(code: CodeType, delta: int) -> CodeType:
    """`code` and everything nested in it, `delta` lines further down: tracebacks and
    debuggers then see the new lines."""
    if delta == 0:
        return code
    consts = tuple(relocate(c, delta) if type(c) is CodeType else c for c in code.co_consts)
    moved = code.replace(co_firstlineno=code.co_firstlineno + delta, co_consts=consts)
    return _move_class_firstlineno(moved)


def _move_class_firstlineno(code: CodeType) -> CodeType:
    # 3.13+ class bodies store their first line as a constant (`__firstlineno__`, read
    # by inspect.getsource); a relocated class must carry its new line there too.
    slot = firstlineno_const(code)
    if slot is None:
        return code
    index, at = slot
    consts = list(code.co_consts)
    uses = sum(
        1
        for i in range(0, len(code.co_code), 2)
        if code.co_code[i] == _LOAD_CONST and code.co_code[i + 1] == index
    )
    if uses == 1:
        consts[index] = code.co_firstlineno
        return code.replace(co_consts=tuple(consts))
    if len(consts) > 255:
        return code  # would need an EXTENDED_ARG: leave the old line, never break code
    raw = bytearray(code.co_code)
    raw[at + 1] = len(consts)
    return code.replace(co_code=bytes(raw), co_consts=(*consts, code.co_firstlineno))


def firstlineno_const(code: CodeType) -> tuple[int, int] | None:
    """(const index, offset of its LOAD_CONST) of a class body's `__firstlineno__`."""
    if code.co_flags & _CO_NEWLOCALS or "__firstlineno__" not in code.co_names:
        return None
    name = code.co_names.index("__firstlineno__")
    raw = code.co_code
    for i in range(2, min(len(raw), 64), 2):
        if raw[i] == _STORE_NAME and raw[i + 1] == name and raw[i - 2] == _LOAD_CONST:
            return raw[i - 1], i - 2
    return None
