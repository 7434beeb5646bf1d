"""Save to every cluster worker patched: `thinlink dev` vs restarting the cluster.

What is measured, side by side in one run, for a Ray cluster (one node started with
`ray start`, 4 task workers and 2 actors busy with the app) and for a Dask cluster (a
scheduler and 4 workers started with the `dask` command line):

- thinlink: `thinlink dev app.py` runs an app that keeps the workers busy; the benchmark
  writes one edit (the version string in a task function and an actor method, or in the
  function mapped over the Dask workers), noting `time.time()` just before the write,
  and takes the time at which the session's patch line arrives: printed once every
  connected worker has reported the patch applied. 20 edits; after each, the app runs a
  task on every worker (and calls each actor) and the benchmark checks that all of them
  answer with the new version (not timed).
- restart (the alternative the engines' trackers give today): stop every process of the
  cluster, start it again, and run the app until every worker has answered once with the
  new code: what a developer waits for, having lost every actor's state.

Ray runs in a private network namespace with loopback only (as in the tests), so that
everything stays on 127.0.0.1.

    python benchmarks/bench_cluster.py [--edits 20] [--restarts 3] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import REPO_ROOT, Stats, format_table, machine_info, source_state, write_results

PY = sys.executable
TARGET_P50 = 0.100
WORKERS = 4
ACTORS = 2

RAY_WORK = """\
import os
import time

import ray


@ray.remote
def spin(seconds):
    time.sleep(seconds)
    return ["v0", os.getpid()]


@ray.remote
class Keeper:
    def __init__(self):
        self.calls = 0

    def version(self):
        self.calls += 1
        return ["v0", os.getpid(), self.calls]
"""

RAY_APP = """\
import json
import sys

import ray

import work

ray.init(address=sys.argv[1])
actors = [work.Keeper.remote() for _ in range(ACTORS)]


def probe():
    # As many tasks at once as the node has CPUs: each runs in a worker of its own.
    tasks = ray.get([work.spin.remote(0.2) for _ in range(WORKERS)])
    return tasks + ray.get([a.version.remote() for a in actors])


print(json.dumps(probe()), flush=True)
if sys.argv[2:] != ["once"]:
    for _ in sys.stdin:
        print(json.dumps(probe()), flush=True)
""".replace("ACTORS", str(ACTORS)).replace("WORKERS", str(WORKERS))

DASK_WORK = """\
import os


def step(x):
    return ["v0", os.getpid()]
"""

DASK_APP = """\
import json
import sys

from dask.distributed import Client

import work

client = Client(sys.argv[1])
client.wait_for_workers(WORKERS)


def probe():
    workers = sorted(client.scheduler_info()["workers"])
    return client.gather([client.submit(work.step, 0, workers=[w], pure=False) for w in workers])


print(json.dumps(probe()), flush=True)
if sys.argv[2:] != ["once"]:
    for _ in sys.stdin:
        print(json.dumps(probe()), flush=True)
""".replace("WORKERS", str(WORKERS))

# Brings `lo` up in a new network namespace, then lives until its stdin closes.
_HOLDER = """
import fcntl, socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
req = struct.pack("16sH14x", b"lo", 0)
flags = struct.unpack("16sH14x", fcntl.ioctl(s, 0x8913, req))[1]
fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", flags | 1))
print("up", flush=True)
sys.stdin.read()
"""


class Namespace:
    """Loopback-only network namespace; `kill_members` ends everything started in it."""

    def __init__(self) -> None:
        self.holder = subprocess.Popen(
            ["unshare", "--net", PY, "-c", _HOLDER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.holder.stdout.readline().strip() == "up", "no network namespace"
        self.link = os.readlink(f"/proc/{self.holder.pid}/ns/net")

    def wrap(self, argv: list[str]) -> list[str]:
        return ["nsenter", f"--net=/proc/{self.holder.pid}/ns/net", "--", *argv]

    def kill_members(self) -> None:
        while members := [
            int(p)
            for p in os.listdir("/proc")
            if p.isdigit() and int(p) != self.holder.pid and _netns(p) == self.link
        ]:
            for pid in members:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.05)

    def close(self) -> None:
        self.kill_members()
        self.holder.stdin.close()
        self.holder.wait(10)


def _netns(pid: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


class Engine:
    """One engine's cluster: start it, stop it, and how the app reaches it."""

    name = ""

    def __init__(self, tmp: Path, ns: Namespace | None) -> None:
        self.tmp, self.ns = tmp, ns
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("HOTPATCH_", "RAY_"))},
            "HOME": str(tmp / "home"),
            "RAY_USAGE_STATS_ENABLED": "0",
            "NO_COLOR": "1",
            "PATH": f"{Path(PY).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        (tmp / "home").mkdir(exist_ok=True)
        self.procs: list[subprocess.Popen] = []

    def wrap(self, argv: list[str]) -> list[str]:
        return self.ns.wrap(argv) if self.ns else argv

    def start(self) -> str:
        raise NotImplementedError

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()
        self.procs.clear()
        if self.ns:
            self.ns.kill_members()


class Ray(Engine):
    name = "Ray: 4 task workers + 2 actors"
    work, app = RAY_WORK, RAY_APP

    def start(self) -> str:
        temp = tempfile.mkdtemp(prefix="tlbench")
        argv = [str(Path(PY).with_name("ray")), "start", "--head", "--port", "6391",
                "--num-cpus", str(WORKERS), "--include-dashboard=false",
                "--object-store-memory", "100000000", "--temp-dir", temp,
                "--disable-usage-stats"]  # fmt: skip
        done = subprocess.run(self.wrap(argv), env=self.env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return "127.0.0.1:6391"


class Dask(Engine):
    name = "Dask: 4 workers"
    work, app = DASK_WORK, DASK_APP

    def start(self) -> str:
        dask = str(Path(PY).with_name("dask"))
        env = {**self.env, "PYTHONPATH": str(self.tmp / "proj")}
        log = open(self.tmp / "dask.log", "a")  # noqa: SIM115 - the processes keep it
        self.procs.append(subprocess.Popen(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", "8797", "--no-dashboard"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        ))  # fmt: skip
        self.procs.append(subprocess.Popen(
            [dask, "worker", "tcp://127.0.0.1:8797", "--host", "127.0.0.1", "--nworkers",
             str(WORKERS), "--nthreads", "1", "--no-dashboard"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        ))  # fmt: skip
        return "tcp://127.0.0.1:8797"

    def stop(self) -> None:
        for proc in self.procs:  # the workers' processes first, then the commands
            for child in _descendants(proc.pid):
                try:
                    os.kill(child, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        super().stop()


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rpartition(")")[2].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class Lines:
    """A pipe read on a thread into (arrival time, line) pairs."""

    def __init__(self, pipe) -> None:  # noqa: ANN001
        self.lines: list[tuple[float, str]] = []
        self.cond = threading.Condition()
        threading.Thread(target=self._pump, args=(pipe,), daemon=True).start()

    def _pump(self, pipe) -> None:  # noqa: ANN001
        for line in pipe:
            with self.cond:
                self.lines.append((time.time(), line.rstrip("\n")))
                self.cond.notify_all()

    def wait(self, pattern: str, since: int, timeout: float = 120) -> tuple[float, str]:
        regex, deadline = re.compile(pattern), time.monotonic() + timeout
        with self.cond:
            while True:
                for at, line in self.lines[since:]:
                    if regex.search(line):
                        return at, line
                if not self.cond.wait(max(deadline - time.monotonic(), 0)):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"no {pattern!r}:\n" + "\n".join(
                            text for _, text in self.lines[-30:]))  # fmt: skip


def measure_thinlink(engine: Engine, edits: int) -> dict[str, object]:
    root = engine.tmp / "proj"
    address = engine.start()
    command = [PY, "-m", "thinlink", "dev", "--cache-dir", str(engine.tmp / "cache"),
               "--address", "tcp:127.0.0.1:0", "app.py", address]  # fmt: skip
    env = {**engine.env, "PYTHONPATH": str(REPO_ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    dev = subprocess.Popen(engine.wrap(command), cwd=root, env=env, text=True,
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip # noqa: E501
    out, err = Lines(dev.stdout), Lines(dev.stderr)
    samples, processes = [], set()
    try:
        out.wait(r"^\[", 0)
        for i in range(1, edits + 1):
            since = len(err.lines)
            text = (root / "work.py").read_text()
            written = time.time()
            (root / "work.py").write_text(text.replace(f'"v{i - 1}"', f'"v{i}"'))
            at, line = err.wait(r"\d patched ", since)
            samples.append(at - written)
            if os.environ.get("BENCH_VERBOSE"):
                print(f"  {(at - written) * 1000:.1f} ms: {line}", file=sys.stderr)
            processes.add(re.search(r"(\d+/\d+) processes", line).group(1))
            answered = len(out.lines)
            dev.stdin.write("go\n")
            dev.stdin.flush()
            result = json.loads(out.wait(r"^\[", answered)[1])
            assert {r[0] for r in result} == {f"v{i}"}, (i, result, line)
            time.sleep(0.3)
    finally:
        dev.terminate()
        try:
            dev.wait(15)
        except subprocess.TimeoutExpired:
            dev.kill()
        engine.stop()
    return {"stats": Stats.of(samples), "processes": sorted(processes), "last_line": line}


def measure_restart(engine: Engine, runs: int) -> Stats:
    root = engine.tmp / "proj"
    env = {**engine.env, "PYTHONPATH": str(root)}
    samples = []
    address = engine.start()
    for _ in range(runs):
        started = time.time()
        engine.stop()
        address = engine.start()
        done = subprocess.run(engine.wrap([PY, "app.py", address, "once"]), cwd=root, env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0 and done.stdout.startswith("["), done.stderr[-2000:]
        samples.append(time.time() - started)
    engine.stop()
    return Stats.of(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--edits", type=int, default=20)
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    ns = Namespace() if shutil.which("unshare") else None
    rows, results = [], {}
    try:
        for kind in (Ray, Dask):
            tmp = Path(tempfile.mkdtemp(prefix="tlcluster"))
            (tmp / "proj").mkdir()
            (tmp / "proj" / "pyproject.toml").write_text("[project]\nname = 'bench'\n")
            (tmp / "proj" / "work.py").write_text(kind.work)
            (tmp / "proj" / "app.py").write_text(kind.app)
            engine = kind(tmp, ns if kind is Ray else None)
            print(f"{kind.name}: {args.edits} edits ...", file=sys.stderr)
            ours = measure_thinlink(engine, args.edits)
            print(f"{kind.name}: {args.restarts} restarts ...", file=sys.stderr)
            restart = measure_restart(engine, args.restarts)
            stats = ours["stats"]
            results[kind.__name__.lower()] = {
                "engine": kind.name,
                "thinlink": stats,
                "restart": restart,
                "processes": ours["processes"],
                "patch_line": ours["last_line"],
                "ratio_p50": stats.median / restart.median,
            }
            rows.append([kind.name, "thinlink dev (save to every worker patched)",
                         f"{stats.median * 1000:.1f}", f"{stats.p95 * 1000:.1f}",
                         len(stats.samples), ", ".join(ours["processes"])])  # fmt: skip
            rows.append([kind.name, "restart the cluster, app reconnects, every worker answers",
                         f"{restart.median * 1000:.0f}", f"{restart.p95 * 1000:.0f}",
                         len(restart.samples), "state lost"])  # fmt: skip
            rows.append([kind.name, "ratio (thinlink / restart)",
                         f"{stats.median / restart.median:.4f}", "", "", ""])  # fmt: skip
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if ns:
            ns.close()
    table = format_table(["cluster", "what", "p50 ms", "p95 ms", "n", "processes"], rows)
    print(table)
    verdicts = [
        f"- {r['engine']}: p50 {r['thinlink'].median * 1000:.1f} ms, target < "
        f"{TARGET_P50 * 1000:.0f} ms: {'met' if r['thinlink'].median < TARGET_P50 else 'MISSED'}"
        for r in results.values()
    ]
    print("\n".join(verdicts))
    if not args.no_write:
        data = {"machine": machine_info(), "source": source_state(), "results": results}
        markdown = (
            "# bench_cluster: save to every cluster worker patched\n\n"
            f"{machine_info()}\n\n```\n{table}\n```\n\n" + "\n".join(verdicts) + "\n\n"
            "Patch lines of the last edit:\n\n"
            + "".join(f"- {r['engine']}: `{r['patch_line']}`\n" for r in results.values())
        )
        write_results("cluster", data, markdown)


if __name__ == "__main__":
    main()
