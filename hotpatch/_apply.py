"""Apply a patch bundle to the live modules, all or nothing; undo the last one on request.

Per module, inside one transaction: (a) swap the code of the live functions the bundle names
(found by `_locate`), (b) re-run the changed top-level statements in source order and merge
what each one defined into the live module (conform functions and classes in place, else
rebind with a warning), (c) delete removed names. Any failure undoes the whole bundle.

Threads: one apply at a time (`LOCK`). Other threads keep running meanwhile and see each
function either old or new: every change is a single store, and nothing is deleted to be
added again.
"""

from __future__ import annotations

import logging
import os
import sys
from bisect import bisect_right
from dataclasses import dataclass
from time import perf_counter, sleep
from types import CodeType, FunctionType, ModuleType
from typing import Any

from . import _jumptable, _loader, _targets, gcpause, provenance
from ._conform import Changes, Merge, conform, values_equal
from ._errors import NeedsRestart, PatchError
from ._holders import unseen_by_holders
from ._jumptable import current_build, set_build
from ._locate import closures_of, imports_name, index_module, module_files
from ._rebind import rebind_method
from ._report import PatchReport
from ._transaction import Transaction
from .adapters._changes import Binding, FunctionChange, Interface
from .adapters._run import Adapting
from .bundle import FUNCTION_ATTRS, Bundle, ModulePatch, RerunMode, Statement, load
from .relocation import relocate

__all__ = ["LOCK", "apply", "apply_waiting", "current_build", "rollback", "set_build"]

LOCK = _targets.LOCK  # serialises apply/rollback (re-entrant: a callback may apply)

_history: list[_Applied] = []
# Nested-function code this runtime installed, by (qualname, first line): what live closures
# hold after a patch, and so where the next patch of that function must look.
_installed: dict[tuple[str, int], list[CodeType]] = {}
_MISSING: Any = object()
_SINGLETONS = (None, True, False, Ellipsis, NotImplemented)
# Values equal ones elsewhere may share by identity (cached small ints, interned strings).
_INTERNED = (int, float, complex, str, bytes, tuple, frozenset)


@dataclass
class _Applied:
    previous_build: str | None
    tx: Transaction
    report: PatchReport
    caches: list[object]


def apply(
    source: Bundle | bytes | str | os.PathLike[str], *, key: bytes | None = None
) -> PatchReport:
    """Apply a patch bundle (a `Bundle`, its bytes, or a path to a bundle file).

    Returns the report. Raises `PatchError` (wrong base build, bad bundle, a re-run
    statement raised) and then leaves the process exactly as it was. A bundle that needs a
    restart is not applied: the report says why.
    """
    with gcpause.paused():
        return _apply(source, key)


def _apply(source: Bundle | bytes | str | os.PathLike[str], key: bytes | None) -> PatchReport:
    start = perf_counter()
    bundle = source if isinstance(source, Bundle) else load(source, key)
    timings = {"decode": _ms(start)}
    with LOCK:
        previous = current_build()
        if previous is not None and bundle.base_build != previous:
            raise PatchError(
                f"refused: the bundle patches build {bundle.base_build!r}, "
                f"but this process runs build {previous!r}"
            )
        if bundle.needs_restart is not None:
            timings["total"] = _ms(start)
            return PatchReport(
                previous,
                warnings=bundle.warnings,
                needs_restart=bundle.needs_restart,
                timings=timings,
            )
        tx = Transaction()
        changes = Changes(warnings=list(bundle.warnings))
        matched = [(patch, _targets.live_modules(patch)) for patch in bundle.modules]
        _check_bases(matched)  # before any change: a refused bundle changes nothing
        targets = _dependency_order([(p, [m for m, _ in found]) for p, found in matched])
        try:
            adapting = _adapt_start(bundle, targets, tx, timings)
            _apply_modules(targets, tx, changes, timings)
            _adapt_finish(adapting, changes, tx, timings)
        except NeedsRestart as exc:
            tx.rollback()
            _jumptable.update_mode()
            timings["total"] = _ms(start)
            return PatchReport(
                previous, warnings=tuple(changes.warnings), needs_restart=str(exc), timings=timings
            )
        except BaseException:
            tx.rollback()
            _jumptable.update_mode()
            raise
        tx.commit()
        set_build(bundle.target_build)
        timings["total"] = _ms(start)
        report = _report(bundle.target_build, changes, timings)
        _history.append(_Applied(previous, tx, report, changes.caches))
    _finish(changes.caches, report)
    return report


def apply_waiting(module: ModuleType, chain: list[ModulePatch]) -> None:
    """Apply to `module`, just imported, the patches that came before it was (in order,
    each from the source the one before leaves). The process stays at its build. One that
    fails is logged and ends the chain: the module then runs the source it reached, and
    later patches of it are refused (and say so)."""
    with LOCK:
        for patch in chain:
            build = current_build()
            try:
                _apply(Bundle(build or "", build or "", (patch,)), None)  # type: ignore[arg-type]
            except PatchError as exc:
                logging.getLogger(__name__).warning(
                    "hotpatch: %s was imported at an older version and stays there: %s",
                    module.__name__,
                    exc,
                )
                return


def rollback() -> PatchReport:
    """Undo the last applied patch (repeat to undo earlier ones) and return what it undid.

    Raises `PatchError` when no applied patch is left to undo.
    """
    start = perf_counter()
    with LOCK:
        if not _history:
            raise PatchError("nothing to roll back: no applied patch is left")
        applied = _history.pop()
        applied.tx.rollback()
        set_build(applied.previous_build)
        done = applied.report
        report = PatchReport(
            applied.previous_build,
            patched=done.patched,
            added=done.removed,
            removed=done.added,
            rebound=done.rebound,
            timings={"total": _ms(start)},
            rolled_back=True,
        )
    _finish(applied.caches, report)
    return report


def _finish(caches: list[object], report: PatchReport) -> None:
    # Caches filled by the old code are stale: clear them (harmless if they were not).
    for cache in {id(c): c for c in caches}.values():
        cache.cache_clear()  # type: ignore[attr-defined]
    _jumptable.update_mode()
    _jumptable.notify(report)


def _adapt_start(
    bundle: Bundle,
    targets: list[tuple[ModulePatch, list[ModuleType]]],
    tx: Transaction,
    timings: dict[str, float],
) -> Adapting:
    """The adapters of the frameworks this process imported, told what is about to change."""
    start = perf_counter()
    adapting = Adapting(bundle, targets, tx)
    adapting.before()
    timings["adapters"] = _ms(start)
    return adapting


def _adapt_finish(
    adapting: Adapting, changes: Changes, tx: Transaction, timings: dict[str, float]
) -> None:
    """The adapters bring what their framework derived in step with the patch; then the
    library objects no adapter covers that may not see a signature change are named."""
    start = perf_counter()
    adapting.after(changes.functions, changes.bindings)
    changes.adapted += adapting.patch.notes
    changes.warnings += adapting.patch.warnings
    if any(f.signature_changed for f in changes.functions):
        changes.unseen += unseen_by_holders(changes.functions, adapting.holders, tx.records())
    timings["adapters"] = timings.get("adapters", 0.0) + _ms(start)


def _apply_modules(
    targets: list[tuple[ModulePatch, list[ModuleType]]],
    tx: Transaction,
    changes: Changes,
    timings: dict[str, float],
) -> None:
    for patch, modules in targets:
        if not modules:
            if _has_changes(patch):
                changes.skipped.append(patch.name)  # imported later, it loads the new code
            # ... from the file as it is then, or from another copy: the patch waits for it.
            _targets.defer(patch, tx)
            continue
        for module in modules:
            if patch.digest is not None and isinstance(module.__file__, str):
                tx.setitem(provenance.digests, module.__file__, patch.digest)
        for module in modules:
            tx.snapshot(module.__dict__)
            files = module_files(module, patch.path)
            merge = Merge(module.__name__, patch.name, files, tx, changes)
            try:
                _patch_module(module, patch, merge, timings)
            except (PatchError, NeedsRestart, KeyboardInterrupt):
                raise
            except Exception as exc:
                raise PatchError(f"{type(exc).__name__}: {exc}", patch.name) from exc


def _check_bases(live: list[tuple[ModulePatch, list[tuple[ModuleType, bool]]]]) -> None:
    """Refuse the bundle if a module it patches runs another source than the patch's base.

    The build id says which build a process started from, not that every module came
    from it (one edited before its first import did not: its loader recorded what it
    compiled instead); and a process that did not start from a build has only this check.
    A module of unknown source is vouched for by `adopt`, unless the process started from
    a build and the module runs the build's own file (`runpy` made it: the script, a
    spawned worker's `__mp_main__`). Another copy of the module (matched by name) must
    always show its source."""
    on_build = _loader.installed() is not None
    for patch, modules in live:
        if patch.base_digest is None:
            continue
        for module, by_path in modules:
            file = module.__file__ if isinstance(module.__file__, str) else None
            runs = provenance.digest_of(file) if file else None
            if runs is None and on_build and by_path:
                continue
            if runs is None:
                runs = provenance.adopt(module)
            if runs == patch.base_digest:
                continue
            what = (
                "another version of it (its file changed after it was imported)"
                if runs is None
                else f"source {runs[:12]}"
            )
            where = "" if by_path else f" from {file}"
            raise PatchError(
                f"refused: this process runs {what}{where}, the patch starts from source "
                f"{patch.base_digest[:12]}; restart the process (or import the module again) "
                "to patch it",
                patch.name,
            )


def _has_changes(patch: ModulePatch) -> bool:
    return bool(patch.functions or patch.statements or patch.removed or patch.moved)


def _patch_module(
    module: ModuleType, patch: ModulePatch, merge: Merge, timings: dict[str, float]
) -> None:
    if patch.functions:
        _swap_functions(module, patch, merge, timings)
    if patch.moved:
        _move_functions(module, patch, merge, timings)
    start = perf_counter()
    for statement in patch.statements:
        _rerun(module, statement, merge)
    for name in patch.removed:
        if name in module.__dict__:
            _remove(module, name, merge)  # old references keep working
    timings["statements"] = timings.get("statements", 0.0) + _ms(start)


_MOVES_PER_YIELD = 25  # about half a millisecond of moves


def _move_functions(
    module: ModuleType, patch: ModulePatch, merge: Merge, timings: dict[str, float]
) -> None:
    """Shift the code in lines that only moved, so tracebacks show the new lines.

    After the swaps, which put new code (at its new lines) into the functions they
    patched: those are left alone. Closures already made count too (each holds its own
    code object), wherever in the module's reach they are.
    """
    start = perf_counter()
    sleep(0)  # the new code is in: let a thread waiting to run it go first
    ranges = sorted(patch.moved)
    firsts = [first for first, _, _ in ranges]
    done = 0
    for (_, lineno), functions in index_module(module, merge.files).functions.items():
        at = bisect_right(firsts, lineno) - 1
        if at < 0 or lineno > ranges[at][1]:
            continue
        delta = ranges[at][2]
        for fn in functions:
            if id(fn) in merge.swapped:
                continue
            merge.tx.setattr(fn, "__code__", relocate(fn.__code__, delta))
            done += 1
            if done % _MOVES_PER_YIELD == 0:
                # Line numbers only, after the new code is in: let the app's threads run
                # it meanwhile (an edit at the top of a large module moves thousands).
                sleep(0)
    timings["moved"] = timings.get("moved", 0.0) + _ms(start)


def _swap_functions(
    module: ModuleType, patch: ModulePatch, merge: Merge, timings: dict[str, float]
) -> None:
    start = perf_counter()
    nested = {(f.qualname, f.old_lineno) for f in patch.functions if "<locals>" in f.qualname}
    index = index_module(module, merge.files, {(f.qualname, f.old_lineno) for f in patch.functions})
    live = index.functions
    extra: dict[tuple[str, int], list[Any]] = {}
    if nested:
        codes = index.nested_codes(nested, merge.files)
        codes += [c for k in nested for c in _installed.get(k, ()) if c.co_filename in merge.files]
        codes += [fn.__code__ for k in nested for fn in live.get(k, ())]
        for fn in closures_of(codes):
            extra.setdefault((fn.__code__.co_qualname, fn.__code__.co_firstlineno), []).append(fn)
    timings["locate"] = timings.get("locate", 0.0) + _ms(start)
    start = perf_counter()
    changes = merge.changes
    for fp in patch.functions:
        key = (fp.qualname, fp.old_lineno)
        targets = list({id(f): f for f in live.get(key, []) + extra.get(key, [])}.values())
        if not targets and key not in nested:
            changes.warnings.append(
                f"{patch.name}:{fp.qualname} (line {fp.old_lineno}): "
                "no live function found, not patched"
            )
        swapped = []
        # Evaluated before any swap, so code and defaults go in together (see conform).
        attrs = _evaluate_attrs(module, fp) if fp.attrs is not None and targets else None
        label = f"{patch.name}:{fp.qualname}"
        for fn in targets:
            before = Interface.of(fn)
            reason = conform(fn, fp.code, merge.tx, attrs)
            if reason is None:
                swapped.append(fn)
                changes.functions.append(FunctionChange(label, fn, before, Interface.of(fn)))
            elif (rebound := rebind_method(module, fn, fp.code, attrs, merge.tx)) is not None:
                new, owner = rebound
                swapped.append(new)
                changes.functions.append(
                    FunctionChange(label, new, before, Interface.of(new), replaced=fn)
                )
                _jumptable.redirect(fn, new, f"{patch.name}:{fp.qualname}", merge.tx)
                changes.warnings.append(
                    f"{patch.name}:{fp.qualname}: its free variables changed ({reason}): a new "
                    f"function is bound on the live class {owner.__qualname__}, which every "
                    "instance uses; references to the old function held elsewhere (methods "
                    "bound before this patch, aliases, registries) keep the old code"
                )
            else:
                changes.warnings.append(
                    f"{patch.name}:{fp.qualname}: a live function keeps its old code: {reason}"
                )
        merge.swapped.update(id(fn) for fn in swapped)
        if swapped:
            changes.patched.append(f"{patch.name}:{fp.qualname}")
            changes.caches.extend(index.caches_for(swapped))
        if key in nested:
            codes_now = _installed.setdefault((fp.qualname, fp.code.co_firstlineno), [])
            codes_now[:] = [*codes_now[-7:], fp.code]  # bounded: old entries are only hints
    timings["functions"] = timings.get("functions", 0.0) + _ms(start)


def _evaluate_attrs(module: ModuleType, fp: Any) -> dict[str, Any]:
    """The new defaults, annotations and doc of a patched function (those whose source
    changed), evaluated where Python would: in the module, with a method's class namespace
    as locals (`def m(self, x=LIMIT)`, `def m(self) -> Item`)."""
    scope: dict[str, Any] = {}
    owner: Any = module
    for part in fp.qualname.split(".")[:-1]:
        owner = getattr(owner, part, None) if part != "<locals>" else None
        if not isinstance(owner, type):
            break
        scope = dict(vars(owner))
    try:
        values = eval(fp.attrs, module.__dict__, scope)
    except Exception as exc:
        raise PatchError(
            f"evaluating the new defaults or annotations of {fp.qualname} raised "
            f"{type(exc).__name__}: {exc}",
            module.__name__,
        ) from exc
    if not isinstance(values, dict) or not set(values) <= set(FUNCTION_ATTRS):
        raise PatchError(f"bad attribute patch for {fp.qualname}", module.__name__)
    return values


class _Scratch(dict):  # type: ignore[type-arg]
    """Locals for a re-run statement: what it binds lands here, not in the live module, so
    each name can be merged (conformed in place, or rebound). `del name` of a module global
    is recorded rather than failing, since these locals start empty."""

    def __init__(self, namespace: dict[str, Any]) -> None:
        super().__init__()
        self.namespace = namespace
        self.deleted: list[str] = []

    def __setitem__(self, key: str, value: object) -> None:
        if key in self.deleted:
            self.deleted.remove(key)
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        if dict.__contains__(self, key):
            super().__delitem__(key)
        elif key in self.namespace and key not in self.deleted:
            self.deleted.append(key)
        else:
            raise KeyError(key)


def _rerun(module: ModuleType, statement: Statement, merge: Merge) -> None:
    namespace = module.__dict__
    scratch = _Scratch(namespace)
    try:
        exec(statement.code, namespace, scratch)
    except (Exception, SystemExit) as exc:  # the user's statement: report it, undo all
        import traceback  # only on this path: keep the first patch's import cost down

        tb = exc.__traceback__.tb_next if exc.__traceback__ else None  # not our frame
        text = "".join(traceback.format_exception(type(exc), exc, tb)).rstrip()
        raise PatchError(
            f"re-running `{_first_line(statement.source)}` raised "
            f"{type(exc).__name__}: {exc}\n{text}",
            merge.label,
            f"line {statement.lineno}",
        ) from exc
    merge.changes.rerun.append(f"{merge.label}:{statement.lineno}")
    annotations = scratch.pop("__annotations__", None)
    for name, new in list(scratch.items()):
        if statement.mode is RerunMode.CLASS and isinstance(namespace.get(name), type):
            decorated = statement.source.lstrip().startswith("@")
            merge.klass(namespace[name], new, name, statement.members, statement.removed, decorated)
            merge.changes.bindings.append(
                Binding(f"{merge.label}:{name}", "merged", namespace[name], new)
            )
        else:
            _bind(module, name, new, merge, force=statement.mode is RerunMode.REBIND)
    if isinstance(annotations, dict) and annotations:
        live = namespace.get("__annotations__")
        if isinstance(live, dict):
            for name, value in annotations.items():
                merge.tx.setitem(live, name, value)
    for name in scratch.deleted:
        if name in namespace:
            _remove(module, name, merge)


def _remove(module: ModuleType, name: str, merge: Merge) -> None:
    label = f"{merge.label}:{name}"
    merge.changes.bindings.append(Binding(label, "removed", old=module.__dict__[name]))
    merge.tx.delitem(module.__dict__, name)
    merge.changes.removed.append(label)


def _bind(module: ModuleType, name: str, new: object, merge: Merge, force: bool = False) -> None:
    namespace = module.__dict__
    old = namespace.get(name, _MISSING)
    label = f"{merge.label}:{name}"
    if old is _MISSING:
        merge.tx.setitem(namespace, name, new)
        merge.changes.added.append(label)
        merge.changes.bindings.append(Binding(label, "added", new=new))
        return
    if not force and merge.value(old, new, name):
        if old is not new:  # conformed in place: the live object stays, `new` is thrown away
            merge.changes.bindings.append(Binding(label, "merged", old, new))
        return
    if not force and values_equal(old, new):
        return  # the same value
    merge.tx.setitem(namespace, name, new)
    merge.changes.bindings.append(Binding(label, "replaced", old, new))
    if callable(old):
        if merge.defined_here(old, name):
            merge.changes.warnings.append(
                f"{merge.label}:{name} was replaced by a new object (its decorator or kind "
                "changed); references to the old one held elsewhere keep the old code"
            )
        _jumptable.redirect(old, new, f"{merge.label}:{name}", merge.tx)
    _rebind_imports(module, name, old, new, merge)


def _rebind_imports(module: ModuleType, name: str, old: object, new: object, merge: Merge) -> None:
    # `from m import A` elsewhere: rebind where it still holds the very object m had. A
    # singleton like None or True tells nothing about where it came from, so never those.
    if any(old is s for s in _SINGLETONS):
        return
    # Nor does a small int or an interned string: `TIMEOUT = 30` in two modules is one
    # object. For such values, a module whose code we can read must import the name.
    shared = type(old) in _INTERNED
    sources = (module.__name__, merge.label)
    for other in list(sys.modules.values()):
        if other is module or not isinstance(other, ModuleType):
            continue
        namespace = other.__dict__
        if namespace.get(name, _MISSING) is old:
            if shared and imports_name(other, sources, name) is False:
                continue
            merge.tx.setitem(namespace, name, new)
            merge.changes.rebound.append(f"{other.__name__}.{name}")


def _dependency_order(
    targets: list[tuple[ModulePatch, list[ModuleType]]],
) -> list[tuple[ModulePatch, list[ModuleType]]]:
    """The module patches with each after those of the modules it uses (a URLconf after the
    views it names: its re-run reads what the views' patch adds). A module uses another
    when its globals hold that module or something defined there. Cycles keep their order."""
    if len(targets) < 2:
        return targets
    names = {m.__name__: i for i, (_, modules) in enumerate(targets) for m in modules}
    uses: list[set[int]] = []
    for i, (_, modules) in enumerate(targets):
        found: set[int] = set()
        for module in modules:
            for value in list(vars(module).values()):
                if isinstance(value, ModuleType):
                    other = value.__name__
                elif isinstance(value, type | FunctionType):
                    other = getattr(value, "__module__", None)
                else:
                    continue
                j = names.get(other) if isinstance(other, str) else None
                if j is not None and j != i:
                    found.add(j)
        uses.append(found)
    ordered: list[int] = []
    state = [0] * len(targets)  # 0 new, 1 visiting, 2 done

    def visit(i: int) -> None:
        if state[i]:
            return  # done, or a cycle: its order stays
        state[i] = 1
        for j in sorted(uses[i]):
            visit(j)
        state[i] = 2
        ordered.append(i)

    for i in range(len(targets)):
        visit(i)
    return [targets[i] for i in ordered]


def _report(build_id: str, changes: Changes, timings: dict[str, float]) -> PatchReport:
    return PatchReport(
        build_id,
        patched=tuple(dict.fromkeys(changes.patched)),
        added=tuple(changes.added),
        removed=tuple(changes.removed),
        rerun=tuple(changes.rerun),
        warnings=tuple(changes.warnings),
        timings=timings,
        skipped=tuple(changes.skipped),
        rebound=tuple(changes.rebound),
        adapted=tuple(changes.adapted),
        unseen=tuple(changes.unseen),
    )


def _first_line(source: str) -> str:
    line = source.strip().splitlines()[0] if source.strip() else "<statement>"
    return line if len(line) <= 60 else line[:57] + "..."


def _ms(start: float) -> float:
    return (perf_counter() - start) * 1000.0


_jumptable.install_applier(apply, LOCK)
