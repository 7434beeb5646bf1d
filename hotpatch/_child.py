"""Joining a dev session from a process the app started (see `_site/sitecustomize.py`).

The session's image (`HOTPATCH_IMAGE`, rewritten by the dev server after each build)
gives the process the project's modules at the session's current build; the client
then receives every later patch, and a process started between a build and its image
is brought up to date by the server when it says hello.
"""

from __future__ import annotations

import os

from . import _client, _jumptable

__all__ = ["start"]


def start() -> None:
    image_path = os.environ.get("HOTPATCH_IMAGE")
    if image_path:
        from ._loader import install
        from .image import ImageError, read_image

        try:
            image = read_image(image_path)
        except (ImageError, OSError):
            image = None  # no image yet: modules compile as usual, the server catches up
        if image is not None:
            install(image)
            _jumptable.set_build(image.build_id)
    _client.start()
