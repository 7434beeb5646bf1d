"""What connections that never authenticate cost a `thinlink dev` process, side by side.

Two trees measured in one run, each as a real `thinlink dev` session (`python -m thinlink
dev -v app.py`, its modules imported from that tree) on the same small app:

- this checkout;
- the baseline: by default the newest commit whose dev protocol is version 1 (the
  server read a whole frame, up to 64 MiB, before checking its MAC; a thread per
  connection, no deadline), extracted with `git archive` (read-only git); or
  `--baseline-path DIR`.

Probes, each against the session's own socket, without the session secret:
- `8 x 64 MiB`: 8 connections each send a frame header announcing the largest frame
  (`MAX_PAYLOAD`, 64 MiB) with a forged MAC, then stream the 64 MiB. Measured: the
  dev process's resident memory at its peak (VmRSS sampled every 5 ms, and VmHWM after
  resetting it through /proc/PID/clear_refs), as growth over its idle size.
- `200 idle`: 200 connections that send nothing, held for `--hold` seconds (default 7:
  past the 5 s handshake deadline). Measured: the dev process's peak thread count, and
  how many of the 200 the server had closed by the end.
- after both: a save is still patched into the app (`patched` yes/no).

    python benchmarks/bench_dev_limits.py [--baseline REF | --baseline-path DIR] [--no-write]

Results: `results/dev_limits.{json,md}`. Memory figures are single runs (they are sizes,
not timings: the noise of a busy machine does not move them much).
"""

from __future__ import annotations

import argparse
import io
import re
import socket
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

from _common import REPO_ROOT, format_table, machine_info, source_state, write_results

MAX_PAYLOAD = 64 * 2**20
HELLO = 1
APP = """\
import os, time
import work

print("START", os.getpid(), flush=True)
last = None
while True:
    if work.value() != last:
        last = work.value()
        print("VALUE", last, flush=True)
    time.sleep(0.01)
"""


def status(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM", "Threads"):
                out[name] = int(value.split()[0])
    return out


class Session:
    """`thinlink dev -v app.py` from `tree`, in a fresh project under `where`."""

    def __init__(self, tree: Path, where: Path) -> None:
        self.root = where / "proj"
        self.root.mkdir(parents=True)
        (self.root / "pyproject.toml").write_text("")
        (self.root / "app.py").write_text(APP)
        (self.root / "work.py").write_text('def value():\n    return "v0"\n')
        env = {"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin", "NO_COLOR": "1"}
        command = [sys.executable, "-m", "thinlink", "dev", "-v"]
        command += ["--cache-dir", str(where / "cache"), "app.py"]
        self.proc = subprocess.Popen(
            command, cwd=self.root, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        self.out: list[str] = []
        self.err: list[str] = []
        for stream, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._pump, args=(stream, lines), daemon=True).start()
        self.address = self.wait(self.err, r"patches on (\S+)$").group(1)
        self.wait(self.out, r"^VALUE v0$")

    @staticmethod
    def _pump(stream, lines: list[str]) -> None:  # noqa: ANN001
        for line in stream:
            lines.append(line.rstrip("\n"))

    def wait(self, lines: list[str], pattern: str, timeout: float = 30.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(lines):
                if match := re.search(pattern, line):
                    return match
            time.sleep(0.01)
        raise RuntimeError(f"no {pattern!r} within {timeout} s:\n" + "\n".join(self.err[-20:]))

    def patches(self) -> bool:
        (self.root / "work.py").write_text('def value():\n    return "v1"\n')
        try:
            self.wait(self.out, r"^VALUE v1$", timeout=20)
        except RuntimeError:
            return False
        return True

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def open_raw(address: str) -> socket.socket:
    if address.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(address.removeprefix("unix:"))
    else:
        host, _, port = address.removeprefix("tcp:").rpartition(":")
        sock = socket.create_connection((host.strip("[]"), int(port)))
    sock.settimeout(30)
    nonce = b""
    while len(nonce) < 16:
        nonce += sock.recv(16 - len(nonce))
    return sock


def announce_and_stream(sock: socket.socket, version: int) -> None:
    """A header announcing MAX_PAYLOAD with a forged MAC (48 bytes in both versions), then
    the payload, until the server stops taking it."""
    head = struct.pack(">2sBBQI", b"HP", version, HELLO, 1, MAX_PAYLOAD) + bytes(32)
    block = bytes(1 << 20)
    sent = 0
    try:
        sock.sendall(head)
        while sent < MAX_PAYLOAD:
            sent += sock.send(block[: MAX_PAYLOAD - sent])
    except OSError:
        pass


class Sampler:
    """Peak VmRSS and thread count of a process, sampled every 5 ms."""

    def __init__(self, pid: int) -> None:
        self.pid, self.rss, self.threads = pid, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            now = status(self.pid)
            self.rss, self.threads = max(self.rss, now["VmRSS"]), max(self.threads, now["Threads"])
            time.sleep(0.005)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def closed(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1 << 16) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def probe(tree: Path, hold: float) -> dict[str, object]:
    version = int(re.search(r"^VERSION = (\d+)", (tree / "hotpatch/protocol.py").read_text(),
                            re.M).group(1))  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-limits-") as where:
        session = Session(tree, Path(where))
        pid = session.proc.pid
        try:
            time.sleep(1.0)  # the session's prewarm done
            idle = status(pid)
            try:
                Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM
                hwm = True
            except OSError:
                hwm = False
            sampler = Sampler(pid)
            socks = [open_raw(session.address) for _ in range(8)]
            writers = [threading.Thread(target=announce_and_stream, args=(s, version))
                       for s in socks]  # fmt: skip
            for writer in writers:
                writer.start()
            for writer in writers:
                writer.join(120)
            time.sleep(0.5)
            sampler.stop()
            peak_rss = max(sampler.rss, status(pid)["VmHWM"] if hwm else 0)
            for sock in socks:
                sock.close()
            time.sleep(0.5)
            sampler = Sampler(pid)
            held = [open_raw(session.address) for _ in range(200)]
            time.sleep(hold)
            sampler.stop()
            closed_count = sum(closed(s) for s in held)
            for sock in held:
                sock.close()
            patched = session.patches()
        finally:
            session.close()
    return {
        "protocol_version": version,
        "idle_rss_mib": round(idle["VmRSS"] / 1024, 1),
        "peak_rss_mib_8x64": round(peak_rss / 1024, 1),
        "growth_mib_8x64": round((peak_rss - idle["VmRSS"]) / 1024, 1),
        "idle_threads": idle["Threads"],
        "peak_threads_200_idle": sampler.threads,
        "closed_of_200_after_hold": closed_count,
        "patched_after": patched,
    }


def newest_v1_commit() -> str:
    log = subprocess.run(
        ["git", "log", "--format=%H", "--", "hotpatch/protocol.py"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    for commit in log:
        shown = subprocess.run(["git", "show", f"{commit}:hotpatch/protocol.py"], cwd=REPO_ROOT,
                               capture_output=True, text=True)  # fmt: skip
        if shown.returncode == 0 and re.search(r"^VERSION = 1$", shown.stdout, re.M):
            return commit
    raise SystemExit("no commit with a version-1 hotpatch/protocol.py; use --baseline-path")


def extract(ref: str, dest: Path) -> Path:
    data = subprocess.run(["git", "archive", ref, "hotpatch", "thinlink"], cwd=REPO_ROOT,
                          capture_output=True, check=True).stdout  # fmt: skip
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", help="git ref of the baseline (default: newest v1)")
    parser.add_argument("--baseline-path", type=Path, help="a checkout to use as baseline")
    parser.add_argument("--hold", type=float, default=7.0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if not sys.platform.startswith("linux"):
        raise SystemExit("reads /proc: Linux only")
    with tempfile.TemporaryDirectory(prefix="bench-baseline-") as tmp:
        if args.baseline_path:
            baseline, label = args.baseline_path, str(args.baseline_path)
        else:
            ref = args.baseline or newest_v1_commit()
            baseline, label = extract(ref, Path(tmp)), ref[:10]
        results = {
            "this tree": probe(REPO_ROOT, args.hold),
            f"baseline {label}": probe(baseline, args.hold),
        }
    headers = ["tree", "protocol", "idle RSS MiB", "peak RSS 8x64 MiB", "growth MiB",
               "threads idle", "threads, 200 idle", "closed of 200", "patched after"]  # fmt: skip
    rows = [
        [name, r["protocol_version"], r["idle_rss_mib"], r["peak_rss_mib_8x64"],
         r["growth_mib_8x64"], r["idle_threads"], r["peak_threads_200_idle"],
         r["closed_of_200_after_hold"], "yes" if r["patched_after"] else "NO"]
        for name, r in results.items()
    ]  # fmt: skip
    this, base = results["this tree"], next(v for k, v in results.items() if k != "this tree")
    ratio = (this["growth_mib_8x64"] + this["idle_rss_mib"]) / max(
        base["growth_mib_8x64"] + base["idle_rss_mib"], 0.1
    )
    table = format_table(headers, rows)
    summary = (
        f"peak RSS under 8 x 64 MiB announced, this tree / baseline: {ratio:.3f}x; "
        f"target: growth under 64 MiB (this tree: {this['growth_mib_8x64']} MiB)"
    )
    print(table)
    print(summary)
    if not args.no_write:
        markdown = (
            "# dev server under connections that never authenticate\n\n"
            f"```\n{table}\n```\n\n{summary}\n\nHold: {args.hold} s for the 200 idle "
            "connections (the handshake deadline is 5 s).\n"
        )
        data = {"machine": machine_info(), "source": source_state(), "hold_s": args.hold,
                "results": results}  # fmt: skip
        for path in write_results("dev_limits", data, markdown):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
