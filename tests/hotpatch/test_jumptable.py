"""`call`, `hot`, safe points, the patch queue and `on_patch`: driven by hand, no sleeps."""

from __future__ import annotations

import logging
import operator
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import hotpatch
from hotpatch import _apply, _jumptable
from hotpatch._jumptable import due, hot, on_patch, safepoint, submit
from hotpatch._transaction import Transaction
from hotpatch.bundle import Bundle, encode


@pytest.fixture(autouse=True)
def clean_runtime(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("HOTPATCH_ENABLED", raising=False)
    _reset()
    yield
    _reset()


def _reset() -> None:
    _jumptable.set_build(None)
    _apply._history.clear()
    _jumptable._table.clear()
    _jumptable._by_name.clear()
    _jumptable._callbacks.clear()
    _jumptable._queue.clear()
    _jumptable._enabled = _jumptable._pending = _jumptable._responsive = False
    _jumptable.update_mode()


def call(fn, /, *args, **kwargs):
    """`hotpatch.call` as the app sees it now (`enable()` rebinds it). Not a plain alias:
    this frame sits between, which the safe-point walk must (and does) ignore."""
    return _jumptable.call(fn, *args, **kwargs)


def patch_bytes(target: str, key: bytes | None = None) -> bytes:
    """An empty patch whose only effect is moving the process to build `target`."""
    return encode(Bundle(_apply.current_build() or "b0", target), key)


def one() -> int:
    return 1


def two() -> int:
    return 2


# -- hot and call ----------------------------------------------------------------------------


def test_hot_returns_the_function_itself_when_disabled() -> None:
    assert hot(one) is one


def test_hot_wraps_when_enabled_by_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTPATCH_ENABLED", "1")
    wrapped = hot(one)
    assert wrapped is not one and wrapped.__wrapped__ is one
    assert wrapped.__name__ == "one" and wrapped() == 1


def test_hot_wraps_methods() -> None:
    _jumptable.enable()

    class Thing:
        @hot
        def value(self, x: int, *, y: int = 0) -> tuple:
            return self, x, y

    thing = Thing()
    assert thing.value(1, y=2) == (thing, 1, 2)


@pytest.mark.parametrize("enabled", [False, True])
def test_call_passes_arguments_and_exceptions(enabled: bool) -> None:
    if enabled:
        _jumptable.enable()

    def f(a, b=0, *, c=0):
        return a + b + c

    assert call(f, 1) == 1 and call(f, 1, 2, c=3) == 6
    with pytest.raises(TypeError):
        call(f)
    with pytest.raises(TypeError):
        call(f, 1, 2, 3, 4)


def test_call_is_operator_call_unless_enabled() -> None:
    """Production: `call` is `operator.call` itself, all in C. enable() rebinds it, in the
    package too; a reference taken before keeps `operator.call` (documented)."""
    early = hotpatch.call
    assert early is operator.call and _jumptable.call is operator.call
    _jumptable.enable()
    assert hotpatch.call is _jumptable._call and _jumptable.call is _jumptable._call
    assert early is operator.call
    assert "latest version" in hotpatch.call.__doc__
    _reset()
    assert hotpatch.call is operator.call


def test_a_queued_patch_or_a_table_entry_alone_does_not_rebind_call() -> None:
    submit(patch_bytes("b1"))
    _jumptable.redirect(one, two, "m:one", Transaction())
    assert hotpatch.call is operator.call and hotpatch.call(one) == 1
    assert safepoint()[0].build_id == "b1"


@pytest.mark.parametrize("env, fast", [(None, True), ("1", False), ("0", True)])
def test_the_environment_at_import_chooses_call(env: str | None, fast: bool) -> None:
    environ = {k: v for k, v in os.environ.items() if k != "HOTPATCH_ENABLED"}
    if env is not None:
        environ["HOTPATCH_ENABLED"] = env
    code = (
        "import operator, hotpatch\n"
        "from hotpatch import call\n"
        "print(call is operator.call, call is hotpatch._jumptable.call, call(abs, -2))"
    )
    root = str(Path(hotpatch.__file__).resolve().parents[1])
    out = subprocess.run(
        [sys.executable, "-c", code], env=environ, cwd=root, capture_output=True, text=True
    )
    assert out.stdout.split() == [str(fast), "True", "2"], out.stderr


def test_check_flag_follows_pending_and_table() -> None:
    assert not _jumptable._check
    _jumptable.enable()
    assert _jumptable._check  # the probe
    call(one)
    assert not _jumptable._check
    tx = Transaction()
    _jumptable.redirect(one, two, "m:one", tx)
    assert _jumptable._check and call(one) == 2
    submit(patch_bytes("b1"))
    call(one)  # applies the patch: nothing pending, but the table still needs looking up
    assert _jumptable._check and call(one) == 2
    tx.rollback()
    _jumptable.update_mode()  # what apply/rollback do after undoing table entries
    assert not _jumptable._check and call(one) == 1


def test_redirect_sends_call_and_hot_to_the_new_object() -> None:
    _jumptable.enable()
    hot_one = hot(one)
    tx = Transaction()
    _jumptable.redirect(one, two, "m:one", tx)
    assert call(one) == 2 and hot_one() == 2 and one() == 1
    assert _jumptable.resolve("m:one") is two
    tx.rollback()
    assert call(one) == 1 and hot_one() == 1 and _jumptable.resolve("m:one") is None


def test_redirect_keeps_one_hop_and_no_cycles() -> None:
    def three() -> int:
        return 3

    _jumptable.enable()
    tx = Transaction()
    _jumptable.redirect(one, two, "m:f", tx)
    _jumptable.redirect(two, three, "m:f", tx)
    assert _jumptable._table[one] is three and call(one) == 3
    _jumptable.redirect(three, one, "m:f", tx)  # back to the first object
    assert one not in _jumptable._table and call(one) == 1 and call(two) == 1


def test_redirecting_a_hot_wrapper_redirects_its_target() -> None:
    _jumptable.enable()
    old_wrapper = hot(one)
    _jumptable.redirect(old_wrapper, two, "m:one", Transaction())
    assert call(old_wrapper) == 2 and old_wrapper() == 2


def test_call_never_hashes_user_objects() -> None:
    class Unhashable:
        __hash__ = None  # type: ignore[assignment]

        def __call__(self) -> str:
            return "ok"

    class Explodes:
        def __hash__(self) -> int:
            raise RuntimeError("hashed")

        def __call__(self) -> str:
            return "ok"

    _jumptable.enable()
    _jumptable.redirect(one, two, "m:one", Transaction())  # the table is in use
    assert _jumptable._check and call(Unhashable()) == "ok" and call(Explodes()) == "ok"


# -- safe points -----------------------------------------------------------------------------


def test_safepoint_applies_pending_patches_in_order() -> None:
    first = submit(patch_bytes("b1"))
    second = submit(encode(Bundle("b1", "b2")))
    assert _jumptable._pending
    reports = safepoint()
    assert [r.build_id for r in reports] == ["b1", "b2"]
    assert first.done.is_set() and second.report is reports[1]
    assert not _jumptable._pending and safepoint() == ()


def test_a_bad_patch_at_a_safepoint_is_logged_not_raised(caplog) -> None:
    _apply.set_build("b0")
    bad = submit(encode(Bundle("elsewhere", "b1")))
    good = submit(patch_bytes("b1"))
    with caplog.at_level(logging.ERROR, logger="hotpatch._jumptable"):
        reports = safepoint()
    assert [r.build_id for r in reports] == ["b1"]
    assert "elsewhere" in str(bad.error) and good.error is None
    assert "patches build 'elsewhere'" in caplog.text


def test_the_public_submit_takes_a_bundle_and_may_leave_failures_to_the_caller(
    caplog,
) -> None:
    # `hotpatch.submit` (what `%load_ext thinlink` queues from its watcher thread): a
    # Bundle as it is, no bytes; with log=False the caller reports `error` itself.
    _apply.set_build("b0")
    good = hotpatch.submit(Bundle("b0", "b1"), log=False)
    bad = hotpatch.submit(Bundle("elsewhere", "b2"), log=False)
    assert isinstance(good, hotpatch.PendingPatch) and not good.done.is_set()
    with caplog.at_level(logging.ERROR, logger="hotpatch._jumptable"):
        reports = hotpatch.safepoint()
    assert [r.build_id for r in reports] == ["b1"] and good.report is reports[0]
    assert bad.done.is_set() and "elsewhere" in str(bad.error)
    assert caplog.text == ""


def test_the_outermost_call_on_the_main_thread_is_the_safe_point() -> None:
    _jumptable.enable()
    builds = []

    def inner() -> None:
        builds.append(_apply.current_build())

    def outer() -> None:
        submit(patch_bytes("b1"))
        call(inner)  # nested: not a safe point
        builds.append(_apply.current_build())

    call(outer)
    assert builds == [None, None] and _jumptable._pending
    call(inner)  # the next outermost call applies first, then runs
    assert builds == [None, None, "b1"] and not _jumptable._pending


def test_the_safe_point_check_starts_at_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither the `call`/hot frame nor the caller's caller: the caller may itself be a
    `call` (`call(call, f)`), and must be counted then."""
    _jumptable.enable()
    seen = []
    monkeypatch.setattr(_jumptable, "_at_call", lambda frame: seen.append(frame))
    _jumptable.call(one)
    hot(one)()
    here = sys._getframe()
    assert seen == [here, here]
    seen.clear()
    _jumptable.call(_jumptable.call, one)
    assert [f.f_code for f in seen] == [here.f_code, _jumptable._call.__code__]


def test_hot_functions_are_safe_points_too() -> None:
    _jumptable.enable()
    seen = []
    record = hot(lambda: seen.append(_apply.current_build()))
    submit(patch_bytes("b1"))
    record()
    assert seen == ["b1"]


def test_calls_on_other_threads_are_not_safe_points() -> None:
    _jumptable.enable()
    submit(patch_bytes("b1"))
    thread = threading.Thread(target=call, args=(one,))
    thread.start()
    thread.join()
    assert _apply.current_build() is None and _jumptable._pending
    call(one)
    assert _apply.current_build() == "b1"


def test_first_main_thread_call_after_enable_shows_it_reaches_safe_points() -> None:
    _jumptable.enable()
    assert _jumptable.grace() == 0.0  # not known yet: a patch would go live at once
    call(one)
    assert _jumptable.grace() == _jumptable.GRACE and not _jumptable._pending


def test_due_decides_when_the_submitting_thread_applies() -> None:
    pending = submit(patch_bytes("b1"), now=100.0)
    assert due(pending, now=100.0)  # the main thread never showed safe points: at once
    _jumptable._responsive = True
    assert not due(pending, now=100.0 + _jumptable.GRACE / 2)
    assert due(pending, now=100.0 + _jumptable.GRACE * 1.5)
    safepoint()
    assert not due(pending, now=1000.0)  # already applied


def _applied_on(thread_ids: list[int]) -> None:
    on_patch(lambda report: thread_ids.append(threading.get_ident()))


def test_deliver_applies_from_the_background_when_main_has_no_safe_points() -> None:
    applied_on: list[int] = []
    _applied_on(applied_on)
    result = {}
    thread = threading.Thread(target=lambda: result.update(p=_jumptable.deliver(patch_bytes("b1"))))
    thread.start()
    thread.join()
    assert result["p"].report.build_id == "b1" and applied_on == [thread.ident]


def test_deliver_waits_for_a_main_thread_that_reaches_safe_points(monkeypatch) -> None:
    monkeypatch.setattr(_jumptable, "GRACE", 60.0)  # the main thread surely comes first
    _jumptable.enable()
    call(one)  # shows the main thread reaches safe points
    applied_on: list[int] = []
    _applied_on(applied_on)
    thread = threading.Thread(target=_jumptable.deliver, args=(patch_bytes("b1"),))
    thread.start()
    while _apply.current_build() is None:
        call(one)
    thread.join()
    assert applied_on == [threading.get_ident()]


def test_deliver_from_background_probes_main_again() -> None:
    _jumptable.enable()
    thread = threading.Thread(target=_jumptable.deliver, args=(patch_bytes("b1"),))
    thread.start()
    thread.join()
    assert _apply.current_build() == "b1" and _jumptable._pending  # the probe
    call(one)
    assert not _jumptable._pending and _jumptable.grace() == _jumptable.GRACE


# -- on_patch --------------------------------------------------------------------------------


def test_on_patch_is_a_decorator_and_a_raising_callback_is_logged(caplog) -> None:
    seen = []

    @on_patch
    def broken(report):
        raise ValueError("callback bug")

    @on_patch
    def record(report):
        seen.append(report.build_id)

    assert broken.__name__ == "broken"
    with caplog.at_level(logging.ERROR, logger="hotpatch._jumptable"):
        _apply.apply(patch_bytes("b1"))
    assert seen == ["b1"]
    assert "callback bug" in caplog.text
