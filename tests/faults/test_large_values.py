"""A large value damaged between two builds: the next patch is still made.

Issue 12, item 9. The cache keeps values over 1 MiB in files of their own, beside its
database, where a no-op build does not look. One of them damaged, then a no-op build,
then an edit of the large modules: `thinlink patch` makes the patch (or says one thing
and makes it on the next try), and so does `thinlink dev` for its running app.
"""

from __future__ import annotations

import re

from e2e.devapp import DevApp

from .commands import Step, Verdict, message_problems, thinlink
from .damage import CORRUPTIONS
from .probes import FULL, Ledger, sample, seeded
from .sample import Template, edited_files

DAMAGE = ("flip", "truncate-half", "zero-block", "delete")


def test_a_damaged_large_value_then_patch(template: Template, ledger: Ledger) -> None:
    template.restore()
    values = template.files("value")
    for target in values if FULL else sample(values, 2, "large"):
        for name in DAMAGE if FULL else sample(list(DAMAGE), 1, "large", target.shown):
            template.restore()
            done = CORRUPTIONS[name](target.path, seeded("large", target.shown, name))
            noop = thinlink("build", cwd=template.root)
            verdict = Verdict(message_problems(noop, template.shapes), [noop])
            verdict = verdict.then(template.patch_and_run(), "patch")
            ledger.record(f"{target}: {done}; a no-op build; an edit", verdict)
    ledger.check()


def test_a_damaged_large_value_then_dev_patches(template: Template, ledger: Ledger) -> None:
    """`thinlink dev` started after the damage and a no-op build: an edit of both large
    modules' constants reaches the running app (patched, or restarted), and the session
    prints no traceback."""
    printed = dict(line.split() for line in template.expected_edited.stdout.splitlines())
    wanted = f"VALUES {printed['big_a']} {printed['shape_a']}"
    template.restore()
    target = sample(template.files("value"), 1, "dev")[0]
    done = CORRUPTIONS["flip"](target.path, seeded("dev", target.shown))
    noop = thinlink("build", cwd=template.root)
    problems = message_problems(noop, template.shapes)
    with DevApp(template.root, "dev_app.py", cache_dir=template.cache) as app:
        app.wait_out(r"^START$")
        app.wait_out(r"^VALUES ")
        template.write(edited_files())
        try:
            app.wait_out(rf"^{re.escape(wanted)}$", timeout=10)
        except AssertionError:
            problems.append(f"the app never printed {wanted!r}")
    session = Step("thinlink dev dev_app.py", app.proc.returncode, app.out.text(), app.err.text())
    if "Traceback (most recent call last)" in session.stderr:
        problems.append("traceback from `thinlink dev`")
    verdict = Verdict(problems, [noop, session])
    ledger.record(f"{target}: {done}; a no-op build; `thinlink dev`, an edit", verdict)
    ledger.check()
