"""The `thinlink` command: called in-process as `main(argv)`, and as real processes.

The processes cover what only they can: `python -m thinlink`, two builds sharing one
cache at once, and a build killed half-way.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from thinlink.build.cache import Cache
from thinlink.build.manifest import BuildStore
from thinlink.cli import main

HELP = Path(__file__).with_name("cli_help.txt")
STDLIB = Path(sysconfig.get_paths()["stdlib"])
FIELDS = {"build_id", "modules", "units", "compiled", "reused", "relocated", "failed", "seconds"}

MODULE = """\
import os

LIMIT = 10


def first():
    return 1


def second(x):
    return x * 2


class Shape:
    def area(self):
        return 0


def last():
    return os.sep
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    write(root, "pyproject.toml", '[project]\nname = "proj"\n')
    write(root, "src/app/__init__.py", "")
    write(root, "src/app/shapes.py", MODULE)
    write(root, "src/app/util.py", "def helper():\n    return 1\n")
    return root


def write(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def cli(capsys, *args: str | os.PathLike[str]) -> tuple[int, str, str]:
    """Run `thinlink ARGS` in this process: (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    code = info.value.code
    return (0 if code is None else code), out, err


def build_json(capsys, *args: str | os.PathLike[str], status: int = 0) -> dict:
    code, out, err = cli(capsys, "build", "--json", *args)
    assert code == status, err
    assert out.count("\n") == 1, out  # one object on one line
    summary = json.loads(out)
    assert isinstance(summary, dict) and FIELDS <= summary.keys()
    return summary


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))


# build ------------------------------------------------------------------------------


def test_build_json_reports_what_each_build_did(root, capsys):
    cold = build_json(capsys, root)
    assert (cold["modules"], cold["failed"]) == (3, 0)
    assert cold["compiled"] == cold["units"] > 0
    assert (cold["reused"], cold["relocated"]) == (0, 0)
    assert isinstance(cold["build_id"], str) and cold["build_id"]
    assert isinstance(cold["seconds"], float) and cold["seconds"] >= 0

    again = build_json(capsys, root)
    assert again["build_id"] == cold["build_id"]
    assert (again["compiled"], again["relocated"], again["reused"]) == (0, 0, cold["units"])

    for path in root.rglob("*.py"):
        os.utime(path, (1e9, 1e9))
    touched = build_json(capsys, root)
    assert touched["build_id"] == cold["build_id"] and touched["compiled"] == 0

    shapes = root / "src/app/shapes.py"
    edit(shapes, "return x * 2\n", "return x * 3\n")
    body = build_json(capsys, root)
    assert (body["compiled"], body["relocated"]) == (2, 0)  # `def second`'s statement
    assert body["reused"] == cold["units"] - 2
    assert body["build_id"] != cold["build_id"]

    edit(shapes, "LIMIT = 10\n", "LIMIT = 10\nOTHER = 11\n\n")
    moved = build_json(capsys, root)
    assert moved["compiled"] == 1
    assert moved["relocated"] > 0
    assert moved["compiled"] + moved["relocated"] + moved["reused"] == moved["units"]


def test_build_prints_a_summary_on_stderr(root, capsys):
    code, out, err = cli(capsys, "build", root)
    assert (code, out) == (0, "")
    assert err.startswith("build ") and "3 modules" in err and "compiled" in err


def test_a_syntax_error_fails_the_build_with_its_position(root, capsys):
    bad = write(root, "src/app/bad.py", "x = 1\n\ndef f(a, b:\n    return a\n")
    with pytest.raises(SyntaxError) as info:
        compile(bad.read_text(), str(bad), "exec")
    where = f"{bad}:{info.value.lineno}:{info.value.offset}: {info.value.msg}"

    code, out, err = cli(capsys, "build", root)
    assert code == 1 and out == ""
    assert where in err.splitlines()
    assert "1 failed" in err

    summary = build_json(capsys, root, status=1)
    assert summary["failed"] == 1 and summary["modules"] == 4
    assert summary["errors"][0].startswith(where)


def test_the_current_project_is_the_default(root, capsys, monkeypatch):
    monkeypatch.chdir(root / "src" / "app")
    summary = build_json(capsys)
    assert summary["root"] == str(root) and summary["modules"] == 3
    assert (root / ".thinlink" / "builds").is_dir()


def test_bad_arguments_are_usage_errors(root, tmp_path, capsys):
    code, _, err = cli(capsys, "build", "-j", "0", root)
    assert code == 2 and "-j" in err
    code, _, err = cli(capsys, "build", tmp_path / "missing")
    assert code == 2 and f"{tmp_path / 'missing'}: no such directory" in err
    code, _, err = cli(capsys, "build", root / "pyproject.toml")
    assert code == 2 and "not a directory" in err


def test_jobs_give_the_same_build(root, tmp_path, capsys):
    one = build_json(capsys, root, "-j", "1", "--cache-dir", tmp_path / "one")
    two = build_json(capsys, root, "-j", "2", "--cache-dir", tmp_path / "two")
    assert one["build_id"] == two["build_id"]


# where the cache is ---------------------------------------------------------------------


def test_cache_dir_option(root, tmp_path, capsys):
    cache = tmp_path / "elsewhere"
    first = build_json(capsys, root, "--cache-dir", cache)
    assert (cache / "objects").is_dir() and (cache / "builds").is_dir()
    assert not (root / ".thinlink").exists()
    assert build_json(capsys, root, "--cache-dir", cache)["compiled"] == 0
    # another cache knows nothing of it
    assert build_json(capsys, root)["compiled"] == first["compiled"]


def test_cache_dir_from_the_environment(root, tmp_path, capsys, monkeypatch):
    cache = tmp_path / "from-env"
    monkeypatch.setenv("THINLINK_CACHE_DIR", str(cache))
    build_json(capsys, root)
    assert (cache / "builds").is_dir() and not (root / ".thinlink").exists()
    # the option wins over the environment
    build_json(capsys, root, "--cache-dir", tmp_path / "from-option")
    assert (tmp_path / "from-option" / "builds").is_dir()


def test_cache_dir_from_pyproject(root, capsys):
    write(
        root, "pyproject.toml", '[project]\nname = "p"\n\n[tool.thinlink]\ncache-dir = "var/tl"\n'
    )
    build_json(capsys, root)
    assert (root / "var" / "tl" / "builds").is_dir()
    assert not (root / ".thinlink").exists()


def test_an_unknown_pyproject_setting_is_a_clear_error(root, capsys):
    pyproject = write(root, "pyproject.toml", '[tool.thinlink]\ncache-dir = "c"\ncolour = "red"\n')
    code, out, err = cli(capsys, "build", "--json", root)
    assert (code, out) == (2, "")
    assert (
        err.strip() == f"thinlink: error: {pyproject}: unknown [tool.thinlink] setting(s): colour"
    )
    assert not (root / "c").exists()


def test_an_unknown_pyproject_setting_is_an_error_whatever_the_cache_dir(root, tmp_path, capsys):
    write(root, "pyproject.toml", '[tool.thinlink]\ncolour = "red"\n')
    code, _, err = cli(capsys, "build", root, "--cache-dir", tmp_path / "c")
    assert code == 2 and "unknown [tool.thinlink] setting(s): colour" in err


@pytest.mark.parametrize(
    ("table", "message"),
    [("cache-dir = 3\n", "cache-dir: expected a string"), ("cache-dir = \n", "Invalid value")],
)
def test_a_bad_pyproject_setting_is_a_clear_error(root, capsys, table, message):
    write(root, "pyproject.toml", f"[tool.thinlink]\n{table}")
    code, _, err = cli(capsys, "build", root)
    assert code == 2
    assert err.startswith("thinlink: error: ") and message in err
    assert "Traceback" not in err


# clean ----------------------------------------------------------------------------------


def test_clean_removes_the_cache(root, capsys):
    build_json(capsys, root)
    assert (root / ".thinlink").is_dir()
    code, _, err = cli(capsys, "clean", root)
    assert code == 0 and f"removed {root / '.thinlink'}" in err
    assert not (root / ".thinlink").exists()
    assert sorted(p.name for p in root.iterdir()) == ["pyproject.toml", "src"]
    code, _, err = cli(capsys, "clean", root)
    assert code == 0 and "nothing to clean" in err
    # and the next build starts cold
    summary = build_json(capsys, root)
    assert summary["compiled"] == summary["units"]


def test_clean_follows_the_cache_settings(root, tmp_path, capsys, monkeypatch):
    cache = tmp_path / "c"
    build_json(capsys, root, "--cache-dir", cache)
    assert cli(capsys, "clean", root, "--cache-dir", cache)[0] == 0
    assert not cache.exists()
    monkeypatch.setenv("THINLINK_CACHE_DIR", str(cache))
    build_json(capsys, root)
    assert cache.exists()
    assert cli(capsys, "clean", root)[0] == 0
    assert not cache.exists()


def test_clean_never_removes_what_is_not_a_cache(root, tmp_path, capsys, monkeypatch):
    keep = write(tmp_path, "home/notes.txt", "precious")
    for target in (root, tmp_path, keep.parent, root / "src"):
        code, _, err = cli(capsys, "clean", root, "--cache-dir", target)
        assert code == 2 and "is not a thinlink cache" in err
    monkeypatch.setenv("THINLINK_CACHE_DIR", str(keep.parent))
    assert cli(capsys, "clean", root)[0] == 2
    assert keep.read_text() == "precious"
    assert (root / "src" / "app" / "shapes.py").read_text() == MODULE


def test_a_directory_holding_other_files_is_never_adopted_as_the_cache(root, tmp_path, capsys):
    home = tmp_path / "home"
    keep = write(home, "notes.txt", "precious")
    write(home, "Documents/letter.txt", "dear")
    code, _, err = cli(capsys, "build", root, "--cache-dir", home)
    assert code == 2 and f"{home} holds files that are not a thinlink cache's" in err
    assert sorted(p.name for p in home.iterdir()) == ["Documents", "notes.txt"]
    assert cli(capsys, "clean", root, "--cache-dir", home)[0] == 2
    assert keep.read_text() == "precious"


def test_clean_removes_only_what_the_cache_made(root, tmp_path, capsys):
    cache = tmp_path / "cache"
    build_json(capsys, root, "--cache-dir", cache)
    mine = write(cache, "mine.txt", "put here later by the user")
    code, _, err = cli(capsys, "clean", root, "--cache-dir", cache)
    assert code == 0 and "kept what is not the cache's: mine.txt" in err
    assert sorted(p.name for p in cache.iterdir()) == ["CACHEDIR.TAG", "mine.txt"]
    assert mine.read_text() == "put here later by the user"


# help -----------------------------------------------------------------------------------


def test_help_matches_the_saved_copy(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = cli(capsys, "--help")
    assert code == 0
    assert out == HELP.read_text(), (
        "the help changed; if that is intended, save it with "
        "`COLUMNS=80 python -m thinlink --help > tests/thinlink/cli_help.txt`"
    )
    assert cli(capsys, "-h")[1] == out


def test_version(capsys):
    code, out, _ = cli(capsys, "--version")
    assert code == 0 and out.startswith("thinlink ")


# real processes -------------------------------------------------------------------------


def thinlink(*args: str | os.PathLike[str]) -> list[str]:
    return [sys.executable, "-m", "thinlink", *map(str, args)]


def test_python_m_thinlink(root, tmp_path, capsys, subprocess_env):
    env = {**subprocess_env, "COLUMNS": "80"}
    done = subprocess.run(thinlink("--help"), env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == HELP.read_text()

    cache = tmp_path / "cache"
    done = subprocess.run(
        thinlink("build", "--json", root, "--cache-dir", cache),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert FIELDS <= summary.keys() and summary["compiled"] == summary["units"]
    assert build_json(capsys, root)["build_id"] == summary["build_id"]

    write(root, "src/app/bad.py", "def f(:\n")
    done = subprocess.run(
        thinlink("build", root, "--cache-dir", cache),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert f"{root}/src/app/bad.py:1:7: " in done.stderr
    assert "Traceback" not in done.stderr


def corpus(root: Path, *more: str) -> Path:
    """A project of real code (about 1.5 MB, and the stdlib packages `more`)."""
    ignore = shutil.ignore_patterns("__pycache__", "test", "tests")
    for package in ("email", "json", "xml", *more):
        shutil.copytree(STDLIB / package, root / package, ignore=ignore)
    for name in ("typing.py", "argparse.py", "inspect.py", "_pydecimal.py", "pydoc.py"):
        shutil.copy(STDLIB / name, root / name)
    (root / "pyproject.toml").write_text('[project]\nname = "corpus"\n')
    return root


def fresh_build(root: Path, cache: Path, capsys) -> dict:
    return build_json(capsys, root, "--cache-dir", cache)


def test_two_builds_at_once_on_one_cache(tmp_path, capsys, subprocess_env):
    root = corpus(tmp_path / "corpus")
    cache = tmp_path / "shared"
    cmd = thinlink("build", "--json", root, "--cache-dir", cache)
    procs = [
        subprocess.Popen(cmd, env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
        assert b"Traceback" not in err
    first, second = (json.loads(out) for out, _ in outputs)
    assert first["build_id"] == second["build_id"]
    assert first["failed"] == second["failed"] == 0
    assert first["modules"] == second["modules"] == len(list(root.rglob("*.py")))
    # the shared cache holds one consistent build
    after = fresh_build(root, cache, capsys)
    assert after["build_id"] == first["build_id"] and after["compiled"] == 0
    assert fresh_build(root, tmp_path / "alone", capsys)["build_id"] == first["build_id"]


def test_a_build_killed_half_way_leaves_the_cache_usable(tmp_path, capsys, subprocess_env):
    # About 5 MB: most of a second of compiling after the cache is opened (a commit
    # every few modules), so the kill below lands half-way.
    root = corpus(tmp_path / "corpus", "asyncio", "unittest", "idlelib", "encodings")
    cache = tmp_path / "cache"
    # its own session, so the kill takes its worker processes too
    proc = subprocess.Popen(
        thinlink("build", root, "--cache-dir", cache, "-j", "2"),
        env=subprocess_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (cache / "objects" / "cache.db").exists():  # the build has started
            assert proc.poll() is None, "the build ended before it could be killed"
            assert time.monotonic() < deadline, "the build never opened its cache"
            time.sleep(0.01)
        time.sleep(0.3)  # into the compile
        assert proc.poll() is None, "the build ended before it could be killed"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    after = fresh_build(root, cache, capsys)
    assert after["failed"] == 0 and after["compiled"] > 0
    fresh = fresh_build(root, tmp_path / "fresh", capsys)
    assert after["build_id"] == fresh["build_id"]
    assert (after["modules"], after["units"]) == (fresh["modules"], fresh["units"])
    # and what it recorded is readable
    manifest = BuildStore(cache).load(after["build_id"])
    with Cache(cache) as store:
        assert all(store.get(m.record) is not None for m in manifest.modules)
    assert fresh_build(root, cache, capsys)["compiled"] == 0


# what the launch path loads --------------------------------------------------------------


def test_a_no_op_build_and_a_run_load_neither_the_cache_nor_the_compiler(
    root, tmp_path, subprocess_env
):
    """`build` after a build, and `run` of an unchanged project, are answered by the
    launch path (thinlink.launch): the builder, diskcache and the compiler stay unloaded,
    and `run` parses no options either."""
    cache = tmp_path / "cache"
    write(root, "hello.py", "print('hello')\n")
    first = subprocess.run(
        thinlink("build", "--json", root, "--cache-dir", cache),
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert first.returncode == 0, first.stderr
    heavy = ("diskcache", "sqlite3", "thinlink.build.builder", "thinlink.build.compiler", "rich")
    env = {**subprocess_env, "THINLINK_CACHE_DIR": str(cache)}
    runs = (["run", str(root / "hello.py")], (*heavy, "argparse", "thinlink.cli.commands"))
    # The first run writes the build's image; the second starts from it.
    for argv, light in (
        (["build", "--json", str(root), "--cache-dir", str(cache)], heavy),
        (runs[0], ()),
        runs,
    ):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "thinlink", *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        imported = {
            line.rpartition("|")[2].strip()
            for line in done.stderr.splitlines()
            if line.startswith("import time:")
        }
        assert not imported & set(light), (argv, sorted(imported & set(light)))
        if argv[0] == "run":
            assert done.stdout == "hello\n"
        else:
            assert json.loads(done.stdout)["build_id"] == json.loads(first.stdout)["build_id"]
