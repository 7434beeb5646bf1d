"""The jump table, `hot` wrappers, safe points and the queue of patches waiting for one.

What we do. Most patches swap `__code__` in place, so every reference to a function already
runs the new body and needs no table. The table only maps an object that a patch had to
*replace* (a definition re-run with another decorator) to its replacement, for the callers
that go through `call` or `@hot`; it is also keyed by `module:qualname`.

Why `call` is two different objects. The target: `call(f)` costs at most 2x `f()`. Measured on
3.11-3.13 (ratios of timeit medians with the loop, a trivial `f`, benchmarks/bench_call.py):
  - a C callable pays one C-to-Python call of `fn`, which a direct call does not (the
    interpreter pushes a Python callee's frame inline): `operator.call` is 1.7x on 3.11 and
    about 2.0-2.1x on 3.12/3.13, the floor of anything in the standard library (a
    `functools.partial` in front, to switch its target later, adds another 0.5-1x);
  - any Python `def call(fn, /, *args, **kwargs)` pays for its own frame (about one direct
    call), the `**kwargs` dict made on every call, even empty, and `fn(*args)`, which calls
    from C: 3.5-3.7x on 3.11 and 3.8-4.7x on 3.12/3.13 with no check at all.
So where hot patching is not enabled (production) `call` *is* `operator.call`: nothing to
look up, nothing to apply, no wrapper. Once enabled, it is `_call`, a Python function, and
stays so: every `call` in progress then has a frame, so "the outermost call" can be told
from the stack (calls through a C `call` would be invisible there), and the safe point and
the table lookup cost one global test while there is nothing to do (`_check`): `_call` is
within noise of the bare Python floor above.

`enable()` rebinds `hotpatch.call` and this module's `call`; a reference taken before
(`from hotpatch import call` ahead of `enable()`) keeps `operator.call`: its calls are
neither safe points nor table lookups (patches still land: at a safe point reached some
other way, or from the client thread, as in an app without safe points). `thinlink run` and
`thinlink dev` enable hot patching before the app is imported. In a process that never
enabled it, `@hot` returns the function itself and `call` is `operator.call`, so neither
follows a definition that `hotpatch.apply()` replaced by a new object; as the report warns,
references to the old object keep it (functions patched in place, the usual case, need no
table). We do not make the old function forward to its replacement instead (its `__code__`
swapped for a stub calling the new object, which every reference would follow): a new
object that reaches the old one (a decorator that wraps or dispatches to the previous
binding of its name) would then recurse forever, and the old function would change its
signature and kind (`inspect.signature`, `iscoroutinefunction`) under whoever holds it.

Safe points. A patch from outside is `submit()`ted by the client thread. The outermost
`call`/`@hot` call on the main thread, or `safepoint()`, applies what is pending. If the main
thread does not get there within `GRACE` seconds, the client thread applies it itself (each
function swap is one attribute store, atomic under the GIL): `due()` is that decision and
`deliver()` does submit-wait-apply. The grace is only spent on a main thread that has shown
it reaches safe points; otherwise patches go live at once.
"""

from __future__ import annotations

# Only modules that are free at start-up: an app imports this for `@hot`/`call` in
# production too, where it must cost nothing. functools, threading and logging load lazily.
import _thread
import os
import sys
import time
from _operator import call as _operator_call

TYPE_CHECKING = False  # the start-up path: see hotpatch/__init__.py
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    from ._report import PatchReport
    from ._transaction import Transaction
    from .bundle import Bundle

    F = TypeVar("F", bound=Callable[..., Any])

__all__ = [
    "GRACE",
    "PendingPatch",
    "call",
    "current_build",
    "deliver",
    "due",
    "enable",
    "enabled",
    "grace",
    "hot",
    "install_applier",
    "on_patch",
    "resolve",
    "safepoint",
    "set_build",
    "submit",
    "update_mode",
]

GRACE = 0.020  # seconds the client thread waits for the main thread's safe point

# Old object -> replacement. Only objects hashed by identity are keys (never a user __hash__),
# and `_keyed` holds their types so the lookup is skipped for every other callable.
_table: dict[object, object] = {}
_keyed: set[type] = set()
_by_name: dict[str, object] = {}  # "module:qualname" -> latest object

_build: str | None = None  # the build this process runs (see set_build)
_enabled = False
_pending = False  # a patch is queued (or, once enabled, a probe: see _at_call)
# `_pending` or a non-empty table: `call`/`@hot` must look before calling. Written under
# `_queue_lock` with `_pending` (see _set_pending), so a submit racing a safe point that
# found the queue empty cannot leave it False with a patch queued.
_check = False
_responsive = False  # the main thread reached a safe point since the last patch
_queue: list[PendingPatch] = []  # a handful at most: a list beats importing collections
_queue_lock = _thread.allocate_lock()
_callbacks: list[Callable[[PatchReport], object]] = []
_local = _thread._local()


def _main_thread_ident() -> int:
    get = getattr(_thread, "_get_main_thread_ident", None)  # 3.12+
    if get is not None:
        return get()
    threading = sys.modules.get("threading")
    if threading is not None:
        return threading.main_thread().ident
    return _thread.get_ident()  # threading not imported yet: this is the main thread


_MAIN_THREAD = _main_thread_ident()


def _logger() -> Any:
    import logging  # only on error paths

    return logging.getLogger(__name__)


class PendingPatch:
    """A submitted patch. `done` (a threading.Event) is set once it was applied or refused;
    then `report` or `error` says which. `log`: a failure is logged (else only `error`
    tells it, for a submitter that reports it itself)."""

    __slots__ = ("data", "key", "submitted", "done", "report", "error", "log")

    def __init__(
        self, data: Bundle | bytes, key: bytes | None, submitted: float, log: bool = True
    ) -> None:
        import threading

        self.data = data
        self.key = key
        self.submitted = submitted
        self.done = threading.Event()
        self.report: PatchReport | None = None
        self.error: Exception | None = None
        self.log = log


def current_build() -> str | None:
    """The build id this process runs, or None when it was not started from a build.

    Kept here, not in `_apply`, so the importer can `set_build()` at start-up for free.
    """
    return _build


def set_build(build_id: str | None) -> None:
    """Record the build this process runs (the importer calls it when loading a build).
    A patch for another base build is refused from then on."""
    global _build
    _build = build_id


def enable() -> None:
    """Turn hot patching on for this process (as `HOTPATCH_ENABLED=1` does): `@hot` starts
    wrapping and `call` goes through the jump table, with safe points.

    Call it before importing the app: it rebinds `hotpatch.call`, and a reference taken
    earlier (`from hotpatch import call`) stays the plain `operator.call` of production.
    """
    global _enabled
    _enabled = True
    with _queue_lock:
        _set_pending(True)  # probe: the main thread's first call shows it reaches safe points
    update_mode()


def enabled() -> bool:
    """True when hot patching is on (`enable()` was called or `HOTPATCH_ENABLED=1`)."""
    return _enabled or os.environ.get("HOTPATCH_ENABLED") == "1"


def _call(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """call(fn, /, *args, **kwargs): call the latest version of `fn`.

    Goes through the jump table, so a definition that a patch replaced by a new object is
    still reached. The outermost `call` on the main thread is a safe point: pending patches
    are applied there, before `fn` runs. This is `hotpatch.call` once hot patching is
    enabled; where it is not, `hotpatch.call` is `operator.call` (zero cost, no table).
    """
    if _check:
        fn = _look(fn)
    if kwargs:
        return fn(*args, **kwargs)
    return fn(*args)  # without the empty kwargs dict: a quarter faster


def _look(fn: Any) -> Any:
    """Slow path of `call`/`@hot` (only while `_check`): the safe point, then the table."""
    if _pending:
        _at_call(sys._getframe(2))  # the caller of `call` or of the hot wrapper
    if _table and type(fn) in _keyed:
        return _table.get(fn, fn)
    return fn


# What apps get as `hotpatch.call` (see the module docstring); `update_mode` rebinds it.
call: Callable[..., Any] = _call if enabled() else _operator_call


def _set_pending(value: bool) -> None:
    # Under _queue_lock: `_pending` and `_check` change together (see `_check`).
    global _pending, _check
    _pending = value
    _check = value or bool(_table)


def update_mode() -> None:
    """Recompute the fast-path state after the flags, the table or the environment changed:
    `_check`, and which object `call` is (`_call` when enabled, else `operator.call`)."""
    global _check, call
    with _queue_lock:
        _check = _pending or bool(_table)
    target = _call if enabled() else _operator_call
    if call is not target:
        call = target
        package = sys.modules.get(__package__ or "")
        if package is not None and "call" in package.__dict__:
            package.call = target  # `hotpatch.call`, and what `from hotpatch import` gets


def _hot_wrapper(fn: F) -> F:
    import functools

    @functools.wraps(fn)
    def hot_call(*args: Any, **kwargs: Any) -> Any:
        target = _look(fn) if _check else fn
        if kwargs:
            return target(*args, **kwargs)  # type: ignore[operator]
        return target(*args)  # type: ignore[operator]

    return hot_call  # type: ignore[return-value]


# The code objects of `_call` and of every hot wrapper: frames running them are calls in
# progress. (Dug out of _hot_wrapper's constants, not made, so functools stays unimported.)
_ENTRY_CODES = (
    _call.__code__,
    next(c for c in _hot_wrapper.__code__.co_consts if getattr(c, "co_name", None) == "hot_call"),
)


def hot(fn: F) -> F:
    """Decorator: calls to `fn` go through the jump table and are safe points (as `call`).

    When hot patching is not enabled it returns `fn` itself: zero cost in production.
    """
    if not enabled():
        return fn
    return _hot_wrapper(fn)


def _at_call(frame: Any) -> None:
    """Safe-point check of `call`/`@hot` while `_pending`: apply at the outermost one on
    the main thread. `frame` is the frame that called `call` (or the hot wrapper)."""
    global _responsive
    if _thread.get_ident() != _MAIN_THREAD:
        return
    f = frame
    while f is not None:
        code = f.f_code
        if code is _ENTRY_CODES[0] or code is _ENTRY_CODES[1]:
            return  # inside another call/hot: the outermost one is the safe point
        f = f.f_back
    _responsive = True
    with _queue_lock:
        if not _queue:
            _set_pending(False)
            return
    _drain()


def safepoint() -> tuple[PatchReport, ...]:
    """Apply the pending patches now, on this thread; returns their reports.

    For apps with their own loop. A patch that fails is logged and skipped (its
    `PendingPatch.error` says why); the app keeps running on the code it had.
    """
    global _responsive
    if _thread.get_ident() == _MAIN_THREAD:
        _responsive = True
    with _queue_lock:
        if not _queue:
            _set_pending(False)
            return ()
    return _drain()


def install_applier(apply: Callable[..., PatchReport], lock: Any) -> None:
    """Called by `_apply` when it is imported: the function that applies a bundle's bytes
    (`apply(data, key=...)`) and the lock it holds. Injected rather than imported (as
    importlib's `_bootstrap_external` gets `_bootstrap`): this module is imported by every
    app, in production too, and the applier is not free to import."""
    global _applier, _apply_lock
    _applier, _apply_lock = apply, lock


_applier: Callable[..., PatchReport] | None = None
_apply_lock: Any = None


def _drain() -> tuple[PatchReport, ...]:
    if getattr(_local, "draining", False):
        return ()  # a callback of the patch being applied reached a safe point: not now
    if _applier is None:
        raise RuntimeError("hotpatch: a patch is queued but hotpatch._apply was never loaded")
    reports = []
    with _apply_lock:  # one applier at a time, patches in submission order
        _local.draining = True
        try:
            while True:
                with _queue_lock:
                    if not _queue:
                        _set_pending(False)
                        break
                    item = _queue.pop(0)
                try:
                    item.report = _applier(item.data, key=item.key)
                    reports.append(item.report)
                except Exception as exc:  # boundary: a bad patch must not break the app
                    item.error = exc
                    if item.log:
                        _logger().error("hotpatch: %s", exc)
                finally:
                    item.done.set()
        finally:
            _local.draining = False
    update_mode()
    return tuple(reports)


def submit(
    data: Bundle | bytes,
    *,
    key: bytes | None = None,
    now: float | None = None,
    log: bool = True,
) -> PendingPatch:
    """Queue a patch (a `Bundle` or its bytes) for the main thread's next safe point: the
    outermost `call` or `@hot` call, or `safepoint()`. Thread-safe.

    Returns the `PendingPatch`: its `done` event is set once the patch was applied or
    refused, and then `report` or `error` says which. A failure is logged unless `log` is
    False (for a submitter that reports `error` itself). Nothing applies it but a safe
    point (`deliver()` also applies it from the submitting thread after a grace period).
    """
    if isinstance(data, bytes | bytearray | memoryview):
        data = bytes(data)  # a copy: the caller may reuse its buffer
    item = PendingPatch(data, key, time.monotonic() if now is None else now, log)
    with _queue_lock:
        _queue.append(item)
        _set_pending(True)
    return item


def grace() -> float:
    """Seconds to wait for the main thread: `GRACE` if it reached a safe point since the
    last patch, else 0 (an app without safe points gets its patches at once)."""
    return GRACE if _responsive else 0.0


def due(pending: PendingPatch, now: float | None = None) -> bool:
    """True when the submitting thread should apply `pending` itself: nobody applied it
    and the grace period is over."""
    now = time.monotonic() if now is None else now
    return not pending.done.is_set() and now - pending.submitted >= grace()


def deliver(data: bytes, *, key: bytes | None = None) -> PendingPatch:
    """Submit a patch, give the main thread `grace()` seconds to apply it at a safe point,
    then apply it from this thread. Returns once it is applied or refused."""
    global _responsive
    item = submit(data, key=key)
    while not item.done.is_set():
        remaining = item.submitted + grace() - time.monotonic()
        if remaining > 0 and item.done.wait(remaining):
            break
        if due(item):
            _responsive = False  # it did not come in time: don't wait for it next time ...
            _drain()
            if _enabled:
                with _queue_lock:  # ... unless its next call shows it reaches safe points
                    _set_pending(True)
    return item


def on_patch(callback: Callable[[PatchReport], object]) -> Callable[[PatchReport], object]:
    """Register `callback(report)`, run after each applied patch and each rollback.

    Usable as a decorator (returns `callback`). A callback that raises is logged.
    """
    _callbacks.append(callback)
    return callback


def notify(report: PatchReport) -> None:
    """Run the `on_patch` callbacks; one that raises is logged and the rest still run."""
    for callback in list(_callbacks):
        try:
            callback(report)
        except Exception:  # boundary: user callback
            _logger().exception("hotpatch: on_patch callback %r raised", callback)


def redirect(old: object, new: object, identity: str, tx: Transaction) -> None:
    """Send calls through `call`/`@hot` to `old` (and its identity) to `new` from now on."""
    tx.setitem(_by_name, identity, new)
    keys = [old]
    if type(old) is type(_call) and old.__code__ is _ENTRY_CODES[1]:
        keys.append(old.__wrapped__)  # a hot wrapper: its target is a key too
    keys = [k for k in keys if type(k).__hash__ is object.__hash__]
    for key, value in list(_table.items()):
        if any(value is k for k in keys):
            tx.setitem(_table, key, new)  # keep every entry one hop from the latest
    if type(new).__hash__ is object.__hash__ and new in _table:
        tx.delitem(_table, new)  # new was replaced before and is back: no cycles
    for key in keys:
        _keyed.add(type(key))
        tx.setitem(_table, key, new)
    update_mode()  # `call` and `@hot` must look entries up from now on


def resolve(identity: str) -> object | None:
    """The latest object for `module:qualname`, or None if unknown."""
    if identity in _by_name:
        return _by_name[identity]
    module, _, qualname = identity.partition(":")
    obj: object = sys.modules.get(module)
    for part in qualname.split(".") if obj is not None else ():
        obj = getattr(obj, part, None)
    return obj
