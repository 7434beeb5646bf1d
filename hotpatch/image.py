"""The build image: every project module's compiled code, keyed by source path.

thinlink writes an image after each build; the runtime reads it at start-up so the
program's own modules are imported from the build instead of being compiled again.

What we do: one file, ``HPIMAGE1`` + this interpreter's ``importlib.util.MAGIC_NUMBER``
+ a CRC32 of the payload + the payload, ``marshal.dumps((build_id, root, {path:
(digest, code_bytes)}))``. Reading is one ``read`` and one ``marshal.loads``; each
module's ``code_bytes`` (itself ``marshal.dumps`` of the module's code object) is only
unmarshalled when that module is imported.

Why a magic number: marshal's code format changes between Python versions, so an image
written by another interpreter is refused rather than half-loaded. Why a checksum: a
truncated or corrupt image must be a clear error, never a wrong module. The checksum is
not a signature: the image is a local file the user's own build wrote.

Why a content digest and not an mtime: a file whose bytes match the build is the build,
whatever its mtime says (a branch switch and back touches every file and changes
nothing), and the runtime can check it with the standard library alone.
"""

from __future__ import annotations

import binascii
import marshal
import mmap
import os

# On the start-up path (see hotpatch/__init__.py): importlib.util.MAGIC_NUMBER from the
# import system's own module, loaded already, rather than importing importlib.util.
from _frozen_importlib_external import MAGIC_NUMBER

from ._frozen import Frozen
from .fileio import write_atomic

__all__ = [
    "MAGIC_NUMBER",
    "Image",
    "ImageEntry",
    "ImageError",
    "read_image",
    "signature",
    "source_digest",
    "write_image",
]

MAGIC = b"HPIMAGE1"
_CHECKSUM_SIZE = 4  # big-endian CRC32 of the payload
_HEADER_SIZE = len(MAGIC) + len(MAGIC_NUMBER) + _CHECKSUM_SIZE


class ImageError(Exception):
    """A build image cannot be used: missing, corrupt, or from another interpreter.

    Raised by `read_image`. ``str()`` names the file and the problem; the fix is to
    rebuild (``thinlink build``), which writes a fresh image.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class ImageEntry(Frozen):
    """One module of a build: its source digest and ``marshal.dumps`` of its code.

    An empty ``code`` leaves compiling to the importer: the source with ``digest`` is the
    build's module all the same (`thinlink dev` writes an image after every patch, and a
    large module edited a function at a time has no whole-module code to put there).
    """

    __slots__ = ("digest", "code")
    digest: str
    code: bytes

    def __init__(self, digest: str, code: bytes) -> None:
        super().__init__(digest, code)


class Image(Frozen):
    """A build: its id, project root, and entries keyed by ``os.path.abspath`` of the source."""

    __slots__ = ("build_id", "root", "entries")
    build_id: str
    root: str
    entries: dict[str, ImageEntry]

    def __init__(self, build_id: str, root: str, entries: dict[str, ImageEntry]) -> None:
        super().__init__(build_id, root, entries)


def source_digest(data: bytes) -> str:
    """Return the content digest of a source file's bytes (module identity in a build)."""
    return _blake2b()(data, digest_size=16).hexdigest()


def _blake2b():  # noqa: ANN202
    # Imported on the first digest: a start whose files all have the stats the build
    # recorded digests nothing. (_blake2 is what hashlib.blake2b is, without OpenSSL.)
    global _blake2b_fn
    if _blake2b_fn is None:
        try:
            from _blake2 import blake2b
        except ImportError:  # pragma: no cover - an interpreter built without _blake2
            from hashlib import blake2b
        _blake2b_fn = blake2b
    return _blake2b_fn


_blake2b_fn = None


def signature(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """What a stat says about a source file's content: size, mtime, ctime, inode, device.

    A build records it for files it read (`thinlink.launch`) and the importer compares it
    before trusting a file to still hold the bytes the build had, without reading them."""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def write_image(path: str | os.PathLike[str], image: Image) -> None:
    """Write ``image`` to ``path``.

    Operation is atomic: the image is written to a temporary file in the same directory
    and moved into place, so a reader sees the old image or the new one, never a part.
    """
    path = os.fspath(path)
    entries = {
        os.path.abspath(source): (entry.digest, entry.code)
        for source, entry in image.entries.items()
    }
    payload = marshal.dumps((image.build_id, image.root, entries))
    checksum = binascii.crc32(payload).to_bytes(_CHECKSUM_SIZE, "big")
    write_atomic(path, MAGIC + MAGIC_NUMBER + checksum + payload)


def read_image(path: str | os.PathLike[str]) -> Image:
    """Read the image at ``path``; raise `ImageError` if it is missing or unusable.

    The entries' code is not unmarshalled here (see `ImageEntry.code`).
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size < _HEADER_SIZE:
                return _decode(path, f.read())  # too short to be one: said below
            # Mapped, not read: the entries are copied out once, by the unmarshalling.
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise ImageError(path, f"cannot read build image: {exc.strerror or exc}") from exc
    try:
        return _decode(path, data)
    finally:
        data.close()


def _decode(path: str, data: mmap.mmap | bytes) -> Image:
    if data[: len(MAGIC)] != MAGIC:
        raise ImageError(path, "not a build image (bad magic)")
    magic_end = len(MAGIC) + len(MAGIC_NUMBER)
    if data[len(MAGIC) : magic_end] != MAGIC_NUMBER:
        raise ImageError(path, "build image was written by another Python version; rebuild it")
    if len(data) < _HEADER_SIZE:
        raise ImageError(path, "build image is truncated")
    expected = int.from_bytes(data[magic_end:_HEADER_SIZE], "big")
    with memoryview(data) as view:
        payload = view[_HEADER_SIZE:]
        try:
            if binascii.crc32(payload) != expected:
                raise ImageError(path, "build image is corrupt (checksum mismatch)")
            return _entries(path, payload)
        finally:
            payload.release()


def _entries(path: str, payload: memoryview) -> Image:
    try:
        build_id, root, raw = marshal.loads(payload)
        entries = {source: ImageEntry(digest, code) for source, (digest, code) in raw.items()}
        if not all(isinstance(field, str) for field in (build_id, root)):
            raise TypeError("build id and root must be strings")
    except (ValueError, TypeError, EOFError, AttributeError) as exc:
        # A valid checksum over a payload of the wrong shape: written by something else.
        raise ImageError(path, f"build image has an unexpected layout: {exc}") from exc
    return Image(build_id, root, entries)
