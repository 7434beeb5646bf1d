"""Start-up benchmark: `thinlink run` vs plain `python` with its pycs, on a 150-module app.

    python benchmarks/bench_start.py [--runs N] [--touch-runs N] [--quick] [--wait-load 1.5]

The app (`_app_package.py`: a package of 150 modules, 60k lines, and `main.py`, which
imports it and prints a checksum of every module) is started the way a user starts it,
each start a fresh process run from the project's directory:

- warm: the caches are what earlier starts left (thinlink's build and image; python's
  pycs). `thinlink run main.py` (the console script, and `python -m thinlink run
  main.py`) against `python main.py`; `thinlink run nothing.py` against `python
  nothing.py` (an empty script of the same project: the fixed cost of each command).
- after every file's mtime changed, contents the same (`os.utime` on every file: a branch
  switch and back): the first start after it, `thinlink run main.py` against `python
  main.py` (which recompiles every module and writes its pycs again); then the start after
  that one.

Both sides run on this interpreter without PYTHONDONTWRITEBYTECODE (users' machines
write pycs, for thinlink's own modules too), in one environment; the commands of a round
run in an order that rotates from round to round, so load on the machine hits all alike.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from _app_package import generate_app
from _common import (
    REPO_ROOT,
    Stats,
    baseline_env,
    format_table,
    machine_info,
    run,
    source_state,
    touch_all,
    wait_for_quiet,
    write_results,
)

PY = sys.executable
CONSOLE = Path(PY).parent / "thinlink"  # the console script installed beside this python
BUSY = 1.5  # a 1-minute load average above this on 2 cores: the scenario should be rerun
RACY = 2.5  # seconds: thinlink trusts a file's stat only once it is this old (launch._RACY_NS)

TL_MAIN, TL_M_MAIN, PY_MAIN = (
    "thinlink run main.py",
    "python -m thinlink run main.py",
    "python main.py",
)
TL_NOTHING, PY_NOTHING = "thinlink run nothing.py", "python nothing.py"
TOUCH_TL, TOUCH_PY = "thinlink run main.py", "python main.py"
# (scenario, thinlink row, alternative row, target for the ratio thinlink / alternative)
COMPARISONS = [
    ("warm", TL_MAIN, PY_MAIN, 1.1),
    ("warm", TL_M_MAIN, PY_MAIN, 1.1),
    ("warm", TL_NOTHING, PY_NOTHING, None),
    ("touch: first start", TOUCH_TL, TOUCH_PY, 1 / 3),
    ("touch: the start after", TOUCH_TL, TOUCH_PY, None),
]


@dataclass
class Bench:
    app: Path
    env: dict[str, str]
    console: bool  # the console script exists: its row is measured
    expected: dict[str, str]  # loader name -> the output line of main.py
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    rss: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    loads: dict[str, list[float]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def command(self, name: str) -> list[str]:
        script = name.rsplit(" ", 1)[-1]
        if name.startswith("thinlink run"):
            return (
                [str(CONSOLE), "run", script]
                if self.console
                else [PY, "-m", "thinlink", "run", script]
            )
        if name.startswith("python -m thinlink"):
            return [PY, "-m", "thinlink", "run", script]
        return [PY, script]

    def start(self, scenario: str, name: str, record: bool = True) -> None:
        """One start of `name` from the app's directory: timed, its output checked."""
        result = run(self.command(name), env=self.env, cwd=self.app, check=False)
        want = ""
        if name.endswith("main.py"):
            want = self.expected["BuildLoader" if "thinlink" in name else "SourceFileLoader"]
        if result.returncode != 0 or result.stdout.strip() != want:
            self.problems.append(
                f"{scenario}: {name} exited {result.returncode}, printed "
                f"{result.stdout.strip()[:120]!r} (expected {want!r}); "
                f"stderr {result.stderr.strip()[-300:]!r}"
            )
        if record:
            self.samples.setdefault(scenario, {}).setdefault(name, []).append(result.seconds)
            self.rss.setdefault(scenario, {}).setdefault(name, []).append(result.max_rss_kib / 1024)

    def load(self, scenario: str) -> None:
        self.loads.setdefault(scenario, []).append(round(os.getloadavg()[0], 2))


def listing(root: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under `root`: what a run wrote shows as a difference."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file()
    }


def changed(before: dict, after: dict, under: str = "") -> list[str]:
    keys = set(before) | set(after)
    return sorted(k for k in keys if k.startswith(under) and before.get(k) != after.get(k))


def bench_warm(b: Bench, runs: int) -> None:
    names = [TL_MAIN, TL_M_MAIN, PY_MAIN, TL_NOTHING, PY_NOTHING]
    cache, pycs = listing(b.app / ".thinlink"), listing(b.app / "shop")
    b.load("warm")
    for r in range(runs):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            b.start("warm", name)
        if r % 10 == 9:
            b.load("warm")
    b.load("warm")
    if wrote := changed(cache, listing(b.app / ".thinlink")):
        b.problems.append(f"warm: thinlink wrote to its cache: {', '.join(wrote[:5])}")
    if wrote := changed(pycs, listing(b.app / "shop")):
        b.problems.append(f"warm: python rewrote pycs: {', '.join(wrote[:5])}")


def bench_touch(b: Bench, runs: int) -> None:
    """Per round: every file's mtime set to a new whole second (python's pycs record the
    mtime in seconds), then the first start of each side, then the next start of each."""
    mtime = int(time.time()) - 100_000
    sides = [TOUCH_TL, TOUCH_PY]
    b.load("touch")
    for r in range(runs):
        built = listing(b.app / ".thinlink")
        touch_all(b.app, mtime + r)
        pyc = next((b.app / "shop" / "__pycache__").glob("__init__.*.pyc"))
        pyc_before = pyc.stat().st_mtime_ns
        order = sides if r % 2 == 0 else sides[::-1]
        for name in order:
            b.start("touch: first start", name)
        for name in order:
            b.start("touch: the start after", name)
        if pyc.stat().st_mtime_ns == pyc_before:
            b.problems.append("touch: python did not rewrite its pycs (the mtime check held?)")
        now = listing(b.app / ".thinlink")
        rebuilt = changed(built, now, "images") + changed(built, now, "builds")
        if rebuilt:
            b.problems.append(f"touch: thinlink built again: {', '.join(rebuilt[:3])}")
        if r % 10 == 9:
            b.load("touch")
    b.load("touch")


def summarize(b: Bench) -> tuple[dict, list[dict]]:
    stats = {
        s: {c: {"seconds": Stats.of(v), "rss_mib": Stats.of(b.rss[s][c])} for c, v in cmds.items()}
        for s, cmds in b.samples.items()
    }
    comparisons = []
    for scenario, ours, theirs, target in COMPARISONS:
        if ours not in stats.get(scenario, {}) or theirs not in stats.get(scenario, {}):
            continue
        mine, alt = stats[scenario][ours]["seconds"], stats[scenario][theirs]["seconds"]
        ratio = mine.median / alt.median
        comparisons.append(
            {
                "scenario": scenario,
                "ratio_of": f"{ours} / {theirs}",
                "ratio": ratio,
                "p95_ratio": mine.p95 / alt.p95,
                "difference_ms": (mine.median - alt.median) * 1000,
                "target": target,
                "pass": None if target is None else ratio <= target,
            }
        )
    return stats, comparisons


def render(b: Bench, stats: dict, comparisons: list[dict], info: dict) -> str:
    rows = [
        [
            s,
            c,
            f"{st['seconds'].median * 1000:.1f}",
            f"{st['seconds'].p95 * 1000:.1f}",
            len(st["seconds"].samples),
            f"{st['rss_mib'].median:.1f}",
        ]
        for s, cmds in stats.items()
        for c, st in cmds.items()
    ]
    verdicts = {None: "-", True: "PASS", False: "FAIL"}
    ratios = [
        [
            c["scenario"],
            c["ratio_of"],
            f"{c['ratio']:.3f}x",
            f"{c['p95_ratio']:.3f}x",
            f"{1 / c['ratio']:.2f}x",
            f"{c['difference_ms']:+.1f}",
            "-" if c["target"] is None else f"<= {c['target']:.3f}x",
            verdicts[c["pass"]],
        ]
        for c in comparisons
    ]
    loads = ", ".join(f"{s} {min(v)}-{max(v)}" for s, v in b.loads.items())
    busy = [s for s, v in b.loads.items() if max(v) > BUSY]
    parts = [
        f"app: {info['app']['modules']} modules, {info['app']['lines']} lines; "
        f"load average (1 min) during the scenarios: {loads}"
        + (f" (above {BUSY} in: {', '.join(busy)}: noisy)" if busy else ""),
        "",
        "timings (ms; each a whole command in a fresh process; rss: max RSS, MiB)",
        format_table(["scenario", "command", "median", "p95", "runs", "rss"], rows),
        "",
        "ratios (thinlink / python; lower is better for thinlink; speed-up = python / thinlink)",
        format_table(
            [
                "scenario",
                "thinlink / alternative",
                "median",
                "p95",
                "speed-up",
                "diff ms",
                "target",
                "verdict",
            ],
            ratios,
        ),  # fmt: skip
        "",
        "touch: every file's mtime set to a new second (contents the same), then the first start",
        "of each side (python recompiles every module and rewrites its pycs; thinlink reads and",
        "digests every file, finds them unchanged and starts from its image), then one more",
        "start of each (thinlink trusts a file's stat only once it is 2 s old, so this one",
        "still reads the files the touch left less than 2 s ago).",
    ]
    if not b.console:
        parts.append(
            f"note: no console script at {CONSOLE}: `thinlink run` rows ran `python -m thinlink`"
        )
    parts += [f"problem: {p}" for p in sorted(set(b.problems))] or ["problems: none seen"]
    return "\n".join(parts) + "\n"


def resolve_env(thinlink_path: Path) -> tuple[dict[str, str], str]:
    """The environment of both sides: a user's (pycs written), without thinlink's or
    hotpatch's settings; PYTHONPATH only if this python does not import thinlink from
    `thinlink_path` by itself (then both sides get it)."""
    env = baseline_env()
    for name in list(env):
        if name.startswith(("THINLINK_", "HOTPATCH_")) or name == "PYTHONPATH":
            del env[name]
    probe = [PY, "-c", "import thinlink, hotpatch; print(thinlink.__file__)"]
    found = subprocess.run(probe, env=env, cwd="/", capture_output=True, text=True).stdout.strip()
    if found and Path(found).resolve().is_relative_to(thinlink_path):
        return env, f"thinlink installed from {thinlink_path}"
    env["PYTHONPATH"] = str(thinlink_path)
    return env, f"PYTHONPATH={thinlink_path} for both sides (installed: {found or 'none'})"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="warm rounds (every command once)")
    parser.add_argument("--touch-runs", type=int, default=20, help="mtime-change rounds")
    parser.add_argument("--quick", action="store_true", help="5 rounds each: a smoke test")
    parser.add_argument(
        "--scenarios", nargs="+", default=["warm", "touch"], choices=["warm", "touch"]
    )
    parser.add_argument(
        "--wait-load", type=float, default=None, help="wait for the load below this"
    )
    parser.add_argument("--wait-max", type=float, default=900)
    parser.add_argument("--thinlink-path", type=Path, default=REPO_ROOT)
    parser.add_argument("--no-write", action="store_true", help="do not write results/")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs = args.touch_runs = 5
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.wait_load is not None:
        wait_for_quiet(args.wait_load, args.wait_max)
    measured = source_state()
    env, how = resolve_env(args.thinlink_path.resolve())
    load = os.getloadavg()[0]
    print(f"python: {PY} ({sys.version.split()[0]}), {os.cpu_count()} cores; {how}")
    print(f"load average {load:.2f}" + (": busy, timings will be noisy" if load > BUSY else ""))
    with tempfile.TemporaryDirectory(prefix="bench-start-") as tmp:
        app = generate_app(Path(tmp, "app"))
        line = f"shop: {app.modules} modules, checksum {app.checksum}, loader {{}}"
        expected = {k: line.format(k) for k in ("BuildLoader", "SourceFileLoader")}
        b = Bench(app.root, env, CONSOLE.exists(), expected)
        print(f"app: {app.modules} modules, {app.lines} lines in {app.root}", flush=True)
        # The first build then trusts every file's stat (see launch._RACY_NS), as it
        # would for a project whose files were written more than a moment ago.
        time.sleep(RACY)
        for name in (TL_MAIN, PY_MAIN, TL_MAIN, TL_M_MAIN, PY_MAIN, TL_NOTHING, PY_NOTHING):
            b.start("warm-up", name, record=False)  # the build, the image, every pyc
        if "warm" in args.scenarios:
            print(f"warm: {args.runs} rounds ...", flush=True)
            bench_warm(b, args.runs)
        if "touch" in args.scenarios:
            print(f"touch: {args.touch_runs} rounds ...", flush=True)
            bench_touch(b, args.touch_runs)
    stats, comparisons = summarize(b)
    info = machine_info() | measured | {"app": {"modules": app.modules, "lines": app.lines}}
    text = render(b, stats, comparisons, info)
    print("\n" + text)
    if not args.no_write:
        data = {
            **info,
            "environment": how,
            "runs": {"warm": args.runs, "touch": args.touch_runs},
            "loadavg": b.loads,
            "stats": stats,
            "comparisons": comparisons,
            "problems": sorted(set(b.problems)),
        }
        header = (
            f"# Start-up benchmark\n\n{info['date']}, Python {info['python']}, "
            f"{info['cores']} cores, commit {info['commit']}"
            + (f" (uncommitted: {', '.join(info['uncommitted'])})" if info["uncommitted"] else "")
            + f"; {how}.\n\n"
        )
        for path in write_results("start", data, f"{header}```\n{text}```\n"):
            print(f"wrote {path}")
    return 1 if b.problems else 0


if __name__ == "__main__":
    sys.exit(main())
