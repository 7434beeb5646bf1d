"""The project the fault probes damage the cache of, and a built copy of it to restore.

Chosen so that damage shows in the program's output:
- six modules of exactly the same shape (`shape_a` ... `shape_f`), each with its own
  constant: their sources, code and records are values of the same size, so a value
  swapped for another one still passes any check that does not look at the key, and
  the program then prints another module's number;
- two modules (`big_a`, `big_b`) whose compiled code is over 1 MiB, so the cache keeps
  their values in files of their own, also of the same shape;
- a package with relative imports (`pkg`).

Every module holds a string `tag:<module>`: it is how the probes tell what a cache file
holds (a value of one module, or the code of every module: an image) without knowing
how the cache names its files (see `damage.classify`).

`Template` builds the project twice (an older state, then the current one, so there
are two manifests and two images), keeps a copy of the cache, and restores both the
sources and that cache before each probe.
"""

from __future__ import annotations

import functools
import json
import random
import shutil
import time
from pathlib import Path

from e2e.conftest import write

from .commands import (
    LiveProgram,
    Shapes,
    Step,
    Verdict,
    message_problems,
    python,
    recovers,
    thinlink,
)
from .damage import CacheFile, cache_files, leave_wal

__all__ = [
    "BIG",
    "SHAPES",
    "TAGS",
    "Template",
    "edited_files",
    "older_files",
    "project_files",
    "touched_files",
]

SHAPES = tuple(f"shape_{letter}" for letter in "abcdef")
BIG = ("big_a", "big_b")
PACKAGE = ("pkg", "pkg.core", "pkg.parts")
TAGS = tuple(f"tag:{name}".encode() for name in (*SHAPES, *BIG, *PACKAGE))
# Over 1 MiB of string constant: the module's code, and its source, are large values.
BLOB_CHARS = 1_200_000


@functools.cache
def _blob(name: str) -> str:
    return random.Random(name).randbytes(BLOB_CHARS // 2).hex()


def _shape(name: str, value: int) -> str:
    return f'''\
        """A module of the common shape."""
        TAG = "tag:{name}"
        VALUE = {value}


        def value():
            return VALUE * 3 + len(TAG)
        '''


def _big(name: str, value: int) -> str:
    return (
        f'TAG = "tag:{name}"\nBLOB = "{_blob(name)}"\nVALUE = {value}\n\n\n'
        "def value():\n    return VALUE * 1000 + len(BLOB) % 997\n"
    )


# For `thinlink dev`: prints the values each time they change, until stopped (with
# `--once`, prints them once and ends: what python prints for the same sources).
DEV_APP = """\
    import sys
    import time

    import hotpatch

    import big_a, big_b, shape_a

    print("START", flush=True)
    last = None
    while True:
        now = tuple(hotpatch.call(m.value) for m in (big_a, big_b, shape_a))
        if now != last:
            print("VALUES", *now, flush=True)
            last = now
        if sys.argv[1:] == ["--once"]:
            break
        time.sleep(0.005)
    """

# Runs the build it was started from, applies each bundle named on its stdin, and then
# prints what prog.py prints: a patch that carries the edit makes it print what python
# prints for the edited sources.
APPLIER = """\
    import sys

    import hotpatch

    import big_a, big_b, pkg
    import shape_a, shape_b, shape_c, shape_d, shape_e, shape_f

    print("READY", flush=True)
    for line in sys.stdin:
        try:
            report = hotpatch.apply(line.strip())
        except hotpatch.PatchError as exc:
            print("REFUSED", exc, flush=True)
            continue
        if report.needs_restart:
            print("NEEDS RESTART", report.needs_restart, flush=True)
            continue
        for module in (shape_a, shape_b, shape_c, shape_d, shape_e, shape_f, big_a, big_b):
            print(module.__name__, module.value())
        print("pkg", pkg.total())
        print("APPLIED", flush=True)
    """

PROGRAM = """\
    import big_a, big_b, pkg
    import shape_a, shape_b, shape_c, shape_d, shape_e, shape_f

    for module in (shape_a, shape_b, shape_c, shape_d, shape_e, shape_f, big_a, big_b):
        print(module.__name__, module.value())
    print("pkg", pkg.total())
    """


def project_files(
    shape_values: tuple[int, ...] = (1001, 1002, 1003, 1004, 1005, 1006),
    big_values: tuple[int, int] = (11, 22),
    weights: str = "3, 5, 7",
) -> dict[str, str]:
    """The project's files: {relative path: text} (the text is dedented by `write`)."""
    files = {"pyproject.toml": "", "prog.py": PROGRAM, "dev_app.py": DEV_APP}
    files["apply_patch.py"] = APPLIER
    for name, value in zip(SHAPES, shape_values, strict=True):
        files[f"{name}.py"] = _shape(name, value)
    for name, value in zip(BIG, big_values, strict=True):
        files[f"{name}.py"] = _big(name, value)
    files["pkg/__init__.py"] = 'TAG = "tag:pkg"\nfrom .core import total\n'
    files["pkg/core.py"] = (
        'TAG = "tag:pkg.core"\nfrom . import parts\n\n\n'
        "def total():\n    return sum(parts.WEIGHTS) * parts.scale()\n"
    )
    files["pkg/parts.py"] = (
        f'TAG = "tag:pkg.parts"\nWEIGHTS = [{weights}]\n\n\ndef scale():\n    return 10\n'
    )
    return files


def older_files() -> dict[str, str]:
    """The state the first of the template's two builds is made of (same shapes)."""
    return project_files(shape_values=(1901, 1902, 1903, 1004, 1005, 1006), big_values=(19, 22))


def touched_files() -> dict[str, str]:
    """The current sources with a comment added to the program: a new build (and a new
    image) that takes every other module from the cache as it is."""
    files = project_files()
    files["prog.py"] += "# touched\n"
    return files


def edited_files() -> dict[str, str]:
    """An edit touching every kind of module: what incremental builds are killed in."""
    return project_files(
        shape_values=(2001, 2002, 2003, 2004, 2005, 2006), big_values=(12, 23), weights="3, 5, 8"
    )


class Template:
    """The sample project built at `root` (its cache at `root/.thinlink`, the default),
    with a copy of that cache to restore before each probe.

    `expected` is python's run of the current sources (`expected_older`, `_edited`: of
    the older and the edited ones); `shapes` what healthy commands
    print; `build_ids` the two builds' ids; `seconds` how long healthy commands took.
    """

    def __init__(self, root: Path, pristine: Path) -> None:
        self.root = root
        self.cache = root / ".thinlink"
        self._pristine = pristine
        self.shapes = Shapes()
        self.seconds: dict[str, float] = {}
        self._files: dict[str, str] = {}
        # What each file of the restored cache is ({relative path: (role, tags)}): see
        # `damage.cache_files`, which fills it in.
        self.cache_roles: dict[str, tuple[str, frozenset[bytes]]] = {}
        self.build_ids: list[str] = []
        self.write(older_files())
        self.build_ids.append(self._build_and_run())
        self.write(project_files())
        self.build_ids.append(self._build_and_run())
        self.learn(thinlink("build", cwd=root))  # a no-op build
        self._learn_patch(pristine.with_name("scratch-cache"))
        self.expected = python("prog.py", cwd=root)
        assert self.expected.returncode == 0, self.expected.excerpt(40)
        self.write(older_files())
        self.expected_older = python("prog.py", cwd=root)
        assert self.expected_older.stdout != self.expected.stdout
        self.write(edited_files())
        self.expected_edited = python("prog.py", cwd=root)
        assert self.expected_edited.stdout != self.expected.stdout
        self.write(project_files())
        shutil.copytree(self.cache, pristine, symlinks=True)

    def _build_and_run(self) -> str:
        started = time.perf_counter()
        build = thinlink("build", "--json", cwd=self.root)
        self.seconds["build"] = time.perf_counter() - started
        self.learn(build)
        build_id = json.loads(build.stdout)["build_id"]
        self.learn(thinlink("build", cwd=self.root))  # the summary as people read it
        self.learn(thinlink("run", "prog.py", cwd=self.root))
        return build_id

    def _learn_patch(self, scratch: Path) -> None:
        """What `thinlink patch -o edit.bundle` prints for the edit the probes make, and
        for no change: learnt on a scratch cache, so the template's is left as it is."""
        self.learn(thinlink("build", "--cache-dir", scratch, cwd=self.root))
        self.write(edited_files())
        for _ in range(2):  # the edit, then nothing
            self.learn(
                thinlink("patch", "--cache-dir", scratch, "-o", "edit.bundle", cwd=self.root)
            )
        self.write(project_files())
        (self.root / "edit.bundle").unlink()
        shutil.rmtree(scratch)

    def learn(self, step: Step) -> None:
        self.shapes.learn(step)

    def write(self, files: dict[str, str]) -> None:
        """Write the files that differ from what the project holds now."""
        changed = {name: text for name, text in files.items() if self._files.get(name) != text}
        write(self.root, changed)
        self._files.update(changed)

    def restore(self, files: dict[str, str] | None = None, *, wal: bool = False) -> None:
        """The current sources (or `files`) and the cache as the template built them,
        then a build, as a user has it before the fault strikes. With `wal`, the
        database is then left with a write-ahead log (see `damage.leave_wal`)."""
        self.write(files or project_files())
        self.reset_cache()
        build = thinlink("build", cwd=self.root)
        assert build.returncode == 0 and not self.shapes.extra(build), build.excerpt(40)
        if wal:
            (database,) = self.files("database")
            assert leave_wal(database.path), "the cache's database keeps no write-ahead log"

    def files(self, role: str | None = None) -> list[CacheFile]:
        """The cache's files of `role` (every file if None), as the template built them
        (so asked before any damage); at least one must exist."""
        found = cache_files(self.cache, TAGS, self.build_ids, self.root, self.cache_roles)
        if role is None:
            return found
        chosen = [f for f in found if f.role == role]
        assert chosen, (
            f"the cache holds no {role} file; it holds: {', '.join(map(str, found))} "
            "(if the cache's layout changed, update damage.cache_files)"
        )
        return chosen

    def patch_and_run(self) -> Verdict:
        """The edit (`edited_files`) made while the current sources run, as under
        `thinlink dev`: the program started from the build (`apply_patch.py`), the files
        edited, `thinlink patch -o edit.bundle` (once more if the first failed), the
        bundle applied in the program, which must then print what python prints for the
        edited sources; then build and run (`recovers`)."""
        live = LiveProgram(self.root, "apply_patch.py")
        started = live.wait_for("READY") is not None
        self.write(edited_files())
        steps = [thinlink("patch", "-o", "edit.bundle", cwd=self.root)]
        if steps[0].returncode != 0:
            steps.append(thinlink("patch", "-o", "edit.bundle", cwd=self.root))
        problems = []
        if steps[-1].returncode != 0:
            problems.append("dead end: `thinlink patch` failed twice")
        elif started:
            printed = live.apply(self.root / "edit.bundle")
            # A patch that cannot be made from what the program runs (its source is gone
            # with the damaged cache) may say so: the program keeps its code, told why,
            # and the run after it (`recovers`) must print the edit.
            if printed.startswith("NEEDS RESTART") and "gone from the cache" in printed:
                pass
            elif printed != self.expected_edited.stdout:
                problems.append(
                    "the patch does not carry the edit: applied in the program, it prints "
                    f"{_first_lines(printed)}, python {_first_lines(self.expected_edited.stdout)}"
                )
        running = live.close()
        if not started:
            problems += message_problems(running, self.shapes)
        verdict = Verdict(problems, [running, *steps])
        return verdict.then(recovers(self.root, self.expected_edited, self.shapes), "then")

    def reset_cache(self) -> None:
        """The cache as the template built it, nothing else."""
        shutil.rmtree(self.cache, ignore_errors=True)
        shutil.copytree(self._pristine, self.cache, symlinks=True)


def _first_lines(text: str) -> str:
    return " / ".join(text.splitlines()[:2]) + " ..."
