"""`thinlink.notebook.files`: which tracked files changed since a build read them."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from hotpatch.image import source_digest as fingerprint
from thinlink.notebook import files as files_module
from thinlink.notebook.files import TrackedFiles, signature


def noted(path: Path, tracked: bool = True) -> TrackedFiles:
    """A `TrackedFiles` that noted `path` as a build just read it."""
    files = TrackedFiles()
    files.note(str(path), signature(str(path)), fingerprint(path.read_bytes()))
    if tracked:
        files.track(str(path))
    return files


def test_nothing_changed_nothing_reported(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text("x = 1\n")
    assert noted(path).changed() == {}


def test_only_tracked_files_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text("x = 1\n")
    files = noted(path, tracked=False)
    path.write_text("x = 22\n")
    assert files.changed() == {}
    files.track(str(path))  # against the stat the build saw, not the one now
    assert list(files.changed()) == [str(path)]


def test_an_edit_a_rename_and_a_deletion_are_changes(tmp_path: Path) -> None:
    edited, renamed, deleted = (tmp_path / f"{n}.py" for n in ("edited", "renamed", "deleted"))
    for path in (edited, renamed, deleted):
        path.write_text("x = 1\n")
    files = TrackedFiles()
    for path in (edited, renamed, deleted):
        files.note(str(path), signature(str(path)), fingerprint(path.read_bytes()))
        files.track(str(path))
    edited.write_text("x = 2  # longer\n")
    (tmp_path / "tmp").write_text("x = 1\n")  # a save by rename: same bytes, a new inode
    os.replace(tmp_path / "tmp", renamed)
    deleted.unlink()
    changed = files.changed()
    assert set(changed) == {str(edited), str(renamed), str(deleted)}
    assert changed[str(deleted)] is None and changed[str(edited)] == signature(str(edited))


def test_a_save_within_the_same_clock_tick_is_seen_by_its_content(tmp_path: Path) -> None:
    # Two writes of the same size in one tick of the file system's clock have the same
    # stat; the noted stat is recent ("racy"), so the file is read and compared.
    path = tmp_path / "m.py"
    path.write_text("x = 1\n")
    before = os.stat(path)
    files = noted(path)
    path.write_text("x = 2\n")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # the same mtime
    assert signature(str(path))[1] == before.st_mtime_ns
    assert list(files.changed()) == [str(path)]


def test_a_racy_file_found_unchanged_long_after_its_write_is_stat_ed_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "m.py"
    path.write_text("x = 1\n")
    files = noted(path)
    assert files._racy == {str(path)}
    assert files.changed() == {}  # read, same content: still recent, so still racy
    assert files._racy == {str(path)}
    later = time.time_ns() + files_module.RACY_NS + 1
    monkeypatch.setattr(files_module.time, "time_ns", lambda: later)
    assert files.changed() == {}
    assert files._racy == set()  # from now on the stat alone tells
