"""Joining a dev session from a process the app started (see `_site/sitecustomize.py`).

The session's image (`HOTPATCH_IMAGE`, rewritten by the dev server after each build)
gives the process the project's modules at the session's current build; the client
then receives every later patch, and a process started between a build and its image
is brought up to date by the server when it says hello.

A cluster engine's own programs are left out (`engine_program`): an app that starts a
local Ray cluster has Ray's raylet start its log monitor, dashboard, agents, autoscaler
monitor, prestarted workers, and `setup_worker.py`, which sets up a worker's runtime
environment and then execs `default_worker.py`. They inherit the app's environment but
run Ray's code, not the project's: the Ray workers that run the project's code join
through the job's setup hook (`hotpatch.cluster.ray_hooks`), the rest not at all.
"""

from __future__ import annotations

import os
import sys

from . import _client, _jumptable

__all__ = ["engine_program", "start"]

_ENGINES = ("ray",)  # packages whose own programs never join as the app's processes


def start() -> None:
    if engine_program() is not None:
        return
    image_path = os.environ.get("HOTPATCH_IMAGE")
    if image_path:
        from ._loader import install
        from .image import ImageError, read_image

        try:
            image = read_image(image_path)
        except (ImageError, OSError):
            image = None  # no image yet: modules compile as usual, the server catches up
        if image is not None:
            install(image)
            _jumptable.set_build(image.build_id)
    _client.start()


def engine_program() -> str | None:
    """The cluster engine ("ray") whose own program this process runs (a file of its
    package as the script, or one of its modules run with -m), or None."""
    module = _run_module()
    if module is not None:
        top = module.partition(".")[0]
        return top if top in _ENGINES else None
    script = sys.argv[0] if sys.argv else ""
    if not script.endswith(".py"):
        return None
    parts = os.path.realpath(script).split(os.sep)
    for engine in _ENGINES:
        if engine in parts[:-1] and _inside_package(engine, script):
            return engine
    return None


def _run_module() -> str | None:
    """The module given to the interpreter's -m, from its own command line (at start-up,
    `sys.argv[0]` says only "-m")."""
    args = iter(sys.orig_argv[1:])
    for arg in args:
        if arg in ("-W", "-X", "--check-hash-based-pycs"):
            next(args, None)  # the option's value
        elif arg.startswith("-m"):
            return arg[2:] or next(args, None)
        elif arg == "-" or not arg.startswith("-") or arg.startswith("-c"):
            return None  # the program: a script, stdin or -c
    return None


def _inside_package(name: str, path: str) -> bool:
    # Only reached for a script with a folder of that name in its path: the engine is
    # looked up (not imported) to tell its package from a project folder named alike.
    from importlib.util import find_spec

    try:
        spec = find_spec(name)
    except (ImportError, ValueError):
        return False
    folders = list(spec.submodule_search_locations or ()) if spec is not None else []
    real = os.path.realpath(path)
    return any(real.startswith(os.path.join(os.path.realpath(f), "")) for f in folders)
