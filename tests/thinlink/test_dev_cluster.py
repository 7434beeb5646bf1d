"""What `thinlink dev` puts in the app's environment for its cluster workers, and how a
patch's reports are sorted for the patch line (`thinlink.dev.cluster`)."""

from __future__ import annotations

import json
import socket

from thinlink.dev import cluster


def test_the_engines_hooks_are_added_and_the_apps_own_are_kept():
    env = {
        "RAY_RUNTIME_ENV_HOOK": "mycompany.hooks.runtime_env",
        "DASK_DISTRIBUTED__CLIENT__PRELOAD": '["mycompany.preload"]',
    }
    added = cluster.environment(env, "unix:/tmp/x/dev.sock", "/proj")
    assert added["RAY_RUNTIME_ENV_HOOK"] == "hotpatch.cluster.ray_hooks.runtime_env"
    assert added["HOTPATCH_RAY_RUNTIME_ENV_HOOK"] == "mycompany.hooks.runtime_env"
    assert json.loads(added["DASK_DISTRIBUTED__CLIENT__PRELOAD"]) == [
        "mycompany.preload",
        "hotpatch.cluster.dask_plugin",
    ]
    assert added["HOTPATCH_PROJECT_ROOT"] == "/proj"
    plain = cluster.environment({}, "tcp:127.0.0.1:7000", "/proj")
    assert "HOTPATCH_RAY_RUNTIME_ENV_HOOK" not in plain
    assert plain["HOTPATCH_WORKER_ADDRESS"] == "tcp:127.0.0.1:7000"


def test_a_server_on_every_interface_is_reached_at_this_hosts_name():
    assert cluster.worker_address("tcp:0.0.0.0:7000") == f"tcp:{socket.getfqdn()}:7000"
    assert cluster.worker_address("tcp:[::]:7000") == f"tcp:{socket.getfqdn()}:7000"
    assert cluster.worker_address("tcp:10.1.2.3:7000") == "tcp:10.1.2.3:7000"


def test_reports_are_sorted_refusals_by_workers_apart_from_failures_of_the_app():
    outcome = cluster.Outcome.of(
        [
            {"pid": 1, "apply_ms": 1.0},
            {"pid": 2, "role": "ray worker", "host": "h", "apply_ms": 3.0},
            {"pid": 3, "role": "dask worker", "host": "h", "error": "work: refused: x\nmore"},
            {"pid": 4, "role": "ray worker", "left": True},
            {"pid": 5, "error": "boom"},
        ]
    )
    assert [r["pid"] for r in outcome.applied] == [1, 2]
    assert [r["pid"] for r in outcome.refused] == [3]
    assert [r["pid"] for r in outcome.failed] == [5]
    assert outcome.workers() == 1 and outcome.slowest()["pid"] == 2
    assert outcome.notes() == [
        "1 refused (dask worker pid 3 on h: work: refused: x)",
        "ray worker pid 4 left during the patch",
    ]


def test_restart_reasons_say_each_reason_once_and_who_needs_the_restart():
    reports = [
        {"pid": 1, "role": "ray worker", "host": "h", "needs_restart": "ray: app:f is run ..."},
        {"pid": 2, "role": "ray worker", "host": "h", "needs_restart": "ray: app:C.m is run ..."},
        {"pid": 3, "role": "ray worker", "host": "h", "needs_restart": "ray: app:f is run ..."},
    ]
    assert cluster.restart_reasons(reports) == (
        "ray: app:f is run ...; ray: app:C.m is run ... "
        "(in ray worker pid 1 on h, ray worker pid 2 on h, ray worker pid 3 on h)"
    )
    many = [{"pid": n, "needs_restart": f"reason {n % 5}"} for n in range(6)]
    assert cluster.restart_reasons(many) == (
        "reason 0; reason 1; reason 2; and 2 more (in pid 0, pid 1, pid 2 and 3 more)"
    )
