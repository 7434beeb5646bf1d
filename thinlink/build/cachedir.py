"""Removing a cache: exactly the files a cache makes, never anything else in its directory.

A cache directory holds `CACHEDIR.TAG`, the store (`objects/`: diskcache's SQLite files
and its value files in two levels of hex directories; `objects.damaged-*/` for a store set
aside), manifests (`builds/*.manifest`), refs, tree states and images, and the temporary
files of atomic writes. A user's file put among them (or a directory named like a cache
entry but holding something else) is left where it is; the tag then stays too, so the
directory is still a cache the next build may use.
"""

from __future__ import annotations

import os
import re

from thinlink.launch import CACHE_TAG_FILE

__all__ = ["clean"]

_HEX2 = re.compile(r"[0-9a-f]{2}")
_TEMPORARY = re.compile(r"\..+\.[0-9a-f]{12}\.tmp")  # hotpatch.fileio.write_atomic's
_MADE = {  # directory -> the names of the files a cache writes there
    "builds": re.compile(r"[0-9a-f]+\.manifest"),
    "refs": re.compile(r"[0-9a-f]{16}-[\w.-]+\.(last|last-good)"),
    "trees": re.compile(r"[0-9a-f]{16}-[\w.-]+"),
    "images": re.compile(r"[0-9a-f]+(\.v[0-9]+)?(\.lazy)?\.img"),
}
_STORE_FILES = re.compile(r"cache\.db(-wal|-shm|-journal)?")
_VALUE_FILE = re.compile(r"[0-9a-f]{28}\.val")  # diskcache.Disk.filename


def clean(where: str) -> list[str]:
    """Remove what the cache in `where` made, and `where` itself if then empty. Returns
    what was kept (paths relative to `where`): files the cache did not make."""
    kept: list[str] = []
    for name in sorted(os.listdir(where)):
        path = os.path.join(where, name)
        if name == CACHE_TAG_FILE:
            continue  # last: it stays if anything else does
        if name in _MADE and _is_dir(path):
            _remove_matching(path, _MADE[name], kept, name)
        elif (name == "objects" or name.startswith("objects.damaged-")) and _is_dir(path):
            _remove_store(path, kept, name)
        elif _TEMPORARY.fullmatch(name) and not _is_dir(path):
            os.unlink(path)
        else:
            kept.append(name)
    if kept:
        return kept
    tag = os.path.join(where, CACHE_TAG_FILE)
    if os.path.exists(tag):
        os.unlink(tag)
    os.rmdir(where)
    return kept


def _is_dir(path: str) -> bool:
    return os.path.isdir(path) and not os.path.islink(path)


def _remove_matching(directory: str, made: re.Pattern[str], kept: list[str], label: str) -> None:
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if (made.fullmatch(name) or _TEMPORARY.fullmatch(name)) and not _is_dir(path):
            os.unlink(path)
        else:
            kept.append(f"{label}/{name}")
    _remove_if_empty(directory)


def _remove_store(directory: str, kept: list[str], label: str) -> None:
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if _STORE_FILES.fullmatch(name) and not _is_dir(path):
            os.unlink(path)
        elif _HEX2.fullmatch(name) and _is_dir(path):
            for sub in os.listdir(path):
                inner = os.path.join(path, sub)
                if _HEX2.fullmatch(sub) and _is_dir(inner):
                    _remove_matching(inner, _VALUE_FILE, kept, f"{label}/{name}/{sub}")
                else:
                    kept.append(f"{label}/{name}/{sub}")
            _remove_if_empty(path)
        else:
            kept.append(f"{label}/{name}")
    _remove_if_empty(directory)


def _remove_if_empty(directory: str) -> None:
    try:
        os.rmdir(directory)
    except OSError:
        pass  # something of the user's is in it
