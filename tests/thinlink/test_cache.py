"""The content-addressed store: checksums, corruption, atomic groups, size limit.

Corruption is made the way it happens: bytes changed in the SQLite row or in the
value file diskcache keeps for large values, with the cache closed or open.
"""

from __future__ import annotations

import marshal
import os
import sqlite3
from pathlib import Path

import pytest

from thinlink.build import cache as cache_module
from thinlink.build.cache import INTERPRETER_TAG, Cache

BIG = 2**20 + 1000  # above diskcache's disk_min_file_size here: stored in a value file


@pytest.fixture
def cache(tmp_path):
    with Cache(tmp_path / "cache") as c:
        yield c


def db(cache: Cache) -> sqlite3.Connection:
    return sqlite3.connect(Path(cache.directory) / "objects" / "cache.db")


def row(cache: Cache, key: str) -> tuple[int, str | None, bytes | None]:
    with db(cache) as conn:
        ((mode, filename, value),) = conn.execute(
            "SELECT mode, filename, value FROM Cache WHERE key = ?", (key,)
        ).fetchall()
    return mode, filename, value


def set_row(cache: Cache, key: str, **columns: object) -> None:
    assignments = ", ".join(f"{name} = ?" for name in columns)
    with db(cache) as conn:
        conn.execute(f"UPDATE Cache SET {assignments} WHERE key = ?", (*columns.values(), key))


def value_file(cache: Cache, key: str) -> Path:
    _, filename, _ = row(cache, key)
    assert filename, "expected the value to live in a file"
    return Path(cache.directory) / "objects" / filename


def test_put_get_round_trip(cache):
    cache.put("k", b"payload")
    assert cache.get("k") == b"payload"
    assert "k" in cache
    assert cache.get("missing") is None
    cache.put("empty", b"")
    assert cache.get("empty") == b""


def test_code_round_trip(cache):
    code = compile("def f():\n    return 42\n", "m.py", "exec")
    cache.put_code("c", code)
    ns: dict[str, object] = {}
    exec(cache.get_code("c"), ns)
    assert ns["f"]() == 42
    assert cache.get_code("missing") is None


def test_keys_name_content_path_kind_and_interpreter(monkeypatch):
    key = Cache.module_key("code", "/p/m.py", "d1")
    assert INTERPRETER_TAG in key
    assert key == Cache.module_key("code", "/p/m.py", "d1")
    assert key != Cache.module_key("code", "/p/m.py", "d2")
    assert key != Cache.module_key("code", "/p/n.py", "d1")
    assert key != Cache.module_key("record", "/p/m.py", "d1")
    assert Cache.fragment_key("/p/m.py", 10, "d") != Cache.fragment_key("/p/m.py", 11, "d")
    monkeypatch.setattr(cache_module, "INTERPRETER_TAG", "other-python-0000")
    assert Cache.module_key("code", "/p/m.py", "d1") != key
    assert INTERPRETER_TAG not in Cache.fragment_key("/p/m.py", 10, "d")


def test_garbage_in_the_sqlite_value_is_a_miss_and_dropped(cache):
    cache.put("k", b"x" * 1000)
    set_row(cache, "k", value=os.urandom(1000))
    assert cache.get("k") is None
    assert "k" not in cache  # dropped, so the next put stores a good copy
    cache.put("k", b"x" * 1000)
    assert cache.get("k") == b"x" * 1000


def test_one_flipped_byte_is_caught(cache):
    payload = marshal.dumps(compile("x = 1\n", "m.py", "exec"))
    cache.put("k", payload)
    _, _, value = row(cache, "k")
    flipped = bytearray(value)
    flipped[-3] ^= 0x01
    set_row(cache, "k", value=bytes(flipped))
    assert cache.get_code("k") is None


@pytest.mark.parametrize("value", [b"", b"short", None, "text, not bytes", 12345])
def test_a_value_of_the_wrong_shape_is_a_miss(cache, value):
    cache.put("k", b"payload")
    set_row(cache, "k", value=value)
    assert cache.get("k") is None


def test_a_garbled_row_is_a_miss_not_a_crash(cache):
    # The mode column garbled to "pickle": diskcache would unpickle the garbage.
    cache.put("k", b"payload")
    set_row(cache, "k", mode=4, value=b"\x80\x04garbage that is not a pickle")
    assert cache.get("k") is None
    assert "k" not in cache


def test_a_checksummed_non_code_value_is_not_code(cache):
    cache.put("k", b"\xff not marshal data")
    assert cache.get_code("k") is None
    cache.put("k2", marshal.dumps(("a", "tuple")))
    assert cache.get_code("k2") is None


def test_garbage_in_a_value_file_is_a_miss(cache):
    payload = os.urandom(BIG)
    cache.put("big", payload)
    path = value_file(cache, "big")
    with path.open("r+b") as f:
        f.seek(BIG // 2)
        f.write(b"garbage")
    assert cache.get("big") is None
    cache.put("big", payload)
    assert cache.get("big") == payload


def test_a_truncated_or_vanished_value_file_is_a_miss(cache):
    cache.put("a", os.urandom(BIG))
    cache.put("b", os.urandom(BIG))
    os.truncate(value_file(cache, "a"), 100)
    value_file(cache, "b").unlink()
    assert cache.get("a") is None
    assert cache.get("b") is None


def test_a_group_of_writes_lands_whole_or_not_at_all(cache):
    cache.put("before", b"1")
    with pytest.raises(RuntimeError), cache.transact():
        cache.put("a", b"2")
        cache.put("b", b"3")
        raise RuntimeError("killed half-way")
    assert cache.get("a") is None and cache.get("b") is None
    assert cache.get("before") == b"1"
    with cache.transact():
        cache.put("a", b"2")
        cache.put("b", b"3")
    assert (cache.get("a"), cache.get("b")) == (b"2", b"3")


def test_entries_survive_reopening(tmp_path):
    with Cache(tmp_path / "c") as first:
        first.put("k", b"kept")
    with Cache(tmp_path / "c") as second:
        assert second.get("k") == b"kept"


def test_size_limit_evicts_oldest_first(tmp_path):
    limit = 256 * 1024
    with Cache(tmp_path / "c", size_limit=limit) as c:
        for i in range(100):
            c.put(f"k{i:03}", os.urandom(10_000))
        assert c.get("k000") is not None  # no culling on writes ...
        evicted = c.cull()  # ... but once, when asked
        assert evicted > 0
        kept = [i for i in range(100) if c.get(f"k{i:03}") is not None]
        assert kept and len(kept) == 100 - evicted
        assert kept == list(range(100 - len(kept), 100))  # the newest stay
        assert c.cull() == 0


def test_clear_removes_everything(cache):
    for i in range(5):
        cache.put(f"k{i}", b"v")
    assert cache.clear() == 5
    assert cache.get("k0") is None


def test_write_behind_keeps_writes_in_memory_until_flushed(tmp_path):
    from thinlink.build.units import CodeRef, ModuleRecord, Segment, Unit

    record = ModuleRecord(
        "/p/m.py", "d1", 0, (Segment(1, 3, "s", CodeRef("k"), (Unit("f", "function", 1, "u"),)),)
    )
    with Cache(tmp_path / "c", memo=True) as writer, Cache(tmp_path / "c") as reader:
        writer.behind.start()
        writer.put("src:a", b"source")
        writer.put_record("record:a", record)
        with writer.transact():  # a no-op now, not a transaction holding the database
            writer.put("src:b", b"other")
        # The writer sees its own writes; the disk (another process) does not yet.
        assert writer.get("src:a") == b"source" and "src:b" in writer
        assert writer.get_record("record:a") == record
        assert reader.get("src:a") is None and reader.get_record("record:a") is None
        assert writer.flush() == 3
        assert reader.get("src:a") == b"source" and reader.get("src:b") == b"other"
        assert reader.get_record("record:a") == record
        assert writer.flush() == 0


def test_write_behind_flushes_on_close_and_before_forgetting(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "_MEMO_BYTES", 100)
    with Cache(tmp_path / "c", memo=True) as writer:
        writer.behind.start()
        writer.put("a", b"x" * 60)
        writer.put("b", b"y" * 60)  # over the memo's size: "a" is written, then forgotten
        with Cache(tmp_path / "c") as reader:
            assert reader.get("a") == b"x" * 60 and reader.get("b") is None
    with Cache(tmp_path / "c") as reader:
        assert reader.get("b") == b"y" * 60  # written when the writer closed


def test_the_storage_format_is_in_every_key():
    # A record format change must make old records, refs and manifests unreachable.
    from thinlink import launch
    from thinlink.build import units

    assert units._RECORD_FORMAT == launch.STORAGE_FORMAT
    assert f"-s{launch.STORAGE_FORMAT}" in INTERPRETER_TAG
    assert INTERPRETER_TAG in Cache.module_key("record", "/p/m.py", "d")
