"""The build image file: round trip, atomic writes, and clear errors for bad images."""

from __future__ import annotations

import hashlib
import importlib.util
import marshal
import os
from pathlib import Path

import pytest

from hotpatch.image import (
    MAGIC,
    Image,
    ImageEntry,
    ImageError,
    read_image,
    source_digest,
    write_image,
)


def _image(tmp_path) -> Image:
    source = b"X = 1\n"
    path = str(tmp_path / "m.py")
    code = marshal.dumps(compile(source, path, "exec", dont_inherit=True))
    return Image("build-1", str(tmp_path), {path: ImageEntry(source_digest(source), code)})


def test_source_digest_is_blake2b_128():
    assert source_digest(b"abc") == hashlib.blake2b(b"abc", digest_size=16).hexdigest()
    assert len(source_digest(b"")) == 32


def test_round_trip(tmp_path):
    image = _image(tmp_path)
    write_image(tmp_path / "img", image)
    assert read_image(tmp_path / "img") == image


def test_code_is_kept_marshalled_until_imported(tmp_path):
    write_image(tmp_path / "img", _image(tmp_path))
    (entry,) = read_image(tmp_path / "img").entries.values()
    assert isinstance(entry.code, memoryview)  # a view of the mapped file: not copied
    namespace: dict = {}
    exec(marshal.loads(entry.code), namespace)
    assert namespace["X"] == 1


def _image_with_damaged_code(tmp_path) -> Path:
    """An image file whose one module's code has a byte changed (its index is whole)."""
    path = tmp_path / "img"
    write_image(path, _image(tmp_path))
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40
    path.write_bytes(data)
    return path


def test_a_module_whose_code_is_damaged_fails_its_own_checksum(tmp_path):
    # Only the index is checked on reading: the damage shows when the module's code is
    # used, and the image is removed (the next build writes it again).
    path = _image_with_damaged_code(tmp_path)
    image = read_image(path)
    (entry,) = image.entries.values()
    assert entry.has_code
    with pytest.raises(ImageError, match="checksum") as info:
        entry.code  # noqa: B018
    assert info.value.path == str(path) and not path.exists()


def test_a_damaged_image_is_not_removed_once_another_replaced_it(tmp_path):
    path = _image_with_damaged_code(tmp_path)
    image = read_image(path)
    write_image(path, _image(tmp_path))  # a build wrote a new one meanwhile
    with pytest.raises(ImageError, match="checksum"):
        image.verify()
    read_image(path).verify()  # the new one stays, whole


def test_entries_are_keyed_by_absolute_normalised_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    entry = ImageEntry("d", b"")
    write_image("img", Image("b", ".", {"sub/../m.py": entry}))
    assert read_image("img").entries == {str(tmp_path / "m.py"): entry}


def test_write_replaces_and_leaves_no_temporary_files(tmp_path):
    write_image(tmp_path / "img", Image("old", "", {}))
    write_image(tmp_path / "img", _image(tmp_path))
    assert read_image(tmp_path / "img").build_id == "build-1"
    assert sorted(os.listdir(tmp_path)) == ["img"]


def test_failed_write_keeps_the_old_image(tmp_path, monkeypatch):
    write_image(tmp_path / "img", Image("old", "", {}))

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_image(tmp_path / "img", _image(tmp_path))
    monkeypatch.undo()
    assert read_image(tmp_path / "img").build_id == "old"
    assert sorted(os.listdir(tmp_path)) == ["img"]


def _corrupt(tmp_path, edit) -> str:
    path = tmp_path / "img"
    write_image(path, _image(tmp_path))
    path.write_bytes(edit(path.read_bytes()))
    return str(path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda data: b"NOTANIMG" + data[8:], "bad magic"),
        (lambda data: b"", "bad magic"),
        (lambda data: data[:8] + b"\x00\x00\r\n" + data[12:], "another Python version"),
        (lambda data: data[:12], "truncated"),
        (lambda data: data[:-1] + bytes([data[-1] ^ 1]), "checksum"),
        (lambda data: data[:-5], "truncated"),
        (lambda data: data[:40], "truncated"),
        (lambda data: data[:26] + bytes([data[26] ^ 1]) + data[27:], "checksum"),
    ],
    ids=[
        "magic",
        "empty",
        "interpreter",
        "truncated-header",
        "flipped-bit",
        "truncated",
        "truncated-index",
        "flipped-index",
    ],
)
def test_bad_images_raise_a_clear_error(tmp_path, edit, message):
    path = _corrupt(tmp_path, edit)
    with pytest.raises(ImageError, match=message) as info:
        read_image(path).verify()
    assert info.value.path == path
    assert str(info.value).startswith(path)


def test_a_payload_of_the_wrong_shape_is_refused(tmp_path):
    import binascii
    import struct

    index = marshal.dumps(("build", "root", ["not", "a", "dict"]))
    fields = struct.pack(">II", binascii.crc32(index), len(index))
    (tmp_path / "img").write_bytes(MAGIC + importlib.util.MAGIC_NUMBER + fields + index)
    with pytest.raises(ImageError, match="unexpected layout"):
        read_image(tmp_path / "img")


def test_missing_image(tmp_path):
    with pytest.raises(ImageError, match="cannot read build image"):
        read_image(tmp_path / "nope")


def test_image_values_are_frozen_comparable_and_picklable():
    import copy
    import pickle

    entry = ImageEntry("d", b"code")
    assert entry == ImageEntry("d", b"code") and entry != ImageEntry("e", b"code")
    assert hash(entry) == hash(ImageEntry("d", b"code"))
    assert repr(entry) == "ImageEntry(digest='d', code=b'code')"
    image = Image("b", "/root", {"/root/m.py": entry})
    assert pickle.loads(pickle.dumps(image)) == image == copy.copy(image)
    with pytest.raises(AttributeError, match="frozen"):
        entry.digest = "x"
    with pytest.raises(AttributeError, match="frozen"):
        del image.root
    with pytest.raises(TypeError):
        ImageEntry("d")
