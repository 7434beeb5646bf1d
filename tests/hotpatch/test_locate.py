"""Finding a module's live functions: the walk wanted keys take, and its fallback."""

from __future__ import annotations

import functools
from types import ModuleType

from hotpatch._locate import index_module

SOURCE = """
import functools

def plain():
    return 1

def other():
    return 2

class Shape:
    def area(self):
        return 0

def _handler():
    return "registered"

HANDLERS = {"h": _handler}
del _handler

def slow(n):
    return n

fast = functools.lru_cache(slow)
"""


def make_module(tmp_path) -> tuple[ModuleType, frozenset[str]]:
    path = str(tmp_path / "walked.py")
    module = ModuleType("walked")
    module.__file__ = path
    exec(compile(SOURCE, path, "exec"), module.__dict__)
    return module, frozenset({path})


def key(fn) -> tuple[str, int]:
    return fn.__code__.co_qualname, fn.__code__.co_firstlineno


def test_wanted_functions_are_found_by_their_names(tmp_path):
    module, files = make_module(tmp_path)
    wanted = {key(module.plain), key(module.Shape.area)}
    index = index_module(module, files, wanted)
    assert index.functions[key(module.plain)] == [module.plain]
    assert index.functions[key(module.Shape.area)] == [module.Shape.area]
    # Globals of other names that are plain functions or classes were not walked.
    assert key(module.other) not in index.functions


def test_a_function_only_a_registry_holds_is_found_by_the_full_walk(tmp_path):
    module, files = make_module(tmp_path)
    handler = module.HANDLERS["h"]
    index = index_module(module, files, {key(handler)})
    assert index.functions[key(handler)] == [handler]


def test_caches_wrapping_a_wanted_function_are_found_under_any_name(tmp_path):
    module, files = make_module(tmp_path)
    index = index_module(module, files, {key(module.slow)})
    assert index.functions[key(module.slow)] == [module.slow]
    assert index.caches_for([module.slow]) == [module.fast]
    assert isinstance(module.fast, functools._lru_cache_wrapper)


def test_without_wanted_everything_is_indexed(tmp_path):
    module, files = make_module(tmp_path)
    index = index_module(module, files)
    names = {qualname for qualname, _ in index.functions}
    assert {"plain", "Shape.area", "_handler", "slow"} <= names
