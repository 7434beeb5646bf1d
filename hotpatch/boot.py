"""Run a program the way the ``python`` command does, with its modules loaded from a build.

    python -m hotpatch.boot [--image PATH] (SCRIPT | -m MODULE) [ARGS...]

What we reproduce (checked against CPython 3.11-3.13 by tests/hotpatch/test_boot.py):
``sys.argv``; ``sys.path[0]`` (the script's directory with symlinks resolved, the
current directory for ``-m``, nothing under ``-P``/``-I``); a fresh ``__main__`` with the
attributes CPython gives it; a directory or zip with ``__main__.py`` run as a script;
``-m`` through runpy's own ``_run_module_as_main``; an uncaught exception printed through
``sys.excepthook`` with exit status 1; ``SystemExit`` passed through; and an uncaught
``KeyboardInterrupt`` re-raised to the interpreter, which then exits by SIGINT.

Tracebacks: the frames of this module are cut from the front, so a traceback starts
where CPython's does (at the script, or at runpy's frames for ``-m``, which CPython shows
too). What cannot be hidden: the program's top-level frame has our frames below it
(``sys._getframe(1)`` at module level, ``traceback.print_stack()``), and this module's
imports (runpy, the loader) are in ``sys.modules`` before the program starts.
"""

from __future__ import annotations

import builtins
import os
import sys
from importlib.machinery import SourceFileLoader, SourcelessFileLoader

from . import _jumptable
from ._loader import BuildFinder, install, uninstall
from .image import Image, ImageError, read_image

__all__ = ["SITE_DIR", "main", "run_module", "run_script", "stop_using_image", "use_image"]

TYPE_CHECKING = False  # the start-up path: see hotpatch/__init__.py
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType, TracebackType
    from typing import TypeVar

    T = TypeVar("T")
_ModuleType = type(sys)  # types.ModuleType, without importing types

# Put on PYTHONPATH (by `thinlink dev`), it makes every Python process a program starts
# (multiprocessing workers, subprocesses) load the session's build and join the session.
SITE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_site")

_USAGE = "usage: python -m hotpatch.boot [--image PATH] (SCRIPT | -m MODULE) [ARGS...]\n"


def run_script(
    image: Image | str | None,
    script: str,
    argv: list[str],
    *,
    trusted: dict[str, tuple] | None = None,
) -> None:
    """Run ``script`` as ``python SCRIPT ARGV...`` would, loading modules from the image
    (an `Image`, or the path of one); ``trusted`` as for `hotpatch._loader.install`.

    An uncaught exception is printed and raises ``SystemExit(1)``; ``SystemExit`` from
    the program passes through; ``KeyboardInterrupt`` is printed and re-raised, so the
    caller must let it reach the interpreter (which then exits by SIGINT, as CPython does).
    """
    finder = _start(image, trusted)
    path = os.path.abspath(script)
    sys.argv = [script, *argv]
    if _has_importer(path):
        # A directory or zip file: CPython runs its __main__ module through runpy, and
        # puts the path first on sys.path even under -P.
        if sys.flags.safe_path:
            sys.path.insert(0, path)
        else:
            _set_path0(path)
        _fresh_main()
        _run(lambda: _runpy()._run_module_as_main("__main__", alter_argv=False))
        return
    _set_path0(os.path.dirname(os.path.realpath(path)))
    if path.endswith(".pyc"):
        loader = SourcelessFileLoader("__main__", path)
        code = _run(lambda: loader.get_code("__main__"))
    else:
        loader = finder.loader_for("__main__", path) if finder else None
        if loader is not None:
            code = loader.get_code("__main__")
        else:
            loader = SourceFileLoader("__main__", path)
            source = _read_script(path)
            # compile() is built in, so a SyntaxError's traceback holds only our frames,
            # which _report cuts: printed as CPython does, without a traceback header.
            code = _run(lambda: compile(source, path, "exec", dont_inherit=True))
    module = _fresh_main()
    module.__dict__.update(__loader__=loader, __file__=path, __cached__=None)
    _run(lambda: exec(code, module.__dict__))


def run_module(
    image: Image | str | None,
    module: str,
    argv: list[str],
    *,
    trusted: dict[str, tuple] | None = None,
) -> None:
    """Run ``module`` as ``python -m MODULE ARGV...`` would, loading modules from the image.

    Exceptions are handled as by `run_script`.
    """
    _start(image, trusted)
    sys.argv = ["-m", *argv]  # CPython's sys.argv[0] while the module is being found
    _set_path0(os.getcwd())
    _fresh_main()
    _run(lambda: _runpy()._run_module_as_main(module, alter_argv=True))


def main(args: list[str] | None = None) -> None:
    """Command-line entry: ``[--image PATH] (SCRIPT | -m MODULE) [ARGS...]``."""
    args = list(sys.argv[1:] if args is None else args)
    image_path = None
    if args and args[0].startswith("--image"):
        option = args.pop(0)
        if option.startswith("--image="):
            image_path = option.partition("=")[2]
        elif option == "--image" and args:
            image_path = args.pop(0)
        else:
            _usage_error(f"bad option: {option}")
    if not args:
        _usage_error("a script or -m MODULE is required")
    try:
        if args[0].startswith("-m"):
            module = args[0][2:] or (args[1] if len(args) > 1 else None)
            if module is None:
                _usage_error("argument expected for the -m option")
            run_module(image_path, module, args[1 if args[0] != "-m" else 2 :])
        elif args[0].startswith("-"):
            _usage_error(f"unknown option: {args[0]}")
        else:
            run_script(image_path, args[0], args[1:])
    except ImageError as exc:
        sys.stderr.write(f"hotpatch: error: {exc}\n")
        raise SystemExit(2) from None


def start_patch_client(image: Image | None) -> None:
    """Connect to the dev server (when the environment names one) in a daemon thread,
    which applies the patches it sends; called once before the program's code runs."""
    if not os.environ.get("HOTPATCH_ADDRESS"):
        return  # no dev session: load nothing more
    from . import _client

    _client.start()


def use_image(image: Image | str, trusted: dict[str, tuple] | None = None) -> bool:
    """Import the project's modules from `image` from now on, in a process a build did
    not start (a notebook kernel): each module whose file still holds the build's bytes
    runs the build's code instead of being compiled. Modules imported already keep their
    code; the process's build (which patches it accepts) stays as it is.

    `trusted`: source paths and the stat signatures that vouch for their bytes
    (`hotpatch.image.signature`), so those files are not read. Another image replaces
    this one; `stop_using_image()` undoes it. Returns False, and changes nothing, in a
    process started from a build: that build's image serves it already."""
    if _jumptable.current_build() is not None:
        return False
    install(read_image(image) if isinstance(image, str) else image, trusted)
    return True


def stop_using_image() -> None:
    """Import as python does again (undoes `use_image`). Idempotent."""
    uninstall()


def _start(image: Image | str | None, trusted: dict[str, tuple] | None) -> BuildFinder | None:
    """Install the image's finder (if any) and the patch client hook; return the finder."""
    if isinstance(image, str):
        image = read_image(image)
    finder = None if image is None else install(image, trusted)
    if image is not None:
        _jumptable.set_build(image.build_id)  # patches for another build are refused
    if os.environ.get("HOTPATCH_ENABLED") == "1":
        _jumptable.enable()
    start_patch_client(image)
    return finder


def _runpy():
    # Imported only when needed (-m, a directory or zip): it costs a few milliseconds
    # of a script's start-up, and CPython itself imports it only for those.
    import runpy

    return runpy


def _set_path0(entry: str) -> None:
    # sys.path[0] is the entry the interpreter prepended for whoever started us (the
    # cwd under -m, a console script's bin directory): the program's entry replaces it.
    # Under -P / -I the interpreter prepends nothing, and neither do we.
    if sys.flags.safe_path:
        return
    if sys.path:
        sys.path[0] = entry
    else:
        sys.path.insert(0, entry)


def _has_importer(path: str) -> bool:
    """True if a path hook accepts ``path`` (a directory or zip), as CPython checks."""
    if path in sys.path_importer_cache:
        return sys.path_importer_cache[path] is not None
    for hook in sys.path_hooks:
        try:
            importer = hook(path)
        except ImportError:
            continue
        sys.path_importer_cache[path] = importer
        return True
    return False  # like PyImport_GetImporter, a miss is not cached


def _read_script(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        program = sys.orig_argv[0] if sys.orig_argv else sys.executable
        sys.stderr.write(
            f"{program}: can't open file {path!r}: [Errno {exc.errno}] {exc.strerror}\n"
        )
        raise SystemExit(2) from None


def _fresh_main() -> ModuleType:
    """Replace ``sys.modules["__main__"]`` with a module shaped like CPython's."""
    module = _ModuleType("__main__")  # __name__, __doc__, __package__, ...
    if sys.version_info < (3, 14):
        module.__annotations__ = {}  # module annotations are lazy from 3.14 (PEP 649)
    module.__builtins__ = builtins
    sys.modules["__main__"] = module
    return module


def _run(action: Callable[[], T]) -> T:
    """Call ``action()``; report what escapes it as CPython's top level would."""
    try:
        return action()
    except SystemExit:
        raise
    except BaseException as exc:
        error = exc
    # Reported outside the except block: CPython calls sys.excepthook with no exception
    # being handled (an empty sys.exc_info(), no implicit __context__ for its errors).
    _report(error)
    if isinstance(error, KeyboardInterrupt):
        _silence_next_report(error)
        raise error
    raise SystemExit(1)


def _report(exc: BaseException) -> None:
    """Print ``exc`` as ``PyErr_Print`` does, with our frames cut from the traceback."""
    tb = exc.__traceback__ = _cut(exc.__traceback__)
    sys.last_type, sys.last_value, sys.last_traceback = type(exc), exc, tb
    if sys.version_info >= (3, 12):
        sys.last_exc = exc
    hook = getattr(sys, "excepthook", None)
    if hook is None:
        sys.stderr.write("sys.excepthook is missing\n")
        sys.__excepthook__(type(exc), exc, tb)
        return
    try:
        hook(type(exc), exc, tb)
    except SystemExit:
        raise
    except BaseException as err:
        err.__traceback__ = _cut(err.__traceback__)
        sys.stderr.write("Error in sys.excepthook:\n")
        sys.__excepthook__(type(err), err, err.__traceback__)
        sys.stderr.write("\nOriginal exception was:\n")
        sys.__excepthook__(type(exc), exc, tb)


def _cut(tb: TracebackType | None) -> TracebackType | None:
    """Drop this module's frames from the front of ``tb``."""
    while tb is not None and tb.tb_frame.f_globals is globals():
        tb = tb.tb_next
    return tb


def _silence_next_report(exc: BaseException) -> None:
    # The interpreter will print `exc` again (with our frames) when it reaches the top
    # level; the hook it calls swallows that one report, then steps aside.
    hook = getattr(sys, "excepthook", sys.__excepthook__)

    def once(exc_type, value, tb):
        sys.excepthook = hook
        if value is not exc:
            hook(exc_type, value, tb)

    sys.excepthook = once


def _usage_error(message: str) -> None:
    sys.stderr.write(f"{_USAGE}error: {message}\n")
    raise SystemExit(2)


if __name__ == "__main__":
    # Run from the module imported under its own name, not from this __main__ copy
    # (which the program's __main__ replaces), so there is one set of hooks.
    from hotpatch.boot import main as _main

    _main()
