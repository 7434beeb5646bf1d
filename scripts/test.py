"""Set up a virtual environment for this Python and run the whole test suite.

python3 scripts/test.py [PYTEST ARGS...]
"""

from __future__ import annotations

import os
import subprocess
import sys

from _venv import ROOT, ensure_venv

if __name__ == "__main__":
    python = ensure_venv("test,cluster")
    args = [str(python), "-m", "pytest", *(sys.argv[1:] or ["-q"])]
    sys.exit(
        subprocess.run(
            args, cwd=ROOT, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        ).returncode
    )
