"""`%load_ext thinlink`: hot patching in IPython and Jupyter kernels.

Before each cell, the project's saved changes are built incrementally and applied as one
patch, with `thinlink dev`'s semantics; during a cell, saves go live where its code reaches
a safe point (`hotpatch.call`, `hotpatch.safepoint()`). Layers: `files` (which tracked
files changed: a stat each), `reloader` (build, patch, apply; no IPython), `messages` (what
is printed), `extension` (IPython's events, the `%thinlink` magic, the watcher thread).

IPython finds `load_ipython_extension` on the `thinlink` package, which loads this
package only then.
"""

from __future__ import annotations

__all__ = ["load_ipython_extension", "unload_ipython_extension"]


def load_ipython_extension(shell: object) -> None:
    """Called by `%load_ext thinlink`: build the project around the working directory,
    track its modules, and apply saved changes before each cell from now on."""
    from .extension import load

    load(shell)


def unload_ipython_extension(shell: object) -> None:
    """Called by `%unload_ext thinlink`: stop (the code stays as it was last patched)."""
    from .extension import unload

    unload(shell)
