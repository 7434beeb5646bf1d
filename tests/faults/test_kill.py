"""`kill -9` at seeded random moments of builds and runs: the next build runs right.

A cold build, a parallel cold build (`-j 2`: the large modules send it to worker
processes), an incremental build after an edit of every kind of module, and `thinlink
run` cold and after an edit, each killed at a moment drawn from how long the same
command takes unkilled. Killed either alone (as the OOM killer does: its workers are
orphaned and may still run while the next build starts) or with its whole process
group (as a terminal's kill does). Then `recovers`: build and run give python's output.
"""

from __future__ import annotations

import os
import shutil
import signal
import time

import pytest

from .commands import recovers, start, thinlink
from .probes import FULL, Ledger, seeded
from .sample import Template, edited_files, project_files

KINDS = {  # name: (incremental, the command)
    "cold build": (False, ("build",)),
    "parallel cold build": (False, ("build", "-j", "2")),
    "incremental build": (True, ("build",)),
    "cold run": (False, ("run", "prog.py")),
    "incremental run": (True, ("run", "prog.py")),
}
KILLS = 20 if FULL else 2


def prepare(template: Template, incremental: bool) -> None:
    """Incremental: the template as built, then the edit; cold: no cache at all."""
    if incremental:
        template.restore()
        template.write(edited_files())
    else:
        template.write(project_files())
        shutil.rmtree(template.cache)


def timed(template: Template, incremental: bool, command: tuple[str, ...]) -> float:
    """How long the command takes unkilled (the kills are drawn in that span)."""
    prepare(template, incremental)
    started = time.perf_counter()
    done = thinlink(*command, cwd=template.root)
    assert done.returncode == 0, done.excerpt(40)
    return time.perf_counter() - started


@pytest.mark.parametrize("kind", KINDS)
def test_kill_9(template: Template, ledger: Ledger, kind: str) -> None:
    incremental, command = KINDS[kind]
    expected = template.expected_edited if incremental else template.expected
    span = timed(template, incremental, command)
    for i in range(KILLS):
        rng = seeded("kill", kind, i)
        # The first fifth is mostly the interpreter starting: drawn past it.
        moment = rng.uniform(0.2, 1.05) * span
        whole_group = rng.random() < 0.5
        prepare(template, incremental)
        proc = start(*command, cwd=template.root)
        time.sleep(moment)
        if whole_group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.send_signal(signal.SIGKILL)
        status = proc.wait()
        verdict = recovers(template.root, expected, template.shapes)
        _kill_group(proc.pid)
        what = "its process group" if whole_group else "the process alone"
        ended = "killed" if status == -signal.SIGKILL else f"it had ended already, exit {status}"
        ledger.record(
            f"{kind} `thinlink {' '.join(command)}`: {what} sent SIGKILL at {moment:.3f} s "
            f"of {span:.3f} s ({ended})",
            verdict,
        )
    ledger.check()


def _kill_group(pgid: int) -> None:
    """Whatever is left of the killed command's session (orphaned workers), waited for."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.02)


def _group_alive(pgid: int) -> bool:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False
