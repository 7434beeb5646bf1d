"""Fixtures for the build side's tests."""

import pytest


@pytest.fixture(autouse=True)
def _no_cache_dir_from_the_environment(monkeypatch):
    """A THINLINK_CACHE_DIR in the developer's shell must not redirect the tests' caches."""
    monkeypatch.delenv("THINLINK_CACHE_DIR", raising=False)
