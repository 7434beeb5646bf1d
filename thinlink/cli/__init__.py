"""The `thinlink` command. `main(argv)` takes argv, so tests call it directly.

`thinlink run PROGRAM ...` with no options of thinlink's before the program goes straight
to the launch path (`thinlink.launch`): starting an unchanged project loads nothing but
that module and the runtime. Everything else goes through the one parser of every
command (`thinlink.cli.commands.parser`).
"""

from __future__ import annotations

import sys

from thinlink.errors import ThinlinkError

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `thinlink` command and `python -m thinlink`; exits."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv[:1] == ["run"] and len(argv) > 1:
            from thinlink import launch

            if launch.program_start(argv[1:]) == 0:
                launch.main(argv[1:])
                sys.exit(0)
        from .commands import dispatch

        status = dispatch(argv)
    except ThinlinkError as exc:
        from . import console

        console.error(f"thinlink: error: {exc}")
        status = exc.exit_status
    except BrokenPipeError:
        status = _reader_gone()
    sys.exit(status)


def _reader_gone() -> int:
    # The reader of our output went away (`| head`): nothing more can be written, and the
    # flush at exit would fail again with a traceback.
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 1
