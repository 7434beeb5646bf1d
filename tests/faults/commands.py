"""Running `thinlink` and `python` as a user does, and judging what came out.

Every probe of this suite ends the same way: the tool is run on a damaged cache (or
after a kill, or on a full disk) and its output is compared with plain `python`'s.
`Step` is one finished command; `message_problems` says what is wrong with what a
step printed (a traceback, a message over several lines, an 8 KB line), and
`recovers` runs the build-then-run rounds that decide whether the invariant held:

- the program prints exactly what `python` prints and exits the same way, or
- the tool prints one clear message (one line, no traceback) and fails, and the next
  `build` and `run` give `python`'s output;
- never the wrong output with the program's exit status, never a traceback, never a
  dead end that only `thinlink clean` gets out of.

The lines a healthy build or run prints (its summary) are learnt from the healthy
commands of the same project (`Shapes`), so the judge counts only the lines a fault
added, whatever the tool's summary says.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from e2e.conftest import CONSOLE_SCRIPT, ENV

__all__ = [
    "MAX_LINE",
    "LiveProgram",
    "THINLINK",
    "Shapes",
    "Step",
    "message_problems",
    "python",
    "recovers",
    "run",
    "start",
    "thinlink",
]

# `thinlink` as users start it: the console script (or `python -m thinlink` when this
# interpreter has no console script installed, as in a bare checkout).
THINLINK = [str(CONSOLE_SCRIPT)] if CONSOLE_SCRIPT.exists() else [sys.executable, "-m", "thinlink"]
# The longest line a message may be: a path, a reason and a short excerpt fit in it; a
# file's content dumped into a message (8 KB of NULs) does not.
MAX_LINE = 400
TIMEOUT = 60.0  # seconds; only reached when something hangs


@dataclass(frozen=True)
class Step:
    """One finished command: what ran, its exit status and output."""

    command: str
    returncode: int
    stdout: str
    stderr: str

    def excerpt(self, lines: int = 6) -> str:
        """The command, its status and the first lines of each stream, for a report."""
        parts = [f"$ {self.command}  -> exit {self.returncode}"]
        for name, text in (("stdout", self.stdout), ("stderr", self.stderr)):
            shown = text.splitlines()
            if shown:
                head = [_clip(line) for line in shown[:lines]]
                if len(shown) == lines + 1:
                    head.append(_clip(shown[-1]))
                elif len(shown) > lines:  # and the last line: a traceback's exception
                    head += [f"... ({len(shown) - lines - 1} more lines)", _clip(shown[-1])]
                parts.append(f"  {name}: " + "\n          ".join(head))
        return "\n".join(parts)


def _clip(line: str, width: int = 160) -> str:
    return line if len(line) <= width else f"{line[:width]}... ({len(line)} characters)"


def run(
    command: Sequence[str | os.PathLike[str]],
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = TIMEOUT,
) -> Step:
    """Run `command` in `cwd` with the test environment (plus `env`) and wait for it.

    No input (a program swapped for one that reads its stdin must not wait on it). One
    still running after `timeout` (a program swapped for one that loops) is killed with
    its process group, and its step says so.
    """
    words = [str(word) for word in command]
    proc = subprocess.Popen(
        words,
        cwd=cwd,
        env={**ENV, **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="backslashreplace",
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        stderr += f"\n[still running after {timeout:.0f} s: killed]\n"
    return Step(_display(words), proc.returncode, stdout, stderr)


def thinlink(*args: str | os.PathLike[str], cwd: Path, env: dict[str, str] | None = None) -> Step:
    """`thinlink ARGS` in `cwd`."""
    return run([*THINLINK, *args], cwd, env)


def python(*args: str | os.PathLike[str], cwd: Path) -> Step:
    """Plain `python ARGS` in `cwd` (this interpreter)."""
    return run([sys.executable, *args], cwd)


def start(
    *args: str | os.PathLike[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """`thinlink ARGS` started in a session of its own (so its workers can be killed
    together), output discarded: for the kill probes."""
    return subprocess.Popen(
        [*THINLINK, *(str(a) for a in args)],
        cwd=cwd,
        env={**ENV, **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


class LiveProgram:
    """`thinlink run SCRIPT` kept running, fed lines on its stdin and read line by line
    (for a program that applies the bundles it is given: `sample.APPLIER`)."""

    def __init__(self, root: Path, script: str) -> None:
        self.command = f"thinlink run {script}"
        self.proc = subprocess.Popen(
            [*THINLINK, "run", script],
            cwd=root,
            env=ENV,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="backslashreplace",
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=self._drain, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.stdout.append(line)
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _drain(self) -> None:
        self.stderr.extend(self.proc.stderr)  # type: ignore[arg-type]

    def wait_for(self, wanted: str, timeout: float = 60) -> list[str] | None:
        """The lines before the first line `wanted`; None if the program ended first."""
        before = []
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                return None
            if line is None:
                return None
            if line == wanted:
                return before
            before.append(line)

    def apply(self, bundle: Path) -> str:
        """Have the program apply `bundle`; what it printed then (its refusal, or its
        values)."""
        try:
            self.proc.stdin.write(f"{bundle}\n")  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
        except OSError:
            return ""
        printed = []
        while True:
            try:
                line = self.lines.get(timeout=60)
            except queue.Empty:
                return "".join(printed)
            if line is None or line == "APPLIED":
                return "".join(printed)
            printed.append(line + "\n")
            if line.startswith(("REFUSED", "NEEDS RESTART")):
                return "".join(printed)

    def close(self) -> Step:
        """End the program; what it did, as a `Step`."""
        if self.proc.poll() is None:
            self.proc.stdin.close()  # type: ignore[union-attr]
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return Step(self.command, self.proc.returncode, "".join(self.stdout), "".join(self.stderr))


def _display(words: list[str]) -> str:
    if words[: len(THINLINK)] == THINLINK:
        words = ["thinlink", *words[len(THINLINK) :]]
    elif words and words[0] == sys.executable:
        words = ["python", *words[1:]]
    return " ".join(words)


# judging output ---------------------------------------------------------------------


def _shape(line: str) -> str:
    """A line with its ids and numbers blanked: what healthy output looks like."""
    line = re.sub(r"\b[0-9a-f]{8,}\b", "<id>", line.strip())
    return re.sub(r"\d+(\.\d+)?", "<n>", line)


@dataclass
class Shapes:
    """The shapes of the lines healthy commands print on stderr (their summaries)."""

    known: set[str] = field(default_factory=set)

    def learn(self, step: Step) -> None:
        """Remember what a healthy `step` printed (it must have succeeded)."""
        assert step.returncode == 0, f"a healthy command failed:\n{step.excerpt(40)}"
        assert "Traceback" not in step.stderr, step.excerpt(40)
        self.known.update(_shape(line) for line in step.stderr.splitlines() if line.strip())

    def extra(self, step: Step) -> list[str]:
        """The stderr lines of `step` that a healthy command does not print."""
        return [
            line
            for line in step.stderr.splitlines()
            if line.strip() and _shape(line) not in self.known
        ]


def message_problems(step: Step, shapes: Shapes, most: int = 1) -> list[str]:
    """What is wrong with what `step` printed: a traceback, more than `most` message
    lines, a line too long to be a message. [] when it is fine."""
    problems = []
    if "[still running after" in step.stderr:
        problems.append(f"`{step.command}` never ended")
    if "Traceback (most recent call last)" in step.stderr + step.stdout:
        problems.append(f"traceback from `{step.command}`")
    extra = shapes.extra(step)
    if len(extra) > most:
        problems.append(
            f"`{step.command}` printed {len(extra)} message lines (at most {most} expected)"
        )
    for line in (step.stderr + step.stdout).splitlines():
        if len(line) > MAX_LINE:
            problems.append(
                f"`{step.command}` printed a line of {len(line)} characters "
                f"(at most {MAX_LINE}): {_clip(line, 120)}"
            )
            break
    return problems


@dataclass
class Verdict:
    """What `recovers` found: the problems (none when the invariant held) and the
    commands it ran, for the report."""

    problems: list[str]
    steps: list[Step]

    @property
    def held(self) -> bool:
        return not self.problems

    def then(self, later: Verdict, label: str) -> Verdict:
        """This verdict followed by `later` (a check made after it, called `label`)."""
        problems = self.problems + [f"{label}: {p}" for p in later.problems]
        return Verdict(problems, self.steps + later.steps)

    def report(self) -> str:
        return "\n".join(["; ".join(self.problems), *(step.excerpt() for step in self.steps)])


def recovers(
    root: Path,
    expected: Step,
    shapes: Shapes,
    *,
    args: Iterable[str] = (),
    env: dict[str, str] | None = None,
    program: Sequence[str] = ("prog.py",),
    steps: list[Step] | None = None,
) -> Verdict:
    """Run `thinlink build` then `thinlink run PROGRAM` in `root` (with `args` after the
    command, e.g. `--cache-dir DIR`) and judge them against `expected` (python's run).

    One failing round is allowed if it only printed a clear message; the second must
    give python's output. `steps`, if given, are earlier commands of the probe whose
    output is judged too (and shown in the report).
    """
    args = list(args)
    done: list[Step] = list(steps or [])
    problems = [p for step in done for p in message_problems(step, shapes)]
    for _attempt in (1, 2):
        build = thinlink("build", *args, cwd=root, env=env)
        ran = thinlink("run", *args, *program, cwd=root, env=env)
        done += [build, ran]
        problems += message_problems(build, shapes) + message_problems(ran, shapes)
        if ran.returncode == expected.returncode and ran.stdout == expected.stdout:
            return Verdict(problems, done)
        if ran.returncode == expected.returncode or not expected.stdout.startswith(ran.stdout):
            problems.insert(
                0,
                f"WRONG PROGRAM OUTPUT (exit {ran.returncode}; python exits "
                f"{expected.returncode}): {_first_difference(expected.stdout, ran.stdout)}",
            )
            return Verdict(problems, done)
        if problems:
            return Verdict(problems, done)
    problems.append("dead end: build and run still fail after a second build")
    return Verdict(problems, done)


def _first_difference(expected: str, got: str) -> str:
    want, have = expected.splitlines(), got.splitlines()
    for i, (a, b) in enumerate(zip(want, have, strict=False)):
        if a != b:
            return f"line {i + 1} is {_clip(b, 80)!r}, python prints {_clip(a, 80)!r}"
    return f"{len(have)} lines, python prints {len(want)}"
