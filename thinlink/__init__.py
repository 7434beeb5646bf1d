"""thinlink: the build side of thinlink + hotpatch.

A function-level incremental compiler for Python. Layers, bottom up:

- `sources`: finding a project's module files; `compiler`: compiling modules and
  fragments, deriving units; `units`: the data (segments, units, module records);
- `cache`: the content-addressed store; `manifest`: builds and refs;
- `rebuild`: one module, whole or only what an edit touched; `build`: a project;
- `image`, `runner`: running a program from a build; `cli`: the `thinlink` command
  (`commands`: its click application, which a plain `thinlink build` does not load).

The public API is `Project` (below) and the exceptions in `thinlink.errors`; in IPython
and Jupyter, `%load_ext thinlink` (`thinlink.notebook`).
"""

import sys as _sys

# Taken before anything else is imported, so `thinlink run` can tell the modules the
# interpreter started with from those this tool imported (see runner.py).
_STARTUP_MODULES = frozenset(_sys.modules)

__all__ = ["Project"]


def __getattr__(name: str) -> object:
    # Loaded on first use: `python -m thinlink` and the console script import this
    # package first, and a no-op build should not pay for what it does not use.
    if name == "Project":
        from .project import Project

        return Project
    if name in ("load_ipython_extension", "unload_ipython_extension"):
        from . import notebook  # `%load_ext thinlink` looks these up here

        return getattr(notebook, name)
    raise AttributeError(f"module 'thinlink' has no attribute {name!r}")
