"""Patch benchmark: build, bundle and apply a patch of 1, 10 and 100 changed functions in
a large module, against re-importing the module (`importlib.reload`) and `py_compile`.

    python benchmarks/bench_patch.py [--quick] [--runs N] [--add-lines-runs N]
                                     [--counts 1,10,100] [--via project|dev]

A generated module (`bigmod.py`: about 2,000 functions and 24k lines; realistic bodies:
loops, comprehensions, lambdas, nested functions, try/except, f-strings, classes with
methods and properties) sits in a temporary project. Two long-lived processes hold it:

- the patched app: ``thinlink run driver.py patch``, which imports `bigmod` from the
  build and applies each bundle it is given on stdin with `hotpatch.apply`;
- the reloading app: ``python driver.py reload`` (pycs written, as on a user's machine),
  which calls `importlib.reload(bigmod)` instead.

For each count N and edit kind, each run edits the same N functions (spread evenly over
the module) with a value never used before, so every build really compiles (an edit back
to an earlier version would be a cache hit). Edit kinds:
- ``same-lines``: a constant in each body changes; nothing else moves;
- ``add-lines``: also a line added to (or, every other run, removed from) each body, so
  every later function in the module moves and is relocated.
Per run, measured separately: `Project.build()` (incremental) and `Project.patch()` of the
previous build to the new one, in this process (or, with ``--via dev``, a long-lived
`Builder` and `make_patch`, as `thinlink dev` runs them); `bundle.encode` and its size;
`hotpatch.apply` in the app (its own wall clock and `report.timings`); `importlib.reload`
in the reloading app; `py_compile.compile` of the module here. After each apply and reload
the app calls every edited function, through the module and through references taken at
start-up, and checks the results against the new source run by plain `exec` here; moved
functions and methods must report their new lines, and an instance made at start-up must
still be an instance of its (live) class.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import py_compile
import subprocess
import sys
import tempfile
import time
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

PY = sys.executable
MODULE = "bigmod"
KINDS = ("same-lines", "add-lines")
ARG = 7  # every checked function is called as fn(ARG)
SOURCE: dict[str, object] = {}  # source_state() when the run started
MARK = "BENCH "  # prefix of the apps' reply lines on stdout

# --- the generated module -----------------------------------------------------------------

HEADER = '''\
"""A large generated module for bench_patch.py: {functions} functions, no side effects."""

import math
from functools import reduce

WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota")
TABLES = tuple({{k: (k * j) % 23 for k in range(13)}} for j in range(1, 8))
LIMIT = 50


def _clamp(value, low, high):
    return max(low, min(high, value))
'''

# Each body has a line "    bias = <value>" (the edit) and uses `bias` in its result.
TEMPLATES = (
    '''
def series_{i}(x, scale={a}):
    """Sum a short series derived from ``x``."""
    bias = {bias}
{extra}    total = 0
    for k in range(x % 7 + 3):
        if k % 2:
            total += k * scale
        else:
            total -= k // 2
    total += _clamp(x * {a}, -LIMIT, LIMIT)
    return total + bias
''',
    '''
def label_{i}(x, sep="-"):
    """Build a label for record ``x``."""
    bias = {bias}
{extra}    words = [WORDS[(x + k) % len(WORDS)] for k in range({b})]
    if x % 3 == 0:
        words.reverse()
    text = sep.join(w.upper() if len(w) > 4 else w for w in words)
    return f"{{text}}:{{bias}}:{{len(text)}}"
''',
    '''
def lookup_{i}(x, default=None):
    """Look ``x`` up in a table, with fallbacks."""
    bias = {bias}
{extra}    table = TABLES[{i} % len(TABLES)]
    try:
        value = table[x % {c}]
    except KeyError:
        value = default if default is not None else -1
    if isinstance(value, int) and value > 10:
        value = _clamp(value, 0, LIMIT)
    return (value, bias)
''',
    '''
def collatz_{i}(x):
    """Steps of the Collatz walk from ``x``, capped."""
    bias = {bias}
{extra}    n, steps = abs(x) + {a}, 0
    while n != 1 and steps < 60:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    ratio = math.sqrt(steps + 1) / (1 + len(str(n)))
    return round(ratio, 6) + bias
''',
    '''
def rank_{i}(x, *, reverse=False):
    """Rank a small generated list around ``x``."""
    bias = {bias}
{extra}    items = [(k * {a} + x) % 17 for k in range(8)]
    ranked = sorted(enumerate(items), key=lambda p: (p[1], -p[0]), reverse=reverse)
    top = [idx for idx, _ in ranked[:3]]
    return top + [bias, reduce(lambda u, v: u ^ v, items, 0)]
''',
    '''
def window_{i}(x, size=3):
    """Moving sums over a window of generated values."""
    bias = {bias}
{extra}    values = [((x + k) * {a}) % 11 for k in range(size + 5)]

    def spread(chunk):
        return sum(chunk) - min(chunk)

    sums = [spread(values[k : k + size]) for k in range(len(values) - size + 1)]
    return max(sums) + bias
''',
)

CLASS = '''

class Account{i}:
    """A small record type with methods and a property."""

    rate = {a}

    def __init__(self, owner, balance=0):
        self.owner = owner
        self.balance = balance

    def deposit(self, amount):
        if amount <= 0:
            raise ValueError("amount must be positive")
        self.balance += amount
        return self.balance

    def interest(self, years=1):
        value = self.balance
        for _ in range(years):
            value += value * self.rate / 100
        return round(value, 2)

    @property
    def label(self):
        return f"{{self.owner}}:{{self.balance}}"
'''


@dataclass(frozen=True)
class Layout:
    """The shape of the generated module: top-level functions with a class every `every`."""

    functions: int = 2000
    every: int = 50  # one class (4 methods) after every 50 functions: 40 classes

    def names(self) -> list[str]:
        return [self.name(i) for i in range(self.functions)]

    @staticmethod
    def name(i: int) -> str:
        return TEMPLATES[i % len(TEMPLATES)].split("(", 1)[0].split()[-1].format(i=i)

    def render(self, values: dict[int, int], extra: set[int]) -> str:
        """The module with `bias = values[i]` in function i (0 elsewhere), and one more
        line in the functions in `extra`."""
        total = self.functions + 4 * (self.functions // self.every)
        parts = [HEADER.format(functions=total)]
        for i in range(self.functions):
            template = TEMPLATES[i % len(TEMPLATES)]
            more = "    bias += 1\n" if i in extra else ""
            a, b, c = 3 + i % 11, 2 + i % 5, 7 + i % 6
            parts.append(
                "\n" + template.format(i=i, a=a, b=b, c=c, bias=values.get(i, 0), extra=more)
            )
            if (i + 1) % self.every == 0:
                parts.append(CLASS.format(i=i // self.every, a=a))
        return "".join(parts)


def targets(layout: Layout, count: int) -> list[int]:
    """`count` top-level functions spread evenly over the module (one: the middle one),
    each moved to the nearest function of the next template, so all kinds are edited."""
    kinds, found = len(TEMPLATES), set()
    for k in range(count):
        near = int((k + 0.5) * layout.functions / count)
        found.add(min(near - near % kinds + (k + 4) % kinds, layout.functions - 1))
    return sorted(found)


# --- the apps (written into the project as driver.py) -------------------------------------

DRIVER = '''\
"""bench_patch.py's app: holds bigmod and applies patches (or reloads) on request."""

import importlib
import json
import sys
import time

import bigmod

MARK = "BENCH "


def reply(obj):
    sys.stdout.write(MARK + json.dumps(obj) + "\\n")
    sys.stdout.flush()


def check(module, held, msg):
    """Call each checked function through the module and through the reference taken at
    start-up; compare with the expected reprs; read the first line of each probe."""
    bad_module, bad_held, bad_lines = [], [], []
    for name, arg, expected in msg["checks"]:
        if repr(getattr(module, name)(arg)) != expected:
            bad_module.append(name)
        if repr(held[name](arg)) != expected:
            bad_held.append(name)
    for name, line in msg["lines"]:
        obj = module
        for part in name.split("."):
            obj = getattr(obj, part)
        if obj.__code__.co_firstlineno != line:
            bad_lines.append(name)
    account = held["ACCOUNT"]
    same_class = type(account) is module.Account0 and account.deposit(1) > 0
    return {"bad_module": bad_module, "bad_held": bad_held, "bad_lines": bad_lines,
            "same_class": same_class}


def main():
    mode = sys.argv[1]
    held = {k: v for k, v in vars(bigmod).items() if callable(v)}
    held["ACCOUNT"] = bigmod.Account0("held", 10)  # an instance made before any patch
    if mode == "patch":
        import hotpatch
    reply({"ready": True, "build": hotpatch.current_build() if mode == "patch" else None,
           "python": sys.version.split()[0]})
    stdin = sys.stdin.buffer
    for line in stdin:
        msg = json.loads(line)
        data = stdin.read(msg["size"])
        start = time.perf_counter()
        if mode == "patch":
            report = hotpatch.apply(data)
            out = {"timings": report.timings, "patched": len(report.patched),
                   "patched_names": report.patched, "rerun": len(report.rerun),
                   "warnings": list(report.warnings), "needs_restart": report.needs_restart}
        else:
            importlib.reload(bigmod)
            out = {}
        out["wall_ms"] = (time.perf_counter() - start) * 1000
        out.update(check(bigmod, held, msg))
        reply(out)


main()
'''


class App:
    """One long-lived app process, fed requests on stdin, answering a line on stdout."""

    def __init__(self, cmd: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        self.hello = self.read()

    def read(self) -> dict:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode()
            if line.startswith(MARK):
                return json.loads(line[len(MARK) :])
        raise RuntimeError(f"app exited ({self.proc.wait()}) without answering")

    def request(self, msg: dict, data: bytes = b"") -> tuple[dict, float]:
        """Send one request; return the reply and the round trip in seconds."""
        assert self.proc.stdin is not None
        start = time.perf_counter()
        self.proc.stdin.write(json.dumps({**msg, "size": len(data)}).encode() + b"\n" + data)
        self.proc.stdin.flush()
        reply = self.read()
        return reply, time.perf_counter() - start

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        if self.proc.wait(timeout=30) != 0:
            raise RuntimeError(f"app exited {self.proc.returncode}")


# --- the benchmark ------------------------------------------------------------------------


@dataclass
class Bench:
    work: Path
    layout: Layout
    samples: dict[tuple[str, int, str], list[float]] = field(default_factory=dict)
    details: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return self.work / "proj"

    @property
    def source(self) -> Path:
        return self.root / f"{MODULE}.py"

    def record(self, kind: str, count: int, what: str, value: float) -> None:
        self.samples.setdefault((kind, count, what), []).append(value)

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")
        print(f"  PROBLEM {where}: {message}", flush=True)


def oracle(layout: Layout, text: str, edited: list[int]) -> tuple[list, list]:
    """The expected results (reprs) of the edited functions and a control, by plain exec,
    and the expected first lines of the edited functions, of the module's last function
    and of two methods of its last class."""
    namespace: dict = {"__name__": "oracle"}
    exec(compile(text, "oracle", "exec"), namespace)
    names = [layout.name(i) for i in edited]
    control = layout.name(0 if 0 not in edited else 1)
    checks = [[n, ARG, repr(namespace[n](ARG))] for n in [*names, control]]
    lines = {}
    for node in ast.parse(text).body:
        if isinstance(node, ast.FunctionDef):
            lines[node.name] = node.lineno
        elif isinstance(node, ast.ClassDef):
            lines.update((f"{node.name}.{m.name}", m.lineno) for m in node.body[3:5])
    probes = [layout.name(layout.functions - 1), *list(lines)[-2:]]  # the last ones move most
    return checks, [[n, lines[n]] for n in dict.fromkeys([*names, *probes])]


def write_source(b: Bench, text: str, step: int) -> None:
    """Write the module, with a new whole-second mtime each time: the reloading app's pyc
    check is by mtime and size, and two versions may have the same size."""
    b.source.write_text(text, encoding="utf-8")
    mtime = 1_700_000_000 + step
    os.utime(b.source, (mtime, mtime))


VIA = {
    "project": "Project.build() and Project.patch()",
    "dev": "one long-lived Builder and make_patch, as thinlink dev runs them",
}


class Maker:
    """The build side. ``project``: `Project.build()` and `Project.patch(old, new)`, the
    public API (each call opens and closes the cache). ``dev``: as `thinlink dev` does it,
    one long-lived `Builder` (cache reads memoised) that re-reads only the saved file, and
    `make_patch` on its cache."""

    def __init__(self, root: Path, cache_dir: Path, via: str) -> None:
        from thinlink import Project

        self.via = via
        self.project = Project(root, cache_dir=cache_dir)
        self.builder = None
        if via == "dev":
            from thinlink.build.builder import Builder

            self.builder = Builder(self.project.root, self.project.cache_dir, memo=True)

    def build(self, changed: Path):  # noqa: ANN201
        if self.builder is None:
            return self.project.build()
        return self.builder.build(changed=[str(changed)])

    def patch(self, old, new):  # noqa: ANN001, ANN201
        if self.builder is None:
            return self.project.patch(old, new)
        from thinlink.patches.make import make_patch

        return make_patch(self.builder.cache, old, new)

    def close(self) -> None:
        if self.builder is not None:
            self.builder.close()


def run_kind(
    b: Bench, kind: str, count: int, runs: int, state: dict, edited: list[int] | None = None
) -> None:
    from hotpatch.bundle import encode

    maker = state["maker"]
    edited = edited or targets(b.layout, count)
    where = f"{kind} N={count}"
    for run in range(runs):
        # The module's state carries over from run to run (and from N to N): only the
        # edited functions change, each to a value it never had before.
        state["step"] += 1
        state["values"].update((i, state["step"] * 1000 + i) for i in edited)
        if kind == "add-lines":  # a line added to each edited function, or taken out again
            state["extra"].symmetric_difference_update(edited)
        text = b.layout.render(state["values"], state["extra"])
        checks, lines = oracle(b.layout, text, edited)
        write_source(b, text, state["step"])

        start = time.perf_counter()
        result = maker.build(b.source)
        built = time.perf_counter()
        if not result.ok:
            b.problem(where, f"build failed: {[str(e) for e in result.errors]}")
            continue
        patch = maker.patch(state["manifest"], result.manifest)
        patched = time.perf_counter()
        data = encode(patch.bundle)
        encoded = time.perf_counter()
        state["manifest"] = result.manifest
        reply, round_trip = state["patch_app"].request({"checks": checks, "lines": lines}, data)
        b.record(kind, count, "build", built - start)
        b.record(kind, count, "patch", patched - built)
        b.record(kind, count, "encode", encoded - patched)
        b.record(kind, count, "build+patch+encode", encoded - start)
        b.record(kind, count, "bundle bytes", len(data))
        b.record(kind, count, "apply (app wall)", reply["wall_ms"] / 1000)
        b.record(kind, count, "apply (report total)", reply["timings"]["total"] / 1000)
        for phase in {*PHASES, *reply["timings"]} - {"total"}:  # phases the runtime reports
            b.record(kind, count, f"  apply: {phase}", reply["timings"].get(phase, 0.0) / 1000)
        b.record(kind, count, "edit to live (build..apply)", encoded - start + round_trip)
        compiled = sum(c.compiled for c in result.changes)
        relocated = sum(c.relocated for c in result.changes)
        functions = sum(len(m.functions) for m in patch.bundle.modules)
        moved = sum(len(getattr(m, "moved", ())) for m in patch.bundle.modules)
        b.record(kind, count, "units compiled", compiled)
        b.record(kind, count, "units relocated", relocated)
        b.record(kind, count, "functions in bundle (code)", functions)
        b.record(kind, count, "functions in bundle (moved)", moved)
        b.record(kind, count, "functions patched", reply["patched"])
        verify_patch(b, where, reply, edited, kind)

        reply, _ = state["reload_app"].request({"checks": checks, "lines": lines})
        b.record(kind, count, "importlib.reload", reply["wall_ms"] / 1000)
        if reply["bad_module"] or reply["bad_lines"]:
            b.problem(where, f"reload: wrong results {reply['bad_module']} {reply['bad_lines']}")
        b.record(kind, count, "reload: stale held references", len(reply["bad_held"]))
        b.record(kind, count, "reload: class identity kept", int(reply["same_class"]))

        pyc = str(b.work / "bigmod.pyc")
        t0 = time.perf_counter()
        py_compile.compile(str(b.source), cfile=pyc, doraise=True)
        b.record(kind, count, "py_compile.compile", time.perf_counter() - t0)
        b.details.append(
            {
                "kind": kind,
                "count": count,
                "run": run,
                "build": result.summary(),
                "patch_summary_patched": sum(len(m["patched"]) for m in patch.summary()["modules"]),
                "apply_timings_ms": reply.get("timings"),
            }
        )
        print(
            f"  {where} run {run}: build {1000 * (built - start):.0f} ms, patch "
            f"{1000 * (patched - built):.0f} ms, {len(data)} bytes, apply "
            f"{b.samples[(kind, count, 'apply (app wall)')][-1] * 1000:.1f} ms, reload "
            f"{reply['wall_ms']:.0f} ms",
            flush=True,
        )


def verify_patch(b: Bench, where: str, reply: dict, edited: list[int], kind: str) -> None:
    names = {b.layout.name(i) for i in edited}
    if reply.get("needs_restart"):
        b.problem(where, f"needs restart: {reply['needs_restart']}")
    if reply["bad_module"] or reply["bad_held"]:
        b.problem(
            where,
            f"old code runs after apply: via module {reply['bad_module']}, "
            f"via held references {reply['bad_held']}",
        )
    if reply["bad_lines"]:
        b.problem(where, f"wrong co_firstlineno after apply: {reply['bad_lines']}")
    if not reply["same_class"]:
        b.problem(where, "a class lost its identity (an instance made earlier is not of it)")
    if reply["warnings"] or reply["rerun"]:
        b.problem(where, f"unexpected: {reply['rerun']} re-run, warnings {reply['warnings']}")
    tops = {n.partition(":")[2].split(".")[0] for n in reply["patched_names"]}
    if kind == "same-lines" and tops != names:
        b.problem(where, f"patched {sorted(tops ^ names)[:5]} ... (expected exactly the edited)")
    if not names <= tops:
        b.problem(where, f"edited functions not patched: {sorted(names - tops)[:5]}")


def warm_up(b: Bench, state: dict) -> dict[str, float]:
    """The first patch after start-up, timed on its own: the build side analyses the
    module's statements once (then cached per segment). Edits function 1, never a target."""
    saved, b.samples = b.samples, {}
    try:
        print("running the first patch (warm-up) ...", flush=True)
        run_kind(b, "first", 1, 1, state, edited=[1])
        first = {what: v[0] for (_, _, what), v in b.samples.items()}
    finally:
        b.samples = saved
    return first


def start_apps(b: Bench) -> dict:
    """Build the project, then start the patched and the reloading app on that build."""
    from thinlink import Project

    project = Project(b.root, cache_dir=b.work / "cache")
    start = time.perf_counter()
    result = project.build()
    print(f"cold build of the project: {time.perf_counter() - start:.2f} s", flush=True)
    env = baseline_env(PYTHONPATH=str(REPO_ROOT), THINLINK_CACHE_DIR=str(b.work / "cache"))
    thinlink = [PY, "-m", "thinlink", "run", "driver.py", "patch"]
    patch_app = App(thinlink, b.root, env)
    if patch_app.hello["build"] != result.manifest.build_id:
        raise SystemExit(
            f"the app runs build {patch_app.hello['build']}, "
            f"this process built {result.manifest.build_id}"
        )
    reload_app = App([PY, "driver.py", "reload"], b.root, baseline_env())
    return {"manifest": result.manifest, "patch_app": patch_app, "reload_app": reload_app}


PHASES = ("decode", "locate", "functions", "moved", "statements")  # of report.timings
ROWS = (
    "build",
    "patch",
    "encode",
    "build+patch+encode",
    "apply (app wall)",
    "apply (report total)",
    *(f"  apply: {phase}" for phase in PHASES),
    "edit to live (build..apply)",
    "importlib.reload",
    "py_compile.compile",
)
COUNTS = (
    "bundle bytes",
    "units compiled",
    "units relocated",
    "functions in bundle (code)",
    "functions in bundle (moved)",
    "functions patched",
    "reload: stale held references",
    "reload: class identity kept",
)


def render(b: Bench) -> str:
    stats = {k: Stats.of(v) for k, v in b.samples.items()}
    keys = sorted({(k, n) for k, n, _ in stats}, key=lambda kn: (KINDS.index(kn[0]), kn[1]))
    parts = []
    for kind, count in keys:
        rows = []
        extra = sorted(w for k, n, w in stats if (k, n) == (kind, count) and w.startswith("  "))
        for what in dict.fromkeys([*ROWS, *extra]):  # a phase the runtime added: at the end
            st = stats.get((kind, count, what))
            if st is not None:
                rows.append([what, f"{st.median * 1000:.2f}", f"{st.p95 * 1000:.2f}"])
        for what in COUNTS:
            st = stats.get((kind, count, what))
            if st is not None:
                rows.append([what, f"{st.median:.0f}", f"{st.p95:.0f}"])
        live = stats[(kind, count, "edit to live (build..apply)")].median
        reload = stats[(kind, count, "importlib.reload")].median
        apply = stats[(kind, count, "apply (app wall)")].median
        made = stats[(kind, count, "build+patch+encode")].median
        compiled = stats[(kind, count, "py_compile.compile")].median
        ratios = (
            f"ratios of medians: apply / reload {apply / reload:.3f}x; edit to live / reload "
            f"{live / reload:.2f}x; build+patch+encode / py_compile {made / compiled:.2f}x"
        )
        runs = len(stats[(kind, count, "build")].samples)
        title = f"{kind}, N={count} changed functions ({runs} runs)"
        parts.append(f"{title}\n{format_table(['what', 'median', 'p95'], rows)}\n{ratios}\n")
    return "times in ms; counts as numbers\n\n" + "\n".join(parts)


def summary_table(b: Bench) -> str:
    """One line per kind and N: the headline numbers side by side."""
    stats = {k: Stats.of(v) for k, v in b.samples.items()}
    keys = sorted({(k, n) for k, n, _ in stats}, key=lambda kn: (KINDS.index(kn[0]), kn[1]))
    rows = []
    for kind, count in keys:

        def ms(what: str, kind: str = kind, count: int = count) -> str:
            st = stats[(kind, count, what)]
            return f"{st.median * 1000:.1f} / {st.p95 * 1000:.1f}"

        rows.append(
            [
                kind,
                count,
                ms("build"),
                ms("patch"),
                f"{stats[(kind, count, 'bundle bytes')].median / 1024:.1f}",
                ms("apply (app wall)"),
                ms("edit to live (build..apply)"),
                ms("importlib.reload"),
                ms("py_compile.compile"),
            ]
        )
    headers = [
        "edit",
        "N",
        "build",
        "patch",
        "KiB",
        "apply",
        "edit to live",
        "reload",
        "py_compile",
    ]
    return "ms, median / p95\n" + format_table(headers, rows) + "\n"


def first_line(first: dict[str, float]) -> str:
    names = ("build", "patch", "apply (app wall)", "importlib.reload")
    done = ", ".join(f"{n} {first[n] * 1000:.0f} ms" for n in names)
    return f"first patch after start-up (N=1, not in the rows above): {done}\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="same-lines edits per count")
    parser.add_argument(
        "--add-lines-runs",
        type=int,
        default=5,
        help="add-lines edits per count (slow: making those bundles takes tens of seconds)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 3 runs same-lines, 2 add-lines N=1"
    )
    parser.add_argument("--counts", default="1,10,100", help="changed functions per edit")
    parser.add_argument("--kinds", default=",".join(KINDS), help="edit kinds to run")
    parser.add_argument("--functions", type=int, default=Layout.functions, help="module size")
    parser.add_argument(
        "--via",
        choices=("project", "dev"),
        default="project",
        help="build side: the Project API, or a long-lived Builder as `thinlink dev` runs it",
    )
    parser.add_argument("--no-write", action="store_true", help="do not write results/")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    SOURCE.update(source_state())  # the code measured: taken before, checked after
    counts = [int(c) for c in args.counts.split(",")]
    if args.quick:
        plan = [("same-lines", n, 3) for n in counts] + [("add-lines", counts[0], 2)]
    else:
        runs = {"same-lines": args.runs, "add-lines": args.add_lines_runs}
        plan = [(k, n, runs[k]) for k in args.kinds.split(",") for n in counts]
    layout = Layout(functions=args.functions)
    sys.path.insert(0, str(REPO_ROOT))
    load = os.getloadavg()[0]
    print(f"python: {PY} ({sys.version.split()[0]}), {os.cpu_count()} cores")
    print("plan: " + ", ".join(f"{k} N={n} x{r}" for k, n, r in plan) + f"; via {args.via}")
    print(f"load average {load:.2f}" + (": busy, timings will be noisy" if load > 0.5 else ""))
    with tempfile.TemporaryDirectory(prefix="bench-patch-") as tmp:
        b = Bench(Path(tmp), layout)
        b.root.mkdir()
        (b.root / "pyproject.toml").write_text('[project]\nname = "benchapp"\n')
        (b.root / "driver.py").write_text(DRIVER)
        text = layout.render({}, set())
        write_source(b, text, 0)
        module = {
            "functions": layout.functions + 4 * (layout.functions // layout.every),
            "top_level_functions": layout.functions,
            "lines": text.count("\n"),
            "bytes": len(text.encode()),
        }
        print(f"module: {module}", flush=True)
        state = {"step": 0, "values": {}, "extra": set(), **start_apps(b)}
        state["maker"] = Maker(b.root, b.work / "cache", args.via)
        try:
            first = warm_up(b, state)
            for kind, count, runs in plan:
                print(f"running {kind} N={count} ...", flush=True)
                run_kind(b, kind, count, runs, state)
        finally:
            state["maker"].close()
            state["patch_app"].close()
            state["reload_app"].close()
    text = summary_table(b) + first_line(first) + "\n" + render(b)
    problems = sorted(set(b.problems))
    text += "".join(f"problem: {p}\n" for p in problems) or "problems: none seen\n"
    print("\n" + text)
    if not args.no_write:
        save(b, module, first, text, problems, args.via)
    return 0


def save(b: Bench, module: dict, first: dict, text: str, problems: list[str], via: str) -> None:
    stats = {f"{k}|{n}|{w}": Stats.of(v) for (k, n, w), v in b.samples.items()}
    data = {
        **machine_info(),
        **SOURCE,
        "module": module,
        "via": via,
        "stats": stats,
        "first_patch": first,
        "runs_detail": b.details,
        "problems": problems,
    }
    if source_state() != SOURCE:
        data["source_changed_during_run"] = source_state()
    header = (
        f"# Patch benchmark\n\n{data['date']}, commit {data['commit']}"
        f"{' (with uncommitted changes)' if data['uncommitted'] else ''}"
        f"{' (the code changed during the run)' if 'source_changed_during_run' in data else ''}, "
        f"Python {data['python']}, {data['cores']} cores, "
        f"load {data['loadavg_1m']} at the end; module: {module['functions']} functions, "
        f"{module['lines']} lines, {module['bytes'] / 1024:.0f} KiB; build side: {VIA[via]}.\n\n"
    )
    for path in write_results("patch", data, f"{header}```\n{text}```\n"):
        print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
