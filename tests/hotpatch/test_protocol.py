"""The dev protocol's frames over real socket pairs: the wire format, every way a frame can
be bad (each refused with `ProtocolError` before its payload is used), and fuzzing.

Frames are also built here by hand, from the format in `hotpatch.protocol`'s docstring
(`frame()`), so the tests check the documented layout rather than the code against itself.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import marshal
import os
import queue
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hotpatch.protocol import (
    BYE,
    HELLO,
    HELLO_LIMIT,
    MAX_PAYLOAD,
    NONCE_SIZE,
    PATCH,
    REPORT,
    VERSION,
    Address,
    AddressKind,
    Channel,
    ProtocolError,
    accept,
    connect,
    new_secret,
    parse_address,
)

SECRET = bytes(range(32))
NONCE = b"n" * NONCE_SIZE
HEAD = struct.Struct(">2sBBQI")  # magic, version, kind, sequence, length
HEADER_SIZE = HEAD.size + 32  # then the header's MAC
TIMEOUT = 5.0  # seconds; a receive that blocks where it must not fails instead of hanging

# Bounded, so the whole file runs in seconds; no example database written into the repo.
FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def key(secret: bytes = SECRET, nonce: bytes = NONCE) -> bytes:
    """The connection key, derived as documented: HMAC of the nonce under the secret."""
    return hmac.new(secret, b"hotpatch-connection" + nonce, hashlib.sha256).digest()


def frame(
    kind: int,
    sequence: int,
    payload: bytes = b"",
    *,
    k: bytes | None = None,
    version: int = VERSION,
    magic: bytes = b"HP",
    length: int | None = None,
) -> bytes:
    """One frame as documented: head, HMAC-SHA256 of the head, payload, HMAC-SHA256 of
    the head's MAC + payload."""
    size = len(payload) if length is None else length
    k = key() if k is None else k
    head = HEAD.pack(magic, version, kind, sequence, size)
    head_mac = hmac.new(k, head, hashlib.sha256).digest()
    return head + head_mac + payload + hmac.new(k, head_mac + payload, hashlib.sha256).digest()


@contextmanager
def pair(secret: bytes = SECRET, nonce: bytes = NONCE) -> Iterator[tuple[Channel, Channel]]:
    """Two channels on the two ends of a Unix socket pair, sharing one connection key."""
    a, b = socket.socketpair()
    a.settimeout(TIMEOUT)
    b.settimeout(TIMEOUT)
    left, right = Channel(a, secret, nonce), Channel(b, secret, nonce)
    try:
        yield left, right
    finally:
        left.close()
        right.close()


@contextmanager
def fed(data: bytes, secret: bytes = SECRET, nonce: bytes = NONCE) -> Iterator[Channel]:
    """A receiving channel whose peer writes `data` (from a thread, so any size fits) and
    then closes its side."""
    a, b = socket.socketpair()
    b.settimeout(TIMEOUT)

    def write() -> None:
        try:
            a.sendall(data)
            a.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the reader gave up and closed its end first

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    channel = Channel(b, secret, nonce)
    try:
        yield channel
    finally:
        channel.close()
        writer.join(TIMEOUT)
        a.close()


def receive_all(channel: Channel, limit: int = 50) -> tuple[list[tuple[int, bytes]], Exception]:
    """Frames received until the channel raises; the frames and what it raised."""
    frames = []
    for _ in range(limit):
        try:
            frames.append(channel.receive())
        except Exception as exc:  # returned for the test to judge
            return frames, exc
    raise AssertionError(f"still receiving after {limit} frames")


# -- the wire format -------------------------------------------------------------------------


def test_send_writes_the_documented_frame():
    a, b = socket.socketpair()
    with a, b:
        channel = Channel(a, SECRET, NONCE)
        channel.send(PATCH, b"payload")
        channel.send(BYE)
        expected = frame(PATCH, 1, b"payload") + frame(BYE, 2)
        assert b.recv(1000) == expected


def test_frames_round_trip_both_ways_with_every_kind():
    with pair() as (server, client):
        client.send(HELLO, b'{"pid": 1}')
        assert server.receive() == (HELLO, b'{"pid": 1}')
        for n, kind in enumerate((PATCH, PATCH, BYE)):
            server.send(kind, bytes([n]) * n)
        assert [client.receive() for _ in range(3)] == [
            (PATCH, b""),
            (PATCH, b"\1"),
            (BYE, b"\2\2"),
        ]
        client.send(REPORT, b"{}")
        assert server.receive() == (REPORT, b"{}")


def unix_listener(path: str) -> socket.socket:
    """A listening Unix socket at `path` whose accept() times out."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()
    listener.settimeout(TIMEOUT)
    return listener


def test_accept_and_connect_agree_on_a_fresh_key_per_connection(tmp_path):
    path = str(tmp_path / "s")
    with unix_listener(path) as listener:
        secret, keys = new_secret(), []
        accepted: queue.Queue[Channel] = queue.Queue()
        for _ in range(2):
            thread = threading.Thread(
                target=lambda: accepted.put(accept(listener.accept()[0], secret))
            )
            thread.start()
            client = connect(f"unix:{path}", secret)
            server = accepted.get(timeout=TIMEOUT)
            thread.join(TIMEOUT)
            client.send(HELLO, b"hi")
            assert server.receive() == (HELLO, b"hi")
            server.send(PATCH, b"p")
            assert client.receive() == (PATCH, b"p")
            keys.append(server._key)
            client.close()
            server.close()
        assert keys[0] != keys[1]  # new nonce, new key: frames do not carry over


def test_a_payload_of_exactly_max_payload_round_trips():
    payload = b"\xa5" * MAX_PAYLOAD
    with fed(frame(PATCH, 1, payload)) as channel:
        kind, got = channel.receive()
    assert kind == PATCH and got == payload


def test_send_refuses_a_payload_over_the_limit_and_sends_nothing():
    a, b = socket.socketpair()
    with a, b:
        channel = Channel(a, SECRET, NONCE)
        with pytest.raises(ProtocolError, match="exceeds"):
            channel.send(PATCH, bytes(MAX_PAYLOAD + 1))
        channel.send(BYE)  # the refused frame used no sequence number
        assert b.recv(1000) == frame(BYE, 1)


# -- bad frames ------------------------------------------------------------------------------


def test_a_header_claiming_more_than_max_payload_is_refused_before_reading_on():
    # The peer keeps the connection open and sends nothing more: reading the claimed
    # payload would block (and time out), so a prompt ProtocolError shows nothing was read.
    a, b = socket.socketpair()
    with a, b:
        b.settimeout(TIMEOUT)
        a.sendall(frame(PATCH, 1, length=MAX_PAYLOAD + 1)[:HEADER_SIZE])
        with pytest.raises(ProtocolError, match="exceeds the limit"):
            Channel(b, SECRET, NONCE).receive()
        a.sendall(frame(PATCH, 1, length=2**32 - 1)[:HEADER_SIZE])
        with pytest.raises(ProtocolError, match="exceeds the limit"):
            Channel(b, SECRET, NONCE).receive()


@pytest.mark.parametrize(
    "data, message",
    [
        (frame(PATCH, 1, b"x", magic=b"GE"), "not a hotpatch frame"),
        (b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n" + bytes(20), "not a hotpatch frame"),
        (frame(PATCH, 1, b"x", version=VERSION + 1), f"protocol version {VERSION + 1}"),
        (frame(PATCH, 1, b"x", version=0), "protocol version 0"),
        (frame(PATCH, 1, b"x", k=key(secret=b"another session")), "authentication failed"),
        (frame(PATCH, 1, b"x", k=key(nonce=b"m" * NONCE_SIZE)), "authentication failed"),
        (frame(PATCH, 2, b"x"), r"frame 2 out of sequence \(expected 1\)"),
        (frame(PATCH, 0, b"x"), "out of sequence"),
        (frame(99, 1, b"x"), "unknown frame kind 99"),
        (frame(0, 1), "unknown frame kind 0"),
    ],
    ids=[
        "magic",
        "http",
        "newer-version",
        "version-0",
        "other-secret",
        "other-nonce",
        "skipped-sequence",
        "sequence-0",
        "unknown-kind",
        "kind-0",
    ],
)
def test_a_bad_frame_raises_protocol_error(data, message):
    with fed(data) as channel:
        with pytest.raises(ProtocolError, match=message):
            channel.receive()


def test_a_replayed_frame_is_refused_on_its_connection_and_on_another():
    first = frame(PATCH, 1, b"patch")
    with fed(first + first) as channel:
        assert channel.receive() == (PATCH, b"patch")
        with pytest.raises(ProtocolError, match=r"frame 1 out of sequence \(expected 2\)"):
            channel.receive()
    # The same bytes on a new connection (new nonce) fail authentication, although the
    # sequence number (1) is what a new connection expects.
    with fed(first, nonce=b"m" * NONCE_SIZE) as channel:
        with pytest.raises(ProtocolError, match="authentication failed"):
            channel.receive()


def test_frames_out_of_order_are_refused():
    with fed(frame(PATCH, 2, b"b") + frame(PATCH, 1, b"a")) as channel:
        with pytest.raises(ProtocolError, match="out of sequence"):
            channel.receive()


def test_every_single_bit_flip_of_a_frame_is_refused():
    good = frame(PATCH, 1, b"\x00\x01payload\xff")
    for bit in range(len(good) * 8):
        data = bytearray(good)
        data[bit // 8] ^= 1 << (bit % 8)
        with fed(bytes(data)) as channel:
            with pytest.raises(ProtocolError):
                channel.receive()


def test_a_truncated_frame_is_a_protocol_error_and_a_clean_close_is_eof():
    # Cut anywhere inside a frame: truncated (ProtocolError, logged by the client). Cut
    # between frames: the peer went away (EOFError, silent).
    frames = [frame(PATCH, 1, b"first"), frame(PATCH, 2), frame(BYE, 3, b"last")]
    data = b"".join(frames)
    boundaries = {0}
    for f in frames:
        boundaries.add(max(boundaries) + len(f))
    for cut in range(len(data)):
        with fed(data[:cut]) as channel:
            received, error = receive_all(channel)
        assert len(received) == sum(b <= cut for b in boundaries) - 1
        if cut in boundaries:
            assert type(error) is EOFError, cut
        else:
            assert isinstance(error, ProtocolError) and "truncated" in str(error), cut


def test_connect_to_a_server_that_closes_before_its_nonce_is_a_connection_error(tmp_path):
    # An OSError, which the client's reconnect loop retries (an EOFError killed it).
    path = str(tmp_path / "s")
    with unix_listener(path) as listener:
        for sent in (b"", b"half"):
            done = threading.Event()

            def serve(sent: bytes = sent, done: threading.Event = done) -> None:
                conn, _ = listener.accept()
                conn.sendall(sent)
                conn.close()
                done.set()

            thread = threading.Thread(target=serve)
            thread.start()
            with pytest.raises(ConnectionError, match="before its nonce"):
                connect(f"unix:{path}", SECRET)
            thread.join(TIMEOUT)
            assert done.is_set()


# -- addresses -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address, kind, host, port, path, family, sockaddr, loopback",
    [
        ("unix:/run/x/dev.sock", "unix", None, None, "/run/x/dev.sock", socket.AF_UNIX,
         "/run/x/dev.sock", True),
        ("tcp:127.0.0.1:8765", "tcp", "127.0.0.1", 8765, None, socket.AF_INET,
         ("127.0.0.1", 8765), True),
        ("tcp:[::1]:8765", "tcp", "::1", 8765, None, socket.AF_INET6, ("::1", 8765), True),
        ("tcp:::1:8765", "tcp", "::1", 8765, None, socket.AF_INET6, ("::1", 8765), True),
        ("tcp:localhost:0", "tcp", "localhost", 0, None, socket.AF_INET, ("localhost", 0), True),
        ("tcp:127.8.9.10:1", "tcp", "127.8.9.10", 1, None, socket.AF_INET,
         ("127.8.9.10", 1), True),
        ("tcp::0", "tcp", "127.0.0.1", 0, None, socket.AF_INET, ("127.0.0.1", 0), True),
        ("tcp:8765", "tcp", "127.0.0.1", 8765, None, socket.AF_INET, ("127.0.0.1", 8765), True),
        ("tcp:0.0.0.0:0", "tcp", "0.0.0.0", 0, None, socket.AF_INET, ("0.0.0.0", 0), False),
        ("tcp:[::]:0", "tcp", "::", 0, None, socket.AF_INET6, ("::", 0), False),
        ("tcp:192.168.1.20:8765", "tcp", "192.168.1.20", 8765, None, socket.AF_INET,
         ("192.168.1.20", 8765), False),
        ("tcp:example.com:80", "tcp", "example.com", 80, None, socket.AF_INET,
         ("example.com", 80), False),
    ],
)  # fmt: skip
def test_parse_address(address, kind, host, port, path, family, sockaddr, loopback):
    parsed = parse_address(address)
    assert parsed == Address(AddressKind(kind), host=host, port=port, path=path)
    assert parsed.family == family and parsed.sockaddr == sockaddr
    assert parsed.is_loopback is loopback


@pytest.mark.parametrize("address", [None, "unix"])
def test_the_default_address_is_a_private_unix_socket(address):
    parsed = parse_address(address)
    assert parsed == Address(AddressKind.UNIX) and parsed.is_loopback
    assert str(parsed) == "unix"
    with pytest.raises(ValueError, match="no path"):
        parsed.sockaddr  # noqa: B018 - the server makes the path


@pytest.mark.parametrize(
    "address", ["tcp:127.0.0.1:8765", "tcp:[::1]:8765", "unix:/run/x/dev.sock", "tcp:localhost:0"]
)
def test_an_address_prints_as_it_parses(address):
    assert str(parse_address(address)) == address
    assert parse_address(str(parse_address(address))) == parse_address(address)


@pytest.mark.parametrize(
    "address",
    [
        "udp:1.2.3.4:5",
        "/tmp/dev.sock",
        "tcp:127.0.0.1:port",
        "tcp:127.0.0.1:65536",
        "tcp:127.0.0.1:-1",
        "tcp:127.0.0.1: 80",
        "unix:",
        "",
    ],
)
def test_parse_address_refuses_what_it_cannot_read(address):
    with pytest.raises(ValueError, match="bad hotpatch address"):
        parse_address(address)


# -- what an unauthenticated peer can cost ---------------------------------------------------


def test_an_unauthentic_header_is_refused_before_its_payload_is_read():
    # A forged header announcing the largest frame, then nothing: the receiver must not
    # wait for the payload (it would time out) nor take a byte of it.
    for forged in (key(secret=b"another session"), bytes(32)):
        a, b = socket.socketpair()
        with a, b:
            b.settimeout(TIMEOUT)
            a.sendall(frame(PATCH, 1, length=MAX_PAYLOAD, k=forged)[:HEADER_SIZE] + b"x" * 100)
            channel = Channel(b, SECRET, NONCE)
            with pytest.raises(ProtocolError, match="authentication failed"):
                channel.receive()
            assert b.recv(1000) == b"x" * 100  # the payload stayed in the socket


def test_a_header_announcing_more_than_the_limit_asked_for_is_refused():
    body = b"{" + b" " * HELLO_LIMIT + b"}"
    with fed(frame(HELLO, 1, body)) as channel:
        with pytest.raises(ProtocolError, match=f"exceeds the limit of {HELLO_LIMIT}"):
            channel.receive(HELLO_LIMIT)
    with fed(frame(HELLO, 1, body[:HELLO_LIMIT])) as channel:
        assert channel.receive(HELLO_LIMIT) == (HELLO, body[:HELLO_LIMIT])


def test_a_flipped_bit_in_the_payload_mac_is_refused_after_the_payload():
    data = bytearray(frame(PATCH, 1, b"payload"))
    data[-1] ^= 1
    with fed(bytes(data)) as channel:
        with pytest.raises(ProtocolError, match="authentication failed"):
            channel.receive()


def test_feed_decodes_frames_given_a_byte_at_a_time():
    # The dev server reads handshakes from many sockets without blocking, a piece at a
    # time: the same frames come out, and `wanted` never asks past the frame.
    frames = [frame(HELLO, 1, b'{"pid": 1}'), frame(REPORT, 2), frame(BYE, 3, b"x" * 300)]
    stream = b"".join(frames)
    channel = Channel(socket.socket(), SECRET, NONCE)
    got, at = [], 0
    with channel.sock:
        while at < len(stream):
            wanted = channel.wanted()
            assert 0 < wanted <= len(stream) - at
            assert isinstance(channel.ended(), EOFError) == (at in (0, *_ends(frames)))
            result = channel.feed(stream[at : at + 1])
            at += 1
            if result is not None:
                got.append(result)
        with pytest.raises(ValueError, match="wanted"):
            channel.feed(bytes(HEADER_SIZE + 1))
    assert got == [(HELLO, b'{"pid": 1}'), (REPORT, b""), (BYE, b"x" * 300)]


def _ends(frames: list[bytes]) -> list[int]:
    ends, total = [], 0
    for f in frames:
        total += len(f)
        ends.append(total)
    return ends


# -- fuzzing ---------------------------------------------------------------------------------


@contextmanager
def nothing_decoded() -> Iterator[None]:
    """Fail the test if anything is unmarshalled or JSON-decoded meanwhile."""
    with (
        mock.patch.object(marshal, "loads", side_effect=AssertionError("unmarshalled")),
        mock.patch.object(json, "loads", side_effect=AssertionError("JSON-decoded")),
    ):
        yield


@FUZZ
@given(st.binary(max_size=4096))
def test_fuzz_random_bytes_only_ever_raise_protocol_error_or_eof(data):
    with nothing_decoded(), fed(data) as channel:
        received, error = receive_all(channel)
    assert received == []  # nothing forges a MAC
    assert type(error) in (ProtocolError, EOFError), repr(error)
    assert (type(error) is EOFError) == (data == b"")


_payloads = st.lists(
    st.tuples(st.sampled_from([HELLO, PATCH, REPORT, BYE]), st.binary(max_size=600)),
    min_size=1,
    max_size=4,
)
_mutations = st.lists(
    st.tuples(
        st.sampled_from(["flip", "set", "insert", "delete", "truncate", "duplicate", "swap"]),
        st.integers(min_value=0, max_value=2**16),
        st.binary(min_size=1, max_size=8),
    ),
    min_size=1,
    max_size=4,
)


def mutate(data: bytes, frames: list[bytes], ops: list[tuple[str, int, bytes]]) -> bytes:
    out = bytearray(data)
    for op, at, extra in ops:
        i = at % (len(out) + 1)
        if op == "flip" and out:
            out[i % len(out)] ^= 1 << (extra[0] % 8)
        elif op == "set" and out:
            out[i % len(out)] = extra[0]
        elif op == "insert":
            out[i:i] = extra
        elif op == "delete":
            del out[i : i + len(extra)]
        elif op == "truncate":
            del out[i:]
        elif op == "duplicate":  # a recorded frame replayed at some point of the stream
            out[i:i] = frames[at % len(frames)]
        elif op == "swap" and len(frames) > 1:  # two frames out of order
            j = at % (len(frames) - 1)
            order = [*frames[:j], frames[j + 1], frames[j], *frames[j + 2 :]]
            out = bytearray(b"".join(order))
    return bytes(out)


@FUZZ
@given(_payloads, _mutations)
def test_fuzz_mutated_valid_frames_are_refused_and_never_decoded(payloads, ops):
    frames = [frame(kind, n, body) for n, (kind, body) in enumerate(payloads, 1)]
    original = b"".join(frames)
    data = mutate(original, frames, ops)
    with nothing_decoded(), fed(data) as channel:
        received, error = receive_all(channel)
    assert type(error) in (ProtocolError, EOFError), repr(error)
    # Whatever gets through is the original frames, in order, each once; and the stream
    # ends cleanly after all of them only if it was not tampered with at all.
    assert received == payloads[: len(received)]
    clean = len(received) == len(payloads) and type(error) is EOFError
    assert clean == (data == original)


@FUZZ
@given(st.binary(max_size=256 * 1024), st.sampled_from([HELLO, PATCH, REPORT, BYE]))
def test_property_send_and_receive_round_trip_any_payload(payload, kind):
    a, b = socket.socketpair()
    b.settimeout(TIMEOUT)
    sender, receiver = Channel(a, SECRET, NONCE), Channel(b, SECRET, NONCE)
    writer = threading.Thread(target=lambda: [sender.send(kind, payload), sender.send(BYE)])
    writer.start()
    try:
        assert receiver.receive() == (kind, payload)
        assert receiver.receive() == (BYE, b"")
    finally:
        writer.join(TIMEOUT)
        sender.close()
        receiver.close()


@FUZZ
@given(st.lists(st.binary(max_size=2048), max_size=12), st.binary(min_size=16, max_size=16))
def test_property_many_frames_round_trip_in_order_under_any_nonce(payloads, nonce):
    with pair(os.urandom(32), nonce) as (left, right):
        writer = threading.Thread(target=lambda: [left.send(PATCH, p) for p in payloads])
        writer.start()
        try:
            assert [right.receive() for _ in payloads] == [(PATCH, p) for p in payloads]
        finally:
            writer.join(TIMEOUT)
