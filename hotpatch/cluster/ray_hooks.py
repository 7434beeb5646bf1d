"""Ray: the runtime environment hook (in the app) and the worker setup hook (in workers).

`runtime_env` is named by `RAY_RUNTIME_ENV_HOOK` in the app's environment (`thinlink dev`
sets it), so `ray.init()` calls it with the job's runtime environment, whether it starts
a local cluster or joins one already running; it adds the session's settings to the
workers' environment variables and `setup_worker` as their setup hook (keeping a hook of
the app's own: both run). A hook that was already in `RAY_RUNTIME_ENV_HOOK` before the
session is called first (`HOTPATCH_RAY_RUNTIME_ENV_HOOK`).

`setup_worker` runs in every worker process of the job before it runs a task. Besides
joining the session it asks Ray to load task functions and actor classes from the
worker's own modules rather than from the copies the driver pickled by value when it
first used them: those copies are no module's, so no patch would reach them, and a
worker started after an edit would get the pickled, older code. (Ray names a function of
the driver's script by the script's file name, which a worker on the same host imports.)
A function or class that cannot be found in a module (the script of a driver started
with `-m`, a function defined inside another) still comes pickled from the driver; a
patch that changes one in a worker that holds it needs a restart (`ray_copies`).

Ray is imported only by these functions, which only Ray calls.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from collections.abc import Callable
from typing import Any

from . import JOIN_VARIABLE, join, settings_from_environment, worker_settings

__all__ = ["SetupChain", "runtime_env", "setup_worker"]

log = logging.getLogger(__name__)
_SETUP_HOOK = f"{__name__}.setup_worker"
_JOIN_WAIT = 3.0  # seconds a starting worker waits for the session (milliseconds, usually)
_watching = False  # `PickledCopies` registered in this worker


def runtime_env(env: dict[str, Any] | None) -> dict[str, Any]:
    """Ray's runtime environment hook: the job's runtime environment, with the dev
    session's worker setup added (unchanged outside a dev session)."""
    previous = os.environ.get("HOTPATCH_RAY_RUNTIME_ENV_HOOK")
    if previous:
        env = _load(previous)(env)
    env = dict(env or {})
    settings = worker_settings(working_dir=bool(env.get("working_dir")))
    if settings is None:
        return env
    variables = dict(env.get("env_vars") or {})
    variables[JOIN_VARIABLE] = json.dumps(settings)
    env["env_vars"] = variables
    own = env.get("worker_process_setup_hook")
    env["worker_process_setup_hook"] = _SETUP_HOOK if own is None else SetupChain(own)
    return env


def setup_worker() -> None:
    """Ray's worker setup hook: join the dev session, and load code from local modules."""
    settings = settings_from_environment()
    if settings is None:
        return
    try:
        _load_code_from_modules()
    except (ImportError, AttributeError) as exc:  # another Ray: say what it means
        log.warning(
            "hotpatch: this Ray cannot load task code from the worker's modules (%s); "
            "remote functions and actors keep the code they were first sent with",
            exc,
        )
    _watch_pickled_copies()
    join(settings, "ray worker", wait=_JOIN_WAIT)


def _watch_pickled_copies() -> None:
    """Have a patch that changes code this worker runs as a copy pickled by the driver
    say so, and need a restart (`ray_copies`): once per worker process."""
    global _watching
    if _watching:
        return
    from ..adapters import register
    from . import ray_copies

    _record_functions_made_by_value()
    register(ray_copies.PickledCopies)
    _watching = True


def _record_functions_made_by_value() -> None:
    """Hand every function Ray's pickle makes by value to `ray_copies.record`: its
    `_make_function`, which a pickle names, is wrapped under the same name (so a pickle
    made here names it as before, and loads anywhere). Another Ray: nothing done, and a
    patch looks for the copies among all the worker's objects."""
    from . import ray_copies

    try:
        module = importlib.import_module("ray.cloudpickle.cloudpickle")
    except ImportError:
        return
    make = getattr(module, "_make_function", None)
    if not callable(make) or getattr(make, "__wrapped__", None) is not None:
        return

    def _make_function(*args: Any, **kwargs: Any) -> object:
        function = make(*args, **kwargs)
        ray_copies.record(function)
        return function

    _make_function.__module__ = make.__module__
    _make_function.__name__ = make.__name__
    _make_function.__qualname__ = make.__qualname__
    _make_function.__wrapped__ = make  # type: ignore[attr-defined]
    module._make_function = _make_function  # type: ignore[attr-defined]
    ray_copies.recording()


def _load_code_from_modules() -> None:
    """Have this worker take remote functions and actor classes from its modules.

    Ray does so for a job with a `code_search_path`, by a flag it sets on the worker at
    its first task; the flag is kept on here. A name in the driver's script, or in a
    module this worker cannot import, comes from the driver's pickle as before (Ray's
    own fallback, which the lookup's errors would otherwise stop)."""
    from ray._private.worker import global_worker

    def keep_on(
        flag: bool, _set: Callable[[bool], None] = global_worker.set_load_code_from_local
    ) -> None:
        _set(True)

    manager = global_worker.function_actor_manager
    load = manager.load_function_or_class_from_local

    def load_from_module(module_name: str, name: str) -> object:
        if module_name == "__main__":
            return None  # here that is Ray's worker script, not the driver's
        try:
            return load(module_name, name)
        except Exception:  # boundary: any import error means "not here", as in Ray
            return None

    global_worker.set_load_code_from_local = keep_on
    manager.load_function_or_class_from_local = load_from_module
    keep_on(True)


class SetupChain:
    """A worker setup hook that runs ours, then the app's own (a function, or the
    dotted name of one). Ray pickles it to the workers by reference."""

    def __init__(self, own: Callable[[], object] | str) -> None:
        self.own = own
        self.__name__ = "hotpatch_setup_chain"  # Ray names the hook by it

    def __call__(self) -> object:
        setup_worker()
        own = _load(self.own) if isinstance(self.own, str) else self.own
        return own()


def _load(dotted: str) -> Callable[..., Any]:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)
