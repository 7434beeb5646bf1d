"""``python -m hotpatch.boot``, end to end: each program runs as under plain ``python``.

Every test runs the same program twice in real subprocesses, once with ``python`` and
once through the boot with a build image, and compares what they print.
"""

from __future__ import annotations

import json
import marshal
import os
import py_compile
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from hotpatch.boot import main
from hotpatch.image import Image, ImageEntry, source_digest, write_image

REPO = Path(__file__).resolve().parents[2]
ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("PYTHON")},
    "PYTHONPATH": str(REPO),
    "PYTHONDONTWRITEBYTECODE": "1",
}

PROBE = """
import builtins, importlib.resources, inspect, json, linecache, sys, traceback

def _module(name):
    m = sys.modules[name]
    spec = m.__spec__
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
        ],
        "loader": type(m.__loader__).__name__,
    }

def report(main_keys):
    import app_ns.part, app_pkg, app_pkg.sub.leaf, colorsys
    from hotpatch._loader import module_build
    main = sys.modules["__main__"]
    try:
        app_pkg.helper.fail()
    except ValueError as exc:
        tb = traceback.format_exception(exc)
    names = ["__main__", "app_pkg", "app_pkg.sub", "app_pkg.sub.leaf", "app_pkg.helper",
             "app_ns", "app_ns.part", "probe", "colorsys", "json", "sys"]
    print(json.dumps({
        "argv": sys.argv,
        "path": sys.path,
        "main_keys": main_keys,
        "main_builtins": vars(main)["__builtins__"] is builtins,
        "main_loader": [main.__loader__.name, main.__loader__.path],
        "modules": {name: _module(name) for name in names},
        "value": app_pkg.value(),
        "ns": app_ns.part.Y,
        "resource": importlib.resources.files(app_pkg).joinpath("data.txt").read_text(),
        "source": inspect.getsource(app_pkg.helper.fail),
        "line": linecache.getline(app_pkg.helper.__file__, 4),
        "traceback": tb,
        "builds": {name: module_build(name) for name in
                   ["__main__", "app_pkg", "app_pkg.__main__", "app_ns.part", "probe"]},
    }))
"""
MAIN = '"""The app."""\nKEYS = list(globals())\nimport probe\nprobe.report(KEYS)\n'

PROJECT = {
    "probe.py": PROBE,
    "app.py": MAIN,
    "__main__.py": MAIN,
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


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def build_image(root: Path, image: Path, code_from: dict[str, str] | None = None) -> Path:
    """Compile every .py under ``root`` into ``image``; ``code_from`` swaps in other source."""
    entries = {}
    for path in sorted(root.rglob("*.py")):
        data = path.read_bytes()
        source = (code_from or {}).get(str(path.relative_to(root)), data)
        code = compile(source, str(path), "exec", dont_inherit=True)
        entries[str(path)] = ImageEntry(source_digest(data), marshal.dumps(code))
    write_image(image, Image("b1", str(root), entries))
    return image


def python(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )


def boot(*args, cwd: Path, image: Path | None, options=()) -> subprocess.CompletedProcess:
    image_args = [] if image is None else ["--image", image]
    return python(*options, "-m", "hotpatch.boot", *image_args, *args, cwd=cwd)


def same(plain, booted) -> None:
    assert (booted.returncode, booted.stdout, booted.stderr) == (
        plain.returncode,
        plain.stdout,
        plain.stderr,
    )


@pytest.fixture
def project(tmp_path) -> Path:
    root = tmp_path / "proj"
    write(root, PROJECT)
    return root


@pytest.fixture
def image(project, tmp_path) -> Path:
    return build_image(project, tmp_path / "image")


def _compare_probes(plain, booted, from_build=PROJECT_MODULES) -> dict:
    """Check the probes match but for the loaders of ``from_build``; return the builds."""
    assert (plain.returncode, plain.stderr) == (0, "")
    assert (booted.returncode, booted.stderr) == (0, "")
    expected, got = json.loads(plain.stdout), json.loads(booted.stdout)
    for name in from_build:
        assert expected["modules"][name]["loader"] == "SourceFileLoader"
        assert got["modules"][name].pop("loader") == "BuildLoader", name
        expected["modules"][name].pop("loader")
    assert set(expected.pop("builds").values()) == {None}
    builds = got.pop("builds")
    assert got == expected
    return builds


@pytest.mark.parametrize("where", ["in-project", "parent-dir"])
def test_a_script_runs_as_under_python(project, image, where):
    cwd, script = (project, "app.py") if where == "in-project" else (project.parent, "proj/app.py")
    args = [script, "-m", "--image", "x y"]
    builds = _compare_probes(python(*args, cwd=cwd), boot(*args, cwd=cwd, image=image))
    assert builds == {
        "__main__": "b1",
        "app_pkg": "b1",
        "app_pkg.__main__": None,
        "app_ns.part": "b1",
        "probe": "b1",
    }


def test_a_module_runs_as_under_python(project, image):
    args = ["-m", "app_pkg", "arg"]
    builds = _compare_probes(python(*args, cwd=project), boot(*args, cwd=project, image=image))
    assert builds["app_pkg.__main__"] == "b1" and builds["__main__"] is None


def test_a_directory_runs_as_under_python(project, image):
    builds = _compare_probes(
        python("proj", "a", cwd=project.parent),
        boot("proj", "a", cwd=project.parent, image=image),
    )
    assert builds["__main__"] == "b1"


def test_a_zip_file_runs_as_under_python(project, image, tmp_path):
    with zipfile.ZipFile(tmp_path / "app.pyz", "w") as archive:
        archive.writestr("__main__.py", "import sys; print(__file__, __spec__.name, sys.argv)")
    with zipfile.ZipFile(tmp_path / "failing.pyz", "w") as archive:
        archive.writestr("__main__.py", "import inner")
        archive.writestr("inner.py", "raise ValueError('in zip')")
    same(python("app.pyz", "x", cwd=tmp_path), boot("app.pyz", "x", cwd=tmp_path, image=image))
    plain = python("failing.pyz", cwd=tmp_path)
    assert plain.returncode == 1 and "in zip" in plain.stderr
    same(plain, boot("failing.pyz", cwd=tmp_path, image=image))


def test_a_symlinked_script_runs_from_its_real_directory(project, image, tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "app").symlink_to(project / "app.py")
    _compare_probes(
        python("bin/app", cwd=tmp_path),
        boot("bin/app", cwd=tmp_path, image=image),
        PROJECT_MODULES[1:],  # __main__'s file is the link, which is not in the image
    )


def test_runs_as_under_python_without_an_image(project):
    _compare_probes(python("app.py", cwd=project), boot("app.py", cwd=project, image=None), [])


def test_safe_path_adds_no_directory(project, image):
    write(project, {"paths.py": "import sys; print(sys.path)"})
    plain = python("-P", "paths.py", cwd=project)
    same(plain, boot("paths.py", cwd=project, image=image, options=["-P"]))
    same(
        python("-P", "-m", "json.tool", "-h", cwd=project),
        boot("-m", "json.tool", "-h", cwd=project, image=image, options=["-P"]),
    )


PROGRAMS = {
    "uncaught": """
        from app_pkg import helper
        def main():
            helper.fail()
        main()
    """,
    "chained": """
        try:
            {}["k"]
        except KeyError as exc:
            raise RuntimeError("wrapped") from exc
    """,
    "import-time-error": "import bad_module\n",
    "excepthook": """
        import sys
        def hook(kind, value, tb):
            print("hook", kind.__name__, sys.last_value is value, tb.tb_frame.f_code.co_filename,
                  tb.tb_lineno, tb.tb_next is None, sys.exc_info())
        sys.excepthook = hook
        raise ValueError("x")
    """,
    "failing-excepthook": """
        import sys
        def hook(kind, value, tb):
            raise TypeError("hook failed")
        sys.excepthook = hook
        raise ValueError("x")
    """,
    "exit-3": "import sys; print('out'); sys.exit(3)\n",
    "exit-message": "import sys; sys.exit('fatal: message')\n",
    "exit-none": "raise SystemExit\n",
    "keyboard-interrupt": """
        import atexit
        atexit.register(lambda: print("atexit ran", flush=True))
        def loop():
            raise KeyboardInterrupt
        loop()
    """,
}


@pytest.mark.parametrize("name", PROGRAMS)
def test_failures_and_exit_statuses_are_as_under_python(project, tmp_path, name):
    write(project, {"prog.py": PROGRAMS[name], "bad_module.py": "X = 1\nraise OSError(X)\n"})
    image = build_image(project, tmp_path / "image")
    plain = python("prog.py", cwd=project)
    same(plain, boot("prog.py", cwd=project, image=image))
    if name == "keyboard-interrupt":
        assert plain.returncode == -signal.SIGINT


def test_a_module_failure_shows_runpy_frames_as_python_does(project, tmp_path):
    write(project, {"failing/__init__.py": "", "failing/__main__.py": PROGRAMS["uncaught"]})
    image = build_image(project, tmp_path / "image")
    plain = python("-m", "failing", cwd=project)
    assert plain.returncode == 1 and "<frozen runpy>" in plain.stderr
    same(plain, boot("-m", "failing", cwd=project, image=image))


@pytest.mark.parametrize("args", [["-m", "no_such_module"], ["-m", "app_pkg.sub"], ["nope.py"]])
def test_missing_programs_are_reported_as_python_does(project, image, args):
    plain = python(*args, cwd=project)
    assert plain.returncode in (1, 2)
    same(plain, boot(*args, cwd=project, image=image))


def test_the_image_code_runs_when_the_source_matches(project, tmp_path):
    write(project, {"who.py": "print('source')\nimport app_pkg.helper as h; print(h.X)\n"})
    image = build_image(
        project,
        tmp_path / "image",
        code_from={
            "who.py": "print('image')\nimport app_pkg.helper as h; print(h.X)\n",
            "app_pkg/helper.py": "X = 'helper from image'\n",
        },
    )
    booted = boot("who.py", cwd=project, image=image)
    assert (booted.returncode, booted.stdout) == (0, "image\nhelper from image\n")


def test_files_edited_after_the_build_run_their_new_source(project, image):
    write(
        project,
        {
            "app.py": "import app_pkg.helper as h, sys\nprint('new app', h.X)\n"
            "from hotpatch._loader import module_build\n"
            "print(type(h.__loader__).__name__, module_build('app_pkg.helper'))\n",
            "app_pkg/helper.py": "X = 'new helper'\n",
        },
    )
    booted = boot("app.py", cwd=project, image=image)
    assert booted.stdout == "new app new helper\nTrackingLoader None\n"


@pytest.mark.parametrize(
    "edited",
    [
        {"app_pkg/helper.py": "def broken(:\n    pass\n"},
        {"app.py": "import app_pkg\nif True\n    pass\n"},
    ],
    ids=["module", "script"],
)
def test_syntax_errors_in_edited_files_are_reported_as_python_does(project, image, edited):
    write(project, edited)
    plain = python("app.py", cwd=project)
    assert plain.returncode == 1 and "SyntaxError" in plain.stderr
    same(plain, boot("app.py", cwd=project, image=image))


def test_a_compiled_script_runs_as_under_python(project, image):
    write(project, {"comp.py": "import sys; print(__file__, type(__loader__).__name__, sys.argv)"})
    py_compile.compile(str(project / "comp.py"), str(project / "comp.pyc"), doraise=True)
    same(python("comp.pyc", "a", cwd=project), boot("comp.pyc", "a", cwd=project, image=image))


@pytest.mark.parametrize("damage", ["flip", "magic", "missing"])
def test_a_bad_image_is_a_clear_error(project, image, damage):
    data = image.read_bytes()
    if damage == "flip":  # in the index, read at start
        image.write_bytes(data[:30] + bytes([data[30] ^ 0xFF]) + data[31:])
    elif damage == "magic":
        image.write_bytes(b"garbage!" + data[8:])
    else:
        image.unlink()
    booted = boot("app.py", cwd=project, image=image)
    assert booted.returncode == 2 and booted.stdout == ""
    expected = {"flip": "checksum mismatch", "magic": "bad magic", "missing": "cannot read"}
    assert booted.stderr.startswith(f"hotpatch: error: {image}: ")
    assert expected[damage] in booted.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "a script or -m MODULE is required"),
        (["--image"], "bad option: --image"),
        (["--image", "img"], "a script or -m MODULE is required"),
        (["-m"], "argument expected for the -m option"),
        (["-c", "print(1)"], "unknown option: -c"),
    ],
)
def test_usage_errors(args, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m hotpatch.boot") and err.endswith(f"{message}\n")


def test_a_module_whose_code_is_damaged_in_the_image_runs_from_its_source(project, image):
    # Each module's code is checked when it is imported: the damaged one is compiled
    # from its source (the program runs as under python) and the image is removed, for
    # the next build to write again.
    whole = boot("app.py", cwd=project, image=image)
    data = image.read_bytes()
    image.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    same(whole, boot("app.py", cwd=project, image=image))
    assert whole.returncode == 0 and not image.exists()
