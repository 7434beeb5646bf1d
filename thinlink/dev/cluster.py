"""The dev session's side of cluster workers (see `hotpatch.cluster`).

- `environment`: what the app's environment gets so that its Ray and Dask workers join
  the session, through each engine's own hooks (inert for an app that uses neither);
- `catch_up`: the patch that brings a worker that joins from the source it runs (its
  hello says, module by module) to the session's current build;
- `Outcome`: a patch's reports sorted into applied, refused (by cluster workers: the app
  goes on without them, and the patch line says why) and failed (the app's own
  processes), and the processes that left meanwhile.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field

from thinlink.build.cache import Cache
from thinlink.build.manifest import Manifest, ModuleEntry
from thinlink.errors import ThinlinkError
from thinlink.patches.make import PatchResult, make_patch

__all__ = [
    "CatchUp",
    "Outcome",
    "catch_up",
    "describe",
    "environment",
    "restart_reasons",
    "worker_address",
]

_RAY_HOOK = "hotpatch.cluster.ray_hooks.runtime_env"
_DASK_PRELOAD = "hotpatch.cluster.dask_plugin"
_DASK_PRELOAD_VARIABLE = "DASK_DISTRIBUTED__CLIENT__PRELOAD"


def environment(env: dict[str, str], address: str, project_root: str) -> dict[str, str]:
    """The variables to add to the app's environment `env` (its current one)."""
    added = {
        "HOTPATCH_WORKER_ADDRESS": worker_address(address),
        "HOTPATCH_PROJECT_ROOT": project_root,
        "RAY_RUNTIME_ENV_HOOK": _RAY_HOOK,
    }
    previous = env.get("RAY_RUNTIME_ENV_HOOK")
    if previous and previous != _RAY_HOOK:
        added["HOTPATCH_RAY_RUNTIME_ENV_HOOK"] = previous  # called first by ours
    added[_DASK_PRELOAD_VARIABLE] = json.dumps(_preloads(env.get(_DASK_PRELOAD_VARIABLE)))
    return added


def _preloads(current: str | None) -> list[str]:
    # Dask reads the variable as a Python literal (a list), or else as one name.
    preloads: list[str] = []
    if current:
        try:
            value = json.loads(current)
        except ValueError:
            value = current
        preloads = [str(v) for v in value] if isinstance(value, list) else [str(value)]
    return [*dict.fromkeys([*preloads, _DASK_PRELOAD])]


def worker_address(address: str) -> str:
    """The server's address as a worker on another host reaches it: a server bound to
    every interface (0.0.0.0, ::) is reached at this host's name."""
    if not address.startswith("tcp:"):
        return address
    host, _, port = address.removeprefix("tcp:").rpartition(":")
    if host.strip("[]") in ("0.0.0.0", "::"):
        return f"tcp:{socket.getfqdn()}:{port}"
    return address


@dataclass
class CatchUp:
    """What brings a joining worker to the current build: the patch (None when it runs
    it already, or nothing can be made), and the modules whose source the session never
    built (the worker refuses their patches until it restarts)."""

    patch: PatchResult | None
    unknown: list[str] = field(default_factory=list)


def catch_up(
    cache: Cache, current: Manifest, modules: dict[str, str], files: dict[str, str], pid: int
) -> CatchUp:
    """The catch-up of a worker running `modules` (imported) and having `files` on disk
    ({module name: source digest}, names as the worker sees them)."""
    entries = []
    unknown = []
    for entry in current.modules:
        digest = _match(entry.name, modules) or _match(entry.name, files)
        if digest is None or digest == entry.digest:
            entries.append(entry)
            continue
        record = Cache.module_key("record", entry.path, digest)
        if cache.get_record(record) is None or cache.source_text(digest, entry.path) is None:
            unknown.append(entry.name)
            entries.append(entry)  # nothing sent for it: its patches will be refused
            continue
        entries.append(ModuleEntry(entry.name, entry.path, digest, record))
    if all(a is b for a, b in zip(entries, current.modules, strict=True)):
        return CatchUp(None, unknown)
    runs = Manifest(f"worker-{pid}", current.root, tuple(entries))
    try:
        made = make_patch(cache, runs, current)
    except ThinlinkError:
        return CatchUp(None, unknown)
    return CatchUp(made, unknown)


def _match(name: str, digests: dict[str, str]) -> str | None:
    """The digest for the build's module `name` in a worker's {name: digest}: the same
    name, else the longest dotted tail of it (the worker imports `tasks` where the build,
    rooted higher, says `app.tasks`)."""
    if name in digests:
        return digests[name]
    parts = name.split(".")
    for start in range(1, len(parts)):
        tail = ".".join(parts[start:])
        if tail in digests:
            return digests[tail]
    return None


@dataclass
class Outcome:
    """A patch's reports, sorted."""

    applied: list[dict] = field(default_factory=list)
    refused: list[dict] = field(default_factory=list)  # cluster workers that said no
    failed: list[dict] = field(default_factory=list)  # the app's own processes
    left: list[dict] = field(default_factory=list)
    needs_restart: list[dict] = field(default_factory=list)

    @classmethod
    def of(cls, reports: list[dict]) -> Outcome:
        outcome = cls()
        for report in reports:
            if report.get("left"):
                outcome.left.append(report)
            elif report.get("error"):
                (outcome.refused if report.get("role") else outcome.failed).append(report)
            elif report.get("needs_restart"):
                outcome.needs_restart.append(report)
            else:
                outcome.applied.append(report)
        return outcome

    @property
    def answered(self) -> int:
        """Processes that answered (applied, refused, failed or need a restart)."""
        return len(self.applied) + len(self.refused) + len(self.failed) + len(self.needs_restart)

    def workers(self) -> int:
        return sum(1 for r in self.applied if r.get("role"))

    def slowest(self) -> dict | None:
        """The applied report that took longest (its apply time)."""
        return max(self.applied, key=lambda r: r.get("apply_ms", 0.0), default=None)

    def notes(self) -> list[str]:
        """The clauses the patch line adds: refusals (with the first reason) and leavers."""
        out = []
        if self.refused:
            first = self.refused[0]
            reason = str(first.get("error", "")).splitlines()[0]
            out.append(f"{len(self.refused)} refused ({describe(first)}: {reason})")
        if self.left:
            named = ", ".join(describe(r) for r in self.left[:3])
            more = f" and {len(self.left) - 3} more" if len(self.left) > 3 else ""
            out.append(f"{named}{more} left during the patch")
        return out


def restart_reasons(reports: list[dict]) -> str:
    """Why the processes of `reports` need a restart: each reason once (a few), then who."""
    reasons = list(dict.fromkeys(str(r["needs_restart"]) for r in reports))
    said = "; ".join(reasons[:3]) + (f"; and {len(reasons) - 3} more" if len(reasons) > 3 else "")
    who = ", ".join(describe(r) for r in reports[:3])
    who += f" and {len(reports) - 3} more" if len(reports) > 3 else ""
    return f"{said} (in {who})"


def describe(report: dict) -> str:
    """Who sent `report`: "pid 12", "ray worker pid 12 on host"."""
    role, host = report.get("role"), report.get("host")
    where = f" on {host}" if host else ""
    return f"{role} pid {report.get('pid')}{where}" if role else f"pid {report.get('pid')}"
