"""A cache owns only what it created: a user's directory given as the cache is never
adopted, and `thinlink clean` never deletes a file it did not write.

Issue 12, item 1. The cache directory is named by `--cache-dir` or by
`THINLINK_CACHE_DIR`; it is a user's home-like directory, one shaped like a `.git`
directory (`objects/` and `refs/` in it), or the project itself. The build must refuse
it with one clear message (and write nothing there); `clean` must leave every file of
the user's in place. A cache the tool made in an empty directory, where the user then
put files of their own: `clean` removes the cache's files and leaves the user's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e.conftest import write

from .commands import Step, Verdict, message_problems, recovers, thinlink
from .probes import FULL, Ledger
from .sample import Template, project_files

USERS_FILES = {
    "home": {
        ".bashrc": "export EDITOR=vi\n",
        "Documents/letter.txt": "Dear reader,\n",
        "Documents/taxes/2024.csv": "a,b\n1,2\n",
        "notes.py": "print('mine')\n",
    },
    "a .git directory": {
        "HEAD": "ref: refs/heads/main\n",
        "objects/ab/cdef0123": "blob\n",
        "refs/heads/main": "0123456789abcdef\n",
        "config": "[core]\n",
    },
}


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under `directory`: {relative path: content}."""
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def lost(before: dict[str, bytes], directory: Path) -> list[str]:
    """The files of `before` missing or changed under `directory` now."""
    now = snapshot(directory) if directory.exists() else {}
    return [name for name, data in before.items() if now.get(name) != data]


def how(named_by: str, cache: Path) -> tuple[list[str], dict[str, str]]:
    """Command-line words and environment naming `cache` as the cache directory."""
    if named_by == "--cache-dir":
        return ["--cache-dir", str(cache)], {}
    return [], {"THINLINK_CACHE_DIR": str(cache)}


NAMINGS = ("--cache-dir", "THINLINK_CACHE_DIR")
KINDS = (*USERS_FILES, "the project itself")
# The quick run names each kind of directory one way, both ways between them.
ADOPTIONS = [
    (kind, named_by)
    for i, kind in enumerate(KINDS)
    for j, named_by in enumerate(NAMINGS)
    if FULL or i % 2 == j
]


@pytest.mark.parametrize(("kind", "named_by"), ADOPTIONS)
def test_a_users_directory_is_not_adopted_nor_cleaned(
    template: Template, ledger: Ledger, tmp_path: Path, kind: str, named_by: str
) -> None:
    root = tmp_path / "project"
    write(root, project_files())
    if kind == "the project itself":
        cache = root
    else:
        cache = tmp_path / "mine"
        write(cache, USERS_FILES[kind])
    before = snapshot(cache)
    args, env = how(named_by, cache)
    build = thinlink("build", *args, cwd=root, env=env)
    problems = message_problems(build, template.shapes)
    if build.returncode == 0:
        problems.append(f"the build adopted {kind} as its cache")
    elif len([line for line in build.stderr.splitlines() if line.strip()]) != 1:
        problems.append("the refusal is not one message")
    added = sorted(set(snapshot(cache)) - set(before))
    if added:
        problems.append(f"the build wrote {len(added)} files into it, e.g. {added[0]}")
    clean = thinlink("clean", *args, cwd=root, env=env)
    problems += message_problems(clean, template.shapes)
    gone = lost(before, cache)
    if gone:
        problems.append(f"`thinlink clean` deleted {len(gone)} of the user's files: {gone[:3]}")
    ledger.record(f"{kind} named by {named_by}", Verdict(problems, [build, clean]))
    ledger.check()


@pytest.mark.parametrize("named_by", NAMINGS if FULL else NAMINGS[:1])
def test_clean_removes_only_the_caches_own_files(
    template: Template, ledger: Ledger, tmp_path: Path, named_by: str
) -> None:
    """An empty directory becomes the cache; the user then puts files in it (beside the
    cache's and among them); `clean` leaves those, and the next build works."""
    root, cache = tmp_path / "project", tmp_path / "cache"
    write(root, project_files())
    cache.mkdir()
    args, env = how(named_by, cache)
    first = recovers(root, template.expected, template.shapes, args=args, env=env)
    assert first.held, first.report()
    inside = sorted(p for p in cache.iterdir() if p.is_dir())
    mine = {"mine.txt": "my notes\n", "backup/old.tar": "not really\n"}
    if inside:  # and one among the cache's own files
        mine[f"{inside[0].name}/mine-too.txt"] = "also mine\n"
    write(cache, mine)
    before = {name: data for name, data in snapshot(cache).items() if name in mine}
    clean = thinlink("clean", *args, cwd=root, env=env)
    problems = message_problems(clean, template.shapes)
    if clean.returncode != 0:
        problems.append("`thinlink clean` failed")
    gone = lost(before, cache)
    if gone:
        problems.append(f"`thinlink clean` deleted the user's {gone}")
    verdict = Verdict(problems, [clean]).then(
        recovers(root, template.expected, template.shapes, args=args, env=env), "then"
    )
    if not gone and lost(before, cache):
        verdict.problems.append(f"the build after `clean` deleted the user's {lost(before, cache)}")
    ledger.record(f"a cache named by {named_by}, the user's files put in it", verdict)
    ledger.check()


def test_clean_of_an_adopted_home_keeps_the_users_files(
    template: Template, ledger: Ledger, tmp_path: Path
) -> None:
    """The guard against `THINLINK_CACHE_DIR=$HOME` holds also after a build there (if
    the build went ahead): `clean` deletes none of the user's files."""
    root, home = tmp_path / "project", tmp_path / "home"
    write(root, project_files())
    write(home, USERS_FILES["home"])
    before = snapshot(home)
    env = {"THINLINK_CACHE_DIR": str(home), "HOME": str(home)}
    steps: list[Step] = [thinlink("build", cwd=root, env=env)]
    steps.append(thinlink("clean", cwd=root, env=env))
    problems = [p for step in steps for p in message_problems(step, template.shapes)]
    gone = lost(before, home)
    if gone:
        problems.append(f"`thinlink clean` deleted {len(gone)} of the user's files: {gone[:3]}")
    ledger.record("THINLINK_CACHE_DIR=$HOME, build, clean", Verdict(problems, steps))
    ledger.check()
