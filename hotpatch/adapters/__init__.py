"""Framework adapters: keep what a framework derived from the app's functions in step with
each patch (standard library only; importing this imports no framework).

Built in: FastAPI/Starlette (routes re-analysed, the OpenAPI schema dropped), Django (URL
resolvers rebuilt; model changes need a restart), Flask (routes and blueprints kept in the
URL map after the first request), pydantic (model changes need a restart), Ray (remote
functions and actor classes sent to the workers anew). Each is active in a process only
once its framework is imported there.

Writing one (for Typer/Click commands, Celery tasks, ...)::

    from hotpatch.adapters import Adapter, Patch

    class ClickAdapter(Adapter):
        name = "click"
        modules = ("click",)            # active once `click` is imported
        holders = ("click.core.Command",)

        def after(self, patch: Patch) -> None:
            for change in patch.signature_changes():
                for command in commands_calling(change.function):
                    patch.setattr(command, "params", params_from(change.function))
                    patch.note(f"rebuilt the options of {command.name}")

Register it in the process (`hotpatch.adapters.register(ClickAdapter)`), or from a
package, as an entry point in the `hotpatch.adapters` group named after the module it
applies to (pyproject.toml: `[project.entry-points."hotpatch.adapters"] click =
"mypkg.hot:ClickAdapter"`): it is loaded only when hot patching is enabled and that
module has been imported.
"""

from .._errors import NeedsRestart as NeedsRestart
from ._api import Adapter as Adapter
from ._api import Patch as Patch
from ._changes import Binding as Binding
from ._changes import FunctionChange as FunctionChange
from ._changes import Interface as Interface
from ._changes import Statement as Statement
from ._registry import ENTRY_POINT_GROUP as ENTRY_POINT_GROUP
from ._registry import active as active
from ._registry import register as register

__all__ = [
    "ENTRY_POINT_GROUP",
    "Adapter",
    "Binding",
    "FunctionChange",
    "Interface",
    "NeedsRestart",
    "Patch",
    "Statement",
    "active",
    "register",
]
