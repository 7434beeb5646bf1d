"""`Project`: the Python API over one project root and its cache."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from thinlink.build.builder import Builder, BuildResult
from thinlink.build.manifest import BuildStore, Manifest
from thinlink.errors import BuildFailed, BuildNotFound
from thinlink.launch import TreeState, cache_location, find_root

if TYPE_CHECKING:
    from thinlink.patches.make import PatchResult

__all__ = ["Project"]


class Project:
    """A project root with its build cache.

        project = Project("path/to/app")
        result = project.build()
        result.manifest.build_id

    A `Project` may not be shared between threads; several processes may build the
    same project (one cache) at once.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        jobs: int | None = None,
    ) -> None:
        self.root = Path(find_root(root, search=False) if root is not None else find_root())
        self.cache_dir = Path(cache_location(str(self.root), cache_dir))
        self.jobs = jobs

    def builder(self, progress: Callable[[int, int], None] | None = None) -> Builder:
        return Builder(self.root, self.cache_dir, jobs=self.jobs, progress=progress)

    def build(self, progress: Callable[[int, int], None] | None = None) -> BuildResult:
        """Build the working tree (incrementally) and return what happened."""
        builder = self.builder(progress)
        try:
            return builder.build()
        finally:
            builder.close()

    def patch(
        self,
        old: str | Manifest = "last-good",
        new: str | Manifest | None = None,
        *,
        main_path: str | None = None,
    ) -> PatchResult:
        """The patch bundle from build `old` to build `new` (default: build the working
        tree now). Builds are given by id, ref name (`last`, `last-good`) or manifest.

        `SourceError`-carrying `BuildFailed` is raised when the working tree does not
        build; nothing changes then (the last good build stays what it was).
        """
        from thinlink.patches.make import make_patch

        base = old if isinstance(old, Manifest) else self.manifest(old)
        store = BuildStore(self.cache_dir)
        good = store.ref(str(self.root), "last-good")
        if new is None:
            result = self.build()
            if not result.ok:
                raise BuildFailed(result)
            target = result.manifest
        else:
            target = new if isinstance(new, Manifest) else self.manifest(new)
        builder = self.builder()
        try:
            return make_patch(builder.cache, base, target, main_path)
        except BaseException:
            # No patch, so the last good build is still the one processes run.
            if good is not None:
                store.set_ref(str(self.root), "last-good", good)
            raise
        finally:
            builder.close()

    def manifest(self, build: str = "last") -> Manifest:
        """A build by id or ref name (`last`, `last-good`); `BuildNotFound` if absent.

        A ref that is missing or damaged is found again from the tree state the last
        build left (its build, if it had no errors, is also the last good one)."""
        store, root = BuildStore(self.cache_dir), str(self.root)
        if build in ("last", "last-good") and store.ref(root, build) is None:
            state = TreeState.read(str(self.cache_dir), root)
            if state is not None and (build == "last" or not state.errors):
                return store.load(state.build_id)
            raise BuildNotFound(
                f"no {build} build of {root} is on record: run `thinlink build` first"
            )
        return store.resolve(root, build)
