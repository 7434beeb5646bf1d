"""The content-addressed store of compiled code (the only module importing diskcache).

Keys name content, never time: a module version is its path and source digest, a
fragment is its text digest and position. Every key carries the interpreter's tag
(cache tag and bytecode magic), so Pythons sharing one cache never mix.

Promises, each resting on diskcache's SQLite transactions:
- `get`/`put` are atomic; two builds may share one cache at once.
- A build killed half-way leaves the cache usable: a value lands whole or not at all.
- An entry whose checksum does not match is dropped and reported as a miss, so a
  corrupt entry is recompiled, never trusted. A vanished entry is a miss too.
- Size is bounded (`size_limit`); the oldest stored entries are evicted first.
"""

from __future__ import annotations

import contextlib
import marshal
import os
from types import CodeType

import xxhash

from .manifest import INTERPRETER_TAG
from .text import SourceText
from .units import ModuleRecord, dump_record, load_record

__all__ = ["Cache", "INTERPRETER_TAG", "DEFAULT_SIZE_LIMIT"]

DEFAULT_SIZE_LIMIT = 2**30  # 1 GiB
_SUM = 8  # bytes of checksum in front of every value
_MEMO_BYTES = 64 * 2**20
# SQLite's page cache, in pages: its default grows with the database; a build reads and
# writes each value once, so a small one keeps a cold build's memory down at no cost.
_SQLITE_CACHE_PAGES = 2**10


def _sqlite_error() -> type[Exception]:
    import sqlite3  # loaded with diskcache already

    return sqlite3.Error


def _log():  # noqa: ANN202 - logging loads on the warning paths only
    import logging

    return logging.getLogger(__name__)


class Cache:
    """Compiled code and module records under one directory.

    A `Cache` may not be shared between processes (open one per process; forked
    build workers open their own), but many processes may open the same directory.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        size_limit: int = DEFAULT_SIZE_LIMIT,
        *,
        memo: bool = False,
    ):
        # Here, not at import: keys and a no-op build do without them.
        from pathlib import Path

        import diskcache

        self._diskcache = diskcache
        self.directory = Path(directory)
        self._memo: dict[str, bytes] = {}
        self._memo_bytes = 0
        self._memo_limit = _MEMO_BYTES if memo else 0
        self._records: dict[str, ModuleRecord] = {}
        self._texts: dict[str, SourceText] = {}
        # Values not written yet (records still unserialised), see write_behind().
        self._unwritten: dict[str, bytes | ModuleRecord] | None = None
        self._store = diskcache.Cache(
            str(self.directory / "objects"),
            size_limit=size_limit,
            eviction_policy="least-recently-stored",
            # Values are small and written once; keeping them in SQLite up to 1 MiB
            # saves a file per module.
            disk_min_file_size=2**20,
            # Culling on every write costs a size query per value; `cull()` runs once
            # at the end of each build instead.
            cull_limit=0,
            sqlite_cache_size=_SQLITE_CACHE_PAGES,
        )

    # keys -------------------------------------------------------------------

    @staticmethod
    def module_key(kind: str, path: str, digest: str) -> str:
        """Key of something derived from one version of one file ("code", "record")."""
        where = xxhash.xxh3_64_hexdigest(path.encode("utf-8", "surrogatepass"))
        return f"{kind}:{INTERPRETER_TAG}:{where}:{digest}"

    @staticmethod
    def fragment_key(path: str, start: int, digest: str) -> str:
        where = xxhash.xxh3_64_hexdigest(f"{path}\0{start}".encode("utf-8", "surrogatepass"))
        return f"frag:{INTERPRETER_TAG}:{where}:{digest}"

    @staticmethod
    def source_key(digest: str) -> str:
        return f"src:{digest}"

    # values -----------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        """The bytes stored under `key`, or None when missing or corrupt.

        With `memo=True`, values read or written once are remembered (up to 64 MiB):
        every key names content, so a remembered value is never stale, and a long-lived
        process (`thinlink dev`) reads each version of a module from disk once.
        """
        found = self._memo.get(key)
        if found is not None:
            return found
        if self._unwritten and key in self._unwritten:
            value = self._unwritten[key]
            return dump_record(value) if isinstance(value, ModuleRecord) else value
        payload = self._read(key)
        if payload is not None:
            self._remember(key, payload)
        return payload

    def _remember(self, key: str, payload: bytes) -> None:
        if not self._memo_limit:
            return
        if self._memo_bytes + len(payload) > self._memo_limit:
            self.flush()  # what is only in memory must reach the disk before it is dropped
            self._memo.clear()
            self._records.clear()
            self._texts.clear()
            self._memo_bytes = 0
        self._memo[key] = payload
        self._memo_bytes += len(payload)

    def _read(self, key: str) -> bytes | None:
        try:
            value = self._store.get(key)
        except (OSError, self._diskcache.Timeout) as exc:  # a vanished value file is a miss
            _log().debug("cache read of %s failed: %s", key, exc)
            return None
        except Exception as exc:  # a garbled row: diskcache failed to decode it per its mode
            _log().warning("dropping unreadable cache entry %s: %r", key, exc)
            self._discard(key)
            return None
        if not isinstance(value, bytes) or len(value) < _SUM:
            if value is not None:
                _log().warning("dropping corrupt cache entry %s", key)
                self._discard(key)
            return None
        payload = value[_SUM:]
        if xxhash.xxh3_64_digest(payload) != value[:_SUM]:
            _log().warning("dropping corrupt cache entry %s", key)
            self._discard(key)
            return None
        return payload

    def _discard(self, key: str) -> None:
        # Best effort: another build holding the write lock must not fail this read.
        try:
            self._store.delete(key)
        except (OSError, self._diskcache.Timeout, _sqlite_error()):
            pass

    def put(self, key: str, payload: bytes) -> None:
        """Store `payload` under `key`. Operation is atomic.

        With `write_behind()` on, the value is kept in memory until `flush()`.
        """
        if self._unwritten is not None:
            self._remember(key, payload)
            self._unwritten[key] = payload
            return
        self._store.set(key, xxhash.xxh3_64_digest(payload) + payload)
        self._remember(key, payload)

    def write_behind(self) -> None:
        """Keep writes in memory until `flush()` (needs `memo=True`).

        For `thinlink dev`: a save's patch goes out first, and its records reach the
        disk after, off the path between a save and the app running the new code.
        """
        if not self._memo_limit:
            raise ValueError("write_behind() needs a Cache opened with memo=True")
        if self._unwritten is None:
            self._unwritten = {}

    def flush(self) -> int:
        """Write what `write_behind()` kept in memory, in one transaction; returns how many."""
        pending = self._unwritten
        if not pending:
            return 0
        with self._store.transact():
            for key, value in pending.items():
                payload = dump_record(value) if isinstance(value, ModuleRecord) else value
                self._store.set(key, xxhash.xxh3_64_digest(payload) + payload)
        self._unwritten = {}
        return len(pending)

    def __contains__(self, key: str) -> bool:
        return bool(self._unwritten and key in self._unwritten) or key in self._store

    def get_record(self, key: str) -> ModuleRecord | None:
        """The module record under `key` (decoded once per key with `memo=True`)."""
        found = self._records.get(key)
        if found is not None:
            return found
        payload = self.get(key)
        record = load_record(payload) if payload is not None else None
        if record is not None and self._memo_limit:
            self._records[key] = record
        return record

    def put_record(self, key: str, record: ModuleRecord) -> None:
        if self._unwritten is not None:
            # Serialised when flushed: dumping a large module's record is the costliest
            # part of storing it.
            self._records[key] = record
            self._unwritten[key] = record
            return
        self.put(key, dump_record(record))
        if self._memo_limit:
            self._records[key] = record

    def source_text(self, digest: str, path: str, data: bytes | None = None) -> SourceText | None:
        """The decoded text of a source version (from `data` if given, else the cache).

        Memoised with `memo=True`: a long-lived session decodes each version once.
        """
        found = self._texts.get(digest)
        if found is not None:
            return found
        if data is None:
            data = self.get(self.source_key(digest))
            if data is None:
                return None
        text = SourceText.decode(data, path)
        self.remember_text(digest, text)
        return text

    def remember_text(self, digest: str, text: SourceText) -> None:
        """Memoise the decoded text of a source version (with `memo=True`)."""
        if self._memo_limit:
            self._texts[digest] = text

    def get_code(self, key: str) -> CodeType | None:
        payload = self.get(key)
        if payload is None:
            return None
        try:
            code = marshal.loads(payload)
        except (ValueError, EOFError, TypeError):
            return None
        return code if isinstance(code, CodeType) else None

    def put_code(self, key: str, code: CodeType) -> None:
        self.put(key, marshal.dumps(code))

    def transact(self):  # noqa: ANN201 - a context manager
        """Group writes into one transaction (much faster for many small values)."""
        if self._unwritten is not None:
            return contextlib.nullcontext()  # nothing is written until flush()
        return self._store.transact()

    # housekeeping ------------------------------------------------------------

    def cull(self) -> int:
        """Evict entries until the cache is under its size limit; returns how many."""
        return self._store.cull()

    def volume(self) -> int:
        """Bytes used on disk."""
        return self._store.volume()

    def clear(self) -> int:
        """Remove every entry; returns how many were removed."""
        self._memo.clear()
        self._records.clear()
        self._texts.clear()
        self._memo_bytes = 0
        if self._unwritten:
            self._unwritten = {}
        return self._store.clear()

    def close(self) -> None:
        self.flush()
        self._store.close()

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
