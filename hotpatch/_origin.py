"""Where a module comes from: the app itself, an installed library, or the standard library.

Told by the module's file: under the interpreter's standard library directory, under a
site-packages (or dist-packages) directory, or anywhere else (the app's project, an
editable checkout), which counts as the app's. A module with no file is built into the
interpreter: the standard library.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from types import ModuleType

__all__ = ["app_modules", "is_library"]

_dirs: tuple[tuple[str, ...], tuple[str, ...]] | None = None  # (libraries, standard library)
_kinds: dict[str, str] = {}  # by file: a module's file does not move


def _directories() -> tuple[tuple[str, ...], tuple[str, ...]]:
    global _dirs
    if _dirs is None:
        import sysconfig  # only when asked: not free to import

        paths = sysconfig.get_paths()
        libraries = {os.path.realpath(paths[k]) + os.sep for k in ("purelib", "platlib")}
        stdlib = {os.path.realpath(paths[k]) + os.sep for k in ("stdlib", "platstdlib")}
        _dirs = (tuple(libraries), tuple(stdlib - libraries))
    return _dirs


def _kind(module: ModuleType | None) -> str:
    file = getattr(module, "__file__", None)
    if not isinstance(file, str):
        return "stdlib"
    kind = _kinds.get(file)
    if kind is None:
        libraries, stdlib = _directories()
        path = os.path.realpath(file)
        parts = path.split(os.sep)
        if path.startswith(libraries) or "site-packages" in parts or "dist-packages" in parts:
            kind = "library"
        elif path.startswith(stdlib):
            kind = "stdlib"
        else:
            kind = "app"
        _kinds[file] = kind
    return kind


def is_library(module_name: str) -> bool:
    """True for a module of an installed package (not the standard library, not the app)."""
    module = sys.modules.get(module_name) or sys.modules.get(module_name.partition(".")[0])
    return _kind(module) == "library"


def app_modules() -> Iterator[ModuleType]:
    """The imported modules of the app itself (its scripts, `__main__` included)."""
    for module in list(sys.modules.values()):
        if isinstance(module, ModuleType) and _kind(module) == "app":
            yield module
