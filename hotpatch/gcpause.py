"""Garbage collection paused for latency-bound work that allocates much.

A patch allocates thousands of objects (relocated code, undo records), and a full
collection of a large app's heap in the middle of one would be most of its time; the
same holds on the build side from a save to its patch sent.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["paused"]


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Garbage collection off inside the block (and back on after, if it was on).
    Garbage made meanwhile is collected after, by the next automatic collection."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
