"""Settings, each resolved in one place: command line, then environment, then
`[tool.thinlink]` in pyproject.toml, then the default."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from .errors import ConfigError

__all__ = ["cache_dir_for", "pyproject_settings", "KNOWN_KEYS"]

KNOWN_KEYS = frozenset({"cache-dir"})


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
