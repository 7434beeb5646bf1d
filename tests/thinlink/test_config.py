"""Settings: each one from the command line, then `THINLINK_*`, then `[tool.thinlink]`,
then the default; and every bad value a clear `ConfigError` saying where it came from."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from thinlink.config import DevSettings, dev_settings
from thinlink.errors import ConfigError
from thinlink.launch import cache_location

ENV_NAMES = ("WATCH", "INCLUDE", "EXCLUDE", "POLL", "RESTART", "ADDRESS", "CACHE_DIR")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(f"THINLINK_{name}", raising=False)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    for name in ("src", "lib", "from_env", "from_cli", "from_file"):
        (root / name).mkdir(parents=True)
    return root


def pyproject(root: Path, text: str) -> None:
    (root / "pyproject.toml").write_text("[tool.thinlink]\n" + text)


def test_defaults(root: Path) -> None:
    assert dev_settings(root) == DevSettings(
        watch=(root,),
        include=("*.py",),
        exclude=(),
        poll=False,
        restart=True,
        address=None,
        keys=False,
    )


# One row a setting: (name, CLI value, env value, its parse, pyproject TOML, its value).
LAYERS = [
    ("include", ("*.cli",), "*.env, *.env2", ("*.env", "*.env2"), '["*.file"]', ("*.file",)),
    ("exclude", ("cli/*",), "env/*", ("env/*",), '["file/*", "x"]', ("file/*", "x")),
    ("poll", True, "no", False, "true", True),
    ("restart", False, "on", True, "false", False),
    ("keys", True, "no", False, "true", True),
    ("address", "tcp:127.0.0.1:1", "tcp:127.0.0.1:2", "tcp:127.0.0.1:2", '"unix"', "unix"),
]


@pytest.mark.parametrize(("name", "cli", "env", "env_value", "toml", "file_value"), LAYERS)
def test_each_setting_cli_then_env_then_pyproject_then_default(
    root: Path, monkeypatch: pytest.MonkeyPatch, name, cli, env, env_value, toml, file_value
) -> None:
    default = getattr(dev_settings(root), name)
    pyproject(root, f"{name} = {toml}\n")
    assert getattr(dev_settings(root), name) == file_value != default
    monkeypatch.setenv(f"THINLINK_{name.upper()}", env)
    assert getattr(dev_settings(root), name) == env_value != file_value
    assert getattr(dev_settings(root, **{name: cli}), name) == cli != env_value


def test_watch_paths_from_each_source_and_where_they_are_relative_to(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = root / "src"
    (cwd / "from_cli").mkdir()
    (cwd / "from_env").mkdir()
    pyproject(root, 'watch = ["from_file", "lib"]\n')
    # pyproject.toml: relative to the project root, wherever the command runs.
    assert dev_settings(root, cwd=cwd).watch == (root / "from_file", root / "lib")
    # The environment and the command line: relative to where the command runs.
    monkeypatch.setenv("THINLINK_WATCH", os.pathsep.join(["from_env", str(root / "lib")]))
    assert dev_settings(root, cwd=cwd).watch == (cwd / "from_env", root / "lib")
    assert dev_settings(root, watch=("from_cli",), cwd=cwd).watch == (cwd / "from_cli",)
    assert dev_settings(root, watch=("..",), cwd=cwd).watch == (root,)  # resolved


def test_a_string_is_one_glob_or_path_in_pyproject(root: Path) -> None:
    pyproject(root, 'include = "*.pyi"\nwatch = "src"\n')
    settings = dev_settings(root)
    assert settings.include == ("*.pyi",)
    assert settings.watch == (root / "src",)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", True),
        ("true", True),
        ("Yes", True),
        ("ON", True),
        ("0", False),
        ("false", False),
        ("no", False),
        (" off ", False),
    ],
)
def test_environment_flags(root: Path, monkeypatch: pytest.MonkeyPatch, value, expected) -> None:
    monkeypatch.setenv("THINLINK_POLL", value)
    assert dev_settings(root).poll is expected


def test_an_empty_environment_variable_is_unset(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pyproject(root, "poll = true\n")
    monkeypatch.setenv("THINLINK_POLL", "")
    monkeypatch.setenv("THINLINK_INCLUDE", "")
    assert dev_settings(root).poll is True
    assert dev_settings(root).include == ("*.py",)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("colour = 'red'\n", "unknown [tool.thinlink] setting(s): colour"),
        ("poll = 'yes'\n", "poll: expected true or false, got 'yes'"),
        ("restart = 1\n", "restart: expected true or false, got 1"),
        ("include = [1]\n", "include: expected a list of strings, got [1]"),
        ("exclude = {a = 1}\n", "exclude: expected a list of strings, got {'a': 1}"),
        ("watch = 3\n", "watch: expected a list of strings, got 3"),
        ("address = 8000\n", "address: expected a string, got 8000"),
        ("poll = \n", "pyproject.toml: "),  # not TOML
    ],
)
def test_bad_pyproject_values_are_errors(root: Path, toml: str, message: str) -> None:
    pyproject(root, toml)
    with pytest.raises(ConfigError) as info:
        dev_settings(root)
    assert message in str(info.value)
    assert str(root / "pyproject.toml") in str(info.value)


def test_a_bad_value_is_an_error_even_where_overridden(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pyproject(root, "poll = 'yes'\n")
    with pytest.raises(ConfigError, match="poll: expected true or false"):
        dev_settings(root, poll=True)
    pyproject(root, "")
    monkeypatch.setenv("THINLINK_RESTART", "sometimes")
    with pytest.raises(ConfigError, match=r"THINLINK_RESTART='sometimes': expected 1/0"):
        dev_settings(root, restart=False)


@pytest.mark.parametrize(
    ("source", "origin"),
    [("cli", "the command line"), ("env", "THINLINK_WATCH"), ("file", "pyproject.toml")],
)
def test_a_watched_path_that_does_not_exist_is_an_error_naming_its_source(
    root: Path, monkeypatch: pytest.MonkeyPatch, source: str, origin: str
) -> None:
    kwargs: dict = {}
    if source == "cli":
        kwargs["watch"] = ("missing",)
    elif source == "env":
        monkeypatch.setenv("THINLINK_WATCH", "missing")
    else:
        pyproject(root, 'watch = ["missing"]\n')
    with pytest.raises(ConfigError) as info:
        dev_settings(root, cwd=root, **kwargs)
    assert f"watched path does not exist: {root / 'missing'} (from " in str(info.value)
    assert origin in str(info.value)


def test_cache_dir_cli_then_env_then_pyproject_then_default(
    root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert cache_location(str(root)) == str(root / ".thinlink")
    pyproject(root, 'cache-dir = "build/cache"\n')
    assert cache_location(str(root)) == str(root / "build" / "cache")
    monkeypatch.setenv("THINLINK_CACHE_DIR", str(tmp_path / "env"))
    assert cache_location(str(root)) == str(tmp_path / "env")
    assert cache_location(str(root), tmp_path / "cli") == str(tmp_path / "cli")
    pyproject(root, "cache-dir = 3\n")
    monkeypatch.delenv("THINLINK_CACHE_DIR")
    with pytest.raises(ConfigError, match="cache-dir: expected a string"):
        cache_location(str(root))
