"""Finding a project and its source files, and reading them as Python does.

The project root is the nearest directory (from where the user is) holding a
`pyproject.toml`, `setup.py`, `setup.cfg` or `.git`; without one, the start directory.
Every `*.py` under it belongs to the project, except in directories nobody means to
build: hidden ones, `__pycache__`, virtual environments (any directory holding a
`pyvenv.cfg`), `site-packages`, `node_modules`, and tool caches.
"""

from __future__ import annotations

import os

from hotpatch._frozen import Frozen

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "SourceFile",
    "find_root",
    "root_of",
    "discover",
    "is_source",
    "module_name",
    "IGNORED_DIRS",
]

_ROOT_MARKERS = ("pyproject.toml", "setup.py", "setup.cfg", ".git")
IGNORED_DIRS = frozenset({"__pycache__", "site-packages", "dist-packages", "node_modules"})
# setuptools leaves copies of the sources here; a real package of that name has an
# __init__.py and is kept.
_OUTPUT_DIRS = frozenset({"build", "dist"})


class SourceFile(Frozen):
    """A module file of the project: its absolute path and dotted module name."""

    __slots__ = ("path", "name")
    path: str
    name: str

    def __init__(self, path: str, name: str) -> None:
        super().__init__(path, name)


def find_root(start: str | os.PathLike[str] | None = None) -> Path:
    """The project root for `start` (default: the current directory)."""
    from pathlib import Path

    return Path(root_of(start))


def root_of(start: str | os.PathLike[str] | None = None) -> str:
    """`find_root` as a string (the build path works on strings, without pathlib)."""
    here = os.path.realpath(start or os.getcwd())
    if os.path.isfile(here):
        here = os.path.dirname(here)
    candidate = here
    while True:
        if any(os.path.exists(os.path.join(candidate, m)) for m in _ROOT_MARKERS):
            return candidate
        parent = os.path.dirname(candidate)
        if parent == candidate:
            return here
        candidate = parent


def module_name(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> str:
    """Dotted name of the module at `path`, relative to `root` (or `root/src`)."""
    base = os.fspath(root)
    src = os.path.join(base, "src")
    path = os.fspath(path)
    if path.startswith(src + os.sep) and os.path.isdir(src):
        base = src
    relative = os.path.relpath(path, base)
    parts = os.path.splitext(relative)[0].split(os.sep)
    if parts and parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts) or os.path.splitext(os.path.basename(path))[0]


def discover(root: str | os.PathLike[str]) -> tuple[list[SourceFile], list[str]]:
    """All module files under `root`, sorted, and warnings about what was skipped.

    The real tree is walked first; symbolic links to directories are followed after
    it, once each: a link to a directory already walked (a loop, or a second name for
    a directory of the project) is skipped with a warning, so a module keeps its real
    name and nothing is walked forever.
    """
    walk = _Walk(os.path.realpath(root))
    tops = [walk.root]
    while tops:
        links: list[str] = []
        for top in tops:
            walk.tree(top, links)
        tops = links
    walk.found.sort(key=lambda f: f.path)
    return walk.found, walk.warnings


class _Walk:
    """One discovery: the directories seen so far, the modules found and the warnings.

    A walk of its own rather than `os.walk`: `os.scandir` tells directories, files and
    links apart without a system call each, and module names are derived once per
    directory (every build walks the whole tree, so this is most of a no-op build's
    time outside reading files).
    """

    def __init__(self, root: str) -> None:
        self.root = root
        src = os.path.join(root, "src")
        self.src = src if os.path.isdir(src) else None  # the `src` layout: names start below
        self.seen: set[tuple[int, int]] = set()  # (device, inode) of each directory walked
        self.found: list[SourceFile] = []
        self.warnings: list[str] = []

    def tree(self, top: str, links: list[str]) -> None:
        """Walk `top` without following links; the links to directories go to `links`.

        Depth first, in sorted order, so links are met in the order `os.walk` meets them.
        """
        stack = [top]
        while stack:
            path = stack.pop()
            subdirs = self._directory(path)
            links.extend(os.path.join(path, name) for name, is_link in subdirs if is_link)
            stack.extend(
                os.path.join(path, name) for name, is_link in reversed(subdirs) if not is_link
            )

    def _directory(self, path: str) -> list[tuple[str, bool]]:
        """Record the modules in directory `path`; return its subdirectories to walk,
        sorted, each with whether it is a symbolic link."""
        try:
            st = os.stat(path)
        except OSError as exc:
            self.warnings.append(f"{path}: cannot read directory: {exc.strerror}")
            return []
        if (st.st_dev, st.st_ino) in self.seen:
            target = os.path.realpath(path)
            if target in _parents(path):
                self.warnings.append(f"{path}: symlink loop (to {target}), skipped")
            else:
                self.warnings.append(f"{path}: symlink to {target}, already included, skipped")
            return []
        self.seen.add((st.st_dev, st.st_ino))
        subdirs, files = [], []
        try:
            with os.scandir(path) as entries:
                for entry in entries:
                    try:
                        is_dir = entry.is_dir()  # through links, as os.walk tells them
                    except OSError:
                        is_dir = False
                    if is_dir:
                        if _wanted_dir(path, entry.name):
                            subdirs.append((entry.name, _is_link(entry)))
                    elif entry.name.endswith(".py") and not entry.name.startswith("."):
                        files.append(entry.name)
        except OSError as exc:
            self.warnings.append(f"{exc.filename or path}: cannot read directory: {exc.strerror}")
            return []
        if files:
            package = self._package(path)
            for filename in files:
                stem = filename[:-3]
                name = package if stem == "__init__" else f"{package}.{stem}" if package else stem
                self.found.append(SourceFile(os.path.join(path, filename), name or stem))
        subdirs.sort()
        return subdirs

    def _package(self, path: str) -> str:
        """The dotted name of directory `path` (see `module_name`)."""
        base = self.root
        if self.src is not None and (path == self.src or path.startswith(self.src + os.sep)):
            base = self.src
        relative = os.path.relpath(path, base)
        return "" if relative == os.curdir else relative.replace(os.sep, ".")


def is_source(root: str | os.PathLike[str], path: str) -> bool:
    """Whether `path` (a real path) is a module file that `discover(root)` finds: a
    `*.py` below `root`, in no directory the build skips."""
    base = os.path.join(os.path.realpath(root), "")
    if not path.startswith(base) or not path.endswith(".py"):
        return False
    *folders, name = path[len(base) :].split(os.sep)
    if name.startswith("."):
        return False
    parent = base.rstrip(os.sep)
    for folder in folders:
        if not _wanted_dir(parent, folder):
            return False
        parent = os.path.join(parent, folder)
    return True


def _is_link(entry: os.DirEntry) -> bool:
    try:
        return entry.is_symlink()
    except OSError:
        return False


def _parents(path: str) -> set[str]:
    """Every directory above `path` (as `pathlib.Path.parents` lists them)."""
    parents = set()
    while True:
        parent = os.path.dirname(path)
        if parent == path:
            return parents
        parents.add(parent)
        path = parent


def _wanted_dir(parent: str, name: str) -> bool:
    if name.startswith(".") or name in IGNORED_DIRS or name.endswith(".egg-info"):
        return False
    path = os.path.join(parent, name)
    if name in _OUTPUT_DIRS and not os.path.exists(os.path.join(path, "__init__.py")):
        return False
    return not os.path.exists(os.path.join(path, "pyvenv.cfg"))
