"""What a connection that has not authenticated can cost the dev server, with real sockets.

First against a `DevServer` in this process, with small limits so each rule shows
quickly: a handshake has a deadline (an idle or a slow connection is dropped when it
passes, with one log line), at most `max_pending` handshakes are under way (a new one
pushes out the oldest), at most `max_clients` processes are served, and a header whose
MAC fails is refused before a byte of its payload is read. All of it on one thread.

Then against a real `thinlink dev` process with its defaults, measured from /proc: its
resident memory while 8 connections announce the largest frame (without the secret, and
with it, as a hello) and stream it, and its thread count while 200 idle connections and
20 slow ones are held; after each, the session still patches its app.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hotpatch.protocol import HELLO, HELLO_LIMIT, MAX_PAYLOAD, NONCE_SIZE, VERSION, connect
from hotpatch.protocol import new_secret as make_secret
from thinlink.dev.server import DevServer, Limits

from .devapp import DevApp, edit, polling_project, wait_until

TIMEOUT = 15.0


def header(key: bytes, kind: int, sequence: int, length: int) -> bytes:
    """A frame's header as documented: head, then HMAC-SHA256 of the head."""
    head = struct.pack(">2sBBQI", b"HP", VERSION, kind, sequence, length)
    return head + hmac.new(key, head, hashlib.sha256).digest()


def connection_key(secret: bytes, nonce: bytes) -> bytes:
    return hmac.new(secret, b"hotpatch-connection" + nonce, hashlib.sha256).digest()


def open_raw(address: str) -> tuple[socket.socket, bytes]:
    """A connection to `address` and the nonce the server sent on it."""
    if address.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(TIMEOUT)
        sock.connect(address.removeprefix("unix:"))
    else:
        host, _, port = address.removeprefix("tcp:").rpartition(":")
        sock = socket.create_connection((host.strip("[]"), int(port)), timeout=TIMEOUT)
    nonce = b""
    while len(nonce) < NONCE_SIZE:
        chunk = sock.recv(NONCE_SIZE - len(nonce))
        assert chunk, "closed before its nonce"
        nonce += chunk
    return sock, nonce


def closed_by_peer(sock: socket.socket, timeout: float = TIMEOUT) -> bool:
    """Wait until the peer closes `sock` (what it sends is read and dropped)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(1 << 16):
            pass
    except (ConnectionResetError, BrokenPipeError):
        pass
    except TimeoutError:
        return False
    return True


def stream(sock: socket.socket, first: bytes, total: int) -> int:
    """Send `first`, then up to `total` bytes of payload until the peer stops taking
    them; how many payload bytes it took."""
    sent = 0
    block = bytes(1 << 20)
    try:
        sock.sendall(first)
        while sent < total:
            sent += sock.send(block[: total - sent])
    except OSError:
        pass
    return sent


def dropped(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "thinlink.dev.server"]


def server_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("thinlink-")]


@contextmanager
def dev_server(limits: Limits, address: str | None = None) -> Iterator[DevServer]:
    server = DevServer(make_secret(), address, limits=limits)
    try:
        yield server
    finally:
        server.close()


def assert_a_client_gets_in(server: DevServer, pid: int = 4242) -> None:
    good = connect(server.address, server.secret)
    try:
        good.send(HELLO, json.dumps({"pid": pid, "build": "b"}).encode())
        wait_until(lambda: any(c.pid == pid for c in server.connected()), TIMEOUT)
    finally:
        good.close()
    wait_until(lambda: all(c.pid != pid for c in server.connected()), TIMEOUT)


# -- the rules, one at a time ----------------------------------------------------------------


@pytest.mark.parametrize("address", [None, "tcp:127.0.0.1:0"])
def test_an_idle_connection_is_dropped_at_its_deadline_with_one_line(caplog, address):
    caplog.set_level(logging.WARNING, logger="thinlink.dev.server")
    with dev_server(Limits(handshake_timeout=0.5), address) as server:
        sock, _ = open_raw(server.address)
        started = time.monotonic()
        assert closed_by_peer(sock)
        assert time.monotonic() - started >= 0.45
        sock.close()
        wait_until(lambda: dropped(caplog), TIMEOUT)
        assert len(dropped(caplog)) == 1 and "no hello within 0.5 s" in dropped(caplog)[0]
        if address is not None:  # a TCP peer is named
            assert "dropped a connection from 127.0.0.1:" in dropped(caplog)[0]
        assert_a_client_gets_in(server)


def test_a_slow_connection_is_dropped_at_its_deadline_though_it_keeps_sending(caplog):
    # Slowloris: a byte of a plausible header every 50 ms, never a whole frame in time.
    caplog.set_level(logging.WARNING, logger="thinlink.dev.server")
    with dev_server(Limits(handshake_timeout=0.5)) as server:
        sock, nonce = open_raw(server.address)
        data = header(connection_key(server.secret, nonce), HELLO, 1, 10)
        started = time.monotonic()
        try:
            for byte in data:
                sock.sendall(bytes([byte]))
                time.sleep(0.05)
        except OSError:
            pass
        assert closed_by_peer(sock)
        assert 0.45 <= time.monotonic() - started < 5
        sock.close()
        wait_until(lambda: dropped(caplog), TIMEOUT)
        assert ["no hello within 0.5 s" in m for m in dropped(caplog)] == [True]


def test_handshakes_beyond_the_cap_push_out_the_oldest(caplog):
    caplog.set_level(logging.WARNING, logger="thinlink.dev.server")
    with dev_server(Limits(handshake_timeout=30, max_pending=4)) as server:
        socks = [open_raw(server.address)[0] for _ in range(6)]
        assert closed_by_peer(socks[0]) and closed_by_peer(socks[1])
        for sock in socks[2:]:
            assert not closed_by_peer(sock, timeout=0.2)  # still waiting for their hello
        assert len(dropped(caplog)) == 2
        assert all("too many connections without a hello (4)" in m for m in dropped(caplog))
        assert_a_client_gets_in(server)  # pushes out another one, and gets in
        for sock in socks:
            sock.close()


def test_processes_beyond_the_cap_are_dropped(caplog):
    caplog.set_level(logging.WARNING, logger="thinlink.dev.server")
    with dev_server(Limits(max_clients=2)) as server:
        clients = [connect(server.address, server.secret) for _ in range(3)]
        for pid, client in enumerate(clients[:2], 100):
            client.send(HELLO, json.dumps({"pid": pid}).encode())
        wait_until(lambda: len(server.connected()) == 2, TIMEOUT)
        clients[2].send(HELLO, json.dumps({"pid": 102}).encode())
        clients[2].sock.settimeout(TIMEOUT)
        with pytest.raises(EOFError):
            clients[2].receive()
        assert [p.pid for p in server.connected()] == [100, 101]
        assert dropped(caplog) == [
            "thinlink: dropped a connection from pid 102: too many processes connected (2)"
        ]
        for client in clients:
            client.close()


def test_a_forged_header_announcing_the_largest_frame_is_refused_before_its_payload(caplog):
    caplog.set_level(logging.WARNING, logger="thinlink.dev.server")
    with dev_server(Limits()) as server:
        sock, nonce = open_raw(server.address)
        forged = header(connection_key(b"another session", nonce), HELLO, 1, MAX_PAYLOAD)
        taken = stream(sock, forged, MAX_PAYLOAD)
        assert taken < 16 * 2**20  # at most what the socket buffers took before the close
        sock.close()
        wait_until(lambda: dropped(caplog), TIMEOUT)
        assert len(dropped(caplog)) == 1 and "authentication failed" in dropped(caplog)[0]
        assert_a_client_gets_in(server)


def test_an_authentic_hello_larger_than_its_limit_is_refused(caplog):
    caplog.set_level(logging.WARNING, logger="thinlink.dev.server")
    with dev_server(Limits()) as server:
        sock, nonce = open_raw(server.address)
        key = connection_key(server.secret, nonce)
        stream(sock, header(key, HELLO, 1, MAX_PAYLOAD), MAX_PAYLOAD)
        sock.close()
        wait_until(lambda: dropped(caplog), TIMEOUT)
        assert f"exceeds the limit of {HELLO_LIMIT}" in dropped(caplog)[0]


def test_two_hundred_idle_connections_cost_no_thread(caplog):
    caplog.set_level(logging.WARNING, logger="thinlink.dev.server")
    with dev_server(Limits(handshake_timeout=1.0)) as server:
        before = len(server_threads())
        socks = [open_raw(server.address)[0] for _ in range(200)]
        assert len(server_threads()) == before
        assert_a_client_gets_in(server)  # meanwhile, a process gets in
        for sock in socks:
            assert closed_by_peer(sock)  # pushed out (137, one by the client) or timed out
            sock.close()
        wait_until(lambda: len(dropped(caplog)) == 200, TIMEOUT)
        pushed = [m for m in dropped(caplog) if "too many connections without a hello" in m]
        timed_out = [m for m in dropped(caplog) if "no hello within 1 s" in m]
        assert (len(pushed), len(timed_out)) == (137, 63)
        assert len(server_threads()) == before


# -- a real `thinlink dev` ---------------------------------------------------------------------


def status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (KiB) and Threads of process `pid`."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM", "Threads"):
                out[name] = int(value.split()[0])
    return out


def reset_peak(pid: int) -> bool:
    """Reset the peak RSS (VmHWM) of `pid`; False where not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


class Peak:
    """The largest RSS and thread count of a process, sampled every 5 ms meanwhile."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.rss = self.threads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample)

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            now = status(self.pid)
            self.rss = max(self.rss, now["VmRSS"])
            self.threads = max(self.threads, now["Threads"])
            time.sleep(0.005)


def session_secret(app_pid: int) -> bytes:
    with open(f"/proc/{app_pid}/environ", "rb") as f:
        env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
    return bytes.fromhex(env[b"HOTPATCH_SECRET"].decode())


@pytest.fixture
def session(tmp_path: Path) -> Iterator[tuple[DevApp, str, int]]:
    root = polling_project(tmp_path / "proj")
    with DevApp(root, "-v", "app.py") as dev:
        address = dev.wait_err(r"patches on (\S+)$").group(1)
        app_pid = int(dev.wait_out(r"^START (\d+)$").group(1))
        dev.wait_out(r"^VALUE v0$")
        yield dev, address, app_pid


def still_patches(dev: DevApp, value: str) -> None:
    edit(dev.root / "work.py", dev.root.joinpath("work.py").read_text().split('"')[1], value)
    dev.wait_out(rf"^VALUE {value}$")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_thinlink_dev_memory_stays_bounded_under_8_connections_announcing_the_largest_frame(
    session,
):
    dev, address, app_pid = session
    pid = dev.proc.pid
    secret = session_secret(app_pid)
    idle = status(pid)["VmRSS"]
    has_peak = reset_peak(pid)
    taken: list[int] = []
    with Peak(pid) as peak:
        for authentic in (False, True):
            socks = [open_raw(address) for _ in range(8)]
            threads = []
            for sock, nonce in socks:
                key = connection_key(secret if authentic else b"forged", nonce)
                first = header(key, HELLO, 1, MAX_PAYLOAD)
                threads.append(
                    threading.Thread(
                        target=lambda s=sock, f=first: taken.append(stream(s, f, MAX_PAYLOAD))
                    )
                )
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            for sock, _ in socks:
                assert closed_by_peer(sock)
                sock.close()
    grown = max(peak.rss, status(pid)["VmHWM"] if has_peak else 0) - idle
    print(
        f"\nthinlink dev RSS: idle {idle / 1024:.1f} MiB, +{grown / 1024:.1f} MiB at peak "
        f"under 8 connections announcing {MAX_PAYLOAD >> 20} MiB (x2: forged, authentic); "
        f"payload bytes taken per connection: max {max(taken) >> 10} KiB"
    )
    assert grown < 64 * 1024, f"grew by {grown} KiB"
    assert len(taken) == 16 and max(taken) < 16 * 2**20
    drops = [line for line in dev.err.lines if "dropped a connection" in line]
    assert len(drops) == 16, drops
    still_patches(dev, "v1")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_thinlink_dev_threads_stay_flat_under_200_idle_and_20_slow_connections(session):
    dev, address, _ = session
    pid = dev.proc.pid
    before = status(pid)["Threads"]
    stop = threading.Event()

    def slowloris(sock: socket.socket) -> None:
        try:
            while not stop.wait(0.2):
                sock.sendall(b"H")
        except OSError:
            pass

    with Peak(pid) as peak:
        idle = [open_raw(address)[0] for _ in range(200)]
        slow = [open_raw(address)[0] for _ in range(20)]
        writers = [threading.Thread(target=slowloris, args=(s,)) for s in slow]
        for writer in writers:
            writer.start()
        still_patches(dev, "v1")  # served meanwhile
        for sock in idle + slow:
            assert closed_by_peer(sock, timeout=30)
        stop.set()
        for writer in writers:
            writer.join()
    for sock in idle + slow:
        sock.close()
    print(
        f"\nthinlink dev threads: {before} idle, at most {peak.threads} under 200 idle and "
        f"20 slow connections"
    )
    assert peak.threads <= before + 2  # a patch's own short-lived thread(s), no more
    drops = [line for line in dev.err.lines if "dropped a connection" in line]
    assert len(drops) == 220, len(drops)
    assert sum("no hello within 5 s" in line for line in drops) >= 60
    still_patches(dev, "v2")
