"""Dask distributed: a client preload (in the app) that registers a worker plugin.

`thinlink dev` names this module in the app's environment as a Dask client preload
(`DASK_DISTRIBUTED__CLIENT__PRELOAD`), so every `Client` the app makes, of a
`LocalCluster` or of a scheduler already running, runs `dask_setup` when it starts. That
registers `JoinSession` with the scheduler, which runs its `setup` on every worker, now
and on each worker that joins later (a restarted or added one). The plugin carries the
session's settings, the secret among them, through Dask's own connections.

A worker that cannot reach the session (from a host where its address does not lead to
it) says so through Dask too: an event on the `TOPIC` topic, which the app's client,
subscribed to it, turns into one line in the app's output (the dev session's terminal),
once per worker. The worker runs unpatched and keeps trying to connect.

This module imports `distributed`: only Dask loads it.
"""

from __future__ import annotations

import logging

from distributed.diagnostics.plugin import WorkerPlugin
from distributed.protocol.pickle import dumps

from .. import _client
from . import join, worker_settings

__all__ = ["TOPIC", "JoinSession", "dask_setup"]

log = logging.getLogger(__name__)
PLUGIN_NAME = "hotpatch-join-session"
TOPIC = "hotpatch-join-session"  # Dask's event topic for the workers that did not join
_CONNECT_WAIT = 3.0  # seconds; a session on this network answers in milliseconds
_said: set[tuple[str, str]] = set()  # (worker, reason) the app has said already


class JoinSession(WorkerPlugin):
    """Joins each worker to the dev session (`hotpatch.cluster.join`)."""

    name = PLUGIN_NAME

    def __init__(self, settings: dict[str, object]) -> None:
        self.settings = settings

    def setup(self, worker: object) -> None:
        # Waits a little for the connection: a worker that joins runs its first task at
        # the session's code, and one that cannot reach the session is said at once.
        if join(self.settings, "dask worker", wait=_CONNECT_WAIT):
            return
        why = _client.unreachable()
        reason = (
            f"cannot reach the dev session at {self.settings.get('address')}"
            + (f" ({why})" if why else "")
            + "; from another host: thinlink dev --address tcp:HOST:PORT --allow-remote"
        )
        address = str(getattr(worker, "address", "?"))
        worker.log_event(TOPIC, {"worker": address, "reason": reason})  # type: ignore[attr-defined]


def _say(event: tuple[float, dict]) -> None:
    """The client's handler of `TOPIC` events: one line per worker (and reason)."""
    _, message = event
    said = str(message.get("worker", "?")), str(message.get("reason", "it did not say why"))
    if said not in _said:
        _said.add(said)
        log.warning(
            "hotpatch: dask worker %s did not join the dev session and runs unpatched: %s", *said
        )


async def dask_setup(client: object) -> None:
    """Dask's preload entry point: register `JoinSession` on `client`'s cluster, and say
    in one line each which workers could not join (the app goes on, they run unpatched)."""
    settings = worker_settings()
    if settings is None:
        return  # not in a dev session
    client.subscribe_topic(TOPIC, _say)  # type: ignore[attr-defined]
    # Registered again by each session (not idempotent): a scheduler that outlives a
    # session keeps the plugin of the last one, and hands it to the workers that join
    # later; the workers of an earlier session move to this one. A second client of the
    # same app registers the same settings again, which changes nothing.
    # In the client's event loop: the scheduler's RPC, as `register_plugin` would block
    # on this very loop (and raises only the first worker's error).
    try:
        responses = await client.scheduler.register_worker_plugin(  # type: ignore[attr-defined]
            plugin=dumps(JoinSession(settings)), name=PLUGIN_NAME, idempotent=False
        )
    except Exception as exc:  # boundary: the app goes on, its workers unpatched
        log.warning("hotpatch: the dask workers did not join the dev session: %s", exc)
        return
    for worker, response in sorted((responses or {}).items()):
        if isinstance(response, dict) and response.get("status") == "error":
            _say((0.0, {"worker": worker, "reason": response.get("exception_text")}))
