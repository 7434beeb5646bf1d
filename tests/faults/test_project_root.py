"""`thinlink build` where no project marker is found, in the home directory or the
file-system root: refused, with a message saying how to name the project.

Issue 12, item 9. Both are tried in a jail (`jail.py`): a temporary directory made the
file-system root, with `/home/me` in it as `HOME`, so this machine's `/` is never built
and no marker in the real /tmp interferes. Without a jail, the home directory is a
temporary one (when no marker is above it) and the root case is skipped with the
reason. Either way nothing may be written there.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e.conftest import write

from .commands import THINLINK, Step, Verdict, message_problems, thinlink
from .jail import JailUnavailable, run_in_jail
from .probes import Ledger
from .sample import Template

MARKERS = ("pyproject.toml", "setup.py", "setup.cfg", ".git")
USERS_FILES = {
    "script.py": "print('a script of mine')\n",
    "notes.txt": "notes\n",
    "work/tool.py": "X = 1\n",
}


def files_under(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*")}


def refusal_problems(build: Step, template: Template, where: str) -> list[str]:
    """What is wrong with how a build in `where` (no project there) was refused."""
    problems = message_problems(build, template.shapes)
    if build.returncode == 0:
        problems.append(f"{where} was built as a project")
    elif len([line for line in build.stderr.splitlines() if line.strip()]) != 1:
        problems.append("the refusal is not one message")
    if "pyproject.toml" not in build.stderr:
        problems.append("the message does not say how to name the project (a pyproject.toml)")
    return problems


def test_a_build_in_the_home_directory_is_refused(
    template: Template, ledger: Ledger, tmp_path: Path
) -> None:
    """In a jail where it can (`/home/me`: no marker above it, whatever this machine's
    /tmp holds); else in a temporary directory with no marker above it."""
    try:
        root = tmp_path / "root"
        home = root / "home" / "me"
        write(home, USERS_FILES)
        before = files_under(home)
        env = {"HOME": "/home/me"}
        done, _ = run_in_jail(root, [*THINLINK, "build"], cwd="/home/me", env=env)
        build = Step("thinlink build (in $HOME)", done.returncode, done.stdout, done.stderr)
    except JailUnavailable:
        home = tmp_path / "home"
        write(home, USERS_FILES)
        above = [p for p in home.parents for m in MARKERS if (p / m).exists()]
        if above:
            pytest.skip(f"no jail here, and {above[0]} (above any home made here) is a project")
        before = files_under(home)
        build = thinlink("build", cwd=home, env={"HOME": str(home)})
    problems = refusal_problems(build, template, "the home directory")
    written = sorted(files_under(home) - before)
    if written:
        problems.append(f"the build wrote {len(written)} files into it, e.g. {written[0]}")
    ledger.record("`thinlink build` in $HOME, no marker", Verdict(problems, [build]))
    ledger.check()


def test_a_build_in_the_file_system_root_is_refused(
    template: Template, ledger: Ledger, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    write(root, USERS_FILES)
    before = files_under(root)
    try:
        done, made = run_in_jail(root, [*THINLINK, "build"], env={"HOME": "/home/nobody"})
    except JailUnavailable as exc:
        pytest.skip(f"cannot make a file-system root to try: {exc}")
    build = Step("thinlink build (in /)", done.returncode, done.stdout, done.stderr)
    problems = refusal_problems(build, template, "the file-system root")
    written = sorted(name for name in files_under(root) - before if Path(name).parts[0] not in made)
    if written:
        problems.append(f"the build wrote {len(written)} files into /, e.g. {written[0]}")
    ledger.record("`thinlink build` in /, no marker", Verdict(problems, [build]))
    ledger.check()
