"""`thinlink.dev.rundir`: a session's private directory, and which stale ones are removed.

Only a directory this user owns, of mode 0700, holding nothing but a session's files,
whose owner file names a process that is provably gone. Owners are real processes.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from hotpatch.lifeline import ProcessId
from thinlink.dev.rundir import RunDir

if not sys.platform.startswith("linux"):
    pytest.skip("owners' start times come from /proc", allow_module_level=True)


def dead_process() -> ProcessId:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    identity = ProcessId.of(child.pid)
    child.kill()
    child.wait()
    return identity


def session_dir(parent: Path, owner: ProcessId, *files: str) -> Path:
    """A directory as a session leaves it: owner file, socket, image link, and `files`."""
    made = RunDir.create(parent)
    (made.path / "owner").write_text(owner.encode() + "\n")
    made.socket.write_bytes(b"")
    made.image.symlink_to(parent / "nowhere.img")
    for name in files:
        (made.path / name).write_text("the user's")
    return made.path


def test_create_makes_a_private_directory_naming_its_owner(tmp_path):
    made = RunDir.create(tmp_path)
    info = os.stat(made.path)
    assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.getuid()
    assert made.path.name.startswith("thinlink-")
    assert ProcessId.parse((made.path / "owner").read_text()) == ProcessId.of()
    assert os.listdir(made.path) == ["owner"]
    made.remove()
    assert not made.path.exists()


def test_only_the_directories_of_dead_sessions_are_removed(tmp_path):
    dead = dead_process()
    me = ProcessId.of()
    stale = session_dir(tmp_path, dead)
    stale_other_boot = session_dir(tmp_path, replace(me, boot="an-earlier-boot"))
    alive = session_dir(tmp_path, me)
    other_host = session_dir(tmp_path, replace(dead, node="another-host"))
    with_user_file = session_dir(tmp_path, dead, "notes.txt")
    no_owner = session_dir(tmp_path, dead)
    (no_owner / "owner").unlink()
    bad_owner = session_dir(tmp_path, dead)
    (bad_owner / "owner").write_text("garbage\n")
    open_mode = session_dir(tmp_path, dead)
    os.chmod(open_mode, 0o755)
    not_ours = tmp_path / "other-prefix"
    not_ours.mkdir(mode=0o700)
    (not_ours / "owner").write_text(dead.encode())
    a_file = tmp_path / "thinlink-file"
    a_file.write_text(dead.encode())

    removed = RunDir.clean_stale(tmp_path)

    assert sorted(removed) == sorted([stale, stale_other_boot])
    assert not stale.exists() and not stale_other_boot.exists()
    for kept in (alive, other_host, with_user_file, no_owner, bad_owner, open_mode, not_ours):
        assert kept.is_dir(), kept
    assert (with_user_file / "notes.txt").read_text() == "the user's"
    assert a_file.is_file()


def test_remove_leaves_what_a_session_did_not_put_there(tmp_path):
    path = session_dir(tmp_path, ProcessId.of(), "notes.txt")
    RunDir(path).remove()
    assert os.listdir(path) == ["notes.txt"]
