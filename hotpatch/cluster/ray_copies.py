"""Ray workers' pickled copies: the code that no patch reaches, and a patch that changes it.

A Ray worker runs a remote function or actor class from its own module when it can import
it by name (`ray_hooks` has it look there first): that module is patched like any other.
Otherwise it runs the copy the driver pickled by value when it first used it: a function
or class of the driver's script that the worker cannot import (a driver started with
`python -m pkg.app`, a worker on a host without the script's folder), or one that no
module holds by name (defined inside a function). Such a copy is no module's: its
functions have globals of their own, and a patch of the module it came from does not
touch them, so the worker would go on running the old code.

`PickledCopies`, registered in each Ray worker of a dev session, finds them when a patch
changes their code: functions whose code comes from a patched file but whose globals are
no live module's, named as the patch names them. It stops the patch in that worker, which
then needs a restart of the app, with the copies named in the reason: restarting is what
brings the new code to the workers (the job's workers are started again, and load the
code anew), where reporting the patch as applied would leave the old code serving.

The copies are known as they are made: `record` is handed every function Ray's pickle
makes by value (task functions, actor classes' methods, functions passed as arguments),
kept weakly. Where that cannot be hooked (another Ray), a patch looks for them among all
the worker's objects instead, which costs tens of milliseconds a patch.

Standard library only: Ray's objects are not touched, only the worker's functions.
"""

from __future__ import annotations

import gc
import os
import sys
import weakref
from collections.abc import Iterable
from types import FunctionType, ModuleType

from ..adapters import Adapter, Patch
from ..bundle import ModulePatch

__all__ = ["PickledCopies", "pickled_copies", "record"]

_SHOWN = 4  # copies named in the reason; more are counted
_made: weakref.WeakSet[FunctionType] = weakref.WeakSet()  # functions made by value
_recording = False  # every function made by value goes through `record`


def record(function: object) -> None:
    """Note `function`, made from a pickle by value (called by the hook of Ray's
    pickle, see `hotpatch.cluster.ray_hooks`)."""
    if type(function) is FunctionType:
        _made.add(function)


def recording() -> None:
    """Say that every function made by value from now on is handed to `record`."""
    global _recording
    _recording = True


class PickledCopies(Adapter):
    """Stops a patch that changes code this Ray worker holds only as pickled copies."""

    name = "ray"
    modules = ("ray",)

    def before(self, patch: Patch) -> None:
        copies = pickled_copies(patch.modules)
        if not copies:
            return
        shown = ", ".join(copies[:_SHOWN])
        if len(copies) > _SHOWN:
            shown += f" and {len(copies) - _SHOWN} more"
        one = len(copies) == 1
        patch.needs_restart(
            f"{shown} {'is' if one else 'are'} run by the Ray workers from "
            f"{'a copy' if one else 'copies'} the driver pickled (no module of theirs "
            f"holds {'it' if one else 'them'}), which no patch reaches: they would keep "
            f"{'its' if one else 'their'} old code"
        )


def pickled_copies(patches: Iterable[ModulePatch]) -> list[str]:
    """The functions this process holds as copies of no live module ("module:qualname",
    by the patch's module name) whose code one of `patches` changes: by qualname, or under
    a top-level name a statement of the patch defines again."""
    wanted: dict[str, tuple[ModulePatch, set[str], set[str]]] = {}
    for patch in patches:
        changed = {f.qualname for f in patch.functions}
        names = {name for s in patch.statements for name in s.defines} | set(patch.removed)
        if patch.path and (changed or names):
            for path in {patch.path, os.path.realpath(patch.path)}:
                wanted[path] = (patch, changed, names)
    if not wanted:
        return []
    modules = {id(m.__dict__) for m in list(sys.modules.values()) if isinstance(m, ModuleType)}
    found: dict[str, None] = {}
    for obj in list(_made) if _recording else gc.get_objects():
        if type(obj) is not FunctionType:
            continue
        entry = wanted.get(obj.__code__.co_filename)
        if entry is None or id(obj.__globals__) in modules:
            continue  # another file's, or a module's own function (patched with it)
        patch, changed, names = entry
        qualname = obj.__qualname__
        if qualname in changed or qualname.partition(".")[0] in names:
            found[f"{patch.name}:{qualname}"] = None
    return sorted(found)
