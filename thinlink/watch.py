"""Watching the project's files (the only module importing watchfiles).

Tuned for latency: watchfiles yields a batch once no new change arrived for `step`
milliseconds (default 1, not watchfiles' 50), so a save is seen within a few
milliseconds, and a burst (a `git checkout` of many files) still arrives as one batch.
Built-in ignores keep virtual environments, VCS directories, caches and editor temp
files from flooding the watcher.
"""

from __future__ import annotations

import fnmatch
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import watchfiles

__all__ = ["SourceFilter", "watch_changes", "backend_name", "IGNORED_DIRS", "IGNORED_FILES"]

IGNORED_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        "__pycache__",
        ".venv",
        "venv",
        ".tox",
        ".nox",
        "site-packages",
        "node_modules",
        ".thinlink",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".hypothesis",
        ".idea",
        ".vscode",
        "build",
        "dist",
    }
)
IGNORED_FILES = ("*.swp", "*.swx", "*.swo", "*~", ".#*", "#*#", "4913", "*.tmp", "*.pyc")


class SourceFilter(watchfiles.DefaultFilter):
    """Python sources (or `include` globs) not under an ignored directory or `exclude`."""

    def __init__(self, include: Sequence[str] = ("*.py",), exclude: Sequence[str] = ()) -> None:
        super().__init__(ignore_dirs=tuple(IGNORED_DIRS), ignore_entity_patterns=())
        self.include = tuple(include)
        self.exclude = tuple(exclude)

    def __call__(self, change: watchfiles.Change, path: str) -> bool:
        name = os.path.basename(path)
        parts = Path(path).parts
        if any(part in IGNORED_DIRS or part.endswith(".egg-info") for part in parts[:-1]):
            return False
        if any(fnmatch.fnmatch(name, p) for p in IGNORED_FILES):
            return False
        if any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(name, p) for p in self.exclude):
            return False
        return any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(path, p) for p in self.include)


def backend_name(poll: bool) -> str:
    if poll:
        return "polling"
    return {"linux": "inotify", "darwin": "FSEvents"}.get(sys.platform, "native")


def watch_changes(
    paths: Sequence[str | os.PathLike[str]],
    source_filter: SourceFilter,
    stop: threading.Event,
    *,
    poll: bool = False,
    step: int = 1,
) -> Iterator[set[str]]:
    """Yield sets of changed file paths until `stop` is set."""
    for batch in watchfiles.watch(
        *paths,
        watch_filter=source_filter,
        step=step,
        debounce=1600,
        stop_event=stop,
        force_polling=poll,
        poll_delay_ms=50,
        raise_interrupt=False,
        rust_timeout=500,
        yield_on_timeout=False,
    ):
        yield {path for _, path in batch}
