"""Build benchmark: `thinlink build` vs `compileall` / `py_compile` on a copy of the stdlib.

Scenarios (SPEC.md, "Performance targets"), each run side by side in one process:
cold build, no-op build, every file touched (contents unchanged), one function body
edited in the largest module, and the peak memory of the cold build.

    python benchmarks/bench_build.py [--runs N] [--quick] [--corpus DIR]

Both sides run on this interpreter (sys.executable) without PYTHONDONTWRITEBYTECODE, from
a neutral working directory (so `-m` never puts the corpus on sys.path).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import py_compile
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from _common import (
    REPO_ROOT,
    STDLIB,
    Stats,
    baseline_env,
    copy_corpus,
    format_table,
    machine_info,
    run,
    source_state,
    time_call,
    touch_all,
    wait_for_quiet,
    write_results,
)

PY = sys.executable
RACY = 2.5  # seconds: a file's stat is trusted once it is this old (thinlink.launch._RACY_NS)
EDIT_VAR = "_thinlink_bench_edit"
SCENARIOS = ("cold", "noop", "touch", "edit", "memory")
TL, TL_JSON = "thinlink build", "thinlink build (JSON seconds)"
TL_MODULE, PYC_IN = "thinlink: that module (JSON changed[].ms)", "py_compile.compile (in-process)"
TL_REBUILD = "thinlink rebuild() of that module (in-process)"
# (scenario, thinlink row, alternative row, target for thinlink / alternative, or None)
COMPARISONS = [
    ("cold", TL, "compileall -j0", 1.3),
    ("cold", TL, "compileall -j1", None),
    ("noop", TL, "compileall -j0", 1.0),
    ("noop", TL, "compileall -j1", 1.0),
    ("touch", TL, "compileall -j0", 0.1),
    ("touch", TL, "compileall -j1", 0.1),
    # What a user waits for after an edit: the whole command, in a fresh process, beside
    # `compileall` of the tree after the same edit (it checks every pyc and recompiles
    # the edited module whole).
    ("edit", TL, "compileall -j0", 1.0),
    ("edit", TL, "compileall -j1", 1.0),
    # The compiles of the edited module alone, each in a warm process (the first
    # compile() of a process costs 2-3 ms by itself); the module's time in a fresh
    # `thinlink build` and the `py_compile` command are shown beside.
    ("edit", TL_REBUILD, PYC_IN, 0.2),
    ("edit", TL_MODULE, PYC_IN, None),
    ("edit", TL, "python -m py_compile", None),
    ("edit", TL_JSON, PYC_IN, None),
    ("memory", TL, "compileall -j0", None),
]


@dataclass
class Bench:
    pristine: Path  # the corpus, never built in: every scenario works on copies
    work: Path
    runs: int
    thinlink_path: Path
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    loads: dict[str, float] = field(default_factory=dict)  # 1-min load after each step

    def record(self, scenario: str, command: str, value: float) -> None:
        self.samples.setdefault(scenario, {}).setdefault(command, []).append(value)

    def fresh_copy(self, name: str) -> Path:
        dest = self.work / name
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(self.pristine, dest)
        return dest

    def thinlink(self, tree: Path, cache: Path, scenario: str | None = None) -> dict:
        """One `thinlink build --json`, recorded under ``scenario`` if given; its report."""
        env = baseline_env(PYTHONPATH=str(self.thinlink_path))
        cmd = [PY, "-m", "thinlink", "build", tree, "--cache-dir", cache, "--json"]
        result = run(cmd, env=env, cwd=self.work / "cwd")
        report = json.loads(result.stdout.strip().splitlines()[-1])
        if scenario:
            self.record(scenario, TL, result.seconds)
            self.record(scenario, TL_JSON, report["seconds"])
        if scenario == "cold":
            self.record("memory", TL, result.max_rss_kib / 1024)
        return report

    def compileall(self, tree: Path, jobs: int, scenario: str | None = None) -> None:
        cmd = [PY, "-m", "compileall", "-q", f"-j{jobs}", tree]
        result = run(cmd, env=baseline_env(), cwd=self.work / "cwd")
        if scenario:
            self.record(scenario, f"compileall -j{jobs}", result.seconds)
        if scenario == "cold":
            self.record("memory", f"compileall -j{jobs}", result.max_rss_kib / 1024)

    def expect(self, what: str, report: dict, **fields: int) -> None:
        for key, want in fields.items():
            if report.get(key) != want:
                self.problems.append(f"{what}: JSON {key}={report.get(key)!r}, expected {want}")


def bench_cold(b: Bench) -> None:
    for i in range(b.runs):
        report = b.thinlink(b.fresh_copy("cold"), b.work / f"cache-cold-{i}", "cold")
        b.expect("cold", report, reused=0, relocated=0, failed=0, compiled=report["units"])
        for jobs in (0, 1):
            b.compileall(b.fresh_copy("cold"), jobs, "cold")


def bench_noop_and_touch(b: Bench) -> None:
    tl_tree, ca_tree, cache = b.fresh_copy("tl"), b.fresh_copy("ca"), b.work / "cache-warm"
    b.thinlink(tl_tree, cache)
    b.compileall(ca_tree, 0)
    # A build trusts the stat of a file only once it is 2 s old (thinlink.launch): the
    # copy just made is not yet; one more build, past that, records them, as a build of
    # files written a while ago does.
    time.sleep(max(0.0, RACY - (time.time() - os.stat(tl_tree).st_ctime)))
    b.thinlink(tl_tree, cache)
    mtime = int(os.stat(b.pristine).st_mtime) - 10 * b.runs  # a new mtime for each touch
    for scenario in ("noop", "touch"):
        for _ in range(b.runs):
            if scenario == "touch":
                touch_all(tl_tree, mtime := mtime + 1)
            report = b.thinlink(tl_tree, cache, scenario)
            b.expect(scenario, report, compiled=0, relocated=0, failed=0)
            for jobs in (0, 1):
                if scenario == "touch":
                    touch_all(ca_tree, mtime := mtime + 1)
                b.compileall(ca_tree, jobs, scenario)


@dataclass(frozen=True)
class Edit:
    """A new first statement in one top-level function's body."""

    path: Path  # relative to the corpus
    qualname: str
    line: int  # 1-based line the new statement is inserted before
    indent: str
    skipped: tuple[str, ...]  # larger modules without an editable top-level function
    # Units that must be compiled: the def statement's own unit and the function (it has
    # no nested definitions).
    expected = 2

    def apply(self, source: str, value: int) -> str:
        lines = source.splitlines(keepends=True)
        lines.insert(self.line - 1, f"{self.indent}{EDIT_VAR} = {value}\n")
        return "".join(lines)


def pick_edit(tree: Path) -> Edit:
    """A top-level function past the middle of the largest module that has one."""
    skipped: list[str] = []
    for path in sorted(tree.rglob("*.py"), key=lambda p: p.stat().st_size, reverse=True):
        source = path.read_text(encoding="utf-8")
        middle = source.count("\n") // 2
        for node in ast.parse(source).body:
            if node.lineno >= middle and _editable(node):
                first = node.body[0]
                is_doc = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                line = first.end_lineno + 1 if is_doc else first.lineno
                rel, indent = path.relative_to(tree), " " * first.col_offset
                return Edit(rel, node.name, line, indent, tuple(skipped))
        skipped.append(str(path.relative_to(tree)))
    raise SystemExit("no module in the corpus has an editable top-level function")


def _editable(node: ast.stmt) -> bool:
    """A plain function with no nested units, whose body starts on its own line."""
    if not isinstance(node, ast.FunctionDef) or node.decorator_list:
        return False
    nested = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
    if any(isinstance(n, nested) for n in ast.walk(node) if n is not node):
        return False
    return node.body[0].lineno > node.lineno and len(node.body) > 1


def bench_edit(b: Bench) -> dict[str, object]:
    tree = b.fresh_copy("edit")
    edit = pick_edit(tree)
    original = (tree / edit.path).read_text(encoding="utf-8")
    report = _edit_commands(b, tree, edit, original)
    _edit_rebuild_in_process(b, tree, edit, original)
    _edit_py_compile(b, edit, original)
    fields = {k: report.get(k) for k in ("compiled", "reused", "relocated", "units", "seconds")}
    return {
        "module": str(edit.path),
        "size_bytes": len(original.encode()),
        "function": edit.qualname,
        "inserted_at_line": edit.line,
        "larger_modules_skipped": list(edit.skipped),
        "expected_compiled": edit.expected,
        "last_report_fields": fields,
        "last_report": report,
    }


def _edit_commands(b: Bench, tree: Path, edit: Edit, original: str) -> dict:
    """Each run, for `thinlink build` and for `compileall -j0` and `-j1` (each on its own
    copy, in an order that rotates from run to run): back to the original, built or
    compiled (untimed), then one new statement, built or compiled (timed)."""
    module, cache = tree / edit.path, b.work / "cache-edit"
    parts = edit.path.with_suffix("").parts
    name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    ca_tree = b.fresh_copy("edit-ca")
    ca_module = ca_tree / edit.path
    b.thinlink(tree, cache)
    b.compileall(ca_tree, 0)
    report: dict = {}

    def write(path: Path, text: str) -> None:
        # Each write gets a new whole second as its mtime: compileall's pyc check compares
        # the mtime alone (not the size), in seconds, so an edit within the second of the
        # previous write would go unnoticed.
        nonlocal mtime
        path.write_text(text, encoding="utf-8")
        mtime += 1
        os.utime(path, (mtime, mtime))

    mtime = int(os.stat(b.pristine).st_mtime) - 1000 * b.runs

    def thinlink(i: int) -> None:
        nonlocal report
        write(module, original)
        b.thinlink(tree, cache)
        write(module, edit.apply(original, i))
        report = b.thinlink(tree, cache, "edit")
        b.expect("edit", report, compiled=edit.expected, failed=0)
        for change in report.get("changed", []):  # the build's own time for that module
            if change.get("module") == name and "ms" in change:
                b.record("edit", TL_MODULE, change["ms"] / 1000)

    def compileall(i: int, jobs: int) -> None:
        write(ca_module, original)
        b.compileall(ca_tree, 0)
        write(ca_module, edit.apply(original, i))
        pyc = _pyc_of(ca_module)
        before = pyc.stat().st_mtime_ns if pyc.exists() else None
        b.compileall(ca_tree, jobs, "edit")
        if not pyc.exists() or pyc.stat().st_mtime_ns == before:
            b.problems.append(f"edit: compileall -j{jobs} did not recompile {edit.path}")

    steps = [thinlink, lambda i: compileall(i, 0), lambda i: compileall(i, 1)]
    for i in range(b.runs):
        shift = i % len(steps)
        for step in steps[shift:] + steps[:shift]:
            step(i)
    return report


def _pyc_of(source: Path) -> Path:
    from importlib.util import cache_from_source

    return Path(cache_from_source(str(source)))


def _edit_rebuild_in_process(b: Bench, tree: Path, edit: Edit, original: str) -> None:
    """thinlink's rebuild of the edited module from its previous version (the work a
    build does for it, storing included), repeated in this process like py_compile."""
    from thinlink.build.cache import Cache
    from thinlink.build.rebuild import compile_cold, rebuild

    path = os.path.realpath(tree / edit.path)
    old, new = original.encode(), edit.apply(original, -1).encode()
    with Cache(b.work / "cache-rebuild") as cache:
        base = compile_cold(cache, path, old).record
        done = rebuild(cache, base, old, path, new)
        if done.compiled != edit.expected:
            b.problems.append(f"in-process rebuild compiled {done.compiled}, not {edit.expected}")
        stats = time_call(lambda: rebuild(cache, base, old, path, new), repeat=max(5, 2 * b.runs))
    b.samples["edit"][TL_REBUILD] = list(stats.samples)


def _edit_py_compile(b: Bench, edit: Edit, original: str) -> None:
    """The edited module compiled whole: in-process and as the `py_compile` CLI."""
    single = b.work / "single" / edit.path.name
    single.parent.mkdir(exist_ok=True)
    single.write_text(edit.apply(original, -1), encoding="utf-8")
    pyc = str(b.work / "single.pyc")
    stats = time_call(
        lambda: py_compile.compile(str(single), cfile=pyc, doraise=True), repeat=max(5, 2 * b.runs)
    )
    b.samples["edit"][PYC_IN] = list(stats.samples)
    for _ in range(b.runs):
        cli = run([PY, "-m", "py_compile", single], env=baseline_env(), cwd=b.work / "cwd")
        b.record("edit", "python -m py_compile", cli.seconds)


def summarize(b: Bench) -> tuple[dict[str, dict[str, Stats]], list[dict]]:
    """Stats per scenario and command, and the ratios of medians against the targets."""
    stats = {
        s: {c: Stats.of(v) for c, v in b.samples[s].items()} for s in SCENARIOS if s in b.samples
    }
    comparisons = []
    for scenario, ours, theirs, target in COMPARISONS:
        if ours in stats.get(scenario, {}) and theirs in stats.get(scenario, {}):
            ratio = stats[scenario][ours].median / stats[scenario][theirs].median
            passed = None if target is None else ratio <= target
            comparisons.append(
                {
                    "scenario": scenario,
                    "ratio_of": f"{ours} / {theirs}",
                    "ratio": ratio,
                    "target": target,
                    "pass": passed,
                }
            )
    return stats, comparisons


def render(
    stats: dict, comparisons: list[dict], edit: dict, problems: list[str], loads: dict
) -> str:
    timings = [
        [s, c, f"{st.median:.4f}", f"{st.p95:.4f}", len(st.samples)]
        for s, cmds in stats.items()
        for c, st in cmds.items()
    ]
    verdicts = {None: "-", True: "PASS", False: "FAIL"}
    ratios = [
        [
            c["scenario"],
            c["ratio_of"],
            f"{c['ratio']:.3f}x",
            "-" if c["target"] is None else f"<= {c['target']:.2f}x",
            verdicts[c["pass"]],
        ]
        for c in comparisons
    ]
    parts = [
        "load average (1 min) after each step: "
        + ", ".join(f"{k.removeprefix('bench_')} {v}" for k, v in loads.items()),
        "timings (seconds; memory rows: max RSS in MiB)",
        format_table(["scenario", "command", "median", "p95", "runs"], timings),
        "\nratios (medians; thinlink / alternative, lower is better)",
        format_table(["scenario", "thinlink / alternative", "ratio", "target", "verdict"], ratios),
    ]
    if edit:
        parts += _render_edit(edit)
    parts += [f"problem: {p}" for p in sorted(set(problems))] or ["problems: none seen"]
    return "\n".join(parts) + "\n"


def _render_edit(edit: dict) -> list[str]:
    return [
        f"\nedit: {edit['module']} ({edit['size_bytes']} bytes), function {edit['function']}, "
        f"statement inserted at line {edit['inserted_at_line']}; larger modules without a "
        f"top-level function: {', '.join(edit['larger_modules_skipped']) or 'none'}",
        f"edit: JSON of the last edit build {edit['last_report_fields']}; expected "
        f"compiled={edit['expected_compiled']} (the def statement's unit, the function)",
        "edit: two targets: the whole `thinlink build` command against `compileall` of the tree "
        "after the same edit (fresh processes, <= 1.0x), and the module's rebuild against "
        "py_compile of it, both in a warm process (<= 0.2x); the other rows are context",
    ]


def save(
    name: str, b: Bench, corpus: dict, stats: dict, comparisons: list, edit: dict, text: str
) -> None:
    data = {
        **machine_info(),
        "corpus": corpus,
        **source_state(),
        "runs": b.runs,
        "loadavg_after": b.loads,
        "stats": stats,
        "edit": edit,
        "problems": sorted(set(b.problems)),
        "comparisons": comparisons,
    }
    header = (
        f"# Build benchmark\n\n{data['date']}, Python {data['python']}, {data['cores']} cores, "
        f"commit {data['commit']}, load {data['loadavg_1m']} at the end; corpus: "
        f"{corpus['files']} files, {corpus['lines']} lines ({corpus['source']}); "
        f"{b.runs} runs per measurement.\n\n"
    )
    for path in write_results(name, data, f"{header}```\n{text}```\n"):
        print(f"wrote {path}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="repeats per measurement")
    parser.add_argument("--quick", action="store_true", help="2 runs: a smoke test")
    parser.add_argument("--corpus", type=Path, default=STDLIB, help="tree to copy *.py from")
    parser.add_argument("--thinlink-path", type=Path, default=REPO_ROOT, help="on PYTHONPATH")
    parser.add_argument(
        "--scenarios", nargs="+", default=["cold", "noop", "touch", "edit"],
        choices=["cold", "noop", "touch", "edit"], help="noop and touch run together",
    )  # fmt: skip
    parser.add_argument("--wait-load", type=float, help="wait for the load below this first")
    parser.add_argument("--wait-max", type=float, default=900, help="... at most this long (s)")
    parser.add_argument("--no-write", action="store_true", help="do not write results/")
    parser.add_argument(
        "--name", default="build", help="results/NAME.{md,json} (a partial run: another name)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.wait_load is not None:
        wait_for_quiet(args.wait_load, args.wait_max)
    with tempfile.TemporaryDirectory(prefix="bench-build-") as tmp:
        runs = 2 if args.quick else args.runs
        b = Bench(Path(tmp, "corpus"), Path(tmp), runs, args.thinlink_path.resolve())
        (b.work / "cwd").mkdir()
        files, lines, size = copy_corpus(args.corpus, b.pristine)
        load = os.getloadavg()[0]
        print(f"corpus: {files} files, {lines} lines, {size / 1e6:.1f} MB from {args.corpus}")
        print(f"python: {PY} ({sys.version.split()[0]}), {os.cpu_count()} cores, {runs} runs")
        print(f"load average {load:.2f}" + (": busy, timings will be noisy" if load > 0.5 else ""))
        b.thinlink(b.fresh_copy("warmup"), b.work / "cache-warmup")  # thinlink's own pycs
        steps = {"cold": bench_cold, "noop": bench_noop_and_touch, "touch": bench_noop_and_touch}
        for step in dict.fromkeys(steps[s] for s in args.scenarios if s in steps):
            print(f"running {step.__name__} (load {os.getloadavg()[0]:.2f}) ...", flush=True)
            step(b)
            b.loads[step.__name__] = round(os.getloadavg()[0], 2)
        edit = {}
        if "edit" in args.scenarios:
            print(f"running bench_edit (load {os.getloadavg()[0]:.2f}) ...", flush=True)
            edit = bench_edit(b)
            b.loads["bench_edit"] = round(os.getloadavg()[0], 2)
    stats, comparisons = summarize(b)
    text = render(stats, comparisons, edit, b.problems, b.loads)
    print("\n" + text)
    if not args.no_write:
        corpus = {"source": str(args.corpus), "files": files, "lines": lines, "bytes": size}
        save(args.name, b, corpus, stats, comparisons, edit, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
