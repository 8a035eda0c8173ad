from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twoway.sansio.text import escape_controls

CONTROL_CODES = [*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F, *range(0x80, 0xA0)]


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b", "^["),
        ("\x07", "^G"),
        ("\x00", "^@"),
        ("\x7f", "^?"),
        ("\n", "^J"),
        ("\r", "^M"),
        ("\x08", "^H"),
        ("\x1f", "^_"),
        ("\x85", "\\x85"),
        ("\x80", "\\x80"),
        ("\x9b", "\\x9b"),
        ("\x9f", "\\x9f"),
    ],
)
def test_spellings(raw: str, shown: str) -> None:
    assert escape_controls(raw) == shown
    assert escape_controls(f"a{raw}b") == f"a{shown}b"


def test_ansi_colour_sequence_is_made_visible() -> None:
    assert escape_controls("\x1b[31mred\x1b[0m") == "^[[31mred^[[0m"


def test_tab_is_kept() -> None:
    assert escape_controls("a\tb") == "a\tb"


@pytest.mark.parametrize(
    "clean",
    [
        "",
        "hello world",
        "a\tb",
        "héllo wörld — ça va? 日本語 🙂",
        "\xa0non-breaking space and \xa1 are printable, just past C1",
        "\u200b zero width space and \u2028 are not C0/C1",
    ],
)
def test_clean_text_is_returned_as_is(clean: str) -> None:
    # Not just equal: the same object, so the common case costs no copy.
    assert escape_controls(clean) is clean


def test_every_control_code_is_escaped_and_nothing_else() -> None:
    for code in range(0x00, 0x250):
        out = escape_controls(chr(code))
        if code in CONTROL_CODES:
            assert out != chr(code)
            assert out.isascii() and out.isprintable()
        else:
            assert out == chr(code)


@given(st.text())
def test_output_has_no_controls_and_is_stable(s: str) -> None:
    out = escape_controls(s)
    assert not any(ord(c) in CONTROL_CODES for c in out)
    assert escape_controls(out) == out
    # Nothing is dropped: each control becomes ^X (2 chars) or \xNN (4), the rest stays.
    expected_len = sum(1 if ord(c) not in CONTROL_CODES else (2 if ord(c) < 0x80 else 4) for c in s)
    assert len(out) == expected_len
