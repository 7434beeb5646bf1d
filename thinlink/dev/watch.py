"""Watching the project's files (the only module importing watchfiles).

Tuned for latency: watchfiles yields a batch once no new change arrived for `step`
milliseconds (default 1, not watchfiles' 50), so a save is seen within a few
milliseconds. A burst (a `git checkout`, an editor's "save all") can then arrive as
several batches; the session gathers the batches that follow each other within `QUIET`
seconds into one patch, while it builds the first.
Built-in ignores keep virtual environments, VCS directories, caches, build output and
editor temp files from flooding the watcher.
"""

from __future__ import annotations

import fnmatch
import os
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence

import watchfiles

from thinlink.launch import IGNORED_DIRS, is_ignored_dir

__all__ = [
    "BURST_QUIET",
    "QUIET",
    "SETTLE",
    "SourceFilter",
    "looks_cut",
    "settle",
    "watch_changes",
    "poll_changes",
    "backend_name",
    "IGNORED_FILES",
]

IGNORED_FILES = ("*.swp", "*.swx", "*.swo", "*~", ".#*", "#*#", "4913", "*.tmp", "*.pyc")


class SourceFilter(watchfiles.DefaultFilter):
    """Python sources (or `include` globs) not under an ignored directory or `exclude`.

    The directories ignored are those the build skips (`thinlink.launch.is_ignored_dir`): hidden
    ones, caches, virtual environments (any directory holding a `pyvenv.cfg`, whatever
    its name), `build`/`dist` output. Only the part of a path below
    the watched root it is in counts: a project that itself lives under `~/build/` or
    `~/.local/` is watched. Globs match the file name, the path relative to its watched
    root (`tests/*`) or the absolute path.
    """

    def __init__(
        self,
        include: Sequence[str] = ("*.py",),
        exclude: Sequence[str] = (),
        roots: Sequence[str | os.PathLike[str]] = (),
    ) -> None:
        # Ignored directories are decided by `is_ignored_dir` below (the build's rule);
        # watchfiles' own list only spares it from looking into the common large ones.
        super().__init__(ignore_dirs=(*IGNORED_DIRS, ".git", ".venv"), ignore_entity_patterns=())
        self.include = tuple(include)
        self.exclude = tuple(exclude)
        # Longest first, so a path is taken relative to the innermost watched root.
        self.roots = sorted((os.path.abspath(r) for r in roots), key=len, reverse=True)

    def __call__(self, change: watchfiles.Change, path: str) -> bool:
        name = os.path.basename(path)
        root, relative = self._split(path)
        parts = relative.split(os.sep)[:-1]
        here = root
        for part in parts:
            here = os.path.join(here, part)
            if is_ignored_dir(here, part):
                return False
        if any(fnmatch.fnmatch(name, p) for p in IGNORED_FILES):
            return False
        candidates = (name, relative, path)
        if any(fnmatch.fnmatch(c, p) for p in self.exclude for c in candidates):
            return False
        return any(fnmatch.fnmatch(c, p) for p in self.include for c in candidates)

    def _split(self, path: str) -> tuple[str, str]:
        """(the watched root holding `path`, `path` relative to it)."""
        for root in self.roots:
            if path.startswith(root + os.sep):
                return root, path[len(root) + 1 :]
        return os.path.dirname(path), os.path.basename(path)


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
    if poll:
        yield from poll_changes(paths, source_filter, stop)
        return
    for batch in watchfiles.watch(
        *paths,
        watch_filter=source_filter,
        step=step,
        debounce=1600,
        stop_event=stop,
        raise_interrupt=False,
        rust_timeout=500,
        yield_on_timeout=False,
    ):
        yield {path for _, path in batch}


# Seconds without a new change that end a burst of saves. A writer descheduled between
# two files on a loaded machine pauses for a few milliseconds; the build of the first
# batch runs meanwhile, so a single save pays only what is left of the window. Once a
# burst has shown itself (two files or more), its pauses get longer to close it.
QUIET = 0.006
BURST_QUIET = 0.040

SETTLE = 0.25  # seconds a file that looks half-written gets to be completed
# More seconds for a file whose last version was whole: an editor (or a test) that
# truncates and then writes may be descheduled in between on a loaded machine, and an
# empty file built is every statement removed, a restart for nothing.
PATIENCE = 2.0


def settle(
    paths: Collection[str],
    seconds: float = SETTLE,
    *,
    was_whole: Callable[[str], bool] | None = None,
    patience: float = PATIENCE,
) -> None:
    """Give files that look caught mid-save (empty, or cut short of their final
    newline) up to `seconds` to be completed; their next write comes with an event of
    its own, which then builds to the same content and does nothing. Files that still
    look cut and for which `was_whole(path)` says the version before did not, get up to
    `patience` seconds more (a file kept without a final newline is not held up)."""
    deadline = time.monotonic() + seconds
    while any(looks_cut(p) for p in paths) and time.monotonic() < deadline:
        time.sleep(0.005)
    if was_whole is None:
        return
    held = [p for p in paths if looks_cut(p) and was_whole(p)]
    deadline = time.monotonic() + patience
    while held and time.monotonic() < deadline:
        time.sleep(0.01)
        held = [p for p in held if looks_cut(p)]


def looks_cut(path: str) -> bool:
    """The file at `path` is empty or does not end with a newline (a save caught half way)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return True
            f.seek(-1, os.SEEK_END)
            return f.read(1) not in (b"\n", b"\r")
    except OSError:
        return False  # deleted, or unreadable: the build says so


# Polling, for file systems without change notification (Docker or VM mounts, NFS).
# Not watchfiles' own: its poller keeps mtimes in whole seconds, so a save in the same
# second as the one before it (an edit and its quick fix) is never seen. Here each file
# is known by its mtime in nanoseconds, size and inode (a save by rename changes it).


_Stat = tuple[int, int, int]  # mtime in ns, size, inode


def poll_changes(
    paths: Sequence[str | os.PathLike[str]],
    source_filter: SourceFilter,
    stop: threading.Event,
    *,
    delay: float = 0.05,
    step: float = 0.01,
    debounce: float = 1.6,
) -> Iterator[set[str]]:
    """Yield sets of changed (added, modified, deleted) paths, scanning every `delay`
    seconds; changes are gathered until a scan `step` seconds after the last finds no
    more (or for `debounce` seconds), so a burst of saves is one batch."""
    wanted: dict[str, bool] = {}  # the filter's answer per path (it never changes)
    snapshot = _scan(paths, source_filter, wanted)
    while not stop.wait(delay):
        current = _scan(paths, source_filter, wanted)
        changed = _differ(snapshot, current)
        if not changed:
            continue
        snapshot, first = current, time.monotonic()
        while time.monotonic() - first < debounce and not stop.wait(step):
            current = _scan(paths, source_filter, wanted)
            more = _differ(snapshot, current)
            if not more:
                break
            changed |= more
            snapshot = current
        yield changed


def _scan(
    paths: Sequence[str | os.PathLike[str]], source_filter: SourceFilter, wanted: dict[str, bool]
) -> dict[str, _Stat]:
    found: dict[str, _Stat] = {}
    todo = [os.fspath(p) for p in paths]
    while todo:
        top = todo.pop()
        try:
            entries = list(os.scandir(top))
        except NotADirectoryError:
            entries = None
        except OSError:
            continue
        if entries is None:  # a watched file
            _note(top, found, source_filter, wanted)
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    if not is_ignored_dir(entry.path, entry.name):
                        todo.append(entry.path)
                    continue
            except OSError:
                continue
            _note(entry.path, found, source_filter, wanted)
    return found


def _note(
    path: str,
    found: dict[str, _Stat],
    source_filter: SourceFilter,
    wanted: dict[str, bool],
) -> None:
    keep = wanted.get(path)
    if keep is None:
        keep = wanted[path] = source_filter(watchfiles.Change.modified, path)
    if not keep:
        return
    try:
        st = os.stat(path)
    except OSError:
        return
    found[path] = (st.st_mtime_ns, st.st_size, st.st_ino)


def _differ(before: dict[str, _Stat], after: dict[str, _Stat]) -> set[str]:
    changed = {p for p, sig in after.items() if before.get(p) != sig}
    changed.update(p for p in before if p not in after)
    return changed
