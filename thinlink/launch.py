"""The launch path: is the last build still the working tree, and run a program from it.

`thinlink run`, `thinlink build` and `thinlink dev` start here. The project's root and
cache are found, its module files walked, and each compared with the tree state the last
build left (`TreeState`: per file its module name, its stat and its source digest). A
file whose stat is as recorded is unchanged; any other is read and its digest compared,
so a file touched but not changed (a branch switch and back) is still the build's.
When nothing changed, this module alone answers: `build` says "up to date", and `run`
starts the program from the build's image. Only a real change loads the builder.

Why this module keeps to the standard library, and within it to what the interpreter
has loaded at start-up (no typing, dataclasses, pathlib or json): a warm start of an app
of 150 modules under `thinlink run` must cost no more than plain python with its pycs
(50-90 ms on a 2-core machine), where `import typing` alone costs 10 ms. The rest of
thinlink is ordinary code, loaded when there is work for it.

Why a stat can stand for the content: a stat is recorded only for a file that has not
changed (mtime and ctime) for `RACY_NS` before the build read it, so a later write
cannot leave the same stat behind (as git's index does for "racily clean" files); the
change time cannot be set back by anyone but the clock. Any other difference in the stat
costs a read and a digest, never a wrong answer.
"""

from __future__ import annotations

import marshal
import os
import sys
import time

from hotpatch.fileio import write_atomic
from hotpatch.image import FORMAT as IMAGE_FORMAT
from hotpatch.image import MAGIC_NUMBER, signature, source_digest
from thinlink.errors import CacheDirError, ProjectError

TYPE_CHECKING = False  # typing.TYPE_CHECKING: see the module docstring
if TYPE_CHECKING:
    from hotpatch.image import Image

__all__ = [
    "CACHE_TAG_FILE",
    "INTERPRETER_TAG",
    "RACY_NS",
    "TreeCheck",
    "TreeState",
    "cache_location",
    "check_tree",
    "claim_cache_dir",
    "discover",
    "find_root",
    "is_ignored_dir",
    "is_source",
    "main",
    "program_start",
    "read_source",
]

# How stored records, manifests and tree states are laid out: bumped when any changes, so
# that what an older thinlink wrote is never read as current.
STORAGE_FORMAT = 4
# The interpreter a build is for (cache tag and bytecode magic) and the storage format:
# in every cache key, ref, manifest and tree state, so Pythons and formats never mix.
INTERPRETER_TAG = f"{sys.implementation.cache_tag}-{MAGIC_NUMBER.hex()}-s{STORAGE_FORMAT}"

ROOT_MARKERS = ("pyproject.toml", "setup.py", "setup.cfg", ".git")
# Directories nobody means to build or watch, besides hidden ones, `*.egg-info`, virtual
# environments (any directory holding a `pyvenv.cfg`) and setuptools' `build`/`dist`
# output (unless it is a real package, with an `__init__.py`).
IGNORED_DIRS = frozenset(
    {"__pycache__", "site-packages", "dist-packages", "node_modules", "venv", "env"}
)
_OUTPUT_DIRS = frozenset({"build", "dist"})

# The file that marks a directory as a thinlink cache (the Cache Directory Tagging
# convention: backup tools skip such directories). `thinlink clean` removes only what a
# cache holds, and a directory holding anything else is never adopted as one.
CACHE_TAG_FILE = "CACHEDIR.TAG"
_CACHE_TAG = (
    b"Signature: 8a477f597d28d172789f06886806bc55\n"
    b"# This directory is a thinlink build cache: `thinlink clean` removes it.\n"
)
CACHE_ENTRIES = frozenset({CACHE_TAG_FILE, "objects", "builds", "refs", "images", "trees"})

RACY_NS = 2_000_000_000  # a stat is trusted only for files unchanged this long before
_TREE_MAGIC = b"TLTREE01"


# the project and its cache ----------------------------------------------------------------


def find_root(start: str | os.PathLike[str] | None = None, *, search: bool = True) -> str:
    """The project root for `start` (default: the current directory): the nearest directory
    holding a `pyproject.toml`, `setup.py`, `setup.cfg` or `.git`; without one, `start`
    itself, unless that is a file-system root or the home directory (`ProjectError`).
    With `search=False`, `start` is the root (a PATH the user named), checked the same."""
    here = os.path.realpath(start or os.getcwd())
    if os.path.isfile(here):
        here = os.path.dirname(here)
    candidate = here
    while True:
        if any(os.path.exists(os.path.join(candidate, m)) for m in ROOT_MARKERS):
            return candidate
        parent = os.path.dirname(candidate)
        if parent == candidate or not search:
            break
        candidate = parent
    home = os.path.realpath(os.path.expanduser("~"))
    if os.path.dirname(here) == here or here == home:
        where = "the file-system root" if os.path.dirname(here) == here else "your home directory"
        raise ProjectError(
            f"{here} is {where} and no project marker ({', '.join(ROOT_MARKERS)}) was found "
            "there or above: run thinlink inside your project, or add a pyproject.toml to "
            "its top directory"
        )
    return here


def cache_location(root: str, given: str | os.PathLike[str] | None = None) -> str:
    """Where the cache lives: `given` (`--cache-dir`), `THINLINK_CACHE_DIR`, `cache-dir` in
    `[tool.thinlink]` of `root/pyproject.toml`, else `root/.thinlink`."""
    configured = _configured_cache_dir(root)  # read whatever wins: a bad file is an error
    if given:
        return os.path.realpath(given)
    env = os.environ.get("THINLINK_CACHE_DIR")
    if env:
        return os.path.realpath(env)
    if configured is not None:
        return os.path.realpath(os.path.join(root, configured))
    return os.path.join(root, ".thinlink")


def _configured_cache_dir(root: str) -> str | None:
    path = os.path.join(root, "pyproject.toml")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    if b"thinlink" not in data:
        return None  # no [tool.thinlink] table: not parsed (tomllib costs 10 ms here)
    from thinlink.config import pyproject_settings  # validates the table, with messages
    from thinlink.errors import ConfigError

    value = pyproject_settings(root).get("cache-dir")
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{path} [tool.thinlink] cache-dir: expected a string, got {value!r}")
    return value


def claim_cache_dir(path: str) -> None:
    """Make `path` a cache directory, or check that it is one, before writing to it.

    A missing or empty directory becomes one (`CACHE_TAG_FILE` is written); one that
    holds anything but a cache's own entries is refused (`CacheDirError`): a
    `--cache-dir` pointing at the user's files must never be adopted, since `thinlink
    clean` would then be asked to remove them.
    """
    tag = os.path.join(path, CACHE_TAG_FILE)
    if os.path.isfile(tag):
        return
    try:
        names = set(os.listdir(path))
    except FileNotFoundError:
        names = set()
    except OSError as exc:
        raise CacheDirError(f"cannot use {path} as the cache: {exc.strerror or exc}") from None
    foreign = sorted(n for n in names if n not in CACHE_ENTRIES and not _is_cache_leftover(n))
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise CacheDirError(
            f"{path} holds files that are not a thinlink cache's ({shown}): refusing to use "
            "it as the cache; name an empty or new directory with --cache-dir or "
            "THINLINK_CACHE_DIR"
        )
    write_atomic(tag, _CACHE_TAG)


def _is_cache_leftover(name: str) -> bool:
    """Entries a cache makes besides its own: a damaged store set aside, temporary files."""
    return name.startswith(("objects.damaged-", ".")) and not name.startswith("..")


# the project's files ------------------------------------------------------------------------


def discover(root: str) -> tuple[list[tuple[str, str]], list[str]]:
    """All module files under `root` as (absolute path, dotted module name), sorted by
    path, and warnings about what was skipped.

    The real tree is walked first; symbolic links to directories are followed after
    it, once each: a link to a directory already walked (a loop, or a second name for
    a directory of the project) is skipped with a warning, so a module keeps its real
    name and nothing is walked forever.
    """
    walk = _Walk(os.path.realpath(root))
    tops = [walk.root]
    while tops:
        links: list[str] = []
        for top in tops:
            walk.tree(top, links)
        tops = links
    walk.found.sort()
    return walk.found, walk.warnings


def is_ignored_dir(path: str, name: str) -> bool:
    """True for a directory (`path`, named `name`) that is not part of the project's
    sources: what the build skips and the watcher ignores."""
    if name.startswith(".") or name in IGNORED_DIRS or name.endswith(".egg-info"):
        return True
    if name in _OUTPUT_DIRS and not os.path.exists(os.path.join(path, "__init__.py")):
        return True
    return os.path.exists(os.path.join(path, "pyvenv.cfg"))


def is_source(root: str, path: str) -> bool:
    """Whether `path` (a real path) is a module file that `discover(root)` finds: a
    `*.py` below `root`, in no directory the build skips."""
    base = os.path.join(os.path.realpath(root), "")
    if not path.startswith(base) or not path.endswith(".py"):
        return False
    *folders, name = path[len(base) :].split(os.sep)
    if name.startswith("."):
        return False
    parent = base.rstrip(os.sep)
    for folder in folders:
        here = os.path.join(parent, folder)
        if is_ignored_dir(here, folder):
            return False
        parent = here
    return True


class _Walk:
    """One discovery: the directories seen so far, the modules found and the warnings.

    `os.scandir` rather than `os.walk`: it tells directories, files and links apart
    without a system call each, and module names are derived once per directory.
    """

    def __init__(self, root: str) -> None:
        self.root = root
        src = os.path.join(root, "src")
        self.src = src if os.path.isdir(src) else None  # the `src` layout: names start below
        self.seen: set[tuple[int, int]] = set()  # (device, inode) of each directory walked
        self.found: list[tuple[str, str]] = []
        self.warnings: list[str] = []

    def tree(self, top: str, links: list[str]) -> None:
        """Walk `top` without following links; the links to directories go to `links`.
        Depth first, in sorted order, so links are met in the order `os.walk` meets them."""
        stack = [top]
        while stack:
            path = stack.pop()
            subdirs = self._directory(path)
            links.extend(os.path.join(path, name) for name, is_link in subdirs if is_link)
            stack.extend(
                os.path.join(path, name) for name, is_link in reversed(subdirs) if not is_link
            )

    def _directory(self, path: str) -> list[tuple[str, bool]]:
        """Record the modules in directory `path`; return its subdirectories to walk,
        sorted, each with whether it is a symbolic link."""
        try:
            st = os.stat(path)
        except OSError as exc:
            self.warnings.append(f"{path}: cannot read directory: {exc.strerror}")
            return []
        if (st.st_dev, st.st_ino) in self.seen:
            target = os.path.realpath(path)
            if target in _parents(path):
                self.warnings.append(f"{path}: symlink loop (to {target}), skipped")
            else:
                self.warnings.append(f"{path}: symlink to {target}, already included, skipped")
            return []
        self.seen.add((st.st_dev, st.st_ino))
        subdirs, files = [], []
        try:
            with os.scandir(path) as entries:
                for entry in entries:
                    try:
                        is_dir = entry.is_dir()  # through links, as os.walk tells them
                    except OSError:
                        is_dir = False
                    if is_dir:
                        if not is_ignored_dir(entry.path, entry.name):
                            subdirs.append((entry.name, _is_link(entry)))
                    elif entry.name.endswith(".py") and not entry.name.startswith("."):
                        files.append(entry.name)
        except OSError as exc:
            self.warnings.append(f"{exc.filename or path}: cannot read directory: {exc.strerror}")
            return []
        if files:
            package = self._package(path)
            for filename in files:
                stem = filename[:-3]
                name = package if stem == "__init__" else f"{package}.{stem}" if package else stem
                self.found.append((os.path.join(path, filename), name or stem))
        subdirs.sort()
        return subdirs

    def _package(self, path: str) -> str:
        """The dotted name of directory `path` (relative to the root, or to `src/`)."""
        base = self.root
        if self.src is not None and (path == self.src or path.startswith(self.src + os.sep)):
            base = self.src
        relative = os.path.relpath(path, base)
        return "" if relative == os.curdir else relative.replace(os.sep, ".")


def _is_link(entry: os.DirEntry) -> bool:
    try:
        return entry.is_symlink()
    except OSError:
        return False


def _parents(path: str) -> set[str]:
    """Every directory above `path`."""
    parents = set()
    while True:
        parent = os.path.dirname(path)
        if parent == path:
            return parents
        parents.add(parent)
        path = parent


# the tree state: what the last build saw ----------------------------------------------------


class TreeState:
    """What the last build of a project saw: its build id, unit count and errors, and per
    file its module name, stat `signature` (None where it could not be trusted) and
    source digest (None for a file that could not be read).

    One small file per project root and interpreter under the cache's `trees/`; written by
    every build whose outcome or stats differ from the state on disk."""

    __slots__ = ("build_id", "units", "errors", "files")

    def __init__(
        self,
        build_id: str,
        units: int,
        errors: tuple[str, ...],
        files: dict[str, tuple[str, tuple | None, str | None]],
    ) -> None:
        self.build_id = build_id
        self.units = units
        self.errors = errors
        self.files = files

    @staticmethod
    def path(cache_dir: str, root: str) -> str:
        where = source_digest(root.encode("utf-8", "surrogatepass"))[:16]
        return os.path.join(cache_dir, "trees", f"{where}-{INTERPRETER_TAG}")

    @classmethod
    def read(cls, cache_dir: str, root: str) -> TreeState | None:
        """The state on disk, or None (none yet, unreadable, or for another root)."""
        try:
            with open(cls.path(cache_dir, root), "rb") as f:
                data = f.read()
            if data[: len(_TREE_MAGIC)] != _TREE_MAGIC:
                return None
            stored_root, build_id, units, errors, files = marshal.loads(data[len(_TREE_MAGIC) :])
        except (OSError, ValueError, EOFError, TypeError):
            return None  # a damaged state is no state: the next build reads every file
        if stored_root != root or not isinstance(files, dict):
            return None
        return cls(build_id, units, tuple(errors), files)

    def write(self, cache_dir: str, root: str) -> None:
        payload = marshal.dumps((root, self.build_id, self.units, list(self.errors), self.files))
        write_atomic(self.path(cache_dir, root), _TREE_MAGIC + payload)


class TreeCheck:
    """The working tree compared with the last build's `TreeState`.

    `files`: (path, module name) of every module file, sorted. `changed`: the paths whose
    content differs from the state (new files included), with the bytes read for them in
    `data` and their digests in `digests`. `removed`: files of the state that are gone.
    `signatures`: the stat of every file as seen now. `fresh`: nothing differs.
    """

    __slots__ = (
        "root",
        "cache_dir",
        "state",
        "files",
        "warnings",
        "signatures",
        "changed",
        "data",
        "digests",
        "removed",
        "started",
        "touched",
    )

    def __init__(self, root: str, cache_dir: str, state: TreeState | None) -> None:
        self.root = root
        self.cache_dir = cache_dir
        self.state = state
        self.files: list[tuple[str, str]] = []
        self.warnings: list[str] = []
        self.signatures: dict[str, tuple | None] = {}
        self.changed: list[str] = []
        self.data: dict[str, bytes] = {}
        self.digests: dict[str, str] = {}
        self.removed: list[str] = []
        self.started = time.time_ns()
        self.touched = False  # some stat differs though the content does not

    @property
    def fresh(self) -> bool:
        return self.state is not None and not self.changed and not self.removed

    def trusted_signature(self, path: str) -> tuple | None:
        """The signature to record for `path`: None for a file changed so recently that a
        write in the same clock tick could leave the same stat."""
        sig = self.signatures.get(path)
        if sig is None or self.started - max(sig[1], sig[2]) < RACY_NS:
            return None
        return sig

    def refresh_state(self) -> None:
        """Write the state again with the stats seen now (content unchanged), so the next
        launch compares stats only."""
        state = self.state
        if state is None or not self.touched:
            return
        files = {
            path: (name, self.trusted_signature(path), state.files[path][2])
            for path, name in self.files
        }
        try:
            TreeState(state.build_id, state.units, state.errors, files).write(
                self.cache_dir, self.root
            )
        except OSError:
            pass  # a read-only or full cache: the next launch reads the files again


def check_tree(root: str, cache_dir: str) -> TreeCheck:
    """Compare the project's files with the state its last build left."""
    check = TreeCheck(root, cache_dir, TreeState.read(cache_dir, root))
    known = check.state.files if check.state is not None else {}
    check.files, check.warnings = discover(root)
    for path, name in check.files:
        try:
            sig = signature(os.stat(path))
        except OSError:
            check.changed.append(path)  # unreadable now: the builder says why
            continue
        check.signatures[path] = sig
        before = known.get(path)
        if before is not None and before[0] == name and before[1] == sig:
            continue
        try:
            data = read_source(path)
        except OSError:
            check.changed.append(path)
            continue
        digest = source_digest(data)
        if before is not None and before[0] == name and before[2] == digest:
            check.touched = True
            continue
        check.changed.append(path)
        check.data[path] = data
        check.digests[path] = digest
    if known:
        present = {path for path, _ in check.files}
        check.removed = [path for path in known if path not in present]
    return check


def read_source(path: str) -> bytes:
    """The bytes of the regular file at `path`; OSError for anything else.

    Opened without blocking and checked, so a FIFO named `x.py` is an error rather than a
    wait forever for a writer."""
    import errno
    import stat

    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with open(fd, "rb", buffering=0) as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        return f.readall()


# running a program ---------------------------------------------------------------------------


def program_start(words: list[str], valued: frozenset[str] = frozenset()) -> int | None:
    """Where the program starts in the words after `thinlink run` or `thinlink dev`: at
    SCRIPT, or at `-m` (MODULE follows). The words before it are thinlink's options, those
    after it the program's: as with `python`, options end where the program begins.
    `valued` are the options that take the next word as their value. None: no program."""
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--":
            return i + 1 if i + 1 < len(words) else None
        if word.startswith("-m") or not word.startswith("-") or word == "-":
            return i
        i += 2 if word in valued else 1
    return None


def main(words: list[str]) -> None:
    """`thinlink run PROGRAM...`, the program's words first (no options of thinlink's)."""
    script, module, args = split_program(words)
    run(script, module, args)


def run(
    script: str | None, module: str | None, args: list[str], cache_dir: str | None = None
) -> None:
    """Start SCRIPT (or `-m MODULE`) with `args` from the last build if the tree is
    unchanged, else hand over to the command line's run (which builds first). Returns or
    raises SystemExit as the program does."""
    root = find_root(os.getcwd() if script is None else _script_dir(script))
    cache_dir = cache_location(root, cache_dir)
    check = check_tree(root, cache_dir)
    image = _fresh_image(check)
    if image is None:
        from thinlink.cli.commands import build_and_run

        build_and_run(check, script=script, module=module, args=args)
        return
    check.refresh_state()
    run_from_image(image, check, script=script, module=module, args=args)


def split_program(words: list[str]) -> tuple[str | None, str | None, list[str]]:
    """(script, module, args) of the program words: `SCRIPT ARGS...` or `-m MODULE ARGS...`."""
    if words and words[0].startswith("-m"):
        if words[0] != "-m":
            return None, words[0][2:], words[1:]
        return None, (words[1] if len(words) > 1 else ""), words[2:]
    return (words[0] if words else ""), None, words[1:]


def _script_dir(script: str) -> str:
    path = os.path.realpath(script)
    return path if os.path.isdir(path) else os.path.dirname(path)


def image_file(cache_dir: str, build_id: str) -> str:
    """Where the image of build `build_id` is (or will be)."""
    return os.path.join(cache_dir, "images", f"{build_id}.v{IMAGE_FORMAT}.img")


def _fresh_image(check: TreeCheck) -> Image | None:
    """The image of the last build when the tree is that build and its image is sound."""
    if not check.fresh or check.state is None or check.state.errors:
        return None
    from hotpatch.image import ImageError, read_image

    try:
        image = read_image(image_file(check.cache_dir, check.state.build_id))
    except ImageError:
        return None  # missing or damaged: the slow path writes it again
    return image if image.root == check.root else None


def run_from_image(
    image: Image,
    check: TreeCheck,
    *,
    script: str | None,
    module: str | None,
    args: list[str],
) -> None:
    """Run SCRIPT or `-m MODULE` with its project's modules loaded from `image`, as
    `python` would run it, in this process; returns or raises SystemExit like python.

    Files whose stat is the one `check` saw are known to hold the build's bytes: the
    importer trusts them without reading them again."""
    from hotpatch import boot

    trusted = {path: sig for path in check.signatures if (sig := check.trusted_signature(path))}
    purge_tool_modules({name for _, name in check.files})
    # The program runs from a build, so it can be patched: `hotpatch.hot` wraps and
    # `hotpatch.call` goes through the jump table (children inherit this).
    os.environ["HOTPATCH_ENABLED"] = "1"
    if module is not None:
        boot.run_module(image, module, args, trusted=trusted)
    else:
        assert script is not None
        boot.run_script(image, script, args, trusted=trusted)


# What stays imported when the program starts (see purge_tool_modules).
_RUNTIME = ("hotpatch",)
_SHARED = frozenset({"threading"})


def purge_tool_modules(project_modules: set[str]) -> list[str]:
    """Drop the modules thinlink imported since the interpreter started; return them.

    The program then imports what it imports as under plain `python`: `import json` in a
    project that has its own `json` gets the project's, from the build, and a standard
    library module the tool happened to import is imported afresh. What stays: the
    modules the interpreter started with, the runtime (`hotpatch`), and `threading`, whose
    state is interpreter-wide (its at-fork hooks, the join of non-daemon threads at exit),
    unless the project provides a module of that name. The tool's own module objects stay
    alive through its frames, which import nothing after the purge.
    """
    from thinlink import STARTUP_MODULES

    before_us = STARTUP_MODULES - {"thinlink"}
    tops = {name.partition(".")[0] for name in project_modules}
    dropped = []
    for name in list(sys.modules):
        top = name.partition(".")[0]
        if name in before_us or top in _RUNTIME or (name in _SHARED and top not in tops):
            continue
        del sys.modules[name]
        dropped.append(name)
    return dropped
