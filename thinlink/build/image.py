"""Writing a build's image: the file `thinlink run` hands to the runtime's importer.

The image format belongs to the runtime (`hotpatch.image`); this side fills it from
the cache. A module rebuilt incrementally has no whole-module code yet (only its
changed fragments were compiled): it is compiled here, once, and cached (or, for
`thinlink dev`, left to the importer).
"""

from __future__ import annotations

import os
from pathlib import Path

from hotpatch.image import Image, ImageEntry, write_image

from .cache import Cache
from .compiler import compile_module
from thinlink.errors import SourceError
from .manifest import Manifest

__all__ = ["ensure_image", "image_path", "whole_code"]

_KEEP_IMAGES = 8


def whole_code(cache: Cache, path: str, digest: str) -> bytes | None:
    """Marshalled code of one module version, compiling it if only fragments exist."""
    key = cache.module_key("code", path, digest)
    code = cache.get(key)
    if code is not None:
        return code
    source = cache.get(cache.source_key(digest))
    if source is None:
        return None
    try:
        compiled = compile_module(source, path)
    except SourceError:
        return None
    cache.put_code(key, compiled)
    return cache.get(key)


def image_path(cache_dir: str | os.PathLike[str], manifest: Manifest) -> Path:
    """Where the image of `manifest` is (or will be) under a cache directory.

    Callers check it before opening the cache: a build whose image exists needs nothing
    from the cache, and opening it makes the next build check every record again.
    """
    return Path(cache_dir) / "images" / f"{manifest.build_id}.img"


def ensure_image(cache: Cache, manifest: Manifest, *, compile_missing: bool = True) -> Path:
    """The image file of `manifest`, written if it does not exist yet.

    With `compile_missing=False`, a module that has no whole-module code in the cache
    (one rebuilt a segment at a time) gets an empty entry, which the importer compiles
    from its source: for `thinlink dev`, which writes an image after every patch and
    must not spend a large module's compile time on each. Such an image has a name of
    its own, so that `thinlink run` of the same build never picks it up.
    """
    path = image_path(cache.directory, manifest)
    if not compile_missing:
        path = path.with_suffix(".lazy.img")
    images = path.parent
    if path.exists():
        return path
    images.mkdir(parents=True, exist_ok=True)
    entries = {}
    for module in manifest.modules:
        if module.digest is None or module.error is not None:
            continue  # a failed module is left to the import system, which reports it
        if compile_missing:
            code = whole_code(cache, module.path, module.digest)
        else:
            code = cache.get(cache.module_key("code", module.path, module.digest)) or b""
        if code is not None:
            entries[module.path] = ImageEntry(module.digest, code)
    write_image(str(path), Image(manifest.build_id, manifest.root, entries))
    _prune(images, keep=path)
    return path


def _prune(images: Path, keep: Path) -> None:
    old = sorted(images.glob("*.img"), key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in old[_KEEP_IMAGES:]:
        if stale != keep:
            stale.unlink(missing_ok=True)
