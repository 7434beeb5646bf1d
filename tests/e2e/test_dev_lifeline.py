"""`kill -9` of `thinlink dev`: its app goes down with it, and nothing else does.

A real session (`DevApp`) runs an app that holds a TCP port and has multiprocessing
workers (forked and spawned). `thinlink dev` is killed outright at a seeded random
moment: while it starts, while idle, mid-patch, mid-restart. Then no process of the app
may survive: every process carrying the test's token in its environment (the session
passes its environment on to the app, and the app to its workers) must go, the app's pid
first among them, and its port must be free. The session's private directory is left
behind (nobody could remove it) and the next `thinlink dev` removes it.

Processes that are not the session's own are left alone: one that joined from another
process tree with the session's variables, and one that left the app's session.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from .conftest import ENV
from .devapp import DevApp, dedent, edit, wait_until

if not sys.platform.startswith("linux"):
    pytest.skip("reads processes from /proc", allow_module_level=True)

APP = """\
import multiprocessing as mp, os, socket, sys, time
import work


def idle(_):
    time.sleep(300)


if __name__ == "__main__":
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    pools = [mp.get_context("fork").Pool(2), mp.get_context("spawn").Pool(1)]
    for pool in pools:
        pool.map_async(idle, range(len(pool._pool)))
    print("READY", os.getpid(), listener.getsockname()[1], flush=True)
    print("LIFELINE", os.environ["HOTPATCH_LIFELINE"], flush=True)
    last = None
    while True:
        if work.value() != last:
            last = work.value()
            print("VALUE", last, flush=True)
        time.sleep(0.01)
"""
WORK = 'def value():\n    return "one"\n'
KILL_WITHIN = 15.0  # seconds; the app goes at once, its workers within the client's retry


def write(root: Path, files: dict[str, str]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(dedent(text))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    write(root, {"pyproject.toml": "", "app.py": APP, "work.py": WORK})
    return root


def processes_with(token: str) -> set[int]:
    """The living processes whose environment carries `token` (a zombie's is empty)."""
    needle = token.encode()
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if needle in f.read():
                        found.add(int(entry))
            except OSError:
                continue
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except OSError:
        return False


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
    return False


def rundirs_of(pid: int) -> list[Path]:
    """The session directories whose owner file names process `pid`."""
    import tempfile

    found = []
    for path in Path(tempfile.gettempdir()).glob("thinlink-*"):
        try:
            fields = (path / "owner").read_text().split()
        except OSError:
            continue
        if len(fields) == 4 and fields[2] == str(pid):
            found.append(path)
    return found


def kill_all(pids: set[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start_and_exit(tmp_path: Path) -> None:
    """One more `thinlink dev`, of an app that exits at once."""
    quick = tmp_path / "quick"
    write(quick, {"pyproject.toml": "", "app.py": "print('quick')\n"})
    with DevApp(quick, "app.py") as session:
        assert session.wait() == 0, session.transcript()


MOMENTS = ["start", "idle", "mid-patch", "mid-restart"]


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("moment", MOMENTS)
def test_kill_9_of_thinlink_dev_takes_every_process_of_its_app_down(
    tmp_path: Path, project: Path, moment: str, seed: int
) -> None:
    rng = random.Random(f"{moment}/{seed}")
    token = f"DEVFAULTS_TOKEN=session-{uuid.uuid4().hex}"
    name, _, value = token.partition("=")
    session = DevApp(project, "-v", "app.py", env={name: value})
    app_pid = port = None
    try:
        if moment == "start":
            # From its first instruction to its app's workers running: about 0.6 s here.
            time.sleep(rng.uniform(0.0, 0.8))
        else:
            ready = session.wait_out(r"^READY (\d+) (\d+)$")
            app_pid, port = int(ready.group(1)), int(ready.group(2))
            session.wait_out(r"^VALUE one$")
            steady = processes_with(token)
            assert len(steady) >= 4, steady  # the app, two forked and one spawned worker
            if moment == "mid-patch":
                edit(project / "work.py", '"one"', f'"two-{seed}"')
                time.sleep(rng.uniform(0.0, 0.08))
            elif moment == "mid-restart":
                session.signal(signal.SIGHUP)
                session.wait_err(r"restarting: ")
                time.sleep(rng.uniform(0.0, 0.5))
        before = processes_with(token)
        session.proc.kill()
        session.proc.wait()
        left = rundirs_of(session.proc.pid)
        try:
            wait_until(lambda: not processes_with(token), KILL_WITHIN, what="the app to go")
        except AssertionError:
            raise AssertionError(
                f"still running after {KILL_WITHIN} s: {sorted(processes_with(token))} "
                f"(of {sorted(before)})\n{session.transcript()}"
            ) from None
        if app_pid is not None:
            assert not alive(app_pid)
            assert port_free(port)
        if moment != "start":
            assert left, "the killed session's directory (it cannot remove it itself)"
    finally:
        session.close()
        kill_all(processes_with(token))
    start_and_exit(tmp_path)
    assert not rundirs_of(session.proc.pid)  # the next session removed it
    assert not any(path.exists() for path in left)


STUBBORN_APP = """\
import os, signal, subprocess, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen(["sleep", "300"])  # not Python: no patch client of its own
print("READY", os.getpid(), child.pid, flush=True)
while True:
    time.sleep(0.01)
"""


def test_an_app_that_ignores_sigterm_is_killed_with_its_group_after_the_grace(
    project: Path,
) -> None:
    # The parent-death signal (SIGTERM) is ignored; the app's patch client then sees the
    # session gone, and ends the app's process group: SIGTERM, and SIGKILL after 5 s.
    write(project, {"app.py": STUBBORN_APP})
    session = DevApp(project, "app.py")
    app_pid = sleeper = 0
    try:
        ready = session.wait_out(r"^READY (\d+) (\d+)$")
        app_pid, sleeper = int(ready.group(1)), int(ready.group(2))
        session.proc.kill()
        session.proc.wait()
        wait_until(lambda: not alive(app_pid) and not alive(sleeper), KILL_WITHIN, what="both")
        assert "the dev session (pid" in session.err.text()
    finally:
        session.close()
        kill_all({pid for pid in (app_pid, sleeper) if pid and alive(pid)})


OUTSIDER = """\
import os, sys, time
from hotpatch import _client, lifeline

print("OUTSIDER", os.getpid(), lifeline.attach() is None, _client.running(), flush=True)
for line in sys.stdin:  # asked, after the session has gone
    print("GONE", lifeline.ProcessId.parse(os.environ[lifeline.ENV].partition("@")[0]).is_gone(),
          flush=True)
"""


def test_processes_that_are_not_the_sessions_own_are_left_alone(
    tmp_path: Path, project: Path
) -> None:
    # With the session's variables (address, secret, lifeline), but in another process
    # tree: a cluster worker that joined from elsewhere, or a copy of the app's launch
    # environment. And a process the app started that left its session on purpose.
    write(
        project,
        {
            "app.py": APP.replace(
                'print("READY"',
                "import subprocess\n    detached = subprocess.Popen([sys.executable, '-c', "
                "'import time; time.sleep(300)'], start_new_session=True)\n"
                '    print("DETACHED", detached.pid, flush=True)\n    print("READY"',
            ),
            "outsider.py": OUTSIDER,
        },
    )
    session = DevApp(project, "-v", "app.py")
    outsiders: list[subprocess.Popen] = []
    detached = 0
    try:
        detached = int(session.wait_out(r"^DETACHED (\d+)$").group(1))
        app_pid = int(session.wait_out(r"^READY (\d+) (\d+)$").group(1))
        lifeline = session.wait_out(r"^LIFELINE (.+)$").group(1)
        with open(f"/proc/{app_pid}/environ", "rb") as f:
            launched = dict(
                item.split("=", 1) for item in f.read().decode().split("\0") if "=" in item
            )
        keys = ("HOTPATCH_ADDRESS", "HOTPATCH_SECRET", "HOTPATCH_ENABLED", "PYTHONPATH")
        joined = {k: launched[k] for k in keys}
        for marker in (lifeline, launched["HOTPATCH_LIFELINE"]):  # the app's, the launch's
            env = {**ENV, **joined, "HOTPATCH_LIFELINE": marker}
            outsider = subprocess.Popen(
                [sys.executable, str(project / "outsider.py")],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            outsiders.append(outsider)
            assert outsider.stdout.readline().split()[2:] == ["True", "True"]
        session.proc.kill()
        session.proc.wait()
        wait_until(lambda: not alive(app_pid), KILL_WITHIN, what="the app to go")
        for outsider in outsiders:
            outsider.stdin.write("gone?\n")
            outsider.stdin.flush()
            assert outsider.stdout.readline().split() == ["GONE", "True"]
        # Their clients retry every 2 s at most, and would have ended them by now.
        time.sleep(3)
        assert all(o.poll() is None for o in outsiders)
        assert alive(detached)
    finally:
        session.close()
        for outsider in outsiders:
            outsider.kill()
            outsider.wait()
        if detached:
            kill_all({detached})


def test_ctrl_c_handed_to_another_thread_of_thinlink_dev_still_stops_the_app(
    project: Path,
) -> None:
    # The kernel may hand a process's signal to any of its threads; Python runs the
    # handler on the main thread, once that runs Python again. It must not sit in a wait
    # for the app that nothing ends.
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "tgkill"):
        pytest.skip("no tgkill in this C library")
    session = DevApp(project, "app.py")
    try:
        session.wait_out(r"^READY ")
        pid = session.proc.pid
        others = [int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid]
        assert others
        assert libc.tgkill(pid, others[0], signal.SIGINT) == 0
        session.wait_err(r"stopping the app \(Ctrl-C again to force it\)", timeout=5)
        # The app dies of the SIGINT; or, when multiprocessing's exit handler hangs on a
        # pool interrupted mid-start (as it does under plain python too), of the SIGKILL
        # the session sends after its grace. Either way the session ended it.
        status = session.wait()
        assert status in (128 + signal.SIGINT, 128 + signal.SIGKILL), session.transcript()
    finally:
        session.close()
