"""`thinlink dev` when writing fails: the session says so in one line and goes on.

The session writes the build image after each patch (for processes that start later) and
the cache's records, on background threads. A full disk (a small tmpfs holding the
cache, filled up while the session runs) or an image directory that cannot be written
must not be a traceback: one line each time, the app keeps running and is patched, and
once the fault is gone the session writes again and a restart runs the latest code.
"""

from __future__ import annotations

import errno
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .devapp import DevApp, edit, polling_project, wait_until


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
    root = polling_project(tmp_path / "proj")
    dev = DevApp(root, "app.py", cache_dir=small_disk / "cache")
    try:
        first = int(dev.wait_out(r"^START (\d+)$").group(1))
        dev.wait_out(r"^VALUE v0$")
        filler = fill(small_disk)
        save(root, "v0", "v1", dev)  # patched, over the socket
        failed = dev.wait_err(r"could not write the session image: (.+)$").group(1)
        # The system's words, or the cache's own message for a full disk.
        assert "No space left on device" in failed or "is full" in failed, failed
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


def test_an_image_directory_that_cannot_be_written_is_one_line_and_the_session_goes_on(
    tmp_path: Path,
) -> None:
    # The cache's image directory replaced by a file (as root, permissions would not stop
    # the write): every image write fails. Said in one line each; patches still go out;
    # with the directory back, the next save writes the image again.
    root = polling_project(tmp_path / "proj")
    cache = tmp_path / "cache"
    dev = DevApp(root, "app.py", cache_dir=cache)
    try:
        dev.wait_out(r"^VALUE v0$")
        images = cache / "images"
        images.rename(cache / "images-aside")
        images.write_text("not a directory")
        save(root, "v0", "v1", dev)
        dev.wait_err(r"could not write the session image: \[Errno \d+\] .+images")
        save(root, "v1", "v2", dev)
        wait_until(
            lambda: sum("could not write the session image" in line for line in dev.err.lines) == 2,
            what="a second line",
        )
        images.unlink()
        (cache / "images-aside").rename(images)
        lines = len(dev.err.lines)
        save(root, "v2", "v3", dev)
        dev.signal(signal.SIGHUP)  # restarted on the image of v3, written after its patch
        dev.wait_out(r"^VALUE v3$", since=len(dev.out.lines))
        assert not any("could not write" in line for line in dev.err.lines[lines:])
        no_traceback(dev)
    finally:
        dev.close()
