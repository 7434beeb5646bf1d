"""Terminal output: messages on stderr, results on stdout, and the progress bar.

On a terminal, errors, warnings and successes are styled by rich, which also honours
`NO_COLOR`; off a terminal (pipes, CI, tests) they are plain lines. rich is imported on
the first styled line or bar, not before: a build that compiles nothing, or whose output
is read by a program, never loads it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

__all__ = ["echo", "error", "info", "progress", "success", "warning"]

_consoles: dict[bool, object] = {}  # rich consoles by "is it stderr", made on first use


def error(message: str) -> None:
    _line(message, sys.stderr, "red")


def warning(message: str) -> None:
    _line(message, sys.stderr, "yellow")


def success(message: str) -> None:
    _line(message, sys.stderr, "green")


def info(message: str) -> None:
    _line(message, sys.stderr, None)


def echo(message: str) -> None:
    """A line on standard output (a command's result, such as its JSON)."""
    _line(message, sys.stdout, None)


def _line(message: str, stream: object, style: str | None) -> None:
    if stream is None:  # no console at all (pythonw)
        return
    if style is not None and _is_terminal(stream):
        _console(stream is sys.stderr).print(
            message, style=style, markup=False, highlight=False, soft_wrap=True
        )
        return
    stream.write(message + "\n")
    stream.flush()


def _is_terminal(stream: object) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed
        return False


def _console(stderr: bool):  # noqa: ANN202 - a rich Console, typed where rich is loaded
    console = _consoles.get(stderr)
    if console is None:
        from rich.console import Console

        console = _consoles[stderr] = Console(stderr=stderr)
    return console


def progress(label: str, enabled: bool = True) -> Callable[[int, int], None] | None:
    """A `progress(done, total)` callback drawing a bar on stderr, or None off a terminal.

    The bar appears on the first call (a build that compiles nothing draws none) and goes
    when the work is done; call `progress(total, total)` at the end.
    """
    if not (enabled and _is_terminal(sys.stderr)):
        return None
    state: dict[str, object] = {}

    def update(done: int, total: int) -> None:
        if "bar" not in state:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            bar = Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                transient=True,
                console=_console(True),
            )
            bar.start()
            state["bar"], state["task"] = bar, bar.add_task(label, total=total)
        bar = state["bar"]
        bar.update(state["task"], completed=done, total=total)  # type: ignore[attr-defined]
        if done >= total:
            bar.stop()  # type: ignore[attr-defined]
            del state["bar"]

    return update
