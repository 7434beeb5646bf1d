"""The patch bundle: what the build side (thinlink) sends and the runtime (hotpatch) applies.

A bundle is plain data (the frozen dataclasses below) and a binary encoding of it:

    magic      8 bytes   b"HPBUNDLE"
    version    2 bytes   FORMAT_VERSION, big-endian
    pymagic    4 bytes   importlib.util.MAGIC_NUMBER of the interpreter that compiled the code
    flags      1 byte    bit 0: signed
    digest    32 bytes   HMAC-SHA256(key, header-without-digest + payload) when signed,
                         else SHA-256(header-without-digest + payload)
    length     8 bytes   payload length, big-endian
    payload              marshal of plain tuples, strings, ints and code objects

Why this shape: a bundle carries code objects, and `marshal.loads` of untrusted bytes is not
safe, so everything is checked (size, interpreter, signature or digest) before the payload is
unmarshalled. Code objects only load on the interpreter that made them, hence `pymagic`. The
digest covers the header too, so flipping the "signed" flag or the length is caught. An
unsigned bundle is protected against corruption, not forgery: processes that hold a session
key refuse unsigned bundles.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import marshal
import os
import struct
from dataclasses import dataclass
from enum import StrEnum
from types import CodeType

from ._errors import BundleError

__all__ = [
    "RerunMode",
    "FORMAT_VERSION",
    "FUNCTION_ATTRS",
    "MAGIC",
    "Bundle",
    "FunctionPatch",
    "ModulePatch",
    "Statement",
    "decode",
    "encode",
    "load",
    "save",
]

MAGIC = b"HPBUNDLE"
FORMAT_VERSION = 5  # 5: per-module source digests (base and target)
_PYMAGIC = importlib.util.MAGIC_NUMBER
_SIGNED = 0x01
# magic, version, pymagic, flags, digest, payload length
_HEADER = struct.Struct(">8sH4sB32sQ")
# The function attributes that go with a function's code, evaluated where the definition
# runs (the module, a class body): what a `FunctionPatch.attrs` dict may set, in the order
# the runtime stores them. One list for both sides, so that none of them is left behind.
FUNCTION_ATTRS = ("__defaults__", "__kwdefaults__", "__annotations__", "__doc__")


@dataclass(frozen=True)
class FunctionPatch:
    """Swap the code of every live function of the module with this identity.

    A live function matches when its `__code__` has `co_qualname == qualname`,
    `co_firstlineno == old_lineno` and the module's file as `co_filename` (the line number
    tells apart a property's getter and setter, which share a qualname).
    """

    qualname: str
    old_lineno: int
    code: CodeType
    # Evaluates (in the module's namespace, a method's in its class's) to a dict of the
    # function attributes (`FUNCTION_ATTRS`) whose source changed, with their new values.
    attrs: CodeType | None = None


class RerunMode(StrEnum):
    """What becomes of what a re-run statement binds (see `Statement`)."""

    MERGE = "merge"
    REBIND = "rebind"
    CLASS = "class"


_MODES = frozenset(m.value for m in RerunMode)


@dataclass(frozen=True)
class Statement:
    """A top-level statement to re-run, compiled in "exec" mode for the module's namespace.

    `defines` names what it binds at top level; `lineno` and `source` are for messages.
    `mode` says what becomes of what it binds: "merge" conforms live definitions in
    place where it can (else rebinds); "rebind" always binds the new objects (a
    decorator changed); "class" sets only `members` of the re-run class on the live
    one and deletes `removed` members, so class data that did not change is kept.
    """

    code: CodeType
    defines: tuple[str, ...]
    lineno: int
    source: str
    mode: RerunMode = RerunMode.MERGE
    members: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModulePatch:
    """The changes to one module: function swaps, statements to re-run in source order,
    top-level names to delete, and the code that only moved: `(first, last, delta)`, old
    lines `first..last` now `delta` lines further down. Every live function of the module
    whose code starts there is shifted (no new code is shipped). Ranges, not a list of
    functions: an edit near the top of a large module moves thousands of them.

    `base_digest` is the source digest (`hotpatch.image.source_digest`) of the version the
    patch starts from (None: the module is new), `digest` that of the version it makes.
    A process checks the first against the source its module runs (`hotpatch.provenance`)."""

    name: str
    path: str
    functions: tuple[FunctionPatch, ...] = ()
    statements: tuple[Statement, ...] = ()
    removed: tuple[str, ...] = ()
    moved: tuple[tuple[int, int, int], ...] = ()
    base_digest: str | None = None
    digest: str | None = None


@dataclass(frozen=True)
class Bundle:
    """A patch from build `base_build` to build `target_build`.

    When `needs_restart` is set the change cannot be patched (the reason says why) and the
    runtime applies nothing. `warnings` come from the build side and end up in the report.
    """

    base_build: str
    target_build: str
    modules: tuple[ModulePatch, ...] = ()
    needs_restart: str | None = None
    warnings: tuple[str, ...] = ()


def encode(bundle: Bundle, key: bytes | None = None) -> bytes:
    """Encode `bundle` to bytes; signed with HMAC-SHA256 when `key` is given."""
    payload = marshal.dumps(_to_plain(bundle))
    flags = _SIGNED if key is not None else 0
    digest = _digest(_header_prefix(flags, len(payload)), payload, key)
    return _HEADER.pack(MAGIC, FORMAT_VERSION, _PYMAGIC, flags, digest, len(payload)) + payload


def decode(data: bytes | bytearray | memoryview, key: bytes | None = None) -> Bundle:
    """Decode bytes made by `encode`. Raises `BundleError` for anything but a sound bundle.

    With `key`, only a bundle signed with that key is accepted; without, only an unsigned
    one. The payload is unmarshalled only after size, interpreter and digest checks pass.
    No copy of the payload is made on the way (a bundle may be large).
    """
    view = memoryview(data)
    if len(view) < _HEADER.size:
        raise BundleError(f"truncated: {len(view)} bytes, a header alone is {_HEADER.size}")
    flags, digest, length = _check_header(bytes(view[: _HEADER.size]))
    payload = view[_HEADER.size :]
    if len(payload) != length:
        raise BundleError(f"payload is {len(payload)} bytes, the header says {length}")
    _check_digest(flags, digest, length, payload, key)
    try:
        plain = marshal.loads(payload)
    except (ValueError, EOFError, TypeError) as exc:
        raise BundleError(f"payload does not unmarshal: {exc}") from exc
    return _from_plain(plain)


def _check_header(header: bytes) -> tuple[int, bytes, int]:
    """(flags, digest, payload length) of a header that is this format's and this
    interpreter's; `BundleError` otherwise."""
    magic, version, pymagic, flags, digest, length = _HEADER.unpack(header)
    if magic != MAGIC:
        raise BundleError("not a hotpatch bundle (wrong magic bytes)")
    if version != FORMAT_VERSION:
        raise BundleError(f"format version {version}, this hotpatch reads {FORMAT_VERSION}")
    if pymagic != _PYMAGIC:
        raise BundleError(
            f"built for another Python (bytecode magic {pymagic.hex()}, this interpreter is "
            f"{_PYMAGIC.hex()}); rebuild it with this interpreter"
        )
    if flags & ~_SIGNED:
        raise BundleError(f"unknown flags {flags:#04x}")
    return flags, digest, length


def _check_digest(
    flags: int, digest: bytes, length: int, payload: memoryview, key: bytes | None
) -> None:
    signed = bool(flags & _SIGNED)
    if signed and key is None:
        raise BundleError("bundle is signed but no key was given to verify it")
    if not signed and key is not None:
        raise BundleError("bundle is not signed and a key is required: refusing it")
    expected = _digest(_header_prefix(flags, length), payload, key)
    if not hmac.compare_digest(expected, digest):
        what = (
            "signature does not match (wrong key or tampered)"
            if signed
            else "digest does not match (corrupt)"
        )
        raise BundleError(what)


def load(
    source: bytes | bytearray | memoryview | str | os.PathLike[str], key: bytes | None = None
) -> Bundle:
    """Decode a bundle given as bytes, or read it from a file path first (the header is
    checked before the payload is read: a file of the wrong size is refused unread)."""
    if isinstance(source, bytes | bytearray | memoryview):
        return decode(source, key)
    try:
        with open(source, "rb") as f:
            header = f.read(_HEADER.size)
            if len(header) < _HEADER.size:
                raise BundleError(
                    f"truncated: {len(header)} bytes, a header alone is {_HEADER.size}"
                )
            length = _check_header(header)[2]
            size = os.fstat(f.fileno()).st_size
            if size != _HEADER.size + length:
                raise BundleError(
                    f"the file is {size} bytes, the header says {_HEADER.size + length}"
                )
            data = bytearray(size)
            data[: _HEADER.size] = header
            f.readinto(memoryview(data)[_HEADER.size :])
    except OSError as exc:
        raise BundleError(f"cannot read {os.fspath(source)!r}: {exc.strerror or exc}") from exc
    return decode(data, key)


def save(bundle: Bundle, path: str | os.PathLike[str], key: bytes | None = None) -> None:
    """Write `encode(bundle, key)` to `path` atomically (temp file, then `os.replace`), so a
    reader never sees half a bundle."""
    import tempfile  # only the build side writes bundles

    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".bundle-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(encode(bundle, key))
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _header_prefix(flags: int, length: int) -> bytes:
    """The header minus the digest: what the digest covers besides the payload."""
    return MAGIC + struct.pack(">H4sBQ", FORMAT_VERSION, _PYMAGIC, flags, length)


def _digest(prefix: bytes, payload: bytes | memoryview, key: bytes | None) -> bytes:
    state = hashlib.sha256(prefix) if key is None else hmac.new(key, prefix, hashlib.sha256)
    state.update(payload)
    return state.digest()


def _to_plain(bundle: Bundle) -> tuple:
    modules = tuple(
        (
            m.name,
            m.path,
            tuple((f.qualname, f.old_lineno, f.code, f.attrs) for f in m.functions),
            tuple(
                (s.code, tuple(s.defines), s.lineno, s.source, str(s.mode), s.members, s.removed)
                for s in m.statements
            ),
            tuple(m.removed),
            tuple(m.moved),
            m.base_digest,
            m.digest,
        )
        for m in bundle.modules
    )
    return (
        bundle.base_build,
        bundle.target_build,
        modules,
        bundle.needs_restart,
        tuple(bundle.warnings),
    )


def _from_plain(plain: object) -> Bundle:
    """Rebuild the dataclasses, checking every field's type: a sound digest proves who made
    the bundle, not that its maker followed the format."""
    base, target, modules, needs_restart, warnings = _tuple(plain, 5, "bundle")
    _check(isinstance(base, str) and isinstance(target, str), "build ids must be strings")
    _check(needs_restart is None or isinstance(needs_restart, str), "bad needs_restart")
    return Bundle(
        base_build=base,
        target_build=target,
        modules=tuple(_module(m) for m in _tuple(modules, None, "modules")),
        needs_restart=needs_restart,
        warnings=_strings(warnings, "warnings"),
    )


def _module(plain: object) -> ModulePatch:
    name, path, functions, statements, removed, moved, base_digest, digest = _tuple(
        plain, 8, "module"
    )
    _check(
        all(d is None or isinstance(d, str) for d in (base_digest, digest)),
        f"source digests of {name}",
    )
    moves = _tuple(moved, None, "moved")
    _check(
        all(isinstance(m, tuple) and len(m) == 3 and all(type(x) is int for x in m) for m in moves),
        f"moved lines in {name}",
    )
    _check(isinstance(name, str) and isinstance(path, str), "module name and path")
    funcs = []
    for f in _tuple(functions, None, "functions"):
        qualname, lineno, code, attrs = _tuple(f, 4, "function")
        _check(
            isinstance(qualname, str)
            and type(lineno) is int
            and isinstance(code, CodeType)
            and (attrs is None or isinstance(attrs, CodeType)),
            f"function patch in {name}",
        )
        funcs.append(FunctionPatch(qualname, lineno, code, attrs))
    stmts = []
    for s in _tuple(statements, None, "statements"):
        code, defines, lineno, source, mode, members, removed_members = _tuple(s, 7, "statement")
        _check(
            isinstance(code, CodeType)
            and type(lineno) is int
            and isinstance(source, str)
            and mode in _MODES,
            f"statement in {name}",
        )
        stmts.append(
            Statement(
                code,
                _strings(defines, "defines"),
                lineno,
                source,
                RerunMode(mode),
                _strings(members, "members"),
                _strings(removed_members, "removed"),
            )
        )
    return ModulePatch(
        name,
        path,
        tuple(funcs),
        tuple(stmts),
        _strings(removed, "removed"),
        moves,
        base_digest,
        digest,
    )


def _tuple(value: object, size: int | None, what: str) -> tuple:
    _check(isinstance(value, tuple) and (size is None or len(value) == size), what)
    return value  # type: ignore[return-value]


def _strings(value: object, what: str) -> tuple[str, ...]:
    items = _tuple(value, None, what)
    _check(all(isinstance(s, str) for s in items), what)
    return items


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise BundleError(f"malformed payload ({what})")
