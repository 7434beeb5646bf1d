"""A dev session's private directory: its socket, its image link, and who owns it.

`thinlink dev` keeps what only its own processes may reach in a directory of the temp
dir made for the session (`thinlink-XXXXXXXX`, mode 0700): the dev server's Unix socket
and the link to the session's build image. The directory goes when the session ends.

A session killed outright (`kill -9`) cannot remove it; the next session does. To know
which directories are stale, each holds an `owner` file naming the process that made
it (`hotpatch.lifeline.ProcessId`: host, boot, pid, start time), and only a directory
whose owner is provably gone, that this user owns, and that holds nothing but what a
session puts there is removed. Anything else found under the prefix is left alone.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from hotpatch.lifeline import ProcessId

__all__ = ["RunDir"]

PREFIX = "thinlink-"
OWNER = "owner"
SOCKET = "dev.sock"
IMAGE = "session.img"
_TEMPORARY = f".{IMAGE}."  # a link being replaced (see DevSession._write_image)


class RunDir:
    """One session's private directory. Made by `create`, removed by `remove`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, parent: str | os.PathLike[str] | None = None) -> RunDir:
        """A new private directory owned by this process."""
        path = Path(tempfile.mkdtemp(prefix=PREFIX, dir=parent))  # made 0700
        os.chmod(path, 0o700)
        made = cls(path)
        tmp = path / f".{OWNER}.tmp"
        tmp.write_text(ProcessId.of().encode() + "\n")
        os.replace(tmp, path / OWNER)
        return made

    @property
    def socket(self) -> Path:
        return self.path / SOCKET

    @property
    def image(self) -> Path:
        return self.path / IMAGE

    def remove(self) -> None:
        """Remove the directory and what a session puts in it; anything else stays."""
        _remove(self.path)

    @staticmethod
    def clean_stale(parent: str | os.PathLike[str] | None = None) -> list[Path]:
        """Remove the directories left by sessions that are provably gone; those removed."""
        root = Path(parent if parent is not None else tempfile.gettempdir())
        removed = []
        try:
            candidates = [p for p in root.iterdir() if p.name.startswith(PREFIX)]
        except OSError:
            return []
        for path in candidates:
            if _is_stale(path) and _remove(path):
                removed.append(path)
        return removed


def _is_stale(path: Path) -> bool:
    try:
        info = os.lstat(path)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            return False
        if stat.S_IMODE(info.st_mode) != 0o700:
            return False
        names = os.listdir(path)
        owner = ProcessId.parse((path / OWNER).read_text())
    except (OSError, UnicodeDecodeError):
        return False  # vanished, unreadable, or no owner file: not known to be stale
    if owner is None or not all(_is_ours(name) for name in names):
        return False
    return owner.is_gone()


def _is_ours(name: str) -> bool:
    return name in (OWNER, SOCKET, IMAGE, f".{OWNER}.tmp") or name.startswith(_TEMPORARY)


def _remove(path: Path) -> bool:
    """Remove the session's files and the directory; True if the directory went."""
    try:
        names = os.listdir(path)
    except OSError:
        return False
    for name in names:
        if _is_ours(name):
            try:
                os.unlink(path / name)
            except OSError:
                pass
    try:
        os.rmdir(path)
    except OSError:
        return False
    return True
