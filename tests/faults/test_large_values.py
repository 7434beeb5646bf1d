"""A large value damaged between two builds: the next patch is still made.

Issue 12, item 9. The cache keeps values over 1 MiB in files of their own, beside its
database, where a no-op build does not look. One of them damaged, then a no-op build,
then an edit of the large modules: `thinlink patch` makes the patch (or says one thing
and makes it on the next try), and so does `thinlink dev` for its running app.
"""

from __future__ import annotations

import re
from pathlib import Path

from e2e.conftest import write
from e2e.devapp import DevApp

from .commands import Step, Verdict, message_problems, python, thinlink
from .damage import CORRUPTIONS
from .probes import FULL, Ledger, sample, seeded
from .sample import BIG, Template, project_files

DAMAGE = ("flip", "truncate-half", "zero-block", "delete")


def test_a_damaged_large_value_then_patch(template: Template, ledger: Ledger) -> None:
    template.restore()
    values = template.files("value")
    for target in values if FULL else sample(values, 2, "large"):
        for name in DAMAGE if FULL else sample(list(DAMAGE), 1, "large", target.label):
            template.restore()
            done = CORRUPTIONS[name](target.path, seeded("large", target.label, name))
            noop = thinlink("build", cwd=template.root)
            verdict = Verdict(message_problems(noop, template.shapes), [noop])
            verdict = verdict.then(template.patch_and_run(), "patch")
            ledger.record(f"{target}: {done}; a no-op build; an edit", verdict)
    ledger.check()


def test_a_damaged_large_value_then_dev_patches(
    template: Template, ledger: Ledger, tmp_path: Path
) -> None:
    """`thinlink dev` started after the damage and a no-op build: an edit of the large
    module the damaged value belongs to (one file, one save) reaches the running app,
    patched or restarted, and the session prints no traceback."""
    template.restore()
    target = sample(template.files("value"), 1, "dev")[0]
    (module,) = (tag.decode().removeprefix("tag:") for tag in target.tags)
    values = [11, 22]
    values[BIG.index(module)] += 1
    edited = project_files(big_values=(values[0], values[1]))
    write(tmp_path / "as edited", edited)
    wanted = python("dev_app.py", "--once", cwd=tmp_path / "as edited").stdout.splitlines()[-1]
    done = CORRUPTIONS["flip"](target.path, seeded("dev", target.label))
    noop = thinlink("build", cwd=template.root)
    problems = message_problems(noop, template.shapes)
    with DevApp(template.root, "dev_app.py", cache_dir=template.cache) as app:
        app.wait_out(r"^START$")
        app.wait_out(r"^VALUES ")
        template.write(edited)
        try:
            app.wait_out(rf"^{re.escape(wanted)}$", timeout=10)
        except AssertionError:
            problems.append(f"the app never printed {wanted!r}")
    session = Step("thinlink dev dev_app.py", app.proc.returncode, app.out.text(), app.err.text())
    if "Traceback (most recent call last)" in session.stderr:
        problems.append("traceback from `thinlink dev`")
    verdict = Verdict(problems, [noop, session])
    ledger.record(f"{target}: {done}; a no-op build; `thinlink dev`, {module} edited", verdict)
    ledger.check()
