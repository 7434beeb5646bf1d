"""Which source each live module runs: the base a patch is checked against, per module.

A process started from a build (`thinlink run`, `thinlink dev`) runs the build's code,
and a patch names the build it starts from. Other processes import the project with the
ordinary importer: a notebook kernel, a Ray or Dask worker importing its own copy of the
project. For them, and for any module that did not come from the build after all (its
file was edited between the build and its import), the runtime keeps here the source
digest (`hotpatch.image.source_digest`) of the version each module was made from, and a
patch's module is applied only where that digest is the patch's `base_digest`. Anything
else is refused with a message naming the module: never a patch on top of other code.

Where a digest comes from:
- `BuildLoader` (a module from the build image) records the image entry's digest;
- `track(roots)` installs a finder that loads the modules under `roots` from their source
  bytes, recording the digest of exactly the bytes it compiled;
- `adopt(module)` vouches for a module imported before either: it compiles the file as it
  is now and compares the result with the live module's functions; only if they are the
  same code is the file's digest recorded (else the file changed since the import, and
  the module cannot be patched until it is imported again).

Keys are the module's `__file__`, as its loader set it (no path resolution: recording
is on every import's path). Single dict operations: safe to read from the patch
client's thread while the main thread imports.
"""

from __future__ import annotations

import os
from importlib.machinery import ModuleSpec, PathFinder, SourceFileLoader

from . import _metapath
from .image import source_digest

TYPE_CHECKING = False  # the start-up path: see hotpatch/__init__.py
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import CodeType, ModuleType

__all__ = [
    "TrackingFinder",
    "TrackingLoader",
    "adopt",
    "digest_of",
    "digests",
    "execute_tracked",
    "prepare",
    "record",
    "roots",
    "track",
    "tracking_loader",
    "tracks",
    "untrack",
]

# A module's `__file__` -> digest of the source it runs. Patches change it under the
# apply lock, through their undo log (a rolled back patch puts the old digest back).
digests: dict[str, str] = {}
_finder: TrackingFinder | None = None


def record(path: str, digest: str) -> None:
    """Note that the module whose `__file__` is `path` runs the source with `digest`."""
    digests[path] = digest


def digest_of(path: str) -> str | None:
    """The digest of the source the module whose `__file__` is `path` runs, if known."""
    return digests.get(path)


class TrackingLoader(SourceFileLoader):
    """Compiles a module from the source bytes it reads, and records their digest.

    Never from a pyc: the digest must be of the very bytes the code came from (a pyc is
    validated by mtime and size, which says nothing of which bytes those were). The finder
    reads and compiles the file and hands both over (`prepared`): the import uses them, and
    only the import records a digest.
    """

    def __init__(
        self, fullname: str, path: str, prepared: tuple[bytes, CodeType] | None = None
    ) -> None:
        super().__init__(fullname, path)
        self._prepared = prepared  # used once

    def get_code(self, fullname: str) -> CodeType:
        path = self.get_filename(fullname)
        prepared, self._prepared = self._prepared, None
        if prepared is None:
            # Not the import (which the finder prepared for): someone reading the module's
            # code from its file again (`_locate.imports_name`, `inspect`). The module runs
            # what it was imported from, whatever the file says now: nothing is recorded.
            data = self.get_data(path)
            return self.source_to_code(data, path)
        data, code = prepared
        record(path, source_digest(data))
        return code

    def exec_module(self, module: ModuleType) -> None:
        execute_tracked(super().exec_module, module)


def execute_tracked(execute: Callable[[ModuleType], None], module: ModuleType) -> None:
    """Run `execute(module)` (a loader's own `exec_module`) as the import of a tracked
    module: patches that come while the module is not imported, or is being imported,
    wait for it (`_targets`) and are applied here, before the import returns."""
    from . import _targets

    _targets.loading.add(id(module))
    try:
        execute(module)
    finally:
        _targets.finish_loading(module)


def prepare(path: str, data: bytes) -> tuple[bytes, CodeType] | None:
    """`data` (the bytes of the file at `path`) and its code, for a `TrackingLoader`; None
    when it does not compile: the stock loader then raises the error with the traceback
    python shows (the import system hides its own frames, not a loader's of ours)."""
    try:
        return data, compile(data, path, "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return None


# Directories below a root whose modules are not the project's: installed packages (a
# virtual environment inside the project), and hidden ones (`.venv`, `.tox`, caches).
_THIRD_PARTY = frozenset({"site-packages", "dist-packages"})


class TrackingFinder:
    """A meta path finder: `PathFinder`'s resolution, with `TrackingLoader` for the plain
    source modules under its roots (the project's own modules, not third-party ones).

    Not tracked, although under a root: modules in a `site-packages` or `dist-packages`
    directory or in a hidden one (a virtual environment kept in the project), and those
    `accept(real_path)` turns down when given. Those load as usual, from their pycs.
    """

    def __init__(self, roots: list[str], accept: Callable[[str], bool] | None = None) -> None:
        self.roots = tuple(os.path.join(os.path.realpath(r), "") for r in roots)
        self.accept = accept

    def tracks(self, path: str) -> bool:
        """Whether the module file at `path` is one of the project's."""
        real = os.path.realpath(path)
        for root in self.roots:
            if real.startswith(root):
                folders = real[len(root) :].split(os.sep)[:-1]
                if any(f in _THIRD_PARTY or f.startswith(".") for f in folders):
                    return False
                return self.accept is None or self.accept(real)
        return False

    def find_spec(
        self, fullname: str, path: list[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        spec = PathFinder.find_spec(fullname, path, target)
        if spec is not None and type(spec.loader) is SourceFileLoader and spec.origin:
            loader = self.loader_for(fullname, spec.origin)
            if loader is not None:
                spec.loader = loader
        return spec

    def loader_for(self, fullname: str, origin: str) -> TrackingLoader | None:
        """A `TrackingLoader` for the source file `origin` if it is under the roots (and
        not the runtime's own: hotpatch loads its modules while loading one)."""
        if not self.tracks(origin) or os.path.realpath(origin).startswith(_RUNTIME):
            return None
        try:
            with open(origin, "rb") as f:
                prepared = prepare(origin, f.read())
        except OSError:
            return None  # the stock loader raises what python raises
        return None if prepared is None else TrackingLoader(fullname, origin, prepared)


def tracking_loader(fullname: str, origin: str) -> TrackingLoader | None:
    """A `TrackingLoader` for `origin` when `track` is on and it is under its roots: for
    another finder that stands in for `PathFinder` (the build image's)."""
    finder = _finder
    return None if finder is None else finder.loader_for(fullname, origin)


def tracks(path: str) -> bool:
    """True when imports from `path` are tracked (see `TrackingFinder.tracks`)."""
    finder = _finder
    return finder is not None and finder.tracks(path)


def roots() -> tuple[str, ...]:
    """The tracked roots (real paths, each ending with a separator); empty when off."""
    finder = _finder
    return () if finder is None else finder.roots


_RUNTIME = os.path.join(os.path.dirname(os.path.realpath(__file__)), "")


def track(roots: list[str], accept: Callable[[str], bool] | None = None) -> TrackingFinder:
    """Record the source of every module imported from under `roots` from now on (but
    not third-party ones: see `TrackingFinder`; `accept(real_path)` may narrow it).

    Installed just before `PathFinder` (built-in and frozen modules keep precedence);
    calling it again replaces the roots. Returns the finder."""
    global _finder
    untrack()
    _finder = TrackingFinder(roots, accept)
    _metapath.insert(_finder)
    return _finder


def untrack() -> None:
    """Stop tracking new imports (digests already recorded stay). Idempotent."""
    global _finder
    if _finder is not None:
        _metapath.remove(_finder)
        _finder = None


def adopt(module: ModuleType) -> str | None:
    """The digest of the source `module` runs: recorded, or vouched for now.

    A module nobody recorded is checked against its file as it is now: a file whose
    inode has not changed since before this process started is what the process
    imported; otherwise every function the module holds must have the code that
    compiling the file gives (same bytecode, constants, names and lines). Then the
    file's digest is recorded and returned; else (the file changed since the import, or
    cannot be read or compiled) None.
    """
    path = getattr(module, "__file__", None)
    if not isinstance(path, str):
        return None
    known = digest_of(path)
    if known is not None:
        return known
    try:
        with open(path, "rb") as f:
            before = os.fstat(f.fileno())
            data = f.read()
        if not _older_than_process(before.st_ctime):
            fresh = compile(data, path, "exec", dont_inherit=True)
            if not _same_code(module, fresh, path):
                return None
    except (OSError, SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    digest = source_digest(data)
    record(path, digest)
    return digest


_SLACK = 2.0  # seconds: boot time is known to the second, the start to a clock tick


def _older_than_process(ctime: float) -> bool:
    """True when an inode last changed well before this process started (Linux only:
    elsewhere False, and the code comparison decides). A change time cannot be set
    back by a user, unlike a modification time."""
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
        with open("/proc/stat", "rb") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith(b"btime"))
        started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return False
    return ctime < started - _SLACK


def _same_code(module: ModuleType, fresh: CodeType, path: str) -> bool:
    """Every live function of `module` from `path` has the code `fresh` makes for it."""
    from ._locate import index_module, module_files

    compiled: dict[tuple[str, int], CodeType] = {}
    stack = [fresh]
    while stack:
        code = stack.pop()
        for const in code.co_consts:
            if type(const) is type(fresh):
                compiled.setdefault((const.co_qualname, const.co_firstlineno), const)
                stack.append(const)
    live = index_module(module, module_files(module, path)).functions
    if not live:
        return False  # nothing to compare: no evidence the file is what was imported
    for key, functions in live.items():
        code = compiled.get(key)
        if code is None or any(not _equal(fn.__code__, code) for fn in functions):
            return False
    return True


def _equal(live: CodeType, fresh: CodeType) -> bool:
    # Code objects compare by bytecode, constants, names, flags and line table (not by
    # file name, which may be spelled another way).
    return live == fresh
