"""Build manifests: which version of which module a build is made of.

A manifest is small (a line per module: its name, path, source digest and the cache
key of its record); the records themselves are content-addressed in the cache. Each
manifest is a file named by its build id under `<cache>/builds/`, written atomically
and never changed. Named refs (`last`, `last-good`) point at build ids per project
root and interpreter.

A no-op build reads the last manifest and nothing else of the cache, so this module
stays off the cache (diskcache, SQLite) and works on plain path strings.
"""

from __future__ import annotations

import marshal
import os
import sys

import xxhash

try:  # importlib.util.MAGIC_NUMBER, from the import system's own module (loaded already)
    from _frozen_importlib_external import MAGIC_NUMBER
except ImportError:  # pragma: no cover - an interpreter without a frozen import system
    from importlib.util import MAGIC_NUMBER

from hotpatch._frozen import Frozen

from thinlink.errors import BuildNotFound

__all__ = ["ModuleEntry", "Manifest", "BuildStore", "make_build_id", "INTERPRETER_TAG"]

# What stored records and manifests are laid out as: bumped with units._RECORD_FORMAT or
# this file's _MAGIC, so that builds of an older thinlink are never read as current ones.
STORAGE_FORMAT = 3

# The interpreter a build is for (cache tag and bytecode magic) and the storage format:
# in every cache key, ref and manifest, so Pythons and thinlink versions never mix.
INTERPRETER_TAG = f"{sys.implementation.cache_tag}-{MAGIC_NUMBER.hex()}-s{STORAGE_FORMAT}"

_MAGIC = b"TLMANIF2"
_MAGIC_V1 = b"TLMANIF1"  # before entries carried a fingerprint: still readable


class ModuleEntry(Frozen):
    """One module in a build. `error` is set (and `record` None) when it failed.

    `digest` is the file's source digest (what the runtime checks a file against);
    `fingerprint` is a much faster hash of the same bytes (xxh3-128), which the next
    build compares to tell an unchanged file without computing its digest again.
    """

    __slots__ = ("name", "path", "digest", "record", "units", "error", "fingerprint")
    name: str
    path: str
    digest: str | None
    record: str | None
    units: int
    error: str | None
    fingerprint: str | None

    def __init__(
        self,
        name: str,
        path: str,
        digest: str | None,
        record: str | None,
        units: int = 0,
        error: str | None = None,
        fingerprint: str | None = None,
    ) -> None:
        super().__init__(name, path, digest, record, units, error, fingerprint)


def fingerprint(data: bytes) -> str:
    """The fingerprint of a source file's bytes (see `ModuleEntry`)."""
    return xxhash.xxh3_128_hexdigest(data)


class Manifest(Frozen):
    """A build: its id and its modules. The id is derived from the content."""

    __slots__ = ("build_id", "root", "modules", "created", "tag")
    build_id: str
    root: str
    modules: tuple[ModuleEntry, ...]
    created: float
    tag: str

    def __init__(
        self,
        build_id: str,
        root: str,
        modules: tuple[ModuleEntry, ...],
        created: float = 0.0,
        tag: str = INTERPRETER_TAG,
    ) -> None:
        super().__init__(build_id, root, modules, created, tag)

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
    """Manifests and refs under a cache directory."""

    def __init__(self, cache_dir: str | os.PathLike[str]) -> None:
        self.builds = os.path.join(os.fspath(cache_dir), "builds")
        self.refs = os.path.join(os.fspath(cache_dir), "refs")
        self._unwritten: dict[str, bytes] | None = None  # path -> bytes, see write_behind()
        self._loaded: dict[str, Manifest] = {}  # while writing behind: manifests by id

    def write_behind(self) -> None:
        """Keep manifests and refs in memory until `flush()` (as `Cache.write_behind`).

        For `thinlink dev`: a save's build is recorded after its patch has gone out.
        """
        if self._unwritten is None:
            self._unwritten = {}

    def flush(self) -> int:
        """Write what `write_behind()` kept in memory; returns how many files."""
        pending, self._unwritten = self._unwritten, ({} if self._unwritten is not None else None)
        for path, data in (pending or {}).items():
            _write_atomic(path, data)
        return len(pending or ())

    def _write(self, path: str, data: bytes) -> None:
        if self._unwritten is not None:
            self._unwritten[path] = data
        else:
            _write_atomic(path, data)

    def _read_bytes(self, path: str) -> bytes:
        if self._unwritten and path in self._unwritten:
            return self._unwritten[path]
        with open(path, "rb") as f:
            return f.read()

    def save(self, manifest: Manifest) -> None:
        path = self._manifest_path(manifest.build_id)
        if self._unwritten is not None:
            self._loaded[manifest.build_id] = manifest
        if (self._unwritten and path in self._unwritten) or os.path.exists(path):
            try:
                if self._read(manifest.build_id)[0] == _MAGIC:
                    return
            except BuildNotFound:  # unreadable (corrupt, or vanished just now): rewrite it
                pass
        modules = tuple(
            (m.name, m.path, m.digest, m.record, m.units, m.error, m.fingerprint)
            for m in manifest.modules
        )
        payload = marshal.dumps(
            (manifest.build_id, manifest.root, manifest.tag, manifest.created, modules)
        )
        self._write(path, _MAGIC + payload)

    def load(self, build_id: str) -> Manifest:
        found = self._loaded.get(build_id)
        if found is not None:
            return found
        manifest = self._read(build_id)[1]
        if self._unwritten is not None:
            self._loaded[build_id] = manifest  # a build id names its content: never stale
        return manifest

    def _read(self, build_id: str) -> tuple[bytes, Manifest]:
        """The manifest of `build_id` and the format it was written in (its magic)."""
        path = self._manifest_path(build_id)
        try:
            data = self._read_bytes(path)
            magic = data[: len(_MAGIC)]
            if magic not in (_MAGIC, _MAGIC_V1):
                raise ValueError("bad magic")
            build, root, tag, created, modules = marshal.loads(data[len(_MAGIC) :])
            entries = tuple(ModuleEntry(*m) for m in modules)
        except FileNotFoundError:
            raise BuildNotFound(f"no build {build_id!r} in {self.builds}") from None
        except (OSError, ValueError, EOFError, TypeError) as exc:
            raise BuildNotFound(f"build {build_id!r} is unreadable ({exc})") from None
        return magic, Manifest(build, root, entries, created, tag)

    def ref(self, root: str, name: str) -> str | None:
        """The build id a named ref points at for this project root, or None."""
        try:
            return self._read_bytes(self._ref_path(root, name)).decode().strip() or None
        except (OSError, ValueError):  # ValueError: not text, a garbled ref
            return None

    def set_ref(self, root: str, name: str, build_id: str) -> None:
        if self.ref(root, name) != build_id:  # a no-op build leaves its refs alone
            self._write(self._ref_path(root, name), build_id.encode())

    def checked(self, root: str) -> str | None:
        """What `set_checked` last recorded for this project root, or None."""
        return self.ref(root, "checked")

    def set_checked(self, root: str, build_id: str, cache_state: str) -> None:
        """Record that every record of `build_id` was intact in the cache when the
        cache's database was in `cache_state` (see `thinlink.build.builder`)."""
        self.set_ref(root, "checked", f"{build_id} {cache_state}")

    def resolve(self, root: str, spec: str) -> Manifest:
        """Load a build by id, or by ref name (`last`, `last-good`)."""
        build_id = self.ref(root, spec) or spec
        return self.load(build_id)

    def _manifest_path(self, build_id: str) -> str:
        return os.path.join(self.builds, f"{build_id}.manifest")

    def _ref_path(self, root: str, name: str) -> str:
        where = xxhash.xxh3_64_hexdigest(root.encode("utf-8", "surrogatepass"))
        return os.path.join(self.refs, f"{where}-{INTERPRETER_TAG}.{name}")


def _write_atomic(path: str, data: bytes) -> None:
    """Write `data` to a new file next to `path`, then move it into place.

    A reader sees the old file or the new one, never a part. (Not `tempfile`: its
    imports cost a no-op build more than the write.)
    """
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.urandom(6).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        with open(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
