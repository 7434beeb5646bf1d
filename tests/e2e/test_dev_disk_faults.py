"""`thinlink dev` when writing fails: the session says so in one line and goes on.

The session writes the build image after each patch (for processes that start later) and
the cache's records, on background threads. A full disk (a small tmpfs holding the
cache, filled up while the session runs) or a file vanishing under the image pruning (a
link left dangling in the image directory) must not be a traceback: one line each
time, the app keeps running and is patched, and once space is back the session writes
again and a restart runs the latest code.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .devapp import DevApp, dedent, edit, wait_until

APP = """\
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


def project(root: Path) -> Path:
    root.mkdir(parents=True)
    for name, text in {
        "pyproject.toml": "",
        "app.py": APP,
        "work.py": 'def value():\n    return "v0"\n',
    }.items():
        (root / name).write_text(dedent(text))
    return root


def save(root: Path, old: str, new: str, dev: DevApp) -> None:
    """Edit work.py; wait until the app runs the new value."""
    edit(root / "work.py", f'"{old}"', f'"{new}"')
    dev.wait_out(rf"^VALUE {new}$")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs, or a skip where mounting is not allowed."""
    where = tmp_path / "disk"
    where.mkdir()
    if not sys.platform.startswith("linux"):
        pytest.skip("mounts a tmpfs: Linux only")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not allowed here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(disk: Path) -> Path:
    """Fill `disk` to the last byte; the file that holds it."""
    filler = disk / "filler"
    block = bytes(1 << 16)
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(block)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    # Write byte by byte into the last partial block too.
    with open(filler, "ab", buffering=0) as f:
        try:
            while True:
                f.write(b"x")
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def no_traceback(dev: DevApp) -> None:
    assert "Traceback" not in dev.err.text(), dev.transcript()


def test_a_full_disk_is_one_line_per_failed_write_and_the_app_keeps_patching(
    tmp_path: Path, small_disk: Path
) -> None:
    root = project(tmp_path / "proj")
    dev = DevApp(root, "app.py", cache_dir=small_disk / "cache")
    try:
        first = int(dev.wait_out(r"^START (\d+)$").group(1))
        dev.wait_out(r"^VALUE v0$")
        filler = fill(small_disk)
        save(root, "v0", "v1", dev)  # patched, over the socket
        failed = dev.wait_err(r"could not write the session image: (.+)$").group(1)
        assert "No space left on device" in failed
        save(root, "v1", "v2", dev)
        wait_until(
            lambda: sum("could not write the session image" in line for line in dev.err.lines) == 2,
            what="a second line",
        )
        no_traceback(dev)
        # Space back: the next save writes again (no new line), and a restart starts the
        # app on the latest build.
        filler.unlink()
        lines = len(dev.err.lines)
        save(root, "v2", "v3", dev)
        dev.wait_err(r"patched value")
        dev.signal(signal.SIGHUP)
        second = int(dev.wait_out(r"^START (\d+)$").group(1))
        assert second != first
        dev.wait_out(r"^VALUE v3$")
        assert not any("could not write" in line for line in dev.err.lines[lines:])
        no_traceback(dev)
    finally:
        dev.close()


def test_a_vanished_image_under_the_pruning_is_one_line_and_the_session_goes_on(
    tmp_path: Path,
) -> None:
    # A link in the image directory whose target is gone (a killed session's): pruning
    # the images fails on it. Said in one line; patches still go out.
    root = project(tmp_path / "proj")
    cache = tmp_path / "cache"
    dev = DevApp(root, "app.py", cache_dir=cache)
    try:
        dev.wait_out(r"^VALUE v0$")
        images = cache / "images"
        for n in range(12):  # more than the images kept, so the pruning stats them all
            os.symlink(tmp_path / "gone.img", images / f"dangling-{n}.img")
        save(root, "v0", "v1", dev)
        dev.wait_err(r"could not write the session image: .*No such file or directory")
        save(root, "v1", "v2", dev)
        no_traceback(dev)
        assert dev.proc.poll() is None
    finally:
        dev.close()
