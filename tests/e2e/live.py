"""A program running under ``thinlink run`` that a test edits, patches and questions.

The test writes a project (modules and a driver script) into a temporary directory and
starts the driver with ``python -m thinlink run``. The driver sets up whatever references
the test needs (callbacks in registries, bound methods, instances, closures), then hands
its globals to ``_serve.serve()``, a tiny command loop on stdin/stdout, one JSON object a
line each way:

    {"op": "apply", "arg": PATH}   -> {"report": {...}} or {"patch_error": MESSAGE}
    {"op": "rollback"}             -> the same
    {"op": "eval", "arg": EXPR}    -> {"value": repr(result)}   (in the driver's globals)
    {"op": "exec", "arg": CODE}    -> {}
    anything that raises           -> {"error": "Type: message", "traceback": TEXT}

The test side (`Live`) edits files, makes the bundle in the test process exactly as the
tool does (``Project(root, cache_dir=...).patch()``, then ``hotpatch.bundle.save``; each
patch advances the last good build, so edits chain) and asks the process to apply it.
Every read from the process has a timeout (a reader thread feeds a queue), so a hung or
dead child fails the test with its stderr instead of hanging the suite.
"""

from __future__ import annotations

import ast
import itertools
import json
import os
import queue
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

from hotpatch.bundle import save
from thinlink import Project

__all__ = ["SERVE", "Live", "RemoteError", "RemotePatchError", "start"]

REPO = Path(__file__).resolve().parents[2]
# The working tree first on sys.path, no inherited build or Python settings.
ENV = {
    **{
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTHON", "THINLINK_", "HOTPATCH_"))
    },
    "PYTHONPATH": str(REPO),
    "PYTHONDONTWRITEBYTECODE": "1",
}
TIMEOUT = 20.0  # seconds for any one answer; generous, only ever reached when broken

SERVE = '''\
"""Test harness (tests/e2e/live.py): answer commands from stdin, one JSON line each."""
import dataclasses
import json
import sys
import traceback

import hotpatch


def _report(report):
    return {f.name: getattr(report, f.name) for f in dataclasses.fields(report)}


def serve(namespace):
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        op, arg = request["op"], request.get("arg")
        try:
            if op == "quit":
                break
            if op == "apply":
                reply = {"report": _report(hotpatch.apply(arg))}
            elif op == "rollback":
                reply = {"report": _report(hotpatch.rollback())}
            elif op == "eval":
                reply = {"value": repr(eval(arg, namespace))}
            elif op == "exec":
                exec(arg, namespace)
                reply = {}
            else:
                reply = {"error": f"unknown op {op!r}"}
        except hotpatch.PatchError as exc:
            reply = {"patch_error": str(exc), "type": type(exc).__name__}
        except BaseException as exc:
            reply = {
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": "".join(traceback.format_exception(exc)),
            }
        print(json.dumps(reply), flush=True)
'''

SERVE_CALL = "\nimport _serve\n_serve.serve(globals())\n"


class RemoteError(AssertionError):
    """The process raised something other than a PatchError while doing what we asked."""


class RemotePatchError(Exception):
    """The process's `hotpatch.apply()`/`rollback()` raised `PatchError` (message in str)."""


class Live:
    """One running program and the project it runs from."""

    def __init__(self, root: Path, cache: Path, driver: Path, process: subprocess.Popen) -> None:
        self.root = root
        self.cache = cache
        self.driver = driver
        self.process = process
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        self._bundles = itertools.count(1)
        threading.Thread(target=self._pump, args=(process.stdout, self._lines), daemon=True).start()
        threading.Thread(target=self._collect, daemon=True).start()

    # -- the child's output ---------------------------------------------------------------

    @staticmethod
    def _pump(stream: Any, lines: queue.Queue[str | None]) -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)  # end of output: the process exited

    def _collect(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._stderr.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def _read(self, timeout: float) -> dict[str, Any]:
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(
                    f"no answer from the process in {timeout} s\nstderr:\n{self.stderr}"
                ) from None
            if line is None:
                self.process.wait(timeout=5)
                raise AssertionError(
                    f"the process exited ({self.process.returncode})\nstderr:\n{self.stderr}"
                )
            line = line.strip()
            if line.startswith("{"):
                return json.loads(line)
            # anything else the program prints is not an answer: skip it

    def wait_ready(self) -> None:
        reply = self._read(TIMEOUT)
        assert reply == {"ready": True}, reply

    # -- requests -------------------------------------------------------------------------

    def request(self, op: str, arg: str | None = None, timeout: float = TIMEOUT) -> dict:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, "arg": arg}) + "\n")
        self.process.stdin.flush()
        reply = self._read(timeout)
        if "error" in reply:
            raise RemoteError(f"{op} {arg!r} raised {reply['error']}\n{reply.get('traceback')}")
        if "patch_error" in reply:
            raise RemotePatchError(reply["patch_error"])
        return reply

    def repr(self, expr: str) -> str:
        """`repr()` of `expr` evaluated in the driver's globals."""
        return self.request("eval", expr)["value"]

    def eval(self, expr: str) -> Any:
        """The value of `expr` (a Python literal: numbers, strings, tuples, lists, dicts...)."""
        text = self.repr(expr)
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise AssertionError(f"{expr} is not a literal: {text}") from None

    def exec(self, code: str) -> None:
        self.request("exec", textwrap.dedent(code))

    def build_id(self) -> str:
        """The build the process runs (`hotpatch.current_build()`)."""
        return self.eval("__import__('hotpatch').current_build()")

    def apply(self, bundle: Path | str) -> dict[str, Any]:
        """Apply a bundle in the process; its report (a dict). `RemotePatchError` if refused."""
        return self.request("apply", str(bundle))["report"]

    def rollback(self) -> dict[str, Any]:
        return self.request("rollback")["report"]

    # -- the project ----------------------------------------------------------------------

    def write(self, name: str, text: str) -> Path:
        """Write a project file (dedented), as an editor saving it would."""
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    def project(self) -> Project:
        return Project(self.root, cache_dir=self.cache)

    def patch(self, **kwargs: Any) -> Path:
        """Build the working tree and save the bundle from the last good build to it (the
        driver is the program's main script); returns the bundle's path."""
        kwargs.setdefault("main_path", str(self.driver))
        result = self.project().patch(**kwargs)
        path = self.root.parent / f"{self.root.name}-bundle-{next(self._bundles)}.hpb"
        save(result.bundle, path)
        return path

    def edit(self, files: dict[str, str] | None = None, **kwargs: Any) -> dict[str, Any]:
        """Write `files`, make the patch, apply it in the process; the report."""
        for name, text in (files or {}).items():
            self.write(name, text)
        return self.apply(self.patch(**kwargs))

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.process.stdin.close()
                self.process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(timeout=5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def start(root: Path, files: dict[str, str], driver: str) -> Live:
    """Write the project under `root` (a `pyproject.toml` marks it), the driver script
    `driver.py` (with the command loop appended) and run it under ``thinlink run``."""
    root.mkdir(parents=True, exist_ok=True)
    cache = root.parent / f"{root.name}-cache"
    (root / "pyproject.toml").write_text("")
    (root / "_serve.py").write_text(SERVE)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    script = root / "driver.py"
    script.write_text(textwrap.dedent(driver) + SERVE_CALL)
    command = [sys.executable, "-m", "thinlink", "run", "--cache-dir", str(cache), str(script)]
    process = subprocess.Popen(
        command,
        cwd=root,
        env=ENV,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    live = Live(root, cache, script, process)
    try:
        live.wait_ready()
    except BaseException:
        live.close()
        raise
    return live
