from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twoway.sansio.framing import Line, LineDecoder, LineTooLong, PartialLine


def decode(chunks: list[bytes], limit: int | None = 8) -> list[object]:
    d = LineDecoder(limit)
    events: list[object] = []
    for c in chunks:
        events.extend(d.feed(c))
    events.extend(d.feed_eof())
    return events


def test_lf_and_crlf() -> None:
    assert decode([b"a\nbc\r\nd"]) == [Line(b"a", False), Line(b"bc", True), PartialLine(b"d")]


def test_bare_cr_at_end_never_delivered() -> None:
    assert decode([b"x\r\r\n", b"y\r"]) == [Line(b"x", True), PartialLine(b"y")]
    assert decode([b"\r"]) == []


def test_cr_inside_line_is_content() -> None:
    assert decode([b"a\rb\n"]) == [Line(b"a\rb", False)]


def test_limit_counts_content_not_terminator() -> None:
    assert decode([b"12345678\n"]) == [Line(b"12345678", False)]
    assert decode([b"12345678\r\n"]) == [Line(b"12345678", True)]
    assert decode([b"123456789\n"]) == [LineTooLong(8)]
    assert decode([b"123456789\r\n"]) == [LineTooLong(8)]


def test_over_long_line_discarded_then_resync() -> None:
    events = decode([b"0123456789abc", b"def", b"ghi\nok\n"])
    assert events == [LineTooLong(8), Line(b"ok", False)]


def test_no_fragment_of_long_line_ever_delivered() -> None:
    d = LineDecoder(4)
    out = []
    for b in b"abcdefghijklmnop\nxy\n":
        out.extend(d.feed(bytes([b])))
    assert out == [LineTooLong(4), Line(b"xy", False)]


def test_limit_enforced_before_newline_bounded_memory() -> None:
    d = LineDecoder(1024)
    events = []
    for _ in range(1000):
        events.extend(d.feed(b"x" * 1000))
        assert d.buffered <= 1025
    assert events == [LineTooLong(1024)]


def test_pending_cr_at_limit() -> None:
    # 8 bytes + CR is still possibly a valid CRLF line; a 10th byte makes it too long.
    assert decode([b"12345678\r", b"\n"]) == [Line(b"12345678", True)]
    assert decode([b"12345678\r", b"x\n"]) == [LineTooLong(8)]


def test_eof_with_partial_line() -> None:
    assert decode([b"hello"]) == [PartialLine(b"hello")]
    assert decode([b"hello\n"]) == [Line(b"hello", False)]


def test_eof_while_discarding_gives_nothing_more() -> None:
    assert decode([b"x" * 20]) == [LineTooLong(8)]


def test_decoder_reusable_after_eof() -> None:
    d = LineDecoder(8)
    d.feed(b"abc")
    assert d.feed_eof() == [PartialLine(b"abc")]
    assert d.feed(b"x\n") == [Line(b"x", False)]


def test_no_limit() -> None:
    assert decode([b"x" * 100000 + b"\n"], None) == [Line(b"x" * 100000, False)]


def test_invalid_limit() -> None:
    with pytest.raises(ValueError):
        LineDecoder(0)


def test_slow_long_line_is_linear() -> None:
    # 60 KiB fed one byte at a time under a 64 KiB limit: quadratic rescanning would take
    # seconds; this is a complexity check, so it compares two sizes rather than a wall time.
    def run(n: int) -> float:
        d = LineDecoder(64 * 1024)
        data = [b"x"] * n
        t = time.perf_counter()
        for c in data:
            d.feed(c)
        return time.perf_counter() - t

    small, big = run(6000), run(60000)
    assert big < small * 30  # linear: ~10x; quadratic would be ~100x


stream = st.lists(
    st.one_of(
        st.sampled_from([b"\n", b"\r\n", b"\r", b"x", b"yy", b"quit", b"\xff\xfe"]),
        st.binary(max_size=12),
    ),
    max_size=40,
).map(b"".join)


@settings(max_examples=400)
@given(
    data=stream,
    cuts=st.lists(st.integers(min_value=0, max_value=500), max_size=20),
    limit=st.one_of(st.none(), st.integers(min_value=1, max_value=12)),
)
def test_any_split_gives_same_events(data: bytes, cuts: list[int], limit: int | None) -> None:
    whole = decode([data], limit)
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks, prev = [], 0
    for p in points:
        chunks.append(data[prev:p])
        prev = p
    chunks.append(data[prev:])
    assert decode(chunks, limit) == whole
    assert decode([bytes([b]) for b in data], limit) == whole


@settings(max_examples=300)
@given(data=stream, limit=st.integers(min_value=1, max_value=12))
def test_events_respect_limit_and_never_contain_newline(data: bytes, limit: int) -> None:
    for ev in decode([data], limit):
        if isinstance(ev, (Line, PartialLine)):
            assert b"\n" not in ev.data
            assert len(ev.data) <= limit
            assert not ev.data.endswith(b"\r")


@settings(max_examples=400)
@given(
    data=stream,
    limit=st.one_of(st.none(), st.integers(min_value=1, max_value=12)),
    prefix=st.binary(max_size=4),
)
def test_feed_single_agrees_with_feed(data: bytes, limit: int | None, prefix: bytes) -> None:
    fast, slow = LineDecoder(limit), LineDecoder(limit)
    fast.feed(prefix)
    slow.feed(prefix)
    content = fast.feed_single(data)
    events = slow.feed(data)
    if content is not None:
        assert events == [Line(content, False)]
        assert fast.buffered == slow.buffered == 0
    # Either way the fast decoder, fed normally afterwards, behaves like the slow one.
    if content is None:
        assert fast.feed(data) == events
    assert fast.feed_eof() == slow.feed_eof()
