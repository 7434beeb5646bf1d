"""Building a project: deciding, per module, to reuse, rebuild or compile it.

For each source file, in order of cost:
1. its bytes hash to the digest the last build had, and the record is still cached:
   reuse (a no-op build reads and hashes every file and compiles nothing);
2. the cache already holds a record for this path and digest (a branch switched back,
   another build of the same tree): reuse;
3. the last build had an older version of it: `rebuild` the segments the edit touched;
4. otherwise compile it whole; many such files go to a pool of worker processes.

A plain build never executes project code. A file that fails (a syntax error, an
undecodable or unreadable file) is recorded with its error; the others still build.
"""

from __future__ import annotations

import errno
import marshal
import os
import stat
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hotpatch._image import source_digest

from .cache import Cache
from .errors import SourceError, ThinlinkError
from .manifest import BuildStore, Manifest, ModuleEntry, make_build_id
from .rebuild import compile_whole, count_units, rebuild, store
from .sources import SourceFile, discover
from .units import ModuleRecord

__all__ = ["BuildResult", "Builder", "ModuleChange"]

# Below this many bytes of source to compile, a worker pool costs more than it saves.
_POOL_THRESHOLD = 512 * 1024


@dataclass(frozen=True, slots=True)
class ModuleChange:
    """What a build did to one module that was not simply reused."""

    name: str
    action: str  # "compiled", "rebuilt" or "failed"
    compiled: int = 0
    relocated: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class BuildResult:
    """The outcome of one build: its manifest, counts and errors."""

    manifest: Manifest
    compiled: int = 0
    reused: int = 0
    relocated: int = 0
    seconds: float = 0.0
    errors: tuple[ThinlinkError, ...] = ()
    warnings: tuple[str, ...] = ()
    changes: tuple[ModuleChange, ...] = field(default=())

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


@dataclass
class _Pending:
    source: SourceFile
    data: bytes
    digest: str


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
        self.root = Path(root).resolve()
        self.cache_dir = Path(cache_dir)
        self.jobs = jobs or os.cpu_count() or 1
        self.progress = progress
        self.store = BuildStore(self.cache_dir)
        self._cache: Cache | None = None
        self._memo = memo  # keep cache reads in memory (a long-lived session)

    @property
    def cache(self) -> Cache:
        """The cache, opened on first use: a no-op build never needs it."""
        if self._cache is None:
            self._cache = Cache(self.cache_dir, memo=self._memo)
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
        sources, warnings = discover(self.root)
        previous = self._previous()
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
                entries[source.path] = _failed(source, None, err)
                errors.append(err)
                continue
            digest = source_digest(data)
            key = self.cache.module_key("record", source.path, digest)
            # A checksummed read, not a membership test: a corrupt record is recompiled.
            if before is not None and before.digest == digest and self.cache.get(key) is not None:
                entries[source.path] = ModuleEntry(
                    source.name, source.path, digest, key, before.units
                )
                reused += before.units
                continue
            record = self._cached_record(key)
            if record is not None:
                units = count_units(record.segments)
                entries[source.path] = ModuleEntry(source.name, source.path, digest, key, units)
                reused += units
                continue
            pending = _Pending(source, data, digest)
            if before is not None and before.record is not None:
                change = self._rebuild(before, pending, entries, errors)
                if change is not None:
                    changes.append(change)
                    compiled += change.compiled
                    relocated += change.relocated
                    reused += entries[source.path].units - change.compiled - change.relocated
                    continue
            cold.append(pending)

        with self.cache.transact():
            for change in self._compile_all(cold, entries, errors):
                changes.append(change)
                compiled += change.compiled
        if cold:
            self.cache.cull()

        modules = tuple(entries[s.path] for s in sources if s.path in entries)
        root = str(self.root)
        manifest = Manifest(make_build_id(root, modules), root, modules, time.time())
        self.store.save(manifest)
        self.store.set_ref(root, "last", manifest.build_id)
        if not errors:
            self.store.set_ref(root, "last-good", manifest.build_id)
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

    # one module at a time ------------------------------------------------------

    def _previous(self) -> dict[str, ModuleEntry]:
        build_id = self.store.ref(str(self.root), "last")
        if build_id is None:
            return {}
        try:
            return self.store.load(build_id).by_path()
        except ThinlinkError:
            return {}

    def _cached_record(self, key: str) -> ModuleRecord | None:
        return self.cache.get_record(key)

    def _rebuild(
        self,
        before: ModuleEntry,
        pending: _Pending,
        entries: dict[str, ModuleEntry],
        errors: list[ThinlinkError],
    ) -> ModuleChange | None:
        """Rebuild from the previous version, or None when that version is gone."""
        old = self._cached_record(before.record or "")
        old_data = self.cache.get(self.cache.source_key(before.digest or ""))
        if old is None or old_data is None:
            return None
        t0 = time.perf_counter()
        source = pending.source
        try:
            done = rebuild(self.cache, old, old_data, source.path, pending.data)
        except SourceError as err:
            entries[source.path] = _failed(source, pending.digest, err)
            errors.append(err)
            return ModuleChange(source.name, "failed")
        key = self.cache.module_key("record", source.path, done.record.digest)
        entries[source.path] = ModuleEntry(
            source.name, source.path, done.record.digest, key, done.units
        )
        return ModuleChange(
            source.name, "rebuilt", done.compiled, done.relocated, time.perf_counter() - t0
        )

    def _compile_all(
        self, cold: list[_Pending], entries: dict[str, ModuleEntry], errors: list[ThinlinkError]
    ) -> Iterator[ModuleChange]:
        if not cold:
            return
        size = sum(len(p.data) for p in cold)
        if self.jobs > 1 and size > _POOL_THRESHOLD and len(cold) > 1:
            outcomes = self._compile_in_pool(cold)
        else:
            outcomes = ((p, _compile_one(p)) for p in cold)
        total = len(cold)
        for done, (pending, result) in enumerate(outcomes, 1):
            if self.progress is not None:
                self.progress(done, total)
            source = pending.source
            if isinstance(result, SourceError):
                entries[source.path] = _failed(source, pending.digest, result)
                errors.append(result)
                yield ModuleChange(source.name, "failed")
                continue
            record, code, seconds = result
            store(self.cache, record, pending.data, code)
            units = count_units(record.segments)
            key = self.cache.module_key("record", source.path, pending.digest)
            entries[source.path] = ModuleEntry(source.name, source.path, pending.digest, key, units)
            yield ModuleChange(source.name, "compiled", units, 0, seconds)

    def _compile_in_pool(self, cold: list[_Pending]) -> Iterable[tuple[_Pending, object]]:
        # Largest files first, in small batches, so both cores finish together.
        from concurrent.futures import ProcessPoolExecutor  # costs 25 ms to import

        cold = sorted(cold, key=lambda p: len(p.data), reverse=True)
        batches = [cold[i : i + 8] for i in range(0, len(cold), 8)]
        with ProcessPoolExecutor(max_workers=min(self.jobs, len(batches))) as pool:
            for batch, results in zip(batches, pool.map(_compile_batch, batches), strict=True):
                for pending, result in zip(batch, results, strict=True):
                    if isinstance(result, _WorkerError):
                        result = SourceError(*result.fields)
                    yield pending, result


def _read_source(path: str) -> bytes:
    """The bytes of the regular file at `path`; OSError for anything else.

    Opened without blocking and checked, so a FIFO named `x.py` is an error rather
    than a build waiting forever for a writer.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        return f.read()


@dataclass(frozen=True, slots=True)
class _WorkerError:
    """A SourceError's fields, to cross from a worker process (the error itself does
    not unpickle: its args are the formatted message, not the constructor's)."""

    fields: tuple[str, int, int, str, str]


def _failed(source: SourceFile, digest: str | None, err: ThinlinkError) -> ModuleEntry:
    return ModuleEntry(source.name, source.path, digest, None, 0, str(err))


def _compile_one(pending: _Pending) -> object:
    """(record, marshalled code, seconds) for a file, or the SourceError it raised.

    Runs in worker processes too, so it only computes: the parent stores results,
    keeping cache writes out of the workers' way (SQLite takes one writer at a time).
    """
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
