"""The dev protocol: authenticated frames between the dev server and app processes.

A patch is code, so whoever can send a frame can run code in the app. Therefore:

- each session has a random secret, handed to the app's processes in the environment
  (`HOTPATCH_SECRET`); each connection starts with a random nonce from the server and
  every frame on it is authenticated with HMAC-SHA256 under a key derived from both,
  so frames recorded on one connection are worthless on another;
- the MAC is checked before anything in the frame is decoded; frames carry a protocol
  version, a sequence number (each side counts up from 1; anything else is a replay or
  a loss, and both end the connection) and a length bounded by `MAX_PAYLOAD`;
- a bad frame ends the connection with one log line; the process keeps running and
  its code is unchanged. The client reconnects.

Frame: magic `HP`, version, kind, sequence (8 bytes), payload length (4), MAC (32),
payload. Kinds: HELLO (client: JSON about the process), PATCH (server: a bundle),
REPORT (client: JSON report), BYE.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import struct

__all__ = [
    "MAX_PAYLOAD",
    "VERSION",
    "HELLO",
    "PATCH",
    "REPORT",
    "BYE",
    "ProtocolError",
    "Channel",
    "connect",
    "new_secret",
    "NONCE_SIZE",
]

VERSION = 1
HELLO, PATCH, REPORT, BYE = 1, 2, 3, 4
KINDS = frozenset({HELLO, PATCH, REPORT, BYE})
MAX_PAYLOAD = 64 * 2**20
NONCE_SIZE = 16
_MAGIC = b"HP"
_HEAD = struct.Struct(">2sBBQI")  # magic, version, kind, sequence, length
_MAC = 32


class ProtocolError(Exception):
    """A frame was malformed, truncated, oversized, replayed or forged; the connection
    it came on is closed. Raised by `Channel.receive`."""


def new_secret() -> bytes:
    """A fresh session secret."""
    return os.urandom(32)


def _derive(secret: bytes, nonce: bytes) -> bytes:
    return hmac.new(secret, b"hotpatch-connection" + nonce, hashlib.sha256).digest()


class Channel:
    """One authenticated connection. Not thread-safe: one reader, one writer at a time
    (sending and receiving from two threads is fine)."""

    def __init__(self, sock: socket.socket, secret: bytes, nonce: bytes) -> None:
        self.sock = sock
        self._key = _derive(secret, nonce)
        self._sent = 0
        self._received = 0

    def send(self, kind: int, payload: bytes = b"") -> None:
        if len(payload) > MAX_PAYLOAD:
            raise ProtocolError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
        self._sent += 1
        head = _HEAD.pack(_MAGIC, VERSION, kind, self._sent, len(payload))
        mac = hmac.new(self._key, head + payload, hashlib.sha256).digest()
        self.sock.sendall(head + mac + payload)

    def receive(self) -> tuple[int, bytes]:
        """The next frame's (kind, payload). Raises ProtocolError (bad frame) or
        ConnectionError/EOFError (the peer went away)."""
        head = _read_up_to(self.sock, _HEAD.size + _MAC)
        if not head:
            raise EOFError("connection closed")
        # A close inside a frame is a truncated frame (ProtocolError, logged); only a
        # close between frames is the peer leaving (EOFError, silent).
        if len(head) < _HEAD.size + _MAC:
            raise ProtocolError(f"truncated frame: {len(head)} of {_HEAD.size + _MAC} header bytes")
        magic, version, kind, sequence, length = _HEAD.unpack_from(head)
        if magic != _MAGIC:
            raise ProtocolError("not a hotpatch frame")
        if version != VERSION:
            raise ProtocolError(f"protocol version {version}, expected {VERSION}")
        if length > MAX_PAYLOAD:
            raise ProtocolError(f"frame of {length} bytes exceeds the limit of {MAX_PAYLOAD}")
        payload = _read_up_to(self.sock, length)
        if len(payload) < length:
            raise ProtocolError(f"truncated frame: {len(payload)} of {length} payload bytes")
        mac = hmac.new(self._key, head[: _HEAD.size] + payload, hashlib.sha256).digest()
        if not hmac.compare_digest(mac, head[_HEAD.size :]):
            raise ProtocolError("frame authentication failed (forged, or another session)")
        if sequence != self._received + 1:
            raise ProtocolError(
                f"frame {sequence} out of sequence (expected {self._received + 1}): replayed?"
            )
        if kind not in KINDS:
            raise ProtocolError(f"unknown frame kind {kind}")
        self._received = sequence
        return kind, payload

    def close(self) -> None:
        # Shut down before closing: on Linux close() alone does not wake a thread blocked
        # in recv() on this socket, and the peer would never see the end.
        for end in (lambda: self.sock.shutdown(socket.SHUT_RDWR), self.sock.close):
            try:
                end()
            except OSError:
                pass


def _read_up_to(sock: socket.socket, size: int) -> bytes:
    """`size` bytes from `sock`, or fewer if the connection closes first."""
    chunks = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def parse_address(address: str) -> tuple[int, object]:
    """(family, address) for `unix:PATH` or `tcp:HOST:PORT`."""
    scheme, _, rest = address.partition(":")
    if scheme == "unix":
        return socket.AF_UNIX, rest
    if scheme == "tcp":
        host, _, port = rest.rpartition(":")
        return socket.AF_INET6 if ":" in host else socket.AF_INET, (host.strip("[]"), int(port))
    raise ValueError(f"bad hotpatch address {address!r} (unix:PATH or tcp:HOST:PORT)")


def connect(address: str, secret: bytes, timeout: float = 5.0) -> Channel:
    """Connect to the dev server at `address` and read its nonce."""
    family, where = parse_address(address)
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(where)
        nonce = _read_up_to(sock, NONCE_SIZE)
        if len(nonce) < NONCE_SIZE:
            # A ConnectionError (an OSError), so the client's reconnect loop retries.
            raise ConnectionError("the dev server closed the connection before its nonce")
    except BaseException:
        sock.close()
        raise
    sock.settimeout(None)
    return Channel(sock, secret, nonce)


def accept(sock: socket.socket, secret: bytes) -> Channel:
    """Server side of a new connection: send a fresh nonce, return the channel."""
    nonce = os.urandom(NONCE_SIZE)
    sock.sendall(nonce)
    return Channel(sock, secret, nonce)
