"""`hotpatch.lifeline` with real processes: who is provably gone, and who may end itself.

Identities are taken of real processes (this one, children alive, reaped, zombies);
`attach` runs in child Pythons started the ways a session, an app and an outsider start.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace

import pytest

from hotpatch.lifeline import ENV, ProcessId, session_marker

if not sys.platform.startswith("linux"):
    pytest.skip("start times and boots come from /proc", allow_module_level=True)


def sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0]


def test_an_identity_round_trips_and_names_this_host():
    me = ProcessId.of()
    assert me.pid == os.getpid() and me.start > 0
    assert ProcessId.parse(me.encode()) == me
    assert me.is_here() and not me.is_gone()
    assert session_marker() == me.encode()


@pytest.mark.parametrize("text", ["", "a b c", "a b 1 x", "a b -1 2", "a b 1 2 3"])
def test_parse_refuses_what_is_not_an_identity(text):
    assert ProcessId.parse(text) is None


def test_a_running_child_is_not_gone_and_a_reaped_one_is():
    child = sleeper()
    try:
        identity = ProcessId.of(child.pid)
        assert not identity.is_gone()
    finally:
        child.kill()
        child.wait()
    assert identity.is_gone()


def test_a_zombie_is_gone():
    child = sleeper()
    identity = ProcessId.of(child.pid)
    child.kill()
    try:
        deadline = time.monotonic() + 10
        while state(child.pid) != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert state(child.pid) == "Z"  # dead, and not reaped yet
        assert identity.is_gone()
    finally:
        child.wait()


def test_a_reused_pid_is_gone_another_boot_is_gone_another_host_is_not_known():
    child = sleeper()
    try:
        other = ProcessId.of(child.pid)
        assert not other.is_gone()
        assert replace(other, start=other.start + 1).is_gone()  # another process, same pid
        assert replace(other, boot="another-boot").is_gone()  # this host rebooted since
        assert not replace(other, node="another-host", boot="x", pid=999999).is_gone()
    finally:
        child.kill()
        child.wait()


REPORT = """\
import ctypes, json, os, sys
from hotpatch import lifeline
line = lifeline.attach()
signal = ctypes.c_int()
ctypes.CDLL(None).prctl(2, ctypes.byref(signal), 0, 0, 0)  # PR_GET_PDEATHSIG
print(json.dumps({"line": None if line is None else
      [line.session.pid, line.sid, line.is_app, os.environ[lifeline.ENV]],
      "pdeathsig": signal.value}), flush=True)
"""
ATTACH = REPORT + "sys.stdin.readline()\n"


def attach_in(env: dict[str, str], **popen) -> tuple[subprocess.Popen, dict]:
    child = subprocess.Popen(
        [sys.executable, "-c", ATTACH],
        env={**os.environ, **env},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        **popen,
    )
    return child, json.loads(child.stdout.readline())


def finish(child: subprocess.Popen) -> None:
    child.stdin.close()
    child.wait(10)


def test_the_app_is_the_sessions_child_leading_its_own_session():
    child, got = attach_in({ENV: session_marker()}, start_new_session=True)
    finish(child)
    assert got["line"] == [os.getpid(), child.pid, True, f"{session_marker()}@{child.pid}"]
    assert got["pdeathsig"] == signal.SIGTERM  # sent when its parent's thread goes


@pytest.mark.parametrize(
    "marker, popen",
    [
        (lambda: session_marker(), {}),  # not a session leader: not the app
        (lambda: f"{session_marker()}@1", {}),  # in another session than the app's
        (lambda: f"{session_marker()}@x", {}),
        (lambda: "not an identity", {"start_new_session": True}),
        (lambda: replace(ProcessId.of(), node="elsewhere").encode(), {"start_new_session": True}),
    ],
    ids=["not-leader", "other-session", "bad-sid", "garbage", "other-host"],
)
def test_a_process_not_provably_under_the_session_has_no_lifeline(marker, popen):
    child, got = attach_in({ENV: marker()}, **popen)
    finish(child)
    assert got == {"line": None, "pdeathsig": 0}


def test_a_copy_of_the_apps_environment_elsewhere_has_no_lifeline():
    # A session leader with the launch variable, whose parent is not the session (the
    # session is alive): started by something else with the session's variable.
    outsider = ProcessId.of(os.getppid()).encode()  # alive, and not our child's parent
    child, got = attach_in({ENV: outsider}, start_new_session=True)
    finish(child)
    assert got == {"line": None, "pdeathsig": 0}


def test_the_apps_children_inherit_its_session_id_and_are_not_the_app():
    script = (
        REPORT + "import subprocess\n"
        f"subprocess.run([sys.executable, '-c', {REPORT!r}])\n"
        "sys.stdin.readline()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        env={**os.environ, ENV: session_marker()},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        app = json.loads(child.stdout.readline())
        grandchild = json.loads(child.stdout.readline())
    finally:
        finish(child)
    assert app["line"][1:3] == [child.pid, True] and app["pdeathsig"] == signal.SIGTERM
    # Tied to the app's session (the marker the app wrote), not the app; no signal.
    assert grandchild == {"line": [os.getpid(), child.pid, False, app["line"][3]], "pdeathsig": 0}


def test_an_app_whose_session_died_before_it_started_ends_at_once():
    # The session (a middle process) starts the app and dies before the app gets to
    # attach: the app finds itself an orphan of a dead session, and ends.
    middle = textwrap.dedent(
        """
        import os, subprocess, sys
        from hotpatch.lifeline import ENV, session_marker
        env = dict(os.environ, **{ENV: session_marker()})
        app = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(0.5); "
             "from hotpatch import lifeline; lifeline.attach(); print('SURVIVED', flush=True)"],
            env=env, start_new_session=True)
        print(app.pid, flush=True)
        os._exit(0)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", middle], capture_output=True, text=True, timeout=30
    )
    app_pid = int(done.stdout.split()[0])
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            if state(app_pid) in ("Z", "X"):
                break
        except FileNotFoundError:
            break
        time.sleep(0.02)
    else:
        raise AssertionError("the orphaned app is still running")
    assert "SURVIVED" not in done.stdout
