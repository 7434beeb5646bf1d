"""The content-addressed store of compiled code (the only module importing diskcache).

Keys name content, never time: a module version is its path and source digest, a
fragment is its text digest and position. Every key carries the interpreter's tag
(cache tag, bytecode magic and storage format), so Pythons sharing one cache never mix.

Promises, each resting on diskcache's SQLite transactions:
- `get`/`put` are atomic; two builds may share one cache at once.
- A build killed half-way leaves the cache usable: a value lands whole or not at all.
- Every value is stored with a checksum of its key and its bytes together: a value
  damaged, or found under another key (two rows or value files swapped), is dropped and
  reported as a miss, so it is recompiled, never trusted. A vanished value is a miss too.
- A damaged database (cut short, overwritten, a page zeroed) is a cache miss as a whole:
  `CacheDamaged` is raised, and `Builder` sets the store aside (`set_aside()`), says so
  in one line, and builds again on a fresh one.
- A full disk raises `CacheFull` naming the directory; what was written before stays.
- Size is bounded (`size_limit`); the oldest stored entries are evicted first.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import sys
import time
from collections.abc import Iterator
from types import CodeType

import xxhash

from thinlink.errors import DISK_FULL, CacheFull, ThinlinkError
from thinlink.launch import INTERPRETER_TAG, claim_cache_dir

from .text import SourceText
from .units import ModuleRecord, dump_record, load_record
from .writebehind import WriteBehind

__all__ = ["Cache", "CacheDamaged", "DEFAULT_SIZE_LIMIT", "INTERPRETER_TAG", "set_aside"]

DEFAULT_SIZE_LIMIT = 2**30  # 1 GiB
_SUM = 8  # bytes of checksum in front of every value
_MEMO_BYTES = 64 * 2**20
# SQLite's page cache, in pages: its default grows with the database; a build reads and
# writes each value once, so a small one keeps a cold build's memory down at no cost.
_SQLITE_CACHE_PAGES = 2**10


class CacheDamaged(ThinlinkError):
    """The cache's database cannot be read (damaged on disk). Raised by `Cache`; the
    builder sets the store aside and builds again (`set_aside`)."""


def _diskcache():  # noqa: ANN202 - the module
    # diskcache's package imports its Django integration, which imports Django itself
    # where it is installed: 70 ms for every build of every Django developer. Marking
    # that submodule as absent makes diskcache's own guard skip it.
    sys.modules.setdefault("diskcache.djangocache", None)  # type: ignore[arg-type]
    import diskcache

    return diskcache


def _log():  # noqa: ANN202 - logging loads on the warning paths only
    import logging

    return logging.getLogger(__name__)


_said_damaged = False


def _dropped(key: str, why: str = "") -> None:
    """Say once per process that damaged entries were found (each is a miss, compiled
    again); the keys of the others go to the debug log."""
    global _said_damaged
    if _said_damaged:
        _log().debug("dropping a damaged cache entry (%s)%s", key, why)
        return
    _said_damaged = True
    _log().warning(
        "thinlink: damaged cache entries found (the first: %s%s); dropped and compiled again",
        key,
        why,
    )


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
        self.directory = os.fspath(directory)
        self.size_limit = size_limit
        self._memo: dict[str, bytes] = {}
        self._memo_bytes = 0
        self._memo_limit = _MEMO_BYTES if memo else 0
        self._records: dict[str, ModuleRecord] = {}
        self._texts: dict[str, SourceText] = {}
        # Values not written yet (records still unserialised), see WriteBehind.
        self.behind = WriteBehind(self._write_all)
        self.attempted = 0  # bytes this cache was asked to store: for a full disk's message
        claim_cache_dir(self.directory)
        self._store = self._open()

    def _open(self):  # noqa: ANN202 - a diskcache.Cache
        diskcache = _diskcache()
        try:
            with self._guard():
                return self._new_store(diskcache)
        except (CacheFull, CacheDamaged, OSError):
            raise
        except Exception as exc:  # noqa: BLE001 - diskcache reading damaged settings
            raise CacheDamaged(f"{self.directory}: {type(exc).__name__}: {exc}") from None

    def _new_store(self, diskcache):  # noqa: ANN001, ANN202
        return diskcache.Cache(
            os.path.join(self.directory, "objects"),
            size_limit=self.size_limit,
            eviction_policy="least-recently-stored",
            # Values are small and written once; keeping them in SQLite up to 1 MiB
            # saves a file per module.
            disk_min_file_size=2**20,
            # Culling on every write costs a size query per value; `cull()` runs
            # once at the end of each build instead.
            cull_limit=0,
            sqlite_cache_size=_SQLITE_CACHE_PAGES,
            # No fsync: a cache is rebuilt from its sources, and a store damaged by a power
            # loss is set aside as a miss (see the module docstring). A crash of thinlink
            # itself loses nothing either way: the writes are the kernel's by then.
            sqlite_synchronous=0,
        )

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Turn the store's failures into what they mean: `CacheFull` or `CacheDamaged`."""
        import sqlite3

        try:
            yield
        except OSError as exc:
            if exc.errno in DISK_FULL:
                raise CacheFull(self.directory, 2 * self.attempted or None) from None
            raise
        except sqlite3.Error as exc:
            text = str(exc)
            if "full" in text or ("disk I/O" in text and _disk_is_full(self.directory)):
                raise CacheFull(self.directory, 2 * self.attempted or None) from None
            raise CacheDamaged(f"{self.directory}: {text}") from None

    def abandon(self) -> None:
        """Close a damaged store without writing anything more to it."""
        self.behind.discard()
        try:
            self._store.close()
        except Exception:  # noqa: BLE001 - closing a damaged store may fail any way
            pass

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
        return f"src:{INTERPRETER_TAG}:{digest}"

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
        held = self.behind.get(key)
        if held is not None:
            return dump_record(held) if isinstance(held, ModuleRecord) else held
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
            with self._guard():
                value = self._store.get(key)
        except (OSError, self._timeout()) as exc:  # a vanished value file, a busy store
            _log().debug("cache read of %s failed: %s", key, exc)
            return None
        except ThinlinkError:
            raise
        except Exception as exc:  # noqa: BLE001 - diskcache decoding a garbled row
            _dropped(key, f": {exc!r}")
            self._discard(key)
            return None
        if not isinstance(value, bytes) or len(value) < _SUM:
            if value is not None:
                _dropped(key)
                self._discard(key)
            return None
        payload = value[_SUM:]
        if _checksum(key, payload) != value[:_SUM]:
            _dropped(key)
            self._discard(key)
            return None
        return payload

    def _discard(self, key: str) -> None:
        # Best effort: another build holding the write lock must not fail this read.
        try:
            with self._guard():
                self._store.delete(key)
        except (OSError, ThinlinkError, self._timeout()):
            pass

    def _timeout(self) -> type[Exception]:
        return _diskcache().Timeout

    def put(self, key: str, payload: bytes) -> None:
        """Store `payload` under `key`. Operation is atomic.

        While `behind` is started, the value is kept in memory until `flush()`.
        """
        self.attempted += len(payload)
        self._remember(key, payload)
        if not self.behind.hold(key, payload):
            with self._guard():
                self._store.set(key, _checksum(key, payload) + payload)

    def flush(self) -> int:
        """Write what `behind` holds, in one transaction; returns how many values."""
        return self.behind.flush()

    def _write_all(self, values: dict[str, bytes | ModuleRecord]) -> None:
        with self._guard(), self._store.transact():
            for key, value in values.items():
                payload = dump_record(value) if isinstance(value, ModuleRecord) else value
                self._store.set(key, _checksum(key, payload) + payload)

    def __contains__(self, key: str) -> bool:
        if self.behind.get(key) is not None:
            return True
        with self._guard():
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

    def holds(self, key: str) -> bool:
        """True when the record under `key` is in memory (`memo=True`): reading it is free."""
        return key in self._records

    def put_record(self, key: str, record: ModuleRecord) -> None:
        if self._memo_limit:
            self._records[key] = record
        # Serialised when flushed, when writing behind: dumping a large module's record
        # is the costliest part of storing it.
        if not self.behind.hold(key, record):
            self.put(key, dump_record(record))

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

    @contextlib.contextmanager
    def transact(self) -> Iterator[None]:
        """Group writes into one transaction (much faster for many small values)."""
        if self.behind.active:
            yield  # nothing is written until flush()
            return
        with self._guard(), self._store.transact():
            yield

    # housekeeping ------------------------------------------------------------

    def cull(self) -> int:
        """Evict entries until the cache is under its size limit; returns how many."""
        with self._guard():
            return self._store.cull()

    def clear(self) -> int:
        """Remove every entry; returns how many were removed."""
        self._memo.clear()
        self._records.clear()
        self._texts.clear()
        self._memo_bytes = 0
        self.behind.discard()
        with self._guard():
            return self._store.clear()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._store.close()

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _checksum(key: str, payload: bytes) -> bytes:
    """Binds a value to its key: the same bytes under another key do not check."""
    state = xxhash.xxh3_64(key.encode("utf-8", "surrogatepass") + b"\0")
    state.update(payload)
    return state.digest()


def _disk_is_full(directory: str) -> bool:
    # SQLite reports some failed writes on a full disk as "disk I/O error".
    try:
        st = os.statvfs(directory)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 1024 * 1024


def set_aside(directory: str) -> str:
    """Move the damaged store of the cache in `directory` out of the way (renamed, not
    deleted: the user may want to look at it); returns where it went. The next `Cache`
    opened there starts empty."""
    objects = os.path.join(directory, "objects")
    aside = f"{objects}.damaged-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    try:
        os.replace(objects, aside)
    except FileNotFoundError:
        pass
    return aside
