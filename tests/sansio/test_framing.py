from __future__ import annotations

import time

import pytest
from hypothesis import example, given, settings
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


# The limit when several lines arrive in one read. The decoder has three places that check it:
# the fast path (exactly one line in the read, nothing pending), the multi-line path (the
# read split at its newlines) and the pending buffer (a line still waiting for its newline,
# completed by a later read). Each boundary below is checked on each of them.


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        # the multi-line path: a line one byte too long, then another line, in one read
        ([b"123456789\nok\n"], [LineTooLong(8), Line(b"ok", False)]),
        ([b"123456789\r\nok\n"], [LineTooLong(8), Line(b"ok", False)]),
        ([b"12345678\nok\n"], [Line(b"12345678", False), Line(b"ok", False)]),
        ([b"12345678\r\nok\n"], [Line(b"12345678", True), Line(b"ok", False)]),
        ([b"ok\n123456789\nok\n"], [Line(b"ok", False), LineTooLong(8), Line(b"ok", False)]),
        ([b"ok\n12345678\n"], [Line(b"ok", False), Line(b"12345678", False)]),
        # the pending buffer: the line began in an earlier read
        ([b"1234", b"56789\nok\n"], [LineTooLong(8), Line(b"ok", False)]),
        ([b"1234", b"5678\nok\n"], [Line(b"12345678", False), Line(b"ok", False)]),
        ([b"12345678", b"\nok\n"], [Line(b"12345678", False), Line(b"ok", False)]),
        ([b"12345678\r", b"\nok\n"], [Line(b"12345678", True), Line(b"ok", False)]),
        ([b"123456789", b"\nok\n"], [LineTooLong(8), Line(b"ok", False)]),
        ([b"ok\n1234", b"56789\nok\n"], [Line(b"ok", False), LineTooLong(8), Line(b"ok", False)]),
        # the pending buffer alone: one byte over is over, even before any newline
        ([b"123456789"], [LineTooLong(8)]),
        ([b"1234", b"56789"], [LineTooLong(8)]),
        ([b"12345678"], [PartialLine(b"12345678")]),
        # the fast path: one line, nothing pending
        ([b"123456789\n", b"ok\n"], [LineTooLong(8), Line(b"ok", False)]),
        ([b"12345678\n", b"ok\n"], [Line(b"12345678", False), Line(b"ok", False)]),
    ],
)
def test_limit_on_every_path(chunks: list[bytes], expected: list[object]) -> None:
    assert decode(chunks) == expected


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


# Boundaries that random streams reach only by luck (2 runs in 11 with a fresh database
# missed an off-by-one in the multi-line path): exactly the limit and one byte over, with LF
# and CRLF, on the fast path (one line), the multi-line path (another line follows in the
# same read) and the pending buffer (cut before the newline).
@example(data=b"123456789\nok\n", cuts=[], limit=8)
@example(data=b"123456789\r\nok\n", cuts=[], limit=8)
@example(data=b"12345678\nok\n", cuts=[], limit=8)
@example(data=b"12345678\r\nok\n", cuts=[], limit=8)
@example(data=b"123456789\n", cuts=[], limit=8)
@example(data=b"12345678\r\n", cuts=[], limit=8)
@example(data=b"123456789\nok\n", cuts=[4], limit=8)
@example(data=b"12345678\r\nok\n", cuts=[9], limit=8)
@example(data=b"123456789\nok\n", cuts=[9], limit=8)
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


@example(data=b"123456789\nok\n", limit=8)
@example(data=b"123456789\r\nok\n", limit=8)
@example(data=b"ok\n123456789\nok\n", limit=8)
@example(data=b"123456789\n", limit=8)
@example(data=b"123456789\r\n", limit=8)
@example(data=b"123456789", limit=8)
@example(data=b"12345678\r\r", limit=8)
@settings(max_examples=300)
@given(data=stream, limit=st.integers(min_value=1, max_value=12))
def test_events_respect_limit_and_never_contain_newline(data: bytes, limit: int) -> None:
    for ev in decode([data], limit):
        if isinstance(ev, (Line, PartialLine)):
            assert b"\n" not in ev.data
            assert len(ev.data) <= limit
            assert not ev.data.endswith(b"\r")


@example(data=b"12345678\n", limit=8, prefix=b"")
@example(data=b"123456789\n", limit=8, prefix=b"")
@example(data=b"12345678\r\n", limit=8, prefix=b"")
@example(data=b"123456789\nok\n", limit=8, prefix=b"")
@example(data=b"56789\nok\n", limit=8, prefix=b"1234")
@example(data=b"5678\n", limit=8, prefix=b"1234")
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
