"""The patch client: a daemon thread in each app process, talking to the dev server.

Started by the boot (and in child processes by `_child`) when `HOTPATCH_ADDRESS` and
`HOTPATCH_SECRET` are in the environment; otherwise nothing here runs. It connects,
says hello (its pid and build), then applies each patch it receives (at the main
thread's next safe point, or at once if the app has none, see `_jumptable.deliver`)
and answers with the report. If the server goes away it reconnects; after a fork the
child starts its own client (a thread does not survive a fork). If the session itself has
died (its process is gone), a process the session started ends (see `lifeline`).

Cluster workers (`hotpatch.cluster`) start it with the session's address and secret
from the engine rather than the environment, and a `role` ("ray worker", "dask
worker"): such a process was not started by the session and lives on without it; its
hello also says what it runs (`about`), for the session to bring it up to date. Its
engine may hand it another session later (a new `thinlink dev` run against the same
cluster): the client then moves there (`_retarget`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import traceback

from . import _jumptable, lifeline
from .protocol import BYE, HELLO, PATCH, REPORT, Channel, ProtocolError, connect

TYPE_CHECKING = False  # see hotpatch/__init__.py: the start-up path stays off typing
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["role", "running", "start", "unreachable", "wait_answered", "wait_connected"]

log = logging.getLogger(__name__)

_thread: threading.Thread | None = None
_lock = threading.Lock()
_fork_hook = False  # registered once per process; a forked child inherits the hook
_channel: Channel | None = None  # this process's connection, while there is one
# Set by `start(role=...)` in a process that joined through a cluster engine: it was not
# started by the session, and its hello carries `_about()` (what source it runs).
_role: str | None = None
_about: Callable[[], dict] | None = None
_joined: tuple[str, str] | None = None  # (address, secret) given to start(), for a fork
_target: tuple[str, bytes] | None = None  # where the client thread connects
_unreachable: str | None = None  # why the last attempt to connect failed
_connected = threading.Event()  # set while connected to the dev server
_send_lock = threading.Lock()  # the client thread and `_introduce` both send
_answered = threading.Event()  # set once a patch (a worker's catch-up) has been handled


def running() -> bool:
    return _thread is not None and _thread.is_alive()


def role() -> str | None:
    """The role this process joined the session in ("ray worker"...), None for a process
    the session started."""
    return _role


def wait_connected(timeout: float) -> bool:
    """Wait up to `timeout` seconds for the client to be connected; True if it is."""
    return _connected.wait(timeout)


def unreachable() -> str | None:
    """Why the client's last attempt to connect failed (None before any failed)."""
    return _unreachable


def wait_answered(timeout: float) -> bool:
    """Wait up to `timeout` seconds for the first patch from the session to be handled
    (the session answers a cluster worker's hello with its catch-up); True if it was."""
    return _answered.wait(timeout)


def start(
    address: str | None = None,
    secret: str | None = None,
    *,
    role: str | None = None,
    about: Callable[[], dict] | None = None,
) -> bool:
    """Start the client thread if the environment (or the arguments) name a dev server;
    True if started. `role` and `about` are for processes that joined through a cluster
    engine (see the module docstring); a client already running keeps its connection
    and says them in its next hello."""
    global _thread, _fork_hook, _role, _about, _joined, _target
    if address and secret:
        _joined = address, secret
    address = address or os.environ.get("HOTPATCH_ADDRESS")
    secret = secret or os.environ.get("HOTPATCH_SECRET")
    if not address or not secret:
        return False
    target = address, bytes.fromhex(secret)
    if role is not None:
        _role, _about = role, about
        if running() and target != _target:
            _retarget(target)
        else:
            _introduce()  # a client already connected says it again, with its role
    _target = target
    # Everything the thread will need is imported here, on the calling thread: a thread
    # importing `typing` while the app's main thread is half-way through importing it
    # shows the app a partially initialised module.
    from . import _apply  # noqa: F401
    from .adapters import _registry

    _registry.discover()  # third-party adapters' entry points: read here, not mid-patch

    with _lock:
        if running():
            return True
        _jumptable.enable()
        line = lifeline.attach()
        _thread = threading.Thread(
            target=_run,
            args=(line,),
            name="hotpatch-client",
            daemon=True,
        )
        _thread.start()
        if not _fork_hook and hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_after_fork)
            _fork_hook = True
    return True


def _retarget(target: tuple[str, bytes]) -> None:
    """Move a cluster worker's client to another session (a new `thinlink dev` run
    against the same cluster: its engine hands the worker the new address and secret).
    The worker joins it as a newcomer: its build is the old session's, meaningless
    there, and the new session brings it up to date from the source it runs."""
    global _target
    _target = target
    _connected.clear()
    _answered.clear()
    _jumptable.set_build(None)
    channel = _channel
    if channel is not None:
        try:
            channel.sock.shutdown(2)  # the client thread sees it end, and connects anew
        except OSError:
            pass


def _after_fork() -> None:
    # The parent's connection came along as a copy of its socket descriptor: closed
    # here, or the server would not see the parent leave while this child lives, and
    # would wait for the parent's reports in vain. Only the descriptor: a shutdown()
    # (as Channel.close does) would end the parent's connection too.
    global _thread, _channel, _lock, _send_lock, _connected, _answered
    if _about_to_exec():
        return  # the descriptor goes with the exec (sockets are made non-inheritable)
    _thread = None
    # New locks and events: the parent's client thread may have held one at the fork (it
    # holds the send lock while it says its hello or sends a report), and that thread is
    # not in the child to release it: the child would never say its hello.
    _lock = threading.Lock()
    _send_lock = threading.Lock()
    _connected = threading.Event()
    _answered = threading.Event()
    # Likewise the lock patches are applied under (a fork during a patch): the child
    # would wait for it forever, at its first patch or import.
    targets = sys.modules.get(f"{__package__}._targets")  # not imported: nothing held
    reinit = getattr(getattr(targets, "LOCK", None), "_at_fork_reinit", None)
    if reinit is not None:
        reinit()
    if _channel is not None:
        try:
            _channel.sock.close()
        except OSError:
            pass
        _channel = None
    start(*(_joined or ()))


def _about_to_exec() -> bool:
    """This fork's child is about to run another program: `subprocess` calls the fork
    hooks in the child only for a `preexec_fn` (Ray starts its servers so), and then
    execs. A client started there would connect and be cut off mid-handshake."""
    popen = getattr(sys.modules.get("subprocess"), "Popen", None)
    execute = getattr(getattr(popen, "_execute_child", None), "__code__", None)
    frame = sys._getframe(1) if execute is not None else None
    while frame is not None:
        if frame.f_code is execute:
            return True
        frame = frame.f_back
    return False


def _run(line: lifeline.Lifeline | None) -> None:
    global _channel, _unreachable
    delay = 0.05
    said = None  # a worker says once per session that it cannot reach it (and keeps trying)
    while True:
        assert _target is not None
        address, secret = _target
        try:
            channel = connect(address, secret)
        except OSError as exc:
            _unreachable = str(exc)
            if _role is None and line is not None and line.session_gone():
                line.end_process()
            if _role is not None and said != _target:
                said = _target
                log.warning(
                    "hotpatch: %s cannot reach the dev session at %s (%s); retrying",
                    _role,
                    address,
                    exc,
                )
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
            continue
        delay = 0.05
        if _target != (address, secret):  # moved to another session meanwhile
            channel.close()
            continue
        _channel = channel
        _connected.set()
        try:
            _serve(channel)
        except (ProtocolError, ValueError) as exc:
            log.warning("hotpatch: dropped a bad frame from the dev server: %s", exc)
        except (EOFError, OSError):
            pass
        finally:
            _connected.clear()
            _channel = None
            channel.close()
        # Checked here too, not only when connecting fails: another server may have
        # taken the address over (a TCP port), and would drop us at every hello.
        if line is not None and line.session_gone():
            line.end_process()
        time.sleep(delay)


def _hello() -> bytes:
    main = sys.modules.get("__main__")
    hello = {
        "pid": os.getpid(),
        "build": _jumptable.current_build(),
        "main": getattr(main, "__file__", None),
        "argv": sys.argv,
    }
    if _role is not None:
        hello["role"] = _role
        if _about is not None:
            try:
                hello.update(_about())
            except Exception:  # boundary: a hello without it still joins the session
                log.exception("hotpatch: could not describe this worker")
    return json.dumps(hello).encode()


def _introduce() -> None:
    channel = _channel
    if channel is None:
        return  # not connected: the next connection's hello says it
    try:
        with _send_lock:
            channel.send(HELLO, _hello())
    except OSError:
        pass  # the client thread sees the connection end, and reconnects


def _serve(channel: Channel) -> None:
    with _send_lock:
        channel.send(HELLO, _hello())
    while True:
        kind, payload = channel.receive()
        if kind == BYE:
            return
        if kind != PATCH:
            raise ProtocolError(f"unexpected frame kind {kind} from the server")
        received = time.perf_counter()
        pending = _jumptable.deliver(payload)
        report = json.dumps(_report(pending, received)).encode()
        with _send_lock:
            channel.send(REPORT, report)
        _answered.set()


def _report(pending: _jumptable.PendingPatch, received: float) -> dict:
    out: dict = {"pid": os.getpid(), "build": _jumptable.current_build()}
    waited = (time.perf_counter() - received) * 1000
    if pending.error is not None:
        err = pending.error
        out["error"] = str(err)
        out["traceback"] = "".join(traceback.format_exception(err)).rstrip()
    elif pending.report is not None:
        report = pending.report
        out.update(
            patched=list(report.patched),
            added=list(report.added),
            removed=list(report.removed),
            rerun=list(report.rerun),
            warnings=list(report.warnings),
            needs_restart=report.needs_restart,
            timings=dict(report.timings),
            skipped=list(report.skipped),
            adapted=list(report.adapted),
            unseen=list(report.unseen),
        )
    out["apply_ms"] = round(waited, 3)
    return out
