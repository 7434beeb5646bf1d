"""Build manifests: which version of which module a build is made of.

A manifest is small (a line per module: its name, path, source digest and the cache
key of its record); the records themselves are content-addressed in the cache. Each
manifest is a file named by its build id under `<cache>/builds/`, written atomically
and never changed. Named refs (`last`, `last-good`) point at build ids per project
root and interpreter.
"""

from __future__ import annotations

import marshal
import os
from collections import namedtuple

import xxhash

from hotpatch.fileio import write_atomic
from thinlink.errors import DISK_FULL, BuildNotFound, CacheFull
from thinlink.launch import INTERPRETER_TAG

from .writebehind import WriteBehind

__all__ = ["BuildStore", "INTERPRETER_TAG", "Manifest", "ModuleEntry", "make_build_id"]

_MAGIC = b"TLMANIF3"
_SHOWN = 60  # characters of an unreadable file shown in a message


class ModuleEntry(
    namedtuple("ModuleEntry", "name path digest record units error", defaults=(0, None))
):
    """One module in a build. `error` is set (and `record` None) when it failed.

    `digest` is the file's source digest (`hotpatch.image.source_digest`: what the
    runtime checks a file against); None when the file could not be read.
    """

    __slots__ = ()

    def renamed(self, name: str) -> ModuleEntry:
        """The same file under another module name (its package gained an `src/`...)."""
        return self if name == self.name else self._replace(name=name)


class Manifest(namedtuple("Manifest", "build_id root modules created tag")):
    """A build: its id and its modules. The id is derived from the content."""

    __slots__ = ()

    def __new__(
        cls,
        build_id: str,
        root: str,
        modules: tuple[ModuleEntry, ...],
        created: float = 0.0,
        tag: str = INTERPRETER_TAG,
    ) -> Manifest:
        return super().__new__(cls, build_id, root, modules, created, tag)

    @property
    def failed(self) -> tuple[ModuleEntry, ...]:
        return tuple(m for m in self.modules if m.error is not None)

    @property
    def units(self) -> int:
        return sum(m.units for m in self.modules)

    def by_path(self) -> dict[str, ModuleEntry]:
        return {m.path: m for m in self.modules}

    def by_name(self) -> dict[str, ModuleEntry]:
        return {m.name: m for m in self.modules}


def make_build_id(root: str, modules: tuple[ModuleEntry, ...]) -> str:
    """Content-derived id: the same sources on the same interpreter give the same id."""
    h = xxhash.xxh3_128(f"{INTERPRETER_TAG}\0{root}".encode("utf-8", "surrogatepass"))
    for m in sorted(modules, key=lambda m: m.path):
        h.update(f"\0{m.path}\0{m.digest}\0{m.error}".encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:20]


class BuildStore:
    """Manifests and refs under a cache directory. May not be shared between threads;
    several processes may use one directory (every write is atomic)."""

    def __init__(self, cache_dir: str | os.PathLike[str]) -> None:
        self.cache_dir = os.fspath(cache_dir)
        self.builds = os.path.join(self.cache_dir, "builds")
        self.refs = os.path.join(self.cache_dir, "refs")
        self.behind = WriteBehind(self._write_files)
        self._loaded: dict[str, Manifest] = {}  # manifests by id: a build id names content

    def flush(self) -> int:
        """Write what `behind` holds; returns how many files."""
        return self.behind.flush()

    def _write(self, path: str, data: bytes) -> None:
        if not self.behind.hold(path, data):
            self._write_files({path: data})

    def _write_files(self, files: dict[str, bytes]) -> None:
        try:
            for path, data in files.items():
                write_atomic(path, data)
        except OSError as exc:
            if exc.errno in DISK_FULL:
                raise CacheFull(self.cache_dir) from None
            raise

    def _read_bytes(self, path: str) -> bytes:
        held = self.behind.get(path)
        if held is not None:
            return held
        with open(path, "rb") as f:
            return f.read()

    def save(self, manifest: Manifest) -> None:
        self._loaded[manifest.build_id] = manifest
        path = self._manifest_path(manifest.build_id)
        if self.behind.get(path) is not None or os.path.exists(path):
            try:
                self._read(manifest.build_id)
                return  # written before, and readable
            except BuildNotFound:  # unreadable (damaged, or vanished just now): rewrite it
                pass
        modules = tuple(tuple(m) for m in manifest.modules)  # marshal takes plain tuples
        payload = marshal.dumps(
            (manifest.build_id, manifest.root, manifest.tag, manifest.created, modules)
        )
        self._write(path, _MAGIC + payload)

    def load(self, build_id: str) -> Manifest:
        """The manifest of `build_id`; `BuildNotFound` if it is missing or unreadable."""
        found = self._loaded.get(build_id)
        if found is None:
            found = self._loaded[build_id] = self._read(build_id)
        return found

    def _read(self, build_id: str) -> Manifest:
        path = self._manifest_path(build_id)
        try:
            data = self._read_bytes(path)
            if data[: len(_MAGIC)] != _MAGIC:
                raise ValueError(f"not a manifest of this thinlink: {_excerpt(data)}")
            build, root, tag, created, modules = marshal.loads(data[len(_MAGIC) :])
            entries = tuple(ModuleEntry(*m) for m in modules)
        except FileNotFoundError:
            raise BuildNotFound(f"no build {build_id!r} in {self.builds}") from None
        except (OSError, ValueError, EOFError, TypeError) as exc:
            raise BuildNotFound(f"build {build_id!r} is unreadable ({exc})") from None
        return Manifest(build, root, entries, created, tag)

    def ref(self, root: str, name: str) -> str | None:
        """The build id a named ref points at for this project root, or None (no ref, or
        one that is not a build id: a damaged ref is no ref)."""
        try:
            text = self._read_bytes(self._ref_path(root, name)).decode("ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return text if text.isalnum() else None

    def set_ref(self, root: str, name: str, build_id: str) -> None:
        if self.ref(root, name) != build_id:  # a no-op build leaves its refs alone
            self._write(self._ref_path(root, name), build_id.encode())

    def resolve(self, root: str, spec: str) -> Manifest:
        """Load a build by id, or by ref name (`last`, `last-good`)."""
        build_id = self.ref(root, spec) or spec
        return self.load(build_id)

    def _manifest_path(self, build_id: str) -> str:
        if not build_id.isalnum():
            raise BuildNotFound(f"{_excerpt(build_id.encode())} is not a build id")
        return os.path.join(self.builds, f"{build_id}.manifest")

    def _ref_path(self, root: str, name: str) -> str:
        where = xxhash.xxh3_64_hexdigest(root.encode("utf-8", "surrogatepass"))
        return os.path.join(self.refs, f"{where}-{INTERPRETER_TAG}.{name}")


def _excerpt(data: bytes) -> str:
    """A short, escaped excerpt of bytes for a message (never kilobytes of NULs)."""
    text = repr(data[:_SHOWN])
    return text + ("..." if len(data) > _SHOWN else "")
