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
import tempfile
from dataclasses import dataclass
from pathlib import Path

import xxhash

from .cache import INTERPRETER_TAG
from .errors import BuildNotFound

__all__ = ["ModuleEntry", "Manifest", "BuildStore", "make_build_id"]

_MAGIC = b"TLMANIF1"


@dataclass(frozen=True, slots=True)
class ModuleEntry:
    """One module in a build. `error` is set (and `record` None) when it failed."""

    name: str
    path: str
    digest: str | None
    record: str | None
    units: int = 0
    error: str | None = None


@dataclass(frozen=True)
class Manifest:
    """A build: its id and its modules. The id is derived from the content."""

    build_id: str
    root: str
    modules: tuple[ModuleEntry, ...]
    created: float = 0.0
    tag: str = INTERPRETER_TAG

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
        self.builds = Path(cache_dir) / "builds"
        self.refs = Path(cache_dir) / "refs"

    def save(self, manifest: Manifest) -> None:
        path = self.builds / f"{manifest.build_id}.manifest"
        if path.exists():
            try:
                self.load(manifest.build_id)
                return
            except BuildNotFound:  # unreadable (corrupt, or vanished just now): rewrite it
                pass
        modules = tuple(
            (m.name, m.path, m.digest, m.record, m.units, m.error) for m in manifest.modules
        )
        payload = marshal.dumps(
            (manifest.build_id, manifest.root, manifest.tag, manifest.created, modules)
        )
        _write_atomic(path, _MAGIC + payload)

    def load(self, build_id: str) -> Manifest:
        path = self.builds / f"{build_id}.manifest"
        try:
            data = path.read_bytes()
            if not data.startswith(_MAGIC):
                raise ValueError("bad magic")
            build, root, tag, created, modules = marshal.loads(data[len(_MAGIC) :])
        except FileNotFoundError:
            raise BuildNotFound(f"no build {build_id!r} in {self.builds}") from None
        except (ValueError, EOFError, TypeError) as exc:
            raise BuildNotFound(f"build {build_id!r} is unreadable ({exc})") from None
        return Manifest(build, root, tuple(ModuleEntry(*m) for m in modules), created, tag)

    def ref(self, root: str, name: str) -> str | None:
        """The build id a named ref points at for this project root, or None."""
        try:
            return self._ref_path(root, name).read_text().strip() or None
        except OSError:
            return None

    def set_ref(self, root: str, name: str, build_id: str) -> None:
        _write_atomic(self._ref_path(root, name), build_id.encode())

    def resolve(self, root: str, spec: str) -> Manifest:
        """Load a build by id, or by ref name (`last`, `last-good`)."""
        build_id = self.ref(root, spec) or spec
        return self.load(build_id)

    def _ref_path(self, root: str, name: str) -> Path:
        where = xxhash.xxh3_64_hexdigest(root.encode("utf-8", "surrogatepass"))
        return self.refs / f"{where}-{INTERPRETER_TAG}.{name}"


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
