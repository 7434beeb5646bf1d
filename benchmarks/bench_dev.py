"""Save-to-live benchmark: `thinlink dev` vs jurigged vs a restart-based reloader (watchfiles).

What is measured (SPEC.md, "Performance targets": save to new code running), side by side
in one run:

- save to live: the benchmark writes one edit of one function body of a generated module
  (25, 2k and 24k lines) and notes ``time.time()`` just before the write; the app, polling
  that function every ``--poll-ms`` (0.2 ms), notes ``time.time()`` when the version marker
  it returns changes and reports it on its stdout. Latency = app-observed time - write time.
- fan-out: the same, with the app running 8 multiprocessing workers (fork, and spawn) that
  each poll the marker; latency = until the last worker runs the new code.

    python benchmarks/bench_dev.py [--edits N] [--quick] [--wait-load 1.5]

thinlink's own per-patch line (rebuild/send/apply) is parsed from its stderr, and an
instrumented pass (timestamps in the dev process and in the app, see PROFILE_WRAPPER and
the app's BENCH_INSTRUMENT hook) splits the latency into stages.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from _common import (
    REPO_ROOT,
    Stats,
    baseline_env,
    format_table,
    machine_info,
    source_state,
    wait_for_quiet,
    write_results,
)

PY = sys.executable
MODULE = "workload"  # the generated module the app imports and the benchmark edits
SIZES = {"25": 25, "2k": 2000, "24k": 24000}
TOOLS = ("thinlink", "jurigged", "restart")
TOOL_NAMES = {
    "thinlink": "thinlink dev",
    "thinlink-prof": "thinlink dev (instrumented)",
    "jurigged": "jurigged",
    "restart": "watchfiles restart",
}
WORKERS = 8
# The history scenario's project and cache, and the cache every other thinlink case of a
# run shares (directory names under the run's work dir).
HISTORY, HISTORY_CACHE, RUN_CACHE = "history", "history-cache", "run-cache"
TARGET_P50, TARGET_P95 = 0.020, 0.050
SPEC_ALTERNATIVES = "jurigged 56 ms, 273 ms, 21 s; restart with watchfiles 174 ms (trivial app)"
PATCH_LINE = re.compile(
    r"patched (?P<names>.*): (?P<n>\d+)/(?P<of>\d+) processes in (?P<total>[\d.]+) ms "
    r"\(rebuild (?P<rebuild>[\d.]+), send (?P<send>[\d.]+), apply (?P<apply>[\d.]+)\)"
)

# --- the app -----------------------------------------------------------------------------

APP = '''\
"""Benchmark app: polls workload.marker() and reports each new value with its time."""
import os
import sys
import time

import workload

POLL = float(os.environ.get("BENCH_POLL", "0.0002"))


def report(line):
    os.write(1, (line + "\\n").encode())  # one write: lines of several processes never mix


def poll(role):
    last = None
    while True:
        value = workload.marker()
        if value != last:
            report(f"{role} {os.getpid()} {value} {time.time():.6f}")
            last = value
        time.sleep(POLL)


def worker(index):
    try:
        poll(f"w{index}")
    except KeyboardInterrupt:
        pass


def instrument():
    # Timestamps around the patch client's apply (deliver) in every process of the app.
    from hotpatch import _jumptable

    deliver = _jumptable.deliver

    def timed(data, **kwargs):
        start = time.time()
        item = deliver(data, **kwargs)
        report(f"P {os.getpid()} {start:.6f} {time.time():.6f}")
        return item

    _jumptable.deliver = timed


if __name__ == "__main__":
    if os.environ.get("BENCH_INSTRUMENT"):
        instrument()
    mode, count = sys.argv[1], int(sys.argv[2])
    if mode != "single":
        import multiprocessing

        context = multiprocessing.get_context(mode)
        for i in range(count):
            context.Process(target=worker, args=(i,), daemon=True).start()
    try:
        poll("main")
    except KeyboardInterrupt:
        pass
'''

# Runs `thinlink dev` with timestamps around its stages; one JSON line per patch on stderr.
PROFILE_WRAPPER = """\
import faulthandler, json, signal, sys, time
faulthandler.register(signal.SIGUSR1, all_threads=True)  # the bench asks, if we hang
import thinlink.launch
import thinlink.build.builder, thinlink.build.cache, thinlink.build.manifest
import thinlink.dev.session, thinlink.dev.server
from thinlink.cli import main

stamps = {}
missing = []  # names that are not in the code measured: their stages read 0

def emit():
    sys.stderr.write("TLPROF " + json.dumps(stamps) + "\\n")
    sys.stderr.flush()

detects = []  # when the watcher yielded each batch (its thread may run ahead of patching)
session = thinlink.dev.session
watch_changes = session.watch_changes

def watch(*args, **kwargs):
    for batch in watch_changes(*args, **kwargs):
        detects.append(time.time())
        yield batch

session.watch_changes = watch
on_change = session.DevSession.on_change

def patch(self, paths):
    stamps.clear()
    stamps["detects"] = detects[-20:]
    start = time.time()
    try:
        return on_change(self, paths)
    finally:
        stamps["on_change"] = [start, time.time(), time.time() - start]
        emit()

session.DevSession.on_change = patch

def timed(owner, name, key, after=None):
    # stamps[key] = [first start, last end, summed seconds] over the calls of one save
    fn = getattr(owner, name, None)
    if fn is None:
        missing.append(f"{getattr(owner, '__name__', owner)}.{name}")
        return
    def wrapper(*args, **kwargs):
        start = time.time()
        result = fn(*args, **kwargs)
        end = time.time()
        first, _, total = stamps.get(key, (start, end, 0.0))
        stamps[key] = [first, end, total + end - start]
        if after is not None:
            after(result)
        return result
    setattr(owner, name, wrapper)

def reports(result):
    stamps["reports"] = [
        {"pid": r.get("pid"), "apply_ms": r.get("apply_ms"), "timings": r.get("timings")}
        for r in result
    ]

builder = thinlink.build.builder
timed(session, "_settle", "settle")
timed(thinlink.launch, "discover", "discover")  # builder imports it when first needed
timed(builder, "rebuild", "rebuild()")
timed(thinlink.build.cache.Cache, "get_record", "get_record")
timed(thinlink.build.cache.Cache, "flush", "flush")
timed(thinlink.build.manifest.BuildStore, "flush", "store flush")
timed(thinlink.build.manifest.BuildStore, "save", "manifest save")
timed(thinlink.build.manifest.BuildStore, "set_ref", "refs")
timed(builder.Builder, "build", "build")
timed(session, "make_patch", "make_patch")
timed(session, "encode", "encode")
timed(thinlink.dev.server.DevServer, "broadcast", "broadcast", reports)
if missing:
    sys.stderr.write("TLPROF-MISSING " + " ".join(missing) + "\\n")
sys.argv = ["thinlink", *sys.argv[1:]]
main()
"""

# --- the generated module ----------------------------------------------------------------

WORDS = "alpha beta gamma delta order user item price stock batch record event queue".split()
HEADER = (
    '"""Generated for the save-to-live benchmark."""\n\nimport json\nimport math\n\nLIMIT = {c}\n'
)
TEMPLATES = [
    '''
def process_{n}(items, threshold={c}):
    """Filter and scale the items above the threshold."""
    result = []
    for index, item in enumerate(items):
        if item is None:
            continue
        value = item * {k} + index
        if value > threshold:
            result.append(value)
        elif value < -threshold:
            result.append(-value)
    return result
''',
    '''
def summarize_{n}(records):
    """Count the records by key and average their values."""
    counts = {{}}
    totals = {{}}
    for record in records:
        key = record.get("{w}", "other")
        counts[key] = counts.get(key, 0) + 1
        totals[key] = totals.get(key, 0.0) + float(record.get("value", 0))
    return {{k: (counts[k], totals[k] / counts[k]) for k in counts}}
''',
    '''
def render_{n}(name, values, *, width={k}0):
    """A one-line text summary of the values."""
    if not values:
        return f"{{name}}: (empty)"
    mean = sum(values) / len(values)
    spread = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    text = f"{{name}}: n={{len(values)}} mean={{mean:.2f}} sd={{spread:.2f}}"
    return text[:width]
''',
    '''
class {N}Store:
    """A small bounded store of {w} entries."""

    def __init__(self, capacity={c}):
        self.capacity = capacity
        self.entries = []

    def add(self, entry):
        if len(self.entries) >= self.capacity:
            self.entries.pop(0)
        self.entries.append(entry)
        return len(self.entries)

    @property
    def total(self):
        return sum(getattr(e, "{w}", 0) for e in self.entries)

    def __repr__(self):
        return f"{N}Store({{len(self.entries)}}/{{self.capacity}})"
''',
    '''
def parse_{n}(text, default={c}):
    """Parse a JSON payload, falling back to the default on bad input."""
    try:
        data = json.loads(text)
    except (TypeError, ValueError):
        return {{"{w}": default, "ok": False}}
    if not isinstance(data, dict):
        data = {{"value": data}}
    data.setdefault("{w}", default)
    data["ok"] = True
    return data
''',
]
MARKER = '''
def marker():
    """The version marker the benchmark app polls (the benchmark edits this body)."""
    scale = {v} % 7
{extra}    return {v}{plus}
'''


def marker_source(version: int, kind: str = "shift") -> str:
    """The edited function at `version`. `shift`: alternate edits add and remove a line, so
    everything below moves; `same`: the line count stays, only the body's text changes."""
    if kind == "same":
        extra = (
            "    offset = scale * 2 - scale * 2\n"
            if version % 2
            else "    offset = scale - scale\n"
        )
        return MARKER.format(v=version, extra=extra, plus=" + offset")
    if version % 2:
        return MARKER.format(
            v=version, extra="    offset = scale * 2 - scale * 2\n", plus=" + offset"
        )
    return MARKER.format(v=version, extra="", plus="")


def generate_module(target_lines: int, seed: int = 0) -> tuple[str, str]:
    """Source text before and after the marker function: realistic functions and classes,
    about `target_lines` lines in all, the marker in the middle."""
    rng = random.Random(seed)
    blocks: list[str] = []
    lines = HEADER.count("\n") + marker_source(0).count("\n")
    while lines < target_lines - 4:
        template = rng.choice(TEMPLATES if target_lines > 100 else TEMPLATES[:1])
        word = rng.choice(WORDS)
        block = template.format(
            n=f"{word}_{len(blocks)}",
            N=f"{word.title()}{len(blocks)}",
            w=word,
            c=rng.randint(2, 500),
            k=rng.randint(2, 9),
        )
        blocks.append(block)
        lines += block.count("\n")
    middle = len(blocks) // 2
    head = HEADER.format(c=rng.randint(10, 99)) + "".join(blocks[:middle])
    return head, "".join(blocks[middle:])


def write_source(path: Path, text: str) -> float:
    """Overwrite `path` in place (one truncate, one write: an editor's save); the time just
    before the write."""
    data = text.encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        before = time.time()
        os.ftruncate(fd, 0)
        os.write(fd, data)
    finally:
        os.close(fd)
    return before


# --- one running app under a reloader ------------------------------------------------------


class AppRun:
    """A reloader running the app: its stdout reports and stderr lines, collected."""

    def __init__(self, cmd: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.cond = threading.Condition()
        self.seen: dict[tuple[str, int], float] = {}  # (role, marker) -> first time seen
        self.pids: dict[int, str] = {}  # pid -> role
        self.delivers: list[tuple[int, float, float]] = []  # instrumented: pid, start, end
        self.stderr: list[tuple[float, str]] = []
        self.stdout: list[str] = []  # lines other than reports (jurigged logs to stdout)
        self.hung = ""  # the process group, when SIGINT did not stop the reloader
        self.dumps_on_sigusr1 = False  # the instrumented thinlink: faulthandler's dump
        self.proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self._threads = [
            threading.Thread(target=self._read_out, daemon=True),
            threading.Thread(target=self._read_err, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _read_out(self) -> None:
        for raw in self.proc.stdout:
            parts = raw.decode(errors="replace").split()
            with self.cond:
                if len(parts) == 4 and parts[0] == "P":
                    self.delivers.append((int(parts[1]), float(parts[2]), float(parts[3])))
                elif len(parts) == 4 and parts[2].lstrip("-").isdigit():
                    role, pid, marker, when = (
                        parts[0],
                        int(parts[1]),
                        int(parts[2]),
                        float(parts[3]),
                    )
                    self.pids[pid] = role
                    self.seen.setdefault((role, marker), when)
                else:
                    self.stdout.append(raw.decode(errors="replace").rstrip())
                self.cond.notify_all()

    def _read_err(self) -> None:
        for raw in self.proc.stderr:
            self.stderr.append((time.time(), raw.decode(errors="replace").rstrip()))

    def wait_marker(self, roles: list[str], marker: int, timeout: float) -> dict[str, float]:
        """Times at which each role first ran `marker`; those seen when the timeout ends."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                got = {r: self.seen[(r, marker)] for r in roles if (r, marker) in self.seen}
                left = deadline - time.monotonic()
                if len(got) == len(roles) or left <= 0 or self.proc.poll() is not None:
                    return got
                self.cond.wait(min(left, 0.5))

    def stop(self) -> bool:
        """SIGINT (each reloader passes it on to the app), then SIGKILL for leftovers;
        False if the reloader had to be killed."""
        stopped = True
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                stopped = False
                self.hung = _process_tree(self.proc.pid)
                if self.dumps_on_sigusr1:  # its threads' stacks, on stderr
                    os.kill(self.proc.pid, signal.SIGUSR1)
                    time.sleep(1.0)
                _kill_group(self.proc.pid)
                self.proc.wait()
        _kill_group(self.proc.pid)
        time.sleep(0.2)
        for pid in list(self.pids):  # processes of the app (thinlink runs it in its own group)
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for t in self._threads:
            t.join(timeout=5)
        return stopped


def _process_tree(pgid: int) -> str:
    """What is left of a process group (for the report when a reloader would not stop)."""
    done = subprocess.run(
        ["ps", "-o", "pid,ppid,stat,wchan:20,etime,args", "-g", str(pgid)],
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# --- cases ---------------------------------------------------------------------------------


@dataclass
class Case:
    tool: str  # thinlink, thinlink-prof, jurigged, restart
    size: str
    mode: str = "single"  # single, fork, spawn
    kind: str = "shift"  # shift: each edit adds or removes a line; same: line count kept
    edits: int = 20
    timeout: float = 15.0
    max_timeouts: int = 2
    # The history scenario: sessions one after another on one project and cache dir.
    project: str | None = None  # the shared project's directory name (else a new one)
    cache: str | None = None  # the cache dir's name under the work dir (else the project's)
    session: str = ""  # the session's label in the history table
    history: int = 0  # sessions that used this cache before this one (-1: the run's cache)
    # filled in by the run
    lines: int = 0
    latencies: list[float] = field(default_factory=list)
    first: float | None = None
    timeouts: int = 0
    startup: float = 0.0
    loadavg: float = 0.0
    edits_detail: list[dict] = field(default_factory=list)
    patch_lines: list[dict] = field(default_factory=list)
    profile: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    output_tail: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        name = f"{self.tool}/{self.size}/{self.mode}/{self.kind}"
        return f"{name}/{self.session}" if self.session else name

    @property
    def in_history(self) -> bool:
        return self.project is not None

    @property
    def roles(self) -> list[str]:
        return ["main"] if self.mode == "single" else [f"w{i}" for i in range(WORKERS)]


@dataclass
class Bench:
    work: Path
    poll_ms: float
    gap: float
    budget: float  # seconds of edits per case before it stops early (at least 3 edits)
    slow: float  # a warm-up edit slower than this caps the case at `slow_edits`
    slow_edits: int
    first_timeout: float
    thinlink_path: Path
    log: Callable[[str], None] = functools.partial(print, flush=True)
    problems: list[str] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)  # a shared project's last marker

    def command(self, case: Case, app_dir: Path) -> tuple[list[str], dict[str, str]]:
        args = ["app.py", case.mode, str(WORKERS if case.mode != "single" else 0)]
        env = baseline_env(PYTHONPATH=str(self.thinlink_path), BENCH_POLL=str(self.poll_ms / 1000))
        for name in [n for n in env if n.startswith("THINLINK_")]:
            del env[name]
        cache = ["--cache-dir", str(self.work / case.cache)] if case.cache else []
        if case.tool == "thinlink":
            return [PY, "-m", "thinlink", "dev", *cache, *args], env
        if case.tool == "thinlink-prof":
            wrapper = self.work / "tl_profile.py"
            wrapper.write_text(PROFILE_WRAPPER)
            env["BENCH_INSTRUMENT"] = "1"
            return [PY, str(wrapper), "dev", *cache, *args], env
        if case.tool == "jurigged":
            return [PY, "-m", "jurigged", *args], env
        if case.tool == "restart":
            target = " ".join([PY, *args])
            return [PY, "-m", "watchfiles", "--filter", "python", target, "."], env
        raise ValueError(case.tool)

    def run_case(self, case: Case) -> None:
        app_dir = self.work / (case.project or case.name.replace("/", "-"))
        head, tail = generate_module(SIZES[case.size])
        source = app_dir / f"{MODULE}.py"
        # A shared project goes on from the version the last session left (every version
        # is new text: a save is never a cache hit of an earlier session's).
        version = self.versions.get(case.project or "", 0)
        if not source.exists():
            app_dir.mkdir(parents=True)
            (app_dir / "pyproject.toml").write_text('[project]\nname = "benchapp"\nversion = "0"\n')
            (app_dir / "app.py").write_text(APP)
            source.write_text(head + marker_source(version, case.kind) + tail)
        case.lines = source.read_text().count("\n")
        case.loadavg = round(os.getloadavg()[0], 2)
        cmd, env = self.command(case, app_dir)
        self.log(f"  {case.name}: {case.lines} lines, load {case.loadavg}")
        started = time.monotonic()
        app = AppRun(cmd, app_dir, env)
        app.dumps_on_sigusr1 = case.tool == "thinlink-prof"
        try:
            roles = list(dict.fromkeys(["main", *case.roles]))
            if len(app.wait_marker(roles, version, 300)) < len(roles):
                err = "\n".join(line for _, line in app.stderr[-15:])
                self.problem(case, f"the app did not start within 300 s:\n{err}")
                return
            case.startup = time.monotonic() - started
            time.sleep(1.0)  # the reloader's watcher gets going
            version = self._edits(case, app, source, head, tail, version)
        finally:
            if not app.stop():
                time.sleep(0.5)  # the rest of its stderr
                lines = [line for _, line in app.stderr if not line.startswith("TLPROF ")]
                tail = " | ".join(lines[-40:])
                self.problem(
                    case,
                    "the reloader did not stop on SIGINT within 10 s (killed); its processes: "
                    f"{app.hung}; its last stderr lines: {tail}",
                )
        if case.project is not None:
            self.versions[case.project] = version
        self._collect(case, app)

    def _edits(
        self, case: Case, app: AppRun, source: Path, head: str, tail: str, version: int
    ) -> int:
        """The case's edits, from `version` on; the last version written."""
        planned, timeout, spent = case.edits, case.timeout, 0.0
        for i in range(planned + 1):  # edit 0 is the warm-up, reported as "first"
            version += 1
            write_time = write_source(source, head + marker_source(version, case.kind) + tail)
            got = app.wait_marker(case.roles, version, self.first_timeout if i == 0 else timeout)
            main = app.seen.get(("main", version))
            detail = {"version": version, "write": write_time, "seen": got, "main": main}
            case.edits_detail.append(detail)
            if len(got) < len(case.roles):
                case.timeouts += 1
                detail["timeout"] = True
                self.log(f"    edit {i}: {len(got)}/{len(case.roles)} saw it within the timeout")
                if app.proc.poll() is not None or case.timeouts >= case.max_timeouts:
                    case.notes.append(f"stopped after {case.timeouts} timed-out edits")
                    break
                time.sleep(self.gap)
                continue
            latency = max(got.values()) - write_time
            spent += latency
            if i == 0:
                case.first = latency
                timeout = max(timeout, 3 * latency)
                if latency > self.slow:
                    planned = min(planned, self.slow_edits)
                    case.notes.append(f"first edit took {latency:.1f} s: capped at {planned} edits")
            else:
                case.latencies.append(latency)
            if i >= planned or (i >= 3 and spent > self.budget):
                if i < planned:
                    case.notes.append(f"stopped after {i} timed edits ({spent:.0f} s budget)")
                break
            # Settled before the next save, however long the reloader took for this one.
            time.sleep(self.gap + random.uniform(0, self.gap / 2) + min(latency, 10.0))
        return version

    def _collect(self, case: Case, app: AppRun) -> None:
        writes = [d["write"] for d in case.edits_detail]

        def edit_of(when: float) -> int | None:
            index = None
            for i, w in enumerate(writes):
                if w <= when:
                    index = i
            return index

        for when, line in app.stderr:
            match = PATCH_LINE.search(line)
            index = edit_of(when)
            if match and index:  # not the warm-up (0) or a patch from before the first edit
                row = {k: float(match[k]) for k in ("total", "rebuild", "send", "apply")}
                row.update(edit=index, processes=int(match["n"]), of=int(match["of"]))
                case.patch_lines.append(row)
            if line.startswith("TLPROF-MISSING "):
                self.problem(case, f"instrumented names not found (stages read 0): {line[15:]}")
            if line.startswith("TLPROF "):
                record = json.loads(line[7:])
                index = edit_of(record["on_change"][0])
                if index and "broadcast" in record:
                    self._profile(case, app, index, record)
        output = [line for _, line in app.stderr] + app.stdout
        errors = [line for line in output if "Traceback" in line or "error" in line.lower()]
        if errors:
            case.notes.append(f"output: {errors[0][:160]}")
        if case.timeouts:
            case.output_tail = output[-30:]

    def _profile(self, case: Case, app: AppRun, index: int, rec: dict) -> None:
        """Split one edit's latency into stages (ms) along the slowest process's path."""
        detail = case.edits_detail[index]
        if detail.get("timeout"):
            return
        write, seen = detail["write"], detail["seen"]
        role, observed = max(seen.items(), key=lambda kv: kv[1])
        pid = next((p for p, r in app.pids.items() if r == role), None)
        bstart, bend = rec["broadcast"][:2]
        delivered = [d for d in app.delivers if d[0] == pid and bstart <= d[1] <= bend + 1]
        if not delivered:
            return
        _, dstart, dend = delivered[0]
        detect = min((t for t in rec["detects"] if t >= write), default=None)
        if detect is None:
            return

        def span(key: str) -> float:
            return rec[key][1] - rec[key][0] if key in rec else 0.0

        def summed(key: str) -> float:
            return rec[key][2] if key in rec else 0.0

        stages = {
            "watch detection": detect - write,
            "settle (half-written check)": summed("settle"),
            "rebuild (Builder.build)": span("build"),
            "  discover": summed("discover"),
            "  rebuild() (the module)": summed("rebuild()"),
            "  records read (get_record)": summed("get_record"),
            "  manifest save + refs": summed("manifest save") + summed("refs"),
            "patch making": span("make_patch"),
            "encode": span("encode"),
            "send (to the app's client)": dstart - bstart,
            "apply (deliver)": dend - dstart,
            "live code seen by the app": observed - dend,
            # Written behind, once the patch is out: not part of the latency.
            "cache and refs written after": summed("flush") + summed("store flush"),
        }
        # on_change's own code between the timed steps (and before the first one)
        steps = ("build", "make_patch", "encode")
        stages["between steps"] = (
            bstart - rec["on_change"][0] - sum(span(k) for k in steps) - summed("settle")
        )
        stages["detect to on_change"] = rec["on_change"][0] - detect
        stages["total (save to live)"] = observed - write
        applied = {}
        for report in rec.get("reports", []):
            if report.get("pid") == pid and report.get("timings"):
                applied = {f"  apply: {k}": v / 1000 for k, v in report["timings"].items()}
        order = list(stages)
        at = order.index("apply (deliver)") + 1
        stages = {k: stages.get(k, applied.get(k)) for k in order[:at] + list(applied) + order[at:]}
        case.profile.append({"edit": index} | {k: v * 1000 for k, v in stages.items()})

    def problem(self, case: Case, text: str) -> None:
        self.problems.append(f"{case.name}: {text}")
        self.log(f"    PROBLEM {text}")


PROFILE_NOTE = (
    "Timestamps in the dev process and around the app's apply (`hotpatch._jumptable.deliver`), "
    "along the path of the process that ran the new code last. `live code seen by the app` "
    "is negative when the app ran the new code before `deliver` returned (the swap happens "
    "inside it). `apply: *` are the app's own report timings."
)

# --- summary -------------------------------------------------------------------------------


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def stats_row(case: Case) -> dict:
    row = {
        "tool": TOOL_NAMES[case.tool],
        "size": case.size,
        "mode": case.mode,
        "kind": case.kind,
        "lines": case.lines,
        "session": case.session,
        "cache": case.cache,
        "sessions_before": case.history,
        "n": len(case.latencies),
        "timeouts": case.timeouts,
        "first": case.first,
        "startup": round(case.startup, 3),
        "loadavg_1m": case.loadavg,
        "notes": case.notes,
        "output_tail": case.output_tail,
    }
    if case.latencies:
        row["latency"] = Stats.of(case.latencies)
    return row


def _latency_cells(case: Case) -> list[object]:
    st = Stats.of(case.latencies) if case.latencies else None
    return [
        len(case.latencies),
        ms(st and st.median),
        ms(st and st.p95),
        ms(st and max(st.samples)),
        ms(case.first),
        case.timeouts,
        case.loadavg,
    ]


def _met(case: Case) -> str:
    if not case.tool.startswith("thinlink") or not case.latencies:
        return ""
    st = Stats.of(case.latencies)
    return "yes" if st.median < TARGET_P50 and st.p95 < TARGET_P95 else "NO"


def _table(headers: list[str], rows: list[list[object]]) -> list[str]:
    return ["```", format_table(headers, rows), "```", ""]


def _history_table(cases: list[Case]) -> list[str]:
    history = [c for c in cases if c.in_history]
    if not history:
        return []
    rows = []
    for c in history:
        before = "the run's" if c.history < 0 else str(c.history)
        rebuild = [p["rebuild"] / 1000 for p in c.patch_lines]
        st = Stats.of(rebuild) if rebuild else None
        rows.append(
            [
                c.session,
                before,
                *_latency_cells(c),
                ms(st and st.median),
                f"{c.startup:.2f}",
                _met(c),
            ]
        )
    size = history[0].size
    return [
        f"## Save to live on a cache that earlier sessions used ({size} lines, `same` edits)",
        "",
        "Sessions of `thinlink dev` one after another on one project and one cache dir, each "
        "going on from the module version the last one left (every save is new text); the "
        "first starts on a fresh cache. `the run's`: the same project on the cache that every "
        "other thinlink case of this run used. `rebuild p50` is from thinlink's per-patch "
        "line; `start s` is the session's start until the app runs (its build included).",
        "",
        *_table(
            [
                "session",
                "sessions before",
                "n",
                "p50",
                "p95",
                "max",
                "first",
                "timeouts",
                "load",
                "rebuild p50",
                "start s",
                "target met",
            ],
            rows,
        ),  # fmt: skip
    ]


def render(cases: list[Case], problems: list[str], info: dict) -> str:
    out = [
        "# Save to live: thinlink dev vs jurigged vs restart (watchfiles)",
        "",
        f"{info['date']}, Python {info['python']}, {info['cores']} cores, load average (1 min) "
        f"{info['loadavg_start']} at the start, {info['loadavg_1m']} at the end (each case's "
        f"is in its row); the app polls every {info['poll_ms']} ms. Target for thinlink: "
        "p50 < 20 ms and p95 < 50 ms at every size.",
        f"SPEC's numbers for the alternatives: {SPEC_ALTERNATIVES}.",
        "Code measured: a copy of thinlink/ and hotpatch/ taken at the start, at commit "
        f"{info.get('commit') or '?'}"
        + (f"; uncommitted: {', '.join(info['uncommitted'])}" if info.get("uncommitted") else "")
        + ".",
        "Edits: `shift` adds or removes a line in the edited function (alternately), so the",
        "code below it moves; `same` changes the body's text and keeps the line count.",
        "",
    ]
    timed = ["n", "p50", "p95", "max", "first", "timeouts", "load"]
    single = [
        c for c in cases if c.mode == "single" and c.tool != "thinlink-prof" and not c.in_history
    ]
    rows = [
        [c.size, c.lines, TOOL_NAMES[c.tool], c.kind, *_latency_cells(c), _met(c)] for c in single
    ]
    out += ["## Save to live (ms; one process)", ""]
    out += _table(["size", "lines", "reloader", "edits", *timed, "target met"], rows)
    ratio_rows = []
    for size in SIZES:
        by = {(c.tool, c.kind): c for c in single if c.size == size and c.latencies}
        for kind in ("shift", "same"):
            if ("thinlink", kind) not in by:
                continue
            tl = Stats.of(by["thinlink", kind].latencies)
            for alt in ("jurigged", "restart"):
                if (alt, "shift") in by:
                    a = Stats.of(by[alt, "shift"].latencies)
                    ratio_rows.append(
                        [
                            size,
                            f"thinlink ({kind})",
                            TOOL_NAMES[alt],
                            f"{tl.median / a.median:.3f}x",
                            f"{tl.p95 / a.p95:.3f}x",
                        ]
                    )
    if ratio_rows:
        out += [
            "Ratios thinlink / alternative (alternatives on `shift` edits; lower is better "
            "for thinlink):",
            "",
        ]
        out += _table(["size", "thinlink", "alternative", "p50 ratio", "p95 ratio"], ratio_rows)
    out += _history_table(cases)
    fan = [c for c in cases if c.mode != "single" and c.tool != "thinlink-prof"]
    if fan:
        rows = []
        for c in fan:
            got = [len(d["seen"]) for d in c.edits_detail]
            mains = [d["main"] - d["write"] for d in c.edits_detail if d.get("main")]
            rows.append(
                [
                    c.mode,
                    c.size,
                    TOOL_NAMES[c.tool],
                    c.kind,
                    *_latency_cells(c),
                    f"{min(got, default=0)}/{WORKERS}",
                    ms(Stats.of(mains).median if mains else None),
                ]
            )
        out += [
            f"## Fan-out: one save, {WORKERS} worker processes (ms until the last worker "
            "runs the new code)",
            "",
            "`workers` = the fewest workers that ran an edit; `main p50` = the app's main process.",
            "",
        ]
        out += _table(["start", "size", "reloader", "edits", *timed, "workers", "main p50"], rows)
    rows = []
    for c in cases:
        if c.tool != "thinlink" or not c.patch_lines:
            continue
        where = [c.size, c.mode, c.kind + (f" ({c.session})" if c.session else "")]
        for key in ("total", "rebuild", "send", "apply"):
            st = Stats.of([p[key] / 1000 for p in c.patch_lines])
            rows.append([*where, key, len(c.patch_lines), ms(st.median), ms(st.p95)])
        outside = [
            max(d["seen"].values()) - d["write"] - p["total"] / 1000
            for p in c.patch_lines
            if not (d := c.edits_detail[p["edit"]]).get("timeout")
        ]
        if outside:
            st = Stats.of(outside)
            rows.append([*where, "outside the line", len(outside), ms(st.median), ms(st.p95)])
    if rows:
        out += [
            "## thinlink's per-patch line (parsed from its stderr; ms)",
            "",
            "`outside the line` = save to live minus the line's total: the watcher's",
            "detection before the rebuild, and the app noticing the new code.",
            "",
        ]
        out += _table(["size", "mode", "edits", "part", "n", "p50", "p95"], rows)
    for c in cases:
        if c.tool != "thinlink-prof" or not c.profile:
            continue
        rows = []
        for key in dict.fromkeys(k for p in c.profile for k in p if k != "edit"):
            values = [p[key] / 1000 for p in c.profile if key in p]
            st = Stats.of(values)
            rows.append([key, len(values), ms(st.median), ms(st.p95), ms(max(values))])
        out += [
            f"## Where the time goes: thinlink dev, {c.size} lines, {c.mode}, `{c.kind}` "
            f"edits"
            + (f", {c.session}, on a cache {c.history} sessions used" if c.session else "")
            + f" (ms; load {c.loadavg})",
            "",
            PROFILE_NOTE,
            "",
        ]
        out += _table(["stage", "n", "p50", "p95", "max"], rows)
    notes = [f"- {c.name}: {n}" for c in cases for n in c.notes]
    if notes or problems:
        out += ["## Notes and problems", "", *notes, *(f"- PROBLEM {p}" for p in problems), ""]
    return "\n".join(out)


# --- main ----------------------------------------------------------------------------------


def plan(args: argparse.Namespace) -> list[Case]:
    """Per size: every reloader on `shift` edits (the comparison), then thinlink on `same`
    edits, then the instrumented thinlink passes; then the fan-outs."""
    cases: list[Case] = []
    tl = "thinlink" in args.tools
    for size in args.sizes:
        cases += [Case(tool, size, edits=args.edits) for tool in args.tools]
        if tl:
            cases.append(Case("thinlink", size, kind="same", edits=args.edits))
        if tl and args.profile:
            cases.append(Case("thinlink-prof", size, edits=args.edits))
            cases.append(Case("thinlink-prof", size, kind="same", edits=args.edits))
    size = args.fanout_size
    for mode in args.fanout:
        for tool in args.tools:
            if tool == "jurigged":
                # jurigged patches only the process that runs it: one edit shows that.
                cases.append(Case(tool, size, mode, edits=1, timeout=3.0, max_timeouts=1))
            else:
                cases.append(Case(tool, size, mode, edits=args.edits))
        if tl:
            cases.append(Case("thinlink", size, mode, kind="same", edits=args.edits))
        if tl and args.profile and mode == "fork":
            cases.append(Case("thinlink-prof", size, mode, edits=args.edits))
            cases.append(Case("thinlink-prof", size, mode, kind="same", edits=args.edits))
    if not args.fresh_caches:
        for case in cases:
            if case.tool.startswith("thinlink"):
                case.cache = RUN_CACHE
    if tl and args.history:
        cases += history_cases(args, others=any(c.cache == RUN_CACHE for c in cases))
    return cases


def history_cases(args: argparse.Namespace, others: bool) -> list[Case]:
    """Sessions of `same` edits one after another on one project and one cache dir (the
    first on a fresh cache); an instrumented one after them; and one on the cache the
    run's other thinlink cases used."""
    size, edits = args.history_size, args.edits

    def session(label: str, tool: str, cache: str, before: int) -> Case:
        return Case(
            tool, size, kind="same", edits=edits, project=HISTORY, cache=cache,
            session=label, history=before,
        )  # fmt: skip

    cases = [session(f"session {i + 1}", "thinlink", HISTORY_CACHE, i) for i in range(args.history)]
    if args.profile:
        n = args.history
        cases.append(session(f"session {n + 1}, instrumented", "thinlink-prof", HISTORY_CACHE, n))
    if others:
        cases.append(session("on the run's cache", "thinlink", RUN_CACHE, -1))
    return cases


def snapshot(checkout: Path, dest: Path) -> Path:
    """Copy the packages measured (thinlink, hotpatch) out of the checkout, so that every
    case of the run measures the same code while the checkout changes."""
    for package in ("thinlink", "hotpatch"):
        shutil.copytree(
            checkout / package, dest / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    return dest


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=20, help="timed edits per case (+1 warm-up)")
    parser.add_argument("--quick", action="store_true", help="3 edits per case: a smoke test")
    parser.add_argument("--sizes", nargs="*", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--tools", nargs="+", default=list(TOOLS), choices=list(TOOLS))
    parser.add_argument("--fanout", nargs="*", default=["fork", "spawn"], choices=["fork", "spawn"])
    parser.add_argument("--fanout-size", default="2k", choices=list(SIZES))
    parser.add_argument(
        "--no-profile",
        dest="profile",
        action="store_false",
        help="skip the instrumented thinlink pass",
    )
    parser.add_argument(
        "--history", type=int, default=4, metavar="N",
        help="sessions of `same` edits one after another on one cache (0: none)",
    )  # fmt: skip
    parser.add_argument("--history-size", default="24k", choices=list(SIZES))
    parser.add_argument(
        "--fresh-caches", action="store_true",
        help="a cache per case (default: the thinlink cases share one, which the last "
        "history session then starts on)",
    )  # fmt: skip
    parser.add_argument("--poll-ms", type=float, default=0.2, help="the app's poll interval")
    parser.add_argument("--gap", type=float, default=0.3, help="seconds between edits (+ jitter)")
    parser.add_argument("--budget", type=float, default=240, help="seconds of edits per case")
    parser.add_argument("--slow", type=float, default=30, help="a first edit slower than this ...")
    parser.add_argument("--slow-edits", type=int, default=3, help="... caps the case at N edits")
    parser.add_argument(
        "--wait-load",
        type=float,
        default=None,
        help="wait (up to --wait-max s) for the 1-min load average below this",
    )
    parser.add_argument("--wait-max", type=float, default=1200)
    parser.add_argument(
        "--first-timeout", type=float, default=300, help="seconds for the warm-up edit"
    )
    parser.add_argument("--thinlink-path", type=Path, default=REPO_ROOT, help="on PYTHONPATH")
    parser.add_argument("--no-write", action="store_true", help="do not write results/")
    parser.add_argument(
        "--name", default="dev", help="results/NAME.{md,json} (a partial run: another name)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.edits = 3
        args.budget = min(args.budget, 60)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Started in the background by a shell (`cmd &`), this process ignores SIGINT, and so
    # would every app it starts: the restart-based reloader's SIGINT would then wait out
    # its timeout. A handler of our own is reset to the default in each child.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if args.wait_load is not None:
        wait_for_quiet(args.wait_load, args.wait_max)
    load_start = round(os.getloadavg()[0], 2)
    print(f"load average (1 min): {load_start} ({os.cpu_count()} cores)", flush=True)
    cases = plan(args)
    measured = source_state()
    with tempfile.TemporaryDirectory(prefix="thinlink-bench-dev-") as tmp:
        code = snapshot(args.thinlink_path.resolve(), Path(tmp) / "src")
        bench = Bench(
            Path(tmp),
            args.poll_ms,
            args.gap,
            args.budget,
            args.slow,
            args.slow_edits,
            args.first_timeout,
            code,
        )
        for case in cases:
            bench.run_case(case)
            if case.latencies:
                st = Stats.of(case.latencies)
                print(
                    f"    p50 {ms(st.median)} ms, p95 {ms(st.p95)} ms, n={len(case.latencies)}"
                    f", first {ms(case.first)} ms",
                    flush=True,
                )
    info = machine_info() | {"loadavg_start": load_start, "poll_ms": args.poll_ms} | measured
    text = render(cases, bench.problems, info)
    print()
    print(text)
    if not args.no_write:
        data = {
            "machine": info,
            "settings": {k: v for k, v in vars(args).items() if k != "thinlink_path"},
            "targets": {"p50_s": TARGET_P50, "p95_s": TARGET_P95},
            "cases": [
                stats_row(c)
                | {"patch_lines": c.patch_lines, "profile_ms": c.profile, "edits": c.edits_detail}
                for c in cases
            ],
            "problems": bench.problems,
        }
        paths = write_results(args.name, data, text)
        print("wrote", *paths)
    return 1 if bench.problems else 0


if __name__ == "__main__":
    sys.exit(main())
