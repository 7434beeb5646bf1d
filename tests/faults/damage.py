"""The files a cache holds, what each one is, and the ways to damage them.

Nothing here knows how the cache names its files or lays out its directories: files
are found by walking the cache directory and told apart by what they hold.

- `database`: an SQLite database (its header says so); `journal`: the write-ahead log,
  shared memory or rollback journal next to one (SQLite's own names for them);
- `image`: a file holding the code of every module of the project (every `tag:` string
  of the sample project); `value`: one holding some modules' content but not all;
- `ref`: a short text naming one of the project's builds; `manifest`: a file naming the
  project's sources without holding their code; `other`: anything else.

The damage is what disks, crashes and people do: truncation, flipped bytes, a zeroed
block, garbage, NUL padding, deletion, two files' contents swapped, and two values of
the same size swapped inside the database. Each damage is seeded and returns a line
saying what it did, which the reports quote.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CORRUPTIONS",
    "ROLES",
    "CacheFile",
    "ValuePair",
    "cache_files",
    "leave_wal",
    "pad_with_nuls",
    "swap_files",
    "swap_values",
    "value_pairs",
]

SQLITE_HEADER = b"SQLite format 3\x00"
_JOURNALS = ("-wal", "-shm", "-journal")
ROLES = ("database", "journal", "value", "image", "ref", "manifest", "other")
_SMALL = 256  # bytes: the most a ref holds (a build id and a little state)


@dataclass(frozen=True)
class CacheFile:
    """A file of the cache: its path, what it is and whose content it holds (`tags`),
    and a label that names it the same way in every run (`value-2`: the third value
    in an order that does not depend on the random parts of file names)."""

    path: Path
    role: str
    tags: frozenset[bytes]
    label: str
    shown: str  # the path relative to the cache directory, for reports

    def __str__(self) -> str:
        return f"{self.label} ({self.shown})"


def cache_files(
    cache: Path,
    tags: Sequence[bytes],
    build_ids: Sequence[str],
    root: Path,
    known: dict[str, tuple[str, frozenset[bytes]]] | None = None,
) -> list[CacheFile]:
    """Every regular file under `cache`, each with its role (see the module docstring),
    in a stable order. `tags` are the sample project's `tag:` strings, `build_ids` its
    builds, `root` its directory. `known` ({relative path: (role, tags)}) saves reading
    files again where the cache is known to be as it was (restored from a copy); it is
    filled in.

    The order: by role, then the name with its hexadecimal parts blanked, the tags
    held, the size, and the time written (a copy keeps it): the same files come in the
    same order in every run, though the cache names some of them at random.
    """
    known = {} if known is None else known
    paths = [p for p in cache.rglob("*") if p.is_file() and not p.is_symlink()]
    databases = {p for p in paths if _head(p, len(SQLITE_HEADER)) == SQLITE_HEADER}
    described = []
    for path in paths:
        shown = str(path.relative_to(cache))
        if shown not in known:
            data = b"" if path in databases else path.read_bytes()
            held = frozenset(tag for tag in tags if tag in data)
            known[shown] = (_role(path, data, databases, held, tags, build_ids, root), held)
        role, held = known[shown]
        stat = path.stat()
        order = (
            ROLES.index(role),
            _blanked(shown),
            sorted(held),
            stat.st_size,
            stat.st_mtime_ns,
        )
        described.append((order, path, role, held, shown))
    described.sort(key=lambda d: d[0])
    found, counts = [], dict.fromkeys(ROLES, 0)
    for _, path, role, held, shown in described:
        found.append(CacheFile(path, role, held, f"{role}-{counts[role]}", shown))
        counts[role] += 1
    return found


def _blanked(shown: str) -> str:
    """A relative path with what may be random blanked: every directory or file name
    that is a hexadecimal number, and each long hexadecimal run in the others."""
    parts = Path(shown).parts
    return "/".join(
        "#" if re.fullmatch(r"[0-9a-f]+", Path(part).stem) else re.sub(r"[0-9a-f]{8,}", "#", part)
        for part in parts
    )


def _role(
    path: Path,
    data: bytes,
    databases: set[Path],
    held: frozenset[bytes],
    tags: Sequence[bytes],
    build_ids: Sequence[str],
    root: Path,
) -> str:
    if path in databases:
        return "database"
    for suffix in _JOURNALS:
        if path.name.endswith(suffix) and path.with_name(path.name[: -len(suffix)]) in databases:
            return "journal"
    if len(held) == len(tags):
        return "image"
    if held:
        return "value"
    if len(data) <= _SMALL and any(b.encode() in data for b in build_ids):
        return "ref"
    if os.fsencode(root) in data:
        return "manifest"
    return "other"


def _head(path: Path, size: int) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(size)
    except OSError:
        return b""


# damage to one file -----------------------------------------------------------------


def truncate_to_empty(path: Path, rng: random.Random) -> str:
    os.truncate(path, 0)
    return "truncated to 0 bytes"


def truncate_to_half(path: Path, rng: random.Random) -> str:
    size = path.stat().st_size
    os.truncate(path, size // 2)
    return f"truncated from {size} to {size // 2} bytes"


def truncate_by_one(path: Path, rng: random.Random) -> str:
    size = path.stat().st_size
    os.truncate(path, max(0, size - 1))
    return f"last byte of {size} cut"


def flip_bytes(path: Path, rng: random.Random) -> str:
    data = bytearray(path.read_bytes())
    if not data:
        return "empty, nothing to flip"
    count = min(len(data), rng.choice((1, 2, 2, 16)))
    offsets = sorted(rng.sample(range(len(data)), count))
    for offset in offsets:
        data[offset] ^= rng.randrange(1, 256)
    _overwrite(path, data)
    where = ", ".join(map(str, offsets[:4])) + (" ..." if count > 4 else "")
    return f"{count} byte(s) flipped at {where}"


def zero_block(path: Path, rng: random.Random, block: int = 4096) -> str:
    data = bytearray(path.read_bytes())
    start = rng.randrange(0, max(1, len(data) // block + (len(data) % block > 0))) * block
    end = min(len(data), start + block)
    data[start:end] = bytes(end - start)
    _overwrite(path, data)
    return f"bytes {start}-{end} zeroed"


def fill_with_garbage(path: Path, rng: random.Random) -> str:
    size = path.stat().st_size
    _overwrite(path, rng.randbytes(size))
    return f"all {size} bytes replaced by random ones"


def delete(path: Path, rng: random.Random) -> str:
    path.unlink()
    return "deleted"


def pad_with_nuls(path: Path, rng: random.Random, count: int = 8192) -> str:
    with open(path, "ab") as f:
        f.write(bytes(count))
    return f"padded with {count} NUL bytes"


def _overwrite(path: Path, data: bytes | bytearray) -> None:
    """Write `data` over the file in place (same inode, as a disk's damage would be)."""
    with open(path, "r+b") as f:
        f.write(data)
        f.truncate(len(data))


CORRUPTIONS: dict[str, Callable[[Path, random.Random], str]] = {
    "truncate-0": truncate_to_empty,
    "truncate-half": truncate_to_half,
    "truncate-1": truncate_by_one,
    "flip": flip_bytes,
    "zero-block": zero_block,
    "garbage": fill_with_garbage,
    "delete": delete,
}


def swap_files(a: Path, b: Path) -> str:
    """Exchange the contents of two files (each keeps its name and inode)."""
    first, second = a.read_bytes(), b.read_bytes()
    _overwrite(a, second)
    _overwrite(b, first)
    return f"contents swapped ({len(first)} and {len(second)} bytes)"


# damage inside the database -------------------------------------------------------------


@dataclass(frozen=True)
class ValuePair:
    """Two rows of one table whose values in one column have the same type and size
    but differ; `tags` says whose content each holds (empty when no module's)."""

    table: str
    column: str
    rowids: tuple[int, int]
    size: int
    tags: tuple[frozenset[bytes], frozenset[bytes]]

    @property
    def crosses_modules(self) -> bool:
        """Whether the two values are two different modules' content."""
        a, b = self.tags
        return bool(a and b and a != b)

    def __str__(self) -> str:
        names = ["/".join(sorted(t.decode() for t in tags)) or "-" for tags in self.tags]
        return (
            f"{self.table}.{self.column} of rows {self.rowids[0]} ({names[0]}) and "
            f"{self.rowids[1]} ({names[1]}), {self.size} bytes each"
        )


def value_pairs(database: Path, tags: Sequence[bytes]) -> list[ValuePair]:
    """Every pair of same-sized, different text or blob values in one column of one
    table of `database` (read from a copy, so the cache's files are untouched)."""
    with tempfile.TemporaryDirectory() as tmp:
        con = sqlite3.connect(_copy_database(database, Path(tmp)))
        try:
            return _pairs(con, tags)
        finally:
            con.close()


def _pairs(con: sqlite3.Connection, tags: Sequence[bytes]) -> list[ValuePair]:
    pairs = []
    tables = [
        row[0]
        for row in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    for table in tables:
        columns = [row[1] for row in con.execute(f'PRAGMA table_info("{table}")')]
        for column in columns:
            try:
                rows = con.execute(
                    f'SELECT rowid, typeof("{column}"), length(CAST("{column}" AS BLOB)), '
                    f'CAST("{column}" AS BLOB) FROM "{table}" '
                    f"WHERE typeof(\"{column}\") IN ('text', 'blob')"
                ).fetchall()
            except sqlite3.OperationalError:  # a table without rowid
                continue
            groups: dict[tuple[str, int], list[tuple[int, bytes]]] = {}
            for rowid, kind, size, value in rows:
                groups.setdefault((kind, size), []).append((rowid, value))
            for (_kind, size), members in groups.items():
                for i, (rowid_a, a) in enumerate(members):
                    for rowid_b, b in members[i + 1 :]:
                        if a != b:
                            held = (_tags_in(a, tags), _tags_in(b, tags))
                            pairs.append(ValuePair(table, column, (rowid_a, rowid_b), size, held))
    return pairs


def _tags_in(value: bytes, tags: Sequence[bytes]) -> frozenset[bytes]:
    return frozenset(tag for tag in tags if tag in value)


def swap_values(database: Path, pair: ValuePair) -> str:
    """Swap the two values of `pair` inside `database`: done by SQLite on a copy (so the
    database stays well-formed and its checksums right), then copied back over it."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = _copy_database(database, Path(tmp))
        con = sqlite3.connect(copy)
        try:
            table, column = pair.table, pair.column
            a, b = (
                con.execute(
                    f'SELECT "{column}" FROM "{table}" WHERE rowid = ?', (rowid,)
                ).fetchone()[0]
                for rowid in pair.rowids
            )
            update = f'UPDATE "{table}" SET "{column}" = ? WHERE rowid = ?'
            # Through a placeholder no row holds: the column may be UNIQUE.
            placeholder = type(a)(os.urandom(16).hex()) if isinstance(a, str) else os.urandom(16)
            with con:
                con.execute(update, (placeholder, pair.rowids[0]))
                con.execute(update, (a, pair.rowids[1]))
                con.execute(update, (b, pair.rowids[0]))
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            con.close()
        shutil.copyfile(copy, database)
    for suffix in _JOURNALS:  # what they held is in the database copied back
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    return f"swapped {pair}"


def _copy_database(database: Path, into: Path) -> Path:
    copy = into / database.name
    shutil.copyfile(database, copy)
    wal = Path(f"{database}-wal")
    if wal.exists():
        shutil.copyfile(wal, Path(f"{copy}-wal"))
    return copy


def leave_wal(database: Path) -> bool:
    """Leave `database` with a write-ahead log holding committed pages, as a process
    killed after its last commit leaves it: every row rewritten as it is, in a process
    that ends without closing the database. False if the database keeps no such log."""
    script = (
        "import os, sqlite3, sys\n"
        "con = sqlite3.connect(sys.argv[1])\n"
        "if con.execute('PRAGMA journal_mode').fetchone()[0] != 'wal':\n"
        "    os._exit(3)\n"
        'names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = '
        "'table' AND name NOT LIKE 'sqlite_%'\")]\n"
        "with con:\n"
        "    for name in names:\n"
        "        con.execute(f'UPDATE \"{name}\" SET rowid = rowid')\n"
        "os._exit(0)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(database)], capture_output=True)
    if done.returncode not in (0, 3):
        raise AssertionError(f"could not leave a write-ahead log: {done.stderr.decode()}")
    return done.returncode == 0
