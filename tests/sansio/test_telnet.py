from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from twoway.sansio.framing import Line, LineDecoder
from twoway.sansio.telnet import DO, DONT, IAC, SB, SE, TIMING_MARK, WILL, WONT, TelnetFilter

ECHO, SGA, TTYPE, NAWS, LINEMODE = 1, 3, 24, 31, 34


def run(chunks: list[bytes]) -> tuple[bytes, bytes]:
    f = TelnetFilter()
    data, reply = bytearray(), bytearray()
    for c in chunks:
        d, r = f.feed(c)
        data += d
        reply += r
    return bytes(data), bytes(reply)


def test_plain_data_passes_through_without_copy() -> None:
    f = TelnetFilter()
    chunk = b"hello\r\n"  # what a real telnet sends for a line
    data, reply = f.feed(chunk)
    assert data is chunk
    assert reply == b""
    assert f.idle


def test_ctrl_c_is_consumed_and_timing_mark_answered() -> None:
    # What a real telnet sends on Ctrl-C: IAC IP, IAC DO TIMING-MARK; it then discards
    # our output until it gets an answer.
    assert run([b"\xff\xf4\xff\xfd\x06"]) == (b"", b"\xff\xfc\x06")


def test_timing_mark_is_answered_every_time() -> None:
    f = TelnetFilter()
    for _ in range(3):
        assert f.feed(b"\xff\xf4\xff\xfd\x06") == (b"", b"\xff\xfc\x06")


def test_iac_iac_is_a_literal_ff() -> None:
    assert run([b"a\xff\xffb"]) == (b"a\xffb", b"")


def test_do_and_will_are_refused_once_per_option_and_direction() -> None:
    f = TelnetFilter()
    assert f.feed(bytes([IAC, DO, ECHO, IAC, WILL, ECHO])) == (
        b"",
        bytes([IAC, WONT, ECHO, IAC, DONT, ECHO]),
    )
    # Repeats are not answered again: a broken peer cannot make us loop.
    assert f.feed(bytes([IAC, DO, ECHO, IAC, WILL, ECHO])) == (b"", b"")
    # Another option is answered.
    assert f.feed(bytes([IAC, WILL, NAWS, IAC, DO, SGA])) == (
        b"",
        bytes([IAC, DONT, NAWS, IAC, WONT, SGA]),
    )


def test_dont_and_wont_are_never_answered() -> None:
    assert run([bytes([IAC, DONT, ECHO, IAC, WONT, SGA]) + b"x"]) == (b"x", b"")


def test_typical_telnet_opening_negotiation() -> None:
    # Linux netkit telnet in line mode with a terminal type.
    opening = bytes(
        [IAC, DO, SGA, IAC, WILL, TTYPE, IAC, WILL, NAWS, IAC, WILL, LINEMODE, IAC, DO, ECHO]
    )
    data, reply = run([opening + b"hi\r\n"])
    assert data == b"hi\r\n"
    assert reply == bytes(
        [IAC, WONT, SGA, IAC, DONT, TTYPE, IAC, DONT, NAWS, IAC, DONT, LINEMODE, IAC, WONT, ECHO]
    )


def test_subnegotiation_is_consumed_whole() -> None:
    naws = bytes([IAC, SB, NAWS, 0, 80, 0, 24, IAC, SE])
    assert run([b"a" + naws + b"b"]) == (b"ab", b"")
    # IAC IAC inside a subnegotiation is an escaped 0xFF, not its end.
    odd = bytes([IAC, SB, NAWS, 0, IAC, IAC, 0, 24, IAC, SE])
    assert run([b"a" + odd + b"b"]) == (b"ab", b"")
    # A subnegotiation is never answered, even when it contains what looks like DO.
    assert run([bytes([IAC, SB, TTYPE, DO, 1, IAC, SE])]) == (b"", b"")


def test_malformed_subnegotiation_ends_at_the_next_command() -> None:
    # IAC followed by something other than SE/IAC ends the subnegotiation and is processed,
    # so the data after it is not swallowed forever.
    stream = bytes([IAC, SB, TTYPE, 0, ord("x"), IAC, DO, ECHO]) + b"hello\r\n"
    assert run([stream]) == (b"hello\r\n", bytes([IAC, WONT, ECHO]))


def test_other_two_byte_commands_are_consumed() -> None:
    # NOP, DM, BRK, IP, AO, AYT, EC, EL, GA, and a stray SE.
    commands = b"".join(bytes([IAC, c]) for c in [0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF0])
    commands += b"".join(bytes([IAC, c]) for c in [0xF7, 0xF8, 0xF9])
    assert run([b"a" + commands + b"b"]) == (b"ab", b"")


def test_cr_nul_becomes_cr_lf() -> None:
    assert run([b"hello\r\0"]) == (b"hello\r\n", b"")
    assert run([b"a\r\0b\r\0"]) == (b"a\r\nb\r\n", b"")
    # Only the NUL right after a CR is changed.
    assert run([b"a\0b\r\0\0"]) == (b"a\0b\r\n\0", b"")


def test_cr_nul_split_across_chunks() -> None:
    f = TelnetFilter()
    assert f.feed(b"hello\r") == (b"hello\r", b"")
    assert not f.idle
    assert f.feed(b"\0next") == (b"\nnext", b"")
    # A CR at the end of a chunk followed by ordinary data is left alone.
    assert run([b"a\r", b"b"]) == (b"a\rb", b"")


def test_cr_then_command_then_nul() -> None:
    # The rule applies to the data stream: the command between them is not data.
    assert run([b"a\r\xff\xf1\0"]) == (b"a\r\n", b"")


def test_sequence_split_at_every_byte() -> None:
    stream = b"x\xff\xfd\x06y\xff\xffz\xff\xfa\x18\x00\xff\xff\xff\xf0w\r\0"
    expected = (b"xy\xffzw\r\n", b"\xff\xfc\x06")
    assert run([stream]) == expected
    assert run([bytes([b]) for b in stream]) == expected


def test_iac_at_end_of_chunk_then_option_in_next() -> None:
    f = TelnetFilter()
    assert f.feed(b"abc\xff") == (b"abc", b"")
    assert not f.idle
    assert f.feed(b"\xfd") == (b"", b"")
    assert f.feed(b"\x06def") == (b"def", b"\xff\xfc\x06")
    assert f.idle


def test_feeds_the_line_decoder() -> None:
    f = TelnetFilter()
    d = LineDecoder()
    events = []
    for chunk in [b"\xff\xfb\x18hel", b"lo\r", b"\0wor", b"ld\r\n"]:
        data, _ = f.feed(chunk)
        events.extend(d.feed(data))
    assert events == [Line(b"hello", True), Line(b"world", True)]


def test_empty_feed() -> None:
    f = TelnetFilter()
    assert f.feed(b"") == (b"", b"")
    f.feed(b"\xff")
    assert f.feed(b"") == (b"", b"")
    assert f.feed(b"\xff") == (b"\xff", b"")


def reference(data: bytes) -> tuple[bytes, bytes]:
    """A byte-at-a-time model of the rules, written independently of the filter."""
    out, reply = bytearray(), bytearray()
    refused: set[tuple[int, int]] = set()
    state, verb, i = "data", 0, 0
    while i < len(data):
        b = data[i]
        i += 1
        if state == "data":
            if b == IAC:
                state = "cmd"
            else:
                out.append(b)
        elif state == "cmd":
            if b == IAC:
                out.append(b)
                state = "data"
            elif b in (WILL, WONT, DO, DONT):
                verb, state = b, "opt"
            elif b == SB:
                state = "sb"
            else:
                state = "data"
        elif state == "opt":
            state = "data"
            if verb in (DO, WILL) and ((verb, b) not in refused or (verb, b) == (DO, 6)):
                refused.add((verb, b))
                reply += bytes([IAC, WONT if verb == DO else DONT, b])
        elif state == "sb":
            if b == IAC:
                state = "sb-iac"
        elif b == SE:
            state = "data"
        elif b == IAC:
            state = "sb"
        else:
            state = "cmd"
            i -= 1
    clean, after_cr = bytearray(), False
    for b in out:
        clean.append(10 if after_cr and b == 0 else b)
        after_cr = b == 13
    return bytes(clean), bytes(reply)


telnet_stream = st.lists(
    st.one_of(
        st.sampled_from(
            [
                b"\xff",
                b"\xff\xff",
                bytes([IAC, DO, TIMING_MARK]),
                bytes([IAC, DO, ECHO]),
                bytes([IAC, WILL, ECHO]),
                bytes([IAC, DONT, SGA]),
                bytes([IAC, SB]),
                bytes([IAC, SE]),
                b"\xf4",
                b"\xfd",
                b"\r",
                b"\0",
                b"\r\0",
                b"\r\n",
                b"hello",
            ]
        ),
        st.binary(max_size=8),
    ),
    max_size=30,
).map(b"".join)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks, prev = [], 0
    for p in points:
        chunks.append(data[prev:p])
        prev = p
    chunks.append(data[prev:])
    return chunks


@settings(max_examples=500)
@given(data=telnet_stream, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_any_split_gives_the_same_output(data: bytes, cuts: list[int]) -> None:
    whole = run([data])
    assert whole == reference(data)
    assert run(split(data, cuts)) == whole
    assert run([bytes([b]) for b in data]) == whole


@settings(max_examples=300)
@given(data=telnet_stream)
def test_output_invariants(data: bytes) -> None:
    clean, reply = run([data])
    assert b"\r\0" not in clean
    # Replies are only ever refusals, three bytes each, never more than one per request.
    assert len(reply) % 3 == 0
    for k in range(0, len(reply), 3):
        assert reply[k] == IAC and reply[k + 1] in (WONT, DONT)
    assert len(reply) <= 3 * data.count(IAC)
