"""Call benchmark: per-call cost of `hotpatch.call(f)` and `@hotpatch.hot` against `f()`.

Each mode runs in a fresh subprocess (a mode is fixed when `hotpatch` is imported):

- ``disabled``: plain ``python``, no ``HOTPATCH_ENABLED``: production (``call`` is
  ``operator.call`` itself, ``@hot`` returns the function);
- ``env``: ``HOTPATCH_ENABLED=1`` in the environment (``@hot`` wraps; ``call`` is the
  Python jump-table function from import on);
- ``enable()``: ``HOTPATCH_ENABLED=1`` and ``hotpatch.enable()``, which is what
  ``thinlink run`` / ``thinlink dev`` do before the program starts (as ``env``, and the
  first call on the main thread has ended the safe-point probe).

    python benchmarks/bench_call.py [--quick] [--repeat N] [--python PATH ...]

Cases: a trivial ``f()`` (returns None), ``g(a, b)`` with two positional arguments and
with a keyword argument, each called directly, through ``call`` and through a ``@hot``
wrapper; and two references for ``f()``: ``operator.call(f)``, the floor of any C
``call(fn)`` (the standard library has nothing cheaper), and ``py floor(f)``, the floor of
any Python ``def call(fn, /, *args, **kwargs)`` (no check at all; a Python ``call`` is what
keeps calls in progress visible to the safe points). Timing is timeit's: the statement
inlined in a loop of ``number`` iterations, garbage collection off, the names local.
Repeats of all cases are interleaved (case order rotating) so that drift on a busy machine
hits them alike; the loop's own cost is measured the same way (a ``pass`` statement) and
subtracted for the "net" columns. The verdict is on the ``ratio`` column (medians with the
loop, as SPEC.md's target is stated); ``net ratio`` is the stricter view.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import timeit
from pathlib import Path

from _common import REPO_ROOT, Stats, format_table, machine_info, source_state, write_results

MODES = ("disabled", "env", "enable()")
# (group, case, statement); the first case of each group is the direct call.
CASES = (
    ("f()", "direct", "f()"),
    ("f()", "call", "call(f)"),
    ("f()", "@hot", "hf()"),
    ("f()", "operator.call", "opcall(f)"),  # reference: the C floor of any `call(fn)`
    ("f()", "py floor", "pyfloor(f)"),  # reference: the floor of a Python `call(fn)`
    ("g(1, 2)", "direct", "g(1, 2)"),
    ("g(1, 2)", "call", "call(g, 1, 2)"),
    ("g(1, 2)", "@hot", "hg(1, 2)"),
    ("g(1, b=2)", "direct", "g(1, b=2)"),
    ("g(1, b=2)", "call", "call(g, 1, b=2)"),
    ("g(1, b=2)", "@hot", "hg(1, b=2)"),
)
LOOP = "loop"  # the empty loop: `pass`
# Locals, as timeit's setup makes them.
SETUP = "f = F; g = G; hf = HF; hg = HG; call = CALL; opcall = OPCALL; pyfloor = PYFLOOR"
# (mode, group, case, target ratio of medians); SPEC.md: call(f) <= 2x, @hot off 1.0x.
SOURCE: dict[str, object] = {}  # source_state() when the run started
TARGETS = {("*", "f()", "call"): 2.0, ("disabled", "f()", "@hot"): 1.0}


# --- the child: one mode, one interpreter ------------------------------------------------


def child(mode: str, repeat: int, target_ms: float) -> None:
    """Time every case in this process and print one JSON object on stdout."""
    if mode != "disabled":
        assert os.environ.get("HOTPATCH_ENABLED") == "1", "the parent sets the environment"
    import operator

    import hotpatch

    if mode == "enable()":
        hotpatch.enable()

    def f():
        return None

    def g(a, b):
        return a

    def pyfloor(fn, /, *args, **kwargs):
        if kwargs:
            return fn(*args, **kwargs)
        return fn(*args)

    ns = {"F": f, "G": g, "HF": hotpatch.hot(f), "HG": hotpatch.hot(g), "CALL": hotpatch.call}
    ns |= {"OPCALL": operator.call, "PYFLOOR": pyfloor}
    hotpatch.call(f)  # after enable(): the first call on the main thread ends the probe
    call = hotpatch.call
    state = {
        "enabled": hotpatch.enabled(),
        "hot_is_identity": ns["HF"] is f,
        "call_target": "operator.call"
        if call is operator.call
        else f"{call.__module__}.{call.__qualname__}",
    }
    statements = {(g_, c): s for g_, c, s in CASES} | {(LOOP, LOOP): "pass"}
    timers = {key: timeit.Timer(s, SETUP, globals=ns) for key, s in statements.items()}
    # One loop count for every case: the direct f() call takes about `target_ms` per repeat.
    number, _ = timers[("f()", "direct")].autorange()
    once = timers[("f()", "direct")].timeit(number)
    number = max(1000, int(number * (target_ms / 1000) / max(once, 1e-9)))
    keys = list(timers)
    samples: dict[str, list[float]] = {f"{g_}|{c}": [] for g_, c in keys}
    for i in range(repeat):
        shift = i % len(keys)
        for group, case in keys[shift:] + keys[:shift]:
            seconds = timers[(group, case)].timeit(number)
            samples[f"{group}|{case}"].append(seconds / number * 1e9)
    out = {
        "mode": mode,
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "number": number,
        "repeat": repeat,
        "state": state,
        "samples_ns": samples,
    }
    print(json.dumps(out))


# --- the parent --------------------------------------------------------------------------


def run_child(python: str, mode: str, repeat: int, target_ms: float, cwd: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "HOTPATCH_ENABLED"}
    env["PYTHONPATH"] = str(REPO_ROOT)
    if mode != "disabled":
        env["HOTPATCH_ENABLED"] = "1"
    cmd = [python, __file__, "--child", mode, "--repeat", str(repeat)]
    cmd += ["--target-ms", str(target_ms)]
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarize(result: dict) -> list[dict]:
    """Rows of one mode: stats of ns per call, net of the loop, and ratios to direct."""
    samples = result["samples_ns"]
    loop = Stats.of(samples[f"{LOOP}|{LOOP}"])
    rows = []
    for group, case, _ in CASES:
        raw = Stats.of(samples[f"{group}|{case}"])
        direct = Stats.of(samples[f"{group}|direct"])
        net, direct_net = raw.median - loop.median, direct.median - loop.median
        # Per repeat, the net ratio against the direct call of the same repeat (interleaved).
        paired = [
            (s - lp) / (d - lp)
            for s, d, lp in zip(
                samples[f"{group}|{case}"],
                samples[f"{group}|direct"],
                samples[f"{LOOP}|{LOOP}"],
                strict=True,
            )
            if d - lp > 0
        ]
        target = TARGETS.get((result["mode"], group, case), TARGETS.get(("*", group, case)))
        ratio_net = net / direct_net
        verdict = None
        if case == "@hot" and target is not None:
            # `hot` hands back `f` itself, so `hf()` is `f()` by construction: the verdict
            # is that identity, and the measured ratio is the noise of two equal statements.
            verdict = result["state"]["hot_is_identity"]
        elif target is not None:
            verdict = raw.median / direct.median <= target
        rows.append(
            {
                "mode": result["mode"],
                "group": group,
                "case": case,
                "ns": raw,
                "net_ns": net,
                "ratio_raw": raw.median / direct.median,
                "ratio_net": ratio_net,
                "ratio_net_paired": Stats.of(paired) if paired else None,
                "target": target,
                "pass": verdict,
            }
        )
    rows.append({"mode": result["mode"], "group": LOOP, "case": LOOP, "ns": loop, "net_ns": 0.0})
    return rows


def render(python: dict, rows: list[dict]) -> str:
    verdicts = {None: "-", True: "PASS", False: "FAIL"}
    table = []
    for r in rows:
        if r["case"] == LOOP:
            ns = r["ns"]
            table.append([r["mode"], "(empty loop)", "", f"{ns.median:.1f}", f"{ns.p95:.1f}"])
            table[-1] += [""] * 6
            continue
        paired = r["ratio_net_paired"]
        table.append(
            [
                r["mode"],
                r["group"],
                r["case"],
                f"{r['ns'].median:.1f}",
                f"{r['ns'].p95:.1f}",
                f"{r['net_ns']:.1f}",
                f"{r['ratio_raw']:.2f}x",
                f"{r['ratio_net']:.2f}x",
                f"{paired.p95:.2f}x" if paired else "-",
                "-" if r["target"] is None else f"<= {r['target']:.1f}x",
                verdicts[r["pass"]],
            ]
        )
    headers = [
        "mode",
        "call",
        "via",
        "ns median",
        "ns p95",
        "net ns",
        "ratio",
        "net ratio",
        "net p95",
        "target",
        "verdict",
    ]
    states = "; ".join(
        f"{m}: enabled={s['enabled']}, hot(f) is f={s['hot_is_identity']}, "
        f"call -> {s['call_target']}"
        for m, s in python["states"].items()
    )
    return (
        f"Python {python['python']} ({python['executable']}), loop of {python['number']} "
        f"calls x {python['repeat']} repeats per case\n{format_table(headers, table)}\n"
        f"modes: {states}\n"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200, help="timed loops per case")
    parser.add_argument("--target-ms", type=float, default=5.0, help="ms per loop of f()")
    parser.add_argument("--quick", action="store_true", help="30 repeats of 2 ms: a smoke test")
    parser.add_argument(
        "--python",
        action="append",
        help="interpreter to measure (repeatable; default: this one)",
    )
    parser.add_argument("--no-write", action="store_true", help="do not write results/")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    repeat, target_ms = (30, 2.0) if args.quick else (args.repeat, args.target_ms)
    if args.child:
        child(args.child, repeat, target_ms)
        return 0
    SOURCE.update(source_state())  # the code measured: taken before, checked after
    # Absolute, not resolved: a venv's python is a symlink that must stay one.
    pythons = [os.path.abspath(shutil.which(p) or p) for p in args.python or [sys.executable]]
    load = os.getloadavg()[0]
    print(f"load average {load:.2f}" + (": busy, timings will be noisy" if load > 0.5 else ""))
    results, texts = [], []
    with tempfile.TemporaryDirectory(prefix="bench-call-") as cwd:
        for python in pythons:
            python_rows: list[dict] = []
            info: dict = {"states": {}}
            for mode in MODES:
                print(f"running {python} {mode} ...", flush=True)
                result = run_child(python, mode, repeat, target_ms, Path(cwd))
                info.update({k: result[k] for k in ("python", "executable", "number", "repeat")})
                info["states"][mode] = result["state"]
                python_rows += summarize(result)
            text = render(info, python_rows)
            print("\n" + text)
            results.append({**info, "rows": python_rows})
            texts.append(text)
    if not args.no_write:
        save(results, texts, repeat, target_ms)
    return 0


def save(results: list[dict], texts: list[str], repeat: int, target_ms: float) -> None:
    data = {**machine_info(), **SOURCE, "repeat": repeat, "target_ms": target_ms}
    data["results"] = results
    if source_state() != SOURCE:
        data["source_changed_during_run"] = source_state()
    versions = ", ".join(r["python"] for r in results)
    dirty = " (with uncommitted changes)" if data["uncommitted"] else ""
    if "source_changed_during_run" in data:
        dirty += " (the code changed during the run)"
    header = (
        f"# Call benchmark\n\n{data['date']}, commit {data['commit']}{dirty}, Python "
        f"{versions}, {data['cores']} cores, load {data['loadavg_1m']} at the end; ns per call "
        "(timeit loops, GC off), "
        f'{repeat} repeats per case, interleaved. "net" subtracts the empty loop; ratios '
        'are of medians against the direct call of the same row group; "net p95" is the '
        'p95 of the per-repeat net ratios; the verdict is on "ratio" (with the loop, as '
        "SPEC.md states the target).\n\n"
    )
    body = "".join(f"```\n{t}```\n\n" for t in texts)
    for path in write_results("call", data, header + body):
        print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
