"""thinlink: the build side of thinlink + hotpatch.

A function-level incremental compiler for Python, and the tools around it:

- `launch`: the launch path (is the last build still the working tree; run a program
  from it). Standard library only: `thinlink run` of an unchanged project loads nothing
  else.
- `build/`: from source files to a manifest of cached, compiled modules.
- `patches/`: what a running process must do to move from one build to another.
- `dev/`: `thinlink dev`, the loop that watches the project and patches the running app.
- `cli/`: the `thinlink` command.
- `project`: the Python API (`Project`); `config`: settings; `errors`: exceptions.

The public API is `Project` (below) and the exceptions in `thinlink.errors`; in IPython
and Jupyter, `%load_ext thinlink` (`thinlink.notebook`).
"""

import sys as _sys

# Taken before anything else is imported, so `thinlink run` can tell the modules the
# interpreter started with from those this tool imported (see launch.purge_tool_modules).
STARTUP_MODULES = frozenset(_sys.modules)

__all__ = ["Project"]


def __getattr__(name: str) -> object:
    # Loaded on first use: the console script imports this package first, and the
    # launch path must not pay for the build side (see thinlink.launch).
    if name == "Project":
        from .project import Project

        return Project
    if name in ("load_ipython_extension", "unload_ipython_extension"):
        from . import notebook  # `%load_ext thinlink` looks these up here

        return getattr(notebook, name)
    raise AttributeError(f"module 'thinlink' has no attribute {name!r}")
