"""SourceText: decoding, line splitting, and the changed span of an edit."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thinlink.build import text as text_module
from thinlink.build.text import SourceText, split_lines
from thinlink.errors import SourceError

# Pieces that make line structure interesting: bare newlines, unterminated tails, form
# feeds and Unicode separators (lines for str.splitlines, not for the tokenizer).
PIECES = ["a", "bc", "\n", "x = 1\n", "def f():\n", "    return 2\n", "\x0c", "\u2028", "é"]
texts = st.lists(st.sampled_from(PIECES), max_size=14).map("".join)


def check_edit(old: str, new: str) -> None:
    before = SourceText(old)
    after, span = before.edit(new.encode(), "m.py")
    assert after.text == new
    assert after.lines == split_lines(new)
    head = span.old_start - 1
    # Outside the span both versions have the same lines, at shifted positions below it.
    assert before.lines[:head] == after.lines[:head]
    assert before.lines[span.old_end :] == after.lines[span.new_end :]
    assert span.delta == len(after.lines) - len(before.lines)
    assert head <= span.old_end <= len(before.lines) and head <= span.new_end


@settings(max_examples=400, deadline=None)
@given(texts, texts)
def test_edit_span_is_exact(old: str, new: str) -> None:
    check_edit(old, new)


@settings(max_examples=200, deadline=None)
@given(texts, texts, texts)
def test_edit_in_the_middle(head: str, middle: str, tail: str) -> None:
    check_edit(head + tail, head + middle + tail)


@pytest.mark.parametrize("steps", [(3, 2, 1), (1,)])
def test_compare_steps_do_not_change_the_span(monkeypatch, steps: tuple[int, ...]) -> None:
    # The coarse-to-fine search must find the same difference whatever its step sizes.
    monkeypatch.setattr(text_module, "_STEPS", steps)
    old = "".join(f"line {i}\n" for i in range(50))
    new = old.replace("line 17\n", "line 17 edited\nextra\n")
    check_edit(old, new)
    after, span = SourceText(old).edit(new.encode(), "m.py")
    assert (span.old_start, span.old_end, span.new_end) == (18, 18, 19)


def test_large_module_edit_reuses_unchanged_lines() -> None:
    old = "".join(f"def f{i}():\n    return {i}\n\n" for i in range(8000))
    new = old.replace("return 4000\n", "return 4000 + 1\n    # more\n")
    before = SourceText(old)
    after, span = before.edit(new.encode(), "m.py")
    assert (span.old_start, span.old_end, span.new_end) == (12002, 12002, 12003)
    assert after.lines[0] is before.lines[0] and after.lines[-1] is before.lines[-1]


def test_split_lines_counts_newlines_only() -> None:
    assert split_lines("a\x0cb\nc\u2028d\n") == ["a\x0cb\n", "c\u2028d\n"]
    assert split_lines("a\nb") == ["a\n", "b"]


def test_coding_line_and_bad_bytes() -> None:
    latin = "# -*- coding: latin-1 -*-\nname = 'caf\xe9'\n".encode("latin-1")
    assert SourceText.decode(latin, "m.py").lines[1] == "name = 'café'\n"
    with pytest.raises(SourceError, match="m.py:1:1: cannot decode"):
        SourceText.decode(b"x = '\xff'\n", "m.py")


PIECES_BYTES = [b"a", b"\r", b"\n", b"\xc3\xa9", b"#", b" coding: latin-1", b"\xef\xbb\xbf"]
PIECES_BYTES += [b"\xff"]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(PIECES_BYTES), max_size=10).map(b"".join))
def test_decode_is_the_import_systems(data: bytes) -> None:
    # Without a coding line thinlink decodes by itself (no tokenize import): the same text.
    import importlib.util

    try:
        expected: str | None = importlib.util.decode_source(data)
    except (SyntaxError, UnicodeDecodeError, LookupError):
        expected = None
    if expected is None:
        with pytest.raises(SourceError, match="cannot decode source"):
            text_module.decode(data, "m.py")
    else:
        assert text_module.decode(data, "m.py") == expected
