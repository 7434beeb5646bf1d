"""Running a command whose file-system root is a temporary directory.

To try `thinlink build` in `/` without building this machine's `/`: a private mount
namespace (`unshare --mount`), into which the few directories the interpreter needs
are bound read-only at their own paths (its installation, the virtual environment,
the repository, the shared libraries it has mapped), empty file systems mounted on
`/dev/shm` and `/tmp`, and then `chroot` into the temporary directory. Whatever the
command writes lands in that directory; nothing is mounted outside the namespace,
which ends with the command.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

from e2e.conftest import ENV, REPO

__all__ = ["JailUnavailable", "run_in_jail"]

# What the build imports, so that the shared libraries they map are found and bound.
_IMPORTS = "import thinlink.cli.commands, thinlink.build.builder, diskcache, sqlite3, xxhash"
_MAPPED = (
    f"{_IMPORTS}\n"
    "paths = set()\n"
    "for line in open('/proc/self/maps'):\n"
    "    fields = line.split()\n"
    "    if len(fields) > 5 and fields[5].startswith('/'):\n"
    "        paths.add(fields[5])\n"
    "print('\\n'.join(sorted(paths)))\n"
)
# Run inside the new namespace: bind, make read-only, chroot, exec.
_ENTER = """\
import json, os, subprocess, sys
spec = json.loads(sys.argv[1])
for source, target in spec["binds"]:
    os.makedirs(target, exist_ok=True)
    subprocess.run(["mount", "--bind", source, target], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", target], check=True)
for target in spec["scratch"]:
    os.makedirs(target, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", target], check=True)
os.chroot(spec["root"])
os.chdir(spec["cwd"])
os.execve(spec["argv"][0], spec["argv"], spec["env"])
"""


class JailUnavailable(Exception):
    """This machine cannot make the jail (no unshare, chroot or mount rights)."""


def run_in_jail(
    root: Path, argv: list[str], cwd: str = "/", env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run `argv` with `root` as its `/` (and `cwd` in it), in the test environment;
    what it did, and the names the jail itself made at the top of `root` (links, and
    the directories it mounts things on)."""
    before = set(os.listdir(root))
    if os.geteuid() != 0:
        raise JailUnavailable("mounting and chroot need root")
    try:
        check = subprocess.run(["unshare", "--mount", "true"], capture_output=True, text=True)
    except FileNotFoundError:
        raise JailUnavailable("no unshare command") from None
    if check.returncode != 0:
        raise JailUnavailable(f"unshare --mount fails: {check.stderr.strip()}")
    spec = {
        "root": str(root),
        "cwd": cwd,
        "argv": argv,
        "env": {**ENV, **(env or {})},
        "binds": [[str(d), str(root) + str(d)] for d in _needed_directories()],
        # Writable and empty: what multiprocessing's semaphores and temporary files need.
        "scratch": [str(root / "dev" / "shm"), str(root / "tmp")],
    }
    _replicate_links(root, Path(sys.executable))
    made = set(os.listdir(root)) - before
    made |= {Path(target).relative_to(root).parts[0] for _, target in spec["binds"]}
    made |= {Path(target).relative_to(root).parts[0] for target in spec["scratch"]}
    done = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            sys.executable,
            "-c",
            _ENTER,
            json.dumps(spec),
        ],
        capture_output=True,
        text=True,
        errors="backslashreplace",
        timeout=120,
    )
    return done, made


def _needed_directories() -> list[Path]:
    """The directories to bind: the interpreter's and the project's trees, and each
    directory holding a file the interpreter maps once the build's modules are loaded."""
    trees = {Path(sys.base_prefix), Path(sys.prefix), REPO}
    mapped = subprocess.run(
        [sys.executable, "-c", _MAPPED], env=ENV, capture_output=True, text=True, check=True
    ).stdout.split()
    directories = {Path(os.path.realpath(p)).parent for p in mapped}
    directories |= {Path(os.path.realpath(p)) for p in trees}
    chosen: list[Path] = []
    for directory in sorted(directories, key=lambda p: len(p.parts)):
        if not any(directory.is_relative_to(parent) for parent in chosen):
            chosen.append(directory)
    return chosen


def _replicate_links(root: Path, executable: Path) -> None:
    """The top-level symbolic links of `/` (`lib64 -> usr/lib64` and the like), and the
    path of the interpreter's own program interpreter (the dynamic loader), links and
    all (a console script runs through the interpreter, which runs through it)."""
    for entry in os.scandir("/"):
        if entry.is_symlink() and not (root / entry.name).is_symlink():
            os.symlink(os.readlink(entry.path), root / entry.name)
    interpreter = _elf_interpreter(Path(os.path.realpath(executable)))
    if interpreter is not None:
        _replicate(root, interpreter)


def _replicate(root: Path, path: str, depth: int = 0) -> None:
    """Make `path` resolve in `root` as it does here: each link on the way copied."""
    assert depth < 16, f"too many links resolving {path}"
    here = "/"
    for part in Path(path).parts[1:]:
        here = os.path.join(here, part)
        mirrored = Path(str(root) + here)
        if os.path.islink(here):
            if not mirrored.is_symlink():
                mirrored.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(os.readlink(here), mirrored)
            target = os.path.join(os.path.dirname(here), os.readlink(here))
            _replicate(root, os.path.normpath(target), depth + 1)
        elif os.path.isdir(here):
            mirrored.mkdir(parents=True, exist_ok=True)


def _elf_interpreter(path: Path) -> str | None:
    """The PT_INTERP path of an ELF executable (its dynamic loader), if it has one."""
    with open(path, "rb") as f:
        data = f.read(1 << 16)
    if data[:4] != b"\x7fELF" or data[4] != 2:  # 64-bit ELF only
        return None
    order = "<" if data[5] == 1 else ">"
    (table,) = struct.unpack_from(order + "Q", data, 0x20)
    size, count = struct.unpack_from(order + "HH", data, 0x36)
    for i in range(count):
        entry = table + i * size
        (kind,) = struct.unpack_from(order + "I", data, entry)
        if kind == 3:  # PT_INTERP
            offset, _, _, length = struct.unpack_from(order + "QQQQ", data, entry + 8)
            return data[offset : offset + length].rstrip(b"\0").decode()
    return None
