"""The exceptions hotpatch raises. `HotpatchError` is the root of all of them."""

from __future__ import annotations

__all__ = ["BundleError", "HotpatchError", "NeedsRestart", "PatchError"]


class HotpatchError(Exception):
    """Root of every error raised by hotpatch; catch this to catch them all."""


class PatchError(HotpatchError):
    """A patch was refused or failed to apply, and the process is exactly as before.

    Raised by `hotpatch.apply()` (wrong base build, a re-run statement raised, ...) and by
    `hotpatch.rollback()` (nothing to roll back). What to do: read the message, fix the code
    (or rebuild from the process's build) and send the next patch; the app keeps running.

    Fields: `reason` (what went wrong), `module` (the module being patched, if any),
    `unit` (the statement or function, if any).
    """

    def __init__(self, reason: str, module: str | None = None, unit: str | None = None) -> None:
        # All fields go to args too, so the exception pickles and copies faithfully.
        super().__init__(reason, module, unit)
        self.reason = reason
        self.module = module
        self.unit = unit

    def __str__(self) -> str:
        where = self.module or ""
        if self.unit:
            where = f"{where} ({self.unit})" if where else self.unit
        return f"{where}: {self.reason}" if where else self.reason


class BundleError(PatchError):
    """A patch bundle could not be decoded: truncated, corrupt, forged, signed with another key,
    unsigned where a key is required, or built for another Python interpreter.

    Raised by `hotpatch.bundle.decode()`/`load()` and so by `hotpatch.apply()`, always before
    any code in the bundle is unmarshalled. What to do: rebuild the bundle with this
    interpreter and the session's key; nothing was applied.
    """

    def __str__(self) -> str:
        return f"bad patch bundle: {self.reason}"


class NeedsRestart(Exception):  # noqa: N818  (an outcome, not an error)
    """A change that cannot be applied in place: the patch is undone and reported with
    `needs_restart` set to this reason (`thinlink dev` then restarts the app).

    Raised inside a patch's transaction, by the runtime or by an adapter (see
    `hotpatch.adapters`); `hotpatch.apply()` catches it and returns the report.
    """
