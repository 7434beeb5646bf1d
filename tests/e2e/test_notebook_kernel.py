"""`%load_ext thinlink` in a real Jupyter kernel (ipykernel), driven over ZeroMQ on
loopback by `jupyter_client`, the way a notebook front end drives it.

One kernel runs every edit case of `notebook_cases` in turn (each case has modules of its
own), files are saved between execute requests, and each check is what the next cell
sees. Then a cell running a loop picks up a save made from outside while it runs.
"""

from __future__ import annotations

import ast
import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from .notebook_cases import BODY, CASES, Cell, run_case, save, write_project

jupyter_client = pytest.importorskip("jupyter_client", reason="the test extra installs it")
pytest.importorskip("ipykernel", reason="the test extra installs it")

TIMEOUT = 120  # seconds for one cell (a loaded CI machine)


class Kernel:
    """A started ipykernel and a client; `cell(code)` executes one cell."""

    def __init__(self, root: Path, home: Path) -> None:
        from jupyter_client import KernelManager
        from jupyter_client.kernelspec import KernelSpecManager

        # This interpreter's ipykernel, whatever kernel specs the machine has installed.
        spec = home / "share" / "kernels" / "thinlink-test"
        spec.mkdir(parents=True)
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        (spec / "kernel.json").write_text(json.dumps({"argv": argv, "language": "python"}))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("THINLINK_", "HOTPATCH_"))}
        env.update(IPYTHONDIR=str(home / "ipython"), PYTHONDONTWRITEBYTECODE="1")
        self.manager = KernelManager(
            kernel_name="thinlink-test",
            kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec.parent)]),
            ip="127.0.0.1",
        )
        self.manager.start_kernel(cwd=str(root), env=env)
        self.client = self.manager.client()
        self.client.start_channels()
        try:
            self.client.wait_for_ready(timeout=TIMEOUT)
        except RuntimeError:
            self.close()
            raise
        self.root = root

    def cell(self, code: str) -> Cell:
        out: list[str] = []
        err: list[str] = []
        errors: list[str] = []

        def output(msg: dict) -> None:
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                (out if content["name"] == "stdout" else err).append(content["text"])
            elif kind == "error":
                errors.append(f"{content['ename']}: {content['evalue']}")
                err.append("\n".join(content["traceback"]))

        reply = self.client.execute_interactive(
            code,
            user_expressions={"v": "repr(__check)"},
            output_hook=output,
            timeout=TIMEOUT,
        )
        value = None
        if reply["content"]["status"] == "ok" and "__check" in code:
            shown = reply["content"]["user_expressions"]["v"]["data"]["text/plain"]
            value = ast.literal_eval(shown)  # the repr string, as IPython displayed it
        return Cell(value, "".join(out), "".join(err), errors[0] if errors else None)

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("notebook") / "project"
    write_project(root)
    (root / "nb_kloop.py").write_text("def value():\n    return 'old'\n")
    (root / "nb_quiet.py").write_text(BODY)
    started = Kernel(root, tmp_path_factory.mktemp("jupyter"))
    loaded = started.cell("%load_ext thinlink")
    assert loaded.error is None and f"thinlink: project {root}" in loaded.out, loaded.output
    yield started
    started.close()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_edit_case_in_a_jupyter_kernel(kernel: Kernel, case) -> None:
    assert run_case(kernel.cell, kernel.root, case, applied=False) == []


def test_nothing_changed_says_nothing_and_a_patch_one_line(kernel: Kernel) -> None:
    assert kernel.cell("import nb_quiet").output == ""
    for _ in range(3):
        assert kernel.cell("__check = nb_quiet.greet('x')").output == ""
    save(kernel.root / "nb_quiet.py", BODY.replace('"hello "', '"hi "'))
    cell = kernel.cell("__check = nb_quiet.greet('x')")
    assert cell.value == "'hi x'"
    assert cell.err == "" and cell.out.startswith("thinlink: patched nb_quiet.greet (")
    assert cell.out.count("\n") == 1, cell.out
    status = kernel.cell("%thinlink").out
    assert f"thinlink: on, project {kernel.root}" in status
    assert "last patch (" in status and "patched nb_quiet.greet" in status


def test_a_running_cell_picks_up_a_save_at_hotpatch_call(kernel: Kernel) -> None:
    kernel.cell("import nb_kloop")
    later = threading.Timer(
        0.5, save, args=(kernel.root / "nb_kloop.py", "def value():\n    return 'new'\n")
    )
    started = time.monotonic()
    later.start()
    cell = kernel.cell(
        "import time, hotpatch\n"
        "seen = [hotpatch.call(nb_kloop.value)]\n"
        "deadline = time.monotonic() + 60\n"
        "while seen[-1] != 'new' and time.monotonic() < deadline:\n"
        "    time.sleep(0.002)\n"
        "    seen.append(hotpatch.call(nb_kloop.value))\n"
        "__check = (seen[0], seen[-1], len(seen) > 1)\n"
    )
    later.join()
    assert cell.value == "('old', 'new', True)", cell.output
    assert "thinlink: patched nb_kloop.value (" in cell.out and "(during the cell)" in cell.out
    assert time.monotonic() - started < 60
