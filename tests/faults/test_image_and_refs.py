"""The build image and the refs: damaged, they cost a message at most, never the run.

Issue 12, items 4 and 9. A corrupt image (two bytes changed) or a deleted one: `thinlink
run` still runs the program right (the image made again, at most one message), and so
does the run after it, with nothing to say; also when a no-op `thinlink build` came in
between. A ref padded with NULs: any message quotes a short excerpt of it, not 8 KB of
`\\x00`, and the next commands work.
"""

from __future__ import annotations

import random

import pytest

from .commands import Step, Verdict, message_problems, recovers, thinlink
from .damage import pad_with_nuls
from .probes import FULL, Ledger, seeded
from .sample import Template

SEEDS = range(10 if FULL else 1)


def change_two_bytes(data: bytearray, rng: random.Random) -> list[int]:
    offsets = sorted(rng.sample(range(len(data)), 2))
    for offset in offsets:
        data[offset] ^= rng.randrange(1, 256)
    return offsets


def runs_right(template: Template, step: Step, most: int) -> list[str]:
    """What is wrong with a `thinlink run prog.py` step: output, status, messages."""
    problems = message_problems(step, template.shapes, most=most)
    expected = template.expected
    if (step.returncode, step.stdout) != (expected.returncode, expected.stdout):
        problems.insert(0, f"the program did not run as under python (exit {step.returncode})")
    return problems


@pytest.mark.parametrize("between", ("run", "no-op build, then run"))
def test_a_corrupt_image_is_made_again(template: Template, ledger: Ledger, between: str) -> None:
    for seed in SEEDS:
        template.restore()
        changed = []
        for image in template.files("image"):
            data = bytearray(image.path.read_bytes())
            offsets = change_two_bytes(data, seeded("image", image.label, seed))
            image.path.write_bytes(data)
            changed.append(f"{image} at {offsets[0]} and {offsets[1]}")
        steps = []
        if between != "run":
            steps.append(thinlink("build", cwd=template.root))
        first = thinlink("run", "prog.py", cwd=template.root)
        second = thinlink("run", "prog.py", cwd=template.root)
        steps += [first, second]
        problems = [p for s in steps[:-2] for p in message_problems(s, template.shapes)]
        problems += runs_right(template, first, most=1)
        problems += [f"second run: {p}" for p in runs_right(template, second, most=0)]
        ledger.record(f"two bytes changed in {'; '.join(changed)}", Verdict(problems, steps))
    ledger.check()


def test_a_deleted_image_is_made_again(template: Template, ledger: Ledger) -> None:
    template.restore()
    for image in template.files("image"):
        image.path.unlink()
    first = thinlink("run", "prog.py", cwd=template.root)
    second = thinlink("run", "prog.py", cwd=template.root)
    problems = runs_right(template, first, most=1)
    problems += [f"second run: {p}" for p in runs_right(template, second, most=0)]
    ledger.record("every image deleted", Verdict(problems, [first, second]))
    ledger.check()


def test_a_ref_padded_with_nuls_is_quoted_short(template: Template, ledger: Ledger) -> None:
    """Each ref (every one at once in the quick run) padded with 8 KB of NULs, then
    `thinlink patch` first (it reads the refs before building), then build and run."""
    template.restore()
    refs = template.files("ref")
    for group in [[ref] for ref in refs] if FULL else [refs]:
        template.restore()
        for ref in group:
            pad_with_nuls(ref.path, seeded("nul"))
        steps = [thinlink("patch", "-o", "edit.bundle", cwd=template.root)]
        if steps[0].returncode != 0:
            steps.append(thinlink("patch", "-o", "edit.bundle", cwd=template.root))
        verdict = recovers(template.root, template.expected, template.shapes, steps=steps)
        final = thinlink("patch", "-o", "edit.bundle", cwd=template.root)
        if final.returncode != 0:
            verdict = Verdict([*verdict.problems, "`thinlink patch` still fails"], verdict.steps)
        verdict = verdict.then(Verdict(message_problems(final, template.shapes), [final]), "then")
        for step in verdict.steps:
            nuls = (step.stdout + step.stderr).count("\\x00") + step.stderr.count("\x00")
            if nuls > 64:
                verdict.problems.append(f"`{step.command}` printed {nuls} NULs")
        shown = ", ".join(map(str, group))
        ledger.record(f"{shown}: padded with 8192 NUL bytes", verdict)
    ledger.check()
