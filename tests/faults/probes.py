"""Seeding, and the ledger of probes a test runs.

A test here runs many probes (each a damage and a check) and fails once at the end,
listing every probe that did not hold with what it printed, so one run shows the
whole picture rather than the first failure.
"""

from __future__ import annotations

import json
import os
import random

import pytest

from .commands import Verdict

__all__ = ["FULL", "SEED", "Ledger", "pick", "sample", "seeded"]

FULL = os.environ.get("THINLINK_FAULTS_FULL") == "1"
SEED = int(os.environ.get("THINLINK_FAULTS_SEED", "12"))
_REPORT = os.environ.get("THINLINK_FAULTS_REPORT")


def seeded(*labels: object) -> random.Random:
    """A generator seeded by the suite's seed and `labels` (one per probe)."""
    return random.Random(":".join(map(str, (SEED, *labels))))


def pick(items: list, count: int, *labels: object) -> list:
    """`count` of `items` chosen by the seed (all if there are no more), in any run."""
    if len(items) <= count:
        return list(items)
    return seeded("pick", *labels).sample(items, count)


def sample(items: list, quick: int, *labels: object) -> list:
    """All of `items` in a full sweep; else `quick` of them, chosen by the seed."""
    if FULL or len(items) <= quick:
        return list(items)
    return seeded("sample", *labels).sample(items, quick)


class Ledger:
    """The probes of one test: `record` each verdict, `check` at the end."""

    def __init__(self, test: str) -> None:
        self.test = test
        self.failures: list[str] = []
        self.count = 0

    def record(self, probe: str, verdict: Verdict) -> bool:
        self.count += 1
        if not verdict.held:
            self.failures.append(f"[{probe}]\n{verdict.report()}")
        if _REPORT:
            with open(_REPORT, "a") as f:
                entry = {"test": self.test, "probe": probe, "held": verdict.held}
                entry["problems"] = verdict.problems
                entry["output"] = [step.excerpt() for step in verdict.steps][-4:]
                f.write(json.dumps(entry) + "\n")
        return verdict.held

    def check(self) -> None:
        assert self.count, "no probe ran"
        if self.failures:
            pytest.fail(
                f"{len(self.failures)} of {self.count} probes did not hold "
                f"(THINLINK_FAULTS_SEED={SEED}):\n\n" + "\n\n".join(self.failures),
                pytrace=False,
            )
