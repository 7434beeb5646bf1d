"""The `thinlink` commands: one parser for all of them (`parser()`), and what each does.

`run` and `dev` read their own options up to the program (SCRIPT, or `-m MODULE`); the
words after it are the program's, as with `python` (`thinlink.launch.program_start`).
"""

from __future__ import annotations

import argparse
import os

from thinlink import launch
from thinlink.errors import BuildFailed, ConfigError

from . import console

__all__ = ["build_and_run", "dispatch", "parser"]

_DESCRIPTION = "Function-level incremental builds and hot patching for Python."
_PROGRAM_USAGE = "(SCRIPT | -m MODULE) [ARGS ...]"


def parser() -> argparse.ArgumentParser:
    """The command line of every command, with its help."""
    top = argparse.ArgumentParser(prog="thinlink", description=_DESCRIPTION)
    top.add_argument("--version", action=_Version, help="show the version and exit")
    commands = top.add_subparsers(dest="command", metavar="COMMAND", required=True)

    build = commands.add_parser(
        "build",
        help="build the project under PATH (default: the current project)",
        description="Build the project under PATH (default: the current project).",
    )
    build.add_argument("path", nargs="?", metavar="PATH", help="the project's directory")
    _cache_dir_option(build)
    build.add_argument(
        "-j", "--jobs", type=_positive, metavar="N", help="worker processes (default: all cores)"
    )
    build.add_argument("--json", action="store_true", help="print one JSON object with results")

    run = commands.add_parser(
        "run",
        help="run a program with the project's modules from the build",
        description="Run SCRIPT [ARGS] (or -m MODULE [ARGS]) with the project's modules "
        "loaded from the build (building what changed first).",
        usage=f"thinlink run [-h] [--cache-dir DIR] {_PROGRAM_USAGE}",
    )
    _cache_dir_option(run)

    dev = commands.add_parser(
        "dev",
        help="run a program and hot-patch it on every save",
        description="Run SCRIPT [ARGS] (or -m MODULE [ARGS]), watch the project, and "
        "hot-patch every process of the app on each save; restart it when a change "
        "cannot be patched.",
        usage=f"thinlink dev [options] {_PROGRAM_USAGE}",
    )
    _cache_dir_option(dev)
    dev.add_argument(
        "-w", "--watch", action="append", default=[], metavar="PATH",
        help="path to watch (repeatable; default: the project)",
    )  # fmt: skip
    dev.add_argument(
        "--include", action="append", default=[], metavar="GLOB",
        help="files to watch (repeatable; default: *.py)",
    )  # fmt: skip
    dev.add_argument(
        "--exclude", action="append", default=[], metavar="GLOB",
        help="files to ignore (repeatable)",
    )  # fmt: skip
    dev.add_argument("--poll", action="store_true", default=None, help="poll for changes")
    dev.add_argument(
        "--no-restart", action="store_true", default=None, help="never restart the app"
    )
    dev.add_argument(
        "--keys", action="store_true", default=None, help="restart on rs + Enter typed"
    )
    dev.add_argument(
        "--address",
        metavar="ADDR",
        help="where processes connect: unix (default), tcp:127.0.0.1:PORT, or another "
        "host with --allow-remote",
    )
    dev.add_argument(
        "--allow-remote", action="store_true", help="allow an --address other than loopback"
    )
    dev.add_argument("-v", "--verbose", action="store_true", help="print more detail")

    patch = commands.add_parser(
        "patch",
        help="write a patch bundle from one build to another",
        description="Write a patch bundle from one build to another and print what it "
        "changes. By default from the last good build to the working tree, which then "
        "becomes the last good build.",
    )
    _cache_dir_option(patch)
    patch.add_argument(
        "--from", dest="base", default="last-good", metavar="BUILD",
        help="build to patch from: an id, or a ref (default: last-good)",
    )  # fmt: skip
    patch.add_argument(
        "--to", dest="target", metavar="BUILD",
        help="build to patch to (default: build the working tree now)",
    )  # fmt: skip
    patch.add_argument("-o", "--output", metavar="FILE", help="write the bundle here")
    patch.add_argument("--json", action="store_true", help="print one JSON object")

    clean = commands.add_parser(
        "clean",
        help="delete the build cache of the project under PATH",
        description="Delete the build cache of the project under PATH: only what the "
        "cache holds, never other files in its directory.",
    )
    clean.add_argument("path", nargs="?", metavar="PATH", help="the project's directory")
    _cache_dir_option(clean)
    return top


def _cache_dir_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="cache directory (default: THINLINK_CACHE_DIR, then .thinlink in the project)",
    )


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


class _Version(argparse.Action):
    """`--version`, looked up only when asked (importlib.metadata is not free)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)  # type: ignore[arg-type]

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: ANN001
        import sys
        from importlib.metadata import version

        print(f"thinlink {version('thinlink')}", file=sys.stdout)
        parser.exit()


def dispatch(argv: list[str]) -> int:
    """Parse `argv` (the words after `thinlink`) and run the command; its exit status."""
    top = parser()
    program: list[str] = []
    if argv[:1] in (["run"], ["dev"]):
        command = _subparser(top, argv[0])
        start = launch.program_start(argv[1:], _valued_options(command))
        if start is not None:
            argv, program = argv[: start + 1], argv[start + 1 :]
            if argv[-1] == "--":
                argv = argv[:-1]
    args, unknown = top.parse_known_args(argv)
    if unknown:  # said by the command's own parser, with its usage line
        _subparser(top, args.command).error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command in ("run", "dev"):
        if not program:
            _subparser(top, args.command).error("a SCRIPT or -m MODULE is required")
        args.script, args.module, args.args = launch.split_program(program)
        if args.module == "":
            _subparser(top, args.command).error("argument expected for the -m option")
    return _COMMANDS[args.command](args)


def _subparser(top: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in top._subparsers._group_actions:  # type: ignore[union-attr]
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise KeyError(name)


def _valued_options(command: argparse.ArgumentParser) -> frozenset[str]:
    return frozenset(s for a in command._actions if a.nargs != 0 for s in a.option_strings)


# the commands ----------------------------------------------------------------------------


def build_command(args: argparse.Namespace) -> int:
    """`thinlink build`: build the project, print what happened; 1 if a file failed."""
    root = _project_root(args.path)
    cache_dir = launch.cache_location(root, args.cache_dir)
    check = launch.check_tree(root, cache_dir)
    if check.fresh and check.state is not None:
        check.refresh_state()
        summary = _fresh_summary(check)
    else:
        from thinlink.build.builder import Builder

        builder = Builder(root, cache_dir, jobs=args.jobs)
        builder.progress = console.progress("compiling", enabled=not args.json)
        try:
            result = builder.build(check)
        finally:
            builder.close()
        summary = result.summary()
    if args.json:
        import json  # only asked for by scripts

        console.echo(json.dumps(summary))
    else:
        _print_build(summary)
    return 1 if summary["failed"] else 0


def _project_root(path: str | None) -> str:
    """The project a command works on: PATH as given, else the one around the cwd."""
    if path is None:
        return launch.find_root()
    if not os.path.exists(path):
        raise ConfigError(f"{path}: no such directory")
    if not os.path.isdir(path):
        raise ConfigError(f"{path}: not a directory (PATH is the project's directory)")
    return launch.find_root(path, search=False)


def _fresh_summary(check: launch.TreeCheck) -> dict[str, object]:
    """The summary of a build that found nothing to do."""
    import time

    state = check.state
    assert state is not None
    return {
        "build_id": state.build_id,
        "root": check.root,
        "modules": len(check.files),
        "units": state.units,
        "compiled": 0,
        "reused": state.units,
        "relocated": 0,
        "failed": len(state.errors),
        "seconds": round((time.time_ns() - check.started) / 1e9, 4),
        "errors": list(state.errors),
        "warnings": check.warnings,
        "changed": [],
    }


def _print_build(summary: dict) -> None:
    for warning in summary["warnings"]:
        console.warning(f"warning: {warning}")
    for err in summary["errors"]:
        console.error(err)
    failed = f", {summary['failed']} failed" if summary["failed"] else ""
    console.info(
        f"build {summary['build_id']}: {summary['modules']} modules, {summary['units']} units "
        f"({summary['compiled']} compiled, {summary['relocated']} relocated, "
        f"{summary['reused']} reused{failed}) in {summary['seconds']:.2f}s"
    )


def run_command(args: argparse.Namespace) -> int:
    """`thinlink run` with options: as the launch path, with the cache they name."""
    launch.run(args.script, args.module, args.args, cache_dir=args.cache_dir)
    return 0


def build_and_run(
    check: launch.TreeCheck, *, script: str | None, module: str | None, args: list[str]
) -> None:
    """Build what `check` found changed, then run the program from the build's image."""
    from hotpatch.image import read_image
    from thinlink.build.builder import Builder
    from thinlink.build.image import ensure_image

    builder = Builder(check.root, check.cache_dir)
    builder.progress = console.progress("compiling")
    try:
        result = builder.build(check)
        for err in result.errors:
            console.warning(str(err))
        path = ensure_image(builder.cache, result.manifest)
    finally:
        builder.close()
    launch.run_from_image(read_image(path), check, script=script, module=module, args=args)


def dev_command(args: argparse.Namespace) -> int:
    """`thinlink dev`: run the app and hot-patch it on every save; its exit status."""
    from pathlib import Path

    from thinlink.build.builder import Builder
    from thinlink.config import dev_settings
    from thinlink.dev.session import DevSession

    root = launch.find_root(os.getcwd() if args.script is None else _script_dir(args.script))
    settings = dev_settings(
        Path(root),
        watch=tuple(args.watch),
        include=tuple(args.include),
        exclude=tuple(args.exclude),
        poll=args.poll,
        restart=None if args.no_restart is None else not args.no_restart,
        address=args.address,
        keys=args.keys,
    )
    _check_address(settings.address, args.allow_remote)
    target = (
        ["-m", args.module, *args.args] if args.module is not None else [args.script, *args.args]
    )
    builder = Builder(root, launch.cache_location(root, args.cache_dir), memo=True)
    return DevSession(builder, settings, target, verbose=args.verbose).run()


def _script_dir(script: str) -> str:
    path = os.path.realpath(script)
    return path if os.path.isdir(path) else os.path.dirname(path)


def _check_address(address: str | None, allow_remote: bool) -> None:
    from hotpatch.protocol import parse_address

    try:
        where = parse_address(address)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if where.is_loopback:
        return
    if not allow_remote:
        raise ConfigError(
            f"--address {address} is not loopback: anyone who can reach it can run code in "
            "the app; add --allow-remote to do it anyway"
        )
    console.warning(
        f"warning: patches are served on {address}; anyone who can reach it and holds the "
        "session secret can run code in the app"
    )


def patch_command(args: argparse.Namespace) -> int:
    """`thinlink patch`: write a bundle and print what it changes."""
    from hotpatch.bundle import save
    from thinlink.project import Project

    project = Project(launch.find_root(), cache_dir=args.cache_dir)
    try:
        result = project.patch(args.base, args.target)
    except BuildFailed as failed:
        for err in failed.result.errors:  # type: ignore[attr-defined]
            console.error(str(err))
        return 1
    if args.output is not None:
        save(result.bundle, args.output)
    summary = result.summary()
    if args.json:
        import json

        console.echo(json.dumps(summary))
    else:
        _print_patch(summary, args.output)
    return 0


def _print_patch(summary: dict, output: str | None) -> None:
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


def clean_command(args: argparse.Namespace) -> int:
    """`thinlink clean`: remove what the cache holds, and its directory if then empty."""
    root = _project_root(args.path)
    where = launch.cache_location(root, args.cache_dir)
    if not os.path.isdir(where):
        console.info(f"nothing to clean at {where}")
        return 0
    if not os.path.isfile(os.path.join(where, launch.CACHE_TAG_FILE)) and not _legacy_cache(where):
        raise ConfigError(
            f"{where} is not a thinlink cache (no {launch.CACHE_TAG_FILE}); left as is"
        )
    from thinlink.build.cachedir import clean

    kept = clean(where)
    if kept:
        console.warning(
            f"removed the cache in {where}; kept what is not the cache's: {', '.join(kept)}"
        )
    else:
        console.info(f"removed {where}")
    return 0


def _legacy_cache(where: str) -> bool:
    """A cache written before caches were tagged: only cache entries in it."""
    names = set(os.listdir(where))
    return bool(names) and names <= launch.CACHE_ENTRIES


_COMMANDS = {
    "build": build_command,
    "run": run_command,
    "dev": dev_command,
    "patch": patch_command,
    "clean": clean_command,
}
