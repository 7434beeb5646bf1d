"""CPython's own test suites pass under ``thinlink run``, against modules from the build.

The project is code nobody here wrote: a temporary directory holding copies of a few
standard-library modules (the json package, textwrap, argparse, difflib, fractions),
each with a ``_THINLINK_MARKER = 1`` line appended (a name no test looks at), and two
small programs. Run from that directory, the copies shadow the standard library, for
``python`` as for ``thinlink run``. CPython's suites for them run three ways at once,
and must come out the same: ``python -m test``, ``thinlink run -m test``, and
``thinlink run driver.py``, which runs the same suites (as ``-m test`` does) and then
reports where the modules they used came from: the build, the copies, with the marker.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from .conftest import CONSOLE_SCRIPT, ENV, run_command, write

pytest.importorskip("test.libregrtest", reason="this Python has no test suite installed")

SUITES = ["test_json", "test_textwrap", "test_argparse", "test_difflib", "test_fractions"]
MODULES = ["json", "json.decoder", "json.encoder", "json.scanner"]
MODULES += ["textwrap", "argparse", "difflib", "fractions"]
MARKER = "\n_THINLINK_MARKER = 1\n"
TIMEOUT = 300

CHECK = """\
import importlib, sys
for name in sys.argv[1:]:
    module = importlib.import_module(name)
    print(name, type(module.__loader__).__name__, module.__file__, module._THINLINK_MARKER)
"""
DRIVER = """\
'''Run the suites named in sys.argv as `python -m test` does, then report.'''
import runpy, sys
from hotpatch._loader import BuildLoader, module_build

MODULES = {modules!r}
imported_before = [name for name in MODULES if name in sys.modules]
try:
    runpy.run_module("test", run_name="__main__", alter_sys=True)
finally:
    used = {{
        name: [
            module_build(name) is not None,
            isinstance(sys.modules[name].__spec__.loader, BuildLoader),
            sys.modules[name].__file__,
            getattr(sys.modules[name], "_THINLINK_MARKER", None),
        ]
        for name in MODULES
    }}
    print("REPORT", repr([imported_before, used]), flush=True)
"""
# The lines of regrtest's summary that say what ran and how it went.
SUMMARY = re.compile(
    r"^(== Tests result: .*|All \d+ tests OK\.|\d+ tests? .*:|Total tests: .*"
    r"|Total test files: .*|Result: .*)$",
    re.MULTILINE,
)


@pytest.fixture
def copies(tmp_path: Path) -> Path:
    """A directory holding just the standard-library copies, each with the marker."""
    root = tmp_path / "stdlib-copies"
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    shutil.copytree(stdlib / "json", root / "json", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("textwrap", "argparse", "difflib", "fractions"):
        shutil.copyfile(stdlib / f"{name}.py", root / f"{name}.py")
    for path in [*root.glob("*.py"), *root.glob("json/*.py")]:
        path.write_text(path.read_text() + MARKER)
    return root


def module_path(root: Path, name: str) -> str:
    path = root.joinpath(*name.split("."))
    return str(path / "__init__.py" if name == "json" else path.with_suffix(".py"))


def summary(result: subprocess.CompletedProcess) -> list[str]:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = SUMMARY.findall(result.stdout)
    assert "Result: SUCCESS" in lines, result.stdout[-3000:]
    return lines


def test_cpython_suites_pass_against_the_build(copies: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"  # outside the project: the directory holds just its files
    python_m_thinlink = [sys.executable, "-m", "thinlink"]
    thinlink_script = [CONSOLE_SCRIPT]
    # The programs are in the project, as a run's project is found from its script.
    write(copies, {"check.py": CHECK, "driver.py": DRIVER.format(modules=MODULES)})

    # The copies are what both import, and thinlink loads them from its build.
    expected = [f"{name} {{}} {module_path(copies, name)} 1" for name in MODULES]
    plain = run_command([sys.executable, "check.py", *MODULES], copies)
    assert plain.stdout.splitlines() == [e.format("SourceFileLoader") for e in expected]
    built = run_command(
        [*thinlink_script, "run", "--cache-dir", cache, "check.py", *MODULES], copies
    )
    assert built.stdout.splitlines() == [e.format("BuildLoader") for e in expected], built.stderr
    build = json.loads(
        run_command([*python_m_thinlink, "build", "--json", "--cache-dir", cache], copies).stdout
    )
    # The copies (json has five modules) and the two programs; compiled by the run.
    assert (build["modules"], build["compiled"], build["failed"]) == (11, 0, 0)

    # The three runs at once: each is single-threaded, and this machine has two cores.
    commands = {
        "python": [sys.executable, "-m", "test", *SUITES],
        "thinlink -m test": [
            *python_m_thinlink,
            "run",
            "--cache-dir",
            cache,
            "-m",
            "test",
            *SUITES,
        ],
        "thinlink driver": [*thinlink_script, "run", "--cache-dir", cache, "driver.py", *SUITES],
    }
    procs = {
        name: subprocess.Popen(
            [str(part) for part in command],
            cwd=copies,
            env=ENV,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for name, command in commands.items()
    }
    results = {}
    try:
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=TIMEOUT)
            results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()

    baseline = summary(results["python"])
    assert summary(results["thinlink -m test"]) == baseline
    assert summary(results["thinlink driver"]) == baseline

    # What the driver's run used: the copies, from the build, imported during the run (by
    # regrtest or the suites; test_json imports json afresh), none by the driver before.
    report = results["thinlink driver"].stdout.rpartition("REPORT ")[2]
    imported_before, used = ast.literal_eval(report)
    assert imported_before == []
    assert used == {name: [True, True, module_path(copies, name), 1] for name in MODULES}
