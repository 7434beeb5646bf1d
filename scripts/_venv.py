"""Create (once) and reuse a virtual environment for this interpreter, with the
project installed in editable mode. Standard library only: it runs on a fresh machine."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def ensure_venv(extras: str = "test") -> Path:
    """Path of the venv's python, creating and installing into the venv if needed."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    home = ROOT / f".venv-{version}"
    python = home / "bin" / "python"
    stamp = home / ".installed"
    project = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    asked = {e for e in extras.split(",") if e}
    # The stamp says which extras are installed for this pyproject.toml: a venv that has
    # them (or more: the test command installs more than the demo needs) is used as is.
    if stamp.exists() and python.exists():
        done_project, _, done_extras = stamp.read_text().partition(" ")
        if done_project == project and asked <= set(filter(None, done_extras.split(","))):
            return python
        if done_project == project:
            asked |= set(filter(None, done_extras.split(",")))
    extras = ",".join(sorted(asked))
    if not python.exists():
        print(f"creating {home.name} ...", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(home)
    print(f"installing thinlink[{extras}] into {home.name} ...", file=sys.stderr)
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            # compat mode: a path entry, not an import hook that every start-up pays for
            "-e",
            f"{ROOT}[{extras}]" if extras else str(ROOT),
            "--config-settings",
            "editable_mode=compat",
        ],
        check=True,
    )
    stamp.write_text(f"{project} {extras}")
    return python
