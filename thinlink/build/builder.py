"""Building a project: deciding, per module, to reuse, rebuild or compile it.

The working tree is first compared with what the last build saw (`thinlink.launch`:
the files' stats, else their digests). Then, for each source file, in order of cost:
1. it is as the last build had it: reuse its entry (a no-op build reads no file and
   opens no cache, and the launch path answers it before this module is loaded);
2. the cache already holds a record for this path and digest (a branch switched back,
   another build of the same tree): reuse;
3. the last build had an older version of it: `rebuild` the segments the edit touched;
4. otherwise compile it whole; many such files go to a pool of worker processes.

A record is read, checksummed, only when it is used (a rebuild, a patch, an image); one
found damaged then is compiled again from its source. A cache whose database is damaged
is set aside and the build starts again on an empty one.

Records here are named tuples, as in `units`: `thinlink build` after an edit is a
whole command a user waits for, and `dataclasses` (with the `inspect` it imports) would
be a tenth of it.

A plain build never executes project code. A file that fails (a syntax error, an
undecodable or unreadable file, anything the compiler raises on it) is recorded with its
error; the others still build.
"""

from __future__ import annotations

import os
import time
from collections import namedtuple
from collections.abc import Callable, Collection, Iterator
from enum import StrEnum

from hotpatch.image import signature, source_digest
from thinlink.errors import DISK_FULL, CacheFull, SourceError, ThinlinkError
from thinlink.launch import TreeCheck, TreeState, check_tree, claim_cache_dir, read_source

from .cache import Cache, CacheDamaged, set_aside
from .manifest import BuildStore, Manifest, ModuleEntry, make_build_id
from .rebuild import compile_whole, count_units, rebuild, store

__all__ = ["Action", "BuildResult", "Builder", "ModuleChange"]

# Below this many bytes of source to compile, a worker pool costs more than it saves.
_POOL_THRESHOLD = 512 * 1024
_BATCH = 8  # files per task sent to a worker
_COMMIT_EVERY = 32  # modules stored per transaction


class Action(StrEnum):
    """What a build did to a module that it did not simply reuse."""

    COMPILED = "compiled"  # whole, from nothing the cache had
    REBUILT = "rebuilt"  # only the segments an edit touched
    FAILED = "failed"  # its error is in the build's errors


class ModuleChange(
    namedtuple("ModuleChange", "name action compiled relocated seconds", defaults=(0, 0, 0.0))
):
    """What a build did to one module that was not simply reused."""

    __slots__ = ()


class BuildResult(
    namedtuple(
        "BuildResult",
        "manifest compiled reused relocated seconds errors warnings changes",
        defaults=(0, 0, 0, 0.0, (), (), ()),
    )
):
    """The outcome of one build: its manifest, counts and errors."""

    __slots__ = ()

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> dict[str, object]:
        """The fields `thinlink build --json` prints."""
        return {
            "build_id": self.manifest.build_id,
            "root": self.manifest.root,
            "modules": len(self.manifest.modules),
            "units": self.manifest.units,
            "compiled": self.compiled,
            "reused": self.reused,
            "relocated": self.relocated,
            "failed": len(self.errors),
            "seconds": round(self.seconds, 4),
            "errors": [str(e) for e in self.errors],
            "warnings": list(self.warnings),
            "changed": [
                {
                    "module": c.name,
                    "action": str(c.action),
                    "compiled": c.compiled,
                    "relocated": c.relocated,
                    "ms": round(c.seconds * 1000, 3),
                }
                for c in self.changes
            ],
        }


# A file to compile whole: where it is, its module name, its bytes and their digest.
_Pending = namedtuple("_Pending", "path name data digest")


class Builder:
    """Builds one project root into one cache directory.

    `jobs` is the number of worker processes for cold compiles (default: all cores).
    `progress(done, total)` is called while compiling, for a progress bar. `memo`: the
    builder lives long (`thinlink dev`): it keeps what it read in memory, and its
    writes can be held back (`write_behind()`).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        cache_dir: str | os.PathLike[str],
        *,
        jobs: int | None = None,
        progress: Callable[[int, int], None] | None = None,
        memo: bool = False,
    ) -> None:
        self.root = os.path.realpath(root)
        self.cache_dir = os.path.realpath(cache_dir)
        self.jobs = jobs or os.cpu_count() or 1
        self.progress = progress
        self.store = BuildStore(self.cache_dir)
        self._cache: Cache | None = None
        self._memo = memo
        self._last_manifest: Manifest | None = None
        self._state: TreeState | None = None  # what the last build of this builder saw
        self._pending_state: TreeState | None = None  # written on flush, when behind

    @property
    def cache(self) -> Cache:
        """The cache, opened on first use."""
        if self._cache is None:
            self._cache = Cache(self.cache_dir, memo=self._memo)
        return self._cache

    def write_behind(self) -> None:
        """Hold every write (cache values, manifests, refs, tree state) until `flush()`."""
        self.cache.behind.start()
        self.store.behind.start()

    def flush(self) -> None:
        """Write what is held: cache values first, then what points at them."""
        self.cache.flush()
        self.store.flush()
        if self._pending_state is not None:
            try:
                self._pending_state.write(self.cache_dir, self.root)
            except OSError as exc:
                _raise_if_full(exc, self.cache_dir)
            self._pending_state = None

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()

    # a build ------------------------------------------------------------------------------

    def build(
        self, check: TreeCheck | None = None, *, changed: Collection[str] | None = None
    ) -> BuildResult:
        """Build the working tree; record it as `last` (and `last-good` if nothing failed).

        `check` is the tree compared with the last build (made here if not given);
        `changed` (paths, from a file watcher) instead limits the reading to those files,
        the others taken as the last build had them.
        """
        started = time.perf_counter()
        if changed is not None:
            check = self._check_paths(changed)
        elif check is None:
            check = check_tree(self.root, self.cache_dir)
        claim_cache_dir(self.cache_dir)
        try:
            result = self._build(check, started)
        except CacheFull as exc:
            if exc.needed is not None:
                raise
            # What the cache stores of a module is about its source's size, several times
            # over (source, code, record): a generous guess, said as the space needed.
            sources = sum(len(check.data.get(path, b"")) for path in check.changed)
            raise CacheFull(exc.directory, max(4 * sources, 2**20)) from None
        except CacheDamaged as exc:
            from thinlink.cli import console

            if self._cache is not None:
                self._cache.abandon()
                self._cache = None
            aside = set_aside(self.cache_dir)
            self._last_manifest = None
            console.warning(
                f"thinlink: the cache was damaged ({exc}); set aside as {aside}, building again"
            )
            result = self._build(check, started, fresh=True)
        self._record_state(check, result)
        return result

    def _build(self, check: TreeCheck, started: float, fresh: bool = False) -> BuildResult:
        last = None if fresh else self._last(check)
        previous = {} if last is None else last.by_path()
        changed = set(check.changed)
        # No database yet: nothing to look up, and the cache opens only to store.
        empty = self._cache is None and not os.path.exists(
            os.path.join(self.cache_dir, "objects", "cache.db")
        )
        entries: dict[str, ModuleEntry] = {}
        errors: list[ThinlinkError] = []
        changes: list[ModuleChange] = []
        cold: list[_Pending] = []
        reused = compiled = relocated = 0

        for path, name in check.files:
            before = previous.get(path)
            if path not in changed and before is not None:
                entries[path] = before.renamed(name)
                if before.error is not None:
                    errors.append(ThinlinkError(before.error))  # still failing: unchanged
                reused += before.units
                continue
            data = check.data.get(path)
            if data is None:
                try:
                    data = read_source(path)
                except OSError as exc:
                    err = SourceError(path, 1, 1, f"cannot read: {exc.strerror or exc}")
                    entries[path] = ModuleEntry(name, path, None, None, 0, str(err))
                    errors.append(err)
                    continue
            digest = check.digests.get(path) or source_digest(data)
            key = Cache.module_key("record", path, digest)
            # A session holding the previous version in memory derives the new one from it
            # (a millisecond) rather than read a stored copy from an earlier session (a
            # large module's record is many milliseconds to read and decode).
            derive = (
                before is not None
                and self._cache is not None
                and self._cache.holds(before.record or "")
            )
            record = None if empty or derive else self.cache.get_record(key)
            if record is not None:
                entries[path] = ModuleEntry(name, path, digest, key, record.unit_count)
                reused += record.unit_count
                continue
            pending = _Pending(path, name, data, digest)
            if before is not None and before.record is not None:
                change = self._rebuild(before, pending, entries, errors)
                if change is not None:
                    changes.append(change)
                    compiled += change.compiled
                    relocated += change.relocated
                    reused += entries[path].units - change.compiled - change.relocated
                    continue
            cold.append(pending)

        for change in self._compile_all(cold, entries, errors):
            changes.append(change)
            compiled += change.compiled
        if cold:
            self.cache.cull()

        modules = tuple(entries[path] for path, _ in check.files if path in entries)
        manifest = Manifest(make_build_id(self.root, modules), self.root, modules, time.time())
        if last is None or last.modules != modules:  # else this manifest is on disk
            self.store.save(manifest)
        self.store.set_ref(self.root, "last", manifest.build_id)
        if not errors:
            self.store.set_ref(self.root, "last-good", manifest.build_id)
        self._last_manifest = manifest
        return BuildResult(
            manifest,
            compiled=compiled,
            reused=reused,
            relocated=relocated,
            seconds=time.perf_counter() - started,
            errors=tuple(errors),
            warnings=tuple(check.warnings),
            changes=tuple(changes),
        )

    # the tree the build saw ------------------------------------------------------------

    def _check_paths(self, changed: Collection[str]) -> TreeCheck:
        """The tree with only `changed` (and new files) read: for a file watcher, which
        says what changed. The other files keep the stats the last build recorded."""
        from thinlink.launch import discover

        state = self._state or TreeState.read(self.cache_dir, self.root)
        check = TreeCheck(self.root, self.cache_dir, state)
        check.files, check.warnings = discover(self.root)
        known = state.files if state is not None else {}
        wanted = {os.path.abspath(p) for p in changed}
        for path, name in check.files:
            before = known.get(path)
            if before is not None and path not in wanted and before[0] == name:
                check.signatures[path] = before[1]
                continue
            try:
                check.signatures[path] = signature(os.stat(path))
            except OSError:
                pass
            check.changed.append(path)
        return check

    def _record_state(self, check: TreeCheck, result: BuildResult) -> None:
        """Keep what this build saw, for the next launch: per file its stat and digest."""
        files = {
            entry.path: (entry.name, check.trusted_signature(entry.path), entry.digest)
            for entry in result.manifest.modules
        }
        errors = tuple(str(e) for e in result.errors)
        state = TreeState(result.manifest.build_id, result.manifest.units, errors, files)
        old = check.state
        self._state = state
        if old is not None and (old.build_id, old.errors, old.files) == (
            state.build_id,
            state.errors,
            state.files,
        ):
            return
        if self.store.behind.active:
            self._pending_state = state
        else:
            try:
                state.write(self.cache_dir, self.root)
            except OSError as exc:
                _raise_if_full(exc, self.cache_dir)

    def _last(self, check: TreeCheck) -> Manifest | None:
        """The last build of this root, if its manifest is still readable."""
        if self._last_manifest is not None:
            return self._last_manifest
        build_id = check.state.build_id if check.state is not None else None
        build_id = build_id or self.store.ref(self.root, "last")
        if build_id is None:
            return None
        try:
            return self.store.load(build_id)
        except ThinlinkError:
            return None

    # one module at a time ------------------------------------------------------------------

    def _rebuild(
        self,
        before: ModuleEntry,
        pending: _Pending,
        entries: dict[str, ModuleEntry],
        errors: list[ThinlinkError],
    ) -> ModuleChange | None:
        """Rebuild from the previous version, or None when that version is gone."""
        old = self.cache.get_record(before.record or "")
        old_data = self.cache.get(self.cache.source_key(before.digest or ""))
        if old is None or old_data is None:
            return None
        t0 = time.perf_counter()
        path, name = pending.path, pending.name
        try:
            done = rebuild(self.cache, old, old_data, path, pending.data, pending.digest)
        except SourceError as err:
            entries[path] = ModuleEntry(name, path, pending.digest, None, 0, str(err))
            errors.append(err)
            return ModuleChange(name, Action.FAILED)
        key = Cache.module_key("record", path, done.record.digest)
        entries[path] = ModuleEntry(name, path, done.record.digest, key, done.units)
        return ModuleChange(
            name, Action.REBUILT, done.compiled, done.relocated, time.perf_counter() - t0
        )

    def _compile_all(
        self, cold: list[_Pending], entries: dict[str, ModuleEntry], errors: list[ThinlinkError]
    ) -> Iterator[ModuleChange]:
        """Compile the files of `cold` whole and store them."""
        if not cold:
            return
        from itertools import islice

        size = sum(len(p.data) for p in cold)
        if self.jobs > 1 and size > _POOL_THRESHOLD and len(cold) > 1:
            outcomes = self._compile_in_pool(cold)  # the workers start now
        else:
            outcomes = ((p, _compile_one(p)) for p in cold)
        cache = self.cache
        done = 0
        # Stored a few modules a transaction: a commit per value costs more than the
        # value, and one for them all would leave the whole database to write (and
        # SQLite's log to copy into it) after the last module, when the workers are done.
        while chunk := list(islice(outcomes, _COMMIT_EVERY)):
            changes = []
            with cache.transact():
                for pending, result in chunk:
                    path, name = pending.path, pending.name
                    if isinstance(result, SourceError):
                        entries[path] = ModuleEntry(
                            name, path, pending.digest, None, 0, str(result)
                        )
                        errors.append(result)
                        changes.append(ModuleChange(name, Action.FAILED))
                        continue
                    record, code, seconds = result
                    store(cache, record, pending.data, code)
                    units = count_units(record.segments)
                    key = Cache.module_key("record", path, pending.digest)
                    entries[path] = ModuleEntry(name, path, pending.digest, key, units)
                    changes.append(ModuleChange(name, Action.COMPILED, units, 0, seconds))
            for change in changes:
                done += 1
                if self.progress is not None:
                    self.progress(done, len(cold))
                yield change

    def _compile_in_pool(self, cold: list[_Pending]) -> Iterator[tuple[_Pending, object]]:
        """Send `cold` to worker processes now; their results, as they come."""
        from concurrent.futures import ProcessPoolExecutor  # 15 ms to import: here only

        # Largest files first, in small batches, so both cores finish together.
        cold = sorted(cold, key=lambda p: len(p.data), reverse=True)
        batches = [cold[i : i + _BATCH] for i in range(0, len(cold), _BATCH)]
        pool = ProcessPoolExecutor(max_workers=min(self.jobs, len(batches)))
        try:
            results = pool.map(_compile_batch, batches)  # submits every batch
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
        return self._pool_results(pool, batches, results)

    @staticmethod
    def _pool_results(pool, batches, results):  # noqa: ANN001, ANN205 - see _compile_in_pool
        from concurrent.futures.process import BrokenProcessPool

        with pool:
            done = 0
            try:
                for batch, outcome in zip(batches, results, strict=True):
                    for pending, result in zip(batch, outcome, strict=True):
                        if isinstance(result, _WorkerError):
                            result = SourceError(*result.fields)
                        yield pending, result
                    done += 1
            except BrokenProcessPool:
                # A worker died (killed, or a compiler crash on some file): what it had
                # not sent back is compiled here, one file at a time.
                for batch in batches[done:]:
                    for pending in batch:
                        yield pending, _compile_one(pending)


def _raise_if_full(exc: OSError, cache_dir: str) -> None:
    if exc.errno in DISK_FULL:
        raise CacheFull(cache_dir) from None
    raise exc


# compiling whole files: in this process, or in workers --------------------------------


# A SourceError's fields, to cross from a worker process (the error itself does not
# unpickle: its args are the formatted message, not the constructor's).
_WorkerError = namedtuple("_WorkerError", "fields")


def _compile_one(pending: _Pending) -> object:
    """(record, marshalled code, seconds) for a file, or the SourceError it raised.

    Runs in worker processes too, so it only computes: the parent stores results,
    keeping cache writes out of the workers' way (SQLite takes one writer at a time:
    workers writing for themselves wait on each other, and cost more than they save).
    """
    import marshal

    t0 = time.perf_counter()
    try:
        record, code = compile_whole(pending.path, pending.data, pending.digest)
    except SourceError as err:
        return err
    return record, marshal.dumps(code), time.perf_counter() - t0


def _compile_batch(batch: list[_Pending]) -> list[object]:
    return [_portable(_compile_one(p)) for p in batch]


def _portable(result: object) -> object:
    if isinstance(result, SourceError):
        return _WorkerError((result.path, result.line, result.col, result.message, result.text))
    return result
