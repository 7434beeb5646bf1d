"""Set up a virtual environment and run the bundled example app from its build.

    python3 scripts/demo.py

Builds examples/loop (function-level, content-addressed: a second run reuses all of
it) and runs its simulation loop through `thinlink run`, which imports the app's
modules from the build.
"""

from __future__ import annotations

import subprocess
import sys

from _venv import ROOT, ensure_venv

if __name__ == "__main__":
    python = ensure_venv("test")
    app = ROOT / "examples" / "loop"
    steps = [
        [str(python), "-m", "thinlink", "build", str(app)],
        [str(python), "-m", "thinlink", "run", str(app / "app.py"), "--frames", "40"],
    ]
    for step in steps:
        print("$", " ".join(step[2:]), file=sys.stderr)
        code = subprocess.run(step, cwd=app).returncode
        if code:
            sys.exit(code)
