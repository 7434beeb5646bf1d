"""Processes that did not start from a build take patches by the source they run.

A plain `python` process (a notebook kernel, a cluster worker) imports the project with
the ordinary importer; bundles made by the build side (`Project.patch`) carry each
module's base and target source digests, and such a process applies a module's patch
only when the source it runs is the base. A process started from a build refuses a patch
for a module whose file was edited before its first import.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from hotpatch.bundle import save
from thinlink import Project

from .conftest import ENV, write

DRIVER = """\
import json, sys
import hotpatch
from hotpatch import provenance

if sys.argv[1] == "track":
    provenance.track([sys.argv[2]])
import shapes
if sys.argv[1] == "adopt":  # imported by the ordinary importer, vouched for before any edit
    assert provenance.adopt(shapes) is not None
print(json.dumps({"ready": shapes.area(2)}), flush=True)
for line in sys.stdin:
    try:
        report = hotpatch.apply(line.strip())
        print(json.dumps({"patched": list(report.patched), "area": shapes.area(2)}), flush=True)
    except hotpatch.PatchError as exc:
        print(json.dumps({"refused": str(exc), "area": shapes.area(2)}), flush=True)
"""


class Driver:
    def __init__(self, root: Path, mode: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "driver.py", mode, str(root)],
            cwd=root,
            env=ENV,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.first = self.read()

    def read(self) -> dict:
        line = self.proc.stdout.readline()
        assert line, "the driver died"
        return json.loads(line)

    def apply(self, bundle: Path) -> dict:
        self.proc.stdin.write(f"{bundle}\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=20)


def project(tmp_path: Path) -> tuple[Path, Project]:
    root = tmp_path / "proj"
    write(
        root,
        {
            "pyproject.toml": "[project]\nname = 'proj'\n",
            "shapes.py": "def area(x):\n    return x * x\n",
            "driver.py": DRIVER,
        },
    )
    proj = Project(root, cache_dir=tmp_path / "cache")
    assert proj.build().ok
    return root, proj


def edit_and_patch(root: Path, proj: Project, new: str, out: Path) -> Path:
    (root / "shapes.py").write_text(new)
    save(proj.patch().bundle, out)
    return out


def test_a_plain_python_process_takes_patches_of_the_source_it_imported(tmp_path):
    for mode in ("track", "adopt"):  # recorded at import, or vouched for after it
        root, proj = project(tmp_path / mode)
        driver = Driver(root, mode)
        assert driver.first == {"ready": 4}
        first = edit_and_patch(root, proj, "def area(x):\n    return x * 10\n", tmp_path / "1")
        assert driver.apply(first) == {"patched": ["shapes:area"], "area": 20}
        # The next patch starts from the source the process now runs.
        second = edit_and_patch(root, proj, "def area(x):\n    return x + 1\n", tmp_path / "2")
        assert driver.apply(second) == {"patched": ["shapes:area"], "area": 3}
        driver.close()


def test_a_process_that_imported_other_source_refuses_the_patch(tmp_path):
    root, proj = project(tmp_path)
    # Edited before the process imports it: the process runs source the build never had.
    (root / "shapes.py").write_text("def area(x):\n    return -1\n")
    driver = Driver(root, "track")
    assert driver.first == {"ready": -1}
    (root / "shapes.py").write_text("def area(x):\n    return x * x\n")  # back to the base
    bundle = edit_and_patch(root, proj, "def area(x):\n    return x * 10\n", tmp_path / "b")
    answer = driver.apply(bundle)
    assert answer["area"] == -1
    assert "shapes: refused: this process runs source" in answer["refused"]
    driver.close()
