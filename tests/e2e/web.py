"""HTTP on loopback for the framework tests: a free port, requests, and waiting for an
answer to change (bounded: a patch shows within milliseconds, a failure within TIMEOUT)."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any

from .devapp import TIMEOUT, wait_until

__all__ = ["Http", "free_port"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the server binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Http:
    """Requests to one server on 127.0.0.1."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, method: str = "GET", body: object = None) -> tuple[int, Any]:
        """(status, the JSON answer, or its text when not JSON)."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        req = urllib.request.Request(self.base + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=10) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def json(self, path: str) -> Any:
        status, value = self.get(path)
        assert status == 200, (path, status, value)
        return value

    def until(self, path: str, expected: Any, method: str = "GET", body: object = None) -> Any:
        """Ask until the answer is `expected` (a (status, value) pair, or a value for a
        200); the answer."""
        want = expected if isinstance(expected, tuple) else (200, expected)
        last: list[object] = [None]

        def answer() -> tuple[int, Any] | None:
            try:
                last[0] = got = self.get(path, method, body)
            except OSError as exc:  # not listening yet
                last[0] = exc
                return None
            return got if got == want else None

        try:
            return wait_until(answer, TIMEOUT, 0.01, f"{method} {path} to answer {want}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the last answer was {last[0]!r}") from None
