"""Names a patch adds to a module, brought into the notebook where a cell star-imported it.

What python does: `from m import *` copies the module's public names into the namespace
once. A function added to `m` later is not there, and a notebook user who saved it and
calls it in the next cell gets a `NameError` (`%autoreload 3` brings such names in).

What we do: each cell's source is checked for star-imports (a substring test, then `ast`
only for the cells that pass it). After each patch, the names it added to a module a
cell star-imported, and that the star-import would copy now (listed in its `__all__`, or
public where it has none), are bound in the notebook's namespace, unless the user bound
the name to something else. Names that changed are kept in step by the runtime already
(`PatchReport.rebound`). A rollback takes back the names brought in for what it removes.

What doesn't work: star-imports made by code the cells run (inside a function, `exec`)
are not seen.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import MutableMapping
from types import ModuleType

import hotpatch

__all__ = ["StarImports"]


class StarImports:
    """The modules the cells star-imported, and the names brought in for them."""

    def __init__(self) -> None:
        self.modules: set[str] = set()  # as the cells named them
        self._brought: dict[str, object] = {}  # name -> the object bound in the namespace

    def note_cell(self, source: str) -> None:
        """Take in the star-imports of a cell about to run."""
        if "import" not in source or "*" not in source:
            return
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError):
            return  # IPython's own syntax (magics) or a typo: the cell says so itself
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ImportFrom)
                and node.level == 0
                and node.module
                and any(alias.name == "*" for alias in node.names)
            ):
                self.modules.add(node.module)

    def bring_in(
        self, namespace: MutableMapping[str, object], report: hotpatch.PatchReport
    ) -> list[str]:
        """Bind in `namespace` the names `report` added to star-imported modules; return
        them (as `module.name`)."""
        if not self.modules or report.needs_restart is not None or report.rolled_back:
            return []
        brought = []
        for entry in report.added:
            module_name, _, name = entry.partition(":")
            module = self._star_imported(module_name)
            if module is None or "." in name or not _exported(module, name):
                continue
            value = vars(module).get(name, _MISSING)
            if value is _MISSING or name in namespace:
                continue  # gone again, or the user's own name: theirs
            namespace[name] = value
            self._brought[name] = value
            brought.append(f"{module.__name__}.{name}")
        return brought

    def take_back(
        self, namespace: MutableMapping[str, object], report: hotpatch.PatchReport
    ) -> None:
        """Unbind the names brought in for what the rollback `report` removed."""
        for entry in report.removed:
            _, _, name = entry.partition(":")
            value = self._brought.get(name, _MISSING)
            if value is not _MISSING and namespace.get(name, _MISSING) is value:
                del namespace[name]
                del self._brought[name]

    def _star_imported(self, module_name: str) -> ModuleType | None:
        # The build names a module from the project's root; a cell may import it by a
        # shorter name (the notebook's directory is on sys.path): a dotted tail of it.
        for name in self.modules:
            if module_name == name or module_name.endswith("." + name):
                module = sys.modules.get(name)
                if isinstance(module, ModuleType):
                    return module
        return None


_MISSING = object()


def _exported(module: ModuleType, name: str) -> bool:
    """Whether `from module import *` copies `name` now."""
    names = vars(module).get("__all__")
    if names is not None:
        try:
            return name in names
        except TypeError:
            return False
    return not name.startswith("_")
