"""hotpatch: the runtime half of thinlink + hotpatch. Standard library only.

Importing it does nothing: no hooks, threads or sockets until hot patching is enabled
(by `thinlink run`/`thinlink dev`, `HOTPATCH_ENABLED=1`, or `enable()`).

Layers: `bundle` (the public wire format the build side writes), `_jumptable` (call,
hot, safe points, callbacks), `_apply` with `_locate`, `_conform` and `_transaction`
(applying a bundle all or nothing), `_image`, `_loader` and `_boot` (running a program
from a build). `_apply` is loaded on first use: it is not free to import.
"""

from ._errors import BundleError as BundleError
from ._errors import HotpatchError as HotpatchError
from ._errors import PatchError as PatchError
from ._jumptable import PendingPatch as PendingPatch
from ._jumptable import call as call  # operator.call unless enabled: enable() rebinds it
from ._jumptable import current_build as current_build
from ._jumptable import enable as enable
from ._jumptable import enabled as enabled
from ._jumptable import hot as hot
from ._jumptable import on_patch as on_patch
from ._jumptable import safepoint as safepoint
from ._jumptable import set_build as set_build
from ._jumptable import submit as submit

__all__ = [
    "BundleError",
    "HotpatchError",
    "PatchError",
    "PatchReport",
    "PendingPatch",
    "apply",
    "call",
    "current_build",
    "enable",
    "enabled",
    "hot",
    "on_patch",
    "rollback",
    "safepoint",
    "set_build",
    "submit",
]


def __getattr__(name: str) -> object:
    if name in ("apply", "rollback"):
        from . import _apply

        return getattr(_apply, name)
    if name == "PatchReport":
        from ._report import PatchReport

        return PatchReport
    raise AttributeError(f"module 'hotpatch' has no attribute {name!r}")
