"""What `%load_ext thinlink` prints: one line per patch, clear errors, the status page.

Plain functions from the reloader's data (`Update`, `Status`) to lines of text, each with
the stream it belongs on (errors and warnings on stderr).
"""

from __future__ import annotations

import time

from .reloader import Status, Update

__all__ = ["Line", "PREFIX", "status_lines", "update_lines"]

PREFIX = "thinlink: "
_LONGEST = 200  # characters of names on a patch line before "... and N more"

Line = tuple[str, bool]  # (text, is an error or warning)


def update_lines(update: Update, *, during: str = "") -> list[Line]:
    """The lines that tell what `update` did; none when it was `quiet`. `during` is said
    after the patch line (a patch applied while a cell ran, or queued by the last one)."""
    lines: list[Line] = []
    if update.errors:
        lines.append((f"{PREFIX}not patched: a changed file does not build", True))
        lines.extend((error, True) for error in update.errors)
        lines.append((f"{PREFIX}the code runs on the last version that built", True))
    for name, why in update.held:
        lines.append((f"{PREFIX}{name} not patched: {why}", True))
    for name, reason in update.restart:
        lines.append(
            (
                f"{PREFIX}{name} not patched, it needs a kernel restart: {reason}; "
                f"the kernel keeps running the previous version of {name} "
                "(restart it when you choose)",
                True,
            )
        )
    if update.failure is not None:
        lines.append(
            (f"{PREFIX}patch not applied, nothing changed (rolled back): {update.failure}", True)
        )
    report = update.report
    if report is not None:
        done = _changes(update)
        if done:
            suffix = f" {during}" if during else ""
            lines.append((f"{PREFIX}{done} ({update.ms:.1f} ms){suffix}", False))
        lines.extend((f"{PREFIX}warning: {w}", True) for w in report.warnings)
    return lines


def _changes(update: Update) -> str:
    """ "patched m.f, m.C.g; re-ran m.LIMIT; added m.h; removed m.old" from the report."""
    report = update.report
    assert report is not None
    parts = []
    for verb, names in (
        ("patched", [_dotted(n) for n in report.patched]),
        ("re-ran", [_rerun(n, update.rerun_names) for n in report.rerun]),
        ("added", [_dotted(n) for n in report.added]),
        ("removed", [_dotted(n) for n in report.removed]),
        ("rebound", list(report.rebound)),
    ):
        if names:
            parts.append(f"{verb} {_shorten(list(dict.fromkeys(names)))}")
    return "; ".join(parts)


def _dotted(name: str) -> str:
    module, _, qualname = name.partition(":")
    return f"{module}.{qualname}" if qualname else module


def _rerun(name: str, defines: dict[str, str]) -> str:
    module, _, line = name.rpartition(":")
    what = defines.get(name)
    return f"{module}.{what}" if what else f"{module} line {line}"


def _shorten(names: list[str]) -> str:
    shown: list[str] = []
    length = 0
    for name in names:
        if shown and length + len(name) > _LONGEST:
            return ", ".join(shown) + f" and {len(names) - len(shown)} more"
        shown.append(name)
        length += len(name) + 2
    return ", ".join(shown)


def status_lines(status: Status | None, *, active: bool, watcher: str) -> list[str]:
    """`%thinlink`: the project, what is tracked, the last patch, what is behind."""
    if status is None:
        return [f"{PREFIX}not started (no project)"]
    lines = [
        f"{PREFIX}{'on' if active else 'off'}, project {status.root}",
        f"  cache: {status.cache_dir}",
        f"  tracked: {len(status.tracked)} imported modules of the project's {status.modules}"
        + (f": {_shorten(list(status.tracked))}" if status.tracked else ""),
        f"  during a cell: saves go live at hotpatch.call / hotpatch.safepoint() ({watcher})",
    ]
    last = status.last
    if last is None:
        lines.append("  last patch: none yet")
    else:
        at = time.strftime("%H:%M:%S", time.localtime(last.when))
        said = [text for text, _ in update_lines(last)] or ["nothing the code does changed"]
        lines.append(f"  last patch ({at}): {said[0].removeprefix(PREFIX)}")
        lines.extend(f"    {text.removeprefix(PREFIX)}" for text in said[1:])
    for name, why in status.behind:
        lines.append(f"  behind its file: {name}: {why}")
    for error in status.errors:
        lines.append(f"  does not build: {error.splitlines()[0]}")
    for warning in status.warnings:
        lines.append(f"  warning: {warning}")
    return lines
