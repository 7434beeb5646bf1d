"""The build image: every project module's compiled code, keyed by source path.

thinlink writes an image after each build; the runtime reads it at start-up so the
program's own modules are imported from the build instead of being compiled again.

What we do: one file, ``HPIMAGE2`` + this interpreter's ``importlib.util.MAGIC_NUMBER``
+ the CRC32 and the length of an index + the index + the modules' code, one after the
other. The index is ``marshal.dumps((build_id, root, {path: (digest, offset, size,
crc32)}))``: where each module's code (``marshal.dumps`` of its code object) lies after
the index, and its own checksum. Reading maps the file and loads the index only; a
module's code is checked against its checksum and unmarshalled when that module is
imported, straight from the mapping. A start pays for the modules it imports, and
copies nothing it does not run.

Why a magic number: marshal's code format changes between Python versions, so an image
written by another interpreter is refused rather than half-loaded. Why checksums: a
truncated or corrupt image must be a clear error, never a wrong module; a module whose
code fails its checksum is compiled from its source instead, and the image is removed
so that the next `thinlink run` writes it again. The checksum is not a signature: the
image is a local file the user's own build wrote. Images are replaced by renaming a new
file over them (`fileio.write_atomic`), never rewritten in place, which a process
mapping one relies on.

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
    "FORMAT",
    "MAGIC_NUMBER",
    "Image",
    "ImageEntry",
    "ImageError",
    "read_image",
    "signature",
    "source_digest",
    "write_image",
]

MAGIC = b"HPIMAGE2"
FORMAT = 2  # in the images' file names: an older thinlink's images are never read
_FIELD_SIZE = 4  # the index's CRC32 and its length: big-endian, unsigned
_HEADER_SIZE = len(MAGIC) + len(MAGIC_NUMBER) + 2 * _FIELD_SIZE


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

    Read from an image, ``code`` is a view of the mapped file, checked against its
    checksum the first time it is asked for: `ImageError` if it fails (and the image file
    is removed, to be written again by the next build).
    """

    __slots__ = ("digest", "_code", "_checksum", "_origin")
    digest: str

    def __init__(
        self,
        digest: str,
        code: bytes | memoryview,
        *,
        checksum: int | None = None,
        origin: _Origin | None = None,
    ) -> None:
        object.__setattr__(self, "digest", digest)
        object.__setattr__(self, "_code", code)
        object.__setattr__(self, "_checksum", checksum)  # None: checked (or made here)
        object.__setattr__(self, "_origin", origin)

    @property
    def code(self) -> bytes | memoryview:
        """``marshal.dumps`` of the module's code (empty: compile the source)."""
        checksum = self._checksum
        if checksum is not None:
            if binascii.crc32(self._code) != checksum:
                origin = self._origin
                path = origin.discard() if origin is not None else "build image"
                raise ImageError(path, "build image is corrupt (a module's checksum mismatch)")
            object.__setattr__(self, "_checksum", None)
        return self._code

    @property
    def has_code(self) -> bool:
        """Whether the image holds code for the module (not checked yet)."""
        return len(self._code) > 0

    def _values(self) -> tuple:
        return self.digest, bytes(self.code)

    def __repr__(self) -> str:
        return f"ImageEntry(digest={self.digest!r}, code={bytes(self.code)!r})"


class _Origin:
    """The image file entries were read from, as it was when it was read."""

    __slots__ = ("path", "identity")

    def __init__(self, path: str, identity: tuple[int, int]) -> None:
        self.path = path
        self.identity = identity

    def discard(self) -> str:
        """Remove the file if it is still the one read (a damaged image is made again by
        the next build); return its path."""
        try:
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self.identity:
                os.unlink(self.path)
        except OSError:
            pass  # gone already, or not ours to remove: the next build decides
        return self.path


class Image(Frozen):
    """A build: its id, project root, and entries keyed by ``os.path.abspath`` of the source."""

    __slots__ = ("build_id", "root", "entries")
    build_id: str
    root: str
    entries: dict[str, ImageEntry]

    def __init__(self, build_id: str, root: str, entries: dict[str, ImageEntry]) -> None:
        super().__init__(build_id, root, entries)

    def verify(self) -> None:
        """Check every module's code against its checksum (`read_image` checks only the
        index); raise `ImageError` at the first that fails."""
        for entry in self.entries.values():
            entry.code  # noqa: B018 - checked on access


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
    index: dict[str, tuple[str, int, int, int]] = {}
    codes: list[bytes | memoryview] = []
    offset = 0
    for source, entry in image.entries.items():
        code = entry.code
        index[os.path.abspath(source)] = (entry.digest, offset, len(code), binascii.crc32(code))
        codes.append(code)
        offset += len(code)
    encoded = marshal.dumps((image.build_id, image.root, index))
    fields = binascii.crc32(encoded).to_bytes(_FIELD_SIZE, "big")
    fields += len(encoded).to_bytes(_FIELD_SIZE, "big")
    write_atomic(path, b"".join([MAGIC, MAGIC_NUMBER, fields, encoded, *codes]))


def read_image(path: str | os.PathLike[str]) -> Image:
    """Read the image at ``path``; raise `ImageError` if it is missing or unusable.

    Only the index is read and checked here; each module's code is checked when it is
    used (see `ImageEntry.code`, and `Image.verify` to check them all now).
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_size < _HEADER_SIZE:
                data: mmap.mmap | bytes = f.read()  # too short to be one: said below
            else:
                # Mapped, not read: each module's code is used from the mapping itself.
                data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise ImageError(path, f"cannot read build image: {exc.strerror or exc}") from exc
    return _decode(path, data, _Origin(path, (st.st_dev, st.st_ino)))


def _decode(path: str, data: mmap.mmap | bytes, origin: _Origin) -> Image:
    if data[: len(MAGIC)] != MAGIC:
        raise ImageError(path, "not a build image (bad magic)")
    magic_end = len(MAGIC) + len(MAGIC_NUMBER)
    if data[len(MAGIC) : magic_end] != MAGIC_NUMBER:
        raise ImageError(path, "build image was written by another Python version; rebuild it")
    if len(data) < _HEADER_SIZE:
        raise ImageError(path, "build image is truncated")
    expected = int.from_bytes(data[magic_end : magic_end + _FIELD_SIZE], "big")
    size = int.from_bytes(data[magic_end + _FIELD_SIZE : _HEADER_SIZE], "big")
    codes_start = _HEADER_SIZE + size
    if codes_start > len(data):
        raise ImageError(path, "build image is truncated")
    view = memoryview(data)
    index = view[_HEADER_SIZE:codes_start]
    if binascii.crc32(index) != expected:
        raise ImageError(path, "build image is corrupt (checksum mismatch)")
    try:
        build_id, root, raw = marshal.loads(index)
        if not all(isinstance(field, str) for field in (build_id, root)):
            raise TypeError("build id and root must be strings")
        entries = {}
        for source, (digest, offset, length, checksum) in raw.items():
            start = codes_start + offset
            if offset < 0 or length < 0 or start + length > len(data):
                raise ImageError(path, "build image is truncated")
            code = view[start : start + length]
            entries[source] = ImageEntry(digest, code, checksum=checksum, origin=origin)
    except (ValueError, TypeError, EOFError, AttributeError) as exc:
        # A valid checksum over an index of the wrong shape: written by something else.
        raise ImageError(path, f"build image has an unexpected layout: {exc}") from exc
    return Image(build_id, root, entries)
