"""Protocol and security, end to end (the rules in hotpatch/protocol.py), with real processes
and real sockets (Unix sockets in private temporary directories, and loopback TCP).

- `import hotpatch` opens nothing: no threads, sockets, file descriptors or hooks.
- The dev server listens on a Unix socket in a 0700 directory, or on loopback TCP; any
  other address needs `--allow-remote` and prints a warning.
- A real app process (a script run by `python -m hotpatch.boot` with its patch client)
  is connected to a dev server the test controls (`Server`: a listening socket, the real
  `hotpatch.protocol.accept`, and frames also written by hand). Every bad frame it is
  sent is dropped with exactly one line on its stderr; it keeps running on unchanged
  code (we ask it), reconnects, and a valid patch then applies. A patch for another
  build is refused and reported back.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import queue
import re
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

from hotpatch.bundle import Bundle, FunctionPatch, ModulePatch, encode
from hotpatch.protocol import (
    BYE,
    HELLO,
    HELLO_LIMIT,
    MAX_PAYLOAD,
    NONCE_SIZE,
    PATCH,
    REPORT,
    VERSION,
    Channel,
    _derive,
    accept,
    connect,
    new_secret,
)
from thinlink.cli import main
from thinlink.cli.commands import _check_address
from thinlink.dev.server import DevServer
from thinlink.errors import ConfigError

from .conftest import ENV

TIMEOUT = 15.0  # seconds for any one step; only ever reached when something is broken
DROPPED = "hotpatch: dropped a bad frame from the dev server: "

APP = """\
import sys

import hotpatch

hotpatch.set_build("build-a")


def answer():
    return 1


print("ready", flush=True)
for line in sys.stdin:
    print(answer(), flush=True)
"""


# -- the app ---------------------------------------------------------------------------------


class App:
    """The app: `python -m hotpatch.boot app.py` with a patch client for `address`. It
    prints `answer()` for each line it reads, and exits at the end of its input."""

    def __init__(self, tmp_path: Path, address: str, secret: bytes) -> None:
        self.script = tmp_path / "app.py"
        self.script.write_text(APP)
        env = {
            **ENV,
            "HOTPATCH_ADDRESS": address,
            "HOTPATCH_SECRET": secret.hex(),
            "HOTPATCH_ENABLED": "1",
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hotpatch.boot", str(self.script)],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stdout: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout.put)),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr.append)),
        ]
        for reader in self._readers:
            reader.start()
        assert self._line() == "ready"

    @staticmethod
    def _read(stream: IO[str], put: Callable[[str | None], object]) -> None:
        for line in stream:
            put(line.rstrip("\n"))
        put(None)

    def _line(self) -> str:
        try:
            line = self.stdout.get(timeout=TIMEOUT)
        except queue.Empty:
            raise AssertionError(f"no answer from the app; its stderr: {self.stderr}") from None
        if line is None:
            self.proc.wait(TIMEOUT)
            raise AssertionError(f"the app exited ({self.proc.returncode}): {self.stderr}")
        return line

    def answer(self) -> int:
        """Ask the running app what `answer()` returns now."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        return int(self._line())

    def bundle(self, value: int, base: str = "build-a", target: str = "build-a") -> bytes:
        """A patch making `answer()` return `value`, compiled as the build side does."""
        text = APP.replace("return 1", f"return {value}")
        top = compile(text, str(self.script), "exec", dont_inherit=True)
        code = next(c for c in top.co_consts if getattr(c, "co_name", None) == "answer")
        module = ModulePatch(
            "__main__", str(self.script), (FunctionPatch("answer", code.co_firstlineno, code),)
        )
        return encode(Bundle(base, target, (module,)))

    def stop(self) -> list[str]:
        """End the app (end of its input) and return its stderr lines; it must exit 0."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            code = self.proc.wait(TIMEOUT)
        finally:
            self.kill()
        for reader in self._readers:
            reader.join(TIMEOUT)
        assert code == 0, self.stderr
        return [line for line in self.stderr if line is not None]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(TIMEOUT)


# -- a dev server the test controls ----------------------------------------------------------


class Tap:
    """A socket that keeps a copy of everything sent through it (the nonce, then one
    `sendall` per frame), so a test can replay a frame exactly as it went out."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sent: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.sent.append(bytes(data))
        self.sock.sendall(data)

    def __getattr__(self, name: str) -> object:
        return getattr(self.sock, name)


@dataclass
class Link:
    """One connection from the app, after its hello."""

    conn: socket.socket
    tap: Tap
    channel: Channel
    key: bytes  # the connection key, to write frames by hand
    nonce: bytes
    hello: dict = field(default_factory=dict)

    def patch(self, data: bytes) -> dict:
        """Send a PATCH frame the proper way; the app's report."""
        self.channel.send(PATCH, data)
        kind, payload = self.channel.receive()
        assert kind == REPORT
        return json.loads(payload)

    def frames(self) -> list[bytes]:
        """The frames sent so far, byte for byte (the nonce left out)."""
        return self.tap.sent[1:]

    def frame(
        self,
        kind: int,
        sequence: int,
        payload: bytes = b"",
        *,
        key: bytes | None = None,
        version: int = VERSION,
        length: int | None = None,
    ) -> bytes:
        """A frame written by hand (the documented layout), authentic unless told."""
        return frame(self.key if key is None else key, kind, sequence, payload, version, length)

    def send(self, data: bytes) -> None:
        self.conn.sendall(data)

    def end_mid_frame(self, data: bytes) -> None:
        """Send part of a frame, then close our side: the app sees a truncated frame."""
        self.conn.sendall(data)
        self.conn.shutdown(socket.SHUT_WR)

    def wait_dropped(self) -> None:
        """Wait until the app has closed this connection."""
        wait_closed(self.conn)

    def close(self) -> None:
        self.conn.close()


def wait_closed(conn: socket.socket) -> None:
    """Wait until the peer has closed `conn` (whatever it still sends is read and dropped)."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        try:
            if not conn.recv(1 << 16):
                return
        except ConnectionResetError:
            return
        except TimeoutError:
            continue
    raise AssertionError("the peer did not close the connection")


def frame(
    key: bytes,
    kind: int,
    sequence: int,
    payload: bytes = b"",
    version: int = VERSION,
    length: int | None = None,
) -> bytes:
    """Head (magic, version, kind, sequence, length), HMAC-SHA256 of the head, payload,
    HMAC-SHA256 of the head's MAC + payload."""
    size = len(payload) if length is None else length
    head = struct.pack(">2sBBQI", b"HP", version, kind, sequence, size)
    head_mac = hmac.new(key, head, hashlib.sha256).digest()
    return head + head_mac + payload + hmac.new(key, head_mac + payload, hashlib.sha256).digest()


class Server:
    """A dev server the test drives by hand: a listening socket and the session secret."""

    def __init__(self, listener: socket.socket, address: str) -> None:
        self.listener = listener
        self.address = address
        self.secret = new_secret()
        listener.settimeout(TIMEOUT)

    def accept_raw(self) -> socket.socket:
        conn, _ = self.listener.accept()
        conn.settimeout(TIMEOUT)
        return conn

    def accept(self) -> Link:
        """The app's next connection, set up by `hotpatch.protocol.accept`, after its hello."""
        conn = self.accept_raw()
        tap = Tap(conn)
        channel = accept(tap, self.secret)  # type: ignore[arg-type]
        nonce = tap.sent[0]
        link = Link(conn, tap, channel, _derive(self.secret, nonce), nonce)
        kind, payload = channel.receive()
        assert kind == HELLO
        link.hello = json.loads(payload)
        return link

    def close(self) -> None:
        self.listener.close()


def private_dir(tmp_path: Path) -> Path:
    where = tmp_path / "server"
    where.mkdir(mode=0o700)
    return where


def unix_server(tmp_path: Path) -> Server:
    path = str(private_dir(tmp_path) / "dev.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()
    return Server(listener, f"unix:{path}")


def tcp_server() -> Server:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    return Server(listener, f"tcp:127.0.0.1:{listener.getsockname()[1]}")


@pytest.fixture
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """A `Server` on a Unix socket, or on loopback TCP when parametrized with "tcp"."""
    kind = getattr(request, "param", "unix")
    made = unix_server(tmp_path) if kind == "unix" else tcp_server()
    yield made
    made.close()


@pytest.fixture
def app(tmp_path: Path, server: Server) -> Iterator[App]:
    started = App(tmp_path, server.address, server.secret)
    yield started
    started.kill()


def with_length(data: bytes, length: int) -> bytes:
    """`data` (a frame) with another length in its header, and the MAC left as it was."""
    return data[:12] + length.to_bytes(4, "big") + data[16:]


def flip(data: bytes, index: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[index] ^= 1 << bit
    return bytes(out)


# -- hotpatch is inert unless enabled --------------------------------------------------------

PROBE = """
import json, os, sys, threading

def state():
    return {
        "threads": sorted(t.name for t in threading.enumerate()),
        "meta_path": [repr(f) for f in sys.meta_path],
        "path_hooks": [repr(h) for h in sys.path_hooks],
        "fds": sorted(os.listdir("/proc/self/fd")),
        "hooks": [repr(h) for h in (sys.gettrace(), sys.getprofile(), sys.excepthook,
                                    threading.excepthook, sys.displayhook)],
    }

before, modules = state(), set(sys.modules)
import hotpatch
import hotpatch.bundle
after = state()

def f():
    return 5

print(json.dumps({
    "before": before,
    "after": after,
    "new_modules": sorted(set(sys.modules) - modules),
    "hot_is_f": hotpatch.hot(f) is f,
    "call": hotpatch.call(f),
    "enabled": hotpatch.enabled(),
}))
"""


@pytest.mark.parametrize("session_in_env", [False, True], ids=["clean", "session-env"])
def test_importing_hotpatch_opens_nothing(tmp_path, session_in_env):
    # With a session's address and secret in the environment (not enabled) too: nothing
    # connects on import; the boot starts the client, never the import.
    server = unix_server(tmp_path)
    env = dict(ENV)
    if session_in_env:
        env.update(HOTPATCH_ADDRESS=server.address, HOTPATCH_SECRET=server.secret.hex())
    try:
        done = subprocess.run(
            [sys.executable, "-c", PROBE],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result["after"] == result["before"]  # threads, hooks, fds
        assert result["before"]["threads"] == ["MainThread"]
        assert result["hot_is_f"] and result["call"] == 5 and not result["enabled"]
        for heavy in ("socket", "hotpatch._client", "hotpatch.protocol", "hotpatch._apply"):
            assert heavy not in result["new_modules"]
        assert done.stderr == ""
        server.listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.listener.accept()  # nobody connected
    finally:
        server.close()


# -- where the dev server listens ------------------------------------------------------------


def wait_for_client(server: DevServer, pid: int):  # noqa: ANN201
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        for client in server.connected():
            if client.pid == pid:
                return client
        time.sleep(0.01)
    raise AssertionError(f"process {pid} did not connect to {server.address}")


def assert_an_app_is_patched_through(server: DevServer, tmp_path) -> None:
    """A real app connects to `server`, takes one patch, and stops cleanly."""
    app = App(tmp_path, server.address, server.secret)
    try:
        client = wait_for_client(server, app.proc.pid)
        report = server.send(client, app.bundle(7, target="build-b"))
        assert report is not None and report["patched"] == ["__main__:answer"]
        assert app.answer() == 7
        assert app.stop() == []
    finally:
        app.kill()


def test_dev_server_listens_on_a_unix_socket_in_a_private_directory(tmp_path):
    server = DevServer(new_secret())
    path = Path(server.address.removeprefix("unix:"))
    try:
        assert server.address == f"unix:{path}"
        directory = os.stat(path.parent)
        assert stat.S_IMODE(directory.st_mode) == 0o700
        assert directory.st_uid == os.getuid()
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        assert_an_app_is_patched_through(server, tmp_path)
    finally:
        server.close()
    assert not path.exists() and not path.parent.exists()


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]"])
def test_dev_server_listens_on_loopback_tcp(tmp_path, host):
    if host == "[::1]":
        try:
            with socket.socket(socket.AF_INET6) as probe:
                probe.bind(("::1", 0))
        except OSError:
            pytest.skip("no IPv6 loopback here")
    server = DevServer(new_secret(), f"tcp:{host}:0")  # the form `--address` documents
    try:
        assert re.fullmatch(rf"tcp:{re.escape(host)}:\d+", server.address), server.address
        assert server.sock.getsockname()[0] == host.strip("[]")
        assert_an_app_is_patched_through(server, tmp_path)
    finally:
        server.close()


def test_dev_server_close_stops_listening_and_ends_every_connection():
    secret = new_secret()
    for address in (None, "tcp:127.0.0.1:0"):
        server = DevServer(secret, address)
        client = connect(server.address, secret)
        client.send(HELLO, json.dumps({"pid": 4242}).encode())
        wait_for_client(server, 4242)
        server.close()
        client.sock.settimeout(TIMEOUT)
        with pytest.raises(EOFError):
            client.receive()  # the app sees the end, and will try to reconnect
        client.close()
        with pytest.raises(OSError):
            connect(server.address, secret, timeout=TIMEOUT)
        server._thread.join(TIMEOUT)
        assert not server._thread.is_alive()


@pytest.mark.parametrize(
    "address", [None, "unix", "tcp:127.0.0.1:0", "tcp:[::1]:8765", "tcp:localhost:0"]
)
def test_loopback_addresses_need_no_flag(address, capsys):
    _check_address(address, allow_remote=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "address", ["tcp:0.0.0.0:0", "tcp:[::]:0", "tcp:192.168.1.20:8765", "tcp:example.com:80"]
)
def test_another_address_needs_allow_remote_and_then_warns(address, capsys):
    with pytest.raises(ConfigError, match="not loopback.*--allow-remote"):
        _check_address(address, allow_remote=False)
    assert capsys.readouterr().err == ""
    _check_address(address, allow_remote=True)
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and address in err and "run code in the app" in err


DEV_APP = """\
import os
print("app ran, patches from", os.environ["HOTPATCH_ADDRESS"], flush=True)
"""


@pytest.mark.parametrize("how", ["option", "environment"])
def test_thinlink_dev_refuses_a_remote_address_without_the_flag(tmp_path, monkeypatch, capsys, how):
    (tmp_path / "app.py").write_text(DEV_APP)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NO_COLOR", "1")
    args = ["dev", "app.py"]
    if how == "option":
        args[1:1] = ["--address", "tcp:0.0.0.0:0"]
    else:
        monkeypatch.setenv("THINLINK_ADDRESS", "tcp:0.0.0.0:0")
    before = set(threading.enumerate())
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    out, err = capsys.readouterr()
    assert err == (
        "thinlink: error: --address tcp:0.0.0.0:0 is not loopback: anyone who can reach it "
        "can run code in the app; add --allow-remote to do it anyway\n"
    )
    assert out == ""
    assert set(threading.enumerate()) <= before  # no server was started
    assert not (tmp_path / ".thinlink").exists()  # nor anything built


def test_thinlink_dev_serves_a_remote_address_with_the_flag_and_a_warning(tmp_path):
    (tmp_path / "app.py").write_text(DEV_APP)
    command = [sys.executable, "-m", "thinlink", "dev", "-v", "--address", "tcp:0.0.0.0:0"]
    env = {**ENV, "NO_COLOR": "1"}
    refused = subprocess.run(
        [*command, "app.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 2 and "--allow-remote" in refused.stderr
    assert refused.stdout == ""  # the app never ran
    served = subprocess.run(
        [*command, "--allow-remote", "app.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert served.returncode == 0, served.stderr
    first = served.stderr.splitlines()[0]
    assert first == (
        "warning: patches are served on tcp:0.0.0.0:0; anyone who can reach it and holds the "
        "session secret can run code in the app"
    )
    assert re.fullmatch(r"app ran, patches from tcp:0\.0\.0\.0:\d+\n", served.stdout)


# -- bad frames sent to a real app -----------------------------------------------------------

# Each attack sends something bad on `link` (a fresh connection from the app, whose code
# is `answer() == 1`), and returns the connection the app must drop. The bad frames carry
# a real patch (`answer() == 666`) where they carry a payload: had one been decoded, the
# app would run the new code.
Attack = Callable[[Link, Server, App], Link]


def garbage(link: Link, server: Server, app: App) -> Link:
    link.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n" + bytes(32))
    return link


def truncated_header(link: Link, server: Server, app: App) -> Link:
    link.end_mid_frame(link.frame(PATCH, 1, app.bundle(666))[:30])
    return link


def truncated_payload(link: Link, server: Server, app: App) -> Link:
    link.end_mid_frame(link.frame(PATCH, 1, app.bundle(666))[:-10])
    return link


def oversized(link: Link, server: Server, app: App) -> Link:
    # Only the header, claiming more than MAX_PAYLOAD, and the connection kept open: the
    # app must not wait for (or allocate) the payload.
    link.send(link.frame(PATCH, 1, length=MAX_PAYLOAD + 1)[:48])
    return link


def forged_length(link: Link, server: Server, app: App) -> Link:
    # A header announcing the largest frame without the key, then the payload streaming
    # in: refused at the header, before a byte of the payload is taken.
    forged_key = _derive(new_secret(), link.nonce)
    link.send(link.frame(PATCH, 1, length=MAX_PAYLOAD, key=forged_key)[:48] + bytes(4096))
    return link


def wrong_version(link: Link, server: Server, app: App) -> Link:
    link.send(link.frame(PATCH, 1, app.bundle(666), version=VERSION + 1))
    return link


def wrong_key(link: Link, server: Server, app: App) -> Link:
    # Another session's secret, this connection's nonce: a well-formed forgery.
    forged_key = _derive(new_secret(), link.nonce)
    link.send(link.frame(PATCH, 1, app.bundle(666), key=forged_key))
    return link


def flipped_mac_bit(link: Link, server: Server, app: App) -> Link:
    link.send(flip(link.frame(PATCH, 1, app.bundle(666)), 16 + 7, 3))
    return link


def flipped_payload_bit(link: Link, server: Server, app: App) -> Link:
    link.send(flip(link.frame(PATCH, 1, app.bundle(666)), -33))  # the payload's last byte
    return link


def flipped_sequence_bit(link: Link, server: Server, app: App) -> Link:
    link.send(flip(link.frame(PATCH, 1, app.bundle(666)), 11, 1))  # sequence 1 -> 3
    return link


def flipped_kind_bit(link: Link, server: Server, app: App) -> Link:
    link.send(flip(link.frame(PATCH, 1, app.bundle(666)), 3, 0))  # PATCH -> REPORT
    return link


def longer_length(link: Link, server: Server, app: App) -> Link:
    data = link.frame(PATCH, 1, app.bundle(666))
    link.send(with_length(data, len(data) - 80 + 64))  # claims 64 bytes more
    return link


def shorter_length(link: Link, server: Server, app: App) -> Link:
    data = link.frame(PATCH, 1, app.bundle(666))
    link.send(with_length(data, len(data) - 80 - 1))  # one byte fewer: the MAC fails
    return link


def flipped_payload_mac_bit(link: Link, server: Server, app: App) -> Link:
    link.send(flip(link.frame(PATCH, 1, app.bundle(666)), -1, 5))  # the frame's last byte
    return link


def skipped_sequence(link: Link, server: Server, app: App) -> Link:
    link.send(link.frame(PATCH, 2, app.bundle(666)))  # authentic, but 1 is expected
    return link


def unknown_kind(link: Link, server: Server, app: App) -> Link:
    link.send(link.frame(99, 1, app.bundle(666)))
    return link


def wrong_direction(link: Link, server: Server, app: App) -> Link:
    link.send(link.frame(HELLO, 1, b'{"pid": 1}'))  # a client's frame kind
    return link


def replayed_on_its_connection(link: Link, server: Server, app: App) -> Link:
    assert link.patch(app.bundle(2))["patched"] == ["__main__:answer"]
    assert app.answer() == 2
    assert link.patch(app.bundle(1))["patched"] == ["__main__:answer"]
    assert app.answer() == 1
    link.send(link.frames()[0])  # the frame that made answer() return 2
    return link


def replayed_on_a_new_connection(link: Link, server: Server, app: App) -> Link:
    assert link.patch(app.bundle(2))["patched"] == ["__main__:answer"]
    assert link.patch(app.bundle(1))["patched"] == ["__main__:answer"]
    assert app.answer() == 1
    link.channel.send(BYE)  # a clean goodbye: the app reconnects without a word
    link.wait_dropped()
    link.close()
    fresh = server.accept()
    fresh.send(link.frames()[0])  # sequence 1, as a new connection expects; another nonce
    return fresh


ATTACKS: list[tuple[Attack, str]] = [
    (garbage, "not a hotpatch frame"),
    (truncated_header, "truncated frame: 30 of 48 header bytes"),
    (truncated_payload, "truncated frame"),
    (oversized, f"frame of {MAX_PAYLOAD + 1} bytes exceeds the limit of {MAX_PAYLOAD}"),
    (forged_length, "frame authentication failed"),
    (wrong_version, f"protocol version {VERSION + 1}, expected {VERSION}"),
    (wrong_key, "frame authentication failed"),
    (flipped_mac_bit, "frame authentication failed"),
    (flipped_payload_bit, "frame authentication failed"),
    (flipped_sequence_bit, "frame authentication failed"),
    (flipped_kind_bit, "frame authentication failed"),
    # The length is in the authenticated header: changed, the header is refused.
    (longer_length, "frame authentication failed"),
    (shorter_length, "frame authentication failed"),
    (flipped_payload_mac_bit, "frame authentication failed"),
    (skipped_sequence, "frame 2 out of sequence (expected 1)"),
    (unknown_kind, "unknown frame kind 99"),
    (wrong_direction, "unexpected frame kind 1 from the server"),
    (replayed_on_its_connection, "frame 1 out of sequence (expected 3)"),
    (replayed_on_a_new_connection, "frame authentication failed"),
]


def patch_after_reconnect(server: Server, app: App, value: int, target: str) -> None:
    """The app reconnects (same process, same build) and a valid patch applies."""
    fresh = server.accept()
    assert fresh.hello["pid"] == app.proc.pid
    assert fresh.hello["build"] == "build-a"
    report = fresh.patch(app.bundle(value, target=target))
    assert report["patched"] == ["__main__:answer"] and report["build"] == target, report
    assert "error" not in report
    assert app.answer() == value
    fresh.close()


@pytest.mark.parametrize("attack, message", ATTACKS, ids=[a.__name__ for a, _ in ATTACKS])
def test_a_bad_frame_is_dropped_with_one_log_line_and_the_app_carries_on(
    server, app, attack, message
):
    attacked = attack(server.accept(), server, app)
    attacked.wait_dropped()
    attacked.close()
    assert app.answer() == 1  # still running, code unchanged
    patch_after_reconnect(server, app, 7, "build-b")
    lines = app.stop()
    assert len(lines) == 1, lines  # one line for the bad frame, and nothing else
    assert lines[0].startswith(DROPPED) and message in lines[0], lines


def test_every_bad_frame_in_turn_one_app_one_line_each(tmp_path):
    # One app through all of the attacks above (over loopback TCP; each alone above is over
    # a Unix socket), reconnecting after each: as many log lines as bad frames, in order,
    # and it is still patchable.
    server = tcp_server()
    app = App(tmp_path, server.address, server.secret)
    try:
        link = server.accept()
        for attack, _ in ATTACKS:
            attacked = attack(link, server, app)
            attacked.wait_dropped()
            attacked.close()
            assert app.answer() == 1, attack.__name__
            link = server.accept()
            assert link.hello["pid"] == app.proc.pid
        link.close()
        patch_after_reconnect(server, app, 7, "build-b")
        lines = app.stop()
        assert len(lines) == len(ATTACKS), lines
        for line, (_, message) in zip(lines, ATTACKS, strict=True):
            assert line.startswith(DROPPED) and message in line, (line, message)
    finally:
        app.kill()
        server.close()


@pytest.mark.parametrize("server", ["unix", "tcp"], indirect=True)
@pytest.mark.parametrize(
    "payload, error, line",
    [
        (
            lambda app: app.bundle(666, base="build-x", target="build-y"),
            "refused: the bundle patches build 'build-x', but this process runs build 'build-a'",
            "hotpatch: refused: the bundle patches build 'build-x', but this process runs build "
            "'build-a'",
        ),
        (
            lambda app: b"not a bundle at all" + bytes(64),
            "bad patch bundle: not a hotpatch bundle (wrong magic bytes)",
            "hotpatch: bad patch bundle: not a hotpatch bundle (wrong magic bytes)",
        ),
    ],
    ids=["another-build", "not-a-bundle"],
)
def test_a_patch_the_app_cannot_take_is_refused_and_reported(server, app, payload, error, line):
    # An authentic frame whose patch is for another build (or is no patch): the app
    # refuses it with a PatchError, says so in its report, and keeps the connection.
    link = server.accept()
    report = link.patch(payload(app))
    assert report["error"] == error
    assert "PatchError" in report["traceback"] or "BundleError" in report["traceback"]
    assert report["build"] == "build-a" and "patched" not in report
    assert app.answer() == 1
    report = link.patch(app.bundle(7, target="build-b"))  # the same connection carries on
    assert report["patched"] == ["__main__:answer"] and report["build"] == "build-b"
    assert app.answer() == 7
    link.close()
    assert app.stop() == [line]


@pytest.mark.parametrize("server", ["unix", "tcp"], indirect=True)
def test_a_server_that_closes_before_its_nonce_does_not_stop_the_client(server, app):
    # Not a frame, so no log line; but the client thread must survive it and reconnect.
    for sent in (b"", b"half a nonce"):
        conn = server.accept_raw()
        conn.sendall(sent)
        conn.close()
    patch_after_reconnect(server, app, 7, "build-b")
    assert app.stop() == []


# -- bad frames sent to the dev server -------------------------------------------------------

HelloAttack = Callable[[bytes, bytes], bytes]  # (connection key, nonce) -> bytes to send

HELLO_ATTACKS: list[tuple[str, HelloAttack, str]] = [
    ("garbage", lambda k, n: bytes(64), "not a hotpatch frame"),
    ("truncated", lambda k, n: frame(k, HELLO, 1, b'{"pid": 1}')[:-3], "truncated frame"),
    (
        "oversized",
        lambda k, n: frame(k, HELLO, 1, length=MAX_PAYLOAD + 1)[:48],
        "exceeds the limit",
    ),
    (
        "hello-over-its-limit",
        lambda k, n: frame(k, HELLO, 1, length=HELLO_LIMIT + 1)[:48],
        f"frame of {HELLO_LIMIT + 1} bytes exceeds the limit of {HELLO_LIMIT}",
    ),
    (
        "forged-length",
        lambda k, n: frame(_derive(b"x", n), HELLO, 1, length=MAX_PAYLOAD)[:48] + bytes(9000),
        "authentication failed",
    ),
    ("version", lambda k, n: frame(k, HELLO, 1, b"{}", version=9), "protocol version 9"),
    (
        "wrong-key",
        lambda k, n: frame(_derive(b"another session", n), HELLO, 1, b'{"pid": 1}'),
        "authentication failed",
    ),
    ("not-a-hello", lambda k, n: frame(k, REPORT, 1, b"{}"), "the first frame must be a hello"),
    ("not-json", lambda k, n: frame(k, HELLO, 1, b"\xff{"), "dropped a connection"),
    ("not-an-object", lambda k, n: frame(k, HELLO, 1, b"[1, 2]"), "dropped a connection"),
    ("bad-pid", lambda k, n: frame(k, HELLO, 1, b'{"pid": "one"}'), "dropped a connection"),
]


@pytest.mark.parametrize(
    "attack, message", [a[1:] for a in HELLO_ATTACKS], ids=[a[0] for a in HELLO_ATTACKS]
)
def test_dev_server_drops_a_bad_connection_with_one_log_line(caplog, attack, message):
    secret = new_secret()
    server = DevServer(secret)
    caplog.set_level(logging.WARNING, logger="thinlink.dev.server")
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(TIMEOUT)
        conn.connect(server.address.removeprefix("unix:"))
        nonce = b""
        while len(nonce) < NONCE_SIZE:
            nonce += conn.recv(NONCE_SIZE - len(nonce))
        conn.sendall(attack(_derive(secret, nonce), nonce))
        conn.shutdown(socket.SHUT_WR)  # ends a truncated frame; the rest are whole
        wait_closed(conn)
        conn.close()
        assert server.connected() == []
        records = [r for r in caplog.records if r.name == "thinlink.dev.server"]
        assert len(records) == 1, records
        assert message in records[0].getMessage()
        # A proper client still gets in.
        good = connect(server.address, secret)
        good.send(HELLO, json.dumps({"pid": 4242, "build": "b"}).encode())
        assert wait_for_client(server, 4242).build == "b"
        good.close()
    finally:
        server.close()
