"""Settings, each resolved in one place: command line, then environment, then
`[tool.thinlink]` in pyproject.toml, then the default."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

__all__ = ["cache_dir_for", "pyproject_settings", "KNOWN_KEYS", "DevSettings", "dev_settings"]

KNOWN_KEYS = frozenset({"cache-dir", "watch", "include", "exclude", "poll", "restart", "address"})


def pyproject_settings(root: Path) -> dict[str, object]:
    """The `[tool.thinlink]` table of `root/pyproject.toml` (empty if none)."""
    path = root / "pyproject.toml"
    try:
        with path.open("rb") as f:
            table = tomllib.load(f).get("tool", {}).get("thinlink", {})
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    unknown = sorted(set(table) - KNOWN_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown [tool.thinlink] setting(s): {', '.join(unknown)}")
    return table


def cache_dir_for(root: Path, given: str | os.PathLike[str] | None = None) -> Path:
    """Where the cache lives: `--cache-dir`, `THINLINK_CACHE_DIR`, pyproject, `.thinlink`."""
    settings = pyproject_settings(root)  # read even when overridden: a bad file is an error
    if given:
        return Path(given).resolve()
    env = os.environ.get("THINLINK_CACHE_DIR")
    if env:
        return Path(env).resolve()
    configured = settings.get("cache-dir")
    if configured is not None:
        if not isinstance(configured, str):
            raise ConfigError(f"{root / 'pyproject.toml'}: cache-dir must be a string")
        return (root / configured).resolve()
    return root / ".thinlink"


@dataclass(frozen=True)
class DevSettings:
    """What `thinlink dev` watches and how it behaves."""

    watch: tuple[Path, ...]
    include: tuple[str, ...] = ("*.py",)
    exclude: tuple[str, ...] = ()
    poll: bool = False
    restart: bool = True
    address: str | None = None  # None: a Unix socket in a private directory


def dev_settings(
    root: Path,
    *,
    watch: tuple[str, ...] = (),
    include: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    poll: bool | None = None,
    restart: bool | None = None,
    address: str | None = None,
) -> DevSettings:
    """Resolve each setting: the command line, then `THINLINK_*`, then pyproject, then
    the default. A watched path that does not exist is an error."""
    file = pyproject_settings(root)
    env = os.environ

    def pick(given, env_name, key, parse, default):  # noqa: ANN001, ANN202
        if given not in (None, ()):
            return given
        if env.get(env_name):
            return parse(env[env_name])
        if key in file:
            return file[key]
        return default

    def split_paths(value: str) -> tuple[str, ...]:
        return tuple(p for p in value.split(os.pathsep) if p)

    def split_globs(value: str) -> tuple[str, ...]:
        return tuple(p.strip() for p in value.split(",") if p.strip())

    def boolean(value: str) -> bool:
        return value.strip().lower() in ("1", "true", "yes", "on")

    paths = tuple(pick(watch, "THINLINK_WATCH", "watch", split_paths, (str(root),)))
    resolved = tuple((root / p).resolve() for p in paths)
    for path in resolved:
        if not path.exists():
            raise ConfigError(f"watched path does not exist: {path}")
    settings = DevSettings(
        watch=resolved,
        include=tuple(pick(include, "THINLINK_INCLUDE", "include", split_globs, ("*.py",))),
        exclude=tuple(pick(exclude, "THINLINK_EXCLUDE", "exclude", split_globs, ())),
        poll=bool(pick(poll, "THINLINK_POLL", "poll", boolean, False)),
        restart=bool(pick(restart, "THINLINK_RESTART", "restart", boolean, True)),
        address=pick(address, "THINLINK_ADDRESS", "address", str, None),
    )
    for name in ("include", "exclude"):
        if not all(isinstance(g, str) for g in getattr(settings, name)):
            raise ConfigError(f"{root / 'pyproject.toml'}: {name} must be a list of strings")
    return settings
