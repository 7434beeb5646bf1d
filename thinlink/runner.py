"""`thinlink run`: build, then run the program with its modules loaded from the build.

The program runs in this process (a second interpreter would double the start-up
cost). Before it starts, every module this tool imported whose name the project also
provides is dropped from `sys.modules`, so `import json` in a project that has its
own `json` gets the project's, from the build, as under plain `python`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from . import _STARTUP_MODULES
from .build import Builder, BuildResult
from .image import ensure_image

__all__ = ["run_program", "purge_shadowed_modules"]

_RUNTIME = ("hotpatch",)


def run_program(
    builder: Builder,
    result: BuildResult,
    *,
    script: str | None,
    module: str | None,
    args: list[str],
) -> None:
    """Run SCRIPT or `-m` MODULE with `args`; returns or raises SystemExit like python."""
    from hotpatch import _boot

    image = ensure_image(builder.cache, result.manifest)
    builder.close()
    purge_shadowed_modules({m.name for m in result.manifest.modules})
    os.environ["HOTPATCH_BUILD"] = result.manifest.build_id
    if module is not None:
        _boot.run_module(str(image), module, args)
    else:
        assert script is not None
        _boot.run_script(str(image), script, args)


def purge_shadowed_modules(project_modules: set[str]) -> list[str]:
    """Drop modules imported since start-up that the project provides; return them."""
    tops = {name.partition(".")[0] for name in project_modules}
    dropped = []
    for name in list(sys.modules):
        top = name.partition(".")[0]
        if top in tops and name not in _STARTUP_MODULES and top not in _RUNTIME:
            del sys.modules[name]
            dropped.append(name)
    return dropped


def script_root(script: str | None) -> Path:
    """Where a run starts looking for its project: the script's directory, or the cwd."""
    if script is None:
        return Path.cwd()
    return Path(script).resolve().parent
