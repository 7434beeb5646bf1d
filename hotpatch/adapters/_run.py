"""Running the active adapters over one patch, inside its transaction."""

from __future__ import annotations

from collections.abc import Iterable
from types import ModuleType

from .._errors import NeedsRestart, PatchError
from .._transaction import Transaction
from ..bundle import Bundle, ModulePatch
from ._api import Adapter, Patch
from ._changes import Binding, FunctionChange, Statement
from ._registry import active

__all__ = ["Adapting"]


class Adapting:
    """The adapters active for one patch, and the `Patch` they share."""

    def __init__(
        self,
        bundle: Bundle,
        targets: Iterable[tuple[ModulePatch, list[ModuleType]]],
        tx: Transaction,
    ) -> None:
        self.adapters = active()
        statements: list[Statement] = []
        removing: list[tuple[ModuleType, str]] = []
        if self.adapters:
            for patch, modules in targets:
                for module in modules:
                    statements += [
                        Statement(
                            module, s.lineno, s.defines, s.mode, s.source, s.members, s.removed
                        )
                        for s in patch.statements
                    ]
                    removing += [(module, name) for name in patch.removed]
        self.patch = Patch(
            bundle.target_build, tuple(statements), tuple(removing), tx, bundle.modules
        )

    @property
    def holders(self) -> frozenset[str]:
        """The classes the active adapters keep in step (`Adapter.holders`)."""
        return frozenset(h for a in self.adapters for h in a.holders)

    def before(self) -> None:
        for adapter in self.adapters:
            self._call(adapter, "before")

    def after(self, functions: list[FunctionChange], bindings: list[Binding]) -> None:
        if not self.adapters:
            return
        self.patch.functions = tuple(functions)
        self.patch.bindings = tuple(bindings)
        for adapter in self.adapters:
            self._call(adapter, "after")

    def _call(self, adapter: Adapter, phase: str) -> None:
        self.patch._adapter = adapter.name
        try:
            getattr(adapter, phase)(self.patch)
        except (NeedsRestart, PatchError, KeyboardInterrupt):
            raise
        except Exception as exc:
            raise PatchError(
                f"the {adapter.name} adapter failed ({phase}): {type(exc).__name__}: {exc}"
            ) from exc
