"""The `thinlink` command. `main(args)` takes argv, so tests call it directly.

The commands, their options and help are a click application (`thinlink.cli.commands`).
A plain `thinlink build` does not load it: importing click (and what it imports)
costs more than a no-op build takes, and builds run from scripts and editors far
more often than anything else. So `main` first reads argv itself; when it is a
`build` command line whose every word it understands, it runs the build directly,
exactly as the click command would. Anything else (help, a usage error, another
command, a value it is unsure of) goes to click, which then answers as it always has.
"""

from __future__ import annotations

import errno
import math
import os
import sys

from thinlink.errors import ThinlinkError

from . import console

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from thinlink.build.builder import BuildResult

__all__ = ["main", "build_command"]  # and `cli`, the click application (see __getattr__)


def main(args: list[str] | None = None) -> None:
    """Entry point of the `thinlink` command and `python -m thinlink`."""
    argv = sys.argv[1:] if args is None else list(args)
    try:
        plain = _plain_build(argv)
        if plain is not None:
            _run_standalone(plain)  # exits
        from .commands import cli

        cli.main(args=argv, prog_name="thinlink", standalone_mode=True)
    except ThinlinkError as exc:
        console.error(f"thinlink: error: {exc}")
        sys.exit(2)
    except _ProgramInterrupted as exc:
        # Past click, which would print "Aborted!" and exit 1: the interpreter ends the
        # process by SIGINT, as under python (the program's traceback is already shown).
        raise exc.interrupt from None


def build_command(
    path: str | os.PathLike[str] | None,
    cache_dir: str | os.PathLike[str] | None,
    jobs: int | None,
    as_json: bool,
) -> int:
    """`thinlink build`: build the project under `path`, report; the exit status."""
    # What `Project(...).build()` does, on strings: importing thinlink.project (pathlib,
    # typing) would cost a no-op build a tenth of its time.
    from thinlink.build.builder import Builder
    from thinlink.build.sources import root_of
    from thinlink.config import cache_location

    root = os.path.realpath(path) if path else root_of()
    builder = Builder(root, cache_location(root, cache_dir), jobs=jobs)
    try:
        with console.progress_bar("compiling", enabled=not as_json) as progress:
            builder.progress = progress
            result = builder.build()
    finally:
        builder.close()
    if as_json:
        console.echo(_dumps(result.summary()))
    else:
        _print_build(result)
    return 0 if result.ok else 1


def _dumps(value: object) -> str:
    """`json.dumps(value)` for the plain values of a build summary.

    The json package imports `re` for its decoder, which a no-op build has no other use
    for; the encoding itself is the json module's own C function (`_json`).
    """
    if isinstance(value, str):
        return _encode_string(value)
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float) and math.isfinite(value):
        return float.__repr__(value)
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return "{" + ", ".join(f"{_encode_string(k)}: {_dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_dumps(v) for v in value) + "]"
    import json  # anything else: as json has it

    return json.dumps(value)


try:
    from _json import encode_basestring_ascii as _encode_string
except ImportError:  # pragma: no cover - an interpreter without the accelerator
    from json.encoder import py_encode_basestring_ascii as _encode_string


def _print_build(result: BuildResult) -> None:
    for warning in result.warnings:
        console.warning(f"warning: {warning}")
    for err in result.errors:
        console.error(str(err))
    m = result.manifest
    console.info(
        f"build {m.build_id}: {len(m.modules)} modules, {m.units} units "
        f"({result.compiled} compiled, {result.relocated} relocated, {result.reused} reused"
        f"{f', {len(result.errors)} failed' if result.errors else ''}) in {result.seconds:.2f}s"
    )


# `thinlink build` without click ----------------------------------------------------

_VALUED = {"--cache-dir": "cache_dir", "-j": "jobs", "--jobs": "jobs"}


def _plain_build(argv: list[str]) -> tuple[str | None, str | None, int | None, bool] | None:
    """(path, cache_dir, jobs, as_json) of a `build` command line click would accept
    as it is, or None for click to read it (and answer help or errors its own way).

    Each option at most once, values that are plainly values, and a PATH that is a
    readable directory (what the click command checks) are all it takes on.
    """
    if not argv or argv[0] != "build" or os.environ.get("_THINLINK_COMPLETE"):
        return None
    found: dict[str, str] = {}
    words = iter(argv[1:])
    for word in words:
        name, eq, value = word.partition("=")
        if word == "--json":
            field = "as_json"
        elif word.startswith("-j") and word[2:].isdigit():
            field, value = "jobs", word[2:]
        elif word in _VALUED:
            field, value = _VALUED[word], next(words, "")
        elif eq and name in _VALUED and name.startswith("--"):
            field = _VALUED[name]
        elif not word.startswith("-") and word:
            field, value = "path", word
        else:
            return None
        if field in found or not (value or field == "as_json") or value.startswith("-"):
            return None
        found[field] = value
    jobs = found.get("jobs")
    if jobs is not None and not (jobs.isdigit() and jobs.isascii() and int(jobs) >= 1):
        return None
    path, cache_dir = found.get("path"), found.get("cache_dir")
    if path is not None and not (os.path.isdir(path) and os.access(path, os.R_OK)):
        return None  # click says what is wrong with it
    if cache_dir is not None and os.path.exists(cache_dir):
        if not (os.path.isdir(cache_dir) and os.access(cache_dir, os.R_OK)):
            return None
    return path, cache_dir, None if jobs is None else int(jobs), "as_json" in found


def _run_standalone(plain: tuple[str | None, str | None, int | None, bool]) -> None:
    """Run a plain build and exit as click's standalone mode would."""
    try:
        status = build_command(*plain)
    except KeyboardInterrupt:
        console.info("")  # closes the terminal's ^C echo, then what click says
        console.info("Aborted!")
        sys.exit(1)
    except OSError as exc:
        if exc.errno != errno.EPIPE:
            raise
        # The reader went away (`| head`): nothing more can be written, and flushing at
        # exit would fail again and print a traceback.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # no file descriptor to redirect
            pass
        status = 1
    sys.exit(status)


class _ProgramInterrupted(Exception):
    """Carries the program's KeyboardInterrupt out of `thinlink run` past click."""

    def __init__(self, interrupt: KeyboardInterrupt) -> None:
        super().__init__("the program was interrupted")
        self.interrupt = interrupt
