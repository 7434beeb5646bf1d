"""HTTP on loopback for the framework tests: a free port, requests, and waiting for an
answer to change (bounded: a patch shows within milliseconds, a failure within TIMEOUT)."""

from __future__ import annotations

import json
import re
import socket
import urllib.error
import urllib.request
from typing import Any

from .devapp import TIMEOUT, wait_until

__all__ = ["Http", "free_port"]

_ANY: Any = object()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the server binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Http:
    """Requests to one server on 127.0.0.1."""

    def __init__(self, port: int, session: object = None) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.session = session  # a DevApp: its transcript goes into failures

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

    def until(
        self,
        path: str,
        expected: Any = _ANY,
        *,
        status: int = 200,
        method: str = "GET",
        body: object = None,
    ) -> Any:
        """Ask until the answer is `status` with the value `expected` (any value if not
        given); the answer, a (status, value) pair."""

        def matches(got: tuple[int, Any]) -> bool:
            return got[0] == status and (expected is _ANY or got[1] == expected)

        want = (status, expected)
        last: list[object] = [None]

        def answer() -> tuple[int, Any] | None:
            try:
                last[0] = got = self.get(path, method, body)
            except OSError as exc:  # not listening yet
                last[0] = exc
                return None
            return got if matches(got) else None

        try:
            what = f"{method} {path} to answer {want}"
            return wait_until(answer, TIMEOUT, 0.01, what)
        except AssertionError as exc:
            shown = repr(last[0])
            shown = shown if len(shown) < 500 else shown[:500] + "..."
            transcript = "\n".join(_tool_lines(self.session)) if self.session is not None else ""
            raise AssertionError(f"{exc}; the last answer was {shown}\n{transcript}") from None


def _tool_lines(session: object) -> list[str]:
    """What `thinlink dev` said (its timestamped lines and those under them), without the
    server's request log."""
    lines, keep = [], False
    for line in session.err.lines:  # type: ignore[attr-defined]
        if re.match(r"\d\d:\d\d:\d\d |thinlink dev:", line):
            keep = True
        elif not line.startswith("  "):
            keep = False
        if keep:
            lines.append(line)
    return lines
