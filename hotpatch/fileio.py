"""Writing a file so that readers see the old version or the new one, never a part.

Shared by everything either side writes for others to read: build images, patch bundles,
manifests, refs and tree states.
"""

from __future__ import annotations

import os

__all__ = ["write_atomic"]


def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `path`. Operation is atomic: the bytes go to a new file in the same
    directory (created if missing), which then replaces `path` in one rename.

    On failure (a full disk) the temporary file is removed and `path` is as it was.
    Not `tempfile`: its imports cost a no-op build more than the write.
    """
    path = os.fspath(path)
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.urandom(6).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode)
    try:
        with open(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
