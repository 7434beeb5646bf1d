"""The pydantic adapter: a model whose fields or configuration change needs a restart.

pydantic builds a model's validator and serializer from its fields, annotations,
`model_config` and decorated validators once, when the class is made. A patch keeps the
live class (instances, `isinstance`, the endpoints and other models that name it) and
sets the changed members on it, which would leave those built parts as they were: stale.
So before such a class is re-run, the patch is stopped with the reason; method bodies
(code swaps) and plain methods added or removed are patched as usual.
"""

from __future__ import annotations

import sys

from ..bundle import RerunMode
from ._api import Adapter, Patch
from ._classes import data_members

__all__ = ["PydanticAdapter"]


class PydanticAdapter(Adapter):
    name = "pydantic"
    modules = ("pydantic",)

    def before(self, patch: Patch) -> None:
        base = getattr(sys.modules.get("pydantic"), "BaseModel", None)
        if base is None:
            return
        for statement in patch.statements:
            if statement.mode != RerunMode.CLASS or not statement.names:
                continue
            live = statement.live(statement.names[0])
            if isinstance(live, type) and issubclass(live, base):
                changed = data_members(statement)
                if changed:
                    patch.needs_restart(
                        f"{statement.module.__name__}:{live.__qualname__}: the fields, "
                        f"configuration or validators of a pydantic model changed "
                        f"({', '.join(changed)}); its validator is built when the class is made"
                    )
