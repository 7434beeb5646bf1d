"""Placing the runtime's finders on `sys.meta_path`: just before `PathFinder`, which they
stand in for, so built-in and frozen modules keep their precedence (as in CPython)."""

from __future__ import annotations

import sys
from importlib.machinery import PathFinder

__all__ = ["insert", "remove"]


def insert(finder: object) -> None:
    """Put `finder` just before `PathFinder` (at the end if there is none)."""
    try:
        index = sys.meta_path.index(PathFinder)
    except ValueError:
        index = len(sys.meta_path)
    sys.meta_path.insert(index, finder)  # type: ignore[arg-type]


def remove(finder: object) -> None:
    """Take `finder` off `sys.meta_path`, wherever (and however often) it is there."""
    while finder in sys.meta_path:
        sys.meta_path.remove(finder)  # type: ignore[arg-type]
