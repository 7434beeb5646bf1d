"""Terminal output: errors, warnings, summaries and the progress bar.

Colour only on a terminal and never with `NO_COLOR` set; written as `click.secho`
writes it (the same escape codes, and any escape codes stripped off a terminal), but
without importing click: a scripted build (`--json`, pipes) does not pay for it, nor
for `rich`, which is imported only when a progress bar is shown.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TextIO

__all__ = ["error", "warning", "info", "success", "echo", "progress_bar"]

_COLORS = {"red": 31, "green": 32, "yellow": 33}
_RESET = "\x1b[0m"


def error(message: str) -> None:
    _echo(message, sys.stderr, "red")


def warning(message: str) -> None:
    _echo(message, sys.stderr, "yellow")


def success(message: str) -> None:
    _echo(message, sys.stderr, "green")


def info(message: str) -> None:
    _echo(message, sys.stderr)


def echo(message: str) -> None:
    """A line on standard output (a command's result, such as its JSON)."""
    _echo(message, sys.stdout)


def _echo(message: str, stream: TextIO | None, color: str | None = None) -> None:
    if stream is None:  # no console at all (pythonw)
        return
    if _use_color(stream):
        if color is not None:
            message = f"\x1b[{_COLORS[color]}m{message}{_RESET}"
    elif "\x1b" in message:
        message = _strip_ansi(message)
    stream.write(message + "\n")
    stream.flush()


def _use_color(stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    try:
        if stream.isatty():
            return True
    except Exception:  # a stream that cannot tell: not a terminal
        pass
    # Jupyter renders escape codes though its output is no terminal.
    return type(stream).__module__.startswith("ipykernel.")


def _strip_ansi(text: str) -> str:
    import re  # only for text that holds escape codes

    return re.sub(r"\033\[[;?0-9]*[a-zA-Z]", "", text)


class progress_bar:  # noqa: N801 - used as a function: `with progress_bar(...) as update`
    """A `progress(done, total)` callback drawing a bar on stderr, or None off a tty.

        with progress_bar("compiling", enabled=not as_json) as progress:
            ...

    (A class rather than `contextlib.contextmanager`, whose import would cost a build
    that draws nothing more than the bar is worth.)
    """

    def __init__(self, label: str, enabled: bool = True) -> None:
        self._label = label
        self._enabled = enabled
        self._bar = None

    def __enter__(self) -> Callable[[int, int], None] | None:
        if not (self._enabled and sys.stderr.isatty()):
            return None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self._bar = bar = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            transient=True,
            console=_stderr_console(),
        )
        bar.__enter__()
        task = bar.add_task(self._label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return update

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
            self._bar = None


def _stderr_console():  # noqa: ANN202
    from rich.console import Console

    return Console(stderr=True, no_color=bool(os.environ.get("NO_COLOR")))
