"""Shared fixtures: the repository root on sys.path for subprocesses, and helpers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment for child Pythons: the repo importable, no inherited build state."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("THINLINK_", "HOTPATCH_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


@pytest.fixture
def python() -> str:
    return sys.executable
