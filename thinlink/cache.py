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

import importlib.util
import logging
import marshal
import os
import sqlite3
import sys
from pathlib import Path
from types import CodeType

import diskcache
import xxhash

from .units import ModuleRecord, dump_record, load_record

__all__ = ["Cache", "INTERPRETER_TAG", "DEFAULT_SIZE_LIMIT"]

log = logging.getLogger(__name__)

INTERPRETER_TAG = f"{sys.implementation.cache_tag}-{importlib.util.MAGIC_NUMBER.hex()}"
DEFAULT_SIZE_LIMIT = 2**30  # 1 GiB
_SUM = 8  # bytes of checksum in front of every value
_MEMO_BYTES = 64 * 2**20


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
        self.directory = Path(directory)
        self._memo: dict[str, bytes] = {}
        self._memo_bytes = 0
        self._memo_limit = _MEMO_BYTES if memo else 0
        self._records: dict[str, ModuleRecord] = {}
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
        payload = self._read(key)
        if payload is not None:
            self._remember(key, payload)
        return payload

    def _remember(self, key: str, payload: bytes) -> None:
        if not self._memo_limit:
            return
        if self._memo_bytes + len(payload) > self._memo_limit:
            self._memo.clear()
            self._records.clear()
            self._memo_bytes = 0
        self._memo[key] = payload
        self._memo_bytes += len(payload)

    def _read(self, key: str) -> bytes | None:
        try:
            value = self._store.get(key)
        except (OSError, diskcache.Timeout) as exc:  # a vanished value file is a miss
            log.debug("cache read of %s failed: %s", key, exc)
            return None
        except Exception as exc:  # a garbled row: diskcache failed to decode it per its mode
            log.warning("dropping unreadable cache entry %s: %r", key, exc)
            self._discard(key)
            return None
        if not isinstance(value, bytes) or len(value) < _SUM:
            if value is not None:
                log.warning("dropping corrupt cache entry %s", key)
                self._discard(key)
            return None
        payload = value[_SUM:]
        if xxhash.xxh3_64_digest(payload) != value[:_SUM]:
            log.warning("dropping corrupt cache entry %s", key)
            self._discard(key)
            return None
        return payload

    def _discard(self, key: str) -> None:
        # Best effort: another build holding the write lock must not fail this read.
        try:
            self._store.delete(key)
        except (OSError, sqlite3.Error, diskcache.Timeout):
            pass

    def put(self, key: str, payload: bytes) -> None:
        """Store `payload` under `key`. Operation is atomic."""
        self._store.set(key, xxhash.xxh3_64_digest(payload) + payload)
        self._remember(key, payload)

    def __contains__(self, key: str) -> bool:
        return key in self._store

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
        self.put(key, dump_record(record))
        if self._memo_limit:
            self._records[key] = record

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

    def transact(self):  # noqa: ANN201 - a context manager from diskcache
        """Group writes into one transaction (much faster for many small values)."""
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
        self._memo_bytes = 0
        return self._store.clear()

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
