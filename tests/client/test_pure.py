"""The client's pure parts: display line splitting, the --send template, option checks."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twoway.client.lines import LineSplitter, split_keepends
from twoway.client.options import ClientOptions, link_names
from twoway.client.output import prefix
from twoway.client.template import check_template, random_hex, render

# --------------------------------------------------------------------------- lines


def test_splitter_cuts_lines_and_holds_the_rest() -> None:
    s = LineSplitter()
    assert s.feed(b"one\r\ntwo\nthr") == [b"one", b"two"]
    assert s.pending
    assert s.feed(b"ee\n") == [b"three"]
    assert not s.pending
    assert s.flush() is None


def test_splitter_flush_hands_out_a_partial_line() -> None:
    s = LineSplitter()
    assert s.feed(b"Server says: hi") == []
    assert s.flush() == b"Server says: hi"
    assert s.flush() is None


def test_splitter_gives_over_long_lines_in_pieces_and_keeps_everything() -> None:
    s = LineSplitter(limit=4)
    assert s.feed(b"abcdefghij") == [b"abcd", b"efgh"]
    assert s.feed(b"k\nxy") == [b"ijk"]
    assert s.flush() == b"xy"


@given(st.binary(max_size=200), st.lists(st.integers(1, 50), max_size=20))
def test_splitter_output_does_not_depend_on_how_the_stream_is_cut(
    data: bytes, cuts: list[int]
) -> None:
    whole = LineSplitter(limit=10**6)
    expected = whole.feed(data)
    rest = whole.flush()
    if rest is not None:
        expected.append(rest)
    pieces = LineSplitter(limit=10**6)
    got: list[bytes] = []
    pos = 0
    for cut in cuts:
        got.extend(pieces.feed(data[pos : pos + cut]))
        pos += cut
    got.extend(pieces.feed(data[pos:]))
    rest = pieces.flush()
    if rest is not None:
        got.append(rest)
    assert got == expected


def test_split_keepends_keeps_terminators_and_holds_the_tail() -> None:
    assert split_keepends(b"a\r\nb\nc") == ([b"a\r\n", b"b\n"], b"c")
    assert split_keepends(b"d\n", b"c") == ([b"cd\n"], b"")
    assert split_keepends(b"no newline", b"") == ([], b"no newline")


# --------------------------------------------------------------------------- template


def test_render_fills_every_placeholder() -> None:
    text = render("{name} #{seq:03d} at {time}: {random}", seq=7, time="12:34:56",
                  random="00ff", name="Elves")  # fmt: skip
    assert text == "Elves #007 at 12:34:56: 00ff"


def test_random_hex_has_the_asked_length_and_follows_the_rng() -> None:
    a, b = random.Random(1), random.Random(1)
    assert random_hex(a.getrandbits) == random_hex(b.getrandbits)
    assert len(random_hex(a.getrandbits, 16)) == 16
    assert random_hex(lambda bits: 255, 4) == "00ff"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{nope}", "unknown placeholder {nope}"),
        ("{seq", "bad template"),
        ("{seq:zz}", "bad template"),
        ("{}", "unknown placeholder {}"),
    ],
)
def test_bad_templates_are_refused_with_a_reason(template: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("{", r"\{").replace("}", r"\}")):
        check_template(template)


def test_literal_braces_are_fine() -> None:
    check_template("{{json}} {seq}")
    assert render("{{x}} {seq}", seq=1, time="", random="", name="") == "{x} 1"


# --------------------------------------------------------------------------- options


def test_link_names() -> None:
    assert link_names(None, None) == ()
    assert link_names(1, None) == ()
    assert link_names(3, None) == ("1", "2", "3")
    assert link_names(None, "Dwarves, Elves,Hobbits") == ("Dwarves", "Elves", "Hobbits")
    assert prefix("Elves") == "[Elves] "
    assert prefix("") == ""
    with pytest.raises(ValueError, match="either"):
        link_names(2, "a,b")
    with pytest.raises(ValueError, match="empty name"):
        link_names(None, "a,")


def test_options_are_checked_once_up_front() -> None:
    ClientOptions("h", 1, send="x {seq}", count=1)
    with pytest.raises(ValueError, match="port 0 is out of range"):
        ClientOptions("h", 0)
    with pytest.raises(ValueError, match="appears twice"):
        ClientOptions("h", 1, names=("a", "a"))
    with pytest.raises(ValueError, match="unknown placeholder"):
        ClientOptions("h", 1, send="{x}")
    assert ClientOptions("h", 1, crlf=True).newline == b"\r\n"
