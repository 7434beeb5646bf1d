"""The dev server: a socket every process of the app connects to, to receive patches.

It listens on a Unix socket in a private directory (mode 0700) by default, or on
loopback TCP; another address only when asked explicitly (the caller warns). Each
connection is authenticated (see `hotpatch.protocol`); a client says hello with its
build, and the server's `on_hello` may answer with a catch-up patch. `broadcast` sends
a bundle to every connected process and collects their reports.

Until a connection has said an authentic hello it costs the server almost nothing, so
that anyone who can reach the socket (under `--address tcp:`, any local user) cannot
exhaust it: one thread (`thinlink-server`) accepts every connection and reads every
handshake, without blocking on any; a handshake holds at most a frame header until its
MAC is checked, and at most `HELLO_LIMIT` bytes after; it must be done within
`Limits.handshake_timeout`; at most `Limits.max_pending` are under way (a new one
pushes out the oldest). Only an authenticated process gets a thread of its own, and
at most `Limits.max_clients` do. Every connection dropped is one log line.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from hotpatch.protocol import (
    BYE,
    HELLO,
    HELLO_LIMIT,
    PATCH,
    REPORT,
    AddressKind,
    Channel,
    ProtocolError,
    accept,
    parse_address,
)

from .rundir import RunDir

__all__ = ["Client", "DevServer", "Limits"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """What the server grants connections that have not authenticated, and how many
    processes it serves."""

    handshake_timeout: float = 5.0  # seconds from connecting to an authentic hello
    max_pending: int = 64  # handshakes under way at once
    max_clients: int = 256  # authenticated processes connected at once


@dataclass(eq=False)
class Client:
    """One connected app process."""

    channel: Channel
    pid: int = 0
    build: str | None = None
    main: str | None = None
    # A cluster worker ("ray worker", "dask worker"; None for the app's own processes),
    # its host, and what it runs: {module: source digest} imported, and on its disk.
    role: str | None = None
    host: str | None = None
    modules: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    reports: queue.Queue = field(default_factory=queue.Queue)
    send_lock: threading.Lock = field(default_factory=threading.Lock)

    def send_patch(self, bundle: bytes) -> None:
        with self.send_lock:
            self.channel.send(PATCH, bundle)

    def introduce(self, hello: bytes) -> None:
        """Take in a hello (JSON: pid, build, main; a cluster worker's role, host,
        modules and files). Raises ValueError for a malformed one: an authenticated peer
        can still send one, and its connection is then dropped with one log line."""
        said = json.loads(hello)
        if not isinstance(said, dict):
            raise ValueError("the hello is not a JSON object")
        try:
            self.pid = int(said.get("pid") or 0)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"the hello's pid is not a number: {exc}") from None
        self.build = said.get("build")
        self.main = said.get("main")
        self.role = str(said["role"]) if said.get("role") else None
        self.host = str(said["host"]) if said.get("host") else None
        self.modules = _digests(said.get("modules"))
        self.files = _digests(said.get("files"))

    def label(self) -> str:
        """How the session names it: "pid 12", "ray worker pid 12 on host"."""
        where = f" on {self.host}" if self.host else ""
        return f"{self.role} pid {self.pid}{where}" if self.role else f"pid {self.pid}"

    def annotate(self, report: dict) -> dict:
        """`report` with who sent it (role, host) for the session's summary."""
        if self.role:
            report.setdefault("role", self.role)
            report.setdefault("host", self.host)
        report.setdefault("pid", self.pid)
        return report


def _digests(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


@dataclass(eq=False)
class _Handshake:
    """A connection that has not said its hello yet."""

    conn: socket.socket
    channel: Channel
    peer: str
    deadline: float


class DevServer:
    """Accepts app processes and sends them patches. Operation is thread-safe.

    `address` is parsed by `hotpatch.protocol.parse_address`; a private Unix socket goes
    in `directory` (a `RunDir`, made here and removed by `close` when not given).
    """

    def __init__(
        self,
        secret: bytes,
        address: str | None = None,
        on_hello=None,  # noqa: ANN001
        *,
        directory: RunDir | None = None,
        limits: Limits = Limits(),  # noqa: B008 - frozen
    ) -> None:
        self.secret = secret
        self.on_hello = on_hello
        self.limits = limits
        self.clients: list[Client] = []
        self._lock = threading.Lock()
        self._closing = False
        self._own_directory = directory is None
        self._directory = directory
        self._socket_path: Path | None = None
        self.sock, self.address = self._listen(address)
        self._wake_read, self._wake_write = socket.socketpair()
        self._thread = threading.Thread(target=self._loop, name="thinlink-server", daemon=True)
        self._thread.start()

    def _listen(self, address: str | None) -> tuple[socket.socket, str]:
        where = parse_address(address)
        sock = socket.socket(where.family, socket.SOCK_STREAM)
        try:
            if where.kind is AddressKind.UNIX:
                if where.path is None:
                    if self._directory is None:
                        self._directory = RunDir.create()
                    self._socket_path = self._directory.socket
                    sock.bind(str(self._socket_path))
                else:
                    sock.bind(where.path)
                    # The directory is the user's choice; the socket is private.
                    os.chmod(where.path, 0o600)
                    self._socket_path = Path(where.path)
                shown = f"unix:{self._socket_path}"
            else:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(where.sockaddr)
                # The bound host, not the name asked for: `localhost` may resolve to
                # another address for a client than it did here.
                host, port = sock.getsockname()[:2]
                shown = str(replace(where, host=host, port=port))
            sock.listen(64)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock, shown

    # the server thread: accepting and handshakes ------------------------------------

    def _loop(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self.sock, selectors.EVENT_READ)
        selector.register(self._wake_read, selectors.EVENT_READ)
        pending: dict[socket.socket, _Handshake] = {}  # oldest first
        try:
            while not self._closing:
                timeout = None
                if pending:
                    first = min(h.deadline for h in pending.values())
                    timeout = max(first - time.monotonic(), 0.0)
                for key, _ in selector.select(timeout):
                    if self._closing:
                        return
                    if key.fileobj is self.sock:
                        self._accept(selector, pending)
                    elif key.fileobj is not self._wake_read:
                        handshake = pending.get(key.fileobj)  # type: ignore[call-overload]
                        if handshake is not None:
                            self._advance(selector, pending, handshake)
                now = time.monotonic()
                for handshake in [h for h in pending.values() if h.deadline <= now]:
                    timeout_s = self.limits.handshake_timeout
                    self._drop(selector, pending, handshake, f"no hello within {timeout_s:g} s")
        finally:
            for handshake in list(pending.values()):
                handshake.conn.close()
            selector.close()

    def _accept(self, selector: selectors.BaseSelector, pending: dict) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if self._closing:
                    return
                # Out of descriptors, or the peer left before we accepted: nothing to
                # drop, and the loop goes on.
                log.warning("thinlink: could not accept a connection: %s", exc)
                return
            if len(pending) >= self.limits.max_pending:
                oldest = next(iter(pending.values()))
                self._drop(
                    selector,
                    pending,
                    oldest,
                    f"too many connections without a hello ({self.limits.max_pending})",
                )
            shown = f" from {peer[0]}:{peer[1]}" if isinstance(peer, tuple) else ""
            try:
                conn.setblocking(False)
                channel = accept(conn, self.secret)  # 16 bytes: a new socket takes them
            except OSError as exc:
                log.warning("thinlink: dropped a connection%s: %s", shown, exc)
                conn.close()
                continue
            deadline = time.monotonic() + self.limits.handshake_timeout
            pending[conn] = _Handshake(conn, channel, shown, deadline)
            selector.register(conn, selectors.EVENT_READ)

    def _advance(self, selector: selectors.BaseSelector, pending: dict, hs: _Handshake) -> None:
        """Read what has arrived of a handshake; on its hello, hand the process a thread."""
        try:
            data = hs.conn.recv(hs.channel.wanted())
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._drop(selector, pending, hs, str(exc))
            return
        try:
            if not data:
                raise hs.channel.ended()
            frame = hs.channel.feed(data, HELLO_LIMIT)
            if frame is None:
                return
            kind, payload = frame
            if kind != HELLO:
                raise ProtocolError("the first frame must be a hello")
            client = Client(hs.channel)
            client.introduce(payload)
        except (ProtocolError, ValueError, TypeError, EOFError) as exc:
            self._drop(selector, pending, hs, str(exc))
            return
        selector.unregister(hs.conn)
        del pending[hs.conn]
        with self._lock:
            full = len(self.clients) >= self.limits.max_clients
            if not full:
                self.clients.append(client)
        if full:
            log.warning(
                "thinlink: dropped a connection from pid %s: too many processes connected (%s)",
                client.pid,
                self.limits.max_clients,
            )
            hs.channel.close()
            return
        hs.conn.setblocking(True)
        threading.Thread(
            target=self._serve, args=(client,), name=f"thinlink-client-{client.pid}", daemon=True
        ).start()
        if self.on_hello is not None:
            threading.Thread(target=self.on_hello, args=(client,), daemon=True).start()

    def _drop(
        self, selector: selectors.BaseSelector, pending: dict, hs: _Handshake, reason: str
    ) -> None:
        log.warning("thinlink: dropped a connection%s: %s", hs.peer, reason)
        selector.unregister(hs.conn)
        del pending[hs.conn]
        hs.conn.close()

    # one thread per connected process ---------------------------------------------

    def _serve(self, client: Client) -> None:
        channel = client.channel
        try:
            while True:
                kind, payload = channel.receive()
                if kind == REPORT:
                    report = json.loads(payload)
                    if not isinstance(report, dict):
                        raise ValueError("the report is not a JSON object")
                    client.reports.put(report)
                elif kind == HELLO:  # said again: it joined a cluster engine meanwhile
                    client.introduce(payload)
                    if self.on_hello is not None and client.role and client.build is None:
                        threading.Thread(target=self.on_hello, args=(client,), daemon=True).start()
                elif kind == BYE:
                    break
        except (ProtocolError, ValueError) as exc:
            log.warning("thinlink: dropped a connection from pid %s: %s", client.pid, exc)
        except (EOFError, OSError):
            pass
        finally:
            with self._lock:
                if client in self.clients:
                    self.clients.remove(client)
            client.reports.put(None)  # wakes a broadcast waiting on this client
            channel.close()

    def connected(self) -> list[Client]:
        with self._lock:
            return list(self.clients)

    def send(self, client: Client, bundle: bytes, timeout: float = 30.0) -> dict | None:
        """Send one bundle to one client and wait for its report (None if it left)."""
        try:
            client.send_patch(bundle)
        except OSError:
            return None
        try:
            report = client.reports.get(timeout=timeout)
        except queue.Empty:
            return client.annotate({"error": f"no report within {timeout:.0f}s"})
        if report is not None:
            client.build = report.get("build", client.build)
            client.annotate(report)
        return report

    def broadcast(
        self, bundle: bytes, timeout: float = 30.0, base: str | None = None
    ) -> list[dict]:
        """Send a bundle to every connected process; their reports (in any order).

        With `base` (the bundle's base build), only to the processes at that build (or
        at none): one that joined at another is left to its catch-up patch. A process
        that leaves before it reports counts as `{"left": True}`, one that takes longer
        than `timeout` as an error; each report says who sent it (`Client.annotate`).
        """
        clients = [c for c in self.connected() if base is None or c.build in (None, base)]
        for client in clients:
            try:
                client.send_patch(bundle)
            except OSError:
                pass
        reports = []
        for client in clients:
            try:
                report = client.reports.get(timeout=timeout)
            except queue.Empty:
                report = {"error": f"no report within {timeout:.0f}s"}
            if report is None:
                report = {"left": True}
            else:
                client.build = report.get("build", client.build)
            reports.append(client.annotate(report))
        return reports

    def close(self) -> None:
        self._closing = True
        try:
            self._wake_write.send(b"x")
        except OSError:
            pass
        self._thread.join(5.0)
        for end in (lambda: self.sock.shutdown(socket.SHUT_RDWR), self.sock.close):
            try:
                end()
            except OSError:
                pass
        for wake in (self._wake_read, self._wake_write):
            wake.close()
        for client in self.connected():
            client.channel.close()
        if self._own_directory and self._directory is not None:
            self._directory.remove()
        elif self._socket_path is not None and self._directory is not None:
            self._socket_path.unlink(missing_ok=True)
