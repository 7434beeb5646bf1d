"""Dask distributed: a client preload (in the app) that registers a worker plugin.

`thinlink dev` names this module in the app's environment as a Dask client preload
(`DASK_DISTRIBUTED__CLIENT__PRELOAD`), so every `Client` the app makes, of a
`LocalCluster` or of a scheduler already running, runs `dask_setup` when it starts. That
registers `JoinSession` with the scheduler, which runs its `setup` on every worker, now
and on each worker that joins later (a restarted or added one). The plugin carries the
session's settings, the secret among them, through Dask's own connections.

This module imports `distributed`: only Dask loads it.
"""

from __future__ import annotations

import logging

from distributed.diagnostics.plugin import WorkerPlugin

from . import join, worker_settings

__all__ = ["JoinSession", "dask_setup"]

log = logging.getLogger(__name__)
PLUGIN_NAME = "hotpatch-join-session"
_CONNECT_WAIT = 3.0  # seconds; a session on this network answers in milliseconds


class JoinSession(WorkerPlugin):
    """Joins each worker to the dev session (`hotpatch.cluster.join`)."""

    name = PLUGIN_NAME
    idempotent = True  # a second client of the same app does not register it again

    def __init__(self, settings: dict[str, object]) -> None:
        self.settings = settings

    def setup(self, worker: object) -> None:
        # Waits a little for the connection, so that a worker that cannot reach the
        # session fails its registration, which the app's side reports (it keeps trying).
        if not join(self.settings, "dask worker", wait=_CONNECT_WAIT):
            raise ConnectionError(
                f"cannot reach the dev session at {self.settings.get('address')} "
                "(from another host: thinlink dev --address tcp:HOST:PORT --allow-remote)"
            )


async def dask_setup(client: object) -> None:
    """Dask's preload entry point: register `JoinSession` on `client`'s cluster."""
    settings = worker_settings()
    if settings is None:
        return  # not in a dev session
    # In the client's event loop: the private coroutine, as `register_plugin` would
    # block on this very loop.
    try:
        await client._register_worker_plugin(  # type: ignore[attr-defined]
            plugin=JoinSession(settings), name=PLUGIN_NAME, idempotent=True
        )
    except Exception as exc:  # boundary: the app goes on, its workers unpatched
        log.warning("hotpatch: a dask worker did not join the dev session: %s", exc)
