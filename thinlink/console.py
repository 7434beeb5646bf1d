"""Terminal output: errors, warnings, summaries and the progress bar.

Colour only on a terminal and never with `NO_COLOR` set (click strips styles when
the stream is not a terminal). `rich` is imported only when a progress bar is shown,
so scripted runs (`--json`, pipes) do not pay for it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click

__all__ = ["error", "warning", "info", "success", "progress_bar"]


def _color() -> bool | None:
    return False if os.environ.get("NO_COLOR") else None


def error(message: str) -> None:
    click.secho(message, fg="red", err=True, color=_color())


def warning(message: str) -> None:
    click.secho(message, fg="yellow", err=True, color=_color())


def success(message: str) -> None:
    click.secho(message, fg="green", err=True, color=_color())


def info(message: str) -> None:
    click.echo(message, err=True, color=_color())


@contextmanager
def progress_bar(label: str, enabled: bool = True) -> Iterator[Callable[[int, int], None] | None]:
    """A `progress(done, total)` callback drawing a bar on stderr, or None off a tty."""
    if not (enabled and sys.stderr.isatty()):
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=True,
        console=_stderr_console(),
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _stderr_console():  # noqa: ANN202
    from rich.console import Console

    return Console(stderr=True, no_color=bool(os.environ.get("NO_COLOR")))
