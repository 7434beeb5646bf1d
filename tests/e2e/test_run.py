"""``thinlink run``, end to end: a program runs as under plain ``python``.

Each test runs the same program with ``python`` and with ``thinlink run`` (both as
``python -m thinlink`` and as the console script) in real subprocesses, and compares
what they print and how they exit. The one intended difference: the project's own
modules are loaded by a ``BuildLoader`` (a ``SourceFileLoader`` subclass) from the build.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ENV, Run, default_signals, run_command, write

PROBE = """
import importlib.resources, inspect, json, linecache, sys, traceback
from importlib.machinery import SourceFileLoader

def _module(name):
    m = sys.modules[name]
    spec, loader = m.__spec__, m.__loader__
    return {
        "file": getattr(m, "__file__", None),
        "cached": getattr(m, "__cached__", None),
        "path": list(m.__path__) if hasattr(m, "__path__") else None,
        "package": m.__package__,
        "doc": m.__doc__,
        "spec": None if spec is None else [
            spec.name, spec.origin, spec.cached, spec.has_location, spec.parent,
            None if spec.submodule_search_locations is None
            else list(spec.submodule_search_locations),
            spec.loader is loader,
        ],
        "loader": [getattr(loader, "name", None), getattr(loader, "path", None),
                   isinstance(loader, SourceFileLoader)],
        "loader_type": type(loader).__name__,
    }

def report(main_keys, start):
    import app_ns.part, app_pkg, app_pkg.sub.leaf, click
    from hotpatch._loader import module_build
    try:
        app_pkg.helper.fail()
    except ValueError as exc:
        tb = traceback.format_exception(exc)
    names = ["__main__", "app_pkg", "app_pkg.sub", "app_pkg.sub.leaf", "app_pkg.helper",
             "app_ns", "app_ns.part", "probe", "click", "json"]
    print(json.dumps({
        "argv": sys.argv,
        "path": sys.path,
        "start": start,
        "main_keys": main_keys,
        "modules": {name: _module(name) for name in names},
        "value": app_pkg.value(),
        "ns": app_ns.part.Y,
        "resource": importlib.resources.files(app_pkg).joinpath("data.txt").read_text(),
        "source": inspect.getsource(app_pkg.helper.fail),
        "line": linecache.getline(app_pkg.helper.__file__, 4),
        "traceback": tb,
        "builds": {name: module_build(name) for name in
                   ["__main__", "app", "app_pkg", "app_pkg.__main__", "app_ns.part", "probe"]},
    }))
"""
MAIN = """\
'''The app.'''
KEYS = list(globals())
import sys
START = sorted(sys.modules)
import probe
probe.report(KEYS, START)
"""
PROJECT = {
    "pyproject.toml": "",
    "probe.py": PROBE,
    "app.py": MAIN,
    "app_pkg/__init__.py": '"""A package."""\nfrom . import helper\nfrom .sub.leaf import value\n',
    "app_pkg/__main__.py": MAIN,
    "app_pkg/data.txt": "packaged data\n",
    "app_pkg/sub/__init__.py": "",
    "app_pkg/sub/leaf.py": "from .. import helper\n\ndef value():\n    return helper.X * 2\n",
    "app_pkg/helper.py": "X = 21\n\ndef fail():\n    raise ValueError('from helper')\n",
    "app_ns/part.py": "from . import other\nY = other.Z\n",
    "app_ns/other.py": "Z = 'namespace'\n",
}
PROJECT_MODULES = ["__main__", "app_pkg", "app_pkg.sub", "app_pkg.sub.leaf", "app_pkg.helper"]
PROJECT_MODULES += ["app_ns.part", "probe"]
# What the interpreter may hold at the program's start under thinlink and not under
# python: the runtime and what it imports, and what the entry point imported before
# thinlink (the console script imports re; python -m imports runpy).
RUNTIME_IMPORTS = "import re, runpy, threading, hotpatch.boot"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    write(root, PROJECT)
    return root


@pytest.fixture(scope="module")
def runtime_modules() -> set[str]:
    code = f"import sys; b = set(sys.modules); {RUNTIME_IMPORTS}; print(*set(sys.modules) - b)"
    out = run_command([sys.executable, "-c", code], Path.cwd())
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stderr
    return result


def same_as_python(py: subprocess.CompletedProcess, tl: subprocess.CompletedProcess) -> None:
    assert (tl.returncode, tl.stdout, tl.stderr) == (py.returncode, py.stdout, py.stderr)


def build_summary(thinlink: Run, root: Path) -> dict:
    """`thinlink build --json` of `root` (after a run: it must find nothing to do)."""
    build = thinlink("build", "--json", cwd=root)
    summary = json.loads(build.stdout)
    assert build.returncode == (1 if summary["failed"] else 0), build.stderr
    return summary


@pytest.mark.parametrize(
    "command, main_spec",
    [
        (["app.py", "one", "--two"], "__main__"),
        (["-m", "app_pkg", "x"], "app_pkg.__main__"),
        (["-m", "app"], "app"),
    ],
    ids=["script", "package-main", "module"],
)
def test_program_sees_what_python_shows(
    project: Path,
    python: Run,
    thinlink: Run,
    runtime_modules: set[str],
    command: list[str],
    main_spec: str,
) -> None:
    py = json.loads(ok(python(*command, cwd=project)).stdout)
    tl = json.loads(ok(thinlink("run", *command, cwd=project)).stdout)

    # Loaded from the build: every project module (and the run left nothing to build).
    build = build_summary(thinlink, project)
    assert (build["compiled"], build["changed"]) == (0, [])
    expected = dict.fromkeys(["__main__", "app", "app_pkg.__main__"])
    expected.update(
        dict.fromkeys([main_spec, "app_pkg", "app_ns.part", "probe"], build["build_id"])
    )
    assert tl.pop("builds") == expected
    assert set(py.pop("builds").values()) == {None}
    for name in PROJECT_MODULES:
        assert py["modules"][name].pop("loader_type") == "SourceFileLoader", name
        assert tl["modules"][name].pop("loader_type") == "BuildLoader", name
    assert tl["modules"]["click"]["loader_type"] == "SourceFileLoader"  # third party

    # A clean interpreter: nothing of the tool's, no stand-ins for the program's modules.
    start_py, start_tl = set(py.pop("start")), set(tl.pop("start"))
    assert start_py <= start_tl
    # The runtime package stays loaded whole (the build side shares its code helpers).
    extra = {m for m in start_tl - start_py - runtime_modules if not m.startswith("hotpatch.")}
    assert not extra, extra
    assert not {"click", "diskcache", "thinlink", "json"} & start_tl

    assert tl == py


def test_directory_with_main_is_its_own_project(tmp_path: Path, python: Run, thinlink: Run) -> None:
    app = tmp_path / "outer" / "app"
    write(app, {"pyproject.toml": "", "__main__.py": "import sys\nprint(__file__, sys.argv)\n"})
    write(tmp_path / "outer", {"stray.py": "raise SystemExit('not part of the app')\n"})
    py = python(".", "a", cwd=app)
    same_as_python(py, thinlink("run", ".", "a", cwd=app))
    assert (app / ".thinlink").is_dir()
    assert not (tmp_path / "outer" / ".thinlink").exists()


def test_arguments_after_the_program_are_the_programs(
    tmp_path: Path, python: Run, thinlink: Run
) -> None:
    write(tmp_path, {"args.py": "import sys\nprint(sys.argv)\n"})
    args = ["-m", "x", "--help", "--cache-dir", "y", "--", "z"]
    cache = tmp_path.parent / f"{tmp_path.name}-cache"
    same_as_python(
        python("args.py", *args, cwd=tmp_path),
        thinlink("run", "--cache-dir", cache, "args.py", *args, cwd=tmp_path),
    )
    assert (cache / "builds").is_dir() and not (tmp_path / ".thinlink").exists()
    same_as_python(
        python("-m", "args", *args, cwd=tmp_path),
        thinlink("run", "-m", "args", *args, cwd=tmp_path),
    )


def test_usage_errors(tmp_path: Path, python: Run, thinlink: Run) -> None:
    missing = thinlink("run", cwd=tmp_path)
    assert missing.returncode == 2 and "SCRIPT or -m MODULE" in missing.stderr
    unknown = thinlink("run", "--bogus", "nope.py", cwd=tmp_path)
    assert unknown.returncode == 2 and "unrecognized arguments: --bogus" in unknown.stderr
    assert unknown.stderr.startswith("usage: thinlink run ")
    assert python("--bogus", "nope.py", cwd=tmp_path).returncode == 2
    same_as_python(python("nope.py", cwd=tmp_path), thinlink("run", "nope.py", cwd=tmp_path))


EXITS = {
    "lib.py": """\
        import sys

        def fail():
            raise ValueError("from lib")

        def interrupt():
            print("buffered, not flushed")
            raise KeyboardInterrupt
        """,
    "raises.py": "import lib\nprint('start')\nlib.fail()\n",
    "exit3.py": "import sys\nprint('three')\nsys.exit(3)\n",
    "exit_message.py": "import sys\nsys.exit('bye')\n",
    "interrupted.py": "import atexit, lib\natexit.register(print, 'atexit ran')\nlib.interrupt()\n",
    "caught.py": """\
        import lib
        try:
            lib.interrupt()
        except KeyboardInterrupt:
            print("caught")
        """,
}


@pytest.mark.parametrize(
    "command, returncode",
    [
        (["raises.py"], 1),
        (["-m", "raises"], 1),
        (["exit3.py"], 3),
        (["exit_message.py"], 1),
        (["interrupted.py"], -signal.SIGINT),
        (["-m", "interrupted"], -signal.SIGINT),
        (["caught.py"], 0),
    ],
    ids=["raises", "m-raises", "exit3", "exit-message", "interrupt", "m-interrupt", "caught"],
)
def test_exit_status_and_traceback(
    tmp_path: Path, python: Run, thinlink: Run, command: list[str], returncode: int
) -> None:
    write(tmp_path, EXITS)
    py = python(*command, cwd=tmp_path)
    assert py.returncode == returncode
    tl = thinlink("run", *command, cwd=tmp_path)
    same_as_python(py, tl)
    assert "Aborted" not in tl.stderr


def test_sigint_ends_the_program_as_under_python(
    tmp_path: Path, python: Run, thinlink_prefix: list[str]
) -> None:
    write(tmp_path, {"wait.py": "import time\nprint('ready', flush=True)\ntime.sleep(60)\n"})

    def interrupt(command: list[str]) -> tuple[int, str]:
        proc = subprocess.Popen(
            command, cwd=tmp_path, env=ENV, text=True, preexec_fn=default_signals,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            assert proc.stdout.readline() == "ready\n"
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
            proc.wait()
        return proc.returncode, err

    # Where the signal lands (in print or in sleep) is a race: not compared.
    for returncode, err in [
        interrupt([sys.executable, "wait.py"]),
        interrupt([*thinlink_prefix, "run", "wait.py"]),
    ]:
        assert returncode == -signal.SIGINT
        assert err.startswith("Traceback (most recent call last):\n  File ")
        assert err.endswith("\nKeyboardInterrupt\n") and "Aborted" not in err


def test_edit_then_run_runs_the_new_code(tmp_path: Path, python: Run, thinlink: Run) -> None:
    main = """\
        import mod
        from hotpatch._loader import module_build
        print(mod.VERSION, type(mod.__loader__).__name__, module_build("mod"))
        mod.boom()
        """
    write(tmp_path, {"pyproject.toml": "", "main.py": main, "other.py": "X = 1\n"})
    write(tmp_path, {"mod.py": "VERSION = 1\n\ndef boom():\n    raise ValueError(VERSION)\n"})
    first = thinlink("run", "main.py", cwd=tmp_path)
    py = python("main.py", cwd=tmp_path)
    assert first.stdout == f"1 BuildLoader {build_summary(thinlink, tmp_path)['build_id']}\n"
    assert (first.returncode, first.stderr) == (py.returncode, py.stderr)
    assert 'mod.py", line 4, in boom' in py.stderr

    mod = tmp_path / "mod.py"
    stat = mod.stat()
    mod.write_text(
        "# moved down\n\nVERSION = 2\n\ndef helper():\n    return VERSION\n\n"
        "def boom():\n    raise ValueError(helper())\n"
    )
    os.utime(mod, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # content decides, not mtime
    second = thinlink("run", "main.py", cwd=tmp_path)
    py = python("main.py", cwd=tmp_path)
    build = build_summary(thinlink, tmp_path)
    assert (build["compiled"], build["changed"]) == (0, [])  # the run built the edit
    assert second.stdout == f"2 BuildLoader {build['build_id']}\n"
    assert (second.returncode, second.stderr) == (py.returncode, py.stderr)
    assert 'mod.py", line 9, in boom' in py.stderr


def test_syntax_error_in_one_module(tmp_path: Path, python: Run, thinlink: Run) -> None:
    write(
        tmp_path,
        {
            "pyproject.toml": "",
            "good.py": "def ok():\n    return 'ok'\n",
            "bad.py": "X = 1\ndef f(:\n    pass\n",
            "uses_good.py": "import good\nprint(good.ok(), type(good.__loader__).__name__)\n",
            "uses_bad.py": "import good\nprint(good.ok(), flush=True)\nimport bad\n",
        },
    )
    tl = thinlink("run", "uses_good.py", cwd=tmp_path)
    assert (tl.returncode, tl.stdout) == (0, "ok BuildLoader\n")
    # The build says which module failed, once, before the program starts.
    assert tl.stderr.startswith(f"{tmp_path / 'bad.py'}:2:7: ")

    py = python("uses_bad.py", cwd=tmp_path)
    assert py.returncode == 1 and py.stderr.endswith("SyntaxError: invalid syntax\n")
    tl = thinlink("run", "uses_bad.py", cwd=tmp_path)
    assert (tl.returncode, tl.stdout) == (py.returncode, py.stdout)
    assert tl.stderr.endswith(py.stderr) and tl.stderr.startswith(f"{tmp_path / 'bad.py'}:2:7: ")

    summary = build_summary(thinlink, tmp_path)
    assert (summary["modules"], summary["failed"]) == (4, 1)


def test_tool_modules_do_not_stand_in_for_the_programs(
    tmp_path: Path, python: Run, thinlink: Run
) -> None:
    """The tool imports json (its CLI, diskcache) and traceback (and so textwrap)."""
    stdlib = Path(json.__file__).parent.parent
    marker = "\n_THINLINK_MARKER = 1\n"
    write(tmp_path, {"json/__init__.py": (stdlib / "json/__init__.py").read_text() + marker})
    for name in ("decoder", "encoder", "scanner"):
        write(tmp_path, {f"json/{name}.py": (stdlib / f"json/{name}.py").read_text()})
    write(tmp_path, {"textwrap.py": (stdlib / "textwrap.py").read_text() + marker})
    program = """\
        import sys
        tool = {"click", "diskcache", "thinlink", "json", "textwrap", "traceback"}
        tool &= set(sys.modules)
        import json, textwrap, traceback
        print(sorted(tool), json._THINLINK_MARKER, textwrap._THINLINK_MARKER)
        print(json.__file__, type(json.__loader__).__name__, json.loads('{"a": [1]}'))
        print(traceback.textwrap is textwrap, json.decoder is sys.modules["json.decoder"])
        print(type(sys.modules["json.decoder"].__loader__).__name__)
        """
    write(tmp_path, {"main.py": program})
    py = ok(python("main.py", cwd=tmp_path))
    tl = ok(thinlink("run", "main.py", cwd=tmp_path))
    assert py.stdout.splitlines()[0] == "[] 1 1"
    assert tl.stdout == py.stdout.replace("SourceFileLoader", "BuildLoader")
    assert tl.stdout.count("BuildLoader") == 2


def test_threads_and_processes(tmp_path: Path, python: Run, thinlink: Run) -> None:
    """Non-daemon threads are joined at exit; pools and spawned children work."""
    program = """\
        import concurrent.futures, multiprocessing, threading, time
        import helper

        main_done = threading.Event()

        def late():
            main_done.wait()
            time.sleep(0.1)
            print("late thread done", flush=True)

        if __name__ == "__main__":
            threading.Thread(target=late).start()
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                print(list(pool.map(helper.square, range(4))))
            with multiprocessing.get_context("spawn").Pool(1) as pool:
                print(pool.map(helper.square, range(3)))
            print("main done", flush=True)
            main_done.set()
        """
    write(tmp_path, {"main.py": program, "helper.py": "def square(x):\n    return x * x\n"})
    py = ok(python("main.py", cwd=tmp_path))
    assert py.stdout.endswith("main done\nlate thread done\n")
    same_as_python(py, thinlink("run", "main.py", cwd=tmp_path))
