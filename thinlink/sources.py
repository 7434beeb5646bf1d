"""Finding a project and its source files, and reading them as Python does.

The project root is the nearest directory (from where the user is) holding a
`pyproject.toml`, `setup.py`, `setup.cfg` or `.git`; without one, the start directory.
Every `*.py` under it belongs to the project, except in directories nobody means to
build: hidden ones, `__pycache__`, virtual environments (any directory holding a
`pyvenv.cfg`), `site-packages`, `node_modules`, and tool caches.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SourceFile", "find_root", "discover", "module_name", "IGNORED_DIRS"]

log = logging.getLogger(__name__)

_ROOT_MARKERS = ("pyproject.toml", "setup.py", "setup.cfg", ".git")
IGNORED_DIRS = frozenset({"__pycache__", "site-packages", "dist-packages", "node_modules"})
# setuptools leaves copies of the sources here; a real package of that name has an
# __init__.py and is kept.
_OUTPUT_DIRS = frozenset({"build", "dist"})


@dataclass(frozen=True, slots=True)
class SourceFile:
    """A module file of the project: its absolute path and dotted module name."""

    path: str
    name: str


def find_root(start: str | os.PathLike[str] | None = None) -> Path:
    """The project root for `start` (default: the current directory)."""
    here = Path(start or os.getcwd()).resolve()
    if here.is_file():
        here = here.parent
    for candidate in (here, *here.parents):
        if any((candidate / marker).exists() for marker in _ROOT_MARKERS):
            return candidate
    return here


def module_name(root: Path, path: Path | str) -> str:
    """Dotted name of the module at `path`, relative to `root` (or `root/src`)."""
    base = str(root)
    src = os.path.join(base, "src")
    path = str(path)
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
    root = Path(root).resolve()
    found: list[SourceFile] = []
    warnings: list[str] = []
    seen: set[tuple[int, int]] = set()
    tops = [str(root)]
    while tops:
        links: list[str] = []
        for top in tops:
            _walk(root, top, seen, links, found, warnings)
        tops = links
    found.sort(key=lambda f: f.path)
    return found, warnings


def _walk(
    root: Path,
    top: str,
    seen: set[tuple[int, int]],
    links: list[str],
    found: list[SourceFile],
    warnings: list[str],
) -> None:
    """Walk `top` without following links; the links to directories go to `links`."""
    for dirpath, dirnames, filenames in os.walk(top, onerror=_warn_into(warnings)):
        try:
            st = os.stat(dirpath)
        except OSError as exc:
            warnings.append(f"{dirpath}: cannot read directory: {exc.strerror}")
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:
            target = os.path.realpath(dirpath)
            if Path(target) in Path(dirpath).parents:
                warnings.append(f"{dirpath}: symlink loop (to {target}), skipped")
            else:
                warnings.append(f"{dirpath}: symlink to {target}, already included, skipped")
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if _wanted_dir(dirpath, d))
        links.extend(
            os.path.join(dirpath, d) for d in dirnames if os.path.islink(os.path.join(dirpath, d))
        )
        for filename in sorted(filenames):
            if filename.endswith(".py") and not filename.startswith("."):
                path = os.path.join(dirpath, filename)
                found.append(SourceFile(path, module_name(root, path)))


def _wanted_dir(parent: str, name: str) -> bool:
    if name.startswith(".") or name in IGNORED_DIRS or name.endswith(".egg-info"):
        return False
    path = os.path.join(parent, name)
    if name in _OUTPUT_DIRS and not os.path.exists(os.path.join(path, "__init__.py")):
        return False
    return not os.path.exists(os.path.join(path, "pyvenv.cfg"))


def _warn_into(warnings: list[str]):  # noqa: ANN202
    def onerror(exc: OSError) -> None:
        warnings.append(f"{exc.filename}: cannot read directory: {exc.strerror}")

    return onerror
