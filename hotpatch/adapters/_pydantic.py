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

from ._api import Adapter, Patch
from ._classes import remade_data

__all__ = ["PydanticAdapter"]


class PydanticAdapter(Adapter):
    name = "pydantic"
    modules = ("pydantic",)

    def before(self, patch: Patch) -> None:
        base = getattr(sys.modules.get("pydantic"), "BaseModel", None)
        if base is None:
            return
        for live, changed in remade_data(patch.statements, base):
            patch.needs_restart(
                f"{live.__module__}:{live.__qualname__}: the fields, configuration or "
                f"validators of a pydantic model changed ({', '.join(changed)}); its "
                "validator is built when the class is made"
            )
