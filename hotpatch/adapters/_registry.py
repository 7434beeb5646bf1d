"""Which adapters exist in this process, and which are active (their framework imported).

Three sources: the built-in adapters (loaded from this package only once their framework
is imported), adapters registered in the process (`register`), and third-party adapters
declared in the `hotpatch.adapters` entry-point group. An entry point's name is the
top-level module its adapter applies to: it is loaded only once that module has been
imported, so that looking for adapters never imports a framework. The group is read
(through `importlib.metadata`) at most once per process, and only when hot patching is
enabled: by the patch client when it starts, else by the first patch.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
from typing import Any

from ._api import Adapter

__all__ = ["ENTRY_POINT_GROUP", "active", "discover", "register"]

ENTRY_POINT_GROUP = "hotpatch.adapters"

log = logging.getLogger(__name__)

# (modules that activate it, module in this package, class): never imported before then.
_BUILTINS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("starlette", "fastapi"), "_starlette", "StarletteAdapter"),
    (("flask",), "_flask", "FlaskAdapter"),
    (("django",), "_django", "DjangoAdapter"),
    (("pydantic",), "_pydantic", "PydanticAdapter"),
    (("ray",), "_ray", "RayAdapter"),
)

_lock = threading.Lock()
_registered: list[Adapter] = []
_entry_points: list[Any] | None = None  # read once: importlib.metadata EntryPoint objects
_loaded: dict[str, Adapter | None] = {}  # by key; None: failed to load (said once)


def register(adapter: Adapter | type[Adapter]) -> Adapter:
    """Add an adapter (an `Adapter` instance, or a subclass to instantiate) for this
    process; it is active from the next patch on, once one of its modules is imported.
    Returns the instance."""
    instance = adapter() if isinstance(adapter, type) else adapter
    if not isinstance(instance, Adapter):
        raise TypeError(f"not a hotpatch adapter: {adapter!r}")
    with _lock:
        _registered.append(instance)
    return instance


def discover() -> None:
    """Read the `hotpatch.adapters` entry points (once per process)."""
    global _entry_points
    if _entry_points is not None:
        return
    try:
        from importlib.metadata import entry_points

        found = list(entry_points(group=ENTRY_POINT_GROUP))
    except Exception:  # boundary: broken metadata of some installed package
        log.warning(
            "hotpatch: could not read the %s entry points", ENTRY_POINT_GROUP, exc_info=True
        )
        found = []
    with _lock:
        if _entry_points is None:
            _entry_points = found


def active() -> list[Adapter]:
    """The adapters whose framework is imported in this process, built-ins first."""
    discover()
    imported = sys.modules
    found: list[Adapter] = []
    for modules, module, cls in _BUILTINS:
        if any(m in imported for m in modules):
            adapter = _load(f"builtin:{module}", lambda m=module, c=cls: _builtin(m, c))
            if adapter is not None:
                found.append(adapter)
    for point in _entry_points or ():
        if point.name in imported:
            adapter = _load(f"entry point:{point.name}={point.value}", point.load)
            if adapter is not None:
                found.append(adapter)
    with _lock:
        registered = list(_registered)
    found += [a for a in registered if any(m in imported for m in a.modules)]
    return found


def _builtin(module: str, cls: str) -> object:
    return getattr(importlib.import_module(f"{__package__}.{module}"), cls)


def _load(key: str, load: Any) -> Adapter | None:
    if key in _loaded:
        return _loaded[key]
    try:
        obj = load()
        adapter = obj() if isinstance(obj, type) else obj
        if not isinstance(adapter, Adapter):
            raise TypeError(f"{obj!r} is not a hotpatch.adapters.Adapter")
    except Exception:  # boundary: a third-party adapter that fails to load is left out
        log.warning("hotpatch: adapter %s could not be loaded; left out", key, exc_info=True)
        adapter = None
    _loaded[key] = adapter
    return adapter
