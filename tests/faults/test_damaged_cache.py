"""Every file the cache writes, damaged every way: the program still runs right.

Issue 12, items 2, 3 and 9. After each damage, `thinlink build` and `thinlink run
prog.py` give exactly python's output, or one clear message and then python's output
on the next build (`recovers`). The files are whatever the cache holds after two builds
(found by walking it, told apart by content: `damage.cache_files`); the journal probes
first leave the database with a write-ahead log, as a killed build would.
"""

from __future__ import annotations

import pytest

from .commands import Verdict, recovers
from .damage import (
    CORRUPTIONS,
    CacheFile,
    held_tags,
    swap_files,
    swap_values,
    value_pairs,
)
from .probes import FULL, Ledger, sample, seeded
from .sample import TAGS, Template, older_files, touched_files

DAMAGED_ROLES = ("database", "journal", "value", "image", "ref", "manifest")
# The quick run's damage per role (each to one seeded file); a full sweep does all.
QUICK = {
    "database": tuple(CORRUPTIONS),
    "journal": ("truncate-half", "flip", "garbage"),
    "value": ("truncate-half", "flip", "zero-block", "delete"),
    "image": ("truncate-1", "flip", "garbage"),
    "ref": ("truncate-0", "garbage", "delete"),
    "manifest": ("truncate-half", "flip", "delete"),
}
# What is checked after the first build and run (see `probe`).
LATER = ("edit", "older") if FULL else ("edit",)
# Seeds per file in a full sweep (the quick run damages one seeded file once).
FULL_SEEDS = {"flip": 8, "zero-block": 4, "garbage": 2}


def probe(template: Template, ledger: Ledger, what: str, later: tuple[str, ...] = ()) -> Verdict:
    """Build and run on the damaged cache (`recovers`); then, for each of `later`, make
    the change and check again: "edit", a comment added to the program (a new build,
    its image made from what the cache holds); "older", the older sources back (as
    after a `git checkout`: the older build's values served again)."""
    verdict = recovers(template.root, template.expected, template.shapes)
    if verdict.held and "edit" in later:
        template.write(touched_files())
        again = recovers(template.root, template.expected, template.shapes)
        verdict = verdict.then(again, "after an edit")
    if verdict.held and "older" in later:
        template.write(older_files())
        again = recovers(template.root, template.expected_older, template.shapes)
        verdict = verdict.then(again, "with the older sources back")
    ledger.record(what, verdict)
    return verdict


@pytest.mark.parametrize(
    ("role", "corruption"),
    [(r, c) for r in DAMAGED_ROLES for c in CORRUPTIONS if FULL or c in QUICK[r]],
)
def test_a_damaged_file(template: Template, ledger: Ledger, role: str, corruption: str) -> None:
    damage = CORRUPTIONS[corruption]
    template.restore(wal=role == "journal")
    targets = sample(template.files(role), 1, role, corruption)
    seeds = range(FULL_SEEDS.get(corruption, 1) if FULL else 1)
    for i, (target, seed) in enumerate((t, s) for t in targets for s in seeds):
        if i:
            template.restore(wal=role == "journal")
        done = damage(target.path, seeded(role, corruption, target.shown, seed))
        probe(template, ledger, f"{target}: {done}", LATER)
    ledger.check()


def test_every_file_damaged_once(template: Template, ledger: Ledger) -> None:
    """Each file, whatever it is (also ones no probe above knows), damaged one seeded
    way; the quick run takes the unknown files and a few others."""
    template.restore()
    found = template.files()
    others = [f for f in found if f.role == "other"]
    chosen = others + sample([f for f in found if f.role != "other"], 3, "every file")
    for target in chosen if not FULL else found:
        rng = seeded("every file", target.shown)
        name = rng.choice(sorted(CORRUPTIONS))
        template.restore()
        done = CORRUPTIONS[name](target.path, rng)
        probe(template, ledger, f"{target}: {done}", ("edit",))
    ledger.check()


@pytest.mark.parametrize("role", ("value", "image", "manifest", "ref", "journal"))
def test_two_files_of_a_kind_swapped(template: Template, ledger: Ledger, role: str) -> None:
    """Two values, images, manifests or refs exchanged: each still passes a check of its
    own content, so only binding the content to its name catches it. Same-sized pairs
    holding different modules' content come first: those would print wrong numbers."""
    template.restore(wal=role == "journal")
    files = template.files(role)
    pairs = [(a, b) for i, a in enumerate(files) for b in files[i + 1 :]]
    assert pairs, f"only one {role} file in the cache: {files}"

    def telling(pair: tuple[CacheFile, CacheFile]) -> bool:
        a, b = pair
        same_size = a.path.stat().st_size == b.path.stat().st_size
        return same_size and held_tags(a.path, TAGS) != held_tags(b.path, TAGS)

    chosen = [p for p in pairs if telling(p)] or pairs
    # Values: every telling pair (which of them are code and which sources, the probe
    # does not know); one of each other kind.
    for a, b in pairs if FULL else chosen if role == "value" else sample(chosen, 1, role):
        template.restore(wal=role == "journal")
        done = swap_files(a.path, b.path)
        probe(template, ledger, f"{a} and {b}: {done}", ("edit", "older"))
    ledger.check()


def test_two_values_swapped_inside_the_database(template: Template, ledger: Ledger) -> None:
    """Two rows' values of the same type and size swapped by SQLite itself (the
    database stays well-formed): two modules of the same shape that print different
    numbers trade code, sources or records."""
    template.restore()
    (database,) = template.files("database")
    pairs = value_pairs(database.path, TAGS)
    crossing = [p for p in pairs if p.crosses_modules]
    assert crossing, "no two values of different modules have the same size in the database"
    rest = [p for p in pairs if not p.crosses_modules]
    chosen = pairs if FULL else sample(crossing, 3, "rows") + sample(rest, 1, "rows")
    for pair in chosen:
        template.restore()
        (database,) = template.files("database")
        done = swap_values(database.path, pair)
        probe(template, ledger, f"database {database.shown}: {done}", ("edit", "older"))
    ledger.check()


@pytest.mark.parametrize("corruption", ("truncate-half", "garbage", "zero-block", "flip"))
def test_a_damaged_database_then_patch(template: Template, ledger: Ledger, corruption: str) -> None:
    """`thinlink patch` after an edit, on a damaged database: a bundle (or one message,
    then a bundle), and the edited program runs right after."""
    template.restore()
    (database,) = template.files("database")
    done = CORRUPTIONS[corruption](database.path, seeded("patch", corruption))
    verdict = template.patch_and_run()
    ledger.record(f"database {database.shown}: {done}, then patch", verdict)
    ledger.check()
