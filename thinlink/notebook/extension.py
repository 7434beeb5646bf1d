"""The IPython side of `%load_ext thinlink`: cell events, the `%thinlink` magic, the watcher.

Before each cell (`pre_run_cell`) the session asks the reloader for what changed and applies
it on the main thread; after the cell (`post_run_cell`) it notes that no cell runs. While
a cell runs, a watcher thread (the one `thinlink dev` uses) builds each save and queues the
patch for the main thread's next safe point (`hotpatch.call`, a `@hotpatch.hot` function,
`hotpatch.safepoint()`), so a long loop that passes through one picks up saves; a cell
without safe points gets the patch before the next cell, as if it had been saved then.
One patch is queued at a time: the next is made once it went live, from what it left.

Only this module imports IPython (it is loaded by `%load_ext thinlink`, never otherwise).
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from IPython.core.magic import Magics, line_magic, magics_class

import hotpatch
from thinlink.config import dev_settings
from thinlink.dev.watch import SourceFilter, backend_name, settle, watch_changes
from thinlink.errors import ThinlinkError
from thinlink.launch import find_root

from .messages import PREFIX, status_lines, update_lines
from .reloader import Prepared, Reloader, Update
from .starimports import StarImports

__all__ = ["NotebookSession", "ThinlinkMagics", "load", "unload"]

USAGE = "usage: %thinlink [status | on | off | rollback | project PATH]"


@dataclass
class _Queued:
    """A patch submitted for the main thread's next safe point."""

    item: hotpatch.PendingPatch
    prepared: Prepared


class NotebookSession:
    """One shell's reloader, its cell hooks and its watcher thread."""

    def __init__(self, shell: object) -> None:
        self.shell = shell
        self.active = True
        self.reloader: Reloader | None = None
        self._lock = threading.RLock()  # the reloader's too: the queued patch, the reloader
        self._queued: _Queued | None = None
        self._in_cell = threading.Event()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._watcher_name = "no watcher"
        self._late = False  # applying, before a cell, what the last one queued
        self.star_imports = StarImports()

    # starting and stopping ----------------------------------------------------------

    def start(self, root: str | os.PathLike[str]) -> None:
        """Build the project at `root`, track its modules and watch its files."""
        hotpatch.enable()  # `hotpatch.call` becomes a safe point
        reloader = Reloader(root, lock=self._lock)
        started = reloader.start()
        with self._lock:
            self.reloader = reloader
        _say(
            f"{PREFIX}project {reloader.root}: {started.modules} modules built in "
            f"{started.ms:.0f} ms, {started.tracked} imported ones tracked; saved changes "
            "go live before each cell"
        )
        for error in started.errors[:3]:
            _say(f"{PREFIX}does not build: {error.splitlines()[0]}", error=True)
        if len(started.errors) > 3:
            _say(f"{PREFIX}... and {len(started.errors) - 3} more files that do not build", True)
        self._show_notices()
        self._start_watcher(reloader.root)

    def stop(self) -> None:
        """Stop watching and tracking; write the cache. The code stays as it is now."""
        self._stop.set()
        with self._lock:
            if self.reloader is not None:
                self.reloader.close()
                self.reloader = None

    def switch(self, root: str | os.PathLike[str]) -> None:
        """Follow another project from now on."""
        self.stop()
        self._stop = threading.Event()
        self.start(root)

    def _start_watcher(self, root: str) -> None:
        try:
            settings = dev_settings(Path(root))
        except ThinlinkError as exc:
            _say(f"{PREFIX}no watcher while a cell runs: {exc}", error=True)
            return
        self._watcher_name = f"watching with {backend_name(settings.poll)}"
        source_filter = SourceFilter(settings.include, settings.exclude, roots=settings.watch)
        self._watcher = threading.Thread(
            target=self._watch,
            args=(settings.watch, source_filter, settings.poll, self._stop),
            name="thinlink-notebook-watch",
            daemon=True,
        )
        self._watcher.start()

    # cells ------------------------------------------------------------------------

    def pre_run_cell(self, info: object = None) -> None:
        """Before a cell: apply what was saved since the last one (and what the last one
        queued but never reached a safe point for)."""
        source = getattr(info, "raw_cell", None)
        if isinstance(source, str):
            self.star_imports.note_cell(source)
        try:
            if self.active:
                self.catch_up()
        except Exception as exc:  # boundary: the user's cell runs whatever happens here
            _say(f"{PREFIX}internal error, nothing patched: {exc!r}", error=True)
        finally:
            self._in_cell.set()

    def post_run_cell(self, result: object = None) -> None:
        """After a cell: take in the project modules it imported, while their files most
        likely still hold what was imported (a version the build must have to patch them
        from; one saved before the next cell would be unknown to it)."""
        self._in_cell.clear()
        try:
            if self.active and self.reloader is not None and self.reloader.imported_since():
                self.catch_up()
        except Exception as exc:  # boundary
            _say(f"{PREFIX}internal error, nothing patched: {exc!r}", error=True)

    def catch_up(self) -> Update | None:
        """Apply, on this (the main) thread, every change saved since the last time."""
        with self._lock:
            reloader = self.reloader
            if reloader is None:
                return None
            if self._queued is not None:
                self._late = True
                try:
                    hotpatch.safepoint()
                finally:
                    self._late = False
                self._take_queued()
            self._show_notices()
            changed = reloader.poll()
            if not changed:
                return None
            update = reloader.update(changed)
            _show(update)
            self._bring_in(update)
        return update

    def _bring_in(self, update: Update) -> None:
        """Names the patch added to star-imported modules join the notebook's namespace."""
        namespace = getattr(self.shell, "user_ns", None)
        if update.report is not None and namespace is not None:
            self.star_imports.bring_in(namespace, update.report)

    def _take_queued(self, report: hotpatch.PatchReport | None = None) -> None:
        """Take in the queued patch's outcome, once known (under the lock): `report` when
        it was just applied (`_on_patch`), else what its `PendingPatch` says."""
        queued = self._queued
        if queued is None or self.reloader is None:
            return
        item = queued.item
        if report is None:
            if not item.done.is_set():
                return
            report = item.report
        self._queued = None
        update = self.reloader.finish(queued.prepared, report=report, error=item.error)
        during = "(saved during the last cell)" if self._late else "(during the cell)"
        _show(update, during=during)
        self._bring_in(update)

    def _on_patch(self, report: hotpatch.PatchReport) -> None:
        """`hotpatch.on_patch`: the queued patch went live at a safe point (on the main
        thread, in the running cell): said right there, in the cell's output.

        Runs under the runtime's apply lock: it only tries the session's lock, which a
        thread may hold while it waits for the apply lock (the watcher then says it)."""
        if self._queued is None or not self._lock.acquire(blocking=False):
            return
        try:
            queued = self._queued
            if (
                queued is not None
                and queued.prepared.bundle is not None
                and not report.rolled_back
                and report.build_id == queued.prepared.bundle.target_build
            ):
                self._take_queued(report)
        finally:
            self._lock.release()

    # during a cell ------------------------------------------------------------------

    def _watch(self, paths, source_filter, poll: bool, stop: threading.Event) -> None:  # noqa: ANN001
        for _ in watch_changes(paths, source_filter, stop, poll=poll):
            if stop.is_set():
                return
            if not (self.active and self._in_cell.is_set()):
                continue  # the next cell's check sees the change
            try:
                self._update_during_cell(stop)
            except Exception as exc:  # boundary: the watcher goes on
                _say(f"{PREFIX}internal error while patching: {exc!r}", error=True)

    def _update_during_cell(self, stop: threading.Event) -> None:
        """Build what changed and queue the patch; once it went live (at a safe point of
        the running cell), say so and look again (saves made meanwhile)."""
        while not stop.is_set() and self._in_cell.is_set():
            with self._lock:
                self._take_queued()
                queued = self._queued
                if queued is None:
                    reloader = self.reloader
                    if reloader is None:
                        return
                    changed = reloader.poll(modules=False)  # the main thread imports
                    if not changed:
                        return
                    settle(changed)  # the watcher may see a save before it is complete
                    prepared = reloader.prepare(changed)
                    if prepared.bundle is None or not prepared.bundle.modules:
                        _show(reloader.finish(prepared))
                        return
                    item = hotpatch.submit(prepared.bundle, log=False)
                    queued = self._queued = _Queued(item, prepared)
            while not queued.item.done.wait(0.05):
                if stop.is_set() or not self._in_cell.is_set():
                    return  # the next cell's check applies it (and says so)
            with self._lock:
                self._take_queued()  # refused or failed (a success was said at once)

    # the magic ------------------------------------------------------------------------

    def command(self, line: str) -> None:
        """`%thinlink [status | on | off | rollback | project PATH]`."""
        word, _, rest = line.strip().partition(" ")
        if word in ("", "status"):
            with self._lock:
                status = self.reloader.status() if self.reloader is not None else None
            for text in status_lines(status, active=self.active, watcher=self._watcher_name):
                _say(text)
        elif word == "on":
            self.active = True
            _say(f"{PREFIX}on: saved changes go live before each cell")
        elif word == "off":
            self.active = False
            _say(f"{PREFIX}off: saves are not applied until %thinlink on")
        elif word == "rollback":
            self._rollback()
        elif word == "project" and rest.strip():
            path = os.path.expanduser(rest.strip().strip("'\""))
            if not os.path.isdir(path):
                _say(f"{PREFIX}not a directory: {path}", error=True)
                return
            self.switch(path)
        else:
            _say(USAGE, error=True)

    def _rollback(self) -> None:
        with self._lock:
            if self.reloader is None:
                return
            try:
                report = self.reloader.rollback()
            except hotpatch.PatchError as exc:
                _say(f"{PREFIX}{exc}", error=True)
                return
            namespace = getattr(self.shell, "user_ns", None)
            if namespace is not None:
                self.star_imports.take_back(namespace, report)
        names = ", ".join(n.replace(":", ".") for n in report.patched + report.added)
        _say(
            f"{PREFIX}rolled back{': ' + names if names else ''}; those modules run their "
            "previous version until their files are saved again"
        )

    def _show_notices(self) -> None:
        if self.reloader is not None:
            for notice in self.reloader.take_notices():
                _say(f"{PREFIX}{notice}", error=True)


@magics_class
class ThinlinkMagics(Magics):
    """The `%thinlink` line magic."""

    def __init__(self, shell: object, session: NotebookSession) -> None:
        super().__init__(shell)
        self.session = session

    @line_magic
    def thinlink(self, line: str = "") -> None:
        """Hot patching of the project's modules before each cell.

        %thinlink                 status: project, tracked modules, last patch, warnings
        %thinlink off | on        stop / resume applying saved changes
        %thinlink rollback        undo the last patch
        %thinlink project PATH    follow the project at PATH instead
        """
        self.session.command(line)


_sessions: dict[int, NotebookSession] = {}


def _on_patch(report: hotpatch.PatchReport) -> None:
    # A function of this module, not a session's method: the runtime has no way to
    # unregister a callback, and this one keeps no session alive. Registered at each load
    # (a test may have cleared the runtime's callbacks); a second call finds nothing queued.
    for session in list(_sessions.values()):
        session._on_patch(report)


def load(shell: object) -> None:
    """`load_ipython_extension`: start a session for `shell`."""
    if id(shell) in _sessions:
        return
    hotpatch.on_patch(_on_patch)
    session = NotebookSession(shell)
    extensions = getattr(getattr(shell, "extension_manager", None), "loaded", ())
    if "autoreload" in extensions:
        _say(
            f"{PREFIX}the autoreload extension is loaded too: turn it off (%autoreload off) "
            "so that modules are not reloaded on top of their patches",
            error=True,
        )
    session.start(find_root())
    shell.register_magics(ThinlinkMagics(shell, session))  # type: ignore[attr-defined]
    shell.events.register("pre_run_cell", session.pre_run_cell)  # type: ignore[attr-defined]
    shell.events.register("post_run_cell", session.post_run_cell)  # type: ignore[attr-defined]
    _sessions[id(shell)] = session


def unload(shell: object) -> None:
    """`unload_ipython_extension`: stop the session (the code stays as patched)."""
    session = _sessions.pop(id(shell), None)
    if session is None:
        return
    for event, callback in (
        ("pre_run_cell", session.pre_run_cell),
        ("post_run_cell", session.post_run_cell),
    ):
        try:
            shell.events.unregister(event, callback)  # type: ignore[attr-defined]
        except ValueError:
            pass
    session.stop()


def _show(update: Update, during: str = "") -> None:
    for text, error in update_lines(update, during=during):
        _say(text, error)


def _say(text: str, error: bool = False) -> None:
    print(text, file=sys.stderr if error else sys.stdout, flush=True)
