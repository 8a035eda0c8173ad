from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twoway.sansio.text import escape_controls

CONTROL_CODES = [*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F, *range(0x80, 0xA0)]
#: The joiners are format characters that are kept (emoji and several scripts need them).
JOINERS = (0x200C, 0x200D)


def _invisible(code: int) -> bool:
    """A character that reorders or hides text: what must be escaped besides C0/C1."""
    return unicodedata.category(chr(code)) in ("Cf", "Zl", "Zp") and code not in JOINERS


def _spelled_len(code: int) -> int:
    if code in CONTROL_CODES:
        return 2 if code < 0x80 else 4  # ^X or \xNN
    if _invisible(code):
        return 6 if code < 0x10000 else 10  # \uNNNN or \UNNNNNNNN
    return 1


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
        ("\u202e", "\\u202e"),  # right-to-left override
        ("\u202a", "\\u202a"),
        ("\u2066", "\\u2066"),  # isolates
        ("\u2069", "\\u2069"),
        ("\u200e", "\\u200e"),  # marks
        ("\u061c", "\\u061c"),
        ("\u200b", "\\u200b"),  # zero width space
        ("\u2060", "\\u2060"),  # word joiner
        ("\ufeff", "\\ufeff"),  # BOM
        ("\u00ad", "\\u00ad"),  # soft hyphen
        ("\u2028", "\\u2028"),  # line separator
        ("\u2029", "\\u2029"),  # paragraph separator
        ("\U000e0041", "\\U000e0041"),  # tag A: invisible "ASCII smuggling"
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
        "a family \U0001f468\u200d\U0001f469\u200d\U0001f467 keeps its joiners",
        "so does \u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645 (Persian, with a ZWNJ)",
    ],
)
def test_clean_text_is_returned_as_is(clean: str) -> None:
    # Not just equal: the same object, so the common case costs no copy.
    assert escape_controls(clean) is clean


def test_every_control_code_is_escaped_and_nothing_else() -> None:
    for code in range(0x00, 0x250):
        out = escape_controls(chr(code))
        if code in CONTROL_CODES or _invisible(code):
            assert out != chr(code)
            assert out.isascii() and out.isprintable()
        else:
            assert out == chr(code)


@given(st.text())
def test_output_has_no_controls_and_is_stable(s: str) -> None:
    out = escape_controls(s)
    assert not any(ord(c) in CONTROL_CODES or _invisible(ord(c)) for c in out)
    assert escape_controls(out) == out
    # Nothing is dropped: each control becomes ^X (2 chars) or \xNN (4), each invisible
    # character \uNNNN (6) or \UNNNNNNNN (10); the rest stays.
    assert len(out) == sum(_spelled_len(ord(c)) for c in s)


def test_every_invisible_character_is_escaped_and_no_other() -> None:
    # The whole assigned code space above C1, against this Python's Unicode database, in
    # one string: every format character (but the joiners), U+2028 and U+2029 are spelled
    # \\uNNNN, no other character is touched.
    chars = [
        chr(code)
        for code in range(0xA0, 0x110000)
        if unicodedata.category(chr(code)) not in ("Cn", "Cs")  # unassigned, surrogates
    ]
    expected = [
        (f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}")
        if _invisible(ord(c))
        else c
        for c in chars
    ]
    assert escape_controls("".join(chars)) == "".join(expected)


def test_a_reversed_line_cannot_pass_for_a_server_notice() -> None:
    # "*** alice left" written backwards behind U+202E would display as a notice.
    forged = "\u202etfel ecila ***"
    assert escape_controls(forged) == "\\u202etfel ecila ***"
