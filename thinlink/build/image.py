"""Writing a build's image: the file a program is started from (`hotpatch.image`).

The image format belongs to the runtime; this side fills it from the cache. A module
rebuilt incrementally has no whole-module code yet (only its changed fragments were
compiled): it is compiled here, once, and cached (or, for `thinlink dev`, left to the
importer). An image found damaged is written again, with one line saying so.
"""

from __future__ import annotations

import os

from hotpatch.image import Image, ImageEntry, ImageError, read_image, source_digest, write_image
from thinlink.errors import DISK_FULL, CacheFull, SourceError
from thinlink.launch import image_file, read_source

from .cache import Cache
from .compiler import compile_module
from .manifest import Manifest

__all__ = ["ensure_image", "whole_code"]

_KEEP_IMAGES = 8


def whole_code(cache: Cache, path: str, digest: str) -> bytes | None:
    """Marshalled code of one module version, compiling it if only fragments exist (from
    the cached source, or the file if it still holds that version); None if neither."""
    key = cache.module_key("code", path, digest)
    code = cache.get(key)
    if code is not None:
        return code
    source = cache.get(cache.source_key(digest))
    if source is None:
        try:
            source = read_source(path)
        except OSError:
            return None
        if source_digest(source) != digest:
            return None
    try:
        compiled = compile_module(source, path)
    except SourceError:
        return None
    cache.put_code(key, compiled)
    return cache.get(key)


def ensure_image(cache: Cache, manifest: Manifest, *, compile_missing: bool = True) -> str:
    """The path of the image of `manifest`, written if it does not exist yet or is damaged.

    With `compile_missing=False`, a module that has no whole-module code in the cache
    (one rebuilt a segment at a time) gets an empty entry, which the importer compiles
    from its source: for `thinlink dev`, which writes an image after every patch and
    must not spend a large module's compile time on each. Such an image has a name of
    its own, so that `thinlink run` of the same build never picks it up; where the whole
    image of the build exists already, that one is returned instead.
    """
    path = image_file(cache.directory, manifest.build_id)
    if not compile_missing:
        if _readable(path, quiet=True):
            return path
        path = path.removesuffix(".img") + ".lazy.img"
    if _readable(path):
        return path
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
    try:
        write_image(path, Image(manifest.build_id, manifest.root, entries))
    except OSError as exc:
        if exc.errno in DISK_FULL:
            raise CacheFull(cache.directory) from None
        raise
    _prune(os.path.dirname(path), keep=path)
    return path


def _readable(path: str, *, quiet: bool = False) -> bool:
    """Whether the image at `path` exists and reads whole; a damaged one is said (unless
    `quiet`: another image serves then), to be written again."""
    if not os.path.exists(path):
        return False
    try:
        read_image(path).verify()
        return True
    except ImageError as exc:
        if not quiet:
            from thinlink.cli import console

            console.warning(f"thinlink: {exc}; writing it again")
        return False


def _prune(images: str, keep: str) -> None:
    """Remove all but the newest images. Another process may prune the same directory
    at once: a file gone meanwhile is simply gone."""
    found = []
    try:
        with os.scandir(images) as entries:
            for entry in entries:
                if entry.name.endswith(".img") and not entry.name.startswith("session-"):
                    try:
                        found.append((entry.stat().st_mtime, entry.path))
                    except FileNotFoundError:
                        continue
    except OSError:
        return
    found.sort(reverse=True)
    for _, stale in found[_KEEP_IMAGES:]:
        if stale != keep:
            try:
                os.unlink(stale)
            except FileNotFoundError:
                pass
