"""The patch client: a daemon thread in each app process, talking to the dev server.

Started by the boot (and in child processes by `_child`) when `HOTPATCH_ADDRESS` and
`HOTPATCH_SECRET` are in the environment; otherwise nothing here runs. It connects,
says hello (its pid and build), then applies each patch it receives (at the main
thread's next safe point, or at once if the app has none, see `_jumptable.deliver`)
and answers with the report. If the server goes away it reconnects; after a fork the
child starts its own client (a thread does not survive a fork). If the session itself has
died (its process is gone), a process the session started ends (see `lifeline`).
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

__all__ = ["start", "running"]

log = logging.getLogger(__name__)

_thread: threading.Thread | None = None
_lock = threading.Lock()
_fork_hook = False  # registered once per process; a forked child inherits the hook
_channel: Channel | None = None  # this process's connection, while there is one


def running() -> bool:
    return _thread is not None and _thread.is_alive()


def start() -> bool:
    """Start the client thread if the environment names a dev server; True if started."""
    global _thread, _fork_hook
    address = os.environ.get("HOTPATCH_ADDRESS")
    secret = os.environ.get("HOTPATCH_SECRET")
    if not address or not secret:
        return False
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
            args=(address, bytes.fromhex(secret), line),
            name="hotpatch-client",
            daemon=True,
        )
        _thread.start()
        if not _fork_hook and hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_after_fork)
            _fork_hook = True
    return True


def _after_fork() -> None:
    # The parent's connection came along as a copy of its socket descriptor: closed
    # here, or the server would not see the parent leave while this child lives, and
    # would wait for the parent's reports in vain. Only the descriptor: a shutdown()
    # (as Channel.close does) would end the parent's connection too.
    global _thread, _channel, _lock
    _thread = None
    _lock = threading.Lock()  # another thread of the parent may have held it
    if _channel is not None:
        try:
            _channel.sock.close()
        except OSError:
            pass
        _channel = None
    start()


def _run(address: str, secret: bytes, line: lifeline.Lifeline | None) -> None:
    global _channel
    delay = 0.05
    while True:
        try:
            channel = connect(address, secret)
        except OSError:
            if line is not None and line.session_gone():
                line.end_process()
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
            continue
        delay = 0.05
        _channel = channel
        try:
            _serve(channel)
        except (ProtocolError, ValueError) as exc:
            log.warning("hotpatch: dropped a bad frame from the dev server: %s", exc)
        except (EOFError, OSError):
            pass
        finally:
            _channel = None
            channel.close()
        # Checked here too, not only when connecting fails: another server may have
        # taken the address over (a TCP port), and would drop us at every hello.
        if line is not None and line.session_gone():
            line.end_process()
        time.sleep(delay)


def _hello() -> bytes:
    main = sys.modules.get("__main__")
    return json.dumps(
        {
            "pid": os.getpid(),
            "build": _jumptable.current_build(),
            "main": getattr(main, "__file__", None),
            "argv": sys.argv,
        }
    ).encode()


def _serve(channel: Channel) -> None:
    channel.send(HELLO, _hello())
    while True:
        kind, payload = channel.receive()
        if kind == BYE:
            return
        if kind != PATCH:
            raise ProtocolError(f"unexpected frame kind {kind} from the server")
        received = time.perf_counter()
        pending = _jumptable.deliver(payload)
        channel.send(REPORT, json.dumps(_report(pending, received)).encode())


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
