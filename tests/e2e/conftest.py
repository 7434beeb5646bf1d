"""End-to-end helpers: run a program with plain ``python`` and with ``thinlink run``.

Both run as real subprocesses of this interpreter, in the same directory and
environment, so whatever differs between their outputs is the tool's doing.
``thinlink`` runs two ways, as ``python -m thinlink`` and as the installed console
script (the ``thinlink`` next to this interpreter), through the `thinlink` fixture.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# The working tree first on sys.path (of python and of the tool alike, so sys.path
# compares equal), no inherited build or Python settings, no pycs in the projects.
ENV = {
    **{
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTHON", "THINLINK_", "HOTPATCH_")) and k != "NO_COLOR"
    },
    "PYTHONPATH": str(REPO),
    "PYTHONDONTWRITEBYTECODE": "1",
    "NO_COLOR": "1",
}
CONSOLE_SCRIPT = Path(sys.executable).with_name("thinlink")

Run = Callable[..., subprocess.CompletedProcess]


def default_signals() -> None:
    """`preexec_fn` for programs a test interrupts: SIGINT back to its default. A runner
    started from a shell job has it ignored, and children inherit an ignored signal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def write(root: Path, files: dict[str, str]) -> None:
    """Write ``files`` ({relative path: dedented text}) under ``root``."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def run_command(
    command: Sequence[str | os.PathLike[str]], cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def python() -> Run:
    """``python(*args, cwd=...)``: run plain ``python ARGS``."""

    def run(*args: str | os.PathLike[str], cwd: Path) -> subprocess.CompletedProcess:
        return run_command([sys.executable, *args], cwd)

    return run


@pytest.fixture(params=["python -m thinlink", "console script"])
def thinlink_prefix(request: pytest.FixtureRequest) -> list[str]:
    """The command that starts ``thinlink``: ``python -m thinlink``, or the script."""
    if request.param == "console script":
        assert CONSOLE_SCRIPT.exists(), f"{CONSOLE_SCRIPT} is not installed"
        return [str(CONSOLE_SCRIPT)]
    return [sys.executable, "-m", "thinlink"]


@pytest.fixture
def thinlink(thinlink_prefix: list[str]) -> Run:
    """``thinlink(*args, cwd=...)``: run ``thinlink ARGS`` (both ways, by parametrization)."""

    def run(*args: str | os.PathLike[str], cwd: Path) -> subprocess.CompletedProcess:
        return run_command([*thinlink_prefix, *args], cwd)

    return run


@pytest.fixture
def dev_apps():
    """`dev_apps(root, *args, **kwargs)`: start `thinlink dev ARGS` in `root` (a `DevApp`);
    every session started is closed at the end of the test."""
    from .devapp import DevApp  # devapp imports this module

    sessions: list[DevApp] = []

    def start(root: Path, *args: str, **kwargs) -> DevApp:
        session = DevApp(root, *args, **kwargs)
        sessions.append(session)
        return session

    yield start
    for session in sessions:
        session.close()
