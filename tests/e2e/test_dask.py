"""`thinlink dev` patches every Dask worker: of a `LocalCluster` the app starts, and of a
scheduler and workers started beforehand with the `dask` command line (processes that
are not the app's, which join through the worker plugin the client registers).

Each test edits a function mapped over the workers and checks that the next map runs
the new code on every worker, in the same worker processes, with their data kept; a
worker that runs another copy of the module refuses the patch and the session says so.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .clusters import Processes, ask, engine_env, free_port, wait_for_patch, wait_until
from .conftest import write
from .devapp import edit

# Looked up, not imported: the engine runs in the test's subprocesses only.
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("distributed") is None, reason="the cluster extra is not installed"
)

WORK = """\
import os

CALLS = []  # this worker's data: kept across patches


def step(x):
    CALLS.append(x)
    return {"version": "v1", "pid": os.getpid(), "calls": len(CALLS)}
"""

APP = """\
import json
import sys

from dask.distributed import Client, LocalCluster

import work


def main():
    if sys.argv[1] == "local":
        cluster = LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address=None,
        )
        client = Client(cluster)
    else:
        client = Client(sys.argv[1])
    client.wait_for_workers(int(sys.argv[2]))
    print("ready", flush=True)
    for line in sys.stdin:
        client.wait_for_workers(int(line))
        workers = sorted(client.scheduler_info()["workers"])
        # One task on each worker, so that every worker shows what it runs.
        futures = [client.submit(work.step, 0, workers=[w], pure=False) for w in workers]
        print(json.dumps(dict(zip(workers, client.gather(futures)))), flush=True)


if __name__ == "__main__":
    main()
"""


def project(root: Path) -> Path:
    write(root, {"pyproject.toml": "[project]\nname = 'proj'\n", "work.py": WORK, "app.py": APP})
    return root


def check_edit_reaches_every_worker(app, root: Path, workers: int) -> str:  # noqa: ANN001
    app.wait_out(r"^ready", timeout=60)
    before = ask(app, str(workers))
    assert len(before) == workers
    assert {r["version"] for r in before.values()} == {"v1"}
    since = len(app.err.lines)
    edit(root / "work.py", '"version": "v1"', '"version": "v2"')
    line = wait_for_patch(app, since)
    assert "patched step" in line
    after = ask(app, str(workers))
    assert {r["version"] for r in after.values()} == {"v2"}, after
    for worker, result in after.items():
        assert result["pid"] == before[worker]["pid"]  # the same processes ...
        assert result["calls"] == before[worker]["calls"] + 1  # ... with their data
    return line


def test_a_local_cluster_of_worker_processes_is_patched(tmp_path, dev_apps):
    root = project(tmp_path / "proj")
    app = dev_apps(root, "app.py", "local", "2", stdin=subprocess.PIPE)
    line = check_edit_reaches_every_worker(app, root, 2)
    assert "refused" not in line


@pytest.fixture
def processes():
    procs = Processes()
    yield procs
    procs.close()


def start_scheduler(processes: Processes, tmp_path: Path, code: Path) -> str:
    port = free_port()
    env = engine_env(tmp_path, PYTHONPATH=f"{code}")  # it unpickles the task graph
    processes.start(
        [Path(sys.executable).with_name("dask"), "scheduler", "--host", "127.0.0.1",
         "--port", str(port), "--no-dashboard"],
        env, tmp_path, tmp_path / "scheduler.log",
    )  # fmt: skip
    return f"tcp://127.0.0.1:{port}"


def start_worker(
    processes: Processes,
    tmp_path: Path,
    address: str,
    code: Path,
    n: int,
    hiding: Path | None = None,
) -> None:
    """A `dask worker` importing the project from `code` (its own copy, not the app's).
    `hiding`: a folder it sees empty (an empty file system mounted there in a mount
    namespace of its own), as a host without it would."""
    env = engine_env(tmp_path, PYTHONPATH=f"{code}")
    command = [
        Path(sys.executable).with_name("dask"), "worker", address, "--host", "127.0.0.1",
        "--nthreads", "1", "--no-dashboard", "--name", f"w{n}",
    ]  # fmt: skip
    if hiding is not None:
        probe = ["unshare", "--mount", "--propagation=private", "true"]
        if not shutil.which("unshare") or subprocess.run(probe, capture_output=True).returncode:
            pytest.skip("needs a mount namespace (unshare, as root) to hide a folder from a worker")
        hide = 'mount -t tmpfs tmpfs "$0" && exec "$@"'
        command = [
            "unshare",
            "--mount",
            "--propagation=private",
            "sh",
            "-c",
            hide,
            hiding,
            *command,
        ]
    processes.start(command, env, tmp_path, tmp_path / f"worker-{n}.log")


def test_workers_started_beforehand_with_the_dask_command_line_are_patched(
    tmp_path, dev_apps, processes
):
    root = project(tmp_path / "proj")
    address = start_scheduler(processes, tmp_path, root)
    for n in range(2):
        start_worker(processes, tmp_path, address, root, n)
    original = tmp_path / "original"  # the project as the session started it
    write(original, {"work.py": WORK})
    app = dev_apps(root, "app.py", address, "2", stdin=subprocess.PIPE)
    line = check_edit_reaches_every_worker(app, root, 2)
    assert "2 cluster workers" in line and "refused" not in line
    # A worker that joins later, from a copy of the project as it was: brought up to date.
    start_worker(processes, tmp_path, address, original, 2)
    latest = ask(app, "3")
    assert len(latest) == 3 and {r["version"] for r in latest.values()} == {"v2"}, (
        latest,
        app.transcript(),
    )


def test_a_worker_with_another_copy_of_the_module_refuses_and_the_session_says_so(
    tmp_path, dev_apps, processes
):
    root = project(tmp_path / "proj")
    other = tmp_path / "other-copy"
    write(other, {"work.py": WORK.replace('"v1"', '"copy"')})  # another version of work.py
    address = start_scheduler(processes, tmp_path, root)
    start_worker(processes, tmp_path, address, root, 0)
    start_worker(processes, tmp_path, address, other, 1)
    app = dev_apps(root, "app.py", address, "2", stdin=subprocess.PIPE)
    app.wait_out(r"^ready", timeout=60)
    before = ask(app, "2")
    assert sorted(r["version"] for r in before.values()) == ["copy", "v1"]
    since = len(app.err.lines)
    edit(root / "work.py", '"version": "v1"', '"version": "v2"')
    line = wait_for_patch(app, since)
    assert "2/3 processes" in line, line  # the app and one worker applied it ...
    assert "1 refused (dask worker pid" in line and "work: refused: this process runs" in line
    # Said in one line of its own, naming the worker and why, besides the patch line's count.
    (said,) = [x for x in app.err.lines[since:] if "refused the patch" in x]
    assert re.search(r"dask worker pid \d+ on \S+ refused the patch: work: refused: ", said)
    after = ask(app, "2")
    assert sorted(r["version"] for r in after.values()) == ["copy", "v2"]  # ... not the other
    assert app.proc.poll() is None and "restarting" not in app.err.text()


# Added by an edit: a statement the patch runs, which holds the patch in the process
# `pid` (after saying so with a file in `marks`) until that process is killed.
HOLD = """

def _hold(pid, marks):
    if os.getpid() == pid:
        import time

        open(os.path.join(marks, str(pid)), "w").close()
        time.sleep(60)


HELD = _hold({pid}, {marks!r})
"""


def test_a_worker_killed_mid_patch_is_said_in_the_patch_line_and_the_others_are_patched(
    tmp_path, dev_apps, processes
):
    root = project(tmp_path / "proj")
    address = start_scheduler(processes, tmp_path, root)
    for n in range(2):
        start_worker(processes, tmp_path, address, root, n)
    app = dev_apps(root, "app.py", address, "2", stdin=subprocess.PIPE)
    app.wait_out(r"^ready", timeout=60)
    before = ask(app, "2")
    victim, survivor = sorted(before)
    pid = before[victim]["pid"]
    marks = tmp_path / "marks"
    marks.mkdir()
    since = len(app.err.lines)
    text = (root / "work.py").read_text().replace('"v1"', '"v2"')
    (root / "work.py").write_text(text + HOLD.format(pid=pid, marks=str(marks)))
    wait_until(lambda: (marks / str(pid)).exists(), what="the patch under way in the worker")
    os.kill(pid, signal.SIGKILL)  # kill -9, in the middle of its patch
    line = wait_for_patch(app, since)
    assert re.search(r": 2/\d+ processes \(1 cluster workers", line), line  # the app, the other
    assert f"; dask worker pid {pid} on " in line and line.endswith(" left during the patch")
    # The session goes on: its nanny started the worker again, which joined and caught up.
    after = ask(app, "2")
    assert {r["version"] for r in after.values()} == {"v2"}, (after, app.transcript())
    assert after[survivor]["pid"] == before[survivor]["pid"]
    assert after[survivor]["calls"] == before[survivor]["calls"] + 1
    assert victim not in after and all(r["pid"] != pid for r in after.values())
    assert app.proc.poll() is None and "restarting" not in app.err.text()
    assert not [x for x in app.err.lines if "failed" in x or "Traceback" in x], app.transcript()


def test_a_worker_that_cannot_reach_the_session_is_said_once_and_the_others_are_patched(
    tmp_path, dev_apps, processes
):
    root = project(tmp_path / "proj")
    run = tmp_path / "run"  # the session's private folder (its socket) goes in there
    run.mkdir()
    address = start_scheduler(processes, tmp_path, root)
    start_worker(processes, tmp_path, address, root, 0)
    start_worker(processes, tmp_path, address, root, 1, hiding=run)  # as on another host
    app = dev_apps(root, "app.py", address, "2", stdin=subprocess.PIPE, env={"TMPDIR": str(run)})
    app.wait_out(r"^ready", timeout=60)
    before = ask(app, "2")
    said = [x for x in app.err.lines if "did not join the dev session" in x]
    assert len(said) == 1, app.transcript()
    cut_off = next(w for w in before if f"dask worker {w} did not join" in said[0])
    assert "cannot reach the dev session at unix:" in said[0]
    assert "No such file or directory" in said[0] and "runs unpatched" in said[0]
    since = len(app.err.lines)
    edit(root / "work.py", '"version": "v1"', '"version": "v2"')
    line = wait_for_patch(app, since)
    assert ": 2/2 processes (1 cluster workers" in line, line
    after = ask(app, "2")
    assert {w: r["version"] for w, r in after.items()} == {
        w: "v1" if w == cut_off else "v2" for w in before
    }
    assert app.proc.poll() is None and "restarting" not in app.err.text()
    assert len([x for x in app.err.lines if "did not join" in x or "dropped" in x]) == 1


def test_the_workers_of_a_cluster_that_outlives_a_session_join_the_next_one(
    tmp_path, dev_apps, processes
):
    root = project(tmp_path / "proj")
    address = start_scheduler(processes, tmp_path, root)
    for n in range(2):
        start_worker(processes, tmp_path, address, root, n)
    first = dev_apps(root, "app.py", address, "2", stdin=subprocess.PIPE)
    first.wait_out(r"^ready", timeout=60)
    ask(first, "2")
    first.close()
    # A new session (a new address and secret), against the same scheduler and workers.
    app = dev_apps(root, "app.py", address, "2", stdin=subprocess.PIPE)
    line = check_edit_reaches_every_worker(app, root, 2)
    assert ": 3/3 processes (2 cluster workers" in line, line
