"""`thinlink dev`, end to end: a real session on real files, edited while the app runs.

Each test writes a small project into a temporary directory, starts
``python -m thinlink dev`` on it (`DevApp`), edits files as an editor would, and reads
what the tool prints (stderr) and what the app prints (stdout). The usual app prints
its pid once, then a counter and `mod.f()` each time the value changes: the counter
shows its state carrying on through patches, a second START line a restart. Every wait
is bounded; a wait for something that must not happen is closed by a later event that
must (a sentinel edit), never by sleeping.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import ENV, write
from .devapp import TIMEOUT, DevApp, edit, wait_until

APP = """\
import os, time
import hotpatch
import mod

print("START", os.getpid(), flush=True)
n, last = 0, None
while True:
    n += 1
    try:
        value = hotpatch.call(mod.f)
    except Exception as exc:
        value = f"ERROR {type(exc).__name__}: {exc}"
    if value != last:
        print(n, value, flush=True)
        last = value
    time.sleep(0.002)
"""
MOD = """\
def f():
    return "one"
"""
PATCH_LINE = (
    r"\d\d:\d\d:\d\d patched (?P<what>.+): (?P<done>\d+)/(?P<connected>\d+) processes in "
    r"[\d.]+ ms \(rebuild [\d.]+, send [\d.]+, apply [\d.]+\)"
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    write(root, {"pyproject.toml": "", "app.py": APP, "mod.py": MOD})
    return root


@pytest.fixture
def dev(project: Path, dev_apps):
    """`dev(*args, root=project)`: start `thinlink dev ARGS`; every session is closed."""

    def start(*args: str, root: Path = project, **kwargs) -> DevApp:
        return dev_apps(root, *args, **kwargs)

    return start


def started(app: DevApp) -> int:
    """Wait for the app's first value; its pid."""
    pid = int(app.wait_out(r"^START (\d+)$").group(1))
    app.wait_out(r"^\d+ one$")
    return pid


def value_after(app: DevApp, value: str) -> int:
    """Wait for the app to print `value`; the counter it printed with it."""
    return int(app.wait_out(rf"^(\d+) {re.escape(value)}$").group(1))


def starts(app: DevApp) -> list[int]:
    return [int(line.split()[1]) for line in app.out.lines if line.startswith("START ")]


# -- patching ---------------------------------------------------------------------------


def test_banner_and_one_line_per_patch(dev, project: Path) -> None:
    app = dev("app.py")
    banner = app.wait_err(r"^thinlink dev: watching (.+) \((\w+); include (.+)\); build (\w+)")
    assert banner.group(1) == str(project)
    assert banner.group(2) == "inotify"
    assert banner.group(3) == "*.py"
    pid = started(app)

    edit(project / "mod.py", '"one"', '"two"')
    line = app.wait_err(PATCH_LINE)
    assert line.group("what") == "f"
    assert line.group("done") == line.group("connected") == "1"
    before = value_after(app, "two")
    edit(project / "mod.py", '"two"', '"three"')
    app.wait_err(PATCH_LINE)
    assert value_after(app, "three") > before > 1  # the counter carried on
    assert starts(app) == [pid]
    assert len(app.patches()) == 2


def test_banner_shows_watch_backend_and_filters(dev, project: Path) -> None:
    (project / "lib").mkdir()
    app = dev(
        "--poll",
        "-w",
        "lib",
        "-w",
        ".",
        "--include",
        "*.py",
        "--include",
        "*.pyi",
        "--exclude",
        "legacy/*",
        "app.py",
    )
    app.wait_err(
        rf"^thinlink dev: watching {re.escape(str(project / 'lib'))}, {re.escape(str(project))} "
        r"\(polling; include \*\.py \*\.pyi; exclude legacy/\*\); build \w+ of 2 modules$"
    )
    started(app)
    edit(project / "mod.py", '"one"', '"two"')  # polling still sees saves
    app.wait_err(PATCH_LINE)
    value_after(app, "two")


def test_syntax_error_sends_nothing_and_the_next_good_save_applies(dev, project: Path) -> None:
    app = dev("app.py")
    pid = started(app)
    mod = project / "mod.py"
    mod.write_text('def f():\n    return "two" +\n')
    error = app.wait_err(rf"^\d\d:\d\d:\d\d {re.escape(str(mod))}:2:(\d+): (.+)$")
    col = int(error.group(1))
    shown = app.err.lines[app.err.cursor : app.err.cursor + 2]
    assert shown[0].strip() == 'return "two" +'  # the offending line, then a caret under it
    assert shown[1].index("^") - shown[0].index("r") == col - 5

    mod.write_text('def f():\n    return "three"\n')  # the next good save
    app.wait_err(PATCH_LINE)
    value_after(app, "three")
    values = [line.split(" ", 1)[1] for line in app.out.lines if line[0].isdigit()]
    assert values == ["one", "three"]  # nothing of the broken save ever ran
    assert len(app.patches()) == 1
    assert sum(f"{mod}:2:" in line for line in app.err.lines) == 1  # one message
    assert starts(app) == [pid]


def test_an_edit_that_changes_no_code_keeps_later_patches_working(dev, project: Path) -> None:
    app = dev("-v", "app.py")  # verbose: the empty patch has its line too
    started(app)
    with open(project / "mod.py", "a") as f:
        f.write("# a comment at the end: a new build, and no code to patch\n")
    assert app.wait_err(PATCH_LINE).group("what") == "no functions"
    edit(project / "mod.py", '"one"', '"two"')
    app.wait_err(PATCH_LINE)
    value_after(app, "two")
    edit(project / "mod.py", '"two"', '"three"')
    app.wait_err(PATCH_LINE)
    value_after(app, "three")
    assert "failed" not in app.err.text(), app.transcript()


def test_a_file_already_broken_does_not_block_other_patches(dev, project: Path) -> None:
    broken = project / "scratch.py"
    broken.write_text("x = (\n")
    app = dev("app.py")
    app.wait_err(rf"{re.escape(str(broken))}:1:\d+: ")  # said once, at start
    started(app)
    edit(project / "mod.py", '"one"', '"two"')
    app.wait_err(PATCH_LINE)
    value_after(app, "two")
    assert sum(str(broken) in line for line in app.err.lines) == 1


@pytest.mark.parametrize(
    "how", ["half, then the rest", "emptied, then written", "emptied, written a second later"]
)
def test_a_file_caught_half_written_never_breaks_the_app(dev, project: Path, how: str) -> None:
    # The last: a writer descheduled between truncating and writing (a loaded machine):
    # longer than a save normally takes, and the version before ended whole.
    app = dev("app.py")
    started(app)
    new = 'def f():\n    return helper()\n\n\ndef helper():\n    return "two"\n'
    # Cut inside a name: valid Python that would raise NameError if it went live.
    cut = new.index("helper()") + len("helpe")
    first = new[:cut] if how.startswith("half") else ""
    with open(project / "mod.py", "w") as f:
        f.write(first)
        f.flush()
        # An editor or a slow disk between two writes of one save.
        time.sleep(1.0 if how.endswith("later") else 0.05)
        f.write(new[len(first) :])
    assert app.wait_err(PATCH_LINE).group("what") == "f, helper"
    value_after(app, "two")
    # Closed by a later save (its own patch line): all before it has been handled.
    edit(project / "mod.py", '"two"', '"three"')
    app.wait_err(PATCH_LINE.replace("(?P<what>.+)", "(?P<what>helper)"))
    value_after(app, "three")
    assert not [line for line in app.out.lines if "ERROR" in line], app.transcript()
    assert len(app.patches()) == 2


@pytest.mark.parametrize("pause", [0.0, 0.015], ids=["at-once", "paused-after-two"])
def test_a_burst_of_saves_is_one_patch(dev, project: Path, pause: float) -> None:
    """Ten files written as fast as a `git checkout` writes them are one patch; so are
    they when the writer stops for a moment after two (descheduled on a busy machine)."""
    names = [f"m{i}" for i in range(10)]
    write(project, {f"{n}.py": f"def f():\n    return {i}\n" for i, n in enumerate(names)})
    write(
        project,
        {
            "mod.py": f"import {', '.join(names)}\n\n\ndef f():\n"
            f"    return 'total ' + str(sum(m.f() for m in [{', '.join(names)}]))\n"
        },
    )
    app = dev("app.py")
    app.wait_out(r"^\d+ total 45$")
    texts = [
        (project / f"{n}.py", f"def f():\n    return {i + 100}\n".encode())
        for i, n in enumerate(names)
    ]
    for k, (path, data) in enumerate(texts):  # as a `git checkout` writes them
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        os.write(fd, data)
        os.close(fd)
        if k == 1:
            time.sleep(pause)
    app.wait_err(PATCH_LINE)
    value_after(app, "total 1045")
    # A sentinel, with a patch line of its own: the burst is long done by then.
    with open(project / "mod.py", "a") as f:
        f.write("\n\ndef later():\n    pass\n")
    app.wait_err(r"patched later: ")
    totals = [line.split(" ", 1)[1] for line in app.out.lines if line[:1].isdigit()]
    assert totals == ["total 45", "total 1045"]  # no half-applied burst
    assert len(app.patches()) == 2


def test_ignored_paths_do_not_trigger(dev, project: Path) -> None:
    venv = project / "tools-env"  # a virtual environment by its marker, whatever its name
    write(
        project,
        {
            "tools-env/pyvenv.cfg": "home = /usr/bin\n",
            "tools-env/lib/python3/site-packages/pkg/mod.py": "x = 1\n",
            "tools-env/bin/tool.py": "x = 1\n",
            ".git/hooks/hook.py": "x = 1\n",
            "__pycache__/mod.py": "x = 1\n",
            "build/lib/mod.py": "x = 1\n",
        },
    )
    app = dev("-v", "app.py")
    started(app)
    ignored = [
        venv / "lib/python3/site-packages/pkg/mod.py",
        venv / "bin/tool.py",
        venv / "new.py",
        project / ".git/hooks/hook.py",
        project / "__pycache__/mod.py",
        project / "build/lib/mod.py",
        project / ".#mod.py",  # emacs lock file
        project / "mod.py~",  # backup
        project / ".mod.py.swp",  # vim swap
        project / "4913",  # vim's probe
    ]
    for path in ignored:
        path.write_text("x = 2\n")
    edit(project / "mod.py", '"one"', '"two"')  # the sentinel
    changed = app.wait_err(r"changed: (.+)$").group(1)
    assert changed == str(project / "mod.py")
    value_after(app, "two")
    lines = [line for line in app.err.lines if "changed:" in line]
    assert len(lines) == 1, lines


def test_watch_include_and_exclude_choose_what_triggers(dev, project: Path) -> None:
    write(
        project,
        {
            "lib/a.py": "X = 1\n",
            "lib/skip_b.py": "X = 1\n",
            "other/c.py": "X = 1\n",
            "lib/data.cfg": "1\n",
        },
    )
    app = dev(
        "-v",
        "-w",
        "lib",
        "--include",
        "*.py",
        "--include",
        "*.cfg",
        "--exclude",
        "skip_*",
        "app.py",
    )
    started(app)
    (project / "other/c.py").write_text("X = 2\n")  # not watched
    (project / "lib/skip_b.py").write_text("X = 2\n")  # excluded
    (project / "mod.py").write_text(MOD.replace("one", "two"))  # not watched either
    (project / "lib/data.cfg").write_text("2\n")  # included
    app.wait_err(rf"changed: {re.escape(str(project / 'lib/data.cfg'))}$")
    (project / "lib/a.py").write_text("X = 2\n")
    app.wait_err(rf"changed: {re.escape(str(project / 'lib/a.py'))}$")
    # lib/a.py is in the project but no process imported it: the patch line says so.
    app.wait_err(PATCH_LINE + r"; not imported by any process: lib\.a$")
    lines = [line for line in app.err.lines if "changed:" in line]
    assert len(lines) == 2, lines
    assert [line for line in app.out.lines if line[:1].isdigit()] == ["1 one"]


def test_no_color_is_respected_on_a_terminal(project: Path) -> None:
    def session(extra_env: dict[str, str]) -> str:
        master, slave = pty.openpty()
        env = {k: v for k, v in ENV.items() if k != "NO_COLOR"} | extra_env
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "thinlink",
                "dev",
                "--cache-dir",
                str(project.parent / "c"),
                "app.py",
            ],
            cwd=project,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=slave,
        )
        os.close(slave)
        output = bytearray()

        def read_until(text: bytes) -> None:
            deadline = time.monotonic() + TIMEOUT
            while text not in output:
                assert time.monotonic() < deadline, f"no {text!r} in {bytes(output)!r}"
                if select.select([master], [], [], 0.1)[0]:
                    output.extend(os.read(master, 65536))

        try:
            read_until(b" one")
            edit(project / "mod.py", '"one"', '"two"')
            read_until(b" two")
            read_until(b"processes in")
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(TIMEOUT)
            os.close(master)
            edit(project / "mod.py", '"two"', '"one"')
        return output.decode(errors="replace")

    colored = session({"TERM": "xterm"})
    assert re.search(r"\x1b\[[\d;]*m\d\d:\d\d:\d\d patched f", colored), colored
    plain = session({"TERM": "xterm", "NO_COLOR": "1"})
    assert "patched f" in plain and "\x1b[" not in plain, plain


# -- restarts -------------------------------------------------------------------------------

DATACLASS_MOD = """\
from dataclasses import dataclass


@dataclass
class Point:
    x: int = 1


def f():
    return f"{Point()}"
"""


def test_a_change_that_needs_a_restart_restarts_the_app(dev, project: Path) -> None:
    write(project, {"mod.py": DATACLASS_MOD})
    app = dev("app.py")
    pid = int(app.wait_out(r"^START (\d+)$").group(1))
    value_after(app, "Point(x=1)")
    edit(project / "mod.py", "    x: int = 1\n", "    x: int = 1\n    y: int = 2\n")
    reason = app.wait_err(r"restarting: (.+)$").group(1)
    assert f"{project / 'mod.py'}:4: fields of dataclass Point changed" in reason
    value_after(app, "Point(x=1, y=2)")
    assert len(starts(app)) == 2 and starts(app)[0] == pid != starts(app)[1]
    # The restarted app is patched as the first one was.
    edit(project / "mod.py", 'f"{Point()}"', 'f"{Point(3)}"')
    app.wait_err(PATCH_LINE)
    value_after(app, "Point(x=3, y=2)")
    assert len(starts(app)) == 2


def test_a_signature_change_a_library_may_not_see_is_said_on_the_patch_line(
    dev, project: Path
) -> None:
    pytest.importorskip("click")
    write(
        project,
        {
            "mod.py": """\
            import click


            def f(name="one"):
                return name


            command = click.Command("f", callback=f)  # click holds f, as registered
            """
        },
    )
    app = dev("app.py")
    started(app)
    edit(project / "mod.py", 'def f(name="one"):', 'def f(name="two", loud=False):')
    line = app.wait_err(PATCH_LINE + r"; may not be seen by (.+)$")
    assert line.group("what") == "f" and line.group(4) == "click.core.Command.callback"
    detail = app.wait_err(r"^  mod:f: .+$").group(0)
    assert "defaults and parameters changed; held by click.core.Command.callback" in detail
    assert "the change may not be seen there" in detail
    value_after(app, "two")  # the function itself runs the new code
    edit(project / "mod.py", "return name", "return name + '!'")
    plain = app.wait_err(PATCH_LINE + "$")  # a body edit: nothing to say
    assert plain.group("what") == "f"


def test_a_changed_module_level_call_restarts_with_its_reason(dev, project: Path) -> None:
    write(project, {"mod.py": 'CALLS = []\nCALLS.append("a")\n\n\ndef f():\n    return "one"\n'})
    app = dev("app.py")
    started(app)
    edit(project / "mod.py", 'CALLS.append("a")', 'CALLS.append("b")')
    reason = app.wait_err(r"restarting: (.+)$").group(1)
    assert f'{project / "mod.py"}:2: new module-level statement: CALLS.append("b")' in reason
    app.wait_out(r"^START ")
    assert len(starts(app)) == 2


def test_no_restart_keeps_the_app_and_sighup_restarts_it(dev, project: Path) -> None:
    write(project, {"mod.py": DATACLASS_MOD})
    app = dev("--no-restart", "app.py")
    pid = int(app.wait_out(r"^START (\d+)$").group(1))
    value_after(app, "Point(x=1)")
    edit(project / "mod.py", "    x: int = 1\n", "    x: int = 1\n    y: int = 2\n")
    reason = app.wait_err(r"needs a restart \(not restarting\): (.+)$").group(1)
    assert "fields of dataclass Point changed" in reason
    # A later edit still needs the restart (the app runs the old class), and says so.
    edit(project / "mod.py", 'f"{Point()}"', 'f"{Point(3)}"')
    app.wait_err(r"needs a restart \(not restarting\): .*fields of dataclass Point")
    assert starts(app) == [pid] and not app.patches()

    app.signal(signal.SIGHUP)
    app.wait_err(r"restarting: restart asked for \(SIGHUP\)")
    value_after(app, "Point(x=3, y=2)")  # the restarted app runs the latest build
    assert len(starts(app)) == 2
    edit(project / "mod.py", 'f"{Point(3)}"', 'f"{Point(4)}"')  # and is patched again
    app.wait_err(PATCH_LINE)
    value_after(app, "Point(x=4, y=2)")


# A process of the app that imported `work` and is connected to the session.
CONNECTED = """\
import os, sys, time
from hotpatch import _client
import work

deadline = time.monotonic() + 20
while _client._channel is None and time.monotonic() < deadline:
    time.sleep(0.005)
"""


def test_rs_and_enter_on_the_terminal_restarts_the_app(dev, project: Path) -> None:
    master, slave = pty.openpty()  # thinlink dev's stdin is a terminal
    try:
        app = dev("--keys", "app.py", stdin=slave)
        first = started(app)
        app.wait_err(r"type rs \+ Enter to restart the app")
        os.write(master, b"something else\n")
        os.write(master, b"rs\n")
        app.wait_err(r"restarting: restart asked for \(rs\)")
        wait_until(lambda: len(starts(app)) == 2, what="a second start")
        assert starts(app)[0] == first != starts(app)[1]
        edit(project / "mod.py", '"one"', '"two"')  # and the new app is patched as usual
        value_after(app, "two")
    finally:
        os.close(master)
        os.close(slave)


def test_a_patch_that_fails_in_some_processes_restarts_the_app(dev, project: Path) -> None:
    write(
        project,
        {
            "app.py": APP.replace(
                "import mod\n",
                "import mod, os, subprocess, sys, work\n"
                "child = subprocess.Popen([sys.executable, 'child.py'], "
                "env=dict(os.environ, CHILD='1'))\n",
            ),
            "child.py": CONNECTED + "print('CHILD READY', flush=True)\n"
            "while True:\n    time.sleep(0.01)\n",
            "work.py": "import os\n\nVALUE = 1\n",
        },
    )
    app = dev("app.py")
    started(app)
    app.wait_out(r"^CHILD READY$", since=0)
    # Re-run in every process; raises only in the child, which keeps the old code.
    edit(project / "work.py", "VALUE = 1", 'VALUE = 1 / 0 if "CHILD" in os.environ else 2')
    failed = app.wait_err(r"patch failed in pid (\d+): .*ZeroDivisionError")
    assert failed
    app.wait_err(r"restarting: the patch was applied in 1 of 2 processes only")
    app.wait_out(r"^START ")
    assert len(starts(app)) == 2


def test_a_restart_stops_the_processes_the_app_started(dev, project: Path) -> None:
    stubborn = (
        "import signal, time\\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\\ntime.sleep(60)"
    )
    write(
        project,
        {
            "app.py": APP.replace(
                "import mod\n",
                "import mod, subprocess, sys\n"
                f"child = subprocess.Popen([sys.executable, '-c', '{stubborn}'])\n"
                "print('CHILD', child.pid, flush=True)\n",
            )
        },
    )
    app = dev("app.py")
    old_child = int(app.wait_out(r"^CHILD (\d+)$").group(1))
    try:
        started(app)
        app.signal(signal.SIGHUP)
        app.wait_err(r"restarting: ")
        app.wait_out(r"^CHILD ")
        # The old child ignored SIGTERM; it went all the same, with the app it belonged to.
        wait_until(lambda: not _alive(old_child), what="the old app's child to go")
    finally:
        if _alive(old_child):
            os.kill(old_child, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


# -- signals and exit -----------------------------------------------------------------------

GRACEFUL_APP = """\
import os, signal, sys, time
terminated = []
signal.signal(signal.SIGTERM, lambda sig, frame: terminated.append(sig))
try:
    print("START", os.getpid(), flush=True)
    while not terminated:
        time.sleep(0.01)
    print("got SIGTERM", flush=True)
    sys.exit(7)
except KeyboardInterrupt:
    print("cleaning up", flush=True)
    sys.exit(3)
"""


def test_first_ctrl_c_stops_the_app_gracefully(dev, project: Path) -> None:
    write(project, {"app.py": GRACEFUL_APP})
    app = dev("app.py")
    app.wait_out(r"^START ")
    app.signal(signal.SIGINT)
    app.wait_out(r"^cleaning up$")
    stopped = time.monotonic()
    assert app.wait() == 3, app.transcript()  # the app's own exit status
    assert time.monotonic() - stopped < 3  # and at once (nothing waits for the grace)


def test_second_ctrl_c_forces_the_app_to_stop(dev, project: Path) -> None:
    write(
        project,
        {
            "app.py": GRACEFUL_APP.replace(
                "terminated = []\n",
                "terminated = []\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n",
            )
        },
    )
    app = dev("app.py")
    app.wait_out(r"^START ")
    app.signal(signal.SIGINT)
    app.wait_err(r"again to force")
    assert app.proc.poll() is None  # the app ignores SIGINT: still running
    started_at = time.monotonic()
    app.signal(signal.SIGINT)
    assert app.wait() == 128 + signal.SIGKILL, app.transcript()
    assert time.monotonic() - started_at < 3  # not the 5 s grace


def test_sigterm_is_forwarded_to_the_app(dev, project: Path) -> None:
    write(project, {"app.py": GRACEFUL_APP})
    app = dev("app.py")
    app.wait_out(r"^START ")
    app.signal(signal.SIGTERM)
    app.wait_out(r"^got SIGTERM$")
    assert app.wait() == 7, app.transcript()


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("import sys; sys.exit(5)", 5),
        ("raise SystemExit(0)", 0),
        ("1 / 0", 1),
        ("import os, signal; os.kill(os.getpid(), signal.SIGTERM)", 128 + 15),
    ],
)
def test_exits_with_the_app_status(dev, project: Path, code: str, status: int) -> None:
    write(project, {"app.py": code + "\n"})
    app = dev("app.py")
    assert app.wait() == status, app.transcript()
    if status == 1:
        assert "ZeroDivisionError" in app.err.text()


# -- settings -------------------------------------------------------------------------------


def thinlink_dev(root: Path, *args: str, env: dict[str, str] | None = None):  # noqa: ANN201
    return subprocess.run(
        [sys.executable, "-m", "thinlink", "dev", "--cache-dir", str(root.parent / "c"), *args],
        cwd=root,
        env={**ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


@pytest.mark.parametrize(
    ("args", "pyproject", "env", "message"),
    [
        (
            ["-w", "missing"],
            "",
            {},
            "watched path does not exist: {root}/missing (from the command line)",
        ),
        ([], '[tool.thinlink]\ncolour = "red"\n', {}, "unknown [tool.thinlink] setting(s): colour"),
        ([], '[tool.thinlink]\npoll = "yes"\n', {}, "poll: expected true or false, got 'yes'"),
        (
            [],
            '[tool.thinlink]\nwatch = ["nowhere"]\n',
            {},
            "watched path does not exist: {root}/nowhere (from {root}/pyproject.toml",
        ),
        ([], "", {"THINLINK_RESTART": "maybe"}, "THINLINK_RESTART='maybe': expected 1/0"),
        ([], "[tool.thinlink\n", {}, "pyproject.toml: "),
    ],
)
def test_bad_settings_are_clear_errors(project: Path, args, pyproject, env, message) -> None:
    (project / "pyproject.toml").write_text(pyproject)
    result = thinlink_dev(project, *args, "app.py", env=env)
    assert result.returncode == 2, result
    assert message.format(root=project) in result.stderr
    assert result.stderr.startswith("thinlink: error: ")
    assert "START" not in result.stdout  # the app never started


def test_settings_come_from_cli_then_env_then_pyproject(dev, project: Path) -> None:
    (project / "pyproject.toml").write_text(
        '[tool.thinlink]\nexclude = ["from_pyproject*"]\npoll = false\ninclude = ["*.py"]\n'
    )
    env = {"THINLINK_POLL": "1", "THINLINK_INCLUDE": "*.py,*.pyi"}
    app = dev("--include", "*.py", "app.py", env=env)
    banner = app.wait_err(r"^thinlink dev: watching .+ \((.+)\); build")
    assert banner.group(1) == "polling; include *.py; exclude from_pyproject*"


# -- sources and positions ------------------------------------------------------------------


def test_sources_are_read_as_python_reads_them(dev, project: Path) -> None:
    source = '# -*- coding: latin-1 -*-\ndef f():\n    return "caf\xe9"\n'
    (project / "mod.py").write_bytes(source.encode("latin-1"))
    app = dev("app.py")
    value_after(app, "caf\xe9")
    (project / "mod.py").write_bytes(source.replace("caf\xe9", "na\xefve").encode("latin-1"))
    app.wait_err(PATCH_LINE)
    value_after(app, "na\xefve")


TRACE_APP = """\
import os, time, traceback
import hotpatch
import mod

print("START", os.getpid(), flush=True)
last = None
while True:
    try:
        hotpatch.call(mod.f)
    except ValueError as exc:
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        code = mod.f.__code__
        value = [frame.filename, frame.lineno, frame.line, frame.name, code.co_filename,
                 code.co_firstlineno, str(exc)]
        if value != last:
            print("TB", __import__("json").dumps(value), flush=True)
            last = value
    time.sleep(0.002)
"""


def test_line_numbers_and_filenames_are_exact_after_patches(dev, project: Path) -> None:
    mod = project / "mod.py"
    write(project, {"app.py": TRACE_APP, "mod.py": 'def f():\n    raise ValueError("one")\n'})
    app = dev("app.py")

    def traceback_says(line: int, message: str) -> list:
        # Waits for the traceback of the new code. (Between a save and its patch the old
        # code runs with the new file on disk: its traceback shows the new file's text
        # at the old line, as under any reloader.)
        return json.loads(app.wait_out(rf'^TB (\[".+", {line}, .+, "{message}"\])$').group(1))

    assert traceback_says(2, "one") == [
        str(mod),
        2,
        'raise ValueError("one")',
        "f",
        str(mod),
        1,
        "one",
    ]
    # Lines added above f (it moves down 5 lines) and in its body, before the raise.
    mod.write_text(
        "# Docs.\n\nLIMIT = 3\n\n\ndef f():\n    x = LIMIT\n    y = x * 2\n"
        '    raise ValueError(f"two {y}")\n'
    )
    assert traceback_says(9, "two 6") == [
        str(mod),
        9,
        'raise ValueError(f"two {y}")',
        "f",
        str(mod),
        6,
        "two 6",
    ]
    # Only moved (a function inserted above it): relocated, its lines still exact.
    mod.write_text(mod.read_text().replace("def f():", "def g():\n    return 0\n\n\ndef f():"))
    assert traceback_says(13, "two 6")[1:3] == [13, 'raise ValueError(f"two {y}")']
    # Then its body edited, at the moved place.
    mod.write_text(mod.read_text().replace("x * 2", "x * 3"))
    assert traceback_says(13, "two 9")[1:6] == [
        13,
        'raise ValueError(f"two {y}")',
        "f",
        str(mod),
        10,
    ]
    wait_until(lambda: len(app.patches()) == 3, what="three patches")


# -- every process of the app ----------------------------------------------------------------

MP_APP = """\
import json, multiprocessing as mp, os, subprocess, sys, time
import work


def tag():
    return "main-1"


def task(i):
    time.sleep(0.02)
    return [os.getpid(), work.compute(), tag()]


def child(script, env=None):
    return subprocess.Popen([sys.executable, script], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)


def ask(proc):
    proc.stdin.write("go\\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


def on_every_worker(pool):
    # Rounds of tasks until each worker has run one (a busy machine may leave one
    # worker asleep through a round); the last answer of each.
    workers = sorted(p.pid for p in pool._pool)
    answers = {}
    deadline = time.monotonic() + 20
    while set(answers) != set(workers) and time.monotonic() < deadline:
        for answer in pool.map(task, range(2 * len(workers)), chunksize=1):
            answers[answer[0]] = answer
    return {"workers": workers, "answers": list(answers.values())}


def report(pools, children):
    answer = {name: on_every_worker(pool) for name, pool in pools.items()}
    answer["children"] = [ask(c) for c in children]
    print("REPORT", json.dumps(answer), flush=True)


if __name__ == "__main__":
    pools = {m: mp.get_context(m).Pool(2) for m in ("fork", "spawn", "forkserver")}
    children = [child("child.py")]
    # A process that joins late: it loads the session's build now but connects only
    # when told to, after the edit (the server then catches it up).
    hidden = dict(os.environ, LATE_ADDRESS=os.environ["HOTPATCH_ADDRESS"])
    del hidden["HOTPATCH_ADDRESS"]
    latecomer = child("latecomer.py", hidden)
    print("LATE", json.dumps(ask(latecomer)), flush=True)
    print("READY", flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "report":
            report(pools, children)
        elif command == "late":
            # Started after the edit: a new pool and a new subprocess.
            report({"spawn-late": mp.get_context("spawn").Pool(1)}, [child("child.py")])
        elif command == "connect":
            print("LATE", json.dumps(ask(latecomer)), flush=True)
"""
CHILD = """\
import json, os, sys
import work

for line in sys.stdin:
    print(json.dumps([os.getpid(), work.compute(), "child"]), flush=True)
"""
LATECOMER = """\
import json, os, sys, time
from hotpatch import _child, _client

_child.start()  # the session's image, as a process of the app loads it; no address yet
import work

sys.stdin.readline()
print(json.dumps([os.getpid(), work.compute(), _client.running()]), flush=True)
sys.stdin.readline()
os.environ["HOTPATCH_ADDRESS"] = os.environ.pop("LATE_ADDRESS")
_client.start()
deadline = time.monotonic() + 20
while work.compute() == "v1" and time.monotonic() < deadline:
    time.sleep(0.005)
print(json.dumps([os.getpid(), work.compute(), _client.running()]), flush=True)
"""


def test_every_process_of_the_app_is_patched_without_restarting(dev, project: Path) -> None:
    write(
        project,
        {
            "app.py": MP_APP,
            "work.py": 'def compute():\n    return "v1"\n',
            "child.py": CHILD,
            "latecomer.py": LATECOMER,
        },
    )
    app = dev("-v", "app.py", stdin=subprocess.PIPE)

    def command(text: str) -> dict:
        app.proc.stdin.write(text + "\n")
        app.proc.stdin.flush()
        return json.loads(app.wait_out(r"^REPORT (.+)$").group(1))

    late = json.loads(app.wait_out(r"^LATE (.+)$").group(1))
    assert late[1:] == ["v1", False]
    app.wait_out(r"^READY$")
    before = command("report")
    for mode in ("fork", "spawn", "forkserver"):
        pool = before[mode]
        assert sorted(a[0] for a in pool["answers"]) == pool["workers"], (mode, pool)
        assert {tuple(a[1:]) for a in pool["answers"]} == {("v1", "main-1")}
    assert before["children"][0][1] == "v1"

    edit(project / "work.py", '"v1"', '"v2"')
    edit(project / "app.py", '"main-1"', '"main-2"')  # spawned workers run it as __mp_main__
    wait_until(
        lambda: all(any(name in line for line in app.patches()) for name in ("compute", "tag")),
        what="both patches",
    )
    after = command("report")
    for mode in ("fork", "spawn", "forkserver"):
        pool = after[mode]
        assert pool["workers"] == before[mode]["workers"], f"{mode} workers were restarted"
        assert sorted(a[0] for a in pool["answers"]) == pool["workers"], (mode, pool)
        assert {tuple(a[1:]) for a in pool["answers"]} == {("v2", "main-2")}, (mode, pool)
    assert after["children"][0] == [before["children"][0][0], "v2", "child"]

    # Processes started after the edit run the new code from the start.
    late_start = command("late")
    assert {tuple(a[1:]) for a in late_start["spawn-late"]["answers"]} == {("v2", "main-2")}
    assert late_start["children"][0][1] == "v2"
    # One that loaded the old build and connects only now is caught up on joining.
    app.proc.stdin.write("connect\n")
    app.proc.stdin.flush()
    assert json.loads(app.wait_out(r"^LATE (.+)$").group(1)) == [late[0], "v2", True]
    app.wait_err(rf"pid {late[0]} caught up to \w+")
    assert len(starts(app)) == 0 and app.err.text().count("restarting") == 0


FORKER = (
    CONNECTED
    + """\
pid = os.fork()  # the child inherits the connection's socket
if pid:
    print("FORKED", pid, flush=True)
    os._exit(0)  # the parent leaves; its child lives on
last = None
while True:
    if work.compute() != last:
        last = work.compute()
        print("FORKED CHILD", last, flush=True)
    time.sleep(0.005)
"""
)


def test_a_process_that_leaves_while_its_forked_child_lives_is_not_waited_for(
    dev, project: Path
) -> None:
    write(
        project,
        {
            "app.py": APP.replace(
                "import mod\n",
                "import mod, subprocess, sys\nsubprocess.run([sys.executable, 'forker.py'])\n",
            ),
            "forker.py": FORKER,
            "work.py": 'def compute():\n    return "v1"\n',
        },
    )
    app = dev("-v", "app.py")  # verbose: says when each process has connected
    child = int(app.wait_out(r"^FORKED (\d+)$").group(1))
    try:
        app.wait_out(r"^FORKED CHILD v1$", since=0)
        app.wait_out(r"^\d+ one$", since=0)
        # The child starts its own client after the fork: the patch is made once the
        # session has it (it printed its first value before that, and once counted "1/1").
        app.wait_err(rf"pid {child} connected at build \w+", since=0)
        saved = time.monotonic()
        edit(project / "work.py", '"v1"', '"v2"')
        line = app.wait_err(PATCH_LINE)
        assert time.monotonic() - saved < 5  # not a wait for the gone parent's report
        assert line.group("done") == line.group("connected") == "2"  # the app, the child
        app.wait_out(r"^FORKED CHILD v2$")
        assert "failed" not in app.err.text() and "restarting" not in app.err.text()
    finally:
        os.kill(child, signal.SIGKILL)


# Forks while another thread holds the client's send lock, as the client thread does
# while it says its hello or sends a report (a thread the child does not have).
FORKED_MID_SEND = (
    CONNECTED
    + """\
import threading

held, release = threading.Event(), threading.Event()


def hold():
    with _client._send_lock:
        held.set()
        release.wait()


threading.Thread(target=hold, daemon=True).start()
held.wait()
pid = os.fork()
release.set()
if pid:
    print("FORKED", pid, flush=True)
last = None
while True:
    if work.compute() != last:
        last = work.compute()
        print("PID", os.getpid(), last, flush=True)
    time.sleep(0.005)
"""
)


def test_a_process_forked_while_its_client_was_sending_joins_the_session(
    dev, project: Path
) -> None:
    # The child's client got new locks: with the parent's, held by a thread the child
    # does not have, it never said its hello (the server dropped it after 5 s, and the
    # child ran the old code on: that was the forked-child test's "1/1 processes").
    write(
        project,
        {
            "app.py": APP.replace(
                "import mod\n",
                "import mod, subprocess, sys\nsubprocess.Popen([sys.executable, 'forker.py'])\n",
            ),
            "forker.py": FORKED_MID_SEND,
            "work.py": 'def compute():\n    return "v1"\n',
        },
    )
    app = dev("-v", "app.py")
    child = int(app.wait_out(r"^FORKED (\d+)$").group(1))
    try:
        app.wait_err(rf"pid {child} connected at build \w+", since=0)
        app.wait_out(rf"^PID {child} v1$", since=0)
        edit(project / "work.py", '"v1"', '"v2"')
        line = app.wait_err(PATCH_LINE)
        assert line.group("done") == line.group("connected") == "3"  # app, forker, child
        app.wait_out(rf"^PID {child} v2$")
        assert "dropped a connection" not in app.err.text()
    finally:
        os.kill(child, signal.SIGKILL)
