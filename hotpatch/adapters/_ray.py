"""The Ray adapter: remote functions and actor classes sent to the workers anew.

Ray sends a remote function or actor class to the workers once per job, when it is
first used: the driver pickles it then, and a worker that cannot load it from a module
of its own (`hotpatch.cluster.ray_hooks` has it try) loads that pickle, whenever it
starts. A patch changes the driver's function in place, but not the pickle: a worker
started after the patch (an actor created then, a task in a fresh worker, as with
`max_calls`) would load the old code. So after a patch that changes one, its export is
undone: a remote function gets a new identity, which Ray exports at its next call (the
workers load it anew, from their module or from the new pickle); an actor class is
exported again at its next `.remote()`, over the old pickle.

Workers holding a pickled copy already are `hotpatch.cluster.ray_copies`'s business:
no patch reaches those, and the app restarts.

Ray's objects are found in the globals of the patched modules (and, for a function
defined inside another, among the objects that refer to it). Nothing of Ray is imported:
its classes are taken from `sys.modules`, where the app put them.
"""

from __future__ import annotations

import gc
import sys
import uuid
from types import ModuleType

from ._api import Adapter, Patch

__all__ = ["RayAdapter"]

_UNWRAP = 4  # `__wrapped__` levels (Ray's tracing wraps a remote function's function)


class RayAdapter(Adapter):
    name = "ray"
    modules = ("ray",)

    def after(self, patch: Patch) -> None:
        remote = getattr(sys.modules.get("ray.remote_function"), "RemoteFunction", None)
        actor = getattr(sys.modules.get("ray.actor"), "ActorClass", None)
        if remote is None and actor is None:
            return
        changed = {id(f.function) for f in patch.functions}
        changed |= {id(f.replaced) for f in patch.functions if f.replaced is not None}
        # The module namespaces the patch changed (a script run as `__main__` is named
        # by the build's name in the patch: found through its functions' globals).
        spaces = {id(f.function.__globals__): f.function.__globals__ for f in patch.functions}
        for name in {b.name.partition(":")[0] for b in patch.bindings}:
            module = sys.modules.get(name)
            if isinstance(module, ModuleType):
                spaces[id(module.__dict__)] = module.__dict__
        # (namespace, class qualname) of each class a method (or member) was patched of.
        owners = {(id(f.function.__globals__), _owner(f.name)) for f in patch.functions}
        owners |= {(key, _owner(b.name)) for b in patch.bindings for key in spaces}
        owners |= {(key, b.name.partition(":")[2]) for b in patch.bindings for key in spaces}
        for obj in _candidates(patch, spaces):
            if remote is not None and isinstance(obj, remote):
                if _exported(obj, "_last_export_cluster_and_job") and _holds(obj, changed):
                    # A new identity: Ray pickles and exports it again at the next call.
                    patch.setattr(obj, "_uuid", uuid.uuid4())
                    patch.setattr(obj, "_last_export_cluster_and_job", None)
            elif actor is not None and isinstance(obj, actor):
                meta = getattr(obj, "__ray_metadata__", None)
                user = getattr(getattr(meta, "modified_class", None), "__ray_actor_class__", None)
                if (
                    _exported(meta, "last_export_cluster_and_job")
                    and isinstance(user, type)
                    and _class_changed(user, owners)
                ):
                    patch.setattr(meta, "last_export_cluster_and_job", None)


def _owner(name: str) -> str:
    """ "Class" for "module:Class.method" (a nested class's too); "" otherwise."""
    head = name.partition(":")[2].rpartition(".")[0]
    return head if head and not head.endswith("<locals>") else ""


def _candidates(patch: Patch, spaces: dict[int, dict]) -> list[object]:
    """The objects that may be Ray's wrappers of what the patch changed: the globals of
    the modules it touched, and what refers to the functions defined inside others."""
    found: dict[int, object] = {}
    for space in spaces.values():
        found.update((id(v), v) for v in list(space.values()))
    nested = [f.function for f in patch.functions if "<locals>" in f.name]
    if nested:
        found.update((id(r), r) for r in gc.get_referrers(*nested))
    return list(found.values())


def _exported(obj: object, attribute: str) -> bool:
    return obj is not None and getattr(obj, attribute, None) is not None


def _holds(remote: object, changed: set[int]) -> bool:
    function = getattr(remote, "_function", None)
    for _ in range(_UNWRAP):
        if function is None:
            return False
        if id(function) in changed:
            return True
        function = getattr(function, "__wrapped__", None)
    return False


def _class_changed(cls: type, owners: set[tuple[int, str]]) -> bool:
    """A class of the actor's (its own, or a base of the project's) was patched."""
    for klass in cls.__mro__[:-1]:
        module = sys.modules.get(klass.__module__)
        if isinstance(module, ModuleType) and (id(module.__dict__), klass.__qualname__) in owners:
            return True
    return False
