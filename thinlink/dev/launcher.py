"""Starting the app's processes, always from one long-lived thread.

Why one thread: the app asks Linux for a signal when its parent dies (see
`hotpatch.lifeline`), and Linux means the *thread* that started it, not the process. An
app restarted from a short-lived thread (the one a SIGHUP, a key press or a patch needing
a restart runs on) would be sent that signal as soon as the thread ended. So every
`subprocess.Popen` of the session goes through a `Launcher`, whose thread lives as long
as the session's process.
"""

from __future__ import annotations

import queue
import subprocess
import threading
from concurrent.futures import Future
from typing import Any

__all__ = ["Launcher"]


class Launcher:
    """Runs `subprocess.Popen` on its own thread. Operation is thread-safe."""

    def __init__(self) -> None:
        self._requests: queue.Queue[tuple[Future, list[str], dict[str, Any]]] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="thinlink-launcher", daemon=True)
        self._thread.start()

    def popen(self, command: list[str], **kwargs: Any) -> subprocess.Popen:
        """`subprocess.Popen(command, **kwargs)`, started on the launcher's thread; what it
        raises is raised here."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("Launcher.popen called from the launcher's own thread")
        started: Future[subprocess.Popen] = Future()
        self._requests.put((started, command, kwargs))
        return started.result()

    @property
    def thread(self) -> threading.Thread:
        """The thread every process is started from (the parent the kernel knows)."""
        return self._thread

    def _run(self) -> None:
        while True:
            started, command, kwargs = self._requests.get()
            if not started.set_running_or_notify_cancel():
                continue
            try:
                started.set_result(subprocess.Popen(command, **kwargs))
            except BaseException as exc:  # handed to the caller, who raises it
                started.set_exception(exc)
