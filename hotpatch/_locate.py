"""Find the live function objects of a module, wherever the module keeps them.

What we do: walk from the module's globals into what can hold a function defined in the
module's file: classes defined in the module (and their nested classes and metaclasses),
classmethod/staticmethod/property/cached_property/partial objects, bound methods,
`__wrapped__` chains (functools.wraps, lru_cache, singledispatch registries), the closure
cells of wrappers made without functools.wraps, and small containers (a dict of handlers, a
list of callbacks). The walk is depth-limited and guarded against cycles; it indexes only
functions whose `co_filename` is the module's file, by (qualname, first line).

What doesn't work: a closure made by a factory and stored anywhere else (an instance, another
module's registry) is not reachable from the module. For those, `closures_of()` asks the
garbage collector which functions use a given old code object: a full heap walk, so it is done
once per patch and only for nested functions (qualname with `<locals>`).

Also here, for the rare cases identity cannot answer alone: `imports_name` (did a module
bind a name by `from m import name`? read from its code) and `containers_holding` (a heap walk
for the registries a class-creation hook stored a throwaway class in).
"""

from __future__ import annotations

import functools
import gc
import os
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from types import CodeType, FunctionType, MethodType, ModuleType

from ._members import is_descriptor, parts

__all__ = [
    "Index",
    "closures_of",
    "containers_holding",
    "imports_name",
    "index_module",
    "module_files",
    "unwrap_chain",
]

_MAX_DEPTH = 10  # class nesting + wrapper chains + closures; deeper is not worth the walk
_MAX_CHAIN = 8
_MAX_CONTAINER = 1000  # a bigger container is data, not a registry of functions
_CONTAINERS = (list, tuple, set, frozenset, dict)
# Objects that hold a function in `func` besides the class-member descriptors (`_members`).
_FUNC_HOLDERS = (functools.partial, functools.partialmethod, functools.singledispatchmethod)

Key = tuple[str, int]
# Globals that hold at most the functions of their own qualname: skipped by the wanted-only
# walk of index_module unless their name is wanted.
_PLAIN_GLOBALS = (FunctionType, type, ModuleType, int, str, float, bool, bytes, type(None))


@dataclass
class Index:
    """Live functions of one module by (co_qualname, co_firstlineno), and the cache wrappers
    (lru_cache, cache) found on the way."""

    functions: dict[Key, list[FunctionType]] = field(default_factory=dict)
    caches: list[object] = field(default_factory=list)

    def nested_codes(self, keys: set[Key], files: frozenset[str]) -> list[CodeType]:
        """Code objects with one of `keys` nested in the indexed functions' code (the code a
        factory uses for the closures it makes)."""
        found: dict[int, CodeType] = {}
        stack = [fn.__code__ for fns in self.functions.values() for fn in fns]
        seen: set[int] = set()
        while stack:
            code = stack.pop()
            if id(code) in seen:
                continue
            seen.add(id(code))
            if (code.co_qualname, code.co_firstlineno) in keys and code.co_filename in files:
                found[id(code)] = code
            stack.extend(c for c in code.co_consts if isinstance(c, CodeType))
        return list(found.values())

    def caches_for(self, patched: Iterable[object]) -> list[object]:
        """The cache wrappers whose `__wrapped__` chain reaches one of `patched`."""
        ids = {id(fn) for fn in patched}
        return [c for c in self.caches if any(id(x) in ids for x in unwrap_chain(c))]


def module_files(module: ModuleType, path: str | None = None) -> frozenset[str]:
    """The spellings of the module's source file that `co_filename` may carry."""
    names = {n for n in (getattr(module, "__file__", None), path) if isinstance(n, str) and n}
    names |= {os.path.abspath(n) for n in names} | {os.path.realpath(n) for n in names}
    return frozenset(names)


def imports_name(module: ModuleType, sources: Iterable[str], name: str) -> bool | None:
    """Whether `module`'s top-level code binds `name` by `from S import name` (or
    `from S import *`) for one of the module names `sources`; None when its code is not at
    hand (no loader we know). Used where identity cannot tell: two modules that each say
    `TIMEOUT = 30` hold the same small int, but only an importer should follow an edit."""
    code = _module_code(module)
    if code is None:
        return None
    import dis  # only on this path: a value equal by identity in another module

    sources = set(sources)
    package = getattr(module, "__package__", None) or ""
    consts: list[object] = [None, None]
    target = None
    for ins in dis.get_instructions(code):
        if ins.opname == "LOAD_CONST":
            consts = [consts[-1], ins.argval]
        elif ins.opname == "IMPORT_NAME":
            level = consts[0] if type(consts[0]) is int else 0
            target = _resolve(ins.argval, level, package)
        elif target in sources and (
            (ins.opname == "IMPORT_FROM" and ins.argval == name)
            or ins.opname == "IMPORT_STAR"
            or ins.argrepr == "INTRINSIC_IMPORT_STAR"
        ):
            return True
    return False


def _module_code(module: ModuleType) -> CodeType | None:
    # Imported here: these modules are loaded already (the loader is how modules got here).
    from importlib.machinery import SourceFileLoader, SourcelessFileLoader

    from ._loader import BuildLoader
    from .image import source_digest

    loader = getattr(module, "__loader__", None)
    if isinstance(loader, BuildLoader):
        code = loader.build_code(loader.path)
        if code is not None:
            return code  # the code the module ran (not the disk's)
        try:  # compiled at import from the build's source: again, if the file still has it
            data = loader.get_data(loader.path)
        except OSError:
            return None
        if source_digest(data) != loader.entry.digest:
            return None
        return loader.source_to_code(data, loader.path)
    if isinstance(loader, SourceFileLoader | SourcelessFileLoader):
        spec = getattr(module, "__spec__", None)
        try:
            return loader.get_code(spec.name if spec is not None else module.__name__)
        except (ImportError, OSError, SyntaxError, ValueError, EOFError):
            return None
    return None


def _resolve(name: str, level: int, package: str) -> str:
    if level <= 0:
        return name
    base = package.rsplit(".", level - 1)[0] if package else ""
    return f"{base}.{name}" if name and base else name or base


def index_module(
    module: ModuleType, files: frozenset[str], wanted: Collection[Key] | None = None
) -> Index:
    """Index every live function of `module` reachable from its globals.

    With `wanted`, a cheaper walk first: from the globals named by the first part of a
    wanted qualname (where a function and its class live), and from every global that
    is neither a plain function nor a class (registries, caches, wrappers, partials);
    the full walk follows only if a wanted function was not found that way (nested
    functions excepted: the closures of a factory are found by `closures_of`). In a large
    module, patching one function then costs microseconds instead of a walk of
    thousands of objects.
    """
    items = list(vars(module).items())  # a copy: other threads may add globals
    if wanted is not None:
        names = {qualname.partition(".")[0] for qualname, _ in wanted}
        walker = _Walker(module.__name__, files)
        for name, value in items:
            if name in names or type(value) not in _PLAIN_GLOBALS:
                walker.visit(value, 0)
        found = walker.index.functions
        if all(key in found for key in wanted if "<locals>" not in key[0]):
            return walker.index
    walker = _Walker(module.__name__, files)
    for _, value in items:
        walker.visit(value, 0)
    return walker.index


def closures_of(codes: Iterable[CodeType]) -> list[FunctionType]:
    """Every live function whose `__code__` is one of `codes` (one walk of the heap)."""
    codes = list(codes)
    if not codes:
        return []
    ids = {id(c) for c in codes}
    return [
        r for r in gc.get_referrers(*codes) if type(r) is FunctionType and id(r.__code__) in ids
    ]


def containers_holding(obj: object) -> list[object]:
    """Every plain dict (a registry, a module's or an instance's namespace), list or set
    holding `obj` (one walk of the heap)."""
    return [r for r in gc.get_referrers(obj) if type(r) in (dict, list, set)]


def unwrap_chain(obj: object) -> list[object]:
    """`obj` and what it wraps, outermost first: `__wrapped__` links, else the single
    function held in a wrapper's closure (a decorator written without functools.wraps)."""
    chain = [obj]
    while len(chain) < _MAX_CHAIN:
        inner = _instance_dict(chain[-1]).get("__wrapped__")
        if inner is None and type(chain[-1]) is FunctionType:
            inner = _single_closure_function(chain[-1])  # type: ignore[arg-type]
        if inner is None or any(inner is c for c in chain):
            break
        chain.append(inner)
    return chain


class _Walker:
    def __init__(self, module_name: str, files: frozenset[str]) -> None:
        self.module_name = module_name
        self.files = files
        self.index = Index()
        self.seen: set[int] = set()  # ids; every visited object stays alive during the walk

    def visit(self, obj: object, depth: int) -> None:
        if depth > _MAX_DEPTH or id(obj) in self.seen:
            return
        kind = type(obj)
        if kind in (int, str, float, bool, bytes, type(None), ModuleType):
            return
        self.seen.add(id(obj))
        for child in self._children(obj, kind):
            self.visit(child, depth + 1)

    def _children(self, obj: object, kind: type) -> Iterator[object]:
        # Dispatch on type(obj), never isinstance(): a proxy may lie about __class__.
        if kind is FunctionType:
            yield from self._function(obj)  # type: ignore[arg-type]
        elif issubclass(kind, type):
            if obj.__dict__.get("__module__") == self.module_name:
                yield type(obj)  # a metaclass defined here
                yield from list(obj.__dict__.values())
                # A class made here from one defined here (a framework's subclass standing
                # in for the user's class, such as Ray's actor classes).
                yield from [
                    b for b in obj.__bases__ if b.__dict__.get("__module__") == obj.__module__
                ]
        elif kind is MethodType:
            yield obj.__func__  # type: ignore[attr-defined]
        elif is_descriptor(obj):
            yield from parts(obj)
        elif issubclass(kind, _FUNC_HOLDERS):
            yield obj.func  # type: ignore[attr-defined]
            yield getattr(obj, "dispatcher", None)
        elif kind in _CONTAINERS:
            if len(obj) <= _MAX_CONTAINER:  # type: ignore[arg-type]
                yield from list(obj.values() if kind is dict else obj)  # type: ignore[attr-defined]
        else:
            if kind.__dict__.get("__module__") == self.module_name:
                yield kind  # an object of a class made here: the class may hold the user's
            own = _instance_dict(obj)
            if "__wrapped__" in own:  # lru_cache and other wrapper objects
                if hasattr(obj, "cache_clear"):
                    self.index.caches.append(obj)
                yield own["__wrapped__"]
            # A class-based decorator keeps the function in an attribute.
            yield from [v for v in list(own.values()) if type(v) is FunctionType]

    def _function(self, fn: FunctionType) -> Iterator[object]:
        code = fn.__code__
        if code.co_filename in self.files:
            key = (code.co_qualname, code.co_firstlineno)
            self.index.functions.setdefault(key, []).append(fn)
        own = fn.__dict__
        if "__wrapped__" in own:
            yield own["__wrapped__"]
        registry = own.get("registry")  # functools.singledispatch implementations
        if registry is not None and hasattr(registry, "values"):
            yield from list(registry.values())
        for cell in fn.__closure__ or ():
            try:
                yield cell.cell_contents
            except ValueError:  # an empty cell
                continue


def _single_closure_function(fn: FunctionType) -> FunctionType | None:
    found = []
    for cell in fn.__closure__ or ():
        try:
            value = cell.cell_contents
        except ValueError:
            continue
        if type(value) is FunctionType:
            found.append(value)
    return found[0] if len(found) == 1 else None


def _instance_dict(obj: object) -> dict[str, object]:
    # object.__getattribute__ skips a proxy's __getattr__, which could run arbitrary code.
    try:
        own = object.__getattribute__(obj, "__dict__")
    except (AttributeError, TypeError):
        return {}
    return own if isinstance(own, dict) else {}
