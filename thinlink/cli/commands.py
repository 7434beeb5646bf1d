"""The `thinlink` command as a click application: every command, its options and help.

`thinlink.cli.main` is the entry point; it runs a plain `thinlink build` without
loading this module (click costs more to import than a no-op build takes), and
everything else through `cli` here.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import click

from thinlink.build.builder import Builder
from thinlink.build.sources import find_root
from thinlink.cli import _ProgramInterrupted, build_command
from thinlink.errors import ConfigError
from thinlink.project import Project

from . import console

__all__ = ["cli"]

_cache_dir_option = click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Cache directory (default: THINLINK_CACHE_DIR, then .thinlink in the project).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="thinlink")
def cli() -> None:
    """Function-level incremental builds and hot patching for Python."""


@cli.command()
@click.argument(
    "path", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@_cache_dir_option
@click.option(
    "-j", "--jobs", type=click.IntRange(min=1), help="Worker processes (default: all cores)."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the results.")
def build(path: Path | None, cache_dir: Path | None, jobs: int | None, as_json: bool) -> None:
    """Build the project under PATH (default: the current project)."""
    status = build_command(path, cache_dir, jobs, as_json)
    if status:
        sys.exit(status)


class _ProgramCommand(click.Command):
    """A command whose own options end where the program's begin, as python's do: at
    SCRIPT, or after `-m MODULE` (click alone would read `-m mod --help` as its own)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        options = [p for p in self.params if isinstance(p, click.Option)]
        valued = {o for p in options if not p.is_flag for o in p.opts}
        i = 0
        while i < len(args) and args[i].startswith("-") and args[i] != "--":
            if args[i].startswith("-m"):  # `-m MODULE` or `-mMODULE`: a `--` after it
                end = i + 2 if args[i] == "-m" else i + 1
                if end <= len(args):
                    args = [*args[:end], "--", *args[end:]]
                break
            i += 2 if args[i] in valued else 1
        return super().parse_args(ctx, args)


@cli.command(
    cls=_ProgramCommand,
    context_settings={"allow_interspersed_args": False},
)
@_cache_dir_option
@click.option("-m", "module", metavar="MODULE", help="Run a library module as a script.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def run(cache_dir: Path | None, module: str | None, args: tuple[str, ...]) -> None:
    """Run SCRIPT [ARGS] (or -m MODULE [ARGS]) with the project's modules from the build."""
    from thinlink.runner import run_program, script_root

    if module is None and not args:
        raise click.UsageError("a SCRIPT or -m MODULE is required")
    script = None if module is not None else args[0]
    program_args = list(args if module is not None else args[1:])
    project = Project(find_root(script_root(script)), cache_dir=cache_dir)
    builder = project.builder()
    with console.progress_bar("compiling") as progress:
        builder.progress = progress
        result = builder.build()
    for err in result.errors:
        console.warning(str(err))
    try:
        run_program(builder, result, script=script, module=module, args=program_args)
    except KeyboardInterrupt as exc:
        raise _ProgramInterrupted(exc) from None


@cli.command(cls=_ProgramCommand, context_settings={"allow_interspersed_args": False})
@_cache_dir_option
@click.option("-m", "module", metavar="MODULE", help="Run a library module as a script.")
@click.option(
    "-w", "--watch", multiple=True, help="Path to watch (repeatable; default: the project)."
)
@click.option("--include", multiple=True, help="Glob of files to watch (repeatable; default *.py).")
@click.option("--exclude", multiple=True, help="Glob of files to ignore (repeatable).")
@click.option("--poll", is_flag=True, default=None, help="Poll for changes (Docker/VM mounts).")
@click.option("--no-restart", is_flag=True, default=None, help="Never restart the app.")
@click.option(
    "--keys", is_flag=True, default=None, help="Restart on rs + Enter typed on the terminal."
)
@click.option(
    "--address",
    help="Where processes connect: unix (default), tcp:127.0.0.1:PORT, or another host "
    "with --allow-remote.",
)
@click.option("--allow-remote", is_flag=True, help="Allow an --address other than loopback.")
@click.option("-v", "--verbose", is_flag=True, help="Print more detail.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def dev(
    cache_dir: Path | None,
    module: str | None,
    watch: tuple[str, ...],
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    poll: bool | None,
    no_restart: bool | None,
    keys: bool | None,
    address: str | None,
    allow_remote: bool,
    verbose: bool,
    args: tuple[str, ...],
) -> None:
    """Run SCRIPT [ARGS] (or -m MODULE [ARGS]) and hot-patch it on every save."""
    from thinlink.config import dev_settings
    from thinlink.dev.session import DevSession
    from thinlink.runner import script_root

    if module is None and not args:
        raise click.UsageError("a SCRIPT or -m MODULE is required")
    script = None if module is not None else args[0]
    project = Project(find_root(script_root(script)), cache_dir=cache_dir)
    settings = dev_settings(
        project.root,
        watch=watch,
        include=include,
        exclude=exclude,
        poll=poll,
        restart=None if no_restart is None else not no_restart,
        address=address,
        keys=keys,
    )
    _check_address(settings.address, allow_remote)
    target = ["-m", module, *args] if module is not None else list(args)
    builder = Builder(project.root, project.cache_dir, memo=True)
    session = DevSession(builder, settings, target, verbose=verbose)
    sys.exit(session.run())


def _check_address(address: str | None, allow_remote: bool) -> None:
    import ipaddress

    if address is None or address == "unix" or address.startswith("unix:"):
        return
    host = address.removeprefix("tcp:").rpartition(":")[0].strip("[]")
    if host in ("localhost", ""):
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass  # a host name: not known to be loopback
    if not allow_remote:
        raise ConfigError(
            f"--address {address} is not loopback: anyone who can reach it can run code in "
            "the app; add --allow-remote to do it anyway"
        )
    console.warning(
        f"warning: patches are served on {address}; anyone who can reach it and holds the "
        "session secret can run code in the app"
    )


@cli.command()
@click.argument(
    "path", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@_cache_dir_option
def clean(path: Path | None, cache_dir: Path | None) -> None:
    """Delete the build cache of the project under PATH."""
    project = Project(path or find_root(), cache_dir=cache_dir)
    where = project.cache_dir
    if where.exists():
        # Whatever the settings say, never remove the project or a directory that is
        # not a cache (`--cache-dir .`, THINLINK_CACHE_DIR=$HOME).
        if where == project.root or where in project.root.parents or not _is_cache(where):
            raise ConfigError(f"{where} does not look like a thinlink cache; not removing it")
        shutil.rmtree(where)
        console.info(f"removed {project.cache_dir}")
    else:
        console.info(f"nothing to clean at {project.cache_dir}")


def _is_cache(path: Path) -> bool:
    """Empty, or holding what a cache holds (the store, manifests or refs)."""
    names = {p.name for p in path.iterdir()}
    return not names or bool(names & {"objects", "builds", "refs"})


@cli.command()
@_cache_dir_option
@click.option(
    "--from",
    "base",
    default="last-good",
    show_default=True,
    help="Build to patch from (id or ref).",
)
@click.option("--to", "target", help="Build to patch to (default: build the working tree now).")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write the bundle here."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object describing the patch.")
def patch(
    cache_dir: Path | None, base: str, target: str | None, output: Path | None, as_json: bool
) -> None:
    """Write a patch bundle from one build to another and print what it changes."""
    from hotpatch.bundle import save
    from thinlink.errors import BuildFailed

    project = Project(find_root(), cache_dir=cache_dir)
    try:
        result = project.patch(base, target)
    except BuildFailed as failed:
        for err in failed.result.errors:  # type: ignore[attr-defined]
            console.error(str(err))
        sys.exit(1)
    if output is not None:
        save(result.bundle, output)
    summary = result.summary()
    if as_json:
        click.echo(json.dumps(summary))
        return
    _print_patch(summary, output)


def _print_patch(summary: dict, output: Path | None) -> None:
    console.info(f"patch {summary['base_build']} -> {summary['target_build']}")
    for module in summary["modules"]:
        for kind in ("patched", "rerun", "removed"):
            for item in module[kind]:
                console.info(f"  {kind:8} {module['module']}:{item}")
        for warning in module["warnings"]:
            console.warning(f"  warning: {warning}")
    if summary["needs_restart"]:
        console.warning(f"  needs restart: {summary['needs_restart']}")
    if output is not None:
        console.info(f"wrote {output}")
