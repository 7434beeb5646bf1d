"""The exceptions thinlink raises.

`ThinlinkError` is the root: the CLI catches it at its boundary and prints `str()`,
which is always the message a user should read. Subclasses carry the fields a caller
needs to act on (the file and position of a syntax error, the offending setting).
"""

from __future__ import annotations

import errno

__all__ = [
    "BuildFailed",
    "BuildNotFound",
    "CacheDirError",
    "CacheFull",
    "DISK_FULL",
    "ConfigError",
    "ProjectError",
    "SourceError",
    "ThinlinkError",
]


class ThinlinkError(Exception):
    """Root of every error thinlink raises on purpose.

    `exit_status` is what the `thinlink` command exits with when it stops on this error:
    2, as for a usage error, unless a subclass says otherwise."""

    exit_status = 2


class SourceError(ThinlinkError):
    """A source file could not be compiled or read.

    Raised (or recorded in a build's failures) for syntax errors, undecodable files
    and unreadable files. `str()` is `path:line:col: message`, the format editors and
    terminals turn into a link, followed by the offending line when there is one.
    """

    def __init__(self, path: str, line: int, col: int, message: str, text: str = "") -> None:
        self.path = path
        self.line = line
        self.col = col
        self.message = message
        self.text = text.rstrip("\n")
        super().__init__(str(self))

    def __str__(self) -> str:
        head = f"{self.path}:{self.line}:{self.col}: {self.message}"
        if not self.text.strip():
            return head
        caret = " " * max(self.col - 1, 0) + "^"
        return f"{head}\n    {self.text}\n    {caret}"

    @classmethod
    def from_syntax_error(cls, path: str, exc: SyntaxError) -> SourceError:
        """Build from a `SyntaxError` raised by `compile()` on `path`."""
        # A bad coding line is reported at line 0, column -1: clamp to the file's start.
        return cls(path, max(exc.lineno or 1, 1), max(exc.offset or 1, 1), exc.msg, exc.text or "")


class ConfigError(ThinlinkError):
    """A setting (command line, environment or pyproject.toml) is invalid."""


class BuildNotFound(ThinlinkError):
    """A build id was asked for that the cache does not hold (or no build exists yet)."""


class BuildFailed(ThinlinkError):
    """The working tree did not build (a syntax error...); `result.errors` says where.

    Raised where a good build is required (making a patch). Nothing changed: the last
    good build is still the one patches start from.
    """

    def __init__(self, result: object) -> None:
        self.result = result
        errors = getattr(result, "errors", ())
        super().__init__("\n".join(str(e) for e in errors) or "the build failed")


class ProjectError(ThinlinkError):
    """No usable project here: a file-system root or the home directory with no project
    marker. Raised by `thinlink.launch.find_root`; `str()` says how to name the project."""


class CacheDirError(ThinlinkError):
    """The cache directory cannot be used: it holds files that are not a cache's. Raised
    before anything is written to it; `str()` names the directory and what to do."""


# The errnos of a write that failed for want of space (or of quota).
DISK_FULL = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})


class CacheFull(ThinlinkError):
    """The disk holding the cache is full (or the user's quota is): nothing was lost, the
    cache is as the last complete write left it. `str()` names the directory and the free
    space needed; free some and run the command again. The command exits with 75
    (EX_TEMPFAIL: try again later), distinct from a failed build's 1."""

    exit_status = 75

    def __init__(self, directory: str, needed: int | None = None) -> None:
        self.directory = directory
        self.needed = needed
        hint = f"at least {_size(needed)} more" if needed else "more free space"
        super().__init__(
            f"the disk holding the cache {directory} is full: it needs {hint}; free some "
            "space and run the command again (the cache is intact)"
        )


def _size(count: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count} bytes"
