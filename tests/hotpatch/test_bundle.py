"""The bundle wire format: round trips, and every way a bundle can be bad is refused before
its payload is unmarshalled."""

from __future__ import annotations

import hashlib
import importlib.util
import marshal
import struct

import pytest

from hotpatch import bundle as bundle_mod
from hotpatch._errors import BundleError, HotpatchError, PatchError
from hotpatch.bundle import (
    MAGIC,
    Bundle,
    FunctionPatch,
    ModulePatch,
    Statement,
    decode,
    encode,
    load,
    save,
)

KEY = b"session-secret"
HEADER = struct.Struct(">8sH4sB32sQ")


def sample() -> Bundle:
    top = compile("def f(x):\n    return x * 7\n", "/src/m.py", "exec")
    f_code = next(c for c in top.co_consts if hasattr(c, "co_qualname"))
    stmt = compile("\n\nA = 41 + 1\n", "/src/m.py", "exec")
    module = ModulePatch(
        name="m",
        path="/src/m.py",
        functions=(FunctionPatch("f", 1, f_code),),
        statements=(Statement(stmt, ("A",), 3, "A = 41 + 1"),),
        removed=("gone",),
        moved=((5, 40, 2), (41, 60, -1)),
    )
    return Bundle("base1", "target2", (module,), warnings=("from the build side",))


@pytest.fixture
def no_unmarshal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the payload is unmarshalled."""

    def refuse(data: bytes) -> object:
        raise AssertionError("marshal.loads reached with a bad bundle")

    monkeypatch.setattr(bundle_mod.marshal, "loads", refuse)


@pytest.mark.parametrize("key", [None, KEY])
def test_round_trip_keeps_everything(key: bytes | None) -> None:
    original = sample()
    decoded = decode(encode(original, key), key)
    assert decoded == original
    namespace: dict[str, object] = {}
    exec(decoded.modules[0].statements[0].code, namespace)
    assert namespace["A"] == 42
    fn = type(test_round_trip_keeps_everything)(decoded.modules[0].functions[0].code, {})
    assert fn(6) == 42


def test_header_layout_is_versioned_and_names_the_interpreter() -> None:
    data = encode(sample(), KEY)
    magic, version, pymagic, flags, _digest, length = HEADER.unpack_from(data)
    assert magic == MAGIC == b"HPBUNDLE"
    assert version == bundle_mod.FORMAT_VERSION
    assert pymagic == importlib.util.MAGIC_NUMBER
    assert flags == 1
    assert length == len(data) - HEADER.size


def test_errors_are_patch_errors_with_readable_messages() -> None:
    with pytest.raises(BundleError) as info:
        decode(b"nonsense")
    assert isinstance(info.value, PatchError) and isinstance(info.value, HotpatchError)
    assert str(info.value).startswith("bad patch bundle: truncated")


@pytest.mark.parametrize("key", [None, KEY])
def test_every_truncation_is_refused(key: bytes | None, no_unmarshal: None) -> None:
    data = encode(sample(), key)
    for size in range(len(data)):
        with pytest.raises(BundleError):
            decode(data[:size], key)


@pytest.mark.parametrize("key", [None, KEY])
def test_extra_bytes_are_refused(key: bytes | None, no_unmarshal: None) -> None:
    with pytest.raises(BundleError, match="header says"):
        decode(encode(sample(), key) + b"\0", key)


@pytest.mark.parametrize("key", [None, KEY])
def test_every_bit_flip_is_refused(key: bytes | None, no_unmarshal: None) -> None:
    data = encode(sample(), key)
    # Every byte of the header, and a spread of payload bytes, each with two different flips.
    positions = list(range(HEADER.size)) + list(range(HEADER.size, len(data), 7))
    for pos in positions:
        for mask in (0x01, 0x80):
            bad = bytearray(data)
            bad[pos] ^= mask
            with pytest.raises(BundleError):
                decode(bytes(bad), key)


def test_signed_bundle_needs_the_key(no_unmarshal: None) -> None:
    with pytest.raises(BundleError, match="signed but no key"):
        decode(encode(sample(), KEY))


def test_wrong_key_is_refused(no_unmarshal: None) -> None:
    with pytest.raises(BundleError, match="signature does not match"):
        decode(encode(sample(), KEY), b"another key")


def test_unsigned_bundle_is_refused_when_a_key_is_required(no_unmarshal: None) -> None:
    with pytest.raises(BundleError, match="not signed and a key is required"):
        decode(encode(sample()), KEY)


def test_forged_payload_with_recomputed_digest_is_refused() -> None:
    """An attacker without the key re-signs nothing: clearing the signed flag and recomputing
    the plain digest makes an unsigned bundle, which a keyed process refuses."""
    data = encode(sample(), KEY)
    payload = data[HEADER.size :]
    prefix = MAGIC + struct.pack(
        ">H4sBQ", bundle_mod.FORMAT_VERSION, importlib.util.MAGIC_NUMBER, 0, len(payload)
    )
    digest = hashlib.sha256(prefix + payload).digest()
    forged = (
        HEADER.pack(
            MAGIC, bundle_mod.FORMAT_VERSION, importlib.util.MAGIC_NUMBER, 0, digest, len(payload)
        )
        + payload
    )
    assert decode(forged) == sample()  # sound as an unsigned bundle ...
    with pytest.raises(BundleError, match="not signed"):
        decode(forged, KEY)  # ... but not where a key is required


def test_another_interpreters_bundle_is_refused(no_unmarshal: None) -> None:
    data = bytearray(encode(sample()))
    data[10:14] = b"\x00\x00\r\n"
    with pytest.raises(BundleError, match="another Python"):
        decode(bytes(data))


def test_wrong_magic_and_version(no_unmarshal: None) -> None:
    data = encode(sample())
    with pytest.raises(BundleError, match="not a hotpatch bundle"):
        decode(b"XXBUNDLE" + data[8:])
    bad = bytearray(data)
    bad[8:10] = struct.pack(">H", 99)
    with pytest.raises(BundleError, match="format version 99"):
        decode(bytes(bad))


def test_unknown_flags_are_refused(no_unmarshal: None) -> None:
    bad = bytearray(encode(sample()))
    bad[14] |= 0x02
    with pytest.raises(BundleError, match="unknown flags"):
        decode(bytes(bad))


def _sealed(plain: object, key: bytes | None = None) -> bytes:
    """A bundle whose digest is right but whose payload is whatever `plain` marshals to."""
    payload = marshal.dumps(plain)
    flags = 1 if key else 0
    prefix = bundle_mod._header_prefix(flags, len(payload))
    digest = bundle_mod._digest(prefix, payload, key)
    return (
        HEADER.pack(
            MAGIC,
            bundle_mod.FORMAT_VERSION,
            importlib.util.MAGIC_NUMBER,
            flags,
            digest,
            len(payload),
        )
        + payload
    )


@pytest.mark.parametrize(
    "plain",
    [
        [1, 2],
        ("b", "t", (), None),
        ("b", "t", (("m", "/m.py", (("f", "1", None),), (), ()),), None, ()),
        ("b", "t", (("m", "/m.py", (), ((None, (), 1, ""),), ()),), None, ()),
        ("b", "t", (), None, (1,)),
        (1, "t", (), None, ()),
    ],
)
def test_sound_digest_but_malformed_payload(plain: object) -> None:
    with pytest.raises(BundleError, match="malformed payload"):
        decode(_sealed(plain))


def test_payload_that_does_not_unmarshal() -> None:
    payload = b"\xff\xfe garbage"
    prefix = bundle_mod._header_prefix(0, len(payload))
    data = (
        HEADER.pack(
            MAGIC,
            bundle_mod.FORMAT_VERSION,
            importlib.util.MAGIC_NUMBER,
            0,
            bundle_mod._digest(prefix, payload, None),
            len(payload),
        )
        + payload
    )
    with pytest.raises(BundleError, match="does not unmarshal"):
        decode(data)


def test_load_from_bytes_and_paths(tmp_path) -> None:
    path = tmp_path / "patch.hpb"
    save(sample(), path, KEY)
    assert load(path, KEY) == sample()
    assert load(str(path), KEY) == sample()
    assert load(path.read_bytes(), KEY) == sample()
    assert load(bytearray(path.read_bytes()), KEY) == sample()
    assert [p.name for p in tmp_path.iterdir()] == ["patch.hpb"]  # no temp file left


def test_load_missing_file(tmp_path) -> None:
    with pytest.raises(BundleError, match="cannot read"):
        load(tmp_path / "missing.hpb")


def test_bundle_with_needs_restart_round_trips() -> None:
    b = Bundle("a", "b", needs_restart="dataclass fields of m.C changed")
    assert decode(encode(b)) == b
