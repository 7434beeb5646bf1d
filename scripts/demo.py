"""Set up a virtual environment and hot-patch the bundled example app while it runs.

    python3 scripts/demo.py            # on a terminal: you edit, it patches (Ctrl-C ends)
    python3 scripts/demo.py --auto     # scripted: two edits are made for you

Starts `thinlink dev` on examples/loop, a simulation loop (a ball, a score, a frame
counter). On a terminal it runs until Ctrl-C: edit examples/loop/sim.py and watch the
next frame use your code while the score and the frame counter carry on. With
`--auto` (or without a terminal) it runs on a copy of the example and makes two edits
itself, so you see two patches land in the running process, then stops.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _venv import ROOT, ensure_venv

EDITS = [
    ('row[state.x] = "o"', 'row[state.x] = "@"'),
    ("state.score += 1", "state.score += 100"),
]


def scripted(python: Path) -> int:
    with tempfile.TemporaryDirectory(prefix="thinlink-demo-") as tmp:
        app = Path(tmp) / "loop"
        skip = shutil.ignore_patterns(".thinlink", "__pycache__")  # a cache from earlier runs
        shutil.copytree(ROOT / "examples" / "loop", app, ignore=skip)
        sim = app / "sim.py"

        def edit() -> None:
            for old, new in EDITS:
                time.sleep(1.5)
                print(f"\n--- demo: editing sim.py: {old!r} -> {new!r}\n", file=sys.stderr)
                sim.write_text(sim.read_text().replace(old, new))

        command = [str(python), "-m", "thinlink", "dev", "app.py", "--frames", "90", "--fps", "20"]
        print("$ thinlink dev app.py --frames 90", file=sys.stderr)
        proc = subprocess.Popen(command, cwd=app)
        threading.Thread(target=edit, daemon=True).start()
        return proc.wait()


def interactive(python: Path) -> int:
    app = ROOT / "examples" / "loop"
    print(
        f"$ thinlink dev app.py   (edit {app / 'sim.py'} while it runs; Ctrl-C ends)",
        file=sys.stderr,
    )
    try:
        return subprocess.run([str(python), "-m", "thinlink", "dev", "app.py"], cwd=app).returncode
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    venv_python = ensure_venv("")
    auto = "--auto" in sys.argv or not sys.stdin.isatty()
    sys.exit(scripted(venv_python) if auto else interactive(venv_python))
