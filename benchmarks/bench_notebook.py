"""Notebook benchmark: `%load_ext thinlink` vs `%autoreload 2`, side by side in one run.

What is measured (SPEC.md, "Performance targets": the time the extension adds to a cell):

- edit cases: the suite of `tests/e2e/notebook_cases.py` (function bodies with references
  held, methods with live instances, class attributes, constants and their dependants,
  decorated functions, added and removed functions, a syntax error, a raising re-run
  statement, changes that need a restart), each run under each reloader: right or wrong,
  judged by what the next cell sees and shows;
- time added to a cell with nothing changed, in a kernel that imported a project of 150
  generated modules (about 60k lines);
- time added to the cell after one function of a 24k-line module was saved (its body
  changed, the line count kept: `same`; or a line added or removed: `shift`).

Each reloader runs in a fresh process of its own: IPython's `InteractiveShell` driven
cell by cell over a pipe (`DRIVER`), beside a third with no reloader at all ("none", the
baseline). Cells are timed inside those processes (`shell.run_cell` wall clock), round
robin over the three, so drift on a busy machine hits all alike; "added" is a reloader's
median minus the baseline's. The reloader's own cell hooks (IPython's `pre_run_cell`,
`post_run_cell`, `post_execute` callbacks) are timed too, as a second view of the same.

    python benchmarks/bench_notebook.py [--cells 300] [--edits 15] [--quick] [--no-write]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
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
    write_results,
)
from bench_dev import generate_module, marker_source

PY = sys.executable
TOOLS = ("thinlink", "autoreload")
LOAD = {
    "thinlink": "%load_ext thinlink",
    "autoreload": "%load_ext autoreload\n%autoreload 2",
    "none": "pass",
}
TARGET_NOOP_MS = 2.0
TARGET_EDIT_MS = 20.0
PROJECT_MODULES = 150
MODULE_LINES = 400  # 150 x 400 = 60k lines
BIG_LINES = 24000

# Runs in each measuring process: an InteractiveShell, one JSON request per line.
DRIVER = r"""
import contextlib, io, json, os, sys, time
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

sys.path.insert(0, os.getcwd())  # as in a kernel: the notebook's directory imports
config = Config()
config.HistoryManager.enabled = False
shell = InteractiveShell.instance(config=config, colors="nocolor")
hooks = [0.0]
EVENTS = ("pre_execute", "pre_run_cell", "post_execute", "post_run_cell")

def timed(callback):
    def wrapper(*args):
        start = time.perf_counter()
        try:
            return callback(*args)
        finally:
            hooks[0] += time.perf_counter() - start
    return wrapper

def time_hooks():
    for event in EVENTS:
        callbacks = shell.events.callbacks[event]
        callbacks[:] = [timed(c) for c in callbacks]

def cell(code):
    out, err = io.StringIO(), io.StringIO()
    shell.user_ns.pop("__check", None)
    hooks[0] = 0.0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        start = time.perf_counter()
        result = shell.run_cell(code, store_history=True)
        seconds = time.perf_counter() - start
    error = result.error_in_exec or result.error_before_exec
    value = repr(shell.user_ns["__check"]) if error is None and "__check" in shell.user_ns else None
    return {
        "value": value,
        "out": out.getvalue(),
        "err": err.getvalue(),
        "error": None if error is None else f"{type(error).__name__}: {error}",
        "seconds": seconds,
        "hooks": hooks[0],
    }

for line in sys.stdin:
    request = json.loads(line)
    if request["op"] == "load":
        answer = cell(request["code"])
        time_hooks()
    else:
        answer = cell(request["code"])
    answer["modules"] = len(sys.modules)
    sys.__stdout__.write(json.dumps(answer) + "\n")
    sys.__stdout__.flush()
"""


def load_cases():  # noqa: ANN201 - the test suite's module, loaded by path
    """`tests/e2e/notebook_cases.py`: the edit cases, `run_case`, and `save` (an editor's
    save, in a later whole second than the last: autoreload reads modification times, and
    its reloads read pycs, which record them in whole seconds)."""
    path = REPO_ROOT / "tests" / "e2e" / "notebook_cases.py"
    spec = importlib.util.spec_from_file_location("notebook_cases", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["notebook_cases"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


class Shell:
    """One measuring process (a reloader, or none) working in `root`."""

    def __init__(self, tool: str, root: Path, driver: Path) -> None:
        self.tool = tool
        self.root = root
        env = baseline_env(PYTHONPATH=str(REPO_ROOT), IPYTHONDIR=str(root.parent / "ipython"))
        env = {k: v for k, v in env.items() if not k.startswith(("THINLINK_", "HOTPATCH_"))}
        self.proc = subprocess.Popen(
            [PY, str(driver)],
            cwd=root,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.load = self.request("load", LOAD[tool])

    def request(self, op: str, code: str) -> dict:
        self.proc.stdin.write(json.dumps({"op": op, "code": code}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.tool} shell died")
        return json.loads(line)

    def cell(self, code: str) -> dict:
        return self.request("cell", code)

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# --- edit cases -----------------------------------------------------------------------


def run_edit_cases(work: Path, driver: Path, cases) -> dict[str, dict[str, list[str]]]:  # noqa: ANN001
    """Per reloader, per case: the problems found (empty: right)."""
    found: dict[str, dict[str, list[str]]] = {}
    for tool in TOOLS:
        root = work / f"cases-{tool}" / "project"
        cases.write_project(root)
        shell = Shell(tool, root, driver)

        def cell(code: str, shell: Shell = shell):  # noqa: ANN202
            got = shell.cell(code)
            return cases.Cell(got["value"], got["out"], got["err"], got["error"])

        found[tool] = {case.name: cases.run_case(cell, root, case) for case in cases.CASES}
        shell.close()
        right = sum(not p for p in found[tool].values())
        print(f"  {tool}: {right}/{len(cases.CASES)} edit cases right", flush=True)
    return found


# --- time added to a cell ---------------------------------------------------------------


@dataclass
class Series:
    """Cell times (and hook times) of one reloader in one scenario, in seconds."""

    cells: list[float] = field(default_factory=list)
    hooks: list[float] = field(default_factory=list)

    def add(self, answer: dict) -> None:
        self.cells.append(answer["seconds"])
        self.hooks.append(answer["hooks"])


def write_project(root: Path) -> int:
    """150 generated modules (and one that imports them all); returns their lines."""
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'bench-notebook'\n")
    lines = 0
    names = []
    for index in range(PROJECT_MODULES):
        head, tail = generate_module(MODULE_LINES, seed=index)
        text = head + marker_source(0, "same") + tail
        name = f"mod_{index:03d}"
        (root / f"{name}.py").write_text(text)
        names.append(name)
        lines += text.count("\n")
    (root / "everything.py").write_text("".join(f"import {n}\n" for n in names))
    return lines


def write_big(root: Path) -> tuple[str, str, int]:
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'bench-notebook-big'\n")
    head, tail = generate_module(BIG_LINES, seed=7)
    text = head + marker_source(0, "same") + tail
    (root / "workload.py").write_text(text)
    return head, tail, text.count("\n")


def start_shells(work: Path, name: str, driver: Path, setup: Callable[[Path], object]):  # noqa: ANN201
    """A shell per reloader and the baseline, each in its own copy of the project, with
    the project imported after the reloader was loaded."""
    shells = {}
    loads = {}
    for tool in (*TOOLS, "none"):
        root = work / f"{name}-{tool}" / "project"
        setup(root)
        started = time.perf_counter()
        shell = Shell(tool, root, driver)
        loads[tool] = {
            "load_s": time.perf_counter() - started,
            "load_cell_s": shell.load["seconds"],
            "output": shell.load["out"] + shell.load["err"],
        }
        shells[tool] = shell
    return shells, loads


def measure_noop(work: Path, driver: Path, count: int) -> dict:
    shells, loads = start_shells(work, "noop", driver, write_project)
    try:
        imported = {}
        for tool, shell in shells.items():
            answer = shell.cell("import everything")
            assert answer["error"] is None, answer
            imported[tool] = {"import_s": answer["seconds"], "modules": answer["modules"]}
        series = {tool: Series() for tool in shells}
        for _ in range(5):  # warm-up
            for shell in shells.values():
                shell.cell("pass")
        for _ in range(count):
            for tool, shell in shells.items():
                answer = shell.cell("pass")
                if answer["out"] or answer["err"]:
                    raise RuntimeError(f"{tool} printed on a no-op cell: {answer}")
                series[tool].add(answer)
    finally:
        for shell in shells.values():
            shell.close()
    return {"series": series, "loads": loads, "imported": imported}


def measure_later_sessions(work: Path, driver: Path, count: int) -> dict:
    """Sessions started again in the no-op scenario's projects, on what the first session
    left (python's pycs, thinlink's cache), as a user restarts a kernel: the load cell,
    then `import everything`. Round robin over the reloaders, a fresh process each."""
    times: dict[str, dict[str, list[float]]] = {
        tool: {"load": [], "import": []} for tool in (*TOOLS, "none")
    }
    for _ in range(count):
        for tool, series in times.items():
            shell = Shell(tool, work / f"noop-{tool}" / "project", driver)
            try:
                answer = shell.cell("import everything")
                if answer["error"] is not None:
                    raise RuntimeError(f"{tool}: the import failed: {answer}")
            finally:
                shell.close()
            series["load"].append(shell.load["seconds"])
            series["import"].append(answer["seconds"])
    return times


def measure_edit(work: Path, driver: Path, count: int, kind: str, cases) -> dict:  # noqa: ANN001
    texts = {}

    def setup(root: Path) -> None:
        texts[root] = write_big(root)

    shells, loads = start_shells(work, f"edit-{kind}", driver, setup)
    problems = []
    try:
        for shell in shells.values():
            shell.cell("import workload")
        series = {tool: Series() for tool in shells}
        noop = {tool: Series() for tool in shells}
        for version in range(1, count + 1):
            for tool, shell in shells.items():
                head, tail, _ = texts[shell.root]
                text = head + marker_source(version, kind) + tail
                cases.save(shell.root / "workload.py", text)
                answer = shell.cell("__check = workload.marker()")
                series[tool].add(answer)
                if tool != "none" and answer["value"] != repr(version):
                    problems.append(
                        f"{tool} {kind} edit {version}: the next cell saw {answer['value']}"
                        f"\n{answer['out']}{answer['err']}"
                    )
                noop[tool].add(shell.cell("__check = workload.marker()"))
    finally:
        for shell in shells.values():
            shell.close()
    lines = next(iter(texts.values()))[2]
    return {"series": series, "noop": noop, "loads": loads, "problems": problems, "lines": lines}


# --- report ------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def added(series: dict[str, Series], tool: str) -> float:
    return Stats.of(series[tool].cells).median - Stats.of(series["none"].cells).median


def timing_rows(series: dict[str, Series]) -> list[list[object]]:
    rows = []
    for tool in (*TOOLS, "none"):
        cells, hooks = Stats.of(series[tool].cells), Stats.of(series[tool].hooks)
        rows.append(
            [
                tool,
                len(series[tool].cells),
                ms(cells.median),
                ms(cells.p95),
                ms(added(series, tool)) if tool != "none" else "-",
                ms(hooks.median),
                ms(hooks.p95),
            ]
        )
    return rows


HEADERS = ["reloader", "n", "cell p50", "cell p95", "added p50", "hooks p50", "hooks p95"]


def ratio(a: float, b: float) -> str:
    return f"{a / b:.3f}x" if b > 0 else "-"


def render(result: dict, info: dict, cases) -> str:  # noqa: ANN001
    out = ["# Notebook: `%load_ext thinlink` vs `%autoreload 2`", ""]
    out.append(
        f"{info['date']}, Python {info['python']}, IPython {info['ipython']}, "
        f"{info['cores']} cores, load average (1 min) {info['loadavg_start']} at the start, "
        f"{info['loadavg_end']} at the end. Code measured: commit {info['commit']}"
        + (f" (uncommitted: {', '.join(info['uncommitted'])})" if info["uncommitted"] else "")
        + "."
    )
    out.append("")
    out.append(
        "Each reloader runs in a fresh IPython `InteractiveShell` process of its own, beside a "
        "shell with no reloader (`none`); cells are timed inside those processes, round robin. "
        "`added` = the reloader's median cell time minus `none`'s; `hooks` = the time spent in "
        "the reloader's own cell callbacks. Times in ms."
    )
    found = result["cases"]
    out += ["", "## Edit cases (right / wrong, judged by the next cell)", "", "```"]
    rows = []
    for case in cases.CASES:
        rows.append([case.name, *("right" if not found[t][case.name] else "WRONG" for t in TOOLS)])
    totals = [f"{sum(not p for p in found[t].values())}/{len(cases.CASES)}" for t in TOOLS]
    rows.append(["total", *totals])
    out += [format_table(["case", *TOOLS], rows), "```", ""]
    out.append("What each case checks:")
    out.append("")
    out += [f"- `{c.name}`: {c.what}" for c in cases.CASES]
    wrong = [(t, n, p) for t in TOOLS for n, ps in found[t].items() for p in ps]
    if wrong:
        out += ["", "Where a reloader went wrong (the first problem of each case):", "", "```"]
        seen = set()
        for tool, name, problem in wrong:
            if (tool, name) in seen:
                continue
            seen.add((tool, name))
            first = problem.strip().splitlines()
            out.append(f"{tool}: {first[0]}")
            out += [f"    {line}" for line in first[1:6]]
        out.append("```")

    noop = result["noop"]
    n_lines = result["project_lines"]
    out += [
        "",
        f"## Nothing changed: a project of {PROJECT_MODULES} modules ({n_lines} lines) imported",
        "",
        f"`sys.modules` holds {noop['imported']['thinlink']['modules']} modules in the thinlink "
        f"shell, {noop['imported']['autoreload']['modules']} in the autoreload one (IPython's "
        "own and the project's; a real kernel with numpy or pandas holds thousands more, which "
        "`%autoreload 2` stats before every cell and thinlink does not look at).",
        "",
        "```",
        format_table(HEADERS, timing_rows(noop["series"])),
        "```",
    ]
    for kind in ("same", "shift"):
        edit = result["edit"][kind]
        out += [
            "",
            f"## One function changed in a {edit['lines']}-line module (`{kind}`), "
            "the next cell's time",
            "",
            "```",
            format_table(HEADERS, timing_rows(edit["series"])),
            "```",
            "",
            "The cell after it (nothing changed):",
            "",
            "```",
            format_table(HEADERS, timing_rows(edit["noop"])),
            "```",
        ]
        if edit["problems"]:
            out += ["", "Problems:", "", "```", *edit["problems"], "```"]

    out += ["", "## Against the targets", "", "```"]
    t_noop, a_noop = added(noop["series"], "thinlink"), added(noop["series"], "autoreload")
    same = result["edit"]["same"]["series"]
    shift = result["edit"]["shift"]["series"]
    t_same, a_same = added(same, "thinlink"), added(same, "autoreload")
    t_shift, a_shift = added(shift, "thinlink"), added(shift, "autoreload")
    right = {t: sum(not p for p in found[t].values()) for t in TOOLS}
    total = len(cases.CASES)
    target_rows = [
        [
            f"added, nothing changed, {PROJECT_MODULES} modules",
            ms(t_noop),
            ms(a_noop),
            ratio(t_noop, a_noop),
            f"< {TARGET_NOOP_MS:.0f} ms and < autoreload",
            "yes" if t_noop * 1000 < TARGET_NOOP_MS and t_noop < a_noop else "NO",
        ],
        [
            "added, one function changed, 24k lines (same)",
            ms(t_same),
            ms(a_same),
            ratio(t_same, a_same),
            f"< {TARGET_EDIT_MS:.0f} ms",
            "yes" if t_same * 1000 < TARGET_EDIT_MS else "NO",
        ],
        [
            "added, one function changed, 24k lines (shift)",
            ms(t_shift),
            ms(a_shift),
            ratio(t_shift, a_shift),
            f"< {TARGET_EDIT_MS:.0f} ms",
            "yes" if t_shift * 1000 < TARGET_EDIT_MS else "NO",
        ],
        [
            "edit cases right",
            f"{right['thinlink']}/{total}",
            f"{right['autoreload']}/{total}",
            "-",
            "all, and more than autoreload",
            "yes"
            if right["thinlink"] == total and right["thinlink"] > right["autoreload"]
            else "NO",
        ],
    ]
    out.append(
        format_table(["measure", "thinlink", "autoreload 2", "ratio", "target", "met"], target_rows)
    )
    out += ["```", ""]
    loads = noop["loads"]
    out.append(
        f"Loading, in the {PROJECT_MODULES}-module project: `%load_ext thinlink` "
        f"{ms(loads['thinlink']['load_cell_s'])} ms (a first build of the project, cold cache), "
        f"`%load_ext autoreload` + `%autoreload 2` {ms(loads['autoreload']['load_cell_s'])} ms. "
        "Importing the project (its first import: no pycs yet): "
        f"{ms(noop['imported']['thinlink']['import_s'])} ms under thinlink (the code the "
        "load cell's build compiled, from its image; pycs neither read nor written), "
        f"{ms(noop['imported']['autoreload']['import_s'])} ms under autoreload and "
        f"{ms(noop['imported']['none']['import_s'])} ms with none (pycs written)."
    )
    out += ["", *later_session_lines(result["later"])]
    return "\n".join(out) + "\n"


def later_session_lines(later: dict[str, dict[str, list[float]]]) -> list[str]:
    """The later sessions' table: what a restarted kernel pays before the project runs."""
    rows = []
    medians = {}
    for tool, series in later.items():
        both = [a + b for a, b in zip(series["load"], series["import"], strict=True)]
        stats = {k: Stats.of(v) for k, v in (*series.items(), ("both", both))}
        medians[tool] = {k: v.median for k, v in stats.items()}
        rows.append(
            [tool, len(both)]
            + [f"{ms(stats[k].median)} / {ms(stats[k].p95)}" for k in ("load", "import", "both")]
        )
    t, n, a = medians["thinlink"], medians["none"], medians["autoreload"]
    return [
        f"## A later session: a kernel restarted on the caches the first left "
        f"({PROJECT_MODULES} modules)",
        "",
        "The load cell, then `import everything` (the project's modules imported after the "
        "reloader was loaded, as notebooks do); p50 / p95 in ms, a fresh process each:",
        "",
        "```",
        format_table(["reloader", "n", "load cell", "import cell", "load + import"], rows),
        "```",
        "",
        f"Import after loading, thinlink / none (python with its pycs): "
        f"{ratio(t['import'], n['import'])}; thinlink / autoreload: "
        f"{ratio(t['import'], a['import'])}. Load and import together: "
        f"{ratio(t['both'], n['both'])} none, {ratio(t['both'], a['both'])} autoreload.",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=300, help="no-op cells per reloader")
    parser.add_argument("--edits", type=int, default=15, help="saves per edit kind")
    parser.add_argument("--sessions", type=int, default=7, help="later sessions per reloader")
    parser.add_argument("--quick", action="store_true", help="40 cells, 4 edits: smoke test")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.cells, args.edits, args.sessions = 40, 4, 2
    cases = load_cases()
    import IPython

    info = machine_info() | source_state() | {"ipython": IPython.__version__}
    info["loadavg_start"] = info.pop("loadavg_1m")
    print(f"load average (1 min): {info['loadavg_start']} ({os.cpu_count()} cores)", flush=True)
    result: dict = {}
    with tempfile.TemporaryDirectory(prefix="thinlink-bench-notebook-") as tmp:
        work = Path(tmp)
        driver = work / "driver.py"
        driver.write_text(DRIVER)
        print("edit cases ...", flush=True)
        result["cases"] = run_edit_cases(work, driver, cases)
        print(
            f"nothing changed, {PROJECT_MODULES} modules, {args.cells} cells each ...", flush=True
        )
        result["project_lines"] = write_project(work / "lines-only")
        result["noop"] = measure_noop(work, driver, args.cells)
        print(f"later sessions on the caches the first left, {args.sessions} each ...", flush=True)
        result["later"] = measure_later_sessions(work, driver, args.sessions)
        result["edit"] = {}
        for kind in ("same", "shift"):
            print(f"one function changed ({kind}), {args.edits} saves each ...", flush=True)
            result["edit"][kind] = measure_edit(work, driver, args.edits, kind, cases)
    info["loadavg_end"] = round(os.getloadavg()[0], 2)
    text = render(result, info, cases)
    print()
    print(text)
    problems = [p for kind in result["edit"].values() for p in kind["problems"]]
    if not args.no_write:
        data = {
            "machine": info,
            "settings": vars(args),
            "targets": {"noop_ms": TARGET_NOOP_MS, "edit_ms": TARGET_EDIT_MS},
            "edit_cases": result["cases"],
            "noop": _plain(result["noop"]),
            "edit": {k: _plain(v) for k, v in result["edit"].items()},
            "project_lines": result["project_lines"],
            "later_sessions_s": result["later"],
        }
        paths = write_results("notebook", data, text)
        print("wrote", *paths)
    return 1 if problems else 0


def _plain(part: dict) -> dict:
    plain = {}
    for key, value in part.items():
        if isinstance(value, dict) and value and isinstance(next(iter(value.values())), Series):
            plain[key] = {
                tool: {
                    "cell": Stats.of(s.cells),
                    "hooks": Stats.of(s.hooks),
                }
                for tool, s in value.items()
            }
        else:
            plain[key] = value
    return plain


if __name__ == "__main__":
    sys.exit(main())
