"""`thinlink dev` patches every Ray worker: of a local cluster the app starts with
`ray.init()`, and of a cluster started beforehand (`ray start --head` and a second node
joined with `ray start --address`, process trees of their own, as on two hosts), whose
workers join over TCP through the job's runtime environment.

An actor keeps a counter: its method is edited, the counter is kept, and the next remote
call shows the new behaviour; a task function is edited, and the next tasks on every node
run the new code. All of it runs in a private network namespace with loopback only
(`clusters.Namespace`), which is also how every process Ray started is found at the end.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .clusters import Namespace, ask, engine_env, wait_for_patch, wait_until
from .conftest import write
from .devapp import DevApp, edit

# Looked up, not imported: the engine runs in the test's subprocesses only.
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="the cluster extra is not installed"
)

TASKS = """\
import os

import ray


@ray.remote
def where(i):
    return {"version": "v1", "pid": os.getpid()}


@ray.remote
class Counter:
    def __init__(self):
        self.count = 0

    def bump(self):
        self.count += 1
        return {"version": "v1", "count": self.count, "pid": os.getpid()}
"""

APP = """\
import json
import sys

import ray

import tasks


def on(node):
    return {} if node == "local" else {"resources": {node: 1}}


def main():
    if sys.argv[1] == "local":
        ray.init(
            num_cpus=2, include_dashboard=False, object_store_memory=10**8,
            _temp_dir=sys.argv[2],
        )
        nodes = ["local"]
    else:
        ray.init(address=sys.argv[1])
        nodes = ["head", "second"]
    counter = tasks.Counter.options(**on(nodes[-1])).remote()
    ray.get(counter.bump.remote())
    print("ready", flush=True)
    for _ in sys.stdin:
        runs = {n: ray.get([tasks.where.options(**on(n)).remote(i) for i in range(4)])
                for n in nodes}
        print(json.dumps({"counter": ray.get(counter.bump.remote()), "tasks": runs}), flush=True)


if __name__ == "__main__":
    main()
"""


def project(root: Path) -> Path:
    write(root, {"pyproject.toml": "[project]\nname = 'proj'\n", "tasks.py": TASKS, "app.py": APP})
    return root


@pytest.fixture(scope="module")
def namespace():
    ns = Namespace()
    yield ns
    ns.close()


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("ray-home")


@pytest.fixture(scope="module")
def cluster(namespace, home):
    """A head node and a second node, started with `ray start` before any app."""
    env = engine_env(home)
    ray = Path(sys.executable).with_name("ray")
    temp = namespace.temp_dir()
    common = ["--num-cpus", "2", "--object-store-memory", "100000000", "--temp-dir", temp]
    for args in (
        ["--head", "--port", "6390", "--include-dashboard=false", "--resources", '{"head": 8}'],
        ["--address", "127.0.0.1:6390", "--resources", '{"second": 8}'],
    ):
        done = namespace.run([ray, "start", *args, *common, "--disable-usage-stats"], env)
        assert done.returncode == 0, done.stdout + done.stderr
    yield "127.0.0.1:6390"


def dev_app(namespace: Namespace, root: Path, home: Path, *args: str) -> DevApp:
    command = [sys.executable, "-m", "thinlink", "dev", "--cache-dir", str(root.parent / "cache")]
    return DevApp(
        root,
        env=engine_env(home),
        stdin=subprocess.PIPE,
        command=namespace.command([*command, *args]),
    )


def check_edits_reach_every_worker(app: DevApp, root: Path, nodes: list[str]) -> str:
    app.wait_out(r"^ready", timeout=120)
    before = ask(app, timeout=120)
    assert before["counter"]["version"] == "v1" and before["counter"]["count"] == 2
    assert sorted(before["tasks"]) == sorted(nodes)
    assert {r["version"] for runs in before["tasks"].values() for r in runs} == {"v1"}
    since = len(app.err.lines)
    text = (root / "tasks.py").read_text()
    (root / "tasks.py").write_text(text.replace('"version": "v1"', '"version": "v2"'))
    line = wait_for_patch(app, since)
    assert "patched where, Counter.bump" in line
    after = ask(app, timeout=120)
    counter = after["counter"]
    assert counter["version"] == "v2", app.transcript()  # the new method ...
    assert counter["count"] == 3 and counter["pid"] == before["counter"]["pid"]  # same actor
    assert {r["version"] for runs in after["tasks"].values() for r in runs} == {"v2"}, after
    return line


def test_a_cluster_started_beforehand_on_two_nodes_is_patched_over_tcp(
    tmp_path, namespace, cluster, home
):
    root = project(tmp_path / "proj")
    app = dev_app(namespace, root, home, "--address", "tcp:127.0.0.1:0", "app.py", cluster)
    try:
        line = check_edits_reach_every_worker(app, root, ["head", "second"])
        assert "cluster workers" in line and "refused" not in line
        # Edited again: the workers, now at the first patch's build, take the next one.
        since = len(app.err.lines)
        edit(root / "tasks.py", 'return {"version": "v2", "pid"', 'return {"version": "v3", "pid"')
        wait_for_patch(app, since)
        again = ask(app, timeout=120)
        assert {r["version"] for runs in again["tasks"].values() for r in runs} == {"v3"}
        assert again["counter"]["count"] == 4
    finally:
        app.close()


def test_a_local_cluster_started_by_the_app_is_patched(tmp_path, namespace, home):
    root = project(tmp_path / "proj")
    app = dev_app(namespace, root, home, "app.py", "local", namespace.temp_dir())
    try:
        line = check_edits_reach_every_worker(app, root, ["local"])
        # Counted: the driver and the Ray workers that run the project's code (the actor's
        # and the tasks'), not the programs Ray starts for itself (its monitors, agents,
        # dashboard, prestarted workers, `setup_worker.py` before it execs the worker),
        # which inherit the app's environment; none of them connects, even for a moment.
        counted = re.search(r"(\d+)/(\d+) processes \((\d+) cluster workers", line)
        assert counted, line
        done, connected, workers = map(int, counted.groups())
        assert done == connected == workers + 1 and workers >= 2, line
        assert "dropped a connection" not in app.err.text(), app.transcript()
    finally:
        app.close()


# The remote code in the driver's script (`__main__`), not in a module.
SCRIPT = """\
import json
import os
import sys

import ray


@ray.remote
def where(i):
    return {"version": "v1", "pid": os.getpid()}


@ray.remote
class Counter:
    def __init__(self):
        self.count = 0

    def bump(self):
        self.count += 1
        return {"version": "v1", "count": self.count, "pid": os.getpid()}


def main():
    ray.init(
        num_cpus=2, include_dashboard=False, object_store_memory=10**8, _temp_dir=sys.argv[1]
    )
    counter = Counter.remote()
    ray.get(counter.bump.remote())
    print("ready", flush=True)
    for _ in sys.stdin:
        runs = ray.get([where.remote(i) for i in range(4)])
        print(json.dumps({"counter": ray.get(counter.bump.remote()), "tasks": runs}), flush=True)


if __name__ == "__main__":
    main()
"""


def versions(answer: dict) -> set[str]:
    return {answer["counter"]["version"], *(r["version"] for r in answer["tasks"])}


def test_remote_code_of_a_script_the_workers_import_by_name_is_patched_in_place(
    tmp_path, namespace, home
):
    # Ray names a function of the driver's script by the script's file name (`app`), and
    # a worker on the driver's host imports that: a module like any other, patched in place.
    root = tmp_path / "proj"
    write(root, {"pyproject.toml": "[project]\nname = 'proj'\n", "app.py": SCRIPT})
    app = dev_app(namespace, root, home, "app.py", namespace.temp_dir())
    try:
        app.wait_out(r"^ready", timeout=120)
        before = ask(app, timeout=120)
        assert versions(before) == {"v1"}
        since = len(app.err.lines)
        edit(root / "app.py", '"v1"', '"v2"', count=2)
        line = wait_for_patch(app, since)
        assert "patched where, Counter.bump" in line and "cluster workers" in line, line
        after = ask(app, timeout=120)
        assert versions(after) == {"v2"}, after
        assert after["counter"]["count"] == 3  # the same actor, its state kept
        assert after["counter"]["pid"] == before["counter"]["pid"]
        assert "restarting" not in app.err.text()
    finally:
        app.close()


def test_remote_code_the_workers_hold_as_pickled_copies_restarts_the_app_and_says_why(
    tmp_path, namespace, home
):
    # Started with -m, the script is `pkg.app`, which Ray names `app`: no worker imports
    # that, so each runs the copies the driver pickled, which no patch reaches. Saying
    # "patched" would leave them serving the old code; the app restarts, with the reason.
    root = tmp_path / "proj"
    files = {"pyproject.toml": "[project]\nname = 'proj'\n", "pkg/__init__.py": ""}
    write(root, {**files, "pkg/app.py": SCRIPT})
    app = dev_app(namespace, root, home, "-m", "pkg.app", namespace.temp_dir())
    try:
        app.wait_out(r"^ready", timeout=120)
        assert versions(ask(app, timeout=120)) == {"v1"}
        since = len(app.err.lines)
        edit(root / "pkg" / "app.py", '"v1"', '"v2"', count=2)
        line = app.wait_err(r"restarting: ", timeout=30, since=since).string
        for name in ("pkg.app:where", "pkg.app:Counter.bump"):
            assert name in line, line
        assert "run by the Ray workers from a copy the driver pickled" in line, line
        assert "no patch reaches" in line and "(in ray worker pid " in line, line
        assert not [x for x in app.err.lines[since:] if re.search(r"\d patched ", x)]
        # Started again: the new code runs everywhere (a new actor, counting from 1).
        app.wait_out(r"^ready", timeout=120)
        after = ask(app, timeout=120)
        assert versions(after) == {"v2"}, after
        assert after["counter"]["count"] == 2
    finally:
        app.close()


# A task that Ray runs in a fresh worker each time (`max_calls=1`, as Ray does for GPU
# tasks by default), from a script no worker imports (started with -m).
FRESH = """\
import json
import os
import sys

import ray


@ray.remote(max_calls=1)
def where(i):
    return {"version": "v1", "pid": os.getpid()}


@ray.remote
class Counter:
    def bump(self):
        return {"version": "v1", "pid": os.getpid()}


def main():
    ray.init(
        num_cpus=2, include_dashboard=False, object_store_memory=10**8, _temp_dir=sys.argv[1]
    )
    print("ready", flush=True)
    for _ in sys.stdin:
        counter = Counter.remote()  # an actor for this request only
        runs = ray.get([where.remote(i) for i in range(2)] + [counter.bump.remote()])
        ray.kill(counter)
        print(json.dumps({"runs": runs}), flush=True)


if __name__ == "__main__":
    main()
"""


def test_workers_that_load_remote_code_after_the_patch_get_the_new_code(tmp_path, namespace, home):
    # No worker holds a pickled copy when the patch comes (each task's worker left after
    # it, the actor was killed): the patch applies, and the driver's remote function and
    # actor class are sent anew, so that the fresh workers of the next tasks and the next
    # actor load the new code, not the pickles of their first use.
    root = tmp_path / "proj"
    files = {"pyproject.toml": "[project]\nname = 'proj'\n", "pkg/__init__.py": ""}
    write(root, {**files, "pkg/app.py": FRESH})
    app = dev_app(namespace, root, home, "-m", "pkg.app", namespace.temp_dir())
    try:
        app.wait_out(r"^ready", timeout=120)
        before = ask(app, timeout=120)["runs"]
        assert {r["version"] for r in before} == {"v1"}
        wait_until(lambda: not any(alive(r["pid"]) for r in before), what="the workers' exit")
        since = len(app.err.lines)
        edit(root / "pkg" / "app.py", '"v1"', '"v2"', count=2)
        line = wait_for_patch(app, since)
        assert "patched where, Counter.bump" in line, line
        after = ask(app, timeout=120)["runs"]
        assert {r["version"] for r in after} == {"v2"}, (after, app.transcript())
        assert "restarting" not in app.err.text()
    finally:
        app.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
