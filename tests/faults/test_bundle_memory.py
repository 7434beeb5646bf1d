"""A 300 MB corrupt bundle is refused with bounded memory.

Issue 12, item 9. A file with a sound bundle header and 300 MB of garbage after it (its
digest cannot match), and one whose header promises a byte more than the file holds,
given to `hotpatch.apply` (as a path, and as bytes the caller read) and to
`hotpatch.bundle.load`, each in a fresh interpreter that reports its peak memory
(max RSS). Each must raise `PatchError` with a one-line message, and peak no higher
than what the interpreter takes to start and hold the file, plus one copy of it.
"""

from __future__ import annotations

import importlib.util
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from .commands import ENV, MAX_LINE, Step, Verdict
from .probes import FULL, Ledger

SIZE = 300 * 2**20
# The most memory a refusal may take: the interpreter's own, plus twice the file (the
# caller's bytes and one copy, or a reading buffer and one copy), plus a little for the
# work itself.
BOUND_FILE_COPIES = 2
SLACK = 32 * 2**20
# A bundle's header: magic, format version, bytecode magic, flags, digest, payload length
# (as hotpatch.bundle documents its wire format).
_HEADER = struct.Struct(">8sH4sB32sQ")

CALLS = {
    "hotpatch.apply(path)": "hotpatch.apply(path)",
    "hotpatch.apply(bytes)": "hotpatch.apply(data)",
    "hotpatch.bundle.load(path)": "hotpatch.bundle.load(path)",
}
# In a fresh interpreter: `data` read first only for the bytes case; then the call; then
# what it raised and the peak memory, as JSON.
_PROBE = """\
import json, resource, sys
import hotpatch, hotpatch.bundle
path = sys.argv[1]
data = open(path, "rb").read() if sys.argv[2] == "bytes" else None
outcome = {"raised": None, "message": ""}
if sys.argv[3] != "nothing":
    try:
        exec(sys.argv[3])
    except Exception as exc:
        outcome = {"raised": type(exc).__name__, "message": str(exc),
                   "patch_error": isinstance(exc, hotpatch.PatchError)}
outcome["max_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(outcome))
"""


def measure(path: Path, given: str, call: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(path), given, call],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def corrupt_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 MB of garbage after a header (written by `set_header`)."""
    path = tmp_path_factory.mktemp("bundle") / "corrupt.bundle"
    chunk = bytes(range(256)) * 4096  # 1 MiB
    with open(path, "wb") as f:
        f.write(bytes(_HEADER.size))
        for _ in range(SIZE // len(chunk)):
            f.write(chunk)
    return path


def set_header(path: Path, length: int) -> None:
    header = _HEADER.pack(b"HPBUNDLE", 4, importlib.util.MAGIC_NUMBER, 0, bytes(32), length)
    with open(path, "r+b") as f:
        f.write(header)


HEADERS = {"digest cannot match": SIZE, "length one byte over": SIZE + 1}
CASES = [
    (header, name)
    for header in HEADERS
    for name in CALLS
    if FULL or (header == "digest cannot match" and name != "hotpatch.bundle.load(path)")
]


@pytest.mark.parametrize(("header", "call"), CASES)
def test_a_300_mb_corrupt_bundle_is_refused_in_bounded_memory(
    ledger: Ledger, corrupt_bundle: Path, header: str, call: str
) -> None:
    set_header(corrupt_bundle, HEADERS[header])
    given = "bytes" if "bytes" in call else "path"
    idle = measure(corrupt_bundle, given, "nothing")["max_rss"]
    outcome = measure(corrupt_bundle, given, CALLS[call])
    problems = []
    if not outcome.get("patch_error"):
        problems.append(f"raised {outcome['raised']}, not PatchError")
    message = outcome["message"]
    if "\n" in message or len(message) > MAX_LINE:
        problems.append(f"the message is not one short line ({len(message)} characters)")
    # The bytes the caller holds are in `idle` already: one copy more is allowed then.
    allowed = (BOUND_FILE_COPIES - (given == "bytes")) * SIZE + SLACK
    extra = outcome["max_rss"] - idle
    if extra > allowed:
        problems.append(
            f"peak memory {outcome['max_rss'] / 2**20:.0f} MB: {extra / 2**20:.0f} MB above "
            f"the interpreter's {idle / 2**20:.0f} MB (allowed {allowed / 2**20:.0f} MB, "
            f"{allowed // SIZE}x the file and {SLACK // 2**20} MB)"
        )
    step = Step(call, 0, json.dumps(outcome), "")
    ledger.record(f"{call}, 300 MB, {header}", Verdict(problems, [step]))
    ledger.check()
