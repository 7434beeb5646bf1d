"""The lifeline between a dev session and the processes it started: when the session's
process dies, even by `kill -9`, every process of its app goes too.

What we do:

- The session names itself in its app's environment (`HOTPATCH_LIFELINE`: host, boot,
  pid and start time, see `ProcessId`). The app, the one process the session launches
  itself (as a session leader, `setsid`), finds the session's pid as its parent and
  asks Linux for a parent-death signal (`prctl(PR_SET_PDEATHSIG, SIGTERM)`), then checks
  its parent again: had the session died before the request, the app is an orphan
  already and ends at once. It then adds its session id to the variable, which every
  process it starts (multiprocessing workers, subprocesses that join through
  `sitecustomize`) inherits.
- Every process of the app runs the patch client. When its connection to the dev server
  is lost and cannot be made again, it asks `Lifeline.session_gone`; when the session's
  process is provably gone, it ends its own process (the app: its process group):
  SIGTERM, then SIGKILL after `GRACE` seconds. This covers the app where Linux's signal
  does not exist (or the app outlived it), and the processes the app started, which no
  parent-death signal reaches.

What does not work, and why:

- A parent-death signal set in the session's own children is sent when the *thread* that
  started the child ends, not the process: `thinlink dev` therefore starts every app from
  one long-lived thread. It is also cleared in a child's children, hence the client.
- A process that runs no patch client (not Python, or a Python that skips `site`) is
  ended only with the app's process group, when the app's client ends it: on Linux the
  app usually dies of its signal first, and such a process is left to its own devices.
- "The server does not answer" alone proves nothing (a session stopped in a debugger, a
  busy machine): a process ends itself only once the session's process is gone from this
  host (no such pid, a zombie, or a pid now another process's: its start time differs).

Never anything else's: a process ends itself only if it was started under the session,
i.e. it carries the lifeline with this host's name and boot, and it is still in the
app's session id. A cluster worker that joined from another process tree (even one
handed the session's variables) is in another session and ignores the lifeline; so does
a process that left the app's session (`setsid`) on purpose.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from dataclasses import dataclass

__all__ = ["ENV", "GRACE", "Lifeline", "ProcessId", "attach", "session_marker"]

ENV = "HOTPATCH_LIFELINE"
GRACE = 5.0  # seconds between the SIGTERM a process sends itself and its SIGKILL
_PR_SET_PDEATHSIG = 1

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcessId:
    """A process, named so that the name still means that process once its pid has been
    reused: host name, boot, pid and start time (Linux; 0 where unknown)."""

    node: str
    boot: str
    pid: int
    start: int

    @classmethod
    def of(cls, pid: int | None = None) -> ProcessId:
        """The identity of `pid` (default: this process), which must be running."""
        pid = os.getpid() if pid is None else pid
        stat = _stat(pid)
        return cls(_node(), _boot(), pid, int(stat[19]) if stat else 0)

    def encode(self) -> str:
        return f"{self.node} {self.boot} {self.pid} {self.start}"

    @classmethod
    def parse(cls, text: str) -> ProcessId | None:
        """The identity `encode` wrote, or None if `text` is not one."""
        parts = text.split()
        if len(parts) != 4 or not (parts[2].isdigit() and parts[3].isdigit()):
            return None
        return cls(parts[0], parts[1], int(parts[2]), int(parts[3]))

    def is_here(self) -> bool:
        """This process runs on the host, and in the boot, the identity was taken in."""
        return self.node == _node() and self.boot == _boot()

    def is_gone(self) -> bool:
        """True only if the process is provably no longer running: it ran on this host
        and is not running now (or ran before the host last booted). False where that
        cannot be known (another host, no permission to ask)."""
        if self.node != _node():
            return False
        if self.boot != _boot():
            return True  # a process of an earlier boot
        if self.pid == os.getpid():
            return False
        stat = _stat(self.pid)
        if stat is not None:
            # A zombie has ended, only nobody has reaped it; another start time, another
            # process under the same pid.
            return stat[0] in ("Z", "X") or (self.start != 0 and int(stat[19]) != self.start)
        if os.path.isdir("/proc/self"):
            return True  # /proc knows every process of this host (of its pid namespace)
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False  # it exists, as another user's process
        return False


@dataclass(frozen=True)
class Lifeline:
    """This process's tie to the dev session that started it (see the module docstring)."""

    session: ProcessId
    sid: int  # the app's session id, which every process of the app shares
    is_app: bool  # this process is the app the session launched itself

    def session_gone(self) -> bool:
        """True if the session that started this process has provably ended."""
        if self.is_app and os.getppid() == self.session.pid:
            return False  # fast path, exact: our parent is the session
        return self.session.is_gone()

    def end_process(self) -> None:
        """End this process, as its session has gone: SIGTERM (the app may clean up),
        then SIGKILL after `GRACE` seconds. The app ends its whole process group with
        it (what it started, Python or not, unless it left the group): the group is
        provably the app's while the app, its leader, is alive to signal it."""
        pid = os.getpid()
        try:
            log.warning(
                "hotpatch: the dev session (pid %s) is gone: ending this process (pid %s)",
                self.session.pid,
                pid,
            )
        except Exception:  # noqa: BLE001 - a closed stderr must not keep the process alive
            pass
        group = self.is_app and os.getpgid(0) == pid
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
            time.sleep(GRACE)


def session_marker() -> str:
    """The value of `ENV` a session puts in the environment of the app it launches."""
    return ProcessId.of().encode()


def attach() -> Lifeline | None:
    """This process's lifeline, or None if it was not started under a dev session on this
    host (then nothing here ever ends it). Called once per process, before the program
    runs, by the patch client; in the app, this is where the parent-death signal is set
    up, and where an app whose session died while it was starting ends."""
    text = os.environ.get(ENV, "")
    head, _, sid_text = text.partition("@")
    session = ProcessId.parse(head)
    if session is None or not session.is_here() or not hasattr(os, "getsid"):
        return None
    sid = os.getsid(0)
    if sid_text:  # started by the app (or by one of its processes)
        if not sid_text.isdigit() or int(sid_text) != sid:
            return None  # not in the app's session: not ours to end
        return Lifeline(session, sid, is_app=False)
    # Only the app has the lifeline without a session id: it is the session's child, and
    # the leader of a session of its own. Anything else is not ours to end.
    if sid != os.getpid():
        return None
    line = Lifeline(session, sid, is_app=True)
    if os.getppid() == session.pid:
        _die_with_parent()
    # Checked again after asking for the signal: a session that died before the request
    # sent nothing, and left this process an orphan.
    if os.getppid() != session.pid:
        if not session.is_gone():
            return None  # started by something else, with the session's variable
        line.end_process()
    os.environ[ENV] = f"{head}@{sid}"  # for every process the app starts
    return line


def _die_with_parent() -> None:
    """Ask Linux for SIGTERM when the parent (the session's launching thread) ends."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # no prctl here: the patch client's check stands in


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data.rpartition(b")")[2].decode("ascii", "replace").split()


_cache: dict[str, str] = {}


def _node() -> str:
    if "node" not in _cache:
        _cache["node"] = os.uname().nodename or "-"
    return _cache["node"]


def _boot() -> str:
    if "boot" not in _cache:
        try:
            with open("/proc/sys/kernel/random/boot_id") as f:
                _cache["boot"] = f.read().strip() or "-"
        except OSError:
            _cache["boot"] = "-"  # unknown: then every identity has the same boot
    return _cache["boot"]
