"""Source text as the compiler sees it, and what an edit changed in it.

A `SourceText` is one version of a file: decoded as the import system decodes it (PEP
263 coding line, BOM, universal newlines) and split into lines the way the tokenizer
counts them. `SourceText.edit` makes the next version from new bytes and says which
lines differ; it works on the text with C-speed slice compares and reuses the line
objects of the unchanged head and tail, so an edit of a 24k-line module costs about a
millisecond here, not a pass of Python over every line.
"""

from __future__ import annotations

from collections import namedtuple

try:  # importlib.util.decode_source, from the import system's own module (loaded already)
    from _frozen_importlib_external import decode_source
except ImportError:  # pragma: no cover - an interpreter without a frozen import system
    from importlib.util import decode_source

from thinlink.errors import SourceError

__all__ = ["LineSpan", "SourceText", "decode", "split_lines"]

# What str.splitlines breaks on besides "\n" (the tokenizer does not).
_OTHER_BREAKS = ("\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")
_STEPS = (4096, 64, 1)  # characters compared at a time when looking for a difference


def decode(data: bytes, path: str) -> str:
    """Source text as the import system decodes it (PEP 263 coding line, BOM)."""
    try:
        if b"coding" in data[: _second_line_end(data)]:
            return decode_source(data)  # loads tokenize for the coding line: 3 ms, once
        # No coding line: UTF-8, as decode_source reads it (BOM dropped, newlines
        # made universal; like its newline decoder, a "\r" at the very end is dropped).
        text = data.decode("utf-8-sig" if data.startswith(b"\xef\xbb\xbf") else "utf-8")
        if "\r" in text:
            text = text.removesuffix("\r").replace("\r\n", "\n").replace("\r", "\n")
        return text
    except (SyntaxError, UnicodeDecodeError, LookupError) as exc:
        raise SourceError(path, 1, 1, f"cannot decode source: {exc}") from None


def _second_line_end(data: bytes) -> int:
    """Where the second line of `data` ends (where a PEP 263 coding line may be)."""
    first = data.find(b"\n")
    if first < 0:
        return len(data)
    second = data.find(b"\n", first + 1)
    return len(data) if second < 0 else second


def split_lines(text: str) -> list[str]:
    """Split decoded source into lines the way the tokenizer counts them.

    `str.splitlines` also splits on form feeds and Unicode separators, which may sit
    inside string literals; the tokenizer (after universal newlines) only counts `\\n`.
    """
    # Nine substring tests run at memchr speed; one regex search over the text is
    # ten times slower on a large module.
    if not any(brk in text for brk in _OTHER_BREAKS):
        return text.splitlines(keepends=True)  # the same split, in C
    lines = text.split("\n")
    last = lines.pop()
    out = [line + "\n" for line in lines]
    if last:
        out.append(last)
    return out


class LineSpan(namedtuple("LineSpan", "old_start old_end new_end")):
    """The lines an edit replaced: old lines `old_start..old_end` (1-based, inclusive;
    empty when `old_end < old_start`) became new lines `old_start..new_end`."""

    __slots__ = ()

    @property
    def delta(self) -> int:
        """Lines added (negative: removed); the lines below moved by this much."""
        return self.new_end - self.old_end


class SourceText:
    """One decoded version of a source file and its lines."""

    __slots__ = ("text", "lines")

    def __init__(self, text: str, lines: list[str] | None = None) -> None:
        self.text = text
        self.lines = split_lines(text) if lines is None else lines

    @classmethod
    def decode(cls, data: bytes, path: str) -> SourceText:
        """The text of `data`, the bytes of the file at `path`; `SourceError` if undecodable."""
        return cls(decode(data, path))

    def edit(self, data: bytes, path: str) -> tuple[SourceText, LineSpan]:
        """The version `data` of the same file, and the lines that differ from this one."""
        text = decode(data, path)
        old = self.text
        head = _common_prefix(old, text)
        tail = _common_suffix(old, text, limit=min(len(old), len(text)) - head)
        # Whole lines only: back up to the start of the line the first difference is
        # in (the same place in both texts), and on to a line end in the common tail.
        start = old.rfind("\n", 0, head) + 1
        end_old, end_new = _shared_line_end(old, text, tail)
        first = old.count("\n", 0, start)  # whole lines before the edit
        last_old = first + old.count("\n", start, end_old) + _unterminated(old, start, end_old)
        middle = split_lines(text[start:end_new])
        lines = self.lines[:first] + middle + self.lines[last_old:]
        span = LineSpan(first + 1, last_old, first + len(middle))
        return SourceText(text, lines), span


def _common_prefix(a: str, b: str) -> int:
    """Length of the common prefix of two strings."""
    n = min(len(a), len(b))
    at = 0
    for step in _STEPS:  # coarse to fine, each loop short: slices compare at memcmp speed
        while at + step <= n and a[at : at + step] == b[at : at + step]:
            at += step
    return at


def _common_suffix(a: str, b: str, limit: int) -> int:
    """Length of the common suffix of two strings, at most `limit`."""
    la, lb = len(a), len(b)
    at = 0
    for step in _STEPS:
        while at + step <= limit and a[la - at - step : la - at] == b[lb - at - step : lb - at]:
            at += step
    return at


def _shared_line_end(a: str, b: str, tail: int) -> tuple[int, int]:
    """A line boundary inside the common `tail` of `a` and `b`, as an index in each."""
    at_a, at_b = len(a) - tail, len(b) - tail
    if (at_a == 0 or a[at_a - 1] == "\n") and (at_b == 0 or b[at_b - 1] == "\n"):
        return at_a, at_b
    found = a.find("\n", at_a)  # a newline in the tail is one in both texts
    if found < 0:
        return len(a), len(b)
    return found + 1, found + 1 - at_a + at_b


def _unterminated(text: str, start: int, end: int) -> int:
    """1 if `text[start:end]` ends with a line that has no newline, else 0."""
    return 1 if end > start and text[end - 1] != "\n" else 0
