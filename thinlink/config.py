"""Settings, each resolved in one place: command line, then environment, then
`[tool.thinlink]` in pyproject.toml, then the default."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

__all__ = ["KNOWN_KEYS", "DevSettings", "dev_settings", "pyproject_settings"]

KNOWN_KEYS = frozenset(
    {"cache-dir", "watch", "include", "exclude", "poll", "restart", "address", "keys"}
)


def pyproject_settings(root: str | os.PathLike[str]) -> dict[str, object]:
    """The `[tool.thinlink]` table of `root/pyproject.toml` (empty if none)."""
    path = os.path.join(root, "pyproject.toml")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if b"thinlink" not in data:
        # No [tool.thinlink] table can be in it. Whether the rest of the file is valid TOML
        # is for the tools that use it to say.
        return {}
    import tomllib

    try:
        table = tomllib.loads(data.decode()).get("tool", {}).get("thinlink", {})
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    unknown = sorted(set(table) - KNOWN_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown [tool.thinlink] setting(s): {', '.join(unknown)}")
    return table


@dataclass(frozen=True, slots=True)
class DevSettings:
    """What `thinlink dev` watches and how it behaves."""

    watch: tuple[Path, ...]
    include: tuple[str, ...] = ("*.py",)
    exclude: tuple[str, ...] = ()
    poll: bool = False
    restart: bool = True
    address: str | None = None  # None: a Unix socket in a private directory
    keys: bool = False  # `rs` + Enter on the terminal restarts the app


def dev_settings(
    root: Path,
    *,
    watch: tuple[str, ...] = (),
    include: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    poll: bool | None = None,
    restart: bool | None = None,
    address: str | None = None,
    keys: bool | None = None,
    cwd: Path | None = None,
) -> DevSettings:
    """Resolve each setting: the command line, then `THINLINK_*`, then pyproject, then
    the default. Paths given on the command line or in the environment are relative to
    `cwd` (default: the current directory), those in pyproject.toml to the project
    `root`. Every value present is checked, also one another source overrides: a value
    of the wrong kind, or a watched path that does not exist, is a `ConfigError` that
    says where it came from."""
    here = Path(cwd) if cwd is not None else Path.cwd()
    given = {
        "watch": watch,
        "include": include,
        "exclude": exclude,
        "poll": poll,
        "restart": restart,
        "address": address,
        "keys": keys,
    }
    file = pyproject_settings(root)
    where = f"{root / 'pyproject.toml'} [tool.thinlink]"
    chosen: dict[str, tuple[object, str, Path]] = {}  # name -> (value, origin, base dir)
    for name, (from_env, from_file, default) in _DEV_KINDS.items():
        env_name = "THINLINK_" + name.upper()
        env = from_env(env_name, os.environ[env_name]) if os.environ.get(env_name) else None
        configured = from_file(f"{where} {name}", file[name]) if name in file else None
        if given[name] not in (None, ()):
            chosen[name] = (given[name], "the command line", here)
        elif env is not None:
            chosen[name] = (env, env_name, here)
        elif configured is not None:
            chosen[name] = (configured, f"{where} {name}", root)
        else:
            chosen[name] = (default, "the default", root)
    paths, origin, base = chosen["watch"]
    resolved = tuple((base / p).resolve() for p in (paths or (str(root),)))  # type: ignore[union-attr]
    for path in resolved:
        if not path.exists():
            raise ConfigError(f"watched path does not exist: {path} (from {origin})")
    return DevSettings(
        watch=resolved,
        include=tuple(chosen["include"][0]),  # type: ignore[arg-type]
        exclude=tuple(chosen["exclude"][0]),  # type: ignore[arg-type]
        poll=bool(chosen["poll"][0]),
        restart=bool(chosen["restart"][0]),
        address=chosen["address"][0],  # type: ignore[arg-type]
        keys=bool(chosen["keys"][0]),
    )


# Parsing each setting from the environment (a string) and checking it from pyproject.


def _env_paths(name: str, value: str) -> tuple[str, ...]:
    return tuple(p for p in value.split(os.pathsep) if p)


def _env_globs(name: str, value: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in value.split(",") if p.strip())


def _env_flag(name: str, value: str) -> bool:
    word = value.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={value!r}: expected 1/0, true/false, yes/no or on/off")


def _env_text(name: str, value: str) -> str:
    return value


def _strings(where: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
    return tuple(value)


def _flag(where: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    return value


def _text(where: str, value: object) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


_DEV_KINDS = {  # name: (from the environment, from pyproject, default)
    "watch": (_env_paths, _strings, ()),
    "include": (_env_globs, _strings, ("*.py",)),
    "exclude": (_env_globs, _strings, ()),
    "poll": (_env_flag, _flag, False),
    "restart": (_env_flag, _flag, True),
    "address": (_env_text, _text, None),
    # Off unless asked: an app that reads the terminal (input(), curses) would have to
    # share its keys with thinlink dev.
    "keys": (_env_flag, _flag, False),
}
