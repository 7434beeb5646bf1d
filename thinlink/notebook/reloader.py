"""The reloader behind `%load_ext thinlink`: a kernel's modules kept in step with their files.

What we do. At start the project is built once (incrementally, from its cache), the stat of
every file is noted, new imports of the project's modules are tracked from then on
(`hotpatch.provenance.track`: the digest of the very bytes each one ran; those whose
file still holds the build's bytes load the build's code from its image, as under
`thinlink run`, instead of compiling), and the modules imported before are adopted
(`provenance.adopt`: vouched for by their code). Then, each time the kernel asks (before
a cell, or from the file watcher during one):

1. `poll()`: modules imported since are taken in (only when `sys.modules` grew), and the
   files of the imported project modules are stat-ed (`files.TrackedFiles`). Nothing
   else: with nothing changed, that is the whole cost.
2. `prepare(changed)`: the changed files are built (only their touched segments, as
   `thinlink dev` does) and a patch is made from what the kernel runs to the new build.
3. the patch is applied (`update()`, on the main thread) or queued for the main thread's
   next safe point (`hotpatch.submit`, from the watcher), and `finish()` takes the outcome.

Why the patch starts from what the kernel runs, module by module, and not from a build:
a kernel was not started from a build, and its modules need not be at one version. A
change that needs a restart is left out (its module stays at its version until the kernel
restarts), a rolled back patch leaves its modules behind their files, a module may have
been imported after its file changed. So the "old" side of each patch is made per module
from the source digest the runtime records for it (`provenance.digests`, kept by every
apply and rollback), looked up in the build cache; the runtime checks each module's
digest against the patch's base again before it changes anything.

Thread-safe: every method takes the reloader's lock (its owner's, when it gives one).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from types import CodeType, ModuleType

import hotpatch
from hotpatch import boot, provenance
from hotpatch.bundle import Bundle, ModulePatch
from hotpatch.image import ImageError
from thinlink.build.builder import Builder
from thinlink.build.cache import Cache
from thinlink.build.image import ensure_image
from thinlink.build.manifest import Manifest, ModuleEntry, make_build_id
from thinlink.errors import ThinlinkError
from thinlink.launch import cache_location, discover, is_source
from thinlink.patches.diff import ModulePlan
from thinlink.patches.make import make_patch

from .files import Signature, TrackedFiles, is_racy, signature

__all__ = ["Prepared", "Reloader", "Started", "Status", "Update"]

UNVOUCHED = (
    "its file changed after it was imported, before thinlink could check it (or it "
    "defines no function to check it by); `importlib.reload({name})` or a kernel restart "
    "makes it patchable again"
)
UNBUILT = (
    "it runs a version of its file that thinlink never built (changed while it was being "
    "imported?); `importlib.reload({name})` or a kernel restart makes it patchable again"
)
ROLLED_BACK = "rolled back (%thinlink rollback); save the file again to apply it"
_WARNINGS_KEPT = 20
_QUIET = 1.0  # seconds without an update before the cache is written


@dataclass(frozen=True)
class Started:
    """What `start()` found: the project's size, the build, what was adopted."""

    modules: int
    tracked: int
    ms: float
    errors: tuple[str, ...] = ()


@dataclass
class Prepared:
    """A patch made for `changed` files, not applied yet (or why there is none)."""

    changed: tuple[str, ...]
    started: float  # perf_counter() when the update began
    bundle: Bundle | None = None
    plans: list[ModulePlan] = field(default_factory=list)
    errors: tuple[str, ...] = ()  # build errors that stop the patch (file:line:col ...)
    restart: list[tuple[str, str]] = field(default_factory=list)  # (module, reason)
    held: list[tuple[str, str]] = field(default_factory=list)  # (module, why): left out
    failure: str | None = None  # the patch could not be made


@dataclass(frozen=True)
class Update:
    """What one update did, for the user to read. `report` is set when a patch applied."""

    changed: tuple[str, ...]
    ms: float
    report: hotpatch.PatchReport | None = None
    rerun_names: dict[str, str] = field(default_factory=dict)  # "module:line" -> "A, B"
    errors: tuple[str, ...] = ()
    restart: tuple[tuple[str, str], ...] = ()
    held: tuple[tuple[str, str], ...] = ()
    failure: str | None = None  # the patch failed, and was rolled back (or never applied)
    when: float = field(default_factory=time.time)

    @property
    def quiet(self) -> bool:
        """Nothing to say: nothing the code does changed, and nothing went wrong."""
        r = self.report
        changed = r is not None and (r.patched or r.added or r.removed or r.rerun or r.warnings)
        return not (changed or self.errors or self.restart or self.held or self.failure)


@dataclass(frozen=True)
class Status:
    """What `%thinlink` shows."""

    root: str
    cache_dir: str
    modules: int  # in the project
    tracked: tuple[str, ...]  # names of the imported project modules
    last: Update | None
    behind: tuple[tuple[str, str], ...]  # (module, why) running another version than the file
    errors: tuple[str, ...]  # tracked files that do not build now
    warnings: tuple[str, ...]


class Reloader:
    """Keeps the project's imported modules in step with their files (see the module doc).

    Needs the main thread's interpreter state only for `update()` and `rollback()` (they
    apply patches); `poll()` and `prepare()` may run on any thread.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        cache_dir: str | os.PathLike[str] | None = None,
        *,
        lock: threading.RLock | None = None,
    ) -> None:
        self.root = os.path.realpath(root)
        self.cache_dir = cache_location(self.root, cache_dir)
        # One process: a kernel holding threads must not fork a pool of compilers.
        self.builder = Builder(self.root, self.cache_dir, jobs=1, memo=True)
        self.files = TrackedFiles()
        self.last: Update | None = None
        self.notices: list[str] = []  # to show once, then kept in `warnings`
        self.warnings: list[str] = []
        # Given by an owner that holds it around its own calls (and in the runtime's
        # `on_patch` callbacks, which an apply on the worker thread runs under it): one
        # lock, so no two are ever taken in opposite orders.
        self._lock = lock if lock is not None else threading.RLock()
        self._latest: Manifest | None = None
        self._entries: dict[str, ModuleEntry] = {}
        self._dirty: set[str] = set()  # changed since the kernel last caught up with them
        self._held: dict[str, str] = {}  # path -> why the kernel runs another version
        self._retry = False  # a patch was refused for one module: the others go again
        self._moves: Bundle | None = None  # line shifts of the last update, not applied yet
        # Per update applied (latest last): how many bundles it is in the runtime's history.
        self._applied: list[int] = []
        self._after = threading.Event()  # an update left work for the worker thread
        self._closed = False
        self._names: dict[str, str] = {}  # tracked path -> module name
        self._seen: dict[str, object] = {}  # module name -> module object taken in
        self._module_count = -1
        self._real_dirs: dict[str, str] = {}
        self._image_used = False  # the build's image loads the modules imported since start

    # start and stop --------------------------------------------------------------------

    def start(self) -> Started:
        """Build the project, start tracking imports, adopt the modules imported already."""
        with self._lock:
            started = time.perf_counter()
            sources, _ = discover(self.root)
            stats = {path: signature(path) for path, _ in sources}  # before the build reads
            result = self.builder.build()
            self._use_image(result.manifest, stats)
            # From now on records reach the disk after the patch went live (`flush()`).
            self.builder.write_behind()
            self._set_latest(result.manifest)
            for entry in result.manifest.modules:
                self.files.note(entry.path, stats.get(entry.path), entry.digest)
            root = self.root
            provenance.track([root], accept=lambda path: is_source(root, path))
            threading.Thread(
                target=self._work_after_updates, name="thinlink-notebook-after", daemon=True
            ).start()
            changed: dict[str, Signature | None] = {}
            self._take_in_modules(changed)
            self._dirty.update(changed)
            self._retry = bool(changed)
            return Started(
                len(result.manifest.modules),
                len(self.files),
                (time.perf_counter() - started) * 1000,
                tuple(str(e) for e in result.errors),
            )

    def _use_image(self, manifest: Manifest, stats: dict[str, Signature | None]) -> None:
        """Have the project's modules imported from now on load the build's code (as
        `thinlink run` does), not compile from their source: a kernel imports a project
        after `%load_ext` as fast as python with its pycs. A file changed since the build
        is compiled from its bytes, as the tracking finder would."""
        try:
            image = ensure_image(self.builder.cache, manifest, compile_missing=False)
        except (ThinlinkError, OSError) as exc:
            self._warn(f"modules imported from now on are compiled from their source: {exc}")
            return
        now = time.time_ns()
        trusted = {p: s for p, s in stats.items() if s is not None and not is_racy(s, now)}
        try:
            self._image_used = boot.use_image(image, trusted)
        except (OSError, ImageError) as exc:
            self._warn(f"modules imported from now on are compiled from their source: {exc}")

    def close(self) -> None:
        """Stop tracking imports and write what the cache holds in memory."""
        with self._lock:
            self._closed = True
            self._after.set()  # the worker ends
            provenance.untrack()
            if self._image_used:
                boot.stop_using_image()
                self._image_used = False
            self._shift_moved()
            self.flush()
            self.builder.close()

    def flush(self) -> None:
        """Write the records and builds kept in memory to the cache on disk."""
        with self._lock:
            try:
                self.builder.flush()
            except Exception as exc:  # boundary: a full disk must not stop the kernel
                self._warn(f"could not write to the cache {self.cache_dir}: {exc}")

    # before each cell --------------------------------------------------------------

    def poll(self, modules: bool = True) -> dict[str, Signature | None]:
        """The files to update from, each with its stat now: the tracked files that
        changed, and (with `modules`) those of modules imported since the last poll
        whose file changed after the build read it. Empty when nothing changed."""
        with self._lock:
            self._shift_moved()  # the next cell's tracebacks show the new lines
            changed: dict[str, Signature | None] = {}
            if modules and len(sys.modules) != self._module_count:
                self._take_in_modules(changed)
            changed.update(self.files.changed())
            if self._retry:
                self._retry = False
                for path in self._dirty:
                    changed.setdefault(path, signature(path))
            return changed

    def imported_since(self) -> bool:
        """Modules were imported (or removed) since the last `poll()`."""
        return len(sys.modules) != self._module_count

    def take_notices(self) -> list[str]:
        with self._lock:
            notices, self.notices = self.notices, []
            return notices

    def update(self, changed: dict[str, Signature | None]) -> Update:
        """Build `changed`, make the patch and apply it now, on this thread.

        Code that only moved (the functions below an added line) gets its line numbers
        shifted just after, on a thread of its own, as `thinlink dev` shifts them after
        the new code is live: the cell need not wait for a walk of the whole module."""
        prepared = self.prepare(changed)
        if prepared.bundle is None or not prepared.bundle.modules:
            return self.finish(prepared)
        with self._lock:
            bundle, moves = _split_moves(prepared.bundle)
            while True:
                try:
                    report = hotpatch.apply(bundle)
                except hotpatch.PatchError as exc:
                    return self.finish(prepared, error=exc)
                reason = report.needs_restart
                culprit = None if reason is None else _culprit(bundle, reason)
                if culprit is None or len(bundle.modules) < 2:
                    break
                # One module's change needs a restart: the others still go live.
                self._hold_back(culprit.path, reason)
                prepared.restart.append((culprit.name, reason))
                others = tuple(m for m in bundle.modules if m is not culprit)
                bundle = replace(bundle, modules=others)
            update = self.finish(prepared, report=report)
            if report.needs_restart is None:
                applied = {m.name for m in bundle.modules}
                if moves is not None:
                    kept = tuple(m for m in moves.modules if m.name in applied)
                    self._moves = replace(moves, modules=kept) if kept else None
                self._after.set()  # the worker thread: not started here, which costs
            return update

    def _work_after_updates(self) -> None:
        """The worker thread: after each update, shift moved code at once, and write the
        cache once no update came for `_QUIET` seconds (between cells: a write competing
        with a running cell for the interpreter would slow it down)."""
        while True:
            self._after.wait()
            while True:
                self._after.clear()
                with self._lock:
                    if self._closed:
                        return
                    self._shift_moved()
                if not self._after.wait(_QUIET):
                    break
            with self._lock:
                if self._closed:
                    return
                self.flush()

    def _shift_moved(self) -> None:
        """Apply the line shifts an update left for later (under the lock), before any
        other patch is made: those start from the module's new lines."""
        moves, self._moves = self._moves, None
        if moves is None:
            return
        try:
            hotpatch.apply(moves)
        except hotpatch.PatchError as exc:  # line numbers only: the code is right
            self._warn(f"the line numbers of code that moved were not shifted: {exc}")
            return
        if self._applied:
            self._applied[-1] += 1

    def prepare(self, changed: dict[str, Signature | None]) -> Prepared:
        """Build the `changed` files and make the patch from what the kernel runs."""
        with self._lock:
            self._shift_moved()
            prepared = Prepared(tuple(sorted(changed)), time.perf_counter())
            self._dirty.update(changed)
            try:
                result = self.builder.build(changed=list(changed))
            except (ThinlinkError, OSError) as exc:
                prepared.failure = f"the build failed: {exc}"
                return prepared
            self._set_latest(result.manifest)
            for path, sig in changed.items():
                entry = self._entries.get(path)
                if entry is None:  # deleted: the module stays as it is
                    self.files.untrack(path)
                    self._dirty.discard(path)
                else:
                    self.files.note(path, sig, entry.digest)
            # A file to patch that does not build stops the whole patch (as in `thinlink
            # dev`): the others may depend on what it was to define.
            errors = [
                entry.error
                for path in sorted(self._dirty)
                if (entry := self._entries.get(path)) is not None and entry.error is not None
            ]
            if errors:
                prepared.errors = tuple(errors)
                return prepared
            old = self._running(result.manifest, prepared)
            try:
                made = make_patch(self.builder.cache, old, result.manifest)
            except ThinlinkError as exc:
                prepared.failure = str(exc)
                return prepared
            prepared.plans = made.plans
            for plan in made.plans:
                if plan.needs_restart:
                    prepared.restart.append((plan.name, plan.needs_restart[0]))
                    self._held[plan.path] = f"needs a restart: {plan.needs_restart[0]}"
            # The kernel is on no build: each module's base is checked by its digest, so
            # the bundle starts from whatever build the runtime last recorded.
            prepared.bundle = replace(
                made.bundle,
                base_build=hotpatch.current_build() or old.build_id,
                needs_restart=None,
            )
            return prepared

    def finish(
        self,
        prepared: Prepared,
        report: hotpatch.PatchReport | None = None,
        error: BaseException | None = None,
    ) -> Update:
        """Take in the outcome of `prepared`: applied with `report`, failed with `error`,
        or not applied at all (no bundle)."""
        with self._lock:
            restart = list(prepared.restart)
            failure = prepared.failure
            if error is not None:
                failure = str(error)
            elif prepared.bundle is not None and not prepared.bundle.modules:
                self._dirty.clear()  # nothing to patch: caught up (restarts held back)
            if report is not None:
                reason = report.needs_restart
                if reason is not None:  # nothing applied: hold that module back, the rest
                    culprit = _culprit(prepared.bundle, reason)  # goes again at the next poll
                    if culprit is not None:
                        self._hold_back(culprit.path, reason)
                        self._retry = bool(self._dirty)
                    restart.append((culprit.name if culprit else "the patch", reason))
                    report = None
                else:
                    # Caught up: the modules left out (restarts) stay as they are until
                    # their files change again.
                    self._dirty.clear()
                    self._applied = [*self._applied[-99:], 1]
            rerun_names = {
                f"{plan.name}:{r.statement.lineno}": ", ".join(r.statement.defines)
                for plan in prepared.plans
                for r in plan.reruns
            }
            update = Update(
                prepared.changed,
                (time.perf_counter() - prepared.started) * 1000,
                report,
                rerun_names,
                prepared.errors,
                tuple(restart),
                tuple(prepared.held),
                failure,
            )
            if not update.quiet or self.last is None:
                self.last = update
            return update

    def rollback(self) -> hotpatch.PatchReport:
        """Undo the last applied patch; its modules stay behind their files until saved
        again. Raises `hotpatch.PatchError` when there is nothing to undo."""
        with self._lock:
            self._moves = None  # not shifted yet: the code goes back to its old lines
            before = {p: provenance.digest_of(p) for p in self.files.tracked}
            # The last update may be two bundles in the runtime's history (the patch and
            # the shifts of code that moved): both go.
            for _ in range(self._applied.pop() - 1 if self._applied else 0):
                hotpatch.rollback()
            report = hotpatch.rollback()
            for path, digest in before.items():
                if provenance.digest_of(path) != digest:
                    self._held[path] = ROLLED_BACK
                    self._dirty.discard(path)
            return report

    # what the user sees ------------------------------------------------------------

    def status(self) -> Status:
        with self._lock:
            behind = []
            errors = []
            for path in sorted(self.files.tracked):
                name = self._names.get(path, path)
                entry = self._entries.get(path)
                if entry is not None and entry.error is not None:
                    errors.append(entry.error)
                    continue
                live = provenance.digest_of(path)
                if entry is not None and live != entry.digest:
                    why = self._held.get(path)
                    if why is None:
                        why = UNVOUCHED.format(name=name) if live is None else "not patched yet"
                    behind.append((name, why))
            return Status(
                self.root,
                self.cache_dir,
                len(self._entries),
                tuple(sorted(self._names[p] for p in self.files.tracked if p in self._names)),
                self.last,
                tuple(behind),
                tuple(errors),
                tuple(self.warnings),
            )

    # internals ---------------------------------------------------------------------

    def _set_latest(self, manifest: Manifest) -> None:
        self._latest = manifest
        self._entries = manifest.by_path()

    def _warn(self, message: str) -> None:
        self.notices.append(message)
        self.warnings = [*self.warnings[-(_WARNINGS_KEPT - 1) :], message]

    def _take_in_modules(self, changed: dict[str, Signature | None]) -> None:
        """Track the project's modules imported since the last look at `sys.modules`."""
        modules = list(sys.modules.items())  # one copy: other threads may import meanwhile
        self._module_count = len(modules)
        for name, module in modules:
            if self._seen.get(name) is module:
                continue
            self._seen[name] = module
            path = self._project_file(module)
            if path is not None:
                self._track(name, module, path, changed)

    def _project_file(self, module: object) -> str | None:
        file = getattr(module, "__file__", None)
        if (
            not isinstance(file, str)
            or not file.endswith(".py")
            or not isinstance(module, ModuleType)
        ):
            return None
        folder, base = os.path.split(file)
        real = self._real_dirs.get(folder)
        if real is None:
            real = self._real_dirs[folder] = os.path.realpath(folder)
        path = os.path.join(real, base)
        if path in self._entries or is_source(self.root, path):
            return path
        return None

    def _track(
        self, name: str, module: ModuleType, path: str, changed: dict[str, Signature | None]
    ) -> None:
        if self.files.is_tracked(path):
            return  # imported under a second name: one file, tracked once
        self.files.track(path)
        self._names[path] = name
        entry = self._entries.get(path)
        if entry is None or not self.files.noted(path):  # a file the last build did not have
            changed[path] = signature(path)
        digest = provenance.digest_of(path) or provenance.adopt(module)
        if digest is None:
            self._held[path] = UNVOUCHED.format(name=name)
            self._warn(f"{name} is not patched: {self._held[path]}")
        elif entry is not None and digest != entry.digest:
            # The kernel imported another version than the build read: build the file now.
            changed.setdefault(path, signature(path))

    def _running(self, new: Manifest, prepared: Prepared) -> Manifest:
        """`new`, but with the version the kernel runs for each module it is to patch."""
        entries = []
        for entry in new.modules:
            if entry.path in self._dirty and self.files.is_tracked(entry.path):
                entry = self._live_entry(entry, prepared)
            entries.append(entry)
        modules = tuple(entries)
        return Manifest(make_build_id(self.root, modules), self.root, modules)

    def _live_entry(self, entry: ModuleEntry, prepared: Prepared) -> ModuleEntry:
        """The entry of the version of `entry`'s file the kernel runs; `entry` itself
        (nothing to patch) when it runs that one or when its version is not known."""
        digest = provenance.digest_of(entry.path)
        if digest == entry.digest:
            return entry
        name = self._names.get(entry.path, entry.name)
        if digest is None:
            prepared.held.append((name, self._held.get(entry.path) or UNVOUCHED.format(name=name)))
            return entry
        key = Cache.module_key("record", entry.path, digest)
        if self.builder.cache.get_record(key) is None:
            self._held[entry.path] = UNBUILT.format(name=name)
            prepared.held.append((name, self._held[entry.path]))
            return entry
        return ModuleEntry(entry.name, entry.path, digest, key)

    def _hold_back(self, path: str, reason: str) -> None:
        """The runtime found that the change of the module from `path` needs a restart: it
        stays at its version until its file changes again."""
        path = os.path.realpath(path)
        self._held[path] = f"needs a restart: {reason}"
        self._dirty.discard(path)


def _split_moves(bundle: Bundle) -> tuple[Bundle, Bundle | None]:
    """`bundle` without its line shifts, and the shifts alone (None: nothing moved, or
    they cannot wait).

    The runtime finds the code to shift by its first line, which it reads as an old line;
    applied with the patch, it leaves out the functions the patch itself made or changed.
    Applied after, it cannot tell them apart: so the shifts wait only when no code of the
    patch starts on a line they shift."""
    moved = [m for m in bundle.modules if m.moved]
    if not moved:
        return bundle, None
    for module in moved:
        codes = [f.code for f in module.functions] + [s.code for s in module.statements]
        if any(_shifted(line, module.moved) for line in _first_lines(codes)):
            return bundle, None
    now = replace(bundle, modules=tuple(replace(m, moved=()) for m in bundle.modules))
    later = Bundle(
        bundle.target_build,
        bundle.target_build,
        tuple(
            ModulePatch(m.name, m.path, moved=m.moved, base_digest=m.digest, digest=m.digest)
            for m in moved
        ),
    )
    return now, later


def _first_lines(codes: list[CodeType]) -> set[int]:
    lines: set[int] = set()
    stack = list(codes)
    while stack:
        code = stack.pop()
        lines.add(code.co_firstlineno)
        stack.extend(c for c in code.co_consts if isinstance(c, CodeType))
    return lines


def _shifted(line: int, ranges: tuple[tuple[int, int, int], ...]) -> bool:
    return any(first <= line <= last for first, last, _ in ranges)


def _culprit(bundle: Bundle | None, reason: str) -> ModulePatch | None:
    """The module of `bundle` that a runtime refusal (`reason`, which starts with the
    module's name) is about."""
    for module in bundle.modules if bundle is not None else ():
        if reason.startswith(module.name + ":"):
            return module
    return None
