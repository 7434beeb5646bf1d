"""`thinlink.dev.launcher`: an app started for a short-lived thread outlives that thread.

Linux sends the parent-death signal when the *thread* that started the child ends. The
control case shows the signal is real (a child started from a thread that then ends is
sent SIGTERM at once); through the `Launcher`, the same child survives the thread that
asked for it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest

from hotpatch.lifeline import ENV, session_marker
from thinlink.dev.launcher import Launcher

if not sys.platform.startswith("linux"):
    pytest.skip("the parent-death signal is Linux's", allow_module_level=True)

# The app's side: attach (asks for the signal), say so, then wait for its input to end.
APP = """\
import sys
from hotpatch import lifeline
line = lifeline.attach()
print("ATTACHED", line is not None and line.is_app, flush=True)
sys.stdin.read()
"""


def start_from_a_short_lived_thread(popen) -> subprocess.Popen:  # noqa: ANN001
    """Start the app from a new thread, wait until it has asked for its signal, then let
    the thread end; the app."""
    started: list[subprocess.Popen] = []
    attached = threading.Event()

    def run() -> None:
        app = popen(
            [sys.executable, "-c", APP],
            env={**os.environ, ENV: session_marker()},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        started.append(app)
        assert app.stdout.readline().split() == ["ATTACHED", "True"]
        attached.set()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert attached.is_set()
    return started[0]


def test_a_child_of_a_thread_that_ends_is_sent_its_signal():
    app = start_from_a_short_lived_thread(subprocess.Popen)
    try:
        assert app.wait(10) == -signal.SIGTERM
    finally:
        app.kill()
        app.wait()


def test_a_child_started_through_the_launcher_outlives_the_thread_that_asked():
    launcher = Launcher()
    app = start_from_a_short_lived_thread(launcher.popen)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            app.wait(1.0)  # the control case above ends well within this
        app.stdin.close()
        assert app.wait(10) == 0
    finally:
        app.kill()
        app.wait()


def test_the_launcher_raises_what_popen_raises():
    with pytest.raises(FileNotFoundError):
        Launcher().popen(["/nonexistent/program"])
