"""Fixtures of the fault-injection suite: the built sample project, and a ledger."""

from __future__ import annotations

import pytest

from .probes import Ledger
from .sample import Template


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    """The sample project built twice, with its cache kept for `restore()`."""
    base = tmp_path_factory.mktemp("faults")
    return Template(base / "project", base / "pristine-cache")


@pytest.fixture
def ledger(request: pytest.FixtureRequest) -> Ledger:
    return Ledger(request.node.name)
