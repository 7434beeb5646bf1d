"""Building a project: deciding, per module, to reuse, rebuild or compile it.

For each source file, in order of cost:
1. its bytes are what the last build had (their fingerprint, a fast hash, matches),
   and the record is still cached: reuse (a no-op build reads and hashes every file
   and compiles nothing);
2. the cache already holds a record for this path and digest (a branch switched back,
   another build of the same tree): reuse;
3. the last build had an older version of it: `rebuild` the segments the edit touched;
4. otherwise compile it whole; many such files go to a pool of worker processes.

"Still cached" is a checksummed read of the record, so a corrupt one is recompiled,
not trusted; unless the cache's database has not changed at all since the end of the
last build, which read or wrote each of its records. A build closes the cache and
records the database's state (`os.stat` of its files: every write, and even opening
it, changes them); the next build compares, and when nothing changed it reuses those
records without opening the cache. So a no-op build reads the last manifest and the
source files, and nothing else; the cache, the compiler and the worker pool are
imported when first needed.

A plain build never executes project code. A file that fails (a syntax error, an
undecodable or unreadable file) is recorded with its error; the others still build.
"""

from __future__ import annotations

import errno
import os
import stat
import time

from hotpatch._frozen import Frozen

from thinlink.errors import SourceError, ThinlinkError
from .manifest import BuildStore, Manifest, ModuleEntry, fingerprint, make_build_id
from .sources import SourceFile, discover

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterator
    from concurrent.futures import ProcessPoolExecutor
    from pathlib import Path

    from .cache import Cache

__all__ = ["BuildResult", "Builder", "ModuleChange"]

# Below this many bytes of source to compile, a worker pool costs more than it saves.
_POOL_THRESHOLD = 512 * 1024
_BATCH = 8  # files per task sent to a worker
_COMMIT_EVERY = 32  # modules stored per transaction


class ModuleChange(Frozen):
    """What a build did to one module that was not simply reused."""

    __slots__ = ("name", "action", "compiled", "relocated", "seconds")
    name: str
    action: str  # "compiled", "rebuilt" or "failed"
    compiled: int
    relocated: int
    seconds: float

    def __init__(
        self, name: str, action: str, compiled: int = 0, relocated: int = 0, seconds: float = 0.0
    ) -> None:
        super().__init__(name, action, compiled, relocated, seconds)


class BuildResult(Frozen):
    """The outcome of one build: its manifest, counts and errors."""

    __slots__ = (
        "manifest",
        "compiled",
        "reused",
        "relocated",
        "seconds",
        "errors",
        "warnings",
        "changes",
    )
    manifest: Manifest
    compiled: int
    reused: int
    relocated: int
    seconds: float
    errors: tuple[ThinlinkError, ...]
    warnings: tuple[str, ...]
    changes: tuple[ModuleChange, ...]

    def __init__(
        self,
        manifest: Manifest,
        compiled: int = 0,
        reused: int = 0,
        relocated: int = 0,
        seconds: float = 0.0,
        errors: tuple[ThinlinkError, ...] = (),
        warnings: tuple[str, ...] = (),
        changes: tuple[ModuleChange, ...] = (),
    ) -> None:
        super().__init__(manifest, compiled, reused, relocated, seconds, errors, warnings, changes)

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
                    "action": c.action,
                    "compiled": c.compiled,
                    "relocated": c.relocated,
                    "ms": round(c.seconds * 1000, 3),
                }
                for c in self.changes
            ],
        }


class _Pending(Frozen):
    """A file to compile whole: its bytes as read, their digest and fingerprint."""

    __slots__ = ("source", "data", "digest", "fingerprint")
    source: SourceFile
    data: bytes
    digest: str
    fingerprint: str

    def __init__(self, source: SourceFile, data: bytes, digest: str, fingerprint: str) -> None:
        super().__init__(source, data, digest, fingerprint)


class Builder:
    """Builds one project root into one cache directory.

    `jobs` is the number of worker processes for cold compiles (default: all cores).
    `progress(done, total)` is called while compiling, for a progress bar.
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
        # Kept as strings: a no-op build has no other use for pathlib, and its import
        # costs more than reading the manifest.
        self._root = os.path.realpath(root)
        self._cache_dir = os.fspath(cache_dir)
        self.jobs = jobs or os.cpu_count() or 1
        self.progress = progress
        self.store = BuildStore(self._cache_dir)
        self._cache: Cache | None = None
        self._memo = memo  # keep cache reads in memory (a long-lived session)

    @property
    def root(self) -> Path:
        """The project root (resolved)."""
        from pathlib import Path

        return Path(self._root)

    @property
    def cache_dir(self) -> Path:
        from pathlib import Path

        return Path(self._cache_dir)

    @property
    def cache(self) -> Cache:
        """The cache, opened on first use."""
        if self._cache is None:
            from .cache import Cache

            self._cache = Cache(self._cache_dir, memo=self._memo)
        return self._cache

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()

    def build(self, changed: Collection[str] | None = None) -> BuildResult:
        """Build the working tree; record it as `last` (and `last-good` if nothing failed).

        `changed` (paths, from a file watcher) limits the reading to those files: the
        others are taken as the last build had them. Without it every file is read.
        """
        started = time.perf_counter()
        root = self._root
        sources, warnings = discover(root)
        last = self._last()
        previous = {} if last is None else last.by_path()
        intact = self._intact_records(last) if changed is None else frozenset()
        # A cache with no database yet holds nothing to look up: a first build opens it
        # only to store, once its workers are compiling.
        empty = self._cache is None and _database_state(self._cache_dir) is None
        entries: dict[str, ModuleEntry] = {}
        errors: list[ThinlinkError] = []
        changes: list[ModuleChange] = []
        cold: list[_Pending] = []
        reused = compiled = relocated = 0
        recheck = None if changed is None else {os.path.abspath(p) for p in changed}

        for source in sources:
            before = previous.get(source.path)
            if recheck is not None and source.path not in recheck and before is not None:
                entries[source.path] = before
                if before.error is not None:
                    errors.append(ThinlinkError(before.error))  # still failing, unread
                reused += before.units
                continue
            try:
                data = _read_source(source.path)
            except OSError as exc:
                err = SourceError(source.path, 1, 1, f"cannot read: {exc.strerror or exc}")
                entries[source.path] = _failed(source, None, None, err)
                errors.append(err)
                continue
            check = fingerprint(data)
            if before is not None and before.fingerprint == check and before.record is not None:
                # The bytes the last build had. A checksummed read of the record, not a
                # membership test: a corrupt (or undecodable) record is recompiled.
                if before.record in intact or self.cache.get_record(before.record) is not None:
                    entries[source.path] = _reused(source, before)
                    reused += before.units
                    continue
            digest = _source_digest(data)
            key = None if empty else _record_key(source.path, digest)
            record = None if key is None else self.cache.get_record(key)
            if record is not None:
                units = _count_units(record.segments)
                entries[source.path] = ModuleEntry(
                    source.name, source.path, digest, key, units, None, check
                )
                reused += units
                continue
            pending = _Pending(source, data, digest, check)
            if before is not None and before.record is not None:
                change = self._rebuild(before, pending, entries, errors)
                if change is not None:
                    changes.append(change)
                    compiled += change.compiled
                    relocated += change.relocated
                    reused += entries[source.path].units - change.compiled - change.relocated
                    continue
            cold.append(pending)

        for change in self._compile_all(cold, entries, errors):
            changes.append(change)
            compiled += change.compiled
        if cold:
            self.cache.cull()

        modules = tuple(entries[s.path] for s in sources if s.path in entries)
        manifest = Manifest(make_build_id(root, modules), root, modules, time.time())
        if last is None or last.modules != modules:  # else this manifest is on disk
            self.store.save(manifest)
        self.store.set_ref(root, "last", manifest.build_id)
        if not errors:
            self.store.set_ref(root, "last-good", manifest.build_id)
        if changed is None and not self._memo:
            self._seal(manifest)
        return BuildResult(
            manifest,
            compiled=compiled,
            reused=reused,
            relocated=relocated,
            seconds=time.perf_counter() - started,
            errors=tuple(errors),
            warnings=tuple(warnings),
            changes=tuple(changes),
        )

    # the records the last build left ---------------------------------------------

    def _intact_records(self, last: Manifest | None) -> frozenset[str]:
        """The records of `last` known intact without reading them: those of the build
        `_seal` recorded, if the cache's database is still as that build left it."""
        if last is None or self._memo or self._cache is not None:
            return frozenset()  # a session's cache is open, and its reads are memoised
        state = _database_state(self._cache_dir)
        if state is None or self.store.checked(self._root) != f"{last.build_id} {state}":
            return frozenset()
        return frozenset(m.record for m in last.modules if m.record is not None)

    def _seal(self, manifest: Manifest) -> None:
        """Close the cache and record the state its database is left in.

        Every record of `manifest` is intact now: each was checked, written, or known
        intact (`_intact_records`) by this build. The cache reopens if used again.
        """
        if self._cache is not None:
            self._cache.close()  # settles the database (SQLite checkpoints its log)
            self._cache = None
        state = _database_state(self._cache_dir)
        if state is not None:
            self.store.set_checked(self._root, manifest.build_id, state)

    # one module at a time ------------------------------------------------------

    def _last(self) -> Manifest | None:
        """The last build of this root, if its manifest is still readable."""
        build_id = self.store.ref(self._root, "last")
        if build_id is None:
            return None
        try:
            return self.store.load(build_id)
        except ThinlinkError:
            return None

    def _rebuild(
        self,
        before: ModuleEntry,
        pending: _Pending,
        entries: dict[str, ModuleEntry],
        errors: list[ThinlinkError],
    ) -> ModuleChange | None:
        """Rebuild from the previous version, or None when that version is gone."""
        from .rebuild import rebuild

        old = self.cache.get_record(before.record or "")
        old_data = self.cache.get(self.cache.source_key(before.digest or ""))
        if old is None or old_data is None:
            return None
        t0 = time.perf_counter()
        source = pending.source
        try:
            done = rebuild(self.cache, old, old_data, source.path, pending.data, pending.digest)
        except SourceError as err:
            entries[source.path] = _failed(source, pending.digest, pending.fingerprint, err)
            errors.append(err)
            return ModuleChange(source.name, "failed")
        key = _record_key(source.path, done.record.digest)
        entries[source.path] = ModuleEntry(
            source.name,
            source.path,
            done.record.digest,
            key,
            done.units,
            None,
            pending.fingerprint,
        )
        return ModuleChange(
            source.name, "rebuilt", done.compiled, done.relocated, time.perf_counter() - t0
        )

    def _compile_all(
        self, cold: list[_Pending], entries: dict[str, ModuleEntry], errors: list[ThinlinkError]
    ) -> Iterator[ModuleChange]:
        """Compile the files of `cold` whole and store them."""
        if not cold:
            return
        from itertools import islice

        from .rebuild import count_units, store

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
                    source = pending.source
                    if isinstance(result, SourceError):
                        entries[source.path] = _failed(
                            source, pending.digest, pending.fingerprint, result
                        )
                        errors.append(result)
                        changes.append(ModuleChange(source.name, "failed"))
                        continue
                    record, code, seconds = result
                    store(cache, record, pending.data, code)
                    units = count_units(record.segments)
                    key = _record_key(source.path, pending.digest)
                    entries[source.path] = ModuleEntry(
                        source.name,
                        source.path,
                        pending.digest,
                        key,
                        units,
                        None,
                        pending.fingerprint,
                    )
                    changes.append(ModuleChange(source.name, "compiled", units, 0, seconds))
            for change in changes:
                done += 1
                if self.progress is not None:
                    self.progress(done, len(cold))
                yield change

    def _compile_in_pool(self, cold: list[_Pending]) -> Iterator[tuple[_Pending, object]]:
        """Send `cold` to worker processes now; their results, as they come."""
        from concurrent.futures import ProcessPoolExecutor  # costs 25 ms to import

        # Largest files first, in small batches, so both cores finish together.
        cold = sorted(cold, key=lambda p: len(p.data), reverse=True)
        batches = [cold[i : i + _BATCH] for i in range(0, len(cold), _BATCH)]
        pool = ProcessPoolExecutor(max_workers=min(self.jobs, len(batches)))
        try:
            results = pool.map(_compile_batch, batches)  # submits every batch
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
        return _pool_results(pool, batches, results)


def _pool_results(
    pool: ProcessPoolExecutor, batches: list[list[_Pending]], results: Iterator[list[object]]
) -> Iterator[tuple[_Pending, object]]:
    with pool:
        for batch, outcome in zip(batches, results, strict=True):
            for pending, result in zip(batch, outcome, strict=True):
                if isinstance(result, _WorkerError):
                    result = SourceError(*result.fields)
                yield pending, result


def _read_source(path: str) -> bytes:
    """The bytes of the regular file at `path`; OSError for anything else.

    Opened without blocking and checked, so a FIFO named `x.py` is an error rather
    than a build waiting forever for a writer. Read unbuffered, in one call when the
    size is known: a no-op build reads every file.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with open(fd, "rb", buffering=0) as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        return f.readall()


def _source_digest(data: bytes) -> str:
    # The runtime's digest (hotpatch.image), imported for the first changed file.
    from hotpatch.image import source_digest

    return source_digest(data)


def _record_key(path: str, digest: str) -> str:
    from .cache import Cache

    return Cache.module_key("record", path, digest)


def _database_state(cache_dir: str | os.PathLike[str]) -> str | None:
    """The state of the cache's SQLite database files (None: there is none yet).

    Inode, size, modification and change times of the database and of its write-ahead
    log: a write of any value changes them, and so does opening the cache (diskcache
    writes its settings). On a file system whose timestamps are only as fine as a clock
    tick (Linux before 6.13 stamps files with a coarse clock), a write in the same tick
    as this was taken goes unseen; that is another process writing as this one ends,
    and what it writes is checksummed like everything else. (The files are where
    `thinlink.build.cache` keeps its diskcache store: `objects/cache.db`.)
    """
    database = os.path.join(cache_dir, "objects", "cache.db")
    parts = []
    for path in (database, database + "-wal"):
        try:
            st = os.stat(path)
        except FileNotFoundError:
            if path == database:
                return None
            parts.append("-")
            continue
        except OSError:
            return None  # cannot tell: read the records
        parts.append(f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}")
    return " ".join(parts)


def _reused(source: SourceFile, before: ModuleEntry) -> ModuleEntry:
    """The entry of a file reused as the last build had it (under its current name)."""
    if before.name == source.name:
        return before
    return ModuleEntry(
        source.name,
        source.path,
        before.digest,
        before.record,
        before.units,
        None,
        before.fingerprint,
    )


def _failed(
    source: SourceFile, digest: str | None, check: str | None, err: ThinlinkError
) -> ModuleEntry:
    return ModuleEntry(source.name, source.path, digest, None, 0, str(err), check)


def _count_units(segments: tuple) -> int:
    from .rebuild import count_units

    return count_units(segments)


# compiling whole files: in this process, or in workers --------------------------------


class _WorkerError(Frozen):
    """A SourceError's fields, to cross from a worker process (the error itself does
    not unpickle: its args are the formatted message, not the constructor's)."""

    __slots__ = ("fields",)
    fields: tuple[str, int, int, str, str]

    def __init__(self, fields: tuple[str, int, int, str, str]) -> None:
        super().__init__(fields)


def _compile_one(pending: _Pending) -> object:
    """(record, marshalled code, seconds) for a file, or the SourceError it raised.

    Runs in worker processes too, so it only computes: the parent stores results,
    keeping cache writes out of the workers' way (SQLite takes one writer at a time:
    workers writing for themselves wait on each other, and cost more than they save).
    """
    import marshal

    from .rebuild import compile_whole

    t0 = time.perf_counter()
    try:
        record, code = compile_whole(pending.source.path, pending.data, pending.digest)
    except SourceError as err:
        return err
    return record, marshal.dumps(code), time.perf_counter() - t0


def _compile_batch(batch: list[_Pending]) -> list[object]:
    return [_portable(_compile_one(p)) for p in batch]


def _portable(result: object) -> object:
    if isinstance(result, SourceError):
        return _WorkerError((result.path, result.line, result.col, result.message, result.text))
    return result
