"""Helpers for the cluster tests: engines run for real, on loopback, and leave nothing.

`Namespace` is a private network namespace with only the loopback interface: Ray picks
its node address by asking the routing table which interface reaches the internet, and
turns 127.0.0.1 into that address; in a namespace where nothing but loopback exists, it
uses 127.0.0.1 (and nothing it starts can reach past it). Every command of a Ray test
runs in it through `nsenter`; `close()` kills every process in it (they are all ours:
nothing else can be in it), which is how daemons that `ray start` detached are found.

`Processes` starts background commands (a Dask scheduler and workers) and kills them,
and whatever they started, at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from .conftest import ENV
from .devapp import DevApp, descendants, wait_until

__all__ = ["Namespace", "Processes", "ask", "engine_env", "free_port"]

# Brings `lo` up (SIOCGIFFLAGS, SIOCSIFFLAGS with IFF_UP), says so, then lives as long as
# its stdin is open: the namespace lives as long as some process is in it.
_HOLDER = """
import fcntl, socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
req = struct.pack("16sH14x", b"lo", 0)
flags = struct.unpack("16sH14x", fcntl.ioctl(s, 0x8913, req))[1]
fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", flags | 1))
print("up", flush=True)
sys.stdin.read()
"""


class Namespace:
    """A private network namespace with loopback only (see the module docstring)."""

    def __init__(self) -> None:
        if not (shutil.which("unshare") and shutil.which("nsenter")):
            pytest.skip("needs unshare and nsenter (util-linux) to keep Ray on loopback")
        self.holder = subprocess.Popen(
            ["unshare", "--net", sys.executable, "-c", _HOLDER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        if self.holder.stdout.readline().strip() != "up":
            error = self.holder.stderr.read()
            self.holder.kill()
            pytest.skip(f"cannot make a private network namespace here: {error.strip()}")
        self.link = os.readlink(f"/proc/{self.holder.pid}/ns/net")
        self.temp_dirs: list[str] = []

    def temp_dir(self) -> str:
        """A fresh directory for an engine, removed at `close()` (short: Ray's socket
        paths under it must fit in a Unix socket address)."""
        path = tempfile.mkdtemp(prefix="tlray")
        self.temp_dirs.append(path)
        return path

    def command(self, argv: Sequence[str | os.PathLike[str]]) -> list[str]:
        """`argv` run inside the namespace."""
        return ["nsenter", f"--net=/proc/{self.holder.pid}/ns/net", "--", *map(str, argv)]

    def run(self, argv: Sequence[str | os.PathLike[str]], env: dict[str, str], timeout=120):  # noqa: ANN001, ANN201
        return subprocess.run(
            self.command(argv), env=env, capture_output=True, text=True, timeout=timeout
        )

    def members(self) -> list[int]:
        """Every process in the namespace but the holder."""
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != self.holder.pid:
                try:
                    if os.readlink(f"/proc/{entry}/ns/net") == self.link:
                        found.append(int(entry))
                except OSError:
                    continue
        return found

    def close(self) -> None:
        deadline = time.monotonic() + 10
        while (members := self.members()) and time.monotonic() < deadline:
            for pid in members:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.1)
        self.holder.stdin.close()
        self.holder.wait(10)
        for path in self.temp_dirs:
            shutil.rmtree(path, ignore_errors=True)


class Processes:
    """Background commands of a test, killed (with what they started) at the end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(
        self, argv: Sequence[str | os.PathLike[str]], env: dict[str, str], cwd: Path, log: Path
    ) -> subprocess.Popen:  # noqa: E501
        out = open(log, "w")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [str(a) for a in argv], env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT
        )
        out.close()
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        pids = [p for proc in self.procs for p in [proc.pid, *descendants(proc.pid)]]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for proc in self.procs:
            proc.wait(10)


def engine_env(home: Path, **extra: str) -> dict[str, str]:
    """The test environment for an engine's processes: a private HOME (Ray writes its
    token there), no usage reporting, the project's venv first on PATH."""
    return {
        **ENV,
        "HOME": str(home),
        "RAY_USAGE_STATS_ENABLED": "0",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{ENV.get('PATH', '')}",
        **extra,
    }


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ask(app: DevApp, line: str = "go", timeout: float = 60) -> dict:
    """Send `line` to the app and return its next JSON answer (lines starting with `{`)."""
    start = len(app.out.lines)
    app.proc.stdin.write(line + "\n")
    app.proc.stdin.flush()
    match = app.wait_out(r"^\{", timeout=timeout, since=start)
    return json.loads(match.string)


def wait_for_patch(app: DevApp, since: int, timeout: float = 30) -> str:
    """The next patch line after `since` lines of stderr."""
    return app.wait_err(r"\d patched ", timeout=timeout, since=since).string


__all__ += ["wait_for_patch", "wait_until"]
