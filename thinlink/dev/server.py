"""The dev server: a socket every process of the app connects to, to receive patches.

It listens on a Unix socket in a private directory (mode 0700) by default, or on
loopback TCP; another address only when asked explicitly (the caller warns). Each
connection is authenticated (see `hotpatch.protocol`); a client says hello with its
build, and the server's `on_hello` may answer with a catch-up patch. `broadcast` sends
a bundle to every connected process and collects their reports.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import tempfile
import threading
from dataclasses import dataclass, field

from hotpatch.protocol import BYE, HELLO, PATCH, REPORT, Channel, ProtocolError, accept

__all__ = ["Client", "DevServer"]

log = logging.getLogger(__name__)


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


class DevServer:
    """Accepts app processes and sends them patches. Operation is thread-safe."""

    def __init__(self, secret: bytes, address: str | None = None, on_hello=None) -> None:  # noqa: ANN001
        self.secret = secret
        self.on_hello = on_hello
        self.clients: list[Client] = []
        self._lock = threading.Lock()
        self._closing = False
        self._tmpdir: str | None = None
        self.sock, self.address = self._listen(address)
        self._thread = threading.Thread(
            target=self._accept_loop, name="thinlink-server", daemon=True
        )
        self._thread.start()

    def _listen(self, address: str | None) -> tuple[socket.socket, str]:
        if address is None or address == "unix":
            self._tmpdir = tempfile.mkdtemp(prefix="thinlink-")  # created 0700
            os.chmod(self._tmpdir, 0o700)
            path = os.path.join(self._tmpdir, "dev.sock")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(path)
            sock.listen(64)
            return sock, f"unix:{path}"
        if address.startswith("unix:"):
            path = address.removeprefix("unix:")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(path)
            os.chmod(path, 0o600)  # the directory is the user's choice; the socket is private
            sock.listen(64)
            return sock, address
        host, _, port = address.removeprefix("tcp:").rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, int(port or 0)))
        sock.listen(64)
        bound_host, bound_port = sock.getsockname()[:2]
        shown = f"[{bound_host}]" if family == socket.AF_INET6 else bound_host
        return sock, f"tcp:{shown}:{bound_port}"

    def _accept_loop(self) -> None:
        while not self._closing:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            channel = accept(conn, self.secret)
            kind, payload = channel.receive()
            if kind != HELLO:
                raise ProtocolError("the first frame must be a hello")
            client = Client(channel)
            client.introduce(payload)
        except (ProtocolError, ValueError, TypeError, EOFError, OSError) as exc:
            log.warning("thinlink: dropped a connection: %s", exc)
            conn.close()
            return
        with self._lock:
            self.clients.append(client)
        if self.on_hello is not None:
            threading.Thread(target=self.on_hello, args=(client,), daemon=True).start()
        try:
            while True:
                kind, payload = channel.receive()
                if kind == REPORT:
                    client.reports.put(json.loads(payload))
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
        # Shut down before closing: on Linux close() alone does not wake the accept thread,
        # which would go on accepting connections.
        for end in (lambda: self.sock.shutdown(socket.SHUT_RDWR), self.sock.close):
            try:
                end()
            except OSError:
                pass
        for client in self.connected():
            client.channel.close()
        if self._tmpdir is not None:
            path = os.path.join(self._tmpdir, "dev.sock")
            for remove in (lambda: os.unlink(path), lambda: os.rmdir(self._tmpdir)):
                try:
                    remove()
                except OSError:
                    pass
