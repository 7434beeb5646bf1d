"""A `thinlink dev` session run as a real process, for the end-to-end tests to drive.

`DevApp` starts ``python -m thinlink dev ARGS`` in a project directory, reads its
stdout (the app's output) and stderr (the tool's messages and the app's errors) on
threads into line lists, and waits for lines matching a pattern, each wait bounded.
`close()` (always called, by the `dev` fixture or a `with`) stops the session and then
kills whatever is left of the processes it started, found through /proc, so a failed
test leaves nothing running.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from .conftest import ENV, default_signals, write

__all__ = ["DevApp", "TIMEOUT", "descendants", "edit", "polling_project", "wait_until"]

TIMEOUT = 20.0  # seconds for anything the tool should do at once; only reached when broken

# An app that prints START with its pid, then VALUE each time `work.value()` changes.
POLLING_APP = """\
import os, time
import work

print("START", os.getpid(), flush=True)
last = None
while True:
    if work.value() != last:
        last = work.value()
        print("VALUE", last, flush=True)
    time.sleep(0.01)
"""


def polling_project(root: Path) -> Path:
    """Write a project at `root` (made here): `POLLING_APP` as app.py, and work.py whose
    `value()` is "v0"."""
    write(
        root,
        {"pyproject.toml": "", "app.py": POLLING_APP, "work.py": 'def value():\n    return "v0"\n'},
    )
    return root


def wait_until(predicate, timeout: float = TIMEOUT, interval: float = 0.01, what: str = ""):  # noqa: ANN001, ANN201
    """Poll `predicate()` until it returns something true; that value. Bounded."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


def edit(path: Path, old: str, new: str, count: int = 1) -> None:
    """Replace `old` by `new` in the file (which must contain it), written in one go."""
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, count))


def descendants(pid: int) -> list[int]:
    """Every living process below `pid` (children, grandchildren...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class _Stream:
    """Lines read from one pipe, with a condition to wait on and a read cursor."""

    def __init__(self, pipe) -> None:  # noqa: ANN001
        self.lines: list[str] = []
        self.closed = False
        self.cursor = 0
        self._cond = threading.Condition()
        threading.Thread(target=self._pump, args=(pipe,), daemon=True).start()

    def _pump(self, pipe) -> None:  # noqa: ANN001
        for line in pipe:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def text(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait(self, pattern: str, timeout: float, since: int | None) -> re.Match[str] | None:
        """The first line from `since` (default: the cursor) matching `pattern`; moves
        the cursor past it. None on timeout or end of output."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        i = self.cursor if since is None else since
        with self._cond:
            while True:
                while i < len(self.lines):
                    match = regex.search(self.lines[i])
                    i += 1
                    if match:
                        self.cursor = i
                        return match
                remaining = deadline - time.monotonic()
                if self.closed or remaining <= 0:
                    return None
                self._cond.wait(remaining)


class DevApp:
    """`thinlink dev ARGS` running in `root`."""

    def __init__(
        self,
        root: Path,
        *args: str,
        env: dict[str, str] | None = None,
        stdin: int | None = subprocess.DEVNULL,
        cache_dir: Path | None = None,
        command: list[str] | None = None,
    ) -> None:
        self.root = root
        cache = cache_dir or root.parent / f"{root.name}-cache"
        self.command = command or [
            sys.executable,
            "-m",
            "thinlink",
            "dev",
            "--cache-dir",
            str(cache),
            *args,
        ]
        self.proc = subprocess.Popen(
            self.command,
            cwd=root,
            env={**ENV, **(env or {})},
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            preexec_fn=default_signals,
        )
        self.out = _Stream(self.proc.stdout)
        self.err = _Stream(self.proc.stderr)
        self._seen: set[int] = set()

    # output ---------------------------------------------------------------------------

    def wait_out(self, pattern: str, timeout: float = TIMEOUT, since: int | None = None):  # noqa: ANN201
        return self._wait(self.out, pattern, timeout, since)

    def wait_err(self, pattern: str, timeout: float = TIMEOUT, since: int | None = None):  # noqa: ANN201
        return self._wait(self.err, pattern, timeout, since)

    def _wait(self, stream: _Stream, pattern: str, timeout: float, since: int | None):  # noqa: ANN202
        match = stream.wait(pattern, timeout, since)
        if match is None:
            self._remember()
            raise AssertionError(
                f"no line matching {pattern!r} within {timeout} s "
                f"(exit status {self.proc.poll()})\n{self.transcript()}"
            )
        return match

    def transcript(self) -> str:
        return f"--- stdout ---\n{_tail(self.out.text())}\n--- stderr ---\n{_tail(self.err.text())}"

    def patches(self) -> list[str]:
        """The tool's one-line patch reports so far."""
        return [line for line in self.err.lines if re.search(r"\d patched ", line)]

    # processes --------------------------------------------------------------------------

    def _remember(self) -> None:
        if self.proc.poll() is None:
            self._seen.update(descendants(self.proc.pid))

    def signal(self, sig: int) -> None:
        self._remember()
        self.proc.send_signal(sig)

    def wait(self, timeout: float = TIMEOUT) -> int:
        """Wait for `thinlink dev` to exit; its status. Its output is read to the end."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"thinlink dev still running after {timeout} s\n{self.transcript()}"
            ) from None
        wait_until(lambda: self.out.closed and self.err.closed, 5, what="the end of output")
        return code

    def close(self) -> None:
        """Stop the session (SIGTERM, then SIGKILL) and kill every process it left."""
        self._remember()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for pid in self._seen:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def __enter__(self) -> DevApp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")
