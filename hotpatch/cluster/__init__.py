"""Cluster workers joining a dev session: Ray and Dask workers patched like the app's own
processes. Standard library only; the engine-facing modules are loaded by the engines.

How a worker is reached: through its engine's own channel, never by an agent of ours.
`thinlink dev` puts two settings in the app's environment, inert unless the app uses
the engine: Ray's `RAY_RUNTIME_ENV_HOOK` names `ray_hooks.runtime_env`, which Ray calls
in `ray.init()` and which adds to the job's runtime environment a worker setup hook and
the session's settings (`JOIN_VARIABLE`, in the environment of the workers only); Dask's
client preload (`DASK_DISTRIBUTED__CLIENT__PRELOAD`) names `dask_plugin`, which
registers a `WorkerPlugin` on every `Client` the app makes (the scheduler hands it to
workers that join later too). The session's secret travels only that way: in the
engine's job configuration or plugin, never on a command line.

What a worker does (`join`): it records the source of the project modules it imports
from now on (`provenance.track` on its copy of the project: the app's project root when
the worker sees it, the engine's copy, and the entries of its `sys.path` outside the
interpreter's own) and vouches for those it imported before (`provenance.adopt`),
connects to the dev server (over TCP from another host) and says hello with what it
runs: `modules`, the digest of each project module imported, and `files`, the digest
of each project file on its disk.
The session brings it up to date from there; from then on it receives every patch.
Its copy of a module takes a patch only where the source it runs is the patch's base
(else it refuses, and the session says so); a patch for a module it has not imported
waits for the import (`hotpatch._targets`).

A worker was not started by the session: it never ends itself when the session goes,
and keeps trying to reconnect to it (or moves to the next session its engine hands it).
A Ray worker also says when a patch changes code it holds only as the driver's pickled
copy, which no patch reaches (`ray_copies`): the app then needs a restart.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time

from .. import _client, _jumptable, provenance

__all__ = ["JOIN_VARIABLE", "join", "settings_from_environment", "worker_settings"]

# The environment variable, in the app's workers, with the settings of `worker_settings`.
JOIN_VARIABLE = "HOTPATCH_JOIN"
_MAX_FILES = 5000  # a project file walk stops there (a checkout with a data tree in it)
_SKIPPED_DIRS = {"__pycache__", "node_modules", "site-packages", "dist-packages", "build"}

log = logging.getLogger(__name__)
_roots: list[str] = []  # the tracked roots, in the order a module is looked for in them


def worker_settings(working_dir: bool = False) -> dict[str, object] | None:
    """Settings for the workers of an app in a dev session (from the app's environment),
    or None outside one. `working_dir`: the engine unpacks a copy of the project for each
    worker and starts it there (Ray's `working_dir`), so that is the project to track."""
    address = os.environ.get("HOTPATCH_WORKER_ADDRESS") or os.environ.get("HOTPATCH_ADDRESS")
    secret = os.environ.get("HOTPATCH_SECRET")
    if not address or not secret:
        return None
    roots = [r for r in os.environ.get("HOTPATCH_PROJECT_ROOT", "").split(os.pathsep) if r]
    return {"address": address, "secret": secret, "roots": roots, "working_dir": working_dir}


def settings_from_environment(remove: bool = True) -> dict[str, object] | None:
    """The settings `worker_settings` made, read in a worker (and, by default, taken out
    of its environment, where the project's code and its subprocesses would see them)."""
    text = os.environ.pop(JOIN_VARIABLE, None) if remove else os.environ.get(JOIN_VARIABLE)
    if not text:
        return None
    try:
        settings = json.loads(text)
    except ValueError:
        log.warning("hotpatch: %s is not JSON: not joining the dev session", JOIN_VARIABLE)
        return None
    return settings if isinstance(settings, dict) else None


def join(settings: dict[str, object], role: str, wait: float = 0.0) -> bool:
    """Join the dev session described by `settings` as a worker in `role`; True if the
    patch client runs (and, with `wait`, is connected within that many seconds: it keeps
    trying either way). Idempotent: a second call only refreshes what the hello says."""
    address, secret = settings.get("address"), settings.get("secret")
    if not isinstance(address, str) or not isinstance(secret, str):
        return False
    given = [r for r in settings.get("roots") or () if isinstance(r, str)]
    if settings.get("working_dir"):
        given.append(os.getcwd())  # the engine started the worker in its copy
    # Its import path first: where a module is found first is the copy it imports.
    roots = [*_search_roots(), *given]
    roots = list(dict.fromkeys(os.path.realpath(r) for r in roots if os.path.isdir(r)))
    _roots[:] = roots
    if roots:
        provenance.track(roots)
        for module in list(sys.modules.values()):
            file = getattr(module, "__file__", None)
            if isinstance(file, str) and provenance.tracks(file):
                provenance.adopt(module)
    started = _client.start(address, secret, role=role, about=describe)
    if not started or not wait:
        return started
    # The session answers a worker's hello with its catch-up: waited for, so that the
    # worker's first task runs the session's code (bounded: it may be busy patching).
    deadline = time.monotonic() + wait
    if not _client.wait_connected(wait):
        return False
    if _jumptable.current_build() is None:
        _client.wait_answered(max(deadline - time.monotonic(), 0.0))
    return True


def _search_roots() -> list[str]:
    """The entries of `sys.path` a worker may import its copy of the project from: not
    the interpreter's own (the standard library, site-packages), nor the current
    directory, which may be anything."""
    import sysconfig

    installed = {sys.prefix, sys.base_prefix, sys.exec_prefix}
    installed |= {p for p in sysconfig.get_paths().values() if p}
    installed = {os.path.join(os.path.realpath(p), "") for p in installed}
    # Where hotpatch itself was found (a checkout of thinlink, installed editable).
    tool = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), "")
    found = []
    for entry in sys.path:
        if entry in ("", ".") or not os.path.isdir(entry):
            continue
        real = os.path.join(os.path.realpath(entry), "")
        if not real.startswith(tuple(installed)) and real != tool:
            found.append(entry)
    return found


def describe() -> dict[str, object]:
    """What this worker runs, for its hello: `host`, `modules` ({module name: digest of
    the source it runs}, for the project modules imported) and `files` ({dotted name:
    digest}, for the project's files on disk under the tracked roots)."""
    modules: dict[str, str] = {}
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if isinstance(file, str) and provenance.tracks(file):
            digest = provenance.digest_of(file)
            if digest is not None:
                modules[name] = digest
    return {"host": socket.gethostname(), "modules": modules, "files": _file_digests()}


def _file_digests() -> dict[str, str]:
    from ..image import source_digest

    found: dict[str, str] = {}
    for root in _roots:
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if not d.startswith(".") and d not in _SKIPPED_DIRS]
            for file in files:
                if not file.endswith(".py"):
                    continue
                path = os.path.join(folder, file)
                name = _dotted(os.path.relpath(path, root))
                if name is None or name in found:
                    continue
                try:
                    with open(path, "rb") as f:
                        found[name] = source_digest(f.read())
                except OSError:
                    continue
                if len(found) >= _MAX_FILES:
                    return found
    return found


def _dotted(relative: str) -> str | None:
    parts = relative[: -len(".py")].split(os.sep)
    if parts[-1] == "__init__":
        parts.pop()
    if not parts or not all(p.isidentifier() for p in parts):
        return None
    return ".".join(parts)
