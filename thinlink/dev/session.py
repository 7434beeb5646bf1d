"""`thinlink dev`: run the app, watch its files, hot-patch every process on each save.

The loop: a save arrives from the watcher; the changed files are rebuilt (only their
touched segments); a patch is made from the session's current build to the new one
and sent to every connected process of the app, each of which applies it (at its
next safe point, or at once) and answers with its report. A syntax error sends
nothing; the next good save patches from the last good build. A change that cannot
be patched restarts the app (unless `--no-restart`).

Processes: the app runs in its own process group, started through `hotpatch.boot`
on the session's build image. The processes it starts find the session in their
environment (`HOTPATCH_ADDRESS`, `HOTPATCH_SECRET`, `HOTPATCH_IMAGE`, and the
`sitecustomize` directory on `PYTHONPATH`) and connect on their own; one at an older
build is brought up to date when it says hello. They all go down with the session, even
one killed outright (`HOTPATCH_LIFELINE`, see `hotpatch.lifeline`): the app is always
started from the same thread (`Launcher`), and the session's private directory
(`RunDir`) left by a killed session is removed by the next one.

Every thread of the session other than the main one reports what goes wrong in one
line and carries on (a full disk while writing the session image, the cache or the
watcher failing): the app keeps running on its last good code.

Ray and Dask workers join through their engine (`cluster`, `hotpatch.cluster`), run
their own copy of the project, and are brought up to date from the source their hello
says they run.
"""

from __future__ import annotations

import gc
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import hotpatch
from hotpatch import boot, lifeline
from hotpatch.bundle import Bundle, encode
from hotpatch.gcpause import paused as gc_paused
from hotpatch.protocol import new_secret
from thinlink.build.builder import Builder, BuildResult
from thinlink.build.image import ensure_image
from thinlink.build.manifest import Manifest
from thinlink.cli import console
from thinlink.config import DevSettings
from thinlink.errors import ThinlinkError
from thinlink.patches.make import make_patch

from . import cluster
from .launcher import Launcher
from .rundir import RunDir
from .server import Client, DevServer
from .watch import BURST_QUIET, QUIET, SETTLE, SourceFilter, backend_name, watch_changes
from .watch import settle as _settle

__all__ = ["DevSession"]

_GRACE = 5.0  # seconds between SIGTERM/SIGINT and SIGKILL
_SETTLE = SETTLE  # seconds a file that looks half-written gets to be completed
_SITE = boot.SITE_DIR


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
        self.rundir: RunDir | None = None  # made when the session runs
        self.launcher = Launcher()
        self.main_path = None if target[0] == "-m" else os.path.abspath(target[0])
        self.current: Manifest | None = None  # the build the app's processes run
        self.latest: Manifest | None = None  # the last good build of the files
        self.proc: subprocess.Popen | None = None
        self.server: DevServer | None = None
        self._lock = threading.RLock()  # held while the app is being (re)started
        self._build_lock = threading.RLock()  # held while building and patching
        self._stop = threading.Event()
        self._interrupts = 0
        self._kill_timer: threading.Timer | None = None
        self._changes: queue.Queue[set[str]] = queue.Queue()  # from the watcher thread
        self._last_change = 0.0  # time.monotonic() of the watcher's latest batch

    # the session ------------------------------------------------------------------

    @property
    def image(self) -> Path:
        """The link to the build image the app's processes start from."""
        assert self.rundir is not None
        return self.rundir.image

    def run(self) -> int:
        """Run until the app exits or is interrupted; returns the app's exit status."""
        stale = RunDir.clean_stale()
        if stale and self.verbose:
            console.info(f"  removed {len(stale)} directories of sessions that were killed")
        self.rundir = RunDir.create()
        try:
            return self._run()
        finally:
            self.rundir.remove()

    def _run(self) -> int:
        result = self.builder.build()
        for err in result.errors:
            console.error(str(err))
        self.current = self.latest = result.manifest
        # From now on a save's records reach the disk after its patch has gone out.
        self.builder.write_behind()
        if self.main_path is None:  # -m MODULE: its file is the one that runs as __main__
            modules = result.manifest.by_name()
            found = modules.get(f"{self.target[1]}.__main__") or modules.get(self.target[1])
            self.main_path = found.path if found is not None else None
        if not self._write_image(result.manifest):
            raise ThinlinkError(f"could not write the session image {self.image}")
        gc.freeze()  # the build's records live as long as the session: never scan them
        self.server = DevServer(
            self.secret, self.settings.address, on_hello=self._catch_up, directory=self.rundir
        )
        self._banner(result.manifest)
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        if hasattr(signal, "SIGHUP"):
            previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_signal)
        self._background("preparing the first save", self._prewarm, result.manifest)
        if self.settings.keys and _interactive():
            self._background("reading keys", self._read_keys)
        try:
            self._start_app()
            self._background("watching files", self._watch)
            return self._wait()
        finally:
            self._stop.set()
            if self._kill_timer is not None:
                self._kill_timer.cancel()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.server.close()
            with self._build_lock:
                self._flush()

    def _wait(self) -> int:
        while True:
            proc = self.proc
            assert proc is not None
            try:
                # Waited for in short steps: a signal the kernel hands to another of our
                # threads only runs its handler once this thread runs Python again.
                code = proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                continue
            with self._lock:
                if self.proc is not proc:
                    continue  # restarted: wait for the new one
                self._stop.set()  # the app is gone: nothing may start it again now
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
        if self.settings.keys:
            if _interactive():
                console.info("  type rs + Enter to restart the app")
            else:
                console.warning("  keys: stdin is not a terminal, rs + Enter is off")
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
            HOTPATCH_LIFELINE=lifeline.session_marker(),
        )
        package_root = str(Path(hotpatch.__file__).parent.parent)
        paths = [_SITE, package_root, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        env.update(cluster.environment(env, self.server.address, str(self.builder.root)))
        return env

    def _start_app(self) -> None:
        # A session of its own: the app leads it, and `_stop_app` can reach every process
        # it starts; from the launcher's thread, which lives as long as this process.
        command = [sys.executable, "-m", "hotpatch.boot", "--image", str(self.image), *self.target]
        self.proc = self.launcher.popen(command, env=self._environment(), start_new_session=True)

    def _signal_app(self, sig: int) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass

    def _stop_app(self) -> None:
        """Stop the app's process group: SIGTERM, then SIGKILL for what is left after
        `_GRACE` seconds. The processes the app started go too (pool workers, servers'
        children), so none of them lingers at the old build after a restart."""
        proc = self.proc
        if proc is None:
            return
        deadline = time.monotonic() + _GRACE
        _kill_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=_GRACE)
        except subprocess.TimeoutExpired:
            pass
        # The others had the signal as long as the app: a second more, then no mercy
        # (bounded, as a zombie that nobody reaps also counts as alive here).
        deadline = min(deadline, time.monotonic() + 1.0)
        while _kill_group(proc.pid, 0) and time.monotonic() < deadline:
            time.sleep(0.01)
        _kill_group(proc.pid, signal.SIGKILL)
        proc.wait()

    def restart(self, reason: str) -> None:
        """Stop the app and start it again, at the latest good build."""
        with self._build_lock, self._lock:
            if self._stop.is_set():
                return  # the session is ending
            console.warning(f"{_now()} restarting: {reason}")
            self._stop_app()
            if self._stop.is_set():
                return  # interrupted meanwhile: the session ends with this app
            if self.latest is not self.current and self._write_image(self.latest):
                self.current = self.latest
            elif self.latest is not self.current:
                console.warning(
                    f"{_now()} the app restarts at build {self.current.build_id}; the next "
                    "save patches it"
                )
            self._start_app()

    def _read_keys(self) -> None:
        """Restart by hand from the terminal (`--keys`): `rs` + Enter, as with nodemon.
        Lines typed are read here, so an app reading the terminal would miss them."""
        for line in sys.stdin:
            if self._stop.is_set():
                return
            if line.strip() == "rs":
                self.restart("restart asked for (rs)")

    def _on_signal(self, sig: int, frame: object) -> None:
        if hasattr(signal, "SIGHUP") and sig == signal.SIGHUP:
            self._background("restarting", self.restart, "restart asked for (SIGHUP)")
            return
        self._interrupts += 1
        if self._interrupts > 1:
            self._signal_app(signal.SIGKILL)  # a second Ctrl-C: no more waiting
            return
        self._stop.set()
        name = "Ctrl-C" if sig == signal.SIGINT else signal.Signals(sig).name
        console.warning(f"{_now()} stopping the app ({name} again to force it)")
        self._signal_app(sig)
        # A daemon: once the app has gone, nothing must keep this process alive.
        self._kill_timer = threading.Timer(_GRACE, self._signal_app, args=(signal.SIGKILL,))
        self._kill_timer.daemon = True
        self._kill_timer.start()

    # patches -----------------------------------------------------------------------

    def _watch(self) -> None:
        """The watcher thread: hands each batch of changes to the patcher thread (so
        that the watcher is read again at once, and saves arriving while a patch is
        being built are waiting for it when the build ends: see `on_change`)."""
        s = self.settings
        source_filter = SourceFilter(s.include, s.exclude, roots=s.watch)
        self._background("patching", self._patch_loop)
        for changed in watch_changes(s.watch, source_filter, self._stop, poll=s.poll):
            if self._stop.is_set():
                return
            self._last_change = time.monotonic()
            self._changes.put(changed)

    def _patch_loop(self) -> None:
        while not self._stop.is_set():
            try:
                changed = self._changes.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self.on_change(changed | self._take_changes())
            except ThinlinkError as exc:
                console.error(f"{_now()} {exc}")
            except Exception as exc:  # boundary: the session goes on
                console.error(f"{_now()} internal error while patching: {exc!r}")

    def _take_changes(self) -> set[str]:
        """Every change waiting (without waiting for one)."""
        taken: set[str] = set()
        while True:
            try:
                taken |= self._changes.get_nowait()
            except queue.Empty:
                return taken

    def on_change(self, paths: set[str]) -> None:
        """Rebuild `paths`, and patch (or restart) the app. Public for tests."""
        started = time.perf_counter()
        # No collection of the session's heap (records of every module) from a save to its
        # patch sent: it would be most of the patch's latency.
        with self._build_lock, gc_paused():
            try:
                self._patch(paths, started)
            finally:
                self._flush()

    def _patch(self, paths: set[str], started: float) -> None:
        """Build, make the patch, send it, and take in the reports."""
        result, paths = self._rebuild(paths)
        # Only the files saved now can stop a patch: one that was broken before
        # (reported at start) is left as it was, and the others still go live.
        changed = {os.path.abspath(p) for p in paths}
        errors = [e for e in result.errors if getattr(e, "path", None) in changed]
        if errors:
            for err in errors:
                console.error(f"{_now()} {err}")
            return
        old, new = self.current, result.manifest
        assert old is not None
        self.latest = new
        if new.build_id == old.build_id:
            return  # saved as it was, or back to what the app runs
        made = make_patch(self.builder.cache, old, new, self.main_path)
        built = time.perf_counter()
        for warning in made.bundle.warnings:
            console.warning(f"{_now()} warning: {warning}")
        if made.bundle.needs_restart:
            # Not applied anywhere: the app stays at `current`, and later patches
            # start from there (and need the restart too) until it restarts.
            self._needs_restart(made.bundle.needs_restart)
            return
        # Sent even when no code changed (a comment at the end of a file): every
        # process must move to the new build, which later patches start from.
        reports = self.server.broadcast(encode(made.bundle), base=old.build_id)
        done = time.perf_counter()
        if self._settle_reports(reports, new):
            if made.bundle.modules or self.verbose:
                self._print_patch(made, reports, started, built, done)

    def _flush(self) -> None:
        """Write what the last build kept in memory: records and code to the cache, then
        the manifest and refs that point at them."""
        try:
            self.builder.flush()
        except Exception as exc:  # boundary: a full disk must not stop the session
            console.warning(f"{_now()} could not write to the cache: {exc}")

    def _rebuild(self, paths: set[str]) -> tuple[BuildResult, set[str]]:
        """Build the saved files; saves that arrive meanwhile (the rest of a burst, a
        `git checkout` the watcher saw in two parts) join in: one patch for them all."""
        if self.verbose:
            console.info(f"{_now()} changed: {', '.join(sorted(paths))}")
        _settle(paths, was_whole=self._was_whole)
        result = self.builder.build(changed=paths)
        deadline = time.monotonic() + _SETTLE
        while more := self._rest_of_burst(paths, deadline):
            if self.verbose and more - paths:  # a save comes as several events: said once
                console.info(f"{_now()} changed: {', '.join(sorted(more - paths))}")
            paths = paths | more
            _settle(more, was_whole=self._was_whole)
            result = self.builder.build(changed=paths)
        return result, paths

    def _rest_of_burst(self, paths: set[str], deadline: float) -> set[str]:
        """Saves that belong to the burst `paths` began: those waiting, and those that
        arrive before the watcher has been quiet for `QUIET` seconds (`BURST_QUIET`
        once several files changed), or `deadline`. Empty when the burst is over."""
        quiet = QUIET if len(paths) < 2 else BURST_QUIET
        if more := self._take_changes():
            return more
        wait = min(self._last_change + quiet, deadline) - time.monotonic()
        if wait <= 0:
            return set()
        try:
            return self._changes.get(timeout=wait) | self._take_changes()
        except queue.Empty:
            return set()

    def _was_whole(self, path: str) -> bool:
        """The version of `path` the last build read ended with a newline (so one that
        does not now is more likely a save caught half way than the file's style)."""
        latest = self.latest
        entry = None if latest is None else latest.by_path().get(os.path.abspath(path))
        if entry is None or entry.digest is None:
            return False
        source = self.builder.cache.get(self.builder.cache.source_key(entry.digest))
        return bool(source) and source.endswith((b"\n", b"\r"))

    def _settle_reports(self, reports: list[dict], new: Manifest) -> bool:
        """Take in the processes' reports of a patch to `new`; True if every process of
        the app applied it. Where none did, the app stays at its build; where some did,
        only a restart brings the processes to one build again. Cluster workers that
        refuse (they run other source) are reported and left out: the app goes on."""
        outcome = cluster.Outcome.of(reports)
        for report in outcome.failed:
            console.error(f"{_now()} patch failed in pid {report.get('pid')}: {report['error']}")
            if report.get("traceback") and self.verbose:
                console.error(report["traceback"])
        for report in outcome.refused:
            console.warning(
                f"{_now()} {cluster.describe(report)} refused the patch: {report['error']}"
            )
        applied = len(outcome.applied)
        if outcome.answered and not applied:
            if outcome.needs_restart and not outcome.failed:
                self._needs_restart(outcome.needs_restart[0]["needs_restart"])
            return False  # rolled back or refused everywhere: nothing changed
        self.current = new
        self._background("writing the session image", self._write_image, new)
        if outcome.failed or outcome.needs_restart:
            own = outcome.answered - len(outcome.refused)
            reason = f"the patch was applied in {applied} of {own} processes only"
            if outcome.needs_restart:  # why the others could not take it, said first
                reason = f"{cluster.restart_reasons(outcome.needs_restart)}; {reason}"
            self._needs_restart(reason)
            return False
        return True

    def _needs_restart(self, reason: str) -> None:
        if self.settings.restart:
            self.restart(reason)
        else:
            console.warning(f"{_now()} needs a restart (not restarting): {reason}")

    def _print_patch(
        self, made, reports: list[dict], started: float, built: float, done: float
    ) -> None:  # noqa: ANN001
        names = [c.unit.qualname for p in made.plans for c in p.code]
        names += [
            f"{', '.join(r.statement.defines) or 'line ' + str(r.statement.lineno)}"
            for p in made.plans
            for r in p.reruns
        ]
        names += [f"{name} (removed)" for p in made.plans for name in p.removed]
        shown = ", ".join(dict.fromkeys(names)) or "no functions"
        if len(shown) > 70:
            shown = shown[:67] + "..."
        outcome = cluster.Outcome.of(reports)
        slowest = outcome.slowest()
        apply_ms = slowest.get("apply_ms", 0.0) if slowest else 0.0
        total = (done - started) * 1000
        rebuild = (built - started) * 1000
        send = max(total - rebuild - apply_ms, 0.0)
        connected = len(self.server.connected())
        # A module no process has imported is not patched anywhere (it loads the new
        # code when imported): said, so that "patched" never claims what did not happen.
        answered = [r for r in reports if not r.get("left") and not r.get("error")]
        skipped = set.intersection(*(set(r.get("skipped", ())) for r in answered or [{}]))
        notes = outcome.notes()
        if skipped:
            notes.append(f"not imported by any process: {', '.join(sorted(skipped))}")
        # What adapters rebuilt, and where a signature change may not be seen (named on
        # the line itself: never a bare "patched" over a holder that may be stale).
        adapted = _merged(reports, "adapted")
        unseen = _merged(reports, "unseen")
        holders = dict.fromkeys(m.group(1) for u in unseen if (m := _HELD_BY.search(u)))
        if holders:
            notes.append(f"may not be seen by {', '.join(holders)}")
        workers = outcome.workers()
        counted = f"{len(outcome.applied)}/{max(connected, outcome.answered)} processes"
        if workers:
            counted += f" ({workers} cluster workers; slowest {cluster.describe(slowest)})"
        console.success(
            f"{_now()} patched {shown}: {counted} in {total:.1f} ms "
            f"(rebuild {rebuild:.1f}, send {send:.1f}, apply {apply_ms:.1f})"
            + "".join(f"; {note}" for note in notes)
        )
        for line in adapted:
            console.info(f"  {line}")
        for line in unseen:
            console.warning(f"  {line}")
        for report in reports:
            for warning in report.get("warnings", []):
                if self.verbose:
                    console.warning(f"  pid {report.get('pid')}: {warning}")

    def _catch_up(self, client: Client) -> None:
        """Bring a process that joined at an older build up to the current one (on the
        server's thread for it: what goes wrong is said in one line)."""
        try:
            self._bring_up_to_date(client)
        except Exception as exc:  # boundary: one line, and the process keeps its build
            console.error(f"{_now()} catching up pid {client.pid} failed: {_describe(exc)}")

    def _bring_up_to_date(self, client: Client) -> None:
        """Under the build lock, so that no patch made meanwhile reaches the process before
        its catch-up (patches after it are then made from the build it has reached)."""
        if client.role and client.build is None:
            self._catch_up_worker(client)
            return
        with self._build_lock:
            current = self.current
            if current is None or client.build in (None, current.build_id):
                if self.verbose:  # from now on it receives every patch
                    console.info(f"{_now()} pid {client.pid} connected at build {client.build}")
                return
            try:
                old = self.builder.store.load(client.build)
                made = make_patch(self.builder.cache, old, current, self.main_path)
            except ThinlinkError as exc:
                console.warning(f"{_now()} pid {client.pid} runs build {client.build}: {exc}")
                return
            if made.bundle.needs_restart:
                reason = made.bundle.needs_restart
                console.warning(
                    f"{_now()} pid {client.pid} is behind and needs a restart: {reason}"
                )
                return
            report = self.server.send(client, encode(made.bundle))
        if report and report.get("error"):
            console.error(f"{_now()} catching up pid {client.pid} failed: {report['error']}")
        elif self.verbose:
            console.info(f"{_now()} pid {client.pid} caught up to {current.build_id}")

    def _catch_up_worker(self, client: Client) -> None:
        """Bring a cluster worker that joins to the current build, from the source its
        hello says it runs (its own copy of the project, perhaps older)."""
        with self._build_lock:
            current = self.current
            if current is None:
                return
            made = cluster.catch_up(
                self.builder.cache, current, client.modules, client.files, client.pid
            )
            if made.unknown:
                console.warning(
                    f"{_now()} {client.label()} runs a version of "
                    f"{', '.join(made.unknown)} this session never built: patches of it "
                    "will be refused there until the worker restarts on the project's source"
                )
            # Always answered (with nothing to change, if so): the worker waits for it
            # before its first task, and takes the build id from it.
            bundle = Bundle(f"worker-{client.pid}", current.build_id)
            if made.patch is not None and made.patch.bundle.needs_restart:
                reason = made.patch.bundle.needs_restart
                console.warning(
                    f"{_now()} {client.label()} is behind and needs a restart: {reason}"
                )
            elif made.patch is not None:
                bundle = made.patch.bundle
            report = self.server.send(client, encode(bundle))
        if report and report.get("error"):
            console.warning(f"{_now()} catching up {client.label()} failed: {report['error']}")
        elif report and self.verbose:
            console.info(f"{_now()} {client.label()} joined at {current.build_id}")

    def _prewarm(self, manifest: Manifest) -> None:
        """Analyse every module now, so the first save of each is as fast as the next."""
        from thinlink.build.analysis import analyze_module

        cache = self.builder.cache
        for entry in manifest.modules:
            if self._stop.is_set():
                return
            try:
                with self._build_lock:  # one user of the cache at a time
                    record = cache.get_record(entry.record or "")
                    text = cache.source_text(entry.digest or "", entry.path)
                    if record is not None and text is not None:
                        analyze_module(cache, record, text.text)
            except (ThinlinkError, SyntaxError):
                continue
        gc.freeze()  # what the analysis memoised lives as long as the session

    def _write_image(self, manifest: Manifest) -> bool:
        """Point the session image at `manifest`'s image; False (said in one line) if it
        could not be written. Then processes starting meanwhile load the build before,
        and are caught up when they connect."""
        # The session image is a link to the build's image, replaced atomically, so a
        # process starting now reads one whole build or the other.
        tmp = self.image.with_name(f".{self.image.name}.{threading.get_ident()}")
        try:
            with self._build_lock:  # one user of the cache at a time
                built = ensure_image(self.builder.cache, manifest, compile_missing=False)
            tmp.unlink(missing_ok=True)
            os.symlink(built, tmp)
            os.replace(tmp, self.image)
        except Exception as exc:  # boundary: a full disk must not stop the session
            console.error(f"{_now()} could not write the session image: {_describe(exc)}")
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            return False
        return True

    def _background(self, what: str, target: Callable[..., object], *args: object) -> None:
        """Run `target(*args)` on a daemon thread; what it raises is said in one line
        (`what` failed: why), and the session goes on."""

        def run() -> None:
            try:
                target(*args)
            except Exception as exc:  # boundary: one line, and the app keeps running
                console.error(f"{_now()} {what} failed: {_describe(exc)}")

        threading.Thread(target=run, name=f"thinlink-{what}", daemon=True).start()


def _describe(exc: BaseException) -> str:
    """One line for an error: an OSError as the system says it, others with their type."""
    if isinstance(exc, OSError | ThinlinkError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


_HELD_BY = re.compile(r"; held by (\S+), ")


def _merged(reports: list[dict], field: str) -> list[str]:
    """The lines of one report field over all processes, each once, in order."""
    return list(dict.fromkeys(line for r in reports for line in r.get(field, ())))


def _interactive() -> bool:
    """stdin is a terminal (the keys a developer types reach `thinlink dev`)."""
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):  # closed or replaced stdin
        return False


def _kill_group(pgid: int, sig: int) -> bool:
    """Send `sig` to the process group; False if no process is left in it."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # a member changed its user: it is still there
    return True


def _now() -> str:
    return time.strftime("%H:%M:%S")
