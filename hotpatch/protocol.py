"""The dev protocol: authenticated frames between the dev server and app processes.

A patch is code, so whoever can send a frame can run code in the app. Therefore:

- each session has a random secret, handed to the app's processes in the environment
  (`HOTPATCH_SECRET`); each connection starts with a random nonce from the server and
  every frame on it is authenticated with HMAC-SHA256 under a key derived from both,
  so frames recorded on one connection are worthless on another;
- nothing a peer sends is trusted before it is authenticated, the announced length
  included: a frame's header carries a MAC of its own, checked before a byte of the
  payload is read, so a peer without the secret can make the receiver hold no more
  than one header (48 bytes). The payload has a second MAC, checked before anything
  in it is decoded;
- frames carry a protocol version, a sequence number (each side counts up from 1;
  anything else is a replay or a loss, and both end the connection) and a length
  bounded by the receiver's limit: `MAX_PAYLOAD`, or `HELLO_LIMIT` for the first frame
  the server reads on a connection;
- a bad frame ends the connection with one log line; the process keeps running and
  its code is unchanged. The client reconnects.

Frame (version 2), with K the connection key:

    head     magic `HP` (2), version (1), kind (1), sequence (8), payload length (4)
    head MAC HMAC-SHA256(K, head)                                   (32)
    payload  (length bytes)
    MAC      HMAC-SHA256(K, head MAC + payload)                     (32)

Kinds: HELLO (client: JSON about the process), PATCH (server: a bundle), REPORT
(client: JSON report), BYE.

`Channel.receive` reads frames from a blocking socket; `Channel.wanted`/`Channel.feed`
decode the same frames from bytes read elsewhere (the dev server reads handshakes
from many sockets in one thread).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import struct
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "MAX_PAYLOAD",
    "HELLO_LIMIT",
    "VERSION",
    "HELLO",
    "PATCH",
    "REPORT",
    "BYE",
    "HEADER_SIZE",
    "MAC_SIZE",
    "NONCE_SIZE",
    "Address",
    "AddressKind",
    "ProtocolError",
    "Channel",
    "accept",
    "connect",
    "new_secret",
    "parse_address",
]

VERSION = 2
HELLO, PATCH, REPORT, BYE = 1, 2, 3, 4
KINDS = frozenset({HELLO, PATCH, REPORT, BYE})
MAX_PAYLOAD = 64 * 2**20
HELLO_LIMIT = 64 * 2**10  # a hello is a few hundred bytes of JSON
NONCE_SIZE = 16
MAC_SIZE = 32
_MAGIC = b"HP"
_HEAD = struct.Struct(">2sBBQI")  # magic, version, kind, sequence, length
HEADER_SIZE = _HEAD.size + MAC_SIZE
_CHUNK = 1 << 20


class ProtocolError(Exception):
    """A frame was malformed, truncated, oversized, replayed or forged; the connection
    it came on is closed. Raised by `Channel.receive` and `Channel.feed`."""


def new_secret() -> bytes:
    """A fresh session secret."""
    return os.urandom(32)


def _derive(secret: bytes, nonce: bytes) -> bytes:
    return hmac.new(secret, b"hotpatch-connection" + nonce, hashlib.sha256).digest()


def _mac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


class Channel:
    """One authenticated connection. Not thread-safe: one reader, one writer at a time
    (sending and receiving from two threads is fine)."""

    def __init__(self, sock: socket.socket, secret: bytes, nonce: bytes) -> None:
        self.sock = sock
        self._key = _derive(secret, nonce)
        self._sent = 0
        self._received = 0
        # The frame being read: the header's bytes until it is checked, then its
        # payload's chunks, then its MAC's bytes.
        self._head = bytearray()
        self._kind = 0
        self._length = 0
        self._chunks: list[bytes] = []
        self._got = 0  # payload bytes received
        self._payload_mac: hmac.HMAC | None = None  # set once the header is authentic
        self._trailer = bytearray()

    # sending -------------------------------------------------------------------------

    def send(self, kind: int, payload: bytes = b"") -> None:
        if len(payload) > MAX_PAYLOAD:
            raise ProtocolError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
        self._sent += 1
        head = _HEAD.pack(_MAGIC, VERSION, kind, self._sent, len(payload))
        head_mac = _mac(self._key, head)
        self.sock.sendall(head + head_mac + payload + _mac(self._key, head_mac + payload))

    # receiving -----------------------------------------------------------------------

    def receive(self, limit: int = MAX_PAYLOAD) -> tuple[int, bytes]:
        """The next frame's (kind, payload), its payload at most `limit` bytes. Raises
        ProtocolError (bad frame) or ConnectionError/EOFError (the peer went away)."""
        while True:
            data = self.sock.recv(self.wanted())
            if not data:
                raise self.ended()
            frame = self.feed(data, limit)
            if frame is not None:
                return frame

    def wanted(self) -> int:
        """How many bytes to read next: never more than the frame being read still
        lacks, so nothing of the next frame is taken with it."""
        if self._payload_mac is None:
            return HEADER_SIZE - len(self._head)
        # The payload and its MAC together: one read for a small frame.
        return min(self._length - self._got + MAC_SIZE - len(self._trailer), _CHUNK)

    def feed(self, data: bytes, limit: int = MAX_PAYLOAD) -> tuple[int, bytes] | None:
        """Take `data` (at most `wanted()` bytes, read from the peer); the frame it
        completes, as (kind, payload), or None while the frame is incomplete. Raises
        ProtocolError as soon as what has arrived is bad: the header is checked whole
        (its MAC, then sequence, kind and length) before any of the payload is taken."""
        if len(data) > self.wanted():
            raise ValueError(f"fed {len(data)} bytes, {self.wanted()} wanted")
        if self._payload_mac is None:
            self._head += data
            if len(self._head) == HEADER_SIZE:
                self._check_header(limit)
        else:
            part, rest = data[: self._length - self._got], data[self._length - self._got :]
            if part:
                self._chunks.append(part)
                self._payload_mac.update(part)
                self._got += len(part)
            self._trailer += rest
        if self._payload_mac is None or len(self._trailer) < MAC_SIZE:
            return None
        return self._finish()

    def ended(self) -> Exception:
        """What the peer closing the connection now means: an EOFError between frames
        (it left), a ProtocolError inside one (a truncated frame, which is logged)."""
        if self._payload_mac is None:
            if not self._head:
                return EOFError("connection closed")
            return ProtocolError(
                f"truncated frame: {len(self._head)} of {HEADER_SIZE} header bytes"
            )
        if self._got < self._length:
            return ProtocolError(f"truncated frame: {self._got} of {self._length} payload bytes")
        return ProtocolError(f"truncated frame: {len(self._trailer)} of {MAC_SIZE} MAC bytes")

    def _check_header(self, limit: int) -> None:
        head = bytes(self._head)
        magic, version, kind, sequence, length = _HEAD.unpack_from(head)
        if magic != _MAGIC:
            raise ProtocolError("not a hotpatch frame")
        if version != VERSION:
            raise ProtocolError(f"protocol version {version}, expected {VERSION}")
        head_mac = _mac(self._key, head[: _HEAD.size])
        if not hmac.compare_digest(head_mac, head[_HEAD.size :]):
            raise ProtocolError("frame authentication failed (forged, or another session)")
        # Authentic from here on: the peer holds the secret. The rest guards against
        # replays, and keeps even an authentic peer within the receiver's limit.
        if sequence != self._received + 1:
            raise ProtocolError(
                f"frame {sequence} out of sequence (expected {self._received + 1}): replayed?"
            )
        if kind not in KINDS:
            raise ProtocolError(f"unknown frame kind {kind}")
        if length > limit:
            raise ProtocolError(f"frame of {length} bytes exceeds the limit of {limit}")
        self._kind, self._length = kind, length
        self._payload_mac = hmac.new(self._key, head_mac, hashlib.sha256)

    def _finish(self) -> tuple[int, bytes]:
        assert self._payload_mac is not None
        if not hmac.compare_digest(self._payload_mac.digest(), bytes(self._trailer)):
            raise ProtocolError("frame authentication failed (forged, or another session)")
        kind, payload = self._kind, b"".join(self._chunks)
        self._received += 1
        self._head, self._chunks, self._got, self._length = bytearray(), [], 0, 0
        self._payload_mac, self._trailer = None, bytearray()
        return kind, payload

    def close(self) -> None:
        # Shut down before closing: on Linux close() alone does not wake a thread blocked
        # in recv() on this socket, and the peer would never see the end.
        for end in (lambda: self.sock.shutdown(socket.SHUT_RDWR), self.sock.close):
            try:
                end()
            except OSError:
                pass


# addresses ---------------------------------------------------------------------------


class AddressKind(StrEnum):
    UNIX = "unix"
    TCP = "tcp"


@dataclass(frozen=True)
class Address:
    """Where a dev server listens: a Unix socket at `path` (None: in a private directory
    the server makes), or TCP on `host`:`port` (port 0: any free port)."""

    kind: AddressKind
    host: str | None = None
    port: int | None = None
    path: str | None = None

    @property
    def family(self) -> int:
        if self.kind is AddressKind.UNIX:
            return socket.AF_UNIX
        return socket.AF_INET6 if ":" in (self.host or "") else socket.AF_INET

    @property
    def sockaddr(self) -> str | tuple[str, int]:
        """The address as `socket.bind`/`socket.connect` take it."""
        if self.kind is AddressKind.UNIX:
            if self.path is None:
                raise ValueError("a private Unix socket has no path until the server makes it")
            return self.path
        return (self.host or "127.0.0.1", self.port or 0)

    @property
    def is_loopback(self) -> bool:
        """True if only this host can reach it: a Unix socket, or TCP on a loopback
        address or `localhost`. A host name is not known to be loopback."""
        if self.kind is AddressKind.UNIX or self.host == "localhost":
            return True
        import ipaddress  # only `thinlink dev` asks, once

        try:
            return ipaddress.ip_address(self.host or "").is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        if self.kind is AddressKind.UNIX:
            return "unix" if self.path is None else f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in (self.host or "") else self.host
        return f"tcp:{host}:{self.port}"


def parse_address(address: str | None) -> Address:
    """The `Address` for `unix` (or None: a private Unix socket), `unix:PATH`,
    `tcp:HOST:PORT`, `tcp:[IPV6]:PORT` or `tcp:PORT` (on 127.0.0.1). Raises ValueError
    naming the forms it takes."""
    if address is None or address == "unix":
        return Address(AddressKind.UNIX)
    scheme, _, rest = address.partition(":")
    if scheme == "unix" and rest:
        return Address(AddressKind.UNIX, path=rest)
    if scheme == "tcp":
        host, _, port = rest.rpartition(":")
        host = host.removeprefix("[").removesuffix("]") or "127.0.0.1"
        try:
            number = int(port or 0)
        except ValueError:
            number = -1
        if 0 <= number < 65536 and port.strip() == port:
            return Address(AddressKind.TCP, host=host, port=number)
    raise ValueError(
        f"bad hotpatch address {address!r} (unix, unix:PATH, tcp:HOST:PORT or tcp:[IPV6]:PORT)"
    )


# connections -------------------------------------------------------------------------


def connect(address: str | Address, secret: bytes, timeout: float = 5.0) -> Channel:
    """Connect to the dev server at `address` and read its nonce."""
    where = address if isinstance(address, Address) else parse_address(address)
    sock = socket.socket(where.family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(where.sockaddr)
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


def _read_up_to(sock: socket.socket, size: int) -> bytes:
    """`size` bytes from `sock`, or fewer if the connection closes first."""
    chunks = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)
