"""The adapter API: `Adapter` (what a framework adapter implements) and `Patch` (what it gets).

A framework often derives state from a function when the function is registered: FastAPI
analyses an endpoint's signature into a `Dependant`, Django memoises URL resolvers, Flask
keeps a URL map. A patch that changes the function's code in place leaves that derived
state as it was. An adapter brings it in step, inside the patch's transaction: what it
changes through `Patch` is undone with the patch (a failure anywhere rolls the whole
patch back, and `hotpatch.rollback()` undoes it later).
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING, Any, NoReturn

from .._errors import NeedsRestart
from ._changes import Binding, FunctionChange, Statement

if TYPE_CHECKING:
    from .._transaction import Transaction
    from ..bundle import ModulePatch

__all__ = ["Adapter", "NeedsRestart", "Patch"]


class Adapter:
    """Keeps what a framework derived from the app's functions in step with each patch.

    Subclass it, set `name` and `modules`, and override `before` and/or `after`. An
    adapter is active in a process only once one of its `modules` has been imported there
    (the runtime never imports a framework); it is then called for every patch:
    `before(patch)` before anything changes, `after(patch)` once every module is patched.
    Both run inside the patch's transaction: make changes through `patch.setattr` and the
    like (undone with the patch), add lines to the report with `patch.note`, and call
    `patch.needs_restart(reason)` for a change that cannot be applied in place. Any other
    exception fails the patch, which is then undone everywhere.

    `holders` names the classes (`"module.Qualname"`) or modules (every class defined in
    one, or in a module below it) whose instances this adapter keeps in step: the
    runtime's warning about library objects that hold a function whose signature changed
    (and may not see the change) leaves them out.
    """

    name: str = "adapter"
    modules: tuple[str, ...] = ()
    holders: tuple[str, ...] = ()

    def before(self, patch: Patch) -> None:
        """Called before the patch changes anything (`patch.functions` and
        `patch.bindings` are still empty; `patch.statements` are those about to re-run)."""

    def after(self, patch: Patch) -> None:
        """Called after every module of the patch is patched, before it is committed."""

    def __repr__(self) -> str:
        return f"<hotpatch adapter {self.name!r} for {', '.join(self.modules)}>"


class Patch:
    """One patch as an adapter sees it, inside the patch's transaction.

    Read: `build_id` (the build the patch moves to), `statements` (the top-level
    statements re-run), `removing` (the `(module, name)` globals it deletes), `modules`
    (the bundle's `hotpatch.bundle.ModulePatch`es as sent, whether or not a live module
    here takes them), and, in `after`, `functions` (`FunctionChange`: the live functions
    given new code) and `bindings` (`Binding`: names added, removed, replaced or merged,
    module globals and class members alike).

    Change: `setattr`, `delattr`, `setitem`, `delitem` are undone with the patch;
    `on_undo(callback)` runs `callback()` if the patch is undone (for state rebuilt rather
    than restored, such as a cache to clear again). Report: `note(line)` adds a line
    saying what the adapter rebuilt, `warn(line)` a warning, and `needs_restart(reason)`
    stops the patch (it is undone and reported as needing a restart).

    Not thread-safe; valid only during the call it is given to.
    """

    def __init__(
        self,
        build_id: str,
        statements: tuple[Statement, ...],
        removing: tuple[tuple[Any, str], ...],
        tx: Transaction,
        modules: tuple[ModulePatch, ...] = (),
    ) -> None:
        self.build_id = build_id
        self.statements = statements
        self.removing = removing
        self.modules = modules
        self.functions: tuple[FunctionChange, ...] = ()
        self.bindings: tuple[Binding, ...] = ()
        self._tx = tx
        self._adapter = "adapter"
        self.notes: list[str] = []
        self.warnings: list[str] = []

    # -- questions --------------------------------------------------------------------------

    def signature_changes(self) -> list[FunctionChange]:
        """The functions whose parameters, defaults, annotations or kind changed."""
        return [f for f in self.functions if f.signature_changed]

    def obsolete(self) -> list[object]:
        """Objects this patch took out of the app: the old values of names removed or
        replaced, the old functions of methods rebound, and the throwaway objects of
        merged re-runs (whatever holds one of them holds something the app no longer has)."""
        found: list[object] = []
        for binding in self.bindings:
            if binding.kind in ("removed", "replaced"):
                found.append(binding.old)
            elif binding.kind == "merged":
                found.append(binding.new)
        found += [f.replaced for f in self.functions if f.replaced is not None]
        return found

    def successor(self, obj: object) -> object | None:
        """What replaces `obj` in the app after this patch: the new object of a replaced
        binding or rebound method, the live object a throwaway was merged into; None for
        an object removed (or not obsolete)."""
        for binding in self.bindings:
            if binding.kind == "replaced" and binding.old is obj:
                return binding.new
            if binding.kind == "merged" and binding.new is obj:
                return binding.old
        for change in self.functions:
            if change.replaced is obj:
                return change.function
        return None

    def instances(self, cls: type | tuple[type, ...], *, factory_made: bool = True) -> list[Any]:
        """The live instances of `cls` the app works with: those its modules' globals hold
        (`app = Flask(__name__)`), or, where no global holds one (and `factory_made`),
        every live instance: an app made by a factory (`create_app()`) is held only by the
        server running it.

        The second way walks the objects the garbage collector tracks (tens of ms in a
        large process), so it is taken only when the first finds nothing. Objects are
        matched by their type, never by their `__class__` (a proxy such as Flask's
        `current_app` is not asked what it stands for)."""
        from .._origin import app_modules

        found: dict[int, Any] = {}
        for module in app_modules():
            for value in list(vars(module).values()):
                if issubclass(type(value), cls):
                    found[id(value)] = value
        if not found and factory_made:
            import gc

            found = {id(o): o for o in gc.get_objects() if issubclass(type(o), cls)}
        return list(found.values())

    # -- changes, undone with the patch -----------------------------------------------------

    def setattr(self, obj: object, name: str, value: object) -> None:
        """`obj.name = value`, undone with the patch."""
        self._tx.setattr(obj, name, value)

    def delattr(self, obj: object, name: str) -> None:
        """`del obj.name`, undone with the patch."""
        self._tx.delattr(obj, name)

    def setitem(self, mapping: MutableMapping[Any, Any], key: object, value: object) -> None:
        """`mapping[key] = value`, undone with the patch."""
        self._tx.setitem(mapping, key, value)

    def delitem(self, mapping: MutableMapping[Any, Any], key: object) -> None:
        """`del mapping[key]`, undone with the patch."""
        self._tx.delitem(mapping, key)

    def on_undo(self, callback: Callable[[], object]) -> None:
        """Call `callback()` if this patch is undone (now, because it failed, or later by
        `hotpatch.rollback()`), in order with the other undo steps."""
        self._tx.on_rollback(callback)

    # -- the report -------------------------------------------------------------------------

    def note(self, line: str) -> None:
        """Add a line to the report saying what this adapter did ("rebuilt GET /items")."""
        self.notes.append(f"{self._adapter}: {line}")

    def warn(self, line: str) -> None:
        """Add a warning to the report."""
        self.warnings.append(f"{self._adapter}: {line}")

    def needs_restart(self, reason: str) -> NoReturn:
        """Stop: this patch cannot be applied in place. It is undone, and reported as
        needing a restart for `reason` (`thinlink dev` restarts the app)."""
        raise NeedsRestart(f"{self._adapter}: {reason}")
