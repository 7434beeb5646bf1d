"""Every file the cache writes, damaged every way: the program still runs right.

Issue 12, items 2, 3 and 9. After each damage, `thinlink build` and `thinlink run
prog.py` give exactly python's output, or one clear message and then python's output
on the next build (`recovers`). The files are whatever the cache holds after two builds
(found by walking it, told apart by content: `damage.cache_files`); the journal probes
first leave the database with a write-ahead log, as a killed build would.

Damage can lie in wait: a value nobody reads until an image is made again. So the
probes on the database and the values, and every swap, also check the program after an
edit (a new build, whose image is made from what the cache holds), and the swaps with
the older sources back too (`probe`).
"""

from __future__ import annotations

import pytest

from .commands import Verdict, recovers
from .damage import CORRUPTIONS, CacheFile, swap_files, swap_values, value_pairs
from .probes import FULL, Ledger, pick, sample, seeded
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
# Seeds per file in a full sweep (the quick run damages one seeded file once).
FULL_SEEDS = {"flip": 8, "zero-block": 4, "garbage": 2}
LATENT = ("database", "value")  # roles whose damage the quick run also checks after an edit


def probe(template: Template, ledger: Ledger, what: str, later: tuple[str, ...] = ()) -> Verdict:
    """Build and run on the damaged cache (`recovers`); then, for each of `later`, make
    the change and check again: "edit", a comment added to the program (a new build,
    its image made from what the cache holds); "older", the older sources back (as
    after a `git checkout`: the older build served again)."""
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
    later = ("edit", "older") if FULL else ("edit",) if role in LATENT else ()
    template.restore(wal=role == "journal")
    targets = sample(template.files(role), 1, role, corruption)
    seeds = range(FULL_SEEDS.get(corruption, 1) if FULL else 1)
    for i, (target, seed) in enumerate((t, s) for t in targets for s in seeds):
        if i:
            template.restore(wal=role == "journal")
        done = damage(target.path, seeded(role, corruption, target.label, seed))
        probe(template, ledger, f"{target}: {done}", later)
    ledger.check()


def test_every_file_damaged_once(template: Template, ledger: Ledger) -> None:
    """Each file, whatever it is (also ones no probe above knows), damaged one seeded
    way; the quick run takes the unknown files and two others."""
    template.restore()
    found = template.files()
    others = [f for f in found if f.role == "other"]
    chosen = found if FULL else others + sample([f for f in found if f.role != "other"], 2, "all")
    for target in chosen:
        rng = seeded("every file", target.label)
        name = rng.choice(sorted(CORRUPTIONS))
        template.restore()
        done = CORRUPTIONS[name](target.path, rng)
        probe(template, ledger, f"{target}: {done}", ("edit",))
    ledger.check()


@pytest.mark.parametrize("role", ("value", "image", "manifest", "ref", "journal"))
def test_two_files_of_a_kind_swapped(template: Template, ledger: Ledger, role: str) -> None:
    """Two values, images, manifests or refs exchanged: each still passes a check of its
    own content, so only binding the content to its name catches it. The quick run
    takes the telling pairs: the same size and different modules' content (which would
    print the wrong numbers), the largest first (a module's code is larger than its
    source)."""
    template.restore(wal=role == "journal")
    files = template.files(role)
    pairs = [(a, b) for i, a in enumerate(files) for b in files[i + 1 :]]
    assert pairs, f"only one {role} file in the cache: {files}"

    def telling(pair: tuple[CacheFile, CacheFile]) -> bool:
        a, b = pair
        return a.path.stat().st_size == b.path.stat().st_size and a.tags != b.tags

    chosen = sorted(
        (p for p in pairs if telling(p)), key=lambda p: -p[0].path.stat().st_size
    ) or sample(pairs, 1, "swap", role)
    for a, b in pairs if FULL else chosen[:2]:
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
    if FULL:  # every pair of module contents; of the others (keys...), 40 per column
        chosen = crossing + [
            pair
            for column in sorted({(p.table, p.column) for p in rest})
            for pair in pick([p for p in rest if (p.table, p.column) == column], 40, *column)
        ]
    else:
        chosen = sample(crossing, 2, "rows") + sample(rest, 1, "rows")
    for pair in chosen:
        template.restore()
        done = swap_values(database.path, pair)
        probe(template, ledger, f"{database}: {done}", ("edit", "older"))
    ledger.check()


@pytest.mark.parametrize(
    "corruption", ("truncate-half", "flip") + (("garbage", "zero-block") if FULL else ())
)
def test_a_damaged_database_then_patch(template: Template, ledger: Ledger, corruption: str) -> None:
    """An edit made while the program runs, on a damaged database: `thinlink patch`
    makes a bundle that carries it (or says one thing and makes it next time), and the
    edited program then builds and runs right (`Template.patch_and_run`)."""
    template.restore()
    (database,) = template.files("database")
    done = CORRUPTIONS[corruption](database.path, seeded("patch", corruption))
    verdict = template.patch_and_run()
    ledger.record(f"{database}: {done}, then an edit and a patch", verdict)
    ledger.check()
