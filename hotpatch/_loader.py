"""The import hook that loads a program's own modules from a build image.

What we do: `BuildFinder` asks CPython's own ``PathFinder`` for the spec, so module
resolution is exactly CPython's (sys.path order, packages, namespace packages, relative
imports, ``__path__`` and ``__cached__``). When the spec's origin is in the image and the
file's bytes still match the build (`source_digest`), it only swaps ``spec.loader`` for a
`BuildLoader`, whose ``get_code`` unmarshals the build's code instead of compiling.

Where the finder sits: just before ``PathFinder`` in ``sys.meta_path``, not at the front.
Built-in and frozen modules keep precedence over a project file of the same name (as in
CPython), and because the finder stands in for ``PathFinder`` it can return the spec it
found for a module that is not in the image, instead of making ``PathFinder`` search
sys.path a second time for every stdlib and third-party import.

Why the digest is checked in ``find_spec``: the bytes read for the check are handed to
the loader, so the code that runs is the code that was checked. A file edited after the
build gets a `hotpatch.provenance.TrackingLoader`, which compiles exactly those bytes and
records their digest, so a patch made from the build is refused for that module rather
than applied on top of other code (a syntax error in it is raised by the stock loader,
with the traceback python shows).

`module_build` tells the patch applier which live modules run the build's code.
"""

from __future__ import annotations

import io
import marshal
import os
import sys
from importlib.machinery import ModuleSpec, PathFinder, SourceFileLoader

from . import _metapath, provenance
from .image import Image, ImageEntry, ImageError, signature, source_digest

TYPE_CHECKING = False  # the start-up path: see hotpatch/__init__.py
if TYPE_CHECKING:
    from types import CodeType, ModuleType

__all__ = [
    "BuildFinder",
    "BuildLoader",
    "TrackedBuildLoader",
    "install",
    "installed",
    "module_build",
    "uninstall",
]

# Spec name (``module.__spec__.name``, or "__main__" for a script) -> build id, for
# each module whose code came from an image. Written under the import lock of that
# module; single dict operations, so readers on other threads see a consistent value.
_from_build: dict[str, str] = {}

_finder: BuildFinder | None = None


def module_build(name: str) -> str | None:
    """Return the build id the module ``name`` was loaded from, or None if it was compiled.

    ``name`` is the module's spec name (``module.__spec__.name``; "__main__" for a script
    run by `hotpatch.boot`). None also for modules that are not the project's.
    """
    return _from_build.get(name)


class BuildLoader(SourceFileLoader):
    """A ``SourceFileLoader`` whose code comes from the build image.

    Everything but ``get_code`` is inherited, so ``get_source``, ``get_data``,
    ``is_package``, ``importlib.resources``, ``inspect.getsource`` and linecache work
    as usual. It never writes pycs: the image is the cache.
    """

    def __init__(
        self,
        fullname: str,
        path: str,
        entry: ImageEntry,
        build_id: str,
        checked_source: bytes | None = None,
        *,
        trusted: bool = False,
    ) -> None:
        super().__init__(fullname, path)
        self.entry = entry
        self.build_id = build_id
        # Source bytes already matched against entry.digest by the finder; used once.
        self._checked_source = checked_source
        # The finder saw the file's stat as the build recorded it: no need to read it.
        self._trusted = trusted

    def get_code(self, fullname: str) -> CodeType:
        """Return the build's code for the module, or compile the file if it changed."""
        path = self.get_filename(fullname)
        data, self._checked_source = self._checked_source, None
        trusted, self._trusted = self._trusted, False
        if data is None and not trusted:
            data = self.get_data(path)
            if source_digest(data) != self.entry.digest:
                # Edited since the build (a reused loader, or a race with the editor).
                _from_build.pop(fullname, None)
                return self.source_to_code(data, path)
        # The file holds the build's bytes (its stat or its digest says so).
        code = self.build_code(path)
        if code is None:  # the image left compiling to us, or has no sound code for it
            if data is None:
                data = self.get_data(path)
                if source_digest(data) != self.entry.digest:
                    _from_build.pop(fullname, None)
                    return self.source_to_code(data, path)
            code = self.source_to_code(data, path)
        _from_build[fullname] = self.build_id
        provenance.record(path, self.entry.digest)
        return code

    def build_code(self, path: str) -> CodeType | None:
        """The build's code of the module at `path` from the image; None where the image
        has none (compile the source), or none that is sound: failing its checksum (the
        image is then removed, to be made again), or compiled from another file."""
        try:
            marshalled = self.entry.code
        except ImageError:
            return None
        if not marshalled:
            return None
        code = marshal.loads(marshalled)
        return code if code.co_filename == path else None


class TrackedBuildLoader(BuildLoader):
    """A `BuildLoader` for a process that tracks its imports (a kernel using an image):
    patches wait for a module being imported, as they do for a `TrackingLoader`'s.

    A class of its own so that other processes keep CPython's tracebacks (no frame of
    ours in an import error) and their start-up stays off the applier's modules."""

    def exec_module(self, module: ModuleType) -> None:
        provenance.execute_tracked(super().exec_module, module)


class BuildFinder:
    """A meta path finder: ``PathFinder``'s resolution, with the image's loader swapped in.

    ``trusted`` maps source paths to the stat `signature` their build-time bytes had: a
    file whose stat is still that holds those bytes (the build side only records a
    signature that a later write could not repeat), so it is not read again."""

    def __init__(self, image: Image, trusted: dict[str, tuple] | None = None) -> None:
        self.image = image
        self.trusted = trusted or {}

    def find_spec(
        self, fullname: str, path: list[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        """Find ``fullname`` as ``PathFinder`` does; load it from the image when it matches."""
        spec = PathFinder.find_spec(fullname, path, target)
        # Only plain source files are ours: a .pyc-only module, an extension module or a
        # zip import keeps its own loader.
        if spec is not None and type(spec.loader) is SourceFileLoader:
            loader = self.loader_for(fullname, spec.origin)
            if loader is None:  # not the build's: tracked all the same if asked for
                loader = provenance.tracking_loader(fullname, spec.origin)
            if loader is not None:
                spec.loader = loader
        return spec

    def loader_for(self, fullname: str, path: str) -> SourceFileLoader | None:
        """Return a `BuildLoader` for the file at ``path`` if the build has its current bytes,
        a `TrackingLoader` if the build has other bytes, None if the build lacks the file."""
        path = os.path.abspath(path)
        entry = self.image.entries.get(path)
        if entry is None:
            return None
        loader = TrackedBuildLoader if provenance.roots() else BuildLoader
        known = self.trusted.get(path)
        if known is not None and entry.has_code:
            try:
                if signature(os.stat(path)) == known:
                    return loader(fullname, path, entry, self.image.build_id, trusted=True)
            except OSError:
                pass  # read below, to fail as CPython does
        try:
            with io.open_code(path) as f:  # as FileLoader.get_data reads sources
                data = f.read()
        except OSError:
            return None  # the stock loader will raise the error CPython raises
        if source_digest(data) != entry.digest:
            # Edited since the build: compiled from these bytes, whose digest is recorded,
            # so that a patch from the build is refused for it (`hotpatch.provenance`).
            _from_build.pop(fullname, None)
            prepared = provenance.prepare(path, data)
            return None if prepared is None else provenance.TrackingLoader(fullname, path, prepared)
        return loader(fullname, path, entry, self.image.build_id, data)


def install(image: Image, trusted: dict[str, tuple] | None = None) -> BuildFinder:
    """Load the project's modules from ``image`` from now on; return the finder.

    ``trusted``: source paths and the stat signatures that vouch for their bytes (see
    `BuildFinder`). Idempotent: installing the image that is installed returns its
    finder; another image replaces it (modules already imported keep their code).
    """
    global _finder
    if _finder is not None and _finder.image is image and _finder in sys.meta_path:
        return _finder
    uninstall()
    _finder = BuildFinder(image, trusted)
    _metapath.insert(_finder)
    return _finder


def uninstall() -> None:
    """Stop loading from the image. Idempotent. Modules already imported are unchanged."""
    global _finder
    if _finder is not None:
        _metapath.remove(_finder)
        _finder = None


def installed() -> BuildFinder | None:
    """Return the installed finder, or None."""
    return _finder
