"""`thinlink dev`: run the app, watch its files, hot-patch every process on each save.

The loop: a save arrives from the watcher; the changed files are rebuilt (only their
touched segments); a patch is made from the session's current build to the new one
and sent to every connected process of the app, each of which applies it (at its
next safe point, or at once) and answers with its report. A syntax error sends
nothing; the next good save patches from the last good build. A change that cannot
be patched restarts the app (unless `--no-restart`).

Processes: the app runs in its own process group, started through `hotpatch._boot`
on the session's build image. The processes it starts find the session in their
environment (`HOTPATCH_ADDRESS`, `HOTPATCH_SECRET`, `HOTPATCH_IMAGE`, and the
`sitecustomize` directory on `PYTHONPATH`) and connect on their own; one at an older
build is brought up to date when it says hello.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import hotpatch
from hotpatch._protocol import new_secret
from hotpatch.bundle import encode

from . import console
from .build import Builder
from .config import DevSettings
from .errors import ThinlinkError
from .image import ensure_image
from .manifest import Manifest
from .patch import make_patch
from .server import Client, DevServer
from .watch import SourceFilter, backend_name, watch_changes

__all__ = ["DevSession"]

_GRACE = 5.0  # seconds between SIGTERM/SIGINT and SIGKILL
_SITE = str(Path(hotpatch.__file__).parent / "_site")


class DevSession:
    """One `thinlink dev` run: the app's processes, the server and the watcher."""

    def __init__(
        self,
        builder: Builder,
        settings: DevSettings,
        target: list[str],
        *,
        verbose: bool = False,
    ) -> None:
        self.builder = builder
        self.settings = settings
        self.target = target  # [SCRIPT, *ARGS] or ["-m", MODULE, *ARGS]
        self.verbose = verbose
        self.secret = new_secret()
        self.image = builder.cache_dir / "images" / f"session-{os.getpid()}.img"
        self.main_path = None if target[0] == "-m" else os.path.abspath(target[0])
        self.current: Manifest | None = None
        self.proc: subprocess.Popen | None = None
        self.server: DevServer | None = None
        self._lock = threading.RLock()  # held while the app is being (re)started
        self._build_lock = threading.Lock()
        self._stop = threading.Event()
        self._interrupts = 0

    # the session ------------------------------------------------------------------

    def run(self) -> int:
        """Run until the app exits or is interrupted; returns the app's exit status."""
        result = self.builder.build()
        for err in result.errors:
            console.error(str(err))
        self.current = result.manifest
        self._write_image(result.manifest)
        self.server = DevServer(self.secret, self.settings.address, on_hello=self._catch_up)
        self._banner(result.manifest)
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        if hasattr(signal, "SIGHUP"):
            previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_signal)
        watcher = threading.Thread(target=self._watch, name="thinlink-watch", daemon=True)
        threading.Thread(target=self._prewarm, args=(result.manifest,), daemon=True).start()
        try:
            self._start_app()
            watcher.start()
            return self._wait()
        finally:
            self._stop.set()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.server.close()
            self.image.unlink(missing_ok=True)

    def _wait(self) -> int:
        while True:
            proc = self.proc
            assert proc is not None
            code = proc.wait()
            with self._lock:
                if self.proc is not proc:
                    continue  # restarted: wait for the new one
            return 128 - code if code < 0 else code

    def _banner(self, manifest: Manifest) -> None:
        s = self.settings
        watched = ", ".join(str(p) for p in s.watch)
        console.info(
            f"thinlink dev: watching {watched} ({backend_name(s.poll)}; "
            f"include {' '.join(s.include)}"
            + (f"; exclude {' '.join(s.exclude)}" if s.exclude else "")
            + f"); build {manifest.build_id} of {len(manifest.modules)} modules"
        )
        if self.verbose:
            console.info(f"  patches on {self.server.address}")

    # the app's processes ---------------------------------------------------------

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            HOTPATCH_ADDRESS=self.server.address,
            HOTPATCH_SECRET=self.secret.hex(),
            HOTPATCH_IMAGE=str(self.image),
            HOTPATCH_ENABLED="1",
        )
        package_root = str(Path(hotpatch.__file__).parent.parent)
        paths = [_SITE, package_root, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        return env

    def _start_app(self) -> None:
        command = [sys.executable, "-m", "hotpatch._boot", "--image", str(self.image), *self.target]
        self.proc = subprocess.Popen(command, env=self._environment(), start_new_session=True)

    def _signal_app(self, sig: int) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass

    def _stop_app(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        self._signal_app(signal.SIGTERM)
        try:
            proc.wait(timeout=_GRACE)
        except subprocess.TimeoutExpired:
            self._signal_app(signal.SIGKILL)
            proc.wait()

    def restart(self, reason: str) -> None:
        console.warning(f"{_now()} restarting: {reason}")
        with self._lock:
            self._stop_app()
            self._start_app()

    def _on_signal(self, sig: int, frame: object) -> None:
        if hasattr(signal, "SIGHUP") and sig == signal.SIGHUP:
            threading.Thread(
                target=self.restart, args=("restart asked for (SIGHUP)",), daemon=True
            ).start()
            return
        self._interrupts += 1
        if self._interrupts > 1:
            self._signal_app(signal.SIGKILL)  # a second Ctrl-C: no more waiting
            return
        self._stop.set()
        self._signal_app(sig)
        threading.Timer(_GRACE, self._signal_app, args=(signal.SIGKILL,)).start()

    # patches -----------------------------------------------------------------------

    def _watch(self) -> None:
        source_filter = SourceFilter(self.settings.include, self.settings.exclude)
        for changed in watch_changes(
            self.settings.watch, source_filter, self._stop, poll=self.settings.poll
        ):
            if self._stop.is_set():
                return
            try:
                self.on_change(changed)
            except ThinlinkError as exc:
                console.error(f"{_now()} {exc}")
            except Exception as exc:  # boundary: the session goes on
                console.error(f"{_now()} internal error while patching: {exc!r}")

    def on_change(self, paths: set[str]) -> None:
        """Rebuild `paths`, and patch (or restart) the app. Public for tests."""
        started = time.perf_counter()
        with self._build_lock:
            if any(os.path.exists(p) and os.path.getsize(p) == 0 for p in paths):
                return  # a file caught empty mid-save: its next write comes with an event
            result = self.builder.build(changed=paths)
            if not result.ok:
                for err in result.errors:
                    console.error(f"{_now()} {err}")
                return
            old, new = self.current, result.manifest
            assert old is not None
            if new.build_id == old.build_id:
                return
            made = make_patch(self.builder.cache, old, new, self.main_path)
            built = time.perf_counter()
            bundle = made.bundle
            for warning in bundle.warnings:
                console.warning(f"{_now()} warning: {warning}")
            if bundle.needs_restart:
                self.current = new
                self._write_image(new)
                if self.settings.restart:
                    self.restart(bundle.needs_restart)
                else:
                    console.warning(
                        f"{_now()} needs a restart (not restarting): {bundle.needs_restart}"
                    )
                return
            if not bundle.modules:
                self.current = new
                self._write_image(new)
                return
            reports = self.server.broadcast(encode(bundle))
            done = time.perf_counter()
            failed = [r for r in reports if r.get("error") or r.get("needs_restart")]
            if failed and any(r.get("error") for r in failed):
                for report in failed:
                    console.error(
                        f"{_now()} patch failed in pid {report.get('pid')}: {report.get('error')}"
                    )
                    if report.get("traceback") and self.verbose:
                        console.error(report["traceback"])
                return  # rolled back there: the processes stay at the old build
            self.current = new
            self._print_patch(made, reports, started, built, done)
            threading.Thread(target=self._write_image, args=(new,), daemon=True).start()
            restart = [r["needs_restart"] for r in reports if r.get("needs_restart")]
            if restart and self.settings.restart:
                self.restart(restart[0])

    def _print_patch(
        self, made, reports: list[dict], started: float, built: float, done: float
    ) -> None:  # noqa: ANN001
        names = [c.unit.qualname for p in made.plans for c in p.code]
        names += [
            f"{', '.join(r.statement.defines) or 'line ' + str(r.statement.lineno)}"
            for p in made.plans
            for r in p.reruns
        ]
        shown = ", ".join(dict.fromkeys(names)) or "no functions"
        if len(shown) > 70:
            shown = shown[:67] + "..."
        apply_ms = max((r.get("apply_ms", 0.0) for r in reports), default=0.0)
        total = (done - started) * 1000
        rebuild = (built - started) * 1000
        send = max(total - rebuild - apply_ms, 0.0)
        connected = len(self.server.connected())
        console.success(
            f"{_now()} patched {shown}: {len(reports)}/{connected} processes in {total:.1f} ms "
            f"(rebuild {rebuild:.1f}, send {send:.1f}, apply {apply_ms:.1f})"
        )
        for report in reports:
            for warning in report.get("warnings", []):
                if self.verbose:
                    console.warning(f"  pid {report.get('pid')}: {warning}")

    def _catch_up(self, client: Client) -> None:
        """Bring a process that joined at an older build up to the current one."""
        with self._build_lock:
            current = self.current
            if current is None or client.build in (None, current.build_id):
                return
            try:
                old = self.builder.store.load(client.build)
                made = make_patch(self.builder.cache, old, current, self.main_path)
            except ThinlinkError as exc:
                console.warning(f"{_now()} pid {client.pid} runs build {client.build}: {exc}")
                return
        if made.bundle.needs_restart:
            reason = made.bundle.needs_restart
            console.warning(f"{_now()} pid {client.pid} is behind and needs a restart: {reason}")
            return
        report = self.server.send(client, encode(made.bundle))
        if report and report.get("error"):
            console.error(f"{_now()} catching up pid {client.pid} failed: {report['error']}")
        elif self.verbose:
            console.info(f"{_now()} pid {client.pid} caught up to {current.build_id}")

    def _prewarm(self, manifest: Manifest) -> None:
        """Analyse every module now, so the first save of each is as fast as the next."""
        from .analysis import analyze_module
        from .rebuild import decode

        cache = self.builder.cache
        for entry in manifest.modules:
            if self._stop.is_set():
                return
            record = cache.get_record(entry.record or "")
            source = cache.get(cache.source_key(entry.digest or ""))
            if record is None or source is None:
                continue
            try:
                with self._build_lock:  # one user of the cache's connection at a time
                    analyze_module(cache, record, decode(source, entry.path))
            except (ThinlinkError, SyntaxError):
                continue

    def _write_image(self, manifest: Manifest) -> None:
        # The session image is a link to the build's image, replaced atomically, so a
        # process starting now reads one whole build or the other.
        built = ensure_image(self.builder.cache, manifest)
        tmp = self.image.with_name(f".{self.image.name}.{threading.get_ident()}")
        tmp.unlink(missing_ok=True)
        os.symlink(built, tmp)
        os.replace(tmp, self.image)


def _now() -> str:
    return time.strftime("%H:%M:%S")
