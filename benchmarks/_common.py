"""Shared helpers for the benchmarks: the stdlib corpus, timed runs, stats, tables, results.

Every benchmark measures thinlink side by side with a plain-Python alternative in one run
and reports medians, p95s and ratios. Timings of commands are the wall clock of the
whole subprocess (what a user waits for). Peak memory is the max RSS that ``wait4``
reports for the child: the largest single process in its tree, like ``/usr/bin/time -v``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

__all__ = [
    "RESULTS_DIR",
    "REPO_ROOT",
    "STDLIB",
    "Run",
    "Stats",
    "baseline_env",
    "copy_corpus",
    "format_table",
    "machine_info",
    "run",
    "source_state",
    "time_call",
    "touch_all",
    "wait_for_quiet",
    "write_results",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
STDLIB = Path(os.path.dirname(os.__file__))
# Left out of the corpus: installed packages, tests, test data and bundled tools.
SKIP_DIRS = frozenset(
    "site-packages test tests idle_test __pycache__ lib2to3 idlelib turtledemo ensurepip".split()
)


@dataclass(frozen=True)
class Run:
    """One finished subprocess: wall seconds, peak RSS in KiB, its output."""

    seconds: float
    max_rss_kib: int
    stdout: str
    stderr: str
    returncode: int


@dataclass(frozen=True)
class Stats:
    """Median and p95 of repeated samples (seconds, bytes, ...)."""

    median: float
    p95: float
    samples: tuple[float, ...]

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stats:
        if not samples:
            raise ValueError("no samples")
        ordered = sorted(samples)
        p95 = ordered[0]
        if len(ordered) > 1:
            p95 = statistics.quantiles(ordered, n=20, method="inclusive")[18]
        return cls(statistics.median(ordered), p95, tuple(samples))


def copy_corpus(src: Path, dest: Path) -> tuple[int, int, int]:
    """Copy the ``*.py`` files of ``src`` (the stdlib: ``STDLIB``) to ``dest``, leaving out
    ``SKIP_DIRS`` and ``config-*``; return (files, lines, bytes)."""
    files = lines = size = 0
    for root, dirs, names in os.walk(src):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("config-"))
        for name in (n for n in names if n.endswith(".py")):
            data = Path(root, name).read_bytes()
            target = dest / Path(root, name).relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            files, lines, size = files + 1, lines + data.count(b"\n"), size + len(data)
    return files, lines, size


def touch_all(tree: Path, mtime: int) -> None:
    """Set every ``*.py`` file's mtime under ``tree``, contents unchanged (a branch switch)."""
    for path in tree.rglob("*.py"):
        os.utime(path, (mtime, mtime))


def wait_for_quiet(threshold: float, longest: float) -> float:
    """Wait (at most `longest` seconds) for the 1-minute load average to drop below
    `threshold`; return the load average when done waiting."""
    deadline = time.monotonic() + longest
    while (load := os.getloadavg()[0]) >= threshold and time.monotonic() < deadline:
        print(f"load average {load:.2f} >= {threshold}: waiting", flush=True)
        time.sleep(min(30.0, max(deadline - time.monotonic(), 1.0)))
    return load


def baseline_env(**extra: str) -> dict[str, str]:
    """The environment of a user's machine: pycs written (no PYTHONDONTWRITEBYTECODE)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(extra)
    return env


def run(
    cmd: Sequence[str | os.PathLike], *, env: dict[str, str], cwd: Path, check: bool = True
) -> Run:
    """Run ``cmd`` to completion; time it and read its peak RSS from ``wait4``."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [os.fspath(c) for c in cmd],
        env=env,
        cwd=cwd,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stdout, stderr = _drain(proc)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    result = Run(seconds, usage.ru_maxrss, stdout, stderr, proc.returncode)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {result.returncode}:\n{stderr}")
    return result


def _drain(proc: subprocess.Popen) -> tuple[str, str]:
    """Read both pipes to EOF without reaping the child (``wait4`` does that)."""
    chunks: dict[str, str] = {}
    reader = threading.Thread(target=lambda: chunks.setdefault("err", proc.stderr.read()))
    reader.start()
    out = proc.stdout.read()
    reader.join()
    proc.stdout.close()
    proc.stderr.close()
    return out, chunks["err"]


def time_call(fn: Callable[[], object], repeat: int) -> Stats:
    """In-process timing of ``fn`` (one warm-up call, then ``repeat`` timed calls)."""
    fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return Stats.of(samples)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain aligned text table (readable when piped); numeric cells right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        pairs = zip(row, widths, strict=True)
        return "  ".join(c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in pairs).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def _numeric(cell: str) -> bool:
    try:
        float(cell.removesuffix("x"))
    except ValueError:
        return False
    return True


def machine_info() -> dict[str, object]:
    """Date, interpreter and machine: recorded with every result file."""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "cores": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2),  # other work on the machine skews timings
    }


def source_state() -> dict[str, object]:
    """The commit of this checkout, the product files changed since (read-only git) and a
    digest of the product's sources: recorded with results, since the code measured may
    be ahead of the commit."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True
            )
        except (OSError, subprocess.CalledProcessError):
            return ""
        return done.stdout

    changed = git("status", "--porcelain", "--", "thinlink", "hotpatch").splitlines()
    digest = hashlib.sha256()
    for path in sorted(p for d in ("thinlink", "hotpatch") for p in (REPO_ROOT / d).rglob("*.py")):
        digest.update(path.read_bytes())
    return {
        "commit": git("rev-parse", "--short", "HEAD").strip(),
        "uncommitted": changed,
        "product_sha256": digest.hexdigest()[:16],  # of thinlink/ and hotpatch/ *.py
    }


def write_results(name: str, data: dict[str, object], markdown: str) -> tuple[Path, Path]:
    """Write ``results/<name>.json`` and its human-readable ``results/<name>.md``."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    json_path = RESULTS_DIR / f"{name}.json"
    md_path = RESULTS_DIR / f"{name}.md"
    json_path.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")
    md_path.write_text(markdown)
    return json_path, md_path


def _jsonable(obj: object) -> object:
    if isinstance(obj, Stats | Run):
        return asdict(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
