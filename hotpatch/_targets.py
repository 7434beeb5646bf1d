"""Which live modules a module patch is for, and the patches waiting for a module's import.

A patch names its module twice: by the build's name (dotted path from the project root)
and by the file the build read. A process of the app runs that very file, under any
name (the script as `__main__`, a module as `sim` where the build says
`examples.loop.sim`): matched by real path. A cluster worker runs its own copy of the
project (Ray's unpacked working directory, a shared file system mounted elsewhere, an
installed wheel), at another path: matched by name, where the worker's name is the
build's or a dotted tail of it (`tasks` for `app.tasks`) and the file names agree. A
module matched by name is patched only if it proves to run the patch's base source
(`hotpatch.provenance`; see `_apply._check_bases`), so a wrong match is refused, never
applied; to keep third-party modules that share a tail of a project module's name out
of it (`config` for `app.config`), a tail matches only modules whose source provenance
knows or tracks.

A patch for a module the process has not imported is not lost: in a process that tracks
its imports (a cluster worker) it waits here, keyed by the source it starts from, and
is applied when the module is imported, before the import returns, if the source then
loaded is that base (or the base of an earlier waiting patch: the chain is followed).
A module being imported while a patch comes in counts as not imported yet, so the
patch waits for the end of its import instead of meeting a half-run module.

Thread safety: patches are applied under `LOCK` (here, not in `_apply`, so that an
import can take it without loading the applier); the waiting patches change under it,
and the importing thread takes it to end an import (`finish_loading`).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from types import ModuleType

from . import provenance

TYPE_CHECKING = False  # see hotpatch/__init__.py: the start-up path stays off typing
if TYPE_CHECKING:
    from ._transaction import Transaction
    from .bundle import ModulePatch

__all__ = [
    "LOCK",
    "defer",
    "finish_loading",
    "live_modules",
    "loading",
    "take_waiting",
    "waiting",
]

LOCK = threading.RLock()  # serialises apply/rollback (re-entrant: a callback may apply)
_LOCK_PATIENCE = 10.0  # seconds an import waits for a patch being applied

# The build's module name -> base digest -> the patch that starts from it.
waiting: dict[str, dict[str, ModulePatch]] = {}
# ids of modules a TrackingLoader is executing right now.
loading: set[int] = set()


def live_modules(patch: ModulePatch) -> list[tuple[ModuleType, bool]]:
    """The live modules `patch` is for, each with True where it runs the patch's own file
    (matched by path) and False where it is another copy (matched by name)."""
    found: list[tuple[ModuleType, bool]] = []
    if patch.path:
        target = os.path.realpath(patch.path)
        base = os.path.basename(target)
        for module in list(sys.modules.values()):
            file = getattr(module, "__file__", None)
            if (
                isinstance(module, ModuleType)
                and isinstance(file, str)
                and os.path.basename(file) == base  # cheap filter before resolving links
                and os.path.realpath(file) == target
                and all(module is not m for m, _ in found)
            ):
                found.append((module, True))
    if found:
        return [(m, by_path) for m, by_path in found if id(m) not in loading]
    module = sys.modules.get(patch.name)
    if isinstance(module, ModuleType) and getattr(module, "__file__", None) is None:
        return [(module, True)]  # made without a file (a test's module, a notebook's)
    return [(m, False) for m in _copies(patch) if id(m) not in loading]


def _copies(patch: ModulePatch) -> list[ModuleType]:
    """Live modules running another copy of the patch's file, found by name: the build's
    name (whatever module has it is what this process runs under it), or a dotted tail of
    it for a module whose source provenance knows or tracks (a tail is a common name)."""
    parts = patch.name.split(".")
    base = os.path.basename(patch.path) if patch.path else None
    found = []
    for start in range(len(parts)):
        module = sys.modules.get(".".join(parts[start:]))
        file = getattr(module, "__file__", None)
        if (
            isinstance(module, ModuleType)
            and isinstance(file, str)
            and os.path.basename(file) == base
            and (start == 0 or provenance.digest_of(file) is not None or provenance.tracks(file))
        ):
            found.append(module)
    return found


def defer(patch: ModulePatch, tx: Transaction) -> None:
    """Keep `patch` for when its module is imported (it starts from `base_digest`), in
    the patch's transaction (a refused or rolled back patch waits for nothing)."""
    if patch.base_digest is not None:
        tx.setitem(waiting.setdefault(patch.name, {}), patch.base_digest, patch)


def finish_loading(module: ModuleType) -> None:
    """End the import of `module` (run by a `TrackingLoader`): from now on it is live to
    patches, and the patches waiting for it are applied first."""
    # Bounded: a patch being applied that imports this very module would wait for this
    # import while this import waits for it.
    if not LOCK.acquire(timeout=_LOCK_PATIENCE):
        loading.discard(id(module))
        logging.getLogger(__name__).warning(
            "hotpatch: %s was imported while a patch was being applied and may run "
            "older code than the session's",
            module.__name__,
        )
        return
    try:
        loading.discard(id(module))
        chain = take_waiting(module) if waiting else []
        if chain:
            from ._apply import apply_waiting

            apply_waiting(module, chain)
    finally:
        LOCK.release()


def take_waiting(module: ModuleType) -> list[ModulePatch]:
    """The waiting patches that bring `module` (just imported) to the latest source the
    session sent, in order, starting from the source it runs; removed from the waiting
    ones. Empty when none start from it (its copy is the latest already, or unknown)."""
    file = getattr(module, "__file__", None)
    if not waiting or not isinstance(file, str):
        return []
    runs = provenance.digest_of(file)
    chain: list[ModulePatch] = []
    for name in [n for n in waiting if _names_match(module.__name__, n, file, waiting[n])]:
        by_base = waiting.pop(name)
        digest = runs
        while digest in by_base and len(chain) < 1000:
            chain.append(by_base[digest])
            digest = by_base[digest].digest
    return chain


def _names_match(name: str, patch_name: str, file: str, by_base: dict[str, ModulePatch]) -> bool:
    if not (patch_name == name or patch_name.endswith("." + name)):
        return False
    base = os.path.basename(file)
    return any(os.path.basename(p.path) == base for p in by_base.values())
