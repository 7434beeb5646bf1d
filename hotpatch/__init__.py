"""hotpatch: the runtime half of thinlink + hotpatch. Standard library only.

Importing it does nothing: no hooks, threads or sockets until hot patching is enabled
(by `thinlink run`/`thinlink dev`, `HOTPATCH_ENABLED=1`, or `enable()`).

Public modules, shared with the build side (which never imports a private one): `bundle`
(the patch wire format), `image` (the build image format), `protocol` (the dev session's
wire protocol), `relocation` (moving code objects to other lines), `provenance` (which
source each live module runs), `boot` (running a program from an image), `fileio`
(atomic writes), `gcpause`, and `adapters` (the API for keeping frameworks' derived
state in step with patches, and the built-in adapters). Private: `_jumptable` (call,
hot, safe points, callbacks), `_apply` with `_locate`, `_conform`, `_rebind` and
`_transaction` (applying a bundle all or nothing), `_holders` (naming what no adapter
covers), `_loader` (the import hook), `_client`, `_child` and `_site/` (joining a dev
session).

The start-up path: `_jumptable`, `image`, `_loader`, `provenance` and `boot` run before
the program's first line (`_jumptable` in production too, for `@hot`), so they import
only what the interpreter has loaded at start-up or costs nothing: no typing, dataclasses
or functools. Their annotations name types under `if TYPE_CHECKING:`, where
`TYPE_CHECKING = False` stands for typing's. `_apply` is loaded on first use.
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
