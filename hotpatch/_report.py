"""What a patch (or a rollback) did: the report returned by `apply()` and given to callbacks."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PatchReport"]


@dataclass(frozen=True)
class PatchReport:
    """The outcome of one `apply()` or `rollback()`. Pure data, made once by the runtime.

    Names are `module:qualname` for functions and `module:name` for top-level names;
    re-run statements are `module:line`. `needs_restart` set means nothing was applied.
    `timings` are in milliseconds. `skipped` lists modules the bundle names but this process
    has not imported; `rebound` lists `module.name` globals elsewhere (`from m import A`)
    that held the old object and now hold the new one. `adapted` says what the framework
    adapters rebuilt (see `hotpatch.adapters`); `unseen` names, per function whose
    parameters, defaults, annotations or kind changed, each object of a library that holds
    it (and may have analysed it when it was registered), where the change may not be
    seen. A `rollback()` report has
    `rolled_back` set: `patched` lists what went back to its old code, `added`/`removed`
    what came back and what went away.
    """

    build_id: str | None
    patched: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    rerun: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    needs_restart: str | None = None
    timings: dict[str, float] = field(default_factory=dict, compare=False, hash=False)
    skipped: tuple[str, ...] = ()
    rebound: tuple[str, ...] = ()
    rolled_back: bool = False
    adapted: tuple[str, ...] = ()
    unseen: tuple[str, ...] = ()

    @property
    def applied(self) -> bool:
        """True when the patch went live (it did not need a restart)."""
        return self.needs_restart is None

    def __str__(self) -> str:
        total = self.timings.get("total")
        took = f" in {total:.1f} ms" if total is not None else ""
        if self.needs_restart is not None:
            return f"build {self.build_id}: needs restart: {self.needs_restart}"
        head = "rolled back to build" if self.rolled_back else "build"
        lines = [
            f"{head} {self.build_id}: {len(self.patched)} patched, {len(self.added)} added, "
            f"{len(self.removed)} removed, {len(self.rerun)} re-run{took}"
        ]
        for label, items in (
            ("patched", self.patched),
            ("added", self.added),
            ("removed", self.removed),
            ("re-run", self.rerun),
            ("rebound", self.rebound),
            ("not imported", self.skipped),
        ):
            if items:
                lines.append(f"  {label}: {', '.join(items)}")
        lines.extend(f"  {line}" for line in self.adapted)
        lines.extend(f"  may not be seen: {line}" for line in self.unseen)
        lines.extend(f"  warning: {w}" for w in self.warnings)
        return "\n".join(lines)
