"""Which of the project's files changed since a build read them: a stat each, no reading.

What we do: when a build reads a file, its `os.stat` taken just before (modification and
change times in nanoseconds, size, inode) is noted with the source digest of the bytes the
build read. Before each cell only the files of modules the kernel has imported are
stat-ed again, and any difference is a change. A save by rename (a new inode), a tool
that sets the modification time back (the change time cannot be set), a truncation: all
show in the stat.

What doesn't work on its own: a file system stamps files with a clock that ticks every few
milliseconds (Linux before 6.13), or every second or two (some network and FAT mounts), so
two writes in one tick of the same size look the same. A signature taken within `RACY_NS`
of the file's last write is therefore "racy" (git's word for it): the file is read and
digested at each check until a check finds it unchanged and its last write well in
the past. Only files written seconds ago pay that, and only a read of them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

from hotpatch.image import signature as stat_signature
from hotpatch.image import source_digest
from thinlink.launch import RACY_NS

__all__ = ["RACY_NS", "Signature", "TrackedFiles", "is_racy", "signature"]


Signature = tuple[int, int, int, int, int]  # hotpatch.image.signature: size, mtime, ctime, ...


def signature(path: str) -> Signature | None:
    """The stat of `path` that tells a change, or None if it cannot be stat-ed."""
    try:
        return stat_signature(os.stat(path))
    except OSError:
        return None


def is_racy(sig: Signature | None, now: int) -> bool:
    return sig is not None and now - max(sig[1], sig[2]) < RACY_NS


class TrackedFiles:
    """The stat each file had when a build last read it; the tracked ones are checked.

    Not thread-safe: its owner (the reloader) serialises the calls.
    """

    def __init__(self) -> None:
        self._noted: dict[str, Signature | None] = {}  # every file a build read
        self._prints: dict[str, str | None] = {}  # source digest of the bytes it read
        self._tracked: dict[str, Signature | None] = {}  # checked before each cell
        self._racy: set[str] = set()

    def note(self, path: str, sig: Signature | None, print_: str | None) -> None:
        """A build read `path`, which had the stat `sig` just before (and `print_` as its
        bytes' source digest, if known)."""
        self._noted[path] = sig
        self._prints[path] = print_
        if path in self._tracked:
            self._tracked[path] = sig
        if is_racy(sig, time.time_ns()) and print_ is not None:
            self._racy.add(path)
        else:
            self._racy.discard(path)

    def noted(self, path: str) -> bool:
        return path in self._noted

    def track(self, path: str) -> None:
        """Check `path` before each cell from now on (against its noted stat)."""
        self._tracked[path] = self._noted.get(path)

    def untrack(self, path: str) -> None:
        self._tracked.pop(path, None)
        self._racy.discard(path)

    @property
    def tracked(self) -> Iterable[str]:
        return self._tracked.keys()

    def is_tracked(self, path: str) -> bool:
        return path in self._tracked

    def __len__(self) -> int:
        return len(self._tracked)

    def changed(self) -> dict[str, Signature | None]:
        """The tracked files that changed since a build read them, each with its stat now
        (None: gone or unreadable). The stat is taken before anything reads the file:
        a write after it is seen by the next check."""
        found: dict[str, Signature | None] = {}
        stat = os.stat
        for path, noted in self._tracked.items():
            try:
                st = stat(path)
            except OSError:
                found[path] = None
                continue
            sig = stat_signature(st)
            if sig != noted:
                found[path] = sig
        if self._racy:
            self._check_racy(found)
        return found

    def _check_racy(self, found: dict[str, Signature | None]) -> None:
        now = time.time_ns()
        for path in list(self._racy):
            if path in found or path not in self._tracked:
                continue
            sig = signature(path)  # before the read: a write after it shows next time
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError:
                found[path] = None
                continue
            if source_digest(data) != self._prints.get(path):
                found[path] = sig
            elif sig == self._noted.get(path) and not is_racy(sig, now):
                self._racy.discard(path)  # written long enough ago: the stat tells from now on
