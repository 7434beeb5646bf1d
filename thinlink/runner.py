"""`thinlink run`: build, then run the program with its modules loaded from the build.

The program runs in this process (a second interpreter would double the start-up
cost). Before it starts, every module this tool imported since the interpreter
started is dropped from `sys.modules`, so the program imports what it imports as
under plain `python`: `import json` in a project that has its own `json` gets the
project's, from the build, and a standard-library module the tool happened to import
(`traceback`, which imports `textwrap`) is imported afresh, bound to the project's
modules where the project shadows the standard library's.

What stays: the modules the interpreter started with, the runtime (`hotpatch`), and
`threading`, whose state is interpreter-wide (its at-fork hooks, and the join of
non-daemon threads at exit, which the interpreter finds through `sys.modules`): a
second copy would split it. The tool's own module objects stay alive through its
frames, which import nothing after the purge.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from thinlink import _STARTUP_MODULES
from thinlink.build.builder import Builder, BuildResult
from thinlink.build.image import ensure_image, image_path

__all__ = ["run_program", "purge_tool_modules"]

_RUNTIME = ("hotpatch",)
_SHARED = frozenset({"threading"})
# The snapshot is taken inside this package's __init__, so the package itself is in it.
_BEFORE_US = _STARTUP_MODULES - {__package__}


def run_program(
    builder: Builder,
    result: BuildResult,
    *,
    script: str | None,
    module: str | None,
    args: list[str],
) -> None:
    """Run SCRIPT or `-m` MODULE with `args`; returns or raises SystemExit like python."""
    from hotpatch import boot


    image = image_path(builder.cache_dir, result.manifest)
    if not image.exists():
        image = ensure_image(builder.cache, result.manifest)
    builder.close()
    purge_tool_modules({m.name for m in result.manifest.modules})
    # The program runs from a build, so it can be patched: `hotpatch.hot` wraps and
    # `hotpatch.call` goes through the jump table (children inherit this).
    os.environ["HOTPATCH_ENABLED"] = "1"
    if module is not None:
        boot.run_module(str(image), module, args)
    else:
        assert script is not None
        boot.run_script(str(image), script, args)


def purge_tool_modules(project_modules: set[str]) -> list[str]:
    """Drop the modules imported since start-up (see the module docstring); return them.

    A module the project provides is dropped even if it is `threading`; one the
    interpreter started with is kept, as CPython never re-imports it from the project.
    """
    tops = {name.partition(".")[0] for name in project_modules}
    dropped = []
    for name in list(sys.modules):
        top = name.partition(".")[0]
        if name in _BEFORE_US or top in _RUNTIME or (name in _SHARED and top not in tops):
            continue
        del sys.modules[name]
        dropped.append(name)
    return dropped


def script_root(script: str | None) -> Path:
    """Where a run starts looking for its project: the cwd for `-m`; the script's
    directory; a directory run as a program (its `__main__.py`) itself."""
    if script is None:
        return Path.cwd()
    path = Path(script).resolve()
    return path if path.is_dir() else path.parent
